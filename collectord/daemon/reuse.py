"""What one save made of its tree, for the next save to take again.

Between two experiments nearly every group of parameters is unchanged, yet
each save exported, JSON-encoded and msgpack-encoded every group again: for a
tree of a million parameters carried into the next experiment, about 1.6 s
of CPU against the 0.9 s that ``json.dumps`` and a write of the whole tree
take. A group that no tree can change any more (``tree.Exports``) stands
for its content, so what a save made of it holds at the next save as long
as the group is still in the tree: its exported dicts (``Tree.export``),
their JSON text (``jsonio.dumps``' memo) and their msgpack bytes
(``codec.pack_reusing``, for the BEGIN record).

Only what the last save made is kept: each save starts from the last one's
and keeps only what it used or made itself, so a group gone from the tree is
let go at the next save. For a million parameters in groups of a hundred
that is about 38 MB (the groups' JSON text and msgpack bytes, and 10,000
small entries); their dicts are the ones the last config holds anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import codec, jsonio
from ..tree import Exported, Exports, InForce, Tree


@dataclasses.dataclass
class LastSave:
    """What the last save that got as far as its last config made of its tree."""

    exports: Exports = dataclasses.field(default_factory=dict)
    texts: jsonio.Memo = dataclasses.field(default_factory=dict)
    packed: codec.Pieces = dataclasses.field(default_factory=dict)

    def begin(self) -> Reuse:
        """What one save takes from this and keeps for the next."""
        return Reuse(self, memo=dict(self.texts))


@dataclasses.dataclass
class Reuse:
    """One save's use of the last save's work (``LastSave``)."""

    last: LastSave
    #: ``jsonio.dumps``' memo: the last save's texts, and this save's.
    memo: jsonio.Memo
    exports: Exports = dataclasses.field(default_factory=dict)
    packed: codec.Pieces = dataclasses.field(default_factory=dict)

    def export(self, tree: Tree, in_force: InForce) -> Exported:
        return tree.export(in_force, self.last.exports, self.exports)

    def pack(self, value: Any) -> bytes:
        """``codec.pack(value)`` of what ``export`` made, the exported groups'
        bytes taken from the last save where it packed them."""
        self.packed = {}
        return codec.pack_reusing(value, self.last.packed, self._kept(), self.packed)

    def _kept(self) -> set[int]:
        """The ids of the dicts of this save's exports."""
        return {id(part) for entry in self.exports.values() for part in entry[1:3]}

    def keep(self) -> None:
        """This save has written all it encodes: what it made replaces the last save's."""
        kept = self._kept()
        self.last.exports = self.exports
        self.last.texts = {key: text for key, text in self.memo.items() if key in kept}
        self.last.packed = self.packed
        self.memo = {}
