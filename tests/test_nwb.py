"""``collectord export nwb``: experiments saved by real daemons, exported, read back with
pynwb, checked by pynwb's validator and by nwbinspector."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DaemonProcess, run_cli, saved_experiments, wait_for
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO, NWBFile, validate

from collectord import (
    Client,
    clock_samples,
    formats,
    jsonio,
    load_changes,
    load_json,
    to_daemon_time,
)
from collectord.nwb import fields


def exported(folder: Path, *args: str) -> Path:
    """``collectord export nwb FOLDER ARGS``, which must succeed; the file it wrote."""
    result = run_cli("export", "nwb", str(folder), *args)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def exported_log(daemon: DaemonProcess, log: list[dict[str, Any]]) -> Path:
    """The NWB file of an experiment whose stimulus published ``log``."""
    with Client("stimulus", daemon.data, daemon.control) as client:
        client.add_data("stimulus/log", log)
        client.sync()
    return exported(Path(daemon.stop()["path"]).parent)


#: nwbinspector's critical findings on a file whose tree names no subject: DANDI
#: requires one, and the export makes none up (it notes what is missing).
NO_SUBJECT = frozenset({"check_subject_exists"})


def check_valid(path: Path, allowed: frozenset[str] = frozenset()) -> None:
    """Assert pynwb's validator finds nothing, and nwbinspector nothing critical
    beyond the ``allowed`` checks."""
    assert validate(path=str(path)) == []
    findings = inspect_nwbfile(nwbfile_path=str(path))
    serious = [
        (f.check_function_name, f.object_name, f.message)
        for f in findings
        if f.importance.value >= Importance.CRITICAL.value and f.check_function_name not in allowed
    ]
    assert not serious


def stream_rows(folder: Path, descriptor: dict[str, Any]) -> np.ndarray:
    return formats.read(folder / descriptor["file"], descriptor["format"], descriptor["dtype"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """The demo's experiment folder, its metadata, and its export (default file name)."""
    output = tmp_path_factory.mktemp("demo")
    result = run_cli("demo", "--output", str(output), "--duration", "1.5")
    assert result.returncode == 0, result.stdout + result.stderr
    (metadata,) = saved_experiments(output)
    folder = metadata["_path"].parent
    path = exported(folder)
    assert path == folder / (metadata["_path"].name.removesuffix("_metadata.json") + ".nwb")
    return folder, load_json(metadata["_path"]), path


def test_the_demo_export_is_valid_nwb(demo: tuple[Path, dict[str, Any], Path]) -> None:
    check_valid(demo[2])


def test_session_and_subject_come_from_the_tree(demo: tuple[Path, dict[str, Any], Path]) -> None:
    _, tree, path = demo
    account, animal = tree["collectord"], tree["general"]["animal"]
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        started = nwbfile.session_start_time
        assert started.tzinfo is not None
        assert started == dt.datetime.fromisoformat(account["started"])
        assert nwbfile.identifier == account["run_id"]
        assert list(nwbfile.experimenter) == [tree["general"]["basic"]["experimenter_name"]]
        assert nwbfile.session_id == tree["general"]["session_id"]
        assert "flashes" in nwbfile.session_description  # the protocol, as none is given
        subject = nwbfile.subject
        assert subject.species == animal["species"]
        assert subject.genotype == animal["genotype"]
        assert subject.age == f"P{animal['age']}D"
        assert subject.sex == "U"  # the tree does not say
        assert subject.subject_id == tree["general"]["fish_id"]


def test_every_stream_is_there_with_all_its_rows(demo: tuple[Path, dict[str, Any], Path]) -> None:
    folder, tree, path = demo
    streams = {
        "camera.frame_times": tree["camera"]["frame_times"],
        "tracking.tail_log": tree["tracking"]["tail_log"],
    }
    account = tree["collectord"]
    started = dt.datetime.fromisoformat(account["started"])
    length = (dt.datetime.fromisoformat(account["stopped"]) - started).total_seconds()
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert set(streams) <= set(nwbfile.acquisition)
        for name, descriptor in streams.items():
            rows = stream_rows(folder, descriptor)
            assert len(rows) == descriptor["rows"] > 0
            series = nwbfile.acquisition[name]
            values = [c for c in descriptor["columns"] if c != "t"]
            expected = np.column_stack([rows[c] for c in values])
            data = np.asarray(series.data[()]).reshape(len(rows), len(values))
            np.testing.assert_array_equal(data, expected)
            # Each demo process stamps its rows with a clock of its own (offset, drift):
            # on the session's axis through the offsets recorded, within the session.
            samples = clock_samples(tree, descriptor["clock"])
            on_axis = to_daemon_time(rows["t"], samples) - started.timestamp()
            np.testing.assert_allclose(series.timestamps[()], on_axis, rtol=0, atol=1e-9)
            assert on_axis[0] > -0.05 and on_axis[-1] < length + 0.05
        assert nwbfile.acquisition["tracking.tail_log"].unit == "rad"
        assert nwbfile.acquisition["camera.frame_times"].unit == "n/a"  # undeclared ("")


def test_the_stimulus_log_is_one_interval_per_stimulus(
    demo: tuple[Path, dict[str, Any], Path],
) -> None:
    _, tree, path = demo
    log = tree["stimulus"]["log"]
    protocol_start = fields.moment(tree["general"]["t_protocol_start"])
    assert protocol_start is not None
    offset = (
        protocol_start - dt.datetime.fromisoformat(tree["collectord"]["started"])
    ).total_seconds()
    with NWBHDF5IO(str(path), "r") as io:
        table = io.read().intervals["stimulus_log"].to_dataframe()
    assert len(table) == len(log) > 0
    np.testing.assert_allclose(table["start_time"], [e["t_start"] + offset for e in log])
    np.testing.assert_allclose(table["stop_time"], [e["t_stop"] + offset for e in log])
    assert list(table["stimulus_name"]) == [e["name"] for e in log]  # "name" is the table's
    assert list(table["index"]) == [e["index"] for e in log]
    assert list(table["luminance"]) == [e["luminance"] for e in log]
    assert list(table["real_time_start"]) == [e["real_time_start"] for e in log]


def test_the_whole_metadata_is_in_the_file_as_written(
    demo: tuple[Path, dict[str, Any], Path],
) -> None:
    folder, tree, path = demo
    (metadata,) = folder.glob("*_metadata.json")
    with NWBHDF5IO(str(path), "r") as io:
        text = io.read().data_collection
    assert text == metadata.read_text(encoding="utf-8")
    assert jsonio.loads(text) == tree


def test_missing_files_are_said_and_the_rest_exported(
    demo: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    folder, tree, _ = demo
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    (copy / tree["tracking"]["tail_log"]["file"]).unlink()
    (changes,) = copy.glob("*_changes.jsonl")  # as an experiment saved before the history
    changes.unlink()
    result = run_cli("export", "nwb", str(copy))
    assert result.returncode == 0, result.stderr
    assert "stream tracking/tail_log: file streams/tracking/tail_log" in result.stderr
    assert f"no parameter history ({changes.name})" in result.stderr
    with NWBHDF5IO(result.stdout.strip(), "r") as io:
        acquisition = io.read().acquisition
        assert "tracking.tail_log" not in acquisition
        assert "parameter_history" not in acquisition
        assert (
            len(acquisition["camera.frame_times"].timestamps)
            == tree["camera"]["frame_times"]["rows"]
        )


def test_the_demos_parameter_history_is_a_table(
    demo: tuple[Path, dict[str, Any], Path],
) -> None:
    folder, tree, path = demo
    changes = load_changes(folder)
    started = dt.datetime.fromisoformat(tree["collectord"]["started"]).timestamp()
    with NWBHDF5IO(str(path), "r") as io:
        table = io.read().acquisition["parameter_history"].to_dataframe()
    assert len(table) == len(changes) > 0
    np.testing.assert_allclose(table["time"], [c.time - started for c in changes], atol=1e-6)
    assert list(table["path"]) == [c.path for c in changes]
    assert list(table["source"]) == [c.source or "" for c in changes]
    assert [jsonio.loads(v) for v in table["value"]] == [c.value for c in changes]
    # The experimenter tuned the tracking threshold mid-recording, after setting it.
    threshold = table[table["path"] == "tracking/tail/threshold"]
    assert [jsonio.loads(v) for v in threshold["value"]] == [0.12, 0.1]
    assert list(threshold["time"]) == sorted(threshold["time"])


def write_changes(metadata: Path, changes: list[dict[str, Any]]) -> None:
    """A changes file in the agreed format (``collectord/changes.py``), written by hand."""
    stem = metadata.name.removesuffix("_metadata.json")
    with open(metadata.with_name(f"{stem}_changes.jsonl"), "w", encoding="utf-8") as file:
        for change in changes:
            file.write(json.dumps(jsonio.to_json(change), allow_nan=False) + "\n")


def test_the_parameter_history_is_a_table(make_daemon: Any, tmp_path: Path) -> None:
    daemon: DaemonProcess = make_daemon()
    with Client("tracking", daemon.data, daemon.control) as client:
        client.set_params("tracking/tail", threshold=0.12)
        client.sync()
    metadata = Path(daemon.stop()["path"])
    started = dt.datetime.fromisoformat(load_json(metadata)["collectord"]["started"]).timestamp()
    write_changes(
        metadata,
        [
            {"time": started, "source": None, "session": None, "seq": None,
             "path": "camera/gain", "value": 1.0, "carried": True},
            {"time": started + 0.5, "source": "tracking", "session": "abc", "seq": 3,
             "path": "tracking/tail/threshold", "value": 0.12, "carried": False},
            {"time": started + 1.25, "source": "tracking", "session": "abc", "seq": 4,
             "path": "tracking/tail/threshold", "value": float("nan"), "carried": False},
            {"time": started + 2.0, "source": "camera", "session": "def", "seq": 9,
             "path": "camera/key", "value": b"\x00\xff", "carried": False},
        ],
    )  # fmt: skip
    changes = load_changes(metadata)
    path = exported(metadata.parent)
    check_valid(path, NO_SUBJECT)
    with NWBHDF5IO(str(path), "r") as io:
        table = io.read().acquisition["parameter_history"].to_dataframe()
    assert len(table) == len(changes) == 4
    np.testing.assert_allclose(table["time"], [c.time - started for c in changes], atol=1e-6)
    assert list(table["source"]) == ["", "tracking", "tracking", "camera"]
    assert list(table["session"]) == ["", "abc", "abc", "def"]
    assert list(table["seq"]) == [-1, 3, 4, 9]
    assert list(table["path"]) == [c.path for c in changes]
    assert list(table["carried"]) == [True, False, False, False]
    values = [jsonio.loads(text) for text in table["value"]]
    assert values[:2] == [1.0, 0.12] and np.isnan(values[2]) and values[3] == b"\x00\xff"


def test_a_tree_without_stytras_layout_exports_what_it_has(
    make_daemon: Any, tmp_path: Path
) -> None:
    """No animal, no basic, no stimulus log; streams in parquet, one with its times on a
    clock 2.5 s ahead of the daemon's, one without a time column."""
    config = tmp_path / "parquet.toml"
    config.write_text('[streams]\nstream_format = "parquet"\n')
    daemon: DaemonProcess = make_daemon(extra=("--config", str(config)))

    def ahead() -> float:
        return time.time() + 2.5

    with Client("scope", daemon.data, daemon.control, clock=ahead) as client:
        client.set_params("scope/laser", power=12.5, wavelength=920)
        client.add_data("stimulus/log", ["not", "stytra's"])
        planes = client.stream("scope/planes", ["stamp", "z"], "f8", units=["s", "um"],
                               time_column="stamp")  # fmt: skip
        counts = client.stream("scope/counts", ["frame", "photons"], "i8")
        temperature = client.stream("scope/temperature", ["t", "celsius"], "f4")
        stamps = []
        for i in range(50):
            stamps.append(ahead())
            planes.append([stamps[-1], i * 2.0])
            counts.append([i, 1000 + i])
            temperature.append([i / 10, 20 + i / 100])
        client.sync()
        # The first burst of clock exchanges may end after the sync: wait for it.
        wait_for(
            lambda: any(s.get("clock", {}).get("count") for s in daemon.status()["sources"]),
            what="a clock sample of the scope",
        )
    metadata = Path(daemon.stop()["path"])
    tree = load_json(metadata)
    assert tree["scope"]["planes"]["format"] == "parquet"
    result = run_cli("export", "nwb", str(metadata), "-o", str(tmp_path / "scope.nwb"))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "scope.nwb"
    assert "stimulus log (stimulus/log): not a list of maps" in result.stderr
    assert "subject: no subject_id or species or age in the tree" in result.stderr
    check_valid(tmp_path / "scope.nwb", NO_SUBJECT)
    with NWBHDF5IO(str(tmp_path / "scope.nwb"), "r") as io:
        nwbfile: NWBFile = io.read()
        assert nwbfile.subject is None
        assert nwbfile.experimenter is None
        assert "stimulus_log" not in (nwbfile.intervals or {})
        planes = nwbfile.acquisition["scope.planes"]
        assert planes.unit == "um"
        np.testing.assert_array_equal(planes.data[()], np.arange(50) * 2.0)
        started = dt.datetime.fromisoformat(tree["collectord"]["started"]).timestamp()
        on_session_axis = np.array(stamps) - 2.5 - started
        # Mapped through the recorded offsets: loopback is good to well within 50 ms.
        assert np.max(np.abs(planes.timestamps[()] - on_session_axis)) < 0.05
        # A column named t, with no time_column declared: times as the client wrote them.
        temperature = nwbfile.acquisition["scope.temperature"]
        assert list(temperature.timestamps[()]) == [np.float32(i / 10) for i in range(50)]
        assert "no clock offsets" in temperature.description
        table = nwbfile.acquisition["scope.counts"].to_dataframe()
        assert list(table["frame"]) == list(range(50))
        assert list(table["photons"]) == [1000 + i for i in range(50)]
        assert jsonio.loads(nwbfile.data_collection) == tree


def test_stimuli_of_mixed_kinds_keep_every_value(make_daemon: Any) -> None:
    """stytra's log as stytra writes it: nested values, a key only some stimuli have, a
    0 where a datetime could not be written; no protocol start in the tree."""
    log = [
        {"name": "flash", "t_start": 0.0, "t_stop": 4.0, "luminance": 0.3, "shuffled": False,
         "color": [82, 82, 82], "df_param": {"t": [0, 2]}, "real_time_stop": 0, "n": 1},
        {"name": "pause", "t_start": 4.0, "t_stop": 6.5, "luminance": 1, "shuffled": True,
         "color": [0, 0, 0], "df_param": {"t": [0]}, "real_time_stop": "2019-07-02T16:31:16",
         "n": 2, "phase": float("nan")},
    ]  # fmt: skip
    daemon: DaemonProcess = make_daemon()
    with Client("stimulus", daemon.data, daemon.control) as client:
        client.add_data("stimulus/log", log)
        client.sync()
    metadata = Path(daemon.stop()["path"])
    result = run_cli("export", "nwb", str(metadata.parent))
    assert result.returncode == 0, result.stderr
    assert "stimulus log: no protocol start" in result.stderr
    assert "the parameter history is empty" in result.stderr
    check_valid(Path(result.stdout.strip()), NO_SUBJECT)
    with NWBHDF5IO(result.stdout.strip(), "r") as io:
        table = io.read().intervals["stimulus_log"].to_dataframe()
    assert list(table["start_time"]) == [0.0, 4.0] and list(table["stop_time"]) == [4.0, 6.5]
    assert list(table["stimulus_name"]) == ["flash", "pause"]
    assert list(table["luminance"]) == [0.3, 1.0]  # ints and floats: floats
    assert list(table["shuffled"]) == [False, True]
    assert list(table["n"]) == [1, 2]
    for key in ("color", "df_param", "real_time_stop"):  # not one scalar kind: JSON
        assert [jsonio.loads(text) for text in table[key]] == [entry[key] for entry in log]
    assert table["phase"][0] == ""  # the first stimulus has none
    assert np.isnan(jsonio.loads(table["phase"][1]))


def test_stream_columns_named_like_a_tables_own_fields_are_exported_and_read_back(
    make_daemon: Any,
) -> None:
    """A table without a time column whose columns are named ``id``, ``name`` and
    ``description`` (a frame counter's, say): ``id`` made a file pynwb could not
    read back, ``name`` and ``description`` one it could not write."""
    daemon: DaemonProcess = make_daemon()
    columns = ["id", "name", "description", "column_id"]
    with Client("camera", daemon.data, daemon.control) as client:
        client.stream("camera/frames", columns, "i8").extend(
            np.arange(12, dtype="i8").reshape(3, 4)
        )
        client.sync()
    metadata = Path(daemon.stop()["path"])
    path = exported(metadata.parent)
    check_valid(path, NO_SUBJECT)
    with NWBHDF5IO(str(path), "r") as io:
        table = io.read().acquisition["camera.frames"]
        # A column keeps its name unless the table has it: then column_ in front,
        # as often as it takes to be unique.
        assert table.colnames == ("column_column_id", "column_name", "column_description",
                                  "column_id")  # fmt: skip
        rows = table.to_dataframe()
        for i, column in enumerate(table.colnames):
            assert list(rows[column]) == [i, 4 + i, 8 + i]
            assert table[column].description.startswith(f"column {columns[i]} of")


def test_stimulus_values_beyond_64_bit_signed_keep_every_digit(make_daemon: Any) -> None:
    """Integers span -2**63 .. 2**64-1 (protocol.md): a column mixing both ends made
    the export fail with an OverflowError, and floats would lose digits."""
    log = [
        {"t_start": 0.0, "t_stop": 1.0, "seed": 2**64 - 1, "mixed": 2**60 + 1, "n": -(2**63)},
        {"t_start": 1.0, "t_stop": 2.0, "seed": -1, "mixed": 0.5, "n": 2**63 - 1},
    ]
    path = exported_log(make_daemon(), log)
    with NWBHDF5IO(str(path), "r") as io:
        table = io.read().intervals["stimulus_log"].to_dataframe()
    assert list(table["n"]) == [-(2**63), 2**63 - 1]  # int64 holds these
    for key in ("seed", "mixed"):  # no HDF5 number type holds these: JSON
        assert [jsonio.loads(text) for text in table[key]] == [entry[key] for entry in log]


def test_stimulus_keys_hdf5_cannot_name_or_that_meet_are_all_exported(make_daemon: Any) -> None:
    """Keys "" and "." (HDF5 names no dataset so), "a/b" beside "a_b" and "name"
    beside "stimulus_name" (one column name for two keys) failed the export."""
    log = [
        {"t_start": 0.0, "t_stop": 1.0, "": 1, ".": 2, "a/b": 3, "a_b": 4, "name": "x",
         "stimulus_name": "y"},
    ]  # fmt: skip
    path = exported_log(make_daemon(), log)
    with NWBHDF5IO(str(path), "r") as io:
        intervals = io.read().intervals["stimulus_log"]
        described = {
            intervals[column].description: intervals[column].data[0]
            for column in intervals.colnames
            if column not in ("start_time", "stop_time")
        }
    values = {f"the stimulus's {key!r}": value for key, value in log[0].items()}
    del values["the stimulus's 't_start'"], values["the stimulus's 't_stop'"]
    assert {k: v.decode() if isinstance(v, bytes) else v for k, v in described.items()} == values


def test_fields_holding_bytes_are_exported_as_tagged_json(make_daemon: Any) -> None:
    """A species or session id sent as bytes (a C client's byte string, say)
    failed the export: "Object of type bytes is not JSON serializable"."""
    daemon: DaemonProcess = make_daemon()
    with Client("rig", daemon.data, daemon.control) as client:
        client.set_params("general/animal", species=b"Danio rerio", comments={"tank": b"\x07"})
        client.add_data("general/session_id", b"s1")
        client.sync()
    metadata = Path(daemon.stop()["path"])
    path = exported(metadata.parent)
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert jsonio.loads(nwbfile.subject.species) == b"Danio rerio"
        assert jsonio.loads(nwbfile.subject.description) == {"tank": b"\x07"}
        assert jsonio.loads(nwbfile.session_id) == b"s1"


def test_a_map_file_points_fields_at_other_paths(make_daemon: Any, tmp_path: Path) -> None:
    daemon: DaemonProcess = make_daemon()
    with Client("rig", daemon.data, daemon.control) as client:
        client.set_params("session", operator="Doe, Jane", lab="Vision", animal="m3")
        client.set_params("mouse", species="Mus musculus", sex="female", age="P60D")
        client.sync()
    metadata = Path(daemon.stop()["path"])
    mapping = tmp_path / "map.toml"
    mapping.write_text(
        'experimenter = "session/operator"\nlab = "session/lab"\n'
        '"subject.subject_id" = ["general/fish_id", "session/animal"]\n'
        '"subject.species" = "mouse/species"\n"subject.sex" = "mouse/sex"\n'
        '"subject.age" = "mouse/age"\n'
    )
    path = exported(metadata.parent, "--map", str(mapping))
    check_valid(path)
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert list(nwbfile.experimenter) == ["Doe, Jane"]
        assert nwbfile.lab == "Vision"
        subject = nwbfile.subject
        assert (subject.subject_id, subject.species, subject.sex, subject.age) == (
            "m3", "Mus musculus", "F", "P60D"
        )  # fmt: skip


def test_a_bad_map_file_is_named(tmp_path: Path) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text('{"subject.colour": "fish/colour"}')
    result = run_cli("export", "nwb", str(tmp_path), "--map", str(mapping))
    assert result.returncode == 1
    assert "unknown field 'subject.colour'" in result.stderr and str(mapping) in result.stderr


def test_the_command_has_help_with_an_example() -> None:
    for command in (("export",), ("export", "nwb")):
        result = run_cli(*command, "--help")
        assert result.returncode == 0
        assert "example:" in result.stdout and "collectord export nwb" in result.stdout


def test_an_unwritable_target_is_named(
    demo: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    target = tmp_path / "no such folder" / "x.nwb"
    result = run_cli("export", "nwb", str(demo[0]), "-o", str(target))
    assert result.returncode == 1
    assert f"collectord export: cannot write {target}" in result.stderr
    assert not target.parent.exists()


def test_a_folder_without_metadata_is_refused(tmp_path: Path) -> None:
    result = run_cli("export", "nwb", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path}: no *_metadata.json" in result.stderr


def test_without_pynwb_the_install_command_is_named(tmp_path: Path) -> None:
    """pynwb made unimportable in a real interpreter (``sys.modules`` entry None)."""
    blocked = (
        "import sys; sys.modules['pynwb'] = None; from collectord.cli import main; "
        f"sys.exit(main(['export', 'nwb', {str(tmp_path)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "pip install 'collectord[nwb]'" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["npy", "csv", "hdf5", "parquet", "feather"])
@pytest.mark.parametrize("dtype", ["<f8", "<f2", "<i8", "<u8", "?"])
def test_formats_read_gives_every_stream_file_back(tmp_path: Path, fmt: str, dtype: str) -> None:
    table = np.zeros(7, dtype=[("a", dtype), ("b,c", dtype)])
    table["a"] = [1, 0, 1, 1, 0, 1, 0]
    table["b,c"] = np.array([0, 1, 1, 0, 1, 3, 2]).astype(dtype)
    for rows in (table, table[:0]):
        np.save(tmp_path / "s.npy", rows)
        written = formats.convert(tmp_path / "s.npy", fmt, None)
        back = formats.read(written, fmt, dtype)
        assert back.dtype == rows.dtype
        np.testing.assert_array_equal(back, rows)
