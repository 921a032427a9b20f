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

What each stytra call does here:

* ``add_static_data(entry, name)``: ``Client.add_data(name, entry)`` at once.
  Values collectord cannot store faithfully (objects, sets, complex numbers:
  stytra wrote ``0`` for them) are saved as the text ``"<not saved: repr>"``
  with a ``StaticDataWarning``, so that one odd value in
  ``program_version/arguments`` does not lose the whole save. Non-text dict
  keys become text, as stytra's ``json.dump`` made them.
* ``restore_from_saved()``: the daemon's last config for the categories of the
  registered nodes, over ``extra_settings``, restored as lightparam's
  ``deserialize`` does (``loadable=False`` skipped, unknown entries warned
  about) but parameter by parameter (``TreeMirror.restore``): a parameter
  that cannot be restored is named in a ``RestoreWarning`` and stops
  nothing, and its unrestored value is never published over the saved one.
  The nodes are then published whole, once, and it returns when the daemon
  has them; from then on only what changes is published, so another
  process's collector on the same nodes is not overwritten.
* ``save(output_path)``: publishes the parameters and stops the experiment:
  the daemon writes the metadata file and the last config. A byte-identical
  copy of the metadata goes to ``output_path`` if one is given (stytra's
  analysis code looks for it beside the experiment's log files). Returns the
  daemon's file. Static data is cleared, here as in the daemon.
* ``save_config_file()``: publishes the parameters and waits until the daemon
  has them. The daemon writes its last config at every stop (including its
  own shutdown), not on this call.
* ``instance_number``: each instance (rig) is served by its own daemon, with
  its own endpoints, output folder and last config. Instance ``n >= 0`` reads
  the configuration file named by ``$COLLECTORD_CONFIG_<n>`` unless ``config``
  or both endpoints are given.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import reprlib
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lightparam import ParameterTree

from .. import codec
from ..client import Client
from ..errors import ConfigError, UnsupportedValueError
from ..mirror import DEFAULT_INFO_PATH, TreeMirror
from ..paths import parse_path

__all__ = ["INSTANCE_CONFIG_ENV", "DataCollector", "StaticDataWarning", "instance_config"]

#: ``COLLECTORD_CONFIG_<n>`` names the configuration file of rig instance n.
INSTANCE_CONFIG_ENV = "COLLECTORD_CONFIG_{}"

_repr = reprlib.Repr()
_repr.maxother = _repr.maxstring = 200


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
    has none), ``instance_number`` and ``folder_path`` (kept as an attribute
    only: the daemon chooses where files go). collectord's: ``client`` (a
    ``Client`` to use; otherwise one named ``name`` is made from ``data``,
    ``control`` and ``config``, and closed by ``close()``), ``period`` (how
    often parameter changes are published, None: only when restoring, saving
    and at exit),
    ``info_path`` (where parameter documentation goes), ``timeout``, and
    ``exit_timeout`` (for the client it makes: how long the process waits at
    exit to deliver what it holds, since stytra never calls ``close()``;
    None: ``collectord.client.EXIT_TIMEOUT``).
    """

    def __init__(
        self,
        *data_tuples_list: tuple[Any, str],
        extra_settings: Mapping[str, Any] | None = None,
        instance_number: int = -1,
        folder_path: str | os.PathLike[str] = "C:/",
        client: Client | None = None,
        name: str = "stytra",
        data: str | None = None,
        control: str | None = None,
        config: str | os.PathLike[str] | None = None,
        period: float | None = 1.0,
        info_path: str | None = DEFAULT_INFO_PATH,
        timeout: float = 10.0,
        exit_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.instance_number = instance_number
        self.folder_path = Path(folder_path)
        self.extra_settings: dict[str, Any] = copy.deepcopy(dict(extra_settings or {}))
        self.last_metadata: dict[str, Any] = dict(self.extra_settings)
        self.log_data_dict: dict[str, Any] = {}
        self.timeout = timeout
        self._owns_client = client is None
        if client is None:
            if not (data and control):
                config = instance_config(instance_number, config)
            client = Client(name, data, control, config=config, exit_timeout=exit_timeout)
        self.client = client
        self._rejected = 0
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

    # -- stytra's methods ----------------------------------------------------------------

    def add_static_data(self, entry: Any, name: str = "unspecified_entry") -> None:
        """Record ``entry`` at the slash path ``name`` for this experiment."""
        parse_path(name)
        problems: list[str] = []
        value = _storable(entry, name, problems)
        if problems:
            warnings.warn(
                f"static data {name!r} saved with replacements: {'; '.join(problems)}",
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
        saved = _merged(self.extra_settings, self.mirror.saved_values())
        self.last_metadata = saved
        self.mirror.restore(saved)

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
        """Publish the parameters and wait until the daemon has them.

        The daemon merges them into its last config at the next stop (a save,
        ``collectord stop``, or the daemon's shutdown).
        """
        self.mirror.publish_changes()
        self.client.sync(self.timeout)

    def save_json_log(self, output_path: str | os.PathLike[str] = "") -> str:
        """Stop the experiment: the daemon saves it. Returns the metadata file.

        With ``output_path``, a copy of that file is also written there.
        """
        self.save_config_file()
        self._warn_about_rejections()
        path = self.mirror.stop(f"stytra save {os.fspath(output_path)}".strip())
        self.log_data_dict.clear()
        if output_path:
            _copy(Path(path), Path(output_path))
        return path

    def save(self, output_path: str | os.PathLike[str] = "") -> str:
        """Save the metadata (``save_json_log``) and the parameters (``save_config_file``)."""
        path = self.save_json_log(output_path)
        self.save_config_file()
        return path

    # -- collectord's additions ----------------------------------------------------------

    def close(self) -> None:
        """Publish the last changes, stop the mirror, close the client if it is ours."""
        self.mirror.close()
        if self._owns_client:
            self.client.close(self.timeout)

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


def _storable(value: Any, where: str, problems: list[str]) -> Any:
    """``value`` if collectord can store it; else a copy with the misfits replaced."""
    try:
        codec.check_value(value, where=where)
    except UnsupportedValueError:
        return _replace_misfits(value, where, problems, 0)
    return value


def _replace_misfits(value: Any, where: str, problems: list[str], depth: int) -> Any:
    if depth > codec.MAX_VALUE_DEPTH:
        problems.append(f"{where}: nested deeper than {codec.MAX_VALUE_DEPTH} levels")
        return "<not saved: nested too deep>"
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if name.startswith("$"):
                problems.append(f"{where}: key {name!r} renamed '_{name}'")
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
        problems.append(str(exc))
        return f"<not saved: {_repr.repr(value)}>"
    return value


def _branch(tree: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """The dict at ``path`` in ``tree``, created if missing (merging, never replacing)."""
    for name in path:
        child = tree.get(name)
        if not isinstance(child, dict):
            child = tree[name] = {}
        tree = child
    return tree


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
