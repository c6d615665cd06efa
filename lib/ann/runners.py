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

CAND_ROOM = 1 << 16  # candidates a tree runner's single-query state has room for, at most


def _lists(ids: np.ndarray, dist: np.ndarray, distances: bool) -> tuple[list[int], list[float] | None]:
    """One query's output row as annoy's lists, without the -1 padding (distances if asked)."""
    got = ids.tolist()
    if got[-1] >= 0:
        return got, dist.tolist() if distances else None
    n = got.index(-1)
    del got[n:]
    return got, dist[:n].tolist() if distances else None


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
        return None if bad >= 0 else _lists(self._ids, self._dist, distances)

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
    14-bit query stamp and a 2-bit vote count.

    One query at a time goes to ``_kernels.one``, which takes three arguments: the file, the
    query, and one int64 ``state`` holding the parameters, the roots, the stamps, the output row
    and the scratch of a query (its layout: ``_kernels.ST_*``). The parameters and stamps of the
    batched path are views of the same state, so both share the query stamp."""

    __slots__ = ("_n_roots", "_one", "_f32", "_state", "_roots", "_n_items", "_K", "_caps")

    def __init__(self, kernel: Any, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], params: np.ndarray,
                 n_items: int, holes: bool) -> None:
        from backbeat.ann import _kernels

        super().__init__(kernel, arrays, params, np.zeros(max(n_items, 1), np.uint16))
        self._params[12] = holes
        self._params[13] = 0  # last query stamp
        self._one = _kernels.one
        self._f32 = arrays[1]
        self._roots = arrays[2]
        self._n_roots = max(len(arrays[2]), 1)
        self._n_items = max(n_items, 1)
        self._K = int(params[6])
        self._caps = (0, 0)
        self._lay_out(16, 256)

    def _lay_out(self, k: int, cand: int) -> None:
        """A new state with room for ``k`` answers and ``cand`` candidates; the parameters and
        stamps carried over, ``_params``/``_stamps`` pointed at it."""
        from backbeat.ann import _kernels as K

        heap = max(256, 2 * len(self._roots) + 2)
        regions = [  # (slot, elements, words)
            (K.ST_ROOTS, len(self._roots), len(self._roots)),
            (K.ST_SEEN, self._n_items, (self._n_items + 3) // 4),
            (K.ST_IDS, k, k), (K.ST_DIST, k, (k + 1) // 2), (K.ST_HEAP, heap, heap),
            (K.ST_CAND, cand, cand), (K.ST_KEYS, cand, (cand + 1) // 2),
            (K.ST_BEST_K, k, (k + 1) // 2), (K.ST_BEST_I, k, k),
        ]
        state = np.zeros(K.ST_WORDS + sum(w for _, _, w in regions), np.int64)
        at = K.ST_WORDS
        for slot, n, words in regions:
            state[slot], state[slot + 1] = at, n
            at += words
        state[:K.N_PARAMS] = self._params
        r = state[K.ST_ROOTS]
        state[r:r + len(self._roots)] = self._roots
        s = state[K.ST_SEEN]
        seen = state[s:].view(np.uint16)[: self._n_items]
        seen[: self._stamps.shape[0]] = self._stamps
        self._state, self._params, self._stamps = state, state[:K.N_PARAMS], seen
        self._caps = (k, cand)

    def _configure(self, k: int, search_k: int, votes: int) -> None:
        sk = k * self._n_roots if search_k == -1 else search_k
        # room for every candidate of a query (at most the collected items: search_k and a leaf
        # more) up to CAND_ROOM; past that the kernel allocates its own, a small cost next to
        # scoring that many, and a thread does not keep megabytes after one large search_k
        cand = max(256, min(sk + self._K, self._n_items + self._K, CAND_ROOM))
        if k > self._caps[0] or cand > self._caps[1]:
            self._lay_out(max(k, self._caps[0]), max(cand, self._caps[1]))
        self._params[10] = k
        self._params[11] = sk
        self._params[14] = votes
        from backbeat.ann import _kernels as K

        st = self._state  # the output row: where ``one`` writes it
        self._ids = st[st[K.ST_IDS]:st[K.ST_IDS] + k]
        self._dist = st[st[K.ST_DIST]:].view(np.float32)[:k]

    def one(self, q: np.ndarray, k: int, search_k: int,
            distances: bool = True) -> tuple[list[int], list[float] | None] | None:
        if self._key != (k, search_k, 1):
            self._setup(k, search_k, 1)
        if self._one(self._f32, self._state, q) >= 0:
            return None
        return _lists(self._ids, self._dist, distances)


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


class CodedTreeRunner(TreeRunner):
    """``TreeRunner`` over a file with a codes region (``backbeat.ann.codes``): the same queue and
    candidates, ranked by their 4-bit codes before the best few are ranked on their float records
    (``_kernels.one_coded`` / ``search_coded``, which take the codes and the quantiser's table)."""

    __slots__ = ("_codes", "_tab")

    def __init__(self, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], params: np.ndarray, n_items: int,
                 holes: bool, codes: np.ndarray, tab: np.ndarray) -> None:
        from backbeat.ann import _kernels

        super().__init__(_kernels.search_coded, arrays, params, n_items, holes)
        self._arrays = (codes, tab, *arrays)
        self._one = _kernels.one_coded
        self._codes = codes
        self._tab = tab

    def one(self, q: np.ndarray, k: int, search_k: int,
            distances: bool = True) -> tuple[list[int], list[float] | None] | None:
        if self._key != (k, search_k, 1):
            self._setup(k, search_k, 1)
        if self._one(self._f32, self._state, q, self._codes, self._tab) >= 0:
            return None
        return _lists(self._ids, self._dist, distances)
