"""The exceptions a pool raises in the caller for work that failed in a
worker: :class:`WorkerDied` and :class:`RemoteTraceback`."""

from __future__ import annotations

from typing import Any

__all__ = ["RemoteTraceback", "WorkerDied"]


class WorkerDied(RuntimeError):
    """A worker process died while running a task (killed, crashed, or
    exited). The pool replaced it and stays usable."""

    def __init__(self, message: str, *, task: str = "", pid: int | None = None, exitcode: int | None = None):
        super().__init__(message)
        self.task, self.pid, self.exitcode = task, pid, exitcode

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_worker_died, (str(self), self.task, self.pid, self.exitcode))


def _worker_died(message: str, task: str, pid: int | None, exitcode: int | None) -> WorkerDied:
    return WorkerDied(message, task=task, pid=pid, exitcode=exitcode)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker; attached as the
    ``__cause__`` of the exception re-raised in the caller."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'
