"""Tree paths: what a name in the tree may be.

A path is a slash-separated string (``"camera/settings"``), the convention of
lightparam's ``ParameterTree`` names. Names end up as JSON keys today and as
file names tomorrow (stream files are named after their path), so a name must
be safe as a single file-name component on every platform we run on: no
separators, no NUL or other control characters, not ``.`` or ``..``. Anything
else, including ``+`` as in stytra's ``tracking+tail_tracking``, is accepted.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable

from .errors import InvalidPathError

#: The one top-level key collectord writes its own information under.
RESERVED_KEY = "collectord"

MAX_NAME_BYTES = 200
MAX_DEPTH = 32

Path = tuple[str, ...]


def check_name(name: object, where: str | Callable[[], str] = "name") -> str:
    """Return ``name`` if it may be one component of a tree path, else raise.

    ``where`` names the name in the error; a callable is only called then.
    """
    if isinstance(name, str) and name in _good_names:
        return name
    _check_name(name, where() if callable(where) else where)
    if len(_good_names) < 65536:
        _good_names.add(name)  # type: ignore[arg-type]
    return name  # type: ignore[return-value]


#: Names already found good: parameter names repeat in every message.
_good_names: set[str] = set()


def is_known_name(name: object) -> bool:
    """Whether ``name`` has already passed ``check_name`` (a cheap first look)."""
    return name in _good_names


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str):
        raise InvalidPathError(f"{where} must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidPathError(f"{where} is empty")
    if name in (".", ".."):
        raise InvalidPathError(f"{where} {name!r} is not allowed")
    if "/" in name or "\\" in name:
        raise InvalidPathError(f"{where} {name!r} contains a path separator")
    if has_control_character(name):
        raise InvalidPathError(f"{where} {name!r} contains a control or NUL character")
    if name.startswith("$"):
        raise InvalidPathError(
            f"{where} {name!r} starts with '$', kept for collectord's JSON tags"
        )
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPathError(
            f"{where} {name!r} is not valid Unicode (a lone surrogate)"
        ) from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidPathError(f"{where} is longer than {MAX_NAME_BYTES} bytes")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (Unicode category Cc: NUL,
    the C0 controls, DEL and the C1 controls), which no name may hold."""
    # isprintable() is false for every control character (and some others, which
    # the slower check then lets through): the common case costs one C call.
    return not text.isprintable() and any(unicodedata.category(c) == "Cc" for c in text)


#: Characters Windows allows in no file or folder name.
_NOT_IN_FILE_NAMES = frozenset('<>:"|?*')
#: Names Windows keeps for devices, whatever their case or extension
#: (``con.npy`` is the console): ``CON``, ``NUL``, ``COM1``, ``LPT¹``...
_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"]
)


def check_file_name(name: object, where: str = "name") -> str:
    """``check_name``, and the rules of a name that becomes a file or folder
    name (an experiment's name, each name of a stream's path): none that
    Windows, where most rigs run, cannot create. Data moves between systems,
    and a stream whose file cannot be created has its rows refused."""
    checked = check_name(name, where)
    if _NOT_IN_FILE_NAMES.intersection(checked):
        raise InvalidPathError(
            f"{where} {checked!r} holds one of {' '.join(sorted(_NOT_IN_FILE_NAMES))}, "
            "which Windows allows in no file name"
        )
    if checked.endswith((".", " ")):
        raise InvalidPathError(
            f"{where} {checked!r} ends with a dot or a space, which Windows drops from file names"
        )
    if checked.split(".")[0].rstrip(" ").upper() in _DEVICE_NAMES:
        raise InvalidPathError(f"{where} {checked!r} is a device name on Windows")
    return checked


def parse_path(path: object) -> Path:
    """Split and check a slash-separated path, e.g. ``"camera/settings"``.

    Results are cached: a process publishes to the same few paths all the time.

    Leading, trailing and doubled slashes are errors, not silently fixed: an
    absolute path (``"/etc"``) is most likely a mistake worth hearing about.
    """
    if not isinstance(path, str):
        raise InvalidPathError(f"path must be a string, not {type(path).__name__}")
    return _parse_path(path)


@functools.lru_cache(maxsize=4096)
def _parse_path(path: str) -> Path:
    if not path:
        raise InvalidPathError("path is empty")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH:
        raise InvalidPathError(f"path {path!r} is deeper than {MAX_DEPTH} levels")
    for part in parts:
        check_name(part, where=f"path {path!r}: component")
    if parts[0] == RESERVED_KEY:
        raise InvalidPathError(f"path {path!r}: top-level key {RESERVED_KEY!r} is reserved")
    return parts


def join_path(parts: Path) -> str:
    return "/".join(parts)
