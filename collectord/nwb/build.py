"""An experiment folder as an NWB file: what goes where.

========================================  ==========================================
in the experiment                         in the NWB file
========================================  ==========================================
``collectord/started``                    ``session_start_time`` (time-zone aware)
``collectord/run_id``                     ``identifier``
fields named by the map (``fields.py``)   ``session_description``, ``experimenter``,
                                          ``lab``, ``institution``, ``subject``, ...
a stream with a time column               ``acquisition/<path, / as .>``: TimeSeries
a stream without one                      ``acquisition/<path, / as .>``: DynamicTable
the stimulus log (stytra's)               ``intervals/stimulus_log``: TimeIntervals
``<stem>_changes.jsonl``                  ``acquisition/parameter_history``: DynamicTable
the metadata JSON, exactly as written     ``general/data_collection`` (text)
========================================  ==========================================

Times in the file count in seconds from ``session_start_time``, as NWB wants.
In the parameter history, a null source or session is ``""`` and a null
sequence number (a value carried in) ``-1``; each value is JSON text, tagged
as in the metadata.
Nothing of the experiment is only in its JSON: ``general/data_collection``
holds the metadata file's text byte for byte, which
``collectord.jsonio.loads(nwbfile.data_collection)`` turns back into the tree.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from hdmf.common import DynamicTable, VectorData
from hdmf.data_utils import GenericDataChunkIterator
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.epoch import TimeIntervals
from pynwb.file import Subject

from .. import formats, jsonio
from ..changes import changes_path, load_changes
from ..clocks import clock_samples, to_daemon_time
from ..errors import CollectordError
from ..protocol import STREAM_DESCRIPTOR
from . import fields

#: The fields every stream descriptor has (``protocol.STREAM_DESCRIPTOR``).
DESCRIBED = frozenset(field.name for field in STREAM_DESCRIPTOR if field.required)
#: Stream columns taken as its time column when its descriptor names none.
TIME_COLUMNS = ("t", "time")
#: The NWB unit of columns whose unit was not declared, or differs between them.
NO_UNIT = "n/a"
#: Gigabytes of a stream copied into memory at once as it is written (20 MB).
BUFFER_GB = 0.02
#: Subject fields nwbinspector calls critical when missing (DANDI requires them).
NEEDED = ("subject_id", "species", "age")
#: The table of parameter changes, and of stimuli.
HISTORY = "parameter_history"
#: The integers an int column of the stimulus log holds (HDF5's int64).
INT64 = (-(2**63), 2**63 - 1)
STIMULI = "stimulus_log"


class Exported(NamedTuple):
    """The file written, and what of the experiment it holds only in the metadata text."""

    path: Path
    notes: list[str]


def metadata_file(folder: str | os.PathLike[str]) -> Path:
    """The metadata file of an experiment folder (or the file itself)."""
    given = Path(folder)
    if given.is_file():
        return given
    found = sorted(given.glob("*_metadata.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise CollectordError(f"{given}: {what} *_metadata.json file(s) in it; give one")
    return found[0]


def _stem(metadata: Path) -> str:
    """``103000`` for ``103000_metadata.json``: the name the experiment's files share."""
    return metadata.name.removesuffix("_metadata.json")


def export(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    field_map: Mapping[str, tuple[str, ...]] | None = None,
) -> Exported:
    """Write the experiment in ``folder`` as an NWB file (default: ``<stem>.nwb`` beside
    its metadata). The file appears whole or not at all."""
    metadata = metadata_file(folder)
    try:
        raw = metadata.read_bytes().decode("utf-8")
        tree = jsonio.loads(raw)
    except (OSError, ValueError) as exc:
        raise CollectordError(f"{metadata}: cannot be read as metadata JSON: {exc}") from None
    table = field_map if field_map is not None else fields.DEFAULT_MAP
    account = tree.get("collectord") if isinstance(tree, dict) else None
    if not isinstance(account, dict) or "started" not in account or "run_id" not in account:
        raise CollectordError(f"{metadata}: not a collectord experiment (no collectord/started)")
    start = dt.datetime.fromisoformat(account["started"])
    if start.tzinfo is None:
        start = start.astimezone()
    notes: list[str] = []
    nwbfile = _file(tree, table, account, start, raw, notes)
    names = _Names()
    for path, descriptor in descriptors(tree):
        added = _stream(metadata.parent, path, descriptor, tree, start, names.take(path), notes)
        if added is not None:
            nwbfile.add_acquisition(added)
    stimuli = _stimuli(tree, table, start, notes)
    if stimuli is not None:
        nwbfile.add_time_intervals(stimuli)
    history = _history(metadata, start, names.take(HISTORY), notes)
    if history is not None:
        nwbfile.add_acquisition(history)
    target = Path(output) if output is not None else metadata.with_name(_stem(metadata) + ".nwb")
    partial = target.with_name(f"{target.stem}.partial.nwb")
    try:
        with NWBHDF5IO(str(partial), "w") as io:
            io.write(nwbfile)
        os.replace(partial, target)
    except OSError as exc:
        raise CollectordError(f"cannot write {target}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Exported(target, notes)


def _file(
    tree: dict[str, Any],
    table: Mapping[str, tuple[str, ...]],
    account: dict[str, Any],
    start: dt.datetime,
    raw: str,
    notes: list[str],
) -> NWBFile:
    def text(field: str) -> str | None:
        return fields.text(fields.lookup(tree, table, field))

    nwbfile = NWBFile(
        session_description=text("session_description") or _description(tree, account),
        identifier=str(account["run_id"]),
        session_start_time=start,
        experimenter=fields.experimenters(fields.lookup(tree, table, "experimenter")),
        experiment_description=text("experiment_description"),
        lab=text("lab"),
        institution=text("institution"),
        session_id=text("session_id"),
        data_collection=raw,
    )
    subject = {
        "subject_id": text("subject.subject_id"),
        "species": text("subject.species"),
        "genotype": text("subject.genotype"),
        "strain": text("subject.strain"),
        "age": fields.age(fields.lookup(tree, table, "subject.age")),
        "description": text("subject.description"),
    }
    if any(subject.values()) or fields.lookup(tree, table, "subject.sex") is not None:
        nwbfile.subject = Subject(
            sex=fields.sex(fields.lookup(tree, table, "subject.sex")),
            **{key: value for key, value in subject.items() if value is not None},
        )
    lacking = [key for key in NEEDED if subject[key] is None]
    if lacking:
        # Never made up: the lab names where its tree has them.
        notes.append(
            f"subject: no {' or '.join(lacking)} in the tree (nwbinspector and DANDI require "
            "them): name their paths with --map (see collectord/nwb/fields.py)"
        )
    return nwbfile


def _description(tree: dict[str, Any], account: dict[str, Any]) -> str:
    """A description when the tree has none: the run and the stimulus protocols."""
    protocols = fields.at(tree, "stimulus/protocol")
    shown = f", stimulus protocol {', '.join(protocols)}" if isinstance(protocols, dict) else ""
    return f"collectord experiment {account['run_id']}{shown}"


def descriptors(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every stream descriptor in a saved tree, with its path."""
    for key, value in sorted(tree.items()):
        if not isinstance(value, dict) or (not prefix and key == "collectord"):
            continue
        if value.keys() >= DESCRIBED:
            yield prefix + key, value
        else:
            yield from descriptors(value, f"{prefix}{key}/")


class _Names:
    """Names of the objects in ``acquisition``: a path with ``/`` as ``.`` (NWB names
    hold no ``/``), made unique where two paths meet (``a.b/c`` and ``a/b.c``)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def take(self, path: str) -> str:
        base = path.replace("/", ".")
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name


def time_column(descriptor: Mapping[str, Any]) -> str | None:
    """The column of a stream that holds its times, if any."""
    named = descriptor.get("time_column")
    if isinstance(named, str) and named in descriptor["columns"]:
        return named
    return next((c for c in TIME_COLUMNS if c in descriptor["columns"]), None)


def on_daemon_clock(
    times: np.ndarray[Any, Any], descriptor: Mapping[str, Any], tree: Mapping[str, Any]
) -> np.ndarray[Any, Any] | None:
    """A stream's time column on the daemon's clock (seconds since the epoch), or None
    when the experiment recorded nothing that maps the stream's clock onto it.

    The one place where a source's clock meets the daemon's: a stream gets onto
    the session's time axis only here, through the clock samples recorded of
    the session its descriptor names in ``clock`` (``collectord.clocks``).
    """
    clock = descriptor.get("clock")
    if not isinstance(clock, str) or descriptor.get("time_column") is None:
        return None
    try:
        samples = clock_samples(tree, clock)
    except (KeyError, ValueError):
        return None
    return to_daemon_time(times, samples)


def _stream(
    folder: Path,
    path: str,
    descriptor: dict[str, Any],
    tree: Mapping[str, Any],
    start: dt.datetime,
    name: str,
    notes: list[str],
) -> TimeSeries | DynamicTable | None:
    if not descriptor.get("file"):
        notes.append(f"stream {path}: has no file; its descriptor is in the metadata only")
        return None
    file = (folder / descriptor["file"]).resolve()
    if not file.is_relative_to(folder.resolve()) or not file.is_file():
        notes.append(f"stream {path}: file {descriptor['file']} is missing; not exported")
        return None
    try:
        data = formats.read(file, descriptor["format"], descriptor["dtype"])
    except (OSError, ValueError) as exc:
        notes.append(
            f"stream {path}: file {descriptor['file']} is unreadable ({exc}); not exported"
        )
        return None
    columns: list[str] = list(data.dtype.names or ())
    units = dict(zip(columns, descriptor.get("units") or [""] * len(columns), strict=True))
    time = time_column(descriptor)
    values = [c for c in columns if c != time]
    source = descriptor.get("source", "?")
    if time is None or not values:
        named = _table_columns(columns)
        return DynamicTable(
            name=name,
            description=f"stream {path} from {source}"
            + (" (no time column)" if time is None else f" (no column besides its time, {time})"),
            columns=[
                VectorData(
                    name=named[column],
                    description=f"column {column} of stream {path}"
                    + (f", in {units[column]}" if units[column] else ""),
                    data=np.asarray(data[column]),
                )
                for column in columns
            ],
        )
    raw_times = np.asarray(data[time], dtype="f8")
    mapped = on_daemon_clock(raw_times, descriptor, tree)
    if mapped is None:
        if descriptor.get("time_column") is not None:
            notes.append(
                f"stream {path}: no clock samples of its source were recorded; its "
                "timestamps are as the source stamped them"
            )
        timestamps = raw_times
        clock = f"{time} as {source} stamped it (no clock offsets: not on the session's axis)"
    else:
        timestamps = mapped - start.timestamp()
        clock = f"{time} on the daemon's clock, in seconds from session_start_time"
    declared = {units[c] for c in values}
    unit = declared.pop() if len(declared) == 1 and "" not in declared else NO_UNIT
    empty = (0,) if len(values) == 1 else (0, len(values))
    described = ", ".join(f"{c} ({units[c]})" if units[c] else c for c in values)
    return TimeSeries(
        name=name,
        data=_Columns(data, values) if len(data) else np.empty(empty, data.dtype[values[0]]),
        unit=unit,
        timestamps=timestamps,
        description=f"stream {path} from {source}; columns: {described}; timestamps: {clock}",
        comments=json.dumps(
            {"path": path, "columns": values, "time_column": time, "descriptor": descriptor}
        ),
    )


def _table_columns(columns: list[str]) -> dict[str, str]:
    """The name of each column in a stream's table: ``column_<name>`` where a
    ``DynamicTable`` has that name already (``id``, ``name``, ``description``, ...:
    a column of that name is refused, or written and not read back)."""
    named: dict[str, str] = {}
    for column in columns:
        name = column
        while (
            hasattr(DynamicTable, name)
            or name in named.values()
            or (name != column and name in columns)
        ):
            name = f"column_{name}"
        named[column] = name
    return named


class _Columns(GenericDataChunkIterator):  # type: ignore[misc]
    """Columns of a stream as one dataset (rows x columns; one column: rows), read a
    buffer of rows at a time from the memory-mapped file: a stream of any length
    is exported in bounded memory."""

    def __init__(self, table: np.ndarray[Any, Any], columns: list[str]) -> None:
        self._table, self._names = table, columns
        super().__init__(buffer_gb=BUFFER_GB)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray[Any, Any]:
        block = self._table[selection[0]]
        if len(self._names) == 1:
            return np.asarray(block[self._names[0]])
        return np.column_stack([block[name] for name in self._names])[:, selection[1]]

    def _get_maxshape(self) -> tuple[int, ...]:
        rows = len(self._table)
        return (rows,) if len(self._names) == 1 else (rows, len(self._names))

    def _get_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._table.dtype[self._names[0]])


def _stimuli(
    tree: dict[str, Any],
    table: Mapping[str, tuple[str, ...]],
    start: dt.datetime,
    notes: list[str],
) -> TimeIntervals | None:
    """stytra's stimulus log, one row per stimulus, its keys as columns."""
    log = fields.lookup(tree, table, "stimulus_log")
    if log is None:
        return None
    where = "/".join(table.get("stimulus_log", ()))
    if not isinstance(log, list) or not all(
        isinstance(entry, dict)
        and all(isinstance(entry.get(k), int | float) for k in ("t_start", "t_stop"))
        for entry in log
    ):
        notes.append(
            f"stimulus log ({where}): not a list of maps with t_start and t_stop; "
            "in the metadata only"
        )
        return None
    protocol_start = fields.moment(fields.lookup(tree, table, "protocol_start"))
    if protocol_start is None:
        offset = 0.0
        notes.append("stimulus log: no protocol start; its times count from the session start")
    else:
        offset = (protocol_start - start).total_seconds()
    intervals = TimeIntervals(
        name=STIMULI,
        description="the stimuli shown, one row each (stytra's protocol log); times from "
        "the protocol's start, moved to session_start_time",
    )
    keys = list(dict.fromkeys(k for entry in log for k in entry if k not in ("t_start", "t_stop")))
    columns: dict[str, str] = {}
    for key in keys:
        columns[key] = _column_name(intervals, key, columns.values())
    kinds = {key: _kind(log, key) for key in keys}
    for key in keys:
        how = "as JSON text, empty where a stimulus lacks it" if kinds[key] is None else ""
        intervals.add_column(
            name=columns[key], description=f"the stimulus's {key!r}{' ' + how if how else ''}"
        )
    for entry in log:
        intervals.add_row(
            start_time=float(entry["t_start"]) + offset,
            stop_time=float(entry["t_stop"]) + offset,
            **{columns[key]: _cell(entry, key, kinds[key]) for key in keys},
        )
    return intervals


def _column_name(table: DynamicTable, key: str, taken: Iterable[str] = ()) -> str:
    """``key``, or ``stimulus_<key>`` where the table already has that name (``name``,
    ``description``, ``tags``, ...: a column of that name would not read back), where
    HDF5 cannot name a dataset so (``""``, ``.``, ``..``) or where another key took
    it; an HDF5 name holds no ``/``, which becomes ``_``."""
    name = key.replace("/", "_")
    taken = set(taken)
    while (
        name in ("", ".", "..")
        or hasattr(table, name)
        or name in table.colnames
        or (name in taken)
    ):
        name = f"stimulus_{name}"
    return name


def _kind(log: list[dict[str, Any]], key: str) -> type | None:
    """The type of a column that every stimulus has as one scalar type, else None (JSON)."""
    values = [entry.get(key) for entry in log]
    for kind in (bool, int, float, str):
        if kind is float and all(
            type(v) is float or (type(v) is int and float(v) == v) for v in values
        ):
            return float
        if kind is int and not all(type(v) is int and INT64[0] <= v <= INT64[1] for v in values):
            continue  # beyond a 64-bit signed column: JSON, which keeps every digit
        if all(type(v) is kind for v in values):
            return kind
    return None


def _cell(entry: dict[str, Any], key: str, kind: type | None) -> Any:
    if kind is None:
        return json.dumps(jsonio.to_json(entry[key]), sort_keys=True) if key in entry else ""
    return kind(entry[key])


def _history(
    metadata: Path, start: dt.datetime, name: str, notes: list[str]
) -> DynamicTable | None:
    if not changes_path(metadata).is_file():
        notes.append(f"no parameter history ({changes_path(metadata).name}) to export")
        return None
    changes = load_changes(metadata)
    if not changes:
        notes.append("the parameter history is empty: no parameter was set")
        return None
    origin = start.timestamp()

    def column(key: str, description: str, data: list[Any]) -> VectorData:
        return VectorData(name=key, description=description, data=data)

    return DynamicTable(
        name=name,
        description="every parameter change in the experiment, in the order the daemon "
        "applied them, the values it began with first (collectord's <stem>_changes.jsonl)",
        columns=[
            column(
                "time",
                "when the daemon received the change, in seconds from session_start_time "
                "(a value carried in: 0, the experiment's start)",
                [c.time - origin for c in changes],
            ),
            column(
                "source",
                "the client that sent it ('' if not known)",
                [c.source or "" for c in changes],
            ),
            column(
                "session",
                "the client's session id ('' if not known)",
                [c.session or "" for c in changes],
            ),
            column(
                "seq",
                "the message's sequence number (-1 for a value carried in or restored)",
                [-1 if c.seq is None else c.seq for c in changes],
            ),
            column("path", "the parameter's slash-separated path", [c.path for c in changes]),
            column(
                "value",
                "the new value as JSON, tagged as in the metadata JSON",
                [json.dumps(jsonio.to_json(c.value), sort_keys=True) for c in changes],
            ),
            column(
                "carried",
                "true for a value not received in a message: carried in from the previous "
                "experiment, or restored from the last config",
                [bool(c.carried) for c in changes],
            ),
        ],
    )
