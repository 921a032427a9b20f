"""stytra's ``DataCollector``, saving through the collectord daemon.

::

    # from stytra.collectors import DataCollector
    from collectord.compat.stytra import DataCollector

The experiment code does not change: ``Parametrized(..., tree=dc)`` registers
its nodes, ``restore_from_saved()`` restores them, ``add_static_data(value,
"stimulus/log")`` records what happened, and ``save(path)`` saves. The class
is a lightparam ``ParameterTree``, mirrored into the daemon by a
``TreeMirror``: from ``restore_from_saved()`` on (or the first save), a
thread publishes parameter changes every ``period`` seconds, so they reach
the daemon even if the process dies before saving. A process that just ends
(stytra never calls ``close()``) publishes its last changes and delivers
everything at exit, within ``exit_timeout``.

**The daemon.** A stytra user starts one program. When no daemon answers at
the configured endpoints, the collector starts one (``collectord.autostart``):
detached from the GUI, so that a crash of the GUI does not take the data with
it, with the configuration's output folder and last config. It keeps running
after the GUI ends, and the next start uses it. A daemon gone while the GUI
runs (killed, crashed) is started again by the next ``save()`` (a protocol's
end), with a ``RuntimeWarning``: it takes up the experiment from its journal.
Not by ``save_config_file()`` at the window's close: a daemon stopped on
purpose stays stopped. ``start_daemon=False`` (or
``[stytra] start_daemon = false``, or ``$COLLECTORD_START_DAEMON=0``) starts
none: the collector warns, and waits for one started otherwise.

What each stytra call does here:

* ``add_static_data(entry, name)``: ``Client.add_data(name, entry)`` at once
  (the client takes the path first, stytra the value first). Values
  collectord cannot store faithfully (objects, sets, complex numbers: stytra
  wrote ``0`` for them) are saved as the text ``"<not saved: TYPE>"``, the
  type's name (a ``repr`` would hold a memory address, different every run),
  with a ``StaticDataWarning`` once per place in the value, so that one odd
  value in ``program_version/arguments`` neither loses the whole save nor
  warns at every protocol. Non-text dict keys become text, as stytra's
  ``json.dump`` made them, and a pandas DataFrame (a dynamic stimulus's
  ``df_param`` in the stimulus log) lists by column, as stytra saved it.
* ``restore_from_saved()``: the daemon's last config for each registered
  node (not whole categories: the daemon counts what a process restores as
  in force in the experiment, so an earlier script's protocol would be
  saved beside this one's), over ``extra_settings``, restored as
  lightparam's ``deserialize`` does (``loadable=False`` skipped, unknown
  parameters warned about) but parameter by parameter (``TreeMirror.restore``): a parameter
  that cannot be restored is named in a ``RestoreWarning`` and stops
  nothing, and its unrestored value is never published over the saved one.
  The nodes are then published whole, once, and it returns when the daemon
  has them; from then on only what changes is published, so another
  process's collector on the same nodes is not overwritten.
* ``save(output_path)``: publishes the parameters, has the daemon count every
  registered node in force in the experiment (so its metadata holds the
  whole tree, as stytra's did, also of nodes another window on the same
  daemon set last and then closed), names the experiment after
  stytra's session id (its folder is ``OUTPUT/YYMMDD/<session id>/``, its
  file ``<session id>_metadata.json``, stytra's file name) and stops it: the
  daemon writes the metadata file and the last config. A byte-identical copy
  of the metadata goes to ``output_path`` if one is given (stytra's analysis
  code looks for it beside the experiment's log files). Returns the daemon's
  file. Static data is cleared, here as in the daemon.
* ``save_config_file()`` (stytra calls it as its window closes): publishes the
  parameters and has the daemon write its last config now
  (``Client.save_config``), without ending the experiment, so a session that
  ran no protocol leaves no experiment folder. If the daemon does not
  answer, it warns instead of raising: an exception there would abort
  stytra's closing.
* ``close()`` (not stytra's; stytra never calls it): the same, then closes
  the client. It never raises because the daemon is gone: a
  ``RuntimeWarning`` says how many messages were not delivered.
* ``instance_number``: each instance (rig) is served by its own daemon, with
  its own endpoints, output folder and last config. Instance ``n >= 0`` reads
  the configuration file named by ``$COLLECTORD_CONFIG_<n>`` unless ``config``
  or both endpoints are given.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lightparam import ParameterTree

from .. import codec
from .. import config as config_module
from ..autostart import Daemon, ensure_daemon, find_daemon, start_daemon_wanted
from ..client import Client, State
from ..daemon.process import Spawned
from ..errors import (
    CollectordError,
    ConfigError,
    InvalidPathError,
    RequestError,
    UnsupportedValueError,
)
from ..mirror import DEFAULT_INFO_PATH, TreeMirror
from ..paths import check_file_name, parse_path

__all__ = ["INSTANCE_CONFIG_ENV", "DataCollector", "StaticDataWarning", "instance_config"]

#: ``COLLECTORD_CONFIG_<n>`` names the configuration file of rig instance n.
INSTANCE_CONFIG_ENV = "COLLECTORD_CONFIG_{}"

#: stytra's default ``folder_path``: a drive on Windows. Elsewhere stytra made
#: a folder named ``C:`` in the working directory; the drop-in does not.
STYTRA_DEFAULT_FOLDER = "C:/"
#: stytra's metadata files end so; the rest of the name is its session id.
METADATA_SUFFIX = "_metadata.json"


class StaticDataWarning(UserWarning):
    """Part of a static value could not be stored as it was and was replaced."""


def instance_config(
    instance_number: int, config: str | os.PathLike[str] | None = None
) -> str | os.PathLike[str] | None:
    """The configuration file for stytra's ``instance_number``.

    ``config`` if given; for instance -1 (a single rig) None, which means
    ``$COLLECTORD_CONFIG`` or the defaults, as for any client; for instance
    ``n >= 0`` the file named by ``$COLLECTORD_CONFIG_<n>``. Raises
    ``ConfigError`` if that is not set: falling back to the default daemon
    would mix two rigs' metadata into one experiment.
    """
    if config is not None or instance_number < 0:
        return config
    variable = INSTANCE_CONFIG_ENV.format(instance_number)
    chosen = os.environ.get(variable)
    if not chosen:
        raise ConfigError(
            f"stytra instance {instance_number} needs its own daemon: set {variable} to "
            "the configuration file of that daemon (its endpoints, output and last "
            "config), or pass config= or data= and control="
        )
    return chosen


class DataCollector(ParameterTree):
    """stytra's ``DataCollector`` interface, saving through the collectord daemon.

    stytra's arguments: ``data_tuples_list`` (``(entry, name)`` pairs added as
    static data), ``extra_settings`` (values restored where the last config
    has none), ``instance_number`` and ``folder_path`` (created as stytra
    creates it, and kept; the daemon chooses where files go). collectord's:
    ``client`` (a ``Client`` to use; otherwise one named ``name`` is made from
    ``data``, ``control`` and ``config``, and closed by ``close()``),
    ``start_daemon`` (start a daemon if none answers; None: as
    ``$COLLECTORD_START_DAEMON`` or the configuration says, by default yes;
    only for a client the collector makes), ``period`` (how often parameter
    changes are published, None: only when restoring, saving and at exit),
    ``info_path`` (where parameter documentation goes), ``timeout``, and
    ``exit_timeout`` (for the client it makes: how long the process waits at
    exit to deliver what it holds, since stytra never calls ``close()``;
    None: ``collectord.client.EXIT_TIMEOUT``).

    Attributes stytra's code reads: ``folder_path``, ``home_path`` and
    ``metadata_fn`` (``home_path / metadata_fn`` is the daemon's last config),
    ``last_metadata``, ``log_data_dict``, ``params_metadata`` (None, as in
    stytra 0.8). ``started_daemon`` is the daemon this collector started
    (``collectord.daemon.process.Spawned``), None if it found one running.
    """

    def __init__(
        self,
        *data_tuples_list: tuple[Any, str],
        extra_settings: Mapping[str, Any] | None = None,
        instance_number: int = -1,
        folder_path: str | os.PathLike[str] = STYTRA_DEFAULT_FOLDER,
        client: Client | None = None,
        name: str = "stytra",
        data: str | None = None,
        control: str | None = None,
        config: str | os.PathLike[str] | None = None,
        start_daemon: bool | None = None,
        period: float | None = 1.0,
        info_path: str | None = DEFAULT_INFO_PATH,
        timeout: float = 10.0,
        exit_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.instance_number = instance_number
        self.folder_path = Path(folder_path)
        if not self.folder_path.is_dir() and (
            os.fspath(folder_path) != STYTRA_DEFAULT_FOLDER or self.folder_path.is_absolute()
        ):
            self.folder_path.mkdir(parents=True)  # as stytra: its experiment saves logs there
        self.extra_settings: dict[str, Any] = copy.deepcopy(dict(extra_settings or {}))
        self.last_metadata: dict[str, Any] = dict(self.extra_settings)
        self.log_data_dict: dict[str, Any] = {}
        #: stytra 0.7 kept its pyqtgraph parameter tree here; 0.8 leaves it None.
        self.params_metadata: Any = None
        self.timeout = timeout
        self.started_daemon: Spawned | None = None
        #: Starts the daemon again if it is gone (``_restart_daemon_if_gone``);
        #: None if this collector may not start one.
        self._restarter: Callable[[], Daemon] | None = None
        self._owns_client = client is None
        if not (data and control) and client is None:
            config = instance_config(instance_number, config)
        settings = config_module.load(config)
        last_config = settings.last_config_file
        if client is None:
            data = data or settings.data
            control = control or settings.control
            status = self._find_daemon(settings, config, data, control, start_daemon)
            if status is not None and status.get("last_config"):
                last_config = Path(status["last_config"])
            client = Client(name, data, control, config=config, exit_timeout=exit_timeout)
        self.client = client
        #: stytra's names for the last-config file: ``home_path / metadata_fn``.
        self.home_path = last_config.parent
        self.metadata_fn = last_config.name
        self._rejected = 0
        #: Places in static values already warned about (``StaticDataWarning``).
        self._warned: set[str] = set()
        # stytra makes its nodes after this, then calls restore_from_saved():
        # until then the mirror publishes nothing, so that no default goes out
        # ahead of the value saved for it, nor over what another process set.
        self.mirror = TreeMirror(
            client,
            self,
            period=period,
            restore=False,
            wait_for_restore=True,
            info_path=info_path,
            timeout=timeout,
        )
        for entry in data_tuples_list:
            self.add_static_data(*entry)

    def _find_daemon(
        self,
        settings: config_module.Config,
        config: str | os.PathLike[str] | None,
        data: str,
        control: str,
        start_daemon: bool | None,
    ) -> dict[str, Any] | None:
        """The status of the daemon at ``control``: found, or started if none answers.

        Without ``start_daemon``, a missing daemon is a warning: the program
        may start one itself later, and publishing waits for it.
        """
        if start_daemon_wanted(start_daemon, settings):
            self._restarter = functools.partial(
                ensure_daemon, settings, config, data, control, timeout=self.timeout
            )
            daemon: Daemon = self._restarter()
            self.started_daemon = daemon.started
            return daemon.status
        try:
            status = find_daemon(control, settings, self.timeout)
        except CollectordError as exc:
            problem = str(exc)
        else:
            if status is not None:
                return status
            problem = f"no collectord daemon answers at {control}"
        where = f" --config {os.fspath(config)}" if config is not None else ""
        warnings.warn(
            f"{problem}, and starting one is off (start_daemon): nothing is saved until one "
            "runs there "
            f"(`collectord run{where}`); restore_from_saved() and save() need it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None

    # -- stytra's methods ----------------------------------------------------------------

    def add_static_data(self, entry: Any, name: str = "unspecified_entry") -> None:
        """Record ``entry`` at the slash path ``name`` for this experiment.

        The value comes first, the path second, as in stytra; ``Client.add_data``
        takes them the other way round. What cannot be stored is replaced by
        ``"<not saved: TYPE>"``, with a ``StaticDataWarning`` the first time
        each place in the value needs it (stytra adds its program version,
        with the experiment object in it, at every protocol's end).
        """
        parse_path(name)
        problems: list[tuple[str, str]] = []
        value = _storable(entry, name, problems)
        news = [message for place, message in problems if place not in self._warned]
        self._warned.update(place for place, _ in problems)
        if news:
            warnings.warn(
                f"static data {name!r} saved with replacements: {'; '.join(news)}",
                StaticDataWarning,
                stacklevel=2,
            )
        self.client.add_data(name, value)
        self.log_data_dict[name] = value

    def restore_from_saved(self) -> None:
        """Restore the registered nodes from the daemon's last config, then publish them.

        stytra calls this once its nodes are made: it is when the mirror takes
        them in (see ``TreeMirror.restore``).
        """
        saved = _merged(self.extra_settings, self._saved_values())
        self.last_metadata = saved
        self.mirror.restore(saved)

    def _saved_values(self) -> dict[str, Any]:
        """The daemon's values to take up for the registered nodes (``restore``:
        the last config's, or as set since), each node asked for alone.

        Not whole categories (``TreeMirror.saved_values``): the daemon counts
        what a process restores as in force in the current experiment, so
        asking for ``stimulus`` would save the protocol of an earlier script
        beside this one's under ``stimulus/protocol`` (stytra's analysis code
        takes the first protocol there), and asking for ``general`` another
        script's metadata nodes. Entries for nodes this process lacks are
        therefore not warned about, as lightparam's ``deserialize`` would.
        """
        saved: dict[str, Any] = {}
        for node in self._nodes():
            values = self._restore_node(node)
            if values:
                *parents, name = node.split("/")
                saved = _merged(saved, _nested(parents, {name: values}))
        return saved

    def _nodes(self) -> list[str]:
        """The registered nodes whose names are paths (the mirror warns about the others)."""
        nodes = []
        for node in self.tracked:
            try:
                parse_path(node)
            except InvalidPathError:
                continue
            nodes.append(node)
        return nodes

    def _restore_node(self, node: str) -> dict[str, Any]:
        """The last config's values under ``node`` (the daemon: in force from now on)."""
        try:
            return self.client.restore(node, self.timeout)
        except RequestError as exc:
            if exc.code != "not_a_group":
                raise
            warnings.warn(
                f"the daemon holds a single value at {node!r}, not parameters; it is not restored",
                stacklevel=4,
            )
            return {}

    def get_clean_dict(self, convert_datetime: bool = False, **_: Any) -> dict[str, Any]:
        """The parameters and static data as one nested dict: this process's view.

        The saved metadata holds the same, plus what other processes sent and
        collectord's ``collectord`` and ``param_info`` keys. stytra's other
        options (``eliminate_df``) are accepted and ignored.
        """
        clean: dict[str, Any] = {}
        for node, parametrized in self.tracked.items():
            _branch(clean, node.split("/")).update(copy.deepcopy(parametrized.params.values))
        for name, value in self.log_data_dict.items():
            *parents, key = name.split("/")
            _branch(clean, parents)[key] = copy.deepcopy(value)
        return _iso_times(clean) if convert_datetime else clean

    def get_last_value(self, class_param_key: str) -> None:
        """As in stytra: always None."""
        return None

    def save_config_file(self) -> None:
        """Publish the parameters and have the daemon write its last config now.

        The experiment goes on, and no experiment folder is written
        (``Client.save_config``): stytra calls this as its window closes, also
        after a session that ran no protocol. A daemon that does not answer is
        a ``RuntimeWarning``, not an exception: raised in stytra's closing (a
        Qt slot), it would abort the program. The parameters stay queued in
        the client, delivered if the daemon comes back before the exit.
        """
        problem = self._save_config(self.timeout)
        if problem is not None:
            warnings.warn(problem, RuntimeWarning, stacklevel=2)

    def _save_config(self, timeout: float) -> str | None:
        """``save_config_file``: None if done, else what went wrong."""
        self.mirror.publish_changes()
        try:
            self.client.save_config(timeout)
        except CollectordError as exc:
            return f"the last config was not written: {exc}"
        return None

    def save_json_log(self, output_path: str | os.PathLike[str] = "") -> str:
        """Stop the experiment: the daemon saves it. Returns the metadata file.

        The experiment is first named after stytra's session id (the static
        data ``general/session_id``, else the name of ``output_path`` without
        ``_metadata.json``), which names its folder and file as stytra named
        its file. With ``output_path``, a copy of the file is also written
        there.
        """
        self._restart_daemon_if_gone()
        self.mirror.publish_changes()
        self.client.sync(self.timeout)
        self._keep_in_force()
        self._warn_about_rejections()
        name = self._experiment_name(output_path)
        if name is not None:
            self.client.name_experiment(name, self.timeout)
        path = self.mirror.stop(f"stytra save {os.fspath(output_path)}".strip())
        self.log_data_dict.clear()
        if output_path:
            _copy(Path(path), Path(output_path))
        return path

    def save(self, output_path: str | os.PathLike[str] = "") -> str:
        """Save the metadata and the last config (the daemon writes both when it stops)."""
        return self.save_json_log(output_path)

    def _restart_daemon_if_gone(self) -> None:
        """Start the daemon again if none answers (killed, crashed) and this
        collector may start one (as at its construction). For ``save()``
        only, where a run's data is at stake: the window's closing does not
        start again a daemon stopped on purpose.

        The new daemon takes up the experiment from its journal, and the client
        delivers what it had not had confirmed. Otherwise every save until the
        GUI is restarted would wait ``timeout`` and raise, and each run's
        metadata would stay in the client, lost when the GUI ends.
        """
        if self._restarter is None:
            return
        daemon = self._restarter()
        if daemon.started is not None:
            self.started_daemon = daemon.started
            warnings.warn(
                f"the daemon at {self.client.control_endpoint} was gone: started it again "
                f"(pid {daemon.started.pid}); it takes up the experiment from its journal",
                RuntimeWarning,
                stacklevel=4,
            )

    def _keep_in_force(self) -> None:
        """Have the daemon count every registered node in force in the experiment
        about to be saved, with the values it holds.

        stytra's file holds the whole tree of its process. The daemon's holds
        the parameters set during the experiment and those carried over whose
        owner (the process that set them last) took part in it. A second
        stytra window on the same daemon, opened and closed (restoring, it
        publishes its nodes whole), would leave every later experiment of
        this window with only the parameters changed since. A restore request
        marks a node in force; it answers, and keeps, the values set in the
        experiment, so it changes none that a window set.
        """
        for node in self._nodes():
            try:
                self.client.restore(node, self.timeout)
            except RequestError as exc:
                if exc.code != "not_a_group":  # that one was warned about at restore
                    warnings.warn(
                        f"node {node!r} may be missing from the saved metadata: {exc}",
                        RuntimeWarning,
                        stacklevel=4,
                    )

    def _experiment_name(self, output_path: str | os.PathLike[str]) -> str | None:
        """stytra's session id for this experiment, if it is a valid folder name."""
        session = self.log_data_dict.get("general/session_id")
        if session is not None:
            candidate = str(session)
        elif output_path:
            candidate = Path(output_path).name
            for suffix in (METADATA_SUFFIX, ".json"):
                if candidate.endswith(suffix):
                    candidate = candidate[: -len(suffix)]
                    break
        else:
            return None
        try:
            return check_file_name(candidate, where="experiment name")
        except InvalidPathError:
            warnings.warn(
                f"the experiment keeps the daemon's name: {candidate!r} cannot name a folder",
                RuntimeWarning,
                stacklevel=4,
            )
            return None

    # -- collectord's additions ----------------------------------------------------------

    def close(self) -> None:
        """Publish the last changes, write the last config, stop the mirror, close the
        client if it is ours.

        Never raises because the daemon is gone: a program closing must close.
        A ``RuntimeWarning`` says what was not delivered (it is lost). The whole
        takes at most about ``timeout`` seconds. A daemon this collector started
        keeps running: other processes may use it, and the next start will.
        """
        if self.client.state is not State.OPEN:
            return
        deadline = time.monotonic() + self.timeout
        self.mirror.close()
        problems = [self._save_config(self.timeout)]
        if self._owns_client:
            try:
                self.client.close(max(0.1, deadline - time.monotonic()))
            except CollectordError as exc:
                lost = self.client.unconfirmed
                were = "s were" if lost != 1 else " was"
                problems.insert(
                    0,
                    f"{lost} message{were} not delivered to the daemon at "
                    f"{self.client.control_endpoint} and will not be ({exc})",
                )
        said = [problem for problem in problems if problem is not None]
        if said:
            warnings.warn("; ".join(said), RuntimeWarning, stacklevel=2)

    def __enter__(self) -> DataCollector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _warn_about_rejections(self) -> None:
        """Warn if the daemon refused some of this process's updates.

        stytra's ``set_nested`` overwrote a value with a group (or the
        reverse); the daemon refuses such an update and counts it instead, so
        a collector that used to "work" would otherwise lose data silently.
        """
        status = self.client.status(self.timeout)
        mine = [s for s in status["sources"] if s["session"] == self.client.session]
        if not mine:
            return
        rejected = int(mine[0]["messages"]["rejected"])
        if rejected > self._rejected:
            reasons = "; ".join(mine[0]["recent_rejections"])
            warnings.warn(
                f"the daemon refused {rejected - self._rejected} update(s) from this "
                f"experiment: {reasons}",
                RuntimeWarning,
                stacklevel=3,
            )
        self._rejected = rejected


# -- helpers -------------------------------------------------------------------------------


def _storable(value: Any, where: str, problems: list[tuple[str, str]]) -> Any:
    """``value`` if collectord can store it; else a copy with the misfits replaced."""
    try:
        codec.check_value(value, where=where)
    except UnsupportedValueError:
        return _replace_misfits(value, where, problems, 0)
    return value


def _replace_misfits(value: Any, where: str, problems: list[tuple[str, str]], depth: int) -> Any:
    """``value`` with what collectord cannot store replaced by ``"<not saved: TYPE>"``.

    ``problems`` receives ``(place, message)`` for each replacement. The
    placeholder names the type, not the value: a ``repr`` holds a memory
    address (``<Foo object at 0x7f...>``) that differs every run, so the
    same experiment would save different files.
    """
    if depth > codec.MAX_VALUE_DEPTH:
        problems.append((where, f"{where}: nested deeper than {codec.MAX_VALUE_DEPTH} levels"))
        return "<not saved: nested too deep>"
    columns = _frame_columns(value)
    if columns is not None:
        value = columns
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if name.startswith("$"):
                problems.append((f"{where}[{name!r}]", f"{where}: key {name!r} renamed '_{name}'"))
                name = "_" + name
            converted[name] = _replace_misfits(item, f"{where}[{name!r}]", problems, depth + 1)
        return converted
    if isinstance(value, list | tuple):
        return [
            _replace_misfits(item, f"{where}[{index}]", problems, depth + 1)
            for index, item in enumerate(value)
        ]
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        return _replace_misfits(value.tolist(), where, problems, depth)
    try:
        codec.check_value(value, where=where)
    except UnsupportedValueError as exc:
        problems.append((where, str(exc)))
        return f"<not saved: {type(value).__name__}>"
    return value


def _frame_columns(value: Any) -> dict[Any, list[Any]] | None:
    """A pandas DataFrame as stytra saved it, lists by column; None for anything else.

    stytra's dynamic stimuli keep their interpolation table (``df_param``) in
    the stimulus log. pandas is not imported here: a DataFrame exists only
    in a program that imported it.
    """
    pandas = sys.modules.get("pandas")
    if pandas is None or not isinstance(value, pandas.DataFrame):
        return None
    columns: dict[Any, list[Any]] = value.to_dict("list")
    return columns


def _branch(tree: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """The dict at ``path`` in ``tree``, created if missing (merging, never replacing)."""
    for name in path:
        child = tree.get(name)
        if not isinstance(child, dict):
            child = tree[name] = {}
        tree = child
    return tree


def _nested(path: list[str], leaf: dict[str, Any]) -> dict[str, Any]:
    """``leaf`` at ``path``: ``["a", "b"]`` gives ``{"a": {"b": leaf}}``."""
    for name in reversed(path):
        leaf = {name: leaf}
    return leaf


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, nested dicts key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _iso_times(value: Any) -> Any:
    """Datetimes, dates and times as ISO 8601 text, as they are saved."""
    if isinstance(value, dict):
        return {key: _iso_times(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_iso_times(item) for item in value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _copy(source: Path, target: Path) -> None:
    """Copy the daemon's metadata file to ``target``, atomically."""
    if not source.is_file():
        warnings.warn(
            f"no copy written to {target}: the daemon's file {source} is not on this "
            "machine (the daemon runs elsewhere)",
            RuntimeWarning,
            stacklevel=4,
        )
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
