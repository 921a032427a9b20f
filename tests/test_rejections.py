"""How many rejections reach the daemon's log (pure logic, a stepped clock)."""

from __future__ import annotations

import logging

import pytest

from collectord.daemon.rejections import RejectionLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [record.getMessage() for record in caplog.records]
    caplog.clear()
    return lines


def test_each_source_gets_its_lines_per_period_and_the_rest_is_counted(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="collectord")
    clock = Clock()
    rejections = RejectionLog(lines=3, period=60.0, clock=clock)
    for index in range(10):
        rejections.log("cam", [f"bad {index}"])
    rejections.log("stim", ["bad"])  # another source has its own lines
    assert logged(caplog) == [
        "rejected from cam: bad 0",
        "rejected from cam: bad 1",
        "rejected from cam: bad 2",
        "rejected from cam: more within 60 s are counted (status, metadata), not logged",
        "rejected from stim: bad",
    ]
    clock.now += 59.0
    rejections.log("cam", ["still bad"])
    assert logged(caplog) == []
    clock.now += 1.0
    rejections.log("cam", ["bad again"])
    assert logged(caplog) == [
        "rejected from cam: 8 more since 60 s before this were not logged",
        "rejected from cam: bad again",
    ]


def test_a_batch_logs_a_few_reasons_and_counts_the_rest(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="collectord")
    clock = Clock()
    rejections = RejectionLog(lines=5, period=60.0, clock=clock)
    rejections.log("cam", [f"bad {index}" for index in range(1000)])
    assert logged(caplog) == [
        "rejected from cam: bad 0",
        "rejected from cam: bad 1",
        "rejected from cam: bad 2",
        "rejected from cam: 997 more in the same batch",
    ]
    rejections.log("cam", [f"worse {index}" for index in range(10)])
    assert logged(caplog) == [
        "rejected from cam: worse 0",
        "rejected from cam: more within 60 s are counted (status, metadata), not logged",
    ]
    clock.now += 60.0
    rejections.log("cam", [])  # nothing rejected: nothing said
    rejections.log("cam", ["x"])
    assert logged(caplog) == [
        "rejected from cam: 9 more since 60 s before this were not logged",
        "rejected from cam: x",
    ]
