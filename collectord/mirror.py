"""Mirror a lightparam ``ParameterTree`` into the daemon, and restore it from there.

::

    from collectord import Client
    from collectord.mirror import TreeMirror

    client = Client("camera")
    camera = CameraParams(name="camera_params")          # a lightparam Parametrized
    mirror = TreeMirror(client, camera, period=0.5)      # restore, publish all, follow
    ...                                                  # the GUI changes camera.exposure
    mirror.close()                                       # publish what is left, stop

**Attach.** The constructor restores the tree from the daemon's last config
(as lightparam's ``ParameterTree.deserialize``: ``loadable=False``
parameters are skipped, entries for nodes the process does not have are
ignored with a warning; but each parameter on its own, so that one that
cannot be restored stops nothing, and arrays compared as arrays), then
publishes every node whole, one ``set_params`` per node, and the parameters'
documentation (below), and waits until the daemon has them.

**Changes.** The mirror keeps a copy of what it last sent and publishes the
parameters whose value differs, one ``set_params`` per node that changed.
Only a node it has not seen before goes whole. Several processes may mirror
the same node (two stytra instances on one daemon): each publishes what it
changed, so a value one sets stands until one changes it again. That is why
a node goes whole as early as possible (at attach, at ``restore()``, or the
first period after it is added), never with a later change: a whole node
published late carries the values the process started with over what
another process set in between.

The mirror deliberately does not use lightparam's ``changed`` flags: clearing
them with ``acknowledge_changes()`` would steal changes from other code that
reads them (stytra's experiment forwards camera changes to its camera process
with ``changed_values()`` and ``acknowledge_changes()``), and a value
assigned through ``param.value`` or ``params.values`` never sets them.
Comparing a tree of a hundred parameters takes about 0.15 ms (holding the GIL
that long, once per period).

**Threads.** With ``period`` set, a background thread calls
``publish_changes()`` every ``period`` seconds, so the process's own loop
never calls the mirror (nor the client). The thread only reads parameter
values; it never writes them. That is safe in CPython for values that are
replaced (``camera.exposure = 5``); a value mutated in place while the thread
copies it (a dict growing in another thread) can make one round fail, which
is logged and retried at the next period. Every method may be called from any
thread: a lock serialises them.

**Parameter documentation.** Each parameter's ``desc``, ``unit``, ``limits``
and ``loadable`` travel once per node (and again for a parameter that appears
later), not with every change: as parameters of ``param_info/<node>``, a
top-level key beside stytra's categories (the ``info_path`` argument). Being
parameters, they carry over to every later experiment, so each saved file
documents its parameters whoever stops it. They also land in the last config,
where nothing restores them: ``restore`` asks only for the categories of the
tracked nodes. (As static data they would have to be sent again after each
stop, which would make the next experiment begin at that moment: its folder
named after the previous stop, and saved at shutdown even if nothing ran.)

**Restored types.** The last config is JSON, so a tuple comes back as a list
and a datetime as text. Before restoring, a restored value takes the type
of the parameter's current value where that is unambiguous: a list becomes a
tuple or a numpy array, ISO text a datetime, date or time, text a path.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import math
import pathlib
import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import numpy as np
from lightparam import ParameterTree, Parametrized, visit_dict

from . import codec
from .client import Client, close_first_at_exit
from .errors import ClientClosedError, InvalidPathError, RequestError
from .paths import check_name, parse_path

__all__ = ["DEFAULT_INFO_PATH", "RestoreWarning", "SkippedParameterWarning", "TreeMirror"]

log = logging.getLogger("collectord.mirror")

#: Where the parameters' documentation goes in the saved metadata.
DEFAULT_INFO_PATH = "param_info"


class SkippedParameterWarning(UserWarning):
    """A parameter or node could not be mirrored and was left out."""


class RestoreWarning(UserWarning):
    """A parameter could not be restored: it keeps its value, unpublished until it changes."""


#: What a mirror follows: a tree, or Parametrized objects to put in one.
Trackable: TypeAlias = "ParameterTree | Parametrized | Iterable[Parametrized]"


class TreeMirror:
    """Keeps the daemon's copy of a lightparam tree up to date, from one process.

    ``tree`` is a ``ParameterTree`` (nodes added to it later are picked up),
    one ``Parametrized`` or several. ``period`` is the interval of the
    background thread in seconds; None means no thread (call
    ``publish_changes()`` yourself). ``restore`` restores the tree from the
    last config before anything is published. With ``wait_for_restore``
    (and ``restore=False``) nothing is published yet, and the thread waits
    until ``restore()`` or a publish call has run: for a tree still being
    built, whose defaults must not reach the daemon ahead of the values
    saved for them (the stytra drop-in: stytra makes its nodes, then calls
    ``restore_from_saved()``). ``info_path`` is the top-level name under which
    the parameters' documentation is saved (None: not sent). ``timeout``
    bounds each request the mirror makes of the daemon.

    The mirror does not own the client: ``close()`` leaves it open.
    """

    def __init__(
        self,
        client: Client,
        tree: Trackable,
        *,
        period: float | None = 1.0,
        restore: bool = True,
        wait_for_restore: bool = False,
        info_path: str | None = DEFAULT_INFO_PATH,
        timeout: float = 10.0,
    ) -> None:
        if period is not None and period <= 0:
            raise ValueError(f"period must be positive or None, not {period!r}")
        if info_path is not None:
            parse_path(info_path)
        self.client = client
        self.tree = _as_tree(tree)
        self.period = period
        self.info_path = info_path
        self.timeout = timeout
        self._lock = threading.RLock()
        #: node -> parameter -> the value last sent (a private copy).
        self._sent: dict[str, dict[str, Any]] = {}
        #: node -> parameter -> the value it kept when its restore failed (a
        #: private copy): not published while it holds that value, so that it
        #: never replaces the saved one.
        self._held: dict[str, dict[str, Any]] = {}
        #: Nodes whose name cannot be a tree path, reported once.
        self._refused_nodes: set[str] = set()
        #: Whether the thread publishes: once attached (restored or published).
        self._started = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if restore:
            self.restore()  # then publishes every node whole
        elif not wait_for_restore:
            self.publish_all()
        if period is not None:
            self._thread = threading.Thread(
                target=self._follow, name=f"collectord-mirror-{client.name}", daemon=True
            )
            self._thread.start()
        # A process that ends without close() (stytra never closes its
        # collector) still publishes its last changes, before its client
        # delivers what it holds at exit.
        close_first_at_exit(self)

    # -- restoring ---------------------------------------------------------------------

    def saved_values(self) -> dict[str, Any]:
        """The last config's values for the top-level categories of the tracked nodes.

        ``camera_params`` and ``general/animal`` ask for ``camera_params`` and
        ``general``: the whole category, as stytra restores the whole file, so
        entries of nodes this process lacks are there to be warned about.
        """
        saved: dict[str, Any] = {}
        for category in sorted({node.split("/")[0] for node in self._tracked()}):
            try:
                values = self.client.restore(category, self.timeout)
            except RequestError as exc:
                if exc.code != "not_a_group":
                    raise
                warnings.warn(
                    f"the daemon holds a single value at {category!r}, "
                    "not parameters; it is not restored",
                    stacklevel=2,
                )
                continue
            if values:
                saved[category] = values
        return saved

    def restore(self, saved: Mapping[str, Any] | None = None) -> None:
        """Restore the tree from ``saved`` (by default the daemon's last config), then publish.

        As lightparam's ``ParameterTree.deserialize``: ``loadable=False``
        parameters keep their value, and an entry naming a node or parameter
        the tree does not have is ignored with a ``UserWarning``. Unlike it,
        each parameter is restored on its own, and a numpy array is compared
        as an array (lightparam's ``!=`` raised for two elements or more, and
        the restore stopped there). A parameter whose restore fails (its
        ``Parametrized`` refuses the value) keeps its value, and a
        ``RestoreWarning`` names it; that value is not published until it
        changes, so it never replaces the saved value at the daemon, nor, at
        the next stop, in the last config.

        What the restore changed is published at once (nodes seen for the
        first time whole), and this returns once the daemon has it. Published
        with some later change instead, or still on its way, these values
        would overwrite what another process sets on the same nodes meanwhile
        (the daemon applies messages from different processes as they
        arrive). Needs the daemon: ``DaemonTimeout`` after ``timeout``.
        """
        if saved is None:
            saved = self.saved_values()
        with self._lock:
            for node, name, error in _restore(self.tree, _typed_like(self.tree, saved)):
                kept = self.tree.tracked[node].params.values[name]
                self._held.setdefault(node, {})[name] = _private_copy(kept)
                warnings.warn(
                    f"node {node!r}: parameter {name!r} was not restored "
                    f"({type(error).__name__}: {error}); it keeps {_short(kept)}, which is "
                    "not published until it changes, so the saved value stays",
                    RestoreWarning,
                    stacklevel=2,
                )
            self.publish_changes()
        self.client.sync(self.timeout)

    # -- publishing --------------------------------------------------------------------

    def publish_all(self) -> None:
        """Publish every node whole and every parameter's documentation."""
        with self._lock:
            self._sent.clear()
            self.publish_changes()  # every node is new: published whole, documented

    def publish_changes(self) -> int:
        """Publish what changed since it was last sent; return how many parameters.

        A node seen for the first time is published whole (an empty node as an
        empty group, as stytra saves it), with its parameters' documentation.
        """
        with self._lock:
            self._started = True
            return self._publish_changes()

    def _publish_changes(self) -> int:
        published = 0
        with self._lock:
            tracked = self._tracked()
            for node, parametrized in tracked.items():
                published += self._publish_node(node, parametrized)
            for node in set(self._sent) - set(tracked):
                del self._sent[node]  # dropped from the tree: nothing to follow
        return published

    def publish_info(self) -> None:
        """Send the documentation of every parameter again (``param_info``)."""
        if self.info_path is None:
            return
        with self._lock:
            for node, parametrized in self._tracked().items():
                self._send_info(node, parametrized, None)

    def stop(self, reason: str = "", timeout: float = 30.0) -> str:
        """Publish the changes, then stop the experiment.

        Returns the path of the saved metadata file (``Client.stop``, whose
        ``timeout`` covers the stop barrier and the saving).
        """
        with self._lock:
            self.publish_changes()
            return self.client.stop(reason or f"stop() from {self.client.name}", timeout)

    # -- the background thread -------------------------------------------------------------

    def _follow(self) -> None:
        assert self.period is not None
        while not self._closed.wait(self.period):
            try:
                with self._lock:
                    if self._started:  # else the tree is still being built
                        self._publish_changes()
            except ClientClosedError:
                return
            except Exception:
                log.exception("mirror of %r: publishing failed; retrying", self.client.name)

    def close(self) -> None:
        """Publish what changed and stop the thread; the client stays open."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.publish_changes()
        except ClientClosedError:
            log.warning("mirror of %r: the client closed first", self.client.name)

    def __enter__(self) -> TreeMirror:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _tracked(self) -> dict[str, Any]:
        """The tree's nodes whose name is a valid path; others are warned about once."""
        nodes = {}
        for node, parametrized in list(self.tree.tracked.items()):
            try:
                parse_path(node)
            except InvalidPathError as exc:
                if node not in self._refused_nodes:
                    self._refused_nodes.add(node)
                    warnings.warn(
                        f"node {node!r} is not mirrored: {exc}",
                        SkippedParameterWarning,
                        stacklevel=3,
                    )
                continue
            nodes[node] = parametrized
        return nodes

    def _publish_node(self, node: str, parametrized: Any) -> int:
        """Publish the node's changed parameters (all of them if it is new)."""
        new_node = node not in self._sent
        sent = self._sent.setdefault(node, {})
        held = self._held.get(node, {})
        changed: dict[str, Any] = {}
        first_seen: list[str] = []
        for name, value in dict(parametrized.params.values).items():
            if name in held:
                if _same(held[name], value):
                    continue  # not restored: the saved value stays
                del held[name]  # the process set it: it is its own now
            if name in sent and _same(sent[name], value):
                continue
            if name not in sent:
                first_seen.append(name)
            try:
                check_name(name, where="parameter name")
                copied = copy.deepcopy(value)
                codec.check_value(copied, where=f"{node}/{name}", depth=codec.PARAM_VALUE_DEPTH)
            except Exception as exc:  # UnsupportedValueError, InvalidPathError, copy errors
                warnings.warn(
                    f"parameter {node}/{name} is not mirrored: {exc}",
                    SkippedParameterWarning,
                    stacklevel=3,
                )
                sent[name] = _private_copy(value)  # tried again once it changes, in place too
                continue
            changed[name] = copied
            sent[name] = copied
        if changed or new_node:
            self.client.set_params(node, changed)
        if first_seen and self.info_path is not None:
            self._send_info(node, parametrized, first_seen)
        return len(changed)

    def _send_info(self, node: str, parametrized: Any, names: Iterable[str] | None) -> None:
        """Document the parameters ``names`` of ``node`` (None: all of them)."""
        assert self.info_path is not None
        params = parametrized.params.items()
        chosen = params if names is None else [name for name in names if name in params]
        info = {name: _describe(params[name]) for name in chosen}
        if info:
            self.client.set_params(f"{self.info_path}/{node}", info)


def _as_tree(tree: Trackable) -> ParameterTree:
    """A ``ParameterTree`` holding what the caller gave."""
    if isinstance(tree, ParameterTree):
        return tree
    holder = ParameterTree()
    items = [tree] if isinstance(tree, Parametrized) else list(tree)
    for item in items:
        if not isinstance(item, Parametrized):
            raise TypeError(f"expected lightparam Parametrized objects, got {type(item).__name__}")
        holder.add(item)
    return holder


def _describe(param: Any) -> dict[str, Any]:
    """The documentation of one lightparam ``Param`` worth keeping in the metadata."""
    limits = param.limits
    if isinstance(limits, np.ndarray | np.generic):
        limits = limits.tolist()
    try:
        codec.check_value(limits)
    except TypeError:  # UnsupportedValueError: an enum class, a callable...
        limits = repr(limits)
    return {
        "desc": str(param.desc or ""),
        "unit": str(param.unit or ""),
        "limits": limits,
        "loadable": bool(param.loadable),
    }


def _same(old: Any, new: Any) -> bool:
    """Whether ``new`` equals the copy ``old`` last sent, type included.

    NaN equals NaN (else it would be sent at every period) and arrays compare
    by dtype, shape and content; anything that refuses to compare is a change.
    """
    if type(old) is not type(new):
        return False
    if isinstance(new, float):
        return old == new or (math.isnan(old) and math.isnan(new))
    if isinstance(new, list | tuple):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new, strict=True))
    if isinstance(new, dict):
        return old.keys() == new.keys() and all(_same(old[k], new[k]) for k in new)
    if isinstance(new, np.ndarray | np.generic):
        if old.dtype != new.dtype or old.shape != new.shape:
            return False
        try:
            return bool(np.array_equal(old, new, equal_nan=new.dtype.kind in "fc"))
        except TypeError:  # dtypes without a NaN test, or no comparison at all
            return False
    try:
        return bool(old == new)
    except Exception:
        return False


def _restore(tree: ParameterTree, saved: Mapping[str, Any]) -> list[tuple[str, str, Exception]]:
    """Restore ``saved`` into the tree's parameters; return those that failed, and why.

    lightparam's ``ParameterTree.deserialize``, except that one failure stops
    nothing: each parameter is set on its own, and a node's change signal
    (``block_signal`` of lightparam's Qt classes) is blocked once per node
    and unblocked whatever happens.
    """
    nodes: dict[str, dict[str, tuple[Any, Any]]] = {}
    for path, value in visit_dict(dict(saved)):
        node, name = "/".join(path[:-1]), path[-1]
        parametrized = tree.tracked.get(node)
        param = None if parametrized is None else parametrized.params.items().get(name)
        if param is None:
            warnings.warn(  # lightparam's words, which users filter on
                f"Trying to restore {path}, but it is not present in the parameter tree",
                stacklevel=4,
            )
        elif param.loadable and name != "loadable":  # as lightparam: never "loadable"
            nodes.setdefault(node, {})[name] = (param, value)
    failures: list[tuple[str, str, Exception]] = []
    for node, values in nodes.items():
        parametrized = tree.tracked[node]
        blocked = getattr(parametrized, "block_signal", False)
        _set_block_signal(parametrized, True)
        try:
            for name, (param, value) in values.items():
                try:
                    _assign(parametrized, param, name, value)
                except Exception as exc:  # the Parametrized refused the value
                    failures.append((node, name, exc))
        finally:
            _set_block_signal(parametrized, blocked)
    return failures


def _set_block_signal(parametrized: Any, value: bool) -> None:
    with contextlib.suppress(AttributeError):  # as lightparam: a node may refuse it
        parametrized.block_signal = value


def _assign(parametrized: Any, param: Any, name: str, value: Any) -> None:
    """``setattr(parametrized, name, value)``, as lightparam restores, for arrays too.

    lightparam's ``Parametrized.__setattr__`` stores the value and then asks
    ``old != value`` whether to flag a change. For numpy arrays of two or
    more elements that raises ("truth value ... is ambiguous") after the
    value is in; the change is then flagged by comparing arrays as arrays.
    Going through ``setattr`` keeps what subclasses do on assignment.
    """
    old = param.value
    try:
        setattr(parametrized, name, value)
    except ValueError:
        if param.value is not value:
            raise  # not lightparam's comparison: the value was refused
        if not _same(old, value):
            param.changed = True


def _private_copy(value: Any) -> Any:
    """A copy that mutating ``value`` in place leaves alone (the value itself if none)."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _typed_like(tree: ParameterTree, saved: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with each value given the type of the parameter it restores."""
    typed: dict[str, Any] = {}
    for path, value in visit_dict(dict(saved)):
        node = tree.tracked.get("/".join(path[:-1]))
        if node is not None:
            param = node.params.items().get(path[-1])
            if param is not None:
                value = _like(param.value, value)
        branch = typed
        for name in path[:-1]:
            branch = branch.setdefault(name, {})
        branch[path[-1]] = value
    return typed


def _like(current: Any, restored: Any) -> Any:
    """``restored`` converted to the type of ``current`` when JSON lost it."""
    try:
        if isinstance(current, tuple) and isinstance(restored, list):
            return tuple(restored)
        if isinstance(current, np.ndarray) and isinstance(restored, list):
            converted = np.asarray(restored, dtype=current.dtype)
            if converted.dtype.kind in "biuf" and not np.array_equal(
                converted, np.asarray(restored), equal_nan=converted.dtype.kind == "f"
            ):
                return restored  # the dtype cannot hold them (0.5 in int64): kept as saved
            return converted
        if isinstance(restored, str):
            if isinstance(current, dt.datetime):
                return dt.datetime.fromisoformat(restored)
            if isinstance(current, dt.date):
                return dt.date.fromisoformat(restored)
            if isinstance(current, dt.time):
                return dt.time.fromisoformat(restored)
            if isinstance(current, pathlib.PurePath):
                return type(current)(restored)
    except (ValueError, TypeError, OverflowError):  # 300 in uint8
        pass  # not what the parameter holds: restore it as it was saved
    return restored
