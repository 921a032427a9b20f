"""A process that ends without close(): what it published is delivered at exit.

stytra never closes its DataCollector, and a short script rarely closes its
client. Each test runs a real child interpreter that publishes and simply
ends, against a real daemon (or none).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import DaemonProcess

from collectord import load_json

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Publishes 200 static data and ends: no close(), no with block.
SCRIPT = """
    import sys
    from collectord import Client

    client = Client("script", sys.argv[1], sys.argv[2])
    for index in range(200):
        client.add_data(f"script/item{index:03d}", index)
    print("published", flush=True)
"""

#: The same, from a function: the client is garbage before the interpreter exits.
DROPPED = """
    import sys
    from collectord import Client

    def publish():
        client = Client("script", sys.argv[1], sys.argv[2])
        for index in range(200):
            client.add_data(f"script/item{index:03d}", index)

    publish()
    print("published", flush=True)
"""

#: A stytra experiment that never calls close() (stytra does not).
STYTRA = """
    import sys
    from lightparam import Param, Parametrized
    from collectord.compat.stytra import DataCollector

    dc = DataCollector(name="stytra", data=sys.argv[1], control=sys.argv[2], period=None)
    camera = Parametrized("camera_params", dc, params=dict(exposure=Param(1.0)))
    dc.restore_from_saved()
    camera.exposure = 7.5  # published by nobody but the exit
    for index in range(200):
        dc.add_static_data(index, f"stimulus/log/item{index:03d}")
    print("published", flush=True)
"""


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A child interpreter running ``script`` with this checkout's collectord."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run(script: str, *args: str) -> tuple[str, str]:
    process = child(script, *args)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out, err


EXPECTED = {f"item{index:03d}": index for index in range(200)}


@pytest.mark.parametrize("script", [SCRIPT, DROPPED], ids=["ends", "client-dropped"])
def test_a_script_that_ends_without_close_delivers_everything(
    daemon: DaemonProcess, script: str
) -> None:
    out, err = run(script, daemon.data, daemon.control)
    assert out == "published\n"
    assert "not delivered" not in err
    saved = load_json(daemon.stop()["path"])
    assert saved["script"] == EXPECTED
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["messages"] == 200
    # It said goodbye: the next stop does not wait for it.
    assert not [s for s in daemon.status()["sources"] if s["connected"]]


def test_a_stytra_experiment_that_ends_without_close_delivers_everything(
    daemon: DaemonProcess,
) -> None:
    out, err = run(STYTRA, daemon.data, daemon.control)
    assert out == "published\n"
    assert "not delivered" not in err
    saved = load_json(daemon.stop()["path"])
    assert saved["stimulus"]["log"] == EXPECTED
    assert saved["camera_params"] == {"exposure": 7.5}


#: No daemon: each way of bounding the wait at exit.
UNDELIVERED = {
    "keyword": """
        import sys
        from collectord import Client

        client = Client("script", sys.argv[1], sys.argv[2], exit_timeout=1.0)
        for index in range(200):
            client.add_data(f"script/item{index:03d}", index)
        print("published", flush=True)
    """,
    "module": """
        import sys
        import collectord.client
        from collectord import Client

        collectord.client.EXIT_TIMEOUT = 1.0
        client = Client("script", sys.argv[1], sys.argv[2])
        for index in range(200):
            client.add_data(f"script/item{index:03d}", index)
        print("published", flush=True)
    """,
    "stytra": """
        import sys
        from collectord.compat.stytra import DataCollector

        dc = DataCollector(
            data=sys.argv[1], control=sys.argv[2], period=None, exit_timeout=1.0,
            start_daemon=False,
        )
        for index in range(200):
            dc.add_static_data(index, f"stimulus/log/item{index:03d}")
        print("published", flush=True)
    """,
}


@pytest.mark.parametrize("how", sorted(UNDELIVERED))
def test_without_a_daemon_exit_waits_a_bounded_time_and_says_what_is_lost(ipc, how: str) -> None:
    process = child(UNDELIVERED[how], ipc("data"), ipc("control"))
    assert process.stdout is not None
    assert process.stdout.readline() == "published\n"
    ended = time.monotonic()  # the script's last line ran: the interpreter exits now
    try:
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    waited = time.monotonic() - ended
    assert process.returncode == 0, err
    assert 0.9 <= waited < 1.0 + 4.0, f"exited {waited:.2f} s after its last line"
    assert re.search(r"collectord client '\w+': 200 messages not delivered", err), err
