"""``status``: what the daemon is doing.

Request fields: none. Reply ``result`` (``protocol.RESULTS[Command.STATUS]``):
``version``, ``protocol``, ``host``, ``pid``, ``uptime`` (seconds),
``endpoints`` (map: ``data``, ``control``), ``curve`` (bool: the sockets use
CURVE), ``output``, ``last_config``, ``run_id``, ``run_started``,
``restarts`` (array: how the current experiment outlived crashes of the
daemon), ``stop_pending``, ``saving`` (map or nil: the save under way),
``saved_experiments``, ``last_saved`` (str or nil), ``stop_ids`` (true: a
stop sent again with its ``stop_id`` gets its save, ``commands/stop.py``),
``last_error`` (str or
nil), ``sources`` (array of maps, ``protocol.SOURCE``: ``name``, ``session``,
``host``, ``pid``, ``program``, ``versions``, ``connected``, ``last_seq``,
``messages`` (map: ``messages``, ``rejected``, ``duplicates``,
``out_of_order``, ``lost``), ``gaps`` (array of ``[first, last]``),
``recent_rejections`` (array of str)), ``unidentified`` (map: ``rejected``,
``recent_rejections``: bad input whose sender could not be told),
``rejected`` (int, all rejections), ``forgotten`` (map: ``sessions``,
``messages``), ``time`` (str, the daemon's clock now, for ``last_heard``),
``required`` (array of str: the names an experiment needs), ``missing``
(array of maps: ``name``, ``since``, ``cause``: the required names with no
connected session), ``streams`` (array of maps: ``path``, ``source``,
``rows`` and ``bytes`` of the current experiment). Each source also has
``last_heard`` and ``experiment_messages`` (this experiment's counters).

Cheap with many sessions: one pass over them, as ``sources`` needs anyway.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..daemon.saving import describe
from ..experiment import now
from ..paths import join_path
from ..protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    lifecycle = daemon.lifecycle
    lifecycle.check_required()  # a hello handled in this same turn counts
    collector = lifecycle.collector
    sources = list(collector.sources.by_session.values())
    unidentified = collector.sources.unidentified
    current = collector.experiment
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "uptime": round(time.monotonic() - daemon.started_at, 3),
        "endpoints": daemon.endpoints,
        "curve": daemon.security is not None,
        "output": str(daemon.config.output_dir),
        "last_config": str(daemon.config.last_config_file),
        "run_id": current.run_id,
        "run_started": current.started.isoformat(),
        "restarts": collector.restarts,
        "stop_pending": daemon.barrier.pending is not None,
        "saving": describe(daemon.saver.job) if daemon.saver.job is not None else None,
        "saved_experiments": lifecycle.saved_count,
        "last_saved": str(lifecycle.last_saved) if lifecycle.last_saved else None,
        "stop_ids": True,
        "last_error": lifecycle.last_error or daemon.durability.error,
        "sources": [source.describe(run=False) for source in sources],
        "unidentified": {
            "rejected": unidentified.total.rejected,
            "recent_rejections": list(unidentified.reasons),
        },
        "rejected": unidentified.total.rejected + sum(s.total.rejected for s in sources),
        "forgotten": {
            "sessions": collector.sources.forgotten_sessions,
            "messages": collector.sources.forgotten.as_dict(),
        },
        "time": now().isoformat(),
        "required": list(collector.required.names),
        "missing": collector.required.status(),
        "streams": [
            {
                "path": join_path(spec.path),
                "source": spec.source,
                "rows": spec.rows,
                "bytes": spec.rows * spec.row_bytes,
            }
            for spec in collector.streams.values()
        ],
    }
