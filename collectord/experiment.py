"""One experiment: from a start (daemon start or previous stop) to its stop.

Builds the saved metadata: the tree in stytra's layout, plus collectord's own
account of the run under the reserved top-level key ``collectord``. Pure logic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
import socket
from typing import Any

from .paths import RESERVED_KEY
from .protocol import PROTOCOL_VERSION
from .sources import Sources


def now() -> dt.datetime:
    """Local wall-clock time with its UTC offset, as lab notebooks expect."""
    return dt.datetime.now().astimezone()


def new_run_id(at: dt.datetime) -> str:
    return f"{at:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclasses.dataclass
class Experiment:
    run_id: str
    started: dt.datetime
    first_message: dt.datetime | None = None
    #: Given by a client (``name``): the experiment's folder and file names.
    name: str | None = None

    @classmethod
    def begin(cls) -> Experiment:
        started = now()
        return cls(run_id=new_run_id(started), started=started)

    def touch(self) -> None:
        if self.first_message is None:
            self.first_message = now()

    @property
    def named_after(self) -> dt.datetime:
        """The time the experiment's day folder is named after: its first message."""
        return self.first_message or self.started

    @property
    def folder_name(self) -> str:
        """Its folder's name in the day folder: the client's name for it, or the
        time of its first message."""
        return self.name or f"{self.named_after:%H%M%S}"


@dataclasses.dataclass
class StopRequest:
    """Who or what ended an experiment, and why."""

    by: str
    reason: str
    host: str = ""
    pid: int | None = None


def provenance(
    experiment: Experiment,
    sources: Sources,
    stop: StopRequest,
    stopped: dt.datetime,
    unconfirmed: list[str],
    version: str,
) -> dict[str, Any]:
    """collectord's own account of the run, saved under ``collectord``."""
    active = sources.active_in_run()
    return {
        "version": version,
        "protocol": PROTOCOL_VERSION,
        "run_id": experiment.run_id,
        "name": experiment.name,
        "started": experiment.started.isoformat(),
        "first_message": experiment.first_message.isoformat()
        if experiment.first_message
        else None,
        "stopped": stopped.isoformat(),
        "stopped_by": dataclasses.asdict(stop),
        "unconfirmed": unconfirmed,
        "daemon": {"host": socket.gethostname(), "pid": os.getpid()},
        "sources": [source.describe(run=True) for source in active],
        "unidentified_rejections": sources.unidentified.run.rejected,
    }


def metadata(tree: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
    """The saved JSON's content: the tree's categories, and ours beside them."""
    assert RESERVED_KEY not in tree, "paths.parse_path keeps clients out of the reserved key"
    return {**tree, RESERVED_KEY: account}
