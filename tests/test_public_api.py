"""The public surface: what ``from collectord import *`` gives is what we mean to offer."""

from __future__ import annotations

import inspect
import types

import collectord
from collectord import errors


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    for name in collectord.__all__:
        assert hasattr(collectord, name), name
    public = {
        name
        for name, value in vars(collectord).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(collectord.__all__) - {"__version__"}


def test_every_error_is_exported_and_derives_from_the_base() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, Exception)
    }
    assert classes == set(errors.__all__)
    for name in classes:
        assert issubclass(getattr(errors, name), errors.CollectordError)
        assert getattr(collectord, name) is getattr(errors, name)


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    for name in errors.__all__:
        assert name in errors.__doc__


def test_every_package_is_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand: a new one left out installs
    without it (``pip install .`` then fails at ``import collectord.daemon``)."""
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "collectord").rglob("__init__.py")
    }
    assert found <= listed
