"""Turns on ndshm's integrations with libraries when they are in use: Dask
once ``distributed`` is imported, joblib's memmapping reducer once
``joblib._memmapping_reducer`` is.

A library already imported when ndshm is gets its registration at once;
otherwise a finder on ``sys.meta_path`` waits for it to be imported and runs
the registration right after. Nothing of those libraries is imported
otherwise.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Any


def _register_dask(module: Any) -> None:
    try:
        from .dask.serialize import register
    except ImportError:  # dask.array missing: distributed without arrays
        return
    register()


def _teach_joblib(module: Any) -> None:
    from .sharing import teach_joblib

    teach_joblib(module)


# Module name -> what runs once it is imported.
_WATCHED = {"distributed": _register_dask, "joblib._memmapping_reducer": _teach_joblib}
_pending = set(_WATCHED)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of a watched module so that
    ndshm's registration runs once it is loaded."""

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        _done(fullname)
        register = _WATCHED[fullname]
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            try:
                register(module)
            except Exception as e:  # never break the user's import of the library
                warnings.warn(f"ndshm: could not register with {fullname}: {e!r}", stacklevel=2)

        loader.exec_module = exec_then_register  # type: ignore[method-assign, union-attr]
        return spec


_finder = _AfterImport()


def _done(name: str) -> None:
    _pending.discard(name)
    if not _pending and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Registers now with the watched libraries already loaded, and with
    the others once they are."""
    for name, register in _WATCHED.items():
        module = sys.modules.get(name)
        if module is not None and name in _pending:
            _done(name)
            register(module)
    if _pending and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
