"""Building a forest in Annoy's ``.ann`` layout.

Each tree is grown by one compiled depth-first pass (``_kernels.grow``) over a working copy of
the rows. Large segments are partitioned by moving the rows themselves, so a split streams
through memory sequentially; a segment that fits in cache (``BLOCK`` rows) is finished by
partitioning row numbers only. The splits are annoy's in spirit, cheaper: the normal comes from a
few two-means rounds on a small sample, the cut goes where annoy's would (midway between the two
centres) but leaves at least ``BALANCE`` of the rows on each side (bounded depth), and on the last
levels it moves to a count that keeps the leaves full (fewer nodes: a smaller file than annoy's).
Angular and dot nodes have no offset: their plane is tilted towards the segment's centre to cut
where wanted. Annoy's search, and annoy itself, read these files like any other.

The working copy keeps the previous tree's order, and every tree's leaf order is available
(``return_orders``): a subtree's items are one contiguous range of it, so contiguous chunks are
spatially close items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import numpy as np

from backbeat.ann import hugepages as hp
from backbeat.ann.layout import Layout

QUANTILE_SAMPLE = 256  # rows sampled for the cut of a segment larger than BLOCK
BLOCK = 4096  # segments up to this many rows (in cache) are finished without moving rows, exact cuts
TWO_MEANS_SAMPLE = 64  # rows of the two-means sample for a split's normal
TWO_MEANS_ROUNDS = 4
TWO_MEANS_MIN = 0  # smaller segments take the difference of two random rows as normal
BALANCE = 0.2  # a cut leaves at least this share of a segment's rows on either side


def _working_rows(x: np.ndarray, pts: np.ndarray, layout: Layout) -> tuple[np.ndarray, Any]:
    """The rows the splits see and dot's extra component ``(factor per id, max squared norm)``.

    Float rows are float32, normalised for angular and dot (dot: including annoy's extra component,
    which a plane never uses since queries lack it, so it is left out). They are zero-padded to a
    multiple of 32 columns: the compiled dot products then run without a scalar remainder loop
    (about 1.6x faster at f = 50)."""
    metric = layout.metric
    if metric == "hamming":
        return np.ascontiguousarray(x[pts], dtype=np.uint64), None
    f = x.shape[1]
    width = f if f <= 16 or f % 32 == 0 else -(-f // 32) * 32
    # huge pages: the splits of small segments jump between rows (~10 % faster on GloVe-50)
    rows = hp.full((pts.size, width), 0, np.float32) if width != f else hp.empty((pts.size, f), np.float32)
    view = rows[:, :f]
    view[...] = x if pts.size == x.shape[0] else x[pts]
    dot_factor = None
    if metric in ("angular", "dot"):
        sq = np.einsum("ij,ij->i", view, view)
        if metric == "dot":  # annoy's reduction of inner product to angular: one extra component
            sq_all = np.einsum("ij,ij->i", x, x)
            max_sq = float(sq_all[pts].max()) if pts.size else 0.0
            factor = np.sqrt(np.maximum(max_sq - sq_all, 0)).astype(np.float32)
            dot_factor = (factor, max_sq)
            sq = sq + factor[pts] ** 2
        nrm = np.sqrt(sq)
        view *= np.divide(1, nrm, out=np.zeros_like(nrm), where=nrm > 0)[:, None]
    return rows, dot_factor


@overload
def build_forest(x: np.ndarray, present: np.ndarray, layout: Layout, n_trees: int, seed: int | None,
                 progress: Callable[[int, int], None] | None = ..., *,
                 return_orders: Literal[False] = ...) -> np.ndarray: ...


@overload
def build_forest(x: np.ndarray, present: np.ndarray, layout: Layout, n_trees: int, seed: int | None,
                 progress: Callable[[int, int], None] | None = ..., *,
                 return_orders: Literal[True]) -> tuple[np.ndarray, list[np.ndarray]]: ...


def build_forest(
    x: np.ndarray,
    present: np.ndarray,
    layout: Layout,
    n_trees: int,
    seed: int | None,
    progress: Callable[[int, int], None] | None = None,
    *,
    return_orders: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """The bytes of an ``.ann`` file (as a uint8 array) for items ``x[present]``.

    ``x`` holds one row per id (float32, or uint64 words for hamming); ``present`` marks the ids
    that were added (the others are written as holes, as annoy does). ``n_trees == -1`` grows trees
    until they hold as many nodes as there are ids, as annoy does. The same ``seed`` and items give
    the same bytes. With ``return_orders`` also returns, per tree, the item ids (int64) in leaf
    order: the items of every subtree are one contiguous range of it."""
    from backbeat.ann import _kernels

    n_items = x.shape[0]
    pts = np.flatnonzero(present).astype(np.int64)
    trees, dot_factor = _grow(x, pts, layout, n_trees, seed, progress)
    total = n_items + sum(t[0].shape[0] for t in trees)
    hamming = layout.metric == "hamming"
    n_nodes = total + len(trees)
    s = layout.size
    buf = np.zeros(n_nodes * s, np.uint8)
    _write_items(buf, x, pts, layout, dot_factor)
    i32 = buf.view("<i4").reshape(n_nodes, s // 4)
    f32 = buf.view("<f4").reshape(n_nodes, s // 4)
    rec = buf.reshape(n_nodes, s)
    base = n_items
    roots = []
    for nodes, planes, offs, order in trees:
        ao = layout.off_a // 4 if layout.off_a is not None else -1
        _kernels.write_tree(i32, f32, base, nodes, planes, offs, order, layout.off_children // 4,
                            layout.off_v // 4, ao, layout.f, hamming)
        base += nodes.shape[0]
        roots.append(base - 1)
    rec[total:] = rec[roots]
    if return_orders:
        return buf, [t[3] for t in trees]
    return buf


def leaf_orders(x: np.ndarray, present: np.ndarray, layout: Layout, n_trees: int, seed: int | None
                ) -> list[np.ndarray]:
    """The leaf orders of ``n_trees`` more trees that are not written to the file: the graph build
    cuts more trees into blocks than a small forest has."""
    pts = np.flatnonzero(present).astype(np.int64)
    return [t[3] for t in _grow(x, pts, layout, n_trees, seed, None)[0]]


def _grow(x: np.ndarray, pts: np.ndarray, layout: Layout, n_trees: int, seed: int | None,
          progress: Callable[[int, int], None] | None
          ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], Any]:
    """Grow the trees (per tree its nodes, planes, offsets and leaf order as ids), and dot's extra
    component (see ``_working_rows``)."""
    from backbeat.ann import _kernels

    rng = np.random.default_rng(seed)
    _kernels.seed(int(rng.integers(0, 2**31)))
    n_items = x.shape[0]
    metric = layout.metric
    hamming = metric == "hamming"
    rows, dot_factor = _working_rows(x, pts, layout)
    xs = rows if not hamming else np.zeros((0, 1), np.float32)
    xb = rows if hamming else np.zeros((0, 1), np.uint64)
    ids = np.arange(pts.size, dtype=np.int64)
    trees: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    total = n_items
    while (n_trees == -1 and total < 2 * n_items) or (n_trees != -1 and len(trees) < n_trees):
        nodes, planes, offs, order = _kernels.grow(
            xs, xb, ids, layout.K, n_items, hamming, layout.f, metric in ("angular", "dot"), BALANCE,
            QUANTILE_SAMPLE, BLOCK, TWO_MEANS_SAMPLE, TWO_MEANS_ROUNDS, TWO_MEANS_MIN)
        trees.append((nodes, planes, offs, pts[order]))
        total += nodes.shape[0]
        if progress:
            progress(len(trees), n_trees)
    return trees, dot_factor


def _write_items(buf: np.ndarray, x: np.ndarray, pts: np.ndarray, layout: Layout, dot_factor: Any) -> None:
    """Item records (``n_descendants`` 1, the vector, and the metric's extra fields)."""
    s = layout.size
    n = buf.size // s
    f = layout.f
    i32 = buf.view("<i4").reshape(n, s // 4)
    f32 = buf.view("<f4").reshape(n, s // 4)
    vo = layout.off_v // 4
    every = pts.size == x.shape[0]
    at = slice(0, pts.size) if every else pts
    xp = x if every else x[pts]
    i32[at, 0] = 1
    if layout.metric == "hamming":
        buf.view("<u8").reshape(n, s // 8)[at, 2:2 + layout.words] = xp
        return
    f32[at, vo:vo + f] = xp
    if layout.metric == "angular":
        f32[at, 1] = np.einsum("ij,ij->i", xp, xp)
    if layout.metric == "dot":
        factor, max_sq = dot_factor
        f32[at, 3] = factor[pts]
        if layout.dot_layout == "v2":
            f32[at, 4] = max_sq
            buf.reshape(n, s)[at, layout.off_built] = 1
