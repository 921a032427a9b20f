"""Starting a daemon in a child process, and knowing when it listens.

``collectord run`` prints one line on stdout once both sockets are bound
(``listening_line``); ``spawn`` starts it and returns once that line came,
with the endpoints actually bound (a port ``*`` resolved). The demo, the bench,
the tests and the stytra drop-in all start daemons through here.

A daemon started for a program that may end first (the stytra drop-in starts
one for its GUI) is started *detached* (``detach=True``): in a session and
process group of its own, so that neither a Ctrl-C in the program's terminal
nor the terminal closing reaches it; stdin from the null device; and stdout
not a pipe to the program once the listening line is read (``collectord run
--detached`` then points it where stderr goes). A daemon whose stdout stayed
a pipe to a dead program would fail on its next write to it, and one to a
live program that stops reading it would block.
"""

from __future__ import annotations

import dataclasses
import os
import re
import selectors
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import CollectordError

_READY = re.compile(r"listening: data=(\S+) control=(\S+)")


def listening_line(version: str, endpoints: Mapping[str, str], output: Path) -> str:
    """What ``collectord run`` prints once it listens (``spawn`` waits for it)."""
    return (
        f"collectord {version} listening: data={endpoints['data']} "
        f"control={endpoints['control']} output={output}"
    )


@dataclasses.dataclass
class Spawned:
    """A daemon started by ``spawn``: its process and the endpoints it bound."""

    process: subprocess.Popen[str]
    data: str
    control: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        """Kill it if it still runs, and release its pipe.

        For a daemon the caller owns (a test's, the demo's). A detached daemon
        is meant to outlive its starter: nothing calls this for it.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def spawn(
    args: Sequence[str],
    *,
    stderr: IO[Any] | int | None = None,
    env: Mapping[str, str] | None = None,
    python: Sequence[str] = ("-m", "collectord"),
    timeout: float = 30.0,
    detach: bool = False,
) -> Spawned:
    """Run ``collectord run ARGS`` in a child process; return once it listens.

    ``python``: the interpreter's arguments before ``run`` (a test puts a
    launcher script that calls ``collectord.cli.main`` there). ``detach``:
    start it detached (see the module's docstring), for a daemon meant to
    outlive this process; its stderr should then go to a file (None: the
    null device, never this process's terminal). Raises ``CollectordError``
    if the daemon exits or says nothing in ``timeout`` seconds; its stderr
    (where ``stderr`` sends it) says why.
    """
    options: dict[str, Any] = {}
    if detach:
        args = [*args, "--detached"]
        options["stdin"] = subprocess.DEVNULL
        if stderr is None:
            stderr = subprocess.DEVNULL
        if os.name == "nt":  # no sessions: a process group of its own, no console
            group = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            options["creationflags"] = group | getattr(subprocess, "DETACHED_PROCESS", 0)
        else:
            options["start_new_session"] = True
    process = subprocess.Popen(
        [sys.executable, *python, "run", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **env} if env else None,
        **options,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline() if selector.select(timeout) else ""
    match = _READY.search(line)
    if match is None:
        process.kill()
        status = process.wait()
        process.stdout.close()
        said = line.strip() or "no answer"
        ended = f" (it exited with status {status})" if status > 0 else ""
        raise CollectordError(f"the daemon did not start: {said}{ended}")
    if detach:
        process.stdout.close()  # nothing more comes: its stdout now goes where stderr goes
    return Spawned(process, match.group(1), match.group(2))
