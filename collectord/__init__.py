"""collectord: a collector daemon for the metadata and data of multi-process rigs.

Acquisition processes publish parameters and data with ``Client``; the daemon
(``collectord run``) keeps them in one tree and saves it, atomically, when an
experiment stops. See README.md for the whole picture. Every exception is
drawn, as a tree, in ``collectord.errors``.
"""

__version__ = "0.1.0"

from . import errors
from .changes import Change, load_changes
from .client import Client, State
from .clocks import clock_samples, to_daemon_time
from .errors import *  # noqa: F403 - the exception tree, exactly errors.__all__
from .jsonio import load_json
from .stream import Stream

__all__ = [
    "Change",
    "Client",
    "State",
    "Stream",
    "__version__",
    "clock_samples",
    "load_changes",
    "load_json",
    "to_daemon_time",
    *errors.__all__,
]
