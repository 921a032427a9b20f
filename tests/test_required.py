"""Required sources: missing names in status, at a stop, after a kill -9 of a
client and of the daemon (real daemons, real client processes)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import rig_processes
from conftest import DaemonProcess, run_cli, wait_for

from collectord import Client, load_json
from collectord.cli import SAVED_WITH_MISSING, _settings, build_parser, main
from collectord.required import MAX_LISTED, Required


def missing(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in daemon.status()["missing"]}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_a_stop_while_a_required_source_is_missing_saves_and_says_so(make_daemon) -> None:
    daemon = make_daemon(extra=("--require", "a,b"))
    assert daemon.status()["required"] == ["a", "b"]
    with Client("a", daemon.data, daemon.control) as a:
        a.set_params("a/settings", gain=2)
        a.sync()
        wait_for(lambda: list(missing(daemon)) == ["b"], what="only b missing")
        assert missing(daemon)["b"]["cause"] == "not connected"
        shown = run_cli("status", "--control", daemon.control)
        assert "  required a, b\n" in shown.stdout
        assert f"  MISSING  b since {missing(daemon)['b']['since']} (not connected)\n" in (
            shown.stdout
        )
        stopped = run_cli("stop", "--control", daemon.control, "--reason", "b never came")
        assert stopped.returncode == SAVED_WITH_MISSING, stopped.stderr
        assert "missing: b " in stopped.stderr
        saved = load_json(stopped.stdout.strip())
        account = saved["collectord"]
        assert saved["a"]["settings"] == {"gain": 2}  # saved all the same
        assert account["required"] == ["a", "b"]
        assert account["missing_at_stop"] == ["b"]
        # b: missing for the whole experiment, in one interval.
        b = account["missing"]["b"]
        assert b["count"] == 1
        assert b["intervals"] == [
            {"from": account["started"], "to": account["stopped"], "cause": "not connected"}
        ]
        whole = (at(account["stopped"]) - at(account["started"])).total_seconds()
        assert b["seconds"] == pytest.approx(whole, abs=0.002)
        # a: missing from the start until it said hello, and not since.
        [before_a] = account["missing"]["a"]["intervals"]
        assert before_a["from"] == account["started"]
        assert at(before_a["from"]) < at(before_a["to"]) < at(account["stopped"])

        # The next experiment: b connects, and a stop with nothing missing exits 0.
        with Client("b", daemon.data, daemon.control) as b_client:
            b_client.sync()
            wait_for(lambda: not missing(daemon), what="nothing missing")
            again = run_cli("stop", "--control", daemon.control)
        assert again.returncode == 0, again.stderr
        account = load_json(again.stdout.strip())["collectord"]
        assert account["missing_at_stop"] == []
        assert account["missing"]["a"] == {"intervals": [], "count": 0, "seconds": 0.0}
        # b was missing from this experiment's start until it connected.
        [before_b] = account["missing"]["b"]["intervals"]
        assert before_b["from"] == account["started"]
        assert before_b["cause"] == "not connected"
        assert at(before_b["to"]) < at(account["stopped"])


def test_a_name_is_present_while_any_session_of_it_is_connected(make_daemon) -> None:
    """A restarted process opens a new session under the same name."""
    daemon = make_daemon(extra=("--require", "camera"))
    first = Client("camera", daemon.data, daemon.control)
    with Client("camera", daemon.data, daemon.control):  # the restarted process

        def connected() -> list[bool]:
            return [s["connected"] for s in daemon.status()["sources"]]

        wait_for(lambda: connected() == [True, True], what="both cameras connected")
        first.close()
        assert sorted(connected()) == [False, True]
        assert not missing(daemon)
    gone = wait_for(lambda: missing(daemon).get("camera"), what="the camera missing")
    assert gone["cause"] == "said bye"
    account = load_json(daemon.stop()["path"])["collectord"]
    # Missing before either connected, and after the second said bye: not between.
    assert account["missing"]["camera"]["count"] == 2
    assert account["missing_at_stop"] == ["camera"]


def test_a_stop_reply_names_no_one_without_required_sources(daemon: DaemonProcess) -> None:
    with Client("a", daemon.data, daemon.control) as a:
        a.set_params("a/x", v=1)
        reply = daemon.stop()
    assert reply["missing"] == []
    assert daemon.status()["required"] == [] and daemon.status()["missing"] == []
    account = load_json(reply["path"])["collectord"]
    assert "required" not in account and "missing" not in account


def test_a_required_client_killed_is_logged_recorded_and_survives_a_daemon_crash(
    make_daemon, tmp_path: Path
) -> None:
    daemon = make_daemon(extra=("--require", "camera"))
    spawn = multiprocessing.get_context("spawn")
    done = spawn.Event()
    camera = spawn.Process(
        target=rig_processes.publish_sync_and_hang,
        args=("camera", daemon.data, daemon.control, 10, done),
    )
    camera.start()
    try:
        assert done.wait(120), "the camera did not finish publishing"
        wait_for(lambda: not missing(daemon), what="the camera connected")
        killed = dt.datetime.now().astimezone()
        os.kill(camera.pid, signal.SIGKILL)
    finally:
        camera.join(30)
    gone = wait_for(lambda: missing(daemon).get("camera"), what="the camera seen gone")
    assert gone["cause"] == "disconnected"
    assert at(gone["since"]) >= killed
    # Logged at once, with the name and the time.
    warning = f"WARNING required source camera is missing since {gone['since'][:23]}"
    wait_for(lambda: warning in daemon.log.read_text(), what="the warning in the log")
    assert "(disconnected)" in daemon.log.read_text()

    # The record is journaled: a sync of another client flushes it to disk.
    with Client("observer", daemon.data, daemon.control) as observer:
        observer.set_params("observer/x", v=1)
        observer.sync()
    daemon.kill9()
    daemon.start()
    assert missing(daemon)["camera"]["since"] == gone["since"]
    stopped = run_cli("stop", "--control", daemon.control)
    assert stopped.returncode == SAVED_WITH_MISSING, stopped.stderr
    account = load_json(stopped.stdout.strip())["collectord"]
    assert len(account["restarts"]) == 1
    assert account["missing_at_stop"] == ["camera"]
    # Missing from the start until it connected, then from the kill to the stop:
    # the restart did not end that interval, nor begin another.
    first, second = account["missing"]["camera"]["intervals"]
    assert first["cause"] == "not connected"
    assert second == {"from": gone["since"], "to": account["stopped"], "cause": "disconnected"}
    assert account["missing"]["camera"]["count"] == 2


def test_require_flag_refuses_bad_names_clearly(tmp_path: Path, capsys) -> None:
    output = str(tmp_path / "out")
    assert main(["run", "--output", output, "--require", "camera,rig/2"]) == 1
    assert "a name in --require 'rig/2' contains a path separator" in capsys.readouterr().err
    assert main(["run", "--output", output, "--require", "camera,camera"]) == 1
    assert "--require names 'camera' twice" in capsys.readouterr().err
    assert not Path(output).exists()  # refused before the daemon touched anything


def test_the_require_flag_overrides_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "rig.toml"
    config.write_text('[sources]\nrequired = ["camera", "tracking"]\n')

    def required(*flags: str) -> tuple[str, ...]:
        args = build_parser().parse_args(["run", "--config", str(config), *flags])
        return _settings(args).required

    assert required() == ("camera", "tracking")
    assert required("--require", " stimulus , camera") == ("stimulus", "camera")
    assert required("--require", "") == ()


# -- the tracker alone -----------------------------------------------------------------


T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def t(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_tracker_counts_absences_and_carries_the_missing_into_the_next_experiment() -> None:
    required = Required(["camera", "stimulus"])
    required.begin(t(0))
    assert [entry["name"] for entry in required.status()] == ["camera", "stimulus"]
    changes = required.update(["camera", "stimulus", "other"], t(1), {})
    assert [(c.name, c.missing) for c in changes] == [("camera", False), ("stimulus", False)]
    assert required.update(["stimulus"], t(3), {"camera": "disconnected"})[0].cause == (
        "disconnected"
    )
    assert required.update(["stimulus"], t(4), {}) == []  # nothing new
    account = required.account(t(10))
    assert account["missing_at_stop"] == ["camera"]
    assert account["missing"]["camera"]["seconds"] == 8.0
    assert account["missing"]["stimulus"]["seconds"] == 1.0
    assert account["missing"]["camera"]["intervals"][1] == {
        "from": t(3).isoformat(),
        "to": t(10).isoformat(),
        "cause": "disconnected",
    }
    # The next experiment begins with the camera still missing, for the same cause;
    # status keeps saying since when it has been missing.
    assert required.carried() == {"camera": "disconnected"}
    required.begin(t(10))
    assert required.account(t(12))["missing"]["camera"]["intervals"] == [
        {"from": t(10).isoformat(), "to": t(12).isoformat(), "cause": "disconnected"}
    ]
    assert required.status() == [
        {"name": "camera", "since": t(3).isoformat(), "cause": "disconnected"}
    ]


def test_tracker_lists_a_bounded_number_of_absences_but_counts_them_all() -> None:
    required = Required(["camera"])
    required.begin(t(0))
    for index in range(MAX_LISTED + 50):
        required.update(["camera"], t(2 * index + 1), {})
        required.update([], t(2 * index + 2), {})
    account = required.account(t(2 * (MAX_LISTED + 50) + 1))
    camera = account["missing"]["camera"]
    assert len(camera["intervals"]) == MAX_LISTED
    assert camera["count"] == MAX_LISTED + 51  # the one at the start, and one per flap
    assert camera["seconds"] == MAX_LISTED + 51


def test_tracker_ignores_names_it_does_not_require_and_absences_after_the_stop() -> None:
    required = Required(["camera"])
    required.begin(t(0), {"camera": "the daemon restarted", "gone": "not connected"})
    assert not required.mark("gone", False, t(1), "")
    required.mark("camera", False, t(1), "")
    required.mark("camera", True, t(20), "disconnected")  # after a journaled stop at 10
    account = required.account(t(10))
    assert account["missing_at_stop"] == []
    assert account["missing"]["camera"]["seconds"] == 1.0
    assert Required([]).account(t(1)) == {}
