"""``collectord demo``: a daemon and three simulated acquisition processes.

Everything runs on free loopback ports (the daemon binds port ``*`` and
prints what it got), so the demo never disturbs a real daemon on 13550/13551.
The camera and tracking processes run for the protocol's duration; the
stimulus process runs its protocol a little longer and stops the experiment.
Then the daemon is stopped with SIGTERM, as a service manager would.

Each process runs with a clock of its own (``CLOCKS``), as on the PCs of a
real rig: the demo prints the offsets the daemon recorded, and the times of
the streams' time columns mapped onto the daemon's clock.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import jsonio
from .clocks import clock_samples, to_daemon_time
from .control import request
from .daemon.process import Spawned, spawn
from .errors import CollectordError
from .protocol import Command

#: Each demo process's simulated clock: seconds ahead of the daemon's, and
#: parts per million fast, as PCs' clocks differ.
CLOCKS = {"camera": (0.035, 20.0), "tracking": (-0.012, -15.0), "stimulus": (0.004, 5.0)}


def _start_daemon(output: Path, log: IO[str]) -> Spawned:
    endpoints = ["--data", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*"]
    try:
        return spawn(["--output", str(output), *endpoints], stderr=log)
    except CollectordError as exc:
        raise CollectordError(f"{exc} (see {log.name})") from None


def client_script(name: str) -> Path:
    """The file of demo process ``name``.

    In a checkout (``python -m collectord`` from its root, or the package on
    ``PYTHONPATH``) it is ``clients/`` beside the package, taken first: the
    processes must be those of the package that runs, not of another copy
    installed meanwhile (an editable install of another checkout). Installed,
    the top-level ``clients/`` folder ships as ``collectord.clients``.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "clients" / f"{name}.py").is_file():
        return checkout / "clients" / f"{name}.py"
    try:
        spec = importlib.util.find_spec(f"collectord.clients.{name}")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.origin:
        return Path(spec.origin)
    return Path(__file__).resolve().parent.parent / "clients" / f"{name}.py"


def _summary(tree: dict[str, Any], indent: str = "  ", depth: int = 0) -> list[str]:
    lines = []
    for key, value in sorted(tree.items()):
        if key == "collectord":
            continue
        if isinstance(value, dict) and {"file", "rows", "columns"} <= value.keys():
            lines.append(f"{indent}{key} = stream of {value['rows']} rows -> {value['file']}")
        elif isinstance(value, dict) and depth < 2:
            lines.append(f"{indent}{key}/")
            lines.extend(_summary(value, indent + "  ", depth + 1))
        else:
            text = repr(value)
            lines.append(f"{indent}{key} = {text if len(text) < 60 else text[:57] + '...'}")
    return lines


def run_demo(output: str | os.PathLike[str], duration: float) -> int:
    folder = Path(output).resolve()
    logs = folder / ".collectord" / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"collectord demo: output in {folder}")
    with open(logs / "daemon.log", "w") as daemon_log:
        daemon = _start_daemon(folder, daemon_log)
        data, control = daemon.data, daemon.control
        print(f"  daemon pid {daemon.process.pid}: data {data}, control {control}")
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, seconds in (
                ("camera", duration),
                ("tracking", duration),
                ("stimulus", duration + 1.0),
            ):
                with open(logs / f"{name}.log", "w") as log:
                    processes[name] = subprocess.Popen(
                        [
                            sys.executable,
                            str(client_script(name)),
                            "--data",
                            data,
                            "--control",
                            control,
                            "--duration",
                            str(seconds),
                            "--clock-offset",
                            str(CLOCKS[name][0]),
                            "--clock-drift",
                            str(CLOCKS[name][1]),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
            while any(p.poll() is None for p in processes.values()):
                time.sleep(0.5)
                _progress(control, time.monotonic() - started)
            failed = [n for n, p in processes.items() if p.returncode != 0]
            status = request(control, Command.STATUS, {}, timeout=10.0)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
            daemon.process.send_signal(signal.SIGTERM)
            daemon.process.wait(timeout=30)
            daemon.close()
    if sys.stdout.isatty():
        print()
    for name in failed:
        print(f"  {name} FAILED; its log: {logs / (name + '.log')}")
        print("    " + (logs / f"{name}.log").read_text().strip().replace("\n", "\n    "))
    saved = sorted(folder.glob("[0-9]*/[0-9]*/*_metadata.json"), key=os.path.getmtime)
    if not saved:
        print("no metadata was saved; see the logs in", logs)
        return 1
    metadata = jsonio.load_json(saved[-1])
    print(f"metadata     {saved[-1]}")
    print(f"last config  {status['last_config']}")
    print(f"took         {time.monotonic() - started:.1f} s")
    print("tree:")
    print("\n".join(_summary(metadata)))
    streams = [(path, value) for path, value in _descriptors(metadata)]
    for path, descriptor in streams:
        print(
            f"stream       {path}: {descriptor['rows']} rows x {len(descriptor['columns'])} "
            f"columns in {saved[-1].parent / descriptor['file']}"
        )
    sources = metadata["collectord"]["sources"]
    print(
        "sources: "
        + ", ".join(f"{s['name']} ({s['messages']['messages']} messages)" for s in sources)
    )
    print("\n".join(_clocks(sources)))
    print("\n".join(_mapped(metadata, saved[-1].parent, streams)))
    return 1 if failed else 0


def _clocks(sources: list[dict[str, Any]]) -> list[str]:
    """The offsets recorded of each process's clock, beside how it was set."""
    lines = ["clocks (add the offset to a process's time to get the daemon's):"]
    for source in sources:
        clock = source.get("clock")
        if not clock:
            lines.append(f"  {source['name']:<10} not measured")
            continue
        ahead, drift = CLOCKS.get(source["name"], (0.0, 0.0))
        lines.append(
            f"  {source['name']:<10} {clock['median_offset'] * 1000:+8.3f} ms "
            f"(spread {clock['offset_spread'] * 1000:.3f} ms, {clock['count']} samples, "
            f"round trip {clock['median_rtt'] * 1000:.2f} ms); "
            f"its clock was set {abs(ahead) * 1000:.1f} ms {'ahead' if ahead >= 0 else 'behind'}, "
            f"{abs(drift):.0f} ppm {'fast' if drift >= 0 else 'slow'}"
        )
    return lines


def _mapped(metadata: dict[str, Any], folder: Path, streams: list[tuple[str, Any]]) -> list[str]:
    """Each stream's time column mapped onto the daemon's clock (``to_daemon_time``)."""
    lines = []
    for path, descriptor in streams:
        column = descriptor.get("time_column")
        if column is None or descriptor["format"] != "npy" or not descriptor["rows"]:
            continue
        times = np.load(folder / descriptor["file"])[column]
        try:
            mapped = to_daemon_time(times, clock_samples(metadata, descriptor["clock"]))
        except (KeyError, ValueError) as exc:
            lines.append(f"time column   {path}: {exc}")
            continue
        first, last = (_time_of_day(t) for t in mapped[[0, -1]])
        shift = (mapped[0] - times[0]) * 1000
        lines.append(
            f"time column   {path}.{column}: {first} to {last} on the daemon's clock "
            f"({shift:+.3f} ms from the process's)"
        )
    return lines


def _time_of_day(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")


def _descriptors(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Stream descriptors in a saved tree (the maps with "file", "rows", "columns")."""
    found = []
    for key, value in tree.items():
        if isinstance(value, dict):
            if {"file", "rows", "columns"} <= value.keys():
                found.append((prefix + key, value))
            elif key != "collectord":
                found.extend(_descriptors(value, f"{prefix}{key}/"))
    return found


def _progress(control: str, elapsed: float) -> None:
    try:
        status = request(control, Command.STATUS, {}, timeout=2.0)
    except CollectordError:
        return
    counts = "  ".join(f"{s['name']} {s['messages']['messages']}" for s in status["sources"])
    saved = f"  saved {status['saved_experiments']}" if status["saved_experiments"] else ""
    line = f"  {elapsed:4.1f} s  messages: {counts or '-'}{saved}"
    if sys.stdout.isatty():
        print(f"\r{line}   ", end="", flush=True)
    else:
        print(line, flush=True)
