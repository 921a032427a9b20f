"""TreeMirror: a lightparam tree published, saved, and restored after a restart."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import DaemonProcess, wait_for
from lightparam import Param, ParameterTree, Parametrized

from collectord import Client, load_json
from collectord.mirror import SkippedParameterWarning, TreeMirror

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "clients" / "lightparam_camera.py"


class Rig:
    """A stytra-like tree: nested, flat '+' and empty nodes, and typed values."""

    def __init__(self, with_basic: bool = False, with_comments: bool = True) -> None:
        self.tree = ParameterTree()
        self.camera = Parametrized(
            "camera_params",
            self.tree,
            params=dict(
                exposure=Param(4.0, limits=(0.1, 50.0), unit="ms", desc="exposure time"),
                roi=Param((0, 0, 1024, 1016), unit="px"),
                trigger=Param("internal", limits=["internal", "external"]),
                paused=Param(False, loadable=False, desc="never restored"),
            ),
        )
        animal = dict(species=Param("Danio rerio"), age=Param(7, unit="dpf"))
        if with_comments:
            animal["comments"] = Param("")
        self.animal = Parametrized("general/animal", self.tree, params=animal)
        if with_basic:
            self.basic = Parametrized(
                "general/basic", self.tree, params=dict(experimenter_name=Param("someone"))
            )
        self.tail = Parametrized(
            "tracking+tail_tracking",
            self.tree,
            params=dict(n_segments=Param(10), fish_area=Param([131.5, 1430.9])),
        )
        self.source = Parametrized("tracking+source", self.tree)
        self.recording = Parametrized(
            "recording/settings",
            self.tree,
            params=dict(
                folder=Param(pathlib.PurePosixPath("/data/default")),
                started=Param(dt.datetime(2024, 1, 1, 9, 0)),
            ),
        )


def client_for(daemon: DaemonProcess, name: str = "gui") -> Client:
    return Client(name, daemon.data, daemon.control)


def applied(daemon: DaemonProcess, client: Client) -> int:
    """Messages of ``client`` the daemon has applied."""
    client.sync()
    (mine,) = [s for s in daemon.status()["sources"] if s["session"] == client.session]
    return int(mine["messages"]["messages"])


def plain(value: object) -> Any:
    """As the JSON holds it: tuples as lists, datetimes (ISO 8601) and paths as text."""

    def text(obj: object) -> str:
        return obj.isoformat() if isinstance(obj, dt.datetime) else str(obj)

    return json.loads(json.dumps(value, default=text))


#: One set_params per node, plus one per node with parameters for its documentation.
ATTACH_MESSAGES = 5 + 4


def test_attach_publishes_the_whole_tree_then_only_changes(daemon: DaemonProcess) -> None:
    rig = Rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        assert applied(daemon, client) == ATTACH_MESSAGES

        assert mirror.publish_changes() == 0
        assert applied(daemon, client) == ATTACH_MESSAGES

        rig.camera.exposure = 6.5
        rig.animal.age = 8
        assert mirror.publish_changes() == 2  # two nodes: two messages
        assert applied(daemon, client) == ATTACH_MESSAGES + 2

        # Changes lightparam's changed flags never see are published too.
        rig.tail.fish_area.append(2000.0)
        rig.camera.params.values = {"trigger": "external"}
        assert mirror.publish_changes() == 2
        assert mirror.publish_changes() == 0
        assert applied(daemon, client) == ATTACH_MESSAGES + 4

        saved = load_json(mirror.stop("test"))
        mirror.close()
    assert saved["camera_params"] == {
        "exposure": 6.5,
        "roi": [0, 0, 1024, 1016],
        "trigger": "external",
        "paused": False,
    }
    assert saved["general"]["animal"] == {"species": "Danio rerio", "age": 8, "comments": ""}
    assert saved["tracking+tail_tracking"]["fish_area"] == [131.5, 1430.9, 2000.0]


def test_the_changed_flags_are_left_to_their_owners(daemon: DaemonProcess) -> None:
    """stytra forwards camera changes with changed_values()/acknowledge_changes()."""
    rig = Rig()
    rig.camera.params.acknowledge_changes()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.camera, period=None, restore=False)
        rig.camera.exposure = 9.0
        assert mirror.publish_changes() == 1
        assert rig.camera.params.changed_values() == {"exposure": 9.0}
        mirror.close()


def test_saved_metadata_has_stytras_layout_and_documents_params(daemon: DaemonProcess) -> None:
    rig = Rig(with_basic=True)
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        first = load_json(mirror.stop())
        second = load_json(mirror.stop())  # nothing sent in between
        mirror.close()

    expected = plain(rig.tree.serialize())
    for saved in (first, second):
        assert set(saved) == {*expected, "param_info", "collectord"}
        assert {key: saved[key] for key in expected} == expected
        assert saved["tracking+source"] == {}
        info = saved["param_info"]
        assert info["camera_params"]["exposure"] == {
            "desc": "exposure time",
            "unit": "ms",
            "limits": [0.1, 50.0],
            "loadable": True,
        }
        assert info["camera_params"]["paused"]["loadable"] is False
        assert info["camera_params"]["trigger"]["limits"] == ["internal", "external"]
        assert info["general"]["animal"]["age"]["unit"] == "dpf"
        assert set(info["general"]) == {"animal", "basic"}
        assert "tracking+source" not in info  # no parameters, nothing to document
    assert second["collectord"]["run_id"] != first["collectord"]["run_id"]


def test_a_stop_leaves_the_next_experiment_empty(daemon: DaemonProcess) -> None:
    """Nothing is sent after a stop, so a shutdown does not save a phantom experiment."""
    rig = Rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        path = mirror.stop()
        mirror.close()
    assert daemon.terminate() == 0
    assert [str(p) for p in daemon.output.glob("*/*/*_metadata.json")] == [path]


def test_a_fresh_process_restores_exactly_the_loadable_values(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    first = make_daemon()
    rig = Rig()
    with client_for(first) as client:
        mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        rig.camera.exposure = 6.5
        rig.camera.roi = (10, 20, 300, 400)
        rig.camera.trigger = "external"
        rig.camera.paused = True  # loadable=False: saved, never restored
        rig.animal.age = 9
        rig.animal.comments = "ñ 🐟"
        rig.tail.fish_area = [1.5, 2.5, 3.5]
        rig.recording.folder = pathlib.PurePosixPath("/data/fish3")
        rig.recording.started = dt.datetime(2024, 11, 24, 10, 30, 0, 123456)
        mirror.stop()
        mirror.close()
    assert first.terminate() == 0
    assert load_json(first.output / "last_config.json")["camera_params"]["paused"] is True

    second = make_daemon()  # same output folder, so the same last config
    fresh = Rig()
    with client_for(second) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every saved entry has a node here
            mirror = TreeMirror(client, fresh.tree, period=None)
        mirror.close()

    for node in rig.tree.tracked:
        old, new = rig.tree.tracked[node].params.values, fresh.tree.tracked[node].params.values
        loadable = {k for k, p in rig.tree.tracked[node].params.items().items() if p.loadable}
        assert {k: new[k] for k in loadable} == {k: old[k] for k in loadable}, node
        for name in loadable:
            assert type(new[name]) is type(old[name]), f"{node}/{name}"
    assert fresh.camera.paused is False
    assert fresh.camera.roi == (10, 20, 300, 400)
    assert fresh.recording.started == dt.datetime(2024, 11, 24, 10, 30, 0, 123456)


def test_entries_for_nodes_the_process_lacks_warn(daemon: DaemonProcess) -> None:
    saved = Rig(with_basic=True)
    saved.animal.age = 12
    with client_for(daemon, "gui") as client:
        mirror = TreeMirror(client, saved.tree, period=None, restore=False)
        mirror.stop()
        mirror.close()

    # This process has no general/basic node and no comments parameter, and
    # tracks nothing of camera_params.
    tree = ParameterTree()
    animal = Parametrized(
        "general/animal", tree, params=dict(species=Param("?"), age=Param(0, unit="dpf"))
    )
    with client_for(daemon, "stimulus") as client:
        with pytest.warns(UserWarning) as caught:
            mirror = TreeMirror(client, tree, period=None)
        mirror.close()
    messages = [str(w.message) for w in caught]
    assert any("'general', 'basic', 'experimenter_name'" in m for m in messages)
    assert any("'general', 'animal', 'comments'" in m for m in messages)
    assert not any("camera_params" in m for m in messages)
    assert animal.params.values == {"species": "Danio rerio", "age": 12}


def test_the_thread_publishes_changes_and_close_stops_it(daemon: DaemonProcess) -> None:
    rig = Rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.tree, period=0.02, restore=False)
        base = applied(daemon, client)
        rig.camera.exposure = 7.0  # the process's own code never calls the mirror
        wait_for(lambda: applied(daemon, client) == base + 1, what="the thread's publish")
        assert mirror._thread is not None and mirror._thread.is_alive()

        rig.animal.age = 10  # published by close(), not lost
        mirror.close()
        assert not mirror._thread.is_alive()
        assert applied(daemon, client) == base + 2
        saved = load_json(client.stop())
    assert saved["camera_params"]["exposure"] == 7.0
    assert saved["general"]["animal"]["age"] == 10


def test_an_unsupported_value_is_left_out_with_a_warning(daemon: DaemonProcess) -> None:
    rig = Rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        rig.camera.roi = {1, 2}  # a set: collectord refuses it
        rig.camera.exposure = 5.0
        with pytest.warns(SkippedParameterWarning, match=r"camera_params/roi.*set"):
            assert mirror.publish_changes() == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert mirror.publish_changes() == 0  # not warned about again
        rig.camera.roi = (1, 2, 3, 4)
        assert mirror.publish_changes() == 1
        saved = load_json(mirror.stop())
        mirror.close()
    assert saved["camera_params"]["roi"] == [1, 2, 3, 4]
    assert saved["camera_params"]["exposure"] == 5.0


def test_a_value_refused_then_changed_in_place_is_published(daemon: DaemonProcess) -> None:
    """The mirror kept the refused value itself, not a copy: a list it refused and
    that then changed in place compared equal to itself, and was never sent."""
    rig = Rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        area = rig.tail.fish_area
        area.append(1 + 2j)  # a complex number: collectord refuses it
        with pytest.warns(SkippedParameterWarning, match=r"fish_area"):
            assert mirror.publish_changes() == 0
        area[:] = [100.0, 900.0]  # fixed in place: a value collectord takes
        assert mirror.publish_changes() == 1
        saved = load_json(mirror.stop())
        mirror.close()
    assert saved["tracking+tail_tracking"]["fish_area"] == [100.0, 900.0]


def test_nodes_whose_names_cannot_be_paths_are_skipped(daemon: DaemonProcess) -> None:
    rig = Rig()
    Parametrized("collectord/mine", rig.tree, params=dict(x=Param(1)))
    Parametrized("", rig.tree, params=dict(y=Param(2)))
    with client_for(daemon) as client:
        with pytest.warns(SkippedParameterWarning) as caught:
            mirror = TreeMirror(client, rig.tree, period=None, restore=False)
        assert len(caught) == 2
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mirror.publish_changes()  # warned once only
        saved = load_json(mirror.stop())
        mirror.close()
    assert "camera_params" in saved and "" not in saved
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["rejected"] == 0


def test_parametrized_objects_and_nodes_added_later(daemon: DaemonProcess) -> None:
    rig = Rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, [rig.camera, rig.animal], period=None, restore=False)
        later = Parametrized(
            "stimulus/protocol/flashes", mirror.tree, params=dict(n_repeats=Param(3))
        )
        assert mirror.publish_changes() == 1
        later.n_repeats = 5
        assert mirror.publish_changes() == 1
        saved = load_json(mirror.stop())
        mirror.close()
    assert set(saved) == {"camera_params", "general", "stimulus", "param_info", "collectord"}
    assert saved["stimulus"]["protocol"]["flashes"] == {"n_repeats": 5}
    assert saved["param_info"]["stimulus"]["protocol"]["flashes"]["n_repeats"]["loadable"]


def scan_rig() -> tuple[ParameterTree, Parametrized, Parametrized]:
    """An array parameter, a scalar after it, and a node after that one.

    The last config's keys are sorted, so ``imaging/scan/offsets`` is restored
    before ``imaging/scan/resolution`` and before ``stimulus/protocol``.
    """
    tree = ParameterTree()
    scan = Parametrized(
        "imaging/scan", tree, params=dict(offsets=Param(np.zeros(3)), resolution=Param(512))
    )
    protocol = Parametrized("stimulus/protocol", tree, params=dict(n_repeats=Param(0)))
    return tree, scan, protocol


def test_an_array_parameter_is_restored_and_so_is_everything_after_it(
    daemon: DaemonProcess,
) -> None:
    """lightparam compares a restored value with ``!=``: an array of two or more
    elements made that raise, and the restore stopped there."""
    tree, scan, protocol = scan_rig()
    with client_for(daemon) as client:
        mirror = TreeMirror(client, tree, period=None, restore=False)
        # lightparam's own assignment (scan.offsets = ...) raises for arrays too.
        scan.params["offsets"].value = np.array([1.5, 2.5, 3.5])
        scan.resolution = 1024
        protocol.n_repeats = 42
        mirror.stop()
        mirror.close()

    tree, scan, protocol = scan_rig()
    scan.params.acknowledge_changes()
    with client_for(daemon) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mirror = TreeMirror(client, tree, period=None)
        assert scan.offsets.dtype == np.float64
        assert scan.offsets.tolist() == [1.5, 2.5, 3.5]
        assert scan.params["offsets"].changed  # as lightparam flags a restored change
        assert scan.resolution == 1024
        assert protocol.n_repeats == 42
        saved = load_json(mirror.stop())
        mirror.close()
    last = load_json(daemon.output / "last_config.json")
    for content in (saved, last):
        assert content["imaging"]["scan"] == {"offsets": [1.5, 2.5, 3.5], "resolution": 1024}
        assert content["stimulus"]["protocol"] == {"n_repeats": 42}


def test_the_example_camera_is_restored_by_its_next_run(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    def run(daemon: DaemonProcess, seed: int) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--data", daemon.data, "--control", daemon.control,
             "--duration", "1", "--period", "0.05", "--seed", str(seed), "--stop"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
        saved = load_json(lines["saved"])
        return {
            "restored": json.loads(lines["restored"]),
            "final": json.loads(lines["final"]),
            "saved": saved["camera_params"],
            "info": saved["param_info"]["camera_params"],
        }

    first_daemon = make_daemon()
    first = run(first_daemon, seed=1)
    assert first_daemon.terminate() == 0
    assert first["final"]["paused"] is True
    assert first["saved"] == first["final"]
    assert first["info"]["exposure"]["unit"] == "ms"

    second = run(make_daemon(), seed=2)
    assert second["restored"] == {**first["final"], "paused": False}


def test_an_array_whose_dtype_changed_keeps_the_saved_values(daemon: DaemonProcess) -> None:
    """The code changed an array parameter's dtype since the values were saved:
    converting them to it raised an OverflowError out of the restore (300 into
    uint8: nothing restored, the mirror not made), or cut them silently (0.5
    into int64: 0, then published over the saved value)."""

    def rig(lut: np.ndarray, edges: np.ndarray) -> tuple[ParameterTree, Parametrized]:
        tree = ParameterTree()
        display = Parametrized(
            "display", tree, params=dict(lut=Param(lut), edges=Param(edges), gamma=Param(1.0))
        )
        return tree, display

    tree, display = rig(np.array([0, 300], dtype="i8"), np.array([0.5, 1.5]))
    display.params["gamma"].value = 2.2
    with client_for(daemon) as client:
        mirror = TreeMirror(client, tree, period=None, restore=False)
        mirror.stop()
        mirror.close()

    tree, display = rig(np.zeros(2, dtype="u1"), np.zeros(2, dtype="i8"))
    with client_for(daemon) as client:
        mirror = TreeMirror(client, tree, period=None)
        assert display.gamma == 2.2
        for name, saved in (("lut", [0, 300]), ("edges", [0.5, 1.5])):
            assert np.asarray(display.params[name].value).tolist() == saved
        mirror.stop()
        mirror.close()
    last = load_json(daemon.output / "last_config.json")
    assert last["display"] == {"lut": [0, 300], "edges": [0.5, 1.5], "gamma": 2.2}
