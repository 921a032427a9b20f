"""``status``: what the daemon is doing.

Request fields: none. Reply ``result``: ``version``, ``protocol``, ``host``,
``pid``, ``uptime`` (seconds), ``endpoints`` (map: ``data``, ``control``),
``output``, ``last_config``, ``run_id``, ``run_started``, ``stop_pending``,
``saved_experiments``, ``last_saved`` (str or nil), ``last_error`` (str or
nil), ``sources`` (array of maps: ``name``, ``session``, ``host``, ``pid``,
``program``, ``versions``, ``connected``, ``last_seq``, ``messages`` (map:
``messages``, ``rejected``, ``duplicates``, ``out_of_order``, ``lost``),
``gaps`` (array of ``[first, last]``), ``recent_rejections`` (array of str)),
``unidentified`` (map: ``rejected``, ``recent_rejections``: bad input whose
sender could not be told), ``rejected`` (int, all rejections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    return daemon.status()
