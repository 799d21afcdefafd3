"""Progress bars for pool calls, fed from the job's completed-items counter
on the board (no message per task)."""

from __future__ import annotations

import time
from typing import Any

from . import _native

# Least time between two redraws.
_EVERY = 0.1


class Progress:
    """A ``tqdm.auto`` bar over a job's items; does nothing when off."""

    def __init__(self, on: bool, total: int | None, board: _native.Board, job: int) -> None:
        self.bar: Any = None
        if not on:
            return
        from tqdm.auto import tqdm

        self.board, self.job = board, job
        self.bar = tqdm(total=total, unit="it", dynamic_ncols=True)
        self.last = 0.0

    def update(self) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self.last < _EVERY:
            return
        self.last = now
        done = self.board.job_completed(self.job)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is None:
            return
        done = self.board.job_completed(self.job)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self.bar.close()
