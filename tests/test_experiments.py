"""What one experiment's metadata holds, over a lab's day of experiments and restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectord import Client, InvalidPathError, RequestError, load_json
from collectord.changes import changes_path, load_changes
from collectord.control import request
from collectord.protocol import Command


def test_an_experiment_holds_the_parameters_in_force_in_it(make_daemon) -> None:
    daemon = make_daemon()
    camera = Client("camera", daemon.data, daemon.control)
    camera.set_params("camera/settings", exposure=4.0)  # once, then runs all day

    with Client("stimulus", daemon.data, daemon.control) as gui:
        gui.set_params("stimulus/protocol/looming", speed=2.0)
        first = load_json(gui.stop())
    assert first["stimulus"]["protocol"] == {"looming": {"speed": 2.0}}

    # The next experiment runs another protocol, with a new process.
    with Client("stimulus", daemon.data, daemon.control) as gui:
        gui.set_params("stimulus/protocol/gratings", period=10)
        gui.sync()
        second_path = gui.stop()
    second = load_json(second_path)
    assert second["stimulus"]["protocol"] == {"gratings": {"period": 10}}
    assert second["camera"]["settings"] == {"exposure": 4.0}  # still connected

    # After a crash and a restart, the same rule.
    daemon.kill9()
    restarted = make_daemon(data=daemon.data, control=daemon.control)
    with Client("stimulus", restarted.data, restarted.control) as gui:
        gui.set_params("stimulus/protocol/dots", density=0.3)
        third = load_json(gui.stop())
    assert third["stimulus"]["protocol"] == {"dots": {"density": 0.3}}
    assert third["camera"]["settings"] == {"exposure": 4.0}

    # The last config keeps every protocol, and restore returns them; what a
    # process restores is in force, so in the metadata.
    last = load_json(restarted.output / "last_config.json")
    assert set(last["stimulus"]["protocol"]) == {"looming", "gratings", "dots"}
    with Client("stimulus", restarted.data, restarted.control) as gui:
        assert gui.restore("stimulus/protocol/looming") == {"speed": 2.0}
        fourth = load_json(gui.stop())
    assert fourth["stimulus"]["protocol"] == {"looming": {"speed": 2.0}}
    camera.close()


def test_a_parameter_that_changes_shape_takes_its_new_shape(make_daemon) -> None:
    daemon = make_daemon()
    with Client("cam3", daemon.data, daemon.control) as old_code:
        old_code.set_params("cam3", roi=5, gain=1)
        old_code.stop()
    with Client("cam3", daemon.data, daemon.control) as new_code:
        new_code.set_params("cam3/roi", x=10, y=20)
        new_code.set_params("cam3", gain=2)
        saved = load_json(new_code.stop())
        status = new_code.status()
    assert saved["cam3"] == {"roi": {"x": 10, "y": 20}, "gain": 2}
    assert load_json(daemon.output / "last_config.json")["cam3"] == saved["cam3"]
    assert status["rejected"] == 0
    # Within one experiment's own messages, a conflict is still refused.
    with Client("cam3", daemon.data, daemon.control) as confused:
        confused.set_params("cam3", roi=5)
        confused.set_params("cam3/roi", x=1)
        confused.sync()
        status = confused.status()
        saved = load_json(confused.stop())
    assert saved["cam3"]["roi"] == 5
    assert status["rejected"] == 1


def test_save_config_writes_the_last_config_now_and_no_folder(make_daemon) -> None:
    daemon = make_daemon()
    with Client("gui", daemon.data, daemon.control) as gui:
        gui.set_params("general/animal", species="Danio rerio", age=7)
        written = gui.save_config()
        assert load_json(written)["general"]["animal"] == {"species": "Danio rerio", "age": 7}
        assert not list(daemon.output.glob("[0-9]*"))  # no experiment folder
        gui.set_params("general/animal", age=8)  # the experiment goes on
        gui.sync()
    daemon.kill9()
    restarted = make_daemon(data=daemon.data, control=daemon.control)
    assert load_json(restarted.output / "last_config.json")["general"]["animal"]["age"] == 7
    with Client("gui", restarted.data, restarted.control) as gui:
        # The process restarted in the experiment: it takes up what it had set.
        assert gui.restore("general/animal") == {"species": "Danio rerio", "age": 8}
        saved = load_json(gui.stop())
    assert saved["general"]["animal"] == {"species": "Danio rerio", "age": 8}


def test_a_second_process_restores_what_was_set_since_the_last_save(make_daemon) -> None:
    """Two stytra windows on one daemon: the second one's restore must not
    answer the last config's animal id over the one the first just set (it
    then published it back, and the experiment was saved with the old id)."""
    daemon = make_daemon()
    with Client("gui", daemon.data, daemon.control) as first:
        first.set_params("general/animal", species="Danio rerio", id=7)
        first.stop()
    with Client("gui", daemon.data, daemon.control) as first:
        first.set_params("general/animal", id=8)
        first.sync()
        with Client("gui", daemon.data, daemon.control) as second:
            restored = second.restore("general/animal")
            second.set_params("general/animal", **restored)  # as a mirror publishes
            second.sync()
        saved = load_json(first.stop())
    assert restored == {"species": "Danio rerio", "id": 8}
    assert saved["general"]["animal"] == {"species": "Danio rerio", "id": 8}
    assert load_json(daemon.output / "last_config.json")["general"]["animal"]["id"] == 8


def test_a_last_config_edited_between_sessions_is_what_is_restored_and_saved(
    make_daemon,
) -> None:
    """The daemon carries the tree across its restart, but the file was
    edited meanwhile: the process takes the file's value, and so does the
    experiment, though the process does not send it again."""
    daemon = make_daemon()
    with Client("gui", daemon.data, daemon.control) as gui:
        gui.set_params("general/animal", species="Danio rerio", id=7)
        gui.stop()
    assert daemon.terminate() == 0
    last_config = daemon.output / "last_config.json"
    edited = load_json(last_config)
    edited["general"]["animal"]["id"] = 9
    last_config.write_text(json.dumps(edited))
    restarted = make_daemon(output=daemon.output)
    with Client("gui", restarted.data, restarted.control) as gui:
        assert gui.restore("general/animal") == {"species": "Danio rerio", "id": 9}
        path = Path(gui.stop())
    assert load_json(path)["general"]["animal"] == {"species": "Danio rerio", "id": 9}
    ids = [c for c in load_changes(changes_path(path)) if c.path == "general/animal/id"]
    assert [(c.value, c.carried) for c in ids] == [(7, True), (9, True)]  # carried in, restored


def test_a_client_names_the_experiment_and_the_name_survives_a_crash(make_daemon) -> None:
    daemon = make_daemon()
    with Client("gui", daemon.data, daemon.control) as gui:
        gui.add_data("stimulus/log", [1, 2])
        gui.name_experiment("241124_103000_f3")
        gui.sync()
        daemon.kill9()
        restarted = make_daemon(data=daemon.data, control=daemon.control)
        path = Path(gui.stop())
        with pytest.raises(InvalidPathError):
            gui.name_experiment("../elsewhere")
        with pytest.raises(RequestError) as refused:
            request(restarted.control, Command.NAME, {"name": "../elsewhere"})
        assert refused.value.code == "invalid_path"
        unnamed = Path(gui.stop())
    assert path.name == "241124_103000_f3_metadata.json"
    assert path.parent.name == "241124_103000_f3"
    assert path.parent.parent.parent == restarted.output
    assert load_json(path)["collectord"]["name"] == "241124_103000_f3"
    assert load_json(path)["stimulus"]["log"] == [1, 2]
    assert load_json(unnamed)["collectord"]["name"] is None  # the next one has no name


def test_a_daemon_stopped_after_save_config_saves_no_parameters_only_experiment(
    make_daemon,
) -> None:
    """A program that only saved its settings as it closed (stytra's window
    state at exit) leaves no experiment folder when the daemon is stopped."""
    daemon = make_daemon()
    with Client("gui", daemon.data, daemon.control) as gui:
        gui.set_params("gui/window", width=800)
        gui.save_config()
    assert daemon.terminate() == 0
    assert not list(daemon.output.glob("[0-9]*"))
    assert load_json(daemon.output / "last_config.json")["gui"]["window"] == {"width": 800}
    # Static data, or parameters changed after the last save_config, are saved.
    again = make_daemon(data=daemon.data, control=daemon.control)
    with Client("gui", again.data, again.control) as gui:
        gui.set_params("gui/window", width=900)
        gui.save_config()
        gui.set_params("gui/window", width=1000)
        gui.sync()
    assert again.terminate() == 0
    (saved,) = daemon.output.glob("[0-9]*/*/*_metadata.json")
    assert load_json(saved)["gui"]["window"] == {"width": 1000}
