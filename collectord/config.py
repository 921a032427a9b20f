"""Configuration: built-in defaults, a TOML file over them, flags over that.

The defaults below are the ones documented key by key in
``config/collectord.toml``; ``tests/test_config.py`` keeps the two identical.
A file names only what it changes; an unknown section or key, or a value of
the wrong type, is a ``ConfigError`` naming it (a typo must not silently fall
back to a default and send data elsewhere).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidPathError
from .paths import check_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Environment variable naming a configuration file, used when --config is not given.
CONFIG_ENV = "COLLECTORD_CONFIG"

#: The default ports. Not 5555 and 5556: the ZeroMQ guide's examples use 5555
#: to 5560, and so do the tools written from them, stytra's ZeroMQ trigger
#: among them (it binds 5555 on every interface, and a daemon there made
#: ``Stytra(scope_triggering="zmq")`` fail with "Address already in use").
#: 13550 and 13551 are unassigned in the IANA registry, unknown to the usual
#: lists of unofficial ports, and below every system's ephemeral range (Linux
#: takes outgoing ports from 32768, Windows and macOS from 49152), so no
#: outgoing connection can hold them by chance.
DEFAULT_DATA_PORT = 13550
DEFAULT_CONTROL_PORT = 13551


@dataclasses.dataclass(frozen=True)
class Config:
    data: str = f"tcp://127.0.0.1:{DEFAULT_DATA_PORT}"
    control: str = f"tcp://127.0.0.1:{DEFAULT_CONTROL_PORT}"
    output: str = "~/collectord-data"
    last_config: str = ""
    max_message_bytes: int = 64 * 1024 * 1024
    receive_queue: int = 1000
    barrier_timeout: float = 3.0
    journal_interval: float = 0.1
    stream_format: str = "npy"
    server_key: str = ""
    authorized_clients: str = ""
    client_key: str = ""
    server_public_key: str = ""
    start_daemon: bool = True
    #: Names of the processes (``Client(name)``) an experiment needs; see
    #: ``collectord/required.py``. A tuple: the configuration is frozen.
    required: tuple[str, ...] = ()

    @property
    def output_dir(self) -> Path:
        return Path(self.output).expanduser()

    @property
    def last_config_file(self) -> Path:
        if self.last_config:
            return Path(self.last_config).expanduser()
        return self.output_dir / "last_config.json"

    def replace(self, **changes: Any) -> Config:
        """A copy with the non-None ``changes`` applied (for command-line flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


#: The stream file formats (see formats.py); kept here so that reading a
#: configuration does not import numpy.
STREAM_FORMATS = ("npy", "csv", "hdf5", "parquet", "feather")
#: The smallest ``max_message_bytes``: below it a client, which keeps 1024
#: bytes of each message for its header, could send next to nothing.
MIN_MESSAGE_BYTES = 4096
#: The largest values ZeroMQ's options take (ZMQ_MAXMSGSIZE is an int64,
#: ZMQ_RCVHWM an int); beyond them the daemon failed at bind with a traceback.
MAX_MESSAGE_BYTES = 2**63 - 1
MAX_RECEIVE_QUEUE = 2**31 - 1

#: Where each key lives in the TOML file.
SECTIONS: dict[str, tuple[str, ...]] = {
    "endpoints": ("data", "control"),
    "storage": ("output", "last_config"),
    "limits": ("max_message_bytes", "receive_queue"),
    "stop": ("barrier_timeout",),
    "journal": ("journal_interval",),
    "streams": ("stream_format",),
    "security": ("server_key", "authorized_clients", "client_key", "server_public_key"),
    "stytra": ("start_daemon",),
    "sources": ("required",),
}

_TYPES = {f.name: f.type for f in dataclasses.fields(Config)}


def _check(key: str, value: Any) -> Any:
    expected = str(_TYPES[key])
    if expected == "tuple[str, ...]":
        return source_names(key, value)
    if expected == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = {
        "str": isinstance(value, str),  # may be empty: "not set"
        "int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
        "float": isinstance(value, float) and value > 0,
        "bool": isinstance(value, bool),
    }[expected]
    if not ok:
        kinds = {"str": "text", "bool": "true or false"}
        kind = kinds.get(expected, f"positive {expected}")
        raise ConfigError(f"{key} must be {kind}, not {value!r}")
    return value


def source_names(key: str, value: Any) -> tuple[str, ...]:
    """``value`` as a tuple of client names, or a ``ConfigError`` naming ``key``.

    A single string is refused rather than taken for a list of its letters
    (``required = "camera"`` is a mistake for ``["camera"]``); each name must
    be one a client may give (``paths.check_name``), and none may repeat.
    """
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f'{key} must be a list of client names, e.g. ["camera", "tracking"], not {value!r}'
        )
    names: list[str] = []
    for name in value:
        try:
            check_name(name, where=f"a name in {key}")
        except InvalidPathError as exc:
            raise ConfigError(str(exc)) from None
        if name in names:
            raise ConfigError(f"{key} names {name!r} twice")
        names.append(name)
    return tuple(names)


def from_mapping(document: dict[str, Any], origin: str = "configuration") -> Config:
    """Build a Config from a parsed TOML document, refusing unknown keys."""
    values: dict[str, Any] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in table.items():
            if key not in SECTIONS[section]:
                raise ConfigError(f"{origin}: unknown key {key!r} in [{section}]")
            values[key] = _check(key, value)
    config = Config(**values)
    if config.max_message_bytes < MIN_MESSAGE_BYTES:
        raise ConfigError(
            f"{origin}: max_message_bytes must be at least {MIN_MESSAGE_BYTES} (a message's "
            f"header takes up to 1024 bytes of it), not {config.max_message_bytes}"
        )
    for key, largest in (
        ("max_message_bytes", MAX_MESSAGE_BYTES),
        ("receive_queue", MAX_RECEIVE_QUEUE),
    ):
        if getattr(config, key) > largest:
            raise ConfigError(
                f"{origin}: {key} must be at most {largest}, not {getattr(config, key)}"
            )
    if config.stream_format not in STREAM_FORMATS:
        raise ConfigError(
            f"{origin}: stream_format must be one of {', '.join(STREAM_FORMATS)}, "
            f"not {config.stream_format!r}"
        )
    return config


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path``, or $COLLECTORD_CONFIG, or return the built-in defaults."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        return Config()
    try:
        with open(chosen, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {chosen}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {chosen} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8; a file saved in another encoding
        raise ConfigError(f"configuration {chosen} is not UTF-8 text: {exc}") from exc
    return from_mapping(document, origin=str(chosen))
