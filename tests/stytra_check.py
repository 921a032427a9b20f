"""Check the drop-in against real stytra: two headless experiments, no daemon started first.

Not part of the test suite: it needs stytra 0.8 and Qt, which the suite's
environment does not have. Run it in a separate environment::

    python3 -m venv /work/venv-stytra
    /work/venv-stytra/bin/pip install stytra==0.8.34 PyQt5 opencv-python-headless \\
        'pyqtgraph<0.13' 'numpy<2'
    /work/venv-stytra/bin/pip install -e .
    QT_QPA_PLATFORM=offscreen /work/venv-stytra/bin/python tests/stytra_check.py

It runs stytra's own ``VisualExperiment`` (its GUI and stimulus windows,
offscreen) with ``stytra.collectors.DataCollector`` replaced by
``collectord.compat.stytra.DataCollector``, on the default endpoints (so
beside stytra's ZeroMQ trigger, which binds port 5555 on every interface)
and a fresh output folder, with no daemon running. A simulated microscope
triggers each protocol over ZeroMQ, as a real one does. It checks that:

1. the first experiment's collector starts the daemon (detached), and the
   protocol's end saves stytra's metadata through it: stytra's categories,
   the stimulus log, the microscope's configuration, the experiment object in
   ``program_version/arguments`` as ``"<not saved: VisualExperiment>"``, the
   folder named after stytra's session id, and the copy at stytra's own path;
2. closing the window writes the last config (``save_config_file``) without
   a second experiment folder;
3. a second experiment finds that daemon running (starts none), restores the
   parameter the first one changed, and saves its own file;
4. the daemon is then stopped (SIGTERM) and nothing of it is left running;
5. the next day (a new daemon, on the same output and last config) another
   script, with another protocol (a dynamic stimulus), saves only its own
   protocol under ``stimulus/protocol`` (not the earlier script's: analysis
   code takes the first protocol there), and its stimulus's interpolation
   table (``df_param``, a DataFrame) by column, as stytra did; its daemon is
   stopped too.

Prints what it found and exits 0 if all holds, 1 otherwise.
"""

from __future__ import annotations

import collections
import collections.abc
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# stytra 0.8.34 predates Python 3.10 and numpy 1.23: two names it uses are gone.
collections.Mapping = collections.abc.Mapping  # type: ignore[attr-defined]
np.asscalar = lambda value: value.item()  # type: ignore[attr-defined]

import stytra.collectors  # noqa: E402
import stytra.experiments  # noqa: E402
import zmq  # noqa: E402
from lightparam import Param  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402
from stytra.experiments import VisualExperiment  # noqa: E402
from stytra.stimulation import Protocol  # noqa: E402
from stytra.stimulation.stimuli import (  # noqa: E402
    DynamicLuminanceStimulus,
    FullFieldVisualStimulus,
    Pause,
)
from stytra.triggering import ZmqTrigger  # noqa: E402

from collectord import load_json  # noqa: E402
from collectord.autostart import find_daemon  # noqa: E402
from collectord.compat.stytra import DataCollector  # noqa: E402
from collectord.config import Config  # noqa: E402
from collectord.daemon.process import Spawned  # noqa: E402

# The one change a stytra user makes (here from outside, stytra untouched).
stytra.collectors.DataCollector = DataCollector
stytra.experiments.DataCollector = DataCollector

MICROSCOPE = {"scope": "2P", "frame_rate": 3.0, "n_planes": 5}
TRIGGER_PORT = "5555"  # what Stytra(scope_triggering="zmq") uses


class Flashes(Protocol):
    name = "flashes"

    def __init__(self) -> None:
        super().__init__()
        self.flash_duration = Param(0.3, limits=(0.1, 5.0))

    def get_stim_sequence(self) -> list[Any]:
        return [
            Pause(duration=0.2),
            FullFieldVisualStimulus(duration=self.flash_duration, color=(255, 255, 255)),
            Pause(duration=0.2),
        ]


class Ramp(Protocol):
    """Another script's protocol: a luminance ramp, a stimulus with a ``df_param`` table."""

    name = "ramp"

    def __init__(self) -> None:
        super().__init__()
        self.ramp_duration = Param(0.3, limits=(0.1, 5.0))

    def get_stim_sequence(self) -> list[Any]:
        table = pd.DataFrame({"t": [0.0, self.ramp_duration], "luminance": [0.0, 1.0]})
        return [WholeLuminance(df_param=table, color=(255, 255, 255))]


class WholeLuminance(DynamicLuminanceStimulus):
    """stytra's luminance stimulus with whole colour values: PyQt5 5.15 refuses
    the fractional ones stytra 0.8 computes when painting."""

    def update(self) -> None:
        super().update()
        self.color = tuple(int(value) for value in self.color)


def microscope() -> None:
    """Trigger the protocol as a microscope does: send its configuration, get the duration."""
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{TRIGGER_PORT}")
    sock.send_json(MICROSCOPE)
    if sock.poll(60_000):
        sock.recv_json()
    sock.close()
    context.term()


def run_experiment(
    app: QApplication, base: Path, change: float | None, protocol: Protocol | None = None
) -> tuple[DataCollector, Path]:
    """One stytra session: start, one triggered protocol (``Flashes`` unless
    another is given), window closed. Returns the collector and the metadata
    path stytra gave it."""
    exp = VisualExperiment(
        app=app,
        protocol=protocol or Flashes(),
        dir_save=str(base),
        scope_triggering=ZmqTrigger(port=TRIGGER_PORT),
        display=dict(full_screen=False, gl=False),
    )
    saved = threading.Event()
    exp.sig_data_saved.connect(saved.set)
    exp.start_experiment()
    if change is not None:
        exp.protocol.flash_duration = change
    exp.window_main.chk_scope.setChecked(True)
    trigger = threading.Thread(target=microscope, daemon=True)
    trigger.start()
    exp.start_protocol()  # waits (processing Qt events) for the microscope's trigger
    deadline = time.monotonic() + 120
    while not saved.is_set():
        if time.monotonic() > deadline:
            raise AssertionError("the protocol did not end and save within 120 s")
        app.processEvents()
        time.sleep(0.005)
    stytra_path = Path(exp.filename_base() + "metadata.json")
    exp.wrap_up()  # the window's close button: save_config_file(), trigger stopped
    trigger.join(10)
    return exp.dc, stytra_path


def main() -> int:
    multiprocessing.set_start_method("spawn", force=True)  # as Stytra() does
    folder = Path(tempfile.mkdtemp(prefix="stytra-check-"))
    output = folder / "collectord"
    config = folder / "collectord.toml"
    config.write_text(f'[storage]\noutput = "{output}"\n')  # the default endpoints
    os.environ["COLLECTORD_CONFIG"] = str(config)
    settings = Config(output=str(output))
    print(f"folder: {folder}")
    print(f"endpoints: data={settings.data} control={settings.control}")
    if find_daemon(settings.control, settings, 2.0) is not None:
        print("a daemon already answers on the default endpoints: stop it first")
        return 1
    problems: list[str] = []

    def check(condition: bool, what: str) -> None:
        print(("ok      " if condition else "FAILED  ") + what)
        if not condition:
            problems.append(what)

    app = QApplication([])
    first, stytra_path = run_experiment(app, folder / "stytra", change=0.5)
    daemon = first.started_daemon
    check(daemon is not None, "the first experiment's collector started the daemon")
    pid = daemon.pid if daemon is not None else 0
    check(pid > 0 and os.getsid(pid) == pid, f"the daemon (pid {pid}) has a session of its own")
    files = sorted(output.glob("*/*/*_metadata.json"))
    check(len(files) == 1, f"one experiment saved: {[str(f.relative_to(output)) for f in files]}")
    metadata = load_json(files[0]) if files else {}
    general = metadata.get("general", {})
    session = general.get("session_id")
    check(
        bool(files) and files[0].name == f"{session}_metadata.json",
        f"named after stytra's session id {session!r}",
    )
    check(
        metadata.get("stimulus", {}).get("protocol", {}).get("flashes", {}).get("flash_duration")
        == 0.5,
        "the protocol's parameters, as changed",
    )
    log = metadata.get("stimulus", {}).get("log", [])
    check([s.get("name") for s in log] == ["pause", "flash", "pause"], f"the stimulus log: {log}")
    check(
        metadata.get("imaging", {}).get("microscope_config") == MICROSCOPE,
        "the microscope's configuration, received through stytra's ZeroMQ trigger",
    )
    arguments = general.get("program_version", {}).get("arguments", {})
    check(
        arguments.get("self") == "<not saved: VisualExperiment>",
        f"the experiment object as {arguments.get('self')!r}",
    )
    check(
        {"animal", "basic", "fish_id", "t_protocol_start", "t_protocol_end"} <= set(general),
        "stytra's general metadata",
    )
    check(
        stytra_path.is_file() and stytra_path.read_bytes() == files[0].read_bytes(),
        f"the copy at stytra's path {stytra_path}",
    )
    last = (
        load_json(output / "last_config.json") if (output / "last_config.json").is_file() else {}
    )
    check(
        bool(last.get("gui", {}).get("geometry")),
        "closing wrote the GUI's state to the last config",
    )
    check(
        len(sorted(output.glob("*/*/*_metadata.json"))) == 1,
        "closing wrote no experiment folder",
    )

    second, _ = run_experiment(app, folder / "stytra", change=None)
    check(second.started_daemon is None, "the second experiment found the daemon running")
    restored = [
        node.flash_duration for name, node in second.tracked.items() if name.endswith("flashes")
    ]
    check(restored == [0.5], f"the second experiment restored flash_duration: {restored}")
    files = sorted(output.glob("*/*/*_metadata.json"))
    check(len(files) == 2, "the second experiment saved its own file")

    def stop_daemon(daemon: Spawned | None) -> None:
        if daemon is not None:
            os.kill(daemon.pid, signal.SIGTERM)
            daemon.process.wait(60)
        check(find_daemon(settings.control, settings, 2.0) is None, "the daemon was stopped")

    stop_daemon(daemon)
    after = sorted(output.glob("*/*/*_metadata.json"))
    if len(after) > len(files):  # not a failure of the drop-in: the daemon's rule
        print(
            f"note    stopping the daemon saved {len(after) - len(files)} more experiment(s) "
            "holding what the closed window sent after its last protocol (the file name of "
            "its stimulus log, which stytra adds after saving, and the window's geometry): "
            f"{after[-1]}"
        )

    # The next day, after a restart: another script (another process, so the
    # earlier collectors are gone), another protocol.
    first.close()
    second.close()
    third, ramp_path = run_experiment(app, folder / "stytra", change=None, protocol=Ramp())
    check(third.started_daemon is not None, "the next script's collector started a daemon")
    ramp = load_json(ramp_path) if ramp_path.is_file() else {}
    protocols = sorted(ramp.get("stimulus", {}).get("protocol", {}))
    check(
        protocols == ["ramp"], f"another script's experiment holds its protocol only: {protocols}"
    )
    tables = [stimulus.get("df_param") for stimulus in ramp.get("stimulus", {}).get("log", [])]
    check(
        tables == [{"t": [0.0, 0.3], "luminance": [0.0, 1.0]}],
        f"the stimulus's df_param table saved by column: {tables}",
    )
    stop_daemon(third.started_daemon)
    print(json.dumps({"metadata": str(files[0]) if files else None, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
