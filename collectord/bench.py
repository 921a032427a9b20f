"""``collectord bench``: what this machine carries, raw and through collectord.

Every figure is measured in the same run, ``--repeat`` times, and the median
is reported, so that collectord's rates can be read as ratios to the raw
ceilings of this machine at this moment (shared machines are noisy):

* raw per-message ceiling: pyzmq PUB to SUB in another process, each message
  a msgpack map about the size of a parameter update, decoded on arrival;
* raw block bandwidth: 160 kB buffers (1000 rows of 20 float64), zero-copy;
* collectord parameter messages: ``set_params`` from one client, timed until
  ``sync()`` confirms them journaled; its ratio is to the raw message rate;
* row appends: ``stream.append`` of 20 float64 columns, until ``sync()``; the
  ratio is rows per second to the raw message rate (batching must beat one
  message per row);
* block extends: ``stream.extend`` of 1000 x 20 float64, until ``sync()``;
  the ratio is to the raw block bandwidth, to the disk (the rate at which
  100 MB can be written and fsynced in the daemon's output folder, the
  ceiling of anything that keeps the data), and to the lower of the two,
  which is what the target is for (issue 11);
* the daemon's peak memory while it ingests ``--stream-mb`` of blocks (from
  ``/proc`` while it runs, else from ``wait4`` once it ends; unavailable on
  Windows), and the rate of that longer extend, which the disk's sustained
  speed bounds;
* the cost of the calls an acquisition loop pays, in microseconds;
* how long a ``status`` request takes while the daemon holds ``--sessions``
  sessions (``collectord watch`` asks a few times a second);
* a big tree (``--tree`` parameters, 100 to a node): stop to saved, as a
  ratio to ``json.dumps`` + write + fsync + rename of the same tree (measured
  first, the daemon idle), once with
  the tree just set (its history, a line per parameter, is then written at
  the stop too: the ceiling of writing those lines is reported beside it,
  and the save is held to the two ceilings together)
  and once carried into the next experiment; the longest ``status`` meanwhile;
  a restart on the folder;
* the precision of the clock offsets measured on loopback (``--clock``
  samples): a client on the daemon's own clock, whose true offset is 0, so
  each sample's offset is its error.

Each timed measurement starts after ``os.sync()`` (``system.sync_all``; Windows
has no such call), so that the writeback of the one before (100 MB and more)
does not slow it down.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from . import __version__, jsonio, system
from .client import Client
from .control import request
from .daemon.process import spawn
from .protocol import PROTOCOL_VERSION, Command

BLOCK = (1000, 20)
TARGETS = {"params": 0.7, "append": 2.0, "extend_to_ceiling": 0.7}
#: Upper bounds for a big tree: stop to saved, as a ratio to its serialisation
#: ceiling; a restart on a folder of a million parameters, in seconds.
TREE_TARGETS = {"save": 2.0, "restart_s_at_1M": 2.0}


# -- raw ceilings (the receiver runs in its own process, as the daemon does) -----------


def _raw_receiver(endpoint_queue: Any, count: int, decode: bool, result_queue: Any) -> None:
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    endpoint_queue.put(f"tcp://127.0.0.1:{port}")
    received = 0
    size = 0
    first = sub.recv(copy=False)
    started = time.perf_counter()
    if decode:
        msgpack.unpackb(first.bytes)
    while received < count - 1:
        frame = sub.recv(copy=False)
        if decode:
            msgpack.unpackb(frame.bytes)
        else:
            size += len(frame)
        received += 1
    result_queue.put((time.perf_counter() - started, size))
    sub.close()
    context.term()


def _raw(count: int, payload: Callable[[int], Any], decode: bool) -> float:
    """Messages (or bytes) per second from a PUB here to a SUB in another process."""
    spawn = multiprocessing.get_context("spawn")
    endpoints, results = spawn.Queue(), spawn.Queue()
    receiver = spawn.Process(target=_raw_receiver, args=(endpoints, count, decode, results))
    receiver.start()
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(endpoints.get(timeout=60))
    pub.recv()  # the subscription: nothing is dropped from here on
    for index in range(count):
        pub.send(payload(index), copy=decode)
    elapsed, size = results.get(timeout=600)
    receiver.join()
    pub.close()
    context.term()
    return (count - 1) / elapsed if decode else size / elapsed


def raw_messages(count: int) -> float:
    def message(index: int) -> bytes:
        return msgpack.packb(
            {
                "v": 1,
                "kind": "params",
                "source": "camera",
                "session": "0123456789abcdef",
                "seq": index,
                "resends": True,
                "path": "camera/settings",
                "values": {"exposure": float(index), "gain": 1.0},
            }
        )

    return _raw(count, message, decode=True)


def raw_blocks(count: int) -> float:
    block = np.ones(BLOCK)
    return _raw(count, lambda index: block, decode=False)


def disk_ceiling(folder: Path, megabytes: float) -> float:
    """Bytes per second written and fsynced to ``folder``: what durable streams can reach."""
    block = np.ones(BLOCK).tobytes()
    count = max(1, int(megabytes * 1e6 / len(block)))
    target = folder / "disk-ceiling.tmp"
    started = time.perf_counter()
    with open(target, "wb", buffering=0) as file:
        for _ in range(count):
            file.write(block)
        os.fsync(file.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return count * len(block) / elapsed


def _quiet_disk() -> None:
    """Write back what earlier measurements left dirty, so it does not slow the next."""
    system.sync_all()


# -- collectord -----------------------------------------------------------------------


class _Daemon:
    def __init__(self, folder: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.folder = folder or tempfile.TemporaryDirectory(prefix="collectord-bench-")
        ports = ["--data", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*"]
        spawned = spawn(["--output", self.folder.name, *ports], stderr=subprocess.DEVNULL)
        self.process, self.data, self.control = spawned.process, spawned.data, spawned.control

    def peak_mb(self) -> float | None:
        """The daemon's peak memory so far, where the system shows it while it runs."""
        return system.peak_memory_mb(self.process.pid)

    def close(self, keep_folder: bool = False) -> float | None:
        """Stop the daemon; its peak memory, where the system tells it at the end."""
        self.process.kill()
        peak = system.reap_peak_memory_mb(self.process)
        assert self.process.stdout is not None
        self.process.stdout.close()
        if not keep_folder:
            self.folder.cleanup()
        return peak


# -- status with many sessions ----------------------------------------------------------

#: Status requests timed once the sessions are there.
STATUS_SAMPLES = 5


def status_with_sessions(sessions: int) -> dict[str, float]:
    """The median and longest ``status`` of a daemon that holds ``sessions``
    sessions (one data message each, as from that many processes)."""
    daemon = _Daemon()
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)
    try:
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(daemon.data)
        pub.recv()  # the daemon's subscription: nothing sent before it is lost
        body = msgpack.packb({"path": "bench/status", "values": {"x": 1}})
        for index in range(sessions):
            header = {
                "v": PROTOCOL_VERSION,
                "kind": "params",
                "source": "bench",
                "session": f"bench-{index}",
                "seq": 1,
            }
            pub.send_multipart([msgpack.packb(header), body])
        deadline = time.monotonic() + 600
        while len(request(daemon.control, Command.STATUS, {}, timeout=120)["sources"]) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not take {sessions} sessions in 600 s")
            time.sleep(0.2)
        took = []
        for _ in range(STATUS_SAMPLES):
            asked = time.perf_counter()
            request(daemon.control, Command.STATUS, {}, timeout=120)
            took.append(time.perf_counter() - asked)
    finally:
        pub.close()
        context.term()
        daemon.close()
    return {"sessions": sessions, "median_s": statistics.median(took), "max_s": max(took)}


# -- a big tree: save and restart ---------------------------------------------------------


def _big_tree(parameters: int) -> dict[str, dict[str, float]]:
    """``parameters`` parameters, 100 to a node, as a client sets them."""
    return {
        f"rig/node{node:06d}": {f"p{i:02d}": node + i / 100 for i in range(100)}
        for node in range(max(1, parameters // 100))
    }


def serialisation_ceiling(tree: dict[str, Any], folder: Path) -> tuple[float, float]:
    """Seconds for ``json.dumps`` + write + fsync + rename of ``tree``: the least
    any save of it costs; and the CPU seconds this process used for it."""
    target = folder / "ceiling.json"
    cpu = time.process_time()
    started = time.perf_counter()
    data = json.dumps(tree, sort_keys=True).encode()
    with open(folder / "ceiling.tmp", "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(folder / "ceiling.tmp", target)
    took = time.perf_counter() - started
    cpu = time.process_time() - cpu
    target.unlink()
    return took, cpu


def history_ceiling(nodes: dict[str, dict[str, float]], folder: Path) -> float:
    """Seconds for one ``json.dumps`` call per node of the lines of the
    history of setting ``nodes`` (``changes.py``: a map per parameter, built
    beforehand, untimed) + write + fsync + rename: the least that writing the
    same history costs, to set beside the tree's own ceiling."""
    target = folder / "history-ceiling.json"
    took = 0.0
    with open(folder / "history-ceiling.tmp", "wb") as file:
        for seq, (node, values) in enumerate(nodes.items(), 1):
            lines = [
                {
                    "time": 1.7e9 + seq,
                    "source": "bench-tree",
                    "session": "0123456789abcdef",
                    "seq": seq,
                    "path": f"{node}/{name}",
                    "value": value,
                    "carried": False,
                }
                for name, value in values.items()
            ]
            started = time.perf_counter()
            file.write(json.dumps(lines).encode())
            took += time.perf_counter() - started
        started = time.perf_counter()
        file.flush()
        os.fsync(file.fileno())
        os.replace(folder / "history-ceiling.tmp", target)
        took += time.perf_counter() - started
    target.unlink()
    return took


def _cpu_since(daemon: _Daemon, before: float | None) -> float | None:
    """The CPU seconds the daemon used since it had used ``before``."""
    now = system.process_cpu_seconds(daemon.process.pid)
    return now - before if now is not None and before is not None else None


#: Seconds between the bench's ``status`` requests while a big tree saves.
STATUS_EVERY = 0.02

#: How long the bench's second experiment on a big tree runs before its stop.
EXPERIMENT_S = 5.0


def big_tree(parameters: int) -> dict[str, float | None]:
    """Stop to saved for a tree of ``parameters`` parameters set just before
    (its history written at the stop), the longest wait for ``status``
    meanwhile, stop to saved for the experiment after it (the tree carried
    in, one change, ``EXPERIMENT_S`` seconds long), and a restart on the
    folder they leave."""
    nodes = _big_tree(parameters)
    daemon = _Daemon()
    try:
        # The ceiling first, while the daemon is idle: measured after the tree
        # is set, it shared the machine with the daemon writing the history
        # ahead, and the stop came as late as the ceiling took.
        nested: dict[str, Any] = {"rig": {k.split("/")[1]: v for k, v in nodes.items()}}
        _quiet_disk()
        ceiling, ceiling_cpu = serialisation_ceiling(nested, Path(daemon.folder.name))
        with Client("bench-tree", daemon.data, daemon.control) as client:
            for node, values in nodes.items():
                client.set_params(node, values)
            client.sync(timeout=600)
            latencies: list[float] = []
            saving = threading.Event()

            def ask_status() -> None:
                # A few times a second and more, as `collectord watch` asks:
                # often enough to see the daemon deaf for a moment, seldom
                # enough not to make the save's CPU figure its own.
                while True:
                    asked = time.perf_counter()
                    request(daemon.control, Command.STATUS, {}, timeout=120)
                    latencies.append(time.perf_counter() - asked)
                    if saving.wait(STATUS_EVERY):
                        break

            _quiet_disk()
            prober = threading.Thread(target=ask_status)
            prober.start()
            cpu = system.process_cpu_seconds(daemon.process.pid)
            started = time.perf_counter()
            client.stop(timeout=600)
            save = time.perf_counter() - started
            save_cpu = _cpu_since(daemon, cpu)
            saving.set()
            prober.join()
            # The rig's usual case: the next experiment carries the tree in,
            # changes a little of it, and runs a while (the daemon writes its
            # history meanwhile), then stops.
            first_node = next(iter(nodes))
            client.set_params(first_node, {"p00": -1.0})
            client.sync(timeout=600)
            time.sleep(EXPERIMENT_S)
            _quiet_disk()
            cpu = system.process_cpu_seconds(daemon.process.pid)
            started = time.perf_counter()
            client.stop(timeout=600)
            save_carried = time.perf_counter() - started
            save_carried_cpu = _cpu_since(daemon, cpu)
        _quiet_disk()  # measured after the saves: the history's writer ran meanwhile
        history = history_ceiling(nodes, Path(daemon.folder.name))
        daemon.close(keep_folder=True)
        _quiet_disk()
        cpu = system.children_cpu_seconds()
        started = time.perf_counter()
        daemon = _Daemon(daemon.folder)
        restart = time.perf_counter() - started
    finally:
        daemon.close()
    # What the restarted daemon used (it was killed once ready): the part of
    # the restart a loaded machine disturbs least.
    after = system.children_cpu_seconds()
    restart_cpu = after - cpu if after is not None and cpu is not None else None
    return {
        "parameters": parameters,
        "save_s": save,
        "save_carried_s": save_carried,
        "ceiling_s": ceiling,
        "ceiling_cpu_s": ceiling_cpu,
        "save_cpu_s": save_cpu,
        "save_carried_cpu_s": save_carried_cpu,
        "history_ceiling_s": history,
        "status_max_s": max(latencies) if latencies else 0.0,
        "restart_s": restart,
        "restart_cpu_s": restart_cpu,
    }


#: Seconds between the bench client's clock samples: fast, to gather many soon.
CLOCK_BENCH_INTERVAL = 0.02


def clock_precision(samples: int) -> dict[str, Any]:
    """``samples`` clock samples of a client on the daemon's own clock (true
    offset 0): their median offset, its spread (interquartile range), the
    95th percentile of the error, and the median round trip, in seconds."""
    daemon = _Daemon()
    try:
        interval = CLOCK_BENCH_INTERVAL
        with Client("bench-clock", daemon.data, daemon.control, clock_interval=interval) as client:
            deadline = time.monotonic() + 60 + samples * 0.1
            while time.monotonic() < deadline:
                counts = [
                    source.get("clock", {}).get("count", 0)
                    for source in client.status()["sources"]
                ]
                if sum(counts) >= samples:
                    break
                time.sleep(0.1)
            metadata = jsonio.load_json(client.stop())
    finally:
        daemon.close()
    (source,) = metadata["collectord"]["sources"]
    offsets = np.array([offset for _, offset, _ in source["clock"]["samples"]])
    rtts = np.array([rtt for _, _, rtt in source["clock"]["samples"]])
    low, high = np.percentile(offsets, [25, 75])
    return {
        "samples": len(offsets),
        "median_offset_s": float(np.median(offsets)),
        "offset_spread_s": float(high - low),
        "error_p95_s": float(np.percentile(np.abs(offsets), 95)),
        "median_rtt_s": float(np.median(rtts)),
    }


def collectord_params(client: Client, count: int) -> tuple[float, float]:
    """(messages per second until confirmed, microseconds per set_params call)."""
    started = time.perf_counter()
    for index in range(count):
        client.set_params("camera/settings", exposure=float(index), gain=1.0)
    published = time.perf_counter()
    client.sync(timeout=600)
    return count / (time.perf_counter() - started), (published - started) / count * 1e6


def collectord_append(client: Client, count: int, name: str) -> tuple[float, float]:
    """(rows per second until confirmed, microseconds per append call)."""
    stream = client.stream(f"bench/{name}", [f"c{i:02d}" for i in range(BLOCK[1])], "f8")
    row = np.ones(BLOCK[1])
    started = time.perf_counter()
    for _ in range(count):
        stream.append(row)
    published = time.perf_counter()
    client.sync(timeout=600)
    return count / (time.perf_counter() - started), (published - started) / count * 1e6


def collectord_extend(client: Client, megabytes: float, name: str) -> float:
    """Bytes per second of 1000 x 20 float64 blocks, until confirmed."""
    stream = client.stream(f"bench/{name}", [f"c{i:02d}" for i in range(BLOCK[1])], "f8")
    block = np.ones(BLOCK)
    count = max(1, int(megabytes * 1e6 / block.nbytes))
    started = time.perf_counter()
    for _ in range(count):
        stream.extend(block)
    client.sync(timeout=600)
    return count * block.nbytes / (time.perf_counter() - started)


def run(
    repeat: int,
    messages: int,
    rows: int,
    stream_mb: float,
    tree: int = 0,
    clock: int = 0,
    sessions: int = 0,
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {
        key: []
        for key in (
            "raw_messages_per_s",
            "raw_block_bytes_per_s",
            "disk_bytes_per_s",
            "params_per_s",
            "set_params_us",
            "append_rows_per_s",
            "append_us",
            "extend_bytes_per_s",
        )
    }
    for attempt in range(repeat):
        samples["raw_messages_per_s"].append(raw_messages(messages))
        samples["raw_block_bytes_per_s"].append(raw_blocks(max(10, int(100e6 / 160e3))))
        daemon = _Daemon()
        try:
            _quiet_disk()
            samples["disk_bytes_per_s"].append(disk_ceiling(Path(daemon.folder.name), 100))
            with Client("bench", daemon.data, daemon.control) as client:
                _quiet_disk()
                rate, cost = collectord_params(client, messages)
                samples["params_per_s"].append(rate)
                samples["set_params_us"].append(cost)
                _quiet_disk()
                rate, cost = collectord_append(client, rows, f"append{attempt}")
                samples["append_rows_per_s"].append(rate)
                samples["append_us"].append(cost)
                _quiet_disk()
                samples["extend_bytes_per_s"].append(
                    collectord_extend(client, 100, f"extend{attempt}")
                )
        finally:
            daemon.close()
    median = {key: statistics.median(values) for key, values in samples.items()}

    daemon = _Daemon()
    try:
        with Client("bench", daemon.data, daemon.control) as client:
            before = daemon.peak_mb()
            _quiet_disk()
            long_extend = collectord_extend(client, stream_mb, "memory")
            peak = daemon.peak_mb()
    finally:
        at_end = daemon.close()
    if peak is None:  # no /proc: the peak the system reports once the daemon has ended
        peak = at_end
    trees = [big_tree(tree) for _ in range(repeat)] if tree else []
    status = status_with_sessions(sessions) if sessions else None

    ratios = {
        "params": median["params_per_s"] / median["raw_messages_per_s"],
        "append": median["append_rows_per_s"] / median["raw_messages_per_s"],
        "extend": median["extend_bytes_per_s"] / median["raw_block_bytes_per_s"],
        "extend_to_disk": median["extend_bytes_per_s"] / median["disk_bytes_per_s"],
        "extend_to_ceiling": median["extend_bytes_per_s"]
        / min(median["raw_block_bytes_per_s"], median["disk_bytes_per_s"]),
    }
    return {
        "version": __version__,
        "repeat": repeat,
        "medians": median,
        "samples": samples,
        "ratios": ratios,
        "targets": TARGETS,
        "memory": {
            "stream_mb": stream_mb,
            "daemon_mb_before": before,
            "daemon_peak_mb": peak,
            "extend_bytes_per_s": long_extend,
        },
        "tree": _tree_medians(trees),
        "status": status,
        "clock": clock_precision(clock) if clock else None,
    }


def _tree_medians(trees: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not trees:
        return None
    keys = (
        "save_s",
        "save_carried_s",
        "ceiling_s",
        "history_ceiling_s",
        "status_max_s",
        "restart_s",
    )
    median = {key: statistics.median(t[key] for t in trees) for key in keys}
    for key in ("restart_cpu_s", "ceiling_cpu_s", "save_cpu_s", "save_carried_cpu_s"):
        known = [t[key] for t in trees if t.get(key) is not None]
        median[key] = statistics.median(known) if known else None

    def cpu_ratio(key: str) -> float | None:
        known = [t[key] / t["ceiling_cpu_s"] for t in trees if t.get(key) is not None]
        return statistics.median(known) if known else None

    return {
        "parameters": trees[0]["parameters"],
        **median,
        "save_cpu_ratio": cpu_ratio("save_cpu_s"),
        "save_carried_cpu_ratio": cpu_ratio("save_carried_cpu_s"),
        "save_ratio": statistics.median(t["save_s"] / t["ceiling_s"] for t in trees),
        "save_with_history_ratio": statistics.median(
            t["save_s"] / (t["ceiling_s"] + t["history_ceiling_s"]) for t in trees
        ),
        "save_carried_ratio": statistics.median(
            t["save_carried_s"] / t["ceiling_s"] for t in trees
        ),
        "samples": trees,
        "targets": TREE_TARGETS,
    }


def _cpu_lines(tree: dict[str, Any]) -> list[str]:
    """The saves' CPU against the ceiling's: what a loaded machine disturbs least."""
    if tree.get("save_cpu_ratio") is None:
        return []
    return [
        f"    CPU: the ceiling              {tree['ceiling_cpu_s']:>10.3f} s",
        f"    CPU: the daemon, just set     {tree['save_cpu_s']:>10.3f} s    "
        f"x{tree['save_cpu_ratio']:.2f} of the ceiling's",
        f"    CPU: the daemon, carried in   {tree['save_carried_cpu_s']:>10.3f} s    "
        f"x{tree['save_carried_cpu_ratio']:.2f} of the ceiling's",
    ]


def report(result: dict[str, Any]) -> str:
    median, ratios = result["medians"], result["ratios"]

    def verdict(key: str) -> str:
        return "meets" if ratios[key] >= TARGETS[key] else "BELOW"

    memory = result["memory"]
    peak = memory["daemon_peak_mb"]
    lines = [
        f"collectord bench (medians of {result['repeat']} runs; ratios to the raw ceiling "
        "measured in the same run)",
        f"  raw PUB->SUB + msgpack decode  {median['raw_messages_per_s']:>12,.0f} msg/s",
        f"  raw zero-copy 160 kB blocks    {median['raw_block_bytes_per_s'] / 1e6:>12,.0f} MB/s",
        f"  disk: write + fsync, 100 MB    {median['disk_bytes_per_s'] / 1e6:>12,.0f} MB/s",
        f"  set_params until sync()        {median['params_per_s']:>12,.0f} msg/s   "
        f"x{ratios['params']:.2f} (target x{TARGETS['params']}: {verdict('params')})",
        f"  append, 20 float64 columns     {median['append_rows_per_s']:>12,.0f} rows/s  "
        f"x{ratios['append']:.2f} (target x{TARGETS['append']}: {verdict('append')})",
        f"  extend, 1000 x 20 float64      {median['extend_bytes_per_s'] / 1e6:>12,.0f} MB/s    "
        f"x{ratios['extend_to_ceiling']:.2f} of the lower ceiling (target "
        f"x{TARGETS['extend_to_ceiling']}: {verdict('extend_to_ceiling')}); "
        f"x{ratios['extend']:.2f} of the transport, x{ratios['extend_to_disk']:.2f} of the disk",
        f"  cost of set_params             {median['set_params_us']:>12.2f} us per call",
        f"  cost of append                 {median['append_us']:>12.2f} us per call",
        "  daemon peak memory             "
        + (
            f"{peak:>12.0f} MB while ingesting {memory['stream_mb']:.0f} MB of blocks"
            if peak is not None
            else "   (not available on this system)"
        ),
        f"  extend, {memory['stream_mb']:.0f} MB in one go      "
        f"{memory['extend_bytes_per_s'] / 1e6:>8,.0f} MB/s    (the disk's sustained speed shows)",
    ]
    tree = result.get("tree")
    if tree:
        # A tree just set has its history written at the stop too: the save
        # is held to both ceilings together (docs/performance.md, session 10).
        with_history = tree["save_with_history_ratio"]
        verdict_save = "meets" if with_history <= TREE_TARGETS["save"] else "ABOVE"
        carried = tree["save_carried_ratio"]
        verdict_carried = "meets" if carried <= TREE_TARGETS["save"] else "ABOVE"
        lines += [
            f"  tree of {tree['parameters']:,} parameters:",
            f"    json + write + fsync + rename {tree['ceiling_s']:>10.3f} s    (ceiling)",
            f"    stop to saved, just set       {tree['save_s']:>10.3f} s    "
            f"x{tree['save_ratio']:.2f} of the tree's ceiling",
            f"      its history: json.dumps, write {tree['history_ceiling_s']:>10.3f} s    "
            f"(a line per parameter, written at this stop too; the save is "
            f"x{with_history:.2f} of both ceilings together: target at most "
            f"x{TREE_TARGETS['save']}: {verdict_save})",
            f"    stop to saved, carried in     {tree['save_carried_s']:>10.3f} s    "
            f"x{tree['save_carried_ratio']:.2f} (target at most x{TREE_TARGETS['save']}: "
            f"{verdict_carried}; the next experiment, {EXPERIMENT_S:g} s long)",
            f"    longest status during it      {tree['status_max_s']:>10.3f} s",
            *_cpu_lines(tree),
            f"    restart on its folder         {tree['restart_s']:>10.3f} s    "
            f"(target under {TREE_TARGETS['restart_s_at_1M']} s at 1,000,000)",
        ]
        if tree.get("restart_cpu_s") is not None:
            lines.append(
                f"    CPU the restarted daemon used {tree['restart_cpu_s']:>10.3f} s    "
                "(interpreter and imports included)"
            )
    clock = result.get("clock")
    if clock:
        lines += [
            f"  clock offsets on loopback, {clock['samples']} samples (true offset 0):",
            f"    median offset                 {clock['median_offset_s'] * 1e6:>10.1f} us",
            f"    spread (interquartile range)  {clock['offset_spread_s'] * 1e6:>10.1f} us",
            f"    95th percentile of the error  {clock['error_p95_s'] * 1e6:>10.1f} us",
            f"    median round trip             {clock['median_rtt_s'] * 1e6:>10.1f} us",
        ]
    status = result.get("status")
    if status:
        lines.append(
            f"  status, {status['sessions']:,} sessions     {status['median_s']:>10.3f} s    "
            f"(median of {STATUS_SAMPLES}; longest {status['max_s']:.3f} s)"
        )
    return "\n".join(lines)


def main(
    repeat: int,
    messages: int,
    rows: int,
    stream_mb: float,
    as_json: bool,
    tree: int = 0,
    clock: int = 0,
    sessions: int = 0,
) -> int:
    result = run(repeat, messages, rows, stream_mb, tree, clock, sessions)
    print(json.dumps(result, indent=2) if as_json else report(result))
    return 0
