"""The collected tree: parameters and static data, and the last-config merge.

Two kinds of leaves live in one tree, as in stytra's ``DataCollector``:

* **parameters**, merged into a node by ``set_params`` (``camera/settings``
  gets ``exposure``); they carry over from one experiment to the next and are
  what the last-config file holds;
* **static data**, set at a path by ``add_data`` (``stimulus/log``); they
  belong to the current experiment only and are cleared when it is saved.

Each parameter remembers the session that set it (its *owner*) and whether it
was set in the current experiment (*fresh*) or carried over from an earlier
one. Two rules use that:

* **What an experiment's metadata holds** (``to_dict(in_force=...)``): the
  parameters in force in it, that is those set during it, and those carried
  over whose owner took part in it (a camera process that set its parameters
  once and ran through ten experiments is in all ten). A parameter of a
  process that ended before the experiment stays in the tree (and in the last
  config) but not in that experiment's metadata.
* **No leaf lies under another leaf.** A change that would cross a value, turn
  a group into a value, or put static data where a parameter is (or the
  reverse) is refused with a ``TreeConflict`` naming both paths, the tree left
  untouched, when what is in the way belongs to the current experiment. What
  is in the way but only carried over is replaced: new code that reshapes a
  parameter (``roi = 5`` becoming ``roi/{x, y}``) wins over old values.

stytra's ``set_nested`` would instead crash on some of these and silently
overwrite others. Pure logic: no sockets, no files.
"""

from __future__ import annotations

import contextlib
import enum
import gc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .paths import Path, check_name, join_path


class TreeConflict(ValueError):
    """A change would break the tree's shape; the tree is unchanged."""


class LeafKind(enum.Enum):
    PARAM = "a parameter"
    DATA = "static data"


class _Leaf:
    """One value of the tree. Never changed once made: a new value is a new
    leaf, so a tree forked for a save (``Tree.fork``) shares leaves safely."""

    __slots__ = ("gen", "kind", "owner", "value")

    def __init__(self, kind: LeafKind, value: Any, owner: str | None, gen: int) -> None:
        self.kind = kind
        self.value = value
        self.owner = owner  # the session that set it (None: unknown)
        self.gen = gen  # the experiment (Tree.generation) that set it


class _Group(dict):  # type: ignore[type-arg]
    """A group of the tree: a dict that knows which experiment made it."""

    __slots__ = ("gen",)

    def __init__(self, gen: int) -> None:
        super().__init__()
        self.gen = gen


#: Decides whether a carried-over parameter is in force: gets its owner.
InForce = Callable[[str | None], bool]

_PARAM = LeafKind.PARAM
_DATA = LeafKind.DATA


class Tree:
    """The nested tree of one daemon, across experiments.

    Experiments are numbered (``generation``); a leaf or group made in the
    current one is *fresh*, anything older is carried over.
    """

    def __init__(self) -> None:
        self.generation = 1
        self._root: dict[str, Any] = _Group(0)
        #: Where static data was set in this experiment (some may be gone).
        self._data: list[Path] = []

    def _carried(self, child: Any) -> bool:
        """Whether ``child`` (a leaf or group) holds nothing of this experiment."""
        if type(child) is _Leaf:
            return child.kind is _PARAM and child.gen < self.generation
        return _carried_only(child, self.generation)

    def _clear_way(self, path: Path, kind: LeafKind | None) -> list[tuple[dict[str, Any], str]]:
        """What must go for ``path`` to hold a leaf of ``kind`` (None: a group).

        Returns the carried-over entries in the way, as (parent, name), for the
        caller to remove once every check has passed. Raises ``TreeConflict``
        if anything of the current experiment is in the way.
        """
        branch = self._root
        for depth, name in enumerate(path):
            child = branch.get(name)
            if child is None:
                return []
            last = depth == len(path) - 1
            if type(child) is _Leaf:
                if last and kind is not None:
                    if child.kind is kind:
                        return []
                    if self._carried(child):
                        return [(branch, name)]
                    wanted = "static data" if kind is _DATA else "a parameter"
                    raise TreeConflict(
                        f"{join_path(path)!r} holds {child.kind.value}, not {wanted}"
                    )
                if self._carried(child):
                    return [(branch, name)]
                where = join_path(path[: depth + 1])
                raise TreeConflict(
                    f"{where!r} holds {child.kind.value}, so {join_path(path)!r} cannot be a group"
                )
            if last and kind is not None:
                if self._carried(child):
                    return [(branch, name)]
                raise TreeConflict(f"{join_path(path)!r} is a group, it cannot become a value")
            branch = child
        return []

    def _group(self, node: Path, gen: int) -> dict[str, Any]:
        """The group at ``node``, created (in experiment ``gen``) if absent;
        the way must be clear."""
        branch = self._root
        for name in node:
            child = branch.get(name)
            if type(child) is _Leaf or child is None:
                child = branch[name] = _Group(gen)
            branch = child
        return branch

    def merge_params(
        self,
        node: Path,
        values: Mapping[str, Any],
        owner: str | None = None,
        *,
        carried: bool = False,
    ) -> None:
        """Merge parameter ``values`` into the group at ``node``, all or nothing.

        ``owner``: the session that set them. ``carried``: they come from an
        earlier experiment (a journal's BEGIN record), not from this one.
        """
        removals = self._clear_way(node, None)
        existing = self._existing_group(node) if not removals else None
        for name in values:
            current = existing.get(name) if existing is not None else None
            if current is None:
                # Names already in the tree were checked when they came in.
                check_name(name, where=lambda: f"parameter name under {join_path(node)!r}")
            elif not (type(current) is _Leaf and current.kind is _PARAM):
                removals += self._clear_way((*node, name), _PARAM)
        for parent, name in removals:
            del parent[name]
        gen = 0 if carried else self.generation
        branch = self._group(node, gen)
        if not values and not carried and isinstance(branch, _Group):
            branch.gen = gen  # the node is declared in this experiment
        for name, value in values.items():
            branch[name] = _Leaf(_PARAM, value, owner, gen)

    def _existing_group(self, node: Path) -> dict[str, Any] | None:
        branch = self._root
        for name in node:
            child = branch.get(name)
            if child is None or type(child) is _Leaf:
                return None
            branch = child
        return branch

    def restored(self, node: Path, values: Mapping[str, Any]) -> list[tuple[Path, Any]]:
        """A process restored ``values`` (the last config's, under ``node``):
        they are in force in this experiment.

        Parameters the tree holds there count as set now; those it lacks are
        added (owner unknown), where nothing is in the way. Returns the
        parameters added, (path, value): the history's restored values (those
        the tree held are in it already, carried in or changed).
        """
        added: list[tuple[Path, Any]] = []
        for path, value in leaves(values, node):
            try:
                removals = self._clear_way(path, _PARAM)
            except TreeConflict:
                continue  # something of this experiment is there: it wins
            if removals:
                continue  # the tree's own (carried) shape stays
            parent = self._existing_group(path[:-1])
            leaf = parent.get(path[-1]) if parent is not None else None
            if type(leaf) is _Leaf:
                assert parent is not None
                parent[path[-1]] = _Leaf(_PARAM, leaf.value, leaf.owner, self.generation)
            elif isinstance(value, dict):
                self._group(path, self.generation)  # a group with no parameters
            else:
                group = self._group(path[:-1], self.generation)
                group[path[-1]] = _Leaf(_PARAM, value, None, self.generation)
                added.append((path, value))
        return added

    def set_data(self, path: Path, value: Any) -> None:
        """Set static data at ``path``, replacing earlier static data there."""
        for parent, name in self._clear_way(path, _DATA):
            del parent[name]
        self._group(path[:-1], self.generation)[path[-1]] = _Leaf(
            _DATA, value, None, self.generation
        )
        self._data.append(path)

    def next_experiment(self) -> None:
        """A new experiment starts: static data goes, parameters are carried over.

        Costs what this experiment's static data costs, not what the tree holds.
        """
        for path in self._data:
            chain = [self._root]
            for name in path[:-1]:
                child = chain[-1].get(name)
                if child is None or type(child) is _Leaf:
                    break
                chain.append(child)
            else:
                leaf = chain[-1].get(path[-1])
                if type(leaf) is _Leaf and leaf.kind is _DATA:
                    del chain[-1][path[-1]]
                    # Groups this emptied go too; a group declared empty stays.
                    for depth in range(len(chain) - 1, 0, -1):
                        if chain[depth]:
                            break
                        del chain[depth - 1][path[depth - 1]]
        self._data = []
        self.generation += 1

    def fork(self) -> Tree:
        """A copy of this tree as it is now, for a save to read while this one
        goes on: its groups are copied, its leaves (never changed) shared."""
        forked = Tree()
        forked.generation = self.generation
        forked._root = _copy_groups(self._root)
        return forked

    def to_dict(self, in_force: InForce | None = None) -> dict[str, Any]:
        """Parameters and static data as nested plain dicts (shared values).

        With ``in_force``, carried-over parameters whose owner it refuses are
        left out (an experiment's metadata; see the module docstring).
        """
        return _export(self._root, True, in_force, self.generation)

    def params(self) -> dict[str, Any]:
        """Parameters only, as nested plain dicts: what the last config keeps."""
        return _export(self._root, False, None, self.generation)

    def carried_in(self, began: Tree, in_force: InForce) -> Iterator[tuple[str, Any, str | None]]:
        """The parameters an experiment began with (``began``: the tree then)
        that are in its metadata (this tree, at its stop, filtered by
        ``in_force`` as ``to_dict`` does): (slash path, value then, owner)."""
        return _carried_in(began._root, self._root, "", in_force, self.generation)

    def is_empty(self) -> bool:
        return not self._root

    def carried(self) -> dict[str, Any]:
        """The parameters as a new experiment inherits them, for its journal's
        BEGIN record: groups as maps, each parameter as ``[value, owner]``.

        Unlike the nested dict of ``params()``, this tells a dict-valued
        parameter from a group; ``from_carried`` builds the tree back.
        """
        return _carried(self._root)

    @classmethod
    def from_carried(cls, carried: Mapping[str, Any]) -> Tree:
        """The tree ``carried()`` describes, every parameter carried over."""
        tree = cls()
        tree._root = _build(carried)
        return tree


def _export(
    branch: dict[str, Any], data: bool, in_force: InForce | None, gen: int
) -> dict[str, Any]:
    """Copy the tree's structure with its parameters, and its static data if
    ``data``; with ``in_force``, only the parameters it accepts, or of
    experiment ``gen``.

    Groups left empty by the filter are dropped; groups that were empty to
    begin with (a node with no parameters yet) are kept. Written for speed:
    a save exports every leaf of trees of up to millions.
    """
    out: dict[str, Any] = {}
    for name, child in branch.items():
        if type(child) is _Leaf:
            if child.kind is _PARAM:
                if in_force is None or child.gen == gen or in_force(child.owner):
                    out[name] = child.value
            elif data:
                out[name] = child.value
        elif child:
            sub = _export(child, data, in_force, gen)
            if sub:
                out[name] = sub
        else:
            out[name] = {}
    return out


def _carried_in(
    was: dict[str, Any], now: dict[str, Any], prefix: str, in_force: InForce, gen: int
) -> Iterator[tuple[str, Any, str | None]]:
    """A group's parameters, then its groups' (a loop, not a generator per
    level: a save walks millions of leaves)."""
    pending = [(was, now, prefix)]
    while pending:
        was, now, prefix = pending.pop()
        groups = []
        for name, child in was.items():
            current = now.get(name)
            if current is None:
                continue
            if type(child) is _Leaf:
                if (
                    child.kind is _PARAM
                    and type(current) is _Leaf
                    and current.kind is _PARAM
                    and (current.gen == gen or in_force(current.owner))
                ):
                    yield prefix + name, child.value, child.owner
            elif child and type(current) is not _Leaf:
                groups.append((child, current, f"{prefix}{name}/"))
        pending.extend(reversed(groups))


def _carried(branch: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, child in branch.items():
        if type(child) is _Leaf:
            if child.kind is _PARAM:
                out[name] = [child.value, child.owner]
        elif child:
            sub = _carried(child)
            if sub:
                out[name] = sub
        else:
            out[name] = {}
    return out


def _build(carried: Mapping[str, Any]) -> _Group:
    group = _Group(0)
    for name, child in carried.items():
        if type(child) is dict:
            group[name] = _build(child)
        else:
            value, owner = child
            group[name] = _Leaf(_PARAM, value, owner, 0)
    return group


def _copy_groups(branch: dict[str, Any]) -> _Group:
    copied = _Group(getattr(branch, "gen", 0))
    copied.update(branch)
    for name, child in branch.items():
        if type(child) is not _Leaf:
            copied[name] = _copy_groups(child)
    return copied


def _carried_only(branch: dict[str, Any], gen: int) -> bool:
    """Whether a group holds nothing of experiment ``gen``."""
    if getattr(branch, "gen", 0) == gen:
        return False
    for child in branch.values():
        if type(child) is _Leaf:
            if child.kind is not _PARAM or child.gen == gen:
                return False
        elif not _carried_only(child, gen):
            return False
    return True


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
    the new shape wins instead of crashing the merge as stytra's does. A group
    of ``new`` with no parameters keeps what ``old`` has there.

    Groups are copied, values shared: nothing in a tree's values is changed
    in place (a new value replaces the old one).
    """
    merged = dict(old)
    for name, value in new.items():
        before = merged.get(name)
        if isinstance(value, dict) and isinstance(before, dict):
            merged[name] = merge_config(before, value) if value else before
        elif isinstance(value, dict):
            merged[name] = merge_config({}, value)
        else:
            merged[name] = value
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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a whole tree is built or walked.

    A tree of a million parameters is millions of objects: each collection
    the allocations trigger walks them all, which made a restart's replay
    and a save several times slower. None of these structures holds a cycle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
