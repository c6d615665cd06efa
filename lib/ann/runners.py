"""Per-thread state of the compiled searches, set up once so that each call does little else.

Annoy's users call ``get_nns_by_vector`` in a loop, one vector at a time. On a small index the
compiled search takes 2-3 us, and the Python around it (argument checks, writing the per-call
parameters, a stamp counter, numba's dispatch, list conversion) used to take 10-15 us more. A
runner keeps what does not change between calls: the kernel and its arrays, its own copy of the
parameter block (the kernel keeps its query stamp there, so no Python bookkeeping per call), the
"seen"/"visited" stamps and the output rows of one query. The kernel also checks the query for
NaN and inf, so the caller needs no pass over the vector of its own.

A runner belongs to one thread (its stamps and output rows are overwritten by every call); the
index keeps one per thread in a ``threading.local``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backbeat.ann import graph as G


class _Runner:
    """What both compiled searches share: their calls take ``(*arrays, params, queries, stamps,
    ids, distances)``, queries and answers as flat rows (numba passes 1-D arrays for less); a
    subclass writes the per-call slots of ``params`` in ``_configure``."""

    __slots__ = ("_kernel", "_arrays", "_params", "_stamps", "_ids", "_dist", "_key")

    def __init__(self, kernel: Any, arrays: tuple[np.ndarray, ...], params: np.ndarray,
                 stamps: np.ndarray) -> None:
        self._kernel = kernel
        self._arrays = arrays
        self._params = params.copy()
        self._stamps = stamps
        self._key: tuple[int, int, int] | None = None
        self._ids = np.empty(0, np.int64)  # one query's answers
        self._dist = np.empty(0, np.float32)

    def _configure(self, k: int, search_k: int, votes: int) -> None:
        raise NotImplementedError

    def _setup(self, k: int, search_k: int, votes: int) -> None:
        self._configure(k, search_k, votes)
        if self._ids.shape[0] != k:
            self._ids = np.empty(k, np.int64)
            self._dist = np.empty(k, np.float32)
        self._key = (k, search_k, votes)

    def one(self, q: np.ndarray, k: int, search_k: int,
            distances: bool = True) -> tuple[list[int], list[float] | None] | None:
        """The ``k`` nearest to float32 vector ``q`` as annoy's lists (ids, and distances when
        asked for), without the -1 padding; None if ``q`` holds NaN or inf."""
        if self._key != (k, search_k, 1):
            self._setup(k, search_k, 1)
        bad = self._kernel(*self._arrays, self._params, q, self._stamps, self._ids, self._dist)
        if bad >= 0:
            return None
        ids = self._ids.tolist()
        if ids[-1] >= 0:
            return ids, self._dist.tolist() if distances else None
        got = ids.index(-1)
        del ids[got:]
        return ids, self._dist[:got].tolist() if distances else None

    def many(self, qs: np.ndarray, k: int, search_k: int,
             votes: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
        """Every row of ``qs``: ids, distances, and the first non-finite row (or -1)."""
        if self._key != (k, search_k, votes):
            self._setup(k, search_k, votes)
        ids = np.empty((qs.shape[0], k), np.int64)
        dist = np.empty((qs.shape[0], k), np.float32)
        bad = self._kernel(*self._arrays, self._params, qs.reshape(-1), self._stamps, ids.reshape(-1),
                           dist.reshape(-1))
        return ids, dist, bad


class TreeRunner(_Runner):
    """Annoy's best-first search over the trees (``_kernels.search``) for one thread: per item a
    14-bit query stamp and a 2-bit vote count."""

    __slots__ = ("_n_roots",)

    def __init__(self, kernel: Any, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], params: np.ndarray,
                 n_items: int, holes: bool) -> None:
        super().__init__(kernel, arrays, params, np.zeros(max(n_items, 1), np.uint16))
        self._params[12] = holes
        self._params[13] = 0  # last query stamp
        self._n_roots = max(len(arrays[2]), 1)

    def _configure(self, k: int, search_k: int, votes: int) -> None:
        self._params[10] = k
        self._params[11] = k * self._n_roots if search_k == -1 else search_k
        self._params[14] = votes


class GraphRunner(_Runner):
    """Beam search over the neighbour graph (``_graph_kernels.search``) for one thread: one byte
    of "visited" stamp per item. ``votes`` counts trees and means nothing here: the index uses a
    ``TreeRunner`` for it."""

    __slots__ = ("_n_trees", "_leaf")

    def __init__(self, kernel: Any, arrays: tuple[np.ndarray, ...], params: np.ndarray, n_items: int,
                 n_trees: int, leaf: int) -> None:
        super().__init__(kernel, arrays, params, np.zeros(max(n_items, 1), np.uint8))
        self._params[12] = 0  # last visited stamp
        self._n_trees = n_trees
        self._leaf = leaf

    def _configure(self, k: int, search_k: int, votes: int) -> None:
        ef = G.ef_for(search_k, k, self._n_trees)
        self._params[9], self._params[10], self._params[11] = k, ef, G.seeds_for(ef, self._leaf)
