"""The stytra drop-in starts the daemon a stytra user never started.

A stytra user starts one program. When no daemon answers on the configured
endpoints, the drop-in starts one, detached from the GUI, on the output
folder and last config of the configuration. Every test here uses real
daemons and real GUI processes; each daemon a test starts is found by its pid
and its endpoint at the end and stopped (orphans are adopted by the test
process on Linux, so that they are reaped too).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import DaemonProcess, wait_for
from lightparam import Param, Parametrized

from collectord import CollectordError, DaemonTimeout, load_json
from collectord.client import State
from collectord.compat.stytra import DataCollector
from collectord.control import request
from collectord.protocol import Command
from collectord.store import OutputLock

ROOT = Path(__file__).resolve().parents[1]
GUI = Path(__file__).with_name("stytra_gui.py")


# -- processes -------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the system
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a child of this process (adopted or not)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def end(pid: int) -> None:
    """SIGTERM (the daemon saves and exits), SIGKILL if that takes too long; then reap."""
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not alive(pid), 60, f"daemon {pid} to exit")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not alive(pid), 30, f"daemon {pid} to die")
    reap(pid)


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the reaper of its descendants' orphans (Linux).

    A daemon started by a GUI that is killed is re-parented; without this it
    goes to a PID 1 that may never reap it, and would stay a zombie.
    """
    prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
    set_child_subreaper = 36
    if prctl is not None:
        prctl(set_child_subreaper, 1, 0, 0, 0)
    try:
        yield
    finally:
        if prctl is not None:
            prctl(set_child_subreaper, 0, 0, 0, 0)


def listening(endpoint: str) -> bool:
    """Whether anything accepts connections at a tcp or ipc endpoint."""
    transport, _, address = endpoint.partition("://")
    if transport == "ipc":
        family: int = socket.AF_UNIX
        target: Any = address
    else:
        host, _, port = address.rpartition(":")
        family, target = socket.AF_INET, (host, int(port))
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(target)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


# -- a rig: a configuration file, and whatever daemons it ends up with ----------------


@dataclasses.dataclass
class Rig:
    folder: Path
    data: str
    control: str
    pids: set[int] = dataclasses.field(default_factory=set)
    #: Processes this test made: the GUIs, and daemons started in this process.
    children: list[subprocess.Popen[str]] = dataclasses.field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.folder / "rig.toml"

    @property
    def output(self) -> Path:
        return self.folder / "out"

    @property
    def last_config(self) -> Path:
        return self.folder / "last" / "rig_last_config.json"

    @property
    def log(self) -> Path:
        """Where the drop-in sends the stderr of a daemon it starts."""
        return self.output / ".collectord" / "daemon.log"

    def write(self, extra: str = "") -> None:
        self.config.write_text(
            f'[endpoints]\ndata = "{self.data}"\ncontrol = "{self.control}"\n'
            f'[storage]\noutput = "{self.output}"\nlast_config = "{self.last_config}"\n'
            f"{extra}"
        )

    def status(self, timeout: float = 20.0) -> dict[str, Any]:
        return request(self.control, Command.STATUS, {}, timeout)

    def gui(self, name: str) -> subprocess.Popen[str]:
        """A stytra GUI process on this rig (``tests/stytra_gui.py``)."""
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        with open(self.folder / f"{name}.log", "w") as log:
            gui = subprocess.Popen(
                [sys.executable, str(GUI), str(self.config), name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONPATH": path},
            )
        self.children.append(gui)
        return gui

    def ready(self, gui: subprocess.Popen[str], name: str) -> int:
        """Wait for the GUI's ``ready PID`` line; the pid of the daemon it started, or 0."""
        assert gui.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(gui.stdout, selectors.EVENT_READ)
            line = gui.stdout.readline() if selector.select(120) else ""
        log = (self.folder / f"{name}.log").read_text()
        assert line.startswith("ready "), f"GUI {name} said {line!r}; its stderr:\n{log}"
        pid = int(line.split()[1])
        if pid:
            self.pids.add(pid)
        return pid

    def stop_daemons(self) -> None:
        """End every daemon started here: by the pids seen, and whoever answers.

        Then the processes this test made: killed if still running, reaped, their
        pipes closed.
        """
        if listening(self.control):
            with contextlib.suppress(DaemonTimeout):
                self.pids.add(int(self.status(timeout=5)["pid"]))
        for pid in sorted(self.pids):
            end(pid)
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(30)
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
        assert not listening(self.control), "a daemon still listens at the rig's endpoint"


@pytest.fixture
def rig(tmp_path: Path, ipc: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.delenv("COLLECTORD_CONFIG", raising=False)
    monkeypatch.delenv("COLLECTORD_START_DAEMON", raising=False)
    made = Rig(tmp_path, ipc("data"), ipc("control"))
    made.write()
    with adopting_orphans():
        try:
            yield made
        finally:
            made.stop_daemons()


# -- item 1: no daemon running ---------------------------------------------------------


def test_a_collector_with_no_daemon_starts_one_that_saves(rig: Rig) -> None:
    assert not listening(rig.control)
    with DataCollector(config=rig.config, period=None) as dc:
        started = dc.started_daemon
        assert started is not None
        rig.pids.add(started.pid)
        rig.children.append(started.process)
        status = dc.client.status()
        assert status["pid"] == started.pid
        # On the output folder and the last config the configuration names.
        assert status["output"] == str(rig.output)
        assert status["last_config"] == str(rig.last_config)
        # Detached: its own session and process group, nothing tied to the GUI.
        assert os.getsid(started.pid) == os.getpgid(started.pid) == started.pid
        assert os.getsid(started.pid) != os.getsid(0)
        fds = Path(f"/proc/{started.pid}/fd")
        if fds.is_dir():
            assert os.readlink(fds / "0") == os.devnull
            assert Path(os.readlink(fds / "1")) == Path(os.readlink(fds / "2")) == rig.log
        camera = Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
        dc.restore_from_saved()
        camera.exposure = 4.5
        dc.add_static_data("241124_f1", "general/fish_id")
        path = Path(dc.save())
    saved = load_json(path)
    assert path.is_relative_to(rig.output)
    assert saved["general"]["fish_id"] == "241124_f1"
    assert saved["camera_params"] == {"exposure": 4.5}
    assert load_json(rig.last_config)["camera_params"] == {"exposure": 4.5}


def test_the_daemon_outlives_its_gui_killed_and_saves_what_was_confirmed(rig: Rig) -> None:
    gui = rig.gui("stytra")
    assert gui.stdin is not None
    gui.stdin.write("go\n")
    gui.stdin.flush()
    pid = rig.ready(gui, "stytra")
    assert pid, "the GUI found a daemon where none ran"
    gui.kill()  # SIGKILL: nothing of the GUI runs any more
    assert gui.wait(30) == -signal.SIGKILL

    assert alive(pid)
    assert rig.status()["pid"] == pid
    saved = load_json(request(rig.control, Command.STOP, {"reason": "GUI gone"}, 60)["path"])
    assert saved["general"]["stytra"] == "fish of stytra"
    assert saved["stytra_params"] == {"exposure": 7.5}


def test_a_daemon_killed_between_protocols_is_started_again_at_the_save(rig: Rig) -> None:
    """The daemon the collector started is killed (kill -9) between two
    protocols. The next save starts it again, as the collector's construction
    did, and the run is saved whole: what was sent before the kill (taken up
    from the journal) and after it."""
    with DataCollector(config=rig.config, period=None) as dc:
        first = dc.started_daemon
        assert first is not None
        rig.pids.add(first.pid)
        rig.children.append(first.process)
        camera = Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
        dc.restore_from_saved()
        dc.add_static_data("241124_f1", "general/fish_id")
        dc.save()
        dc.add_static_data({"scope": "2P"}, "imaging/microscope_config")
        dc.client.sync()
        os.kill(first.pid, signal.SIGKILL)
        assert first.process.wait(30) == -signal.SIGKILL
        camera.exposure = 2.5
        dc.add_static_data("241124_f2", "general/fish_id")
        with pytest.warns(RuntimeWarning, match="was gone: started it again"):
            path = Path(dc.save())
        second = dc.started_daemon
        assert second is not None
        assert second.pid != first.pid
        rig.pids.add(second.pid)
        rig.children.append(second.process)
    saved = load_json(path)
    assert saved["imaging"]["microscope_config"] == {"scope": "2P"}
    assert saved["general"]["fish_id"] == "241124_f2"
    assert saved["camera_params"] == {"exposure": 2.5}


@pytest.mark.parametrize("how", ["keyword", "config", "environment"])
def test_start_daemon_false_starts_nothing_and_says_so(
    rig: Rig, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs: dict[str, Any] = {}
    if how == "keyword":
        kwargs["start_daemon"] = False
    elif how == "config":
        rig.write("[stytra]\nstart_daemon = false\n")
    else:
        monkeypatch.setenv("COLLECTORD_START_DAEMON", "0")
    with pytest.warns(RuntimeWarning, match=r"no collectord daemon answers at .*collectord run"):
        dc = DataCollector(config=rig.config, period=None, timeout=1.0, **kwargs)
    try:
        assert dc.started_daemon is None
        Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
        with pytest.raises(DaemonTimeout, match="collectord run"):
            dc.restore_from_saved()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dc.close()
    assert not listening(rig.control)
    assert not listening(rig.data)
    assert not rig.output.exists()  # no daemon ever had it


def test_a_collector_that_loses_the_race_connects_to_the_winner(rig: Rig) -> None:
    """Its daemon is refused the output folder: it connects to the daemon holding it."""
    holder = OutputLock(rig.output)  # a daemon that holds the folder, not listening yet
    holder.acquire()
    made: dict[str, Any] = {}

    def construct() -> None:
        try:
            made["dc"] = DataCollector(config=rig.config, period=None)
        except BaseException as exc:
            made["error"] = exc

    thread = threading.Thread(target=construct)
    try:
        thread.start()
        wait_for(
            lambda: rig.log.is_file() and "in use by another collectord" in rig.log.read_text(),
            60,
            "the collector's daemon to be refused the output folder",
        )
    finally:
        holder.release()
    winner = DaemonProcess(rig.output, data=rig.data, control=rig.control).start()
    try:
        rig.pids.add(winner.process.pid if winner.process else 0)
        thread.join(60)
        assert "error" not in made, made.get("error")
        with made["dc"] as dc:
            assert dc.started_daemon is None
            assert dc.client.status()["pid"] == winner.process.pid
            dc.add_static_data("241124_f2", "general/fish_id")
            saved = load_json(dc.save())
        assert saved["general"]["fish_id"] == "241124_f2"
    finally:
        winner.close()


def test_two_guis_starting_at_once_end_with_one_daemon(rig: Rig) -> None:
    guis = {name: rig.gui(name) for name in ("gui0", "gui1")}
    try:
        for gui in guis.values():
            assert gui.stdin is not None
            gui.stdin.write("go\n")
            gui.stdin.flush()
        started = sorted(rig.ready(gui, name) for name, gui in guis.items())
        status = rig.status()
        # One of them started the daemon; the other found it, or lost the race to it.
        assert started == [0, status["pid"]]
        assert {s["name"] for s in status["sources"] if s["connected"]} == set(guis)
        saved = load_json(request(rig.control, Command.STOP, {"reason": "both"}, 60)["path"])
        for name in guis:
            assert saved["general"][name] == f"fish of {name}"
            assert saved[f"{name}_params"] == {"exposure": 7.5}
    finally:
        for gui in guis.values():
            assert gui.stdin is not None
            gui.stdin.close()
    assert [gui.wait(60) for gui in guis.values()] == [0, 0]


def test_an_endpoint_taken_by_another_program_is_named(rig: Rig) -> None:
    """stytra's ZeroMQ trigger binds its port on every interface: the daemon cannot."""
    context = zmq.Context()
    trigger = context.socket(zmq.REP)
    try:
        trigger.bind("tcp://127.0.0.1:*")
        rig.data = trigger.getsockopt_string(zmq.LAST_ENDPOINT)
        rig.write()
        in_use = r"could not be started.*[Aa]ddress already in use"
        with pytest.raises(CollectordError, match=in_use):
            DataCollector(config=rig.config, period=None, timeout=2.0)
    finally:
        trigger.close(linger=0)
        context.term()


def test_an_output_folder_that_cannot_be_written_is_named(rig: Rig) -> None:
    """The drop-in opens the daemon's log in the output folder before it starts
    one: a folder it cannot write was a bare OSError from inside the collector."""
    rig.output.write_text("a file where the output folder should be")
    with pytest.raises(CollectordError, match=r"none can be started: its output folder"):
        DataCollector(config=rig.config, period=None, timeout=2.0)
    assert not listening(rig.control)


def test_close_warns_instead_of_raising_when_the_daemon_is_gone(daemon: DaemonProcess) -> None:
    dc = DataCollector(data=daemon.data, control=daemon.control, period=None, timeout=1.0)
    camera = Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
    dc.restore_from_saved()
    daemon.kill9()
    camera.exposure = 2.0
    for index in range(3):
        dc.add_static_data(index, f"stimulus/item{index}")
    with pytest.warns(RuntimeWarning, match=r"4 messages were not delivered"):
        dc.close()
    assert dc.client.state is State.CLOSED
