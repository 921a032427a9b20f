"""The daemon and the client together: publish, stop, save, restore."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
from conftest import DaemonProcess

from collectord import (
    Client,
    InvalidPathError,
    RequestError,
    UnsupportedValueError,
    codec,
    load_json,
)
from collectord.config import CONFIG_ENV
from collectord.paths import MAX_DEPTH


def client_for(daemon: DaemonProcess, name: str) -> Client:
    return Client(name, daemon.data, daemon.control)


def test_params_merge_data_sets_and_stop_saves(daemon: DaemonProcess) -> None:
    with client_for(daemon, "camera") as client:
        client.set_params("camera/settings", {"exposure": 4.0, "gain": 1.0})
        client.set_params("camera/settings", exposure=6.5)
        client.add_data("camera/frames", 10)
        client.add_data("camera/frames", 20)
        path = pathlib.Path(client.stop("end of test"))

    assert path.is_file() and path.is_relative_to(daemon.output)
    saved = load_json(path)
    assert saved["camera"] == {"settings": {"exposure": 6.5, "gain": 1.0}, "frames": 20}
    account = saved["collectord"]
    assert account["stopped_by"]["by"] == "camera"
    assert account["stopped_by"]["reason"] == "end of test"
    (source,) = account["sources"]
    assert source["name"] == "camera" and source["messages"]["messages"] == 4
    last = load_json(daemon.output / "last_config.json")
    assert last == {"camera": {"settings": {"exposure": 6.5, "gain": 1.0}}}


def test_every_value_type_reaches_the_json(daemon: DaemonProcess) -> None:
    when = dt.datetime(2024, 11, 24, 10, 30, 0, 123456)
    values = {
        "none": None,
        "true": True,
        "int": -(2**63),
        "uint": 2**64 - 1,
        "float": 0.1,
        "nan": math.nan,
        "inf": math.inf,
        "neg_inf": -math.inf,
        "text": "Zebrafish ñ 🐟",
        "bytes": b"\x00\xffgeometry",
        "tuple": (1, "a", 2.5),
        "datetime": when,
        "aware": when.replace(tzinfo=dt.timezone.utc),
        "date": when.date(),
        "path": pathlib.PurePosixPath("/data/fish/162934_behavior_log.hdf5"),
        "np_float32": np.float32(0.5),
        "np_int16": np.int16(-7),
        "np_uint64": np.uint64(2**64 - 1),
        "np_bool": np.bool_(True),
        "np_datetime": np.datetime64("2024-11-24T10:30:00"),
        "matrix": np.array([[1.0, np.nan], [np.inf, -2.5]], dtype=np.float32),
        "ints": np.arange(5, dtype=np.uint8),
        "strings": np.array(["left", "right"]),
        "empty": np.zeros((0, 3)),
        "nested": {"log": [{"name": "flash", "t": when, "params": (1, 2)}]},
    }
    with client_for(daemon, "types") as client:
        client.add_data("stimulus/everything", values)
        path = client.stop()

    raw = pathlib.Path(path).read_text()
    json.loads(raw, parse_constant=lambda token: pytest.fail(f"bare {token} in JSON"))
    got = load_json(path)["stimulus"]["everything"]
    assert got["none"] is None and got["true"] is True
    assert got["int"] == -(2**63) and got["uint"] == 2**64 - 1
    assert got["float"] == 0.1 and math.isnan(got["nan"])
    assert got["inf"] == math.inf and got["neg_inf"] == -math.inf
    assert got["text"] == "Zebrafish ñ 🐟"
    assert got["bytes"] == b"\x00\xffgeometry"
    assert got["tuple"] == [1, "a", 2.5]
    assert got["datetime"] == "2024-11-24T10:30:00.123456"
    assert got["aware"] == "2024-11-24T10:30:00.123456+00:00"
    assert got["date"] == "2024-11-24"
    assert got["path"] == "/data/fish/162934_behavior_log.hdf5"
    assert got["np_float32"] == 0.5 and got["np_int16"] == -7
    assert got["np_uint64"] == 2**64 - 1 and got["np_bool"] is True
    assert got["np_datetime"] == "2024-11-24T10:30:00"
    assert got["matrix"][0][0] == 1.0 and math.isnan(got["matrix"][0][1])
    assert got["matrix"][1] == [math.inf, -2.5]
    assert got["ints"] == [0, 1, 2, 3, 4]
    assert got["strings"] == ["left", "right"]
    assert got["empty"] == []
    assert got["nested"] == {
        "log": [{"name": "flash", "t": "2024-11-24T10:30:00.123456", "params": [1, 2]}]
    }


def test_unsupported_value_is_refused_at_the_call(daemon: DaemonProcess) -> None:
    with client_for(daemon, "camera") as client:
        client.set_params("camera/settings", exposure=1.0)
        with pytest.raises(UnsupportedValueError, match=r"camera/settings\['roi'\].*set"):
            client.set_params("camera/settings", roi={1, 2})
        with pytest.raises(UnsupportedValueError, match="complex"):
            client.add_data("camera/bad", np.array([1j]))
        with pytest.raises(UnsupportedValueError, match="dict key 3"):
            client.add_data("camera/bad", {"ok": {3: "int key"}})
        # The same names and values that pass the call's quick look, once known:
        with pytest.raises(InvalidPathError, match="'\\$gain'"):
            client.set_params("camera/settings", {"$gain": 1.0})
        with pytest.raises(InvalidPathError, match="lone surrogate"):
            client.set_params("camera/settings", {"exposure\ud800": 1.0})
        with pytest.raises(UnsupportedValueError, match=r"\['exposure'\].*does not fit"):
            client.set_params("camera/settings", exposure=2**64)
        client.sync()
        status = daemon.status()
    (source,) = status["sources"]
    assert source["messages"]["messages"] == 1 and source["last_seq"] == 1


def test_values_the_metadata_cannot_hold_are_refused_at_the_call(
    daemon: DaemonProcess,
) -> None:
    """A float wider than 64 bits, text that is not Unicode and datetimes
    without a unit have no text in the JSON: accepted, they failed every save
    of the experiment (retried for ever, and every later stop waited)."""
    with client_for(daemon, "camera") as client:
        with pytest.raises(UnsupportedValueError, match=r"camera/settings\['gain'\].*float128"):
            client.set_params("camera/settings", gain=np.array([1.5], dtype=np.longdouble))
        with pytest.raises(UnsupportedValueError, match="not Unicode"):
            client.add_data("camera/labels", np.array(["ok", "\ud800"]))
        with pytest.raises(UnsupportedValueError, match="without a unit"):
            client.add_data("camera/times", np.array([5], dtype="<i8").view("M8"))
        with pytest.raises(UnsupportedValueError, match="1000000000000 empty values"):
            client.add_data("camera/rows", np.empty((10**12, 0)))  # no memory, 10**12 rows
        client.add_data("camera/nat", np.array(["NaT"], dtype="M8"))  # no unit, no value
        client.set_params("camera/settings", gain=1.5)
        path = client.stop()
    saved = load_json(path)
    assert saved["camera"] == {"settings": {"gain": 1.5}, "nat": ["NaT"]}


def test_big_endian_datetimes_are_saved_as_the_times_they_hold(daemon: DaemonProcess) -> None:
    """numpy's ``datetime_as_string`` reads a big-endian array as if it were
    little-endian: these were saved as other times (1972 for 1 ns after 1970)."""
    times = ["2024-05-17T14:03:09.123456789", "1970-01-01T00:00:00.000000001", "NaT"]
    with client_for(daemon, "stimulus") as client:
        client.add_data("stimulus/times", np.array(times, dtype=">M8[ns]"))
        client.add_data("stimulus/start", np.array(np.datetime64(times[0]), dtype=">M8[ns]"))
        path = client.stop()
    saved = load_json(path)["stimulus"]
    assert saved == {"times": times, "start": times[0]}


def test_a_parameter_as_deep_as_the_client_allows_is_restored(make_daemon) -> None:
    """Values nested as deep as a message allows, under a node as deep as a
    path allows: the restore reply holding them nests deeper than a message
    may. The client took it for a bad message and dropped it (restore then
    timed out: "is collectord run running there?"), and a restarted daemon
    took its journaled restore for damage."""
    deepest: Any = "bottom"
    for _ in range(codec.MAX_VALUE_DEPTH - codec.PARAM_VALUE_DEPTH):
        deepest = [deepest]
    node = "/".join(["deep"] * MAX_DEPTH)
    first = make_daemon()
    with Client("camera", first.data, first.control) as client:
        client.set_params(node, x=deepest)
        client.set_params("camera/settings", x=deepest)
        client.stop()
        assert client.restore("camera/settings") == {"x": deepest}
        restored = client.restore("deep")
        for _ in range(MAX_DEPTH - 1):
            (restored,) = restored.values()
        assert restored == {"x": deepest}
        client.add_data("camera/note", "restored")
        client.sync()  # the restores' journal records are on disk before it
        first.kill9()
        second = make_daemon(first.output, data=first.data, control=first.control)
        saved = load_json(client.stop())
    (restart,) = saved["collectord"]["restarts"]
    assert "damage" not in restart
    assert saved["camera"]["settings"] == {"x": deepest}
    assert second.process is not None


def test_static_data_is_cleared_parameters_carry_over(daemon: DaemonProcess) -> None:
    with client_for(daemon, "stimulus") as client:
        client.set_params("general/animal", species="Danio rerio", age=7)
        client.add_data("stimulus/log", [1, 2, 3])
        first = load_json(client.stop())
        second = load_json(client.stop())
    assert first["stimulus"]["log"] == [1, 2, 3]
    assert "stimulus" not in second
    assert second["general"]["animal"] == {"species": "Danio rerio", "age": 7}
    assert first["collectord"]["run_id"] != second["collectord"]["run_id"]


def test_each_stop_writes_a_new_file(daemon: DaemonProcess) -> None:
    with client_for(daemon, "stimulus") as client:
        client.set_params("general/basic", session_id=1)
        paths = [client.stop() for _ in range(3)]
    assert len(set(paths)) == 3
    assert all(pathlib.Path(p).is_file() for p in paths)


def test_last_config_merges_across_experiments_and_survives_restart(
    make_daemon, tmp_path: pathlib.Path
) -> None:
    first = make_daemon()
    with client_for(first, "rig") as client:
        client.set_params("stimulus/protocol/looming", speed=10.0, size=5)
        client.set_params("camera/settings", exposure=3.0)
        client.stop()
    assert first.terminate() == 0

    # Another experiment type on the next day: other protocol, new exposure.
    second = make_daemon(tmp_path / "out")
    with client_for(second, "rig") as client:
        assert client.restore("camera/settings") == {"exposure": 3.0}
        client.set_params("stimulus/protocol/gratings", period=2.0)
        client.set_params("camera/settings", exposure=5.0)
        saved = load_json(client.stop())
    # The looming protocol's process ended before this experiment: its
    # parameters are not in force here (README), though they carry over, across
    # a clean restart too (the empty experiment's journal carries them), into
    # the last config.
    assert saved["stimulus"]["protocol"] == {"gratings": {"period": 2.0}}
    assert saved["camera"]["settings"] == {"exposure": 5.0}
    assert second.terminate() == 0

    third = make_daemon(tmp_path / "out")
    with client_for(third, "rig") as client:
        assert client.restore("stimulus/protocol/looming") == {"speed": 10.0, "size": 5}
        assert client.restore("stimulus/protocol/gratings") == {"period": 2.0}
        assert client.restore("camera") == {"settings": {"exposure": 5.0}}
        assert client.restore("nothing/here") == {}


@pytest.mark.parametrize("content", [b"[1, 2]", b"3", b'"text"', b"null"])
def test_a_last_config_that_is_not_an_object_is_moved_aside_not_overwritten(
    make_daemon, tmp_path: pathlib.Path, content: bytes
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "last_config.json").write_bytes(content)
    daemon = make_daemon(output)
    with client_for(daemon, "rig") as client:
        assert client.restore("camera") == {}
        client.set_params("camera/settings", exposure=3.0)
        client.stop()
    (aside,) = output.glob("last_config.json.unreadable-*")
    assert aside.read_bytes() == content
    assert load_json(output / "last_config.json") == {"camera": {"settings": {"exposure": 3.0}}}


def test_a_restore_of_values_that_cannot_be_sent_is_refused_saying_why(
    make_daemon, tmp_path: pathlib.Path
) -> None:
    """A last config edited by hand to hold an integer beyond 64 bits: the
    reply could not be encoded, so none came; the client waited out its
    timeout and was told no daemon ran there. The daemon refuses the restore
    naming the file, and a restore of another node still answers."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "last_config.json").write_text(
        json.dumps({"camera": {"big": 2**70}, "stage": {"x": 1.5}})
    )
    daemon = make_daemon(output)
    with client_for(daemon, "rig") as client:
        with pytest.raises(RequestError, match="edited by hand") as caught:
            client.restore("camera", timeout=30)
        assert caught.value.code == "bad_request" and "last_config.json" in str(caught.value)
        assert client.restore("stage") == {"x": 1.5}
        assert client.status()["unidentified"]["rejected"] == 0


def test_a_client_shared_between_threads(daemon: DaemonProcess) -> None:
    with client_for(daemon, "shared") as client:

        def publish(worker: int) -> None:
            for index in range(500):
                client.set_params(f"workers/w{worker}", last=index)

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        saved = load_json(client.stop())
    assert saved["workers"] == {f"w{n}": {"last": 499} for n in range(4)}
    assert saved["collectord"]["sources"][0]["messages"]["messages"] == 2000


def test_array_parameters_are_saved_and_restored_as_lists(make_daemon, tmp_path) -> None:
    first = make_daemon()
    with client_for(first, "camera") as client:
        client.set_params("camera/settings", roi=np.array([0, 0, 640, 480]), gain=1.5)
        saved = load_json(client.stop())
        assert saved["camera"]["settings"]["roi"] == [0, 0, 640, 480]
        same_daemon = client.restore("camera/settings")
    assert first.terminate() == 0
    second = make_daemon(tmp_path / "out")
    with client_for(second, "camera") as client:
        after_restart = client.restore("camera/settings")
    assert same_daemon == after_restart == {"roi": [0, 0, 640, 480], "gain": 1.5}


def readme_client_examples() -> list[str]:
    """The README's Python examples that publish through a ``Client``."""
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    return [block for block in blocks if "with Client(" in block]


def test_the_readmes_client_examples_run_as_written(daemon: DaemonProcess, tmp_path) -> None:
    """Copied as written, they failed on names they never defined (a new
    user's first try): each runs in a process of its own, with the daemon's
    endpoints in a configuration file, and what it sent is saved."""
    examples = readme_client_examples()
    assert len(examples) >= 2
    config = tmp_path / "rig.toml"
    config.write_text(f'[endpoints]\ndata = "{daemon.data}"\ncontrol = "{daemon.control}"\n')
    for example in examples:
        script = tmp_path / "example.py"
        script.write_text(example)
        result = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, CONFIG_ENV: str(config)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{example}\n{result.stderr}"
    saved = load_json(daemon.stop()["path"])
    assert saved["camera"]["frames_acquired"] == 1000
    assert saved["tracking"]["tail_log"]["rows"] == 501
