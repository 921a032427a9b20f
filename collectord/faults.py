"""Fault points: the steps at which a test may kill the daemon, to prove each survives it.

A step of the experiment's lifecycle that must survive a crash calls
``reached(Fault.X)`` once it is done. Normally that does nothing. With
``COLLECTORD_FAULT=<name>`` in the environment (``<name>@N``: the N-th time the
point is reached), the process kills itself there with SIGKILL, as ``kill -9``
or a power cut would: no ``finally`` runs, nothing is flushed. The tests start
real daemons with it set, once for every point (``tests/test_lifecycle.py``).

``COLLECTORD_PAUSE=<name>=<file>`` makes the point wait instead, until
``<file>`` exists: a test holds a save there to see what the daemon does
meanwhile, and lets it go on by creating the file.
"""

from __future__ import annotations

import enum
import os
import signal
import time


class Fault(str, enum.Enum):
    """Every fault point, in the order a save (then a start) reaches them."""

    SAVE_STOP_JOURNALED = "save.stop_journaled"  # STOP record and everything before it fsynced
    SAVE_NEXT_BEGUN = "save.next_begun"  # the next experiment's BEGIN record fsynced
    SAVE_STREAMS_FINISHED = "save.streams_finished"  # stream files finished and converted
    SAVE_METADATA_WRITTEN = "save.metadata_written"  # metadata file in the staging folder
    SAVE_CHANGES_WRITTEN = "save.changes_written"  # parameter history beside it
    SAVE_LAST_CONFIG_WRITTEN = "save.last_config_written"
    SAVE_MARKED = "save.marked"  # the staging folder marked saved
    SAVE_JOURNAL_DISCARDED = "save.journal_discarded"
    SAVE_PUBLISHED = "save.published"  # the experiment folder renamed into place
    OPEN_REPLAYED = "open.replayed"  # a journal replayed at start, before it is reopened
    #: the successor of an experiment in which nothing arrived begun, before that one goes
    OPEN_BEGUN_INSTEAD = "open.begun_instead"


#: The steps of a save, for tests that kill the daemon at each.
SAVE_STEPS = tuple(fault for fault in Fault if fault.value.startswith("save."))

ENV = "COLLECTORD_FAULT"
PAUSE_ENV = "COLLECTORD_PAUSE"
#: A paused point goes on by itself after this long (a test that forgot it).
PAUSE_LIMIT = 120.0
_hits: dict[Fault, int] = {}


def reached(point: Fault) -> None:
    """Die here, like ``kill -9``, or wait, if the environment names this point."""
    paused = os.environ.get(PAUSE_ENV)
    if paused:
        name, _, gate = paused.partition("=")
        if name == point.value:
            deadline = time.monotonic() + PAUSE_LIMIT
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != point.value:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        kill = getattr(signal, "SIGKILL", None)
        if kill is None:  # Windows: no SIGKILL, and _exit skips cleanup as a kill would
            os._exit(137)
        os.kill(os.getpid(), kill)
