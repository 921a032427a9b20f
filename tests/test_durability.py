"""Durable writes: the background flush keeps the journal in order, each record
exactly once, and a disk that fills up loses nothing already written.

The failing disk is real: a child process lowers its own file size limit
(RLIMIT_FSIZE), so the kernel cuts a write part-way with EFBIG.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collectord import Client, DaemonTimeout, journal, load_json
from collectord.daemon.history import PARTIAL_NAME, HistoryLog
from collectord.daemon.process import spawn
from collectord.flusher import Flusher
from collectord.journal import Journal
from collectord.paths import parse_path
from collectord.streamfiles import StreamFiles, StreamSpec
from collectord.tree import Tree


def record(index: int) -> dict:
    return {"t": "msg", "index": index, "pad": "x" * 100}


def spec() -> StreamSpec:
    declaration = {"path": "tracking/tail", "columns": ["a", "b"], "dtype": "<f8"}
    return StreamSpec.parse(parse_path("tracking/tail"), declaration, "s1", "tracking")


def test_a_flush_writes_records_in_order_and_confirms_its_marks(tmp_path: Path) -> None:
    log = Journal(tmp_path / "journal")
    files = StreamFiles(tmp_path)
    stream = spec()
    files.open(stream)
    flusher = Flusher()
    try:
        for index in range(10):
            log.append(record(index))
        files.write(stream, np.ones((3, 2)).tobytes())
        flusher.start(log, files, {"s1": 10})
        assert flusher.busy and files.unsynced == 0
        for index in range(10, 15):  # while the flush runs
            log.append(record(index))
        done = flusher.wait()
        assert done is not None and done.error is None and done.marks == {"s1": 10}
        assert not flusher.busy and flusher.wait() is None
        assert [stream.spec.path for stream in done.streams] == [stream.path]
        assert log.pending  # the records appended meanwhile wait for the next flush
        flusher.start(log, files, {"s1": 15})
        assert flusher.wait() is not None
    finally:
        flusher.close()
        files.close()
        log.close()
    found = journal.read(tmp_path / "journal")
    assert [r["index"] for r in found.records] == list(range(15))
    assert not found.torn and not found.damage


def _fill_the_disk(folder: str, results) -> None:
    """In a child: a flush cut by the file size limit, then one after it is lifted."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
    path = Path(folder) / "journal"
    log = Journal(path)
    for index in range(20):
        log.append(record(index))
    log.flush()
    size = path.stat().st_size
    for index in range(20, 60):
        log.append(record(index))
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, hard))  # room for a few records
    flusher = Flusher()
    flusher.start(log, None, {"s1": 60})
    log.append(record(60))  # while the flush runs: it must stay after 20..59
    failed = flusher.wait()
    cut_back = path.stat().st_size == size  # the part-way write is undone
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the disk has room again
    flusher.start(log, None, {"s1": 61})
    retried = flusher.wait()
    flusher.close()
    log.close()
    results.put(
        (str(failed.error) if failed else None, cut_back, retried.error if retried else "none")
    )


@pytest.mark.timeout(60)
def test_a_flush_cut_short_is_retried_writing_each_record_once_in_order(
    tmp_path: Path,
) -> None:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_fill_the_disk, args=(str(tmp_path), results))
    child.start()
    failure, cut_back, retry_error = results.get(timeout=50)
    child.join(timeout=10)
    assert failure is not None and "too large" in failure  # EFBIG
    assert cut_back
    assert retry_error is None
    found = journal.read(tmp_path / "journal")
    assert [r["index"] for r in found.records] == list(range(61))
    assert not found.torn and not found.damage


def _begin_in_a_folder_that_cannot_be_synced(folder: str, results) -> None:
    """In a child: a BEGIN written, the fsync of its folder failing (no file
    descriptor left to open the folder with), then the same BEGIN again, as a
    save tries its step again."""
    path = Path(folder) / "run" / "journal"
    log = Journal(path)
    begin = {"t": "begin", "index": 0}
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # no open succeeds
    try:
        log.write_first(begin)
        failure = None
    except OSError as exc:
        failure = str(exc)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        log.write_first(begin)
        retry = None
    except BaseException as exc:
        retry = repr(exc)
    log.append(record(1))
    log.close()
    results.put((failure, retry))


@pytest.mark.timeout(60)
def test_a_begin_whose_folder_could_not_be_synced_is_completed_by_the_next_try(
    tmp_path: Path,
) -> None:
    """The next try of the save's first step failed for ever ("the first
    record comes first"): the stop was never saved, and the next experiment's
    records waited in memory, confirmed to nobody."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(
        target=_begin_in_a_folder_that_cannot_be_synced, args=(str(tmp_path), results)
    )
    child.start()
    failure, retry = results.get(timeout=50)
    child.join(timeout=10)
    assert failure is not None and "Too many open files" in failure
    assert retry is None
    found = journal.read(tmp_path / "run" / "journal")
    assert found.records == [{"t": "begin", "index": 0}, record(1)]


def _cut_a_block(folder: str, results) -> None:
    """In a child: a block cut by the file size limit leaves no partial rows."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    files = StreamFiles(Path(folder))
    stream = spec()
    files.open(stream)
    files.write(stream, np.full((10, 2), 1.0).tobytes())
    size = (Path(folder) / stream.file_name()).stat().st_size
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for 6 of 10 rows
    try:
        files.write(stream, np.full((10, 2), 2.0).tobytes())
        failure = None
    except OSError as exc:
        failure = str(exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    files.write(stream, np.full((5, 2), 3.0).tobytes())
    stream.rows = 15  # what the collector counts: the refused block is not among them
    files.finish("npy")
    results.put(failure)


@pytest.mark.timeout(60)
def test_a_block_cut_by_a_full_disk_leaves_no_partial_rows(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_cut_a_block, args=(str(tmp_path), results))
    child.start()
    failure = results.get(timeout=50)
    child.join(timeout=10)
    assert failure is not None and "too large" in failure
    table = np.load(tmp_path / spec().file_name())
    assert table["a"].tolist() == [1.0] * 10 + [3.0] * 5


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit")
def test_a_daemon_on_a_full_disk_confirms_nothing_and_loses_nothing(
    make_daemon,
) -> None:
    """The running daemon's file size limit is lowered, then lifted (``prlimit``)."""
    daemon = make_daemon()
    pid = daemon.process.pid
    with Client("camera", daemon.data, daemon.control) as client:
        tail = client.stream("camera/tail", ["v"], "f8")
        tail.extend(np.arange(10_000.0)[:, None])
        client.set_params("camera/settings", index=0)
        client.sync()
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        # No file may grow, nor a new one get its header: the disk is full.
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        for index in range(1, 501):
            client.set_params("camera/settings", index=index)
        tail.extend(np.full((10, 1), -1.0))
        late = client.stream("camera/late", ["v"], "f8")  # declared on the full disk
        late.extend(np.full((4, 1), 7.0))
        with pytest.raises(DaemonTimeout):
            client.sync(timeout=1.0)  # nothing is confirmed while the journal cannot grow
        assert "write failed" in (daemon.status()["last_error"] or "")  # journal or stream
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))  # room again
        client.sync(timeout=30)
        assert daemon.status()["last_error"] is None
        tail.extend(np.full((5, 1), 3.0))
        client.sync()
        daemon.kill9()  # the restarted daemon replays everything
        daemon = make_daemon(data=daemon.data, control=daemon.control)
        path = Path(client.stop())
    saved = load_json(path)
    assert saved["camera"]["settings"] == {"index": 500}
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 0 and source["messages"]["rejected"] == 0
    # The blocks sent while the disk was full were refused, not confirmed, and
    # sent again by the client once there was room.
    rows = np.load(path.parent / saved["camera"]["tail"]["file"])["v"]
    assert rows.tolist() == [*np.arange(10_000.0), *[-1.0] * 10, *[3.0] * 5]
    late_rows = np.load(path.parent / saved["camera"]["late"]["file"])["v"]
    assert late_rows.tolist() == [7.0] * 4
    assert daemon.process.poll() is None


def test_a_stream_file_that_cannot_be_created_costs_its_blocks_alone_and_replays_alike(
    make_daemon,
) -> None:
    """A folder squats the stream file's name: an error no room on the disk cures."""
    import msgpack
    import zmq
    from conftest import wait_for

    from collectord.protocol import Command

    daemon = make_daemon()
    (journal_file,) = daemon.output.glob(".collectord/staging/*/journal")
    squatters = [journal_file.parent / "streams" / "cam" / name for name in ("t.npy", "u.npy")]
    for squatter in squatters:
        squatter.mkdir(parents=True)
    context = zmq.Context()
    publisher = context.socket(zmq.XPUB)
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.connect(daemon.data)
    assert publisher.poll(30_000) and publisher.recv() == b"\x01"
    bodies = [
        {"path": "cam/settings", "values": {"a": 1.0}},
        {"path": "cam/t", "columns": ["x"], "dtype": "<f8"},
        {"path": "cam/settings", "values": {"b": 2.0}},
        {"path": "cam/note", "value": "after"},
    ]
    header = {"v": 1, "kind": "batch", "source": "raw", "session": "raw0001", "seq": 1}
    header["kinds"] = ["params", "stream", "params", "data"]
    publisher.send_multipart([msgpack.packb(header), b"".join(map(msgpack.packb, bodies))])
    block = {"v": 1, "kind": "block", "source": "raw", "session": "raw0001", "seq": 5}
    rows = np.arange(2.0).tobytes()
    publisher.send_multipart(
        [msgpack.packb(block), msgpack.packb({"path": "cam/t", "rows": 2}), rows]
    )
    publisher.close()
    context.term()
    # A client that resends gets its block rejected too, not sent again forever.
    with Client("camera", daemon.data, daemon.control) as client:
        client.stream("cam/u", ["x"]).extend(np.ones((3, 1)))
        client.sync(timeout=20)

    def counts(name: str) -> dict:
        found = [s["messages"] for s in daemon.status()["sources"] if s["name"] == name]
        return found[0] if found else {}

    live = wait_for(lambda: counts("raw").get("rejected") == 1 and counts("raw"))
    assert live["messages"] == 4  # the declaration stands; only its block is refused
    assert counts("camera")["rejected"] == 1
    daemon.request(Command.SYNC, {"session": "raw0001", "seq": 5})  # journaled
    daemon.kill9()
    for squatter in squatters:
        squatter.rmdir()  # a replay that wrote the block now would count it applied
    daemon = make_daemon(data=daemon.data, control=daemon.control)
    assert counts("raw") == live
    path = Path(daemon.stop()["path"])
    saved = load_json(path)
    assert saved["cam"]["settings"] == {"a": 1.0, "b": 2.0} and saved["cam"]["note"] == "after"
    assert saved["cam"]["t"]["rows"] == 0
    assert np.load(path.parent / saved["cam"]["t"]["file"]).shape == (0,)


def _history_on_a_full_disk(folder: str, results) -> None:
    """In a child: the parameter history's writing ahead cut by the file size
    limit, then its save once there is room."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    partial = Path(folder) / PARTIAL_NAME
    entries: list = []
    history = HistoryLog(Path(folder), entries, Tree(), 0.0, lambda session: "cam")
    entries.extend((float(seq), "s1", seq, ("cam",), "gain", seq) for seq in range(1, 6))
    history.advance()
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (partial.stat().st_size, hard))
    # A few lines: they wait in the file's buffer, whose flush fails.
    entries.extend((float(seq), "s1", seq, ("cam",), "gain", seq) for seq in range(6, 11))
    try:
        history.advance()
        failure = None
    except OSError as exc:
        failure = str(exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    try:
        history.finish(Path(folder) / "saved_changes.jsonl")
        error = None
    except Exception as exc:
        error = repr(exc)
    results.put((failure, error))


@pytest.mark.timeout(60)
def test_a_history_whose_writing_ahead_a_full_disk_cut_is_saved_once_there_is_room(
    tmp_path: Path,
) -> None:
    """The failed write left the history's file closed but still in use: the
    save's next try failed on it ("I/O operation on closed file")."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_history_on_a_full_disk, args=(str(tmp_path), results))
    child.start()
    failure, error = results.get(timeout=50)
    child.join(timeout=10)
    assert failure is not None and "too large" in failure
    assert error is None
    lines = (tmp_path / "saved_changes.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 11))


def run_args(output: Path) -> list[str]:
    """``collectord run``'s arguments for a daemon on ``output`` and free ports."""
    return [
        "--output",
        str(output),
        "--data",
        "tcp://127.0.0.1:*",
        "--control",
        "tcp://127.0.0.1:*",
    ]


def _no_file_may_grow() -> None:
    """In the child, before ``exec``: every write to a file fails (EFBIG), as on a full disk."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit")
def test_a_daemon_that_cannot_write_its_folder_at_start_says_so_in_one_line(
    tmp_path: Path, make_daemon
) -> None:
    """Not a traceback: ``collectord run`` names the folder and the error, and
    the stytra drop-in, which starts the daemon itself, quotes that line."""
    output = tmp_path / "out"
    args = run_args(output)
    failed = subprocess.run(
        [sys.executable, "-m", "collectord", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_no_file_may_grow,
    )
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("collectord run:")]
    assert f"cannot start on the output folder {output}" in line and "File too large" in line
    # Nothing it began is in the way once the disk has room.
    daemon = make_daemon(output)
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", index=1)
        path = Path(client.stop())
    assert load_json(path)["camera"]["settings"] == {"index": 1}


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit")
def test_a_daemon_stopped_on_a_full_disk_says_what_it_could_not_write_and_loses_nothing(
    tmp_path: Path, make_daemon
) -> None:
    """SIGTERM while the journal cannot grow: the save fails, and so does the
    last flush; the daemon exits with one line saying so (no traceback), its
    lock let go, and the next daemon gets every message from the client."""
    output = tmp_path / "out"
    args = run_args(output)
    first = spawn(args, stderr=subprocess.PIPE)
    try:
        with Client("camera", first.data, first.control) as client:
            client.set_params("camera/settings", index=0)
            client.sync()
            _, hard = resource.prlimit(first.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(first.pid, resource.RLIMIT_FSIZE, (0, hard))
            for index in range(1, 51):
                client.set_params("camera/settings", index=index)
            with pytest.raises(DaemonTimeout):
                client.sync(timeout=1.0)  # in the journal's buffer, not on disk
            first.process.send_signal(signal.SIGTERM)
            assert first.process.wait(60) == 1
            assert first.process.stderr is not None
            said = first.process.stderr.read()
            assert "Traceback" not in said
            last = said.splitlines()[-1]
            assert last.startswith("collectord run: the journal's last records could not be")
            assert "File too large" in last
            daemon = make_daemon(output, data=first.data, control=first.control)
            path = Path(client.stop())
    finally:
        first.close()
        if first.process.stderr is not None:
            first.process.stderr.close()
    saved = load_json(path)
    assert saved["camera"]["settings"] == {"index": 50}
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 0
    assert daemon.process.poll() is None


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_an_output_folder_taken_away_under_the_daemon_is_written_again(
    tmp_path: Path, make_daemon, how: str
) -> None:
    """``rm -rf`` of the output folder, or a script moving it to a server,
    while an experiment runs: the system lets the daemon go on writing its
    open files, whose data a crash would then lose although it was confirmed.
    The daemon puts them back (and its lock) before it confirms anything."""
    from conftest import wait_for

    daemon = make_daemon()
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", index=0)
        tail = client.stream("camera/tail", ["v"], "f8")
        tail.extend(np.arange(10.0)[:, None])
        client.sync()
        (journal_file,) = daemon.output.glob(".collectord/staging/*/journal")
        partial = journal_file.parent / "changes.partial"
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, what="history")
        if how == "deleted":
            shutil.rmtree(daemon.output)
        else:
            shutil.move(daemon.output, tmp_path / "on-the-server")
        for index in range(1, 51):
            client.set_params("camera/settings", index=index)
        tail.extend(np.arange(10.0, 20.0)[:, None])
        client.sync()
        assert journal_file.is_file()
        with pytest.raises(AssertionError, match="in use by another collectord process"):
            make_daemon(daemon.output)  # the lock is back too
        daemon.kill9()
        daemon = make_daemon(daemon.output, data=daemon.data, control=daemon.control)
        path = Path(client.stop())
    saved = load_json(path)
    assert saved["camera"]["settings"] == {"index": 50}
    rows = np.load(path.parent / saved["camera"]["tail"]["file"])["v"]
    assert rows.tolist() == [*np.arange(20.0)]
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 0 and source["messages"]["rejected"] == 0
    changes = path.with_name(path.name.replace("_metadata.json", "_changes.jsonl"))
    assert len(changes.read_text().splitlines()) == 51


def test_an_output_folder_taken_away_during_a_save_is_written_again(
    tmp_path: Path, make_daemon
) -> None:
    """Taken away while a save is under way (held at a pause point): the save
    puts its own files back, and the next experiment's first flush, which
    fails on the folder of its new stream file, puts back its files instead
    of failing again and again."""
    from conftest import saved_experiments, send_stop_without_waiting, wait_for

    gate = tmp_path / "go-on"
    daemon = make_daemon(env={"COLLECTORD_PAUSE": f"save.next_begun={gate}"})
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", index=0)
        tail = client.stream("camera/tail", ["v"], "f8")
        tail.extend(np.arange(10.0)[:, None])
        client.sync()
        send_stop_without_waiting(daemon.control)
        wait_for(lambda: daemon.status()["saving"], what="the save to begin")
        shutil.rmtree(daemon.output)
        gate.touch()
        client.set_params("camera/settings", index=1)
        tail.extend(np.arange(10.0, 20.0)[:, None])
        client.sync()
        daemon.kill9()
        daemon = make_daemon(daemon.output, data=daemon.data, control=daemon.control)
        client.stop()
    first, second = saved_experiments(daemon.output)
    for saved, index, rows in ((first, 0, np.arange(10.0)), (second, 1, np.arange(10.0, 20.0))):
        assert saved["camera"]["settings"] == {"index": index}
        table = np.load(saved["_path"].parent / saved["camera"]["tail"]["file"])
        assert table["v"].tolist() == rows.tolist()
