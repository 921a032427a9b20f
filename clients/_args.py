"""Command-line arguments shared by the demo processes, and their simulated clock."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

#: Seconds between measurements of a demo process's clock: the demo lasts
#: seconds, so every second rather than the client's default 5.
CLOCK_INTERVAL = 1.0


def parse(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", help="daemon data endpoint (default: from the configuration)")
    parser.add_argument(
        "--control", help="daemon control endpoint (default: from the configuration)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds to run")
    parser.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        help="seconds this process's simulated clock is ahead of the daemon's (default 0)",
    )
    parser.add_argument(
        "--clock-drift",
        type=float,
        default=0.0,
        help="parts per million this process's simulated clock runs fast (default 0)",
    )
    return parser.parse_args(argv)


def simulated_clock(args: argparse.Namespace) -> Callable[[], float]:
    """The clock of a PC other than the daemon's: ``--clock-offset`` ahead of
    ``time.time`` at the start, running ``--clock-drift`` ppm fast. The process
    stamps its data with it and hands it to its ``Client``."""
    start = time.time()
    offset, rate = args.clock_offset, 1 + args.clock_drift * 1e-6

    def clock() -> float:
        return start + offset + (time.time() - start) * rate

    return clock
