"""``collectord watch``: a live view of the rig, drawn from the daemon's status.

Three layers, each testable on its own:

* ``Tracker.add(sample)`` turns successive status samples (``Sample``: the
  ``status`` reply and the moment it arrived) into a ``View``. What one status
  cannot say comes from the difference of two: messages a second, and, from a
  daemon whose status has no ``last_heard``, when a source was last heard (the
  last sample in which its counters moved). A required source with no session
  at all (``missing`` in the status) gets a row of its own.
* ``render(view)`` (a rich renderable, for a terminal) and ``line(view)`` (one
  plain line) draw a view. Both are pure. A source's columns are the entries
  of ``COLUMNS``: a new column is one entry there. Every key of the status is
  looked up with a default, so a status that lacks a field (an older daemon)
  or has new ones (``streams``: see ``_streams``) is drawn with what it has.
* ``run(poll, ...)`` polls, one request at a time and at most once every
  ``interval`` seconds, and shows each view: redrawn in place on a terminal
  (``q`` or Ctrl-C quits), one line a refresh otherwise.

rich is an optional dependency (``pip install 'collectord[watch]'``), needed
only for the terminal view: the plain lines need nothing beyond collectord.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal

from .clocks import offset_text
from .errors import CollectordError

if TYPE_CHECKING:
    from rich.console import RenderableType

#: What to run when rich is missing.
INSTALL = "pip install 'collectord[watch]'"
#: The oldest rich the view is drawn with.
RICH_MAJOR = 13
#: The shortest interval between two polls: the watch must never load the daemon.
MIN_INTERVAL = 0.1
#: Default intervals: on a terminal, and for plain lines (a log).
TERMINAL_INTERVAL = 0.25
LINES_INTERVAL = 1.0


def missing_rich() -> str | None:
    """Why the terminal view cannot be drawn (rich missing or too old), or None."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return f"the live view needs rich {RICH_MAJOR} or later: {INSTALL}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("rich")
        major = int(installed.split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None  # cannot tell: try it
    if major < RICH_MAJOR:
        return (
            f"the live view needs rich {RICH_MAJOR} or later, and rich {installed} is "
            f"installed: {INSTALL} --upgrade"
        )
    return None


# -- samples and views ---------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One poll: the status (None if no answer, ``error`` says why) and when it came."""

    status: Mapping[str, Any] | None
    at: float  # time.monotonic() when the answer arrived
    wall: dt.datetime  # the local time then (timezone-aware)
    error: str = ""


@dataclass(frozen=True)
class SourceRow:
    """One source as shown: its status entry and what the samples tell of it."""

    source: Mapping[str, Any]
    rate: float | None  # messages a second since the previous sample; None: unknown
    heard: float | None  # seconds since its counters last moved; None: unknown
    heard_before: bool = False  # True: not moved since the watch began; `heard` is a bound
    required: bool | None = None  # its name is required; None: the status does not say
    missing: bool = False  # its name is required and has no connected session


@dataclass(frozen=True)
class View:
    """What one refresh shows."""

    sample: Sample
    rows: tuple[SourceRow, ...] = ()
    rate: float | None = None  # all sources' messages a second
    running: float | None = None  # seconds since the experiment started
    last: View | None = None  # for a sample without answer: the last view with one


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    """``mapping[k1][k2]...``, or ``default`` where a level is missing or not a map."""
    value = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return default
        value = value.get(key)
    return default if value is None else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _sources(status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    sources = _get(status, "sources", default=[])
    if not isinstance(sources, list):
        return []
    return [source for source in sources if isinstance(source, Mapping)]


def _key(source: Mapping[str, Any]) -> str:
    return str(source.get("session") or source.get("name") or "?")


def _count(source: Mapping[str, Any] | None) -> float | None:
    return _number(_get(source, "messages", "messages"))


def _total(status: Mapping[str, Any]) -> float:
    """All messages applied since the daemon started, forgotten sessions included."""
    counts = [_count(source) or 0 for source in _sources(status)]
    return sum(counts) + (_number(_get(status, "forgotten", "messages", "messages")) or 0)


def _counters(source: Mapping[str, Any]) -> tuple[Any, ...]:
    """What moves whenever the daemon hears from a source."""
    messages = source.get("messages")
    counts = sorted(messages.items()) if isinstance(messages, Mapping) else messages
    return (source.get("last_seq"), repr(counts))


def _names(status: Mapping[str, Any], key: str) -> list[str]:
    """``required`` (names) or ``missing`` (maps with a ``name``) as names."""
    entries = status.get(key)
    if not isinstance(entries, list):
        return []
    names = [_get(entry, "name") if isinstance(entry, Mapping) else entry for entry in entries]
    return [name for name in names if isinstance(name, str)]


def _time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _heard_by_daemon(status: Mapping[str, Any], source: Mapping[str, Any]) -> float | None:
    """Seconds since the daemon last heard from ``source``, by the daemon's own
    clock (its status's ``time``); None if the status does not say."""
    now, heard = _time(status.get("time")), _time(source.get("last_heard"))
    if now is None or heard is None:
        return None
    return max(0.0, (now - heard).total_seconds())


def _same_daemon(before: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    if (before.get("host"), before.get("pid")) != (now.get("host"), now.get("pid")):
        return False
    up_before, up_now = _number(before.get("uptime")), _number(now.get("uptime"))
    return up_before is None or up_now is None or up_now >= up_before


def _between(before: Sample, now: Sample) -> float | None:
    """Seconds between two samples: by the daemon's clock (its uptime) when it says."""
    up_before = _number(_get(before.status, "uptime"))
    up_now = _number(_get(now.status, "uptime"))
    if up_before is not None and up_now is not None and up_now > up_before:
        return up_now - up_before
    seconds = now.at - before.at
    return seconds if seconds > 0 else None


def _rate(before: float | None, now: float | None, seconds: float | None) -> float | None:
    if before is None or now is None or not seconds or now < before:
        return None
    return (now - before) / seconds


def _running(status: Mapping[str, Any], wall: dt.datetime) -> float | None:
    """Seconds since ``run_started``, by this machine's clock (the daemon's may differ)."""
    started = status.get("run_started")
    if not isinstance(started, str):
        return None
    try:
        began = dt.datetime.fromisoformat(started)
    except ValueError:
        return None
    if began.tzinfo is None or wall.tzinfo is None:
        return None
    return max(0.0, (wall - began).total_seconds())


class Tracker:
    """Turns successive samples into views; remembers what the differences need."""

    def __init__(self) -> None:
        self._previous: Sample | None = None
        self._last: View | None = None
        # session -> (its counters, when they last moved or None, when first seen)
        self._moved: dict[str, tuple[tuple[Any, ...], float | None, float]] = {}

    def add(self, sample: Sample) -> View:
        status = sample.status
        if status is None:
            return View(sample, last=self._last)
        previous = self._previous
        if previous is not None and not _same_daemon(previous.status or {}, status):
            previous = None  # a restarted daemon: its counters began again
            self._moved.clear()
        seconds = _between(previous, sample) if previous is not None else None
        before = {_key(s): s for s in _sources(previous.status if previous else None)}
        rows = []
        moved: dict[str, tuple[tuple[Any, ...], float | None, float]] = {}
        says_required = isinstance(status.get("required"), list)
        required = set(_names(status, "required"))
        missing = _names(status, "missing")
        for source in _sources(status):
            key = _key(source)
            counters = _counters(source)
            known = self._moved.get(key)
            if known is None:
                # New since the last sample (heard just now), or there before the watch.
                when, first = (sample.at if previous is not None else None), sample.at
            elif known[0] != counters:
                when, first = sample.at, known[2]
            else:
                when, first = known[1], known[2]
            moved[key] = (counters, when, first)
            was = _count(before[key]) if key in before else 0.0
            heard = _heard_by_daemon(status, source)
            if heard is None:  # an older daemon: since its counters last moved
                heard = sample.at - (first if when is None else when)
                heard_before = when is None
            else:
                heard_before = False
            name = source.get("name")
            rows.append(
                SourceRow(
                    source,
                    rate=_rate(was, _count(source), seconds),
                    heard=heard,
                    heard_before=heard_before,
                    required=name in required if says_required else None,
                    missing=name in missing,
                )
            )
        shown = {row.source.get("name") for row in rows}
        for name in missing:
            if name not in shown:  # never connected, or forgotten: a row all the same
                row = SourceRow({"name": name}, None, None, required=True, missing=True)
                rows.append(row)
        self._moved = moved
        rate = None
        if previous is not None and previous.status is not None:
            rate = _rate(_total(previous.status), _total(status), seconds)
        view = View(sample, tuple(rows), rate, _running(status, sample.wall))
        self._previous, self._last = sample, view
        return view


def views(samples: Iterable[Sample]) -> list[View]:
    """The views of successive samples, as a watch shows them."""
    tracker = Tracker()
    return [tracker.add(sample) for sample in samples]


# -- formatting ----------------------------------------------------------------------


def _clock(seconds: float | None) -> str:
    """H:MM:SS."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _ago(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _per_second(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def _integer(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "-"
    return f"{number:.0f}" if isinstance(number, float) else str(number)


def _heard(row: SourceRow) -> str:
    if row.heard is None or (row.heard_before and row.heard <= 0):
        return "-"
    return f"{'over ' if row.heard_before else ''}{_ago(row.heard)} ago"


def _state(row: SourceRow) -> str:
    connected = row.source.get("connected")
    if row.missing and not connected:
        return "missing"
    return "-" if connected is None else "connected" if connected else "gone"


def _required(row: SourceRow) -> str:
    return "-" if row.required is None else "yes" if row.required else "no"


def _gaps(row: SourceRow) -> str:
    gaps = row.source.get("gaps")
    return str(len(gaps)) if isinstance(gaps, list) else "-"


def _offset(row: SourceRow) -> str:
    """The median offset of the source's clock from the daemon's (``clock`` in
    its status entry): what to add to its timestamps to get the daemon's."""
    seconds = _number(_get(row.source, "clock", "median_offset"))
    return "-" if seconds is None else offset_text(seconds)


def _counter(name: str) -> Callable[[SourceRow], str]:
    return lambda row: _integer(_get(row.source, "messages", name))


def _alarm(cell: Callable[[SourceRow], str], style: str) -> Callable[[SourceRow], str]:
    """Style a count that should be 0 when it is not."""
    return lambda row: style if cell(row) not in ("0", "-") else ""


@dataclass(frozen=True)
class Column:
    """One column of the sources table, and its piece of a plain line.

    ``cell`` gives the text; ``style`` a rich style for it ("" for none);
    ``line`` how a plain line words it (``{}`` is the cell).
    """

    header: str
    cell: Callable[[SourceRow], str]
    justify: Literal["left", "right"] = "right"
    style: Callable[[SourceRow], str] = lambda row: ""
    line: str = "{}"


#: The sources table, left to right. The first column names the source.
COLUMNS: list[Column] = [
    Column("source", lambda row: str(row.source.get("name") or "?"), "left", lambda _: "bold"),
    Column(
        "state",
        _state,
        "left",
        lambda row: {"connected": "green", "gone": "red", "missing": "bold red"}.get(
            _state(row), ""
        ),
    ),
    Column(
        "required",
        _required,
        "left",
        lambda row: "bold red" if row.missing else "",
        line="required {}",
    ),
    Column("msg/s", lambda row: _per_second(row.rate), line="{} msg/s"),
    Column("messages", _counter("messages"), line="messages {}"),
    Column(
        "experiment",
        lambda row: _integer(_get(row.source, "experiment_messages", "messages")),
        line="this experiment {}",
    ),
    Column("last heard", _heard, line="last heard {}"),
    Column("gaps", _gaps, style=_alarm(_gaps, "yellow"), line="gaps {}"),
    Column("lost", _counter("lost"), style=_alarm(_counter("lost"), "red"), line="lost {}"),
    Column(
        "rejected",
        _counter("rejected"),
        style=_alarm(_counter("rejected"), "red"),
        line="rejected {}",
    ),
    Column("clock offset", _offset, line="clock offset {}"),
]


def _size(value: Any) -> str:
    """`` (1.2 MB)`` for a number of bytes; nothing if it is not one."""
    number = _number(value)
    if number is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if number >= scale:
            return f" ({number / scale:.1f} {unit})"
    return f" ({number:.0f} B)"


def _streams(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The experiment's streams, their rows and bytes, if the status gives them.

    The status's ``streams`` is a list of maps with ``path``, ``rows`` and
    ``bytes``; a map from path to such a map or to a number of rows is shown too.
    """
    streams = status.get("streams")
    if isinstance(streams, Mapping):
        entries = [(str(path), value) for path, value in streams.items()]
    elif isinstance(streams, list):
        entries = [(str(_get(s, "path", default="?")), s) for s in streams]
    else:
        return []
    return [
        (
            path,
            _integer(value if _number(value) is not None else _get(value, "rows"))
            + " rows"
            + _size(_get(value, "bytes")),
        )
        for path, value in entries
    ]


def _required_fact(status: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The ``required`` line: the names, and those missing with since when and why."""
    required = _names(status, "required")
    if not required:
        return None
    entries = status.get("missing")
    missing = [e for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []
    if not missing:
        return ("required", f"{', '.join(required)}: all connected", "green")
    gone = []
    for entry in missing:
        since = _time(entry.get("since"))
        when = f" since {since:%H:%M:%S}" if since is not None else ""
        cause = f", {entry['cause']}" if isinstance(entry.get("cause"), str) else ""
        gone.append(f"{entry.get('name', '?')} ({'missing' + when + cause})")
    return ("required", f"{', '.join(required)}; MISSING: {', '.join(gone)}", "bold red")


def _experiment_total(status: Mapping[str, Any]) -> float | None:
    """Messages applied in the current experiment, if the status says."""
    counts = [_number(_get(s, "experiment_messages", "messages")) for s in _sources(status)]
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _facts(view: View) -> list[tuple[str, str, str]]:
    """The lines above the sources table: (label, text, rich style)."""
    status = view.sample.status or {}
    up = _number(status.get("uptime"))
    daemon = [
        f"collectord {status.get('version', '?')}",
        f"pid {_integer(status.get('pid'))} on {status.get('host', '?')}",
        f"up {_clock(up)}",
    ]
    experiment = f"{status.get('run_id', '-')}, running {_clock(view.running)}"
    if status.get("stop_pending"):
        experiment += ", stop pending"
    rejected = _integer(status.get("rejected"))
    unidentified = _number(_get(status, "unidentified", "rejected"))
    if unidentified:
        rejected += f" ({_integer(unidentified)} unidentified)"
    this_experiment = _experiment_total(status)
    counted = "" if this_experiment is None else f"{_integer(this_experiment)} this experiment, "
    facts = [
        ("daemon", ", ".join(daemon), ""),
        ("experiment", experiment, "bold"),
        (
            "messages",
            f"{counted}{_integer(_total(status))} since the daemon started, "
            f"{_per_second(view.rate)} msg/s, rejected {rejected}",
            "",
        ),
    ]
    required = _required_fact(status)
    if required is not None:
        facts.append(required)
    streams = _streams(status)
    if streams:
        facts.append(("streams", ", ".join(f"{p} {rows}" for p, rows in streams), ""))
    saving = status.get("saving")
    if isinstance(saving, Mapping):
        seconds = _number(saving.get("seconds"))
        took = "" if seconds is None else f" ({seconds:.1f} s)"
        facts.append(
            ("saving", f"{saving.get('run_id', '?')}: {saving.get('step', '?')}{took}", "yellow")
        )
    else:
        facts.append(("saving", "-", ""))
    saved = _integer(status.get("saved_experiments"))
    facts.append(("last save", f"{status.get('last_saved') or '-'} ({saved} saved)", ""))
    if status.get("last_error"):
        facts.append(("error", str(status["last_error"]), "bold red"))
    return facts


def _no_answer(view: View) -> str:
    text = f"no answer: {view.sample.error or 'no daemon'}"
    if view.last is not None:
        text += f" (last answer {_ago(view.sample.at - view.last.sample.at)} ago)"
    return text


def render(view: View, hint: str = "") -> RenderableType:
    """The terminal view: the daemon and experiment, then a table of the sources."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if view.sample.status is None:
        parts: list[RenderableType] = [Text(_no_answer(view), style="bold red")]
        if view.last is not None:
            parts.append(Text("the last answer:", style="dim"))
            parts.append(render(view.last))
        if hint:
            parts.append(Text(hint, style="dim"))
        return Group(*parts)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    for label, text, style in _facts(view):
        facts.add_row(label, Text(text, style=style))
    parts = [facts]
    if view.rows:
        table = Table(box=None, padding=(0, 1), header_style="bold")
        for column in COLUMNS:
            table.add_column(column.header, justify=column.justify, no_wrap=True)
        for row in view.rows:
            table.add_row(*(Text(c.cell(row), style=c.style(row)) for c in COLUMNS))
        parts += [Text(""), table]
    else:
        parts.append(Text("no source has sent anything yet", style="dim"))
    if hint:
        parts += [Text(""), Text(hint, style="dim")]
    return Group(*parts)


def _source_line(row: SourceRow) -> str:
    first, *rest = COLUMNS
    return f"{first.cell(row)} ({', '.join(c.line.format(c.cell(row)) for c in rest)})"


def line(view: View) -> str:
    """One plain line for a view: the time, the experiment, the save, each source."""
    when = view.sample.wall.strftime("%Y-%m-%d %H:%M:%S")
    if view.sample.status is None:
        return f"{when} {_no_answer(view)}"
    parts = [f"{label} {text}" for label, text, _ in _facts(view) if label != "daemon"]
    parts += [_source_line(row) for row in view.rows] or ["no sources"]
    return f"{when} " + " | ".join(parts)


# -- the loop ------------------------------------------------------------------------


class _Keys:
    """Key presses on a terminal's stdin, read without waiting for Enter.

    ``wait(seconds)`` waits, returning True at once if ``q`` is pressed. Where
    stdin is no terminal, it only sleeps (Ctrl-C still quits).
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._fd: int | None = None
        self._saved: Any = None
        self._msvcrt: Any = None

    def __enter__(self) -> _Keys:
        try:
            if self._stream is None or not self._stream.isatty():
                return self
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self
        try:
            import termios
            import tty
        except ImportError:  # Windows
            try:
                import msvcrt
            except ImportError:
                return self
            self._msvcrt = msvcrt
            return self
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        if self._fd is not None:
            import select

            while True:
                left = max(0.0, deadline - time.monotonic())
                if not select.select([self._fd], [], [], left)[0]:
                    return False
                pressed = os.read(self._fd, 64)
                if not pressed:  # end of input: nothing more will come
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    return False
                if b"q" in pressed.lower():
                    return True
        if self._msvcrt is not None:
            while time.monotonic() < deadline:
                while self._msvcrt.kbhit():
                    if self._msvcrt.getwch().lower() == "q":
                        return True
                time.sleep(0.05)
            return False
        time.sleep(max(0.0, seconds))
        return False


def _poll(poll: Callable[[], Mapping[str, Any]]) -> Sample:
    try:
        status: Mapping[str, Any] | None = poll()
        error = ""
    except CollectordError as exc:
        status, error = None, str(exc)
    return Sample(status, time.monotonic(), dt.datetime.now().astimezone(), error)


def run(
    poll: Callable[[], Mapping[str, Any]],
    *,
    interval: float,
    count: int | None = None,
    plain: bool = False,
    out: IO[str] | None = None,
    keys: IO[str] | None = None,
    hint: str = "",
) -> int:
    """Poll and show until ``q``, Ctrl-C or ``count`` refreshes.

    ``poll`` returns a status or raises ``CollectordError``; it is called one
    at a time, each call beginning at least ``interval`` seconds after the
    last began. ``plain``: one line a refresh on ``out``; otherwise the view
    redrawn in place (needs rich), with ``keys`` (a terminal) read for ``q``.
    Returns 0, or 1 if the last of ``count`` refreshes got no answer.
    """
    out = sys.stdout if out is None else out
    tracker = Tracker()
    view: View | None = None
    refreshes = 0
    try:
        if plain:
            while True:
                began = time.monotonic()
                view = tracker.add(_poll(poll))
                print(line(view), file=out, flush=True)
                refreshes += 1
                if count is not None and refreshes >= count:
                    break
                time.sleep(max(0.0, began + interval - time.monotonic()))
        else:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=out)
            with _Keys(keys) as reader, Live(console=console, auto_refresh=False) as live:
                while True:
                    began = time.monotonic()
                    view = tracker.add(_poll(poll))
                    live.update(render(view, hint), refresh=True)
                    refreshes += 1
                    if count is not None and refreshes >= count:
                        break
                    if reader.wait(began + interval - time.monotonic()):
                        break
    except KeyboardInterrupt:
        return 0
    if count is not None and view is not None and view.sample.status is None:
        return 1
    return 0
