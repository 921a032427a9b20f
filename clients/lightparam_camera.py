"""A lightparam camera, mirrored into collectord and restored from it.

The camera's settings are a lightparam ``Parametrized`` named ``camera_params``
(stytra's name). A simulated GUI thread changes them now and then, as a person
would; the acquisition loop only reads them and never talks to collectord. A
``TreeMirror`` restores the settings from the daemon's last config at start and
publishes what changed twice a second from its own thread.

::

    collectord run --output /tmp/rig &
    python clients/lightparam_camera.py --duration 2 --stop   # saves an experiment
    python clients/lightparam_camera.py --duration 2 --stop   # starts from those settings

It prints ``restored: {...}`` (the settings after restoring) and ``final:
{...}`` (the settings at the end) as JSON. ``paused`` is not loadable: the
GUI pauses the camera before quitting, and the next run starts unpaused.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time

from lightparam import Param, Parametrized

from collectord import Client
from collectord.mirror import TreeMirror


class CameraSettings(Parametrized):
    """What a camera process exposes to its GUI, documented for the metadata."""

    def __init__(self) -> None:
        super().__init__("camera_params")
        self.exposure = Param(4.0, limits=(0.1, 50.0), unit="ms", desc="exposure time per frame")
        self.gain = Param(1.0, limits=(0.0, 12.0), unit="dB", desc="sensor analog gain")
        self.framerate = Param(100.0, limits=(1.0, 1000.0), unit="Hz", desc="frames per second")
        self.roi = Param((0, 0, 1024, 1016), unit="px", desc="region of interest: x, y, w, h")
        self.trigger = Param("internal", limits=["internal", "external"], desc="frame trigger")
        self.paused = Param(False, loadable=False, desc="acquisition paused (never restored)")


def simulated_gui(camera: CameraSettings, done: threading.Event, seed: int | None) -> None:
    """A person at the GUI: nudges exposure and gain, moves the ROI, pauses at the end."""
    rng = random.Random(seed)
    while not done.wait(rng.uniform(0.05, 0.3)):
        choice = rng.random()
        if choice < 0.5:
            camera.exposure = round(min(50.0, max(0.1, camera.exposure + rng.uniform(-1, 1))), 2)
        elif choice < 0.8:
            camera.gain = round(rng.uniform(0.0, 12.0), 1)
        else:
            x, y = rng.randrange(0, 100), rng.randrange(0, 100)
            camera.roi = (x, y, 1024 - x, 1016 - y)
    camera.paused = True


def settings(camera: CameraSettings) -> str:
    return json.dumps(camera.params.values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="daemon data endpoint (default: from the configuration)")
    parser.add_argument("--control", help="daemon control endpoint (default: configuration)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds to acquire")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between publishes")
    parser.add_argument("--seed", type=int, help="seed of the simulated GUI")
    parser.add_argument("--stop", action="store_true", help="save the experiment at the end")
    args = parser.parse_args(argv)

    camera = CameraSettings()
    with Client("lightparam_camera", args.data, args.control) as client:
        mirror = TreeMirror(client, camera, period=args.period)
        print(f"restored: {settings(camera)}", flush=True)
        done = threading.Event()
        gui = threading.Thread(target=simulated_gui, args=(camera, done, args.seed))
        gui.start()
        frames = 0
        start = time.monotonic()
        while time.monotonic() - start < args.duration:  # the hot loop: reads only
            if not camera.paused:
                frames += 1
            time.sleep(1.0 / camera.framerate)
        done.set()
        gui.join()
        mirror.publish_changes()  # the pause, at once rather than at the next period
        if args.stop:
            print(f"saved: {mirror.stop('lightparam camera done')}", flush=True)
        mirror.close()
    print(f"final: {settings(camera)}", flush=True)
    print(f"camera: {frames} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
