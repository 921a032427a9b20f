"""Stream files: high-rate tables written to disk as their blocks arrive.

A stream is a table with named columns of one dtype (a tail-tracking log, a
camera's frame times), declared once by a client and then sent as blocks of
rows. The daemon appends each block's raw bytes to the stream's file in the
experiment's staging folder as it arrives, so its memory stays flat however
long the experiment runs.

The file is a ``.npy`` file from the start: a structured array, one field per
column, so ``numpy.load`` alone reads it with the column names. numpy pads the
header so that the row count can grow to 21 digits in place; the header is
written with 0 rows and rewritten with the real count when the experiment is
saved (or recovered: rows beyond the journal's last block are cut off first).
Other formats (CSV, HDF5, Parquet/Feather) are converted from it at the end;
a stream that a format cannot hold keeps its ``.npy`` file instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import putback, system
from .errors import InvalidPathError
from .paths import Path as TreePath
from .paths import check_file_name, has_control_character, join_path

log = logging.getLogger("collectord")

#: The dtypes a stream may have: those every file format holds as they are.
STREAM_DTYPES = frozenset(
    np.dtype(name).str
    for name in ("?", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8")
)
#: Endings of stream files in every format: no folder of a stream path may end so.
FILE_SUFFIXES = (".npy", ".csv", ".h5", ".parquet", ".feather")

#: Largest number of columns a stream may have.
MAX_COLUMNS = 4096


class StreamError(ValueError):
    """A stream declaration or block does not fit; the text says why."""


@dataclasses.dataclass
class StreamSpec:
    """What a client declared: where the stream lives and its columns."""

    path: TreePath
    columns: list[str]
    dtype: str  # a numpy dtype string for every column, e.g. "<f8"
    units: list[str] | None
    session: str
    source: str
    rows: int = 0
    #: The column holding each row's time, on the clock of the client that
    #: declared the stream (the session named in the descriptor's ``clock``).
    time_column: str | None = None

    @classmethod
    def parse(cls, path: TreePath, body: dict[str, Any], session: str, source: str) -> StreamSpec:
        columns = body.get("columns")
        if (
            not isinstance(columns, list)
            or not columns
            or len(columns) > MAX_COLUMNS
            or not all(isinstance(c, str) and c for c in columns)
            or len(set(columns)) != len(columns)
        ):
            raise StreamError(
                f"columns must be a non-empty list of at most {MAX_COLUMNS} distinct names"
            )
        for column in columns:
            # A control character would break the CSV header (a newline starts
            # a new record) and any table a person reads; the Python client
            # refuses such names too (``check_name``), a raw client may not.
            if has_control_character(column):
                raise StreamError(f"column name {column!r} contains a control or NUL character")
        try:
            dtype = np.dtype(body.get("dtype"))
        except (TypeError, ValueError) as exc:  # numpy raises either
            raise StreamError(f"dtype {body.get('dtype')!r} is not a numpy dtype") from exc
        if dtype.str not in STREAM_DTYPES:
            raise StreamError(
                f"dtype {dtype.str} is not a stream dtype (little-endian bool, int, uint or "
                "float of 1 to 8 bytes)"
            )
        for name in path:
            try:
                check_file_name(name, where=f"stream path {join_path(path)!r}: name")
            except InvalidPathError as exc:
                raise StreamError(str(exc)) from None
        for name in path[:-1]:
            if name.lower().endswith(FILE_SUFFIXES):  # Windows and macOS ignore case
                raise StreamError(
                    f"stream path {'/'.join(path)!r}: the folder name {name!r} ends like a "
                    "stream file"
                )
        units = body.get("units")
        if units is not None and (
            not isinstance(units, list)
            or len(units) != len(columns)
            or not all(isinstance(u, str) for u in units)
        ):
            raise StreamError("units must be a list of strings, one per column")
        time_column = body.get("time_column")
        if time_column is not None and time_column not in columns:
            raise StreamError(f"time_column {time_column!r} is not one of the columns")
        return cls(path, list(columns), dtype.str, units, session, source, 0, time_column)

    @functools.cached_property
    def row_dtype(self) -> np.dtype[Any]:
        """The structured dtype of one row: the file's dtype (columns never change)."""
        return np.dtype([(name, self.dtype) for name in self.columns])

    @functools.cached_property
    def row_bytes(self) -> int:
        return self.row_dtype.itemsize

    def same_layout(self, other: StreamSpec) -> bool:
        mine = (self.columns, self.dtype, self.units, self.time_column)
        return mine == (other.columns, other.dtype, other.units, other.time_column)

    def file_name(self) -> str:
        """Where the file goes, relative to the experiment folder.

        Under ``streams/``, so that no stream can meet the journal or the metadata
        file; the path as folders, which ``parse`` keeps from meeting each other.
        """
        return "streams/" + "/".join(self.path) + ".npy"

    def descriptor(
        self, file_name: str | None, fmt: str, conversion_failed: str | None = None
    ) -> dict[str, Any]:
        """What the tree holds at the stream's path in the saved metadata.

        ``conversion_failed``: why the file is not in the configured format
        (``fmt`` is then ``npy``, the file it was to be converted from).
        """
        described: dict[str, Any] = {
            "file": file_name,
            "format": fmt,
            "rows": self.rows,
            "columns": self.columns,
            "dtype": self.dtype,
            "source": self.source,
        }
        if self.units is not None:
            described["units"] = self.units
        if conversion_failed is not None:
            described["conversion_failed"] = conversion_failed
        if self.time_column is not None:
            described["time_column"] = self.time_column
            described["clock"] = self.session
        return described

    def snapshot(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["path"] = list(self.path)
        fields["rows"] = 0
        return fields

    @classmethod
    def from_snapshot(cls, fields: dict[str, Any]) -> StreamSpec:
        return cls(**{**fields, "path": tuple(fields["path"])})


def _header(spec: StreamSpec, rows: int) -> bytes:
    """The ``.npy`` header of ``spec``'s file holding ``rows`` rows, as ``numpy.save``
    would write it.

    The file is written with 0 rows and the header rewritten in place with the
    real count at the save, so both must have the same length. numpy pads the
    header text so that the row count can grow to ``GROWTH_AXIS_MAX_DIGITS``
    (21) digits: the text is as long for 0 rows as for any real count, so the
    same version is chosen for both and the headers are as long.

    The version is the oldest that holds the header, as numpy picks it: 1.0
    has a 2-byte length (64 KiB), too little for a wide stream (4096 columns
    with 6-character names take about 76 KiB), which gets 2.0 (a 4-byte
    length; numpy >= 1.9 reads it). Both are Latin-1; a column name beyond
    Latin-1 (``θ``) needs 3.0, the same with UTF-8 (numpy >= 1.17).
    """
    fields = {
        "descr": np.lib.format.dtype_to_descr(spec.row_dtype),
        "fortran_order": False,
        "shape": (rows,),
    }
    for write in (np.lib.format.write_array_header_1_0, np.lib.format.write_array_header_2_0):
        buffer = io.BytesIO()
        try:
            write(buffer, fields)
        except ValueError:  # over 64 KiB for 1.0; UnicodeEncodeError: not Latin-1
            continue
        return buffer.getvalue()
    return _header_3_0(fields)


def _header_3_0(fields: dict[str, Any]) -> bytes:
    """A version 3.0 header, which ``numpy.lib.format`` has no public writer for:
    its documented layout (2.0's, the text in UTF-8), padded as numpy pads it
    (a test compares it with ``numpy.save``'s, byte for byte)."""
    layout = np.lib.format
    text = "{" + "".join(f"{key!r}: {value!r}, " for key, value in sorted(fields.items())) + "}"
    text += " " * (layout.GROWTH_AXIS_MAX_DIGITS - len(repr(fields["shape"][0])))
    encoded = text.encode("utf-8")
    length = len(encoded) + 1  # and the newline that ends it
    padding = -(layout.MAGIC_LEN + 4 + length) % layout.ARRAY_ALIGN
    prefix = layout.magic(3, 0) + struct.pack("<I", length + padding)
    return prefix + encoded + b" " * padding + b"\n"


#: ``numpy.load`` refuses a header over 10000 bytes (about 500 columns) unless
#: given a larger ``max_header_size``: a guard against untrusted files. A
#: stream file's header is the daemon's own, from a declaration it checked.
HEADER_LIMIT = 1 << 32


def load(path: Path) -> np.ndarray[Any, Any]:
    """A finished stream file, memory-mapped, however wide its header."""
    return np.load(path, mmap_mode="r", max_header_size=HEADER_LIMIT)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``, or raise (a full disk raises on the
    write after the one it cut short). The flusher's thread may fsync ``fd``
    meanwhile: ``system.pwrite`` leaves that safe where ``os.pwrite`` is missing."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += system.pwrite(fd, view[written:], offset + written)


#: How a stream file is opened: readable too, to be put back if it is deleted
#: (``putback.py``).
_FLAGS = os.O_RDWR


class StreamFile:
    """The ``.npy`` file of one stream in one experiment."""

    def __init__(self, path: Path, spec: StreamSpec, *, fresh: bool) -> None:
        self.path = path
        self.spec = spec
        self.header_bytes = len(_header(spec, 0))
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = _FLAGS | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        self._fd = system.open_binary(path, flags, 0o644)
        try:
            if fresh:
                _pwrite_all(self._fd, _header(spec, 0), 0)
            self.end = os.fstat(self._fd).st_size  # where the next rows go
        except OSError:
            os.close(self._fd)
            if fresh:
                path.unlink(missing_ok=True)
            raise
        self.dirty = fresh
        #: The file's name in its folder, and its folders' names in theirs, are
        #: not durable yet: an fsync of the file leaves them to a power cut.
        self._new_entries = fresh

    @classmethod
    def resume(cls, path: Path, spec: StreamSpec) -> StreamFile:
        """Reopen after a crash: keep exactly the rows the journal accounts for.

        Never pads: a file shorter than the journal says (it should not be: the
        file is fsynced before the journal) keeps the rows it has, said loudly.
        """
        stream = cls(path, spec, fresh=not path.exists())
        present = max(0, (os.fstat(stream._fd).st_size - stream.header_bytes) // spec.row_bytes)
        if present < spec.rows:
            log.error(
                "%s holds %d rows, the journal %d: keeping %d", path, present, spec.rows, present
            )
            spec.rows = present
        stream.end = stream.header_bytes + spec.rows * spec.row_bytes
        os.ftruncate(stream._fd, stream.end)
        stream._new_entries = True  # the crashed daemon's may never have been synced
        return stream

    def append(self, raw: bytes | memoryview) -> None:
        """Append whole rows at ``end``, or raise and leave ``end`` where it was.

        A full disk can cut a write part-way. The partial rows are cut off
        again; if even that fails, the next block still goes to ``end``, over
        them, and ``finish`` cuts the file to the rows accounted for.
        """
        view = memoryview(raw).cast("B")
        try:
            _pwrite_all(self._fd, view, self.end)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.end)
            raise
        self.end += len(view)
        self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            self.fsync()
            self.dirty = False

    def fsync(self) -> None:
        """fsync, leaving ``dirty`` alone: for the flusher's thread (``flusher.py``).

        The first also makes the file's folder entries durable, up to the
        staging folder's entry for ``streams``: the journal vouches for rows
        once this returns, and rows in a file that a power cut unlinks are
        lost as surely as unwritten ones."""
        os.fsync(self._fd)
        if self._new_entries:
            for folder in self.path.parents[: len(self.spec.path) + 1]:
                system.fsync_dir(folder)
            self._new_entries = False

    def moved(self) -> bool:
        """The file is no longer at its path: deleted or moved (``putback.py``)."""
        return putback.moved(self._fd, self.path)

    def put_back(self) -> None:
        """Write the file at its path again, from the file still open."""
        self._fd = putback.put_back(self._fd, self.path, _FLAGS)
        self._new_entries = False  # put_back made them durable

    def finish(self) -> Path:
        """Cut the file to the rows accounted for, write the real header, close
        (put back first if it was deleted or moved)."""
        if self.moved():
            log.error("%s was deleted or moved while in use; writing it there again", self.path)
            self.put_back()
        spec = self.spec
        os.ftruncate(self._fd, self.header_bytes + spec.rows * spec.row_bytes)
        header = _header(spec, spec.rows)
        if len(header) != self.header_bytes:  # a row count beyond 21 digits: not on this planet
            raise StreamError(f"cannot rewrite the header of {self.path}")
        _pwrite_all(self._fd, header, 0)
        self.fsync()
        os.close(self._fd)
        return self.path

    def close(self) -> None:
        os.close(self._fd)


class Finished(NamedTuple):
    """What a finished stream kept: its file (relative to the staging folder),
    the file's format, and why it is not in the configured one (or None)."""

    file: str
    format: str
    conversion_failed: str | None


class StreamFiles:
    """The open stream files of the current experiment, in its staging folder.

    While a journal is replayed (``replaying``), blocks are only counted: their
    bytes are already in the files. ``end_replay`` then cuts each file to the
    rows the journal accounts for, dropping whatever was written after the
    last block that made it into the journal.
    """

    def __init__(self, staging: Path, *, replaying: bool = False) -> None:
        self.staging = staging
        self.replaying = replaying
        self.files: dict[TreePath, StreamFile] = {}
        #: Declared streams whose file could not be created yet (a full disk).
        self.unopened: dict[TreePath, StreamSpec] = {}
        self.converted: list[Path] = []
        #: Files finished, and what each stream kept, so far (``finish``).
        self._finished: dict[TreePath, tuple[Path, list[str] | None]] = {}
        self._kept: dict[TreePath, Finished] = {}
        self.unsynced = 0  # bytes written since the last sync or take_dirty

    def open(self, spec: StreamSpec) -> None:
        """Take blocks for ``spec`` from now on.

        Its file is created now if it can be. If not (a full disk), the
        declaration still stands: the file is created with the first block,
        which fails the same way until there is room.
        """
        if spec.path in self.files:
            return
        try:
            self._open(spec)
        except OSError as exc:
            log.error("cannot create %s yet: %s", spec.file_name(), exc)
            self.unopened[spec.path] = spec

    def _open(self, spec: StreamSpec) -> StreamFile:
        target = self.staging / spec.file_name()
        fresh = not (self.replaying and target.exists())
        stream = self.files[spec.path] = StreamFile(target, spec, fresh=fresh)
        self.unopened.pop(spec.path, None)
        return stream

    def write(self, spec: StreamSpec, raw: bytes | memoryview) -> None:
        if not self.replaying:
            stream = self.files.get(spec.path) or self._open(spec)
            stream.append(raw)
            self.unsynced += memoryview(raw).nbytes

    def end_replay(self) -> None:
        for stream in self.files.values():
            stream.close()
        specs = [stream.spec for stream in self.files.values()]
        self.files = {
            spec.path: StreamFile.resume(self.staging / spec.file_name(), spec) for spec in specs
        }
        self.replaying = False

    def sync(self) -> None:
        for stream in self.files.values():
            stream.sync()
        self.unsynced = 0

    def put_back_moved(self) -> list[Path]:
        """Put back the files deleted or moved while in use (``putback.py``); their paths."""
        moved = [stream for stream in self.files.values() if stream.moved()]
        for stream in moved:
            stream.put_back()
        return [stream.path for stream in moved]

    def take_dirty(self) -> list[StreamFile]:
        """The files written since they were last synced, now counted as clean."""
        dirty = [stream for stream in self.files.values() if stream.dirty]
        for stream in dirty:
            stream.dirty = False
        self.unsynced = 0
        return dirty

    def finish(
        self, fmt: str, progress: Callable[[str], None] | None = None
    ) -> dict[TreePath, Finished]:
        """Finish every file and convert it to ``fmt``; say what each stream kept.

        The ``.npy`` files of converted streams stay until ``remove_converted``.
        A conversion that fails (HDF5 cannot hold a compound type of about a
        thousand columns or more) keeps the ``.npy`` file as the stream's file,
        and says why: the rows are all there, in a format numpy reads, and the
        save goes on rather than failing at every stop. ``progress`` is told
        which stream is being converted (a save of many big streams to
        csv, hdf5 or parquet takes a while: ``status`` shows it).
        """
        from .formats import convert

        for spec in list(self.unopened.values()):
            try:
                self._open(spec)  # a stream without rows still gets its (empty) file
            except OSError as exc:
                log.error("%s has no file: %s", spec.file_name(), exc)
        # A save that failed part-way calls this again: what is done stays done.
        for path, stream in list(self.files.items()):
            self._finished[path] = (stream.finish(), stream.spec.units)
            del self.files[path]
        for number, (path, (npy, units)) in enumerate(self._finished.items(), 1):
            if path in self._kept:
                continue
            if progress is not None and fmt != "npy":
                progress(
                    f"converting {join_path(path)} to {fmt} ({number} of {len(self._finished)})"
                )
            try:
                file = convert(npy, fmt, units)
            except Exception as exc:
                why = f"could not write {fmt}: {type(exc).__name__}: {exc}"
                log.error("%s: %s; kept as npy", npy, why)
                _remove_other_formats(npy)
                self._kept[path] = Finished(npy.relative_to(self.staging).as_posix(), "npy", why)
                continue
            if file != npy:
                self.converted.append(npy)
            self._kept[path] = Finished(file.relative_to(self.staging).as_posix(), fmt, None)
        return dict(self._kept)

    def keep_specs(self, specs: Mapping[TreePath, StreamSpec]) -> None:
        """Count rows in ``specs`` (copies) from now on: the declared streams go
        on into the next experiment while these files are finished."""
        for path, stream in self.files.items():
            stream.spec = specs[path]
        self.unopened = {path: specs[path] for path in self.unopened}

    def remove_converted(self) -> None:
        """Delete the ``.npy`` files of converted streams: the journal is gone."""
        for npy in self.converted:
            npy.unlink(missing_ok=True)
        self.converted = []

    def close(self) -> None:
        for stream in self.files.values():
            stream.close()
        self.files = {}
        self.unopened = {}


def _remove_other_formats(npy: Path) -> None:
    """Delete any converted file beside ``npy``, whose conversion failed: a
    conversion of another format cut by a crash before the daemon restarted
    with this one left a partial file (``convert`` removes its own), and a
    start that completes a save takes any such file for the stream's
    converted copy and deletes the ``.npy`` (``Lifecycle._complete``), here
    the only copy of the rows."""
    for suffix in FILE_SUFFIXES:
        if suffix != ".npy":
            npy.with_suffix(suffix).unlink(missing_ok=True)
