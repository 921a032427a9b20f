"""The collected tree: parameters and static data, and the last-config merge.

Two kinds of leaves live in one tree, as in stytra's ``DataCollector``:

* **parameters**, merged into a node by ``set_params`` (``camera/settings``
  gets ``exposure``); they carry over from one experiment to the next and are
  what the last-config file holds;
* **static data**, set at a path by ``add_data`` (``stimulus/log``); they
  belong to the current experiment only and are cleared when it is saved.

The rule that keeps the tree well-formed: **no leaf lies under another leaf**.
A path that would cross an existing value, turn a group into a value, or put
static data where a parameter is (or the reverse) is refused with a
``TreeConflict`` naming both paths, and the tree is left untouched. stytra's
``set_nested`` would instead crash on some of these and silently overwrite
others. Pure logic: no sockets, no files.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterator, Mapping
from typing import Any

from .paths import Path, check_name, join_path


class TreeConflict(ValueError):
    """A change would break the tree's shape; the tree is unchanged."""


class LeafKind(enum.Enum):
    PARAM = "a parameter"
    DATA = "static data"


class _Leaf:
    __slots__ = ("kind", "value")

    def __init__(self, kind: LeafKind, value: Any) -> None:
        self.kind = kind
        self.value = value


class Tree:
    """The nested tree of one daemon, across experiments."""

    def __init__(self) -> None:
        self._root: dict[str, Any] = {}

    def _walk_to(self, node: Path, create: bool) -> dict[str, Any] | None:
        """Return the group at ``node``; None if absent and not ``create``.

        Raises ``TreeConflict`` if ``node`` crosses a leaf, before creating anything.
        """
        branch = self._root
        for depth, name in enumerate(node):
            child = branch.get(name)
            if isinstance(child, _Leaf):
                where = join_path(node[: depth + 1])
                raise TreeConflict(
                    f"{where!r} holds {child.kind.value}, so {join_path(node)!r} cannot be a group"
                )
            if child is None:
                if not create:
                    return None
                child = branch[name] = {}
            branch = child
        return branch

    def merge_params(self, node: Path, values: Mapping[str, Any]) -> None:
        """Merge parameter ``values`` into the group at ``node``, all or nothing."""
        existing = self._walk_to(node, create=False)
        for name in values:
            current = existing.get(name) if existing is not None else None
            if current is None:
                # Names already in the tree were checked when they came in.
                check_name(name, where=lambda: f"parameter name under {join_path(node)!r}")
            elif type(current) is not _Leaf or current.kind is not LeafKind.PARAM:
                raise self._not_a_parameter((*node, name), current)
        branch = existing if existing is not None else self._walk_to(node, create=True)
        assert branch is not None
        for name, value in values.items():
            current = branch.get(name)
            if current is None:
                branch[name] = _Leaf(LeafKind.PARAM, value)
            else:
                current.value = value

    @staticmethod
    def _not_a_parameter(path: Path, current: Any) -> TreeConflict:
        if isinstance(current, dict):
            return TreeConflict(f"{join_path(path)!r} is a group, it cannot become a parameter")
        return TreeConflict(f"{join_path(path)!r} holds static data, not a parameter")

    def set_data(self, path: Path, value: Any) -> None:
        """Set static data at ``path``, replacing earlier static data there."""
        parent, name = path[:-1], path[-1]
        existing = self._walk_to(parent, create=False) or {}
        current = existing.get(name)
        if isinstance(current, dict):
            raise TreeConflict(f"{join_path(path)!r} is a group, it cannot become a value")
        if isinstance(current, _Leaf) and current.kind is not LeafKind.DATA:
            raise TreeConflict(f"{join_path(path)!r} holds a parameter, not static data")
        branch = self._walk_to(parent, create=True)
        assert branch is not None
        branch[name] = _Leaf(LeafKind.DATA, value)

    def clear_data(self) -> None:
        """Drop every static-data leaf: a new experiment starts."""
        self._root = _export(self._root, keep={LeafKind.PARAM}, as_leaves=True)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and static data as nested plain dicts (shared values)."""
        return _export(self._root, keep={LeafKind.PARAM, LeafKind.DATA}, as_leaves=False)

    def params(self) -> dict[str, Any]:
        """Parameters only, as nested plain dicts: what the last config keeps."""
        return _export(self._root, keep={LeafKind.PARAM}, as_leaves=False)

    def is_empty(self) -> bool:
        return not self._root

    def param_leaves(self) -> tuple[list[tuple[Path, Any]], list[Path]]:
        """Every parameter as (path, value), and every empty group's path.

        Exactly what ``merge_params`` needs to rebuild the parameters: unlike
        the nested dict of ``params()``, it tells a dict-valued parameter from
        a group.
        """
        params: list[tuple[Path, Any]] = []
        empty: list[Path] = []

        def walk(branch: dict[str, Any], prefix: Path) -> None:
            if not branch and prefix:
                empty.append(prefix)
            for name, child in branch.items():
                if isinstance(child, _Leaf):
                    if child.kind is LeafKind.PARAM:
                        params.append(((*prefix, name), child.value))
                else:
                    walk(child, (*prefix, name))

        walk(self._root, ())
        return params, empty


def _export(branch: dict[str, Any], keep: set[LeafKind], as_leaves: bool) -> dict[str, Any]:
    """Copy the tree's structure keeping leaves of the given kinds.

    Groups left empty by the filter are dropped; groups that were empty to
    begin with (a node with no parameters yet) are kept.
    """
    out: dict[str, Any] = {}
    for name, child in branch.items():
        if isinstance(child, _Leaf):
            if child.kind in keep:
                out[name] = child if as_leaves else child.value
        else:
            sub = _export(child, keep, as_leaves)
            if sub or not child:
                out[name] = sub
    return out


def leaves(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Yield (path, value) for every leaf of a plain nested dict.

    Unlike lightparam's ``visit_dict``, an empty dict is a leaf here: a group
    with no parameters survives the last-config merge instead of vanishing.
    """
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*prefix, name))
        else:
            yield (*prefix, name), value


def merge_config(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge this session's parameters over the previous last config.

    Every leaf of ``new`` wins; leaves of ``old`` that ``new`` does not mention
    are kept, so parameters of other experiment types survive (stytra's
    ``save_config_file``). Where a key changed from a value to a group or back,
    the new shape wins instead of crashing the merge as stytra's does.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(old))
    for path, value in leaves(new):
        if isinstance(value, dict) and not value and isinstance(subtree(merged, path), dict):
            continue  # a group with no parameters this session keeps the old ones
        branch = merged
        for name in path[:-1]:
            child = branch.get(name)
            if not isinstance(child, dict):
                child = branch[name] = {}
            branch = child
        branch[path[-1]] = copy.deepcopy(value)
    return merged


def subtree(tree: Mapping[str, Any], node: Path) -> Any:
    """The value at ``node`` in a plain nested dict, or None; never creates keys.

    (lightparam's ``get_nested`` inserts missing keys, which a read must not.)
    """
    current: Any = tree
    for name in node:
        if not isinstance(current, dict) or name not in current:
            return None
        current = current[name]
    return current
