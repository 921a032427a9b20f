"""store.py: atomic writes, experiment folders and the last config, on real files."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import pytest

from collectord import store
from collectord.errors import OutputBusyError
from collectord.jsonio import dumps, load_json
from collectord.store import (
    METADATA_SUFFIX,
    OutputLock,
    atomic_write,
    finish_publishing,
    publish,
    read_last_config,
    staged_runs,
    staging_dir,
    write_last_config,
    write_metadata,
)

STARTED = dt.datetime(2024, 3, 1, 14, 5, 9)


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- atomic_write ----------------------------------------------------------------------


def test_atomic_write_creates_the_file_and_its_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    assert all_files(tmp_path) == ["a/b/file.json"]


def test_atomic_write_replaces_content_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    atomic_write(target, b"a much longer first version")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["file.json"]


def test_failed_atomic_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.json"
    atomic_write(target, b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.json"]


# -- experiment folders ---------------------------------------------------------------


def stage_and_publish(output: Path, run_id: str, started: dt.datetime, metadata: dict) -> Path:
    """What the daemon does at a stop: metadata into staging, then the rename."""
    staging = staging_dir(output, run_id)
    written = write_metadata(staging, f"{started:%H%M%S}", metadata)
    assert written == staging / f"{started:%H%M%S}{METADATA_SUFFIX}"
    return publish(output, staging, started, f"{started:%H%M%S}") / written.name


def test_publish_creates_day_and_time_folders(tmp_path: Path) -> None:
    metadata = {"camera": {"exposure": 5.0, "frame": b"\x00"}, "stimulus": {"x": math.inf}}
    path = stage_and_publish(tmp_path, "run-1", STARTED, metadata)
    assert path == tmp_path / "240301" / "140509" / f"140509{METADATA_SUFFIX}"
    assert path.read_bytes() == dumps(metadata)
    assert load_json(path) == metadata


def test_publish_leaves_no_staging_or_temporary_files(tmp_path: Path) -> None:
    stage_and_publish(tmp_path, "run-1", STARTED, {"a": 1})
    assert not staging_dir(tmp_path, "run-1").exists()
    assert staged_runs(tmp_path) == []
    assert all_files(tmp_path) == ["240301/140509/140509_metadata.json"]


def test_publish_moves_the_whole_staging_folder(tmp_path: Path) -> None:
    staging = staging_dir(tmp_path, "run-1")
    write_metadata(staging, f"{STARTED:%H%M%S}", {"a": 1})
    (staging / "stream.npy").write_bytes(b"rows")
    target = publish(tmp_path, staging, STARTED, f"{STARTED:%H%M%S}")
    assert sorted(os.listdir(target)) == ["140509_metadata.json", "stream.npy"]
    assert (target / "stream.npy").read_bytes() == b"rows"


def test_publish_never_overwrites_an_experiment(tmp_path: Path) -> None:
    first = stage_and_publish(tmp_path, "run-1", STARTED, {"n": 1})
    second = stage_and_publish(tmp_path, "run-2", STARTED, {"n": 2})
    third = stage_and_publish(tmp_path, "run-3", STARTED, {"n": 3})
    day = tmp_path / "240301"
    assert first == day / "140509" / "140509_metadata.json"
    assert second == day / "140509_1" / "140509_metadata.json"
    assert third == day / "140509_2" / "140509_metadata.json"
    assert [load_json(p) for p in (first, second, third)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert sorted(os.listdir(day)) == ["140509", "140509_1", "140509_2"]


def test_publish_on_another_day_gets_another_day_folder(tmp_path: Path) -> None:
    stage_and_publish(tmp_path, "run-1", STARTED, {"n": 1})
    later = stage_and_publish(tmp_path, "run-2", STARTED + dt.timedelta(days=1), {"n": 2})
    assert later == tmp_path / "240302" / "140509" / "140509_metadata.json"


def test_publish_does_not_reuse_a_folder_someone_left_there(tmp_path: Path) -> None:
    occupied = tmp_path / "240301" / "140509"
    occupied.mkdir(parents=True)
    (occupied / "notes.txt").write_text("keep me")
    path = stage_and_publish(tmp_path, "run-1", STARTED, {"n": 1})
    assert path.parent.name == "140509_1"
    assert (occupied / "notes.txt").read_text() == "keep me"


def test_staged_runs_lists_unpublished_experiments_oldest_first(tmp_path: Path) -> None:
    assert staged_runs(tmp_path) == []
    for run_id in ("20240301T140509-b", "20240301T090000-a"):
        staging_dir(tmp_path, run_id).mkdir(parents=True)
    assert [p.name for p in staged_runs(tmp_path)] == ["20240301T090000-a", "20240301T140509-b"]


def test_finish_publishing_completes_a_save_cut_short(tmp_path: Path) -> None:
    staging = staging_dir(tmp_path, "run-1")
    # Named after the first message, as the daemon names it, not the start.
    account = {"started": "2024-03-01T09:00:00", "first_message": STARTED.isoformat()}
    metadata = {"a": 1, "collectord": account}
    write_metadata(staging, f"{STARTED:%H%M%S}", metadata)
    path = finish_publishing(tmp_path, staging)
    assert path == tmp_path / "240301" / "140509" / "140509_metadata.json"
    assert load_json(path) == metadata
    assert staged_runs(tmp_path) == []


def test_finish_publishing_leaves_a_running_experiment_alone(tmp_path: Path) -> None:
    staging = staging_dir(tmp_path, "run-1")
    staging.mkdir(parents=True)
    assert finish_publishing(tmp_path, staging) is None  # no metadata yet
    write_metadata(staging, f"{STARTED:%H%M%S}", {"collectord": {"started": STARTED.isoformat()}})
    (staging / "journal").write_bytes(b"")
    assert finish_publishing(tmp_path, staging) is None  # journal still there
    assert staged_runs(tmp_path) == [staging]


def test_output_lock_is_exclusive(tmp_path: Path) -> None:
    first, second = OutputLock(tmp_path), OutputLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(OutputBusyError, match="in use"):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # free again once released
    second.release()


# -- last config ------------------------------------------------------------------------


def test_last_config_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "last_config.json"
    config = {"camera": {"exposure": 5.0, "lut": b"\x01\x02", "limit": -math.inf}, "empty": {}}
    write_last_config(path, config)
    assert read_last_config(path) == config
    assert os.listdir(tmp_path) == ["last_config.json"]


def test_missing_last_config_is_empty(tmp_path: Path) -> None:
    assert read_last_config(tmp_path / "last_config.json") == {}
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"a": {"$bytes": "not base64!"}}',
        b'{"a": {"$bytes": "!!"}}',
    ],
    ids=["syntax", "empty", "binary", "bad-tag", "tag-of-nothing"],
)
def test_unreadable_last_config_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "last_config.json"
    path.write_bytes(content)
    assert read_last_config(path) == {}
    assert not path.exists()
    aside = list(tmp_path.glob("last_config.json.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"null", b"3"])
def test_last_config_that_is_not_an_object_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "last_config.json"
    path.write_bytes(content)
    assert read_last_config(path) == {}
    assert not path.exists()
    (aside,) = tmp_path.glob("last_config.json.unreadable-*")
    assert aside.read_bytes() == content


def test_last_config_nested_too_deep_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "last_config.json"
    path.write_bytes(b"[" * 100_000)
    assert read_last_config(path) == {}
    assert not path.exists()
