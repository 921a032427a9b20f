"""The C client (clients/c): built with CMake, run against real daemons, and
called through ctypes as MATLAB, LabVIEW and C# would call it."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from c_library import (
    E_ARGUMENT,
    E_JSON,
    E_MSGPACK,
    E_TIMEOUT,
    E_TOO_LARGE,
    E_TRANSPORT,
    INSTALL,
    MINGW,
    MINGW_INSTALL,
    REQUIRE_ENV,
    SOURCE,
    CClient,
    CError,
    build,
    compile_for_windows,
    host_headers,
    load,
    missing,
    verdict,
)
from conftest import DaemonProcess, saved_experiments, wait_for
from equality import same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectord import codec, load_json
from collectord.faults import ENV, Fault
from collectord.security import keygen

EXAMPLE_ROWS = 1000


@pytest.fixture(scope="session")
def c_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clients/c built once per test session, or a skip naming what to install
    (a failure where REQUIRE_ENV says the toolchain must be there)."""
    why = missing()
    if why is not None:
        must_fail, message = verdict(why, os.environ)
        if must_fail:
            pytest.fail(message)
        pytest.skip(message)
    return build(tmp_path_factory.mktemp("c-client-build"))


@pytest.fixture(scope="session")
def library(c_build: Path) -> ctypes.CDLL:
    return load(c_build)


def stream_rows(metadata_path: Path, descriptor: dict[str, Any]) -> np.ndarray[Any, Any]:
    return np.load(metadata_path.parent / descriptor["file"])


def the_source(saved: dict[str, Any]) -> dict[str, Any]:
    (source,) = saved["collectord"]["sources"]
    return source


#: What collectord-c-example publishes (clients/c/examples/example.c).
EXAMPLE_TREE = {
    "c-example": {
        "settings": {
            "exposure": 5.5,
            "gain": -3,
            "enabled": True,
            "label": 'réglage "quoted"',
            "roi": {"x": 10, "y": 20, "size": [64, 48.5]},
        },
        "data": {"number": 42.125, "text": "hello from C", "list": [1.5, -2.25, 1e10]},
        "rows": {
            "file": "streams/c-example/rows.npy",
            "format": "npy",
            "rows": EXAMPLE_ROWS,
            "columns": ["i", "twice", "thrice"],
            "dtype": "<f8",
            "source": "c-example",
            "units": ["count", "count", "count"],
        },
    }
}


def check_the_examples_experiment(path: Path, version: str) -> None:
    """The metadata and stream file at ``path`` hold what the example publishes."""
    saved = load_json(path)
    account = saved.pop("collectord")
    assert same(EXAMPLE_TREE, saved)  # types too: 5.5 a float, -3 an int, 64 an int
    rows = stream_rows(path, saved["c-example"]["rows"])
    index = np.arange(EXAMPLE_ROWS, dtype="<f8")
    assert rows.dtype.names == ("i", "twice", "thrice")
    assert rows["i"].tolist() == index.tolist()
    assert rows["twice"].tolist() == (2 * index).tolist()
    assert rows["thrice"].tolist() == (3 * index).tolist()
    (source,) = account["sources"]
    assert source["name"] == "c-example" and source["pid"] is not None
    assert source["versions"]["collectord-c"] == version
    # 5 parameters, 3 data, 1 declaration, 10 blocks of 100 rows
    assert source["messages"] == {
        "messages": 19,
        "rejected": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "lost": 0,
    }
    assert account["unconfirmed"] == []


def test_the_example_saves_what_it_publishes_value_by_value(
    c_build: Path, library: ctypes.CDLL, daemon: DaemonProcess
) -> None:
    result = subprocess.run(
        [str(c_build / "collectord-c-example"), daemon.data, daemon.control],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    path = Path(result.stdout.splitlines()[-1])
    check_the_examples_experiment(path, library.collectord_version().decode())


def test_ctypes_makes_the_examples_round_trip(library: ctypes.CDLL, daemon: DaemonProcess) -> None:
    """The example's calls, made from Python through ctypes as an FFI makes them."""
    client = CClient(library, "c-example", daemon.data, daemon.control)
    node = "c-example/settings"
    client.call("set_float", node, "exposure", 5.5)
    client.call("set_int", node, "gain", -3)
    client.call("set_bool", node, "enabled", 1)
    label = 'réglage "quoted"'.encode()
    client.call("set_text", node, "label", label, len(label))
    roi = b'{"x": 10, "y": 20, "size": [64, 48.5]}'
    client.call("set_json", node, "roi", roi, len(roi))
    client.call("add_float", "c-example/data/number", 42.125)
    client.call("add_text", "c-example/data/text", b"hello from C", 12)
    numbers = (ctypes.c_double * 3)(1.5, -2.25, 1e10)
    client.call("add_floats", "c-example/data/list", numbers, 3)
    names = [b"i", b"twice", b"thrice"]
    columns = (ctypes.c_char_p * 3)(*names)
    units = (ctypes.c_char_p * 3)(b"count", b"count", b"count")
    client.call("declare_stream", "c-example/rows", columns, 3, "<f8", units)
    index = np.arange(EXAMPLE_ROWS, dtype="<f8")
    rows = np.ascontiguousarray(np.stack([index, 2 * index, 3 * index], axis=1))
    for block in np.split(rows, 10):
        block = np.ascontiguousarray(block)
        client.call("append_rows", "c-example/rows", block.ctypes.data, len(block), block.nbytes)
    path = Path(client.stop("collectord-c-example"))
    client.close()
    check_the_examples_experiment(path, library.collectord_version().decode())


def test_ctypes_round_trip_of_every_kind_of_value(
    library: ctypes.CDLL, daemon: DaemonProcess
) -> None:
    client = CClient(library, "rig", daemon.data, daemon.control)
    client.call("set_float", "rig/settings", "exposure", 0.1)
    client.call("set_int", "rig/settings", "frames", -(2**63))
    client.call("set_bool", "rig/settings", "armed", 0)
    label = "µm ✓ \U0001f600".encode()
    client.call("set_text", "rig/settings", "label", label, len(label))
    packed = msgpack.packb({"bytes": b"\x00\x01", "nested": [[1, None], {"k": True}]})
    client.call("set_msgpack", "rig/settings", "packed", packed, len(packed))
    group = b'{"a": 1, "b": [true, null, "x\\u00e9\\ud83d\\ude00"], "c": 18446744073709551615}'
    client.call("set_params_json", "rig/group", group, len(group))
    pairs = msgpack.packb({"one": 1.0, "two": "2"})
    client.call("set_params_msgpack", "rig/packed_group", pairs, len(pairs))
    client.call("add_int", "rig/data/int", 2**62)
    client.call("add_bool", "rig/data/bool", 1)
    ints = (ctypes.c_int64 * 3)(-1, 0, 1)
    client.call("add_ints", "rig/data/ints", ints, 3)
    nothing = (ctypes.c_double * 1)()
    client.call("add_floats", "rig/data/empty", nothing, 0)
    client.call("add_text", "rig/data/empty_text", None, 0)
    value = msgpack.packb({"when": msgpack.ExtType(2, b"2024-05-17T14:03:09")})
    client.call("add_msgpack", "rig/data/ext", value, len(value))
    document = b' {"x": [1.5e3, -0.25, 0], "deep": [[[[]]]], "s": "tab\\there"} '
    client.call("add_json", "rig/data/json", document, len(document))
    client.call("declare_stream_json", "rig/counts", '["n", "m"]', "<i4", None)
    counts = np.arange(200, dtype="<i4").reshape(100, 2)
    client.call("append_rows", "rig/counts", counts.ctypes.data, 100, counts.nbytes)
    client.call("name_experiment", "from_ctypes", 10.0)
    client.call("sync", 30.0)
    assert client.counter("unconfirmed") == 0
    assert client.counter("last_seq") == 16  # 7 params, 7 data, 1 stream, 1 block
    path = Path(client.stop())
    assert path.name == "from_ctypes_metadata.json"
    saved = load_json(path)
    assert saved["rig"]["settings"] == {
        "exposure": 0.1,
        "frames": -(2**63),
        "armed": False,
        "label": "µm ✓ \U0001f600",
        "packed": {"bytes": b"\x00\x01", "nested": [[1, None], {"k": True}]},
    }
    assert saved["rig"]["group"] == {"a": 1, "b": [True, None, "xé\U0001f600"], "c": 2**64 - 1}
    assert saved["rig"]["packed_group"] == {"one": 1.0, "two": "2"}
    assert saved["rig"]["data"] == {
        "int": 2**62,
        "bool": True,
        "ints": [-1, 0, 1],
        "empty": [],
        "empty_text": "",
        "ext": {"when": "2024-05-17T14:03:09"},
        "json": {"x": [1500.0, -0.25, 0], "deep": [[[[]]]], "s": "tab\there"},
    }
    descriptor = saved["rig"]["counts"]
    assert descriptor["columns"] == ["n", "m"] and descriptor["dtype"] == "<i4"
    rows = stream_rows(path, descriptor)
    assert rows["n"].tolist() == counts[:, 0].tolist()
    assert rows["m"].tolist() == counts[:, 1].tolist()
    assert the_source(saved)["messages"]["rejected"] == 0
    # The parameters are the last config now: restore gives them back as msgpack.
    restored = msgpack.unpackb(client.restore("rig/group"))
    assert restored == {"a": 1, "b": [True, None, "xé\U0001f600"], "c": 2**64 - 1}
    client.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6).filter(lambda key: not key.startswith("$")), children,
                      max_size=4),
    max_leaves=16,
)  # fmt: skip


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(json_values, min_size=1, max_size=20), ascii_only=st.booleans())
def test_json_text_arrives_as_the_value_python_reads_from_it(
    library: ctypes.CDLL, daemon: DaemonProcess, values: list[Any], ascii_only: bool
) -> None:
    client = CClient(library, "json", daemon.data, daemon.control)
    documents = [json.dumps(value, ensure_ascii=ascii_only).encode() for value in values]
    for index, document in enumerate(documents):
        client.call("add_json", f"json/v{index}", document, len(document))
    saved = load_json(Path(client.stop()))
    client.close()
    for index, document in enumerate(documents):
        assert same(json.loads(document), saved["json"][f"v{index}"]), document


msgpack_blobs = (
    st.binary(max_size=16)
    | json_values.map(msgpack.packb)
    | st.dictionaries(st.integers(0, 3) | st.binary(max_size=2), st.none(), min_size=1).map(
        msgpack.packb
    )
    | st.builds(msgpack.ExtType, st.integers(2, 6), st.binary(max_size=20)).map(msgpack.packb)
    | st.binary(min_size=1, max_size=13).map(lambda stamp: b"\xc7%c\xff%s" % (len(stamp), stamp))
    | st.lists(st.floats(), max_size=4).map(lambda floats: codec.pack(np.array(floats)))
)


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(msgpack_blobs, min_size=1, max_size=40))
def test_msgpack_the_library_accepts_is_what_the_daemon_accepts(
    library: ctypes.CDLL, daemon: DaemonProcess, blobs: list[bytes]
) -> None:
    """Whatever bytes a caller passes: refused at the call, or applied, never
    a rejection at the daemon."""
    client = CClient(library, "packed", daemon.data, daemon.control)
    session = client.session
    accepted = 0
    for blob in blobs:
        try:
            client.call("add_msgpack", f"packed/v{accepted}", blob, len(blob))
            accepted += 1
        except CError as exc:
            assert exc.code == E_MSGPACK
    saved = load_json(Path(client.stop()))
    client.close()
    # The daemon heard from this client (hello, stop) even if it published nothing;
    # a previous example's client may be listed too (its bye came after its stop).
    (source,) = [s for s in saved["collectord"]["sources"] if s["session"] == session]
    assert source["messages"]["rejected"] == 0, source["recent_rejections"]
    assert source["messages"]["messages"] == accepted


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"", "expected a value at byte 0"),
        (b"[1,]", "expected a value at byte 3"),
        (b'{"a" 1}', "expected ':' at byte 5"),
        (b'{"a": 1,}', "expected a string key at byte 8"),
        (b"[1 2]", "expected ',' or ']' at byte 3"),
        (b"01", "text follows the value at byte 1"),
        (b'{"a": 1} x', "text follows the value at byte 9"),
        (b"1.", "a digit must follow the decimal point at byte 2"),
        (b"-", "a number has no digits at byte 0"),
        (b"1e+", "an exponent has no digits at byte 3"),
        (b"NaN", "expected a value at byte 0"),
        (b"tru", "expected a value at byte 0"),
        (b"1e999", "a number is too large for float 64 at byte 0"),
        (b"[18446744073709551616]", "an integer is outside -2^63 .. 2^64-1 at byte 1"),
        (b"-9223372036854775809", "an integer is outside -2^63 .. 2^64-1 at byte 0"),
        (b'"abc', "a string is not closed at byte 4"),
        (b'"a\\nb\\q"', "unknown escape in a string at byte 5"),
        (b'"a\\u12"', "\\u needs four hex digits at byte 4"),
        (b'"\\ud800"', "a high surrogate \\u escape without its low half at byte 1"),
        (b'"\\udc00"', "a lone low surrogate \\u escape at byte 1"),
        (b'"a\x01"', "a control character must be escaped in a string at byte 2"),
        (b'"tab\\there\\n\\t\\u0001\x01"', "a control character must be escaped in a string at byte 20"),  # noqa: E501
        (b'["ok", "\xff"]', "a string is not valid UTF-8 at byte 8"),
        (b'["ok", "\xc3("]', "a string is not valid UTF-8 at byte 8"),
        (b'{"ok": "\xc3\xa9", "bad": "\xed\xa0\x80"}', "a string is not valid UTF-8 at byte 21"),
        (b'{"$t": 1}', "a key starts with '$', kept for collectord's tags at byte 1"),
        (b'{"a": 1, "b": 2, "a": 3}', "a key appears twice in an object at byte 17"),
        (b'[{"": 1, "": 2}]', "a key appears twice in an object at byte 9"),
        (b"[" * 65 + b"]" * 65, "the value is nested too deep at byte 64"),
    ],
)  # fmt: skip
def test_bad_json_is_refused_with_the_byte_where_it_went_wrong(
    library: ctypes.CDLL, ipc: Callable[[str], str], document: bytes, reason: str
) -> None:
    client = CClient(library, "strict", ipc("data"), ipc("control"))
    with pytest.raises(CError) as caught:
        client.call("add_json", "strict/value", document, len(document))
    client.close(0.1)
    assert caught.value.code == E_JSON
    assert caught.value.message == f"value of 'strict/value': JSON: {reason}"


def test_bad_input_fails_at_the_call_and_loses_nothing_accepted(
    library: ctypes.CDLL, daemon: DaemonProcess
) -> None:
    client = CClient(library, "careful", daemon.data, daemon.control)
    client.call("add_int", "careful/first", 1)
    refused: list[tuple[int, str]] = []

    def refuse(function: str, *args: Any) -> None:
        with pytest.raises(CError) as caught:
            client.call(function, *args)
        refused.append((caught.value.code, caught.value.message))

    refuse("add_int", "careful//double", 1)
    refuse("add_int", "collectord/x", 1)
    refuse("set_int", "careful/settings", "$tag", 1)
    bad_json = b'{"a": [1, 2,, 3]}'
    refuse("add_json", "careful/json", bad_json, len(bad_json))
    dollar = b'{"$float": "nan"}'
    refuse("add_json", "careful/json", dollar, len(dollar))
    int_key = bytes.fromhex("810101")  # {1: 1}, as protocol.md lists it
    refuse("add_msgpack", "careful/packed", int_key, len(int_key))
    huge = bytes.fromhex("91ddffffffff")  # [an array of 2^32 - 1 elements], in 6 bytes
    refuse("add_msgpack", "careful/packed", huge, len(huge))
    two_values = msgpack.packb(1) + msgpack.packb(2)
    refuse("add_msgpack", "careful/packed", two_values, len(two_values))
    not_utf8 = b"\xff"
    refuse("add_text", "careful/text", not_utf8, 1)
    rows = np.zeros(3, "<f8")
    refuse("append_rows", "careful/undeclared", rows.ctypes.data, 3, rows.nbytes)
    refuse("declare_stream_json", "careful/s", '["a", "a"]', "<f8", None)
    refuse("declare_stream_json", "careful/s", '["a"]', ">f8", None)
    client.call("declare_stream_json", "careful/s", '["a"]', "<f8", None)
    refuse("append_rows", "careful/s", rows.ctypes.data, 2, rows.nbytes)

    codes = [code for code, _ in refused]
    assert codes == [E_ARGUMENT] * 3 + [E_JSON] * 2 + [E_MSGPACK] * 3 + [E_ARGUMENT] * 5
    messages = [message for _, message in refused]
    assert "careful//double" in messages[0] and "empty" in messages[0]
    assert "'collectord'" in messages[1]
    assert "$tag" in messages[2]
    assert messages[3] == "value of 'careful/json': JSON: expected a value at byte 12"
    assert "'$'" in messages[4] and "byte 1" in messages[4]
    assert "map keys must be str, not int" in messages[5]
    assert "container at byte 1 claims 4294967295 elements; 0 bytes follow" in messages[6]
    assert "follow the msgpack value" in messages[7]
    assert "UTF-8" in messages[8]
    assert "not declared" in messages[9]
    assert "twice" in messages[10]
    assert "'>f8'" in messages[11]
    assert "2 rows of 8 bytes are 16 bytes, not 24" in messages[12]
    # The handle keeps the last message for callers whose calls change threads.
    buffer = ctypes.create_string_buffer(512)
    length = library.collectord_client_error(client.handle, buffer, len(buffer))
    assert buffer.value.decode() == messages[12] and length == len(messages[12])

    client.call("add_int", "careful/last", 2)
    saved = load_json(Path(client.stop()))
    client.close()
    assert saved["careful"]["first"] == 1 and saved["careful"]["last"] == 2
    source = the_source(saved)
    assert source["messages"]["rejected"] == 0 and source["messages"]["messages"] == 3


def test_opening_refuses_a_bad_name_or_endpoint_at_once(library: ctypes.CDLL) -> None:
    assert (
        library.collectord_new(b"bad/name", b"tcp://127.0.0.1:1", b"tcp://127.0.0.1:2", 0) is None
    )
    assert library.collectord_last_error() == b"client name: name 'bad/name' contains '/'"
    with pytest.raises(CError) as caught:
        CClient(library, "camera", "bogus://x", "tcp://127.0.0.1:1")
    assert caught.value.code == E_TRANSPORT and "bogus://x" in caught.value.message
    handle = library.collectord_new(b"camera", b"tcp://127.0.0.1:1", b"tcp://127.0.0.1:2", 0)
    assert handle is not None and len(library.collectord_session(handle)) == 16
    assert library.collectord_close(handle, 0.1) == 0  # nothing published: nothing to wait for


@pytest.mark.parametrize(
    "name", ["con", "Nul.log", "COM1", "lpt\u00b9", "a:b", "what?", "end.", "end ", "x.NPY/y"]
)
def test_file_names_windows_cannot_hold_are_refused_at_the_call(
    library: ctypes.CDLL, daemon: DaemonProcess, name: str
) -> None:
    """As the daemon refuses them (protocol.md, "Paths and names"): a name of a
    stream's path, or an experiment's name, that Windows cannot create as a
    file or folder. As a parameter's name it is taken."""
    client = CClient(library, "cam", daemon.data, daemon.control)
    with pytest.raises(CError) as caught:
        client.call("declare_stream_json", f"cam/{name}", '["x"]', "<f8", None)
    assert caught.value.code == E_ARGUMENT
    assert "Windows" in caught.value.message or "ends like a stream file" in caught.value.message
    if "/" not in name:
        with pytest.raises(CError) as caught:
            client.call("name_experiment", name, 10.0)
        assert caught.value.code == E_ARGUMENT and "Windows" in caught.value.message
        client.call("add_int", f"cam/{name}", 1)
    client.call("declare_stream_json", "cam/com10", '["x"]', "<f8", None)  # no device
    client.call("sync", 30.0)
    client.close()
    assert daemon.status()["rejected"] == 0


def test_curve_lets_the_c_client_in_with_an_allowed_key_only(
    library: ctypes.CDLL, make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    server_public, server_secret = keygen(tmp_path / "server", "daemon")
    client_public, client_secret = keygen(tmp_path / "client", "scope")
    _, stranger_secret = keygen(tmp_path / "stranger", "stranger")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "scope.key").write_bytes(client_public.read_bytes())
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'[security]\nserver_key = "{server_secret}"\nauthorized_clients = "{allowed}"\n'
    )
    daemon = make_daemon(
        data="tcp://0.0.0.0:*", control="tcp://0.0.0.0:*", extra=("--config", str(config))
    )
    data = daemon.data.replace("0.0.0.0", "127.0.0.1")
    control = daemon.control.replace("0.0.0.0", "127.0.0.1")

    client = CClient(library, "scope", data, control, curve=(client_secret, server_public))
    client.call("set_float", "scope/settings", "zoom", 2.0)
    client.call("sync", 30.0)
    for curve in ((stranger_secret, server_public), None):  # a wrong key; no CURVE at all
        intruder = CClient(library, "intruder", data, control, curve=curve)
        intruder.call("set_float", "scope/settings", "zoom", 999.0)
        with pytest.raises(CError) as caught:
            intruder.call("sync", 1.0)
        assert caught.value.code == E_TIMEOUT
        with pytest.raises(CError):
            intruder.close(0.1)
    with pytest.raises(CError) as caught:  # the public file holds no secret key
        CClient(library, "scope", data, control, curve=(client_public, server_public))
    assert caught.value.code == E_ARGUMENT and "use the .key_secret file" in caught.value.message
    saved = load_json(Path(client.stop()))
    client.close()
    assert saved["scope"]["settings"] == {"zoom": 2.0}
    assert [source["name"] for source in saved["collectord"]["sources"]] == ["scope"]


def test_a_damaged_curve_key_is_named_at_open(library: ctypes.CDLL, tmp_path: Path) -> None:
    """40 characters, one of them not Z85 (an edit, a bad copy): refused later by
    libzmq as "cannot use the CURVE keys (is libzmq built with CURVE?): Invalid
    argument", a transport error naming no file."""
    server_public, _ = keygen(tmp_path / "server", "daemon")
    _, client_secret = keygen(tmp_path / "client", "scope")
    text = client_secret.read_text()
    at = text.index('secret-key = "') + len('secret-key = "')
    damaged = tmp_path / "scope.key_secret"
    damaged.write_text(text[:at] + "~" + text[at + 1 :])
    with pytest.raises(CError) as caught:
        CClient(library, "scope", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                curve=(damaged, server_public))  # fmt: skip
    assert caught.value.code == E_ARGUMENT, caught.value.message
    assert caught.value.message == (
        f"secret-key in {damaged} is not 40 characters of Z85 in quotes"
    )


def test_the_daemons_size_limit_is_kept_before_and_after_the_client_learns_it(
    library: ctypes.CDLL,
    make_daemon: Callable[..., DaemonProcess],
    ipc: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Queued before hello told the limit, a message too large goes as its header
    alone (rejected and counted, not a cut connection); after, it fails at the
    call, and rows are cut into blocks that fit."""
    config = tmp_path / "small.toml"
    config.write_text("[limits]\nmax_message_bytes = 10000\n")
    data, control = ipc("data"), ipc("control")
    client = CClient(library, "big", data, control)
    big = b"x" * 20000
    client.call("add_text", "big/early", big, len(big))
    client.call("add_int", "big/small", 1)
    make_daemon(data=data, control=control, extra=("--config", str(config)))
    client.call("sync", 60.0)
    with pytest.raises(CError) as caught:
        client.call("add_text", "big/late", big, len(big))
    assert caught.value.code == E_TOO_LARGE and "at most 8976" in caught.value.message
    client.call("declare_stream_json", "big/rows", '["v"]', "<f8", None)
    rows = np.arange(3000, dtype="<f8")  # 24000 bytes: three blocks or more
    client.call("append_rows", "big/rows", rows.ctypes.data, len(rows), rows.nbytes)
    path = Path(client.stop())
    client.close()
    saved = load_json(path)
    assert saved["big"]["small"] == 1 and "early" not in saved["big"]
    assert stream_rows(path, saved["big"]["rows"])["v"].tolist() == rows.tolist()
    source = the_source(saved)
    assert source["messages"]["rejected"] == 1 and source["messages"]["lost"] == 0
    assert source["recent_rejections"][0].startswith("seq 1:")


def test_threads_publish_through_one_handle(library: ctypes.CDLL, daemon: DaemonProcess) -> None:
    client = CClient(library, "threads", daemon.data, daemon.control)
    errors: list[BaseException] = []

    def publish(thread: int) -> None:
        try:
            for index in range(500):
                client.call("add_int", f"threads/t{thread}/m{index:03d}", index)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=publish, args=(thread,)) for thread in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    saved = load_json(Path(client.stop()))
    client.close()
    expected = {f"m{index:03d}": index for index in range(500)}
    assert saved["threads"] == {f"t{thread}": expected for thread in range(4)}
    assert the_source(saved)["messages"]["messages"] == 2000


def test_an_operators_stop_waits_for_what_the_c_client_published(
    library: ctypes.CDLL, daemon: DaemonProcess
) -> None:
    """The barrier notice is answered: a stop from elsewhere, requested right
    after a burst, saves the whole burst and names no one unconfirmed."""
    client = CClient(library, "burst", daemon.data, daemon.control)
    client.call("add_int", "burst/first", 0)
    client.call("sync", 30.0)  # introduced: the daemon will wait for this client
    for index in range(2000):
        client.call("add_int", f"burst/m{index:04d}", index)
    reply = daemon.stop("operator")
    assert reply["unconfirmed"] == []
    saved = load_json(Path(reply["path"]))
    client.close()
    assert saved["burst"] == {"first": 0, **{f"m{index:04d}": index for index in range(2000)}}
    assert the_source(saved)["messages"]["messages"] == 2001


def test_publishing_through_a_kill9_and_restart_loses_nothing(
    library: ctypes.CDLL, make_daemon: Callable[..., DaemonProcess]
) -> None:
    """3000 numbered values and 3000 numbered rows at about 1 kHz; the daemon
    is killed with SIGKILL and started again on the same folder in between."""
    first = make_daemon()
    client = CClient(library, "steady", first.data, first.control)
    client.call("declare_stream_json", "steady/rows", '["index"]', "<i8", None)
    total = 3000
    published = 0
    slowest = 0.0
    done = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        nonlocal published, slowest
        row = np.zeros(1, "<i8")
        try:
            for index in range(total):
                started = time.perf_counter()
                client.call("add_int", f"steady/m{index:04d}", index)
                row[0] = index
                client.call("append_rows", "steady/rows", row.ctypes.data, 1, row.nbytes)
                slowest = max(slowest, time.perf_counter() - started)
                published = index + 1
                time.sleep(0.001)  # pacing, about 1 kHz
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=publish)
    worker.start()
    wait_for(lambda: published >= 800, what="800 values")
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(30)
    killed_at, outage_started = published, time.perf_counter()
    wait_for(lambda: published >= killed_at + 400 or done.is_set(), what="publishing on")
    down_for = published - killed_at
    make_daemon(data=first.data, control=first.control)
    outage = time.perf_counter() - outage_started
    assert done.wait(120)
    worker.join()
    assert not errors
    client.call("sync", 60.0)
    path = Path(client.stop())
    overflowed = client.counter("overflowed")
    client.close()

    assert down_for >= 400, "the daemon was not down while publishing went on"
    assert slowest < outage / 2, f"a publishing call took {slowest:.3f} s of {outage:.3f} s"
    saved = load_json(path)
    values = {f"m{index:04d}": index for index in range(total)}
    assert {key: value for key, value in saved["steady"].items() if key != "rows"} == values
    rows = stream_rows(path, saved["steady"]["rows"])
    assert rows["index"].tolist() == list(range(total))  # each row once, in order
    source = the_source(saved)
    assert source["messages"]["lost"] == 0 and source["gaps"] == []
    assert source["messages"]["rejected"] == 0
    assert source["messages"]["messages"] == 2 * total + 1
    assert overflowed == 0
    assert len(saved["collectord"]["restarts"]) == 1


def test_a_full_resend_buffer_drops_the_oldest_and_says_so(
    library: ctypes.CDLL, make_daemon: Callable[..., DaemonProcess], ipc: Callable[[str], str]
) -> None:
    data, control = ipc("data"), ipc("control")
    client = CClient(library, "tiny", data, control, buffer=100)
    for index in range(1000):
        client.call("add_int", f"tiny/m{index:03d}", index)
    wait_for(lambda: client.counter("overflowed") == 900, what="the buffer to overflow")
    assert client.counter("unconfirmed") == 100
    with pytest.raises(CError) as caught:
        client.call("sync", 0.2)  # no daemon yet
    assert caught.value.code == E_TIMEOUT and control in caught.value.message
    make_daemon(data=data, control=control)
    client.call("sync", 60.0)
    saved = load_json(Path(client.stop()))
    client.close()
    assert saved["tiny"] == {f"m{index:03d}": index for index in range(900, 1000)}
    source = the_source(saved)
    assert source["messages"]["lost"] == 900 and source["gaps"] == [[1, 900]]
    assert source["messages"]["messages"] == 100


def test_a_request_made_while_the_control_queue_is_full_is_sent_when_the_daemon_comes(
    library: ctypes.CDLL, make_daemon: Callable[..., DaemonProcess], ipc: Callable[[str], str]
) -> None:
    """A daemon away long enough fills the control socket's queue (1000
    requests). A request made then got id 0 and was never sent: its caller
    timed out although the daemon came. Now it waits aside and goes out as the
    queue drains; and one whose caller gave up meanwhile never goes out (a
    `stop` said to have timed out must not end an experiment later)."""
    data, control = ipc("data"), ipc("control")
    client = CClient(library, "queued", data, control)
    client.call("add_int", "queued/x", 1)
    for _ in range(1500):  # more than the queue holds; each caller gives up at once
        with pytest.raises(CError) as caught:
            client.restore("queued", timeout=0.0)
        assert caught.value.code == E_TIMEOUT
    with pytest.raises(CError) as caught:
        client.stop("given up", timeout=0.0)
    assert caught.value.code == E_TIMEOUT
    stopped: list[str] = []
    waiting = threading.Thread(target=lambda: stopped.append(client.stop("kept", timeout=60.0)))
    waiting.start()
    daemon = make_daemon(data=data, control=control)
    waiting.join(90)
    assert stopped, "the stop made while the queue was full was never answered"
    client.close()
    (saved,) = saved_experiments(daemon.output)
    assert saved["_path"] == Path(stopped[0])
    assert saved["queued"] == {"x": 1}


def test_a_stop_the_daemon_died_in_returns_the_experiment_it_saved(
    library: ctypes.CDLL, make_daemon: Callable[..., DaemonProcess], ipc: Callable[[str], str]
) -> None:
    """Killed after the stop's metadata was written: the restarted daemon
    finishes that save, and the stop the link sends again (same ``stop_id``)
    is answered with it instead of ending the next experiment."""
    fault = {ENV: Fault.SAVE_METADATA_WRITTEN.value}
    first = make_daemon(data=ipc("data"), control=ipc("control"), env=fault)
    client = CClient(library, "cam", first.data, first.control)
    client.call("add_int", "cam/frames", 100)
    client.call("sync", 30.0)
    stopped: list[str] = []
    waiting = threading.Thread(target=lambda: stopped.append(client.stop("end", timeout=120.0)))
    waiting.start()
    assert first.process is not None
    assert first.process.wait(60) == -signal.SIGKILL
    make_daemon(data=first.data, control=first.control)
    waiting.join(150)
    assert stopped, "the stop in flight was never answered"
    client.close()
    (saved,) = saved_experiments(first.output)
    assert saved["_path"] == Path(stopped[0])
    assert saved["cam"] == {"frames": 100}


def test_the_windows_branch_compiles(c_build: Path, tmp_path: Path) -> None:
    """platform.c's _WIN32 branch, and everything else, compiled for Windows
    by MinGW with the warnings CMake turns on (most rigs run Windows). It
    found a thread-local error buffer that MinGW's GCC made shared, and
    printf formats MinGW's default C runtime does not know."""
    compiler = shutil.which(MINGW)
    if compiler is None:
        must_fail, message = verdict(f"no {MINGW} on PATH (`{MINGW_INSTALL}`)", os.environ)
        if must_fail:
            pytest.fail(message)
        pytest.skip(message)
    headers = host_headers(tmp_path / "include")
    assert compile_for_windows(compiler, headers, tmp_path / "objects") == []
    assert len(list((tmp_path / "objects").glob("*.o"))) == len(list(SOURCE.glob("src/*.c"))) + 1


def test_without_the_toolchain_the_tests_skip_or_fail_as_told(tmp_path: Path) -> None:
    """No cmake on PATH: a skip naming what to install, or with REQUIRE_ENV a failure."""
    why = missing(path=str(tmp_path))
    assert why == "no cmake on PATH"
    must_fail, message = verdict(why, {})
    assert not must_fail and INSTALL in message and why in message
    must_fail, message = verdict(why, {REQUIRE_ENV: "1"})
    assert must_fail and INSTALL in message and REQUIRE_ENV in message
