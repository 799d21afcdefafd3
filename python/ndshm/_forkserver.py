"""Imported by multiprocessing's fork server before it forks ndshm's
workers: imports the program's main module there, once, so that workers
forked from the server find it imported instead of each running its
imports again. The stdlib's own preload of "__main__" is not used: 3.11
and 3.12 never hand the server the main module's path (CPython
gh-126631), and from late 3.13 releases to 3.14 a main module that fails
to import there kills the server. The parent passes the path, and its
``sys.argv``, which a worker would set before importing the module, in an
environment variable while it starts the server (``Pool`` does, see
``startmethod.preload_forkserver``).
"""

from __future__ import annotations

import json
import os
import sys
import types
from contextlib import suppress
from multiprocessing import process, spawn

from .startmethod import MAIN_PATH_ENV


def _import_main() -> None:
    given = os.environ.pop(MAIN_PATH_ENV, None)
    if not given:
        return
    try:
        main = json.loads(given)
        path, argv = main["path"], main["argv"]
    except (ValueError, KeyError, TypeError):
        return
    sys.argv[:] = argv
    if not os.path.isfile(path):
        # A program read from stdin ("<stdin>"): there is nothing to import.
        # Workers find this empty module in its place and leave it, as they
        # do without any for a `python -c` program, instead of dying on it.
        stub = types.ModuleType("__mp_main__")
        stub.__file__ = path
        sys.modules["__main__"] = sys.modules["__mp_main__"] = stub
        return
    me = process.current_process()
    # As the fork server marks its own import of the main module: a main
    # module that starts processes when imported (no `if __name__ ==
    # "__main__":` guard) then fails here instead of starting more servers.
    me._inheriting = True  # type: ignore[attr-defined]
    try:
        spawn.import_main_path(path)
    except (Exception, SystemExit):
        # Left to the workers, which import it themselves as before and
        # report what goes wrong.
        pass
    finally:
        del me._inheriting  # type: ignore[attr-defined]
        # What it printed must not sit in a buffer every worker inherits.
        for stream in (sys.stdout, sys.stderr):
            with suppress(AttributeError, OSError, ValueError):
                stream.flush()


_import_main()
