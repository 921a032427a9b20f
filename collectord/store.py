"""Files on disk: atomic writes, experiment folders and the last config.

Layout of the output folder::

    OUTPUT/
      last_config.json                  (unless --last-config puts it elsewhere)
      YYMMDD/                           the day the experiment's first message came
        HHMMSS/                         one folder per experiment, never reused
          HHMMSS_metadata.json          (HHMMSS_1/, HHMMSS_2/ ... if a second starts)
      .collectord/staging/<run id>/     the running experiment: its journal, then
                                        its files as they are saved
      .collectord/lock                  held by the daemon using this folder
                                        (lock.owner where the system has no
                                        file locks: see system.py); beside
                                        it lock.holder names its process

Every name is chosen here, never taken from a message, so nothing a client
sends can place a file outside the output folder.

An experiment folder is written under ``.collectord/staging`` and renamed into
place whole: a reader sees no folder or a complete one. Single files are
replaced atomically (temporary file in the same folder, flush, fsync,
``os.replace``, fsync of the folder where the system can): a reader sees the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import jsonio, system
from .errors import ConfigError, OutputBusyError
from .paths import RESERVED_KEY

log = logging.getLogger(__name__)

STATE_DIR = ".collectord"
METADATA_SUFFIX = "_metadata.json"


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace ``path`` with ``data`` (bytes, or chunks of them) so that no
    reader ever sees a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            for chunk in (data,) if isinstance(data, bytes) else data:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    system.fsync_dir(path.parent)


def staging_dir(output: Path, run_id: str) -> Path:
    return output / STATE_DIR / "staging" / run_id


def staged_runs(output: Path) -> list[Path]:
    """Staging folders of experiments not yet published, oldest first.

    Run ids begin with their start time, so their names sort in time order.
    """
    root = output / STATE_DIR / "staging"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def write_metadata(
    staging: Path, name: str, metadata: dict[str, Any], memo: jsonio.Memo | None = None
) -> Path:
    """Write the metadata file (``NAME_metadata.json``) into an experiment's staging
    folder. ``memo``: see ``jsonio.dumps``."""
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / f"{name}{METADATA_SUFFIX}"
    atomic_write(path, jsonio.dumps(metadata, memo))
    return path


def publish(output: Path, staging: Path, named_after: dt.datetime, stamp: str) -> Path:
    """Rename a complete staging folder into place as ``DAY/stamp``; return its new path."""
    day = output / f"{named_after:%y%m%d}"
    day.mkdir(parents=True, exist_ok=True)
    target = day / stamp
    suffix = 0
    while target.exists():
        suffix += 1
        target = day / f"{stamp}_{suffix}"
    # One daemon owns an output folder (the lock below), so nobody else
    # creates ``target`` between the check and the rename.
    os.rename(staging, target)
    system.fsync_dir(day)
    system.fsync_dir(output)
    system.fsync_dir(staging.parent)
    return target


def finish_publishing(output: Path, staging: Path) -> Path | None:
    """Publish a staging folder whose save was cut short after the journal went.

    Such a folder holds its metadata file and no journal: everything was
    written but the final rename. Returns the published metadata path, or
    None if ``staging`` is not in that state.
    """
    metadata = sorted(staging.glob(f"*{METADATA_SUFFIX}"))
    if not metadata or (staging / "journal").exists():
        return None
    account = jsonio.load_json(metadata[0]).get("collectord", {})
    named_after = dt.datetime.fromisoformat(account.get("first_message") or account["started"])
    stamp = account.get("name") or f"{named_after:%H%M%S}"
    return publish(output, staging, named_after, stamp) / metadata[0].name


def find_published(output: Path, day: str, stamp: str, run_id: str) -> Path | None:
    """The metadata file of experiment ``run_id``, published as ``DAY/stamp``
    (or ``stamp_N``: ``publish`` adds a number to a name taken), or still in
    its staging folder; None if it is in neither.

    For a stop asked again after a restart (``daemon/answers.py``): slow
    where a day holds many folders of that name, and rare.
    """
    name = f"{stamp}{METADATA_SUFFIX}"
    waiting = staging_dir(output, run_id) / name
    folder = output / day
    candidates = [waiting, folder / stamp / name]
    if folder.is_dir():
        numbered = (p for p in folder.iterdir() if p.name.startswith(f"{stamp}_"))
        candidates.extend(sorted(p / name for p in numbered))
    for metadata in candidates:
        try:
            account = jsonio.load_json(metadata).get(RESERVED_KEY)
        except (OSError, ValueError, AttributeError, RecursionError):
            continue  # not there, or not one of ours
        if isinstance(account, dict) and account.get("run_id") == run_id:
            return metadata
    return None


class OutputLock:
    """An exclusive lock on an output folder: one daemon (or recover) at a time.

    Two daemons writing one folder would share its staging area and journals.
    The lock is on ``OUTPUT/.collectord/lock``: an ``flock`` on Linux and macOS
    and an ``msvcrt.locking`` on Windows, both released by the system when the
    process dies, even by ``kill -9``; elsewhere an owner file taken over only
    from a holder proven gone (``system.lock`` says what each guarantees).
    """

    def __init__(self, output: Path) -> None:
        self.path = output / STATE_DIR / "lock"
        #: Who holds the lock, for the error a second process gets: written
        #: by the holder once it has the lock (the lock file itself holds no
        #: text: Windows locks its first byte).
        self.holder = self.path.with_name("lock.holder")
        self._held: system.HeldLock | None = None
        self._file: tuple[int, int] | None = None  # the lock file held: (device, inode)

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            held = system.lock(self.path)
        except OSError as exc:  # a file where the folder should be, no permission...
            raise ConfigError(
                f"cannot use the output folder {self.path.parent.parent}: {exc}"
            ) from exc
        if held is None:
            raise OutputBusyError(
                f"{self.path.parent.parent} is in use by another collectord process"
                f"{self._who_holds()}"
            )
        self._held = held
        self._file = _identity(self.path)
        self._write_holder()

    def _write_holder(self) -> None:
        since = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        said = f"pid {os.getpid()} on {socket.gethostname()}, since {since}"
        try:
            atomic_write(self.holder, said.encode())
        except OSError as exc:  # only an error message is the poorer for it
            log.warning("cannot write %s: %s", self.holder, exc)

    def _who_holds(self) -> str:
        """`` (pid 1234 on rig-pc, since ...)``, as the holder wrote it; ``""``
        if it wrote nothing readable (it may be starting)."""
        try:
            with open(self.holder, "rb") as file:
                said = file.read(500).decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f" ({said})" if said.isprintable() and said else ""

    def put_back(self) -> None:
        """Lock the folder again if the lock file was deleted or moved (with the
        output folder, say: ``putback.py``); a second daemon could take it otherwise."""
        if self._held is None or _identity(self.path) == self._file:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            held = system.lock(self.path)
        except OSError as exc:
            log.error("cannot lock %s again: %s", self.path.parent.parent, exc)
            return
        if held is None:
            log.error(
                "%s was taken by another collectord process while its lock file was "
                "gone: two processes now write it",
                self.path.parent.parent,
            )
            return
        self._held.release()
        self._held, self._file = held, _identity(self.path)
        self._write_holder()
        log.error("the lock file %s was deleted or moved; locked again", self.path)

    def release(self) -> None:
        if self._held is not None:
            # First: a process that finds the lock taken must not quote a
            # holder that is gone (it may find it free, and no holder, instead).
            self.holder.unlink(missing_ok=True)
            self._held.release()
            self._held = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def read_last_config(path: Path) -> dict[str, Any]:
    """The last config's contents, or {} if there is none yet.

    A file that cannot be used is moved aside (``<name>.unreadable-<time>``)
    rather than overwritten at the next save, so a person can still look at
    it: one that cannot be parsed, and one that parses to something other
    than an object (a list, a number: not what collectord writes, so most
    likely a file a person or another program put there, worth keeping).
    """
    try:
        content = jsonio.load_json(path)
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise ConfigError(f"the last-config path {path} is a folder") from None
    except (OSError, ValueError, RecursionError) as exc:
        _move_aside(path, f"is unreadable ({exc})")
        return {}
    if not isinstance(content, dict):
        held = "null" if content is None else type(content).__name__
        _move_aside(path, f"holds a JSON {held}, not an object")
        return {}
    return content


class LastConfig:
    """The last config's contents, read from its file when first needed.

    A last config of a million parameters is 20 MB of JSON, about half a
    second to parse: a restart does not wait for it. Only ``restore``, a
    save and ``save_config`` need it, and the first of them reads it (a save
    in its own thread). Thread-safe.
    """

    def __init__(self, content: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self._content = content
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def reading(cls, path: Path) -> LastConfig:
        """The config in the file at ``path``; a folder there is refused now."""
        if path.is_dir():
            raise ConfigError(f"the last-config path {path} is a folder")
        return cls(path=path)

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._content is None:
                assert self._path is not None
                self._content = read_last_config(self._path)
            return self._content


def _move_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.unreadable-{dt.datetime.now():%Y%m%dT%H%M%S.%f}")
    log.error("last config %s %s; moved to %s", path, why, aside)
    os.replace(path, aside)


def write_last_config(
    path: Path, config: dict[str, Any], memo: jsonio.Memo | None = None
) -> bytes:
    """Replace the last config; return what was written. ``memo``: see ``jsonio.dumps``."""
    written = jsonio.dumps(config, memo)
    atomic_write(path, written)
    return written
