"""The wire protocol, defined once for the daemon, the client and the docs.

``docs/protocol.md`` describes the same messages for people writing clients in
other languages; ``tests/test_protocol_doc.py`` fails if the two drift apart.

Data socket (client PUB/XPUB -> daemon SUB), one ZeroMQ message per update::

    frame 0: header  msgpack map  HEADER
    frame 1: body    msgpack map  BODIES[kind]

Control socket (client DEALER or REQ -> daemon ROUTER)::

    request:  b"" , msgpack map  REQUEST + REQUESTS[cmd]
    reply:    b"" , msgpack map  {"v", "id", "ok": true, "result": RESULTS[cmd]}
                                 {"v", "id", "ok": false, "error": {"code", "message"}}
    notice:   b"" , msgpack map  NOTICE + NOTICES[notice]   (daemon -> DEALER only)

What the daemon writes has schemas too, listing every field it writes:
``RESULTS`` (a reply's ``result``), ``SOURCE`` (an entry of ``sources`` in the
status reply and in the saved metadata), ``ACCOUNT`` (the saved metadata's
``collectord`` section) and ``STREAM_DESCRIPTOR`` (what a stream leaves at its
path in the saved metadata). A field of those that is not ``required`` is
absent when it does not apply.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

PROTOCOL_VERSION = 1


class Kind(str, enum.Enum):
    """What a data message does to the tree."""

    PARAMS = "params"  # merge values into a group; carried over to the next experiment
    DATA = "data"  # set one value at a path; this experiment only
    STREAM = "stream"  # declare a table of rows at a path; carried over
    BLOCK = "block"  # rows of a declared stream, raw in a third frame
    BATCH = "batch"  # several consecutive messages (not blocks) in one, "kinds" says which


class Command(str, enum.Enum):
    """Requests a client may send on the control socket."""

    HELLO = "hello"
    BYE = "bye"
    DROPPED = "dropped"
    SYNC = "sync"
    SENT = "sent"
    STOP = "stop"
    STATUS = "status"
    RESTORE = "restore"
    SAVE_CONFIG = "save_config"
    NAME = "name"
    CLOCK = "clock"
    OFFSET = "offset"


class Notice(str, enum.Enum):
    """Messages the daemon sends, unasked, to a client's DEALER socket."""

    BARRIER = "barrier"  # a stop is pending: report your last sequence number
    RESEND = "resend"  # messages went missing: send again from a sequence number


class ErrorCode(str, enum.Enum):
    """The ``error.code`` of a refused request; stable, for scripts to match on."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_PATH = "invalid_path"
    NOT_A_GROUP = "not_a_group"
    #: A stop was taken, but its save failed: the experiment ended, and the
    #: daemon tries the save again. A new stop would end the next one too.
    SAVE_FAILED = "save_failed"
    #: A stop could not begin (not journaled): nothing ended; stop again.
    STOP_FAILED = "stop_failed"
    #: A stop sent again whose experiment was saved, but whose folder is
    #: not where it was put: unlike ``save_failed``, not a reason to stop again.
    SAVED_NOT_FOUND = "saved_not_found"


class CommandError(Exception):
    """The daemon refuses a request; becomes an error reply carrying ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Field:
    """One field of a message: its name, accepted type(s) and whether required."""

    __slots__ = ("name", "required", "types")

    def __init__(self, name: str, types: tuple[type, ...], required: bool = True) -> None:
        self.name = name
        self.types = types
        self.required = required

    @property
    def type_name(self) -> str:
        return " or ".join(_TYPE_NAMES[t] for t in self.types)


_NIL = type(None)

_TYPE_NAMES = {
    int: "int",
    float: "float",
    str: "str",
    dict: "map",
    list: "array",
    object: "any",
    bool: "bool",
    _NIL: "nil",
}

Schema = tuple[Field, ...]

HEADER: Schema = (
    Field("v", (int,)),
    Field("kind", (str,)),
    Field("source", (str,)),
    Field("session", (str,)),
    Field("seq", (int,)),
    Field("resends", (bool,), required=False),
    Field("kinds", (list,), required=False),
)

BODIES: dict[Kind, Schema] = {
    Kind.PARAMS: (Field("path", (str,)), Field("values", (dict,))),
    Kind.DATA: (Field("path", (str,)), Field("value", (object,))),
    Kind.STREAM: (
        Field("path", (str,)),
        Field("columns", (list,)),
        Field("dtype", (str,)),
        Field("units", (list,), required=False),
        Field("time_column", (str,), required=False),
    ),
    Kind.BLOCK: (Field("path", (str,)), Field("rows", (int,))),
}

#: Frames of a data message of each kind (header, body, and for blocks the rows).
#: A batch has two: the header, and its messages' bodies back to back.
FRAMES: dict[Kind, int] = {Kind.PARAMS: 2, Kind.DATA: 2, Kind.STREAM: 2, Kind.BLOCK: 3}

#: Kinds a batch may hold: those whose message is a header and one body.
BATCHABLE = frozenset({Kind.PARAMS, Kind.DATA, Kind.STREAM})
#: Most messages in one batch (each is checked, counted and maybe logged).
MAX_BATCH = 4096

REQUEST: Schema = (
    Field("v", (int,)),
    Field("cmd", (str,)),
    Field("id", (int,)),
)

_SESSION = Field("session", (str,))

REQUESTS: dict[Command, Schema] = {
    Command.HELLO: (
        Field("name", (str,)),
        _SESSION,
        Field("host", (str,)),
        Field("pid", (int,)),
        Field("program", (str,)),
        Field("versions", (dict,)),
        Field("confirmed", (int,), required=False),
    ),
    Command.BYE: (_SESSION,),
    Command.DROPPED: (_SESSION, Field("upto", (int,))),
    Command.SYNC: (_SESSION, Field("seq", (int,))),
    Command.SENT: (_SESSION, Field("seq", (int,)), Field("barrier", (int,))),
    Command.STOP: (
        Field("reason", (str,)),
        Field("session", (str,), required=False),
        Field("seq", (int,), required=False),
        Field("stop_id", (str,), required=False),
    ),
    Command.STATUS: (),
    Command.RESTORE: (Field("node", (str,)), Field("session", (str,), required=False)),
    Command.SAVE_CONFIG: (Field("session", (str,), required=False),),
    Command.NAME: (Field("name", (str,)), Field("session", (str,), required=False)),
    Command.CLOCK: (Field("t1", (float,)), Field("session", (str,), required=False)),
    Command.OFFSET: (
        _SESSION,
        Field("at", (float,)),
        Field("offset", (float,)),
        Field("rtt", (float,)),
    ),
}

NOTICE: Schema = (Field("v", (int,)), Field("notice", (str,)))

NOTICES: dict[Notice, Schema] = {
    Notice.BARRIER: (Field("barrier", (int,)),),
    Notice.RESEND: (_SESSION, Field("from", (int,))),
}

_RECEIVED = Field("received", (int,))

#: Each entry of ``sources``: in the status reply (counters since the daemon
#: started) and in the saved metadata's ``collectord`` section (this experiment's).
SOURCE: Schema = (
    Field("name", (str,)),
    Field("session", (str,)),
    Field("host", (str,)),
    Field("pid", (int, _NIL)),
    Field("program", (str,)),
    Field("versions", (dict,)),
    Field("connected", (bool,)),
    Field("last_seq", (int,)),
    Field("messages", (dict,)),
    Field("gaps", (list,)),
    Field("recent_rejections", (list,)),
    Field("last_heard", (str, _NIL)),
    Field("experiment_messages", (dict,), required=False),
    Field("clock", (dict,), required=False),
)

#: The ``result`` of each command's reply.
RESULTS: dict[Command, Schema] = {
    Command.HELLO: (
        Field("daemon", (str,)),
        Field("protocol", (int,)),
        Field("run_id", (str,)),
        _RECEIVED,
        Field("max_message_bytes", (int,)),
        Field("stop_ids", (bool,)),
    ),
    Command.BYE: (_RECEIVED,),
    Command.DROPPED: (_RECEIVED,),
    Command.SYNC: (_RECEIVED,),
    Command.SENT: (),
    Command.STOP: (
        Field("run_id", (str,)),
        Field("path", (str,)),
        Field("last_config", (str,)),
        Field("unconfirmed", (list,)),
        Field("missing", (list,)),
    ),
    Command.STATUS: (
        Field("version", (str,)),
        Field("protocol", (int,)),
        Field("host", (str,)),
        Field("pid", (int,)),
        Field("uptime", (float,)),
        Field("endpoints", (dict,)),
        Field("curve", (bool,)),
        Field("output", (str,)),
        Field("last_config", (str,)),
        Field("run_id", (str,)),
        Field("run_started", (str,)),
        Field("restarts", (list,)),
        Field("stop_pending", (bool,)),
        Field("saving", (dict, _NIL)),
        Field("saved_experiments", (int,)),
        Field("last_saved", (str, _NIL)),
        Field("stop_ids", (bool,)),
        Field("last_error", (str, _NIL)),
        Field("sources", (list,)),
        Field("unidentified", (dict,)),
        Field("rejected", (int,)),
        Field("forgotten", (dict,)),
        Field("time", (str,)),
        Field("required", (list,)),
        Field("missing", (list,)),
        Field("streams", (list,)),
    ),
    Command.RESTORE: (Field("values", (dict,)),),
    Command.SAVE_CONFIG: (Field("last_config", (str,)),),
    Command.NAME: (),
    Command.CLOCK: (Field("t2", (float,)), Field("t3", (float,))),
    Command.OFFSET: (),
}

#: The saved metadata's ``collectord`` section: the daemon's account of the experiment.
ACCOUNT: Schema = (
    Field("version", (str,)),
    Field("protocol", (int,)),
    Field("run_id", (str,)),
    Field("name", (str, _NIL)),
    Field("started", (str,)),
    Field("first_message", (str, _NIL)),
    Field("stopped", (str,)),
    Field("stopped_by", (dict,)),
    Field("unconfirmed", (list,)),
    Field("daemon", (dict,)),
    Field("sources", (list,)),
    Field("unidentified_rejections", (int,)),
    Field("restarts", (list,), required=False),
    Field("required", (list,), required=False),
    Field("missing_at_stop", (list,), required=False),
    Field("missing", (dict,), required=False),
)

#: What a declared stream leaves at its path in the saved metadata.
STREAM_DESCRIPTOR: Schema = (
    Field("file", (str, _NIL)),
    Field("format", (str,)),
    Field("rows", (int,)),
    Field("columns", (list,)),
    Field("dtype", (str,)),
    Field("source", (str,)),
    Field("units", (list,), required=False),
    Field("conversion_failed", (str,), required=False),
    Field("time_column", (str,), required=False),
    Field("clock", (str,), required=False),
)

#: Largest sequence number or id accepted: msgpack's unsigned 64-bit range.
MAX_COUNTER = 2**64 - 1

_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProtocolViolation(ValueError):
    """A message does not follow the protocol; the text says what is wrong."""


def check_fields(
    message: Any, schema: Schema, what: str, *, strict: bool = False
) -> Mapping[str, Any]:
    """Check a decoded message against ``schema``; return it as a mapping.

    Unknown fields are allowed (a newer client may send more), unless
    ``strict``: the schemas of what the daemon writes list every field it
    writes, and the tests hold it to them. Missing or mistyped fields are
    refused. ``bool`` is not accepted where an int is expected, although
    Python says it is one.
    """
    if not isinstance(message, dict):
        raise ProtocolViolation(f"{what} must be a msgpack map, not {type(message).__name__}")
    if strict:
        unknown = message.keys() - {field.name for field in schema}
        if unknown:
            raise ProtocolViolation(f"{what} has fields its schema lacks: {sorted(unknown)}")
    for field in schema:
        if field.name not in message:
            if field.required:
                raise ProtocolViolation(f"{what} lacks field {field.name!r}")
            continue
        value = message[field.name]
        if object in field.types:
            continue
        if not isinstance(value, field.types) or (
            isinstance(value, bool) and bool not in field.types
        ):
            raise ProtocolViolation(
                f"{what} field {field.name!r} must be {field.type_name}, "
                f"not {type(value).__name__}"
            )
        if isinstance(value, int) and not 0 <= value <= MAX_COUNTER:
            raise ProtocolViolation(f"{what} field {field.name!r} is out of range: {value}")
    session = message.get("session")
    if isinstance(session, str) and not _SESSION_RE.fullmatch(session):
        raise ProtocolViolation(f"{what} field 'session' must match {_SESSION_RE.pattern}")
    return message


def reply_ok(request_id: int, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": dict(result)}


def reply_error(request_id: int, code: ErrorCode, message: str) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "error": {"code": code.value, "message": message},
    }


def notice(kind: Notice, **fields: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "notice": kind.value, **fields}
