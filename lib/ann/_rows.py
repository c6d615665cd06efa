"""Per-query-row steps both compiled searches (``_kernels``, ``_graph_kernels``) share: the check
that a query row is finite, the next "seen" stamp, annoy's margin of a split (both walk annoy's
trees), the padding of an output row past its last answer, and the angular distance of
near-identical vectors computed again."""

from __future__ import annotations

import numpy as np
from numba import njit

from backbeat.ann.search import NEAR  # noqa: F401 - the kernels take it from here


@njit(cache=True, nogil=True, inline="always")
def finite(q, f):  # pragma: no cover - compiled
    """Whether the ``f`` components of query row ``q`` are all finite (no NaN, no inf)."""
    ok = True
    for j in range(f):
        ok &= np.isfinite(q[j])
    return ok


@njit(cache=True, nogil=True, inline="always")
def next_stamp(marks, stamp, limit):  # pragma: no cover - compiled
    """The stamp after ``stamp``, below ``limit``: marks hold the stamp of the query (or walk)
    that set them, so none needs clearing, except on wrapping, when all are."""
    stamp += 1
    if stamp >= limit:
        marks[:] = 0
        stamp = 1
    return stamp


@njit(cache=True, nogil=True, inline="always")
def pad(out_ids, out_d, b, start, k):  # pragma: no cover - compiled
    """Mark answers ``start..k-1`` of output row ``b`` as missing: id -1, distance inf."""
    for r in range(start, k):
        out_ids[b, r] = -1
        out_d[b, r] = np.inf


@njit(cache=True, nogil=True, inline="always")
def angular_gap(f32, start, q, f):  # pragma: no cover - compiled
    """``2 - 2 cos`` of the vector at word ``start`` of ``f32`` and query ``q``, the three
    products summed in float64 in one loop, so in one order (the compiled twin of
    ``search.angular_gap``, which says why): an item and itself give exactly 0."""
    pp = 0.0
    qq = 0.0
    pq = 0.0
    for j in range(f):
        a = np.float64(f32[start + j])
        b = np.float64(q[j])
        pp += a * a
        qq += b * b
        pq += a * b
    if pp <= 0.0 or qq <= 0.0:
        return 2.0
    return max(2.0 - 2.0 * pq / np.sqrt(pp * qq), 0.0)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def margin(f32, base, v4, a4, df4, dfsq, q, f):  # pragma: no cover - compiled
    """Annoy's margin of the split at word ``base``: its plane's dot product with the query, plus
    the offset (euclidean, manhattan) or, for dot files of annoy <= 1.17.3, the split's
    ``dot_factor`` squared."""
    row = f32[base + v4:base + v4 + f]  # a C-contiguous slice: the loop vectorises
    m = np.float32(0.0)
    for j in range(f):
        m += row[j] * q[j]
    if a4 >= 0:
        m = f32[base + a4] + m
    if dfsq:
        dfv = f32[base + df4]
        m = m + dfv * dfv
    return m
