"""Command-line arguments shared by the demo processes."""

from __future__ import annotations

import argparse


def parse(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", help="daemon data endpoint (default: from the configuration)")
    parser.add_argument(
        "--control", help="daemon control endpoint (default: from the configuration)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds to run")
    return parser.parse_args(argv)
