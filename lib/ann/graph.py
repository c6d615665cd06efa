"""A neighbour graph stored inside an annoy-compatible ``.ann`` file, and the fast search it enables.

Why: annoy's forest finds good candidates only by collecting thousands of them; a graph of each
item's near neighbours lets a best-first search walk straight to the answer with a fraction of the
distance computations (the idea behind HNSW, NSG and DiskANN). The trees stay: they are the entry
points of the walk, and annoy itself keeps using them.

Where it lives: in records annoy never reaches (a region, ``backbeat.ann.regions``). Annoy finds
its roots by scanning back from the end of the file while ``n_descendants`` equals the item count,
and only ever visits nodes reachable from those roots; the graph region sits between the last tree
node and the copies of the roots, and ends with a header record whose ``n_descendants`` is 0, which
stops that scan exactly where it stopped before. So annoy loads a Backbeat file with a graph and
answers from its trees as usual, and one file (one download, one shared mapping) carries both.

Region layout, version 2 (``s`` = record size, words are little-endian int32, byte offsets from
the region's first byte)::

    records [g, g + m)      offsets: n_items + 1 int32 (item i's edges are ids[off[i]:off[i+1]]),
                            ids: the edges, int32; then, from byte ``c`` (64-byte aligned in the
                            file), the items' int8 codes, n_items x w (w: f, padded to 16)
    record g + m (header)   word 0: 0 (n_descendants), 1: magic "BBG1", 2: version << 16 | R,
                            3: n_items, 4: m, 5: c, 6: w, 7: the codes' scale (float32 bits)

Version 1 (still read) held an n_items x R int32 matrix (-1 = no edge) and no codes: ~18 of
R = 32 slots are used on GloVe-50, so the packed lists are ~40 % smaller, and they pay for the codes.
Why codes: a query's walk reads ~1,100 items at random; each float32 record is 4 cache lines at
f=50, its code one, so the walk ranks by the codes (the graph was built with the same distances)
and only the ``ef`` items it kept are ranked again on the float vectors: same recall per
``search_k``, 1.7-2x the queries per second on GloVe-50 (docs/ann.md).

How it is built: items are put in the leaf order of the first tree (nearby items get nearby
rows), coded as int8. (1) Each of several trees' leaf orders is cut into blocks of a few hundred
items (a subtree's items are contiguous in it, so a block is a small region of space) and all
pairs inside a block are compared at once through one BLAS Gram matrix of the codes; every item
keeps its nearest candidates over all trees. (2) Those lists hold only about half of an item's
true nearest, and a graph is only as good as its lists: a first graph is pruned from them, and
every item walks it best-first from its own list and keeps the nearest items it met. (3) Each
item keeps the edges the strict relative-neighbourhood rule allows (plus long candidates from
far along the leaf order, which link clusters), and its own and its reverse edges are chosen
again to fit the degree, as HNSW does. At recall 0.89 on GloVe-50 a query then computes ~1,110
distances, where the previous design's graph (unrefined lists, slack 1.2, all reverse edges)
needed ~1,780 and hnswlib's own bottom layer, walked by the same kernel, ~1,240 for 0.905
(docs/ann.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backbeat.ann import hugepages as hp
from backbeat.ann import regions
from backbeat.ann.errors import AnnFormatError
from backbeat.ann.layout import Layout

MAGIC = int.from_bytes(b"BBG1", "little")
VERSION = 2
HEADER_WORDS = 8  # version 2's header; version 1 wrote the first 5 words
V1_HEADER_WORDS = 5
CODE_ALIGN = 64  # a code row of w = 64 bytes is then one cache line
MIN_ITEMS = 2_000  # below this the trees alone are as fast: no graph unless asked for
GRAPH_METRICS = ("angular", "euclidean", "manhattan", "dot")
# The graph walk is seeded from the leaves of at most this many trees: seeding from all 50 trees
# of a 50-tree GloVe-50 file gave the same recall with batched queries at recall 0.90 20-50 %
# slower than seeding from 10 (the walk descends every tree it is given; 5 lost 0.001 recall).
SEED_TREES = 10


@dataclass(frozen=True)
class GraphParams:
    """Build knobs (defaults measured on GloVe-50, see docs/ann.md)."""

    degree: int = 32  # R: edges per item once the reverse edges joined (~18 used on GloVe-50)
    forward: int = 24  # edges an item picks for itself before the reverse edges join
    candidates: int = 40  # L: candidate list length (the refining walk's beam)
    block: int = 192  # items compared all-pairs per leaf block (one BLAS Gram matrix each; 256
    # measured the same graph for ~1 s more on GloVe-50, 160 a slightly worse one)
    init_trees: int = 4  # trees whose leaf orders are cut into blocks (more are grown if missing);
    # 6 cost ~1-2 s more on GloVe-50 in the benchmark (up to 5 s in single builds; this VM is noisy)
    # for ~10 % less search_k at recall 0.90: the build is the scarcer budget (docs/ann.md)
    refine: int = 1  # walks of every item over the graph so far that improve its list
    rounds: int = 0  # optional NN-descent rounds after the blocks (0: the walk measured better)
    sample: int = 8  # S: new/old neighbours joined per item and NN-descent round
    reverse_old: int = 3  # old reverse neighbours joined per item and round (<= sample)
    alpha: float = 1.2  # slack when own and reverse edges are chosen again (>1 keeps long edges)
    forward_alpha: float = 1.0  # slack of the item's own choice (1: the strict rule, as HNSW)


def supported(layout: Layout) -> bool:
    return layout.metric in GRAPH_METRICS and layout.size >= 4 * HEADER_WORDS


@dataclass(frozen=True)
class Codes:
    """The items' int8 codes in the graph's distance space (user id order, zero rows for ids never
    added) and the factor that took the vectors to them."""

    codes: np.ndarray
    scale: float


CODE_CHUNK = 16_384  # rows coded per step: the temporaries stay small and in cache


def _space_rows(x: np.ndarray, metric: str, sq_max: np.float32) -> np.ndarray:
    """Rows in the space where the graph's distances are squared euclidean (L1 for manhattan):
    unit vectors for angular, annoy's extra-coordinate transform (then unit) for dot (``sq_max``:
    the largest squared norm of all the items, not just of these rows)."""
    x = np.asarray(x, dtype=np.float32)
    if metric == "dot":
        sq = np.einsum("ij,ij->i", x, x)
        extra = np.sqrt(np.maximum(sq_max - sq, 0))[:, None]
        x = np.concatenate([x, extra.astype(np.float32)], axis=1)
    if metric in ("angular", "dot"):
        nrm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.where(nrm > 0, x / np.where(nrm > 0, nrm, 1), 0)
    return np.ascontiguousarray(x, dtype=np.float32)


def codes_of(x: np.ndarray, present: np.ndarray, metric: str) -> Codes:
    """The items' int8 codes in the graph's distance space (user id order, zero rows for ids never
    added): what ``build_graph_and_codes`` builds on and stores, and what a version 1 region, which
    kept none, gets when it is rewritten as version 2. Rows are zero-padded to a multiple of 16
    bytes (64 at f=50: one cache line a row, and the compiled distance loop runs without a scalar
    remainder); one scale takes the largest component to 127.

    Why in chunks, twice over (the largest component first, then the codes): coding all rows at
    once made five temporaries the size of the vectors, and on fresh memory their page faults cost
    more than the arithmetic (GloVe-50: 1.1 s, now 0.2 s)."""
    rows = np.flatnonzero(present)
    whole = rows.size == x.shape[0]  # no holes: chunks are plain slices, no gather
    chunks = [(a, min(a + CODE_CHUNK, rows.size)) for a in range(0, rows.size, CODE_CHUNK)]

    def chunk(a: int, b: int) -> np.ndarray:
        return x[a:b] if whole else x[rows[a:b]]

    sq_max = np.float32(0)
    if metric == "dot" and rows.size:
        sq_max = max(np.einsum("ij,ij->i", c, c).max()
                     for c in (np.asarray(chunk(a, b), np.float32) for a, b in chunks))
    cols = x.shape[1] + (metric == "dot")
    width = -(-max(cols, 1) // 16) * 16
    top = max((float(np.abs(_space_rows(chunk(a, b), metric, sq_max)).max()) for a, b in chunks), default=0.0)
    scale = float(np.float32(127.0 / top)) if top > 0 else 1.0
    codes = np.zeros((x.shape[0], width), np.int8)
    for a, b in chunks:
        coded = np.rint(_space_rows(chunk(a, b), metric, sq_max) * np.float32(scale))
        if whole:
            codes[a:b, :cols] = coded
        else:
            codes[rows[a:b], :cols] = coded
    return Codes(codes, scale)


def build_graph(x: np.ndarray, present: np.ndarray, orders: list[np.ndarray], layout: Layout,
                params: GraphParams = GraphParams(), seed: int = 1,
                progress: Callable[[str], None] | None = None, n_jobs: int = 1) -> np.ndarray:
    """The adjacency matrix alone (see ``build_graph_and_codes``)."""
    return build_graph_and_codes(x, present, orders, layout, params, seed, progress, n_jobs)[0]


def build_graph_and_codes(
    x: np.ndarray,
    present: np.ndarray,
    orders: list[np.ndarray],
    layout: Layout,
    params: GraphParams = GraphParams(),
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
    n_jobs: int = 1,
) -> tuple[np.ndarray, Codes]:
    """The adjacency matrix (n_items x degree int32, user ids, -1 = none) of the items of ``x``
    marked ``present``, and the items' codes the graph was built with (the search walks on them).
    ``orders`` are leaf orders of trees over those items (present ids, every subtree one contiguous
    run: ``build_forest(..., return_orders=True)``); the first ``params.init_trees`` of them are
    cut into blocks, and the first one also gives the row order.
    ``n_jobs`` threads share the blocks of each tree, the walks and the pruning (``-1``: one per
    CPU); the graph does not depend on ``n_jobs``."""
    from backbeat.ann import _graph_kernels as gk

    n_items = x.shape[0]
    n = int(np.count_nonzero(present))
    R, L = params.degree, max(params.candidates, params.degree)
    codes = codes_of(x, present, layout.metric)
    if n < 2:
        return np.full((n_items, R), -1, np.int32), codes
    orders = np.stack([np.asarray(o, np.int64) for o in orders[: max(1, params.init_trees)]])
    if orders.shape[1] != n:
        raise ValueError(f"leaf orders hold {orders.shape[1]} items, expected {n}")
    perm = orders[0]
    inv = np.full(n_items, -1, np.int64)
    inv[perm] = np.arange(n)
    xq = hp.empty((n, codes.codes.shape[1]), np.int8)  # rows in leaf order; every stage reads them at random
    np.take(codes.codes, perm, axis=0, out=xq)
    orders_p = np.ascontiguousarray(inv[orders])
    l1 = layout.metric == "manhattan"
    used = x.shape[1] + (layout.metric == "dot")  # _space_rows' columns, before the padding
    sq = np.zeros(n, np.int32) if l1 else _squared_norms(xq)
    ids = hp.full((n, L), -1, np.int32)
    big = np.iinfo(np.int32).max
    ds = hp.full((n, L), big, np.int32)
    worst = np.full(n, big, np.int32)
    flag = hp.full((n, L), 0, np.uint8)
    jobs = _jobs(n_jobs)
    block = max(2, min(params.block, n))
    for t, order in enumerate(orders_p):
        if progress:
            progress(f"graph: leaf blocks of tree {t + 1}/{orders_p.shape[0]}")
        shift = (t * block) // orders_p.shape[0]  # block edges move from tree to tree
        cuts = [0, *range(block - shift if shift else block, n, block), n]
        spans = [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1) if cuts[i + 1] > cuts[i]]

        def run(part: list[tuple[int, int]], order: np.ndarray = order) -> None:
            dummy = np.zeros((1, 1), np.float32)
            for a, b in part:
                mem = order[a:b]
                if l1:
                    gk.merge_block(xq, mem, dummy, sq, True, ids, ds, flag, worst)
                else:  # the block's codes as floats for BLAS: exact, the products are integers
                    rows = xq[mem, :used].astype(np.float32)
                    gk.merge_block(xq, mem, rows @ rows.T, sq, False, ids, ds, flag, worst)

        _share(run, spans, jobs)
    for r in range(params.rounds):
        if progress:
            progress(f"graph: NN-descent round {r + 1}/{params.rounds}")
        changed = gk.nn_descent_round(
            xq, ids, ds, flag, worst, params.sample, min(params.reverse_old, params.sample), l1, seed + r)
        if changed < 0.001 * n * L:
            break
    scratch = _PruneScratch(n, params)  # both prunings write here: no fresh memory the second time
    for r in range(params.refine):
        if progress:
            progress(f"graph: refining walk {r + 1}/{params.refine}")
        first = _prune_graph(gk, xq, ids, ds, params, l1, jobs, scratch, hops=False)

        def walk(part: list[tuple[int, int]], first: np.ndarray = first) -> None:
            visited = np.zeros(n, np.uint8)
            for a, b in part:
                gk.refine(xq, first, ids, ds, l1, a, b, visited)

        _share(walk, _ranges(n, jobs), jobs)
        del first
    if progress:
        progress("graph: pruning")
    adj = _prune_graph(gk, xq, ids, ds, params, l1, jobs, scratch)
    to_user = np.append(perm.astype(np.int32), np.int32(-1))  # row -> item id, and -1 (at [-1]) stays
    adj_user = np.empty((n_items, R), np.int32)
    if n < n_items:
        adj_user.fill(-1)  # ids never added have no edges
    adj_user[perm] = to_user[adj]
    return adj_user, codes


def _squared_norms(xq: np.ndarray) -> np.ndarray:
    """Each code row's squared norm (int32), a chunk at a time: no int32 copy of all the codes."""
    sq = np.empty(xq.shape[0], np.int32)
    for a in range(0, xq.shape[0], CODE_CHUNK):
        wide = xq[a: a + CODE_CHUNK].astype(np.int32)
        np.einsum("ij,ij->i", wide, wide, out=sq[a: a + CODE_CHUNK])
    return sq


class _PruneScratch:
    """The pruning's big arrays (own edges, incoming edges, the graph), made once per build.

    Why: fresh memory is not free (a page fault per page, and on virtual machines the host's own
    fault behind it); each pruning of a GloVe-50 build mapped ~130 MB anew, twice per build."""

    def __init__(self, n: int, params: GraphParams) -> None:
        forward = min(params.forward, params.degree)
        self.fwd = hp.empty((n, forward), np.int32)
        self.adj = hp.empty((n, params.degree), np.int32)
        self.start = hp.empty(n + 1, np.int64)
        self.sources = hp.empty(n * forward, np.int32)


def _prune_graph(gk: Any, xq: np.ndarray, ids: np.ndarray, ds: np.ndarray, params: GraphParams,
                 l1: bool, jobs: int, scratch: _PruneScratch, hops: bool = True) -> np.ndarray:
    """The graph of the candidate lists: each item's own edges by the relative-neighbourhood rule,
    then its own and its reverse edges chosen again to fit ``degree`` (row ids, -1 = none).
    ``hops`` offers the long leaf-order candidates too; the graph the refining walk uses does
    without them (the walk starts from each item's own list, so it needs no long edges: same
    final graph quality, measured, and ~1.2 s less on GloVe-50). The graph returned is
    ``scratch.adj``: the next pruning into the same ``scratch`` overwrites it."""
    n = ids.shape[0]
    fwd = scratch.fwd
    alpha, forward_alpha = np.float32(params.alpha), np.float32(params.forward_alpha)
    parts = _ranges(n, jobs)
    # 2**5, 2**7, ... positions away: every 16x instead cost clustered data (tests/ann/test_graph.py)
    # 4 points of recall, for ~0.5 s on GloVe-50
    hops_at = (2 ** np.arange(5, max(6, int(np.log2(max(n, 2))) + 1), 2, dtype=np.int64) if hops
               else np.zeros(0, np.int64))
    _share(lambda part: [gk.prune(xq, ids, ds, fwd.shape[1], forward_alpha, l1, hops_at, fwd, a, b)
                         for a, b in part], parts, jobs)
    start, sources, adj = scratch.start, scratch.sources, scratch.adj
    gk.incoming(fwd, start, sources)
    _share(lambda part: [gk.merge_reverse(xq, fwd, start, sources, alpha, l1, adj, a, b) for a, b in part],
           parts, jobs)
    return adj


def _ranges(n: int, jobs: int) -> list[tuple[int, int]]:
    """Row ranges for ``jobs`` threads (a few per thread: the work per row varies)."""
    step = -(-n // (4 * jobs)) if jobs > 1 else max(n, 1)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _jobs(n_jobs: int) -> int:
    """Threads for ``n_jobs`` (annoy's meaning: -1 is one per CPU)."""
    if n_jobs == -1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, cpus or 1)
    return max(1, int(n_jobs))


def _share(run: Callable[[list[tuple[int, int]]], Any], spans: list[tuple[int, int]], jobs: int) -> None:
    """``run`` over ``spans`` (disjoint row ranges), split into ``jobs`` interleaved parts run by
    threads (the compiled kernels release the GIL, and so does BLAS)."""
    if jobs <= 1 or len(spans) < 2:
        run(spans)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(jobs) as pool:
        for fut in [pool.submit(run, spans[i::jobs]) for i in range(jobs)]:
            fut.result()


def region_v1(adj: np.ndarray, layout: Layout) -> np.ndarray:
    """A version 1 region (the adjacency matrix, no codes): what Backbeat wrote before version 2;
    kept so that the reader of old files stays tested."""
    body = adj.astype("<i4").tobytes()
    return regions.records(body, layout.size, MAGIC, (1 << 16) | adj.shape[1], adj.shape[0])


def region(adj: np.ndarray, codes: Codes, layout: Layout, at: int) -> np.ndarray:
    """The graph region's records (uint8, a whole number of records, header last) for a region that
    starts at byte ``at`` of the file: each item's edges up to its first -1, packed, and the codes."""
    n_items, degree = adj.shape
    if codes.codes.shape[0] != n_items:
        raise ValueError(f"codes for {codes.codes.shape[0]} items, adjacency for {n_items}")
    keep = np.cumprod(adj >= 0, axis=1, dtype=np.int8).astype(bool)  # the search stops at a -1
    off = np.zeros(n_items + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=off[1:])
    if off[-1] >= 2**31 - n_items:
        raise ValueError(f"a graph of {int(off[-1])} edges does not fit int32 offsets")
    lists = off.astype("<i4").tobytes() + adj[keep].astype("<i4").tobytes()
    c = -(-(at + len(lists)) // CODE_ALIGN) * CODE_ALIGN - at
    body = lists + bytes(c - len(lists)) + np.ascontiguousarray(codes.codes, np.int8).tobytes()
    scale_bits = int(np.array([codes.scale], "<f4").view("<i4")[0])
    return regions.records(body, layout.size, MAGIC, (VERSION << 16) | degree, n_items, c,
                           codes.codes.shape[1], scale_bits)


def splice(buf: np.ndarray, n_roots: int, layout: Layout, adj: np.ndarray, codes: Codes) -> np.ndarray:
    """``buf`` (a built forest) with a graph region of ``adj`` and ``codes`` inserted before the
    root copies."""
    return regions.splice(buf, n_roots, layout.size, lambda at: region(adj, codes, layout, at))


def locate(
    i32: np.ndarray, layout: Layout, n_nodes: int, n_roots: int, n_items: int
) -> tuple[int, int, int] | None:
    """``(first record, records, degree)`` of the graph region, or None when the file has none.
    Raises AnnFormatError when a header is there but does not fit the file."""
    found = regions.header(i32, layout, n_nodes, n_roots, n_items, MAGIC, V1_HEADER_WORDS)
    if layout.metric not in GRAPH_METRICS or found is None:
        return None
    h, words = found
    version, degree = int(words[2]) >> 16, int(words[2]) & 0xFFFF
    g_items, m = int(words[3]), int(words[4])
    if version not in (1, VERSION) or (version == 2 and layout.size < 4 * HEADER_WORDS):
        raise AnnFormatError(
            f"graph region version {version} is not supported (this reader knows 1 and {VERSION})")
    least = n_items * degree * 4 if version == 1 else (n_items + 1) * 4
    if g_items != n_items or degree < 1 or m < 0 or h - m < n_items or m * layout.size < least:
        raise AnnFormatError(
            f"graph header at record {h} does not fit the file (items {g_items} vs {n_items}, "
            f"degree {degree}, {m} records)")
    return h - m, m, degree


def region_version(raw: np.ndarray, layout: Layout, start: int, records: int) -> int:
    """The version of the region ``locate`` found at ``(start, records)``."""
    return int(np.ndarray(3, "<i4", buffer=raw, offset=(start + records) * layout.size)[2]) >> 16


def lists(raw: np.ndarray, layout: Layout, start: int, records: int, degree: int, n_items: int,
          f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Zero-copy views of the region: ``(offsets, ids, codes, scale)``, checked once (offsets in
    order and within the region, every id an item, the codes inside the region). A version 1
    region gives its matrix as lists of ``degree`` (the search stops at a -1) and no codes
    (n_items x 0: the search ranks by the float vectors)."""
    s = layout.size
    at, end = start * s, (start + records) * s
    words = np.ndarray(HEADER_WORDS, "<i4", buffer=raw, offset=end) if s >= 4 * HEADER_WORDS else None
    if words is None or int(words[2]) >> 16 == 1:
        ids = _checked_ids(np.ndarray(n_items * degree, "<i4", buffer=raw, offset=at), -1, n_items, start)
        if ids.size >= 2**31:
            raise AnnFormatError(f"graph region at record {start} is too large for this reader")
        off = np.arange(0, (n_items + 1) * degree, degree, dtype=np.int32)
        return off, ids, np.zeros((n_items, 0), np.int8), 1.0
    c, w = int(words[5]), int(words[6])
    scale = float(words[7:8].view("<f4")[0])
    off = np.ndarray(n_items + 1, "<i4", buffer=raw, offset=at)
    total = int(off[-1])
    steps = np.diff(off)
    lists_ok = (int(off[0]) == 0 and 0 <= total and (n_items + 1 + total) * 4 <= c
                and (not steps.size or (int(steps.min()) >= 0 and int(steps.max()) <= degree)))
    codes_ok = f <= w <= 65536 and c + n_items * w <= end - at and np.isfinite(scale) and scale > 0
    if not (lists_ok and codes_ok):
        raise AnnFormatError(f"graph region at record {start} does not hold its lists and codes where "
                             "its header says: corrupt file")
    ids = _checked_ids(np.ndarray(total, "<i4", buffer=raw, offset=at + (n_items + 1) * 4), 0, n_items, start)
    codes = np.ndarray((n_items, w), np.int8, buffer=raw, offset=at + c)
    return off, ids, codes, scale


def _checked_ids(ids: np.ndarray, lowest: int, n_items: int, start: int) -> np.ndarray:
    """``ids`` (edges of the region at record ``start``) once every one is an item or ``lowest``
    (-1, "no edge", in a version 1 matrix)."""
    if ids.size and (int(ids.min()) < lowest or int(ids.max()) >= n_items):
        raise AnnFormatError(
            f"graph region at record {start} holds ids outside 0..{n_items - 1}: corrupt file")
    return ids


def search_params(layout: Layout, n_items: int, metric: str, degree: int) -> np.ndarray:
    """The fixed part of the search kernel's ``params`` (the per-call slots are filled in later)."""
    return np.array([
        layout.size // 4, layout.off_children // 4, layout.off_v // 4,
        layout.off_a // 4 if layout.off_a is not None else -1,
        layout.off_norm // 4 if layout.off_norm is not None else -1,
        layout.K, n_items, {"angular": 0, "euclidean": 1, "manhattan": 2, "dot": 3}[metric], layout.f,
        0, 0, 1, 0,
        layout.off_dot_factor // 4 if layout.off_dot_factor is not None else -1,
        layout.dot_layout == "v1", degree,
    ], dtype=np.int64)


def ef_for(search_k: int, k: int, n_trees: int) -> int:
    """Beam width for annoy's ``search_k`` knob: about ``search_k`` distance computations."""
    if search_k < 0:
        search_k = k * max(n_trees, 1)
    return max(k, search_k // 10)


def seeds_for(ef: int, leaf: int) -> int:
    """Leaf items the tree walk gathers before the graph walk: a few leaves, more for wide beams."""
    return max(leaf, ef // 2)
