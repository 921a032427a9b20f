"""daemon/reuse.py: a save takes the last save's work on groups unchanged since.

What a save writes with it must be byte for byte what it writes without it,
whatever happened to the tree in between: a stale group is wrong metadata.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collectord import codec, jsonio
from collectord.collector import carried_fields
from collectord.daemon.reuse import LastSave
from collectord.errors import UnsupportedValueError
from collectord.experiment import metadata
from collectord.tree import Tree, TreeConflict, merge_config

Saved = tuple[bytes, bytes, bytes, dict[str, Any]]


def save(tree: Tree, in_force: frozenset[str], config: dict[str, Any], last: LastSave) -> Saved:
    """What ``SaveJob.run`` writes of ``tree`` (the BEGIN record's ``carried``,
    the metadata, the last config), in its order, taking from ``last``."""
    reuse = last.begin()
    exported = reuse.export(tree, in_force.__contains__)
    begin = carried_fields(exported.params, exported.owners, reuse.pack)["carried"]
    written = jsonio.dumps(metadata(exported.metadata, {"run": 1}), reuse.memo)
    merged = merge_config(config, exported.params)
    config_written = jsonio.dumps(merged, reuse.memo)
    reuse.keep()
    return begin, written, config_written, merged


def fresh(tree: Tree, in_force: frozenset[str], config: dict[str, Any]) -> Saved:
    """The same, computed from nothing."""
    exported = tree.export(in_force.__contains__)
    begin = carried_fields(exported.params, exported.owners)["carried"]
    written = jsonio.dumps(metadata(exported.metadata, {"run": 1}))
    merged = merge_config(config, exported.params)
    return begin, written, jsonio.dumps(merged), merged


NAMES = ("a", "b")
OWNERS = (None, "s1", "s2")
# Two names, few levels: operations often meet at the same groups.
nodes = st.lists(st.sampled_from(NAMES), min_size=0, max_size=2).map(tuple)
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=2).map(tuple)
scalars = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, -0.0, math.nan, math.inf]),
    st.text("xy", max_size=2),
    st.none(),
)
param_values = st.one_of(
    scalars,
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.sampled_from(NAMES), scalars, max_size=2),
)
param_maps = st.dictionaries(st.sampled_from(NAMES), param_values, min_size=0, max_size=3)
restores = st.recursive(
    param_values, lambda inner: st.dictionaries(st.sampled_from(NAMES), inner, max_size=2)
).filter(lambda value: isinstance(value, dict))
#: Which tree an operation is on: 0 the daemon's (most often), n the n-th
#: fork from the end.
which = st.one_of(st.just(0), st.integers(0, 3))
operations = st.one_of(
    st.tuples(st.just("merge"), which, nodes, param_maps, st.sampled_from(OWNERS)),
    st.tuples(st.just("data"), which, paths, param_values),
    st.tuples(st.just("restore"), which, nodes, restores),
    st.tuples(st.just("stop")),
    st.tuples(st.just("save"), which, st.sets(st.sampled_from(OWNERS[1:])).map(frozenset)),
    st.tuples(st.just("save"), which, st.sets(st.sampled_from(OWNERS[1:])).map(frozenset)),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(operations, min_size=3, max_size=40))
# A group the daemon's tree changes in place after a save of that tree.
@example(
    [
        ("merge", 0, (), {"a": 0}, None),
        ("save", 0, frozenset()),
        ("restore", 0, (), {"b": None}),
        ("save", 0, frozenset()),
    ]
)
# A group whose owner was in force at the last save and is not now.
@example(
    [
        ("merge", 0, ("a",), {"a": 0}, "s1"),
        ("stop",),
        ("save", 1, frozenset({"s1"})),
        ("stop",),
        ("save", 1, frozenset()),
    ]
)
# A fork changed after its save, saved, and changed again.
@example(
    [
        ("merge", 0, ("a",), {"a": 0}, "s1"),
        ("stop",),
        ("save", 1, frozenset({"s1"})),
        ("merge", 1, ("a",), {"b": 1}, "s2"),
        ("save", 1, frozenset({"s1"})),
        ("merge", 1, ("a",), {"b": 2}, "s2"),
        ("save", 1, frozenset({"s1"})),
    ]
)
def test_a_save_that_takes_the_last_saves_work_writes_what_a_fresh_one_does(
    ops: list[tuple[Any, ...]],
) -> None:
    """Random parameters, static data, restores and conflicts, on the daemon's
    tree and on forks of it (a stop forks the tree and begins the next
    experiment; either side may change after), with saves of any of them
    in between, each with its own sessions in force."""
    live = Tree()
    forks: list[Tree] = []
    last = LastSave()
    config: dict[str, Any] = {}
    for op in ops:
        kind = op[0]
        if kind == "stop":
            forks.append(live.fork())
            live.next_experiment()
            continue
        trees = [live, *reversed(forks)]
        tree = trees[op[1] % len(trees)]
        if kind == "save":
            saved = save(tree, op[2], config, last)
            assert saved[:3] == fresh(tree, op[2], config)[:3]
            config = saved[3]
            continue
        try:
            if kind == "merge":
                tree.merge_params(op[2], op[3], op[4])
            elif kind == "data":
                tree.set_data(op[2], op[3])
            else:
                tree.restored(op[2], op[3], jsonio.same)
        except TreeConflict:
            pass


def big_group_tree(groups: int) -> Tree:
    tree = Tree()
    for group in range(groups):
        tree.merge_params(("rig", f"g{group}"), {f"p{i}": group + i / 10 for i in range(5)}, "s1")
    return tree


def test_a_carried_in_save_reuses_the_unchanged_groups_and_keeps_only_its_own() -> None:
    """The second save takes the first's dicts for the groups nobody changed;
    a group changed or gone is let go at the save after it."""
    tree = big_group_tree(4)
    last = LastSave()
    first = tree.fork()
    _, _, _, config = save(first, frozenset({"s1"}), {}, last)
    groups = {name: first._root["rig"][name] for name in ("g0", "g1", "g2", "g3")}
    kept = {id(group) for group in groups.values()}
    assert set(last.exports) == kept
    tree.next_experiment()
    tree.merge_params(("rig", "g0"), {"p0": -1.0}, "s1")
    tree.merge_params(("rig",), {"g3": 7}, "s1")  # a carried group replaced by a value
    g1_params = last.exports[id(groups["g1"])][1]
    second = tree.fork()
    save(second, frozenset({"s1"}), config, last)
    rig = second._root["rig"]
    assert rig["g1"] is groups["g1"] and last.exports[id(rig["g1"])][1] is g1_params
    assert rig["g0"] is not groups["g0"]
    assert set(last.exports) == {id(rig[name]) for name in ("g0", "g1", "g2")}
    kept_dicts = {id(part) for entry in last.exports.values() for part in entry[1:3]}
    assert set(last.texts) <= kept_dicts and set(last.packed) <= kept_dicts
    assert len(last.texts) == 3 and len(last.packed) == 6


def test_a_group_the_exporting_tree_may_still_change_is_not_kept() -> None:
    """The daemon's own groups change in place: only groups no tree holds may go in."""
    tree = big_group_tree(2)
    last = LastSave()
    save(tree, frozenset(), {}, last)
    assert last.exports == {}
    tree.merge_params(("rig", "g0"), {"p0": 5}, "s1")
    assert save(tree, frozenset(), {}, last)[:3] == fresh(tree, frozenset(), {})[:3]


def test_pieces_packed_apart_are_the_bytes_of_the_whole() -> None:
    inner = {"x": 1.5, "t": b"\x00", "when": [1, {"deep": None}]}
    other = {"y": "text", "empty": {}}
    value = [{"a": inner, "b": {"c": other, "d": 3}}, {"": "s1"}]
    whole = {id(inner), id(other)}
    made: codec.Pieces = {}
    packed = codec.pack_reusing(value, {}, whole, made)
    assert packed == codec.pack(value)
    assert made[id(inner)] == (inner, codec.pack(inner)) and set(made) == whole
    again: codec.Pieces = {}
    assert codec.pack_reusing(value, made, whole, again) == packed
    assert again == made
    assert msgpack.unpackb(packed) == value


def test_packing_in_pieces_refuses_what_pack_refuses() -> None:
    with pytest.raises(UnsupportedValueError, match="set"):
        codec.pack_reusing([{"a": {1, 2}}], {}, set(), {})
