"""Publisher processes for tests, started with multiprocessing's spawn method."""

from __future__ import annotations

from typing import Any

from collectord import Client


def publish_then_wait(
    name: str, data: str, control: str, count: int, done: Any, release: Any
) -> None:
    """Publish ``count`` updates without syncing, report done, stay connected."""
    client = Client(name, data, control)
    for index in range(count):
        client.set_params(f"{name}/params", index=index, label=f"{name}-{index}")
        if index % 100 == 0:
            client.add_data(f"{name}/progress", index)
    client.add_data(f"{name}/progress", count - 1)
    done.set()
    release.wait(120)
    client.close()


def stream_rows(name: str, data: str, control: str, streams: int, rows: int, done: Any) -> None:
    """Append ``rows`` rows to each of ``streams`` streams; row i holds (i, stream, ...)."""
    import numpy as np

    with Client(name, data, control) as client:
        handles = [
            client.stream(f"{name}/log{index}", ["row", "stream", "x"], "f8")
            for index in range(streams)
        ]
        for row in range(rows):
            for index, stream in enumerate(handles):
                stream.append(np.array([row, index, row * 0.5]))
        client.sync()
    done.set()


def publish_sync_and_hang(name: str, data: str, control: str, count: int, done: Any) -> None:
    """Publish ``count`` updates, wait until the daemon has them, then hang (to be killed)."""
    import time

    client = Client(name, data, control)
    for index in range(count):
        client.set_params(f"{name}/params", index=index)
    client.sync()
    done.set()
    time.sleep(600)


def stytra_changing_exposure(
    data: str, control: str, ready: Any, go: Any, done: Any, release: Any
) -> None:
    """A stytra collector with camera_params that sets exposure to 9.0 when told."""
    from lightparam import Param, Parametrized

    from collectord.compat.stytra import DataCollector

    with DataCollector(name="stytra-a", data=data, control=control, period=None) as dc:
        camera = Parametrized(
            "camera_params", dc, params=dict(exposure=Param(1.0), gain=Param(2.0))
        )
        dc.restore_from_saved()
        ready.set()
        go.wait(120)
        camera.exposure = 9.0
        dc.save_config_file()  # the daemon has it
        done.set()
        release.wait(120)


def stream_sync_and_hang(name: str, data: str, control: str, rows: int, done: Any) -> None:
    """Extend ``rows`` rows to ``<name>/log``, wait until the daemon has them,
    then hang (to be killed)."""
    import time

    import numpy as np

    client = Client(name, data, control)
    client.stream(f"{name}/log", ["row"], "f8").extend(np.arange(float(rows))[:, None])
    client.sync()
    done.set()
    time.sleep(600)
