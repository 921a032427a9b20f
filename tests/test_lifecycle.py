"""The boundaries of an experiment's life: a crash at every step of a save, recovery
with live clients, a stop right after a restart, and damaged journals.

Every daemon here is a real process killed for real: at a fault point of its
own (``collectord/faults.py``: SIGKILL, as ``kill -9``) or by the test.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from conftest import DaemonProcess, run_cli, saved_experiments, send_stop_without_waiting, wait_for

from collectord import Client, journal, load_changes, load_json, store
from collectord.collector import Collector
from collectord.config import Config
from collectord.control import request
from collectord.daemon import Daemon, lifecycle
from collectord.experiment import StopRequest
from collectord.faults import ENV, PAUSE_ENV, SAVE_STEPS, Fault
from collectord.journal import JOURNAL_NAME
from collectord.protocol import Command
from collectord.streamfiles import StreamFiles


def stream_rows(metadata: dict[str, Any], *path: str) -> np.ndarray:
    node = metadata
    for name in path:
        node = node[name]
    return np.load(metadata["_path"].parent / node["file"])


def no_losses(metadata: dict[str, Any]) -> None:
    for source in metadata["collectord"]["sources"]:
        assert source["messages"]["lost"] == 0, source
        assert source["gaps"] == [], source
        assert source["messages"]["rejected"] == 0, source["recent_rejections"]


# -- 1. a crash inside a save ---------------------------------------------------------


@pytest.mark.parametrize("step", SAVE_STEPS, ids=lambda step: step.value)
def test_a_crash_at_any_step_of_a_save_saves_the_experiment_once(
    make_daemon, step: Fault, figures
) -> None:
    first = make_daemon(env={ENV: step.value})
    client = Client("cam", first.data, first.control)
    client.set_params("cam/settings", exposure=4.0, gain=2.0)
    frames = client.stream("cam/frames", ["i", "t"], "f8")
    for i in range(100):
        frames.append([i, i * 0.5])
    client.add_data("cam/note", "before")
    client.sync()

    send_stop_without_waiting(first.control)
    assert first.process is not None
    assert first.process.wait(60) == -signal.SIGKILL  # died at the fault point

    # The client goes on publishing while the daemon is away.
    client.set_params("cam/settings", exposure=5.0)
    for i in range(100, 200):
        frames.append([i, i * 0.5])
    client.add_data("cam/note", "after")

    make_daemon(data=first.data, control=first.control)
    client.sync(timeout=60)
    client.stop(timeout=60)
    client.close()

    before, after = saved_experiments(first.output)  # the stopped one once, then the next
    assert before["cam"]["note"] == "before"
    assert before["cam"]["settings"] == {"exposure": 4.0, "gain": 2.0}
    assert before["collectord"]["stopped_by"]["by"] == "control request"
    assert stream_rows(before, "cam", "frames")["i"].tolist() == list(range(100))
    assert after["cam"]["note"] == "after"
    assert after["cam"]["settings"] == {"exposure": 5.0, "gain": 2.0}  # gain carried over
    assert stream_rows(after, "cam", "frames")["i"].tolist() == list(range(100, 200))
    no_losses(before)
    no_losses(after)
    # The parameter history of each, complete: carried-in values first.
    assert [(c.path, c.value, c.carried) for c in load_changes(before["_path"])] == [
        ("cam/settings/exposure", 4.0, False),
        ("cam/settings/gain", 2.0, False),
    ]
    history = load_changes(after["_path"])
    assert [(c.path, c.value, c.carried, c.seq is None) for c in history] == [
        ("cam/settings/exposure", 4.0, True, True),
        ("cam/settings/gain", 2.0, True, True),
        ("cam/settings/exposure", 5.0, False, False),
    ]
    figures(step=step.value, rows=200, rows_saved=200, experiments=2)


# -- 2. recovery, then a daemon, with a live client ------------------------------------


@pytest.mark.parametrize("how", ["recover then run", "run --no-resume"])
def test_a_live_clients_streams_go_on_through_a_recovery(make_daemon, how: str) -> None:
    first = make_daemon()
    client = Client("cam", first.data, first.control)
    client.set_params("cam/settings", exposure=4.0)
    frames = client.stream("cam/frames", ["i"], "i8")
    for i in range(1000):
        frames.append([i])
    client.sync()
    first.kill9()
    if how == "recover then run":
        result = run_cli("recover", "--output", str(first.output))
        assert result.returncode == 0, result.stderr
        make_daemon(data=first.data, control=first.control)
    else:
        make_daemon(data=first.data, control=first.control, extra=("--no-resume",))
    for i in range(1000, 2000):
        frames.append([i])
    client.sync(timeout=60)
    client.stop(timeout=60)
    client.close()

    recovered, following = saved_experiments(first.output)
    assert "recovered" in recovered["collectord"]["restarts"][0]
    assert stream_rows(recovered, "cam", "frames")["i"].tolist() == list(range(1000))
    assert stream_rows(following, "cam", "frames")["i"].tolist() == list(range(1000, 2000))
    assert following["cam"]["settings"] == {"exposure": 4.0}
    no_losses(recovered)
    no_losses(following)


# -- 3. a stop that arrives right after a restart --------------------------------------

PAUSED_CLIENT = textwrap.dedent(
    """
    import sys
    from collectord import Client

    client = Client("cam", sys.argv[1], sys.argv[2])
    client.set_params("cam/settings", exposure=4.0)
    client.sync()
    print("ready", flush=True)
    sys.stdin.readline()
    for index in range(100):
        client.add_data(f"cam/values/v{index}", index)
    print("published", flush=True)
    sys.stdin.readline()
    client.close(timeout=60)
    """
)


def test_a_stop_right_after_a_restart_waits_for_clients_known_from_the_journal(
    make_daemon, tmp_path: Path
) -> None:
    config = tmp_path / "slow-barrier.toml"
    config.write_text("[stop]\nbarrier_timeout = 60.0\n")
    first = make_daemon(extra=("--config", str(config)))
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLIENT, first.data, first.control],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        first.kill9()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "published"  # held by the client
        os.kill(child.pid, signal.SIGSTOP)  # it cannot reconnect before the stop arrives
        second = make_daemon(data=first.data, control=first.control, extra=first.extra)
        replies: list[dict[str, Any]] = []
        stopping = threading.Thread(
            target=lambda: replies.append(
                request(second.control, Command.STOP, {"reason": "operator"}, 60)
            )
        )
        stopping.start()
        wait_for(lambda: second.status()["stop_pending"], what="the stop to be pending")
        os.kill(child.pid, signal.SIGCONT)
        stopping.join(90)
        (reply,) = replies
        assert reply["unconfirmed"] == []
        saved = load_json(reply["path"])
        assert saved["cam"]["values"] == {f"v{index}": index for index in range(100)}
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait(30)


def test_a_restart_goes_on_with_the_newest_experiment_after_the_clock_went_back(
    make_daemon, tmp_path
) -> None:
    """Run ids begin with the local wall-clock time, and a start took the
    staging folder whose name sorts last for the newest experiment. After the
    clock went back (the end of summer time, a clock stepped by NTP) between
    an experiment's start and its stop, a daemon killed while saving it
    left a successor whose id sorts first: the restart saved the successor
    as recovered, then began the next experiment from the stopped one's
    state (its parameters, its clients' sequence numbers), which wrote the
    older parameters over the last config and took the successor's
    confirmed messages for lost."""
    gate = tmp_path / "go-on"
    first = make_daemon(env={PAUSE_ENV: f"{Fault.SAVE_METADATA_WRITTEN.value}={gate}"})
    with Client("cam", first.data, first.control) as client:
        client.set_params("cam/settings", exposure=1.0)
        client.sync()
        send_stop_without_waiting(first.control)
        wait_for(lambda: (s := first.status()["saving"]) and "metadata" in s["step"], what="save")
        client.set_params("cam/settings", exposure=2.0)  # into the successor
        client.sync()
        first.kill9()
        staging = first.output / ".collectord" / "staging"
        # Both may have begun in the same second: their ids then sort by chance.
        begins = {
            folder: journal.read(folder / JOURNAL_NAME).records[0] for folder in staging.iterdir()
        }
        (successor,) = [folder for folder, begin in begins.items() if begin["follows"]]
        (stopped,) = [folder for folder in begins if folder != successor]
        # The successor as a clock an hour back would have named it.
        earlier = f"{int(stopped.name[:8]) - 1}{successor.name[8:]}"
        assert earlier < stopped.name
        records = journal.read(successor / JOURNAL_NAME).records
        assert records[0]["follows"] == stopped.name
        records[0]["run_id"] = earlier
        store.atomic_write(successor / JOURNAL_NAME, b"".join(map(journal.encode, records)))
        successor.rename(staging / earlier)

        make_daemon(first.output, data=first.data, control=first.control)
        client.set_params("cam/settings", exposure=3.0)
        client.sync(timeout=60)
        client.stop(timeout=60)
    before, after = saved_experiments(first.output)
    assert before["collectord"]["run_id"] == stopped.name
    assert before["cam"]["settings"] == {"exposure": 1.0}
    assert after["collectord"]["run_id"] == earlier
    assert after["cam"]["settings"] == {"exposure": 3.0}
    assert [change.value for change in load_changes(after["_path"])] == [1.0, 2.0, 3.0]
    no_losses(before)
    no_losses(after)
    assert load_json(first.output / "last_config.json")["cam"]["settings"] == {"exposure": 3.0}


# -- 4. damage in the middle of a journal ----------------------------------------------


def _journal_of(output: Path) -> Path:
    (path,) = (output / ".collectord" / "staging").glob(f"*/{JOURNAL_NAME}")
    return path


def test_a_recovery_shows_how_far_its_replay_has_got(make_daemon, monkeypatch, caplog) -> None:
    """``collectord recover`` over a long journal says how far it is (here at
    every record: the interval is set below any replay's duration)."""
    daemon = make_daemon()
    with Client("cam", daemon.data, daemon.control) as client:
        for index in range(50):
            client.set_params("cam/settings", exposure=float(index))
            client.sync()  # one record per message
        daemon.kill9()
        records = len(journal.read(_journal_of(daemon.output)).records)
        monkeypatch.setattr(lifecycle, "REPLAY_PROGRESS_EVERY", -1.0)
        config = Config(output=str(daemon.output))
        with caplog.at_level(logging.INFO, logger="collectord"):
            opened = lifecycle.recover(config.output_dir, config.last_config_file, "npy")
        client.close(timeout=0.1)  # everything was confirmed
    shown = [
        (float(match[1]), int(match[2]), int(match[3]))
        for match in (
            re.search(r"replaying .*: (\d+)% \((\d+) of (\d+) records\)", record.getMessage())
            for record in caplog.records
        )
        if match
    ]
    assert [index for _, index, _ in shown] == list(range(records))
    assert {total for _, _, total in shown} == {records}
    percents = [percent for percent, _, _ in shown]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] < 100
    (path,) = opened.saved
    assert load_json(path)["cam"]["settings"]["exposure"] == 49.0


def test_a_flipped_byte_in_the_middle_of_a_journal_costs_one_record(make_daemon) -> None:
    daemon = make_daemon()
    with Client("cam", daemon.data, daemon.control) as client:
        frames = client.stream("cam/frames", ["i"], "i8")
        for index in range(400):
            client.add_data(f"cam/values/v{index}", index)
            frames.append([index])
            frames.flush()
            client.sync()  # one record per message
        daemon.kill9()
        path = _journal_of(daemon.output)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))

        result = run_cli("recover", "--output", str(daemon.output))
        assert result.returncode == 3, result.stderr
        assert str(path) in result.stderr and "damaged" in result.stderr
        client.close(timeout=0.1)  # everything was confirmed
    (saved,) = saved_experiments(daemon.output)
    values = saved["cam"]["values"]
    missing = [index for index in range(400) if f"v{index}" not in values]
    rows = stream_rows(saved, "cam", "frames")["i"].tolist()
    # One record lost: a value, or a block (whose rows stay in the file).
    assert len(missing) + (400 - len(rows)) <= 1
    assert rows == sorted(rows) and rows[-1] == 399
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 1  # named, not silent
    (restart,) = saved["collectord"]["restarts"]
    aside = Path(restart["damage"]["journal_kept_at"])
    assert aside.read_bytes() == bytes(data)


def test_a_record_from_a_newer_version_is_named_and_the_rest_recovered(make_daemon) -> None:
    daemon = make_daemon()
    with Client("cam", daemon.data, daemon.control) as client:
        client.set_params("cam/settings", exposure=4.0)
        client.sync()
        daemon.kill9()
        path = _journal_of(daemon.output)
        with open(path, "ab") as file:
            file.write(journal.encode({"t": "hologram", "depth": 3}))
        result = run_cli("recover", "--output", str(daemon.output))
        assert result.returncode == 3, result.stderr
        assert "hologram" in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr
        client.close(timeout=0.1)
    (saved,) = saved_experiments(daemon.output)
    assert saved["cam"]["settings"] == {"exposure": 4.0}
    _the_folder_is_still_usable(daemon)


def test_a_begin_record_missing_a_field_is_named_and_the_folder_stays_usable(
    make_daemon,
) -> None:
    daemon = make_daemon()
    with Client("cam", daemon.data, daemon.control) as client:
        client.set_params("cam/settings", exposure=4.0)
        client.add_data("cam/note", "kept")
        client.sync()
        daemon.kill9()
        client.close(timeout=0.1)
    path = _journal_of(daemon.output)
    records = journal.read(path).records
    del records[0]["run_id"]
    path.write_bytes(b"".join(journal.encode(record) for record in records))
    restarted = make_daemon(data=daemon.data, control=daemon.control)  # resumes, no crash
    assert restarted.status()["restarts"][0]["damage"]["problems"]
    saved = load_json(restarted.stop()["path"])
    assert saved["cam"]["note"] == "kept"
    assert "run_id" in str(saved["collectord"]["restarts"][0]["damage"])
    _the_folder_is_still_usable(restarted)


def _the_folder_is_still_usable(daemon: DaemonProcess) -> None:
    if daemon.process is not None and daemon.process.poll() is None:
        assert daemon.terminate() == 0
    again = DaemonProcess(daemon.output, daemon.data, daemon.control).start()
    try:
        with Client("later", again.data, again.control) as client:
            client.add_data("later/ok", True)
            saved = load_json(client.stop())
        assert saved["later"]["ok"] is True
    finally:
        again.close()


# -- 5. a step that fails once the experiment counts as saved ---------------------------

#: What a failure is injected into, after step 5 of a save (the next experiment's
#: journal begun): from there on the experiment is saved, whatever fails.
AFTER_STEP_5 = [
    "journal deleted",  # step 6
    "converted .npy removed",
    "moved into place",  # step 7
    "next experiment's files opened",
]


def _frames(seq: int, kind: str, body: dict[str, Any], raw: bytes | None = None) -> list[bytes]:
    header = {"v": 1, "kind": kind, "source": "cam", "session": "s1", "seq": seq, "resends": True}
    frames = [msgpack.packb(header), msgpack.packb(body)]
    return frames if raw is None else [*frames, raw]


@pytest.mark.parametrize("until", ["once", "until the restart"])
@pytest.mark.parametrize("where", AFTER_STEP_5)
def test_a_failure_after_the_next_experiment_began_is_logged_not_raised(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    until: str,
) -> None:
    """The stop is answered with the saved experiment, later stops save theirs,
    and a restart completes what was left: every experiment is published once.

    A journal that cannot be deleted keeps its folder in staging, marked
    saved, for the next start to complete (else a start would save that
    experiment again from its journal)."""
    output = tmp_path / "out"
    config = Config(output=str(output), stream_format="csv")
    daemon = Daemon(config)
    first_staging = daemon.durability.journal.path.parent
    failures = []

    def fail(what: str, error: type[Exception] = OSError) -> None:
        if until == "once" and failures:
            return
        failures.append(what)
        raise error(errno.EIO, f"injected: {what}")

    if where == "journal deleted":
        unlink = Path.unlink

        def failing_unlink(self: Path, missing_ok: bool = False) -> None:
            if self.name == JOURNAL_NAME and self.parent == first_staging:
                fail(where)
            unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", failing_unlink)
    elif where == "converted .npy removed":
        remove = StreamFiles.remove_converted
        monkeypatch.setattr(
            StreamFiles, "remove_converted", lambda self: fail(where) or remove(self)
        )
    elif where == "moved into place":
        publish = store.publish

        def failing_publish(out: Path, staging: Path, named: Any, stamp: str) -> Path:
            if staging == first_staging:
                fail(where)
            return publish(out, staging, named, stamp)

        monkeypatch.setattr(store, "publish", failing_publish)
    else:
        attach = Collector.attach_files

        def failing_attach(self: Collector, files: StreamFiles) -> None:
            fail(where, ValueError)  # as a too-wide .npy header once did
            attach(self, files)

        monkeypatch.setattr(Collector, "attach_files", failing_attach)

    seq = 0

    def send(kind: str, body: dict[str, Any], raw: bytes | None = None) -> None:
        nonlocal seq
        seq += 1
        daemon.on_data(_frames(seq, kind, body, raw))

    def block(values: list[float]) -> None:
        rows = np.array(values, dtype="<f8")[:, None]
        send("block", {"path": "cam/frames", "rows": len(rows)}, rows.tobytes())

    send("stream", {"path": "cam/frames", "columns": ["t"], "dtype": "<f8"})
    block([0.0, 1.0, 2.0])
    send("data", {"path": "cam/note", "value": "first"})
    replies = []
    for note, values in (("second", [3.0, 4.0]), ("third", [5.0])):
        replies.append(daemon.lifecycle.save(StopRequest(by="test", reason=note), []))
        send("data", {"path": "cam/note", "value": note})
        block(values)
    replies.append(daemon.lifecycle.save(StopRequest(by="test", reason="last"), []))
    daemon._teardown()
    assert failures
    assert any("injected" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert len({reply["run_id"] for reply in replies}) == 3

    monkeypatch.undo()
    restarted = Daemon(config)  # completes whatever was left in staging
    restarted._teardown()
    saved = saved_experiments(output)
    assert [m["cam"]["note"] for m in saved] == ["first", "second", "third"]
    assert [m["collectord"]["run_id"] for m in saved] == [r["run_id"] for r in replies]
    # None was saved again from its journal (which would mark it as recovered).
    assert [m["collectord"].get("restarts") for m in saved] == [None] * 3
    for metadata, rows in zip(saved, ([0.0, 1.0, 2.0], [3.0, 4.0], [5.0]), strict=True):
        descriptor = metadata["cam"]["frames"]
        assert descriptor["rows"] == len(rows)
        assert [p.suffix for p in (metadata["_path"].parent / "streams" / "cam").iterdir()] == [
            ".csv"
        ]
        with open(metadata["_path"].parent / descriptor["file"], newline="") as handle:
            assert [float(line["t"]) for line in csv.DictReader(handle)] == rows
    # Only the running experiment, begun by the last save, is left in staging.
    assert len(list((output / ".collectord" / "staging").iterdir())) == 1


def killed_once_marked_saved(daemon: DaemonProcess, client: Client) -> Path:
    """Stop ``daemon`` (started with the ``SAVE_MARKED`` fault) with a note
    set, and wait for its death once the experiment is marked saved; the
    staging folder it left."""
    client.add_data("cam/note", "saved")
    client.sync()
    send_stop_without_waiting(daemon.control)
    assert daemon.process is not None
    assert daemon.process.wait(60) == -signal.SIGKILL  # died once marked saved
    staging = daemon.output / ".collectord" / "staging"
    (marked,) = [run for run in staging.iterdir() if (run / "saved").exists()]
    return marked


def test_a_saved_folder_whose_metadata_is_damaged_does_not_stop_the_daemon(make_daemon) -> None:
    """A folder marked saved whose metadata file cannot be read (damaged on
    disk) made every start fail with a traceback: no daemon could run on the
    output folder again. It waits in staging, named in the log and status."""
    first = make_daemon(env={ENV: Fault.SAVE_MARKED.value})
    with Client("cam", first.data, first.control) as client:
        marked = killed_once_marked_saved(first, client)
        (metadata,) = marked.glob("*_metadata.json")
        metadata.write_bytes(metadata.read_bytes()[:40])  # cut short

        second = make_daemon(data=first.data, control=first.control)
        assert str(marked) in (second.status()["last_error"] or "")
        client.add_data("cam/note", "next")
        client.sync(timeout=60)
        after = load_json(client.stop(timeout=60))
    assert after["cam"]["note"] == "next"
    assert metadata.is_file()  # kept, for a person to look at


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_saved_folder_that_cannot_be_changed_does_not_stop_the_daemon(make_daemon) -> None:
    """A folder marked saved whose journal cannot be deleted (a folder made
    immutable, or owned by another user) made every start fail with a
    traceback, although a save that meets the same failure only logs it."""
    first = make_daemon(env={ENV: Fault.SAVE_MARKED.value})
    with Client("cam", first.data, first.control) as client:
        marked = killed_once_marked_saved(first, client)
        if subprocess.run(["chattr", "+i", str(marked)], capture_output=True).returncode:
            pytest.skip("chattr +i is not supported here")
        try:
            second = make_daemon(data=first.data, control=first.control)
            assert str(marked) in (second.status()["last_error"] or "")
            client.add_data("cam/note", "next")
            client.sync(timeout=60)
            after = load_json(client.stop(timeout=60))
        finally:
            subprocess.run(["chattr", "-i", str(marked)], check=True)
    assert after["cam"]["note"] == "next"
    second.terminate()
    make_daemon(data=first.data, control=first.control).terminate()  # completes it now
    assert [m["cam"]["note"] for m in saved_experiments(first.output)] == ["saved", "next"]


# -- 6. the daemon goes on while it saves ----------------------------------------------


def test_the_daemon_answers_and_takes_messages_while_it_saves(make_daemon, tmp_path) -> None:
    """A save held at a step (a pause point) does not hold the daemon: status is
    answered, with the save's progress, and what arrives meanwhile belongs to
    the next experiment."""
    gate = tmp_path / "go-on"
    daemon = make_daemon(env={PAUSE_ENV: f"{Fault.SAVE_METADATA_WRITTEN.value}={gate}"})
    with Client("cam", daemon.data, daemon.control) as client:
        frames = client.stream("cam/frames", ["i"], "i8")
        client.set_params("cam/settings", exposure=4.0)
        for i in range(100):
            frames.append([i])
        client.add_data("cam/note", "before")
        client.sync()
        replies: list[str] = []
        stopping = threading.Thread(target=lambda: replies.append(client.stop(timeout=120)))
        stopping.start()
        # The save stays at that step (its pause point) until the gate opens.
        status = wait_for(
            lambda: (s := daemon.status())["saving"] and "metadata" in s["saving"]["step"] and s,
            what="the save to be held at its metadata",
        )
        assert status["saving"]["run_id"] != status["run_id"]  # the next one runs
        client.add_data("cam/note", "during")
        client.set_params("cam/settings", exposure=5.0)
        for i in range(100, 150):
            frames.append([i])
        client.sync(timeout=60)  # confirmed while the save is held
        assert not replies
        gate.touch()
        stopping.join(120)
        after_path = Path(client.stop())
    before, after = load_json(replies[0]), load_json(after_path)
    before["_path"], after["_path"] = Path(replies[0]), after_path
    assert before["cam"]["note"] == "before" and before["cam"]["settings"]["exposure"] == 4.0
    assert stream_rows(before, "cam", "frames")["i"].tolist() == list(range(100))
    assert after["cam"]["note"] == "during" and after["cam"]["settings"]["exposure"] == 5.0
    assert stream_rows(after, "cam", "frames")["i"].tolist() == list(range(100, 150))


def test_collectord_stop_shows_the_progress_of_a_long_save(make_daemon, tmp_path) -> None:
    gate = tmp_path / "go-on"
    daemon = make_daemon(env={PAUSE_ENV: f"{Fault.SAVE_LAST_CONFIG_WRITTEN.value}={gate}"})
    with Client("cam", daemon.data, daemon.control) as client:
        client.set_params("cam/settings", exposure=4.0)
        client.sync()
        stop = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collectord",
                "stop",
                "--control",
                daemon.control,
                "--timeout",
                "120",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert stop.stderr is not None
        # Shown once the stop has taken a second, a line per change: the save
        # stays at its pause point until the gate opens.
        lines = [stop.stderr.readline() for _ in range(1)]
        while "the last config" not in lines[-1] and lines[-1] and len(lines) < 10:
            lines.append(stop.stderr.readline())
        assert lines[-1].startswith("saving ") and "the last config" in lines[-1], lines
        gate.touch()
        out, err = stop.communicate(timeout=120)
    assert stop.returncode == 0, err
    assert load_json(out.strip())["cam"]["settings"] == {"exposure": 4.0}


def test_collectord_stop_waits_beyond_its_timeout_while_the_save_goes_on(
    make_daemon, tmp_path
) -> None:
    """``--timeout`` (5 s by default) bounded the whole stop: a save that took longer
    made ``collectord stop`` say no daemon answered and exit 1, and the experiment
    was saved all the same (a user who stopped again ended the next one too)."""
    gate = tmp_path / "go-on"
    daemon = make_daemon(env={PAUSE_ENV: f"{Fault.SAVE_LAST_CONFIG_WRITTEN.value}={gate}"})
    with Client("cam", daemon.data, daemon.control) as client:
        client.set_params("cam/settings", exposure=4.0)
        client.sync()
        stop = subprocess.Popen(
            [sys.executable, "-m", "collectord", "stop", "--control", daemon.control,
             "--timeout", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            wait_for(
                lambda: (saving := daemon.status()["saving"]) and saving["seconds"] > 3,
                what="the save to be held for three times the stop's timeout",
            )
            assert stop.poll() is None, stop.communicate()
        finally:
            gate.touch()
        out, err = stop.communicate(timeout=120)
    assert stop.returncode == 0, err
    assert "no collectord daemon answered" not in err
    assert load_json(out.strip())["cam"]["settings"] == {"exposure": 4.0}
    assert len(saved_experiments(daemon.output)) == 1


@pytest.mark.parametrize(
    "step", [Fault.SAVE_CHANGES_WRITTEN, Fault.SAVE_LAST_CONFIG_WRITTEN], ids=lambda f: f.value
)
def test_a_save_config_during_a_save_is_not_undone_by_it(make_daemon, tmp_path, step) -> None:
    """``save_config`` while a stop's save runs (stytra saves its config as it
    closes, a big tree's save takes seconds): the save then wrote the last
    config as the stopped experiment left it, over what ``save_config`` had
    just written and confirmed, and ``restore`` answered the older values; a
    daemon then ended with nothing new to save kept them so. (Both wrote
    through one temporary file name, too.)"""
    gate = tmp_path / "go-on"
    daemon = make_daemon(env={PAUSE_ENV: f"{step.value}={gate}"})
    with Client("cam", daemon.data, daemon.control) as client:
        client.set_params("cam/settings", exposure=4.0)
        client.sync()
        replies: list[str] = []
        stopping = threading.Thread(target=lambda: replies.append(client.stop(timeout=120)))
        stopping.start()
        wait_for(
            lambda: (
                (saving := daemon.status()["saving"])
                and "metadata" not in saving["step"]
                and "stream" not in saving["step"]
                and "queued" not in saving["step"]
                and "beginning" not in saving["step"]
            ),
            what="the save to be held at its pause point",
        )
        client.set_params("cam/settings", exposure=5.0)
        client.sync()
        written = Path(client.save_config())
        assert load_json(written)["cam"]["settings"] == {"exposure": 5.0}
        gate.touch()
        stopping.join(120)
        assert replies and load_json(replies[0])["cam"]["settings"] == {"exposure": 4.0}
        assert client.restore("cam/settings") == {"exposure": 5.0}
    assert load_json(written)["cam"]["settings"] == {"exposure": 5.0}
    assert daemon.terminate() == 0  # nothing new since save_config: no experiment saved
    assert load_json(written)["cam"]["settings"] == {"exposure": 5.0}
    assert not list(written.parent.glob(".*.tmp"))


@pytest.mark.parametrize(
    "failing", ["begin", "metadata", "last config"], ids=lambda step: f"{step} fails"
)
def test_a_save_that_fails_is_tried_again_and_the_next_experiment_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A full disk at a step of a save: nothing is confirmed of the next
    experiment until its BEGIN is written, the save is tried again from the
    step that failed, and once it succeeds both experiments are whole."""
    output = tmp_path / "out"
    daemon = Daemon(Config(output=str(output)))
    lifecycle, durability = daemon.lifecycle, daemon.durability
    failures = 2

    def full_disk(*_: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(errno.ENOSPC, "injected: no space left")

    where = {
        "begin": (journal.Journal, "write_first"),
        "metadata": (store, "write_metadata"),
        "last config": (store, "write_last_config"),
    }[failing]
    original = getattr(*where)

    def failing_step(*args: Any, **kwargs: Any) -> Any:
        full_disk()
        return original(*args, **kwargs)

    seq = 0

    def send(kind: str, body: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        daemon.on_data(_frames(seq, kind, body))

    send("params", {"path": "cam/settings", "values": {"gain": 2}})
    send("data", {"path": "cam/note", "value": "stopped"})
    lifecycle.flush_when_due()
    durability.make_durable(lifecycle._received())
    monkeypatch.setattr(*where, failing_step)
    job = lifecycle.begin_save(StopRequest(by="test", reason="full disk"), [])
    send("data", {"path": "cam/note", "value": "next"})  # into the next experiment
    outcomes = []
    while len(outcomes) < 3:
        if not outcomes:
            daemon.saver.start(job)
        else:
            daemon.saver.retry_at = 0.0  # not the interval a daemon waits
            daemon.saver.retry()
        daemon.saver.wait()
        finished = daemon.saver.finished()
        assert finished is not None
        outcomes.append(finished[1])
        if not isinstance(finished[1], BaseException):
            break
        if failing == "begin":  # the next experiment's records wait, unconfirmed
            assert durability.held
    assert [isinstance(outcome, OSError) for outcome in outcomes] == [True, True, False]
    lifecycle.finish_save(job, outcomes[-1])
    lifecycle.flush_when_due()
    durability.settle()
    assert not durability.held
    lifecycle.save(StopRequest(by="test", reason="last"), [])
    daemon._teardown()
    first, second = saved_experiments(output)
    assert first["cam"] == {"settings": {"gain": 2}, "note": "stopped"}
    assert second["cam"]["note"] == "next"
