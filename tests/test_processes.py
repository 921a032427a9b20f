"""Several publisher processes and a stopper: the stop barrier, signals, the CLI."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
import rig_processes
from conftest import DaemonProcess, run_cli, wait_for

from collectord import Client, journal, load_json
from collectord.control import request
from collectord.demo import CLOCKS
from collectord.protocol import Command


def test_three_publishers_and_a_fourth_that_stops(daemon: DaemonProcess, figures) -> None:
    """The stopper stops the instant the others return from publishing: nothing is lost."""
    spawn = multiprocessing.get_context("spawn")
    release = spawn.Event()
    counts = {"camera": 20_000, "tracking": 3000, "stimulus": 3000}
    names = list(counts)
    done = {name: spawn.Event() for name in names}
    workers = [
        spawn.Process(
            target=rig_processes.publish_then_wait,
            args=(name, daemon.data, daemon.control, counts[name], done[name], release),
        )
        for name in names
    ]
    for worker in workers:
        worker.start()
    try:
        for name in names:
            assert done[name].wait(120), f"{name} did not finish publishing"
        with Client("stopper", daemon.data, daemon.control) as stopper:
            saved = load_json(stopper.stop("protocol end"))
    finally:
        release.set()
        for worker in workers:
            worker.join(60)
    for name, count in counts.items():
        assert saved[name]["params"] == {"index": count - 1, "label": f"{name}-{count - 1}"}
        assert saved[name]["progress"] == count - 1
    assert saved["collectord"]["unconfirmed"] == []
    by_name = {s["name"]: s for s in saved["collectord"]["sources"]}
    for name, count in counts.items():
        messages = by_name[name]["messages"]
        assert messages["messages"] == count + count // 100 + 1
        assert messages["lost"] == 0
    assert all(worker.exitcode == 0 for worker in workers)
    figures(
        sent=sum(count + count // 100 + 1 for count in counts.values()),
        saved=sum(by_name[n]["messages"]["messages"] for n in names),
        lost=sum(by_name[n]["messages"]["lost"] for n in names),
        faults="stop requested the moment the publishers returned, nothing synced",
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_experiment_and_exits_zero(daemon: DaemonProcess, signum) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=2.0)
        client.add_data("camera/frames", 100)
    daemon.process.send_signal(signum)
    assert daemon.process.wait(60) == 0
    (path,) = daemon.output.glob("*/*/*_metadata.json")
    saved = load_json(path)
    assert saved["camera"] == {"settings": {"exposure": 2.0}, "frames": 100}
    assert saved["collectord"]["stopped_by"]["reason"] == signal.Signals(signum).name
    assert load_json(daemon.output / "last_config.json") == {
        "camera": {"settings": {"exposure": 2.0}}
    }


def test_signal_after_a_save_writes_no_empty_experiment(daemon: DaemonProcess) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=2.0)
        client.stop()
    assert daemon.terminate() == 0
    assert len(list(daemon.output.glob("*/*/*_metadata.json"))) == 1


def test_cli_status_and_stop(daemon: DaemonProcess) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=2.0)
        client.sync()
        status = run_cli("status", "--control", daemon.control, "--json")
        assert status.returncode == 0, status.stderr
        import json

        parsed = json.loads(status.stdout)
        assert [s["name"] for s in parsed["sources"]] == ["camera"]
        assert parsed["rejected"] == 0

        # The clock offset the client measured at its hello, once it is in.
        wait_for(
            lambda: daemon.status()["sources"][0].get("clock"), what="the camera's clock offset"
        )
        human = run_cli("status", "--control", daemon.control)
        assert "camera" in human.stdout and "connected" in human.stdout
        assert re.search(r"camera .* clock offset [+-]\d+\.\d ms", human.stdout), human.stdout

        stopped = run_cli("stop", "--control", daemon.control, "--reason", "from the CLI")
        assert stopped.returncode == 0, stopped.stderr
        path = pathlib.Path(stopped.stdout.strip())
        saved = load_json(path)
        assert saved["collectord"]["stopped_by"]["reason"] == "from the CLI"
        assert saved["camera"]["settings"] == {"exposure": 2.0}
        after = json.loads(run_cli("status", "--control", daemon.control, "--json").stdout)
        assert after["last_saved"] == str(path)


def test_cli_status_counts_one_in_the_singular(daemon: DaemonProcess) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=2.0)
        client.sync()
        human = run_cli("status", "--control", daemon.control)
    assert human.returncode == 0, human.stderr
    assert re.search(r"camera .*: 1 message(,|$)", human.stdout, re.MULTILINE), human.stdout
    assert "rejected 0 messages" in human.stdout
    assert "saved    0 experiments;" in human.stdout
    assert "last rejected" not in human.stdout


def test_cli_status_says_why_a_source_was_last_rejected(daemon: DaemonProcess) -> None:
    """A client is not told that its message was refused: the plain status
    said only how many were, the reason was in --json and the daemon's log."""
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=2.0)
        client.add_data("camera/settings/exposure", 3)  # a parameter is there
        client.sync()
        human = run_cli("status", "--control", daemon.control)
    assert human.returncode == 0, human.stderr
    assert re.search(
        r"camera .*1 rejected.*\n      last rejected: .*'camera/settings/exposure' holds a param",
        human.stdout,
    ), human.stdout


def test_cli_without_a_daemon_fails_clearly(ipc) -> None:
    for command in ("status", "stop"):
        result = run_cli(command, "--control", ipc("nobody"), "--timeout", "0.3")
        assert result.returncode == 1
        assert "no collectord daemon answered" in result.stderr


def into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``collectord ARGS`` with stdout a pipe whose reader is already gone, as
    ``collectord ARGS | head -1`` once head has its line."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "collectord", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)


def test_a_reader_that_stops_reading_ends_each_command_quietly(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=2.0)
        saved = pathlib.Path(client.stop()).parent
        commands = [
            ["status", "--control", daemon.control],
            ["status", "--json", "--control", daemon.control],
            ["watch", "--once", "--control", daemon.control],
            ["show", str(saved)],
            ["keygen", str(tmp_path / "keys"), "--name", "rig"],
        ]
        for command in commands:
            result = into_a_closed_pipe(*command)
            assert (result.returncode, result.stderr) == (1, ""), command


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_at_once(ipc, timeout: str) -> None:
    # A negative one waited for ever for a dead daemon; NaN and infinity ended in
    # a traceback.
    for command in ("status", "stop", "watch"):
        result = run_cli(command, "--control", ipc("nobody"), "--timeout", timeout, timeout=30)
        assert result.returncode == 2, (command, result.stderr)
        assert "--timeout: seconds, more than 0" in result.stderr
        assert "Traceback" not in result.stderr


def test_every_command_has_help_with_an_example() -> None:
    for command in ("run", "stop", "status", "demo"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "example:" in result.stdout and f"collectord {command}" in result.stdout


def test_demo_runs_end_to_end(tmp_path: pathlib.Path) -> None:
    result = run_cli("demo", "--output", str(tmp_path / "demo"), "--duration", "1", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    paths = sorted((tmp_path / "demo").glob("*/*/*_metadata.json"))
    assert paths, result.stdout
    saved = load_json(paths[0])
    assert saved["camera"]["settings"]["framerate"] == 200.0
    assert saved["tracking"]["tail"]["threshold"] == 0.1
    assert saved["general"]["animal"]["species"] == "Danio rerio"
    assert len(saved["stimulus"]["log"]) >= 1
    tail_log = saved["tracking"]["tail_log"]
    table = np.load(paths[0].parent / tail_log["file"])
    assert len(table) == tail_log["rows"] > 0 and table.dtype.names[0] == "t"
    assert "stream" in result.stdout
    assert {s["name"] for s in saved["collectord"]["sources"]} >= {
        "camera",
        "tracking",
        "stimulus",
    }
    assert str(paths[0]) in result.stdout
    # Each process ran with its own clock; the demo prints what was recorded.
    for source in saved["collectord"]["sources"]:
        ahead, _ = CLOCKS[source["name"]]
        for _, offset, rtt in source["clock"]["samples"]:
            assert abs(offset + ahead) <= rtt / 2 + 0.001  # drift: 20 ppm of seconds
        assert re.search(rf"{source['name']} +[+-]\d+\.\d+ ms \(spread", result.stdout)
    assert tail_log["time_column"] == "t"
    assert "time column   tracking/tail_log.t: " in result.stdout
    # Its daemon requires the three: each was missing until it connected.
    account = saved["collectord"]
    assert account["required"] == ["camera", "tracking", "stimulus"]
    assert account["missing"]["stimulus"]["intervals"][0]["cause"] == "not connected"
    assert "required     camera missing " in result.stdout
    last = load_json(tmp_path / "demo" / "last_config.json")
    assert "log" not in last.get("stimulus", {})


def test_a_first_signal_during_a_pending_stop_keeps_the_barrier(daemon: DaemonProcess) -> None:
    """A client's stop is waiting for a slow client; SIGTERM must not cut it short."""
    import msgpack
    import zmq

    context = zmq.Context()
    slow = context.socket(zmq.DEALER)
    slow.setsockopt(zmq.ROUTING_ID, b"slow0001")
    slow.setsockopt(zmq.LINGER, 0)
    slow.connect(daemon.control)
    hello = {
        "v": 1,
        "cmd": "hello",
        "id": 1,
        "name": "slow",
        "session": "slow0001",
        "host": "h",
        "pid": 1,
        "program": "test",
        "versions": {},
    }
    slow.send_multipart([b"", msgpack.packb(hello)])
    assert slow.poll(30_000) and msgpack.unpackb(slow.recv_multipart()[-1])["ok"]
    try:
        with Client("stopper", daemon.data, daemon.control) as client:
            client.set_params("camera/settings", exposure=1.0)
            client.sync()
            stopping = threading.Thread(target=lambda: results.append(client.stop()))
            results: list[str] = []
            stopping.start()
            assert slow.poll(30_000), "no barrier notice"
            barrier = msgpack.unpackb(slow.recv_multipart()[-1])["barrier"]
            daemon.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda: (
                    "pending stop" in daemon.log.read_text() or "again" in daemon.log.read_text()
                ),
                what="the signal to be taken",
            )
            assert "exiting once the pending stop is saved" in daemon.log.read_text()
            sent = {
                "v": 1,
                "cmd": "sent",
                "id": 2,
                "session": "slow0001",
                "seq": 0,
                "barrier": barrier,
            }
            slow.send_multipart([b"", msgpack.packb(sent)])
            stopping.join(60)
        saved = load_json(results[0])
        assert saved["collectord"]["unconfirmed"] == []
        assert saved["collectord"]["stopped_by"]["by"] == "stopper"
        assert daemon.process.wait(60) == 0
    finally:
        slow.close()
        context.term()


def test_bench_runs_and_reports_every_figure() -> None:
    """A tiny run: the bench works end to end (its figures are for `collectord bench`)."""
    import json

    result = run_cli(
        "bench",
        "--repeat",
        "1",
        "--messages",
        "2000",
        "--rows",
        "2000",
        "--stream-mb",
        "2",
        "--tree",
        "2000",
        "--clock",
        "5",
        "--sessions",
        "300",
        "--json",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures["ratios"]) == {
        "params",
        "append",
        "extend",
        "extend_to_disk",
        "extend_to_ceiling",
    }
    assert all(value > 0 for value in figures["medians"].values())
    assert figures["memory"]["extend_bytes_per_s"] > 0
    tree = figures["tree"]
    assert tree["parameters"] == 2000
    keys = (
        "save_s",
        "save_carried_s",
        "ceiling_s",
        "history_ceiling_s",
        "save_with_history_ratio",
        "status_max_s",
        "restart_s",
        "restart_cpu_s",
    )
    assert all(tree[key] > 0 for key in keys)
    # The daemon's CPU, in clock ticks of 10 ms: a tiny tree's save may use none.
    cpus = ("ceiling_cpu_s", "save_cpu_s", "save_carried_cpu_s", "save_cpu_ratio")
    assert all(tree[key] >= 0 for key in cpus)
    clock = figures["clock"]
    assert clock["samples"] >= 5
    assert clock["median_rtt_s"] > 0 and clock["offset_spread_s"] >= 0
    assert abs(clock["median_offset_s"]) < 0.1  # the daemon's own clock: no offset
    status = figures["status"]
    assert status["sessions"] == 300 and status["max_s"] >= status["median_s"] > 0


#: A client written by hand that says hello and then never answers a stop's
#: barrier notice, as a process stuck in a long computation would not.
MUTE_CLIENT = """
import os, sys, zmq
from collectord import codec
context = zmq.Context()
sock = context.socket(zmq.DEALER)
sock.setsockopt(zmq.IDENTITY, b"mute-1")
sock.connect(sys.argv[1])
hello = {"v": 1, "cmd": "hello", "id": 1, "name": "mute", "session": "mute-1",
         "host": "here", "pid": os.getpid(), "program": "test", "versions": {}}
sock.send_multipart([b"", codec.pack(hello)])
assert codec.unpack(sock.recv_multipart()[-1])["ok"]
print("hello", flush=True)
sys.stdin.read()
"""


def patient_config(tmp_path: pathlib.Path) -> pathlib.Path:
    """A configuration whose stop barrier waits ten minutes."""
    config = tmp_path / "patient.toml"
    config.write_text("[stop]\nbarrier_timeout = 600\n")
    return config


def start_mute_client(daemon: DaemonProcess) -> subprocess.Popen[str]:
    """A client that says hello and never answers a barrier (``MUTE_CLIENT``)."""
    return subprocess.Popen(
        [sys.executable, "-c", MUTE_CLIENT, daemon.control],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def end_mute_client(mute: subprocess.Popen[str]) -> None:
    mute.kill()
    mute.wait()
    assert mute.stdin is not None and mute.stdout is not None
    mute.stdin.close()
    mute.stdout.close()


def test_a_stop_waiting_for_a_client_that_dies_goes_on_at_once(make_daemon, tmp_path) -> None:
    """The barrier would wait ten minutes for the mute client; its death ends the wait."""
    daemon = make_daemon(extra=("--config", str(patient_config(tmp_path))))
    mute = start_mute_client(daemon)
    replies: list[dict[str, Any]] = []
    try:
        assert mute.stdout is not None and mute.stdout.readline() == "hello\n"
        stopping = threading.Thread(
            target=lambda: replies.append(
                request(daemon.control, Command.STOP, {"reason": "test"}, timeout=300)
            )
        )
        stopping.start()
        wait_for(lambda: daemon.status()["stop_pending"], what="the stop to wait for the barrier")
        assert not replies  # it waits for the mute client
        mute.kill()
        stopping.join(120)
        assert not stopping.is_alive(), "the stop went on waiting for a dead client"
    finally:
        end_mute_client(mute)
    (reply,) = replies
    assert reply["unconfirmed"] == ["mute (mute-1)"]
    saved = load_json(reply["path"])
    assert saved["collectord"]["unconfirmed"] == ["mute (mute-1)"]


def test_cli_stop_claims_no_barrier_when_no_daemon_answers(ipc) -> None:
    # Longer than the second after which a stop shows its progress.
    result = run_cli("stop", "--control", ipc("nobody"), "--timeout", "2")
    assert result.returncode == 1
    assert "no collectord daemon answered" in result.stderr
    assert "barrier" not in result.stderr, result.stderr


def test_cli_stop_shows_the_barrier_it_waits_for(make_daemon, tmp_path) -> None:
    daemon = make_daemon(extra=("--config", str(patient_config(tmp_path))))
    mute = start_mute_client(daemon)
    stopping = None
    try:
        assert mute.stdout is not None and mute.stdout.readline() == "hello\n"
        stopping = subprocess.Popen(
            [sys.executable, "-m", "collectord", "stop", "--control", daemon.control],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert stopping.stderr is not None
        first = stopping.stderr.readline()  # shown after a second of waiting
        assert first == "waiting for the clients' last messages (the stop barrier)\n", first
        mute.kill()
        out, err = stopping.communicate(timeout=120)
    finally:
        end_mute_client(mute)
        if stopping is not None and stopping.poll() is None:
            stopping.kill()
            stopping.communicate()
    assert stopping.returncode == 0, err
    assert "unconfirmed: mute (mute-1)" in err
    assert load_json(out.strip())["collectord"]["unconfirmed"] == ["mute (mute-1)"]


def kill_a_camera_once_it_published(daemon: DaemonProcess) -> None:
    """A process "camera" publishes 10 updates, has them confirmed, and is
    killed (SIGKILL: no bye, its sockets left as they were)."""
    spawn = multiprocessing.get_context("spawn")
    done = spawn.Event()
    camera = spawn.Process(
        target=rig_processes.publish_sync_and_hang,
        args=("camera", daemon.data, daemon.control, 10, done),
    )
    camera.start()
    assert done.wait(120), "the camera did not finish publishing"
    os.kill(camera.pid, signal.SIGKILL)
    camera.join(30)


def test_a_client_killed_without_bye_is_shown_gone_and_not_waited_for(make_daemon, tmp_path):
    config = tmp_path / "quick.toml"
    config.write_text("[stop]\nbarrier_timeout = 0.5\n")
    daemon = make_daemon(extra=("--config", str(config)))
    kill_a_camera_once_it_published(daemon)
    with Client("stimulus", daemon.data, daemon.control) as stimulus:
        first = load_json(stimulus.stop())
        second = load_json(stimulus.stop())
    assert first["camera"]["params"] == {"index": 9}  # confirmed before the kill
    # At the first stop the daemon found the camera unreachable: once that
    # experiment was saved it forgot the session (its counts kept), so the
    # second stop neither waits for it nor lists it.
    assert [s["name"] for s in second["collectord"]["sources"]] == ["stimulus"]
    assert second["collectord"]["unconfirmed"] == []
    status = daemon.status()
    assert "camera" not in [s["name"] for s in status["sources"]]
    assert status["forgotten"]["sessions"] >= 1


def test_a_client_that_died_before_the_daemon_is_not_waited_for_after_the_restart(
    make_daemon, tmp_path
) -> None:
    """The daemon saw the camera's connection close, then was killed itself.
    The restarted daemon took the camera, known from the journal, for a
    client that may be reconnecting: shown connected, waited for at the stop
    until the barrier's timeout, and named as unconfirmed in the metadata,
    although it had died with every message confirmed."""
    config = tmp_path / "patient.toml"
    config.write_text("[stop]\nbarrier_timeout = 5\n")
    first = make_daemon(extra=("--config", str(config)))
    kill_a_camera_once_it_published(first)

    def camera_connected(daemon: DaemonProcess) -> bool:
        (source,) = [s for s in daemon.status()["sources"] if s["name"] == "camera"]
        return source["connected"]

    wait_for(lambda: not camera_connected(first), what="the daemon to see the camera go")
    (staging,) = (first.output / ".collectord" / "staging").iterdir()

    def journaled_gone() -> bool:
        records = journal.read(staging / journal.JOURNAL_NAME).records
        return any(r["t"] == "reach" and not r["reachable"] for r in records)

    wait_for(journaled_gone, what="the journal to say so")
    first.kill9()
    second = make_daemon(data=first.data, control=first.control, extra=("--config", str(config)))
    assert not camera_connected(second)
    saved = load_json(second.stop()["path"])
    assert saved["collectord"]["unconfirmed"] == []
    assert saved["camera"]["params"] == {"index": 9}


def test_the_daemon_imports_nothing_once_it_listens(make_daemon) -> None:
    """A module imported on first use runs on the daemon's loop, which then
    answers nothing: ``numpy.ma``, imported by the first ``np.percentile`` of a
    client's clock summary, held it 16 to 80 ms. Python reports each import
    on stderr (``PYTHONPROFILEIMPORTTIME``); none may come after the daemon
    listens, through an experiment with parameters, data, a stream, clock
    samples, status, two saves and a SIGTERM."""
    daemon = make_daemon(env={"PYTHONPROFILEIMPORTTIME": "1"})

    def imports() -> list[str]:
        lines = daemon.log.read_text().splitlines()
        return [line.split("|")[-1].strip() for line in lines if line.startswith("import time:")]

    at_start = imports()
    assert "collectord.daemon.loop" in at_start  # stderr does hold the imports
    with Client("camera", daemon.data, daemon.control, clock_interval=0.05) as client:
        client.set_params("camera/settings", exposure=1.5)
        client.add_data("camera/info", {"serial": "X1"})
        stream = client.stream("camera/frames", ["t", "frame"], "<f8")
        stream.extend(np.ones((100, 2)))
        wait_for(
            lambda: any(
                source.get("clock", {}).get("kept", 0) >= 3
                for source in daemon.status()["sources"]  # none until the hello is taken
            ),
            what="clock samples",
        )
        client.stop()
        client.set_params("camera/settings", exposure=2.0)
        client.stop()
    assert daemon.terminate() == 0
    assert imports()[len(at_start) :] == []
