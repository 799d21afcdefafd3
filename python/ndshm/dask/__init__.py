"""ndshm on Dask: shared arrays between Dask workers of one host with no
copies, and as bytes between hosts.

Importing this module (or ``ndshm`` in a process where ``distributed`` is
loaded, or ``dask worker --preload ndshm.dask``) registers how shared
arrays are serialized, tokenized and sized. See ``docs/DASK.md``.
"""

from __future__ import annotations

try:
    import dask
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a child process by the tests
    raise ImportError(f"ndshm.dask needs dask[array] and distributed ({e}): pip install 'ndshm[dask]'") from e

from .collection import compute_into, store, to_dask
from .serialize import register

register()

__all__ = ["compute_into", "register", "store", "to_dask"]
