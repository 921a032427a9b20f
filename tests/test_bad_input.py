"""Hostile and malformed input on both sockets: refused, counted, survived."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest
import zmq
from conftest import DaemonProcess, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectord import Client, InvalidPathError, MessageTooLargeError, RequestError, load_json
from collectord.protocol import Command
from collectord.sources import MAX_SESSIONS_PER_PEER


def header(seq: int, kind: str = "params", session: str = "raw0001", **extra) -> bytes:
    fields = {"v": 1, "kind": kind, "source": "raw", "session": session, "seq": seq, **extra}
    return msgpack.packb(fields)


@pytest.fixture
def publisher(daemon: DaemonProcess):
    """A raw XPUB socket that has seen the daemon's subscription (no slow joiner)."""
    context = zmq.Context()
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.data)
    assert sock.poll(30_000), "the daemon never subscribed"
    assert sock.recv() == b"\x01"
    yield sock
    sock.close()
    context.term()


def rejected(daemon: DaemonProcess) -> int:
    return daemon.status()["rejected"]


def raw_source(daemon: DaemonProcess) -> dict:
    """The raw publisher's source in ``status`` (empty until it is known)."""
    found = [s for s in daemon.status()["sources"] if s["name"] == "raw"]
    return found[0] if found else {}


def handled(daemon: DaemonProcess) -> int:
    """The raw publisher's messages the daemon applied or rejected."""
    counts = raw_source(daemon).get("messages", {})
    return counts.get("messages", 0) + counts.get("rejected", 0)


def test_bad_data_messages_are_rejected_counted_and_survived(
    daemon: DaemonProcess, publisher, figures
) -> None:
    with Client("good", daemon.data, daemon.control) as good:
        good.set_params("camera/settings", exposure=1.0)
        good.add_data("stimulus/log", [1, 2])
        good.sync()

        def raw_header(**fields) -> bytes:
            base = {"v": 1, "kind": "params", "source": "raw", "session": "raw0001", "seq": 1}
            return msgpack.packb({**base, **fields})

        unattributed = [
            [b"\xc1garbage"],  # not msgpack
            [msgpack.packb([1, 2, 3]), b""],  # msgpack, but not a map
            [msgpack.packb({"v": 1, "kind": "params"})],  # fields missing
            [raw_header(seq="one")],  # wrong type
            [raw_header(seq=True)],  # a bool is not a sequence number
            [raw_header(seq=-1)],  # out of range
            [raw_header(session="../../etc")],  # session ids are tokens, not paths
            [raw_header(v=99)],  # a future protocol version
        ]
        for frames in unattributed:
            publisher.send_multipart(frames)

        bodies = [
            {"path": "../escape", "values": {"a": 1}},
            {"path": "/etc/passwd", "values": {"a": 1}},
            {"path": "camera/\x00nul", "values": {"a": 1}},
            {"path": "camera\\settings", "values": {"a": 1}},
            {"path": "collectord/run_id", "values": {"a": 1}},
            {"path": "camera/settings/exposure", "values": {"a": 1}},  # crosses a leaf
            {"path": "camera", "values": {"settings": 1}},  # group -> value
            {"path": "stimulus", "values": {"log": 3}},  # static data -> parameter
            {"path": "camera/settings", "values": {"../x": 1}},
            {"path": "camera/settings", "values": ["not", "a", "map"]},
            {"path": 42, "values": {"a": 1}},
            {"path": "/".join(["deep"] * 400), "values": {"a": 1}},
        ]
        seq = 0
        for body in bodies:
            seq += 1
            publisher.send_multipart([header(seq), msgpack.packb(body)])
        seq += 1
        publisher.send_multipart([header(seq, kind="explode"), msgpack.packb({})])
        seq += 1
        publisher.send_multipart([header(seq), b"\xc1"])
        seq += 1
        publisher.send_multipart([header(seq)])  # body missing
        seq += 1
        nested: object = 1
        for _ in range(400):
            nested = [nested]
        publisher.send_multipart(
            [header(seq, kind="data"), msgpack.packb({"path": "deep/value", "value": nested})]
        )
        seq += 1
        not_npy = msgpack.ExtType(1, b"nonsense")
        publisher.send_multipart(
            [header(seq, kind="data"), msgpack.packb({"path": "x/y", "value": not_npy})]
        )
        seq += 1
        unknown_ext = msgpack.ExtType(99, b"")
        publisher.send_multipart(
            [header(seq, kind="data"), msgpack.packb({"path": "x/z", "value": unknown_ext})]
        )
        seq += 1
        pickled = io.BytesIO()
        np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        object_array = msgpack.ExtType(1, pickled.getvalue())
        publisher.send_multipart(
            [header(seq, kind="data"), msgpack.packb({"path": "x/w", "value": object_array})]
        )
        expected = len(unattributed) + seq
        wait_for(lambda: rejected(daemon) >= expected, what=f"{expected} rejections")

        # The daemon is alive and its tree intact; a good message still lands.
        publisher.send_multipart(
            [header(seq + 1), msgpack.packb({"path": "raw/params", "values": {"ok": True}})]
        )
        good.set_params("camera/settings", gain=2.0)
        good.sync()
        status = daemon.status()
        saved = load_json(good.stop())

    assert status["rejected"] == expected
    figures(
        bad_inputs=expected,
        rejected=status["rejected"],
        daemon_alive=True,
        good_messages_kept=True,
    )
    by_name = {s["name"]: s for s in status["sources"]}
    assert by_name["raw"]["messages"]["rejected"] == seq
    assert by_name["raw"]["messages"]["messages"] == 1
    assert status["unidentified"]["rejected"] == len(unattributed)
    assert any(
        "'..'" in reason or "path" in reason for reason in by_name["raw"]["recent_rejections"]
    )
    assert saved["camera"]["settings"] == {"exposure": 1.0, "gain": 2.0}
    assert saved["stimulus"]["log"] == [1, 2]
    assert saved["raw"]["params"] == {"ok": True}
    # Nothing was written outside the output folder's experiment layout.
    files = {
        p.relative_to(daemon.output).parts[0] for p in daemon.output.rglob("*") if p.is_file()
    }
    assert files <= {
        "last_config.json",
        ".collectord",
        *{p.name for p in daemon.output.iterdir() if p.name[:2].isdigit()},
    }


def test_a_bad_body_costs_its_own_message_a_bad_batch_the_batch(
    daemon: DaemonProcess, publisher
) -> None:
    def params(name: str, value: object) -> bytes:
        return msgpack.packb({"path": "raw/batch", "values": {name: value}})

    def batch(seq: int, payload: bytes, kinds=("params",) * 3) -> list[bytes]:
        return [header(seq, kind="batch", kinds=list(kinds)), payload]

    unknown_ext = msgpack.ExtType(99, b"")
    good = params("a", 1) + params("b", 2)
    # 1-3: the middle body holds a refused value; only it is rejected.
    publisher.send_multipart(
        batch(1, params("a", 1) + params("bad", unknown_ext) + params("c", 3))
    )
    # 4-6: bytes left over after three bodies; 7-9: two bodies for three kinds.
    publisher.send_multipart(batch(4, good + params("d", 4) + b"\x00"))
    publisher.send_multipart(batch(7, good))
    # 10-12: not msgpack at all.
    publisher.send_multipart(batch(10, b"\xc1" * 8))
    # The old form, one frame per body, is refused before it is numbered.
    publisher.send_multipart([header(13, kind="batch", kinds=["params"] * 2), good[:4], good[4:]])
    # 13-14: a good batch after all that.
    publisher.send_multipart(batch(13, params("e", 5) + params("f", 6), kinds=["params"] * 2))
    wait_for(lambda: rejected(daemon) >= 11, what="11 rejections")
    status = daemon.status()
    (raw,) = [s for s in status["sources"] if s["name"] == "raw"]
    assert raw["messages"]["rejected"] == 10 and raw["messages"]["messages"] == 4
    assert status["unidentified"]["rejected"] == 1
    assert any("bytes follow" in reason for reason in raw["recent_rejections"])
    assert any("unknown msgpack ext type 99" in r for r in raw["recent_rejections"])
    with Client("good", daemon.data, daemon.control) as client:
        saved = load_json(client.stop())
    assert saved["raw"]["batch"] == {"a": 1, "c": 3, "e": 5, "f": 6}


def test_bad_control_requests_get_error_replies(daemon: DaemonProcess) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.control)

    def ask(payload: bytes) -> dict:
        sock.send_multipart([b"", payload])
        assert sock.poll(30_000), "no reply"
        return msgpack.unpackb(sock.recv_multipart()[-1])

    try:
        assert ask(b"\xc1")["error"]["code"] == "bad_request"
        assert ask(msgpack.packb({"v": 1, "cmd": "status"}))["error"]["code"] == "bad_request"
        reply = ask(msgpack.packb({"v": 1, "cmd": "format_disk", "id": 7}))
        assert reply["id"] == 7 and reply["error"]["code"] == "unknown_command"
        reply = ask(msgpack.packb({"v": 2, "cmd": "status", "id": 8}))
        assert reply["error"]["code"] == "unsupported_version"
        reply = ask(msgpack.packb({"v": 1, "cmd": "restore", "id": 9, "node": "../../etc"}))
        assert reply["error"]["code"] == "invalid_path"
        reply = ask(msgpack.packb({"v": 1, "cmd": "sync", "id": 10, "session": 5, "seq": 1}))
        assert reply["error"]["code"] == "bad_request" and "session" in reply["error"]["message"]
        reply = ask(msgpack.packb({"v": 1, "cmd": "status", "id": 11}))
        assert reply["ok"] and reply["result"]["rejected"] == 6
    finally:
        sock.close()
        context.term()
    assert daemon.request(Command.STATUS)["pid"] == daemon.process.pid


def test_a_refused_restore_counts_under_the_client_that_asked(daemon: DaemonProcess) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", gain=1.0)
        client.stop()
        with pytest.raises(RequestError) as refused:
            client.restore("camera/settings/gain")
        assert refused.value.code == "not_a_group"
        status = client.status()
    (source,) = status["sources"]
    assert source["messages"]["rejected"] == 1
    assert "gain" in source["recent_rejections"][0]
    assert status["unidentified"]["rejected"] == 0


def test_oversized_messages_are_refused(make_daemon, tmp_path) -> None:
    config = tmp_path / "small.toml"
    config.write_text("[limits]\nmax_message_bytes = 10000\n")
    daemon = make_daemon(extra=("--config", str(config)))
    with Client("big", daemon.data, daemon.control) as client:
        client.add_data("imaging/ok", np.zeros(10))
        client.sync()  # the client has now learnt the daemon's limit
        with pytest.raises(MessageTooLargeError, match="accepts at most"):
            client.add_data("imaging/huge", np.zeros(100_000))
        client.add_data("imaging/after", 1)

        # A raw peer sending an oversized frame is cut off by ZeroMQ itself.
        context = zmq.Context()
        sock = context.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.data)
        assert sock.poll(30_000) and sock.recv() == b"\x01"
        sock.send_multipart([header(1), b"x" * 100_000])
        sock.close()
        context.term()
        saved = load_json(client.stop())
    assert saved["imaging"] == {"ok": [0.0] * 10, "after": 1}
    assert daemon.status()["pid"] == daemon.process.pid


message_parts = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "v",
                    "kind",
                    "source",
                    "session",
                    "seq",
                    "path",
                    "values",
                    "value",
                    "cmd",
                    "id",
                    "node",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)
packed = message_parts.map(lambda v: msgpack.packb(v, use_bin_type=True))
frames_strategy = st.lists(st.binary(max_size=40) | packed, min_size=1, max_size=3) | st.tuples(
    # a well-formed header, so that the fuzzing reaches the body and the tree
    st.builds(
        lambda seq, kind: header(seq, kind=kind, session="fuzz"),
        st.integers(1, 40),
        st.sampled_from(["params", "data"]),
    ),
    packed
    | st.fixed_dictionaries(
        {"path": st.text(max_size=12), "values": message_parts, "value": message_parts}
    ).map(msgpack.packb),
).map(list)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data_frames=frames_strategy, control_frames=frames_strategy)
def test_fuzzed_frames_on_both_sockets_never_stop_the_daemon(
    daemon: DaemonProcess, publisher, data_frames, control_frames
) -> None:
    publisher.send_multipart(data_frames)
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.control)
    try:
        sock.send_multipart([b"", *control_frames])
        if sock.poll(30_000):
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert isinstance(reply, dict) and "ok" in reply
    finally:
        sock.close()
    assert daemon.process.poll() is None


def test_sequence_numbers_beyond_the_range_are_refused(daemon: DaemonProcess, publisher) -> None:
    body = msgpack.packb({"path": "raw/p", "values": {"a": 1}})
    top = 2**64 - 1
    publisher.send_multipart([header(top, kind="batch", kinds=["params", "params"]), body + body])
    publisher.send_multipart([header(0), body])
    wait_for(lambda: daemon.status()["rejected"] == 2, what="two rejections")
    assert daemon.status()["pid"] == daemon.process.pid


def test_a_message_just_under_the_size_limit_is_delivered(make_daemon, tmp_path) -> None:
    """Bodies that fit one message but not a batch's budget travel alone, whole."""
    config = tmp_path / "small.toml"
    config.write_text("[limits]\nmax_message_bytes = 10000\n")
    daemon = make_daemon(extra=("--config", str(config)))
    with Client("big", daemon.data, daemon.control) as client:
        client.sync()  # the client has now learnt the daemon's limit
        near = "x" * 8000  # under the limit less the header's room, over a batch's budget
        client.add_data("imaging/near", near)
        client.add_data("imaging/small", 1)
        saved = load_json(client.stop())
    assert saved["imaging"] == {"near": near, "small": 1}
    assert daemon.status()["rejected"] == 0


def test_a_batch_claiming_more_messages_than_it_can_hold_is_refused_whole(
    daemon: DaemonProcess, publisher
) -> None:
    body = msgpack.packb({"path": "raw/p", "values": {"a": 1}})
    many = header(1, kind="batch", kinds=["params"] * 5000)
    publisher.send_multipart([many, body * 5000])  # over the 4096 limit
    short = header(1, kind="batch", kinds=["params"] * 10)
    publisher.send_multipart([short, b"\x80" * 5])  # ten messages cannot fit in five bytes
    publisher.send_multipart([header(1, kind="batch", kinds=["params"] * 3), body * 3])

    def applied() -> int:
        raw = [s for s in daemon.status()["sources"] if s["name"] == "raw"]
        return raw[0]["messages"]["messages"] if raw else 0

    wait_for(lambda: applied() == 3, what="the good batch")  # it came last
    assert daemon.status()["unidentified"]["rejected"] == 2


def test_a_stream_declaration_with_a_control_character_in_a_column_is_refused(
    daemon: DaemonProcess, publisher
) -> None:
    """Such a name would break a CSV header or a reader's table; a raw client
    can send it, so the daemon refuses it too, naming the column."""
    bad_columns = ["line\nbreak", "nul\x00", "bell\x07", "del\x7f"]
    for seq, bad in enumerate(bad_columns, start=1):
        body = {"path": f"raw/s{seq}", "columns": ["ok", bad], "dtype": "<f8"}
        publisher.send_multipart([header(seq, kind="stream"), msgpack.packb(body)])
    good = {"path": "raw/good", "columns": ["ok", "fine"], "dtype": "<f8"}
    seq = len(bad_columns) + 1
    publisher.send_multipart([header(seq, kind="stream"), msgpack.packb(good)])
    rows = np.array([[1.0, 2.0]])
    block = msgpack.packb({"path": "raw/good", "rows": 1})
    publisher.send_multipart([header(seq + 1, kind="block"), block, rows.tobytes()])

    wait_for(lambda: handled(daemon) == seq + 1, what="every message")
    source = raw_source(daemon)
    assert source["messages"]["rejected"] == len(bad_columns)
    assert source["messages"]["messages"] == 2  # the good stream and its block
    for bad in bad_columns:
        assert any(repr(bad) in reason for reason in source["recent_rejections"]), bad
    saved = load_json(daemon.stop()["path"])
    assert sorted(saved["raw"]) == ["good"]
    assert saved["raw"]["good"]["rows"] == 1
    assert daemon.process.poll() is None


def test_arrays_the_metadata_cannot_hold_are_refused_and_the_experiment_saves(
    daemon: DaemonProcess, publisher
) -> None:
    """A float128 array, text holding a surrogate or a code point beyond
    U+10FFFF, and datetimes without a unit were accepted, then failed every
    save of their experiment (a RecursionError, a SystemError, a ValueError
    while writing the JSON; retried for ever, later stops waiting behind), or
    left a restore of their node unanswered. Each is refused, named."""

    def array(values: np.ndarray) -> msgpack.ExtType:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, values, allow_pickle=False)
        return msgpack.ExtType(1, buffer.getvalue())

    def text(code: int) -> np.ndarray:
        return np.array([code], dtype="<u4").view("<U1")

    bad = {
        "wide": array(np.array([1.5], dtype=np.longdouble)),
        "surrogate": array(text(0xD800)),
        "beyond_big_endian": array(text(0x110000).astype(">U1")),
        "beyond": array(text(0x110000)),
        "no_unit": array(np.array([5], dtype="<i8").view("M8")),
    }
    seq = 0
    for name, value in bad.items():
        seq += 1
        body = msgpack.packb({"path": "raw/settings", "values": {name: value}})
        publisher.send_multipart([header(seq, kind="params"), body])
    good = {"gain": array(np.array([1.5])), "label": array(np.array(["é🐟"]))}
    publisher.send_multipart(
        [header(seq + 1, kind="params"), msgpack.packb({"path": "raw/settings", "values": good})]
    )

    wait_for(lambda: raw_source(daemon).get("last_seq") == seq + 1, what="every message")
    source = raw_source(daemon)
    assert source["messages"]["rejected"] == len(bad)
    reasons = "\n".join(source["recent_rejections"])
    assert reasons.count("not Unicode") == 3
    assert "float128" in reasons and "without a unit" in reasons
    saved = load_json(daemon.stop()["path"])
    assert saved["raw"] == {"settings": {"gain": [1.5], "label": ["é🐟"]}}
    restored = daemon.request(Command.RESTORE, {"node": "raw"}, timeout=10)
    assert restored == {"values": {"settings": {"gain": [1.5], "label": ["é🐟"]}}}


def test_an_array_of_more_empty_values_than_its_bytes_is_refused(
    daemon: DaemonProcess, publisher
) -> None:
    """A .npy header of a hundred bytes can claim 10**12 elements of zero width
    (``S0``), or 10**12 empty rows (shape ``(10**12, 0)``): it was accepted,
    and its save would have built a value for each (the daemon runs out of
    memory, and again at every start, replaying it). Such an array is
    refused; a few empty values are fine."""

    def empty(shape: tuple[int, ...], descr: str = "|S0") -> msgpack.ExtType:
        buffer = io.BytesIO()
        fields = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(buffer, fields)
        return msgpack.ExtType(1, buffer.getvalue())

    bodies = [
        {"path": "raw/huge", "value": empty((10**6, 10**6))},
        {"path": "raw/rows", "value": empty((10**12, 0), "<f8")},
        {"path": "raw/few", "value": empty((3,))},
        {"path": "raw/none", "value": empty((3, 0), "<f8")},
    ]
    for seq, body in enumerate(bodies, start=1):
        publisher.send_multipart([header(seq, kind="data"), msgpack.packb(body)])

    wait_for(lambda: raw_source(daemon).get("last_seq") == len(bodies), what="both messages")
    source = raw_source(daemon)
    assert source["messages"]["rejected"] == 2, source
    for reason in source["recent_rejections"]:
        assert "1000000000000 empty values" in reason
    saved = load_json(daemon.stop()["path"])
    assert saved["raw"] == {"few": [b"", b"", b""], "none": [[], [], []]}


def test_a_stream_dtype_numpy_cannot_read_is_refused_as_such(
    daemon: DaemonProcess, publisher
) -> None:
    """numpy raises ValueError, not TypeError, for some dtype strings: such a
    declaration was rejected as the daemon's own "internal error", with a
    traceback in its log, instead of naming the bad dtype."""
    bad = ["(-1,)f8", "(99999999999,)f8"]
    for seq, dtype in enumerate(bad, start=1):
        body = {"path": f"raw/s{seq}", "columns": ["x"], "dtype": dtype}
        publisher.send_multipart([header(seq, kind="stream"), msgpack.packb(body)])

    wait_for(
        lambda: raw_source(daemon).get("messages", {}).get("rejected") == len(bad),
        what="refusals",
    )
    reasons = raw_source(daemon)["recent_rejections"]
    for dtype in bad:
        assert any(f"dtype {dtype!r} is not a numpy dtype" in reason for reason in reasons)
    assert not any("internal error" in reason for reason in reasons)


#: Stream paths whose file Windows cannot create, or would share.
WINDOWS_FILE_NAMES = ["raw/con", "raw/Nul.x", "raw/com1", "raw/a:b", "raw/what?", "raw/end."]


def test_stream_paths_windows_cannot_hold_as_files_are_refused(
    daemon: DaemonProcess, publisher
) -> None:
    """A stream's path becomes its file's path, and most rigs run Windows: a
    device name (``con``), a character Windows refuses (``:``), a trailing dot,
    or a path that differs from another stream's only in case (one file where
    names ignore case) had its file fail to be created there, and every block
    refused. The daemon refuses the declaration, naming why; the rows of the
    streams it took are saved."""
    bad = [*WINDOWS_FILE_NAMES, "raw/Good"]
    for seq, path in enumerate(["raw/good", *bad], start=1):
        body = {"path": path, "columns": ["x"], "dtype": "<f8"}
        publisher.send_multipart([header(seq, kind="stream"), msgpack.packb(body)])
    seq = len(bad) + 2
    block = msgpack.packb({"path": "raw/good", "rows": 1})
    publisher.send_multipart([header(seq, kind="block"), block, np.array([1.5]).tobytes()])

    wait_for(lambda: handled(daemon) == seq, what="every message")
    source = raw_source(daemon)
    assert source["messages"]["rejected"] == len(bad)
    reasons = "\n".join(source["recent_rejections"])
    for why in ("device name on Windows", "which Windows allows in no file name", "dot"):
        assert why in reasons
    assert "'raw/Good' would share its file with the stream 'raw/good'" in reasons
    saved = load_json(daemon.stop()["path"])
    assert sorted(saved["raw"]) == ["good"] and saved["raw"]["good"]["rows"] == 1


def test_the_client_refuses_file_names_windows_cannot_hold(daemon: DaemonProcess) -> None:
    """The same names fail at the call in the Python client, for streams and
    for an experiment's name (its folder's and files' name); as parameter
    names (which name no file) they are taken."""
    with Client("cam", daemon.data, daemon.control) as client:
        for path in WINDOWS_FILE_NAMES:
            with pytest.raises(InvalidPathError, match="Windows"):
                client.stream(path.replace("raw/", "cam/"), ["x"])
        for name in ("CON", "lpt1.log", "a|b", "trial "):
            with pytest.raises(InvalidPathError, match="Windows"):
                client.name_experiment(name)
        client.set_params("cam/aux", con=1, nul=2)
        client.sync()
        assert client.status()["rejected"] == 0
        saved = load_json(client.stop())
    assert saved["cam"] == {"aux": {"con": 1, "nul": 2}}


def test_a_rejection_quoting_a_huge_path_is_kept_short(daemon: DaemonProcess, publisher) -> None:
    """A rejection's reason quotes what was wrong: a path of a megabyte was
    kept whole, ten times a source, in status, the metadata, the journal and
    the log (a message may be 64 MiB)."""
    huge = "a/" * 500_000 + "a"
    body = msgpack.packb({"path": huge, "values": {"x": 1}})
    publisher.send_multipart([header(1), body])
    wait_for(lambda: rejected(daemon) == 1, what="the rejection")
    (source,) = [s for s in daemon.status()["sources"] if s["name"] == "raw"]
    (reason,) = source["recent_rejections"]
    assert reason.startswith("seq 1: path 'a/a/") and reason.endswith("deeper than 32 levels")
    assert len(reason) < 1100 and "characters cut" in reason
    saved = load_json(daemon.stop()["path"])
    (saved_source,) = [s for s in saved["collectord"]["sources"] if s["name"] == "raw"]
    assert saved_source["recent_rejections"] == [reason]
    assert daemon.log.stat().st_size < 100_000


def test_sessions_are_bounded_and_forgotten_once_done(daemon: DaemonProcess) -> None:
    """One connection inventing sessions gets a bounded number; sessions gone
    (or that said bye) are forgotten once their experiment is saved, their
    counts kept."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.control)
    hello = {"name": "flood", "host": "h", "pid": 1, "program": "p", "versions": {}}
    try:
        codes = []
        for index in range(MAX_SESSIONS_PER_PEER + 36):
            message = {"v": 1, "cmd": "hello", "id": index + 1, "session": f"s{index:04d}"}
            sock.send_multipart([b"", msgpack.packb({**message, **hello})])
            assert sock.poll(30_000), "no reply"
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            codes.append("ok" if reply["ok"] else reply["error"]["code"])
            if not reply["ok"]:
                assert "sessions" in reply["error"]["message"]
    finally:
        sock.close()
        context.term()
    assert codes == ["ok"] * MAX_SESSIONS_PER_PEER + ["bad_request"] * 36
    with Client("camera", daemon.data, daemon.control) as camera:
        camera.set_params("camera", exposure=1.0)
        with Client("gui", daemon.data, daemon.control) as gui:
            gui.add_data("log", [1])
        status = daemon.status()
        assert len(status["sources"]) == MAX_SESSIONS_PER_PEER + 2
        camera.stop()  # the flood's sessions cannot be reached: gone
        status = camera.status()
        # Kept: the camera, still connected. Forgotten: the flood and the gui.
        assert [source["name"] for source in status["sources"]] == ["camera"]
        assert status["forgotten"]["sessions"] == MAX_SESSIONS_PER_PEER + 1
        assert status["forgotten"]["messages"]["messages"] == 1  # the gui's


def test_a_client_rejected_with_every_message_does_not_fill_the_log(
    daemon: DaemonProcess, publisher
) -> None:
    """Every rejection is counted; the log, on the data's disk, takes a few
    lines a minute of them."""
    count = 500
    for seq in range(1, count + 1):
        body = {"path": "../escape", "values": {"a": seq}}
        publisher.send_multipart([header(seq), msgpack.packb(body)])
    wait_for(lambda: handled(daemon) == count, what="every message handled")
    assert raw_source(daemon)["messages"]["rejected"] == count
    lines = [line for line in daemon.log.read_text().splitlines() if "rejected from raw" in line]
    assert 20 <= len(lines) <= 2 * (20 + 2), lines[-3:]  # two periods if it took a minute
    assert any("counted (status, metadata), not logged" in line for line in lines)
