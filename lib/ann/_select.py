"""Quickselect shared by the compiled tree build (``_kernels``) and graph build
(``_graph_kernels``): a module of its own, so that loading either kernel module for a query does
not load the other."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def kth(v, n, k):  # pragma: no cover - compiled
    """Reorder ``v[:n]`` so that ``v[k]`` is its k-th smallest (0-based), nothing larger before it."""
    lo = 0
    hi = n - 1
    while lo < hi:
        a = v[lo]
        b = v[(lo + hi) >> 1]
        c = v[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i = lo
        j = hi
        while i <= j:
            while v[i] < pivot:
                i += 1
            while v[j] > pivot:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return v[k]
