"""system.py: every platform-specific call, and a daemon run without any of them.

The end-to-end test starts ``collectord run`` through ``without_posix.py``,
which takes away what Windows lacks (``os.pwrite``, ``os.sync``, SIGXFSZ,
``fcntl``, fsync of a folder, and binary mode by default) before collectord
is imported. The other tests try each fallback on its own.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DaemonProcess
from without_posix import FAKE_O_BINARY, FakeMsvcrt

from collectord import Client, load_json, system
from collectord.errors import OutputBusyError
from collectord.journal import Journal
from collectord.paths import parse_path
from collectord.store import OutputLock, atomic_write, publish, staging_dir
from collectord.streamfiles import StreamFile, StreamSpec

LAUNCHER = Path(__file__).with_name("without_posix.py")
#: The launcher's arguments for each kind of lock a system without fcntl takes.
LAUNCHERS = {"owner file": (str(LAUNCHER),), "msvcrt": (str(LAUNCHER), "--msvcrt")}
BUSY = "in use by another collectord process"
COLUMNS = ["angle", "vigor", "bout"]


def run_launcher(launcher: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command that should be refused at once (a refusal takes a second or two)."""
    return subprocess.run(
        [sys.executable, *launcher, *args], capture_output=True, text=True, timeout=30
    )


def read_stream(metadata: Path, descriptor: dict[str, Any]) -> np.ndarray:
    table = np.load(metadata.parent / descriptor["file"])
    assert table.dtype.names == tuple(COLUMNS)
    return np.stack([table[name] for name in COLUMNS], axis=1)


@pytest.mark.parametrize("kind", sorted(LAUNCHERS))
def test_a_daemon_runs_end_to_end_without_the_posix_calls(make_daemon, kind: str) -> None:
    launcher = LAUNCHERS[kind]
    first: DaemonProcess = make_daemon(python_args=launcher)
    state = first.output / ".collectord"
    if kind == "owner file":
        assert json.loads((state / "lock.owner").read_text())["pid"] == first.process.pid
    else:
        assert (state / "lock").exists() and not (state / "lock.owner").exists()
    rows = (np.arange(3000 * 3, dtype="<f8").reshape(3000, 3) - 4000.25) / 3
    rows[7] = [np.nan, np.inf, -0.0]

    client = Client("rig", first.data, first.control)
    client.set_params("camera/settings", exposure=4.5, gain=2, mode="fast")
    client.add_data("stimulus/log", [{"name": "flash", "t": 1.25}, {"name": "dark", "t": 3.5}])
    units = ["rad", "a.u.", ""]
    stream = client.stream("tracking/tail", COLUMNS, "f8", units=units, block_rows=64)
    for row in rows[:500]:
        stream.append(row)
    stream.extend(rows[500:])
    client.sync()

    # A second daemon, and recover, are refused while the first runs.
    second = run_launcher(
        launcher, "run", "--output", str(first.output), "--data", "tcp://127.0.0.1:*",
        "--control", "tcp://127.0.0.1:*",
    )  # fmt: skip
    assert second.returncode == 1 and BUSY in second.stderr, second.stderr
    recover = run_launcher(launcher, "recover", "--output", str(first.output))
    assert recover.returncode == 1 and BUSY in recover.stderr, recover.stderr

    path = Path(client.stop())
    saved = load_json(path)
    assert saved["camera"]["settings"] == {"exposure": 4.5, "gain": 2, "mode": "fast"}
    assert saved["stimulus"]["log"] == [{"name": "flash", "t": 1.25}, {"name": "dark", "t": 3.5}]
    descriptor = saved["tracking"]["tail"]
    assert descriptor == {
        "file": "streams/tracking/tail.npy",
        "format": "npy",
        "rows": 3000,
        "columns": COLUMNS,
        "dtype": "<f8",
        "units": units,
        "source": "rig",
    }
    np.testing.assert_array_equal(read_stream(path, descriptor), rows)
    assert np.signbit(read_stream(path, descriptor)[7, 2])
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 0

    # kill -9, then a restart takes the folder back and resumes the experiment.
    client.set_params("camera/settings", exposure=6.0)
    client.add_data("general/animal", "fish 3")
    stream.extend(rows[:1000])
    client.sync()
    first.kill9()
    second_daemon: DaemonProcess = make_daemon(
        data=first.data, control=first.control, python_args=launcher
    )
    if kind == "owner file":
        owner = json.loads((state / "lock.owner").read_text())
        assert owner["pid"] == second_daemon.process.pid
    stream.extend(rows[1000:1500])
    path = Path(client.stop())
    client.close()
    saved = load_json(path)
    assert saved["camera"]["settings"] == {"exposure": 6.0, "gain": 2, "mode": "fast"}
    assert saved["general"]["animal"] == "fish 3"
    (restart,) = saved["collectord"]["restarts"]
    assert "resumed" in restart
    assert saved["tracking"]["tail"]["rows"] == 1500
    np.testing.assert_array_equal(read_stream(path, saved["tracking"]["tail"]), rows[:1500])
    assert saved["collectord"]["sources"][0]["messages"]["lost"] == 0

    assert second_daemon.terminate() == 0
    assert not (state / "lock.owner").exists()  # released on the way out
    log = first.log.read_text()
    assert "cannot fsync the folder" in log  # the fallback ran, and said so
    assert "Traceback" not in log


# -- the lock -----------------------------------------------------------------------------


@pytest.fixture(params=["flock", "msvcrt", "owner file"])
def lock_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each kind of lock in turn, whatever this system has."""
    import fcntl

    kind: str = request.param
    monkeypatch.setattr(system, "_fcntl", fcntl if kind == "flock" else None)
    monkeypatch.setattr(system, "_msvcrt", FakeMsvcrt(fcntl) if kind == "msvcrt" else None)
    assert system.lock_kind() == kind
    return kind


def test_each_kind_of_lock_is_exclusive_until_released(tmp_path: Path, lock_kind: str) -> None:
    first, second = OutputLock(tmp_path), OutputLock(tmp_path)
    first.acquire()
    try:
        holder = rf" \(pid {os.getpid()} on {re.escape(socket.gethostname())}, since [^)]+\)"
        with pytest.raises(OutputBusyError, match=f"^{tmp_path} is {BUSY}{holder}$"):
            second.acquire()
    finally:
        first.release()
    assert not first.holder.exists()  # no holder to name once released
    second.acquire()  # free again once released
    second.release()
    first.release()  # a second release does nothing


HOLD = """
import sys
from pathlib import Path
from collectord import system
from collectord.store import OutputLock
kind = sys.argv[2]
if kind != "flock":
    system._fcntl = None
if kind == "msvcrt":
    sys.path.insert(0, sys.argv[3])
    import fcntl
    from without_posix import FakeMsvcrt
    system._msvcrt = FakeMsvcrt(fcntl)
held = OutputLock(Path(sys.argv[1]))  # kept: a lock collected is a lock closed
held.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_each_kind_of_lock_is_freed_when_its_holder_is_killed(
    tmp_path: Path, lock_kind: str
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), lock_kind, str(LAUNCHER.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        lock = OutputLock(tmp_path)
        with pytest.raises(OutputBusyError):
            lock.acquire()
        holder.kill()
        holder.wait()
        lock.acquire()
        lock.release()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()


def test_the_msvcrt_lock_locks_byte_0_and_unlocks_before_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    fake = FakeMsvcrt(fcntl)
    monkeypatch.setattr(system, "_fcntl", None)
    monkeypatch.setattr(system, "_msvcrt", fake)
    path = tmp_path / "lock"
    path.write_bytes(b"something written by an older version")
    held = system.lock(path)
    assert held is not None
    held.release()
    assert fake.calls == [(fake.LK_NBLCK, 0, 1), (fake.LK_UNLCK, 0, 1)]


def test_the_msvcrt_lock_raises_errors_other_than_a_held_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(FakeMsvcrt):
        def locking(self, fd: int, mode: int, nbytes: int) -> None:
            raise OSError(errno.EBADF, "bad file descriptor")

    import fcntl

    monkeypatch.setattr(system, "_msvcrt", Broken(fcntl))
    with pytest.raises(OSError, match="bad file descriptor"):
        system.MsvcrtLock.try_acquire(tmp_path / "lock")


def owner_file(tmp_path: Path, **holder: Any) -> Path:
    path = tmp_path / "lock.owner"
    fields = {"pid": os.getpid(), "host": socket.gethostname(), "token": "x", **holder}
    path.write_text(json.dumps(fields))
    return path


def gone_pid() -> int:
    """The pid of a process that has ended and been waited for."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_owner_file_is_taken_over_from_a_process_that_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = gone_pid()
    owner_file(tmp_path, pid=pid)
    with caplog.at_level(logging.WARNING, "collectord"):
        held = system.OwnerFileLock.try_acquire(tmp_path / "lock")
    assert held is not None
    assert json.loads((tmp_path / "lock.owner").read_text())["pid"] == os.getpid()
    assert f'"pid": {pid}' in caplog.text
    held.release()
    assert os.listdir(tmp_path) == []  # no stale file left aside either


def test_an_owner_file_of_this_pid_but_another_process_is_taken_over(tmp_path: Path) -> None:
    owner_file(tmp_path, token="a previous process that had this pid")
    held = system.OwnerFileLock.try_acquire(tmp_path / "lock")
    assert held is not None
    held.release()


@pytest.mark.parametrize(
    "holder",
    [
        {"pid": os.getppid()},  # alive
        {"host": "another-host"},  # cannot be proven gone
        {"pid": "not a pid"},
    ],
)
def test_an_owner_file_is_not_taken_from_a_holder_not_proven_gone(
    tmp_path: Path, holder: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    if holder.get("host") == "another-host":
        holder["pid"] = gone_pid()
    path = owner_file(tmp_path, **holder)
    before = path.read_bytes()
    with caplog.at_level(logging.ERROR, "collectord"):
        assert system.OwnerFileLock.try_acquire(tmp_path / "lock") is None
    assert path.read_bytes() == before
    assert "remove that file" in caplog.text


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"pid": 1}'])
def test_an_unreadable_owner_file_is_not_taken_over(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "lock.owner").write_bytes(content)
    assert system.OwnerFileLock.try_acquire(tmp_path / "lock") is None
    assert (tmp_path / "lock.owner").read_bytes() == content


def test_a_takeover_that_finds_a_fresh_owner_file_puts_it_back(tmp_path: Path) -> None:
    # Between reading the stale file and moving it aside, another daemon took it over.
    fresh = owner_file(tmp_path, token="fresh").read_bytes()
    assert not system._take_over(tmp_path / "lock.owner", b'{"stale": true}')
    assert os.listdir(tmp_path) == ["lock.owner"]
    assert (tmp_path / "lock.owner").read_bytes() == fresh


def test_releasing_leaves_an_owner_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    held = system.OwnerFileLock.try_acquire(tmp_path / "lock")
    assert held is not None
    owner_file(tmp_path, token="someone else")
    held.release()
    assert json.loads((tmp_path / "lock.owner").read_text())["token"] == "someone else"


def test_process_exists() -> None:
    assert system.process_exists(os.getpid())
    assert system.process_exists(os.getppid())
    assert not system.process_exists(gone_pid())
    assert system.process_exists(0) and system.process_exists(-1)  # not one process


def test_process_exists_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []

    class WinApi:
        """Windows's _winapi: pid 1 has ended, 2 runs, 3 is not there, 4 is not ours."""

        def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
            assert access == 0x1000 and not inherit
            if pid in (3, 4):
                error = OSError("no")
                error.winerror = 87 if pid == 3 else 5  # type: ignore[attr-defined]
                raise error
            return 100 + pid

        def GetExitCodeProcess(self, handle: int) -> int:
            return 259 if handle == 102 else 0

        def CloseHandle(self, handle: int) -> None:
            closed.append(handle)

    monkeypatch.setattr(system, "_optional", lambda name: WinApi())
    assert [system._windows_process_exists(pid) for pid in (1, 2, 3, 4)] == [
        False,
        True,
        False,
        True,
    ]
    assert closed == [101, 102]


# -- fsync of a folder -----------------------------------------------------------------


def test_fsync_dir_fsyncs_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert system.fsync_dir(tmp_path) is True
    assert len(synced) == 1


def windows_open(real_open: Any) -> Any:
    def open_(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)

    return open_


def test_fsync_dir_does_nothing_where_a_folder_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "open", windows_open(os.open))
    monkeypatch.setattr(system, "_dir_fsync_reported", False)
    with caplog.at_level(logging.DEBUG, "collectord"):
        assert system.fsync_dir(tmp_path) is False
        assert system.fsync_dir(tmp_path) is False
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG]
    # What calls it works on: an atomic write, and publishing an experiment folder.
    atomic_write(tmp_path / "out" / "last_config.json", b"{}")
    staging = staging_dir(tmp_path / "out", "run-1")
    staging.mkdir(parents=True)
    import datetime as dt

    target = publish(tmp_path / "out", staging, dt.datetime(2024, 3, 1, 14, 5, 9), "140509")
    assert target == tmp_path / "out" / "240301" / "140509" and target.is_dir()


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_fsync_dir_does_nothing_where_the_file_system_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    closed: list[int] = []
    real_close = os.close

    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "close", close)
    assert system.fsync_dir(tmp_path) is False
    assert len(closed) == 1


def test_fsync_dir_raises_real_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError):
        system.fsync_dir(tmp_path / "missing")

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="I/O error"):
        system.fsync_dir(tmp_path)


# -- writing at an offset, binary mode ----------------------------------------------------


@pytest.fixture
def no_pwrite(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Take os.pwrite away; the offsets seek_write was called with."""
    monkeypatch.delattr(os, "pwrite")
    offsets: list[int] = []
    real = system.seek_write

    def seek_write(fd: int, data: Any, offset: int) -> int:
        offsets.append(offset)
        return real(fd, data, offset)

    monkeypatch.setattr(system, "seek_write", seek_write)
    return offsets


def test_pwrite_without_os_pwrite_writes_at_the_offset(
    tmp_path: Path, no_pwrite: list[int]
) -> None:
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    try:
        assert system.pwrite(fd, b"world", 6) == 5
        assert system.pwrite(fd, b"hello ", 0) == 6
        assert system.pwrite(fd, memoryview(b"W"), 6) == 1
    finally:
        os.close(fd)
    assert (tmp_path / "file").read_bytes() == b"hello World"
    assert no_pwrite == [6, 0, 6]


def test_pwrite_without_os_pwrite_is_safe_from_several_threads(
    tmp_path: Path, no_pwrite: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers at their own offsets, and a thread that fsyncs the fd meanwhile.

    Each seek lets the other threads run before its write, as a slow system's
    might: any write that another thread's seek moved lands in the wrong place.
    """
    real_lseek = os.lseek

    def slow_lseek(fd: int, position: int, how: int) -> int:
        moved = real_lseek(fd, position, how)
        time.sleep(0.0001)
        return moved

    monkeypatch.setattr(os, "lseek", slow_lseek)
    writers, chunk, rounds = 4, 64, 100
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    done = threading.Event()

    def write(index: int) -> None:
        data = bytes([index + 1]) * chunk
        for turn in range(rounds):
            offset = (turn * writers + index) * chunk
            assert system.pwrite(fd, data, offset) == chunk

    def fsync() -> None:
        while not done.is_set():
            os.fsync(fd)

    syncing = threading.Thread(target=fsync)
    threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
    syncing.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    syncing.join()
    os.close(fd)
    expected = b"".join(bytes([i + 1]) * chunk for i in range(writers)) * rounds
    assert (tmp_path / "file").read_bytes() == expected
    assert len(no_pwrite) == writers * rounds


def tail_spec() -> StreamSpec:
    return StreamSpec.parse(
        parse_path("tracking/tail"), {"columns": COLUMNS, "dtype": "<f8"}, "s1", "tracking"
    )


def test_a_stream_file_without_os_pwrite(tmp_path: Path, no_pwrite: list[int]) -> None:
    spec = tail_spec()
    rows = np.arange(30, dtype="<f8").reshape(10, 3)
    stream = StreamFile(tmp_path / "tail.npy", spec, fresh=True)
    stream.append(rows[:4].tobytes())
    stream.append(rows[4:].tobytes())
    spec.rows = 10
    stream.finish()
    table = np.load(tmp_path / "tail.npy")
    np.testing.assert_array_equal(np.stack([table[n] for n in COLUMNS], axis=1), rows)
    header = stream.header_bytes
    assert no_pwrite == [0, header, header + 4 * 24, 0]  # header, rows, rows, final header


def test_files_are_opened_in_binary_mode_where_the_system_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real_open = os.open

    def open_(path: Any, flags: int, mode: int = 0o777) -> int:
        opened.append(flags)
        return real_open(path, flags & ~FAKE_O_BINARY, mode)

    monkeypatch.setattr(os, "open", open_)
    fd = system.open_binary(tmp_path / "plain", os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert opened == [os.O_WRONLY | os.O_CREAT]  # no O_BINARY here: nothing added

    monkeypatch.setattr(os, "O_BINARY", FAKE_O_BINARY, raising=False)
    opened.clear()
    Journal(tmp_path / "journal").close()
    StreamFile(tmp_path / "tail.npy", tail_spec(), fresh=True).close()
    assert len(opened) == 2 and all(flags & FAKE_O_BINARY for flags in opened)


# -- signals -------------------------------------------------------------------------


FILL = """
import errno, os, resource, signal, sys
from collectord import system
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a program embedding it may not
if sys.argv[2] == "ignore":
    assert system.ignore_file_size_signal()
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"x" * 600)
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no file size signal here")
def test_a_file_size_limit_fails_a_write_instead_of_killing(tmp_path: Path) -> None:
    def fill(how: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", FILL, str(tmp_path / how), how],
            capture_output=True,
            text=True,
            timeout=60,
        )

    killed = fill("default")
    assert killed.returncode == -signal.SIGXFSZ
    survived = fill("ignore")
    assert survived.returncode == 0 and survived.stdout == "EFBIG\n", survived.stderr
    assert (tmp_path / "ignore").stat().st_size == 1000


def test_without_a_file_size_signal_there_is_nothing_to_ignore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(signal, "SIGXFSZ", raising=False)
    assert system.ignore_file_size_signal() is False


@pytest.mark.parametrize("hangup", [True, False], ids=["posix", "without SIGHUP"])
def test_quit_signals_interrupt_as_ctrl_c_does_and_are_put_back(
    monkeypatch: pytest.MonkeyPatch, hangup: bool
) -> None:
    if not hangup:
        monkeypatch.delattr(signal, "SIGHUP", raising=False)
    quits = [signal.SIGTERM, *([signal.SIGHUP] if hangup else [])]
    before = {number: signal.getsignal(number) for number in quits}
    with pytest.raises(KeyboardInterrupt), system.quit_signals_interrupt():
        signal.raise_signal(quits[-1])  # its handler runs before this returns
    assert {number: signal.getsignal(number) for number in quits} == before


# -- memory -----------------------------------------------------------------------------

#: Allocates and frees 16 blocks of 1 MiB three times over in a thread of its
#: own (the daemon's blocks come from ZeroMQ's I/O thread), with ``keep`` or
#: not, and prints the page faults of each round.
ROUNDS = """
import ctypes, resource, sys, threading
from collectord import system
if sys.argv[1] == "keep":
    assert system.keep_freed_memory(64 * 1024 * 1024)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def rounds():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        blocks = [libc.malloc(1 << 20) for _ in range(16)]
        for block in blocks:
            ctypes.memset(block, 1, 1 << 20)
        for block in blocks:
            libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(*faults)
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not hasattr(system._resource, "RUSAGE_THREAD"),
    reason="glibc's allocator, counted per thread (Linux)",
)
@pytest.mark.parametrize("keep", ["keep", "default"])
def test_freed_blocks_are_reused_without_fresh_page_faults(keep: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ROUNDS, keep], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first, second, third = (int(n) for n in done.stdout.split())
    pages = 16 * 1024 * 1024 // 4096
    assert first >= pages * 0.9  # fresh memory: a fault per page
    if keep == "keep":
        assert second + third < pages * 0.1
    else:  # what it is for: glibc alone gives the memory back each round
        assert second > pages * 0.5 and third > pages * 0.5


def test_keep_freed_memory_where_the_c_library_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    class Mallopt:  # musl's does nothing and says so
        argtypes: Any = None
        restype: Any = None

        def __call__(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 0

    refusing = types.SimpleNamespace(mallopt=Mallopt())
    monkeypatch.setattr(system, "_c_library", lambda: refusing)
    assert system.keep_freed_memory(1 << 20) is False and len(calls) == 1
    monkeypatch.setattr(system, "_c_library", lambda: object())  # macOS: no mallopt
    assert system.keep_freed_memory(1 << 20) is False
    monkeypatch.setattr(system, "_c_library", lambda: None)  # ctypes cannot name it
    assert system.keep_freed_memory(1 << 20) is False

    def no_library(name: Any) -> Any:
        raise TypeError("Windows takes no None")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert system._c_library() is None


def test_a_daemon_in_its_own_process_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectord.daemon import Daemon
    from collectord.daemon.loop import KEEP_FREED_BYTES

    kept: list[int] = []
    monkeypatch.setattr(system, "keep_freed_memory", lambda nbytes: bool(kept.append(nbytes)))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # pytest keeps its handlers
    Daemon.set_up_process(types.SimpleNamespace(_signals=[]))  # type: ignore[arg-type]
    assert kept == [KEEP_FREED_BYTES]


# -- the bench --------------------------------------------------------------------------


def test_sync_all(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    monkeypatch.setattr(os, "sync", lambda: calls.append(None), raising=False)
    assert system.sync_all() is True and calls == [None]
    monkeypatch.delattr(os, "sync")
    assert system.sync_all() is False and calls == [None]


GROW = """
import sys
memory = b"\\1" * (100 * 1024 * 1024)
del memory  # the peak stays; what the process holds now is far less
print("grown", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def grown() -> Any:
    """A child that has touched 100 MiB, freed it, and waits."""
    child = subprocess.Popen(
        [sys.executable, "-c", GROW], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "grown\n"
    yield child
    child.kill()
    child.wait()
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.stdout.close()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc here")
def test_peak_memory_of_a_running_process(
    grown: subprocess.Popen[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peak = system.peak_memory_mb(grown.pid)
    assert peak is not None and 100 <= peak < 200
    monkeypatch.setattr(system, "_PROC", tmp_path)  # a system without /proc
    assert system.peak_memory_mb(grown.pid) is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc here")
def test_cpu_seconds_of_a_running_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the bench reads of the daemon: the CPU it used, as the process
    itself counts it."""
    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "while time.process_time() < 0.3: pass\n"
            "print(time.process_time(), flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert burner.stdout is not None
        used = float(burner.stdout.readline())
        seen = system.process_cpu_seconds(burner.pid)
        assert seen is not None
        assert used - 0.05 <= seen <= used + 0.05  # clock ticks are 10 ms
        monkeypatch.setattr(system, "_PROC", tmp_path)  # a system without /proc
        assert system.process_cpu_seconds(burner.pid) is None
    finally:
        burner.kill()
        burner.wait()
        assert burner.stdin is not None and burner.stdout is not None
        burner.stdin.close()
        burner.stdout.close()


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="no wait4 here")
def test_peak_memory_of_a_child_once_it_has_ended(grown: subprocess.Popen[str]) -> None:
    grown.kill()
    peak = system.reap_peak_memory_mb(grown)
    # At least what it touched. No upper bound: a forked child's peak counts
    # the parent's memory before exec, and this parent is a long test run.
    assert peak is not None and peak >= 100
    assert grown.returncode == -signal.SIGKILL
    assert system.reap_peak_memory_mb(grown) is None  # already waited for


def test_peak_memory_at_the_end_without_wait4(
    grown: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "wait4", raising=False)
    grown.kill()
    assert system.reap_peak_memory_mb(grown) is None
    assert grown.returncode is not None  # waited for all the same


def test_after_fork_in_child_does_nothing_without_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no fork, and no ``os.register_at_fork``."""
    monkeypatch.delattr(os, "register_at_fork")
    assert system.after_fork_in_child(lambda: None) is False
