"""tree.py: parameters and static data in one tree, and the last-config merge."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectord import codec, jsonio
from collectord.errors import InvalidPathError
from collectord.paths import check_name
from collectord.tree import Tree, TreeConflict, leaves, merge_config, subtree


def unchanged_after(tree: Tree, operation: Any) -> None:
    """Run ``operation``, expect TreeConflict, and check the tree did not change."""
    before = copy.deepcopy(tree.to_dict())
    before_params = copy.deepcopy(tree.params())
    with pytest.raises(TreeConflict):
        operation()
    assert tree.to_dict() == before
    assert tree.params() == before_params


# -- parameters ----------------------------------------------------------------------


def test_new_tree_is_empty() -> None:
    tree = Tree()
    assert tree.is_empty()
    assert tree.to_dict() == {}
    assert tree.params() == {}


def test_merge_params_creates_nested_groups() -> None:
    tree = Tree()
    tree.merge_params(("camera", "settings"), {"exposure": 5.0, "gain": 2})
    assert tree.to_dict() == {"camera": {"settings": {"exposure": 5.0, "gain": 2}}}
    assert not tree.is_empty()


def test_merge_params_merges_into_existing_values() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0, "gain": 2})
    tree.merge_params(("camera",), {"gain": 3, "binning": 1})
    assert tree.to_dict() == {"camera": {"exposure": 5.0, "gain": 3, "binning": 1}}


def test_merge_params_with_no_values_keeps_an_empty_group() -> None:
    tree = Tree()
    tree.merge_params(("stimulus",), {})
    assert tree.to_dict() == {"stimulus": {}}
    assert tree.params() == {"stimulus": {}}


def test_a_parameter_value_may_itself_be_a_dict() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"roi": {"x": 1, "y": 2}})
    assert tree.to_dict() == {"camera": {"roi": {"x": 1, "y": 2}}}
    # ... but it is one leaf: no group can be opened inside it.
    unchanged_after(tree, lambda: tree.merge_params(("camera", "roi"), {"x": 3}))


@pytest.mark.parametrize("name", ["", "..", "a/b", "$tag", "nul\x00"])
def test_merge_params_checks_parameter_names(name: str) -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 1})
    before = tree.to_dict()
    with pytest.raises(InvalidPathError):
        tree.merge_params(("camera",), {"gain": 2, name: 3})
    assert tree.to_dict() == before


def test_parameters_carry_over_after_next_experiment() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    tree.set_data(("stimulus", "log"), [1, 2, 3])
    tree.next_experiment()
    assert tree.to_dict() == {"camera": {"exposure": 5.0}}
    tree.merge_params(("camera",), {"gain": 1})
    assert tree.to_dict() == {"camera": {"exposure": 5.0, "gain": 1}}


# -- static data -------------------------------------------------------------------


def test_set_data_sets_and_replaces() -> None:
    tree = Tree()
    tree.set_data(("stimulus", "log"), [1, 2])
    assert tree.to_dict() == {"stimulus": {"log": [1, 2]}}
    tree.set_data(("stimulus", "log"), {"replaced": True})
    assert tree.to_dict() == {"stimulus": {"log": {"replaced": True}}}


def test_set_data_at_top_level() -> None:
    tree = Tree()
    tree.set_data(("notes",), "hello")
    assert tree.to_dict() == {"notes": "hello"}


def test_clear_data_drops_data_only() -> None:
    tree = Tree()
    tree.merge_params(("stimulus",), {"duration": 10})
    tree.set_data(("stimulus", "log"), [1, 2])
    tree.set_data(("tracking", "fish", "tail"), [0.1])
    tree.next_experiment()
    assert tree.to_dict() == {"stimulus": {"duration": 10}}
    assert tree.params() == {"stimulus": {"duration": 10}}


def test_clear_data_prunes_groups_it_empties_but_keeps_groups_that_were_empty() -> None:
    tree = Tree()
    tree.merge_params(("empty", "node"), {})
    tree.set_data(("only", "data", "here"), 1)
    tree.set_data(("mixed", "data"), 2)
    tree.merge_params(("mixed", "inner"), {})
    tree.next_experiment()
    assert tree.to_dict() == {"empty": {"node": {}}, "mixed": {"inner": {}}}


def test_clear_data_on_data_only_tree_leaves_it_empty() -> None:
    tree = Tree()
    tree.set_data(("a", "b"), 1)
    tree.next_experiment()
    assert tree.is_empty()


def test_data_path_is_free_again_after_next_experiment() -> None:
    tree = Tree()
    tree.set_data(("x", "log"), 1)
    tree.next_experiment()
    tree.merge_params(("x",), {"log": 2})
    assert tree.params() == {"x": {"log": 2}}


def test_params_leaves_out_data_but_to_dict_has_both() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    tree.set_data(("camera", "frames"), 100)
    tree.set_data(("stimulus", "log"), [1])
    assert tree.to_dict() == {"camera": {"exposure": 5.0, "frames": 100}, "stimulus": {"log": [1]}}
    assert tree.params() == {"camera": {"exposure": 5.0}}
    # params() is a view: it does not clear anything.
    assert tree.to_dict()["stimulus"] == {"log": [1]}


def test_exports_are_fresh_dicts() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    exported = tree.to_dict()
    exported["camera"]["exposure"] = 0
    exported["intruder"] = 1
    tree.params()["camera"]["gain"] = 9
    assert tree.to_dict() == {"camera": {"exposure": 5.0}}


# -- the rule: no leaf under another leaf --------------------------------------------


def test_param_cannot_be_placed_under_a_param() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    unchanged_after(tree, lambda: tree.merge_params(("camera", "exposure"), {"unit": "ms"}))
    unchanged_after(
        tree, lambda: tree.merge_params(("camera", "exposure", "deeper"), {"unit": "ms"})
    )


def test_data_cannot_be_placed_under_data() -> None:
    tree = Tree()
    tree.set_data(("stimulus", "log"), [1])
    unchanged_after(tree, lambda: tree.set_data(("stimulus", "log", "extra"), 2))
    unchanged_after(tree, lambda: tree.merge_params(("stimulus", "log"), {"x": 1}))


def test_data_cannot_be_placed_under_a_param() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    unchanged_after(tree, lambda: tree.set_data(("camera", "exposure", "log"), 1))


def test_group_cannot_become_a_param() -> None:
    tree = Tree()
    tree.merge_params(("camera", "settings"), {"exposure": 5.0})
    unchanged_after(tree, lambda: tree.merge_params(("camera",), {"settings": 1}))


def test_empty_group_cannot_become_a_param_or_data() -> None:
    tree = Tree()
    tree.merge_params(("camera", "settings"), {})
    unchanged_after(tree, lambda: tree.merge_params(("camera",), {"settings": 1}))
    unchanged_after(tree, lambda: tree.set_data(("camera", "settings"), 1))


def test_group_cannot_become_data() -> None:
    tree = Tree()
    tree.set_data(("stimulus", "log", "a"), 1)
    unchanged_after(tree, lambda: tree.set_data(("stimulus", "log"), 2))
    unchanged_after(tree, lambda: tree.set_data(("stimulus",), 2))


def test_param_and_data_cannot_share_a_path() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    tree.set_data(("camera", "frames"), 10)
    unchanged_after(tree, lambda: tree.set_data(("camera", "exposure"), 1))
    unchanged_after(tree, lambda: tree.merge_params(("camera",), {"frames": 11}))


def test_conflict_message_names_both_paths() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    with pytest.raises(TreeConflict, match=r"'camera/exposure'.*'camera/exposure/x'"):
        tree.merge_params(("camera", "exposure", "x"), {"a": 1})
    tree.set_data(("tracking", "tail"), {"file": "streams/tracking/tail.npy"})
    with pytest.raises(TreeConflict, match=r"'tracking/tail' holds .*a stream's descriptor"):
        tree.merge_params(("tracking", "tail"), {"threshold": 0.1})


def test_tree_conflict_is_a_value_error() -> None:
    assert issubclass(TreeConflict, ValueError)


def test_rejected_merge_is_all_or_nothing() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 5.0})
    tree.set_data(("camera", "frames"), 10)
    # "gain" alone would be fine; "frames" holds data, so nothing is applied.
    unchanged_after(tree, lambda: tree.merge_params(("camera",), {"gain": 2, "frames": 3}))
    assert "gain" not in tree.to_dict()["camera"]


def test_rejected_deep_merge_creates_no_groups() -> None:
    tree = Tree()
    tree.merge_params(("a",), {"leaf": 1})
    unchanged_after(tree, lambda: tree.merge_params(("a", "leaf", "b", "c"), {"x": 1}))
    unchanged_after(tree, lambda: tree.set_data(("a", "leaf", "b", "c"), 1))
    assert tree.to_dict() == {"a": {"leaf": 1}}


# -- random sequences of operations against a simple model ----------------------------

NAMES = ("a", "b", "c")
PARAM, DATA = "param", "data"


class Model:
    """What the tree should hold: leaves by path (kind, value, fresh), and
    every group path (fresh: made in the current experiment).

    The rule: what is in the way of a change is replaced if it is only carried
    over from an earlier experiment, and refuses the change otherwise.
    """

    def __init__(self) -> None:
        self.leaves: dict[tuple[str, ...], tuple[str, int, bool]] = {}
        self.groups: dict[tuple[str, ...], bool] = {}

    def _carried(self, path: tuple[str, ...]) -> bool:
        """Whether everything at and under ``path`` is carried over."""
        if path in self.leaves:
            kind, _, fresh = self.leaves[path]
            return kind == PARAM and not fresh
        under = [p for p in (*self.leaves, *self.groups) if p[: len(path)] == path]
        return all(not self.groups[p] if p in self.groups else self._carried(p) for p in under)

    def _in_the_way(self, path: tuple[str, ...], kind: str | None) -> list | None:
        """Roots to remove for ``path`` to hold ``kind`` (None: a group), or None
        if something of this experiment is in the way."""
        for i in range(1, len(path)):
            if path[:i] in self.leaves:
                return [path[:i]] if self._carried(path[:i]) else None
        if kind is None:
            if path in self.leaves:
                return [path] if self._carried(path) else None
            return []
        if path in self.groups:
            return [path] if self._carried(path) else None
        if path in self.leaves and self.leaves[path][0] != kind:
            return [path] if self._carried(path) else None
        return []

    def _remove(self, root: tuple[str, ...]) -> None:
        self.leaves = {p: v for p, v in self.leaves.items() if p[: len(root)] != root}
        self.groups = {p: v for p, v in self.groups.items() if p[: len(root)] != root}

    def _add_groups(self, node: tuple[str, ...]) -> None:
        for i in range(1, len(node) + 1):
            self.groups.setdefault(node[:i], True)

    def merge_params(self, node: tuple[str, ...], values: dict[str, int]) -> bool:
        removals = self._in_the_way(node, None)
        if removals is None:
            return False
        if not removals:
            for name in values:
                more = self._in_the_way((*node, name), PARAM)
                if more is None:
                    return False
                removals += more
        for root in removals:
            self._remove(root)
        self._add_groups(node)
        for name, value in values.items():
            self.leaves[(*node, name)] = (PARAM, value, True)
        return True

    def set_data(self, path: tuple[str, ...], value: int) -> bool:
        removals = self._in_the_way(path, DATA)
        if removals is None:
            return False
        for root in removals:
            self._remove(root)
        self._add_groups(path[:-1])
        self.leaves[path] = (DATA, value, True)
        return True

    def _children(self, node: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [
            p for p in (*self.groups, *self.leaves) if len(p) == len(node) + 1 and p[:-1] == node
        ]

    def params_only(self) -> Model:
        """The model after dropping data and the groups that this empties;
        everything left is carried over."""
        kept = Model()
        kept.leaves = {p: (k, v, False) for p, (k, v, _) in self.leaves.items() if k == PARAM}
        for group in sorted(self.groups, key=len, reverse=True):
            children = self._children(group)
            if not children or any(c in kept.leaves or c in kept.groups for c in children):
                kept.groups[group] = False
        return kept

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group in self.groups:
            branch = out
            for name in group:
                branch = branch.setdefault(name, {})
        for path, (_, value, _) in self.leaves.items():
            subtree(out, path[:-1])[path[-1]] = value
        return out


# Two names only, so that operations often meet at the same paths.
OP_NAMES = ("a", "b")
paths = st.lists(st.sampled_from(OP_NAMES), min_size=1, max_size=3).map(tuple)
nodes = st.lists(st.sampled_from(OP_NAMES), min_size=0, max_size=2).map(tuple)
values = st.integers(0, 9)
# Mostly good parameter names, sometimes one that check_name refuses.
param_names = st.sampled_from([*OP_NAMES * 5, "", "..", "a/b", "$x", "\x00"])
merges = st.tuples(
    st.just("merge"), nodes, st.dictionaries(param_names, values, min_size=1, max_size=3)
)
sets = st.tuples(st.just("set"), paths, values)
clears = st.tuples(st.just("clear"))
operations = st.one_of(merges, sets, merges, sets, clears)


def valid_name(name: str) -> bool:
    try:
        check_name(name)
    except InvalidPathError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.lists(operations, min_size=5, max_size=30))
def test_random_operations_match_the_model(ops: list[tuple[Any, ...]]) -> None:
    tree, model = Tree(), Model()
    forks: list[tuple[Tree, dict[str, Any]]] = []
    for op in ops:
        before = copy.deepcopy(tree.to_dict())
        forks.append((tree.fork(), before))  # what a save would read
        if op[0] == "merge":
            _, node, new_values = op
            expected_ok = all(map(valid_name, new_values)) and model.merge_params(node, new_values)
            action = functools.partial(tree.merge_params, node, new_values)
        elif op[0] == "set":
            _, path, value = op
            expected_ok = model.set_data(path, value)
            action = functools.partial(tree.set_data, path, value)
        else:
            model = model.params_only()
            expected_ok = True
            action = tree.next_experiment
        # Anything but these two exceptions fails the test.
        try:
            action()
        except (TreeConflict, InvalidPathError):
            assert not expected_ok, f"{op} was refused"
            assert tree.to_dict() == before, "a refused operation changed the tree"
        else:
            assert expected_ok, f"{op} was accepted"
        # Leaves are ints here, so to_dict() shows the tree's exact shape.
        assert tree.to_dict() == model.as_dict()
        assert tree.params() == model.params_only().as_dict()
        carried = tree.carried()
        assert Tree.from_carried(*carried).carried() == carried
        assert_no_leaf_under_leaf(model)
    for forked, then in forks:  # whatever the tree did next, a fork stays as it was
        assert forked.to_dict() == then


def test_a_fork_and_its_tree_change_apart_sharing_only_what_neither_changed() -> None:
    """A fork shares every group until one side changes it: each side then
    changes a copy of its own, and the groups neither changed stay shared."""
    tree = Tree()
    tree.merge_params(("cam", "settings"), {"exposure": 1.0, "gain": 2}, "s1")
    tree.merge_params(("stim",), {"speed": 3}, "s2")
    tree.set_data(("stim", "log"), [1, 2])
    tree.merge_params(("big",), {f"p{i}": i for i in range(100)}, "s3")
    before = copy.deepcopy(tree.to_dict())
    forked = tree.fork()
    tree.merge_params(("cam", "settings"), {"exposure": 5.0}, "s1")
    tree.next_experiment()  # removes the static data
    forked.merge_params(("stim",), {"speed": 4}, "s2")
    forked.merge_params(("new",), {"x": 1}, "s4")
    assert tree.to_dict() == {
        "cam": {"settings": {"exposure": 5.0, "gain": 2}},
        "stim": {"speed": 3},
        "big": {f"p{i}": i for i in range(100)},
    }
    assert forked.to_dict() == {
        **before,
        "stim": {"speed": 4, "log": [1, 2]},
        "new": {"x": 1},
    }
    assert tree._root["big"] is forked._root["big"]  # nobody changed it: not copied
    assert tree._root["cam"] is not forked._root["cam"]


def assert_no_leaf_under_leaf(model: Model) -> None:
    for leaf in model.leaves:
        assert leaf not in model.groups
        for other in (*model.leaves, *model.groups):
            assert other == leaf or other[: len(leaf)] != leaf, (leaf, other)


# -- merge_config ------------------------------------------------------------------


def test_merge_config_new_values_win_and_old_keys_are_kept() -> None:
    old = {"camera": {"exposure": 5, "gain": 1}, "protocol_a": {"speed": 3}}
    new = {"camera": {"exposure": 7, "binning": 2}}
    assert merge_config(old, new) == {
        "camera": {"exposure": 7, "gain": 1, "binning": 2},
        "protocol_a": {"speed": 3},
    }


def test_merge_config_leaf_becomes_group() -> None:
    old = {"camera": {"roi": 5, "gain": 1}}
    new = {"camera": {"roi": {"x": 1, "y": 2}}}
    assert merge_config(old, new) == {"camera": {"roi": {"x": 1, "y": 2}, "gain": 1}}


def test_merge_config_group_becomes_leaf() -> None:
    old = {"camera": {"roi": {"x": 1, "y": 2}, "gain": 1}}
    new = {"camera": {"roi": 5}}
    assert merge_config(old, new) == {"camera": {"roi": 5, "gain": 1}}


def test_merge_config_top_level_leaf_becomes_group() -> None:
    assert merge_config({"a": 1}, {"a": {"b": {"c": 2}}}) == {"a": {"b": {"c": 2}}}


def test_merge_config_empty_group_survives() -> None:
    assert merge_config({}, {"stimulus": {}}) == {"stimulus": {}}
    assert merge_config({"a": 1}, {"b": {"c": {}}}) == {"a": 1, "b": {"c": {}}}


def test_merge_config_empty_group_replaces_an_old_leaf() -> None:
    assert merge_config({"stimulus": 3}, {"stimulus": {}}) == {"stimulus": {}}


def test_merge_config_empty_group_keeps_old_parameters() -> None:
    old = {"camera": {"exposure": 10}}
    assert merge_config(old, {"camera": {}}) == old


def test_merge_config_does_not_mutate_inputs() -> None:
    old = {"camera": {"roi": {"x": 1}, "gain": 1}, "lst": [1, 2]}
    new = {"camera": {"roi": 5, "extra": {"deep": [3]}}, "lst": [9]}
    old_copy, new_copy = copy.deepcopy(old), copy.deepcopy(new)
    merged = merge_config(old, new)
    assert old == old_copy and new == new_copy
    # Groups are shared, not copied (no exported tree is changed in place):
    # one ``old`` lacks, or holds equal, is ``new``'s own, so that a save's
    # JSON writer meets the same dict in the metadata and the last config.
    assert merged["camera"]["extra"] is new["camera"]["extra"]
    same = {"node": {"a": 1.0, "b": [1, 2]}}
    assert merge_config({"node": {"a": 1.0, "b": [1, 2]}}, same)["node"] is same["node"]
    # Arrays cannot be compared in one go: such groups are merged key by key.
    arrays = {"node": {"a": np.arange(3), "b": 1}}
    merged = merge_config({"node": {"a": np.arange(3), "c": 2}}, arrays)
    assert merged["node"]["a"] is arrays["node"]["a"] and merged["node"]["c"] == 2


config_leaves = st.one_of(st.none(), st.integers(0, 5), st.text("xy", max_size=2))
configs = st.dictionaries(
    st.sampled_from(NAMES),
    st.recursive(
        config_leaves,
        lambda children: st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
        max_leaves=8,
    ),
    max_size=3,
)
MISSING = object()


def lookup(tree: Any, path: tuple[str, ...]) -> Any:
    """Like subtree(), but tells a missing key (MISSING) from a stored None."""
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return MISSING
        tree = tree[name]
    return tree


@settings(max_examples=200, deadline=None)
@given(configs, configs)
def test_merge_config_contains_every_leaf_of_new(old: dict, new: dict) -> None:
    old_copy, new_copy = copy.deepcopy(old), copy.deepcopy(new)
    merged = merge_config(old, new)
    for path, value in leaves(new):
        if value == {}:
            assert isinstance(lookup(merged, path), dict), path
        else:
            assert lookup(merged, path) == value, path
    # Every leaf of the result came from one of the inputs, at the same path.
    for path, value in leaves(merged):
        assert lookup(new, path) == value or lookup(old, path) == value, path
    assert old == old_copy and new == new_copy


@settings(max_examples=200, deadline=None)
@given(configs, configs)
def test_merge_config_keeps_old_leaves_that_new_does_not_touch(old: dict, new: dict) -> None:
    merged = merge_config(old, new)
    for path, value in leaves(old):
        touched = lookup(new, path) is not MISSING or any(
            not isinstance(lookup(new, path[:i]), dict) and lookup(new, path[:i]) is not MISSING
            for i in range(1, len(path))
        )
        if not touched:
            assert lookup(merged, path) == value, path


# -- subtree --------------------------------------------------------------------------


def test_subtree_finds_values() -> None:
    tree = {"camera": {"settings": {"exposure": 5}}}
    assert subtree(tree, ("camera", "settings")) == {"exposure": 5}
    assert subtree(tree, ("camera", "settings", "exposure")) == 5
    assert subtree(tree, ()) is tree


def test_subtree_never_creates_keys() -> None:
    tree = {"camera": {"settings": {"exposure": 5}}}
    before = copy.deepcopy(tree)
    assert subtree(tree, ("missing",)) is None
    assert subtree(tree, ("camera", "missing", "deeper")) is None
    assert subtree(tree, ("camera", "settings", "exposure", "below_a_leaf")) is None
    assert tree == before


def test_leaves_treats_empty_dicts_as_leaves() -> None:
    tree = {"a": {"b": 1, "c": {}}, "d": []}
    assert sorted(leaves(tree)) == [(("a", "b"), 1), (("a", "c"), {}), (("d",), [])]


# -- carried over, owned, in force --------------------------------------------------


def test_a_carried_parameter_gives_way_to_a_new_shape() -> None:
    tree = Tree()
    tree.merge_params(("cam3",), {"roi": 5, "gain": 1})
    tree.next_experiment()
    tree.merge_params(("cam3", "roi"), {"x": 1, "y": 2})  # roi = 5 was carried over
    assert tree.to_dict() == {"cam3": {"roi": {"x": 1, "y": 2}, "gain": 1}}
    tree.next_experiment()
    tree.merge_params(("cam3",), {"roi": 7})  # and back: a carried group gives way
    assert tree.to_dict() == {"cam3": {"roi": 7, "gain": 1}}
    tree.next_experiment()
    tree.set_data(("cam3", "gain"), "now data")
    assert tree.to_dict() == {"cam3": {"roi": 7, "gain": "now data"}}


def test_within_one_experiment_a_new_shape_is_still_refused() -> None:
    tree = Tree()
    tree.merge_params(("cam3",), {"roi": 5})
    unchanged_after(tree, lambda: tree.merge_params(("cam3", "roi"), {"x": 1}))
    tree.next_experiment()
    tree.merge_params(("cam3",), {"roi": 6})  # set again: of this experiment now
    unchanged_after(tree, lambda: tree.merge_params(("cam3", "roi"), {"x": 1}))
    tree.merge_params(("cam3", "other"), {"a": 1})
    tree.next_experiment()
    tree.merge_params(("cam3", "other"), {"b": 2})  # a group partly of this experiment
    unchanged_after(tree, lambda: tree.merge_params(("cam3",), {"other": 1}))


def test_the_metadata_holds_the_parameters_in_force() -> None:
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 4.0}, "cam-session")
    tree.merge_params(("stimulus", "protocol", "x"), {"speed": 1}, "gui-1")
    tree.next_experiment()
    tree.merge_params(("stimulus", "protocol", "y"), {"speed": 2}, "gui-2")
    took_part = {"cam-session", "gui-2"}.__contains__
    assert tree.to_dict(in_force=took_part) == {
        "camera": {"exposure": 4.0},
        "stimulus": {"protocol": {"y": {"speed": 2}}},
    }
    # All of them stay for the last config.
    assert tree.params()["stimulus"]["protocol"] == {"x": {"speed": 1}, "y": {"speed": 2}}


def test_restored_values_are_in_force() -> None:
    tree = Tree()
    tree.merge_params(("general", "animal"), {"species": "Danio rerio"}, "gui-1")
    tree.next_experiment()
    tree.restored(
        ("general",), {"animal": {"species": "Danio rerio", "age": 7}, "empty": {}}, jsonio.same
    )
    nobody = {"gui-2"}.__contains__
    assert tree.to_dict(in_force=nobody) == {
        "general": {"animal": {"species": "Danio rerio", "age": 7}, "empty": {}}
    }


def test_restored_returns_only_the_values_it_added() -> None:
    """The history's restored values: those the tree held are in it already."""
    tree = Tree()
    tree.merge_params(("general", "animal"), {"species": "Danio rerio"}, "gui-1")
    added = tree.restored(
        ("general",), {"animal": {"species": "Mus", "age": 7}, "empty": {}}, jsonio.same
    )
    assert added == [(("general", "animal", "age"), 7)]
    assert tree.params()["general"]["animal"]["species"] == "Danio rerio"  # set now: it stays


def test_a_carried_value_takes_the_restored_one_when_it_differs() -> None:
    """What a process restored is what it uses: a carried value gives way (the
    last config was edited between sessions), and is history; one that reads
    back alike (an array answered as a list) stays as it is, and is not."""
    tree = Tree()
    tree.merge_params(("camera",), {"exposure": 4.0, "roi": np.arange(3)}, "cam-1")
    tree.next_experiment()
    changed = tree.restored(("camera",), {"exposure": 5.0, "roi": [0, 1, 2]}, jsonio.same)
    assert changed == [(("camera", "exposure"), 5.0)]
    params = tree.params()["camera"]
    assert params["exposure"] == 5.0
    assert isinstance(params["roi"], np.ndarray)
    assert tree.to_dict(in_force=lambda owner: False) == {"camera": params}  # both in force


def test_held_splits_what_was_set_now_from_what_was_carried_in() -> None:
    tree = Tree()
    tree.merge_params(("general", "animal"), {"species": "Danio rerio", "age": 7}, "gui-1")
    tree.merge_params(("general", "old"), {"x": 1}, "gui-1")
    tree.next_experiment()
    tree.merge_params(("general", "animal"), {"age": 8}, "gui-1")
    tree.set_data(("general", "log"), [1, 2])  # static data: never restored
    assert tree.held(("general",)) == (
        {"animal": {"age": 8}},
        {"animal": {"species": "Danio rerio"}, "old": {"x": 1}},
    )
    assert tree.held(("general", "animal", "age")) == (8, None)
    assert tree.held(("general", "old", "x")) == (None, 1)
    assert tree.held(("general", "log")) == (None, None)
    assert tree.held(("nothing", "here")) == (None, None)


def test_parameter_runs_are_every_parameter_with_its_owner_groups_after_parameters() -> None:
    """What an experiment began with, for its history: every parameter (not
    static data), at any depth, a dict-valued one as a value, in runs of one
    owner each."""
    tree = Tree()
    tree.merge_params(("cam", "roi"), {"x": 0}, "cam-1")
    tree.merge_params(("cam",), {"gain": 1, "window": {"w": 2}}, "cam-1")
    tree.merge_params(("old",), {"x": 1}, "gone-1")
    tree.merge_params(("empty",), {})
    tree.set_data(("stimulus", "log"), [1])
    tree.merge_params(("mixed",), {"a": 1, "b": 2}, "s1")
    tree.merge_params(("mixed",), {"c": 3}, "s2")
    tree.merge_params(("mixed",), {"d": 4}, "s1")
    assert list(tree.parameter_runs()) == [
        ("cam/", {"gain": 1, "window": {"w": 2}}, "cam-1"),
        ("cam/roi/", {"x": 0}, "cam-1"),
        ("old/", {"x": 1}, "gone-1"),
        ("mixed/", {"a": 1, "b": 2}, "s1"),
        ("mixed/", {"c": 3}, "s2"),
        ("mixed/", {"d": 4}, "s1"),
    ]


def test_the_carried_form_rebuilds_the_parameters_at_any_depth() -> None:
    """A BEGIN record holds ``carried()``; a restart builds the tree from it."""
    tree = Tree()
    deep = tuple(f"n{i}" for i in range(31))  # the deepest node a path allows
    tree.merge_params(deep, {"p": {"a dict": [1, {"value": 2}]}}, "s1")
    tree.merge_params(("camera",), {"roi": {"x": 1}, "exposure": 4.0}, "s2")
    tree.merge_params(("empty",), {})
    tree.merge_params(("camera",), {"gain": 2.0, "blank": {}}, "s3")  # owners differ
    tree.merge_params(("misc",), {"unknown": 1, "none": None})  # no owner known
    tree.set_data(("stimulus", "log"), [1, 2])  # static data is not carried
    values, owners = (codec.unpack_own(codec.pack(part)) for part in tree.carried())
    assert owners["camera"][""] == {"roi": "s2", "exposure": "s2", "gain": "s3", "blank": "s3"}
    assert owners["misc"] == {"": None}
    rebuilt = Tree.from_carried(values, owners)
    assert rebuilt.to_dict() == tree.params()
    assert rebuilt.carried() == tree.carried()  # owners too
    assert rebuilt.to_dict()["camera"]["blank"] == {}  # a parameter, not a group
    # Everything rebuilt is carried over: a new shape wins over it.
    rebuilt.merge_params(("camera", "roi", "x"), {"bits": 8})


def test_a_begin_record_of_the_previous_form_still_builds_its_tree() -> None:
    """Journals written before ``carried()`` split values from owners held
    ``[value, owner]`` per parameter; a daemon upgraded mid-experiment reads them."""
    pairs = {"camera": {"exposure": [4.0, "s1"], "roi": [{"x": 1}, "s2"]}, "empty": {}}
    rebuilt = Tree.from_pairs(pairs)
    assert rebuilt.params() == {"camera": {"exposure": 4.0, "roi": {"x": 1}}, "empty": {}}
    assert rebuilt.carried()[1] == {"camera": {"": {"exposure": "s1", "roi": "s2"}, "$": ["roi"]}}
