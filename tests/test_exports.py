from __future__ import annotations
import __future__

import ast
import importlib
import inspect
import pkgutil
import types

import pytest

import aioprefactor


def public_names() -> list[str]:
    """Names the package exposes that look public: not private, not modules or __future__ flags.

    The package imports its names on first use, so its source is read for what it offers:
    every name its type-checking imports bring in, and every public name it defines.
    """
    tree = ast.parse(inspect.getsource(aioprefactor))
    offered: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aioprefactor"):
            offered.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef) and node.col_offset == 0:
            offered.add(node.name)
    return sorted(
        name
        for name in offered
        if not name.startswith("_")
        and not isinstance(getattr(aioprefactor, name), types.ModuleType | __future__._Feature)
    )


def attribute_docstrings() -> set[str]:
    """Module-level names documented by a string right after their assignment (type aliases)."""
    documented: set[str] = set()
    for module in pkgutil.walk_packages(aioprefactor.__path__, "aioprefactor."):
        if module.name.startswith("aioprefactor.integrations."):
            continue  # optional extras: their frameworks may not be installed
        tree = ast.parse(inspect.getsource(importlib.import_module(module.name)))
        for node, following in zip(tree.body, tree.body[1:], strict=False):
            is_doc = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
                and following.value.value.strip()
            )
            if not is_doc:
                continue
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            documented |= {t.id for t in targets if isinstance(t, ast.Name)}
    return documented


def test_all_is_sorted() -> None:
    """__all__ is in sorted order."""
    assert aioprefactor.__all__ == sorted(aioprefactor.__all__)


def test_all_has_no_duplicates() -> None:
    """No name is listed twice in __all__."""
    assert len(set(aioprefactor.__all__)) == len(aioprefactor.__all__)


def test_all_is_complete() -> None:
    """Every public name of the package is in __all__, and __all__ names nothing else public."""
    exported = [name for name in aioprefactor.__all__ if not name.startswith("_")]
    assert public_names() == sorted(exported)


def test_version_exported() -> None:
    """__version__ is exported and is a non-empty string."""
    assert "__version__" in aioprefactor.__all__
    assert isinstance(aioprefactor.__version__, str)
    assert aioprefactor.__version__


@pytest.mark.parametrize("name", aioprefactor.__all__)
def test_every_name_importable(name: str) -> None:
    """Every name in __all__ can be imported from the package."""
    namespace: dict[str, object] = {}
    exec(f"from aioprefactor import {name}", namespace)  # noqa: S102 - the import statement itself is the test
    assert namespace[name] is getattr(aioprefactor, name)


@pytest.mark.parametrize(
    "name", [name for name in aioprefactor.__all__ if not name.startswith("__")]
)
def test_every_export_documented(name: str) -> None:
    """Every exported object has a docstring of its own (a type alias: one after its assignment)."""
    obj = getattr(aioprefactor, name)
    if isinstance(obj, type):
        doc = vars(obj).get("__doc__")
    else:
        doc = obj.__doc__ if obj.__doc__ != type(obj).__doc__ else None
    assert (doc and doc.strip()) or name in attribute_docstrings()


@pytest.mark.parametrize(
    "name", [name for name in aioprefactor.__all__ if not name.startswith("__")]
)
def test_exports_live_in_private_modules(name: str) -> None:
    """Exported classes and functions are defined in the package's own private modules."""
    obj = getattr(aioprefactor, name)
    module = getattr(obj, "__module__", None)
    if isinstance(obj, type | types.FunctionType):
        assert module is not None
        assert module.startswith("aioprefactor._")
