"""ndshm: share big numpy arrays across processes with no copies.

Arrays live in shared memory, describe themselves (dtype, shape, order),
and pickle as small handles, so they pass through multiprocessing,
concurrent.futures, joblib or tqdm at O(1) cost.
"""

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
from .locks import Lock, LockOwnerDied, RWLock
from .segments import SegmentInfo, delete, exists, gc, info, list

__version__ = "0.1.0"

__all__ = [
    "Lock",
    "LockOwnerDied",
    "RWLock",
    "SegmentInfo",
    "SharedArray",
    "__version__",
    "attach",
    "delete",
    "empty",
    "empty_like",
    "exists",
    "from_array",
    "full",
    "gc",
    "info",
    "list",
    "zeros",
    "zeros_like",
]
