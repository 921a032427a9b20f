"""Clock offsets with a real daemon: a client whose clock is off by a known
offset and drifts at a known rate, the samples in the metadata, the mapping of
its stream's time column, and the samples surviving a ``kill -9``.

The bounds are generous (a loaded 2-core machine can delay a reply by tens of
milliseconds); the precision reached on loopback is in docs/performance.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DaemonProcess, saved_experiments, wait_for

from collectord import Client, clock_samples, load_json, to_daemon_time
from collectord.clocks import Sample
from collectord.control import request
from collectord.errors import RequestError
from collectord.protocol import Command

#: The test client's clock is ahead of the daemon's by this much at its start...
OFFSET = 2.5
#: ...and runs this much fast: 2 %, so that over the test's 3 s of rows it
#: drifts by 60 ms: a mapping by one constant offset would be more than
#: TOLERANCE off at one end or the other.
DRIFT = 0.02
#: Seconds the mapped times may be off from the truth.
TOLERANCE = 0.020


class DriftingClock:
    """A clock ``OFFSET`` ahead of ``time.time`` at its start, running ``1 + DRIFT`` fast."""

    def __init__(self) -> None:
        self.start = time.time()

    def __call__(self) -> float:
        return self.start + OFFSET + (time.time() - self.start) * (1 + DRIFT)

    def true_offset(self, source_time: float) -> float:
        """Seconds to add to this clock's ``source_time`` to get the daemon's (``time.time``)."""
        daemon_time = self.start + (source_time - self.start - OFFSET) / (1 + DRIFT)
        return daemon_time - source_time


def sources_with_clock(daemon: DaemonProcess, count: int) -> list[dict[str, Any]]:
    return [s for s in daemon.status()["sources"] if s.get("clock", {}).get("count", 0) >= count]


def clock_count(daemon: DaemonProcess) -> int:
    """Clock samples measured since the daemon started, of all sources."""
    return sum(s.get("clock", {}).get("count", 0) for s in daemon.status()["sources"])


def test_a_drifting_clock_is_measured_and_its_time_column_mapped(
    daemon: DaemonProcess,
) -> None:
    clock = DriftingClock()
    with Client("camera", daemon.data, daemon.control, clock=clock, clock_interval=0.1) as client:
        frames = client.stream("camera/frames", ["t", "truth"], "f8", time_column="t")
        # Rows for a few seconds, the truth (the daemon's clock) beside each stamp.
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            frames.append([clock(), time.time()])
            time.sleep(0.005)
        wait_for(lambda: sources_with_clock(daemon, 10), what="ten clock samples")
        path = client.stop()
    metadata = load_json(path)
    descriptor = metadata["camera"]["frames"]
    assert descriptor["time_column"] == "t"
    assert descriptor["clock"] == client.session
    recorded = next(s for s in metadata["collectord"]["sources"] if s["name"] == "camera")
    samples = [Sample(*sample) for sample in recorded["clock"]["samples"]]
    assert recorded["clock"]["count"] == len(samples) >= 10
    for sample in samples:
        # The theory's bound (half the round trip), plus what the drift adds in it.
        error = sample.offset - clock.true_offset(sample.source_time)
        assert abs(error) <= sample.rtt / 2 + 1e-3, (sample, error)
    truths = [clock.true_offset(sample.source_time) for sample in samples]
    assert min(truths) - TOLERANCE <= recorded["clock"]["median_offset"] <= max(truths) + TOLERANCE
    assert max(truths) - min(truths) > 2 * TOLERANCE  # the drift matters
    rows = np.load(Path(path).parent / descriptor["file"])
    mapped = to_daemon_time(rows["t"], clock_samples(metadata, descriptor["clock"]))
    assert len(rows) > 100
    assert np.max(np.abs(mapped - rows["truth"])) < TOLERANCE


def test_samples_belong_to_the_experiment_they_were_taken_in(daemon: DaemonProcess) -> None:
    """Each experiment's metadata holds the samples reported during it, and
    none of the one before (whose samples span a second or more)."""
    with Client("rig", daemon.data, daemon.control, clock_interval=0.1) as client:
        for _ in range(2):
            client.set_params("rig/settings", trial=1)
            before = len(saved_experiments(daemon.output))
            more = clock_count(daemon) + 10
            wait_for(lambda more=more: clock_count(daemon) >= more, what="ten clock samples")
            client.stop()
            assert len(saved_experiments(daemon.output)) == before + 1
    first, second = (m["collectord"] for m in saved_experiments(daemon.output))
    stopped = dt.datetime.fromisoformat(first["stopped"]).timestamp()
    for account in (first, second):
        (source,) = account["sources"]
        assert source["clock"]["count"] >= 10
        for _, offset, rtt in source["clock"]["samples"]:
            assert abs(offset) <= rtt / 2 + 1e-3  # the same clock: no offset
    first_times = [at for at, _, _ in first["sources"][0]["clock"]["samples"]]
    second_times = [at for at, _, _ in second["sources"][0]["clock"]["samples"]]
    assert max(first_times) <= stopped
    # A burst under way at the stop is reported, and counted, after it.
    assert min(second_times) >= stopped - 0.5
    assert max(first_times) - min(first_times) >= 0.9


def test_clock_samples_survive_a_kill_of_the_daemon(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    first = make_daemon()
    client = Client("camera", first.data, first.control, clock=DriftingClock(), clock_interval=0.1)
    try:
        (measured,) = wait_for(lambda: sources_with_clock(first, 5), what="five clock samples")
        # The samples are journaled in order with messages: once a later
        # message is on disk, so are they.
        client.set_params("camera/settings", exposure=1.0)
        client.sync()
        killed_at = time.time()
        first.kill9()
        second = make_daemon(data=first.data, control=first.control)
        wait_for(lambda: sources_with_clock(second, measured["clock"]["count"] + 1), what="more")
        client.stop(timeout=60)
    finally:
        client.close()
    (metadata,) = saved_experiments(first.output)
    (source,) = metadata["collectord"]["sources"]
    before = [at for at, _, _ in source["clock"]["samples"] if at < killed_at]
    assert len(before) >= measured["clock"]["count"]
    assert "resumed" in metadata["collectord"]["restarts"][0]
    for _, offset, _ in source["clock"]["samples"]:
        assert offset == pytest.approx(-OFFSET, abs=0.5)  # 2 % of the test's seconds


def test_a_client_whose_clock_fails_still_delivers_its_data(
    daemon: DaemonProcess, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> float:
        raise OSError("the camera is unplugged")

    with (
        caplog.at_level(logging.ERROR, logger="collectord.client"),
        Client("camera", daemon.data, daemon.control, clock=broken) as client,
    ):
        client.set_params("camera/settings", exposure=1.0)
        path = client.stop()
    metadata = load_json(path)
    assert metadata["camera"]["settings"] == {"exposure": 1.0}
    (source,) = metadata["collectord"]["sources"]
    assert "clock" not in source
    assert "the camera is unplugged" in caplog.text


def test_a_client_refuses_a_clock_that_is_not_one() -> None:
    with pytest.raises(TypeError, match="clock must be a function"):
        Client("camera", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", clock=12.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clock_interval must be seconds"):
        Client("camera", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", clock_interval=-1.0)


def test_the_daemon_refuses_a_report_that_makes_no_sense(daemon: DaemonProcess) -> None:
    now = time.time()
    with pytest.raises(RequestError, match="has not said hello"):
        request(
            daemon.control,
            Command.OFFSET,
            {"session": "nobody", "at": now, "offset": 0.0, "rtt": 0.001},
        )
    with Client("camera", daemon.data, daemon.control) as client:
        client.sync()
        with pytest.raises(RequestError, match="rtt must be 0 or more"):
            request(
                daemon.control,
                Command.OFFSET,
                {"session": client.session, "at": now, "offset": 0.0, "rtt": -1.0},
            )
        with pytest.raises(RequestError, match="must be float"):
            request(daemon.control, Command.CLOCK, {"t1": "now"})
        path = client.stop()
    (source,) = load_json(path)["collectord"]["sources"]
    assert source["messages"]["rejected"] == 1  # the bad report, counted under its session
