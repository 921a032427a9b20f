"""Fixtures: real daemons in real processes, on loopback or ipc endpoints."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq
from hypothesis import HealthCheck, settings

from collectord import codec, load_json
from collectord.control import request
from collectord.daemon.process import spawn
from collectord.errors import CollectordError
from collectord.protocol import PROTOCOL_VERSION, Command

# Timing belongs in benchmarks: on a loaded 2-core machine a generated example
# may take seconds, which is no failure of the code under test.
settings.register_profile(
    "collectord", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("collectord")

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class DaemonProcess:
    """``collectord run`` in a child process.

    ``python_args`` are the interpreter's arguments before ``run``: another
    launcher of the ``collectord`` command (``tests/without_posix.py``) goes there.
    """

    def __init__(
        self,
        output: Path,
        data: str = "tcp://127.0.0.1:*",
        control: str = "tcp://127.0.0.1:*",
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        python_args: tuple[str, ...] = ("-m", "collectord"),
    ) -> None:
        self.output = output
        self.env = env
        self.data = data
        self.control = control
        self.extra = extra
        self.python_args = python_args
        self.process: subprocess.Popen[str] | None = None
        self.log = output.parent / f"{output.name}-daemon.log"

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        args = ["--output", str(self.output), "--data", self.data, "--control", self.control]
        with open(self.log, "a") as log:
            try:
                spawned = spawn(
                    [*args, *self.extra],
                    stderr=log,
                    env=self.env,
                    python=self.python_args,
                    timeout=timeout,
                )
            except CollectordError as exc:
                raise AssertionError(f"{exc}; log:\n{self.log.read_text()}") from None
        self.process = spawned.process
        # Keep the same endpoints across restarts.
        self.data, self.control = spawned.data, spawned.control
        return self

    def request(
        self, command: Command, fields: dict[str, Any] | None = None, timeout: float = 20.0
    ) -> dict[str, Any]:
        return request(self.control, command, fields, timeout)

    def status(self) -> dict[str, Any]:
        return self.request(Command.STATUS)

    def stop(self, reason: str = "test") -> dict[str, Any]:
        return self.request(Command.STOP, {"reason": reason}, timeout=60.0)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons (output in tmp_path/out by default); all are killed at the end."""
    started: list[DaemonProcess] = []

    def make(output: Path | None = None, **kwargs: Any) -> DaemonProcess:
        daemon = DaemonProcess(output or tmp_path / "out", **kwargs)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        daemon.close()


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return make_daemon()


@pytest.fixture
def ipc() -> Iterator[Callable[[str], str]]:
    """ipc:// endpoints in a short private folder (socket paths are length-limited)."""
    folder = Path(tempfile.mkdtemp(prefix="cd-", dir="/tmp"))

    def endpoint(name: str) -> str:
        return f"ipc://{folder}/{name}"

    yield endpoint
    shutil.rmtree(folder, ignore_errors=True)


#: Set to a file path to have the reliability tests write their figures there
#: (docs/reliability.md quotes them).
FIGURES_ENV = "COLLECTORD_FIGURES"


@pytest.fixture(scope="session")
def _figures_table() -> Iterator[dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, Any]] = {}
    yield table
    target = os.environ.get(FIGURES_ENV)
    if target and table:
        import json

        Path(target).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, _figures_table: dict[str, dict[str, Any]]
) -> Callable[..., None]:
    """Record what a reliability test sent, received, lost and injected."""

    def record(**numbers: Any) -> None:
        _figures_table[request.node.name] = numbers

    return record


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``collectord ARGS`` in a child process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "collectord", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def send_stop_without_waiting(control: str, reason: str = "operator") -> None:
    """An operator's stop, handed to the daemon and not waited for (the daemon
    is about to die)."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(control)
    message = {"v": PROTOCOL_VERSION, "cmd": "stop", "id": 1, "reason": reason}
    sock.send_multipart([b"", codec.pack(message)])
    sock.close()
    context.term()


def saved_experiments(output: Path) -> list[dict[str, Any]]:
    """Every published metadata file (under ``_path``, its path), in the order
    the experiments began."""
    found = []
    for path in output.glob("[0-9]*/*/*_metadata.json"):
        metadata = load_json(path)
        metadata["_path"] = path
        found.append(metadata)

    def began(metadata: dict[str, Any]) -> tuple[dt.datetime, str]:
        account = metadata["collectord"]
        return dt.datetime.fromisoformat(account["started"]), account["run_id"]

    return sorted(found, key=began)
