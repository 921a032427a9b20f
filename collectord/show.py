"""``collectord show``: a saved experiment, in the terminal and as a picture.

A scientist checks a recording by looking at it. ``show`` prints what a saved
experiment folder holds without anything but collectord: the metadata tree
(arrays and long texts cut short), the sources with their message counts and
gaps (the metadata's ``collectord`` account), the streams, and the parameter
history (``changes.py``) as times since the experiment's start. ``--plot``
draws each stream's columns, and the parameter changes as labelled vertical
lines, with matplotlib (``pip install 'collectord[plot]'``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .changes import Change, find_changes, load_changes
from .errors import ConfigError
from .formats import READERS, check_available, read
from .jsonio import load_json
from .paths import RESERVED_KEY
from .protocol import STREAM_DESCRIPTOR
from .store import METADATA_SUFFIX

#: What to run when matplotlib is missing.
INSTALL = "pip install 'collectord[plot]'"
#: A list or text longer than this is shown cut short, with its length.
SHOWN_ITEMS = 6
SHOWN_CHARS = 60
#: Labels of parameter changes in a plot (every change is drawn), and how
#: close (a fraction of the time axis) changes share a label.
LABELLED = 30
CLOSE = 0.015
#: A time column whose values are all above this holds seconds since the
#: epoch (``time.time()`` stamps): it is drawn against the experiment's start,
#: the parameter changes marked on it. Any other is on a clock of its own.
EPOCH_TIMES = 1e9

_DESCRIBES_A_STREAM = frozenset(field.name for field in STREAM_DESCRIPTOR if field.required)


class Experiment:
    """A saved experiment folder, read: its metadata, streams and history.

    Raises ``FileNotFoundError`` (naming what is missing) for a folder that
    holds no experiment, ``ValueError`` for one whose files cannot be read.
    """

    def __init__(self, folder: str | Path) -> None:
        where = Path(folder)
        metadata = where if where.is_file() else _metadata_file(where)
        self.folder = metadata.parent
        self.metadata_file = metadata
        try:
            self.metadata: dict[str, Any] = load_json(metadata)
        except ValueError as exc:  # damaged by hand or by a disk: name the file
            raise ValueError(f"{metadata} is not readable as JSON: {exc}") from exc
        if not isinstance(self.metadata, dict):
            raise ValueError(f"{metadata} holds no experiment's metadata")
        # collectord's account of the run; a file written otherwise (by hand,
        # by another program) may hold anything there: then it is only tree.
        account = self.metadata.get(RESERVED_KEY)
        self.account: dict[str, Any] = account if isinstance(account, dict) else {}
        self.tree = dict(self.metadata)
        if isinstance(account, dict):
            del self.tree[RESERVED_KEY]
        self.streams = dict(_streams(self.tree, ()))
        try:
            find_changes(metadata)
        except FileNotFoundError:
            self.changes: list[Change] | None = None
        else:
            self.changes = load_changes(metadata)

    @property
    def started(self) -> float | None:
        started = self.account.get("started")
        return dt.datetime.fromisoformat(started).timestamp() if started else None

    def stream_table(self, path: str) -> np.ndarray[Any, Any] | None:
        """The rows of the stream at ``path`` (a structured array), or None if its
        file is missing or in a format whose library is not installed."""
        descriptor = self.streams[path]
        name, fmt = descriptor.get("file"), descriptor.get("format")
        if not name or fmt not in READERS or not (self.folder / name).is_file():
            return None
        try:
            check_available(fmt)
        except ConfigError:
            return None
        return np.atleast_1d(read(self.folder / name, fmt, descriptor["dtype"]))


def _metadata_file(folder: Path) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    found = sorted(folder.glob(f"*{METADATA_SUFFIX}"))
    if not found:
        raise FileNotFoundError(
            f"{folder} holds no *{METADATA_SUFFIX}: give a saved experiment's folder "
            "(OUTPUT/YYMMDD/HHMMSS)"
        )
    return found[0]


def _streams(tree: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    for name, value in tree.items():
        if isinstance(value, dict):
            if value.keys() >= _DESCRIBES_A_STREAM:
                yield "/".join((*prefix, name)), value
            else:
                yield from _streams(value, (*prefix, name))


# -- text ------------------------------------------------------------------------------


def short(value: Any) -> str:
    """A value in one short line: long lists and texts cut, their length said."""
    if isinstance(value, list):
        shown = ", ".join(short(item) for item in value[:SHOWN_ITEMS])
        if len(value) <= SHOWN_ITEMS and len(shown) < SHOWN_CHARS:
            return f"[{shown}]"
        return f"[{shown[: SHOWN_CHARS - 8]}, ...] ({len(value)} items)"
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, bytes):
        text = f"<{len(value)} bytes>"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    if len(text) > SHOWN_CHARS:
        return f"{text[: SHOWN_CHARS - 3]}... ({len(text)} chars)"
    return text


def _names(columns: list[str]) -> str:
    if len(columns) > SHOWN_ITEMS:
        return f"{', '.join(columns[:3])}, ..., {columns[-1]} ({len(columns)})"
    return ", ".join(columns)


def _tree_lines(tree: Mapping[str, Any], indent: str) -> Iterator[str]:
    for name in sorted(tree):
        value = tree[name]
        if isinstance(value, dict) and value.keys() >= _DESCRIBES_A_STREAM:
            yield f"{indent}{name}: stream, {value['rows']} rows (see Streams)"
        elif isinstance(value, dict) and value:
            yield f"{indent}{name}/"
            yield from _tree_lines(value, indent + "  ")
        else:
            yield f"{indent}{name}: {short(value)}"


def _table(rows: list[list[str]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        yield ("  " + "  ".join(cells)).rstrip()


def _seconds(moment: float, start: float | None) -> str:
    return f"{moment - start:+10.3f} s" if start is not None else f"{moment:.3f}"


def report(experiment: Experiment, history: int = 100) -> Iterator[str]:
    """The lines ``collectord show`` prints; ``history``: changes shown (0: all)."""
    account = experiment.account
    title = account.get("run_id", experiment.folder.name)
    if account.get("name"):
        title += f" ({account['name']})"
    yield f"Experiment {title}"
    yield f"  {'folder':<13} {experiment.folder}"
    for field in ("started", "first_message", "stopped"):
        if account.get(field):
            yield f"  {field.replace('_', ' '):<13} {account[field]}"
    stop = account.get("stopped_by") or {}
    if stop:
        yield f"  stopped by {stop.get('by')}" + (
            f": {stop['reason']}" if stop.get("reason") else ""
        )
    for restart in account.get("restarts", []):
        kind = "resumed" if "resumed" in restart else "recovered"
        yield f"  {kind} after the daemon died, at {restart.get(kind)}"

    yield ""
    yield "Tree"
    yield from _tree_lines(experiment.tree, "  ") if experiment.tree else iter(["  (empty)"])

    yield ""
    sources = account.get("sources", [])
    yield f"Sources ({len(sources)})"
    if sources:
        rows = [["name", "host", "pid", "messages", "rejected", "lost", "gaps", "session"]]
        for source in sources:
            counts = source.get("messages", {})
            gaps = source.get("gaps", [])
            rows.append(
                [
                    str(source.get("name")),
                    str(source.get("host")),
                    str(source.get("pid")),
                    str(counts.get("messages", 0)),
                    str(counts.get("rejected", 0)),
                    str(counts.get("lost", 0)),
                    ", ".join(f"{first}-{last}" for first, last in gaps) or "none",
                    str(source.get("session")),
                ]
            )
        yield from _table(rows)
        for source in sources:
            for reason in source.get("recent_rejections", []):
                yield f"  rejected from {source.get('name')}: {reason}"
    unidentified = account.get("unidentified_rejections", 0)
    if unidentified:
        yield f"  {unidentified} rejected from unidentified senders"

    yield ""
    yield f"Streams ({len(experiment.streams)})"
    if experiment.streams:
        rows = [["path", "rows", "columns", "dtype", "file"]]
        for path, descriptor in sorted(experiment.streams.items()):
            columns = _names(descriptor["columns"])
            file = str(descriptor["file"])
            rows.append([path, str(descriptor["rows"]), columns, descriptor["dtype"], file])
        yield from _table(rows)

    yield ""
    changes = experiment.changes
    if changes is None:
        yield "Parameter history: none saved (an earlier collectord wrote none)"
        return
    carried = sum(1 for change in changes if change.carried)
    yield f"Parameter history ({len(changes)} values, {carried} carried in; times since the start)"
    shown = changes if history <= 0 else changes[:history]
    if shown:
        rows = [["time", "source", "seq", "path", "value"]]
        for change in shown:
            rows.append(
                [
                    _seconds(change.time, experiment.started),
                    change.source or "-",
                    "carried" if change.carried else str(change.seq),
                    change.path,
                    short(change.value),
                ]
            )
        yield from _table(rows)
    if len(shown) < len(changes):
        yield f"  ... {len(changes) - len(shown)} more (--history 0 shows all)"


# -- plot ------------------------------------------------------------------------------


def missing_matplotlib() -> str | None:
    """Why ``--plot`` cannot draw, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"--plot needs matplotlib: {INSTALL}"
    return None


def plot(experiment: Experiment, target: Path) -> list[str]:
    """Draw the streams over time, the parameter changes marked, into ``target``
    (a PNG). Returns notes on what could not be drawn.

    The first panel is the parameter changes, in seconds since the start.
    Then a panel per stream: its columns against its ``time_column`` if it
    has one, else against the row number (when each row was taken is then
    not known, so the changes cannot be marked there).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes: list[str] = []
    start = experiment.started or 0.0
    # Those carried in at the start are not changes during it.
    sent = [c for c in experiment.changes or [] if not (c.carried and c.time == start)]
    moments = [c.time - start for c in sent]
    panels: list[tuple[str, np.ndarray[Any, Any], str | None]] = []
    for path, descriptor in sorted(experiment.streams.items()):
        table = experiment.stream_table(path)
        if table is None:
            notes.append(f"{path}: its {descriptor.get('format')} file is not drawn")
        elif len(table) == 0:
            notes.append(f"{path}: no rows")
        else:
            column = descriptor.get("time_column")
            panels.append((path, table, column if column in (table.dtype.names or ()) else None))
    heights = [3.0] + [2.2] * len(panels)
    figure, axes = plt.subplots(
        len(panels) + 1,
        1,
        figsize=(10, sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    timeline = axes[0][0]
    _mark(timeline, moments, sent, labelled=True)
    timeline.set_title("parameter changes (s since the start)", fontsize=9, loc="left")
    timeline.set_yticks([])
    timeline.set_ylim(0, 1)
    if moments:
        timeline.set_xlim(min(0.0, *moments) - 0.5, max(moments) + 0.5)
    for (path, table, time_column), row in zip(panels, axes[1:], strict=True):
        ax = row[0]
        names = [n for n in table.dtype.names or () if n != time_column]
        if time_column is not None:
            x = np.asarray(table[time_column], dtype=float)
            if x.size and np.nanmin(x) > EPOCH_TIMES:
                x = x - start
                ax.set_xlabel(f"{time_column} (s since the start)", fontsize=8)
                _mark(ax, moments, sent, labelled=False)
            else:
                ax.set_xlabel(f"{time_column} (s, the source's clock)", fontsize=8)
                notes.append(
                    f"{path}: its time column is not on the daemon's clock; "
                    "parameter changes are marked on the first panel only"
                )
        else:
            x = np.arange(len(table))
            ax.set_xlabel("row", fontsize=8)
        for name in names:
            ax.plot(x, np.asarray(table[name], dtype=float), label=name, linewidth=0.8)
        ax.set_title(path, fontsize=9, loc="left")
        if names:
            ax.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return notes


def _mark(ax: Any, moments: list[float], changes: list[Change], *, labelled: bool) -> None:
    """A vertical line per message that changed parameters. Labelled, messages
    closer than ``CLOSE`` of the axis share one label: the first value, and
    how many more; the first ``LABELLED`` labels are drawn."""
    messages: dict[tuple[float, str | None, int | None], list[Change]] = {}
    for moment, change in zip(moments, changes, strict=True):
        messages.setdefault((moment, change.source, change.seq), []).append(change)
    for moment, _, _ in messages:
        ax.axvline(moment, color="tab:red", linewidth=0.7, alpha=0.6)
    if not labelled or not messages:
        return
    span = max(max(moments) - min(moments), 1.0)
    clusters: list[tuple[float, list[Change]]] = []
    for (moment, _, _), group in messages.items():
        if clusters and moment - clusters[-1][0] < CLOSE * span:
            clusters[-1][1].extend(group)
        else:
            clusters.append((moment, list(group)))
    for moment, group in clusters[:LABELLED]:
        label = f"{group[0].path} = {short(group[0].value)}"
        if len(label) > 40:
            label = label[:37] + "..."
        if len(group) > 1:
            label += f" (+{len(group) - 1})"
        ax.text(moment, 0.97, label, rotation=90, va="top", ha="right", fontsize=6)
