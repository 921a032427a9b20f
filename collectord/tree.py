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
import operator
from collections.abc import Callable, Iterator, Mapping
from itertools import count, repeat
from typing import Any, NamedTuple

from .paths import Path, check_name, join_path


class TreeConflict(ValueError):
    """A change would break the tree's shape; the tree is unchanged."""


class LeafKind(enum.Enum):
    PARAM = "a parameter"
    DATA = "static data"


class _Leaf(tuple):  # type: ignore[type-arg]
    """One value of the tree: (kind, value, owner, gen). Never changed once
    made: a new value is a new leaf, so a tree forked for a save
    (``Tree.fork``) shares leaves safely.

    A tuple made from a tuple (``_Leaf((kind, value, owner, gen))``), with
    no ``__init__`` or ``__new__`` of its own: made in C, about twice as fast
    as a class with slots, which a restart building a million of them
    (``_build``) and every parameter a message sets both feel. Compared by
    identity, never by content.
    """

    __slots__ = ()

    kind = property(operator.itemgetter(0))
    value = property(operator.itemgetter(1))
    owner = property(operator.itemgetter(2))  # the session that set it (None: unknown)
    gen = property(operator.itemgetter(3))  # the experiment (Tree.generation) that set it


class _Group(dict):  # type: ignore[type-arg]
    """A group of the tree: a dict that knows which experiment made it
    (``gen``) and which tree may change it in place (``epoch``).

    A fork shares its groups with the tree it was forked from (``Tree.fork``);
    each tree then changes only groups of its own epoch, and copies a shared
    one (and the groups above it) before it changes it.
    """

    __slots__ = ("epoch", "gen")

    def __init__(self, gen: int, epoch: int) -> None:
        super().__init__()
        self.gen = gen
        self.epoch = epoch


#: Each tree's epoch, new at every fork: a group of another epoch is shared.
_EPOCHS = count(1)


def _copy(group: _Group, epoch: int) -> _Group:
    """A shallow copy of ``group`` for the tree of ``epoch`` to change."""
    copied = _Group(group.gen, epoch)
    copied.update(group)
    return copied


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
        self._epoch = next(_EPOCHS)
        self._root: _Group = _Group(0, self._epoch)
        #: Where static data was set in this experiment (some may be gone).
        self._data: list[Path] = []

    def _carried(self, child: Any) -> bool:
        """Whether ``child`` (a leaf or group) holds nothing of this experiment."""
        if type(child) is _Leaf:
            return child.kind is _PARAM and child.gen < self.generation
        return _carried_only(child, self.generation)

    def _clear_way(self, path: Path, kind: LeafKind | None) -> list[Path]:
        """What must go for ``path`` to hold a leaf of ``kind`` (None: a group).

        Returns the paths of the carried-over entries in the way, for the
        caller to remove (``_remove``) once every check has passed. Raises
        ``TreeConflict`` if anything of the current experiment is in the way.
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
                        return [path[: depth + 1]]
                    wanted = "static data" if kind is _DATA else "a parameter"
                    raise TreeConflict(f"{join_path(path)!r} holds {_held(child)}, not {wanted}")
                if self._carried(child):
                    return [path[: depth + 1]]
                where = join_path(path[: depth + 1])
                raise TreeConflict(
                    f"{where!r} holds {_held(child)}, so {join_path(path)!r} cannot be a group"
                )
            if last and kind is not None:
                if self._carried(child):
                    return [path[: depth + 1]]
                raise TreeConflict(f"{join_path(path)!r} is a group, it cannot become a value")
            branch = child
        return []

    def _group(self, node: Path, gen: int) -> _Group:
        """The group at ``node``, this tree's own to change: created (in
        experiment ``gen``) if absent, copied (with the groups above it) if a
        fork shares it. The way must be clear."""
        epoch = self._epoch
        branch = self._root
        if branch.epoch != epoch:
            branch = self._root = _copy(branch, epoch)
        for name in node:
            child = branch.get(name)
            if type(child) is _Leaf or child is None:
                child = branch[name] = _Group(gen, epoch)
            elif child.epoch != epoch:
                child = branch[name] = _copy(child, epoch)
            branch = child
        return branch

    def _remove(self, path: Path) -> None:
        """Remove the entry at ``path`` (``_clear_way`` found it there)."""
        if self._existing_group(path[:-1]) is not None:
            del self._group(path[:-1], 0)[path[-1]]

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
        for path in removals:
            self._remove(path)
        gen = 0 if carried else self.generation
        branch = self._group(node, gen)
        if not values and not carried:
            branch.gen = gen  # the node is declared in this experiment
        for name, value in values.items():
            branch[name] = _Leaf((_PARAM, value, owner, gen))

    def _existing_group(self, node: Path) -> dict[str, Any] | None:
        branch = self._root
        for name in node:
            child = branch.get(name)
            if child is None or type(child) is _Leaf:
                return None
            branch = child
        return branch

    def held(self, node: Path) -> tuple[Any, Any]:
        """The parameters under ``node``, for a ``restore``: (those set in this
        experiment, those carried in), each as nested plain dicts, or the value
        of the parameter at ``node`` if one is there; None where there is none.
        Static data is left out."""
        parent = self._existing_group(node[:-1])
        child = parent.get(node[-1]) if parent is not None else None
        if type(child) is _Leaf:
            if child.kind is not _PARAM:
                return None, None
            return (child.value, None) if child.gen == self.generation else (None, child.value)
        if not child:
            return None, None
        return _split_fresh(child, self.generation)

    def restored(
        self, node: Path, values: Mapping[str, Any], same: Callable[[Any, Any], bool]
    ) -> list[tuple[Path, Any]]:
        """A process restored ``values`` under ``node`` (``restore``'s answer):
        they are in force in this experiment, and what it now uses.

        A parameter set in this experiment keeps its value (the answer held
        it, unless it was set since); one carried in takes the restored
        value (a last config edited by hand between sessions: the process
        uses the file's). Those the tree lacks are added (owner unknown),
        where nothing is in the way. Returns the parameters added or changed,
        (path, value), for the history: the others are in it already. ``same``
        tells a value from its restored form (an array came back a list).
        """
        changed: list[tuple[Path, Any]] = []
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
                own = self._group(path[:-1], self.generation)
                if leaf.gen == self.generation or same(leaf.value, value):
                    value = leaf.value
                else:
                    changed.append((path, value))
                own[path[-1]] = _Leaf((_PARAM, value, leaf.owner, self.generation))
            elif isinstance(value, dict):
                self._group(path, self.generation)  # a group with no parameters
            else:
                group = self._group(path[:-1], self.generation)
                group[path[-1]] = _Leaf((_PARAM, value, None, self.generation))
                changed.append((path, value))
        return changed

    def set_data(self, path: Path, value: Any) -> None:
        """Set static data at ``path``, replacing earlier static data there."""
        for removed in self._clear_way(path, _DATA):
            self._remove(removed)
        leaf = _Leaf((_DATA, value, None, self.generation))
        self._group(path[:-1], self.generation)[path[-1]] = leaf
        self._data.append(path)

    def next_experiment(self) -> None:
        """A new experiment starts: static data goes, parameters are carried over.

        Costs what this experiment's static data costs, not what the tree holds.
        """
        for path in self._data:
            parent = self._existing_group(path[:-1])
            leaf = parent.get(path[-1]) if parent is not None else None
            if not (type(leaf) is _Leaf and leaf.kind is _DATA):
                continue
            self._group(path[:-1], 0)  # this tree's own, all the way down
            chain = [self._root]
            for name in path[:-1]:
                chain.append(chain[-1][name])
            del chain[-1][path[-1]]
            # Groups this emptied go too.
            for depth in range(len(chain) - 1, 0, -1):
                if chain[depth]:
                    break
                del chain[depth - 1][path[depth - 1]]
        self._data = []
        self.generation += 1

    def fork(self) -> Tree:
        """A copy of this tree as it is now, for a save to read (or an
        experiment's history to begin with) while this one goes on.

        Costs nothing at once: the two share every group, and from now on
        each copies a group (and those above it) before it first changes it
        (``_group``). A stop of a daemon holding a million parameters forks
        its tree in the loop's thread; copying all of it there left the daemon
        deaf for a few tenths of a second, and kept a second copy of every
        group for as long as the experiment ran.
        """
        forked = Tree()
        forked.generation = self.generation
        forked._root = self._root
        self._epoch = next(_EPOCHS)  # the groups it had are shared from now on
        return forked

    def to_dict(self, in_force: InForce | None = None) -> dict[str, Any]:
        """Parameters and static data as nested plain dicts (shared values).

        With ``in_force``, carried-over parameters whose owner it refuses are
        left out (an experiment's metadata; see the module docstring).
        """
        return self.export(in_force).metadata

    def params(self) -> dict[str, Any]:
        """Parameters only, as nested plain dicts: what the last config keeps."""
        return self.export().params

    def is_empty(self) -> bool:
        return not self._root

    def parameter_runs(self) -> Iterator[tuple[str, dict[str, Any], str | None]]:
        """Every parameter as (group prefix, {name: value}, owner): the
        consecutive parameters of a group that one owner set, a group's
        parameters before its groups. The values an experiment began with,
        for its history: a line per parameter, built a run at a time
        (``changes.encode_runs``)."""
        return _parameter_runs(self._root)

    def carried(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The parameters as a new experiment inherits them, for its journal's
        BEGIN record: ``(params(), owners)``; ``from_carried`` builds the tree
        back from the two.

        ``owners`` says what the nested dict of ``params()`` does not: who set
        each parameter, and which maps in it are dict-valued parameters rather
        than groups. It mirrors the groups that hold parameters; in each, the
        key ``""`` (never a name) holds the owner of all its parameters, or a
        map of name to owner where they differ, and the key ``"$"`` (no name
        starts with it) the names of its dict-valued parameters. One owner per
        group instead of one per parameter keeps the record small and quick to
        write and to read back, the values being the ones the last config
        writes.
        """
        exported = self.export()
        return exported.params, exported.owners

    def export(
        self,
        in_force: InForce | None = None,
        last: Exports | None = None,
        kept: Exports | None = None,
    ) -> Exported:
        """``to_dict(in_force)``, ``params()`` and ``carried()``'s owners in one walk.

        A save needs all three of a tree of up to millions of parameters. One
        walk costs about what one of them did, and a group whose metadata and
        parameters are the same (all its parameters in force, no static data)
        is one dict in both, so that the JSON writer encodes it once for the
        metadata and the last config (``jsonio.dumps`` with a ``memo``).

        ``last`` and ``kept`` let one save take from the one before: a group
        of parameters that no tree can change any more (``Exports``) found in
        ``last`` gives the same dicts as then, without a walk; every such group
        of this export goes into ``kept``, for the next. Between two
        experiments nearly every group is unchanged, and the same dicts let
        the JSON and msgpack writers reuse their text too.
        """
        reuse = None if kept is None else _Reuse(self._epoch, last or {}, kept)
        return Exported(*_export(self._root, in_force or _everyone, self.generation, reuse))

    @classmethod
    def from_carried(cls, values: Mapping[str, Any], owners: Mapping[str, Any]) -> Tree:
        """The tree ``carried()`` describes, every parameter carried over."""
        tree = cls()
        tree._root = _build(values, owners, tree._epoch)
        return tree

    @classmethod
    def from_pairs(cls, carried: Mapping[str, Any]) -> Tree:
        """The tree of a BEGIN record written before ``carried()`` had its
        present form: groups as maps, each parameter as ``[value, owner]``."""
        tree = cls()
        tree._root = _build_pairs(carried, tree._epoch)
        return tree


class Exported(NamedTuple):
    """What a save writes of a tree (``Tree.export``)."""

    metadata: dict[str, Any]  # parameters in force and static data
    params: dict[str, Any]  # every parameter: what the last config keeps
    owners: dict[str, Any]  # who set them, and which are dict-valued (``carried``)


#: Exports of groups of parameters only, by the group's ``id``: (the group,
#: its params, its owners, the set of its owners). Only groups of an epoch no
#: tree holds any more go in: since its last fork no tree changes such a
#: group in place (each copies it first, ``Tree._group``), so the group
#: object stands for its content. Its metadata is decided again at each
#: export (it depends on the experiment and the sessions in force). The
#: entry holds the group, so that its id is not reused while it is there.
Exports = dict[int, tuple[Any, ...]]


class _Reuse(NamedTuple):
    epoch: int  # the exporting tree's: its groups of this epoch may still change
    last: Exports
    kept: Exports


def _held(leaf: _Leaf) -> str:
    """What a leaf holds, in words a client's author knows."""
    if leaf.kind is _PARAM:
        return "a parameter"
    return "static data (add_data's, or a stream's descriptor)"


def _everyone(owner: str | None) -> bool:
    return True


#: The keys of an owners map (``Tree.carried``) that are not names.
_OWNER = ""
_DICTS = "$"
_UNSET = object()


def _export(
    branch: _Group, in_force: InForce, gen: int, reuse: _Reuse | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(metadata, params, owners) of ``branch``; the metadata holds the
    parameters of experiment ``gen`` and those whose owner ``in_force`` accepts.

    Groups left empty are dropped; groups that were empty to begin with (a
    node with no parameters yet) are kept. Where a group's metadata and
    parameters are equal, the same dict is returned for both. Written for
    speed: a save exports every leaf of trees of up to millions.
    """
    if _params_only(branch):
        if reuse is None:
            return _export_params(branch, in_force, gen)
        return _export_reusing(branch, in_force, gen, reuse)
    metadata: dict[str, Any] = {}
    params: dict[str, Any] = {}
    owners: dict[str, Any] = {}
    same = True
    owner: Any = _UNSET  # the owner of all its parameters, until they differ
    dicts: list[str] = []
    for name, child in branch.items():
        if type(child) is _Leaf:
            value = child.value
            if child.kind is _PARAM:
                params[name] = value
                if owner is _UNSET:
                    owner = child.owner
                elif type(owner) is not dict and owner != child.owner:
                    owner = _owners_by_name(branch)
                if type(value) is dict:
                    dicts.append(name)
                if child.gen == gen or in_force(child.owner):
                    metadata[name] = value
                else:
                    same = False
            else:
                metadata[name] = value
                same = False
        elif child:
            sub_metadata, sub_params, sub_owners = _export(child, in_force, gen, reuse)
            if sub_metadata:
                metadata[name] = sub_metadata
            if sub_params:
                params[name] = sub_params
                owners[name] = sub_owners
            if sub_metadata is not sub_params:
                same = False
        else:
            metadata[name] = params[name] = {}
    if owner is not _UNSET:
        owners[_OWNER] = owner
    if dicts:
        owners[_DICTS] = dicts
    return (params if same else metadata), params, owners


def _split_fresh(branch: dict[str, Any], gen: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of ``branch`` set in experiment ``gen``, and the others."""
    fresh: dict[str, Any] = {}
    carried: dict[str, Any] = {}
    for name, child in branch.items():
        if type(child) is _Leaf:
            if child.kind is _PARAM:
                (fresh if child.gen == gen else carried)[name] = child.value
        elif child:
            sub_fresh, sub_carried = _split_fresh(child, gen)
            if sub_fresh:
                fresh[name] = sub_fresh
            if sub_carried:
                carried[name] = sub_carried
    return fresh, carried


def _params_only(branch: dict[str, Any]) -> bool:
    """Whether a group holds parameters and nothing else (as most do), in one
    pass in C: the kind of a leaf is its first item, and a group has no item
    0 (its keys are names)."""
    try:
        return 0 < len(branch) == operator.countOf(map(_kind, branch.values()), _PARAM)
    except KeyError:  # a group in it
        return False


def _parameter_runs(root: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    pending = [(root, "")]
    while pending:
        branch, prefix = pending.pop()
        children = branch.values()
        if _params_only(branch):
            owners = set(map(_owner, children))
            if len(owners) == 1:  # the commonest: no loop in Python
                yield prefix, dict(zip(branch, map(_value, children), strict=True)), owners.pop()
                continue
        groups = []
        run: dict[str, Any] = {}
        owner: Any = _UNSET
        for name, child in branch.items():
            if type(child) is _Leaf:
                if child.kind is _PARAM:
                    if child.owner != owner and run:
                        yield prefix, run, owner
                        run = {}
                    owner = child.owner
                    run[name] = child.value
            elif child:
                groups.append((child, f"{prefix}{name}/"))
        if run:
            yield prefix, run, owner
        pending.extend(reversed(groups))


_kind = operator.itemgetter(0)
_value = operator.itemgetter(1)
_owner = operator.itemgetter(2)
_gen = operator.itemgetter(3)


def _export_params(
    branch: dict[str, Any], in_force: InForce, gen: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``_export`` of a group that holds parameters only, as most do, with
    no loop in Python: about three times faster."""
    return _with_metadata(branch, in_force, gen, *_params_of(branch))


def _params_of(branch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], set[Any]]:
    """(params, owners, the set of owners) of a group of parameters only."""
    children = branch.values()
    params = dict(zip(branch, map(_value, children), strict=True))
    owner_set = set(map(_owner, children))
    owners: dict[str, Any] = {
        _OWNER: next(iter(owner_set)) if len(owner_set) == 1 else _owners_by_name(branch)
    }
    if dict in set(map(type, params.values())):
        owners[_DICTS] = [name for name, value in params.items() if type(value) is dict]
    return params, owners, owner_set


def _with_metadata(
    branch: dict[str, Any],
    in_force: InForce,
    gen: int,
    params: dict[str, Any],
    owners: dict[str, Any],
    owner_set: set[Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A group of parameters only's export: its metadata decided, for
    experiment ``gen`` and the sessions ``in_force`` accepts."""
    if all(map(in_force, owner_set)) or set(map(_gen, branch.values())) == {gen}:
        return params, params, owners
    metadata = {
        name: child.value
        for name, child in branch.items()
        if child.gen == gen or in_force(child.owner)
    }
    return metadata, params, owners


def _export_reusing(
    branch: _Group, in_force: InForce, gen: int, reuse: _Reuse
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``_export_params``, taken from ``reuse.last`` where it holds the group
    (its params and owners as they were; its metadata, which depends on the
    experiment and on who is in force, decided again), and kept in
    ``reuse.kept`` if no tree can change the group any more."""
    if branch.epoch == reuse.epoch:  # this tree's own: it may change in place
        return _export_params(branch, in_force, gen)
    key = id(branch)
    entry = reuse.last.get(key)
    if entry is None:
        entry = (branch, *_params_of(branch))
    reuse.kept[key] = entry
    return _with_metadata(branch, in_force, gen, *entry[1:])


def _owners_by_name(branch: dict[str, Any]) -> dict[str, Any]:
    """The owner of each parameter of a group whose parameters' owners differ."""
    return {
        name: child.owner
        for name, child in branch.items()
        if type(child) is _Leaf and child.kind is _PARAM
    }


def _build(values: Mapping[str, Any], owners: Mapping[str, Any], epoch: int) -> _Group:
    group = _Group(0, epoch)
    owner = owners.get(_OWNER)
    by_name = owner if type(owner) is dict else None
    dicts = owners.get(_DICTS, ())
    if by_name is None and not dicts and dict not in set(map(type, values.values())):
        # Parameters only, of one owner, as most groups are: built in C.
        made = zip(repeat(_PARAM), values.values(), repeat(owner), repeat(0), strict=False)
        group.update(zip(values, map(_Leaf, made), strict=True))
        return group
    for name, value in values.items():
        if type(value) is dict and name not in dicts:
            group[name] = _build(value, owners.get(name, _NO_OWNERS), epoch)
        else:
            who = owner if by_name is None else by_name.get(name)
            group[name] = _Leaf((_PARAM, value, who, 0))
    return group


_NO_OWNERS: Mapping[str, Any] = {}


def _build_pairs(carried: Mapping[str, Any], epoch: int) -> _Group:
    group = _Group(0, epoch)
    for name, child in carried.items():
        if type(child) is dict:
            group[name] = _build_pairs(child, epoch)
        else:
            value, owner = child
            group[name] = _Leaf((_PARAM, value, owner, 0))
    return group


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

    The result shares groups with both: a group of ``new`` that ``old`` lacks,
    or holds equal (or the same: a save's export reuses the last save's
    dicts of groups unchanged since, ``daemon/reuse.py``), is taken as it is
    (so that a save's JSON writer sees the same dict in the metadata and the
    last config and encodes it once), and a
    group of ``old`` that ``new`` leaves alone stays. Neither is changed: no
    tree's groups or values are changed in place once exported.
    """
    merged = dict(old)
    for name, value in new.items():
        before = merged.get(name)
        if isinstance(value, dict) and isinstance(before, dict):
            if not value:
                continue
            same = before is value or _equal(before, value)
            merged[name] = value if same else merge_config(before, value)
        else:
            merged[name] = value
    return merged


def _equal(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two groups are equal, compared in C: then their merge is ``new``.

    Arrays make the comparison ambiguous; such groups are merged key by key.
    """
    try:
        return bool(old == new)
    except (ValueError, TypeError):
        return False


def with_value(tree: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with ``value`` at ``path``: the maps along the path
    are copied, the rest shared (an exported tree's maps may be shared by
    the last config)."""
    copied = dict(tree)
    if len(path) == 1:
        copied[path[0]] = value
    else:
        below = tree.get(path[0])
        copied[path[0]] = with_value(below if isinstance(below, dict) else {}, path[1:], value)
    return copied


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
