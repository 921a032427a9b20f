"""The history of an experiment's parameters: every change, when and from whom.

The metadata keeps each parameter's final value only. Beside it, a save
writes ``<stem>_changes.jsonl`` (``103000_metadata.json`` has
``103000_changes.jsonl``): one JSON object per line, in the order the daemon
applied the changes, the values the experiment started with first. Each line::

    {"time": 1733097000.25, "source": "tracking", "session": "3f1c...",
     "seq": 12, "path": "tracking/threshold", "value": 40, "carried": false}

``time``
    seconds since the Unix epoch on the daemon's clock: when the message
    arrived (for a value carried in, the experiment's start; for a value a
    process restored from the last config, when it asked).
``source``, ``session``
    the client's name and session, null where not known (a value carried in
    from a process the daemon no longer knows).
``seq``
    the message's sequence number in its session; null for carried values.
``path``
    the parameter's full slash-separated path.
``value``
    the new value, tagged as in the metadata (``jsonio``: ``$bytes``,
    ``$float`` for NaN and infinities).
``carried``
    true for a value the experiment did not receive in a message: carried in
    from the previous experiment (every parameter the daemon held as it
    began) or restored (``restore``: those the tree lacked or held otherwise).

Nothing of collectord is needed to read it: ``pandas.read_json(path,
lines=True)``, or ``json.loads`` per line. ``load_changes`` returns ``Change``
tuples with the tags decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from json.encoder import encode_basestring_ascii as _string
from pathlib import Path
from typing import Any, NamedTuple

from .jsonio import from_json, to_json
from .store import METADATA_SUFFIX, atomic_write

CHANGES_SUFFIX = "_changes.jsonl"

#: About this many characters of lines are joined into one write.
CHUNK = 1 << 20

_FLOAT = float.__repr__  # what json writes for a finite float
_INT = int.__repr__


class Change(NamedTuple):
    """One line of a changes file: a parameter set to ``value`` at ``time``."""

    time: float
    source: str | None
    session: str | None
    seq: int | None
    path: str
    value: Any
    carried: bool


def changes_path(metadata_file: Path) -> Path:
    """The changes file beside a metadata file (same stem)."""
    name = metadata_file.name
    stem = name[: -len(METADATA_SUFFIX)] if name.endswith(METADATA_SUFFIX) else metadata_file.stem
    return metadata_file.with_name(stem + CHANGES_SUFFIX)


class Run(NamedTuple):
    """Lines that differ only in path and value: the parameters of one
    message, or a group's parameters carried in from one owner."""

    time: float
    source: str | None
    session: str | None
    seq: int | None
    carried: bool
    prefix: str  # joined to each name to make its path
    values: Mapping[str, Any]  # name: value, in the order applied


def encode(changes: Iterable[tuple[Any, ...]]) -> Iterator[bytes]:
    """The file's bytes for ``changes`` (``Change`` or plain tuples in its
    order), about ``CHUNK`` bytes at a time."""
    return encode_runs(
        Run(time, source, session, seq, carried, "", {path: value})
        for time, source, session, seq, path, value, carried in changes
    )


def encode_runs(runs: Iterable[Run]) -> Iterator[bytes]:
    """The file's bytes for ``runs``, about ``CHUNK`` bytes at a time.

    The text is what ``json.dumps`` writes for each line as a map (the tests
    hold it to that), built faster: a history has a line per parameter, a
    million for a big tree, and at a stop its writing competes with the
    save. So what the lines of a run share is encoded once, and the lines of
    a run whose names need no escaping and whose values are all finite
    floats, all ints or all strings are built by C loops (``_run_text``);
    others a line at a time, scalars through ``repr`` or the C string
    encoder (as ``json`` does), anything else through ``json`` itself.
    """
    texts: list[str] = []
    size = 0
    last: tuple[Any, ...] | None = None
    head = tail = ""
    for time, source, session, seq, carried, prefix, values in runs:
        key = (time, source, session, seq, carried)
        if key != last:
            last = key
            head = (
                f'{{"time": {_value(time)}, "source": {_value(source)}, '
                f'"session": {_value(session)}, "seq": {_value(seq)}, "path": '
            )
            tail = ', "carried": true}\n' if carried else ', "carried": false}\n'
        text = _run_text(head, tail, prefix, values)
        if text is None:
            text = "".join(
                f'{head}{_string(prefix + name)}, "value": {_value(value)}{tail}'
                for name, value in values.items()
            )
        texts.append(text)
        size += len(text)
        if size >= CHUNK:
            yield "".join(texts).encode("utf-8")
            texts.clear()
            size = 0
    if texts:
        yield "".join(texts).encode("utf-8")


#: Value types whose lines ``_run_text`` builds without a loop in Python,
#: and their encoders (``json``'s own for these types).
_RUN_ENCODERS: dict[type, Callable[[Any], str]] = {
    float: _FLOAT,
    int: _INT,
    str: _string,
}


def _run_text(head: str, tail: str, prefix: str, values: Mapping[str, Any]) -> str | None:
    """The lines of a run, or None if its names or values need the slow path."""
    if not values:
        return ""
    kinds = set(map(type, values.values()))
    if len(kinds) != 1:
        return None
    encoder = _RUN_ENCODERS.get(kinds.pop())
    if encoder is None:
        return None
    if encoder is _FLOAT:
        total = sum(values.values())  # NaN or an infinity makes it NaN or infinite
        if total - total != 0.0:
            return None  # tagged (``$float``): the slow path
    names = "".join(values)
    if len(_string(prefix + names)) != len(prefix) + len(names) + 2:
        return None  # something in a name is escaped
    # Each line is name, middle, value, end (which begins the next line);
    # the four are laid side by side by slice assignments and joined once,
    # not concatenated a line at a time: half the time for a big run.
    count = len(values)
    parts: list[str] = [f'{tail}{head}"{prefix}'] * (4 * count)
    parts[0::4] = values
    parts[1::4] = ['", "value": '] * count
    parts[2::4] = map(encoder, values.values())
    parts[-1] = tail
    return f'{head}"{prefix}' + "".join(parts)


def _value(value: Any) -> str:
    """``json.dumps(value)``, tagged as ``jsonio`` does; scalars without its
    call overhead."""
    kind = type(value)
    if kind is float:
        if value - value == 0.0:  # finite: NaN and infinities are tagged below
            return _FLOAT(value)
    elif kind is str:
        return _string(value)
    elif kind is int:
        return _INT(value)
    elif kind is bool:
        return "true" if value else "false"
    elif value is None:
        return "null"
    try:
        return json.dumps(value, allow_nan=False, default=_tagged)
    except ValueError:  # a NaN or infinity somewhere: tag the whole value first
        return json.dumps(to_json(value), allow_nan=False)


def _tagged(value: Any) -> Any:
    converted = to_json(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not a tree value")
    return converted


def write_changes(path: Path, changes: Iterable[tuple[Any, ...]]) -> None:
    """Write a changes file atomically and durably (like the metadata beside it)."""
    atomic_write(path, encode(changes))


def find_changes(folder: str | Path) -> Path:
    """The changes file of an experiment folder, of its metadata file, or itself."""
    where = Path(folder)
    if where.is_dir():
        metadata = sorted(where.glob(f"*{METADATA_SUFFIX}"))
        if not metadata:
            raise FileNotFoundError(
                f"{where} holds no *{METADATA_SUFFIX}: not an experiment folder"
            )
        where = metadata[0]
    if where.name.endswith(CHANGES_SUFFIX):
        return where
    found = changes_path(where)
    if not found.is_file():
        raise FileNotFoundError(
            f"{found} does not exist (experiments saved before collectord kept "
            "the history of parameters have none)"
        )
    return found


def load_changes(folder: str | Path) -> list[Change]:
    """Every parameter change of a saved experiment, in the order applied.

    ``folder``: the experiment folder, its metadata file or its changes file.
    Tagged values come back as ``bytes`` and ``float`` (as ``load_json``).
    Raises ``FileNotFoundError`` if the experiment has no changes file, and
    ``ValueError`` naming the line for one that is not a change.
    """
    path = find_changes(folder)
    changes = []
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if not raw.strip():
                continue
            try:
                # Decoded here, a line at a time: bytes that are not UTF-8
                # (a damaged file) are named with their line, like bad JSON.
                item = json.loads(raw.decode("utf-8"), object_hook=from_json)
                changes.append(
                    Change(
                        item["time"],
                        item["source"],
                        item["session"],
                        item["seq"],
                        item["path"],
                        item["value"],
                        item["carried"],
                    )
                )
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise ValueError(f"{path}: line {number} is not a change: {exc!r}") from None
    return changes
