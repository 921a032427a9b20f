"""Stops already saved, by the id their client gave them: a stop sent again
gets the save it made, and ends no other experiment.

A client names each ``stop`` call (``stop_id``) and sends it again with the
same id when the daemon went away before answering (``link.py``): the
daemon may have died before the stop reached its journal (the experiment
goes on, and the stop sent again ends it), or after (a restart finishes that
save, and the stop sent again must not end the next experiment too). The
ids travel with the stop, in its STOP record, and every BEGIN record carries
the stops the daemon knows (``answered``, the last ``LIMIT``), the one being
saved included: a BEGIN outlives the journals of the experiments before it,
through any number of restarts and recoveries.

What a restarted daemon knows from a BEGIN record is the saved run and where
its folder was to go (day and name), not the folder itself, which gets a
``_1`` if its name was taken, or waits in staging if it could not be moved:
it is looked for when a stop asks again (``store.find_published``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import store
from ..experiment import Experiment

#: Stops remembered; a client sends its stop again within seconds of a restart.
LIMIT = 64


@dataclasses.dataclass(frozen=True)
class Answer:
    """One saved stop: its run, where its folder was to go, and what its
    reply said; ``result``, the reply itself, once known in this daemon."""

    run_id: str
    day: str  # YYMMDD
    stamp: str  # the folder's name before any ``_1``
    unconfirmed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    result: Mapping[str, Any] | None = None

    def entry(self, ids: list[str]) -> dict[str, Any]:
        """Its entry in a BEGIN record's ``answered``."""
        return {
            "ids": ids,
            "run_id": self.run_id,
            "day": self.day,
            "stamp": self.stamp,
            "unconfirmed": list(self.unconfirmed),
            "missing": list(self.missing),
        }

    @classmethod
    def of_save(
        cls,
        experiment: Experiment,
        account: Mapping[str, Any],
        result: Mapping[str, Any] | None = None,
    ) -> Answer:
        """The answer of a save of ``experiment`` (``account``: its
        ``collectord`` section), where ``store.publish`` puts its folder."""
        return cls(
            experiment.run_id,
            f"{experiment.named_after:%y%m%d}",
            experiment.folder_name,
            tuple(account["unconfirmed"]),
            tuple(account.get("missing_at_stop", ())),
            result,
        )

    @classmethod
    def of_entry(cls, entry: Mapping[str, Any]) -> Answer:
        return cls(
            str(entry["run_id"]),
            str(entry["day"]),
            str(entry["stamp"]),
            tuple(str(name) for name in entry.get("unconfirmed", ())),
            tuple(str(name) for name in entry.get("missing", ())),
        )


class Answers:
    """The last ``LIMIT`` stops saved, by stop id."""

    def __init__(self) -> None:
        self._by_id: collections.OrderedDict[str, Answer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def saved(self, ids: Iterable[str], answer: Answer) -> None:
        """A save made (``answer.result``) or under way."""
        for stop_id in ids:
            self._keep(stop_id, answer)

    def begin_field(self, ids: Iterable[str] = (), saving: Answer | None = None) -> dict[str, Any]:
        """A BEGIN record's ``answered``: every stop known, and the one being
        saved (``ids``, ``saving``); ``{}``, no field, if there is none."""
        by_run: dict[tuple[str, str, str], tuple[Answer, list[str]]] = {}
        known = [*self._by_id.items(), *((stop_id, saving) for stop_id in ids if saving)]
        for stop_id, answer in known[-LIMIT:]:
            key = (answer.run_id, answer.day, answer.stamp)
            by_run.setdefault(key, (answer, []))[1].append(stop_id)
        if not by_run:
            return {}
        return {"answered": [answer.entry(ids) for answer, ids in by_run.values()]}

    def begun_after(self, record: Mapping[str, Any]) -> None:
        """What a replayed BEGIN record says of the stops before it.

        An entry that is not what ``begin_field`` writes is skipped: the
        record is checked as a whole (``journal.SCHEMA``), not its entries,
        and losing one answer must not lose the experiment.
        """
        entries = record.get("answered")
        if not isinstance(entries, list):
            return
        for entry in entries:
            try:
                answer = Answer.of_entry(entry)
                ids = [stop_id for stop_id in entry["ids"] if isinstance(stop_id, str)]
            except (KeyError, TypeError):
                continue
            for stop_id in ids:
                if stop_id not in self._by_id:
                    self._keep(stop_id, answer)

    def take(self, other: Answers) -> None:
        """Another lifecycle's answers (an older experiment saved at a start)."""
        for stop_id, answer in other._by_id.items():
            self._keep(stop_id, answer)

    def result(self, stop_id: str, output: Path, last_config: Path) -> Mapping[str, Any] | None:
        """The reply to a stop sent again, or None if it was never saved.

        Raises ``LookupError`` for one saved before a restart whose folder
        cannot be found (moved or renamed by hand since).
        """
        answer = self._by_id.get(stop_id)
        if answer is None:
            return None
        if answer.result is not None:
            return answer.result
        path = store.find_published(output, answer.day, answer.stamp, answer.run_id)
        if path is None:
            raise LookupError(
                f"stop {stop_id!r} saved experiment {answer.run_id}, but its folder is not "
                f"in {output / answer.day} (moved or renamed since?)"
            )
        result = {
            "run_id": answer.run_id,
            "path": str(path),
            "last_config": str(last_config),
            "unconfirmed": list(answer.unconfirmed),
            "missing": list(answer.missing),
        }
        self._keep(stop_id, dataclasses.replace(answer, result=result))
        return result

    def _keep(self, stop_id: str, answer: Answer) -> None:
        self._by_id[stop_id] = answer
        self._by_id.move_to_end(stop_id)
        while len(self._by_id) > LIMIT:
            self._by_id.popitem(last=False)
