"""collectord: a collector daemon for the metadata and data of multi-process rigs.

Acquisition processes publish parameters and data with ``Client``; the daemon
(``collectord run``) keeps them in one tree and saves it, atomically, when an
experiment stops. See README.md for the whole picture.
"""

__version__ = "0.1.0"

from .client import Client, State
from .errors import (
    ClientClosedError,
    CollectordError,
    ConfigError,
    DaemonTimeout,
    InvalidPathError,
    MessageTooLargeError,
    OutputBusyError,
    RequestError,
    TransportError,
    UnsupportedValueError,
)
from .jsonio import load_json
from .stream import Stream

__all__ = [
    "Client",
    "ClientClosedError",
    "CollectordError",
    "ConfigError",
    "DaemonTimeout",
    "InvalidPathError",
    "MessageTooLargeError",
    "OutputBusyError",
    "RequestError",
    "State",
    "Stream",
    "TransportError",
    "UnsupportedValueError",
    "__version__",
    "load_json",
]
