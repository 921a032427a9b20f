"""Finding the daemon, or starting one, for a program that cannot do without it.

stytra users start one program, their experiment. The stytra drop-in
therefore starts the daemon itself when none answers at the configured
endpoints (``ensure_daemon``), rather than asking every user to run
``collectord run`` first, and failing at the first save when they forget.

* **Detached.** The daemon is started with ``spawn(detach=True)``: a session
  and process group of its own, stdin from the null device, stdout and
  stderr appended to ``OUTPUT/.collectord/daemon.log``. A crash of the GUI
  (or a Ctrl-C in its terminal) does not take the daemon, nor what it
  confirmed, with it. It keeps running after the program ends, and the next
  start finds it and uses it.
* **The configuration's daemon.** It is started with the program's
  configuration file and endpoints, so it uses the output folder and last
  config that configuration names. Only endpoints on this machine (loopback,
  ``ipc://``) can be served by a daemon started here; for another machine's
  the error says to start it there.
* **Races.** Two programs starting at the same time may both find no daemon
  and both start one. The output folder's lock lets only one of them run (the
  second exits at once, saying the folder is in use); the program whose
  daemon lost then waits for the winner to answer, and uses it. A daemon
  that cannot bind (an endpoint taken) is handled the same way: if a daemon
  answers, it is used; if not, the error gives the reason from the log.
* **Finding one quickly.** Whether anything accepts connections at the
  control endpoint is asked of the system first (a refused TCP or Unix
  connection answers at once), so that the usual case, no daemon at all,
  does not wait for a ZeroMQ request to time out. Something that accepts
  but does not answer a ``status`` is not a daemon (or one too busy to
  answer): that is an error naming the endpoint, since a daemon started
  beside it could not bind there either.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import IO, Any

from .config import Config
from .control import request
from .daemon.process import Spawned, spawn
from .errors import CollectordError, ConfigError, DaemonTimeout
from .listening import accepts
from .protocol import Command
from .security import ClientSecurity, is_loopback
from .store import STATE_DIR

__all__ = ["START_DAEMON_ENV", "Daemon", "daemon_log", "ensure_daemon", "find_daemon"]

#: ``COLLECTORD_START_DAEMON=0`` (or 1) overrides the configuration's
#: ``[stytra] start_daemon`` without editing a file.
START_DAEMON_ENV = "COLLECTORD_START_DAEMON"
#: How long a daemon that has not bound its sockets yet is waited for: the
#: winner of a race (the lock held) may be replaying a long journal.
START_TIMEOUT = 30.0
#: How long a ``status`` is waited for when the system cannot tell whether
#: anything listens (another transport): a daemon answers in milliseconds.
PROBE_TIMEOUT = 1.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass
class Daemon:
    """The daemon a program uses: its ``status``, and the process if this one started it."""

    status: dict[str, Any]
    started: Spawned | None = None


def start_daemon_wanted(keyword: bool | None, settings: Config) -> bool:
    """Whether to start a daemon: the keyword, else ``$COLLECTORD_START_DAEMON``, else
    the configuration's ``[stytra] start_daemon``."""
    if keyword is not None:
        return keyword
    chosen = os.environ.get(START_DAEMON_ENV, "").strip().lower()
    if chosen in _TRUE:
        return True
    if chosen in _FALSE:
        return False
    if chosen:
        raise ConfigError(f"${START_DAEMON_ENV} must be 1 or 0, not {chosen!r}")
    return settings.start_daemon


def daemon_log(settings: Config) -> Path:
    """Where a started daemon's stdout and stderr go (appended)."""
    return settings.output_dir / STATE_DIR / "daemon.log"


def find_daemon(control: str, settings: Config, timeout: float) -> dict[str, Any] | None:
    """The status of the daemon answering at ``control``; None if nothing listens there.

    Raises ``CollectordError`` if something accepts connections there but
    does not answer as a daemon within ``timeout`` seconds.
    """
    listens = accepts(control)
    if listens is False:
        return None
    try:
        return _status(control, settings, timeout if listens else PROBE_TIMEOUT)
    except DaemonTimeout:
        if not listens:
            return None
        raise CollectordError(
            f"something listens at {control} but does not answer as a collectord daemon "
            f"within {timeout:g} s: another program uses that port (choose other "
            "endpoints in the configuration), or the daemon there is too busy to answer"
        ) from None


def ensure_daemon(
    settings: Config,
    config_file: str | os.PathLike[str] | None,
    data: str,
    control: str,
    *,
    timeout: float = 10.0,
    start_timeout: float = START_TIMEOUT,
) -> Daemon:
    """The daemon answering at ``control``, started (detached) if none does.

    ``settings`` is the configuration ``config_file`` (None: ``$COLLECTORD_CONFIG``
    or the defaults) holds; the daemon is started with that file and with the
    endpoints ``data`` and ``control``. Raises ``CollectordError`` saying why
    if there is none and none could be started.
    """
    status = find_daemon(control, settings, timeout)
    if status is not None:
        return Daemon(status)
    for endpoint in (data, control):
        if not _startable(endpoint):
            raise CollectordError(
                f"no collectord daemon answers at {control}, and {endpoint} is not on this "
                "machine: start `collectord run` where it is"
            )
    log = daemon_log(settings)
    args = ["--data", data, "--control", control]
    if config_file is not None:
        args = ["--config", os.fspath(config_file), *args]
    with _opened_log(log, control) as stderr:
        begun = stderr.tell()
        try:
            started = spawn(args, stderr=stderr, timeout=start_timeout, detach=True)
        except CollectordError as failure:
            return _after_losing(settings, control, log, begun, failure, timeout, start_timeout)
    return Daemon(_status(control, settings, timeout), started)


def _opened_log(log: Path, control: str) -> IO[str]:
    """The daemon's log, opened to append; an output folder it cannot be written
    in (a file in its place, no permission, a full disk) is said as the reason
    no daemon can be started: the daemon could not use that folder either."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        return open(log, "a")
    except OSError as exc:
        raise CollectordError(
            f"no collectord daemon answers at {control}, and none can be started: its "
            f"output folder cannot be written ({exc})"
        ) from exc


def _after_losing(
    settings: Config,
    control: str,
    log: Path,
    begun: int,
    failure: CollectordError,
    timeout: float,
    start_timeout: float,
) -> Daemon:
    """Our daemon did not start: use the one that did, or say why there is none.

    Refused the output folder, it lost to a daemon that holds it and may still
    be starting (its journal replayed before it binds): that one is waited for.
    Refused an endpoint, a daemon may be there, or another program.
    """
    with open(log, errors="replace") as file:
        file.seek(begun)
        said = " ".join(line.strip() for line in file if "collectord run:" in line)
    wait = start_timeout if "in use by another collectord" in said else timeout
    try:
        status = _status(control, settings, wait)
    except DaemonTimeout:
        raise CollectordError(
            f"no collectord daemon answers at {control}, and one could not be started: "
            f"{said or failure} (its log: {log})"
        ) from None
    if Path(status.get("output", "")) != settings.output_dir:
        warnings.warn(
            f"the daemon at {control} saves into {status.get('output')}, not into "
            f"{settings.output_dir} as this program's configuration says",
            RuntimeWarning,
            stacklevel=4,
        )
    return Daemon(status)


def _status(control: str, settings: Config, timeout: float) -> dict[str, Any]:
    return request(control, Command.STATUS, {}, timeout, ClientSecurity.from_config(settings))


def _startable(endpoint: str) -> bool:
    """Whether a daemon started on this machine can bind ``endpoint``."""
    return is_loopback(endpoint) and not endpoint.startswith("inproc://")
