"""Files on disk: atomic writes, experiment folders and the last config.

Layout of the output folder::

    OUTPUT/
      last_config.json                  (unless --last-config puts it elsewhere)
      YYMMDD/                           the day the experiment's first message came
        HHMMSS/                         one folder per experiment, never reused
          HHMMSS_metadata.json          (HHMMSS_1/, HHMMSS_2/ ... if a second starts)
      .collectord/staging/<run id>/     experiments being written

Every name is chosen here, never taken from a message, so nothing a client
sends can place a file outside the output folder.

An experiment folder is written under ``.collectord/staging`` and renamed into
place whole: a reader sees no folder or a complete one. Single files are
replaced atomically (temporary file in the same folder, flush, fsync,
``os.replace``, fsync of the folder): a reader sees the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from . import jsonio

log = logging.getLogger(__name__)

STATE_DIR = ".collectord"
METADATA_SUFFIX = "_metadata.json"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that no reader ever sees a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def staging_dir(output: Path, run_id: str) -> Path:
    return output / STATE_DIR / "staging" / run_id


def publish_experiment(
    output: Path, run_id: str, started: dt.datetime, metadata: dict[str, Any]
) -> Path:
    """Write the metadata into a fresh experiment folder; return the file's path."""
    stamp = started.strftime("%H%M%S")
    staging = staging_dir(output, run_id)
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write(staging / f"{stamp}{METADATA_SUFFIX}", jsonio.dumps(metadata))

    day = output / started.strftime("%y%m%d")
    day.mkdir(parents=True, exist_ok=True)
    target = day / stamp
    suffix = 0
    while target.exists():
        suffix += 1
        target = day / f"{stamp}_{suffix}"
    # One daemon owns an output folder (two would also share the staging area),
    # so nobody else creates ``target`` between the check and the rename.
    os.rename(staging, target)
    fsync_dir(day)
    fsync_dir(output)
    return target / f"{stamp}{METADATA_SUFFIX}"


def read_last_config(path: Path) -> dict[str, Any]:
    """The last config's contents, or {} if there is none yet.

    A file that cannot be parsed is moved aside (``<name>.unreadable-<time>``)
    rather than overwritten, so a person can still look at it.
    """
    try:
        content = jsonio.load_json(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.unreadable-{dt.datetime.now():%Y%m%dT%H%M%S}")
        log.error("last config %s is unreadable (%s); moved to %s", path, exc, aside)
        os.replace(path, aside)
        return {}
    if not isinstance(content, dict):
        log.error("last config %s does not hold a JSON object; ignored", path)
        return {}
    return content


def write_last_config(path: Path, config: dict[str, Any]) -> None:
    atomic_write(path, jsonio.dumps(config))
