"""Compiled (numba) kernels of the neighbour graph: building it over int8 codes (leaf-block lists,
refining walks, pruning) and searching it (best-first beam search over the mapped ``.ann`` records).

Why int8 codes for the build: the graph only needs approximately right neighbours, and 1 byte per
component keeps the whole working set of a 400,000 x 50 index (20 MB) in the last-level cache,
where the float32 rows (80 MB) would not fit: the build is bound by memory latency, not arithmetic.
The search ranks with the exact float32 vectors of the file, so results are exact distances.

Metric codes of the search: 0 angular, 1 euclidean, 2 manhattan, 3 dot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backbeat.ann._prefetch import prefetch as _prefetch
from backbeat.ann._rows import NEAR
from backbeat.ann._rows import angular_gap as _angular_gap
from backbeat.ann._rows import finite as _finite
from backbeat.ann._rows import margin as _margin
from backbeat.ann._rows import next_stamp as _next_stamp
from backbeat.ann._rows import pad as _pad
from backbeat.ann._select import kth


# --------------------------------------------------------------------------------------- building
@njit(cache=True, nogil=True, inline="always")
def _dist(xq, a, b, l1):  # pragma: no cover - compiled
    """Squared euclidean (L1 for manhattan) distance of two int8 code rows. Every step is cast
    back to int32 (numba widens int32 arithmetic to int64), so the loop compiles to 16-bit
    multiply-adds (``vpmaddwd``) instead of 64-bit lanes: ~30 % faster. Exact: at most
    64 x 254^2 per row."""
    ra = xq[a]
    rb = xq[b]
    s = np.int32(0)
    if l1:
        for j in range(xq.shape[1]):
            s = np.int32(s + np.int32(abs(np.int32(np.int32(ra[j]) - np.int32(rb[j])))))
    else:
        for j in range(xq.shape[1]):
            t = np.int32(np.int32(ra[j]) - np.int32(rb[j]))
            s = np.int32(s + np.int32(t * t))
    return s


@njit(cache=True, nogil=True, inline="always")
def _insert(ids, ds, flag, worst, i, j, d):  # pragma: no cover - compiled
    """Insert neighbour ``j`` at distance ``d`` in the sorted list of ``i`` (1 if it went in).
    Distances are exact integers, so ``j`` can already be listed only among the entries of equal
    distance: the duplicate check looks at those, not at the whole list."""
    if d >= worst[i]:
        return 0
    L = ids.shape[1]
    pos = L - 1
    while pos > 0 and ds[i, pos - 1] > d:
        pos -= 1
    t = pos - 1
    while t >= 0 and ds[i, t] == d:
        if ids[i, t] == j:
            return 0
        t -= 1
    for t in range(L - 1, pos, -1):
        ds[i, t] = ds[i, t - 1]
        ids[i, t] = ids[i, t - 1]
        flag[i, t] = flag[i, t - 1]
    ds[i, pos] = d
    ids[i, pos] = j
    flag[i, pos] = 1
    worst[i] = ds[i, L - 1]
    return 1


@njit(cache=True, nogil=True)
def merge_block(xq, mem, g, sq, l1, ids, ds, flag, worst):  # pragma: no cover - compiled
    """Offer every item of one leaf block (``mem``: rows of the items, in one tree's leaf order)
    all the others as neighbours. ``g`` is the block's Gram matrix of the int8 codes (computed by
    BLAS, exact: the products are small integers) and ``sq`` the codes' squared norms, so the
    squared distance is ``sq[u] + sq[v] - 2 g``; for manhattan (``l1``) the codes are compared
    directly. Per item, only the candidates nearer than its current worst are kept, the best
    ``L`` of them are sorted and merged into its list (a block writes only its own items' rows:
    blocks of one tree can run in parallel)."""
    m = mem.shape[0]
    L = ids.shape[1]
    big = np.iinfo(np.int32).max
    keys = np.empty(m, np.int64)
    nb = np.empty(m, np.float32)  # float32 holds these integers exactly (codes are small)
    for r in range(m):
        nb[r] = sq[mem[r]]
    dr = np.empty(m, np.float32)
    nd = np.empty(L, np.int32)
    ni = np.empty(L, np.int32)
    nf = np.empty(L, np.uint8)
    for p in range(m):
        u = mem[p]
        if l1:
            for r in range(m):
                dr[r] = _dist(xq, u, mem[r], True)
        else:  # branch-free, so it vectorises; then count before collecting anything
            gp = g[p]
            for r in range(m):
                dr[r] = nb[p] + nb[r] - np.float32(2.0) * gp[r]
        dr[p] = np.inf
        w = np.float32(worst[u])
        c = 0
        for r in range(m):
            c += dr[r] < w
        if c == 0:
            continue
        c = 0
        for r in range(m):
            if dr[r] < w:
                keys[c] = (np.int64(dr[r]) << 32) | mem[r]
                c += 1
        if c > L:
            kth(keys, c, L - 1)  # the L smallest first
            c = L
        ks = keys[:c]
        for t in range(1, c):  # insertion sort: c <= L (40) keys, ~2x faster here than .sort()
            v = ks[t]
            s = t - 1
            while s >= 0 and ks[s] > v:
                ks[s + 1] = ks[s]
                s -= 1
            ks[s + 1] = v
        if ds[u, 0] == big:  # the item's first block: its list is empty, nothing to merge
            for t in range(c):
                ds[u, t] = np.int32(ks[t] >> 32)
                ids[u, t] = np.int32(ks[t] & 0xFFFFFFFF)
                flag[u, t] = 1
            worst[u] = ds[u, L - 1]
            continue
        a = 0
        b = 0
        o = 0
        while o < L:
            da = ds[u, a] if a < L else big
            db = np.int32(ks[b] >> 32) if b < c else big
            if da == big and db == big:
                break
            if da <= db:
                nd[o] = da
                ni[o] = ids[u, a]
                nf[o] = flag[u, a]
                a += 1
                o += 1
                continue
            v = np.int32(ks[b] & 0xFFFFFFFF)
            b += 1
            dup = False  # equal ids have equal distances: look only among the equal ones
            t = o - 1
            while t >= 0 and nd[t] == db and not dup:
                dup = ni[t] == v
                t -= 1
            t = a
            while t < L and ds[u, t] == db and not dup:
                dup = ids[u, t] == v
                t += 1
            if not dup:
                nd[o] = db
                ni[o] = v
                nf[o] = 1
                o += 1
        for t in range(o):
            ds[u, t] = nd[t]
            ids[u, t] = ni[t]
            flag[u, t] = nf[t]
        for t in range(o, L):
            ds[u, t] = big
            ids[u, t] = -1
            flag[u, t] = 0
        worst[u] = ds[u, L - 1]


@njit(cache=True, nogil=True)
def nn_descent_round(xq, ids, ds, flag, worst, S, rev_old, l1, seed):  # pragma: no cover - compiled
    """One NN-descent round: every item introduces its new neighbours (and the items that newly
    list it) to each other and to its old ones. Returns how many lists changed."""
    np.random.seed(seed)
    n, L = ids.shape
    newl = np.full((n, S), -1, np.int32)
    oldl = np.full((n, S), -1, np.int32)
    nn = np.zeros(n, np.int32)
    no = np.zeros(n, np.int32)
    rnew = np.full((n, S), -1, np.int32)
    rold = np.full((n, S), -1, np.int32)
    nrn = np.zeros(n, np.int32)
    nro = np.zeros(n, np.int32)
    for i in range(n):
        for t in range(L):
            u = ids[i, t]
            if u < 0:
                break
            if flag[i, t] == 1:
                if nn[i] < S:
                    newl[i, nn[i]] = u
                    nn[i] += 1
                    flag[i, t] = 0
                    c = nrn[u]
                    if c < S:
                        rnew[u, c] = i
                    else:
                        r = np.random.randint(0, c + 1)
                        if r < S:
                            rnew[u, r] = i
                    nrn[u] = c + 1
            elif no[i] < S:
                oldl[i, no[i]] = u
                no[i] += 1
                c = nro[u]
                if c < S:
                    rold[u, c] = i
                else:
                    r = np.random.randint(0, c + 1)
                    if r < S:
                        rold[u, r] = i
                nro[u] = c + 1
    changed = 0
    w = xq.shape[1]
    xq_flat = xq.reshape(n * w)
    ds_flat = ds.reshape(n * L)
    nb = np.empty(2 * S, np.int32)
    ob = np.empty(2 * S, np.int32)
    for i in range(n):
        a = 0
        for t in range(nn[i]):
            nb[a] = newl[i, t]
            a += 1
        for t in range(min(nrn[i], S)):
            nb[a] = rnew[i, t]
            a += 1
        b = 0
        for t in range(no[i]):
            ob[b] = oldl[i, t]
            b += 1
        for t in range(min(nro[i], rev_old)):
            ob[b] = rold[i, t]
            b += 1
        for t in range(a):  # every row and list head the joins below touch, requested at once
            _prefetch(xq_flat, nb[t] * w)
            _prefetch(worst, nb[t])
            _prefetch(ds_flat, nb[t] * L)
        for t in range(b):
            _prefetch(xq_flat, ob[t] * w)
            _prefetch(worst, ob[t])
        for p in range(a):
            u = nb[p]
            for r in range(p + 1, a):
                v = nb[r]
                if u != v:
                    d = _dist(xq, u, v, l1)
                    changed += _insert(ids, ds, flag, worst, u, v, d)
                    changed += _insert(ids, ds, flag, worst, v, u, d)
            for r in range(b):
                v = ob[r]
                if u != v:
                    d = _dist(xq, u, v, l1)
                    changed += _insert(ids, ds, flag, worst, u, v, d)
                    changed += _insert(ids, ds, flag, worst, v, u, d)
    return changed


@njit(cache=True, nogil=True, inline="always")
def _select(xq, cand, cd, m, R, alpha, l1, out):  # pragma: no cover - compiled
    """The relative-neighbourhood rule over ``m`` candidates sorted nearest first: keep ``u`` unless
    some kept ``w`` has ``alpha * d(u, w) < d(i, u)`` (``w`` already leads the walk towards ``u``),
    at most ``R``. Returns how many went into ``out``."""
    c = 0
    for p in range(m):
        u = cand[p]
        du = cd[p]
        keep = True
        for t in range(c):
            if alpha * _dist(xq, u, out[t], l1) < du:
                keep = False
                break
        if keep:
            out[c] = u
            c += 1
            if c == R:
                break
    return c


@njit(cache=True, nogil=True, inline="always")
def _listed(cand, k, u):  # pragma: no cover - compiled
    """Whether ``u`` is among the first ``k`` candidates."""
    for t in range(k):
        if cand[t] == u:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _write_choice(xq, cand, cd, m, R, alpha, l1, fits, sc, sd, out, adj, i):  # pragma: no cover - compiled
    """Row ``i`` of ``adj`` from ``m`` candidates: sorted nearest first, all of them when ``fits``
    and they fit in ``R``, else those the relative-neighbourhood rule keeps; -1 after them.
    ``sc``/``sd``/``out`` are scratch."""
    for t in range(m):  # stable insertion sort: the lists come nearly sorted, and no allocation
        d = cd[t]
        p = t
        while p > 0 and sd[p - 1] > d:
            sd[p] = sd[p - 1]
            sc[p] = sc[p - 1]
            p -= 1
        sd[p] = d
        sc[p] = cand[t]
    if fits and m <= R:
        c = m
        for t in range(m):
            out[t] = sc[t]
    else:
        c = _select(xq, sc, sd, m, R, alpha, l1, out)
    for t in range(c):
        adj[i, t] = out[t]
    for t in range(c, adj.shape[1]):
        adj[i, t] = -1


@njit(cache=True, nogil=True)
def prune(xq, ids, ds, R, alpha, l1, hops, adj, lo, hi):  # pragma: no cover - compiled
    """Each item's own edges: the relative-neighbourhood rule over its candidate list, so the
    edges point in different directions and the graph stays sparse where the data is dense.

    Besides the near neighbours, each item is offered the items ``hops`` positions away from it
    in the first tree's leaf order (rows are in that order): items in neighbouring cells at every
    scale. The rule keeps those that no near neighbour covers, the long edges that let a walk
    cross from one cluster to the next (near-neighbour lists alone only link items within a
    cluster). Rows ``lo:hi`` only, so that threads can share the work."""
    n, L = ids.shape
    H = hops.shape[0]
    w = xq.shape[1]
    xq_flat = xq.reshape(n * w)
    cand = np.empty(L + 2 * H, np.int64)
    cd = np.empty(L + 2 * H, np.int64)
    sc = np.empty(L + 2 * H, np.int64)
    sd = np.empty(L + 2 * H, np.int64)
    out = np.empty(R, np.int64)
    for i in range(lo, hi):
        m = 0
        for p in range(L):
            u = ids[i, p]
            if u < 0:
                break
            cand[m] = u
            cd[m] = ds[i, p]
            _prefetch(xq_flat, u * w)
            m += 1
        near = m
        for h in range(H):
            for sgn in (-1, 1):
                u = i + sgn * hops[h]
                if 0 <= u < n and not _listed(cand, near, u):
                    cand[m] = u
                    cd[m] = _dist(xq, i, u, l1)
                    m += 1
        _write_choice(xq, cand, cd, m, R, alpha, l1, False, sc, sd, out, adj, i)


@njit(cache=True, nogil=True)
def incoming(fwd, start, sources):  # pragma: no cover - compiled
    """Who points at each item, into ``start`` (n + 1) and ``sources`` (room for every edge):
    the sources of ``j`` are ``sources[start[j]:start[j + 1]]``, in ascending order."""
    n, R = fwd.shape
    start[:] = 0
    for i in range(n):
        for t in range(R):
            j = fwd[i, t]
            if j < 0:
                break
            start[j + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    pos = start[:n].copy()
    for i in range(n):
        for t in range(R):
            j = fwd[i, t]
            if j < 0:
                break
            sources[pos[j]] = i
            pos[j] += 1


@njit(cache=True, nogil=True)
def merge_reverse(xq, fwd, start, sources, alpha, l1, adj, lo, hi):  # pragma: no cover - compiled
    """Final edges of items ``lo:hi``: their own edges plus the items that point at them (a walk
    must be able to come back), all kept when they fit in ``adj``'s width, else chosen again by
    the relative-neighbourhood rule with slack ``alpha``."""
    n, F = fwd.shape
    R = adj.shape[1]
    most = 0
    for i in range(n):
        most = max(most, start[i + 1] - start[i])
    cand = np.empty(F + most, np.int64)
    cd = np.empty(F + most, np.int64)
    sc = np.empty(F + most, np.int64)
    sd = np.empty(F + most, np.int64)
    out = np.empty(R, np.int64)
    for i in range(lo, hi):
        m = 0
        for t in range(F):
            u = fwd[i, t]
            if u < 0:
                break
            cand[m] = u
            m += 1
        own = m
        for p in range(start[i], start[i + 1]):
            u = sources[p]
            if not _listed(cand, own, u):
                cand[m] = u
                m += 1
        for t in range(m):
            cd[t] = _dist(xq, i, cand[t], l1)
        _write_choice(xq, cand, cd, m, R, alpha, l1, True, sc, sd, out, adj, i)


@njit(cache=True, nogil=True)
def refine(xq, adj, ids, ds, l1, lo, hi, visited):  # pragma: no cover - compiled
    """Better candidate lists for items ``lo:hi``: a best-first walk of the graph ``adj`` from the
    item's current list (beam = the list's length, every entry expanded once), keeping the
    nearest items met. The leaf blocks find about half of the true nearest; one such walk on the
    graph pruned from them finds most, which makes the final graph as good per distance
    computation as HNSW's (docs/ann.md). Reads ``adj``, writes only rows ``lo:hi`` of ``ids``/
    ``ds``; ``visited`` is this thread's byte per item."""
    n, R = adj.shape
    L = ids.shape[1]
    w = xq.shape[1]
    xq_flat = xq.reshape(n * w)
    adj_flat = adj.reshape(n * R)
    bi = np.empty(L, np.int64)
    bd = np.empty(L, np.int64)
    bx = np.zeros(L, np.uint8)
    nb = np.empty(R, np.int64)
    stamp = 0
    for i in range(lo, hi):
        stamp = _next_stamp(visited, stamp, 256)
        visited[i] = stamp
        m = 0
        for t in range(L):
            u = ids[i, t]
            if u < 0:
                break
            visited[u] = stamp
            bi[m] = u
            bd[m] = ds[i, t]
            bx[m] = 0
            m += 1
        k = 0
        while k < m:
            if bx[k]:
                k += 1
                continue
            bx[k] = 1
            v = bi[k]
            for t in range(k + 1, m):  # the next one expanded: ask for its edges early
                if not bx[t]:
                    _prefetch(adj_flat, bi[t] * R)
                    break
            c = 0
            for t in range(R):
                u = adj[v, t]
                if u < 0:
                    break
                if visited[u] != stamp:
                    visited[u] = stamp
                    nb[c] = u
                    c += 1
                    _prefetch(xq_flat, u * w)
            nk = k + 1
            for s in range(c):
                u = nb[s]
                d = _dist(xq, i, u, l1)
                if m == L and d >= bd[L - 1]:
                    continue
                p = min(m, L - 1)
                while p > 0 and bd[p - 1] > d:
                    bi[p] = bi[p - 1]
                    bd[p] = bd[p - 1]
                    bx[p] = bx[p - 1]
                    p -= 1
                bi[p] = u
                bd[p] = d
                bx[p] = 0
                if m < L:
                    m += 1
                nk = min(nk, p)
            k = nk
        for t in range(m):
            ids[i, t] = bi[t]
            ds[i, t] = bd[t]
        for t in range(m, L):
            ids[i, t] = -1
            ds[i, t] = np.iinfo(np.int32).max


# --------------------------------------------------------------------------------------- searching
@njit(cache=True, nogil=True, inline="always")
def _key(f32, ib, v4, norm4, q, f, metric):  # pragma: no cover - compiled
    """Ranking key of item record at word ``ib`` (smaller is nearer)."""
    row = f32[ib + v4:ib + v4 + f]
    s = np.float32(0.0)
    if metric == 0:
        for j in range(f):
            s += row[j] * q[j]
        pp = f32[ib + norm4]
        return -s / np.sqrt(pp) if pp > 0 else np.float32(0.0)
    if metric == 1:
        for j in range(f):
            t = row[j] - q[j]
            s += t * t
        return s
    if metric == 2:
        for j in range(f):
            s += abs(row[j] - q[j])
        return s
    for j in range(f):
        s -= row[j] * q[j]
    return s


@njit(cache=True, nogil=True, inline="always")
def _code_key(codes, item, qc, w, metric):  # pragma: no cover - compiled
    """Ranking key of item ``item`` from its int8 code and the query in code space ``qc``: the
    graph's own distances (squared euclidean, L1 for manhattan, minus the dot product for the unit
    vectors of angular and dot)."""
    row = codes[item]
    s = np.float32(0.0)
    if metric == 1:
        for j in range(w):
            t = np.float32(row[j]) - qc[j]
            s += t * t
        return s
    if metric == 2:
        for j in range(w):
            s += abs(np.float32(row[j]) - qc[j])
        return s
    for j in range(w):
        s -= np.float32(row[j]) * qc[j]
    return s


@njit(cache=True, nogil=True, inline="always")
def _prefetch_row(f32, ib, row_words):  # pragma: no cover - compiled
    """Ask for the cache lines of the float record at word ``ib`` the distance will read."""
    for line in range(0, row_words, 16):
        _prefetch(f32, ib + line)


@njit(cache=True, nogil=True, inline="always")
def _heap_down_max(hd, hi, size, d, i):  # pragma: no cover - compiled
    p = 0
    while True:
        c = 2 * p + 1
        if c >= size:
            break
        if c + 1 < size and hd[c + 1] > hd[c]:
            c += 1
        if hd[c] > d:
            hd[p] = hd[c]
            hi[p] = hi[c]
            p = c
        else:
            break
    hd[p] = d
    hi[p] = i


@njit(cache=True, nogil=True, inline="always")
def _heap_down_min(hd, hi, size, d, i):  # pragma: no cover - compiled
    p = 0
    while True:
        c = 2 * p + 1
        if c >= size:
            break
        if c + 1 < size and hd[c + 1] < hd[c]:
            c += 1
        if hd[c] < d:
            hd[p] = hd[c]
            hi[p] = hi[c]
            p = c
        else:
            break
    hd[p] = d
    hi[p] = i


@njit(cache=True, nogil=True, inline="always")
def _offer(rd, ri, nr, ef, cd, ci, nc, key, item):  # pragma: no cover - compiled
    """A newly measured item: into the results (max-heap of the ``ef`` best) if it beats the worst
    of them, and then onto the frontier (min-heap, grown when full). Returns the new sizes/heaps."""
    if nr < ef:
        p = nr
        nr += 1
        while p > 0 and rd[(p - 1) >> 1] < key:
            rd[p] = rd[(p - 1) >> 1]
            ri[p] = ri[(p - 1) >> 1]
            p = (p - 1) >> 1
        rd[p] = key
        ri[p] = item
    elif key < rd[0]:
        _heap_down_max(rd, ri, nr, key, item)
    else:
        return nr, nc, cd, ci
    if nc == cd.shape[0]:
        cd2 = np.empty(2 * nc, np.float32)
        ci2 = np.empty(2 * nc, np.int64)
        cd2[:nc] = cd[:nc]
        ci2[:nc] = ci[:nc]
        cd, ci = cd2, ci2
    p = nc
    nc += 1
    while p > 0 and cd[(p - 1) >> 1] > key:
        cd[p] = cd[(p - 1) >> 1]
        ci[p] = ci[(p - 1) >> 1]
        p = (p - 1) >> 1
    cd[p] = key
    ci[p] = item
    return nr, nc, cd, ci


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def search(i32, f32, off, nbr_ids, codes, qscale, roots, params, flat_qs, visited, flat_ids,
           flat_d):  # pragma: no cover - compiled
    """Beam search (width ``ef``) over the graph (item i's edges: ``nbr_ids[off[i]:off[i+1]]``, up
    to a -1; at most ``params[15]``) for every row of ``qs``, entered at the ``seed_k`` items of
    the leaves the trees rank first (``flat_qs``: the rows of an n x f matrix one after the other,
    the answers likewise in ``flat_ids``/``flat_d``, n x k: one-dimensional arguments cost numba
    less to pass). With ``codes`` (n_items x w int8, w > 0) the walk ranks by
    them and the ``ef`` items it kept are ranked again on the float vectors; without (w = 0) by
    the float vectors throughout. ``out_d`` gets annoy's distances. Returns the first row holding
    NaN or inf (its output is left empty), or -1; the last visited stamp is kept in
    ``params[12]``."""
    s4, ch4, v4, a4, norm4 = params[0], params[1], params[2], params[3], params[4]
    K, n_items, metric, f = params[5], params[6], params[7], params[8]
    k, ef, seed_k, stamp = params[9], params[10], params[11], params[12]
    df4, dfsq = params[13], params[14] != 0
    qs = flat_qs.reshape(flat_qs.shape[0] // f, f)
    out_ids = flat_ids.reshape(qs.shape[0], k)
    out_d = flat_d.reshape(qs.shape[0], k)
    w = codes.shape[1]
    # the walk keeps the ef best by the codes; with a narrow beam keep a few more, so that the
    # float ranking at the end can correct the codes' rounding among them
    ef = max(ef, 2 * k if w > 0 else k)
    qc = np.zeros(max(w, 1), np.float32)
    codes_flat = codes.reshape(codes.shape[0] * w)
    rd = np.empty(ef, np.float32)  # results: max-heap on key
    ri = np.empty(ef, np.int64)
    cd = np.empty(1024, np.float32)  # frontier: min-heap on key
    ci = np.empty(1024, np.int64)
    nbr = np.empty(max(params[15], 1), np.int64)
    row_words = v4 + f  # words of a record the distance reads
    tp = np.empty(256, np.float32)  # tree walk: max-heap on priority
    tn = np.empty(256, np.int64)
    bad = -1
    for b in range(qs.shape[0]):
        q = qs[b]
        if not _finite(q, f):  # the caller raises; no answer for this row
            bad = b if bad < 0 else bad
            _pad(out_ids, out_d, b, 0, k)
            continue
        stamp = _next_stamp(visited, stamp, 256)  # one byte per item keeps the stamps in cache
        if w > 0:  # the query in code space: unit for angular, scaled like the items otherwise
            sc = np.float32(qscale)
            if metric == 0:
                qq = np.float32(0.0)
                for j in range(f):
                    qq += q[j] * q[j]
                sc = np.float32(1.0) / np.sqrt(qq) if qq > 0 else np.float32(0.0)
            for j in range(f):
                qc[j] = q[j] * sc
        nr = 0
        nc = 0
        # entry points: annoy's best-first walk over all trees (priority = smallest margin on the
        # way down) until ``seed_k`` leaf items were met; they seed the beam from every region the
        # trees consider close, so the walk also starts in clusters the graph does not connect
        size = 0
        for r in range(roots.shape[0]):
            p = size
            size += 1
            while p > 0 and tp[(p - 1) >> 1] < np.inf:
                tp[p] = tp[(p - 1) >> 1]
                tn[p] = tn[(p - 1) >> 1]
                p = (p - 1) >> 1
            tp[p] = np.inf
            tn[p] = roots[r]
        met = 0
        while size > 0 and met < seed_k:
            d = tp[0]
            node = tn[0]
            size -= 1
            if size > 0:
                _heap_down_max(tp, tn, size, tp[size], tn[size])
            base = node * s4
            nd = i32[base]
            if nd > K:
                m = _margin(f32, base, v4, a4, df4, dfsq, q, f)
                if size + 2 > tp.shape[0]:
                    tp2 = np.empty(tp.shape[0] * 2, np.float32)
                    tn2 = np.empty(tp.shape[0] * 2, np.int64)
                    tp2[:size] = tp[:size]
                    tn2[:size] = tn[:size]
                    tp, tn = tp2, tn2
                for side in range(2):
                    pr = min(d, m) if side == 1 else min(d, -m)
                    p = size
                    size += 1
                    while p > 0 and tp[(p - 1) >> 1] < pr:
                        tp[p] = tp[(p - 1) >> 1]
                        tn[p] = tn[(p - 1) >> 1]
                        p = (p - 1) >> 1
                    tp[p] = pr
                    tn[p] = i32[base + ch4 + side]
                continue
            single = nd == 1 and node < n_items
            cnt = 1 if single else max(nd, 0)
            met += cnt
            for c in range(cnt):
                item = node if single else np.int64(i32[base + ch4 + c])
                if item < 0 or item >= n_items or visited[item] == stamp or i32[item * s4] != 1:
                    continue
                visited[item] = stamp
                if w > 0:
                    key = _code_key(codes, item, qc, w, metric)
                else:
                    key = _key(f32, item * s4, v4, norm4, q, f, metric)
                nr, nc, cd, ci = _offer(rd, ri, nr, ef, cd, ci, nc, key, item)
        while nc > 0:
            if nr >= ef and cd[0] > rd[0]:
                break
            u = ci[0]
            nc -= 1
            if nc > 0:
                _heap_down_min(cd, ci, nc, cd[nc], ci[nc])
            if nc > 0:  # the next node to expand is known now: ask for its edges early
                _prefetch(nbr_ids, off[ci[0]])
            # gather the unvisited neighbours first and prefetch their rows: the loads then overlap
            m = 0
            for t in range(off[u], off[u + 1]):
                item = np.int64(nbr_ids[t])
                if item < 0:
                    break
                if visited[item] != stamp:
                    visited[item] = stamp
                    nbr[m] = item
                    m += 1
                    if w > 0:
                        _prefetch(codes_flat, item * w)
                    else:
                        _prefetch_row(f32, item * s4, row_words)
            for t in range(m):
                item = nbr[t]
                # the choice is written out here and in the seeding: one inlined helper holding
                # both keys measured ~20 % fewer QPS on GloVe-50 (same answers)
                if w > 0:
                    key = _code_key(codes, item, qc, w, metric)
                else:
                    key = _key(f32, item * s4, v4, norm4, q, f, metric)
                nr, nc, cd, ci = _offer(rd, ri, nr, ef, cd, ci, nc, key, item)
        # the k best, nearest first (ties: smaller id first)
        keys = rd[:nr].copy()
        items = ri[:nr].copy()
        if w > 0:  # the walk's ef best, ranked again on the float vectors
            for r in range(nr):
                _prefetch_row(f32, items[r] * s4, row_words)
            for r in range(nr):
                keys[r] = _key(f32, items[r] * s4, v4, norm4, q, f, metric)
        if metric == 0:  # from here ranked by 2 - 2 cos; (near) duplicates again, see _rows
            qn = 0.0
            for j in range(f):
                qn += np.float64(q[j]) * np.float64(q[j])
            qn = np.sqrt(qn)
            for r in range(nr):
                gap = 2.0 + 2.0 * np.float64(keys[r]) / qn if qn > 0 else 2.0
                if gap < NEAR:
                    gap = _angular_gap(f32, items[r] * s4 + v4, q, f)
                keys[r] = max(gap, 0.0)
        order = np.argsort(keys, kind="mergesort")
        got = min(k, nr)
        for r in range(got):
            out_ids[b, r] = items[order[r]]
            out_d[b, r] = keys[order[r]]
        for r in range(got - 1):  # equal keys: smaller id first, as the exact search orders them
            for s in range(got - 1 - r):
                if out_d[b, s] == out_d[b, s + 1] and out_ids[b, s] > out_ids[b, s + 1]:
                    out_ids[b, s], out_ids[b, s + 1] = out_ids[b, s + 1], out_ids[b, s]
        for r in range(got):  # annoy's reported distance from the ranking key
            key = np.float64(out_d[b, r])
            if metric == 0 or metric == 1:  # angular's key is 2 - 2 cos by now
                out_d[b, r] = np.sqrt(max(key, 0.0))
            elif metric == 2:
                out_d[b, r] = max(key, 0.0)
            else:
                out_d[b, r] = -key
        _pad(out_ids, out_d, b, got, k)
    params[12] = stamp  # the next call goes on from here
    return bad

