"""collectord.compat.stytra.DataCollector fed the calls a stytra experiment makes."""

from __future__ import annotations

import copy
import datetime as dt
import json
import multiprocessing
import pathlib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import rig_processes
from conftest import DaemonProcess
from lightparam import Param, Parametrized

from collectord import ConfigError, load_json
from collectord.compat.stytra import DataCollector, StaticDataWarning
from collectord.mirror import RestoreWarning

#: stytra's own metadata file (stytra 0.8.4), when the shared reference folder is there.
REFERENCE = (
    pathlib.Path(__file__).resolve().parents[2] / "shared/reference/stytra_metadata_example.json"
)

#: A session in the shape of stytra's metadata: the same categories, nodes and
#: static entries as stytra's example file, with values of our own.
SESSION: dict[str, Any] = {
    "camera_params": {
        "exposure": 3.0,
        "framerate": 150.0,
        "gain": 1.5,
        "paused": False,
        "replay": False,
        "replay_fps": 10,
        "replay_limits": [0, 12.5],
        "ring_buffer_length": 300,
    },
    "general": {
        "animal": {
            "age": 6,
            "comments": "first of the day",
            "dish_diameter": "60",
            "embedded": True,
            "genotype": "TL",
            "id": 3,
            "screened": "not",
            "species": "Danio rerio",
            "treatment": "",
        },
        "basic": {"experimenter_name": "A. Tester", "session_id": 2, "setup_name": "rig-2"},
        "db_index": -1,
        "fish_id": "241124_f3",
        "program_version": {
            "arguments": {
                "camera": {"roi": [0, 0, 1024, 1016], "rotation": 0, "type": "ximea"},
                "dir_save": "/data/experiments",
                "display": {"full_screen": True},
                "instance_number": -1,
                "log_format": "hdf5",
                "tracking": {"method": "tail", "estimator": "vigor"},
            },
            "dependencies": ["numpy:1.26.4", "lightparam:0.4.6"],
            "git_hash": "0123456789abcdef0123456789abcdef01234567",
            "name": "flashes.py",
            "version": "0.8.4",
        },
        "session_id": "103000",
        "t_protocol_end": "2024-11-24T10:35:00.250000",
        "t_protocol_start": "2024-11-24T10:30:00.125000",
    },
    "gui": {"geometry": "01d9d0cb00020000fffffff8", "window_state": "000000ff00000000fd"},
    "stimulus": {
        "calibration_params": {
            "cam_to_proj": [[0.25, 0.015, 82.0], [-0.016, 0.254, 62.2]],
            "length_mm": 30.0,
            "length_px": 150,
            "mm_px": 0.2,
            "proj_to_cam": [[4.0, -0.25, -314.0], [0.26, 3.9, -265.1]],
        },
        "display_params": {"pos": [460, 301], "size": [439, 417]},
        "log": [
            {
                "name": "flash",
                "duration": 4.0,
                "luminance": 0.32,
                "df_param": {"luminance": [0.32, 0.32, 0.18, 0.18], "t": [0, 2, 2, 4]},
                "dynamic_parameters": ["luminance"],
                "phase_times": None,
                "real_time_start": "2024-11-24T10:30:00.125000",
                "real_time_stop": "2024-11-24T10:30:04.131000",
                "t_start": 0.0,
                "t_stop": 4.006,
            },
            {
                "name": "pause",
                "duration": 2.0,
                "real_time_start": "2024-11-24T10:30:04.131000",
                "real_time_stop": "2024-11-24T10:30:06.140000",
                "t_start": 4.006,
                "t_stop": 6.015,
            },
        ],
        "protocol": {
            "flashes": {"n_repeats": 2, "post_pause": 0.0, "pre_pause": 1.0, "shuffled_reps": 1}
        },
    },
    "tracking": {
        "behavior_log": "103000_behavior_log.hdf5",
        "diagnostics": {"image": "unprocessed"},
        "estimator_log": "103000_estimator_log.hdf5",
        "image": "103000_img.png",
        "reset": {"reset": False},
    },
    "tracking+bgsub": {"learn_every": 400, "learning_rate": 0.04},
    "tracking+fish_tracking": {"n_fish_max": 1, "fish_area": [131.5, 1430.9], "threshold": 35},
    "tracking+source": {},
}

#: What a microscope triggered over ZeroMQ sends stytra at protocol start.
MICROSCOPE = {"scope": "2P", "frame_rate": 3.0, "n_planes": 5, "plane_um": [0.0, 10.0, 20.0]}

#: What stytra records with add_static_data; everything else comes from Parametrized nodes.
STATIC = (
    "stimulus/log",
    "general/t_protocol_start",
    "general/t_protocol_end",
    "general/fish_id",
    "general/session_id",
    "general/db_index",
    "general/program_version",
    "tracking/behavior_log",
    "tracking/estimator_log",
    "tracking/image",
)


def get(tree: dict[str, Any], path: str) -> Any:
    for name in path.split("/"):
        tree = tree[name]
    return tree


def param_nodes(metadata: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Parametrized nodes of a stytra experiment, found in its metadata."""
    for category, content in metadata.items():
        if category == "general":
            yield from ((f"general/{n}", content[n]) for n in ("animal", "basic") if n in content)
        elif category == "stimulus":
            for name in ("calibration_params", "display_params"):
                yield f"stimulus/{name}", content[name]
            for name, params in content["protocol"].items():
                yield f"stimulus/protocol/{name}", params
        elif category == "tracking":
            names = ("diagnostics", "reset")
            yield from ((f"tracking/{n}", content[n]) for n in names if n in content)
        else:  # camera_params, gui, tracking+<node>
            yield category, content


def as_stytra_holds_it(value: Any) -> Any:
    """ISO text back to datetimes and pairs to tuples, as stytra's objects hold them."""
    if isinstance(value, dict):
        return {key: as_stytra_holds_it(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [as_stytra_holds_it(item) for item in value]
        return tuple(items) if len(items) == 2 and not isinstance(items[0], list) else items
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        return dt.datetime.fromisoformat(value)
    return value


def register(dc: DataCollector, metadata: dict[str, Any], **loadable: bool) -> dict[str, Any]:
    """Parametrized(..., tree=dc) for every node, as stytra's objects do."""
    nodes = {}
    for node, values in param_nodes(metadata):
        params = {
            name: Param(as_stytra_holds_it(value), loadable=loadable.get(name, True))
            for name, value in values.items()
        }
        nodes[node] = Parametrized(node, dc, params=params)
    return nodes


def add_session_data(dc: DataCollector, metadata: dict[str, Any]) -> None:
    """save_data's add_static_data calls, in stytra's order."""
    for path in STATIC:
        dc.add_static_data(as_stytra_holds_it(get(metadata, path)), path)


def collector(daemon: DaemonProcess, tmp: pathlib.Path, **kwargs: Any) -> DataCollector:
    return DataCollector(
        folder_path=tmp / "experiments", data=daemon.data, control=daemon.control, **kwargs
    )


def ours_removed(saved: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in saved.items() if k not in ("collectord", "param_info")}


def run_session(
    daemon: DaemonProcess, tmp: pathlib.Path, metadata: dict[str, Any]
) -> tuple[dict[str, Any], pathlib.Path, pathlib.Path]:
    """One stytra experiment; returns the saved JSON, the daemon's file and the copy."""
    with collector(daemon, tmp) as dc:
        register(dc, metadata)
        dc.restore_from_saved()  # nothing saved yet: nothing changes
        dc.add_static_data(
            {"scope": "2P", "frame_rate": 3.0, "n_planes": 5}, "imaging/microscope_config"
        )
        add_session_data(dc, metadata)
        dc.add_static_data("103000_stimulus_log.hdf5", "stimulus/dynamic_log")
        dc.add_static_data(pathlib.PurePosixPath("/data/rec/103000.h5"), "recording/filename")
        copy_path = tmp / "experiments" / "103000" / "103000_metadata.json"
        path = pathlib.Path(dc.save(copy_path))
        dc.save_config_file()  # at close
    return load_json(path), path, copy_path


def test_a_stytra_session_saves_stytras_metadata_shape(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    saved, path, copy_path = run_session(daemon, tmp_path, SESSION)

    assert path.is_relative_to(daemon.output)
    assert path.relative_to(daemon.output).parts[1:] == ("103000", "103000_metadata.json")
    assert copy_path.read_bytes() == path.read_bytes()
    assert saved["imaging"] == {
        "microscope_config": {"scope": "2P", "frame_rate": 3.0, "n_planes": 5}
    }
    assert saved["recording"] == {"filename": "/data/rec/103000.h5"}
    assert saved["stimulus"].pop("dynamic_log") == "103000_stimulus_log.hdf5"
    del saved["imaging"], saved["recording"]
    # Everything else, datetimes as ISO text, the stimulus log intact: stytra's file.
    assert ours_removed(saved) == SESSION
    assert set(saved["param_info"]) == {
        "camera_params", "general", "gui", "stimulus", "tracking",
        "tracking+bgsub", "tracking+fish_tracking",
    }  # fmt: skip
    account = saved["collectord"]
    assert account["stopped_by"]["by"] == "stytra"
    (source,) = account["sources"]
    assert source["messages"]["rejected"] == 0


@pytest.mark.skipif(not REFERENCE.is_file(), reason="stytra's example file is not available")
def test_stytras_own_file_is_reproduced(daemon: DaemonProcess, tmp_path: pathlib.Path) -> None:
    reference = json.loads(REFERENCE.read_text())
    saved, _, _ = run_session(daemon, tmp_path, reference)
    del saved["imaging"], saved["recording"], saved["stimulus"]["dynamic_log"]
    assert ours_removed(saved) == reference


def test_get_clean_dict_is_the_saved_content_of_this_process(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    with collector(daemon, tmp_path, period=None) as dc:
        register(dc, SESSION)
        add_session_data(dc, SESSION)
        clean = dc.get_clean_dict(convert_datetime=True)
        saved = load_json(dc.save())
    assert json.loads(json.dumps(clean)) == ours_removed(saved) == SESSION


def test_static_data_belongs_to_one_experiment(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    with collector(daemon, tmp_path) as dc:
        nodes = register(dc, SESSION)
        add_session_data(dc, SESSION)
        first = load_json(dc.save())
        assert dc.log_data_dict == {}
        nodes["general/animal"].comments = "second fish"
        dc.add_static_data("241124_f4", "general/fish_id")
        second = load_json(dc.save())
    assert first["stimulus"]["log"] == SESSION["stimulus"]["log"]
    assert "log" not in second["stimulus"]
    assert second["general"]["fish_id"] == "241124_f4"
    assert second["general"]["animal"]["comments"] == "second fish"
    assert second["camera_params"] == SESSION["camera_params"]  # parameters carry over


def test_values_collectord_cannot_store_are_marked_not_zeroed(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    class Stytra:
        pass

    version = copy.deepcopy(SESSION["general"]["program_version"])
    version["arguments"].update({"self": Stytra(), "protocol": {1, 2}, "scale": 1 + 2j})
    with collector(daemon, tmp_path) as dc:
        with pytest.warns(StaticDataWarning, match="program_version") as caught:
            dc.add_static_data(version, "general/program_version")
        assert len(caught) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dc.add_static_data({1: "one", "none": None}, "general/by_number")
        saved = load_json(dc.save())
    arguments = saved["general"]["program_version"]["arguments"]
    # The type's name: the same text every run (a repr's memory address is not).
    assert arguments["self"] == "<not saved: Stytra>"
    assert arguments["protocol"] == "<not saved: set>"
    assert arguments["scale"] == "<not saved: complex>"
    assert arguments["camera"] == SESSION["general"]["program_version"]["arguments"]["camera"]
    assert saved["general"]["by_number"] == {"1": "one", "none": None}


def test_a_dataframe_in_the_stimulus_log_is_saved_as_stytra_saved_it(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """A dynamic stimulus (moving gratings, closed loop) keeps its
    interpolation table, a pandas DataFrame, in the stimulus log
    (``df_param``). stytra saved it as lists by column; so must the drop-in,
    without a warning."""
    pandas = pytest.importorskip("pandas")
    table = pandas.DataFrame({"t": [0.0, 0.3, 0.6], "vel_x": [0.0, -10.0, 0.0], 2: [1, 2, 3]})
    log = [{"name": "moving_gratings", "duration": 0.6, "df_param": table}]
    with collector(daemon, tmp_path, period=None) as dc:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dc.add_static_data(log, "stimulus/log")
        saved = load_json(dc.save())
    columns = {"t": [0.0, 0.3, 0.6], "vel_x": [0.0, -10.0, 0.0], "2": [1, 2, 3]}
    assert saved["stimulus"]["log"] == [
        {"name": "moving_gratings", "duration": 0.6, "df_param": columns}
    ]


def test_a_value_that_cannot_be_saved_is_warned_about_once_per_path(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """stytra adds program_version (with its experiment object) at every save."""

    class Experiment:
        pass

    with collector(daemon, tmp_path, period=None) as dc:
        with pytest.warns(StaticDataWarning, match=r"\['self'\].*Experiment") as caught:
            dc.add_static_data({"arguments": {"self": Experiment()}}, "general/program_version")
        assert len(caught) == 1
        first = dc.save()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same path again, the next protocol: quiet
            dc.add_static_data({"arguments": {"self": Experiment()}}, "general/program_version")
        second = dc.save()
        with pytest.warns(StaticDataWarning, match=r"\['app'\]"):  # a new path is news
            dc.add_static_data({"arguments": {"app": Experiment()}}, "general/program_version")
    assert first != second
    assert load_json(first)["general"] == load_json(second)["general"]
    assert load_json(second)["general"]["program_version"] == {
        "arguments": {"self": "<not saved: Experiment>"}
    }


def test_stytras_attributes_are_there(
    daemon: DaemonProcess, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What stytra 0.8's experiment and collector code touch, beyond the methods."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "new"
    with DataCollector(
        folder_path=folder, data=daemon.data, control=daemon.control, period=None
    ) as dc:
        assert folder.is_dir()  # created, as stytra creates it
        assert dc.folder_path == folder
        assert dc.params_metadata is None
        # Where the last config is: the daemon's, under stytra's two names.
        assert dc.home_path / dc.metadata_fn == daemon.output / "last_config.json"
        protocol = Parametrized("protocol", params=dict(duration=Param(3.0)))
        dc.add(protocol)  # stytra's experiment adds its protocol this way
        dc.restore_from_saved()
        clean = dc.get_clean_dict(eliminate_df=True, convert_datetime=False)
        assert clean == {"protocol": {"duration": 3.0}}
        assert dc.get_last_value("protocol/duration") is None
        saved = load_json(dc.save())
    assert saved["protocol"] == {"duration": 3.0}
    with collector(daemon, tmp_path, period=None) as dc:
        assert dc.folder_path == tmp_path / "experiments"
    # stytra's default "C:/" is a drive on Windows only; elsewhere no folder "C:" appears.
    with DataCollector(data=daemon.data, control=daemon.control, period=None) as dc:
        assert str(dc.folder_path) == "C:"
    assert not (tmp_path / "C:").exists()


def test_a_refused_update_is_reported_at_save(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """stytra's set_nested overwrote a parameter with static data; the daemon refuses."""
    with collector(daemon, tmp_path) as dc:
        register(dc, SESSION)
        dc.save_config_file()  # the parameters are at the daemon first
        dc.add_static_data(5.0, "camera_params/exposure")
        with pytest.warns(RuntimeWarning, match="camera_params/exposure.*parameter"):
            saved = load_json(dc.save())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dc.save()  # reported once
    assert saved["camera_params"]["exposure"] == SESSION["camera_params"]["exposure"]
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["rejected"] == 1


def test_restore_from_saved_after_a_daemon_restart(
    make_daemon: Callable[..., DaemonProcess], tmp_path: pathlib.Path
) -> None:
    first = make_daemon()
    with collector(first, tmp_path) as dc:
        nodes = register(dc, SESSION)
        nodes["camera_params"].exposure = 8.5
        nodes["camera_params"].replay = True  # loadable=False in the next session
        nodes["gui"].geometry = "ffee"
        dc.save()
    assert first.terminate() == 0

    second = make_daemon()
    zeroed = copy.deepcopy(SESSION)
    del zeroed["gui"], zeroed["tracking"]["reset"]  # nodes this session lacks
    zeroed["camera_params"].update(exposure=0.0, replay=False, replay_limits=[0, 0])
    zeroed["general"]["animal"]["species"] = "?"
    with collector(second, tmp_path, extra_settings={"tracking+bgsub": {"learn_every": 7}}) as dc:
        nodes = register(dc, zeroed, replay=False)
        dc.restore_from_saved()  # the nodes it lacks are not asked for, nor saved
        camera = nodes["camera_params"].params.values
        assert camera["exposure"] == 8.5
        assert camera["replay"] is False
        assert camera["replay_limits"] == (0, 12.5)
        assert nodes["general/animal"].species == "Danio rerio"
        assert nodes["tracking+bgsub"].learn_every == 400  # the last config wins
        assert dc.last_metadata["camera_params"]["exposure"] == 8.5
        saved = load_json(dc.save())
    assert saved["camera_params"]["exposure"] == 8.5
    assert "gui" not in saved and "reset" not in saved["tracking"]


def test_extra_settings_fill_in_what_the_last_config_lacks(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    extra = {"general": {"basic": {"setup_name": "from extra_settings"}}}
    with collector(daemon, tmp_path, extra_settings=extra, period=None) as dc:
        nodes = register(dc, SESSION)
        dc.restore_from_saved()
        assert nodes["general/basic"].setup_name == "from extra_settings"
        dc.close()


def test_save_config_file_writes_the_last_config_and_no_experiment(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """stytra calls it as its window closes, also after a session that ran no protocol."""
    with collector(daemon, tmp_path, period=None) as dc:
        nodes = register(dc, SESSION)
        nodes["stimulus/display_params"].pos = (10, 20)
        dc.save_config_file()
        last = load_json(daemon.output / "last_config.json")
        assert last["stimulus"]["display_params"]["pos"] == [10, 20]
        assert "log" not in last["stimulus"]
        nodes["stimulus/display_params"].pos = (30, 40)
    # close() writes it again, with what changed since.
    last = load_json(daemon.output / "last_config.json")
    assert last["stimulus"]["display_params"]["pos"] == [30, 40]
    assert not list(daemon.output.glob("*/*/*_metadata.json"))


def test_an_experiment_is_named_after_stytras_session_id(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    with collector(daemon, tmp_path, period=None) as dc:
        dc.add_static_data("103000", "general/session_id")
        named = pathlib.Path(dc.save(tmp_path / "exp" / "103000_metadata.json"))
        dc.add_static_data(1, "general/db_index")  # no session id: the file's name
        by_file = pathlib.Path(dc.save(tmp_path / "exp" / "run3_metadata.json"))
        dc.add_static_data(2, "general/db_index")
        unnamed = pathlib.Path(dc.save())
    assert (named.parent.name, named.name) == ("103000", "103000_metadata.json")
    assert load_json(named)["collectord"]["name"] == "103000"
    assert (by_file.parent.name, by_file.name) == ("run3", "run3_metadata.json")
    assert load_json(unnamed)["collectord"]["name"] is None


def test_instances_are_separate_daemons(
    make_daemon: Callable[..., DaemonProcess],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rigs = [make_daemon(tmp_path / f"rig{n}") for n in (0, 1)]
    for n, rig in enumerate(rigs):
        config = tmp_path / f"instance{n}.toml"
        config.write_text(f'[endpoints]\ndata = "{rig.data}"\ncontrol = "{rig.control}"\n')
        monkeypatch.setenv(f"COLLECTORD_CONFIG_{n}", str(config))

    for n in (0, 1):
        with DataCollector(instance_number=n, period=None) as dc:
            camera = Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
            camera.exposure = 10.0 + n
            dc.add_static_data(f"fish{n}", "general/fish_id")
            saved = load_json(dc.save())
        assert saved["general"]["fish_id"] == f"fish{n}"
        assert saved["camera_params"]["exposure"] == 10.0 + n

    for n, rig in enumerate(rigs):
        (path,) = rig.output.glob("*/*/*_metadata.json")
        assert load_json(path)["general"]["fish_id"] == f"fish{n}"
        last = load_json(rig.output / "last_config.json")
        assert last["camera_params"]["exposure"] == 10.0 + n

    with pytest.raises(ConfigError, match="COLLECTORD_CONFIG_2"):
        DataCollector(instance_number=2)


class Camera(Parametrized):
    """Camera settings whose exposure the camera may refuse (raising), as hardware does."""

    def __init__(self, tree: DataCollector) -> None:
        super().__init__("camera_params", tree=tree)
        self.exposure = Param(1.0, unit="ms")
        self.roi = Param(np.zeros(4, dtype=np.int64), unit="px")
        self.refusing = False

    def __setattr__(self, item: str, value: Any) -> None:
        if item == "exposure" and getattr(self, "refusing", False):
            raise RuntimeError("the camera refuses this exposure")
        super().__setattr__(item, value)


def test_a_failed_restore_never_publishes_defaults_over_saved_values(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """One parameter that cannot be restored neither stops the nodes after it
    nor sends its unrestored default over the saved value."""
    with collector(daemon, tmp_path, period=None) as dc:
        camera = Camera(dc)
        protocol = Parametrized("stimulus/protocol", dc, params=dict(n_repeats=Param(0)))
        camera.exposure = 42.0
        camera.params["roi"].value = np.array([10, 20, 300, 400])
        protocol.n_repeats = 42
        dc.save()

    with collector(daemon, tmp_path, period=None) as dc:
        camera = Camera(dc)
        camera.refusing = True
        protocol = Parametrized("stimulus/protocol", dc, params=dict(n_repeats=Param(0)))
        with pytest.warns(RestoreWarning, match=r"camera_params.*exposure.*refuses") as caught:
            dc.restore_from_saved()
        assert len(caught) == 1
        assert camera.exposure == 1.0  # not restored
        assert camera.roi.tolist() == [10, 20, 300, 400]  # an array, restored
        assert protocol.n_repeats == 42  # a node after the failure, restored
        saved = load_json(dc.save())
        # Once the process sets it itself, it is published like any change.
        camera.refusing = False
        camera.exposure = 5.0
        again = load_json(dc.save())
    assert saved["camera_params"] == {"exposure": 42.0, "roi": [10, 20, 300, 400]}
    assert saved["stimulus"]["protocol"] == {"n_repeats": 42}
    assert again["camera_params"]["exposure"] == 5.0


def test_nothing_is_published_before_restore_from_saved(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """stytra makes its nodes, then restores them: their defaults in between
    must not reach the daemon, where they would stand in for the saved values."""

    def messages(dc: DataCollector) -> int:
        dc.client.sync()
        status = daemon.status()["sources"]
        return sum(s["messages"]["messages"] for s in status if s["session"] == dc.client.session)

    with collector(daemon, tmp_path, period=0.01) as dc:
        Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
        rounds = threading.Semaphore(0)
        wait = dc.mirror._closed.wait

        def counted(timeout: float | None = None) -> bool:
            rounds.release()
            return wait(timeout)

        dc.mirror._closed.wait = counted  # type: ignore[method-assign]
        for _ in range(3):  # the thread has gone round at least twice since
            assert rounds.acquire(timeout=30)
        assert messages(dc) == 0
        dc.restore_from_saved()
        assert messages(dc) == 2  # the node, and its documentation


def test_a_second_collector_does_not_revert_what_the_first_changed(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """Two stytra processes on one daemon, both with camera_params.

    The other process (A) changes exposure after this one (B) has restored
    its nodes; B then changes gain and saves. B publishes what it changed,
    not its whole node, so A's exposure stands.
    """
    spawn = multiprocessing.get_context("spawn")
    ready, go, done, release = (spawn.Event() for _ in range(4))
    other = spawn.Process(
        target=rig_processes.stytra_changing_exposure,
        args=(daemon.data, daemon.control, ready, go, done, release),
    )
    other.start()
    try:
        assert ready.wait(120), "the other collector did not start"
        with collector(daemon, tmp_path, name="stytra-b", period=None) as dc:
            camera = Parametrized(
                "camera_params", dc, params=dict(exposure=Param(1.0), gain=Param(2.0))
            )
            dc.restore_from_saved()
            go.set()
            assert done.wait(120), "the other collector did not change exposure"
            camera.gain = 3.0
            saved = load_json(dc.save())
    finally:
        release.set()
        other.join(60)
    assert other.exitcode == 0
    assert saved["camera_params"] == {"exposure": 9.0, "gain": 3.0}


def test_an_earlier_scripts_nodes_are_not_saved_in_this_ones_metadata(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """Yesterday's script ran the protocol "gratings", today's runs "flashes".

    stytra's file holds only today's protocol under ``stimulus/protocol``, and
    its analysis code takes the first protocol there ("flashes" sorts after
    "gratings"). Restoring must not bring yesterday's nodes into today's
    experiment; the parameters today's nodes share with yesterday's are
    restored.
    """
    with collector(daemon, tmp_path, period=None) as dc:
        Parametrized("stimulus/protocol/gratings", dc, params=dict(period=Param(10.0)))
        Parametrized("general/basic", dc, params=dict(setup_name=Param("rig-1")))
        Parametrized("general/animal", dc, params=dict(id=Param("1")))
        dc.restore_from_saved()
        dc.save()
    with collector(daemon, tmp_path, period=None) as dc:
        Parametrized("stimulus/protocol/flashes", dc, params=dict(duration=Param(1.0)))
        animal = Parametrized("general/animal", dc, params=dict(id=Param("0")))
        dc.restore_from_saved()
        assert animal.id == "1"
        saved = load_json(dc.save())
    assert saved["stimulus"]["protocol"] == {"flashes": {"duration": 1.0}}
    assert saved["general"]["animal"] == {"id": "1"}
    assert "basic" not in saved["general"]


def test_a_window_opened_and_closed_beside_leaves_the_first_its_parameters(
    daemon: DaemonProcess, tmp_path: pathlib.Path
) -> None:
    """stytra started twice on one daemon: the second window restores (and so
    publishes its nodes whole), then is closed. Every later experiment of the
    first window still holds all its parameters, as stytra's own file does,
    not only those it changed since."""
    with collector(daemon, tmp_path, period=None) as first:
        nodes = register(first, SESSION)
        first.restore_from_saved()
        first.save()
        with collector(daemon, tmp_path, period=None, name="stytra-2") as second:
            register(second, SESSION)
            second.restore_from_saved()
        first.save()  # the experiment the second window took part in
        nodes["general/animal"].comments = "third fish"
        saved = load_json(first.save())
    assert saved["general"]["animal"] == {**SESSION["general"]["animal"], "comments": "third fish"}
    for node, values in param_nodes(SESSION):
        if node != "general/animal":
            assert get(saved, node) == values, node


def test_the_docs_warn_that_add_data_takes_its_arguments_the_other_way_round() -> None:
    """``Client.add_data(path, value)`` against stytra's ``add_static_data(entry, name)``."""
    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `add_data(path, value)`")]
    assert "add_static_data(entry, name)" in row
    lightparam = (root / "docs" / "lightparam.md").read_text()
    (row,) = [line for line in lightparam.splitlines() if line.startswith("| `add_static_data")]
    assert "opposite order" in row
