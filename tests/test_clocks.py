"""Clock offsets, pure: the four-timestamp maths, the bounded record, the probe's
schedule and the mapping of a time column onto the daemon's clock.

The same with a real daemon and a client whose clock is off and drifts is in
``test_clock_offsets.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectord import clock_samples, to_daemon_time
from collectord.clocks import (
    BURST,
    EDGE_FIT,
    REPLY_TIMEOUT,
    ClockRecord,
    Probe,
    Sample,
    best,
    check_sample,
    measure,
    offset_text,
    summary,
)

seconds = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)
offsets = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


# -- one exchange -------------------------------------------------------------------


@given(
    t1=st.floats(min_value=0.0, max_value=2e9, allow_nan=False),
    theta=offsets,
    there=seconds,
    back=seconds,
    held=seconds,
)
def test_the_offset_is_within_half_the_round_trip_of_the_truth(
    t1: float, theta: float, there: float, back: float, held: float
) -> None:
    """Whatever the ways there and back take, rtt is their sum and the error at
    most half of it; equal ways give the offset exactly."""
    t2 = t1 + theta + there  # the daemon's clock is the client's plus theta
    t3 = t2 + held
    t4 = t3 - theta + back
    sample = measure(t1, t2, t3, t4)
    slack = 16 * np.finfo(float).eps * (abs(t1) + abs(theta) + 2)  # float rounding
    assert sample.rtt == pytest.approx(there + back, abs=slack)
    assert abs(sample.offset - theta) <= sample.rtt / 2 + slack
    assert sample.at == pytest.approx((t2 + t3) / 2)
    if there == back:
        assert sample.offset == pytest.approx(theta, abs=slack)


def test_a_sample_converts_between_the_two_clocks() -> None:
    sample = measure(t1=100.0, t2=152.001, t3=152.002, t4=100.003)
    assert sample.offset == pytest.approx(52.0)
    assert sample.rtt == pytest.approx(0.002)
    assert sample.source_time == pytest.approx(100.0015)


def test_of_a_burst_the_lowest_round_trip_is_kept() -> None:
    burst = [Sample(1.0, 0.5, 0.004), Sample(2.0, 0.6, 0.001), Sample(3.0, 0.7, 0.002)]
    assert best(burst) == burst[1]


@pytest.mark.parametrize(
    ("at", "offset", "rtt", "words"),
    [
        (math.nan, 0.0, 0.001, "at must be finite"),
        (1.0, math.inf, 0.001, "offset must be finite"),
        (1.0, 0.0, -0.001, "rtt must be 0 or more"),
        (True, 0.0, 0.001, "at must be a number"),
        (1.0, "0", 0.001, "offset must be a number"),
    ],
)
def test_a_reported_sample_that_makes_no_sense_is_refused_saying_why(
    at: object, offset: object, rtt: object, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        check_sample(at, offset, rtt)


# -- the record over an experiment ---------------------------------------------------


def test_a_record_keeps_every_sample_until_its_limit() -> None:
    record = ClockRecord(limit=10)
    for i in range(9):
        record.add(Sample(float(i), 0.0, 0.001))
    assert [s.at for s in record.samples] == [float(i) for i in range(9)]
    assert record.count == 9


@given(total=st.integers(min_value=1, max_value=5000), limit=st.integers(2, 64), low=st.data())
def test_a_long_record_stays_bounded_spread_and_keeps_the_best(
    total: int, limit: int, low: st.DataObject
) -> None:
    """However many arrive: at most ``limit`` kept, spread over the whole time,
    and the quickest exchange of all is never thinned away."""
    quickest = low.draw(st.integers(0, total - 1))
    record = ClockRecord(limit=limit)
    for i in range(total):
        record.add(Sample(float(i), 0.0, 0.0001 if i == quickest else 0.001 + (i % 7) * 1e-4))
    kept = record.samples
    assert record.count == total
    assert len(kept) <= limit
    if total >= limit:
        assert len(kept) >= limit // 2
    times = [sample.at for sample in kept]
    assert times == sorted(times)
    assert quickest in times
    # Spread: no stretch of the time without a sample longer than a few windows.
    edges = [-1.0, *times, float(total)]
    assert max(np.diff(edges)) <= 2 * record.stride + 1


def test_a_week_of_samples_every_five_seconds_keeps_at_most_a_thousand() -> None:
    record = ClockRecord()
    week = 7 * 24 * 3600 // 5
    for i in range(week):
        record.add(Sample(i * 5.0, 0.0, 0.001))
    assert 500 <= len(record.samples) <= 1000
    assert record.samples[0].at < 3600 and record.samples[-1].at > (week - 1) * 5.0 - 3600


def test_the_summary_gives_median_offset_its_spread_and_the_median_round_trip() -> None:
    samples = [
        Sample(float(i), offset, 0.001 * (i + 1)) for i, offset in enumerate([1, 2, 3, 4, 100])
    ]
    described = summary(samples)
    assert described["median_offset"] == 3.0
    assert described["offset_spread"] == 2.0  # 25th to 75th percentile: 2 to 4
    assert described["median_rtt"] == pytest.approx(0.003)
    assert described["kept"] == 5
    record = ClockRecord()
    for sample in samples:
        record.add(sample)
    assert record.describe(with_samples=False) == {**described, "count": 5}
    assert record.describe(with_samples=True)["samples"] == [list(s) for s in samples]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=50))
def test_the_summary_is_numpys_median_and_quartiles(offsets: list[float]) -> None:
    samples = [Sample(float(i), offset, abs(offset)) for i, offset in enumerate(offsets)]
    described = summary(samples)
    low, high = np.percentile(offsets, [25, 75])
    assert described["median_offset"] == pytest.approx(np.median(offsets), rel=1e-12, abs=1e-12)
    assert described["offset_spread"] == pytest.approx(high - low, rel=1e-9, abs=1e-9)
    assert described["median_rtt"] == pytest.approx(np.median(np.abs(offsets)), abs=1e-12)


# -- when the client measures -----------------------------------------------------------


def test_a_probe_measures_a_burst_after_hello_then_every_interval() -> None:
    probe = Probe(interval=5.0)
    assert not probe.want(0.0)  # not before the daemon answered a hello
    probe.restart(10.0)
    found = None
    for i in range(BURST):
        assert probe.want(10.0)
        probe.sent(t1=100.0 + i, now=10.0)
        assert not probe.want(10.0)  # one exchange at a time
        found = probe.replied(t2=150.0 + i, t3=150.0 + i, t4=100.0 + i + 0.001 * (i + 1), now=10.0)
        if i < BURST - 1:
            assert found is None
    assert found is not None and found.rtt == pytest.approx(0.001)
    assert not probe.want(14.9)
    assert probe.want(15.0)


def test_a_probe_gives_up_a_lost_reply_and_a_refused_command() -> None:
    probe = Probe(interval=5.0)
    probe.restart(0.0)
    assert probe.want(0.0)
    probe.sent(t1=1.0, now=0.0)
    assert not probe.want(REPLY_TIMEOUT)
    assert not probe.want(REPLY_TIMEOUT + 0.1)  # given up: the next burst is due later
    assert probe.replied(2.0, 2.0, 2.0, REPLY_TIMEOUT + 0.2) is None  # too late: ignored
    assert probe.want(REPLY_TIMEOUT + 5.2)
    probe.refused()
    assert not probe.want(1000.0)


def test_an_exchange_across_a_clock_stepped_back_is_no_measurement() -> None:
    probe = Probe(interval=5.0, burst=2)
    probe.restart(0.0)
    probe.sent(t1=100.0, now=0.0)
    assert probe.replied(t2=50.0, t3=50.0, t4=99.0, now=0.0) is None  # rtt -1 s
    probe.sent(t1=100.0, now=0.0)
    assert probe.replied(t2=50.0, t3=50.0, t4=100.002, now=0.0) is None  # one of two
    probe.sent(t1=100.0, now=0.0)
    found = probe.replied(t2=50.0, t3=50.0, t4=100.004, now=0.0)
    assert found is not None and found.rtt == pytest.approx(0.002)


def test_a_probe_with_no_interval_measures_once_per_hello() -> None:
    probe = Probe(interval=0.0, burst=1)
    probe.restart(0.0)
    probe.sent(1.0, 0.0)
    assert probe.replied(1.5, 1.5, 1.001, 0.0) is not None
    assert not probe.want(1e9)
    probe.restart(1e9)
    assert probe.want(1e9)


# -- mapping a time column ---------------------------------------------------------------


def linear_clock_samples(offset: float, drift: float, at: list[float]) -> list[Sample]:
    """Exact samples, taken at daemon times ``at``, of a source whose clock runs
    so that daemon time = source time * (1 + drift) + offset."""
    samples = []
    for daemon_time in at:
        source_time = (daemon_time - offset) / (1 + drift)
        samples.append(Sample(daemon_time, daemon_time - source_time, 0.0))
    return samples


@given(
    offset=st.floats(min_value=-1e4, max_value=1e4),
    drift=st.floats(min_value=-1e-3, max_value=1e-3),
    count=st.integers(min_value=2, max_value=30),
    spacing=st.floats(min_value=0.5, max_value=600.0),
)
def test_a_linear_clock_is_mapped_exactly_inside_and_beyond_the_samples(
    offset: float, drift: float, count: int, spacing: float
) -> None:
    start = 1.7e9
    at = [start + i * spacing for i in range(count)]
    samples = linear_clock_samples(offset, drift, at)
    truth = np.linspace(start - 3 * spacing, at[-1] + 3 * spacing, 101)
    source_times = (truth - offset) / (1 + drift)
    mapped = to_daemon_time(source_times, samples)
    assert np.max(np.abs(mapped - truth)) < 1e-5


def test_drift_that_changes_is_followed_between_samples() -> None:
    """A clock whose rate changes: exact at every sample, and between two
    samples on the straight line joining them."""
    samples = [Sample(0.0, 1.0, 0.0), Sample(10.0, 1.01, 0.0), Sample(20.0, 1.0, 0.0)]
    source = np.array([s.source_time for s in samples])
    assert to_daemon_time(source, samples) == pytest.approx([0.0, 10.0, 20.0])
    middle = (source[0] + source[1]) / 2
    assert to_daemon_time([middle], samples)[0] == pytest.approx(middle + 1.005)


def test_beyond_the_samples_the_slope_of_the_end_samples_continues() -> None:
    # The first EDGE_FIT samples drift at 1e-3, the rest at -1e-3.
    samples = [Sample(i + i * 1e-3, i * 1e-3, 0.0) for i in range(EDGE_FIT)]
    last = samples[-1]
    samples += [
        Sample(last.source_time + k + last.offset - k * 1e-3, last.offset - k * 1e-3, 0.0)
        for k in range(1, EDGE_FIT + 1)
    ]
    before = to_daemon_time([-100.0], samples)[0]
    after_source = samples[-1].source_time + 100.0
    after = to_daemon_time([after_source], samples)[0]
    assert before == pytest.approx(-100.0 - 0.1)
    assert after == pytest.approx(after_source + samples[-1].offset - 0.1)


def test_one_sample_is_a_constant_offset_and_none_is_an_error() -> None:
    assert to_daemon_time([0.0, 1.0], [[12.0, 2.0, 0.001]]).tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="no clock samples"):
        to_daemon_time([0.0], [])


def test_one_time_is_mapped_inside_and_beyond_the_samples_and_nan_stays_nan() -> None:
    """A single time (a float, not a list) beyond the samples failed with
    "'numpy.float64' object does not support item assignment"."""
    samples = [Sample(102.0, 2.0, 0.001), Sample(202.01, 2.01, 0.001)]
    assert float(to_daemon_time(150.0, samples)) == pytest.approx(152.005)
    assert float(to_daemon_time(300.0, samples)) == pytest.approx(302.02)
    assert float(to_daemon_time(np.float32(50.0), samples)) == pytest.approx(51.995)
    assert math.isnan(float(to_daemon_time(math.nan, samples)))
    mapped = to_daemon_time([math.nan, 50.0, 300.0], samples)
    assert math.isnan(mapped[0]) and mapped[1:].tolist() == pytest.approx([51.995, 302.02])


def test_samples_in_any_order_and_at_the_same_time_count_once_the_quickest() -> None:
    samples = [Sample(20.0, 10.0, 0.001), Sample(2.0, 1.0, 0.002), Sample(2.0, 1.5, 0.001)]
    # At source times 10, 1 and 0.5.
    mapped = to_daemon_time([0.5, 10.0], samples)
    assert mapped[0] == pytest.approx(2.0)
    assert mapped[1] == pytest.approx(20.0)
    # Both at source time 1, offsets 1.0 and 1.5: the quicker one's counts.
    twins = [Sample(2.0, 1.0, 0.003), Sample(2.5, 1.5, 0.001), Sample(20.0, 10.0, 0.001)]
    assert to_daemon_time([1.0], twins)[0] == pytest.approx(2.5)


def test_the_samples_of_a_stream_s_clock_are_found_in_its_metadata() -> None:
    metadata = {
        "collectord": {
            "sources": [
                {"session": "a", "clock": {"samples": [[10.0, 2.0, 0.001]]}},
                {"session": "b"},
            ]
        }
    }
    assert clock_samples(metadata, "a") == [Sample(10.0, 2.0, 0.001)]
    with pytest.raises(ValueError, match="no clock samples of 'b'"):
        clock_samples(metadata, "b")
    with pytest.raises(KeyError, match="no source of session 'c'"):
        clock_samples(metadata, "c")


def test_an_offset_that_rounds_to_zero_has_no_minus_sign() -> None:
    assert offset_text(-0.00001) == "+0.0 ms"
    assert offset_text(-0.0) == "+0.0 ms"
    assert offset_text(-0.00006) == "-0.1 ms"
    assert offset_text(0.035) == "+35.0 ms"
    assert offset_text(-2.5) == "-2.500 s"
