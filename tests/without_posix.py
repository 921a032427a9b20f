"""Run the ``collectord`` command as on a system without the calls it prefers.

    python tests/without_posix.py [--msvcrt] run --output DIR ...

Before collectord is imported, it takes away what Windows lacks:

* ``os.pwrite``, ``os.sync`` and ``signal.SIGXFSZ`` are removed;
* ``import fcntl`` and ``import resource`` fail;
* ``os.open`` of a folder raises PermissionError, as it does on Windows, so
  that no folder can be fsynced;
* ``os.O_BINARY`` is defined (as a bit no open flag here uses, removed before
  the real ``os.open``), and an ``os.open`` that collectord makes without it
  fails: on Windows such a file would be opened in text mode.

Without ``--msvcrt`` there is no ``msvcrt`` module either (as on Linux), so the
output lock is the last fallback, the owner file. With ``--msvcrt``,
``FakeMsvcrt`` stands in for Windows's module, so the lock goes the Windows
way; its ``locking`` is done with ``flock``, which the kernel frees when the
process dies, as Windows frees its locks.

Importing this module changes nothing: only running it does.
"""

from __future__ import annotations

import errno
import os
import sys
import types
from typing import Any

#: Stands for Windows's O_BINARY (0x8000 there): a bit that no open flag uses here.
FAKE_O_BINARY = 1 << 29


class FakeMsvcrt(types.ModuleType):
    """Windows's ``msvcrt.locking``, done with ``flock`` of the whole file.

    Like the real one, it locks ``nbytes`` from the file's position on, and
    raises OSError (EACCES) when another open file holds the lock. It locks
    only byte 0 (anything else would not be what collectord means to lock),
    and it notes every call in ``calls``.
    """

    LK_UNLCK = 0
    LK_LOCK = 1
    LK_NBLCK = 2
    LK_RLCK = 3
    LK_NBRLCK = 4

    def __init__(self, fcntl: Any) -> None:
        super().__init__("msvcrt")
        self._fcntl = fcntl
        self.calls: list[tuple[int, int, int]] = []  # (mode, position, nbytes)

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        self.calls.append((mode, position, nbytes))
        if (position, nbytes) != (0, 1):
            raise ValueError(f"locks {nbytes} byte(s) at {position}, not byte 0")
        if mode == self.LK_UNLCK:
            self._fcntl.flock(fd, self._fcntl.LOCK_UN)
        elif mode == self.LK_NBLCK:
            try:
                self._fcntl.flock(fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(errno.EACCES, os.strerror(errno.EACCES)) from None
        else:
            raise ValueError(f"mode {mode} is not one collectord uses")


def take_away_posix(msvcrt: bool) -> None:
    """Make this process look like a system without the calls collectord prefers."""
    import fcntl
    import signal
    import subprocess  # noqa: F401 - it takes an importable msvcrt for Windows: first

    del os.pwrite, os.sync, signal.SIGXFSZ
    sys.modules["fcntl"] = None  # type: ignore[assignment]  # import fcntl fails
    sys.modules["resource"] = None  # type: ignore[assignment]
    sys.modules["msvcrt"] = FakeMsvcrt(fcntl) if msvcrt else None  # type: ignore[assignment]
    real_open = os.open
    os.O_BINARY = FAKE_O_BINARY  # type: ignore[attr-defined]

    def windows_open(
        path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if dir_fd is None and os.path.isdir(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.split(".")[0] == "collectord" and not flags & FAKE_O_BINARY:
            raise AssertionError(
                f"{caller} opened {path} without os.O_BINARY: text mode on Windows"
            )
        return real_open(path, flags & ~FAKE_O_BINARY, mode, dir_fd=dir_fd)

    os.open = windows_open


def main(argv: list[str]) -> int:
    msvcrt = bool(argv) and argv[0] == "--msvcrt"
    take_away_posix(msvcrt)
    from collectord.cli import main as collectord_main

    return collectord_main(argv[1:] if msvcrt else argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
