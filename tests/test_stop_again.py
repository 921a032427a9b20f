"""A stop sent again: one stop, one experiment, whenever the daemon died.

A client names each stop (``stop_id``) and sends it again when a daemon that
had not answered comes back (``link.py``); the daemon answers with the save
that stop made, or makes it if the stop never reached its journal
(``daemon/answers.py``). Without that, a stop in flight when the daemon died
timed out in the client, and a client that stopped again ended the next
experiment too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import run_cli, saved_experiments, wait_for
from test_processes import end_mute_client, patient_config, start_mute_client

from collectord import Client, codec
from collectord.control import request
from collectord.daemon import answers
from collectord.daemon.answers import Answer, Answers
from collectord.errors import DaemonTimeout, RequestError
from collectord.faults import ENV, PAUSE_ENV, SAVE_STEPS, Fault
from collectord.protocol import PROTOCOL_VERSION, Command
from collectord.store import METADATA_SUFFIX, staging_dir


def publish_something(client: Client, value: float) -> None:
    client.set_params("cam/settings", exposure=value)
    frames = client.stream("cam/frames", ["i"], "i8")
    for i in range(50):
        frames.append([i])
    client.sync(timeout=60)


def a_client_of_a_daemon_to_die_at(step: Fault, make_daemon, ipc) -> tuple[Any, Client]:
    """A daemon (on ipc endpoints, kept by a restart) that dies at ``step``,
    and a client that published something to it."""
    daemon = make_daemon(data=ipc("data"), control=ipc("control"), env={ENV: step.value})
    client = Client("cam", daemon.data, daemon.control)
    publish_something(client, 4.0)
    return daemon, client


@pytest.mark.parametrize("step", SAVE_STEPS, ids=lambda step: step.value)
def test_a_stop_the_daemon_died_in_returns_the_experiment_it_saved(
    make_daemon, ipc, step: Fault
) -> None:
    first, client = a_client_of_a_daemon_to_die_at(step, make_daemon, ipc)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stopping = pool.submit(client.stop, "end of trial", 120.0)
        assert first.process is not None
        assert first.process.wait(60) == -signal.SIGKILL  # died at the step
        assert not stopping.done()
        second = make_daemon(data=first.data, control=first.control)
        path = Path(stopping.result(120))
    (saved,) = saved_experiments(first.output)  # the stop's experiment, once
    assert saved["_path"] == path
    assert saved["cam"]["settings"] == {"exposure": 4.0}
    assert saved["collectord"]["stopped_by"]["reason"] == "end of trial"
    assert second.status()["run_id"] != saved["collectord"]["run_id"]

    # The next stop ends the next experiment, as ever.
    client.set_params("cam/settings", exposure=5.0)
    following = Path(client.stop(timeout=60))
    client.close()
    assert following != path
    assert [m["cam"]["settings"] for m in saved_experiments(first.output)] == [
        {"exposure": 4.0},
        {"exposure": 5.0},
    ]


def test_a_stop_the_daemon_died_before_journaling_is_made_by_the_next(
    make_daemon, ipc, tmp_path
) -> None:
    """Killed while the stop waited for its barrier: nothing ended the
    experiment, and the stop sent again to the restarted daemon does."""
    first = make_daemon(
        data=ipc("data"),
        control=ipc("control"),
        extra=("--config", str(patient_config(tmp_path))),
    )
    mute = start_mute_client(first)  # holds the barrier for ten minutes
    client = Client("cam", first.data, first.control)
    try:
        assert mute.stdout is not None and mute.stdout.readline() == "hello\n"
        publish_something(client, 4.0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(client.stop, "end of trial", 120.0)
            wait_for(lambda: first.status()["stop_pending"], what="the stop to wait")
            first.kill9()
            end_mute_client(mute)
            make_daemon(data=first.data, control=first.control)  # barrier of 3 s
            path = Path(stopping.result(120))
    finally:
        end_mute_client(mute)
    client.close()
    (saved,) = saved_experiments(first.output)
    assert saved["_path"] == path
    assert saved["cam"]["settings"] == {"exposure": 4.0}
    assert saved["collectord"]["stopped_by"]["reason"] == "end of trial"


def raw_stop(control: str, stop_id: str, reason: str = "operator") -> dict[str, Any]:
    fields = {"reason": reason, "stop_id": stop_id}
    return request(control, Command.STOP, fields, timeout=120)


def test_a_stop_sent_again_joins_its_save_or_gets_it(make_daemon, tmp_path) -> None:
    gate = tmp_path / "go on"
    daemon = make_daemon(env={PAUSE_ENV: f"{Fault.SAVE_METADATA_WRITTEN.value}={gate}"})
    client = Client("cam", daemon.data, daemon.control)
    publish_something(client, 4.0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(raw_stop, daemon.control, "stop-A")
        wait_for(lambda: daemon.status()["saving"], what="the save to begin")
        again = pool.submit(raw_stop, daemon.control, "stop-A", "sent again")
        # Another stop meanwhile is a new one: it waits for the save under way.
        other = pool.submit(raw_stop, daemon.control, "stop-B")
        wait_for(lambda: daemon.status()["stop_pending"], what="stop-B to wait")
        gate.touch()
        results = first.result(120), again.result(120), other.result(120)
    assert results[0] == results[1]
    assert results[2]["run_id"] != results[0]["run_id"]
    # Asked once more after it is saved: the same answer, and no stop.
    assert raw_stop(daemon.control, "stop-A") == results[0]
    client.close()
    assert [m["collectord"]["run_id"] for m in saved_experiments(daemon.output)] == [
        results[0]["run_id"],
        results[2]["run_id"],
    ]
    assert daemon.status()["saved_experiments"] == 2


def test_a_stop_id_that_is_too_long_is_refused_by_name(daemon) -> None:
    with pytest.raises(RequestError, match="stop_id must have 1 to 128 characters, not 129"):
        raw_stop(daemon.control, "x" * 129)
    assert daemon.status()["saved_experiments"] == 0


# -- the answers, without a daemon -----------------------------------------------


def write_published(output: Path, day: str, folder: str, stamp: str, run_id: str) -> Path:
    path = output / day / folder / f"{stamp}{METADATA_SUFFIX}"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"collectord": {"run_id": run_id}}))
    return path


def begin_record(run_id: str, ids: list[str], stamp: str = "103000") -> dict[str, Any]:
    """A BEGIN record's ``answered``, as a daemon saving ``run_id`` writes it."""
    saving = Answer(run_id, "241124", stamp, ("mute (m-1)",), ("microscope",))
    return Answers().begin_field(ids, saving)


def test_answers_after_a_restart_find_the_folder_a_taken_name_moved(tmp_path) -> None:
    output = tmp_path / "out"
    write_published(output, "241124", "103000", "103000", "run-older")
    path = write_published(output, "241124", "103000_1", "103000", "run-X")
    found = Answers()
    found.begun_after(begin_record("run-X", ["a", "b"]))
    result = found.result("b", output, output / "last_config.json")
    assert result == {
        "run_id": "run-X",
        "path": str(path),
        "last_config": str(output / "last_config.json"),
        "unconfirmed": ["mute (m-1)"],
        "missing": ["microscope"],
    }
    assert found.result("unknown", output, output / "last_config.json") is None


def test_answers_find_an_experiment_still_in_staging(tmp_path) -> None:
    output = tmp_path / "out"
    waiting = staging_dir(output, "run-X") / f"103000{METADATA_SUFFIX}"
    waiting.parent.mkdir(parents=True)
    waiting.write_text(json.dumps({"collectord": {"run_id": "run-X"}}))
    found = Answers()
    found.begun_after(begin_record("run-X", ["a"]))
    result = found.result("a", output, output / "last_config.json")
    assert result is not None and result["path"] == str(waiting)


def test_answers_name_a_saved_experiment_whose_folder_is_gone(tmp_path) -> None:
    found = Answers()
    found.begun_after(begin_record("run-X", ["a"]))
    with pytest.raises(LookupError, match="saved experiment run-X, but its folder is not in"):
        found.result("a", tmp_path, tmp_path / "last_config.json")


def test_answers_keep_the_last_stops_only_and_pass_them_on() -> None:
    kept = Answers()
    for n in range(answers.LIMIT + 5):
        result = {"run_id": f"run-{n}"}
        kept.saved([f"stop-{n}"], Answer(f"run-{n}", "241124", f"{n:06d}", result=result))
    assert len(kept) == answers.LIMIT
    assert kept.result("stop-0", Path("."), Path("x")) is None
    last = kept.result(f"stop-{answers.LIMIT + 4}", Path("."), Path("x"))
    assert last == {"run_id": f"run-{answers.LIMIT + 4}"}
    # Each BEGIN passes on the last LIMIT, the stop being saved among them.
    saving = Answer("run-new", "241124", "235959")
    entries = kept.begin_field(["stop-new", "stop-new-again"], saving)["answered"]
    assert sum(len(entry["ids"]) for entry in entries) == answers.LIMIT
    assert entries[-1] == saving.entry(["stop-new", "stop-new-again"])
    restarted = Answers()
    restarted.begun_after({"answered": entries})
    assert len(restarted) == answers.LIMIT
    assert restarted.begin_field() == {"answered": entries}


def test_a_begin_record_with_no_stop_ids_answers_nothing() -> None:
    assert Answers().begin_field() == {}
    assert Answers().begin_field([], Answer("run-X", "241124", "103000")) == {}
    found = Answers()
    found.begun_after({"follows": "run-X"})
    found.begun_after({"answered": [{"ids": ["a"]}, "not an entry", {"run_id": 5}]})
    assert len(found) == 0


def test_a_stop_sent_again_while_its_failed_save_is_tried_again_gets_that_save(
    make_daemon, tmp_path
) -> None:
    last_config = tmp_path / "last_config.json"
    daemon = make_daemon(extra=("--last-config", str(last_config)))
    client = Client("cam", daemon.data, daemon.control)
    publish_something(client, 4.0)
    last_config.mkdir()  # a save cannot replace it: step 5 fails until it goes
    with pytest.raises(RequestError, match="save failed") as failed:
        raw_stop(daemon.control, "stop-A")
    assert failed.value.code == "save_failed"
    assert "do not stop again" in failed.value.message
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        again = pool.submit(raw_stop, daemon.control, "stop-A", "sent again")

        def tries_failed() -> int:
            return daemon.log.read_text().count("trying again")

        # A try fails while it waits (every 5 s): it is not told so again.
        wait_for(lambda: tries_failed() >= 2, timeout=60, what="a second failed try")
        last_config.rmdir()  # the next try succeeds
        result = again.result(120)
    client.close()
    (saved,) = saved_experiments(daemon.output)
    assert result["run_id"] == saved["collectord"]["run_id"]
    assert Path(result["path"]) == saved["_path"]
    assert saved["collectord"]["stopped_by"]["reason"] == "operator"


@pytest.mark.parametrize(
    "step", [Fault.SAVE_STOP_JOURNALED, Fault.SAVE_PUBLISHED], ids=lambda step: step.value
)
def test_collectord_stop_through_a_daemon_that_died_in_its_save(
    make_daemon, ipc, step: Fault
) -> None:
    first, client = a_client_of_a_daemon_to_die_at(step, make_daemon, ipc)
    command = [sys.executable, "-m", "collectord", "stop", "--control", first.control]
    stopping = subprocess.Popen(
        [*command, "--timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert first.process is not None
        assert first.process.wait(60) == -signal.SIGKILL
        make_daemon(data=first.data, control=first.control)
        out, err = stopping.communicate(timeout=180)
    finally:
        if stopping.poll() is None:
            stopping.kill()
            stopping.communicate()
    client.close()
    assert stopping.returncode == 0, err
    (saved,) = saved_experiments(first.output)
    assert Path(out.strip()) == saved["_path"]
    assert saved["collectord"]["stopped_by"]["reason"] == "collectord stop"


def test_a_stop_sent_again_after_collectord_recover_ends_no_other_experiment(
    make_daemon, ipc, tmp_path
) -> None:
    """Killed while it saved, with messages already in the next experiment;
    ``collectord recover`` saves that one as recovered and begins another;
    the stop sent again to the daemon started next must get the first, and
    end no other experiment."""
    gate = tmp_path / "never"
    first = make_daemon(
        data=ipc("data"),
        control=ipc("control"),
        env={PAUSE_ENV: f"{Fault.SAVE_METADATA_WRITTEN.value}={gate}"},
    )
    client = Client("cam", first.data, first.control)
    other = Client("stim", first.data, first.control)
    publish_something(client, 4.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stopping = pool.submit(client.stop, "end of trial", 120.0)
        wait_for(lambda: first.status()["saving"], what="the save to begin")
        other.set_params("stim/settings", contrast=0.5)  # news in the next experiment
        other.sync(timeout=60)
        first.kill9()
        recovered = run_cli("recover", "--output", str(first.output))
        assert recovered.returncode == 0, recovered.stderr
        make_daemon(data=first.data, control=first.control)
        path = Path(stopping.result(120))
    client.close()
    other.close()
    reasons = [m["collectord"]["stopped_by"]["reason"] for m in saved_experiments(first.output)]
    assert reasons.count("end of trial") == 1, reasons
    (stopped,) = [
        m
        for m in saved_experiments(first.output)
        if m["collectord"]["stopped_by"]["reason"] == "end of trial"
    ]
    assert stopped["_path"] == path


class BareDaemon:
    """A daemon's two sockets and nothing more, to see what a client sends:
    its hello says ``stop_ids`` true, false, or nothing (a daemon of an
    earlier version, which would take a stop sent again for a new one).

    Each socket has a context of its own, terminated before the socket is
    bound again: closing a socket bound to ``ipc://`` removes its file later,
    in ZeroMQ's own thread, and could remove the new socket's. And the data
    socket is read while the peer waits, as a daemon's loop reads it: a
    bound socket takes a new connection (and sends it its subscription) only
    when its owner calls into it.
    """

    def __init__(self, ipc, stop_ids: bool | None) -> None:
        self.control_endpoint = ipc("control")
        self.data_endpoint = ipc("data")
        self.control = self._bind(zmq.ROUTER, self.control_endpoint)
        self.data = self._bind(zmq.SUB, self.data_endpoint)
        self.stop_ids = stop_ids

    @staticmethod
    def _bind(kind: int, endpoint: str) -> zmq.Socket:
        sock = zmq.Context().socket(kind)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.bind(endpoint)
        return sock

    @staticmethod
    def _close(sock: zmq.Socket) -> None:
        context = sock.context
        sock.close(linger=0)
        context.term()  # returns once ZeroMQ is done with the socket and its file

    def restart(self) -> None:
        """A new subscription: to the client, a daemon that came back."""
        self._close(self.data)
        self.data = self._bind(zmq.SUB, self.data_endpoint)

    def drop_control(self) -> None:
        """The control connection goes and comes back; the data one holds."""
        self._close(self.control)
        self.control = self._bind(zmq.ROUTER, self.control_endpoint)

    def until(self, command: str) -> list[tuple[list[bytes], dict[str, Any]]]:
        """The requests received up to the next ``command`` (the last)."""
        received: list[tuple[list[bytes], dict[str, Any]]] = []
        deadline = time.monotonic() + 60
        while not (received and received[-1][1]["cmd"] == command):
            self._serve(received, lambda: None, deadline, f"no {command} request came")
        return received

    def until_published(self) -> None:
        """Wait for a message on the data socket: the client has seen this
        daemon subscribe and had its hello answered."""
        published: list[bool] = []
        deadline = time.monotonic() + 60
        while not published:
            self._serve([], lambda: published.append(True), deadline, "nothing was published")

    def _serve(
        self, received: list, on_data: Callable[[], None], deadline: float, failure: str
    ) -> None:
        """Wait for the next message on either socket; requests go to
        ``received``, and every hello is answered, as a daemon answers it (a
        client sends one as it starts, and again each time it sees the daemon
        subscribe)."""
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        left = deadline - time.monotonic()
        ready = dict(poller.poll(max(left, 0) * 1000))
        assert ready and left > 0, failure
        if self.data in ready:
            self.data.recv_multipart()
            on_data()
        if self.control in ready:
            frames = self.control.recv_multipart()
            envelope, request = frames[:-1], codec.unpack(frames[-1])
            received.append((envelope, request))
            if request["cmd"] == "hello":
                self._answer_hello(envelope, request)

    def reply(self, envelope: list[bytes], request: dict[str, Any], result: Any) -> None:
        reply = {"v": PROTOCOL_VERSION, "id": request["id"], "ok": True, "result": result}
        self.control.send_multipart([*envelope, codec.pack(reply)])

    def _answer_hello(self, envelope: list[bytes], hello: dict[str, Any]) -> None:
        result = {
            "daemon": "0",
            "protocol": PROTOCOL_VERSION,
            "run_id": "run-1",
            "received": 0,
            "max_message_bytes": 1 << 20,
        }
        if self.stop_ids is not None:
            result["stop_ids"] = self.stop_ids
        self.reply(envelope, hello, result)

    def close(self) -> None:
        self._close(self.control)
        self._close(self.data)


@contextlib.contextmanager
def a_client_of_a_bare_daemon(ipc, stop_ids: bool | None) -> Iterator[tuple[BareDaemon, Client]]:
    """A bare daemon, and a client introduced to it (it has published there)."""
    daemon = BareDaemon(ipc, stop_ids)
    client = Client("cam", daemon.data_endpoint, daemon.control_endpoint)
    try:
        client.set_params("camera", {"exposure": 1.0})
        daemon.until_published()
        yield daemon, client
    finally:
        with contextlib.suppress(DaemonTimeout):  # nothing was confirmed: closed all the same
            client.close(timeout=0.1)
        daemon.close()


@pytest.mark.parametrize("stop_ids", [True, False, None], ids=["new", "says no", "earlier"])
def test_a_stop_is_sent_again_only_to_a_daemon_that_answers_it(ipc, stop_ids) -> None:
    with (
        a_client_of_a_bare_daemon(ipc, stop_ids) as (daemon, client),
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        stopping = pool.submit(client.stop, "end", 60.0 if stop_ids else 2.0)
        _, first = daemon.until("stop")[-1]
        daemon.restart()
        daemon.until("hello")  # the next: every one before it was answered
        # The link sends a request again as it takes the hello's reply,
        # before its first clock exchange with the daemon.
        again = [(e, r) for e, r in daemon.until("clock") if r["cmd"] == "stop"]
        if not stop_ids:
            assert again == []
            with pytest.raises(DaemonTimeout):
                stopping.result(60)
            return
        ((envelope, request),) = again
        assert request["stop_id"] == first["stop_id"]
        saved = {
            "run_id": "run-1",
            "path": "/data/1/1_metadata.json",
            "last_config": "/data/last_config.json",
            "unconfirmed": [],
            "missing": [],
        }
        daemon.reply(envelope, request, saved)
        assert stopping.result(60) == "/data/1/1_metadata.json"


def test_a_stop_sent_again_whose_folder_was_moved_is_named_not_stopped(
    make_daemon, tmp_path
) -> None:
    first = make_daemon()
    client = Client("cam", first.data, first.control)
    publish_something(client, 4.0)
    client.close()
    saved = Path(raw_stop(first.control, "stop-A")["path"])
    assert first.terminate() == 0  # nothing new: it leaves its journal to the next
    saved.parent.rename(tmp_path / "moved")
    second = make_daemon(output=first.output)
    with pytest.raises(RequestError) as refused:
        raw_stop(second.control, "stop-A")
    assert refused.value.code == "saved_not_found"
    assert "but its folder is not in" in refused.value.message
    assert second.status()["saved_experiments"] == 0


def test_a_stop_whose_control_connection_alone_came_back_is_sent_again(ipc) -> None:
    """The control connection drops and comes back (a slow network), the data
    connection holds: the daemon's reply to the stop went nowhere, so the
    stop is sent again on the new connection."""
    with (
        a_client_of_a_bare_daemon(ipc, True) as (daemon, client),
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        stopping = pool.submit(client.stop, "end", 60.0)
        _, first = daemon.until("stop")[-1]
        daemon.drop_control()
        envelope, again = daemon.until("stop")[-1]
        assert again["stop_id"] == first["stop_id"]
        daemon.reply(envelope, again, {"run_id": "run-1", "path": "/data/1.json"})
        assert stopping.result(60) == "/data/1.json"


@contextlib.contextmanager
def no_new_entries(folder: Path) -> Iterator[None]:
    """``folder`` refuses new entries, even to root (``chattr +i``): the next
    experiment's staging folder cannot be made, so a stop cannot begin."""
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_stop_that_cannot_begin_says_nothing_ended(make_daemon) -> None:
    """``stop_failed``, not ``save_failed``: the experiment goes on, and a
    stop sent once the cause is mended saves it (one experiment). A client
    told ``save_failed`` here could not tell it from a save tried again,
    where a new stop ends the next experiment too."""
    daemon = make_daemon()
    client = Client("cam", daemon.data, daemon.control)
    publish_something(client, 4.0)
    staging = staging_dir(daemon.output, "x").parent
    with no_new_entries(staging), pytest.raises(RequestError) as refused:
        client.stop("full disk", timeout=60)
    assert refused.value.code == "stop_failed"
    assert "nothing ended, the experiment goes on" in refused.value.message
    publish_something(client, 5.0)
    saved = json.loads(Path(client.stop("mended", timeout=60)).read_text())
    client.close()
    assert saved["cam"]["settings"] == {"exposure": 5.0}
    assert saved["collectord"]["stopped_by"]["reason"] == "mended"
    assert len(saved_experiments(daemon.output)) == 1
