"""A simulated tail tracker: restores its parameters, tracks, reports.

It publishes the tail-tracking parameters (restored from the last config),
re-publishes the threshold when the "user" tunes it, and at the end the
number of bouts it found and the last tail angles it computed. Every frame's
tail angles go into a stream (``tracking/tail_log``), saved as a file beside
the metadata, stamped (column ``t``) with this process's clock: simulated,
as another PC's would be (``--clock-offset``, ``--clock-drift``).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from collectord import Client

if __package__:
    from ._args import CLOCK_INTERVAL, parse, simulated_clock
else:  # run as a script from a checkout: python clients/tracking.py
    from _args import CLOCK_INTERVAL, parse, simulated_clock  # type: ignore[no-redef]

DEFAULTS = {
    "n_segments": 9,
    "tail_length": 60.0,  # px
    "tail_start": [120.0, 80.0],  # px
    "threshold": 0.12,
    "window": 7,
}


def main(argv: list[str] | None = None) -> int:
    args = parse("Simulated tail-tracking process.", argv)
    clock = simulated_clock(args)
    with Client(
        "tracking", args.data, args.control, clock=clock, clock_interval=CLOCK_INTERVAL
    ) as client:
        params = {**DEFAULTS, **client.restore("tracking/tail")}
        client.set_params("tracking/tail", params)
        client.set_params("tracking/bouts", vigor_threshold=0.3, min_duration_ms=20)
        columns = ["t"] + [f"theta_{i:02d}" for i in range(params["n_segments"])]
        tail_log = client.stream(
            "tracking/tail_log",
            columns,
            "f8",
            units=["s"] + ["rad"] * params["n_segments"],
            time_column="t",  # on this PC's clock
        )
        rng = np.random.default_rng()
        angles = np.zeros(params["n_segments"])
        bouts = 0
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < args.duration:
            step += 1
            angles = 0.9 * angles + rng.normal(0, 0.05, params["n_segments"])
            tail_log.append([clock(), *angles])
            if abs(angles[-1]) > 0.3:
                bouts += 1
            if step == 150:
                # The experimenter tunes the threshold in the GUI.
                client.set_params("tracking/tail", threshold=0.1)
            time.sleep(1 / 300)
        client.add_data("tracking/bouts_detected", bouts)
        client.add_data("tracking/last_tail_angles", angles)
    print(f"tracking: {step} frames, {bouts} bouts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
