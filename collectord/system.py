"""Every call collectord makes that not every system has, and what it does instead.

The rigs that run collectord are mostly Windows PCs; development and CI run
Linux. Each call below is made where the system has it and falls back to
something that works anywhere. Nothing else in the package makes these calls:
``tests/test_portability.py`` runs a whole daemon with all of them taken away.

``lock(path)``: one daemon (or ``recover``) per output folder. It must be
freed when its process dies, however it dies (``kill -9``, a crash, a power
cut), or a rig would need a person to clean up before the next experiment.

1. ``fcntl.flock`` on ``path`` (Linux, macOS): the kernel frees it when the
   process ends.
2. ``msvcrt.locking`` of byte 0 of ``path`` (Windows): Windows frees it when
   the process ends. Its documentation says "the timing depends on available
   system resources", so a daemon restarted the very instant after a crash
   may be refused once.
3. Anywhere else, an owner file, ``<path>.owner``, created exclusively
   (``O_EXCL``) and holding the pid, host and a random token of its holder.
   Nothing frees it when the holder dies, so a daemon that finds one takes it
   over only when its holder is provably gone: same host, and no process with
   that pid exists (``process_exists``), or the pid is this very process's
   and the token is not one it holds (a previous process had this pid). It
   was chosen because it needs nothing but exclusive create, which every
   file system has. What it cannot guarantee:

   * a holder whose pid has been reused (after a reboot, say) looks alive:
     the folder is refused until a person removes the owner file, which the
     log names;
   * a holder on another host (a shared network folder) can never be proven
     gone, and the owner file is only as exclusive as that file system's
     ``O_EXCL`` is;
   * taking over is a rename and a check, not one atomic step: should two
     daemons take over one stale lock at the same instant, the later one puts
     the earlier one's owner file back, but a third one starting in that
     same instant could get through as well;
   * a holder that dies between creating its owner file and writing into it
     leaves a file nobody can read, which is never taken over.

   The three kinds do not see each other: use a folder from one kind of
   system at a time.

``fsync_dir(path)``: makes a rename or creation in a folder durable (the folder
is opened ``O_RDONLY`` and fsynced). Windows cannot open a folder that way
(``PermissionError``), and some file systems refuse fsync on a folder
(``EINVAL``, ``ENOTSUP``); there it does nothing, says so once in the log,
and returns False. NTFS journals its metadata, so a rename there is atomic
without it; it may still be lost to a power cut that comes right after it.

``pwrite(fd, data, offset)``: writes a stream's rows at their offset (a block
after one that a full disk cut short goes over its partial rows), while the
flusher's thread may fsync the same fd. Windows has no ``os.pwrite``: there
it seeks and writes, both under one lock of this module, so that two threads
never interleave a seek with the other's write. fsync and ftruncate do not
use the position, so they need no lock; but an fd written this way must not
also be read or written with plain ``os.read`` / ``os.write``.

``open_binary(path, flags, mode)``: ``os.open`` with ``os.O_BINARY`` where it
exists (Windows). Without it Windows opens the file in text mode: every byte
10 written becomes 13 10, and a byte 26 read ends the file. Elsewhere it is a
plain ``os.open``.

``ignore_file_size_signal()``: ignores ``SIGXFSZ``, so that a file size limit
(``ulimit -f``) fails a write with ``EFBIG``, which the daemon survives like a
full disk, instead of killing the daemon. CPython ignores it at start-up
already; this makes sure where something (a program embedding Python, a
library) set it back. Systems without the signal (Windows) have nothing to
ignore; it returns False there. Call it from the main thread.

``quit_signals_interrupt()``: within it, SIGTERM, and SIGHUP where the
system has it (not Windows), interrupt the main thread as Ctrl-C does (a
``KeyboardInterrupt``), so that a program that puts something back as it
ends (``collectord watch``: the terminal's echo, line editing and cursor)
does so when ``kill``, ``timeout`` or a closing terminal ends it too. Once
one came, the others are ignored until the context ends: the clean exit is
not cut short. Call it from the main thread.

``after_fork_in_child(callback)``: runs ``callback`` in a forked child (the
client marks the clients it inherited as stopped); a no-op where there is no
fork (Windows).

``raise_open_file_limit(wanted)``: raises the soft limit on the process's
open files (``RLIMIT_NOFILE``) to ``wanted``, or to the hard limit if that is
lower. Each stream keeps its file open while the daemon runs, and streams
outlive an experiment. Under the soft limit most Linux systems give a process
(1024), a rig that had declared about a thousand streams had their blocks
refused, and every save failed: it could not create the next journal. Windows has no such
limit to raise (its C runtime opens up to 8192 files); the call returns None
there. A system that refuses the raise (macOS caps it lower) keeps its limit.

``keep_freed_memory(nbytes)``: asks the C library's allocator (glibc's
``mallopt``) to keep up to ``nbytes`` of freed memory in each of its heaps
for reuse, and to take blocks of up to 32 MiB from its heaps rather than
mapping each anew. The daemon receives a stream's blocks into buffers that
ZeroMQ's I/O thread allocates, a megabyte or more each, and frees them once
written: by default glibc returns such memory to the system almost at once
(its threshold follows the largest block freed, about twice that), so every
block of the next burst lands on fresh pages, which the kernel faults in and
zeroes one 4 KiB page at a time (about 10,000 faults and a sixth of the
daemon's CPU per 100 MB). Other C libraries (macOS, Windows, musl) have no
such call, or one that does nothing: it returns False there, and their
allocator does as it does.

``sync_all()``: ``os.sync()``, the write-back of every dirty page, which the
bench does between measurements. Windows has no such call (flushing a whole
volume needs administrator rights); it does nothing there and returns False.

``peak_memory_mb(pid)``: a running process's peak resident memory, from
``/proc/<pid>/status`` (Linux). ``reap_peak_memory_mb(process)``: waits for a
child that is ending and returns its peak, from ``os.wait4`` (Linux, macOS,
the BSDs), for when ``/proc`` is missing. Both return None where the system
has neither (Windows): the bench then reports the figure as unavailable.

``process_exists(pid)``: whether a process with that pid exists on this host,
for the owner file above: ``os.kill(pid, 0)`` on POSIX; on Windows (where
``os.kill(pid, 0)`` would send a Ctrl-C) ``OpenProcess`` and its exit code.
Where it cannot tell, it says True: a lock is only taken over when its holder
is proven gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Protocol


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


#: The lock modules this system has (None where it has not). Looked up at
#: import; the tests replace them to try each kind of lock.
_fcntl = _optional("fcntl")
_msvcrt = _optional("msvcrt")
_resource = _optional("resource")

log = logging.getLogger("collectord")


# -- the output folder's lock ------------------------------------------------------------


class HeldLock(Protocol):
    """A lock this process holds until ``release``."""

    def release(self) -> None: ...


class FlockLock:
    """``fcntl.flock`` on the lock file: freed by the kernel when the process ends."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file: IO[bytes] | None = file

    @classmethod
    def try_acquire(cls, path: Path) -> FlockLock | None:
        assert _fcntl is not None
        file = open(path, "a+b")  # noqa: SIM115 - held until release
        try:
            _fcntl.flock(file.fileno(), _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return None
        except BaseException:
            file.close()
            raise
        return cls(file)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing frees the flock
            self._file = None


#: What msvcrt.locking raises when another process holds the byte.
_LOCKED_ERRNOS = frozenset(
    {errno.EACCES, errno.EDEADLK, getattr(errno, "EDEADLOCK", errno.EDEADLK)}
)


class MsvcrtLock:
    """``msvcrt.locking`` of byte 0 of the lock file: freed by Windows when the
    process ends (see the module docstring for when)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file: IO[bytes] | None = file

    @classmethod
    def try_acquire(cls, path: Path) -> MsvcrtLock | None:
        assert _msvcrt is not None
        file = open(path, "a+b")  # noqa: SIM115 - held until release
        try:
            file.seek(0)  # msvcrt.locking locks from the position on
            _msvcrt.locking(file.fileno(), _msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            file.close()
            if exc.errno in _LOCKED_ERRNOS:
                return None
            raise
        except BaseException:
            file.close()
            raise
        return cls(file)

    def release(self) -> None:
        if self._file is not None:
            assert _msvcrt is not None
            try:
                # Unlocked before closing: Windows frees a lock left on a
                # closed file only when it gets round to it.
                self._file.seek(0)
                _msvcrt.locking(self._file.fileno(), _msvcrt.LK_UNLCK, 1)
            finally:
                self._file.close()
                self._file = None


#: Tokens of the owner files this process holds.
_held_tokens: set[str] = set()


class OwnerFileLock:
    """An owner file created exclusively, taken over only from a holder proven gone.

    The last resort of ``lock``: the module docstring says why, and what it
    cannot guarantee.
    """

    def __init__(self, path: Path, content: bytes, token: str) -> None:
        self.path = path
        self._content = content
        self._token: str | None = token

    @staticmethod
    def owner_file(path: Path) -> Path:
        return path.with_name(path.name + ".owner")

    @classmethod
    def try_acquire(cls, path: Path) -> OwnerFileLock | None:
        owner = cls.owner_file(path)
        token = secrets.token_hex(8)
        content = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "token": token}
        ).encode()
        for _ in range(5):  # each turn ends with a takeover or a holder gone meanwhile
            try:
                fd = open_binary(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    held = owner.read_bytes()
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if not _holder_gone(held):
                    log.error(
                        "%s is held by %s; if no collectord process uses this folder, "
                        "remove that file",
                        owner,
                        held.decode(errors="replace") or "a process that wrote nothing yet",
                    )
                    return None
                if not _take_over(owner, held):
                    return None
                continue
            try:
                write_all(fd, content)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                owner.unlink(missing_ok=True)
                raise
            os.close(fd)
            _held_tokens.add(token)
            return cls(owner, content, token)
        return None

    def release(self) -> None:
        if self._token is None:
            return
        _held_tokens.discard(self._token)
        self._token = None
        try:
            still_ours = self.path.read_bytes() == self._content
        except FileNotFoundError:
            still_ours = False
        if still_ours:
            self.path.unlink()
        else:
            log.error("%s no longer holds this process's lock; left as it is", self.path)


def _holder_gone(held: bytes) -> bool:
    """Whether the holder an owner file names is proven gone."""
    try:
        holder = json.loads(held)
        pid, host, token = holder["pid"], holder["host"], holder["token"]
    except (ValueError, TypeError, KeyError):
        return False  # unreadable, or being written right now
    if host != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return token not in _held_tokens  # a previous process that had this pid
    return not process_exists(pid)


def _take_over(owner: Path, stale: bytes) -> bool:
    """Move the stale owner file ``owner`` (holding ``stale``) out of the way.

    False if another process took it over first: its fresh owner file, moved
    aside by mistake, is put back.
    """
    aside = owner.with_name(f"{owner.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(owner, aside)
    except FileNotFoundError:
        return True  # gone meanwhile: try to create it again
    if aside.read_bytes() == stale:
        aside.unlink()
        log.warning("took over %s from a process that is gone: %s", owner, stale.decode())
        return True
    os.rename(aside, owner)
    return False


def lock_kind() -> str:
    """Which lock ``lock`` takes on this system: flock, msvcrt or owner file."""
    if _fcntl is not None:
        return "flock"
    if _msvcrt is not None:
        return "msvcrt"
    return "owner file"


def lock(path: Path) -> HeldLock | None:
    """Lock ``path`` (a file in an existing folder) for this process, or None if
    another process holds it. The lock lasts until its ``release``."""
    kind = lock_kind()
    if kind == "flock":
        return FlockLock.try_acquire(path)
    if kind == "msvcrt":
        return MsvcrtLock.try_acquire(path)
    return OwnerFileLock.try_acquire(path)


def process_exists(pid: int) -> bool:
    """Whether a process with this pid exists on this host; True when that
    cannot be told (so that nothing is taken from a live process)."""
    if pid <= 0:
        return True  # not a single process: nothing to prove
    if os.name == "nt":
        return _windows_process_exists(pid)
    kill = getattr(os, "kill", None)
    if kill is None:
        return True
    try:
        kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, and belongs to someone else
        return True
    return True


def _windows_process_exists(pid: int) -> bool:
    winapi: Any = _optional("_winapi")
    if winapi is None:
        return True
    try:
        handle = winapi.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    except OSError as exc:
        return getattr(exc, "winerror", None) != 87  # ERROR_INVALID_PARAMETER: no such pid
    try:
        return bool(winapi.GetExitCodeProcess(handle) == 259)  # STILL_ACTIVE
    finally:
        winapi.CloseHandle(handle)


# -- files ----------------------------------------------------------------------------


def open_binary(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """``os.open`` in binary mode: with ``os.O_BINARY`` where the system has it."""
    return os.open(path, flags | getattr(os, "O_BINARY", 0), mode)


#: fsync_dir has said in the log that this system cannot fsync a folder.
_dir_fsync_reported = False
#: Errors of an fsync of a folder that mean the file system does not do it.
_NO_DIR_FSYNC = frozenset(
    code for code in (errno.EINVAL, getattr(errno, "ENOTSUP", None), errno.EOPNOTSUPP) if code
)


def fsync_dir(path: Path) -> bool:
    """fsync the folder ``path``, making renames and creations in it durable.

    False where this system cannot (see the module docstring); other errors
    (a folder that is not there, EIO) raise.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError as exc:
        _no_dir_fsync(path, exc)
        return False
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
        _no_dir_fsync(path, exc)
        return False
    finally:
        os.close(fd)
    return True


def _no_dir_fsync(path: Path, exc: OSError) -> None:
    global _dir_fsync_reported
    level = logging.DEBUG if _dir_fsync_reported else logging.WARNING
    _dir_fsync_reported = True
    log.log(
        level,
        "cannot fsync the folder %s (%s); renames in it rely on the file system alone",
        path,
        exc.strerror or exc,
    )


_seek_write_lock = threading.Lock()


def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write ``data`` at ``offset`` of ``fd``; the bytes written (possibly fewer,
    as ``os.write``). See the module docstring for the fallback's one rule."""
    native = getattr(os, "pwrite", None)
    if native is not None:
        written: int = native(fd, data, offset)
        return written
    return seek_write(fd, data, offset)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take less),
    or raise (a full disk raises on the write after the one it cut short)."""
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def pread(fd: int, size: int, offset: int) -> bytes:
    """Read up to ``size`` bytes at ``offset`` of ``fd`` (fewer at its end)."""
    native = getattr(os, "pread", None)
    if native is not None:
        read: bytes = native(fd, size, offset)
        return read
    with _seek_write_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)


def seek_write(fd: int, data: bytes | memoryview, offset: int) -> int:
    """``pwrite`` where the system has none: seek and write under one lock."""
    with _seek_write_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


# -- signals --------------------------------------------------------------------------


def after_fork_in_child(callback: Callable[[], None]) -> bool:
    """Call ``callback`` in the child after every ``fork``; False where the
    system has no fork (Windows), and there is nothing to do."""
    register = getattr(os, "register_at_fork", None)
    if register is None:
        return False
    register(after_in_child=callback)
    return True


def ignore_file_size_signal() -> bool:
    """Ignore SIGXFSZ, so that a file size limit fails a write with EFBIG rather
    than killing the process. False if this system has no such signal."""
    number = getattr(signal, "SIGXFSZ", None)
    if number is None:
        return False
    signal.signal(number, signal.SIG_IGN)
    return True


#: The signals that ask a program to end, besides Ctrl-C: SIGHUP is POSIX only.
_QUIT_SIGNALS = ("SIGTERM", "SIGHUP")


@contextlib.contextmanager
def quit_signals_interrupt() -> Iterator[None]:
    """Within it, SIGTERM and SIGHUP (where it exists) raise KeyboardInterrupt
    in the main thread, as Ctrl-C does; the handlers before are put back after."""
    numbers = [getattr(signal, name) for name in _QUIT_SIGNALS if hasattr(signal, name)]

    def interrupt(number: int, _frame: Any) -> None:
        for each in numbers:  # the exit under way is not cut short by another
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(number).name)

    previous = {number: signal.signal(number, interrupt) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


# -- open files ---------------------------------------------------------------------


def raise_open_file_limit(wanted: int) -> int | None:
    """Raise the soft limit on open files to ``wanted`` (at most the hard
    limit); return the soft limit now, or None where there is none to raise."""
    if _resource is None:
        return None
    limit = _resource.RLIMIT_NOFILE
    soft, hard = _resource.getrlimit(limit)
    target = wanted if hard == _resource.RLIM_INFINITY else min(wanted, hard)
    if soft != _resource.RLIM_INFINITY and soft < target:
        try:
            _resource.setrlimit(limit, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, target, exc)
        else:
            soft = target
    return int(soft)


# -- memory -------------------------------------------------------------------------

#: glibc's ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest ``M_MMAP_THRESHOLD`` glibc takes on 64-bit systems (half its
#: 64 MiB per-thread heaps); a 32-bit one takes at most 512 KiB.
_MMAP_THRESHOLD = 32 * 1024 * 1024 if sys.maxsize > 2**32 else 512 * 1024


def _c_library() -> Any:
    """The C library this process runs on, or None where ctypes cannot name it."""
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # Windows takes no None
        return None


def keep_freed_memory(nbytes: int) -> bool:
    """Have the C allocator keep up to ``nbytes`` freed per heap for reuse (and
    serve blocks up to ``_MMAP_THRESHOLD`` from its heaps); False where the C
    library has no ``mallopt`` or refuses it. For the daemon's own process."""
    library = _c_library()
    mallopt = getattr(library, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Either call turns glibc's moving thresholds off; both must hold.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, nbytes)
    )


# -- the bench ------------------------------------------------------------------------


def sync_all() -> bool:
    """Write back every dirty page of the system (``os.sync``); False where
    there is no such call."""
    sync = getattr(os, "sync", None)
    if sync is None:
        return False
    sync()
    return True


#: Where Linux shows its processes; the tests point it elsewhere.
_PROC = Path("/proc")


def peak_memory_mb(pid: int) -> float | None:
    """The peak resident memory (VmHWM) of a running process, in MiB, or None
    where the system does not show it."""
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user and system) a running process has used so far, or
    None where the system does not show it (no ``/proc``). Counted by the
    kernel for that process alone, so other load on a shared machine moves
    it little, where it moves wall-clock times a lot."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (name) state ppid ...": the name may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime and stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float | None:
    """CPU seconds (user and system) used by this process's children that were
    waited for, or None where the system does not count them (no ``resource``)."""
    if _resource is None:
        return None
    usage = _resource.getrusage(_resource.RUSAGE_CHILDREN)
    return float(usage.ru_utime + usage.ru_stime)


def reap_peak_memory_mb(process: subprocess.Popen[Any]) -> float | None:
    """Wait for ``process`` (a child that is ending) and return its peak resident
    memory in MiB, or None where the system cannot tell (no ``os.wait4``) or it
    was already waited for."""
    wait4 = getattr(os, "wait4", None)
    if wait4 is None or process.returncode is not None:
        process.wait()
        return None
    try:
        _, status, usage = wait4(process.pid, 0)
    except ChildProcessError:  # waited for elsewhere
        process.wait()
        return None
    with contextlib.suppress(ValueError):
        process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in bytes on macOS, in KiB on Linux and the BSDs.
    return float(usage.ru_maxrss) / (1024 * 1024 if sys.platform == "darwin" else 1024)
