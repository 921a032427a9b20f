"""Every exception collectord raises, in one tree.

::

    CollectordError                  anything collectord raises on purpose
    ├── ConfigError                  a configuration file or flag is wrong
    ├── OutputBusyError              another collectord process uses the output folder
    ├── StorageError (OSError)       the daemon cannot start on its output folder
    │                                (a full disk, a folder it may not write)
    ├── InvalidPathError (ValueError)       a tree path or name is not allowed
    ├── UnsupportedValueError (TypeError)   a value cannot be sent faithfully
    ├── MessageTooLargeError (ValueError)   a message exceeds the daemon's size limit
    ├── ClientClosedError            a call on a client that is closing or closed,
    │                                or whose I/O thread stopped
    ├── TransportError               ZeroMQ failed (wraps zmq.ZMQError)
    ├── DaemonTimeout (TimeoutError) the daemon did not answer in time
    ├── UnreadableRecord (ValueError)       a journal record this version cannot replay
    └── RequestError                 the daemon answered with an error reply
                                     (``.code`` is an ErrorCode from protocol.py)

Lower-level errors are mapped once, where they happen: ``zmq.ZMQError`` becomes
``TransportError`` in the client's I/O layer and the CLI, msgpack's ``TypeError``
becomes ``UnsupportedValueError`` in ``codec``. Callers catch these, not the
libraries' own.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "CollectordError",
    "ConfigError",
    "DaemonTimeout",
    "InvalidPathError",
    "MessageTooLargeError",
    "OutputBusyError",
    "RequestError",
    "StorageError",
    "TransportError",
    "UnreadableRecord",
    "UnsupportedValueError",
]


class CollectordError(Exception):
    """Base of every exception collectord raises on purpose."""


class ConfigError(CollectordError):
    """A configuration file or command-line flag is wrong."""


class OutputBusyError(CollectordError):
    """Another collectord process holds the output folder's lock."""


class StorageError(CollectordError, OSError):
    """The output folder cannot be read or written as a start needs it (a full
    disk, no permission): the daemon does not start. An OSError too, for
    callers that catch the system's own."""


class InvalidPathError(CollectordError, ValueError):
    """A tree path or parameter name is not allowed (see ``paths.py``)."""


class UnsupportedValueError(CollectordError, TypeError):
    """A value cannot be sent faithfully; raised at the call that tried."""


class MessageTooLargeError(CollectordError, ValueError):
    """A message is bigger than the daemon accepts; raised at the call that tried."""


class ClientClosedError(CollectordError):
    """The client is closing or closed, or its I/O thread stopped: it takes no
    more calls, since nothing would send them."""


class TransportError(CollectordError):
    """ZeroMQ failed underneath (bad endpoint, address in use, ...)."""


class DaemonTimeout(CollectordError, TimeoutError):
    """The daemon did not answer within the timeout."""


class UnreadableRecord(CollectordError, ValueError):
    """A journal record of a type this version does not know, or without a field
    its type needs, or with one of the wrong type (``journal.check`` says which)."""


class RequestError(CollectordError):
    """The daemon refused a request; ``code`` says why in a stable form."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
