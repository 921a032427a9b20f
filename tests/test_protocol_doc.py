"""docs/protocol.md must describe exactly the schemas of collectord/protocol.py.

The document gives every schema as a ``### <name>`` heading followed (before
the next heading of level 3 or above) by a table whose columns are
``| field | type | required | meaning |``: one row per field, the name in
backticks, the type as ``protocol.Field.type_name`` prints it, ``yes`` or
``no`` for required. A command's section also has a table whose first column
is ``result``: the fields of its reply's result. The error codes are a
``| code | meaning |`` table under ``### error codes``. These tests parse
those tables and compare them with ``HEADER``, ``BODIES``, ``REQUEST``,
``REQUESTS``, ``RESULTS``, ``SOURCE``, ``ACCOUNT``, ``STREAM_DESCRIPTOR``,
``NOTICE``, ``NOTICES`` and ``ErrorCode``; other tests break a copy of the
document on purpose to show that the comparison notices. The defaults the
document gives for configuration keys ("`receive_queue` (default 1000)") are
compared with ``config.Config``, and the values listed in the meaning of
``cmd``, ``notice`` and ``kind`` with ``Command``, ``Notice`` and ``Kind``.

The schemas of what the daemon writes (replies, status, saved metadata) list
every field it writes: the last tests hold a real daemon's replies and files
to them, so that a field added in the code and not in protocol.py (and so not
in the document) fails here too. Where the document describes behaviour a
client must know, a test quotes it and shows the daemon behaves so.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from conftest import DaemonProcess

from collectord import Client, codec, config, jsonio, load_json
from collectord.collector import Collector, decode_header, message_count
from collectord.experiment import StopRequest, now
from collectord.protocol import (
    ACCOUNT,
    BODIES,
    HEADER,
    NOTICE,
    NOTICES,
    REQUEST,
    REQUESTS,
    RESULTS,
    SOURCE,
    STREAM_DESCRIPTOR,
    Command,
    ErrorCode,
    Kind,
    Notice,
    Schema,
    check_fields,
)
from collectord.sources import Admit
from collectord.streamfiles import StreamSpec

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

FIELD_COLUMNS = ["field", "type", "required", "meaning"]
#: The first column of a table of a reply's ``result`` fields (in a command's section).
RESULT_COLUMN = "result"
CODE_COLUMNS = ["code", "meaning"]
ERROR_CODES_HEADING = "error codes"

#: Headings that name a schema: the doc must hold exactly the expected ones.
_SCHEMA_HEADING = re.compile(
    r"^(header|request|notice|(body|command|notice|status|metadata): .+)$"
)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_DELIMITER_CELL = re.compile(r"^:?-{3,}:?$")
_BACKTICKED = re.compile(r"^`([^`]+)`$")


def expected_schemas() -> dict[str, Schema]:
    """Every schema of protocol.py, under the heading the doc gives it."""
    schemas: dict[str, Schema] = {
        "header": HEADER,
        "request": REQUEST,
        "notice": NOTICE,
        "status: source": SOURCE,
        "metadata: collectord": ACCOUNT,
        "metadata: stream": STREAM_DESCRIPTOR,
    }
    for prefix, table in (("body", BODIES), ("command", REQUESTS), ("notice", NOTICES)):
        for key, schema in table.items():
            schemas[f"{prefix}: {getattr(key, 'value', key)}"] = schema
    return schemas


def expected_results() -> dict[str, Schema]:
    """Each command's ``RESULTS`` schema, under the heading of the command's section."""
    return {f"command: {command.value}": schema for command, schema in RESULTS.items()}


# -- parsing -------------------------------------------------------------------


Table = list[list[str]]  # the header row, then the body rows (delimiter row dropped)


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(inner)]


def sections(text: str) -> list[tuple[str, list[Table]]]:
    """Each ``###`` heading's title and the tables before the next heading of level <= 3.

    Text inside fenced code blocks is skipped: it holds neither headings nor tables.
    """
    found: list[tuple[str, list[Table]]] = []
    current: list[Table] | None = None
    table_lines: list[str] = []
    fenced = False

    def close_table() -> None:
        if table_lines and current is not None:
            rows = [_cells(line) for line in table_lines]
            if len(rows) >= 2 and all(_DELIMITER_CELL.match(c) for c in rows[1]):
                current.append([rows[0], *rows[2:]])
        table_lines.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            close_table()
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = _HEADING.match(line)
        if heading:
            close_table()
            level, title = len(heading.group(1)), heading.group(2)
            if level == 3:
                current = []
                found.append((title, current))
            elif level < 3:
                current = None
            continue
        if line.lstrip().startswith("|"):
            table_lines.append(line)
        else:
            close_table()
    close_table()
    return found


def _first_table(tables: list[Table], first_column: str) -> Table | None:
    for table in tables:
        if table[0] and table[0][0].lower() == first_column:
            return table
    return None


def _unquote(cell: str) -> str | None:
    match = _BACKTICKED.match(cell)
    return match.group(1) if match else None


# -- comparing -------------------------------------------------------------------


def schema_problems(text: str) -> list[str]:
    """Every difference between the doc's schema tables and protocol.py."""
    problems: list[str] = []
    expected = expected_schemas()
    documented: dict[str, list[Table]] = {}
    for title, tables in sections(text):
        if not _SCHEMA_HEADING.match(title):
            continue
        if title in documented:
            problems.append(f"### {title}: heading appears more than once")
        documented[title] = tables
    for title in sorted(documented.keys() - expected.keys()):
        problems.append(f"### {title}: documented, but protocol.py has no such schema")
    for title in sorted(expected.keys() - documented.keys()):
        problems.append(f"### {title}: missing from the doc")
    for title in sorted(expected.keys() & documented.keys()):
        problems.extend(_table_problems(title, documented[title], expected[title]))
    for title, schema in sorted(expected_results().items()):
        if title in documented:
            problems.extend(_table_problems(title, documented[title], schema, RESULT_COLUMN))
    return problems


def _table_problems(
    title: str, tables: list[Table], schema: Schema, first_column: str = "field"
) -> list[str]:
    where = f"### {title}" + (f" ({first_column})" if first_column != "field" else "")
    table = _first_table(tables, first_column)
    if table is None:
        return [f"{where}: no table whose first column is {first_column!r}"]
    columns = [cell.lower() for cell in table[0]]
    expected_columns = [first_column, *FIELD_COLUMNS[1:]]
    if columns != expected_columns:
        return [f"{where}: table columns are {table[0]}, expected {expected_columns}"]
    problems: list[str] = []
    rows: dict[str, tuple[str, str]] = {}
    for row in table[1:]:
        if row[:1] == ["(none)"]:  # an empty result
            if schema:
                problems.append(f"{where}: says (none), but protocol.py has fields")
            continue
        if len(row) != len(FIELD_COLUMNS):
            problems.append(f"{where}: row {row} does not have {len(FIELD_COLUMNS)} cells")
            continue
        name = _unquote(row[0])
        if name is None:
            problems.append(f"{where}: field {row[0]!r} is not written in backticks")
            continue
        if name in rows:
            problems.append(f"{where}: field {name!r} is listed twice")
        rows[name] = (row[1], row[2])
    fields = {field.name: field for field in schema}
    for name in rows.keys() - fields.keys():
        problems.append(f"{where}: field {name!r} is documented but not in protocol.py")
    for name in fields.keys() - rows.keys():
        problems.append(f"{where}: field {name!r} is missing from the doc")
    for name in fields.keys() & rows.keys():
        doc_type, doc_required = rows[name]
        field = fields[name]
        if doc_type != field.type_name:
            problems.append(
                f"{where}: field {name!r} has type {doc_type!r}, protocol.py says "
                f"{field.type_name!r}"
            )
        required = "yes" if field.required else "no"
        if doc_required != required:
            problems.append(
                f"{where}: field {name!r} has required {doc_required!r}, protocol.py says "
                f"{required!r}"
            )
    return problems


def error_code_problems(text: str) -> list[str]:
    """Every difference between the doc's error code table and ``ErrorCode``."""
    where = f"### {ERROR_CODES_HEADING}"
    matching = [tables for title, tables in sections(text) if title == ERROR_CODES_HEADING]
    if len(matching) != 1:
        return [f"{where}: expected exactly one such heading, found {len(matching)}"]
    table = _first_table(matching[0], "code")
    if table is None:
        return [f"{where}: no table whose first column is 'code'"]
    if [cell.lower() for cell in table[0]] != CODE_COLUMNS:
        return [f"{where}: table columns are {table[0]}, expected {CODE_COLUMNS}"]
    problems: list[str] = []
    codes: list[str] = []
    for row in table[1:]:
        code = _unquote(row[0]) if row else None
        if code is None:
            problems.append(f"{where}: code {row[:1]} is not written in backticks")
            continue
        if code in codes:
            problems.append(f"{where}: code {code!r} is listed twice")
        if len(row) != len(CODE_COLUMNS) or not row[1]:
            problems.append(f"{where}: code {code!r} has no meaning")
        codes.append(code)
    values = {code.value for code in ErrorCode}
    for code in sorted(set(codes) - values):
        problems.append(f"{where}: code {code!r} is documented but not an ErrorCode")
    for code in sorted(values - set(codes)):
        problems.append(f"{where}: ErrorCode {code!r} is missing from the doc")
    return problems


#: Fields whose meaning lists every value an enum of protocol.py has, each in
#: backticks: the ``### section``, the field, and the enum.
ENUMERATED: list[tuple[str, str, type[enum.Enum]]] = [
    ("request", "cmd", Command),
    ("notice", "notice", Notice),
    ("header", "kind", Kind),
]
_BACKTICKED_WORDS = re.compile(r"`([^`]+)`")


def enumeration_problems(text: str) -> list[str]:
    """Every enum whose values the meaning of its field does not list exactly."""
    problems: list[str] = []
    found = dict(sections(text))
    for title, name, values in ENUMERATED:
        where = f"### {title}: field {name!r}"
        table = _first_table(found.get(title, []), "field")
        rows = [row for row in table[1:] if row and _unquote(row[0]) == name] if table else []
        if len(rows) != 1 or len(rows[0]) != len(FIELD_COLUMNS):
            problems.append(f"{where}: no such row")
            continue
        listed = _BACKTICKED_WORDS.findall(rows[0][-1])
        expected = [member.value for member in values]
        for value in sorted(set(expected) - set(listed)):
            problems.append(f"{where}: {values.__name__} {value!r} is not listed")
        for value in sorted(set(listed) - set(expected)):
            problems.append(f"{where}: {value!r} is listed but is no {values.__name__}")
        if len(listed) != len(set(listed)):
            problems.append(f"{where}: a value is listed twice")
    return problems


#: A configuration key named with its default: "`receive_queue` (default 1000)",
#: "`[limits] max_message_bytes`, default 67108864", "`barrier_timeout` (default 3 s".
_CONFIG_DEFAULT = re.compile(
    r"`(?:\[(?P<section>\w+)\] )?(?P<key>\w+)`[^`|]{0,20}?\bdefault\s+(?P<value>\d+(?:\.\d+)?)"
)
#: A default value followed by the key it is the default of:
#: "`tcp://127.0.0.1:13550` (`[endpoints] data`)".
_VALUE_OF_KEY = re.compile(r"`(?P<value>[^`]+)` \(`\[(?P<section>\w+)\] (?P<key>\w+)`\)")
#: Keys the document gives a default for; a wording change must not silently
#: take them out of the comparison.
DOCUMENTED_DEFAULTS = {"data", "control", "max_message_bytes", "receive_queue", "barrier_timeout"}


def config_default_problems(text: str) -> list[str]:
    """Every default the doc gives for a configuration key that is not the code's."""
    defaults = config.Config()
    keys = {field.name for field in dataclasses.fields(config.Config)}
    problems: list[str] = []
    found: set[str] = set()
    mentions = [*_CONFIG_DEFAULT.finditer(text), *_VALUE_OF_KEY.finditer(text)]
    for match in mentions:
        key, section, value = match["key"], match["section"], match["value"]
        if key not in keys:
            continue
        found.add(key)
        if section is not None and key not in config.SECTIONS.get(section, ()):
            problems.append(f"{match[0]!r}: {key} is not in [{section}]")
        code = getattr(defaults, key)
        if str(value) != str(code) and not (
            isinstance(code, int | float) and float(value) == code
        ):
            problems.append(f"{match[0]!r}: the default of {key} is {code!r}")
    for key in sorted(DOCUMENTED_DEFAULTS - found):
        problems.append(f"the default of {key} is no longer found in the doc")
    return problems


# -- the tests -------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc_text() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


def test_every_schema_is_documented_exactly(doc_text: str) -> None:
    problems = schema_problems(doc_text)
    assert not problems, "docs/protocol.md differs from protocol.py:\n" + "\n".join(problems)


def test_every_command_notice_and_kind_is_listed(doc_text: str) -> None:
    problems = enumeration_problems(doc_text)
    assert not problems, "docs/protocol.md differs from protocol.py:\n" + "\n".join(problems)


def test_configuration_defaults_are_the_code_s(doc_text: str) -> None:
    problems = config_default_problems(doc_text)
    assert not problems, "docs/protocol.md differs from config.py:\n" + "\n".join(problems)


def test_every_error_code_is_documented_exactly(doc_text: str) -> None:
    problems = error_code_problems(doc_text)
    assert not problems, "docs/protocol.md differs from ErrorCode:\n" + "\n".join(problems)


@pytest.mark.parametrize("title", sorted(expected_schemas()))
def test_schema_has_its_table(doc_text: str, title: str) -> None:
    """Per schema, so that a failure names it in the test id."""
    tables = dict(sections(doc_text)).get(title)
    assert tables is not None, f"### {title} is missing from docs/protocol.md"
    assert _first_table(tables, "field") is not None, f"### {title} has no field table"


# -- the comparison does notice a broken doc ---------------------------------------


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the doc no longer contains {old!r} exactly once"
    return text.replace(old, new)


def _section_bounds(text: str, title: str) -> tuple[int, int]:
    start = text.index(f"\n### {title}\n") + 1
    following = re.compile(r"^#{1,3} ", re.M).search(text, start + 4)
    return start, following.start() if following else len(text)


def _field_row(text: str, title: str, name: str) -> str:
    start, end = _section_bounds(text, title)
    for line in text[start:end].splitlines():
        if line.startswith(f"| `{name}` |"):
            return line
    raise AssertionError(f"no row for {name!r} under ### {title}")


def _break_type(text: str) -> str:
    row = _field_row(text, "header", "seq")
    return _replace_once(text, row, row.replace("| int |", "| str |", 1))


def _break_required(text: str) -> str:
    row = _field_row(text, "command: hello", "confirmed")
    return _replace_once(text, row, row.replace("| no |", "| yes |", 1))


def _drop_field(text: str) -> str:
    row = _field_row(text, "notice: resend", "from")
    return _replace_once(text, row + "\n", "")


def _add_field(text: str) -> str:
    row = _field_row(text, "body: data", "value")
    return _replace_once(text, row, row + "\n| `extra` | int | no | not in protocol.py |")


def _unquote_field(text: str) -> str:
    row = _field_row(text, "request", "cmd")
    return _replace_once(text, row, row.replace("`cmd`", "cmd", 1))


def _drop_command(text: str) -> str:
    return _replace_once(text, "\n### command: restore\n", "\n#### command: restore\n")


def _add_command(text: str) -> str:
    extra = (
        "\n### command: reboot\n\n| field | type | required | meaning |\n"
        "| --- | --- | --- | --- |\n| `session` | str | yes | no such command |\n"
    )
    return text + extra


def _drop_notice(text: str) -> str:
    return _replace_once(text, "\n### notice: barrier\n", "\n### notice barrier\n")


def _drop_table(text: str) -> str:
    start, end = _section_bounds(text, "command: status")
    section = text[start:end]
    return text[:start] + section.replace("| field |", "| name |", 1) + text[end:]


def _drop_result(text: str) -> str:
    start, end = _section_bounds(text, "command: status")
    section = text[start:end]
    row = next(line for line in section.splitlines() if line.startswith("| `curve` |"))
    return text[:start] + section.replace(row + "\n", "", 1) + text[end:]


def _break_result_type(text: str) -> str:
    start, end = _section_bounds(text, "command: hello")
    section = text[start:end]
    row = next(line for line in section.splitlines() if line.startswith("| `run_id` |"))
    return text[:start] + section.replace(row, row.replace("| str |", "| int |"), 1) + text[end:]


def _always_units(text: str) -> str:
    row = _field_row(text, "metadata: stream", "units")
    return _replace_once(text, row, row.replace("| no |", "| yes |", 1))


def _drop_account_field(text: str) -> str:
    row = _field_row(text, "metadata: collectord", "unidentified_rejections")
    return _replace_once(text, row + "\n", "")


def _drop_listed_command(text: str) -> str:
    row = _field_row(text, "request", "cmd")
    return _replace_once(text, row, row.replace(" or `name`", "", 1))


def _drop_listed_kind(text: str) -> str:
    row = _field_row(text, "header", "kind")
    return _replace_once(text, row, row.replace("`block`, ", "", 1))


def _list_unknown_notice(text: str) -> str:
    row = _field_row(text, "notice", "notice")
    return _replace_once(text, row, row.replace("`resend`", "`resend` or `shout`", 1))


def _drop_error_code(text: str) -> str:
    start, end = _section_bounds(text, ERROR_CODES_HEADING)
    lines = text[start:end].splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("| `not_a_group` |")]
    assert len(kept) == len(lines) - 1
    return text[:start] + "".join(kept) + text[end:]


def _add_error_code(text: str) -> str:
    row = "| `save_failed` |"
    start, end = _section_bounds(text, ERROR_CODES_HEADING)
    section = text[start:end]
    index = section.index(row)
    return text[: start + index] + "| `on_fire` | not an ErrorCode |\n" + text[start + index :]


Breakage = Callable[[str], str]

SCHEMA_BREAKS: list[Breakage] = [
    _break_type,
    _break_required,
    _drop_field,
    _add_field,
    _unquote_field,
    _drop_command,
    _add_command,
    _drop_notice,
    _drop_table,
    _drop_result,
    _break_result_type,
    _always_units,
    _drop_account_field,
]
CODE_BREAKS: list[Breakage] = [_drop_error_code, _add_error_code]
ENUM_BREAKS: list[Breakage] = [_drop_listed_command, _drop_listed_kind, _list_unknown_notice]


@pytest.mark.parametrize("breakage", SCHEMA_BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_a_broken_schema_table_is_noticed(doc_text: str, breakage: Breakage) -> None:
    broken = breakage(doc_text)
    assert broken != doc_text
    assert schema_problems(broken), f"{breakage.__name__} went unnoticed"


@pytest.mark.parametrize("breakage", CODE_BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_a_broken_error_code_table_is_noticed(doc_text: str, breakage: Breakage) -> None:
    broken = breakage(doc_text)
    assert broken != doc_text
    assert error_code_problems(broken), f"{breakage.__name__} went unnoticed"


@pytest.mark.parametrize("breakage", ENUM_BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_a_broken_list_of_values_is_noticed(doc_text: str, breakage: Breakage) -> None:
    broken = breakage(doc_text)
    assert broken != doc_text
    assert enumeration_problems(broken), f"{breakage.__name__} went unnoticed"


def test_a_changed_schema_is_noticed(doc_text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other direction: the code changes and the doc does not."""
    import collectord.protocol as protocol

    # REQUESTS here and in protocol.py are one dict: this changes both.
    monkeypatch.setitem(
        protocol.REQUESTS, protocol.Command.SYNC, (protocol.Field("session", (str,)),)
    )
    monkeypatch.setitem(protocol.NOTICES, "shout", ())  # type: ignore[arg-type,misc]
    monkeypatch.setitem(
        protocol.RESULTS,
        protocol.Command.BYE,
        (*protocol.RESULTS[protocol.Command.BYE], protocol.Field("farewell", (str,))),
    )
    problems = schema_problems(doc_text)
    assert any("command: sync" in p and "'seq'" in p for p in problems), problems
    assert any("notice: shout" in p for p in problems), problems
    assert any("command: bye (result)" in p and "'farewell'" in p for p in problems), problems


def test_every_command_has_a_request_and_a_result_schema() -> None:
    assert set(REQUESTS) == set(Command)
    assert set(RESULTS) == set(Command)


# -- the worked example ----------------------------------------------------------

_FENCE = re.compile(r"^```\n(.*?)^```", re.MULTILINE | re.DOTALL)


def worked_example_frames(text: str) -> list[bytes]:
    """The hex blocks of the worked example, as bytes, in order."""
    start = text.index("## Worked example, byte by byte")
    end = text.index("\n## ", start + 1)
    return [bytes.fromhex(block) for block in _FENCE.findall(text[start:end])]


def test_the_worked_example_is_what_the_daemon_reads(doc_text: str) -> None:
    """The doc's bytes go through the daemon's own decoding and land in a tree."""
    header, body, sync, reply, sent, batch_header, payload = worked_example_frames(doc_text)
    session = "3f9a1c0b5d7e2468"
    collector = Collector({})
    source = collector.sources.get(session, "camera")
    for frames in ([header, body], [batch_header, payload]):
        checked = decode_header(frames)
        first = checked["seq"]
        verdict, seen = source.admit_range(first, first + message_count(checked) - 1, 0.0)
        assert verdict is Admit.NEW
        assert collector.apply_message(source, checked, frames, seen).rejections == []
    assert collector.tree.to_dict() == {
        "camera": {"settings": {"exposure": 5.0, "gain": 3}, "frames": 120}
    }
    assert source.received == 3
    assert msgpack.unpackb(sync) == {"v": 1, "cmd": "sync", "id": 2, "session": session, "seq": 1}
    assert msgpack.unpackb(reply) == {"v": 1, "id": 2, "ok": True, "result": {"received": 1}}
    assert msgpack.unpackb(sent) == {
        "v": 1,
        "cmd": "sent",
        "id": 3,
        "session": session,
        "seq": 1,
        "barrier": 1,
    }


# -- what the document says the daemon does, it does ------------------------------


def _prose(text: str, heading: str) -> str:
    """The text under ``## heading`` (or ``### heading``), whitespace collapsed."""
    match = re.search(rf"^#{{2,3}} {re.escape(heading)}\n", text, re.M)
    assert match, f"no heading {heading!r}"
    following = re.compile(r"^#{2,3} ", re.M).search(text, match.end())
    return " ".join(text[match.end() : following.start() if following else len(text)].split())


class RawClient:
    """A client written from the document alone: a DEALER whose routing id is its session."""

    def __init__(self, control: str, session: str = "0123456789abcdef") -> None:
        self.session = session
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, session.encode("ascii"))
        self.sock.connect(control)
        self.next_id = 0

    def send(self, cmd: str, **fields: Any) -> int:
        self.next_id += 1
        request = {"v": 1, "cmd": cmd, "id": self.next_id, **fields}
        self.sock.send_multipart([b"", msgpack.packb(request)])
        return self.next_id

    def receive(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.sock.poll(int(timeout * 1000)), "nothing came from the daemon"
        frames = self.sock.recv_multipart()
        assert frames[0] == b"" and len(frames) == 2, frames
        message = msgpack.unpackb(frames[1])
        assert isinstance(message, dict)
        return message

    def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        request_id = self.send(cmd, **fields)
        reply = self.receive()
        assert reply.get("id") == request_id and reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result

    def hello(self) -> dict[str, Any]:
        return self.ask("hello", **self.introduction())

    def introduction(self) -> dict[str, Any]:
        """The fields of this client's ``hello``."""
        fields = {"name": "raw", "session": self.session, "host": "h", "pid": 1}
        return {**fields, "program": "p", "versions": {"raw": "1"}}

    def close(self) -> None:
        self.sock.close()
        self.context.term()


@pytest.fixture
def raw_client(daemon: DaemonProcess) -> Iterator[RawClient]:
    client = RawClient(daemon.control)
    yield client
    client.close()


#: What "The stop barrier" says of a stop that carries the requester's seq.
STOPPER_GETS_THE_NOTICE = (
    "A client that requests a stop on its DEALER receives the `barrier` notice too, "
    "even if its `stop` request carries `session` and `seq`"
)


def test_a_stopper_that_passes_its_seq_still_gets_the_barrier_notice(
    doc_text: str, raw_client: RawClient
) -> None:
    assert STOPPER_GETS_THE_NOTICE in _prose(doc_text, "The stop barrier")
    raw_client.hello()
    stop_id = raw_client.send("stop", reason="test", session=raw_client.session, seq=0)
    first = raw_client.receive()
    assert first == {"v": 1, "notice": "barrier", "barrier": 1}
    reply = raw_client.receive()
    assert reply["id"] == stop_id and reply["ok"], reply
    assert reply["result"]["unconfirmed"] == []  # its seq was known: no answer awaited


def _written(value: Any, schema: Schema, what: str) -> None:
    """``value``, written by the daemon, has exactly the fields of ``schema``."""
    check_fields(value, schema, what, strict=True)


def test_replies_and_saved_metadata_hold_exactly_their_schemas(
    daemon: DaemonProcess, raw_client: RawClient
) -> None:
    """Every field the daemon writes is in protocol.py (which the doc's tables follow)."""
    raw = raw_client

    def result(cmd: str, **fields: Any) -> dict[str, Any]:
        answer = raw.ask(cmd, **fields)
        _written(answer, RESULTS[Command(cmd)], f"{cmd} result")
        return answer

    result("hello", **raw.introduction())
    with Client("camera", daemon.data, daemon.control) as client:
        client.set_params("camera/settings", exposure=1.0)
        client.stream("camera/plain", ["x"], "<f8").append([1.0])
        client.stream("camera/units", ["x", "y"], "<f8", units=["s", "mm"]).append([1.0, 2.0])
        client.stream("camera/timed", ["t"], "<f8", time_column="t").append([1.0])
        client.sync()
        exchange = result("clock", t1=time.time(), session=raw.session)
        at = (exchange["t2"] + exchange["t3"]) / 2
        result("offset", session=raw.session, at=at, offset=0.001, rtt=0.0002)
        result("sync", session=raw.session, seq=0)
        result("dropped", session=raw.session, upto=0)
        result("name", name="trial", session=raw.session)
        result("save_config", session=raw.session)
        result("restore", node="camera/settings")
        status = result("status")
        assert len(status["sources"]) == 2
        for entry in status["sources"]:
            _written(entry, SOURCE, "an entry of status's sources")
        assert any("clock" in entry for entry in status["sources"])
        stop_id = raw.send("stop", reason="test", session=raw.session)
        barrier = raw.receive()
        assert barrier["notice"] == "barrier", barrier
        result("sent", session=raw.session, seq=0, barrier=barrier["barrier"])
        stopped = raw.receive()
        assert stopped["id"] == stop_id and stopped["ok"], stopped
        _written(stopped["result"], RESULTS[Command.STOP], "stop result")
    result("bye", session=raw.session)

    metadata = load_json(stopped["result"]["path"])
    _written(metadata["collectord"], ACCOUNT, "the saved collectord section")
    assert len(metadata["collectord"]["sources"]) == 2
    for entry in metadata["collectord"]["sources"]:
        _written(entry, SOURCE, "an entry of the saved sources")
    assert any("clock" in entry for entry in metadata["collectord"]["sources"])
    for name in ("plain", "units", "timed"):
        _written(metadata["camera"][name], STREAM_DESCRIPTOR, f"the descriptor of {name}")
    assert "units" not in metadata["camera"]["plain"]
    assert "time_column" not in metadata["camera"]["plain"]
    assert metadata["camera"]["timed"]["clock"] == client.session
    assert metadata["camera"]["units"]["units"] == ["s", "mm"]


def test_optional_fields_the_daemon_writes_are_in_their_schemas() -> None:
    """What a live daemon seldom writes: a restart, a failed stream conversion."""
    collector = Collector({})
    collector.sources.get("0123456789abcdef", "camera").present = True
    collector.restarts.append(
        {"journal_records": 3, "torn_tail": False, "resumed": now().isoformat()}
    )
    account = collector.account(StopRequest(by="signal", reason="SIGTERM"), [], now())
    _written(account, ACCOUNT, "the account of a restarted experiment")
    assert "restarts" in account
    for entry in account["sources"]:
        _written(entry, SOURCE, "an entry of the account's sources")
    spec = StreamSpec.parse(("tail",), {"columns": ["x"], "dtype": "<f8"}, "s", "camera")
    descriptor = spec.descriptor("streams/tail.npy", "npy", "HDF5 cannot hold it")
    _written(descriptor, STREAM_DESCRIPTOR, "the descriptor of a stream not converted")
    assert "conversion_failed" in descriptor


# -- the examples of values are what the daemon does -------------------------------


def tables_with_columns(text: str, columns: list[str]) -> list[Table]:
    """Every table of the doc (under any heading) whose header row is ``columns``."""
    found: list[Table] = []
    lines: list[str] = []
    fenced = False
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            lines.append(line)
            continue
        if lines:
            rows = [_cells(row) for row in lines]
            if rows[0] == columns and len(rows) >= 2:
                found.append([rows[0], *rows[2:]])
            lines = []
    return found


_HEX_CELL = re.compile(r"^`([0-9a-f ]+)`")
SESSION = "0123456789abcdef"


def apply_value(value: bytes) -> tuple[list[str], Any]:
    """What the daemon makes of a data message whose ``value`` is these msgpack bytes:
    the rejections, and the value as the saved JSON holds it (None if none)."""
    collector = Collector({})
    source = collector.sources.get(SESSION, "client")
    header = msgpack.packb(
        {"v": 1, "kind": "data", "source": "client", "session": SESSION, "seq": 1}
    )
    body = b"\x82" + msgpack.packb("path") + msgpack.packb("x") + msgpack.packb("value") + value
    frames = [header, body]
    checked = decode_header(frames)
    verdict, seen = source.admit_range(1, 1, 0.0)
    assert verdict is Admit.NEW
    outcome = collector.apply_message(source, checked, frames, seen)
    tree = json.loads(jsonio.dumps(collector.tree.to_dict()))
    return outcome.rejections, tree.get("x")


def example_rows(text: str, columns: list[str]) -> list[tuple[bytes, str]]:
    """The rows of the doc's tables with ``columns``: the hex of the first cell, and
    the second cell."""
    tables = tables_with_columns(text, columns)
    assert tables, f"no table {columns} in the doc"
    rows: list[tuple[bytes, str]] = []
    for table in tables:
        for row in table[1:]:
            match = _HEX_CELL.match(row[0])
            assert match, f"{row[0]!r} does not start with hex bytes in backticks"
            rows.append((bytes.fromhex(match[1]), row[1]))
    return rows


REJECTED_COLUMNS = ["value sent (msgpack, hex)", "reason recorded"]


def test_values_the_doc_says_are_rejected_are_rejected_so(doc_text: str) -> None:
    for value, cell in example_rows(doc_text, REJECTED_COLUMNS):
        reason = _unquote(cell)
        assert reason is not None, f"{cell!r} is not in backticks"
        rejections, saved = apply_value(value)
        assert rejections == [f"seq 1: {reason}"], value.hex(" ")
        assert saved is None


SAVED_COLUMNS = ["value sent (msgpack, hex)", "saved in the JSON as"]


def test_values_the_doc_says_are_saved_are_saved_so(doc_text: str) -> None:
    for value, cell in example_rows(doc_text, SAVED_COLUMNS):
        saved_text = _unquote(cell)
        assert saved_text is not None, f"{cell!r} is not in backticks"
        rejections, saved = apply_value(value)
        assert rejections == [], value.hex(" ")
        assert saved == json.loads(saved_text), value.hex(" ")


ARRAY_COLUMNS = ["numpy array sent (ext 1)", "saved in the JSON as"]


def test_arrays_the_doc_shows_are_saved_so(doc_text: str) -> None:
    tables = tables_with_columns(doc_text, ARRAY_COLUMNS)
    assert len(tables) == 1, f"expected one table {ARRAY_COLUMNS}"
    for row in tables[0][1:]:
        expression, saved_text = _unquote(row[0]), _unquote(row[1])
        assert expression and saved_text, row
        array = eval(expression, {"__builtins__": {}}, {"numpy": np})  # the doc's own text
        assert isinstance(array, np.ndarray), expression
        rejections, saved = apply_value(codec.pack(array))
        assert rejections == [], expression
        assert saved == json.loads(saved_text), expression
