"""``collectord show``: a saved experiment printed, and drawn with --plot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, saved_experiments

from collectord import Client, jsonio, load_changes, load_json
from collectord.show import INSTALL, Experiment, report, short

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def saved(make_daemon) -> list[Path]:
    """Two experiments of a real daemon: the second carries the first's values in."""
    daemon = make_daemon()
    with Client("cam", daemon.data, daemon.control) as client:
        client.set_params("cam/settings", exposure=4.0, gain=2.0)
        frames = client.stream("cam/frames", ["i", "t"], "f8")
        for i in range(50):
            frames.append([i, i * 0.5])
        client.add_data("cam/profile", list(range(100)))
        client.add_data("cam/note", "x" * 500)
        client.sync()
        client.set_params("cam/settings", exposure=5.0)
        client.stop()
        client.set_params("cam/settings", gain=3.0)
        frames.append([50, 25.0])
        client.stop()
    return [metadata["_path"].parent for metadata in saved_experiments(daemon.output)]


def test_show_prints_the_tree_sources_streams_and_history(saved: list[Path]) -> None:
    first, second = saved
    result = run_cli("show", str(first))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  cam/\n" in out
    assert "      exposure: 5.0\n" in out  # the final value, in the tree
    assert "    profile: [0, 1, 2, 3, 4, 5, ...] (100 items)\n" in out
    assert "(502 chars)" in out
    assert "    frames: stream, 50 rows (see Streams)\n" in out
    (account,) = load_json(next(first.glob("*_metadata.json")))["collectord"]["sources"]
    messages = str(account["messages"]["messages"])  # appends batch as they please
    (source,) = (line for line in out.splitlines() if line.startswith("  cam "))
    assert source.split()[3:7] == [messages, "0", "0", "none"]  # rejected, lost, gaps
    (stream,) = (line for line in out.splitlines() if line.startswith("  cam/frames "))
    assert stream.split() == ["cam/frames", "50", "i,", "t", "<f8", "streams/cam/frames.npy"]
    history = out[out.index("Parameter history") :].splitlines()
    assert history[0] == "Parameter history (3 values, 0 carried in; times since the start)"
    assert [line.split()[2:] for line in history[2:]] == [
        ["cam", "1", "cam/settings/exposure", "4.0"],
        ["cam", "1", "cam/settings/gain", "2.0"],
        ["cam", str(load_changes(first)[-1].seq), "cam/settings/exposure", "5.0"],
    ]

    out = run_cli("show", str(second), "--history", "2").stdout
    history = out[out.index("Parameter history") :].splitlines()
    assert history[0] == "Parameter history (3 values, 2 carried in; times since the start)"
    assert [line.split()[1:] for line in history[2:4]] == [
        ["s", "cam", "carried", "cam/settings/exposure", "5.0"],
        ["s", "cam", "carried", "cam/settings/gain", "2.0"],
    ]
    assert history[4] == "  ... 1 more (--history 0 shows all)"


def test_show_plot_draws_a_png(saved: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason=f"--plot needs matplotlib: {INSTALL}")
    target = tmp_path / "first.png"
    result = run_cli("show", str(saved[0]), "--plot", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes().startswith(PNG_SIGNATURE)
    assert f"plot: {target}" in result.stdout


def test_show_plot_to_a_folder_that_is_not_there_is_named(
    saved: list[Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib", reason=f"--plot needs matplotlib: {INSTALL}")
    target = tmp_path / "no-such-folder" / "first.png"
    result = run_cli("show", str(saved[0]), "--plot", str(target))
    assert result.returncode == 1
    assert f"collectord show: cannot write {target}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_metadata_file_is_named(saved: list[Path], tmp_path: Path) -> None:
    # The JSON error alone ("Expecting value: line 2 column 1") named no file.
    folder = tmp_path / "copy"
    shutil.copytree(saved[0], folder)
    (metadata,) = folder.glob("*_metadata.json")
    metadata.write_text(metadata.read_text()[:40])
    result = run_cli("show", str(folder))
    assert result.returncode == 1
    assert f"collectord show: {metadata} is not readable as JSON: " in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "hdf5", "parquet", "feather"])
def test_streams_in_every_format_are_read_back(make_daemon, tmp_path: Path, fmt: str) -> None:
    """What ``--plot`` draws: the rows as saved, whatever the stream format,
    column names with a comma or a quote included (a CSV header quotes them)."""
    if fmt == "hdf5":
        pytest.importorskip("h5py", reason="pip install 'collectord[hdf5]'")
    elif fmt != "csv":
        pytest.importorskip("pyarrow", reason="pip install 'collectord[arrow]'")
    config = tmp_path / f"{fmt}.toml"
    config.write_text(f'[streams]\nstream_format = "{fmt}"\n')
    daemon = make_daemon(extra=("--config", str(config)))
    columns = ["t", "x,y", 'note "q"']
    with Client("cam", daemon.data, daemon.control) as client:
        frames = client.stream("cam/frames", columns, "f8")
        for i in range(20):
            frames.append([i * 0.5, i, -i])
        folder = Path(client.stop()).parent
    table = Experiment(folder).stream_table("cam/frames")
    assert table is not None
    assert list(table.dtype.names or ()) == columns
    assert table["x,y"].tolist() == list(range(20))
    assert table['note "q"'].tolist() == [-i for i in range(20)]


def test_a_time_column_on_the_epoch_is_drawn_against_the_start(tmp_path: Path) -> None:
    """A descriptor's ``time_column`` (seconds since the epoch) is the x axis;
    one on a clock of its own is drawn, and said not to be aligned."""
    pytest.importorskip("matplotlib", reason=f"--plot needs matplotlib: {INSTALL}")
    from collectord.show import plot

    folder = tmp_path / "103000"
    (folder / "streams").mkdir(parents=True)
    rows = np.zeros(3, dtype=[("t", "<f8"), ("x", "<f8")])
    rows["t"] = [1.7e9 + 1, 1.7e9 + 2, 1.7e9 + 3]
    np.save(folder / "streams" / "a.npy", rows)
    rows["t"] = [0.0, 1.0, 2.0]
    np.save(folder / "streams" / "b.npy", rows)
    stream = {"format": "npy", "rows": 3, "columns": ["t", "x"], "dtype": "<f8", "source": "s"}
    metadata = {
        "a": {**stream, "file": "streams/a.npy", "time_column": "t"},
        "b": {**stream, "file": "streams/b.npy", "time_column": "t"},
        "collectord": {"started": "2023-11-14T22:13:20+00:00", "sources": []},
    }
    (folder / "103000_metadata.json").write_bytes(jsonio.dumps(metadata))
    notes = plot(Experiment(folder), tmp_path / "out.png")
    assert notes == [
        "b: its time column is not on the daemon's clock; "
        "parameter changes are marked on the first panel only"
    ]
    assert (tmp_path / "out.png").read_bytes().startswith(PNG_SIGNATURE)


def test_gaps_and_an_experiment_without_history_are_shown(tmp_path: Path) -> None:
    metadata = {
        "rig": {"speed": 1},
        "collectord": {
            "run_id": "20241201T103000-abcdef",
            "started": "2024-12-01T10:30:00+00:00",
            "sources": [
                {
                    "name": "rig",
                    "session": "s1",
                    "host": "h",
                    "pid": 1,
                    "messages": {"messages": 9, "rejected": 1, "lost": 3},
                    "gaps": [[4, 6]],
                    "recent_rejections": ["seq 8: bad path"],
                }
            ],
        },
    }
    (tmp_path / "103000_metadata.json").write_bytes(jsonio.dumps(metadata))
    lines = list(report(Experiment(tmp_path)))
    (source,) = (line for line in lines if line.startswith("  rig "))
    assert source.split() == ["rig", "h", "1", "9", "1", "3", "4-6", "s1"]
    assert "  rejected from rig: seq 8: bad path" in lines
    assert lines[-1].startswith("Parameter history: none saved")


def test_show_names_what_is_wrong_with_its_folder(tmp_path: Path) -> None:
    result = run_cli("show", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "nowhere is not a folder" in result.stderr
    result = run_cli("show", str(tmp_path))
    assert result.returncode == 1
    assert "holds no *_metadata.json" in result.stderr
    result = run_cli("show", str(tmp_path), "--history", "-1")
    assert result.returncode == 2
    assert "--history: 0 (all) or more" in result.stderr


def test_show_reads_a_metadata_file_whose_collectord_key_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "103000_metadata.json").write_text('{"collectord": 5, "cam": {"gain": 2}}')
    result = run_cli("show", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "gain" in result.stdout and "collectord" in result.stdout


def test_plot_without_matplotlib_names_the_install_command(saved: list[Path], tmp_path) -> None:
    hidden = tmp_path / "hidden"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join([str(hidden), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = subprocess.run(
        [sys.executable, "-m", "collectord", "show", str(saved[0]), "--plot", "x.png"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert INSTALL in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_short_values_stay_short() -> None:
    assert short(list(range(3))) == "[0, 1, 2]"
    assert short(b"\x00" * 9) == "<9 bytes>"
    assert short({"a": [1.5]}) == "{a: [1.5]}"
    assert len(short(["y" * 100] * 3)) < 90
