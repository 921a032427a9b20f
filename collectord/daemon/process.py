"""Starting a daemon in a child process, and knowing when it listens.

``collectord run`` prints one line on stdout once both sockets are bound
(``listening_line``); ``spawn`` starts it and returns once that line came,
with the endpoints actually bound (a port ``*`` resolved). The demo, the bench
and the tests all start daemons through here.
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

    def close(self) -> None:
        """Kill it if it still runs, and release its pipe."""
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
) -> Spawned:
    """Run ``collectord run ARGS`` in a child process; return once it listens.

    ``python``: the interpreter's arguments before ``run`` (a test puts a
    launcher script that calls ``collectord.cli.main`` there). Raises
    ``CollectordError`` if the daemon exits or says nothing in ``timeout``
    seconds; its stderr (where ``stderr`` sends it) says why.
    """
    process = subprocess.Popen(
        [sys.executable, *python, "run", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **env} if env else None,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline() if selector.select(timeout) else ""
    match = _READY.search(line)
    if match is None:
        process.kill()
        process.wait()
        process.stdout.close()
        raise CollectordError(f"the daemon did not start: {line.strip() or 'no answer'}")
    return Spawned(process, match.group(1), match.group(2))
