"""Turns on ndshm's Dask integration whenever ``distributed`` is in use.

If ``distributed`` is already imported when ndshm is, the registration runs
at once; otherwise a finder on ``sys.meta_path`` waits for ``distributed``
to be imported and runs it right after. Nothing of Dask is imported
otherwise.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Any

_WATCHED = "distributed"


def _register() -> None:
    try:
        from .dask.serialize import register
    except ImportError:  # dask.array missing: distributed without arrays
        return
    register()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``distributed`` so that
    ndshm's registration runs once it is loaded."""

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        _uninstall()
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            try:
                _register()
            except Exception as e:  # never break the user's import of distributed
                warnings.warn(f"ndshm: could not register with distributed: {e!r}", stacklevel=2)

        loader.exec_module = exec_then_register  # type: ignore[union-attr]
        return spec


_finder = _AfterImport()


def _uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Registers now if ``distributed`` is loaded, else once it is."""
    if _WATCHED in sys.modules:
        _register()
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
