"""sources.py: per-client sequencing, gaps and message counts. Times are passed in."""

from __future__ import annotations

import dataclasses

import pytest

from collectord import sources as sources_module
from collectord.sources import (
    GAP_TIMEOUT,
    MAX_GAPS,
    MAX_REASONS,
    Admit,
    Counts,
    Source,
    Sources,
    TooManySessions,
)

T0 = 1000.0


def source_at(received: int) -> Source:
    """A source that has handled every message up to ``received``."""
    source = Source(session="s1", name="camera")
    for seq in range(1, received + 1):
        assert source.admit(seq, T0) is Admit.NEW
    return source


def deliver(source: Source, seq: int, now: float, resends: bool = True) -> Admit:
    """One data message, handled as the daemon does: wait for a gap or give it up."""
    verdict = source.admit(seq, now)
    if verdict is Admit.AHEAD:
        if not source.give_up(now, resends):
            source.dropped_out_of_order()
            return Admit.AHEAD
        source.skip_to(seq - 1)
        verdict = source.admit(seq, now)
    return verdict


# -- admit: in order, duplicates, ahead ----------------------------------------------------


def test_messages_in_order_are_new() -> None:
    source = Source(session="s1", name="camera")
    assert [source.admit(seq, T0) for seq in (1, 2, 3)] == [Admit.NEW] * 3
    assert source.received == 3
    assert source.gaps == []
    assert source.total == Counts()  # admitting is not applying


def test_seen_numbers_are_duplicates() -> None:
    source = source_at(3)
    assert source.admit(3, T0) is Admit.DUPLICATE
    assert source.admit(1, T0) is Admit.DUPLICATE
    assert source.received == 3
    assert source.total.duplicates == 2
    assert source.run.duplicates == 2


def test_message_after_a_gap_is_ahead_and_starts_the_gap_timer() -> None:
    source = source_at(2)
    assert source.admit(5, T0) is Admit.AHEAD
    assert source.received == 2  # not applied: the daemon waits for 3 and 4
    assert source.gap_since == T0
    # Later messages beyond the same gap do not restart the timer.
    assert source.admit(6, T0 + 1) is Admit.AHEAD
    assert source.gap_since == T0
    assert source.gaps == [] and source.total.lost == 0


def test_filled_gap_loses_nothing_and_stops_the_timer() -> None:
    source = source_at(1)
    assert deliver(source, 3, T0) is Admit.AHEAD
    assert deliver(source, 2, T0 + 1) is Admit.NEW
    assert deliver(source, 3, T0 + 1) is Admit.NEW
    assert source.received == 3
    assert source.gaps == [] and source.total.lost == 0
    assert source.gap_since is None
    assert source.total.out_of_order == 1 and source.run.out_of_order == 1


# -- admit_range: a batch of messages --------------------------------------------------


def test_batch_right_after_the_last_message_is_new() -> None:
    source = source_at(2)
    assert source.admit_range(3, 7, T0) == (Admit.NEW, 0)
    assert source.received == 7
    assert source.total.duplicates == 0


def test_resent_batch_overlapping_what_arrived_says_how_much_was_seen() -> None:
    source = source_at(5)
    assert source.admit_range(3, 8, T0) == (Admit.NEW, 3)  # 3, 4, 5 already handled
    assert source.received == 8
    assert source.total.duplicates == 3 and source.run.duplicates == 3


def test_batch_already_handled_is_a_duplicate() -> None:
    source = source_at(5)
    assert source.admit_range(2, 5, T0) == (Admit.DUPLICATE, 0)
    assert source.received == 5
    assert source.total.duplicates == 4


def test_batch_beyond_a_gap_is_ahead() -> None:
    source = source_at(2)
    assert source.admit_range(5, 9, T0) == (Admit.AHEAD, 0)
    assert source.received == 2
    assert source.gap_since == T0


# -- giving up a gap ------------------------------------------------------------------


def test_gap_of_a_client_that_cannot_resend_is_given_up_at_once() -> None:
    source = source_at(1)
    assert source.admit(5, T0) is Admit.AHEAD
    assert source.give_up(T0, resends=False)
    assert deliver(source, 6, T0, resends=False) is Admit.NEW
    assert source.received == 6
    assert source.gaps == [(2, 5)]
    assert source.total.lost == 4 and source.run.lost == 4


def test_gap_of_a_resending_client_is_given_up_only_after_gap_timeout() -> None:
    source = source_at(1)
    assert source.admit(4, T0) is Admit.AHEAD
    assert not source.give_up(T0, resends=True)
    assert not source.give_up(T0 + GAP_TIMEOUT, resends=True)  # strictly longer
    assert source.give_up(T0 + GAP_TIMEOUT + 0.001, resends=True)


def test_gap_timeout_counts_from_the_first_message_that_found_the_gap() -> None:
    source = source_at(1)
    assert deliver(source, 4, T0) is Admit.AHEAD
    assert deliver(source, 5, T0 + GAP_TIMEOUT / 2) is Admit.AHEAD
    assert deliver(source, 5, T0 + GAP_TIMEOUT) is Admit.AHEAD
    assert source.received == 1
    assert deliver(source, 6, T0 + GAP_TIMEOUT + 0.001) is Admit.NEW
    assert source.received == 6
    assert source.gaps == [(2, 5)]
    assert source.total.lost == 4
    assert source.total.out_of_order == 3
    assert source.gap_since is None


def test_no_open_gap_means_nothing_to_give_up_for_a_resending_client() -> None:
    source = source_at(3)
    assert not source.give_up(T0 + 100 * GAP_TIMEOUT, resends=True)


def test_gap_timer_restarts_for_each_new_gap() -> None:
    source = source_at(1)
    assert deliver(source, 3, T0) is Admit.AHEAD
    assert deliver(source, 2, T0 + 1) is Admit.NEW  # gap filled
    # A new gap, much later: its own timer starts now, not at T0.
    later = T0 + 10 * GAP_TIMEOUT
    assert deliver(source, 5, later) is Admit.AHEAD
    assert source.gap_since == later
    assert deliver(source, 5, later + GAP_TIMEOUT + 1) is Admit.NEW
    assert source.gaps == [(3, 4)]


def test_skip_to_records_the_gap_and_the_lost_count() -> None:
    source = source_at(2)
    source.admit(9, T0)
    source.resend_asked_at = T0
    source.skip_to(7)
    assert source.gaps == [(3, 7)]
    assert source.total.lost == 5 and source.run.lost == 5
    assert source.received == 7
    assert source.gap_since is None and source.resend_asked_at is None
    assert source.admit(8, T0) is Admit.NEW


def test_skip_to_what_was_received_changes_nothing() -> None:
    source = source_at(4)
    for last in (4, 2, 0):
        source.skip_to(last)
    assert source.received == 4
    assert source.gaps == []
    assert source.total.lost == 0


def test_gaps_kept_are_bounded_but_every_loss_is_counted() -> None:
    source = source_at(1)
    for _ in range(MAX_GAPS + 5):
        deliver(source, source.received + 3, T0, resends=False)  # two lost each time
    assert len(source.gaps) == MAX_GAPS
    assert source.gaps[0] == (2, 3)
    assert source.total.lost == 2 * (MAX_GAPS + 5)


# -- counts per run and in total --------------------------------------------------------


def test_applied_and_rejected_count_in_run_and_total() -> None:
    source = source_at(0)
    source.applied(1)
    source.applied(1)
    source.reject("bad path")
    assert source.run == Counts(messages=2, rejected=1)
    assert source.total == Counts(messages=2, rejected=1)
    assert list(source.reasons) == ["bad path"]


def test_new_run_resets_run_counts_only() -> None:
    source = source_at(1)
    source.applied(1)
    source.admit(1, T0)
    deliver(source, 4, T0, resends=False)
    source.new_run()
    assert source.run == Counts()
    assert source.total == Counts(messages=1, duplicates=1, lost=2)
    assert source.received == 4  # the sequence goes on across experiments
    source.applied(1)
    assert source.run.messages == 1 and source.total.messages == 2


def test_only_recent_rejection_reasons_are_kept() -> None:
    source = source_at(0)
    for index in range(MAX_REASONS + 3):
        source.reject(f"reason {index}")
    assert list(source.reasons) == [f"reason {i}" for i in range(3, MAX_REASONS + 3)]
    assert source.total.rejected == MAX_REASONS + 3


def test_describe_reports_the_counts_asked_for() -> None:
    source = source_at(1)
    source.applied(1)
    deliver(source, 4, T0, resends=False)
    source.new_run()
    source.introduced = True
    described = source.describe(run=True)
    assert described["messages"] == Counts().as_dict()
    assert described["gaps"] == [], "the gap belongs to the previous experiment"
    assert described["last_seq"] == 4
    assert described["connected"] is True
    whole_life = source.describe(run=False)
    assert whole_life["messages"]["lost"] == 2 and whole_life["gaps"] == [[2, 3]]


# -- Sources -----------------------------------------------------------------------------


def test_sources_get_creates_once() -> None:
    sources = Sources()
    first = sources.get("s1", "camera")
    assert sources.get("s1", "other name") is first
    assert first.name == "camera"
    assert sources.get("s2", "tracking") is not first


def test_connected_and_active_sources() -> None:
    sources = Sources()
    quiet = sources.get("s1", "quiet")  # heard of, said nothing this run
    talker = sources.get("s2", "talker")
    talker.applied(1)
    greeted = sources.get("s3", "greeted")
    greeted.introduced = True
    gone = sources.get("s4", "gone")  # said hello, then its notices failed
    gone.introduced, gone.reachable = True, False
    assert [s for s in sources.by_session.values() if s.connected] == [greeted]
    assert sources.open_sessions() == [greeted, gone]  # a stop tries both
    assert sources.active_in_run() == [talker, greeted]
    assert quiet not in sources.active_in_run()


def test_sources_new_run_resets_runs_and_forgets_closed_sessions() -> None:
    sources = Sources()
    open_one = sources.get("s1", "camera")
    open_one.applied(1)
    closed = sources.get("s2", "stimulus")
    closed.closed = True
    sources.unidentified.reject("garbage")
    sources.new_run()
    assert sources.by_session == {"s1": open_one}
    assert open_one.run == Counts() and open_one.total.messages == 1
    assert sources.unidentified.run == Counts()
    assert sources.unidentified.total.rejected == 1


def test_snapshot_restores_identity_and_sequence_but_not_counts() -> None:
    source = source_at(5)
    source.host, source.pid, source.program = "rig-1", 42, "camera.py"
    source.versions = {"collectord": "1.0"}
    source.introduced = True
    source.applied(1)
    restored = Source.from_snapshot(source.snapshot())
    assert (restored.session, restored.name, restored.received) == ("s1", "camera", 5)
    assert (restored.host, restored.pid, restored.program) == ("rig-1", 42, "camera.py")
    assert restored.versions == {"collectord": "1.0"} and restored.introduced
    assert restored.total == Counts()
    assert restored.admit(6, T0) is Admit.NEW


def test_new_sessions_beyond_the_bound_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(sources_module, "MAX_SESSIONS", 3)
    sources = Sources()
    for session in ("a", "b", "c"):
        sources.get(session, "x")
    with pytest.raises(TooManySessions, match="'d' is new"):
        sources.get("d", "x")
    assert sources.get("a", "x").session == "a"  # known ones still come through


def test_a_forgotten_session_coming_back_shows_no_false_gap() -> None:
    sources = Sources()
    source = sources.get("s1", "cam")
    source.admit_range(1, 40, 0.0)
    source.applied(40)
    source.closed = True  # said bye
    sources.new_run()
    assert "s1" not in sources.by_session
    assert sources.forgotten_sessions == 1 and sources.forgotten.messages == 40
    back = sources.get("s1", "cam")  # the same session again, much later
    assert back.received == 40
    assert back.admit_range(41, 41, 0.0)[0] is Admit.NEW


def test_counts_as_a_map_name_every_counter() -> None:
    """``as_dict`` is written out by hand, for speed: it must not miss a field."""
    counts = Counts(*range(1, len(dataclasses.fields(Counts)) + 1))
    assert counts.as_dict() == dataclasses.asdict(counts)
