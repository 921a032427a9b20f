"""changes.py: the parameter history's file, written and read back, losing nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from equality import same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_values import keys, scalars

import collectord
from collectord.changes import (
    CHANGES_SUFFIX,
    CHUNK,
    Change,
    Run,
    changes_path,
    encode,
    encode_runs,
    load_changes,
    write_changes,
)
from collectord.jsonio import to_json

values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)
names = st.text(min_size=1, max_size=6).filter(lambda name: "/" not in name)
changes = st.builds(
    Change,
    time=st.floats(0, 4e9),
    source=st.none() | names,
    session=st.none() | st.text(max_size=12),
    seq=st.none() | st.integers(1, 2**64 - 1),
    path=st.lists(names, min_size=1, max_size=3).map("/".join),
    value=values,
    carried=st.booleans(),
)


def strict_line(line: str) -> dict[str, Any]:
    def refuse(token: str) -> Any:
        raise ValueError(f"not strict JSON: {token}")

    parsed = json.loads(line, parse_constant=refuse)
    assert isinstance(parsed, dict)
    return parsed


def write(folder: Path, items: list[Change]) -> Path:
    (folder / "103000_metadata.json").write_text("{}\n")
    path = folder / f"103000{CHANGES_SUFFIX}"
    write_changes(path, items)
    return path


def assert_same_changes(read: list[Change], written: list[Change]) -> None:
    assert len(read) == len(written)
    for got, want in zip(read, written, strict=True):
        for field in Change._fields:
            assert same(getattr(want, field), getattr(got, field)), (field, want, got)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(changes, max_size=40))
def test_changes_round_trip_through_strict_json_lines(tmp_path: Path, items: list[Change]) -> None:
    path = write(tmp_path, items)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(items)
    for line, item in zip(lines, items, strict=True):
        parsed = strict_line(line)
        assert list(parsed) == list(Change._fields)
        assert parsed["path"] == item.path
        # The very text json writes for the line as a map, tagged as jsonio does.
        assert line == json.dumps(to_json(item._asdict()), allow_nan=False)
    assert_same_changes(load_changes(tmp_path), items)


def test_a_value_holding_what_looks_like_lines_stays_in_its_line(tmp_path: Path) -> None:
    tricky = [{"a": 1}, {"time": 2, "source": None}]
    items = [
        Change(1.0 + index, "cam", "s1", index + 1, f"cam/p{index}", tricky, False)
        for index in range(5)
    ]
    path = write(tmp_path, items)
    assert len(path.read_text().splitlines()) == 5
    assert_same_changes(load_changes(path), items)


def test_bytes_and_non_finite_floats_are_tagged_as_in_the_metadata(tmp_path: Path) -> None:
    items = [
        Change(5.0, None, None, None, "a/b", float("nan"), True),
        Change(6.0, "x", "s", 3, "a/c", {"raw": b"\x00\xff", "gain": float("-inf")}, False),
    ]
    path = write(tmp_path, items)
    first, second = (strict_line(line) for line in path.read_text().splitlines())
    assert first["value"] == {"$float": "nan"}
    assert second["value"] == {"gain": {"$float": "-inf"}, "raw": {"$bytes": "AP8="}}
    assert_same_changes(load_changes(tmp_path / "103000_metadata.json"), items)


def test_pandas_reads_the_file_without_collectord(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    items = [
        Change(100.0, None, None, None, "cam/gain", 1, True),
        Change(101.5, "cam", "s1", 7, "cam/gain", 2, False),
    ]
    frame = pandas.read_json(write(tmp_path, items), lines=True)
    assert list(frame.columns) == list(Change._fields)
    assert frame["time"].tolist() == [100.0, 101.5]  # seconds, not taken for dates
    assert frame["path"].tolist() == ["cam/gain", "cam/gain"]
    assert frame["value"].tolist() == [1, 2]
    assert frame["carried"].tolist() == [True, False]


def test_the_file_is_named_after_the_metadata() -> None:
    assert changes_path(Path("d/103000_metadata.json")) == Path("d/103000_changes.jsonl")
    assert changes_path(Path("d/run_1_metadata.json")) == Path("d/run_1_changes.jsonl")


def test_load_changes_is_public_and_names_what_is_missing(tmp_path: Path) -> None:
    assert collectord.load_changes is load_changes
    assert collectord.Change is Change
    with pytest.raises(FileNotFoundError, match="not an experiment folder"):
        load_changes(tmp_path)
    (tmp_path / "103000_metadata.json").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"103000_changes\.jsonl"):
        load_changes(tmp_path)


def test_a_line_that_is_not_a_change_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, [Change(1.0, "a", "s", 1, "a/b", 1, False)])
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"time": 2.0, "path": "a/c"}\n')
    with pytest.raises(ValueError, match="line 2 is not a change"):
        load_changes(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [b"\xff\xfe garbage\n", b"[" * 100_000 + b"]" * 100_000 + b"\n"],
    ids=["utf8", "deep"],
)
def test_a_damaged_line_is_named_with_its_file_and_number(tmp_path: Path, damage: bytes) -> None:
    """Bytes that are not UTF-8 raised a bare UnicodeDecodeError, and JSON
    nested too deep a RecursionError: neither named the file or the line."""
    path = write(tmp_path, [Change(1.0, "a", "s", 1, "a/b", 1, False)])
    with open(path, "ab") as file:
        file.write(damage)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: line 2 is not a change"):
        load_changes(tmp_path)


def test_encoding_is_batched_and_streams() -> None:
    """A history of millions of changes is written a chunk at a time, never
    held whole as text."""
    count = 3 * CHUNK // 60
    items = (Change(float(i), None, None, None, f"p/{i}", i, True) for i in range(count))
    chunks = list(encode(items))
    assert len(chunks) >= 3
    assert all(len(chunk) < CHUNK + 200 for chunk in chunks)
    assert sum(chunk.count(b"\n") for chunk in chunks) == count


#: Runs as the daemon makes them: a message's values, often of one type (the
#: lines built without a loop in Python), and names that may need escaping.
uniform_values = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    st.lists(st.floats(-1e300, 1e300), max_size=6),
    st.lists(st.integers(-(2**64), 2**64), max_size=6),
    st.lists(st.text(max_size=6), max_size=6),
    st.lists(values, max_size=4),
)
runs = st.builds(
    lambda time, source, session, seq, carried, prefix, names, items: Run(
        time, source, session, seq, carried, prefix, dict(zip(names, items, strict=False))
    ),
    time=st.floats(0, 4e9),
    source=st.none() | names,
    session=st.none() | st.text(max_size=12),
    seq=st.none() | st.integers(1, 2**64 - 1),
    carried=st.booleans(),
    prefix=st.sampled_from(["", "cam/", "a/b/"]) | names.map(lambda name: name + "/"),
    names=st.lists(names, min_size=6, max_size=6, unique=True),
    items=uniform_values,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(runs, max_size=12))
def test_runs_are_written_as_json_writes_each_line(items: list[Run]) -> None:
    text = b"".join(encode_runs(items)).decode("utf-8")
    expected = [
        json.dumps(
            to_json(
                Change(
                    run.time,
                    run.source,
                    run.session,
                    run.seq,
                    run.prefix + name,
                    value,
                    run.carried,
                )._asdict()
            ),
            allow_nan=False,
        )
        for run in items
        for name, value in run.values.items()
    ]
    assert text.splitlines() == expected


def test_numpy_values_are_written_as_the_metadata_writes_them(tmp_path: Path) -> None:
    items = [
        Change(1.0, "a", "s", 1, "a/x", np.float64(0.5), False),
        Change(1.0, "a", "s", 1, "a/y", np.array([1.0, np.nan]), False),
    ]
    write(tmp_path, items)
    values = [change.value for change in load_changes(tmp_path)]
    assert same(values[0], 0.5)
    assert same(values[1], [1.0, float("nan")])
