"""A publisher process for the kill -9 trials (``test_kill_trials.py``).

Started with multiprocessing's spawn method. It publishes, at a pace of its
own, iteration after iteration ``i = 0, 1, 2, ...``:

* ``set_params(f"{name}/settings", n=i)`` (after ``model=MODEL`` once, first),
* ``add_data(f"{name}/values/v{i}", i)``,
* row ``(i, 2 i)`` of the stream ``f"{name}/rows"``,

until it is told to finish (``ready`` is set once it published ``i = 0``).
Then it writes the highest ``i`` it published to its result file, closes the
client (which delivers everything) and writes the file again with how the
close went. Meanwhile it obeys ``("stop", id)``
commands: a ``client.stop()`` in a thread of its own (publishing goes on),
whose outcome is put on ``replies`` as ``(id, ok, detail)``.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any

from collectord import Client

#: The constant each publisher sets once, first; every later experiment must hold it.
MODEL = "cam-3"


def _write(path: Path, result: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result))
    temporary.replace(path)


def publish(
    name: str,
    data: str,
    control: str,
    result_file: str,
    seed: int,
    ready: Any,
    finish: Any,
    commands: Any,
    replies: Any,
    close_timeout: float = 90.0,
) -> None:
    rng = random.Random(seed)
    client = Client(name, data, control)
    node = f"{name}/settings"
    client.set_params(node, model=MODEL)
    rows = client.stream(f"{name}/rows", ["i", "x"], "f8")
    rate = rng.uniform(150.0, 500.0)  # iterations per second, between bursts
    burst = 0
    stoppers: list[threading.Thread] = []

    def stop(request_id: int) -> None:
        try:
            path = client.stop(reason=f"trial stop {request_id} from {name}", timeout=30.0)
        except Exception as exc:  # a daemon killed under the stop: reported, not raised
            replies.put((request_id, False, f"{type(exc).__name__}: {exc}"))
        else:
            replies.put((request_id, True, path))

    i = -1
    started = time.monotonic()
    while not finish.is_set():
        i += 1
        client.set_params(node, n=i)
        client.add_data(f"{name}/values/v{i}", i)
        rows.append((i, 2.0 * i))
        if i == 0:
            ready.set()  # published (held by the client until the daemon confirms it)
        if not commands.empty():
            try:
                command, request_id = commands.get_nowait()
            except queue.Empty:
                pass
            else:
                assert command == "stop", command
                thread = threading.Thread(target=stop, args=(request_id,), daemon=True)
                thread.start()
                stoppers.append(thread)
        if burst:
            burst -= 1  # as fast as the client takes them
        elif rng.random() < 0.01:
            burst = rng.randrange(20, 300)
        else:
            time.sleep(rng.expovariate(rate))
    published = time.monotonic() - started
    result: dict[str, Any] = {
        "name": name,
        "max_i": i,
        "seconds": published,
        "finished_at": time.time(),  # experiments stopped before ended while it ran
    }
    _write(Path(result_file), result)
    try:
        client.close(timeout=close_timeout)
    except Exception as exc:
        result["close_error"] = f"{type(exc).__name__}: {exc}"
    result["last_seq"] = client._shared.seq  # every message it numbered
    result["overflowed"] = client.overflowed
    result["unconfirmed"] = client.unconfirmed
    for thread in stoppers:
        thread.join(5)  # a stop cut by a kill ends with the client's close
    _write(Path(result_file), result)
