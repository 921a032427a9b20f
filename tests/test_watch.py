"""``collectord watch``: what it draws from status samples, its plain lines,
the message when rich is missing, and the command against a running daemon."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, wait_for
from rich.console import Console

from collectord import Client
from collectord import watch as watch_module
from collectord.cli import main
from collectord.errors import DaemonTimeout
from collectord.watch import (
    COLUMNS,
    INSTALL,
    Column,
    Sample,
    View,
    line,
    missing_rich,
    render,
    run,
    views,
)

WALL = dt.datetime(2024, 11, 24, 10, 31, 5, tzinfo=dt.timezone.utc)


def source(
    name: str,
    messages: int,
    *,
    connected: bool = True,
    session: str | None = None,
    lost: int = 0,
    rejected: int = 0,
    gaps: list[list[int]] | None = None,
) -> dict[str, Any]:
    """A source as the daemon's status describes it."""
    return {
        "name": name,
        "session": session or f"{name}-session",
        "host": "rig1",
        "pid": 4242,
        "program": "acquire.py",
        "versions": {},
        "connected": connected,
        "last_seq": messages + rejected + lost,
        "messages": {
            "messages": messages,
            "rejected": rejected,
            "duplicates": 0,
            "out_of_order": 0,
            "lost": lost,
        },
        "gaps": gaps or [],
        "recent_rejections": [],
    }


def status(*sources: dict[str, Any], uptime: float = 10.0, **fields: Any) -> dict[str, Any]:
    """A status reply as ``collectord status --json`` prints it."""
    return {
        "version": "0.1.0",
        "protocol": 1,
        "host": "rig1",
        "pid": 1234,
        "uptime": uptime,
        "endpoints": {"data": "tcp://127.0.0.1:13550", "control": "tcp://127.0.0.1:13551"},
        "curve": False,
        "output": "/data/rig1",
        "last_config": "/data/rig1/last_config.json",
        "run_id": "20241124T103000-abcdef",
        "run_started": "2024-11-24T10:30:00+00:00",
        "restarts": [],
        "stop_pending": False,
        "saving": None,
        "saved_experiments": 0,
        "last_saved": None,
        "last_error": None,
        "sources": list(sources),
        "unidentified": {"rejected": 0, "recent_rejections": []},
        "rejected": sum(s["messages"]["rejected"] for s in sources),
        "forgotten": {"sessions": 0, "messages": {"messages": 0}},
        **fields,
    }


def sample(reply: Mapping[str, Any] | None, at: float, error: str = "") -> Sample:
    return Sample(reply, at, WALL + dt.timedelta(seconds=at), error)


def text(view: View, width: int = 140) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(view))
    return console.export_text()


def row(rendered: str, name: str) -> list[str]:
    """The cells of a source's row in the table, split on blanks."""
    (found,) = [ln.split() for ln in rendered.splitlines() if ln.split()[:1] == [name]]
    return found


# -- what it draws ------------------------------------------------------------------


def test_the_view_shows_each_source_the_experiment_the_save_and_the_last_save() -> None:
    camera, tracking = "camera", "tracking"
    first = status(source(camera, 100), source(tracking, 40, connected=False), uptime=10.0)
    second = status(
        source(camera, 150),
        source(tracking, 40, connected=False, lost=7, rejected=3, gaps=[[5, 9], [20, 21]]),
        uptime=10.5,
        saving={"run_id": "20241124T102000-123456", "step": "writing metadata", "seconds": 1.25},
        saved_experiments=2,
        last_saved="/data/rig1/241124/102000/102000_metadata.json",
    )
    *_, view = views([sample(first, 0.0), sample(second, 0.5)])
    rendered = text(view)

    # source, state, required, msg/s, messages, experiment, last heard, gaps, lost,
    # rejected, clock offset (this status says nothing of required sources, nor
    # of experiments)
    assert row(rendered, camera) == [
        *["camera", "connected", "-", "100", "150", "-", "0.0", "s", "ago", "0", "0", "0", "-"]
    ]
    cells = row(rendered, tracking)
    assert cells[:5] == ["tracking", "gone", "-", "0.0", "40"]
    assert cells[-4:] == ["2", "7", "3", "-"]
    assert "20241124T103000-abcdef, running 0:01:05" in rendered
    assert "saving      20241124T102000-123456: writing metadata (1.2 s)" in rendered
    assert "last save   /data/rig1/241124/102000/102000_metadata.json (2 saved)" in rendered
    assert "190 since the daemon started, 100 msg/s, rejected 3" in rendered
    assert "collectord 0.1.0, pid 1234 on rig1, up 0:00:10" in rendered


def test_the_table_has_one_column_per_entry_of_columns() -> None:
    """issue 12 items 1 and 2 add columns: each is one entry in COLUMNS."""
    view = views([sample(status(source("camera", 5)), 0.0)])[0]
    header = next(ln for ln in text(view).splitlines() if ln.split()[:1] == ["source"])
    assert header.split() == [word for c in COLUMNS for word in c.header.split()]


def test_a_column_added_to_the_list_is_drawn_in_the_table_and_in_the_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offset = Column(
        "clock offset",
        lambda row: f"{row.source.get('clock_offset', '-')}",
        line="clock offset {}",
    )
    monkeypatch.setattr(watch_module, "COLUMNS", [*COLUMNS, offset])
    reply = status(source("camera", 5) | {"clock_offset": "+3 ms"}, source("stim", 1))
    view = views([sample(reply, 0.0)])[0]
    rendered = text(view)
    assert "clock offset" in rendered
    assert row(rendered, "camera")[-2:] == ["+3", "ms"]
    assert row(rendered, "stim")[-1] == "-"
    assert "camera (connected, required -, - msg/s, messages 5, " in line(view)
    assert "clock offset +3 ms)" in line(view)


def test_each_source_s_clock_offset_is_its_median_offset() -> None:
    def timed(name: str, offset: float) -> dict[str, Any]:
        clock = {"median_offset": offset, "offset_spread": 1e-4, "median_rtt": 3e-4}
        return source(name, 5) | {"clock": {**clock, "count": 4, "kept": 4}}

    reply = status(timed("camera", 0.01234), timed("scope", -2.5), source("stim", 1))
    view = views([sample(reply, 0.0)])[0]
    rendered = text(view)
    assert row(rendered, "camera")[-2:] == ["+12.3", "ms"]
    assert row(rendered, "scope")[-2:] == ["-2.500", "s"]
    assert row(rendered, "stim")[-1] == "-"
    assert "clock offset +12.3 ms)" in line(view)
    assert "clock offset -)" in line(view)


def test_rates_come_from_the_daemons_uptime_and_last_heard_from_moving_counters() -> None:
    samples = [
        sample(status(source("camera", 100), uptime=10.0), 0.0),
        # The answer came 1 s later, but the daemon's clock says 0.5 s passed.
        sample(status(source("camera", 150), source("stim", 10), uptime=10.5), 1.0),
        sample(status(source("camera", 150), source("stim", 10), uptime=11.0), 1.5),
        sample(status(source("camera", 150), source("stim", 12), uptime=13.0), 3.5),
    ]
    first, second, third, fourth = (text(view) for view in views(samples))

    def rate_messages_heard(rendered: str, name: str) -> list[str]:
        cells = row(rendered, name)
        return [cells[3], cells[4], cells[6]]

    # The first sample has nothing to compare with.
    assert rate_messages_heard(first, "camera") == ["-", "100", "-"]
    assert rate_messages_heard(second, "camera") == ["100", "150", "0.0"]
    # stim appeared between two samples: all its messages are new.
    assert rate_messages_heard(second, "stim") == ["20.0", "10", "0.0"]
    assert rate_messages_heard(third, "camera") == ["0.0", "150", "0.5"]
    assert rate_messages_heard(fourth, "camera") == ["0.0", "150", "2.5"]
    assert rate_messages_heard(fourth, "stim") == ["1.0", "12", "0.0"]


def test_a_source_silent_since_the_watch_began_is_heard_over_that_long_ago() -> None:
    samples = [
        sample(status(source("camera", 100), uptime=10.0), 0.0),
        sample(status(source("camera", 100), uptime=22.0), 12.0),
    ]
    view = views(samples)[-1]
    assert row(text(view), "camera")[6:10] == ["over", "12", "s", "ago"]
    assert "last heard over 12 s ago" in line(view)


def test_a_restarted_daemon_shows_no_rate_from_its_old_counters() -> None:
    before = status(source("camera", 500), uptime=100.0)
    after = status(source("camera", 20), uptime=1.0) | {"pid": 999}
    view = views([sample(before, 0.0), sample(after, 0.5)])[-1]
    assert row(text(view), "camera")[3:5] == ["-", "20"]
    assert "- msg/s" in line(view)


def test_forgotten_sessions_keep_the_total_rate_steady() -> None:
    """A session that said bye is forgotten: its messages move to ``forgotten``."""
    before = status(source("camera", 100), source("old", 50), uptime=10.0)
    after = status(source("camera", 110), uptime=11.0)
    after["forgotten"] = {"sessions": 1, "messages": {"messages": 50}}
    rendered = text(views([sample(before, 0.0), sample(after, 1.0)])[-1])
    assert "160 since the daemon started, 10.0 msg/s" in rendered


def test_a_status_without_fields_is_drawn_with_what_it_has() -> None:
    for reply in [{}, {"sources": [{"name": "camera"}]}, {"sources": "nonsense", "uptime": "?"}]:
        view = views([sample(reply, 0.0), sample(reply, 0.5)])[-1]
        rendered = text(view)
        assert "experiment" in rendered
        assert line(view).startswith("2024-11-24 10:31:05 experiment -, running -")
    view = views([sample({"sources": [{"name": "camera"}]}, 0.0)])[0]
    assert row(text(view), "camera") == ["camera", *["-"] * 10]


def test_streams_are_shown_when_the_status_gives_them() -> None:
    reply = status(source("tracking", 5))
    assert "streams" not in text(views([sample(reply, 0.0)])[0])
    for streams in (
        [{"path": "tracking/tail", "rows": 12000}, {"path": "camera/frames", "rows": 310}],
        {"tracking/tail": {"rows": 12000}, "camera/frames": 310},
    ):
        view = views([sample(reply | {"streams": streams}, 0.0)])[0]
        assert "streams     tracking/tail 12000 rows, camera/frames 310 rows" in text(view)
        assert "streams tracking/tail 12000 rows, camera/frames 310 rows" in line(view)


def test_required_sources_missing_or_not_are_shown_from_a_status() -> None:
    camera = source("camera", 120) | {
        "last_heard": "2024-11-24T10:31:03+00:00",
        "experiment_messages": {"messages": 20},
    }
    tracking = source("tracking", 40, connected=False) | {
        "last_heard": "2024-11-24T10:30:40+00:00",
        "experiment_messages": {"messages": 5},
    }
    spare = source("spare", 3) | {"last_heard": None, "experiment_messages": {"messages": 3}}
    reply = status(
        camera,
        tracking,
        spare,
        time="2024-11-24T10:31:05+00:00",
        required=["camera", "tracking", "stimulus"],
        missing=[
            {"name": "tracking", "since": "2024-11-24T10:30:40+00:00", "cause": "disconnected"},
            {"name": "stimulus", "since": "2024-11-24T10:30:00+00:00", "cause": "not connected"},
        ],
        streams=[{"path": "tracking/tail", "source": "tracking", "rows": 12000, "bytes": 288000}],
    )
    view = views([sample(reply, 0.0)])[0]
    rendered = text(view, width=160)
    # source, state, required, msg/s, messages, experiment, last heard (by the
    # daemon's clock: its status's time), gaps, lost, rejected
    assert row(rendered, "camera") == [
        *["camera", "connected", "yes", "-", "120", "20", "2.0", "s", "ago", "0", "0", "0", "-"]
    ]
    assert row(rendered, "tracking")[:9] == [
        *["tracking", "missing", "yes", "-", "40", "5", "25", "s", "ago"]
    ]
    assert row(rendered, "spare")[:3] == ["spare", "connected", "no"]
    # A required source that never connected has a row of its own.
    assert row(rendered, "stimulus") == ["stimulus", "missing", "yes", *["-"] * 8]
    assert (
        "required    camera, tracking, stimulus; MISSING: tracking (missing since 10:30:40, "
        "disconnected), stimulus (missing since 10:30:00, not connected)"
    ) in rendered
    assert "messages    28 this experiment, 163 since the daemon started" in rendered
    assert "streams     tracking/tail 12000 rows (288.0 kB)" in rendered
    plain = line(view)
    assert "required camera, tracking, stimulus; MISSING: tracking" in plain
    assert "stimulus (missing, required yes, - msg/s, messages -, " in plain
    assert "camera (connected, required yes, - msg/s, messages 120, this experiment 20, " in plain

    everyone = reply | {"missing": [], "required": ["camera"]}
    assert "required    camera: all connected" in text(views([sample(everyone, 0.0)])[0])


def test_a_save_failure_and_a_pending_stop_are_shown() -> None:
    reply = status(last_error="cannot write /data/rig1: disk full", stop_pending=True)
    view = views([sample(reply, 0.0)])[0]
    rendered = text(view)
    assert "error       cannot write /data/rig1: disk full" in rendered
    assert "running 0:01:05, stop pending" in rendered
    assert "no source has sent anything yet" in rendered
    assert "error cannot write /data/rig1: disk full" in line(view)


def test_no_answer_is_shown_above_the_last_answer() -> None:
    views_ = views(
        [
            sample(status(source("camera", 100)), 0.0),
            sample(None, 2.5, "no collectord daemon answered at tcp://x:1 within 2 s"),
        ]
    )
    rendered = text(views_[-1])
    first_line = rendered.splitlines()[0]
    assert first_line.startswith("no answer: no collectord daemon answered at tcp://x:1")
    assert "(last answer 2.5 s ago)" in first_line
    assert row(rendered, "camera")[:5] == ["camera", "connected", "-", "-", "100"]
    assert line(views_[-1]) == (
        "2024-11-24 10:31:07 no answer: no collectord daemon answered at tcp://x:1 "
        "within 2 s (last answer 2.5 s ago)"
    )


# -- plain lines --------------------------------------------------------------------


class FakeDaemon:
    """A poll function answering from a list; it records when each call began."""

    def __init__(self, *replies: Mapping[str, Any] | BaseException) -> None:
        self.replies = list(replies)
        self.calls: list[float] = []
        self.busy = False

    def __call__(self) -> Mapping[str, Any]:
        assert not self.busy, "two requests at once"
        self.busy = True
        try:
            self.calls.append(time.monotonic())
            reply = self.replies.pop(0)
            if isinstance(reply, BaseException):
                raise reply
            return reply
        finally:
            self.busy = False


def test_plain_mode_prints_one_line_a_refresh() -> None:
    fake = FakeDaemon(
        status(source("camera", 100), uptime=10.0),
        DaemonTimeout("no collectord daemon answered at tcp://x:1 within 2 s"),
        status(source("camera", 300), uptime=12.0),
    )
    out = io.StringIO()
    assert run(fake, interval=0.0, count=3, plain=True, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and len(fake.calls) == 3
    for printed in lines:
        dt.datetime.strptime(printed[:19], "%Y-%m-%d %H:%M:%S")
    assert "camera (connected, required -, - msg/s, messages 100, " in lines[0]
    assert "no answer: no collectord daemon answered" in lines[1]
    # The rate spans the missed answer: 200 messages in the daemon's 2 s.
    assert "camera (connected, required -, 100 msg/s, messages 300, " in lines[2]


def test_plain_mode_waits_the_interval_between_requests() -> None:
    fake = FakeDaemon(*[status(uptime=float(i)) for i in range(4)])
    run(fake, interval=0.2, count=4, plain=True, out=io.StringIO())
    assert len(fake.calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(fake.calls)]
    assert min(gaps) >= 0.19, gaps


def test_the_exit_status_is_1_when_the_last_refresh_got_no_answer() -> None:
    fake = FakeDaemon(status(), DaemonTimeout("no collectord daemon answered"))
    out = io.StringIO()
    assert run(fake, interval=0.0, count=2, plain=True, out=out) == 1
    assert "no answer" in out.getvalue().splitlines()[-1]


def test_ctrl_c_quits_quietly() -> None:
    fake = FakeDaemon(status(source("camera", 1)), KeyboardInterrupt())
    out = io.StringIO()
    assert run(fake, interval=0.0, plain=True, out=out) == 0
    assert len(out.getvalue().splitlines()) == 1


# -- rich missing, and the command line ---------------------------------------------


def test_missing_rich_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_rich() is None
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich now fails
    message = missing_rich()
    assert message is not None and INSTALL in message


def test_too_old_a_rich_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "12.6.0")
    message = missing_rich()
    assert message is not None and "rich 12.6.0 is installed" in message
    assert INSTALL in message


def test_the_command_refuses_the_terminal_view_without_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["watch", "--once", "--control", "tcp://127.0.0.1:9", "--timeout", "0.2"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "collectord watch: the live view needs rich 13 or later: pip install 'collectord[watch]'"
    )


def test_plain_lines_need_no_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    code = main(["watch", "--once", "--control", "tcp://127.0.0.1:9", "--timeout", "0.2"])
    assert code == 1  # no daemon there
    captured = capsys.readouterr()
    assert "no answer: no collectord daemon answered at tcp://127.0.0.1:9" in captured.out
    assert "rich" not in captured.err


def test_the_interval_has_a_floor(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["watch", "--interval", "0.01"])
    assert exited.value.code == 2
    assert "at least 0.1" in capsys.readouterr().err


def test_the_help_and_the_readme_describe_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["watch", "--help"])
    shown = capsys.readouterr().out
    assert "example:\n  collectord watch\n" in shown
    assert INSTALL in shown
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (entry,) = [ln for ln in readme.splitlines() if ln.startswith("| `collectord watch")]
    for option in ("--interval", "--count", "--once", "--plain", "--control"):
        assert option in entry
    assert INSTALL in readme


# -- against a running daemon -------------------------------------------------------


def watch_command(daemon: DaemonProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "collectord", "watch", "--control", daemon.control, *args]


def test_the_command_shows_the_rig_in_plain_lines(daemon: DaemonProcess) -> None:
    with (
        Client("camera", daemon.data, daemon.control) as camera,
        Client("stimulus", daemon.data, daemon.control) as stimulus,
    ):
        for i in range(25):
            camera.set_params("camera/settings", exposure=float(i))
        stimulus.add_data("stimulus/log", [1, 2, 3])
        camera.sync()
        stimulus.sync()
        wait_for(
            lambda: all("clock" in s for s in daemon.status()["sources"]),
            what="both clocks measured",
        )
        started = time.monotonic()
        done = subprocess.run(
            watch_command(daemon, "--count", "3", "--interval", "0.2"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    for printed in lines:
        assert "camera (connected, " in printed
        assert ", messages 25, " in printed
        assert "stimulus (connected, " in printed
        assert ", messages 1, " in printed
    assert "camera (connected, required no, 0.0 msg/s, messages 25, " in lines[-1]
    # The same machine's clock: an offset of well under a second, in ms.
    assert re.search(r"camera \(.*clock offset [+-]\d+\.\d ms\)", lines[-1]), lines[-1]
    assert took >= 0.4  # three refreshes, 0.2 s apart


def test_the_command_shows_a_missing_required_source(make_daemon) -> None:
    daemon = make_daemon(extra=("--require", "camera,stimulus"))
    with Client("camera", daemon.data, daemon.control) as camera:
        camera.set_params("camera/settings", exposure=1.0)
        camera.sync()
        done = subprocess.run(
            watch_command(daemon, "--once"), capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    assert "required camera, stimulus; MISSING: stimulus (missing since " in done.stdout
    assert "camera (connected, required yes, - msg/s, messages 1, this experiment 1, " in (
        done.stdout
    )
    assert "stimulus (missing, required yes, " in done.stdout


def pty_output(master: int, until: bytes, timeout: float) -> Iterator[bytes]:
    """What the terminal shows, chunk by chunk, until ``until`` appears or it closes."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        if not select.select([master], [], [], 0.1)[0]:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            return
        if not chunk:
            return
        seen += chunk
        yield chunk


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
@pytest.mark.parametrize("quit_with", ["q", "ctrl-c", "SIGTERM", "SIGHUP"])
def test_the_command_draws_the_live_view_on_a_terminal_and_quits(
    daemon: DaemonProcess, quit_with: str
) -> None:
    import pty
    import signal
    import termios

    with Client("camera", daemon.data, daemon.control) as camera:
        for i in range(7):
            camera.set_params("camera/settings", exposure=float(i))
        camera.sync()
        master, terminal = pty.openpty()
        settings = termios.tcgetattr(terminal)
        env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
        watching = subprocess.Popen(
            watch_command(daemon),
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
        )
        try:
            shown = b"".join(pty_output(master, b"q or Ctrl-C quits", 30))
            assert b"camera" in shown and b"connected" in shown, shown
            assert watching.poll() is None  # it goes on until told to quit
            if quit_with == "q":
                os.write(master, b"q")
            elif quit_with == "ctrl-c":
                watching.send_signal(signal.SIGINT)
            else:  # kill, timeout, the terminal closing: the same clean exit
                watching.send_signal(getattr(signal, quit_with))
            assert watching.wait(10) == 0
            shown += b"".join(pty_output(master, b"\x1b[?25h", 2))
            # The terminal is left as it was found: echo and line editing back on.
            assert termios.tcgetattr(terminal) == settings
        finally:
            if watching.poll() is None:
                watching.kill()
                watching.wait()
            os.close(terminal)
            os.close(master)
    screen = shown.decode(errors="replace")
    assert "source" in screen and "msg/s" in screen
    assert "\x1b[?25h" in screen  # the cursor shown again at exit
