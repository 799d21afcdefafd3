"""ndshm: share big numpy arrays across processes with no copies.

Arrays live in shared memory, describe themselves (dtype, shape, order),
and pickle as small handles, so they pass through multiprocessing,
concurrent.futures, joblib or tqdm at O(1) cost. ``ndshm.Pool`` runs
work over them in parallel, dispatched through shared memory.
"""

from . import _autoload, sharing
from .arrays import (
    SharedArray,
    attach,
    empty,
    empty_like,
    from_array,
    full,
    zeros,
    zeros_like,
)
from .blocks import blocks
from .errors import RemoteTraceback, WorkerDied
from .hosts import ForeignHandle
from .locks import Lock, LockOwnerDied, RWLock
from .maps import map, map_blocks, map_overlap
from .pool import Pool
from .segments import AbandonedSegment, CorruptSegment, SegmentInfo, delete, exists, gc, info, list

__version__ = "0.1.0"

sharing.install()
_autoload.install()

__all__ = [
    "AbandonedSegment",
    "CorruptSegment",
    "ForeignHandle",
    "Lock",
    "LockOwnerDied",
    "Pool",
    "RWLock",
    "RemoteTraceback",
    "SegmentInfo",
    "SharedArray",
    "WorkerDied",
    "__version__",
    "attach",
    "blocks",
    "delete",
    "empty",
    "empty_like",
    "exists",
    "from_array",
    "full",
    "gc",
    "info",
    "list",
    "map",
    "map_blocks",
    "map_overlap",
    "zeros",
    "zeros_like",
]
