"""Randomised kill -9 trials: the acceptance test of the experiment's lifecycle.

One trial, for one seed (``random.Random(seed)`` draws every choice): a daemon
and three publisher processes (``trial_processes.publish``: a counter and a
constant set as parameters, one static value and one stream row per
iteration). While they publish, the trial does, at random moments, one of:

* ``kill -9`` of the daemon, then a restart on the same endpoints (sometimes
  ``collectord recover`` first, or a restart with ``--no-resume``, or a start
  killed at a random moment before the restart);
* a stop, from the control endpoint or from a client's ``stop()``, sometimes
  followed at once by a ``kill -9``;
* a daemon taken down (``kill -9`` or SIGTERM) and started again with a fault
  point of a save set (``faults.SAVE_STEPS``, sometimes ``@2``), a stop sent
  to it, and its death at that point awaited; sometimes the next start has a
  fault point too (a save step, or ``open.replayed``), so that it dies while
  finishing the previous crash, or is killed at a random moment of its start;
  then a clean restart;
* SIGTERM (a save, exit 0), then a restart; or SIGTERM cut by a ``kill -9``.

Publishers start at random moments, and one may finish early. At the end the
publishers finish and close (delivering everything), a last stop saves, and
SIGTERM ends the daemon (exit 0). Then, over every saved experiment:

* each value and each stream row a client published is in exactly one
  experiment (nothing lost, nothing doubled), rows in order, and the
  experiments count exactly the messages it numbered;
* from the first experiment holding a message of a client, every experiment
  that ended while it ran lists it as a source, and every experiment that
  lists it holds the constant it set first (an experiment's metadata holds
  the parameters in force in it: ``collectord/tree.py``); its counter never
  goes back;
* no metadata shows a lost message, a gap or a rejection; every stop that
  answered named a metadata file that is there; no save is left half done.

``COLLECTORD_TRIALS=N`` runs seeds 0..N-1 (default 3);
``COLLECTORD_TRIAL_SEEDS=7,19`` runs those seeds; ``COLLECTORD_TRIAL_SECONDS``
sets how long the clients publish under fire (default 4 s).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import queue
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trial_processes
import zmq
from conftest import DaemonProcess, run_cli, saved_experiments, send_stop_without_waiting, wait_for

from collectord import Client, codec, faults
from collectord.protocol import PROTOCOL_VERSION

CLIENTS = ("cam", "tracking", "stimulus")
READY = re.compile(r"listening: data=(\S+) control=(\S+)")
#: Fault points of a start (``open.*``): a daemon dies there replaying a journal.
OPEN_FAULTS = tuple(fault for fault in faults.Fault if fault.value.startswith("open."))


def _seeds() -> list[int]:
    chosen = os.environ.get("COLLECTORD_TRIAL_SEEDS")
    if chosen:
        return [int(seed) for seed in chosen.split(",") if seed.strip()]
    return list(range(int(os.environ.get("COLLECTORD_TRIALS", "3"))))


TRIAL_SECONDS = float(os.environ.get("COLLECTORD_TRIAL_SECONDS", "4"))


# -- talking to a daemon without the fixture's helpers ------------------------------------


def _stop_message(reason: str) -> bytes:
    request_id = random.randrange(1, 2**31)
    return codec.pack({"v": PROTOCOL_VERSION, "cmd": "stop", "id": request_id, "reason": reason})


def stop_or_death(
    control: str, process: subprocess.Popen[Any], timeout: float = 60.0
) -> dict[str, Any] | None:
    """Send a stop; return its reply, or None if ``process`` dies first."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(control)
        sock.send_multipart([b"", _stop_message("trial stop to a faulty daemon")])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sock.poll(20):
                return dict(codec.unpack(sock.recv_multipart()[-1]))
            if process.poll() is not None:
                return None
        raise AssertionError(f"neither an answer to a stop nor a death in {timeout} s")
    finally:
        sock.close()
        context.term()


@dataclasses.dataclass
class Faulty:
    """A daemon started with a fault point set, outside the fixture."""

    process: subprocess.Popen[str]
    started: bool  # False: it died at the fault point while opening the folder


def daemon_command(output: Path, data: str, control: str) -> list[str]:
    endpoints = ["--data", data, "--control", control]
    return [sys.executable, "-m", "collectord", "run", "--output", str(output), *endpoints]


def _dies_within(process: subprocess.Popen[Any], seconds: float) -> bool:
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def start_faulty(output: Path, data: str, control: str, fault: str, log: Path) -> Faulty:
    """``collectord run`` with ``COLLECTORD_FAULT=fault``: it listens, or dies opening."""
    with open(log, "a") as stderr:
        stderr.write(f"--- trial: starting a daemon with {faults.ENV}={fault}\n")
        stderr.flush()
        process = subprocess.Popen(
            daemon_command(output, data, control),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, faults.ENV: fault},
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # a line once it listens; "" if it dies first
    if READY.search(line):
        return Faulty(process, started=True)
    returncode = process.wait(60)
    assert returncode == -signal.SIGKILL, (fault, returncode, line, log.read_text()[-3000:])
    return Faulty(process, started=False)


# -- a trial ------------------------------------------------------------------------------


@dataclasses.dataclass
class Publisher:
    name: str
    process: Any
    finish: Any
    commands: Any
    result_file: Path
    ready: Any


@dataclasses.dataclass
class Tally:
    actions: list[str] = dataclasses.field(default_factory=list)
    kills: int = 0  # plain kill -9 by the trial
    start_kills: int = 0  # kill -9 at a random moment of a start
    fault_kills: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    open_fault_kills: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    stops: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    terms: int = 0
    recovers: int = 0
    no_resume: int = 0
    restarts: int = 0
    client_stop_errors: list[str] = dataclasses.field(default_factory=list)


class Trial:
    """The rig of one seed: one daemon at a time on one folder, and the publishers."""

    def __init__(
        self, seed: int, make_daemon: Callable[..., DaemonProcess], tmp_path: Path
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.make_daemon = make_daemon
        self.tmp_path = tmp_path
        self.tally = Tally()
        self.began = time.monotonic()
        self.daemon = make_daemon()
        self.output = self.daemon.output
        self.data, self.control = self.daemon.data, self.daemon.control
        self.log = self.daemon.log
        self.faulty: list[subprocess.Popen[str]] = []
        self.spawn = multiprocessing.get_context("spawn")
        self.replies = self.spawn.Queue()
        self.early_replies: dict[int, tuple[bool, str]] = {}
        self.publishers: list[Publisher] = []
        self._ids = iter(range(1, 10**9))
        self.acts = 0
        #: Metadata files that stops answered with: each must be there at the end.
        self.saved: list[str] = []

    def note(self, action: str) -> None:
        action = f"{time.monotonic() - self.began:6.2f} s  {action}"
        self.tally.actions.append(action)
        with open(self.log, "a") as log:
            log.write(f"--- trial {self.seed}: {action}\n")

    # -- publishers --

    def start_publisher(self, name: str) -> None:
        finish = self.spawn.Event()
        ready = self.spawn.Event()
        commands = self.spawn.Queue()
        result_file = self.tmp_path / f"{name}.json"
        process = self.spawn.Process(
            target=trial_processes.publish,
            args=(
                name,
                self.data,
                self.control,
                str(result_file),
                self.rng.randrange(2**32),
                ready,
                finish,
                commands,
                self.replies,
            ),
            name=f"trial-{name}",
        )
        process.start()
        self.publishers.append(Publisher(name, process, finish, commands, result_file, ready))
        wait_for(lambda: ready.is_set() or not process.is_alive(), 60, f"{name} to publish")
        assert process.is_alive(), f"publisher {name} exited with {process.exitcode}"
        self.note(f"publisher {name} publishing")

    def finish_publisher(self, publisher: Publisher) -> None:
        publisher.finish.set()
        self.note(f"publisher {publisher.name} told to finish")

    def wait_reply(self, request_id: int, timeout: float = 90.0) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        while request_id not in self.early_replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no outcome of client stop {request_id} in {timeout} s")
            try:
                got, ok, detail = self.replies.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self.early_replies[got] = (ok, detail)
        return self.early_replies.pop(request_id)

    # -- the daemon --

    def restart(self, after: str) -> None:
        """Start a clean daemon on the folder (the previous one is dead)."""
        draw = self.rng.random()
        extra: tuple[str, ...] = ()
        if draw < 0.15:
            result = run_cli("recover", "--output", str(self.output))
            assert result.returncode == 0, (result.returncode, result.stderr)
            self.tally.recovers += 1
            self.note(f"collectord recover after {after}")
        elif draw < 0.3:
            extra = ("--no-resume",)
            self.tally.no_resume += 1
        self.daemon = self.make_daemon(data=self.data, control=self.control, extra=extra)
        self.tally.restarts += 1
        self.note(f"restarted {' '.join(extra)}")

    def kill(self) -> None:
        self.daemon.kill9()
        self.tally.kills += 1
        self.note("kill -9")

    def take_down(self) -> None:
        """kill -9 or SIGTERM: the daemon is gone either way."""
        if self.rng.random() < 0.7:
            self.kill()
        else:
            assert self.daemon.terminate() == 0
            self.tally.terms += 1
            self.note("SIGTERM")

    # -- actions --

    def act(self) -> None:
        self.acts += 1
        action = self.rng.choices(["kill", "stop", "fault", "term"], weights=[3, 3, 3, 1])[0]
        getattr(self, f"_{action}")()

    def _kill(self) -> None:
        self.kill()
        if self.rng.random() < 0.2:
            self.killed_start()
        self.restart("kill -9")

    def _term(self) -> None:
        if self.rng.random() < 0.3:  # a kill -9 cuts the save SIGTERM started
            assert self.daemon.process is not None
            self.daemon.process.send_signal(signal.SIGTERM)
            time.sleep(self.rng.uniform(0.0, 0.05))
            self.note("SIGTERM")
            self.kill()
            self.tally.stops["SIGTERM then kill -9"] += 1
            self.restart("SIGTERM then kill -9")
            return
        assert self.daemon.terminate() == 0
        self.tally.terms += 1
        self.note("SIGTERM")
        self.restart("SIGTERM")

    def _stop(self) -> None:
        running = [p for p in self.publishers if not p.finish.is_set() and p.process.is_alive()]
        from_client = bool(running) and self.rng.random() < 0.5
        then_kill = self.rng.random() < 0.3
        by = "client" if from_client else "control"
        self.tally.stops[f"{by}{' then kill -9' if then_kill else ''}"] += 1
        if from_client:
            publisher = self.rng.choice(running)
            request_id = next(self._ids)
            publisher.commands.put(("stop", request_id))
            self.note(f"stop {request_id} from {publisher.name}")
        elif then_kill:
            send_stop_without_waiting(self.control, "trial stop, then kill -9")
            self.note("stop from the control endpoint (not waited for)")
        else:
            reply = self.daemon.stop(reason="trial stop")
            self.saved.append(reply["path"])
            self.note(f"stop from the control endpoint: saved {reply['path']}")
        if then_kill:
            time.sleep(self.rng.uniform(0.0, 0.05))
            self.kill()
            self.restart("stop then kill -9")
        elif from_client:
            ok, detail = self.wait_reply(request_id)
            if ok:
                self.saved.append(detail)
            else:
                self.tally.client_stop_errors.append(detail)
            self.note(f"client stop {request_id}: {ok} {detail}")

    def _fault(self) -> None:
        self.take_down()
        chain = 0
        while True:
            chain += 1
            if chain > 1 and self.rng.random() < 0.25:
                self.killed_start()
            else:
                self.faulty_start(first=chain == 1)
            if chain >= 3 or self.rng.random() < 0.7:
                break
        self.restart("a fault")

    def faulty_start(self, *, first: bool) -> None:
        """A daemon with a fault point set dies at it: opening, or in a save asked of it."""
        if not first and self.rng.random() < 0.4:
            step = self.rng.choice(OPEN_FAULTS)  # dies replaying what the last one left
        else:
            step = self.rng.choice(faults.SAVE_STEPS)
        nth = 2 if self.rng.random() < 0.2 else 1
        fault = step.value if nth == 1 else f"{step.value}@{nth}"
        faulty = start_faulty(self.output, self.data, self.control, fault, self.log)
        self.faulty.append(faulty.process)
        if not faulty.started:
            self.tally.open_fault_kills[step.value] += 1
            self.note(f"died at {fault} while opening the folder")
        elif step in OPEN_FAULTS:  # nothing to replay: it runs, and is killed as any daemon
            faulty.process.kill()
            faulty.process.wait(30)
            self.tally.kills += 1
            self.note(f"started with {fault} (nothing to replay); kill -9")
        else:
            stops = 0
            while not _dies_within(faulty.process, 0.5 if stops else 0.0):
                assert stops <= nth + 2, f"a daemon with {fault} lives on after {stops} stops"
                if stop_or_death(self.control, faulty.process) is not None:
                    stops += 1  # saved (@2), or its save goes on after the reply
            assert faulty.process.wait(60) == -signal.SIGKILL
            self.tally.fault_kills[step.value] += 1
            self.note(f"died at {fault} in a save ({stops} stops answered)")

    def killed_start(self) -> None:
        """A daemon killed at a random moment of its start: before, in or after opening."""
        with open(self.log, "a") as stderr:
            stderr.write("--- trial: starting a daemon to kill it at a random moment\n")
            stderr.flush()
            process = subprocess.Popen(
                daemon_command(self.output, self.data, self.control),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        self.faulty.append(process)
        time.sleep(self.rng.uniform(0.2, 1.0))  # when: the randomness, not a synchronisation
        process.kill()
        process.wait(30)
        self.tally.start_kills += 1
        self.note("a start killed at a random moment")

    # -- the run --

    def run(self, seconds: float) -> list[dict[str, Any]]:
        rng = self.rng
        names = list(CLIENTS)
        first = rng.randint(1, len(names))
        for name in names[:first]:
            self.start_publisher(name)
        late = names[first:]
        early_finish = rng.choice(names) if rng.random() < 0.3 else None
        started = time.monotonic()
        while time.monotonic() - started < seconds or self.acts < 4:
            time.sleep(rng.uniform(0.02, 0.4))  # the randomness of when, not a synchronisation
            if late and rng.random() < 0.4:
                self.start_publisher(late.pop(0))
            if early_finish and rng.random() < 0.1:
                for publisher in self.publishers:
                    if publisher.name == early_finish:
                        self.finish_publisher(publisher)
                        early_finish = None
            self.act()
        for name in late:
            self.start_publisher(name)
        # The end: every publisher finishes and closes, one last stop, SIGTERM.
        for publisher in self.publishers:
            if not publisher.finish.is_set():
                self.finish_publisher(publisher)
        results = []
        for publisher in self.publishers:
            publisher.process.join(180)
            assert publisher.process.exitcode == 0, (publisher.name, publisher.process.exitcode)
            results.append(json.loads(publisher.result_file.read_text()))
        self.note("publishers closed")
        self.saved.append(self.daemon.stop(reason="trial end")["path"])
        assert self.daemon.terminate() == 0
        self.note("final stop, SIGTERM")
        return results

    def close(self) -> None:
        for publisher in self.publishers:
            if publisher.process.is_alive():
                publisher.process.kill()
            publisher.process.join(30)
        for process in self.faulty:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def trial_factory(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> Iterator[Callable[[int], Trial]]:
    trials: list[Trial] = []

    def make(seed: int) -> Trial:
        trial = Trial(seed, make_daemon, tmp_path)
        trials.append(trial)
        return trial

    yield make
    for trial in trials:
        trial.close()


# -- what was saved -----------------------------------------------------------------------


def check(
    experiments: list[dict[str, Any]], results: list[dict[str, Any]], output: Path
) -> tuple[list[str], dict[str, int]]:
    """Every rule of the trial, over every saved experiment: the broken ones, and counts."""
    problems: list[str] = []
    counts = collections.Counter[str]()
    for index, metadata in enumerate(experiments):
        where = f"experiment {index} ({metadata['_path'].relative_to(output)})"
        account = metadata["collectord"]
        if account.get("unidentified_rejections"):
            problems.append(
                f"{where}: {account['unidentified_rejections']} unidentified rejections"
            )
        for source in account["sources"]:
            messages = source["messages"]
            if messages["lost"] or source["gaps"] or messages["rejected"]:
                problems.append(
                    f"{where}: {source['name']} ({source['session']}): lost "
                    f"{messages['lost']}, gaps {source['gaps']}, rejected "
                    f"{messages['rejected']} {source['recent_rejections']}"
                )
        if account["unconfirmed"]:
            counts["barrier timeouts"] += 1
        if any("recovered" in restart for restart in account.get("restarts", [])):
            counts["recovered experiments"] += 1
        if any("resumed" in restart for restart in account.get("restarts", [])):
            counts["resumed experiments"] += 1

    for result in results:
        name, top = result["name"], result["max_i"]
        if "close_error" in result:
            problems.append(f"{name}: close failed: {result['close_error']}")
        if result.get("overflowed"):
            problems.append(f"{name}: {result['overflowed']} messages overflowed")
        values = collections.Counter[int]()
        rows = collections.Counter[int]()
        all_rows: list[int] = []
        seen_first = None
        counter = -1
        messages = 0
        for index, metadata in enumerate(experiments):
            where = f"experiment {index} ({metadata['_path'].relative_to(output)})"
            node = metadata.get(name, {})
            mine = [s for s in metadata["collectord"]["sources"] if s["name"] == name]
            messages += sum(s["messages"]["messages"] for s in mine)
            held = node.get("values", {})
            for key, value in held.items():
                if key != f"v{value}":
                    problems.append(f"{where}: {name}/values/{key} = {value!r}")
                values[value] += 1
            descriptor = node.get("rows")
            file_rows: list[int] = []
            if isinstance(descriptor, dict) and descriptor.get("rows"):
                table = np.load(metadata["_path"].parent / descriptor["file"])
                if len(table) != descriptor["rows"]:
                    problems.append(
                        f"{where}: {name}/rows: {len(table)} rows in the file, "
                        f"{descriptor['rows']} in the metadata"
                    )
                file_rows = [int(i) for i in table["i"]]
                if not np.array_equal(table["x"], 2.0 * table["i"]):
                    problems.append(f"{where}: {name}/rows: a row is not (i, 2i)")
                if file_rows != list(range(file_rows[0], file_rows[0] + len(file_rows))):
                    problems.append(f"{where}: {name}/rows out of order: {file_rows[:20]}...")
            for row in file_rows:
                rows[row] += 1
            all_rows.extend(file_rows)
            if seen_first is None and (
                held or file_rows or any(s["messages"]["messages"] for s in mine)
            ):
                seen_first = index
            settings = node.get("settings", {})
            if seen_first is None:
                continue
            # Its parameters are in force in every experiment it took part in,
            # and it took part in every one that ended while it ran.
            stopped = dt.datetime.fromisoformat(metadata["collectord"]["stopped"]).timestamp()
            if not mine and stopped < result["finished_at"]:
                problems.append(f"{where}: ended while {name} ran, and it is not a source")
            if not mine:
                continue
            if settings.get("model") != trial_processes.MODEL:
                problems.append(f"{where}: {name}/settings/model is {settings.get('model')!r}")
            n = settings.get("n", -1)
            if n < counter:
                problems.append(f"{where}: {name}/settings/n went back from {counter} to {n}")
            if held and n < max(held.values()):
                problems.append(f"{where}: {name}/settings/n = {n} < v{max(held.values())}")
            counter = max(counter, n)
        counts["experiments with " + name] = sum(
            1 for m in experiments if any(s["name"] == name for s in m["collectord"]["sources"])
        )
        lost = [i for i in range(top + 1) if values[i] == 0]
        doubled = sorted(i for i, times in values.items() if times > 1)
        extra = sorted(i for i in values if not 0 <= i <= top)
        if lost or doubled or extra:
            problems.append(
                f"{name}: values lost {_ranges(lost)}, doubled {_ranges(doubled)}, "
                f"beyond v{top}: {_ranges(extra)}"
            )
        lost = [i for i in range(top + 1) if rows[i] == 0]
        doubled = sorted(i for i, times in rows.items() if times > 1)
        extra = sorted(i for i in rows if not 0 <= i <= top)
        if lost or doubled or extra:
            problems.append(
                f"{name}: rows lost {_ranges(lost)}, doubled {_ranges(doubled)}, "
                f"beyond {top}: {_ranges(extra)}"
            )
        elif all_rows != list(range(top + 1)):
            problems.append(f"{name}: rows, experiment after experiment, are not in order")
        if counter != top:
            problems.append(f"{name}: the last counter saved is {counter}, published {top}")
        if messages != result.get("last_seq"):
            problems.append(
                f"{name}: the experiments count {messages} messages; "
                f"it sent {result.get('last_seq')}"
            )
        counts["values"] += top + 1
        counts["rows"] += top + 1
        counts["messages"] += result.get("last_seq", 0)
    return problems, dict(counts)


def _ranges(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    spans = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        spans.append(f"{start}" if start == previous else f"{start}..{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(spans[:10]) + (f" (+{len(spans) - 10} more)" if len(spans) > 10 else "")


def leftovers(output: Path) -> list[str]:
    """Saves left half done in the staging folder after a clean end."""
    staging = output / ".collectord" / "staging"
    return sorted(str(path.relative_to(output)) for path in staging.glob("*/*_metadata.json"))


# -- the test -----------------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", _seeds(), ids=lambda seed: f"seed={seed}")
def test_random_kills_stops_and_faults_lose_and_double_nothing(
    seed: int, trial_factory: Callable[[int], Trial], figures
) -> None:
    trial = trial_factory(seed)
    results = trial.run(TRIAL_SECONDS)
    experiments = saved_experiments(trial.output)
    problems, counts = check(experiments, results, trial.output)
    problems += [f"a save left half done: {path}" for path in leftovers(trial.output)]
    published = {metadata["_path"] for metadata in experiments}
    problems += [
        f"a stop answered {path}: not there" for path in trial.saved if Path(path) not in published
    ]
    if "Traceback" in trial.log.read_text():
        problems.append(f"a traceback in the daemon log {trial.log}")
    tally = trial.tally
    figures(
        seed=seed,
        trials=1,
        actions=trial.acts,
        kills=tally.kills,
        start_kills=tally.start_kills,
        fault_kills=dict(tally.fault_kills),
        open_fault_kills=dict(tally.open_fault_kills),
        stops=dict(tally.stops),
        terms=tally.terms,
        recovers=tally.recovers,
        no_resume=tally.no_resume,
        restarts=tally.restarts,
        client_stop_errors=len(tally.client_stop_errors),
        experiments=len(experiments),
        problems=len(problems),
        **counts,
    )
    print(
        f"seed {seed}: {trial.acts} actions, {tally.kills} kills, {tally.start_kills} in a start, "
        f"faults {dict(tally.fault_kills)}, at open {dict(tally.open_fault_kills)}, "
        f"stops {dict(tally.stops)}, {len(experiments)} experiments, {counts}"
    )
    assert not problems, (
        f"seed {seed} (rerun: COLLECTORD_TRIAL_SEEDS={seed}); actions:\n  "
        + "\n  ".join(tally.actions)
        + "\nproblems:\n  "
        + "\n  ".join(problems)
    )


# -- found by the trials ------------------------------------------------------------------


def test_a_client_closed_just_before_a_kill9_is_not_waited_for_after_the_restart(
    make_daemon, tmp_path: Path
) -> None:
    """Found by the trials (seed 27 of a 40-trial campaign): bye was answered before its
    journal record was on disk, so a kill -9 within the next journal_interval lost it; the
    closed session came back from the journal, and the first stop after the restart waited
    barrier_timeout for it and named it unconfirmed. Fixed in 4e137ed (bye answered once
    it is on disk)."""
    config = tmp_path / "config.toml"  # no fsync but for a sync: the window is wide open
    config.write_text("[journal]\njournal_interval = 10.0\n[stop]\nbarrier_timeout = 1.0\n")
    first = make_daemon(extra=("--config", str(config)))
    client = Client("gone", first.data, first.control)
    client.set_params("gone/settings", model=trial_processes.MODEL)
    client.close(timeout=30)  # everything confirmed, and bye answered
    first.kill9()
    second = make_daemon(data=first.data, control=first.control, extra=first.extra)
    assert second.stop()["unconfirmed"] == []


DYING_CLIENT = """
import sys, time
from collectord import Client
client = Client("gone", sys.argv[1], sys.argv[2])
client.set_params("gone/settings", model="cam-3")
client.sync()
print("ready", flush=True)
time.sleep(600)
"""


def test_a_client_found_gone_by_a_stop_cut_by_a_crash_is_not_waited_for_again(
    make_daemon, tmp_path: Path
) -> None:
    """Found by the trials (seed 1 of a 40-trial campaign at ed07d41): that a stop
    found a client gone was not journaled, so a daemon that died in that stop's
    save came back showing the dead client as connected, and waited for it again.
    The STOP record now names the sessions found gone."""
    config = tmp_path / "config.toml"
    config.write_text("[stop]\nbarrier_timeout = 1.0\n")
    first = make_daemon(extra=("--config", str(config)))
    child = subprocess.Popen(
        [sys.executable, "-c", DYING_CLIENT, first.data, first.control],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.kill()  # dies without bye
    child.wait(30)
    child.stdout.close()
    first.kill9()
    # The first stop after the restart waits for it (it may be reconnecting) and
    # finds it gone; the daemon dies in that stop's save.
    second = make_daemon(
        data=first.data,
        control=first.control,
        extra=first.extra,
        env={faults.ENV: faults.Fault.SAVE_STOP_JOURNALED.value},
    )
    send_stop_without_waiting(second.control, "operator")
    assert second.process is not None
    assert second.process.wait(60) == -signal.SIGKILL
    third = make_daemon(data=first.data, control=first.control, extra=first.extra)
    (found_gone,) = saved_experiments(first.output)
    assert found_gone["collectord"]["unconfirmed"]  # named once: it may have been reconnecting
    shown = [source["connected"] for source in found_gone["collectord"]["sources"]]
    assert (shown, third.stop()["unconfirmed"]) == ([False], [])
