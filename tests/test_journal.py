"""The journal's format and replay: round trips, torn tails, the same state again."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from collectord import codec, journal
from collectord.collector import Collector
from collectord.config import Config
from collectord.daemon import Daemon

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


@given(records)
def test_records_round_trip(items: list[dict]) -> None:
    data = b"".join(journal.encode(r) for r in items)
    decoded, intact = journal.decode_all(data)
    assert decoded == items and intact == len(data)


@given(records.filter(bool), st.data())
def test_a_torn_tail_loses_only_the_torn_record(items: list[dict], data) -> None:
    encoded = [journal.encode(r) for r in items]
    whole = b"".join(encoded)
    cut = data.draw(st.integers(0, len(whole) - 1))
    decoded, intact = journal.decode_all(whole[:cut])
    complete = 0
    offset = 0
    for chunk in encoded:
        if offset + len(chunk) > cut:
            break
        offset += len(chunk)
        complete += 1
    assert decoded == items[:complete] and intact == offset


@given(records.filter(lambda r: len(r) >= 2), st.data())
def test_a_flipped_bit_stops_replay_at_the_damaged_record(items: list[dict], data) -> None:
    encoded = [journal.encode(r) for r in items]
    index = data.draw(st.integers(0, len(items) - 1))
    start = sum(len(c) for c in encoded[:index])
    position = start + data.draw(st.integers(0, len(encoded[index]) - 1))
    damaged = bytearray(b"".join(encoded))
    damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    decoded, intact = journal.decode_all(bytes(damaged))
    assert decoded[:index] == items[:index]
    assert intact >= start


def test_reopen_cuts_the_torn_tail_and_appends_after_it(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    writer = journal.Journal(path)
    writer.append({"t": "first", "at": "x"})
    writer.close()
    with open(path, "ab") as file:
        file.write(journal.encode({"t": "bye", "session": "s"})[:-3])
    items, intact, torn = journal.read(path)
    assert torn and items == [{"t": "first", "at": "x"}]
    writer = journal.Journal.reopen(path, intact)
    writer.append({"t": "bye", "session": "s"})
    writer.close()
    assert journal.read(path)[0] == [{"t": "first", "at": "x"}, {"t": "bye", "session": "s"}]


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
    """Two experiments (a save between them), then the journal of the second is replayed."""
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
    daemon.hello("s1", {"name": "one", "host": "h", "pid": 1, "program": "p", "versions": {}})
    from collectord.experiment import StopRequest

    daemon.save(StopRequest(by="test", reason="first"), [])
    feed(second_run)
    daemon.bye("s1")
    daemon._make_durable()
    live = daemon.collector

    records, _, torn = journal.read(daemon.journal.path)
    rebuilt = Collector(live.last_config)
    rebuilt.replay(records)
    daemon._teardown()

    assert not torn
    assert rebuilt.tree.to_dict() == live.tree.to_dict()
    assert rebuilt.experiment.run_id == live.experiment.run_id
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
