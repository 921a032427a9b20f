"""Which rejections reach the daemon's log: a few lines per source a minute.

Every rejection is counted (``status``, the metadata) and journaled, so the
log need not hold them all; it is for a person to read, and it lives on the
data's disk (``OUTPUT/.collectord/daemon.log`` for a daemon a GUI started).
A client that sent a message the daemon refuses with every camera frame, at
100 Hz, wrote a line of up to a thousand characters each time: gigabytes a
day, in the space the next experiment's data needs. So each source gets
``LINES`` lines per ``PERIOD``; the rest are counted, and the count is logged
with the source's next rejection after the period.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("collectord")

#: Lines a source's rejections may take in the log per ``PERIOD``.
LINES = 20
#: Seconds.
PERIOD = 60.0
#: Reasons logged per message (a hostile batch can hold thousands).
PER_MESSAGE = 3
#: Sources whose periods are kept; beyond it, those that ended are dropped.
SOURCES = 1000


@dataclass
class _Period:
    began: float
    lines: int = 0
    unlogged: int = 0


class RejectionLog:
    """Logs rejections by source name, at most ``lines`` lines per ``period``."""

    def __init__(
        self,
        lines: int = LINES,
        period: float = PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lines = lines
        self._period = period
        self._clock = clock
        self._periods: dict[str, _Period] = {}

    def log(self, name: str, reasons: Sequence[str]) -> None:
        """Log the rejections of one message (or request) from ``name``."""
        if not reasons:
            return
        now = self._clock()
        period = self._periods.get(name)
        if period is None or now - period.began >= self._period:
            if period is not None and period.unlogged:
                log.warning(
                    "rejected from %s: %d more since %.0f s before this were not logged",
                    name,
                    period.unlogged,
                    now - period.began,
                )
            if period is None and len(self._periods) >= SOURCES:
                self._drop_ended(now)
            period = self._periods[name] = _Period(now)
        shown = reasons[:PER_MESSAGE]
        for reason in shown:
            self._line(name, period, "rejected from %s: %s", reason)
        if len(reasons) > len(shown):
            more = len(reasons) - len(shown)
            self._line(name, period, "rejected from %s: %d more in the same batch", more, more)

    def _line(self, name: str, period: _Period, text: str, value: object, count: int = 1) -> None:
        if period.lines >= self._lines:
            period.unlogged += count
            return
        period.lines += 1
        log.warning(text, name, value)
        if period.lines == self._lines:
            log.warning(
                "rejected from %s: more within %.0f s are counted (status, metadata), not logged",
                name,
                self._period,
            )

    def _drop_ended(self, now: float) -> None:
        ended = [name for name, p in self._periods.items() if now - p.began >= self._period]
        for name in ended:
            del self._periods[name]
