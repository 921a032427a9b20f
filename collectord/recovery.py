"""Bringing back experiments a daemon did not get to save.

``collectord recover`` (and a daemon started with ``--no-resume``) saves every
unfinished experiment found in the output folder's staging area: it replays
the journal into a fresh ``Collector``, marks the metadata as recovered, and
saves it like a stop would. A staging folder whose save was interrupted after
its journal was deleted only needs its final rename.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import experiment, journal, store
from .collector import Collector
from .experiment import StopRequest
from .saving import save_experiment
from .streamfiles import StreamFiles

log = logging.getLogger("collectord")

RECOVERED = StopRequest(
    by="collectord recover", reason="the daemon ended without saving this experiment"
)


def recover_staged(
    output: Path, last_config_file: Path, stream_format: str, skip: Path | None = None
) -> list[Path]:
    """Save every unfinished experiment in ``output`` except ``skip``; return the files."""
    saved = []
    for staging in store.staged_runs(output):
        if staging == skip:
            continue
        journal_file = staging / journal.JOURNAL_NAME
        if not journal_file.is_file():
            published = store.finish_publishing(output, staging)
            if published is not None:
                saved.append(published)
            continue
        records, intact, torn = journal.read(journal_file)
        collector = Collector(store.read_last_config(last_config_file))
        collector.files = StreamFiles(staging, replaying=True)
        count = collector.replay(records)
        collector.files.end_replay()
        if collector.experiment.first_message is None:
            # Nothing arrived in that experiment: nothing to save.
            collector.files.close()
            shutil.rmtree(staging)
            continue
        collector.restarts.append(
            {
                "recovered": experiment.now().isoformat(),
                "journal_records": count,
                "torn_tail": torn,
            }
        )
        log.info(
            "recovering %s: %d journal records%s",
            staging.name,
            count,
            ", torn tail ignored" if torn else "",
        )
        opened = journal.Journal.reopen(journal_file, intact)
        result = save_experiment(
            collector, output, last_config_file, opened, RECOVERED, [], stream_format
        )
        saved.append(Path(result["path"]))
    return saved
