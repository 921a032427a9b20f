"""The parameter history a real daemon saves beside each experiment's metadata:
every change with its receive time, source and sequence number, the values
carried in first; the same after a kill -9 and a resume, and after a recovery."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, saved_experiments, wait_for
from equality import same

from collectord import Change, Client, load_changes
from collectord.daemon.history import (
    BACKLOG_ENTRIES,
    BUSY_ENTRIES,
    PARTIAL_NAME,
    Bursts,
    HistoryLog,
)
from collectord.tree import Tree, leaves


def params_in(metadata: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a metadata file by path (the tests' trees hold no data)."""
    tree = {name: value for name, value in metadata.items() if name not in ("collectord", "_path")}
    return {"/".join(path): value for path, value in leaves(tree)}


def written_ahead(output: Path) -> list[dict[str, Any]]:
    """The running experiment's history as written so far, in its staging folder."""
    found = list((output / ".collectord" / "staging").glob(f"*/{PARTIAL_NAME}"))
    if not found:
        return []
    text = found[0].read_text()
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def last_values(changes: list[Change]) -> dict[str, Any]:
    values = {}
    for change in changes:
        values[change.path] = change.value
    return values


def check_history(metadata: dict[str, Any], changes: list[Change]) -> None:
    """What holds for every history: the values carried in first, at the
    start; then the rest in time order, within the experiment; and replayed
    in order they give the metadata's final values (and more only where a
    value was carried in from a process that took no part)."""
    account = metadata["collectord"]
    started = dt.datetime.fromisoformat(account["started"]).timestamp()
    stopped = dt.datetime.fromisoformat(account["stopped"]).timestamp()
    count = 0
    while count < len(changes) and changes[count].carried and changes[count].time == started:
        count += 1
    rest = changes[count:]
    assert all(c.seq is None for c in changes[:count])
    assert all((c.seq is None) == c.carried for c in rest)
    times = [c.time for c in rest]
    assert times == sorted(times)
    assert all(started <= moment <= stopped for moment in times)
    final, expected = last_values(changes), params_in(metadata)
    assert same({path: final[path] for path in expected}, expected)
    assert all(c.carried for c in changes if c.path not in expected)


def sent(changes: list[Change]) -> list[tuple[str | None, int | None, str, Any]]:
    return [(c.source, c.seq, c.path, c.value) for c in changes if not c.carried]


def test_two_experiments_with_changes_midway_and_values_carried_in(make_daemon) -> None:
    daemon = make_daemon()
    with (
        Client("cam", daemon.data, daemon.control) as cam,
        Client("tracking", daemon.data, daemon.control) as tracking,
    ):
        before = time.time()
        cam.set_params("cam/settings", exposure=4.0, gain=2.0)
        tracking.set_params("tracking", threshold=10)
        cam.sync()
        tracking.sync()
        midway = time.time()
        tracking.set_params("tracking", threshold=12, raw=b"\x01", missing=float("nan"))
        tracking.sync()
        after = time.time()
        cam.stop()
        tracking.set_params("tracking", threshold=20)
        tracking.sync()
        cam.stop()

    first, second = saved_experiments(daemon.output)
    history = load_changes(first["_path"].parent)
    check_history(first, history)
    assert [c for c in history if c.carried] == []  # nothing before the first
    assert sorted(sent(history)[:3]) == [  # the two clients' messages race
        ("cam", 1, "cam/settings/exposure", 4.0),
        ("cam", 1, "cam/settings/gain", 2.0),
        ("tracking", 1, "tracking/threshold", 10),
    ]
    late = {c.path: c for c in history[3:]}
    assert late["tracking/threshold"].value == 12
    assert late["tracking/raw"].value == b"\x01"
    assert late["tracking/missing"].value != late["tracking/missing"].value  # NaN
    assert {c.seq for c in late.values()} == {2}
    assert all(before <= c.time <= midway for c in history[:3])
    assert all(midway <= c.time <= after for c in history[3:])
    assert {c.session for c in history} == {s["session"] for s in first["collectord"]["sources"]}

    carried_in = load_changes(second["_path"])
    check_history(second, carried_in)
    carried = {c.path: c for c in carried_in if c.carried}
    assert carried.keys() == {
        "cam/settings/exposure",
        "cam/settings/gain",
        "tracking/threshold",
        "tracking/raw",
        "tracking/missing",
    }
    assert carried["tracking/threshold"].value == 12
    assert carried["tracking/threshold"].source == "tracking"
    assert carried["cam/settings/gain"].source == "cam"
    assert sent(carried_in) == [("tracking", 3, "tracking/threshold", 20)]


def test_the_history_is_complete_after_a_kill_and_a_resume(make_daemon) -> None:
    first = make_daemon()
    client = Client("rig", first.data, first.control)
    windows = []
    for value in range(3):
        before = time.time()
        client.set_params("rig", speed=value)
        client.sync()
        windows.append((before, time.time()))
    # The history is written while the experiment runs, not only at its stop:
    # the daemon dies with those lines in its staging folder.
    wait_for(lambda: len(written_ahead(first.output)) == 3, what="the history written ahead")
    first.kill9()

    second = make_daemon(data=first.data, control=first.control)
    before = time.time()
    client.set_params("rig", speed=3)
    client.sync(timeout=60)
    windows.append((before, time.time()))
    client.stop(timeout=60)
    client.close()
    second.terminate()

    (saved,) = saved_experiments(first.output)
    history = load_changes(saved["_path"])
    check_history(saved, history)
    assert sent(history) == [("rig", n + 1, "rig/speed", n) for n in range(4)]
    # Replayed from the journal, the changes before the kill keep their times.
    for change, (before, after) in zip(history, windows, strict=True):
        assert before <= change.time <= after


def test_the_history_is_complete_after_collectord_recover(make_daemon) -> None:
    daemon = make_daemon()
    client = Client("rig", daemon.data, daemon.control)
    client.set_params("rig", speed=1)
    client.stop()
    client.set_params("rig", speed=2, angle=0.5)
    client.sync()
    daemon.kill9()
    client.close(timeout=1)
    result = run_cli("recover", "--output", str(daemon.output))
    assert result.returncode == 0, result.stderr

    _, recovered = saved_experiments(daemon.output)
    history = load_changes(recovered["_path"])
    check_history(recovered, history)
    assert [(c.path, c.value, c.carried) for c in history] == [
        ("rig/speed", 1, True),
        ("rig/speed", 2, False),
        ("rig/angle", 0.5, False),
    ]


def test_values_restored_from_the_last_config_are_carried_in_when_asked(make_daemon) -> None:
    first = make_daemon()
    with Client("rig", first.data, first.control) as client:
        client.set_params("rig", speed=1, angle=0.5)
        client.stop()
    first.terminate()

    # Another output folder, the same last config: the tree begins empty.
    config = str(first.output / "last_config.json")
    second = make_daemon(output=first.output.parent / "new", extra=("--last-config", config))
    with Client("rig", second.data, second.control) as client:
        client.set_params("rig", speed=7)
        client.sync()
        before = time.time()
        # speed was set in this experiment: as set, not as the last config has it
        assert client.restore("rig") == {"speed": 7, "angle": 0.5}
        after = time.time()
        client.stop()

    (restored,) = saved_experiments(second.output)
    history = load_changes(restored["_path"])
    check_history(restored, history)
    assert [(c.source, c.seq, c.path, c.value, c.carried) for c in history] == [
        ("rig", 1, "rig/speed", 7, False),
        ("rig", None, "rig/angle", 0.5, True),
    ]
    assert before <= history[1].time <= after


def test_the_history_begins_with_every_parameter_the_experiment_began_with(make_daemon) -> None:
    """Carried-in values are written as the experiment begins, before anyone
    took part in it: all the daemon held, those of a process that ended too
    (which the metadata leaves out)."""
    daemon = make_daemon()
    with Client("old", daemon.data, daemon.control) as old:
        old.set_params("old", x=1)
    with Client("cam", daemon.data, daemon.control) as cam:
        cam.set_params("cam", gain=2)
        cam.stop()
        lines = wait_for(lambda: written_ahead(daemon.output), what="the carried-in lines")
        assert {(line["path"], line["value"], line["carried"]) for line in lines} == {
            ("old/x", 1, True),
            ("cam/gain", 2, True),
        }
        cam.set_params("cam", gain=3)
        cam.stop()
    _, second = saved_experiments(daemon.output)
    assert "old" not in second  # its process took no part
    history = load_changes(second["_path"])
    assert [(c.source, c.path, c.value, c.carried) for c in history] == [
        ("old", "old/x", 1, True),
        ("cam", "cam/gain", 2, True),
        ("cam", "cam/gain", 3, False),
    ]


def test_the_writer_waits_out_a_burst_even_in_an_experiments_first_interval(
    tmp_path: Path,
) -> None:
    """The rule that keeps the writer off the interpreter while a burst is
    taken: it also holds for an experiment that begins with one (a daemon
    started, then at once 50,000 parameter messages), which it once let
    through, costing the burst a third of its rate."""
    entries: list[Any] = []
    log = HistoryLog(tmp_path, entries, Tree(), 0.0, lambda session: None)
    bursts = Bursts()
    entries.extend([(0.0, "s", seq, ("a",), "x", seq) for seq in range(BUSY_ENTRIES + 1)])
    assert bursts.busy(log)  # its first look: a burst already
    assert not bursts.busy(log)  # nothing new since
    entries.extend(entries[:10])
    assert not bursts.busy(log)
    entries.extend(entries[: BUSY_ENTRIES + 1])
    assert bursts.busy(log)
    following = HistoryLog(tmp_path, [], Tree(), 0.0, lambda session: None)
    assert not bursts.busy(following)  # the next experiment starts quiet


def test_a_burst_that_does_not_end_is_written_once_its_backlog_is_big(tmp_path: Path) -> None:
    """A process that publishes parameters faster than ``BUSY_ENTRIES`` an
    interval, for good, kept the writer waiting for ever, and every entry in
    the daemon's memory until the stop."""
    entries: list[Any] = []
    log = HistoryLog(tmp_path, entries, Tree(), 0.0, lambda session: None)
    bursts = Bursts()
    batch = [(0.0, "s", 1, ("a",), "x", 1)] * (BUSY_ENTRIES + 1)
    while len(entries) + len(batch) <= BACKLOG_ENTRIES:
        entries.extend(batch)
        assert bursts.busy(log)
    entries.extend(batch)
    assert not bursts.busy(log)  # busy, but the backlog is too big to wait
    log.advance()
    entries.extend(batch)
    assert bursts.busy(log)  # written: waits again


def test_written_entries_are_let_go_and_the_file_still_holds_every_change(
    tmp_path: Path,
) -> None:
    """The daemon held every entry of an experiment until its stop: a process
    setting a parameter at 100 Hz through a day's recording grew it by
    gigabytes. Written entries now leave memory, and the saved file is the
    same; a write that fails keeps what it did not write, for the next."""
    entries: list[Any] = []
    log = HistoryLog(tmp_path, entries, Tree(), 0.0, lambda session: "cam")
    expected = []
    for seq in range(1, 302):
        entries.append((float(seq), "s1", seq, ("cam",), "gain", seq))
        expected.append(("cam", seq, "cam/gain", seq))
        if seq % 100 == 0:
            log.advance()
            assert entries == [] and log.arrived == seq
    # A write that fails (here on a value no message can carry, standing
    # for a full disk) keeps its entries and cuts the file back.
    entries.append((302.0, "s1", 302, ("cam",), "gain", object()))
    with pytest.raises(TypeError):
        log.advance()
    assert [entry[2] for entry in entries] == [301, 302] and log.arrived == 302
    assert len((tmp_path / PARTIAL_NAME).read_text().splitlines()) == 300
    entries.pop()
    log.finish(tmp_path / "x_changes.jsonl")
    assert entries == []
    assert sent(load_changes(tmp_path / "x_changes.jsonl")) == expected
