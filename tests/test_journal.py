"""The journal's format and replay: round trips, torn tails, damage skipped, the
records' schemas, the same state again."""

from __future__ import annotations

import dataclasses
import itertools
import struct
import tempfile
import types
import zlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from collectord import codec, journal
from collectord.clocks import Sample
from collectord.config import Config
from collectord.daemon import Daemon, Lifecycle, Start
from collectord.daemon.durability import Durability
from collectord.errors import UnreadableRecord
from collectord.experiment import StopRequest

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
records = st.lists(
    st.fixed_dictionaries({"t": st.sampled_from([t.value for t in journal.RecordType])}).flatmap(
        lambda base: st.dictionaries(st.text(min_size=1, max_size=5), values, max_size=3).map(
            lambda extra: {**extra, **base}
        )
    ),
    max_size=8,
)


def starts(encoded: list[bytes]) -> list[int]:
    """Where each encoded record starts in their concatenation."""
    return [0, *itertools.accumulate(len(chunk) for chunk in encoded)][: len(encoded)]


def expected_scan(encoded: list[bytes], changed: list[bool]) -> journal.Scan:
    """What a scan of ``encoded`` gives when the records marked ``changed`` no
    longer read back: those before the last intact one are damage, the rest a
    torn tail."""
    expected = journal.Scan(records=[], offsets=[], intact=0, torn=False, damage=[])
    damaged_from = None
    for chunk, offset, bad in zip(encoded, starts(encoded), changed, strict=True):
        if bad:
            damaged_from = offset if damaged_from is None else damaged_from
            continue
        if damaged_from is not None:
            expected.damage.append(journal.Damage(damaged_from, offset - damaged_from))
            damaged_from = None
        expected.records.append(msgpack.unpackb(chunk[8:], raw=False))
        expected.offsets.append(offset)
        expected.intact = offset + len(chunk)
    expected.torn = damaged_from is not None
    return expected


@given(records)
def test_records_round_trip(items: list[dict]) -> None:
    encoded = [journal.encode(r) for r in items]
    data = b"".join(encoded)
    found = journal.scan(data)
    assert found.records == items
    assert found.offsets == starts(encoded)
    assert found.intact == len(data) and not found.torn and not found.damage


@given(records, st.data())
def test_a_cut_at_any_byte_keeps_the_records_before_it(items: list[dict], data) -> None:
    encoded = [journal.encode(r) for r in items]
    whole = b"".join(encoded)
    cut = data.draw(st.integers(0, len(whole)), label="cut")
    found = journal.scan(whole[:cut])
    ends = [offset + len(chunk) for offset, chunk in zip(starts(encoded), encoded, strict=True)]
    complete = sum(end <= cut for end in ends)
    assert found.records == items[:complete]
    assert found.offsets == starts(encoded)[:complete]
    assert found.intact == (ends[complete - 1] if complete else 0)
    assert found.torn == (cut not in [0, *ends])
    assert not found.damage


@given(records.filter(bool), st.data())
def test_damage_loses_only_the_damaged_records(items: list[dict], data) -> None:
    """A bit flipped, or a span overwritten, in record ``index`` (the span may
    reach into the records after it)."""
    encoded = [journal.encode(r) for r in items]
    whole = b"".join(encoded)
    index = data.draw(st.integers(0, len(items) - 1), label="index")
    start = starts(encoded)[index]
    first = start + data.draw(st.integers(0, len(encoded[index]) - 1), label="first byte")
    damaged = bytearray(whole)
    if data.draw(st.booleans(), label="flip a bit"):
        damaged[first] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    else:
        span = slice(first, first + data.draw(st.integers(1, len(whole) - first), label="size"))
        damaged[span] = data.draw(
            st.binary(min_size=len(whole[span]), max_size=len(whole[span])).filter(
                lambda new: new != whole[span]
            ),
            label="new bytes",
        )
    changed = [
        damaged[offset : offset + len(chunk)] != chunk
        for offset, chunk in zip(starts(encoded), encoded, strict=True)
    ]
    found = journal.scan(bytes(damaged))
    assert found.records == [item for item, bad in zip(items, changed, strict=True) if not bad]
    assert found == expected_scan(encoded, changed)
    if not all(changed[index:]):  # an intact record follows: the damage is skipped
        assert found.damage[0].offset == start and not found.torn
    else:
        assert found.torn and found.intact == start


@given(records, st.binary(min_size=1) | st.integers(1, 5000).map(bytes))
def test_garbage_after_the_records_is_a_torn_tail(items: list[dict], garbage: bytes) -> None:
    """Random bytes, or zeros (a file extended by a crash before its data landed)."""
    whole = b"".join(journal.encode(r) for r in items)
    found = journal.scan(whole + garbage)
    assert found.records == items
    assert found.intact == len(whole) and found.torn and not found.damage


def test_damage_between_records_is_skipped_not_taken_for_a_torn_tail() -> None:
    first = journal.encode({"t": "bye", "session": "a"})
    second = journal.encode({"t": "first", "at": "x"})
    found = journal.scan(first + b"\x00garbage\xde\x00" + second)
    assert found.records == [{"t": "bye", "session": "a"}, {"t": "first", "at": "x"}]
    assert found.damage == [journal.Damage(len(first), 10)]
    assert found.offsets == [0, len(first) + 10] and not found.torn


def test_a_record_whose_crc_matches_but_is_no_record_is_damage() -> None:
    """Framing and CRC intact, but not a map with a str "t": no version writes that."""
    good = journal.encode({"t": "first", "at": "x"})
    for payload in [msgpack.packb([1, 2]), msgpack.packb({"t": 1}), b"\x81\xc1"]:
        bad = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
        found = journal.scan(good + bad + good)
        assert found.records == [{"t": "first", "at": "x"}] * 2
        assert found.damage == [journal.Damage(len(good), len(bad))]


def test_a_damaged_long_record_is_skipped() -> None:
    """Long lengths read from damaged bytes take the CRCs of long spans."""
    rng = np.random.default_rng(0)
    big = [{"t": "msg", "frames": [rng.bytes(300_000)]} for _ in range(10)]
    encoded = [journal.encode(r) for r in big]
    damaged = bytearray(b"".join(encoded))
    damaged[20] ^= 1
    found = journal.scan(bytes(damaged))
    assert found.records == big[1:]
    assert found.damage == [journal.Damage(0, len(encoded[0]))] and not found.torn


@given(st.binary(), st.binary())
def test_crcs_combine_as_zlibs(first: bytes, second: bytes) -> None:
    combined = journal._shift(zlib.crc32(first), len(second)) ^ zlib.crc32(second)
    assert combined == zlib.crc32(first + second)


@settings(max_examples=30)
@given(st.integers(0, 1_000_000), st.data())
def test_the_crc_of_a_span_is_zlibs(size: int, data) -> None:
    """Spans longer than ``_SpanCrc.DIRECT`` come from prefix CRCs."""
    buffer = np.random.default_rng(size).bytes(size)
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.integers(start, size), label="end")
    spans = journal._SpanCrc(memoryview(buffer))
    assert spans.crc(start, end) == zlib.crc32(buffer[start:end])


def test_reopen_cuts_the_torn_tail_and_appends_after_it(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    writer = journal.Journal(path)
    writer.append({"t": "first", "at": "x"})
    writer.close()
    with open(path, "ab") as file:
        file.write(journal.encode({"t": "bye", "session": "s"})[:-3])
    found = journal.read(path)
    assert found.torn and found.records == [{"t": "first", "at": "x"}]
    writer = journal.Journal.reopen(path, found.intact)
    writer.append({"t": "bye", "session": "s"})
    writer.close()
    assert journal.read(path).records == [{"t": "first", "at": "x"}, {"t": "bye", "session": "s"}]


# -- replay gives the state the live daemon had ------------------------------------------

names = st.sampled_from(["a", "b", "c"])
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
operations = st.lists(
    st.tuples(st.sampled_from(["params", "data"]), paths, values, st.sampled_from(["s1", "s2"])),
    max_size=25,
)


def body(kind: str, path: str, value) -> bytes:
    if kind == "params":
        return codec.pack({"path": path, "values": {"p": value}})
    return codec.pack({"path": path, "value": value})


def header(session: str, seq: int, **fields) -> bytes:
    return msgpack.packb(
        {
            "v": 1,
            "source": f"src-{session}",
            "session": session,
            "seq": seq,
            "resends": True,
            **fields,
        }
    )


def frames(kind: str, session: str, seq: int, path: str, value) -> list[bytes]:
    return [header(session, seq, kind=kind), body(kind, path, value)]


def batch(session: str, first: int, ops) -> list[bytes]:
    kinds = [kind for kind, _, _, _ in ops]
    bodies = [body(kind, path, value) for kind, path, value, _ in ops]
    return [header(session, first, kind="batch", kinds=kinds), b"".join(bodies)]


@settings(max_examples=60, deadline=None)
@given(operations, operations, st.integers(1, 4))
def test_replaying_the_journal_rebuilds_the_daemons_state(first_run, second_run, size) -> None:
    """Two experiments (a save between them), then the journal of the second is replayed.

    The second has something in it: one with nothing is begun anew, not
    replayed (``test_a_clean_restart_begins_a_new_experiment_carrying_the_state``).
    """
    assume(second_run)
    output = Path(tempfile.mkdtemp(prefix="cd-journal-"))
    daemon = Daemon(Config(output=str(output)))
    seqs = {"s1": 0, "s2": 0}

    def feed(ops) -> None:
        """Single messages and batches of ``size``, some resent in part."""
        for start in range(0, len(ops), size):
            group = [op for op in ops[start : start + size] if op[3] == "s2"]
            for kind, path, value, session in ops[start : start + size]:
                if session == "s1":
                    seqs[session] += 1
                    daemon.on_data(frames(kind, session, seqs[session], path, value))
            if group:
                first = seqs["s2"] + 1
                seqs["s2"] += len(group)
                daemon.on_data(batch("s2", first, group))
                daemon.on_data(batch("s2", first, group))  # a resend: all duplicates

    feed(first_run)
    daemon.lifecycle.hello(
        "s1", {"name": "one", "host": "h", "pid": 1, "program": "p", "versions": {}}
    )
    daemon.lifecycle.save(StopRequest(by="test", reason="first"), [])
    feed(second_run)
    daemon.lifecycle.bye("s1")
    live = daemon.lifecycle.collector
    assert daemon.durability.journal is not None
    found = journal.read(daemon.durability.journal.path)
    daemon._teardown()  # no sockets were bound: this closes the journal and the lock

    # A daemon starting on the folder replays the journal of the second experiment.
    restarted = Lifecycle(output, output / "last_config.json", "npy", Durability(1.0, print))
    restarted.open(Start.RESUME)
    rebuilt = restarted.collector
    restarted.durability.close()

    assert not found.torn and not found.damage
    for record in found.records:
        journal.check(record)
    assert rebuilt.tree.to_dict() == live.tree.to_dict()
    assert rebuilt.experiment.run_id == live.experiment.run_id
    # The parameter history too: each message with the time it was received.
    assert rebuilt.history == live.history
    assert rebuilt.began.params() == live.began.params()
    # Duplicates and out-of-order arrivals are not journaled: they describe
    # deliveries to one daemon process, not the experiment's content.
    for session, source in live.sources.by_session.items():
        again = rebuilt.sources.by_session[session]
        assert (again.received, again.name, again.closed) == (
            source.received,
            source.name,
            source.closed,
        )
        assert (again.run.messages, again.run.rejected, again.run.lost) == (
            source.run.messages,
            source.run.rejected,
            source.run.lost,
        )


# -- record schemas -----------------------------------------------------------------------

#: Values of each type a schema names.
typed_values: dict[type, st.SearchStrategy[Any]] = {
    str: st.text(max_size=5),
    int: st.integers(0, 2**64 - 1),
    float: st.floats(allow_nan=False),
    bytes: st.binary(max_size=8),
    bool: st.booleans(),
    list: st.lists(values, max_size=3),
    dict: st.dictionaries(st.text(max_size=5), values, max_size=3),
    types.NoneType: st.none(),
}


@st.composite
def schema_records(draw, kind: journal.RecordType) -> dict[str, Any]:
    """A record of ``kind`` as its schema allows: each field of one of its
    types, an optional one there or not."""
    record: dict[str, Any] = {"t": kind.value}
    for name, field in journal.SCHEMA[kind].items():
        if not field.optional or draw(st.booleans()):
            record[name] = draw(st.one_of(*(typed_values[t] for t in field.types)))
    return record


def full_record(kind: journal.RecordType) -> dict[str, Any]:
    """A record of ``kind`` with every field of its schema, of its first type."""
    simple = {
        str: "x",
        int: 1,
        float: 1.5,
        bytes: b"x",
        bool: True,
        list: [],
        dict: {},
        types.NoneType: None,
    }
    fields = journal.SCHEMA[kind].items()
    return {"t": kind.value, **{name: simple[field.types[0]] for name, field in fields}}


def test_every_record_type_has_a_schema() -> None:
    assert set(journal.SCHEMA) == set(journal.RecordType)


@given(
    st.sampled_from(list(journal.RecordType)).flatmap(
        lambda kind: st.tuples(st.just(kind), schema_records(kind))
    )
)
def test_check_accepts_what_the_schema_allows(case) -> None:
    kind, record = case
    assert journal.check(record) is kind
    assert journal.check({**record, "added_by_a_newer_version": 1}) is kind
    (read,) = journal.scan(journal.encode(record)).records
    assert journal.check(read) is kind


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A journal's records, written by a real daemon, and its last config.

    Every record type but RESTART and STOP (written when a daemon resumes or
    saves an experiment: added here as the daemon writes them), and every optional field
    but a message's "refused" (a failure of the daemon's own).
    """
    output = str(tmp_path_factory.mktemp("written"))
    daemon = Daemon(Config(output=output, required=("cam", "absent")))
    lifecycle = daemon.lifecycle
    introduced = {"name": "cam", "host": "h", "pid": 1, "program": "p", "versions": {}}
    try:
        lifecycle.hello("s1", introduced)
        lifecycle.check_required()  # "cam" is connected: a PRESENCE record
        daemon.on_data(frames("params", "s1", 1, "cam", 1.5))
        stream = {"path": "cam/t", "columns": ["x"], "dtype": "<f8"}
        daemon.on_data([header("s1", 2, kind="stream"), codec.pack(stream)])
        block = codec.pack({"path": "cam/t", "rows": 2})
        daemon.on_data([header("s1", 3, kind="block"), block, np.arange(2.0).tobytes()])
        lifecycle.hello("s1", {**introduced, "confirmed": 5})  # a gap: 4 and 5 are lost
        lifecycle.reject("s1", "a control request was refused")
        lifecycle.reject(None, "a request from a session not known")
        lifecycle.name("fish-3")
        lifecycle.restored(("cam",), {"gain": 2})
        source = lifecycle.collector.sources.by_session["s1"]
        lifecycle.clock_sample(source, Sample(at=1.7e9, offset=-0.25, rtt=0.0003))
        lifecycle.reach(source, False, "disconnected")  # its control connection closed
        lifecycle.bye("s1")
        lifecycle.check_required()  # and missing again
        daemon.durability.make_durable({})
        assert daemon.durability.journal is not None
        found = journal.read(daemon.durability.journal.path)
        last_config = lifecycle.collector.last_config
    finally:
        daemon._teardown()
    restart = {"resumed": "2024-01-01T00:00:00+00:00", "journal_records": 1, "torn_tail": False}
    stop = {
        "t": "stop",
        **dataclasses.asdict(StopRequest(by="test", reason="written")),
        "unconfirmed": [],
        "stopped": "2024-01-01T00:00:00+00:00",
    }
    return [*found.records, {"t": "restart", "restart": restart}, stop], last_config


def test_check_accepts_the_records_the_daemon_writes(written) -> None:
    records, _ = written
    assert {journal.check(record) for record in records} == set(journal.RecordType)
    assert any("raw" in record for record in records)
    assert {"t": "reject", "session": None, "reason": "a request from a session not known"} in (
        records
    )


def test_check_and_replay_agree_on_the_fields_each_record_needs(written, tmp_path) -> None:
    """Without one of its fields, a record fails ``check`` if and only if the
    replay needs that field: the schema's required fields are the reader's."""
    records, last_config = written
    for index, record in enumerate(records):
        for name in set(record) - {"t"}:
            lacking = {key: value for key, value in record.items() if key != name}
            try:
                journal.check(lacking)
            except UnreadableRecord:
                refused = True
            else:
                refused = False
            lifecycle = Lifecycle(tmp_path, tmp_path / "none.json", "npy", Durability(1, print))
            lifecycle.collector.last_config = last_config
            try:
                for replayed in [*records[:index], lacking, *records[index + 1 :]]:
                    lifecycle.replay_record(replayed)
            except KeyError as exc:
                needed = exc.args == (name,)
            else:
                needed = False
            assert refused == needed, (record["t"], name)


def test_a_message_journaled_before_receive_times_counts_from_the_start(written, tmp_path) -> None:
    """Journals written before records carried "time" still replay; their
    changes are dated at the experiment's start, the one time known for sure."""
    records, last_config = written
    lifecycle = Lifecycle(tmp_path, tmp_path / "none.json", "npy", Durability(1, print))
    lifecycle.collector.last_config = last_config
    for record in records:
        lifecycle.replay_record({key: value for key, value in record.items() if key != "time"})
    started = lifecycle.collector.experiment.started.timestamp()
    times = {(change[3], change[0]) for change in lifecycle.collector.history}
    assert times == {(("cam",), started)}


def test_check_rejects_an_unknown_type_saying_a_newer_version_may_know_it() -> None:
    with pytest.raises(UnreadableRecord, match=r"unknown .*'snapshot'.*newer version"):
        journal.check({"t": "snapshot", "at": "x"})
    for record in [{}, {"t": 1}]:
        with pytest.raises(UnreadableRecord, match="no type"):
            journal.check(record)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (kind, name)
        for kind, fields in journal.SCHEMA.items()
        for name, field in fields.items()
        if not field.optional
    ],
)
def test_check_rejects_a_missing_field_naming_it(kind: journal.RecordType, name: str) -> None:
    record = full_record(kind)
    journal.check(record)
    del record[name]
    with pytest.raises(UnreadableRecord, match=f"'{kind.value}' lacks field '{name}'"):
        journal.check(record)


@pytest.mark.parametrize(
    ("kind", "name"), [(kind, name) for kind, fields in journal.SCHEMA.items() for name in fields]
)
def test_check_rejects_a_field_of_the_wrong_type_naming_it(
    kind: journal.RecordType, name: str
) -> None:
    types_ = journal.SCHEMA[kind][name].types
    # A bool is no int; a float field gets a str.
    wrong: Any = True if types_ == (int,) else "x" if float in types_ else 1.5
    record = {**full_record(kind), name: wrong}
    with pytest.raises(
        UnreadableRecord,
        match=f"'{kind.value}': field '{name}' must be .*, not {type(wrong).__name__}$",
    ):
        journal.check(record)
