"""The ``collectord`` command: run, stop, status, watch, recover, keygen, bench, show, demo,
export.

Each sub-command's ``--help`` says what it does, with an example. Errors from
below (``CollectordError``) are printed as one clear line and turned into a
non-zero exit status here, at the edge; nothing else catches them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from . import config as config_module
from .clocks import offset_text
from .control import request
from .errors import CollectordError, DaemonTimeout
from .protocol import Command
from .security import ClientSecurity, keygen
from .show import INSTALL as show_install
from .watch import INSTALL, LINES_INTERVAL, MIN_INTERVAL, TERMINAL_INTERVAL


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (default: $COLLECTORD_CONFIG "
        "or the built-in defaults, see config/collectord.toml)",
    )
    parser.add_argument(
        "--control",
        metavar="ENDPOINT",
        help="the daemon's control endpoint "
        f"(default from the configuration: {config_module.Config().control})",
    )


def _client_common(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the daemon (default: %(default)s)",
    )


def _timeout(text: str) -> float:
    """``--timeout``: seconds, more than 0 (a negative one waited for ever, NaN and
    infinity ended in a traceback)."""
    seconds = float(text)
    if not 0 < seconds < 1e9:
        raise argparse.ArgumentTypeError("seconds, more than 0")
    return seconds


def _command(
    commands: Any, name: str, summary: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A sub-command whose --help says what it does and shows an example."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help=summary,
        description=f"{description}\n\nexample:\n  {example}",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collectord",
        description="Collect the parameters and data of a rig's processes; "
        "save them when an experiment stops.",
    )
    parser.add_argument("--version", action="version", version=f"collectord {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(
        commands,
        "run",
        "run the collector daemon in the foreground",
        "Run the collector daemon in the foreground. It saves the running experiment on "
        "SIGTERM or Ctrl-C and exits 0. A second signal skips the stop barrier or, once the "
        "save is under way, exits when its current attempt ends (the next start completes it).",
        "collectord run --output ~/data/rig1",
    )
    _common(run)
    run.add_argument(
        "--data",
        metavar="ENDPOINT",
        help=f"data endpoint to bind (default {config_module.Config().data}; "
        "port * lets the system choose)",
    )
    run.add_argument("--output", metavar="DIR", help="folder for experiment folders")
    run.add_argument(
        "--last-config",
        metavar="FILE",
        help="last-config file (default: last_config.json in the output folder)",
    )
    run.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="save an experiment left unfinished by a crash as recovered, "
        "and start a new one (default: resume it from its journal)",
    )
    run.add_argument(
        "--require",
        metavar="NAMES",
        help="comma-separated names of the processes (Client(name)) an experiment needs, "
        "e.g. camera,tracking,stimulus: status shows which are missing, a disconnection "
        "is logged and recorded, and a stop while one is missing saves and says so "
        "(default: [sources] required from the configuration; '' requires none)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every message")
    run.add_argument(
        "--detached",
        action="store_true",
        help="once listening (the line on stdout), send stdout where stderr goes: for a "
        "daemon started in the background by a program that may end first",
    )

    recover = _command(
        commands,
        "recover",
        "save experiments a crashed daemon left unfinished",
        "Rebuild every experiment a daemon left unsaved in the output folder (after kill "
        "-9 or a power cut) from its journal, and save it, marked as recovered, with the "
        "last config updated. Refuses while a daemon uses the folder, and refuses a folder "
        "that is not there or that no daemon used (a mistyped --output), creating nothing.",
        "collectord recover --output ~/data/rig1",
    )
    recover.add_argument("--config", metavar="FILE", help="configuration file")
    recover.add_argument("--output", metavar="DIR", help="the daemon's output folder")
    recover.add_argument(
        "--last-config",
        metavar="FILE",
        help="last-config file (default: last_config.json in the output folder)",
    )

    stop = _command(
        commands,
        "stop",
        "end the current experiment and save it",
        "End the current experiment: the daemon waits for every connected client's "
        "messages, saves the metadata and the last config, and starts a new experiment. "
        "Prints the saved metadata file. Exits 0; 4 if the experiment was saved while a "
        "required source (collectord run --require) was missing, after a warning naming "
        "them on stderr; 1 if no daemon answered or the save failed.",
        "collectord stop --reason 'fish 3 done'",
    )
    _client_common(stop)
    stop.add_argument("--reason", default="collectord stop", help="recorded in the metadata")

    status = _command(
        commands,
        "status",
        "show what the daemon is doing",
        "Show the daemon's sources, message counts, rejections and last save. Exits 1 if "
        "no daemon answers.",
        "collectord status --json",
    )
    _client_common(status)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")

    watch = _command(
        commands,
        "watch",
        "show the rig live: sources, message rates, the save under way",
        "Show the daemon's status live, refreshed a few times a second: each source "
        "(connected, gone or missing, required or not, messages a second, messages in all "
        "and in this experiment, when last heard, gaps, lost and rejected messages), the "
        "required sources missing and since when, the experiment (its running time, "
        "messages, streams' rows and bytes), the save under way "
        "and the last save. q or Ctrl-C quits, and so do SIGTERM and SIGHUP, each leaving "
        "the terminal as it was. When the output is not a terminal (or with "
        "--plain) it prints one line a refresh instead. It asks for the status one request "
        f"at a time, never more often than every {MIN_INTERVAL:g} s. The live view needs "
        f"rich: {INSTALL}.",
        "collectord watch\n"
        "  collectord watch --interval 5 >> rig1-watch.log      # a line every 5 s",
    )
    _common(watch)
    watch.add_argument(
        "--timeout",
        type=_timeout,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for each answer (default: %(default)s)",
    )
    watch.add_argument(
        "--interval",
        type=_interval,
        metavar="SECONDS",
        help=f"time between refreshes, at least {MIN_INTERVAL:g} (default: "
        f"{TERMINAL_INTERVAL:g} on a terminal, {LINES_INTERVAL:g} for plain lines)",
    )
    watch.add_argument(
        "--count",
        type=_positive,
        metavar="N",
        help="quit after N refreshes; exit 1 if the last got no answer",
    )
    watch.add_argument(
        "--once", dest="count", action="store_const", const=1, help="same as --count 1"
    )
    watch.add_argument("--plain", action="store_true", help="print plain lines even on a terminal")

    keys = _command(
        commands,
        "keygen",
        "make a CURVE key pair for a daemon or a client",
        "Write NAME.key (public: give it to the other side) and NAME.key_secret (private:"
        " keep it on this machine) into DIR. A daemon listening beyond loopback needs its"
        " own pair and a folder with the public keys of its clients.",
        "collectord keygen ~/.collectord/keys --name rig1-daemon",
    )
    keys.add_argument("folder", metavar="DIR", help="where to write the key files")
    keys.add_argument("--name", required=True, help="base name of the key files")

    bench = _command(
        commands,
        "bench",
        "measure what this machine carries, raw and through collectord",
        "Measure the raw ZeroMQ ceilings of this machine and collectord's own rates in "
        "the same run (parameters, row appends, block extends, the daemon's peak memory, "
        "the cost of each call, the precision of clock offsets), and print each rate as a "
        "ratio to its ceiling. Takes a minute or two.",
        "collectord bench --json > bench.json",
    )
    bench.add_argument("--repeat", type=int, default=3, help="runs; medians are reported")
    bench.add_argument("--messages", type=int, default=50_000, help="parameter messages a run")
    bench.add_argument("--rows", type=int, default=200_000, help="appended rows a run")
    bench.add_argument(
        "--stream-mb",
        type=float,
        default=250.0,
        help="stream data for the memory measurement (MB)",
    )
    bench.add_argument(
        "--tree",
        type=int,
        default=100_000,
        metavar="N",
        help="parameters of the big tree whose save and restart are timed (0: skip; "
        "default: %(default)s)",
    )
    bench.add_argument(
        "--clock",
        type=int,
        default=200,
        metavar="N",
        help="clock samples whose precision on loopback is measured (0: skip; "
        "default: %(default)s)",
    )
    bench.add_argument(
        "--sessions",
        type=int,
        default=10_000,
        metavar="N",
        help="sessions the daemon holds while its status is timed (0: skip; default: %(default)s)",
    )
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")

    show = _command(
        commands,
        "show",
        "print a saved experiment: tree, sources, streams, parameter history",
        "Print what a saved experiment folder holds: its metadata tree (long arrays and "
        "texts cut short), each source with its message counts and gaps, the streams "
        "(path, rows, columns, file) and the history of its parameters (times since the "
        "start, source, path, new value). --plot draws the streams over time with the "
        f"parameter changes marked, into a PNG file; it needs matplotlib: {show_install}.",
        "collectord show ~/data/rig1/241201/103000\n"
        "  collectord show ~/data/rig1/241201/103000 --plot 103000.png",
    )
    show.add_argument("folder", metavar="EXPERIMENT_FOLDER", help="a saved experiment's folder")
    show.add_argument(
        "--history",
        type=_count,
        default=100,
        metavar="N",
        help="parameter changes printed, the first N (0: all; default: %(default)s)",
    )
    show.add_argument("--plot", metavar="FILE.png", help="draw the streams into this PNG file")

    demo = _command(
        commands,
        "demo",
        "run a simulated rig end to end",
        "Start a daemon and three simulated acquisition processes (camera, tracking, "
        "stimulus) on free local ports; the stimulus process stops the experiment when "
        "its protocol ends. Prints where the files went and what the tree holds.",
        "collectord demo --output /tmp/demo",
    )
    demo.add_argument(
        "--output",
        metavar="DIR",
        default="collectord-demo",
        help="output folder (default: ./%(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="length of the simulated protocol (default: %(default)s)",
    )
    export = _command(
        commands,
        "export",
        "write a saved experiment in another format (NWB)",
        "Write a saved experiment folder in another format. nwb: one NWB file (Neurodata "
        "Without Borders, what DANDI takes) holding the session, the subject, every stream, "
        "the stimulus log, the parameter history and the whole metadata tree; needs pynwb: "
        "pip install 'collectord[nwb]'.",
        "collectord export nwb collectord-demo/241124/103000 -o fish3.nwb",
    )
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    nwb = formats.add_parser(
        "nwb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="one NWB file",
        description="Write the experiment as one NWB file (default: <stem>.nwb beside its "
        "metadata) and print its path. Notes on what is in the metadata text only go to "
        "stderr.\n\nexample:\n  collectord export nwb ~/data/rig1/241124/103000",
    )
    nwb.add_argument("folder", metavar="EXPERIMENT_FOLDER", help="a saved experiment's folder")
    nwb.add_argument("-o", "--output", metavar="FILE", help="the NWB file to write")
    nwb.add_argument(
        "--map",
        metavar="FILE",
        help="JSON or TOML file of NWB field -> tree path(s), over the default "
        "(stytra's layout: general/animal, general/basic)",
    )
    return parser


def _settings(args: argparse.Namespace) -> config_module.Config:
    settings = config_module.load(args.config)
    require = getattr(args, "require", None)
    return settings.replace(
        control=getattr(args, "control", None),
        data=getattr(args, "data", None),
        output=getattr(args, "output", None),
        last_config=getattr(args, "last_config", None),
        required=None if require is None else _names(require),
    )


def _names(text: str) -> tuple[str, ...]:
    """``--require a,b``: the names, checked as the configuration's are."""
    names = [name.strip() for name in text.split(",")] if text.strip() else []
    return config_module.source_names("--require", names)


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon, Start
    from .daemon.process import listening_line

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s collectord %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    daemon = Daemon(_settings(args), start=Start.RESUME if args.resume else Start.RECOVER)
    endpoints = daemon.bind()
    daemon.set_up_process()
    print(listening_line(__version__, endpoints, daemon.config.output_dir), flush=True)
    if args.detached:
        _stdout_to_stderr()
    daemon.serve()
    if daemon.exit_error is not None:
        print(f"collectord run: {daemon.exit_error}", file=sys.stderr)
        return 1
    return 0


def _stdout_to_stderr() -> None:
    """Point stdout where stderr goes, letting go of the pipe the starter read.

    The starter read the listening line and may end at any time (a GUI that
    crashes); a later write to its pipe would fail, or block while it lives
    and does not read.
    """
    try:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no stderr file: nowhere to write
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


#: ``collectord recover``'s exit status when journal records had to be skipped.
RECOVERED_WITH_DAMAGE = 3
#: ``collectord stop``'s exit status when the experiment was saved while a
#: required source was missing.
SAVED_WITH_MISSING = 4


def cmd_recover(args: argparse.Namespace) -> int:
    from .daemon.lifecycle import recover

    logging.basicConfig(level=logging.INFO, format="collectord recover: %(message)s")
    settings = _settings(args)
    opened = recover(settings.output_dir, settings.last_config_file, settings.stream_format)
    for path in opened.saved:
        print(path)
    if not opened.saved:
        print(f"nothing to recover in {settings.output_dir}", file=sys.stderr)
    if opened.damage:
        print(
            f"{len(opened.damage)} damaged part(s) of journals were skipped; "
            "the damaged journals are kept in "
            f"{settings.output_dir / '.collectord' / 'damaged'}:",
            file=sys.stderr,
        )
        for problem in opened.damage:
            print(f"  {problem}", file=sys.stderr)
        return RECOVERED_WITH_DAMAGE
    return 0


#: Added to "no collectord daemon answered" when the command has no keys: a
#: daemon that uses CURVE never answers it, which looks just like no daemon.
CURVE_HINT = (
    "a daemon that uses CURVE keys needs --config FILE with [security] client_key and "
    "server_public_key (see `collectord keygen`)"
)


def _request(
    control: str,
    command: Command,
    fields: dict[str, Any],
    timeout: float,
    security: ClientSecurity | None,
) -> dict[str, Any]:
    """``request``, its timeout saying what to try when the command has no keys."""
    try:
        return request(control, command, fields, timeout, security)
    except DaemonTimeout as exc:
        if security is not None:
            raise
        raise DaemonTimeout(f"{exc}; {CURVE_HINT}") from None


def cmd_stop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stopping = _Stop(settings.control, ClientSecurity.from_config(settings), args.reason)
    stopping.send()
    if not _show_progress(stopping, args.timeout):
        said = (
            f"no collectord daemon answered at {settings.control} within {args.timeout:g} s "
            "(one that comes back may still save this stop: see `collectord status`, "
            "last_saved, before stopping again)"
        )
        raise DaemonTimeout(said if stopping.security is not None else f"{said}; {CURVE_HINT}")
    result = stopping.result()
    print(result["path"])
    if result.get("unconfirmed"):
        print("unconfirmed: " + ", ".join(result["unconfirmed"]), file=sys.stderr)
    if result.get("missing"):
        print(
            "warning: saved while required source(s) were missing: "
            + ", ".join(result["missing"])
            + " (the metadata records since when)",
            file=sys.stderr,
        )
        return SAVED_WITH_MISSING
    return 0


#: A stop that takes longer than this shows the save's progress on stderr.
PROGRESS_AFTER = 1.0
#: How long a stop's reply is waited for while the daemon's status shows the
#: stop under way (the barrier, then the save): ``--timeout`` bounds the
#: waits without such a sign, so a long barrier or save is not taken for a
#: dead daemon (and stopped again by a user who retries).
STOP_LIMIT = 24 * 3600.0
#: At most this often, a stop the daemon shows no sign of is sent again.
SEND_AGAIN_EVERY = 1.0


class _Stop:
    """One ``collectord stop``: its request, sent again under the same
    ``stop_id`` while the daemon shows no sign of it (it restarted, and saved
    it or never journaled it: ``daemon/answers.py``), each in a thread of its
    own; the first answer counts."""

    def __init__(self, control: str, security: ClientSecurity | None, reason: str) -> None:
        self.control = control
        self.security = security
        self.fields = {"reason": reason, "stop_id": secrets.token_hex(8)}
        self.answered = threading.Event()
        self.sent_at = 0.0
        self._outcome: dict[str, Any] | CollectordError | None = None

    def send(self) -> None:
        self.sent_at = time.monotonic()
        threading.Thread(target=self._ask, daemon=True).start()

    def _ask(self) -> None:
        try:
            outcome: dict[str, Any] | CollectordError = request(
                self.control, Command.STOP, self.fields, STOP_LIMIT, self.security
            )
        except CollectordError as exc:
            outcome = exc
        if not self.answered.is_set():
            self._outcome = outcome
            self.answered.set()

    def result(self) -> dict[str, Any]:
        """The stop's reply; raises what refused it."""
        outcome = self._outcome
        if isinstance(outcome, CollectordError):
            raise outcome
        assert outcome is not None
        return outcome


def _show_progress(stopping: _Stop, timeout: float) -> bool:
    """While ``stopping`` waits for its reply, show the save's step now and then.

    Only what the daemon's status says: while no daemon answers, nothing is
    claimed. A daemon that answers but shows no sign of the stop is sent it
    again. False if for ``timeout`` seconds the daemon showed no sign of the
    stop (no answer, or a status with no stop pending and no save).
    """
    progress = time.monotonic()
    stopping.answered.wait(min(PROGRESS_AFTER, timeout))
    shown = None
    while not stopping.answered.is_set():
        try:
            status = request(
                stopping.control, Command.STATUS, {}, min(2.0, timeout), stopping.security
            )
        except CollectordError:
            status = None
        line = _progress(status) if status is not None else None
        if line is not None:
            progress = time.monotonic()
            if line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
        else:
            # Only to a daemon that answers a stop sent again with its save:
            # one of an earlier version would end another experiment.
            if (
                status is not None
                and status.get("stop_ids") is True
                and time.monotonic() - stopping.sent_at > SEND_AGAIN_EVERY
            ):
                stopping.send()
            if time.monotonic() - progress > timeout:
                return stopping.answered.is_set()
        stopping.answered.wait(0.5)
    return True


def _progress(status: dict[str, Any]) -> str | None:
    """The line a stop under way shows for the daemon's status, if any."""
    saving = status.get("saving")
    if saving:
        return f"saving {saving['run_id']}: {saving['step']} ({saving['seconds']:.0f} s)"
    if status.get("stop_pending"):
        return "waiting for the clients' last messages (the stop barrier)"
    return None


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    status = _request(
        settings.control, Command.STATUS, {}, args.timeout, ClientSecurity.from_config(settings)
    )
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def format_status(status: dict[str, Any]) -> str:
    lines = [
        f"collectord {status['version']} (pid {status['pid']} on {status['host']}), "
        f"up {status['uptime']:.0f} s",
        f"  data     {status['endpoints'].get('data')}",
        f"  control  {status['endpoints'].get('control')}",
        f"  output   {status['output']}",
        f"  experiment {status['run_id']} since {status['run_started']}"
        + ("  (stop pending)" if status["stop_pending"] else ""),
        f"  saved    {_counted(status['saved_experiments'], 'experiment')}; last: "
        f"{status['last_saved'] or '-'}",
    ]
    if status.get("saving"):
        saving = status["saving"]
        lines.append(
            f"  saving   {saving['run_id']}: {saving['step']} ({saving['seconds']:.1f} s)"
        )
    if status.get("last_error"):
        lines.append(f"  ERROR    {status['last_error']}")
    if status.get("required"):
        lines.append(f"  required {', '.join(status['required'])}")
    for missing in status.get("missing", []):
        lines.append(f"  MISSING  {missing['name']} since {missing['since']} ({missing['cause']})")
    lines.append(f"  rejected {_counted(status['rejected'], 'message')}")
    if status["sources"]:
        lines.append("  sources:")
    for source in status["sources"]:
        counts = source["messages"]
        state = "connected" if source["connected"] else "gone"
        extra = "".join(
            f", {counts[key]} {word if counts[key] == 1 else words}"
            for key, word, words in (
                ("rejected", "rejected", "rejected"),
                ("duplicates", "duplicate", "duplicates"),
                ("lost", "lost", "lost"),
            )
            if counts[key]
        )
        clock = source.get("clock")
        if clock:
            extra += f", clock offset {offset_text(clock['median_offset'])}"
        lines.append(
            f"    {source['name']:<12} {state:<9} pid {source['pid']} on {source['host']}: "
            f"{_counted(counts['messages'], 'message')}{extra}"
        )
        if source.get("recent_rejections"):  # why: a client is told nothing itself
            lines.append(f"      last rejected: {_cut(source['recent_rejections'][-1])}")
    return "\n".join(lines)


#: Characters of a rejection's reason that ``status`` shows (``--json``: all).
REASON_SHOWN = 200


def _cut(text: str) -> str:
    return text if len(text) <= REASON_SHOWN else text[: REASON_SHOWN - 1] + "…"


def _counted(number: int, noun: str) -> str:
    """``1 message``, ``0 messages``, ``2 messages``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _interval(text: str) -> float:
    seconds = float(text)
    if not seconds >= MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"at least {MIN_INTERVAL:g} (seconds)")
    return seconds


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return number


def _count(text: str) -> int:
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError("0 (all) or more")
    return number


def cmd_watch(args: argparse.Namespace) -> int:
    from . import system, watch

    settings = _settings(args)
    security = ClientSecurity.from_config(settings)
    plain = args.plain or not sys.stdout.isatty()
    if not plain:
        problem = watch.missing_rich()
        if problem:
            print(f"collectord watch: {problem}", file=sys.stderr)
            return 1
    interval = args.interval or (watch.LINES_INTERVAL if plain else watch.TERMINAL_INTERVAL)

    def poll() -> dict[str, Any]:
        return _request(settings.control, Command.STATUS, {}, args.timeout, security)

    # kill, timeout or a closed terminal end it as q and Ctrl-C do: the
    # terminal gets its echo, line editing and cursor back.
    with system.quit_signals_interrupt():
        return watch.run(
            poll,
            interval=interval,
            count=args.count,
            plain=plain,
            keys=sys.stdin,
            hint=f"{settings.control}, every {interval:g} s; q or Ctrl-C quits",
        )


def cmd_keygen(args: argparse.Namespace) -> int:
    public, secret = keygen(Path(args.folder).expanduser(), args.name)
    print(f"public key  {public}  (share: server_public_key / authorized_clients)")
    print(f"secret key  {secret}  (keep private: server_key / client_key)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(
        args.repeat,
        args.messages,
        args.rows,
        args.stream_mb,
        args.json,
        args.tree,
        args.clock,
        args.sessions,
    )


def cmd_show(args: argparse.Namespace) -> int:
    from . import show

    if args.plot:
        problem = show.missing_matplotlib()
        if problem:
            print(f"collectord show: {problem}", file=sys.stderr)
            return 1
    try:
        experiment = show.Experiment(Path(args.folder).expanduser())
    except (OSError, ValueError) as exc:
        print(f"collectord show: {exc}", file=sys.stderr)
        return 1
    for line in show.report(experiment, args.history):
        print(line)
    if args.plot:
        try:
            notes = show.plot(experiment, Path(args.plot).expanduser())
        except OSError as exc:  # a folder that is not there, no permission
            print(f"collectord show: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 1
        for note in notes:
            print(f"collectord show: {note}", file=sys.stderr)
        print(f"\nplot: {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output, args.duration)


def cmd_export(args: argparse.Namespace) -> int:
    from .nwb import export

    path, notes = export(args.folder, args.output, args.map)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(path)
    return 0


HANDLERS = {
    "run": cmd_run,
    "stop": cmd_stop,
    "status": cmd_status,
    "watch": cmd_watch,
    "recover": cmd_recover,
    "keygen": cmd_keygen,
    "bench": cmd_bench,
    "show": cmd_show,
    "demo": cmd_demo,
    "export": cmd_export,
}


#: The exit status of a command whose reader stopped reading (``| head``).
READER_GONE = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status.

    A reader that stops reading its output (``collectord show ... | head``)
    ends it quietly, as it ends a Unix tool, with ``READER_GONE``: no
    traceback. Not the daemon's (``run``): its failures are never quiet.
    """
    command = ""
    try:
        try:
            args = build_parser().parse_args(argv)
            command = args.command
            return HANDLERS[command](args)
        except CollectordError as exc:
            print(f"collectord {command}: {exc}", file=sys.stderr)
            return 1
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # here, not at exit, where a closed pipe is caught
    except BrokenPipeError:
        if command == "run":
            raise
        _stdout_to_null()
        return READER_GONE


def _stdout_to_null() -> None:
    """Point stdout at the null device, so that nothing more is written to a
    pipe whose reader is gone (Python flushes stdout again at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no stdout file
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
