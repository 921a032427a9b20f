"""A stytra GUI process for the start-up tests: a drop-in DataCollector, nothing else.

``python tests/stytra_gui.py CONFIG NAME`` waits for a line ``go`` on stdin
(so that a test can start two at the same instant), then does what a stytra
experiment does at start-up and at the end of a protocol: makes its
collector (which starts a daemon if none answers), registers a node,
restores it, changes a parameter, adds static data, and hands everything to
the daemon (``save_config_file``: the daemon has confirmed it). It prints
``ready PID``, PID being the daemon it started (0 if it started none), then
waits until stdin closes, closes the collector and exits. One test kills it
with SIGKILL instead.
"""

from __future__ import annotations

import sys

from lightparam import Param, Parametrized

from collectord.compat.stytra import DataCollector


def main() -> int:
    config, name = sys.argv[1:3]
    if sys.stdin.readline().strip() != "go":
        return 2
    dc = DataCollector(config=config, name=name, period=None)
    node = Parametrized(f"{name}_params", dc, params=dict(exposure=Param(1.0)))
    dc.restore_from_saved()
    node.exposure = 7.5
    dc.add_static_data(f"fish of {name}", f"general/{name}")
    dc.save_config_file()
    started = dc.started_daemon.pid if dc.started_daemon is not None else 0
    print(f"ready {started}", flush=True)
    sys.stdin.read()  # until the test closes it (or kills this process)
    dc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
