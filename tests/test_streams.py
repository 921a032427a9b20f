"""Streams: every row arrives, in order, in every format, from several processes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import re
import shutil
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rig_processes
from conftest import DaemonProcess, wait_for

from collectord import Client, ClientClosedError, InvalidPathError, load_json, streamfiles
from collectord.daemon.lifecycle import _remove_converted
from collectord.formats import FORMATS
from collectord.streamfiles import MAX_COLUMNS, StreamSpec


def expected_rows(dtype: str, count: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        values = rng.normal(0, 1e3, size=(count, 3)).astype(dtype)
        values[3] = [np.nan, np.inf, -np.inf]
        values[4] = [np.finfo(dtype).tiny, np.finfo(dtype).max, -0.0]
        return values
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=(count, 3), endpoint=True, dtype=dtype)


def publish(daemon: DaemonProcess, dtype: str, rows: np.ndarray) -> dict:
    with Client("tracking", daemon.data, daemon.control) as client:
        stream = client.stream(
            "tracking/tail",
            ["angle", "vigor", "bout"],
            dtype,
            units=["rad", "a.u., scaled", ""],
            block_rows=64,
        )
        for row in rows[:500]:
            stream.append(row)
        stream.extend(rows[500:1700])
        for row in rows[1700:]:
            stream.append(list(row))
        path = Path(client.stop())
    saved = load_json(path)
    descriptor = saved["tracking"]["tail"]
    descriptor["_file"] = path.parent / descriptor["file"]
    return descriptor


def read_back(descriptor: dict, fmt: str) -> tuple[list[str], np.ndarray]:
    file = descriptor["_file"]
    if fmt == "npy":
        table = np.load(file)
        names = list(table.dtype.names)
        return names, np.stack([table[name] for name in names], axis=1)
    if fmt == "csv":
        with open(file, newline="") as handle:
            lines = list(csv.reader(handle))
        values = np.array(lines[1:], dtype=np.float64)
        return lines[0], values
    if fmt == "hdf5":
        h5py = pytest.importorskip("h5py")
        with h5py.File(file) as handle:
            table = handle["data"][()]
            assert list(handle["data"].attrs["units"]) == descriptor["units"]
        names = list(table.dtype.names)
        return names, np.stack([table[name] for name in names], axis=1)
    pytest.importorskip("pyarrow")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(file)
    else:
        import pyarrow.feather as feather

        table = feather.read_table(file)
    names = table.column_names
    if descriptor.get("units") is not None:
        fields = [table.schema.field(name).metadata for name in names]
        assert [field[b"unit"].decode() for field in fields] == descriptor["units"]
        assert json.loads(table.schema.metadata[b"units"]) == descriptor["units"]
    else:
        assert table.schema.metadata is None
    return names, np.stack([table[name].to_numpy() for name in names], axis=1)


def daemon_writing(fmt: str, make_daemon, tmp_path: Path) -> DaemonProcess:
    """A daemon whose streams are saved as ``fmt``; skips where its library is missing."""
    if fmt == "hdf5":
        pytest.importorskip("h5py")
    if fmt in ("parquet", "feather"):
        pytest.importorskip("pyarrow")
    config = tmp_path / f"{fmt}.toml"
    config.write_text(f'[streams]\nstream_format = "{fmt}"\n')
    return make_daemon(extra=("--config", str(config)))


@pytest.mark.parametrize("fmt", ["npy", "csv", "hdf5", "parquet", "feather"])
@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<i4", "<u2"])
def test_every_row_round_trips_exactly(make_daemon, tmp_path: Path, fmt: str, dtype: str):
    daemon = daemon_writing(fmt, make_daemon, tmp_path)
    rows = expected_rows(dtype, 2000)
    descriptor = publish(daemon, dtype, rows)

    assert descriptor["rows"] == 2000 and descriptor["format"] == fmt
    assert descriptor["columns"] == ["angle", "vigor", "bout"]
    assert descriptor["dtype"] == np.dtype(dtype).str
    assert descriptor["units"] == ["rad", "a.u., scaled", ""]
    assert (
        descriptor["file"]
        == "streams/tracking/tail"
        + {
            "npy": ".npy",
            "csv": ".csv",
            "hdf5": ".h5",
            "parquet": ".parquet",
            "feather": ".feather",
        }[fmt]
    )
    names, values = read_back(descriptor, fmt)
    assert names == ["angle", "vigor", "bout"]
    if fmt != "csv":
        assert values.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(values.astype(np.dtype(dtype)), rows)
    assert [p.name for p in descriptor["_file"].parent.iterdir()] == [descriptor["_file"].name]


@contextlib.contextmanager
def fsyncs_traced(daemon: DaemonProcess, trace: Path) -> Iterator[None]:
    """Watch ``daemon``'s fsyncs with strace into ``trace`` (fds shown as paths),
    for the duration; skips the test where strace is missing or cannot attach."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("needs strace")
    assert daemon.process is not None
    pid = str(daemon.process.pid)
    watching = subprocess.Popen(
        [strace, "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(trace), "-p", pid],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stderr is not None
        attached = watching.stderr.readline()
        if "attached" not in attached:
            pytest.skip(f"strace cannot attach here: {attached.strip()}")
        yield
    finally:
        watching.send_signal(signal.SIGINT)
        watching.wait(30)


@pytest.mark.parametrize("fmt", ["csv", "hdf5", "parquet", "feather"])
def test_a_converted_stream_file_is_fsynced_before_its_npy_goes(
    make_daemon, tmp_path: Path, fmt: str
) -> None:
    """Once saved, the converted file is the only copy of the rows (the
    journal and the .npy file are deleted): hdf5, parquet and feather files
    were never fsynced, so a power cut after a save could lose a stream whole.
    The daemon's fsyncs are watched with strace."""
    daemon = daemon_writing(fmt, make_daemon, tmp_path)
    trace = tmp_path / "fsyncs.txt"
    with fsyncs_traced(daemon, trace), Client("cam", daemon.data, daemon.control) as client:
        frames = client.stream("cam/frames", ["t"], "f8")
        frames.extend(np.arange(100.0)[:, None])
        saved = Path(client.stop())
    assert (saved.parent / "streams" / "cam" / f"frames{FORMATS[fmt][0]}").is_file()
    suffix = FORMATS[fmt][0]
    assert re.search(
        rf"^\d+ +f(data)?sync\(\d+<[^>]*/frames{re.escape(suffix)}>\) = 0", trace.read_text(), re.M
    )


def test_a_new_stream_files_folder_entries_are_fsynced_before_its_rows_are_confirmed(
    make_daemon, tmp_path: Path
) -> None:
    """The journal vouches for rows once their file is fsynced; but a new
    file's name in its folder (and its new folders' names) are not made
    durable by that fsync, and a power cut could unlink the file. The
    daemon's fsyncs are watched with strace until the first block is
    confirmed."""
    daemon = make_daemon()
    trace = tmp_path / "fsyncs.txt"
    with fsyncs_traced(daemon, trace), Client("cam", daemon.data, daemon.control) as client:
        client.stream("cam/deep/frames", ["t"], "f8").extend(np.arange(10.0)[:, None])
        client.sync()
    synced = re.findall(r"fsync\(\d+<([^>]*)>\) = 0", trace.read_text())
    folders = [Path(name) for name in synced if not name.endswith((".npy", "journal"))]
    tails = {folder.parts[-2:] for folder in folders}
    assert ("cam", "deep") in tails and ("streams", "cam") in tails
    assert any(folder.parent.name == "staging" for folder in folders)  # its "streams"


def test_streams_continue_into_the_next_experiment(daemon: DaemonProcess) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        stream = client.stream("camera/frame_times", ["t"], "f8")
        stream.extend(np.arange(10.0)[:, None])
        first = Path(client.stop())
        stream.extend(np.arange(10.0, 15.0)[:, None])
        second = Path(client.stop())
        third = Path(client.stop())
    sizes = []
    for path in (first, second, third):
        descriptor = load_json(path)["camera"]["frame_times"]
        table = np.load(path.parent / descriptor["file"])
        assert len(table) == descriptor["rows"]
        sizes.append(list(table["t"]))
    assert sizes == [list(np.arange(10.0)), list(np.arange(10.0, 15.0)), []]


def test_a_stream_ends_with_the_experiment_its_session_said_bye_in(make_daemon) -> None:
    """A process that declared a stream and closed leaves no empty file (and no
    open one) in later experiments, also after a restart from the journal; a
    process killed without bye may come back, so its stream goes on."""
    first = make_daemon()
    spawn = multiprocessing.get_context("spawn")
    done = {name: spawn.Event() for name in ("trial", "camera")}
    closing = spawn.Process(
        target=rig_processes.stream_rows,
        args=("trial", first.data, first.control, 1, 100, done["trial"]),
    )
    hanging = spawn.Process(
        target=rig_processes.stream_sync_and_hang,
        args=("camera", first.data, first.control, 50, done["camera"]),
    )
    for worker in (closing, hanging):
        worker.start()
    for event in done.values():
        assert event.wait(120)
    closing.join(60)
    hanging.kill()  # SIGKILL: no bye, sockets left as they were
    hanging.join(60)

    def streams(path: Path) -> dict[str, int]:
        saved = load_json(path)
        found = {}
        for name in ("trial", "camera"):
            descriptor = saved.get(name, {}).get("log0" if name == "trial" else "log")
            if descriptor is not None:
                assert len(np.load(path.parent / descriptor["file"])) == descriptor["rows"]
                found[name] = descriptor["rows"]
        return found

    def stream_files(path: Path) -> set[str]:
        return {file.stem for file in path.parent.rglob("*.npy")}

    one = Path(first.stop()["path"])
    assert streams(one) == {"trial": 100, "camera": 50}
    first.kill9()  # the next experiment's BEGIN is all a restart has
    second = make_daemon(data=first.data, control=first.control)
    two = Path(second.stop()["path"])
    assert streams(two) == {"camera": 0}
    assert stream_files(two) == {"log"}
    with Client("trial", second.data, second.control) as client:  # the process again
        client.stream("trial/log0", ["row", "stream", "x"], "f8").extend(np.ones((5, 3)))
        three = Path(client.stop())
    assert streams(three) == {"trial": 5, "camera": 0}


def test_a_slow_stream_is_not_held_back(daemon: DaemonProcess) -> None:
    with Client("stimulus", daemon.data, daemon.control) as client:
        stream = client.stream(
            "stimulus/dynamic_log", ["t", "luminance"], "f8", flush_interval=0.02
        )
        stream.append([0.0, 1.0])
        # No flush, no sync: the client's I/O thread sends the partial block.
        wait_for(
            lambda: [s["messages"]["messages"] for s in daemon.status()["sources"]] == [2],
            what="the lone row's block",
        )


def test_rows_appended_before_close_are_delivered(daemon: DaemonProcess) -> None:
    client = Client("camera", daemon.data, daemon.control)
    stream = client.stream("camera/frame_times", ["t"], "f8", flush_interval=60)
    for index in range(10):
        stream.append([index])
    client.close()
    with pytest.raises(ClientClosedError):
        stream.append([10])
    path = Path(daemon.stop()["path"])
    table = np.load(path.parent / load_json(path)["camera"]["frame_times"]["file"])
    assert list(table["t"]) == list(range(10))


def test_a_flush_interval_that_is_not_finite_seconds_is_refused(daemon: DaemonProcess) -> None:
    """The I/O thread computes how long it may sleep from the flush interval:
    an infinite one (meant as "full blocks only") once ended that thread at
    the first partial block, and nothing the client sent arrived any more.
    Such an interval is refused at the call, as a bad value is."""
    with Client("camera", daemon.data, daemon.control) as client:
        for interval in (math.inf, math.nan, -1.0):
            with pytest.raises(ValueError, match="flush_interval"):
                client.stream("camera/frame_times", ["t"], flush_interval=interval)
        stream = client.stream("camera/frame_times", ["t"], flush_interval=0)
        stream.append([1.0])
        client.set_params("camera/settings", exposure=5.0)
        client.sync()
        path = Path(client.stop())
    assert load_json(path)["camera"]["settings"] == {"exposure": 5.0}


def test_bad_stream_use_is_refused(daemon: DaemonProcess) -> None:
    with Client("tracking", daemon.data, daemon.control) as client:
        with pytest.raises(ValueError, match="3 columns"):
            client.stream("tracking/a", ["x", "y", "z"]).extend(np.zeros((4, 2)))
        with pytest.raises(ValueError):
            client.stream("tracking/b", ["x", "y"]).append([1.0, 2.0, 3.0])
        with pytest.raises(TypeError, match="numeric"):
            client.stream("tracking/c", ["x"], dtype="U4")
        client.set_params("tracking/params", threshold=1)
        client.stream("tracking/params/threshold/x", ["x"])  # crosses a parameter
        other = Client("intruder", daemon.data, daemon.control)
        client.stream("tracking/owned", ["x"]).extend([[1.0]])
        client.sync()
        other.stream("tracking/owned", ["x", "y"])  # other columns
        other.stream("tracking/owned", ["x"])  # the same: takes the stream over
        other.close()
        client.sync()
        status = daemon.status()
    by_name = {s["name"]: s for s in status["sources"]}
    assert by_name["tracking"]["messages"]["rejected"] == 1
    assert by_name["intruder"]["messages"]["rejected"] == 1


def test_several_streams_from_several_processes(daemon: DaemonProcess) -> None:
    spawn = multiprocessing.get_context("spawn")
    plan = {"camera": (1, 3000), "tracking": (2, 5000), "stimulus": (1, 500)}
    done = {name: spawn.Event() for name in plan}
    workers = [
        spawn.Process(
            target=rig_processes.stream_rows,
            args=(name, daemon.data, daemon.control, streams, rows, done[name]),
        )
        for name, (streams, rows) in plan.items()
    ]
    for worker in workers:
        worker.start()
    for name in plan:
        assert done[name].wait(120), name
    for worker in workers:
        worker.join(60)
    path = Path(daemon.stop()["path"])
    saved = load_json(path)
    for name, (streams, rows) in plan.items():
        for index in range(streams):
            descriptor = saved[name][f"log{index}"]
            table = np.load(path.parent / descriptor["file"])
            assert descriptor["rows"] == rows == len(table)
            np.testing.assert_array_equal(table["row"], np.arange(rows))
            assert set(table["stream"]) == {index}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_long_stream_keeps_the_daemons_memory_flat(daemon: DaemonProcess) -> None:
    block = np.ones((1000, 20))  # 160 kB
    with Client("camera", daemon.data, daemon.control) as client:
        stream = client.stream("camera/big", [f"c{i}" for i in range(20)], "f8")
        for _ in range(20):
            stream.extend(block)
        client.sync()
        warm = peak_rss_mb(daemon.process.pid)
        for index in range(1250):  # 200 MB
            stream.extend(block)
            if index % 100 == 0:
                client.sync()
        client.sync()
        peak = peak_rss_mb(daemon.process.pid)
        path = Path(client.stop())
    descriptor = load_json(path)["camera"]["big"]
    assert descriptor["rows"] == 1_270_000
    assert (path.parent / descriptor["file"]).stat().st_size > 200e6
    assert peak - warm < 100, f"the daemon grew from {warm:.0f} MB to {peak:.0f} MB"


def test_a_stream_survives_kill9_and_restart_row_for_row(make_daemon, figures) -> None:
    first = make_daemon()
    client = Client("tracking", first.data, first.control)
    stream = client.stream("tracking/tail", ["row"], "i8", block_rows=50)
    appended = 0
    stop = threading.Event()

    def append() -> None:
        nonlocal appended
        while not stop.is_set() and appended < 20_000:
            stream.append([appended])
            appended += 1
            if appended % 50 == 0:
                stop.wait(0.001)

    worker = threading.Thread(target=append)
    worker.start()
    try:
        wait_for(lambda: appended > 5000, what="rows")
        first.kill9()
        make_daemon(data=first.data, control=first.control)
    finally:
        worker.join()
    client.sync(timeout=60)
    path = Path(client.stop())
    client.close()
    descriptor = load_json(path)["tracking"]["tail"]
    table = np.load(path.parent / descriptor["file"])
    figures(
        sent=appended,
        saved=len(table),
        lost=appended - len(table),
        faults="kill -9 mid-stream, restart; rows compared one by one",
    )
    np.testing.assert_array_equal(table["row"], np.arange(appended))
    assert descriptor["rows"] == appended == 20_000


def test_stream_names_cannot_meet_the_journal_or_each_other(make_daemon) -> None:
    first = make_daemon()
    with Client("camera", first.data, first.control) as client:
        client.stream("journal/x", ["v"]).extend([[1.0], [2.0]])
        client.stream("cam/t", ["v"]).extend([[3.0]])
        with pytest.raises(InvalidPathError, match="ends like a stream file"):
            client.stream("cam/t.npy/u", ["v"])  # a folder named like cam/t's file
        client.sync()
        first.kill9()
        second = make_daemon(data=first.data, control=first.control)  # resumes
        path = Path(client.stop())
    saved = load_json(path)
    assert np.load(path.parent / saved["journal"]["x"]["file"])["v"].tolist() == [1.0, 2.0]
    assert np.load(path.parent / saved["cam"]["t"]["file"])["v"].tolist() == [3.0]
    assert second.status()["pid"] == second.process.pid


def test_more_streams_than_a_low_open_file_limit_are_all_saved(make_daemon) -> None:
    """Each stream keeps its file open while the daemon runs. Past the soft
    limit most Linux systems start a process with (1024; 256 here), the
    streams past it had their blocks refused, and every save failed, unable
    to create the next journal. The daemon now raises its limit at start."""
    low = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, "
        "(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
        "sys.argv[0] = 'collectord'; runpy.run_module('collectord', run_name='__main__')"
    )
    daemon = make_daemon(python_args=("-c", low))
    count = 300
    with Client("trials", daemon.data, daemon.control) as client:
        for index in range(count):
            client.stream(f"trials/t{index:03d}", ["x"], "<f8").extend(np.full((1, 1), index))
        path = Path(client.stop())
    saved = load_json(path)
    assert saved["collectord"]["sources"][0]["messages"]["rejected"] == 0
    for index in range(count):
        descriptor = saved["trials"][f"t{index:03d}"]
        assert np.load(path.parent / descriptor["file"])["x"].tolist() == [index]


def test_stream_dtypes(daemon: DaemonProcess) -> None:
    with Client("camera", daemon.data, daemon.control) as client:
        big = client.stream("cam/big_endian", ["v"], ">f8")
        big.extend(np.array([[1.5], [2.5]], dtype=">f8"))
        with pytest.raises(TypeError, match="numeric dtype"):
            client.stream("cam/long_double", ["v"], np.longdouble)
        path = Path(client.stop())
    descriptor = load_json(path)["cam"]["big_endian"]
    assert descriptor["dtype"] == "<f8"
    assert np.load(path.parent / descriptor["file"])["v"].tolist() == [1.5, 2.5]


def test_integer_columns_refuse_what_they_cannot_hold(daemon: DaemonProcess) -> None:
    """numpy would store 70000 as 4464 in a uint16 column, 2.5 as 2, NaN as 0:
    each is refused at the call, and the rows around them arrive unchanged."""
    with Client("camera", daemon.data, daemon.control) as client:
        frames = client.stream("cam/frames", ["frame", "dropped"], "u2", block_rows=4)
        flags = client.stream("cam/flags", ["on"], "?")
        frames.append([1, 0])
        frames.append(np.array([2.0, 1.0]))  # floats that are whole numbers fit
        refused = (
            [70000, 0],
            [-1, 0],
            [2.5, 0],
            np.array([np.nan, 0.0]),
            np.array([3, 2**40]),
        )
        for row in refused:
            with pytest.raises(ValueError, match=r"cam/frames.*nothing was added"):
                frames.append(row)
        with pytest.raises(ValueError, match=r"column 'dropped' is uint16, which cannot hold -3"):
            frames.append([5, -3])
        with pytest.raises(ValueError, match=r"column 'frame' is uint16, which cannot hold nan"):
            frames.append([math.nan, 0])
        frames.extend(np.array([[3, 0], [4, 0]], dtype=np.int64))
        for block in (np.array([[5, 0], [65536, 0]]), np.array([[5.0, 0.0], [0.5, 0.0]])):
            with pytest.raises(ValueError, match=r"column '(frame|dropped)' is uint16"):
                frames.extend(block)
        with pytest.raises(ValueError, match=r"column 'frame' is uint16, which cannot hold 2.5"):
            frames.extend(np.array([[2.5, 0]], dtype=object))
        with pytest.raises(ValueError, match=r"cam/frames.*nothing was added"):
            frames.extend([[2**70, 0]])
        frames.extend([[5, 0]])
        flags.extend(np.array([[0], [1]]))
        with pytest.raises(ValueError, match="column 'on' is bool, which cannot hold 2"):
            flags.append([2])
        path = Path(client.stop())
    saved = load_json(path)["cam"]
    table = np.load(path.parent / saved["frames"]["file"])
    assert table["frame"].tolist() == [1, 2, 3, 4, 5]
    assert table["dropped"].tolist() == [0, 1, 0, 0, 0]
    assert np.load(path.parent / saved["flags"]["file"])["on"].tolist() == [False, True]


def test_extend_copies_so_the_caller_may_reuse_its_block_at_once(daemon: DaemonProcess) -> None:
    """Blocks reuse one array in the caller and land in several of the stream's slabs."""
    blocks, rows = 120, 1000  # 160 kB each: about 19 MB, over three 8 MiB slabs
    with Client("tracking", daemon.data, daemon.control) as client:
        stream = client.stream("tracking/reused", [f"c{i:02d}" for i in range(20)], "f8")
        block = np.empty((rows, 20))
        for index in range(blocks):
            block.fill(index)
            stream.extend(block)
        block.fill(-1.0)
        stream.extend(np.arange(20.0))  # one row, as a 1-D array
        path = Path(client.stop())
    descriptor = load_json(path)["tracking"]["reused"]
    table = np.load(path.parent / descriptor["file"])
    column = table["c07"]
    assert descriptor["rows"] == blocks * rows + 1 == len(column)
    assert np.array_equal(column[:-1], np.repeat(np.arange(blocks, dtype=float), rows))
    assert [table[f"c{i:02d}"][-1] for i in range(20)] == list(np.arange(20.0))


# -- wide streams -------------------------------------------------------------------------

#: As many columns as a stream may have, with 6-character names: the ``.npy``
#: header (about 76 KiB) needs version 2.0 of the format (1.0 holds 64 KiB).
WIDE_COLUMNS = [f"c{i:05d}" for i in range(MAX_COLUMNS)]
#: numpy.load refuses headers over 10000 bytes unless told otherwise.
HEADER_LIMIT = 10**7


def load_wide(file: Path) -> np.ndarray:
    return np.load(file, max_header_size=HEADER_LIMIT)


def wide_rows(count: int) -> np.ndarray:
    return np.random.default_rng(11).normal(0, 1e3, size=(count, MAX_COLUMNS))


@pytest.mark.parametrize(
    ("columns", "version"),
    [
        (["x", "y"], 1),
        (WIDE_COLUMNS, 2),  # over 64 KiB of header
        (["θ", "x"], 3),  # a name beyond Latin-1
        ([f"θ{i:05d}" for i in range(MAX_COLUMNS)], 3),
    ],
    ids=["narrow", "wide", "utf-8", "wide utf-8"],
)
def test_a_stream_files_header_is_numpys_and_keeps_its_length(columns, version: int) -> None:
    """The header is rewritten in place with the real row count at the save:
    it must be as long for 0 rows as for any count, and what numpy writes."""
    spec = StreamSpec(("rig", "t"), columns, "<f8", None, "s", "rig")
    empty = streamfiles._header(spec, 0)
    assert np.lib.format.read_magic(io.BytesIO(empty)) == (version, 0)
    assert len(streamfiles._header(spec, 10**20)) == len(empty)
    for rows in (0, 3):
        header = streamfiles._header(spec, rows)
        data = np.arange(rows * len(columns), dtype="<f8").view(spec.row_dtype)
        written = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "stored in format 2.0 / 3.0"
            np.save(written, data)
        assert written.getvalue() == header + data.tobytes()
        loaded = np.load(io.BytesIO(header + data.tobytes()), max_header_size=HEADER_LIMIT)
        assert loaded.dtype == spec.row_dtype and np.array_equal(loaded, data)


@pytest.mark.parametrize("fmt", ["npy", "csv", "hdf5", "parquet", "feather"])
def test_a_stream_of_the_most_columns_round_trips(make_daemon, tmp_path: Path, fmt: str) -> None:
    """hdf5 cannot hold a compound type this wide (HDF5 keeps a datatype in an
    object header message of at most 64 KiB): the ``.npy`` file is kept instead,
    and the descriptor says so."""
    if fmt == "hdf5":
        pytest.importorskip("h5py")
    if fmt in ("parquet", "feather"):
        pytest.importorskip("pyarrow")
    daemon = make_daemon(extra=("--config", str(config_file(tmp_path, fmt))))
    rows = wide_rows(5)
    with Client("rig", daemon.data, daemon.control) as client:
        stream = client.stream("rig/wide", WIDE_COLUMNS, "f8")
        stream.extend(rows[:2])
        for row in rows[2:]:
            stream.append(row)
        path = Path(client.stop())
    status = daemon.status()
    assert status["rejected"] == 0, status["sources"]
    descriptor = load_json(path)["rig"]["wide"]
    descriptor["_file"] = path.parent / descriptor["file"]
    assert descriptor["rows"] == 5 and descriptor["columns"] == WIDE_COLUMNS
    kept = "npy" if fmt == "hdf5" else fmt
    assert descriptor["format"] == kept
    assert descriptor["file"] == "streams/rig/wide" + FORMATS[kept][0]
    assert [p.name for p in descriptor["_file"].parent.iterdir()] == [descriptor["_file"].name]
    if fmt == "hdf5":
        assert "hdf5" in descriptor["conversion_failed"]
        assert "object header message is too large" in descriptor["conversion_failed"]
    else:
        assert "conversion_failed" not in descriptor
    if kept == "npy":
        table = load_wide(descriptor["_file"])
        names, values = list(table.dtype.names), np.stack([table[n] for n in WIDE_COLUMNS], 1)
    else:
        names, values = read_back(descriptor, kept)
    assert names == WIDE_COLUMNS
    np.testing.assert_array_equal(values.astype("<f8"), rows)


def test_blocks_near_a_small_size_limit_are_sent_whole(make_daemon, tmp_path: Path) -> None:
    """Under a daemon's limit of 16 KiB, ``extend`` cut its rows into blocks
    of exactly the limit less the header's room, without room for the
    block's body: MessageTooLargeError. And ``append`` filled blocks of
    64 KiB: the 81st row of 100 columns raised MessageTooLargeError, and so
    did every ``stop()`` after (it flushes the rows). Both now go as several
    blocks within the limit, every row saved."""
    config = tmp_path / "small.toml"
    config.write_text("[limits]\nmax_message_bytes = 16384\n")
    daemon = make_daemon(extra=("--config", str(config)))
    body = 16384 - 1024
    times = np.arange(float(body // 8))[:, None]
    wide = np.arange(100.0 * 100).reshape(100, 100)
    with Client("cam", daemon.data, daemon.control) as client:
        client.add_data("cam/ready", True)
        client.sync()  # the client has now learnt the daemon's limit
        client.stream("cam/times", ["t"], "f8").extend(times)
        stream = client.stream("cam/wide", [f"c{i}" for i in range(100)], "f8")
        for row in wide:
            stream.append(row)
        path = Path(client.stop())
    assert daemon.status()["rejected"] == 0
    saved = load_json(path)["cam"]
    assert np.load(path.parent / saved["times"]["file"])["t"].tolist() == times[:, 0].tolist()
    table = np.load(path.parent / saved["wide"]["file"])
    assert np.stack([table[f"c{i}"] for i in range(100)], 1).tolist() == wide.tolist()


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder``; skips where it cannot be mounted."""
    folder.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("needs mount")
    made = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace')}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_an_hdf5_file_that_finds_the_disk_full_keeps_the_npy_and_the_daemon(
    make_daemon, tmp_path: Path
) -> None:
    """HDF5 does not survive a write that fails: its file could not be closed,
    and the daemon died of a segmentation fault in the middle of the save
    (and again at each start, saving the experiment again). The stream is now
    kept as npy, as for any conversion that fails, and the daemon goes on."""
    pytest.importorskip("h5py")
    with small_disk(tmp_path / "disk", "3m") as disk:
        daemon = make_daemon(disk / "out", extra=("--config", str(config_file(tmp_path, "hdf5"))))
        rows = np.arange(200_000.0).reshape(100_000, 2)  # 1.6 MB: no room for a copy
        with Client("cam", daemon.data, daemon.control) as client:
            client.stream("cam/frames", ["t", "x"], "f8").extend(rows)
            path = Path(client.stop())
        descriptor = load_json(path)["cam"]["frames"]
        assert descriptor["format"] == "npy" and descriptor["file"] == "streams/cam/frames.npy"
        assert "No space left on device" in descriptor["conversion_failed"]
        table = np.load(path.parent / descriptor["file"])
        assert np.stack([table["t"], table["x"]], 1).tolist() == rows.tolist()
        assert daemon.status()["pid"] == daemon.process.pid
        daemon.close()


def test_every_stop_of_a_wide_stream_saves_one_experiment(daemon: DaemonProcess) -> None:
    """Each stop (the last one with no new rows) publishes one experiment and
    answers with it: a client never sees a failed save for a published one."""
    rows = wide_rows(9)
    parts = [rows[:4], rows[4:], rows[:0]]
    saved = []
    with Client("rig", daemon.data, daemon.control) as client:
        stream = client.stream("rig/wide", WIDE_COLUMNS, "f8")
        for part in parts:
            if len(part):
                stream.extend(part)
            saved.append(Path(client.stop()))
        status = daemon.status()
    assert status["rejected"] == 0, status["sources"]
    assert status["saved_experiments"] == 3
    published = sorted(daemon.output.glob("[0-9]*/*/*_metadata.json"))
    assert sorted(saved) == published
    for path, part in zip(saved, parts, strict=True):
        descriptor = load_json(path)["rig"]["wide"]
        table = load_wide(path.parent / descriptor["file"])
        assert descriptor["rows"] == len(part) == len(table)
        assert list(table.dtype.names) == WIDE_COLUMNS
        np.testing.assert_array_equal(table.view("<f8").reshape(len(part), MAX_COLUMNS), part)


def test_column_names_beyond_latin1_round_trip(daemon: DaemonProcess) -> None:
    """A name outside Latin-1 needs version 3.0 of the ``.npy`` format (a UTF-8 header)."""
    columns = ["θ", "Δt", "ω_tail", "x"]
    rows = np.arange(12.0).reshape(3, 4)
    with Client("rig", daemon.data, daemon.control) as client:
        client.stream("rig/angles", columns, "f8").extend(rows)
        path = Path(client.stop())
    assert daemon.status()["rejected"] == 0
    descriptor = load_json(path)["rig"]["angles"]
    table = np.load(path.parent / descriptor["file"])
    assert list(table.dtype.names) == columns and descriptor["rows"] == 3
    np.testing.assert_array_equal(np.stack([table[name] for name in columns], 1), rows)


# -- csv headers and column names ----------------------------------------------------------


def config_file(tmp_path: Path, fmt: str) -> Path:
    config = tmp_path / f"{fmt}.toml"
    config.write_text(f'[streams]\nstream_format = "{fmt}"\n')
    return config


def test_csv_headers_are_quoted(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(extra=("--config", str(config_file(tmp_path, "csv"))))
    columns = ["x,y", "z", 'note "q"', " spaced "]
    rows = np.array([[1.5, 2.0, -3.25, 4.0], [5.0, 6.5, 7.0, 8.0]])
    with Client("rig", daemon.data, daemon.control) as client:
        client.stream("rig/table", columns, "f8").extend(rows)
        path = Path(client.stop())
    descriptor = load_json(path)["rig"]["table"]
    with open(path.parent / descriptor["file"], newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == columns
        read = [{name: float(value) for name, value in row.items()} for row in reader]
    assert read == [dict(zip(columns, row, strict=True)) for row in rows.tolist()]


@pytest.mark.parametrize("bad", ["a\nb", "nul\x00", "tab\there", "bell\x07", "del\x7f", "\r"])
def test_the_client_refuses_control_characters_in_column_names(
    daemon: DaemonProcess, bad: str
) -> None:
    with Client("rig", daemon.data, daemon.control) as client:
        with pytest.raises(InvalidPathError, match="column") as raised:
            client.stream("rig/table", ["ok", bad], "f8")
        assert repr(bad) in str(raised.value)


def test_finishing_the_files_says_which_stream_is_being_converted(tmp_path: Path) -> None:
    """What ``status`` shows of a save that converts many streams (its step)."""
    files = streamfiles.StreamFiles(tmp_path)
    specs = [
        StreamSpec.parse(
            (node, "frames"),
            {"path": f"{node}/frames", "columns": ["a"], "dtype": "<f8"},
            "s",
            "x",
        )
        for node in ("cam", "tail", "stim")
    ]
    try:
        for spec in specs:
            files.open(spec)
            files.write(spec, np.arange(3.0).tobytes())
        said: list[str] = []
        kept = files.finish("csv", said.append)
    finally:
        files.close()
    assert said == [
        "converting cam/frames to csv (1 of 3)",
        "converting tail/frames to csv (2 of 3)",
        "converting stim/frames to csv (3 of 3)",
    ]
    assert {finished.format for finished in kept.values()} == {"csv"}


def test_a_failed_conversion_leaves_nothing_that_would_cost_the_npy(tmp_path: Path) -> None:
    """A conversion cut by a crash leaves a partial file (csv here). If the
    daemon restarted with another format and that conversion failed (HDF5
    cannot hold this many columns; a full disk), the ``.npy`` was kept as the
    stream's file beside the partial csv, and a start completing that save
    after another crash took the csv for a converted copy and deleted the
    ``.npy``, the only copy of the rows."""
    spec = StreamSpec.parse(
        ("cam", "wide"), {"path": "cam/wide", "columns": WIDE_COLUMNS, "dtype": "<f8"}, "s", "x"
    )
    files = streamfiles.StreamFiles(tmp_path)
    try:
        files.open(spec)
        files.write(spec, np.arange(float(MAX_COLUMNS)).tobytes())
        spec.rows += 1  # as the collector counts them
        npy = tmp_path / spec.file_name()
        partial = npy.with_suffix(".csv")
        partial.write_bytes(b"c00000,c00001\n0.0,")
        kept = files.finish("hdf5")
    finally:
        files.close()
    assert kept[("cam", "wide")].format == "npy"
    assert not partial.exists()
    _remove_converted(tmp_path)  # what a start completing the save does
    assert load_wide(npy)["c00007"].tolist() == [7.0]


def test_finishing_without_converting_says_nothing(tmp_path: Path) -> None:
    files = streamfiles.StreamFiles(tmp_path)
    spec = StreamSpec.parse(
        ("cam", "x"), {"path": "cam/x", "columns": ["a"], "dtype": "<f8"}, "s", "x"
    )
    try:
        files.open(spec)
        said: list[str] = []
        files.finish("npy", said.append)
    finally:
        files.close()
    assert said == []
