"""Per-query-row steps both compiled searches (``_kernels``, ``_graph_kernels``) share: the check
that a query row is finite, and the padding of an output row past its last answer."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def finite(q, f):  # pragma: no cover - compiled
    """Whether the ``f`` components of query row ``q`` are all finite (no NaN, no inf)."""
    ok = True
    for j in range(f):
        ok &= np.isfinite(q[j])
    return ok


@njit(cache=True, nogil=True, inline="always")
def pad(out_ids, out_d, b, start, k):  # pragma: no cover - compiled
    """Mark answers ``start..k-1`` of output row ``b`` as missing: id -1, distance inf."""
    for r in range(start, k):
        out_ids[b, r] = -1
        out_d[b, r] = np.inf
