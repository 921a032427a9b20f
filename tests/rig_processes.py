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
