"""jsonio.py: the tree as strict JSON, losing nothing, and back."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from equality import same
from hypothesis import given, settings
from hypothesis import strategies as st
from tree_values import keys, scalars

from collectord.jsonio import BYTES_TAG, FLOAT_TAG, dumps, from_json, load_json, loads, to_json


def strict_loads(text: bytes) -> Any:
    """Parse JSON, refusing the NaN/Infinity tokens Python's json would accept."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


trees = st.dictionaries(
    keys,
    st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=15,
    ),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_dumps_writes_strict_json(tree: dict[str, Any]) -> None:
    json.dumps(to_json(tree), allow_nan=False)
    strict_loads(dumps(tree))


numpy_values = st.sampled_from(
    [
        np.array([1.5, np.nan, -np.inf], dtype=np.float32),
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.array(["2024-01-02T03:04:05"], dtype="datetime64[s]"),
        np.uint64(2**64 - 1),
        np.float32(0.25),
        np.bool_(True),
    ]
)


@settings(max_examples=200, deadline=None)
@given(trees, st.lists(numpy_values, max_size=3))
def test_the_fast_way_writes_what_tagging_first_writes(tree: dict[str, Any], arrays) -> None:
    """``dumps`` lets ``json`` write in C and tags only what it calls back for;
    its bytes are those of tagging the whole tree first."""
    tree = {**tree, "arrays": arrays}
    tagged_first = json.dumps(to_json(tree), allow_nan=False, sort_keys=True) + "\n"
    assert dumps(tree) == tagged_first.encode()


@settings(max_examples=200, deadline=None)
@given(trees)
def test_loads_undoes_dumps(tree: dict[str, Any]) -> None:
    assert same(loads(dumps(tree)), tree)


def test_special_values_are_tagged() -> None:
    assert to_json({"b": b"\x00\xff", "n": math.nan, "i": math.inf, "m": -math.inf}) == {
        "b": {BYTES_TAG: "AP8="},
        "n": {FLOAT_TAG: "nan"},
        "i": {FLOAT_TAG: "inf"},
        "m": {FLOAT_TAG: "-inf"},
    }


def test_special_values_come_back() -> None:
    back = loads(dumps({"b": bytearray(b"\x01"), "v": [math.nan, -math.inf, 1.5]}))
    assert back["b"] == b"\x01" and isinstance(back["b"], bytes)
    assert math.isnan(back["v"][0])
    assert back["v"][1:] == [-math.inf, 1.5]


def test_numpy_arrays_become_nested_lists() -> None:
    assert to_json(np.arange(6).reshape(2, 3)) == [[0, 1, 2], [3, 4, 5]]
    assert to_json(np.zeros((2, 0))) == [[], []]
    assert to_json(np.array(7, dtype=np.int16)) == 7


def test_array_elements_are_tagged_where_needed() -> None:
    floats = np.array([[1.0, np.nan], [np.inf, -np.inf]], dtype=">f4")
    nan, inf, minus_inf = ({FLOAT_TAG: name} for name in ("nan", "inf", "-inf"))
    assert to_json(floats) == [[1.0, nan], [inf, minus_inf]]
    assert to_json(np.array([b"ab", b""])) == [{BYTES_TAG: "YWI="}, {BYTES_TAG: ""}]


def test_array_types_become_json_types() -> None:
    assert to_json(np.array([True, False])) == [True, False]
    assert to_json(np.array(["fish", "ü"])) == ["fish", "ü"]
    assert to_json(np.array([2**64 - 1], dtype=np.uint64)) == [2**64 - 1]
    written = strict_loads(dumps({"a": np.array([[1.5, 2.5]], dtype=np.float16)}))
    assert written == {"a": [[1.5, 2.5]]}


def test_datetime64_arrays_become_iso_text() -> None:
    days = np.array([["2024-01-01", "NaT"]], dtype="datetime64[D]")
    assert to_json(days) == [["2024-01-01", "NaT"]]
    assert to_json(np.datetime64("2024-01-01T12:00:00")) == "2024-01-01T12:00:00"


def test_numpy_scalars_become_python_values() -> None:
    converted = to_json([np.int8(-3), np.float32(np.nan), np.bool_(True), np.float64(np.inf)])
    assert converted == [-3, {FLOAT_TAG: "nan"}, True, {FLOAT_TAG: "inf"}]
    assert [type(item) for item in converted[:3]] == [int, dict, bool]
    assert strict_loads(dumps({"x": [np.uint8(255), np.float64(0.5)]})) == {"x": [255, 0.5]}


def test_tuples_become_lists() -> None:
    assert to_json({"t": (1, (2,))}) == {"t": [1, [2]]}


def test_keys_are_sorted() -> None:
    text = dumps({"b": 1, "a": {"z": 1, "c": 2}, "B": 0}).decode()
    assert text == '{"B": 0, "a": {"c": 2, "z": 1}, "b": 1}\n'


def test_dumps_is_utf8_bytes() -> None:
    data = dumps({"name": "相机"})
    assert isinstance(data, bytes)
    assert json.loads(data.decode("utf-8")) == {"name": "相机"}


def test_from_json_leaves_ordinary_and_malformed_tags_alone() -> None:
    assert from_json({"x": 1}) == {"x": 1}
    assert from_json({BYTES_TAG: 5}) == {BYTES_TAG: 5}
    assert from_json({FLOAT_TAG: "NaN-ish"}) == {FLOAT_TAG: "NaN-ish"}
    assert from_json({FLOAT_TAG: "nan", "other": 1}) == {FLOAT_TAG: "nan", "other": 1}


@pytest.mark.parametrize("text", ["!!", "AA", "AA==!"])
def test_a_bytes_tag_that_is_not_base64_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        loads(b'{"a": {"$bytes": "%s"}}' % text.encode())


def test_loads_accepts_text_and_bytes() -> None:
    assert loads('{"a": {"$float": "inf"}}') == {"a": math.inf}
    assert loads(b'{"a": {"$bytes": "AA=="}}') == {"a": b"\x00"}


def test_load_json_reads_a_file(tmp_path: Path) -> None:
    target = tmp_path / "metadata.json"
    target.write_bytes(dumps({"camera": {"frame": b"\x01\x02", "gain": math.inf}}))
    assert load_json(target) == {"camera": {"frame": b"\x01\x02", "gain": math.inf}}
    assert load_json(str(target)) == load_json(target)


def test_a_big_tree_written_in_pieces_is_what_one_call_writes() -> None:
    tree = {
        "rig": {f"node{n:04d}": {f"p{i}": n + i / 7 for i in range(30)} for n in range(600)},
        "flat": {f"k{i}": [i, {"deep": {"deeper": i}}] for i in range(700)},
        "empty": {},
    }
    assert dumps(tree) == (json.dumps(tree, allow_nan=False, sort_keys=True) + "\n").encode()
