"""Stops already saved, by the id their client gave them: a stop sent again
gets the save it made, and ends no other experiment.

A client names each ``stop`` call (``stop_id``) and sends it again with the
same id when the daemon went away before answering (``link.py``): the
daemon may have died before the stop reached its journal (the experiment
goes on, and the stop sent again ends it), or after (a restart finishes that
save, and the stop sent again must not end the next experiment too). The
ids travel with the stop: in its STOP record, and in the next experiment's
BEGIN record (``answered``), which outlives the stopped experiment's journal.

What a restarted daemon knows from a BEGIN record is the saved run and where
its folder was to go (day and name), not the folder itself, which gets a
``_1`` if its name was taken: it is found when a stop asks again
(``store.find_published``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import store

#: Stops remembered; a client sends its stop again within seconds of a restart.
LIMIT = 64


@dataclasses.dataclass(frozen=True)
class Answer:
    """One saved stop: the reply's result, or what finds it after a restart."""

    run_id: str
    result: Mapping[str, Any] | None  # the stop reply's ``result``, if this daemon saved it
    day: str = ""  # else: the folder's day (``YYMMDD``) and name, to look for it
    stamp: str = ""
    unconfirmed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def begin_field(
    ids: Iterable[str], day: str, stamp: str, unconfirmed: Iterable[str], missing: Iterable[str]
) -> dict[str, Any]:
    """The BEGIN record's ``answered`` field for the stop that ended the
    experiment before it (``{}``, no field, for a stop without ids)."""
    ids = list(ids)
    if not ids:
        return {}
    return {
        "answered": {
            "ids": ids,
            "day": day,
            "stamp": stamp,
            "unconfirmed": list(unconfirmed),
            "missing": list(missing),
        }
    }


class Answers:
    """The last ``LIMIT`` stops saved, by stop id."""

    def __init__(self) -> None:
        self._by_id: collections.OrderedDict[str, Answer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def saved(self, ids: Iterable[str], result: Mapping[str, Any]) -> None:
        """A save this daemon made, and its reply."""
        for stop_id in ids:
            self._keep(stop_id, Answer(str(result["run_id"]), dict(result)))

    def begun_after(self, record: Mapping[str, Any]) -> None:
        """What a replayed BEGIN record says of the stop before it."""
        answered = record.get("answered")
        follows = record.get("follows")
        if not isinstance(answered, Mapping) or not isinstance(follows, str):
            return  # written before stops had ids, or by a stop without any
        answer = Answer(
            follows,
            None,
            str(answered.get("day", "")),
            str(answered.get("stamp", "")),
            tuple(str(name) for name in answered.get("unconfirmed", ())),
            tuple(str(name) for name in answered.get("missing", ())),
        )
        for stop_id in answered.get("ids", ()):
            if isinstance(stop_id, str) and stop_id not in self._by_id:
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
