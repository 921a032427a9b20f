"""Where in a metadata tree the NWB file's descriptive fields are found.

An NWB file names its experimenter, lab, subject and so on in fixed fields;
a collectord tree holds them wherever the rig's processes put them. stytra
puts the animal under ``general/animal`` and the experimenter under
``general/basic``, and that is the default table, ``DEFAULT_MAP``. A lab whose
processes use other paths gives its own with ``--map FILE`` (JSON or TOML):
it names only the fields it changes, each with a path or a list of paths (the
first present in the tree wins), or an empty list to leave a field out.

::

    {"experimenter": "session/operator", "subject.species": ["fish/species", "species"]}

This module needs nothing but the standard library: it turns a tree into
plain values, and ``collectord.nwb.build`` puts them into pynwb's objects.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import jsonio
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: NWB field -> the tree paths it is taken from, the first present winning.
#: ``subject.*`` are the fields of ``pynwb.file.Subject``; ``stimulus_log`` is
#: the list of stimuli (stytra's protocol log) and ``protocol_start`` the
#: moment its ``t_start`` and ``t_stop`` count from.
DEFAULT_MAP: dict[str, tuple[str, ...]] = {
    "session_description": ("general/basic/session_description", "general/description"),
    "experiment_description": ("general/basic/experiment_description",),
    "experimenter": ("general/basic/experimenter_name", "general/experimenter"),
    "lab": ("general/basic/lab", "general/lab"),
    "institution": ("general/basic/institution", "general/institution"),
    "session_id": ("general/session_id", "general/basic/session_id"),
    "subject.subject_id": ("general/fish_id", "general/animal/id"),
    "subject.species": ("general/animal/species",),
    "subject.genotype": ("general/animal/genotype",),
    "subject.strain": ("general/animal/strain",),
    "subject.age": ("general/animal/age",),
    "subject.sex": ("general/animal/sex",),
    "subject.description": ("general/animal/comments",),
    "stimulus_log": ("stimulus/log",),
    "protocol_start": ("general/t_protocol_start",),
}

#: NWB's codes for a subject's sex, and the spellings taken for each.
SEXES = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "u": "U",
    "unknown": "U",
}


def load_map(path: str | os.PathLike[str] | None) -> dict[str, tuple[str, ...]]:
    """``DEFAULT_MAP`` with the entries of the file at ``path`` (JSON or TOML) over it."""
    table = dict(DEFAULT_MAP)
    if path is None:
        return table
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        given = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"map file {file}: {exc}") from None
    if not isinstance(given, dict):
        raise ConfigError(f"map file {file}: must hold an object of field: path(s)")
    for field, paths in given.items():
        if field not in DEFAULT_MAP:
            raise ConfigError(
                f"map file {file}: unknown field {field!r} (known: {', '.join(DEFAULT_MAP)})"
            )
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(
                f"map file {file}: {field!r} must be a path or a list of paths, not {paths!r}"
            )
        table[field] = tuple(paths)
    return table


def at(tree: Mapping[str, Any], path: str) -> Any:
    """The value at slash-separated ``path`` in ``tree``, or None."""
    node: Any = tree
    for name in path.strip("/").split("/"):
        if not isinstance(node, Mapping) or name not in node:
            return None
        node = node[name]
    return node


def lookup(tree: Mapping[str, Any], table: Mapping[str, tuple[str, ...]], field: str) -> Any:
    """The value of NWB ``field``: at the first of its paths present in ``tree``, or None."""
    for path in table.get(field, ()):
        value = at(tree, path)
        if value is not None:
            return value
    return None


def text(value: Any) -> str | None:
    """A field NWB wants as text: None and empty strings are absent."""
    if value is None or value == "":
        return None
    # Tagged as in the metadata: bytes (and NaN) are not JSON.
    return value if isinstance(value, str) else json.dumps(jsonio.to_json(value), sort_keys=True)


def age(value: Any) -> str | None:
    """An age as an ISO 8601 duration: stytra stores it as a number of days.

    A text already in ISO 8601 (``P7D``, ``P2W``) is kept as it is; a text
    holding a number is days too.
    """
    if value is None or isinstance(value, bool) or value == "":
        return None
    if isinstance(value, str):
        if value.upper().startswith("P"):
            return value.upper()
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        days = int(value) if float(value).is_integer() else value
        return f"P{days}D"
    return str(value)


def sex(value: Any) -> str:
    """NWB's code (M, F, O, U); U (unknown) when the tree does not say."""
    if not isinstance(value, str) or not value.strip():
        return "U"
    return SEXES.get(value.strip().lower(), value)


def experimenters(value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return [str(name) for name in value if name not in (None, "")] or None
    return [str(value)]


def moment(value: Any) -> dt.datetime | None:
    """A datetime from the tree (ISO 8601 text), time-zone aware.

    stytra stores ``datetime.now()``, local time without an offset: it is
    read as the local time of the machine exporting, which is the rig's when
    the export runs where the data was taken.
    """
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.astimezone()
