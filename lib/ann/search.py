"""Searching an index: annoy's exact algorithm, and a vectorised batched search.

``exact_nns`` replays ``AnnoyIndex::_get_all_nns`` step by step (one priority queue over all trees,
keyed by the smallest margin met on the way down, ties broken by the larger node id, stopping once
``search_k`` candidates were collected), so a file gives the same neighbours and distances as in
annoy for the same ``search_k``.

``beam_query`` trades that bit-for-bit replay for speed: all queries of a chunk descend all trees
together, level by level, keeping the ``n_leaves`` most promising nodes per query (by the same
min-margin priority); the items of the reached leaves are re-ranked exactly with BLAS.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from backbeat.ann.nodes import NodeViews

_U64_MAX = (1 << 64) - 1


def hamming_bit(words: np.ndarray, bit: int) -> bool:
    """Annoy's hamming margin: bit ``bit`` counted from the most significant end of each word."""
    return bool((int(words[bit // 64]) >> (63 - bit % 64)) & 1)


# angular: a candidate whose 2 - 2 cos comes out below this is computed again (``angular_gap``;
# float32 rounding alone leaves ~1e-7, and this is a distance of ~0.03)
NEAR = 1e-3


def angular_gap(x: np.ndarray, q: np.ndarray) -> float:
    """``2 - 2 cos`` of ``x`` and ``q`` from exactly rounded sums (``math.fsum`` of the float64
    products, which float32 inputs make exact). Why: the fast formula divides a float32 dot
    product by the stored norm, summed in another order (by annoy, or by numpy), so a vector and
    itself come out ~1e-7 apart, which the square root makes a distance of ~3e-4 where annoy
    reports 0. Here an item and itself (or a positive multiple) give exactly 0."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    pp, qq, pq = math.fsum(x64 * x64), math.fsum(q64 * q64), math.fsum(x64 * q64)
    if pp <= 0.0 or qq <= 0.0:
        return 2.0
    return max(2.0 - 2.0 * pq / math.sqrt(pp * qq), 0.0)


def distances(views: NodeViews, q: np.ndarray, ids: np.ndarray, q_norm: float | None = None) -> np.ndarray:
    """Annoy's internal (un-normalised) distance from query vector ``q`` to items ``ids``."""
    metric = views.layout.metric
    x = views.v[ids]
    if metric == "angular":
        pq = x @ q
        pp = views.norm[ids]
        if not pp.all():  # files from annoy before the stored norm: compute it
            pp = np.where(pp != 0, pp, np.einsum("ij,ij->i", x, x))
        qq = np.float32(q @ q) if q_norm is None else np.float32(q_norm)
        ppqq = (pp * qq).astype(np.float32)
        root = np.sqrt(ppqq, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(ppqq > 0, 2.0 - 2.0 * pq.astype(np.float64) / root.astype(np.float64), 2.0)
        for r in np.flatnonzero(d < NEAR):  # (near) duplicates: computed again, see angular_gap
            d[r] = angular_gap(x[r], q)
        return d.astype(np.float32)
    if metric == "dot":
        return -(x @ q)
    if metric == "euclidean":
        diff = x - q
        return np.einsum("ij,ij->i", diff, diff)
    if metric == "manhattan":
        return np.abs(x - q).sum(axis=1, dtype=np.float32)
    return np.bitwise_count(x ^ q).sum(axis=1).astype(np.float64)  # hamming


def normalise(metric: str, d: np.ndarray) -> np.ndarray:
    """What annoy reports for an internal distance (``normalized_distance``)."""
    if metric in ("angular", "euclidean"):
        return np.sqrt(np.maximum(d, 0)).astype(np.float32)
    if metric == "manhattan":
        return np.maximum(d, 0).astype(np.float32)
    if metric == "dot":
        return (-d).astype(np.float32)
    return d


def exact_nns(
    views: NodeViews, roots: list[int], n_items: int, q: np.ndarray, n: int, search_k: int
) -> tuple[list[int], list[float]]:
    """Annoy's ``_get_all_nns`` for one query vector ``q`` (float32, or uint64 words for hamming)."""
    metric = views.layout.metric
    K = views.K
    nd = views.ndesc
    n_nodes = views.n_nodes
    if search_k == -1:
        search_k = n * len(roots)
    hamming = metric == "hamming"
    start = _U64_MAX if hamming else float("inf")
    heap: list[tuple[float, int]] = [(-start, -r) for r in roots]
    heapq.heapify(heap)
    nns: list[int] = []
    v = views.v
    a = views.a
    dot_v1 = views.layout.dot_layout == "v1"
    while len(nns) < search_k and heap:
        negd, negi = heapq.heappop(heap)
        d, i = -negd, -negi
        k = int(nd[i])
        if k == 1 and i < n_items:
            nns.append(i)
        elif k <= K:
            nns.extend(int(x) for x in views.leaves[i, : max(k, 0)])
        else:
            c0, c1 = (int(x) for x in views.children[i])
            if hamming:
                bit = hamming_bit(q, int(v[i, 0]))
                d1, d0 = d - (bit != 1), d - (bit != 0)
            else:
                m = float(np.float32(v[i] @ q))
                if dot_v1:  # annoy <= 1.17.3 adds the split's dot_factor squared
                    m = float(np.float32(np.float32(m) + views.dot_factor[i] * views.dot_factor[i]))
                if a is not None:
                    m = float(np.float32(a[i] + np.float32(m)))
                d1, d0 = min(d, m), min(d, -m)
            heapq.heappush(heap, (-d1, -c1))
            heapq.heappush(heap, (-d0, -c0))
    cand = np.unique(np.asarray(nns, dtype=np.int64))
    cand = cand[(cand >= 0) & (cand < n_nodes)]
    if cand.size:
        cand = cand[nd[cand] == 1]
    if not cand.size:
        return [], []
    d = distances(views, q, cand)
    p = min(n, cand.size)
    order = np.lexsort((cand, d))[:p]
    return [int(i) for i in cand[order]], [float(x) for x in normalise(metric, d[order])]


def _margins(views: NodeViews, qs: np.ndarray, rows: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    if views.layout.metric == "hamming":
        bits = views.v[nodes, 0].astype(np.int64)
        words = qs[rows, bits // 64]
        return ((words >> (63 - bits % 64).astype(np.uint64)) & np.uint64(1)).astype(np.float32)
    m = np.einsum("ij,ij->i", views.v[nodes], qs[rows])
    if views.a is not None:
        m += views.a[nodes]
    if views.layout.dot_layout == "v1":
        df = views.dot_factor[nodes]
        m += df * df
    return m


def beam_query(
    views: NodeViews,
    roots: np.ndarray,
    n_items: int,
    qs: np.ndarray,
    k: int,
    n_leaves: int,
    check_holes: bool,
    q_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (ids, normalised distances) for each row of ``qs`` (padded with -1 / inf)."""
    metric = views.layout.metric
    K = views.K
    nd = views.ndesc
    B = qs.shape[0]
    T = roots.size
    nodes = np.broadcast_to(roots, (B, T)).astype(np.int64)
    hamming = metric == "hamming"
    prio = np.full((B, T), 0.0 if hamming else np.inf, dtype=np.float32)
    width = max(int(n_leaves), T)
    while True:
        valid = nodes >= 0
        ndv = np.where(valid, nd[np.where(valid, nodes, 0)], 0)
        split = valid & (ndv > K)
        if not split.any():
            break
        rows, cols = np.nonzero(split)
        sn = nodes[rows, cols]
        m = _margins(views, qs, rows, sn)
        p = prio[rows, cols]
        ch = views.children[sn]
        n0 = nodes.copy()
        p0 = prio.copy()
        n1 = np.full_like(nodes, -1)
        p1 = np.full_like(prio, -np.inf)
        n0[rows, cols] = ch[:, 0]
        n1[rows, cols] = ch[:, 1]
        if hamming:  # priority = minus the number of bits the path disagreed with
            p0[rows, cols] = p - m
            p1[rows, cols] = p - (1 - m)
        else:
            p0[rows, cols] = np.minimum(p, -m)
            p1[rows, cols] = np.minimum(p, m)
        nodes = np.concatenate([n0, n1], axis=1)
        prio = np.concatenate([p0, p1], axis=1)
        live = int((nodes >= 0).sum(axis=1).max())
        keep = min(width, live)
        if keep < nodes.shape[1]:
            part = np.argpartition(-prio, keep - 1, axis=1)[:, :keep]
            nodes = np.take_along_axis(nodes, part, axis=1)
            prio = np.take_along_axis(prio, part, axis=1)
    out_ids = np.full((B, k), -1, dtype=np.int64)
    out_d = np.full((B, k), np.inf, dtype=np.float32)
    ar = np.arange(K)
    for b in range(B):
        row = nodes[b]
        row = row[row >= 0]
        ndr = nd[row]
        items = row[(ndr == 1) & (row < n_items)]
        leaf = row[(ndr <= K) & ~((ndr == 1) & (row < n_items))]
        lists = views.leaves[leaf]
        cand = np.concatenate([items, lists[ar < ndr[(ndr <= K) & ~((ndr == 1) & (row < n_items))][:, None]]])
        if check_holes:
            cand = cand[(cand >= 0) & (cand < n_items)]
            cand = cand[nd[cand] == 1]
        if not cand.size:
            continue
        q = qs[b]
        d = distances(views, q, cand, None if q_norms is None else q_norms[b])
        top = min(cand.size, k * max(T, 1))
        if top < cand.size:
            sel = np.argpartition(d, top - 1)[:top]
            cand, d = cand[sel], d[sel]
        order = np.lexsort((cand, d))
        cand, d = cand[order], d[order]
        _, first = np.unique(cand, return_index=True)
        first.sort()
        first = first[:k]
        out_ids[b, : first.size] = cand[first]
        out_d[b, : first.size] = normalise(metric, d[first])
    return out_ids, out_d
