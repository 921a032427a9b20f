"""The client's batches and resend buffer: exact message counts, whatever is cut."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from collectord import codec
from collectord.outbox import (
    BATCH_MESSAGES,
    BLOCK,
    Batch,
    Limits,
    Outbox,
    Unconfirmed,
)

KINDS = ("params", "data", "stream")

#: A message: its kind and a body (a block when the kind is BLOCK).
messages = st.lists(
    st.tuples(st.sampled_from((*KINDS, BLOCK)), st.binary(min_size=1, max_size=300)),
    max_size=60,
)


def publish(outbox: Outbox, items: list[tuple[str, bytes]], budget: int) -> None:
    for seq, (kind, body) in enumerate(items, start=1):
        if kind == BLOCK:
            outbox.add_block(seq, body, np.zeros(3))
        else:
            outbox.add(seq, kind, body, budget)


def unbatched(batches: list[Batch]) -> list[tuple[int, str, bytes]]:
    """Every message the batches hold, as (seq, kind, body)."""
    found = []
    for batch in batches:
        start = 0
        for index, end in enumerate(batch.ends):
            found.append(
                (batch.first + index, batch.kinds[index], bytes(batch.payload[start:end]))
            )
            start = end
        assert start == len(batch.payload)
    return found


def expected(items: list[tuple[str, bytes]], first: int = 1) -> list[tuple[int, str, bytes]]:
    return [(seq, kind, body) for seq, (kind, body) in enumerate(items, start=1) if seq >= first]


@settings(max_examples=200)
@given(messages, st.integers(1, 1000))
def test_batches_hold_every_message_in_order(items, budget) -> None:
    outbox = Outbox()
    publish(outbox, items, budget)
    assert len(outbox) == len(items)
    batches = outbox.take()
    assert not outbox and outbox.take() == []
    assert unbatched(batches) == expected(items)
    for batch in batches:
        if batch.rows is not None:
            assert batch.kinds == [BLOCK]  # a block travels alone
        else:
            assert BLOCK not in batch.kinds
            assert batch.count <= BATCH_MESSAGES
            assert batch.count == 1 or len(batch.payload) <= budget


def test_a_batch_closes_at_its_message_limit() -> None:
    outbox = Outbox()
    for seq in range(1, 2 * BATCH_MESSAGES + 2):
        outbox.add(seq, "params", b"\x80", Limits.of(64 << 20).batch)
    assert [batch.count for batch in outbox.take()] == [BATCH_MESSAGES, BATCH_MESSAGES, 1]


@settings(max_examples=200)
@given(messages, st.integers(0, 70), st.integers(0, 70))
def test_the_buffer_keeps_exactly_the_newest_and_forgets_the_confirmed(
    items, limit, confirmed
) -> None:
    outbox = Outbox()
    publish(outbox, items, 500)
    unconfirmed = Unconfirmed(limit)
    unconfirmed.extend(outbox.take())
    dropped, upto = unconfirmed.trim()
    kept = min(limit, len(items))
    assert dropped == len(items) - kept and len(unconfirmed) == kept
    assert upto == (len(items) - kept if dropped else 0)
    assert unbatched(list(unconfirmed.batches)) == expected(items, first=upto + 1)
    unconfirmed.confirm(confirmed)
    first = max(upto, confirmed) + 1
    assert unbatched(list(unconfirmed.batches)) == expected(items, first=first)
    assert len(unconfirmed) == len(expected(items, first=first))


@given(messages, st.integers(0, 70))
def test_what_follows_a_sent_message_is_found(items, sent) -> None:
    outbox = Outbox()
    publish(outbox, items, 500)
    unconfirmed = Unconfirmed(len(items))
    unconfirmed.extend(outbox.take())
    after = unbatched(list(unconfirmed.after(sent)))
    # A suffix of what was published, from the batch that holds ``sent + 1`` on.
    assert after == expected(items)[len(items) - len(after) :]
    assert len(after) >= len(items) - sent
    assert all(batch.last > sent for batch in unconfirmed.after(sent))


@given(st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=40), st.integers(1, 200))
def test_a_batch_split_for_a_smaller_limit_keeps_every_body(bodies, budget) -> None:
    batch = Batch(7, "params", bodies[0])
    for body in bodies[1:]:
        batch.add("data", body)
    pieces = batch.split(budget)
    assert unbatched(pieces) == unbatched([batch])
    assert all(piece.count == 1 or len(piece.payload) <= budget for piece in pieces)


@settings(max_examples=100)
@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False) | st.integers(0, 9)),
        min_size=1,
        max_size=30,
    )
)
def test_a_batch_payload_splits_back_into_its_bodies(values) -> None:
    """The client's payload is what the daemon's ``unpack_many`` reads."""
    outbox = Outbox()
    for seq, value in enumerate(values, start=1):
        outbox.add(seq, "params", msgpack.packb({"path": "a/b", "values": value}), 1 << 20)
    (batch,) = outbox.take()
    decoded = codec.unpack_many(bytes(batch.payload), batch.count)
    assert decoded == [{"path": "a/b", "values": value} for value in values]


def test_a_batch_header_fits_the_daemons_limit() -> None:
    """The payload budget leaves room for a full ``kinds`` list and the header."""
    limits = Limits.of(64 << 10)
    kinds = msgpack.packb(["params"] * BATCH_MESSAGES)
    assert limits.batch + len(kinds) <= limits.body < limits.message
