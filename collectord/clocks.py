"""Clock offsets: how each process's clock relates to the daemon's, and the mapping.

A rig's processes stamp their data with their own clocks (``time.time`` of
another PC, a camera's hardware clock). Each client measures its clock
against the daemon's by an exchange of four timestamps over the control
channel, as NTP does::

    t1  the client's clock as it sends ``clock``
    t2  the daemon's clock as it takes the request
    t3  the daemon's clock as it replies
    t4  the client's clock as the reply arrives

    offset = ((t2 - t1) + (t3 - t4)) / 2     daemon time = source time + offset
    rtt    = (t4 - t1) - (t3 - t2)           time on the way, both ways

Whatever the way there and back take, the true offset is within ``rtt / 2``
of the measured one, so of a short burst of exchanges the one with the
lowest round trip is kept (``best``): a ``Sample``. The daemon keeps a
source's samples over the experiment (``ClockRecord``), bounded however long
it runs, and the metadata carries them with a ``summary``.

``to_daemon_time`` maps a stream's time column onto the daemon's clock from
those samples, following the drift between them. Pure logic: no sockets.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

#: Samples a source keeps per experiment. Beyond, they are thinned to half
#: (the lower round trip of each pair kept) and from then on each kept sample
#: is the best of twice as many: a week of samples every 5 s keeps between
#: 500 and 1000 of them, one per 10 to 20 minutes, spread over the week.
MAX_SAMPLES = 1000
#: Samples the extrapolation beyond either end fits its slope to.
EDGE_FIT = 8
#: Exchanges in a burst; the one with the lowest round trip is kept.
BURST = 8
#: Seconds a client waits for an exchange's reply before giving the burst up.
REPLY_TIMEOUT = 2.0


class Sample(NamedTuple):
    """One measurement of a source's clock: when (daemon time), the offset, the rtt."""

    at: float  # the daemon's clock, seconds: the middle of the daemon's t2 and t3
    offset: float  # seconds to add to the source's time to get the daemon's
    rtt: float  # seconds: the round trip of the exchange; the offset is good to rtt / 2

    @property
    def source_time(self) -> float:
        """When it was measured, on the source's clock."""
        return self.at - self.offset


def measure(t1: float, t2: float, t3: float, t4: float) -> Sample:
    """The sample of one exchange (see the module docstring for the four times)."""
    return Sample(at=(t2 + t3) / 2, offset=((t2 - t1) + (t3 - t4)) / 2, rtt=(t4 - t1) - (t3 - t2))


def best(samples: Iterable[Sample]) -> Sample:
    """The sample with the lowest round trip: the tightest bound on the offset."""
    return min(samples, key=lambda sample: sample.rtt)


class Probe:
    """When a client measures its clock, and what a burst found; pure logic.

    The client's I/O thread asks ``want`` as it goes round; when it says
    so, the thread reads the clock (t1), sends ``clock`` and calls ``sent``.
    Each reply goes to ``replied``, which returns the burst's best sample
    once ``burst`` exchanges are done, for the thread to report with
    ``offset``. A burst begins at ``restart`` (each hello) and then every
    ``interval`` seconds (0: none after the first). A reply that does not
    come within ``REPLY_TIMEOUT`` (the daemon died) ends the burst, which
    is tried again ``interval`` later or at the next hello.
    """

    def __init__(self, interval: float, burst: int = BURST) -> None:
        self.interval = interval
        self.burst = burst
        self.enabled = True  # False: the daemon does not know ``clock``
        self._due: float | None = None  # when the next exchange is due; None: not before a hello
        self._sent_at: float | None = None  # an exchange awaits its reply since then
        self._t1 = 0.0
        self._taken: list[Sample] = []

    def restart(self, now: float) -> None:
        """The daemon (re)introduced us: measure now, from scratch."""
        self._due, self._sent_at, self._taken = now, None, []

    def want(self, now: float) -> bool:
        """Whether to send an exchange now (or give up a lost one)."""
        if not self.enabled or self._due is None:
            return False
        if self._sent_at is not None:
            if now - self._sent_at > REPLY_TIMEOUT:
                self._taken = []
                self._sent_at = None
                self._due = now + self.interval if self.interval else None
            return False
        return now >= self._due

    def sent(self, t1: float, now: float) -> None:
        self._t1, self._sent_at = t1, now

    def replied(self, t2: float, t3: float, t4: float, now: float) -> Sample | None:
        """An exchange's reply (t4 read as it arrived); the best sample when the
        burst is done, else None."""
        if self._sent_at is None:
            return None  # a reply to an exchange given up
        self._sent_at = None
        exchange = measure(self._t1, t2, t3, t4)
        if exchange.rtt >= 0:  # else a clock was stepped back meanwhile: no measurement
            self._taken.append(exchange)
        if len(self._taken) < self.burst:
            return None
        found, self._taken = best(self._taken), []
        self._due = now + self.interval if self.interval else None
        return found

    def refused(self) -> None:
        """The daemon refused ``clock`` (an older daemon): stop measuring."""
        self.enabled = False
        self._sent_at = None


def check_sample(at: Any, offset: Any, rtt: Any) -> Sample:
    """A sample from a client's report, or ``ValueError`` saying what is wrong."""
    for name, value in (("at", at), ("offset", offset), ("rtt", rtt)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number of seconds, not {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, not {value}")
    if rtt < 0:
        raise ValueError(f"rtt must be 0 or more, not {rtt}")
    return Sample(float(at), float(offset), float(rtt))


class ClockRecord:
    """A source's samples over one experiment (or the daemon's life), bounded.

    Samples arrive in order. While fewer than ``limit`` are kept, each is
    kept. At ``limit`` the kept ones are thinned to half, the lower round
    trip of each consecutive pair staying, and each sample kept from then on
    is the best of ``stride`` consecutive ones (``stride`` doubling at each
    thinning): the kept samples stay evenly spread over the whole time,
    between ``limit / 2`` and ``limit`` of them. The same arrivals give the
    same record, so a journal replayed rebuilds it exactly.
    """

    def __init__(self, limit: int = MAX_SAMPLES) -> None:
        if limit < 2:
            raise ValueError("a clock record keeps at least 2 samples")
        self.limit = limit
        self.count = 0  # samples measured, kept or not
        self.stride = 1
        self._kept: list[Sample] = []
        self._window: Sample | None = None  # the best of the window being filled
        self._in_window = 0

    def add(self, sample: Sample) -> None:
        self.count += 1
        if self._window is None or sample.rtt < self._window.rtt:
            self._window = sample
        self._in_window += 1
        if self._in_window < self.stride:
            return
        self._kept.append(self._window)
        self._window, self._in_window = None, 0
        if len(self._kept) >= self.limit:
            pairs = zip(self._kept[::2], self._kept[1::2], strict=False)
            thinned = [best(pair) for pair in pairs]
            if len(self._kept) % 2:
                thinned.append(self._kept[-1])
            self._kept = thinned
            self.stride *= 2

    @property
    def samples(self) -> list[Sample]:
        """The samples kept, in order, the best of an unfinished window last."""
        return self._kept + ([self._window] if self._window is not None else [])

    def __bool__(self) -> bool:
        return self.count > 0

    def describe(self, with_samples: bool) -> dict[str, Any]:
        """The ``clock`` entry of a source: the summary, and the samples if asked."""
        samples = self.samples
        described = summary(samples)
        described["count"] = self.count
        if with_samples:
            described["samples"] = [list(sample) for sample in samples]
        return described


def summary(samples: Sequence[Sample]) -> dict[str, Any]:
    """Median offset, its spread (interquartile range), median rtt, samples kept.

    The spread is that of the offsets over the samples' whole time: a clock
    that drifts spreads by its drift, one that does not by the precision of
    the measurement.
    """
    if not samples:
        raise ValueError("no samples to summarize")
    offsets = [sample.offset for sample in samples]
    # ``statistics``, not numpy: the daemon's loop summarizes a client's clock
    # as its samples come, and ``np.percentile`` imports ``numpy.ma`` at its
    # first call (16 to 80 ms here, during which the loop answered nothing).
    # The "inclusive" quartiles are numpy's default (linear) ones.
    low, _, high = (
        statistics.quantiles(offsets, n=4, method="inclusive") if len(offsets) > 1 else offsets * 3
    )
    return {
        "median_offset": float(statistics.median(offsets)),
        "offset_spread": float(high - low),
        "median_rtt": float(statistics.median(sample.rtt for sample in samples)),
        "kept": len(samples),
    }


def offset_text(seconds: float) -> str:
    """An offset as people read it: ``+35.0 ms``, ``-2.500 s``; one that rounds
    to zero is ``+0.0 ms``, never ``-0.0 ms``."""
    if abs(seconds) < 1:
        # Adding 0.0 turns the -0.0 of a tiny negative offset into 0.0.
        return f"{round(seconds * 1000, 1) + 0.0:+.1f} ms"
    return f"{seconds:+.3f} s"


def clock_samples(metadata: Mapping[str, Any], clock: str) -> list[Sample]:
    """The samples a saved experiment's metadata holds of the clock named ``clock``.

    ``clock`` is a stream descriptor's ``clock``: the session of the client
    whose clock stamped the stream's time column. Raises ``KeyError`` if the
    metadata names no such source, ``ValueError`` if it has no samples.
    """
    for source in metadata["collectord"]["sources"]:
        if source.get("session") == clock:
            recorded = source.get("clock")
            if not recorded or not recorded.get("samples"):
                raise ValueError(f"the metadata holds no clock samples of {clock!r}")
            return [Sample(*map(float, sample)) for sample in recorded["samples"]]
    raise KeyError(f"the metadata names no source of session {clock!r}")


def to_daemon_time(
    times: Any, samples: Iterable[Sample | Sequence[float]]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Map ``times`` (seconds on a source's clock) onto the daemon's clock.

    ``samples`` are that source's clock samples (``Sample``, or the
    ``[at, offset, rtt]`` triples of the metadata). The offset is
    interpolated linearly in the source's time between consecutive samples,
    which follows the drift of the source's clock; before the first and
    after the last sample it goes on along a straight line fitted to the
    ``EDGE_FIT`` samples at that end. One sample: a constant offset. Of
    samples measured at the same source time, the lowest round trip counts.

    >>> samples = [Sample(102.0, 2.0, 0.001), Sample(202.01, 2.01, 0.001)]
    >>> to_daemon_time([100.0, 150.0, 300.0], samples).tolist()
    [102.0, 152.005, 302.02]
    """
    ordered = sorted((Sample(*map(float, sample)) for sample in samples), key=_by_time_then_rtt)
    if not ordered:
        raise ValueError("no clock samples: the times cannot be mapped")
    unique: list[Sample] = []
    for sample in ordered:
        if not unique or sample.source_time > unique[-1].source_time:
            unique.append(sample)
    x = np.asarray(times, dtype=np.float64)
    source = np.array([sample.source_time for sample in unique])
    offset = np.array([sample.offset for sample in unique])
    if len(unique) == 1:
        return x + offset[0]
    # An array even for one time: np.interp gives a scalar for a 0-d ``x``.
    mapped = np.asarray(np.interp(x, source, offset), dtype=np.float64)
    before, after = x < source[0], x > source[-1]
    if before.any():
        slope = _slope(source[:EDGE_FIT], offset[:EDGE_FIT])
        mapped[before] = offset[0] + slope * (x[before] - source[0])
    if after.any():
        slope = _slope(source[-EDGE_FIT:], offset[-EDGE_FIT:])
        mapped[after] = offset[-1] + slope * (x[after] - source[-1])
    return x + mapped


def _by_time_then_rtt(sample: Sample) -> tuple[float, float]:
    return sample.source_time, sample.rtt


def _slope(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
    """The least-squares slope of ``y`` over ``x`` (distinct ``x``, two or more)."""
    dx = x - x.mean()
    return float(np.dot(dx, y - y.mean()) / np.dot(dx, dx))
