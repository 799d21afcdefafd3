"""How a pool starts its workers: the default start method and worker
count, and the fork server's preload (the server side is
:mod:`ndshm._forkserver`)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

# The program's main module's path, for the fork server to import it once
# (set while the server starts; read by ndshm._forkserver).
MAIN_PATH_ENV = "NDSHM_FORKSERVER_MAIN"


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_start_method() -> str:
    """``"forkserver"`` where the platform has it, else ``"spawn"``."""
    # forkserver: safe in a process with threads (fork is not), and each
    # worker starts in milliseconds once the server runs. Zero-copy does not
    # depend on it: arrays and the board travel as handles.
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def preload_forkserver() -> None:
    """Lets the fork server import ndshm (and numpy), and the program's main
    module, once, not per worker. Only a server not yet running with the
    default preload list is set up: another setting is the program's."""
    from multiprocessing import forkserver, process, spawn

    server = forkserver._forkserver
    preload = getattr(server, "_preload_modules", None)
    if getattr(server, "_forkserver_pid", None) is not None or preload != ["__main__"]:
        return
    if getattr(process.current_process(), "_inheriting", False):
        return  # a main module being imported to start a process: it cannot start any
    # Not "__main__": from late 3.13 releases the stdlib's server imports the
    # main module itself for that entry, and until 3.15 with no error
    # handling, so a program read from stdin or an unguarded main module
    # killed the server. ndshm._forkserver imports it, on every version.
    server.set_forkserver_preload(["ndshm._worker", "ndshm._forkserver"])
    prep = spawn.get_preparation_data("ndshm")
    if "init_main_from_path" not in prep:
        return  # an interactive session, `python -c`, or `python -m`
    # The server inherits the environment it is started with, and reads
    # these back (and drops them) when it imports ndshm._forkserver.
    main = {"path": prep["init_main_from_path"], "argv": prep["sys_argv"]}
    os.environ[MAIN_PATH_ENV] = json.dumps(main)
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(MAIN_PATH_ENV, None)
