"""Saving an experiment, in an order that survives a crash at any point.

1. stream files are finished (and converted, keeping the ``.npy``) and the
   metadata file is written, all in the experiment's staging folder (if any of
   this fails, the stream files are reopened and the experiment goes on);
2. the last config is replaced by its merge with this experiment's parameters;
3. the journal is deleted: from here on the staging folder is complete, and
   the ``.npy`` files of converted streams are removed;
4. the staging folder is renamed into the output folder's layout.

A crash before 3 leaves a journal: the experiment is resumed or recovered
(writing 1 and 2 again is harmless, the merge is idempotent). A crash between
3 and 4 leaves a complete staging folder, which ``store.finish_publishing``
renames at the next start. The live daemon and ``collectord recover`` both
save through ``save_experiment``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import jsonio, store
from .collector import Collector
from .experiment import StopRequest
from .journal import Journal

log = logging.getLogger("collectord")


def save_experiment(
    collector: Collector,
    output: Path,
    last_config_file: Path,
    journal: Journal,
    stop: StopRequest,
    unconfirmed: list[str],
    stream_format: str,
) -> dict[str, Any]:
    """Save the collector's experiment; return what a ``stop`` reply carries.

    Afterwards the collector holds the next experiment (parameters carried
    over) and ``journal`` is closed and deleted.
    """
    named_after = collector.experiment.named_after
    staging = journal.path.parent
    journal.flush()
    try:
        collector.finish_streams(stream_format)
        metadata_file = store.write_metadata(
            staging, named_after, collector.metadata(stop, unconfirmed)
        )
        config = collector.merged_config()
        store.write_last_config(last_config_file, config)
    except BaseException:
        collector.reopen_streams(staging)  # the experiment goes on, nothing lost
        raise
    # Keep in memory what the file holds (arrays as lists, ...): restore() gives
    # the same answer before and after a restart.
    config = jsonio.loads(jsonio.dumps(config))
    journal.discard()
    if collector.files is not None:
        collector.files.remove_converted()  # the journal no longer needs the .npy
    try:
        path = store.publish(output, staging, named_after) / metadata_file.name
    except OSError as exc:
        # Everything is on disk; only the rename is missing, and the next
        # start (store.finish_publishing) does it.
        log.error("could not move %s into place: %s; it will be at the next start", staging, exc)
        path = metadata_file
    result = {
        "run_id": collector.experiment.run_id,
        "path": str(path),
        "last_config": str(last_config_file),
        "unconfirmed": unconfirmed,
    }
    collector.next_experiment(config)
    return result
