"""Crashes: kill -9 of the daemon, then resume or `collectord recover`."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import run_cli, wait_for

from collectord import Client, journal, load_json
from collectord.faults import ENV, Fault
from collectord.journal import JOURNAL_NAME


def test_sync_confirmed_data_survives_kill9_and_recover(make_daemon, figures) -> None:
    daemon = make_daemon()
    client = Client("camera", daemon.data, daemon.control)
    client.set_params("camera/settings", exposure=4.0, gain=2.0)
    client.add_data("stimulus/log", [{"name": "flash", "t": 1.5}])
    for index in range(500):
        client.set_params("tracking/tail", threshold=index)
    client.sync()
    daemon.kill9()

    result = run_cli("recover", "--output", str(daemon.output))
    assert result.returncode == 0, result.stderr
    (path,) = [Path(line) for line in result.stdout.split()]
    saved = load_json(path)
    assert saved["camera"]["settings"] == {"exposure": 4.0, "gain": 2.0}
    assert saved["stimulus"]["log"] == [{"name": "flash", "t": 1.5}]
    assert saved["tracking"]["tail"] == {"threshold": 499}
    (restart,) = saved["collectord"]["restarts"]
    assert "recovered" in restart and restart["torn_tail"] is False
    assert saved["collectord"]["stopped_by"]["by"] == "collectord recover"
    assert load_json(daemon.output / "last_config.json")["tracking"] == {
        "tail": {"threshold": 499}
    }
    # What is left is the next experiment, begun inheriting the recovered one's
    # state (parameters, sources, streams) for the next daemon to go on with.
    (following,) = (daemon.output / ".collectord" / "staging").iterdir()
    begin = journal.first_record(following / JOURNAL_NAME)
    assert begin is not None and begin["follows"] == saved["collectord"]["run_id"]
    (source,) = saved["collectord"]["sources"]
    figures(
        sent=502,
        saved=source["messages"]["messages"],
        lost=source["messages"]["lost"],
        faults="kill -9 after sync(), then collectord recover",
    )
    again = run_cli("recover", "--output", str(daemon.output))
    assert again.returncode == 0 and again.stdout == ""
    client.close(timeout=0.1)  # everything was confirmed: closing needs no daemon


def test_a_torn_journal_tail_is_tolerated(make_daemon, figures) -> None:
    daemon = make_daemon()
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=4.0)
        client.sync()
        daemon.kill9()
        (journal,) = (daemon.output / ".collectord" / "staging").glob(f"*/{JOURNAL_NAME}")
        with open(journal, "ab") as file:
            file.write(b"\x40\x00\x00\x00\x12\x34")  # a record cut off mid-write
        result = run_cli("recover", "--output", str(daemon.output))
        assert result.returncode == 0, result.stderr
        saved = load_json(result.stdout.strip())
        assert saved["camera"]["settings"] == {"exposure": 4.0}
        assert saved["collectord"]["restarts"][0]["torn_tail"] is True
        figures(sent=1, saved=1, lost=0, faults="kill -9, then a torn record appended")
        client.close(timeout=0.1)  # everything was confirmed: closing needs no daemon


def test_a_restarted_daemon_resumes_the_experiment(make_daemon, figures) -> None:
    first = make_daemon()
    with Client("stimulus", first.data, first.control) as client:
        client.set_params("general/animal", species="Danio rerio")
        client.add_data("stimulus/log", [1, 2, 3])
        client.sync()
        first.kill9()
        second = make_daemon(data=first.data, control=first.control)
        client.add_data("general/t_protocol_end", "later")
        saved = load_json(client.stop())
    assert saved["general"] == {"animal": {"species": "Danio rerio"}, "t_protocol_end": "later"}
    assert saved["stimulus"]["log"] == [1, 2, 3]
    (restart,) = saved["collectord"]["restarts"]
    assert "resumed" in restart
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 0 and source["last_seq"] == 3
    figures(
        sent=3,
        saved=source["messages"]["messages"],
        lost=0,
        faults="kill -9, restart on the same output (resume)",
    )
    assert second.terminate() == 0


def test_no_resume_saves_the_unfinished_experiment_first(make_daemon) -> None:
    first = make_daemon()
    with Client("stimulus", first.data, first.control) as client:
        client.set_params("general/animal", species="Danio rerio")
        client.add_data("stimulus/log", [1])
        client.sync()
        first.kill9()
        second = make_daemon(extra=("--no-resume",))
        (recovered,) = first.output.glob("*/*/*_metadata.json")
        saved = load_json(recovered)
        assert saved["stimulus"]["log"] == [1]
        assert "recovered" in saved["collectord"]["restarts"][0]
        assert second.status()["restarts"] == []
        client.close(timeout=0.1)  # everything was confirmed: closing needs no daemon


def test_one_process_per_output_folder(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "collectord",
            "run",
            "--output",
            str(daemon.output),
            "--data",
            "tcp://127.0.0.1:*",
            "--control",
            "tcp://127.0.0.1:*",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "in use by another collectord" in second.stderr
    assert daemon.process is not None
    assert f"(pid {daemon.process.pid} on {socket.gethostname()}, since " in second.stderr
    recover = run_cli("recover", "--output", str(daemon.output))
    assert recover.returncode == 1 and "in use by another collectord" in recover.stderr


def test_a_second_daemon_cannot_take_a_live_daemons_ipc_endpoints(
    make_daemon, ipc, tmp_path: Path
) -> None:
    """ZeroMQ deletes the socket file at an ipc path it binds: a second daemon
    given the same endpoints would take them from the live one, whose clients
    would go to the second (and its folder) as they reconnect."""
    first = make_daemon(tmp_path / "first", data=ipc("data"), control=ipc("control"))
    for data, control, taken in (
        (ipc("data"), ipc("other"), ipc("data")),
        (ipc("other"), ipc("control"), ipc("control")),
    ):
        with pytest.raises(AssertionError, match=f"cannot bind {taken}: another process"):
            make_daemon(tmp_path / "second", data=data, control=control)
    assert first.status()["output"] == str(first.output)
    # The socket files a killed daemon leaves are no daemon: bound over.
    first.kill9()
    second = make_daemon(tmp_path / "second", data=ipc("data"), control=ipc("control"))
    assert second.status()["output"] == str(second.output)


def test_recover_refuses_a_folder_no_daemon_used_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "rig1-typo"
    result = run_cli("recover", "--output", str(typo))
    assert result.returncode == 1
    assert f"there is no folder {typo}" in result.stderr, result.stderr
    assert not typo.exists(), "nothing is created"

    unused = tmp_path / "data"  # a folder of its own, but never a daemon's output
    (unused / "notes").mkdir(parents=True)
    result = run_cli("recover", "--output", str(unused))
    assert result.returncode == 1
    assert f"no collectord daemon has used {unused}" in result.stderr, result.stderr
    assert [path.name for path in unused.iterdir()] == ["notes"]


def test_publishing_at_1khz_through_a_kill9_and_restart_loses_nothing(
    make_daemon, figures
) -> None:
    """3000 messages at about 1 kHz; the daemon dies and comes back in between."""
    first = make_daemon()
    client = Client("steady", first.data, first.control)
    published = 0
    slowest = 0.0
    done = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        nonlocal published, slowest
        try:
            for index in range(3000):
                started = time.perf_counter()
                client.add_data(f"steady/m{index:04d}", index)
                slowest = max(slowest, time.perf_counter() - started)
                published = index + 1
                time.sleep(0.001)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=publish)
    worker.start()
    wait_for(lambda: published >= 800, what="800 messages")
    first.kill9()
    killed_at, outage_started = published, time.perf_counter()
    # Keep the daemon down while the client publishes 400 more.
    wait_for(lambda: published >= killed_at + 400 or done.is_set(), what="publishing on")
    down_for = published - killed_at
    make_daemon(data=first.data, control=first.control)
    outage = time.perf_counter() - outage_started
    assert done.wait(120)
    worker.join()
    assert not errors
    client.sync(timeout=60)
    saved = load_json(client.stop())
    client.close()

    assert down_for >= 400, "the daemon was not down while publishing went on"
    # A call that waited for the network would have lasted as long as the outage.
    assert slowest < outage / 2, f"a publishing call took {slowest:.3f} s of {outage:.3f} s"
    assert saved["steady"] == {f"m{index:04d}": index for index in range(3000)}
    (source,) = saved["collectord"]["sources"]
    figures(
        sent=3000,
        saved=source["messages"]["messages"],
        lost=source["messages"]["lost"],
        published_while_down=down_for,
        outage_s=round(outage, 3),
        slowest_call_ms=round(slowest * 1000, 3),
        faults="kill -9 under load, restart",
    )
    assert source["messages"]["lost"] == 0 and source["messages"]["messages"] == 3000


def test_every_resume_of_an_experiment_is_recorded(make_daemon) -> None:
    daemon = make_daemon()
    with Client("stimulus", daemon.data, daemon.control) as client:
        client.add_data("stimulus/log", [1])
        client.sync()
        for _ in range(2):
            daemon.kill9()
            daemon = make_daemon(data=daemon.data, control=daemon.control)
        saved = load_json(client.stop())
    restarts = saved["collectord"]["restarts"]
    assert len(restarts) == 2 and all("resumed" in r for r in restarts)
    assert saved["stimulus"]["log"] == [1]


def test_a_session_that_came_back_after_it_was_forgotten_survives_a_kill9(make_daemon) -> None:
    """A session the daemon forgot at a save (its control connection had
    closed: a network cut, say) that then goes on publishing is taken from its
    remembered sequence number. That memory was not journaled: a daemon
    killed later replayed its confirmed messages as ahead of a gap and dropped
    them, and a restarted daemon took it for a new session whose every
    message was lost."""
    first = make_daemon()
    session = "back0001"
    context = zmq.Context()
    data = context.socket(zmq.XPUB)
    data.setsockopt(zmq.LINGER, 0)
    data.connect(first.data)
    assert data.poll(30_000) and data.recv() == b"\x01"

    def dealer() -> zmq.Socket:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, session.encode())
        sock.connect(first.control)
        return sock

    def ask(sock: zmq.Socket, request_id: int, cmd: str, **fields) -> dict:
        message = {"v": 1, "cmd": cmd, "id": request_id, "session": session, **fields}
        sock.send_multipart([b"", msgpack.packb(message)])
        assert sock.poll(30_000), f"no answer to {cmd}"
        return msgpack.unpackb(sock.recv_multipart()[-1])

    def send(seq: int) -> None:
        head = {"v": 1, "kind": "data", "source": "back", "session": session, "seq": seq}
        data.send_multipart([msgpack.packb(head), msgpack.packb({"path": "back/n", "value": seq})])

    control = dealer()
    hello = {"name": "back", "host": "h", "pid": 1, "program": "p", "versions": {}}
    assert ask(control, 1, "hello", **hello)["ok"]
    for seq in (1, 2, 3):
        send(seq)
    assert ask(control, 2, "sync", seq=3)["result"]["received"] == 3
    control.close()  # its connection closes: not connected, forgotten at the next save

    def connected() -> bool:
        return any(s["connected"] for s in first.status()["sources"] if s["session"] == session)

    wait_for(lambda: not connected(), what="the session to be seen gone")
    assert load_json(first.stop()["path"])["back"]["n"] == 3
    assert first.status()["forgotten"]["sessions"] == 1

    for seq in (4, 5, 6):  # it comes back, and goes on
        send(seq)
    control = dealer()
    assert ask(control, 3, "sync", seq=6)["result"]["received"] == 6  # confirmed: journaled
    first.kill9()
    second = make_daemon(first.output, data=first.data, control=first.control)
    assert ask(control, 4, "hello", **hello)["result"]["received"] == 6
    saved = load_json(second.stop()["path"])
    control.close()
    data.close()
    context.term()
    assert saved["back"]["n"] == 6
    (source,) = [s for s in saved["collectord"]["sources"] if s["session"] == session]
    assert source["messages"]["messages"] == 3 and source["messages"]["lost"] == 0
    assert source["gaps"] == [] and source["last_seq"] == 6


def staged(daemon) -> list[Path]:
    return sorted((daemon.output / ".collectord" / "staging").iterdir())


def test_a_clean_restart_begins_a_new_experiment_carrying_the_state(make_daemon) -> None:
    """A daemon that exits with nothing new to save leaves the experiment it
    was running, empty, to carry the state over. The next daemon resumed it:
    its metadata said it began when the previous daemon stopped (the evening
    before, for a rig started each morning), with a restart entry though
    nothing was at stake. It now begins a new experiment, with the state;
    also when killed (``open.begun_instead``) before removing the empty one."""
    first = make_daemon()
    camera = Client("camera", first.data, first.control)
    camera.set_params("camera/settings", exposure=2.5)
    frames = camera.stream("camera/frames", ["t"], "f8")
    frames.extend([[1.0]])
    camera.stop()
    assert first.terminate() == 0  # nothing new since that stop: nothing saved
    (left,) = staged(first)
    with pytest.raises(AssertionError, match="did not start"):  # killed where it would
        make_daemon(
            data=first.data,
            control=first.control,
            env={ENV: Fault.OPEN_BEGUN_INSTEAD.value},
        )
    assert left in staged(first) and len(staged(first)) == 2
    before = dt.datetime.now().astimezone()
    second = make_daemon(data=first.data, control=first.control)
    (begun,) = staged(second)
    assert begun != left
    assert second.status()["run_id"] == begun.name
    frames.extend([[2.0]])  # the same process goes on
    camera.set_params("camera/settings", gain=1)
    saved = load_json(camera.stop())
    camera.close()
    account = saved["collectord"]
    assert dt.datetime.fromisoformat(account["started"]) >= before
    assert "restarts" not in account or account["restarts"] == []
    assert saved["camera"]["settings"] == {"exposure": 2.5, "gain": 1}
    assert saved["camera"]["frames"]["rows"] == 1


@pytest.mark.parametrize("command", ["run", "recover"])
def test_an_output_path_that_is_a_file_is_named_not_a_traceback(
    tmp_path: Path, command: str
) -> None:
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("the output folder was meant to be beside this\n")
    args = ["--data", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*"]
    result = run_cli(command, "--output", str(not_a_folder), *(args if command == "run" else []))
    assert result.returncode == 1
    said = {"run": "cannot use the output folder", "recover": "is not a folder"}[command]
    assert f"collectord {command}: " in result.stderr and said in result.stderr
    assert "Traceback" not in result.stderr
    assert not_a_folder.read_text() == "the output folder was meant to be beside this\n"


def test_a_clean_restart_resumes_an_experiment_that_holds_a_rejection(make_daemon) -> None:
    """Nothing was applied, but the experiment counted a message it refused:
    begun anew, the count was gone, in no saved metadata."""
    first = make_daemon()
    context = zmq.Context()
    data = context.socket(zmq.XPUB)
    data.setsockopt(zmq.LINGER, 0)
    data.connect(first.data)
    try:
        assert data.poll(30_000) and data.recv() == b"\x01"
        data.send_multipart([b"\xc1garbage"])
        wait_for(lambda: first.status()["unidentified"]["rejected"] == 1, what="the rejection")
    finally:
        data.close()
        context.term()
    running = first.status()["run_id"]
    assert first.terminate() == 0  # nothing new to save: it exits, and the journal stays
    second = make_daemon(data=first.data, control=first.control)
    assert second.status()["run_id"] == running
    saved = load_json(second.stop()["path"])
    assert saved["collectord"]["unidentified_rejections"] == 1
