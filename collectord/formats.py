"""Stream file formats: ``.npy`` as written, or converted at the end of an experiment.

``npy`` (the default) needs nothing but numpy to read. ``csv`` is written with
enough digits to give back every float exactly. ``hdf5`` (``pip install
collectord[hdf5]``, h5py) and ``parquet``/``feather`` (``pip install
collectord[arrow]``, pyarrow) are converted with their own libraries. Every
conversion reads the ``.npy`` file in chunks through a memory map, so memory
stays flat for any stream length; the ``.npy`` file is deleted once the new
file is complete and the experiment's journal is gone.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import system
from .errors import ConfigError
from .streamfiles import load

CHUNK_ROWS = 65536


def _chunks(array: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, Any]]:
    for start in range(0, len(array), CHUNK_ROWS):
        yield np.asarray(array[start : start + CHUNK_ROWS])


def _float_format(dtype: np.dtype[Any]) -> str:
    """Enough significant digits to give every value of ``dtype`` back exactly."""
    if dtype.kind == "f":
        digits = int(np.ceil(1 + (np.finfo(dtype).nmant + 1) * np.log10(2)))
        return f"%.{digits}g"
    return "%d"


def to_csv(source: Path, target: Path, units: list[str] | None) -> None:
    """The header row is written by the ``csv`` module, which quotes a name
    holding a comma or a quote (a column ``x,y`` is written ``"x,y"``), so that
    a CSV reader files every value under its column; numbers never need
    quoting. Control characters, which many readers would trip on even
    quoted, are refused in column names by the client and the daemon."""
    table = load(source)
    names = list(table.dtype.names or ())
    column_dtype = table.dtype[0]
    with open(target, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator="\n").writerow(names)
        for chunk in _chunks(table):
            plain = chunk.view(column_dtype).reshape(len(chunk), len(names))
            np.savetxt(file, plain, fmt=_float_format(column_dtype), delimiter=",")
        file.flush()
        os.fsync(file.fileno())


def to_hdf5(source: Path, target: Path, units: list[str] | None) -> None:
    try:
        import h5py
    except ImportError:
        raise ConfigError("the hdf5 format needs h5py: pip install 'collectord[hdf5]'") from None
    _check_room(source, target)
    table = load(source)
    with h5py.File(target, "w") as file:
        dataset = file.create_dataset("data", shape=table.shape, dtype=table.dtype, chunks=True)
        dataset.attrs["columns"] = list(table.dtype.names or ())
        if units is not None:
            dataset.attrs["units"] = units
        for start in range(0, len(table), CHUNK_ROWS):
            dataset[start : start + CHUNK_ROWS] = table[start : start + CHUNK_ROWS]


def _check_room(source: Path, target: Path) -> None:
    """Refuse to begin an HDF5 file that would not fit.

    The HDF5 library does not survive a write that fails: after a full disk
    part-way through a file it cannot close it, and the process then dies of
    a segmentation fault (the daemon in the middle of a save, and again at
    each start that saves the experiment again). An HDF5 file of a stream
    takes the rows' bytes and under 1% more.
    """
    needed = source.stat().st_size * 17 // 16 + (1 << 20)
    free = shutil.disk_usage(target.parent).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device for the hdf5 file: about {needed} bytes needed, {free} free",
            str(target),
        )


def _arrow(source: Path, target: Path, units: list[str] | None, kind: str) -> None:
    try:
        import pyarrow as pa
    except ImportError:
        raise ConfigError(
            f"the {kind} format needs pyarrow: pip install 'collectord[arrow]'"
        ) from None
    table = load(source)
    names = list(table.dtype.names or ())
    # Each column's unit in its own field's metadata, where Arrow readers look
    # for it; and all of them as a JSON array in the schema's (a unit may hold
    # a comma: "x, y").
    fields = [
        pa.field(
            name,
            pa.from_numpy_dtype(table.dtype[name]),
            metadata=None if units is None else {"unit": units[index]},
        )
        for index, name in enumerate(names)
    ]
    metadata = None if units is None else {"units": json.dumps(units)}
    schema = pa.schema(fields, metadata=metadata)
    if kind == "parquet":
        import pyarrow.parquet as pq

        writer: Any = pq.ParquetWriter(target, schema)
    else:
        writer = pa.ipc.new_file(str(target), schema)
    with writer:
        for chunk in _chunks(table):
            arrays = [pa.array(np.ascontiguousarray(chunk[name])) for name in names]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


Converter = Callable[[Path, Path, "list[str] | None"], None]

#: Format name -> (file suffix, converter from .npy; None: keep the .npy as is).
FORMATS: dict[str, tuple[str, Converter | None]] = {
    "npy": (".npy", None),
    "csv": (".csv", to_csv),
    "hdf5": (".h5", to_hdf5),
    "parquet": (".parquet", lambda s, t, u: _arrow(s, t, u, "parquet")),
    "feather": (".feather", lambda s, t, u: _arrow(s, t, u, "feather")),
}


def convert(npy_file: Path, fmt: str, units: list[str] | None) -> Path:
    """Write a finished ``.npy`` stream file as ``fmt``; return the file to keep.

    The ``.npy`` file stays: until the experiment's journal is deleted it is the
    data the journal vouches for (``StreamFiles.remove_converted`` removes it after
    that). A conversion that fails leaves no partial file, and raises.
    """
    suffix, converter = FORMATS[fmt]
    if converter is None:
        return npy_file
    target = npy_file.with_suffix(suffix)
    try:
        converter(npy_file, target, units)
        # Once the experiment is saved it is the only copy of the rows (the
        # journal and the .npy file go): on disk before that, as the .npy was.
        _fsync(target)
    except BaseException:
        # A partial file must not pass for a converted one: a start that
        # completes a save deletes a .npy file that has a converted sibling.
        target.unlink(missing_ok=True)
        raise
    return target


def _fsync(path: Path) -> None:
    """fsync a file the libraries wrote and closed (h5py and pyarrow do not),
    and its folder's entry for it."""
    fd = system.open_binary(path, os.O_RDWR)  # Windows fsyncs only what it may write
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    system.fsync_dir(path.parent)


def _read_csv(path: Path, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    with open(path, newline="", encoding="utf-8") as file:
        names = next(csv.reader(file))
        text = file.read()
    if not text.strip():
        return _structured(names, [np.empty(0, dtype) for _ in names], dtype)
    # bool columns are written as 0 and 1, which loadtxt does not read as bool.
    parsed = np.int8 if dtype.kind == "b" else dtype
    plain = np.loadtxt(io.StringIO(text), delimiter=",", dtype=parsed, ndmin=2)
    return _structured(names, [plain[:, i] for i in range(len(names))], dtype)


def _read_hdf5(path: Path, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    try:
        import h5py
    except ImportError:
        raise ConfigError(
            "reading an hdf5 stream needs h5py: pip install 'collectord[hdf5]'"
        ) from None
    with h5py.File(path, "r") as file:
        return np.asarray(file["data"][()])


def _read_arrow(path: Path, dtype: np.dtype[Any], kind: str) -> np.ndarray[Any, Any]:
    try:
        import pyarrow.feather as feather
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"reading a {kind} stream needs pyarrow: pip install 'collectord[arrow]'"
        ) from None
    table = pq.read_table(path) if kind == "parquet" else feather.read_table(path)
    names = table.column_names
    return _structured(names, [table.column(name).to_numpy() for name in names], dtype)


def _structured(
    names: list[str], columns: list[np.ndarray[Any, Any]], dtype: np.dtype[Any]
) -> np.ndarray[Any, Any]:
    rows = len(columns[0]) if columns else 0
    table = np.empty(rows, dtype=[(name, dtype) for name in names])
    for name, column in zip(names, columns, strict=True):
        table[name] = column
    return table


#: Format name -> reader of a finished stream file (as ``load``: one field per column).
READERS: dict[str, Callable[[Path, np.dtype[Any]], np.ndarray[Any, Any]]] = {
    "npy": lambda path, dtype: load(path),
    "csv": _read_csv,
    "hdf5": _read_hdf5,
    "parquet": lambda path, dtype: _read_arrow(path, dtype, "parquet"),
    "feather": lambda path, dtype: _read_arrow(path, dtype, "feather"),
}


def read(path: Path, fmt: str, dtype: str) -> np.ndarray[Any, Any]:
    """A saved stream file in any format as a structured array, one field per column.

    ``dtype`` is the stream's (its descriptor's ``dtype``): CSV does not keep it.
    The ``.npy`` file is memory-mapped; the other formats are read whole.
    """
    if fmt not in READERS:
        raise ValueError(f"{path}: unknown stream format {fmt!r}")
    return READERS[fmt](path, np.dtype(dtype))


def check_available(fmt: str) -> None:
    """Raise ConfigError now if ``fmt`` needs a library that is not installed."""
    needs = {
        "hdf5": ("h5py", "hdf5"),
        "parquet": ("pyarrow", "arrow"),
        "feather": ("pyarrow", "arrow"),
    }.get(fmt)
    if needs is None:
        return
    module, extra = needs
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(
            f"stream_format {fmt!r} needs {module}: pip install 'collectord[{extra}]'"
        ) from None
