"""Building a forest in Annoy's ``.ann`` layout with vectorised numpy.

Trees are grown level by level: every node of a level is split at once. A split is a short
two-means on a sample of the node's items (the same heuristic as annoy's, run on a sample and
vectorised over all nodes of the level), the sides of all items come from one gathered dot
product, and items are partitioned in place with prefix sums. Nodes with at most ``K`` items
become leaves holding their id list; a single item is referenced directly, as annoy does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backbeat.ann.layout import Layout


def _compiled_kernels() -> Any:
    try:
        from backbeat.ann import _kernels
    except ImportError:  # numba missing: pure numpy
        return None
    return _kernels


SAMPLE = 128
ITERATIONS = 8


@dataclass
class _Tree:
    # split nodes
    s_tmp: list[np.ndarray] = field(default_factory=list)
    s_ndesc: list[np.ndarray] = field(default_factory=list)
    s_refs: list[np.ndarray] = field(default_factory=list)
    s_w: list[np.ndarray] = field(default_factory=list)
    s_a: list[np.ndarray] = field(default_factory=list)
    # leaves
    l_tmp: list[np.ndarray] = field(default_factory=list)
    l_ndesc: list[np.ndarray] = field(default_factory=list)
    l_start: list[np.ndarray] = field(default_factory=list)
    l_len: list[np.ndarray] = field(default_factory=list)
    n_tmp: int = 0


def _bits(words: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Annoy's hamming side: bit ``b`` counted from the most significant end of word ``b // 64``."""
    w = np.take_along_axis(words, (bits // 64)[:, None], axis=1)[:, 0]
    return ((w >> (63 - bits % 64).astype(np.uint64)) & np.uint64(1)).astype(bool)


def _planes(xw: np.ndarray, order: np.ndarray, starts: np.ndarray, lens: np.ndarray, cosine: bool,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two-means hyperplanes (normal, offset) for the segments, all at once."""
    ns = starts.size
    i0 = rng.integers(0, lens)
    i1 = (i0 + 1 + rng.integers(0, lens - 1)) % lens
    rest = (rng.random((ns, SAMPLE - 2)) * lens[:, None]).astype(np.int64)
    idx = np.concatenate([i0[:, None], i1[:, None], rest], axis=1) + starts[:, None]
    p = xw[order[idx]]  # (ns, S, f)
    c0, c1 = p[:, 0].copy(), p[:, 1].copy()
    for _ in range(ITERATIONS):
        d0 = np.einsum("nsf,nsf->ns", p - c0[:, None], p - c0[:, None])
        d1 = np.einsum("nsf,nsf->ns", p - c1[:, None], p - c1[:, None])
        near0 = (d0 <= d1)[:, :, None]
        n0 = near0.sum(axis=1)
        n1 = SAMPLE - n0
        c0 = np.where(n0 > 0, (p * near0).sum(axis=1) / np.maximum(n0, 1), c0)
        c1 = np.where(n1 > 0, (p * ~near0).sum(axis=1) / np.maximum(n1, 1), c1)
        if cosine:
            c0 /= np.maximum(np.linalg.norm(c0, axis=1, keepdims=True), 1e-30)
            c1 /= np.maximum(np.linalg.norm(c1, axis=1, keepdims=True), 1e-30)
    w = c1 - c0  # positive margin: nearer c1
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    w = np.where(norm > 0, w / np.where(norm > 0, norm, 1), 0).astype(np.float32)
    a = np.zeros(ns, np.float32) if cosine else (-np.einsum("nf,nf->n", w, (c0 + c1) / 2)).astype(np.float32)
    return w, a


def _hamming_planes(xw: np.ndarray, order: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                    seg_of_pos: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bit that splits each segment (annoy: 20 random tries, then every bit in turn)."""
    ns = starts.size
    nbits = xw.shape[1] * 64
    chosen = np.zeros(ns, np.int64)
    done = np.zeros(ns, bool)
    items = order[pos]

    def attempt(cand: np.ndarray) -> None:
        vals = _bits(xw[items], cand[seg_of_pos])
        ones = np.bincount(seg_of_pos, weights=vals, minlength=ns)
        ok = (ones > 0) & (ones < lens) & ~done
        chosen[ok] = cand[ok]
        done[ok] = True

    for _ in range(20):
        attempt(rng.integers(0, nbits, ns))
        if done.all():
            return chosen
    for b in range(nbits):
        attempt(np.full(ns, b, np.int64))
        if done.all():
            break
    return chosen


def _grow(xw: np.ndarray, pts: np.ndarray, n_items: int, layout: Layout, rng: np.random.Generator,
          kernels: Any = None) -> tuple[_Tree, np.ndarray]:
    """One tree over the present items; returns its records (temporary ids) and item order."""
    K = layout.K
    N = pts.size
    metric = layout.metric
    cosine = metric in ("angular", "dot")
    hamming = layout.metric == "hamming"
    tree = _Tree()
    order = np.arange(N, dtype=np.int64)
    tree.n_tmp = 1  # the root is temporary node 0
    if N <= K and (n_items <= K or N == 1) or N <= 1:
        tree.l_tmp.append(np.array([0]))
        tree.l_ndesc.append(np.array([n_items]))
        tree.l_start.append(np.array([0]))
        tree.l_len.append(np.array([N]))
        return tree, order
    starts = np.array([0], np.int64)
    lens = np.array([N], np.int64)
    tmps = np.array([0], np.int64)
    ndesc = np.array([n_items], np.int64)
    while starts.size:
        ns = starts.size
        if kernels is None or hamming:
            seg_of_pos = np.repeat(np.arange(ns), lens)
            first = np.cumsum(lens) - lens
            pos = np.arange(seg_of_pos.size) - first[seg_of_pos] + starts[seg_of_pos]
            items = order[pos]
        if hamming:
            bit = _hamming_planes(xw, order, starts, lens, seg_of_pos, pos, rng)
            side = _bits(xw[items], bit[seg_of_pos])
            w = bit[:, None].astype(np.float64)
            a = np.zeros(ns, np.float32)
        else:
            if kernels is not None:
                w = np.empty((ns, xw.shape[1]), np.float32)
                a = np.empty(ns, np.float32)
                kernels.planes(xw, order, starts, lens, cosine, SAMPLE, ITERATIONS, w, a)
            else:
                w, a = _planes(xw, order, starts, lens, cosine, rng)
            if metric == "dot":  # queries carry no dot_factor: keep the plane in the item space
                w[:, -1] = 0
            if kernels is not None:
                zeros = np.empty(ns, np.int64)
                kernels.split_level(xw, order, starts, lens, w, a, zeros)
                ones = lens - zeros
                side = None
            else:
                m = np.einsum("ij,ij->i", xw[items], w[seg_of_pos]) + a[seg_of_pos]
                side = m > 0
                tie = m == 0
                if tie.any():
                    side[tie] = rng.random(int(tie.sum())) < 0.5
        if side is not None:
            ones = np.bincount(seg_of_pos, weights=side, minlength=ns).astype(np.int64)
            bad = np.maximum(ones, lens - ones) > 0.99 * lens
            while bad.any():  # no usable plane (duplicates): split at random, like annoy
                if not hamming:
                    w[bad] = 0
                    a[bad] = 0
                at = bad[seg_of_pos]
                side[at] = rng.random(int(at.sum())) < 0.5
                ones = np.bincount(seg_of_pos, weights=side, minlength=ns).astype(np.int64)
                bad = np.maximum(ones, lens - ones) > 0.99 * lens
            zeros = lens - ones
            excl = np.cumsum(side) - side
            rank1 = excl - excl[first][seg_of_pos]
            rank0 = (pos - starts[seg_of_pos]) - rank1
            newpos = starts[seg_of_pos] + np.where(side, zeros[seg_of_pos] + rank1, rank0)
            order[newpos] = items
        # children: (start, len) for side 0 and side 1
        cstart = np.stack([starts, starts + zeros], axis=1).ravel()
        clen = np.stack([zeros, ones], axis=1).ravel()
        single = clen == 1
        refs = np.empty(clen.size, np.int64)
        refs[single] = pts[order[cstart[single]]]
        multi = ~single
        nm = int(multi.sum())
        ctmp = np.arange(tree.n_tmp, tree.n_tmp + nm)
        tree.n_tmp += nm
        refs[multi] = -(ctmp + 1)
        tree.s_tmp.append(tmps)
        tree.s_ndesc.append(ndesc)
        tree.s_refs.append(refs.reshape(ns, 2))
        tree.s_w.append(w)
        tree.s_a.append(a)
        mstart, mlen = cstart[multi], clen[multi]
        leaf = mlen <= K
        tree.l_tmp.append(ctmp[leaf])
        tree.l_ndesc.append(mlen[leaf])
        tree.l_start.append(mstart[leaf])
        tree.l_len.append(mlen[leaf])
        starts, lens, tmps, ndesc = mstart[~leaf], mlen[~leaf], ctmp[~leaf], mlen[~leaf]
    return tree, order


def build_forest(
    x: np.ndarray,
    present: np.ndarray,
    layout: Layout,
    n_trees: int,
    seed: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The bytes of an ``.ann`` file (as a uint8 array) for items ``x[present]``.

    ``x`` holds one row per id (float32, or uint64 words for hamming); ``present`` marks the ids
    that were added (the others are written as holes, as annoy does)."""
    rng = np.random.default_rng(seed)
    kernels = _compiled_kernels() if layout.metric != "hamming" else None
    if kernels is not None:
        kernels.seed(int(rng.integers(0, 2**31)))
    n_items = x.shape[0]
    pts = np.flatnonzero(present).astype(np.int64)
    f = layout.f
    metric = layout.metric
    dot_factor = None
    if metric == "angular":
        xw = x[pts].astype(np.float32)
        nrm = np.linalg.norm(xw, axis=1, keepdims=True)
        xw = np.where(nrm > 0, xw / np.where(nrm > 0, nrm, 1), 0).astype(np.float32)
    elif metric == "dot":
        sq = np.einsum("ij,ij->i", x, x)
        max_sq = float(sq[pts].max()) if pts.size else 0.0
        dot_factor = np.sqrt(np.maximum(max_sq - sq, 0)).astype(np.float32)
        xw = np.concatenate([x[pts], dot_factor[pts, None]], axis=1).astype(np.float32)
        nrm = np.linalg.norm(xw, axis=1, keepdims=True)
        xw = np.where(nrm > 0, xw / np.where(nrm > 0, nrm, 1), 0).astype(np.float32)
    elif metric == "hamming":
        xw = x[pts]
    else:
        xw = x[pts].astype(np.float32)

    trees: list[tuple[_Tree, np.ndarray]] = []
    total = n_items
    t = 0
    while (n_trees == -1 and total < 2 * n_items) or (n_trees != -1 and t < n_trees):
        tree, order = _grow(xw, pts, n_items, layout, rng, kernels)
        trees.append((tree, order))
        total += tree.n_tmp
        t += 1
        if progress:
            progress(t, n_trees)

    n_nodes = total + len(trees)
    s = layout.size
    buf = np.zeros(n_nodes * s, np.uint8)
    rec = buf.reshape(n_nodes, s)
    i32 = buf.view("<i4").reshape(n_nodes, s // 4)
    f32 = buf.view("<f4").reshape(n_nodes, s // 4)
    ch = layout.off_children // 4
    vo = layout.off_v // 4
    # items
    i32[pts, 0] = 1
    if metric == "hamming":
        u64 = buf.view("<u8").reshape(n_nodes, s // 8)
        u64[pts, 2:2 + layout.words] = x[pts]
    else:
        f32[pts, vo:vo + f] = x[pts]
    if metric == "angular":
        f32[pts, 1] = np.einsum("ij,ij->i", x[pts], x[pts])
    if metric == "dot":
        f32[pts, 3] = dot_factor[pts]
        if layout.dot_layout == "v2":
            f32[pts, 4] = max_sq
            rec[pts, layout.off_built] = 1
    # trees
    base = n_items
    roots = []
    for tree, order in trees:
        # final ids: non-root temporary nodes first, the root (temporary 0) last
        final = np.empty(tree.n_tmp, np.int64)
        final[1:] = base + np.arange(tree.n_tmp - 1)
        final[0] = base + tree.n_tmp - 1
        base += tree.n_tmp
        roots.append(int(final[0]))
        if tree.s_tmp:
            stmp = np.concatenate(tree.s_tmp)
            ids = final[stmp]
            refs = np.concatenate(tree.s_refs)
            refs = np.where(refs >= 0, refs, final[np.maximum(-refs - 1, 0)])
            i32[ids, 0] = np.concatenate(tree.s_ndesc)
            i32[ids, ch] = refs[:, 0]
            i32[ids, ch + 1] = refs[:, 1]
            w = np.concatenate(tree.s_w)
            if metric == "hamming":
                u64[ids, 2] = w[:, 0].astype(np.uint64)
            else:
                f32[ids, vo:vo + f] = w[:, :f]
                if metric == "dot":
                    f32[ids, 3] = w[:, f]
                if layout.off_a is not None:
                    f32[ids, 1] = np.concatenate(tree.s_a)
        ltmp = np.concatenate(tree.l_tmp)
        if ltmp.size:
            lids = final[ltmp]
            i32[lids, 0] = np.concatenate(tree.l_ndesc)
            lstart = np.concatenate(tree.l_start)
            llen = np.concatenate(tree.l_len)
            rows = np.repeat(lids, llen)
            firstl = np.cumsum(llen) - llen
            rank = np.arange(rows.size) - np.repeat(firstl, llen)
            i32[rows, ch + rank] = pts[order[np.repeat(lstart, llen) + rank]]
    for j, r in enumerate(roots):
        rec[total + j] = rec[r]
    return buf
