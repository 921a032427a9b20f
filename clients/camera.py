"""A simulated behaviour camera: restores its settings, grabs frames, reports.

It publishes its settings at start (restored from the last config), an
auto-exposure adjustment now and then, and the frame count as static data.
Each frame's time goes into a stream (``camera/frame_times``), on this
process's simulated clock (``--clock-offset``, ``--clock-drift``).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from collectord import Client

if __package__:
    from ._args import CLOCK_INTERVAL, parse, simulated_clock
else:  # run as a script from a checkout: python clients/camera.py
    from _args import CLOCK_INTERVAL, parse, simulated_clock  # type: ignore[no-redef]

DEFAULTS = {
    "exposure": 4.0,  # ms
    "framerate": 200.0,  # Hz
    "gain": 1.0,
    "roi": [0, 0, 1024, 1016],
    "trigger": "internal",
}


def main(argv: list[str] | None = None) -> int:
    args = parse("Simulated camera process.", argv)
    clock = simulated_clock(args)
    with Client(
        "camera", args.data, args.control, clock=clock, clock_interval=CLOCK_INTERVAL
    ) as client:
        settings = {**DEFAULTS, **client.restore("camera/settings")}
        client.set_params("camera/settings", settings)
        client.add_data(
            "camera/info",
            {"model": "SimCam 1000", "serial": "SIM-0042", "sensor_px": np.array([1024, 1016])},
        )
        rng = np.random.default_rng()
        period = 1.0 / settings["framerate"]
        start = time.monotonic()
        frames = 0
        timestamps = []
        # Each frame's time on the camera PC's clock, which the daemon maps
        # onto its own with the clock's measured offsets.
        frame_times = client.stream(
            "camera/frame_times", ["frame", "t"], "f8", units=["", "s"], time_column="t"
        )
        while time.monotonic() - start < args.duration:
            frames += 1
            timestamps.append(time.monotonic() - start)
            frame_times.append([frames, clock()])
            if frames % 100 == 0:
                # Auto-exposure nudges the exposure around its set point.
                exposure = round(DEFAULTS["exposure"] + rng.normal(0, 0.2), 3)
                client.set_params("camera/settings", exposure=exposure)
                client.add_data("camera/frames_acquired", frames)
            time.sleep(period)
        client.add_data("camera/frames_acquired", frames)
        client.add_data(
            "camera/frame_interval_ms",
            {
                "mean": float(np.mean(np.diff(timestamps)) * 1000) if frames > 1 else None,
                "max": float(np.max(np.diff(timestamps)) * 1000) if frames > 1 else None,
            },
        )
    print(f"camera: {frames} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
