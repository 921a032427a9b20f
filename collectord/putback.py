"""Putting a file the daemon holds open back at its path, after it was deleted or moved.

The running experiment's journal and stream files stay open for as long as
it runs. A person or a program can delete or move them meanwhile: an
``rm -rf`` of the output folder, a clean-up of hidden folders, an ``rsync
--remove-source-files`` that moves the day's data to a server. The system
lets the daemon go on writing and fsyncing the open files, so nothing fails:
the daemon would confirm messages whose only copy is a file that no longer
has a name, and a crash (or the end of the process) would lose them all.

So after each flush the daemon asks whether its files are still at their
paths (``moved``), and confirms nothing until they are. What the open file
holds is then copied to a new file at its path, made durable, and used from
then on (``put_back``): the experiment goes on as if nothing had happened, a
copy of it staying wherever it was moved. Files are opened readable for this.
On Windows a file held open cannot be deleted or moved, so nothing here ever
finds one gone there.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import system

#: Bytes copied at a time.
CHUNK = 1 << 20


def moved(fd: int, path: Path) -> bool:
    """Whether the file open as ``fd`` is no longer the one at ``path``: deleted,
    moved, or replaced by another."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return True
    mine = os.fstat(fd)
    if not (there.st_ino and mine.st_ino):  # a file system without inode numbers
        return False
    return (there.st_ino, there.st_dev) != (mine.st_ino, mine.st_dev)


def put_back(fd: int, path: Path, flags: int) -> int:
    """Write what the file open as ``fd`` holds to ``path`` again, durably (its
    folders made again if they went too); close ``fd`` and return the new
    file's descriptor, opened with ``flags`` (readable, so that it can be put
    back again)."""
    made = [folder for folder in path.parents if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.putback")
    copy = system.open_binary(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        offset = 0
        while chunk := system.pread(fd, CHUNK, offset):
            system.write_all(copy, chunk)
            offset += len(chunk)
        os.fsync(copy)
    except BaseException:
        os.close(copy)
        temporary.unlink(missing_ok=True)
        raise
    os.close(copy)
    os.replace(temporary, path)
    # The file's entry, and that of each folder made again in its parent.
    for folder in {path.parent, *(made_folder.parent for made_folder in made)}:
        system.fsync_dir(folder)
    reopened = system.open_binary(path, flags)
    os.close(fd)
    return reopened
