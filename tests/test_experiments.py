"""What one experiment's metadata holds, over a lab's day of experiments and restarts."""

from __future__ import annotations

from collectord import Client, load_json


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
