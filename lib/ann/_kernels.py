"""Compiled (numba) search over the raw node records: annoy's best-first search, made cheaper.

The kernel walks the same priority queue as ``AnnoyIndex::_get_all_nns`` (max-heap on
``(priority, node id)``, min-margin priorities, stop after ``search_k`` collected ids), so it
returns annoy's candidate set. What it saves: duplicate ids are dropped with an epoch-stamped
"seen" array instead of sorting every collected id, each distance is computed once, straight into
a small sorted top-k, and the angular ranking key skips the square root. All reads go to the
mapped file (``int32``/``float32`` views of one byte buffer): nothing is copied.

Metric codes: 0 angular, 1 euclidean, 2 manhattan, 3 dot. Hamming stays on the numpy path.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _above(p1: float, n1: int, p2: float, n2: int) -> bool:
    return p1 > p2 or (p1 == p2 and n1 > n2)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def search(i32, f32, roots, params, qs, seen, out_ids, out_d):  # pragma: no cover - compiled
    # few arguments: numba's per-call dispatch cost grows with their number
    s4, ch4, v4, a4, df4 = params[0], params[1], params[2], params[3], params[4]
    dfsq, K, n_items, metric, f = params[5] != 0, params[6], params[7], params[8], params[9]
    k, search_k, check, epoch, votes = params[10], params[11], params[12] != 0, params[13], params[14]
    cap = 4096
    hp = np.empty(cap, np.float32)
    hn = np.empty(cap, np.int64)
    best_k = np.empty(k, np.float32)
    best_i = np.empty(k, np.int64)
    n_roots = roots.shape[0]
    ccap = 4096
    cand = np.empty(ccap, np.int64)
    keys = np.empty(ccap, np.float32)
    for b in range(qs.shape[0]):
        q = qs[b]
        stamp = epoch + b
        qq = np.float32(0.0)
        for j in range(f):
            qq += q[j] * q[j]
        # heap of roots, priority +inf
        size = 0
        for r in range(n_roots):
            node = roots[r]
            pos = size
            size += 1
            hp[pos] = np.inf
            hn[pos] = node
            while pos > 0:
                parent = (pos - 1) >> 1
                if _above(hp[pos], hn[pos], hp[parent], hn[parent]):
                    hp[pos], hp[parent] = hp[parent], hp[pos]
                    hn[pos], hn[parent] = hn[parent], hn[pos]
                    pos = parent
                else:
                    break
        nb = 0
        nc = 0
        collected = 0
        while collected < search_k and size > 0:
            d = hp[0]
            i = hn[0]
            size -= 1
            if size > 0:  # move the last entry to the top and sift down
                hp[0] = hp[size]
                hn[0] = hn[size]
                pos = 0
                while True:
                    left = 2 * pos + 1
                    if left >= size:
                        break
                    top = left
                    right = left + 1
                    if right < size and _above(hp[right], hn[right], hp[left], hn[left]):
                        top = right
                    if _above(hp[top], hn[top], hp[pos], hn[pos]):
                        hp[pos], hp[top] = hp[top], hp[pos]
                        hn[pos], hn[top] = hn[top], hn[pos]
                        pos = top
                    else:
                        break
            base = i * s4
            nd = i32[base]
            if nd > K:
                row = f32[base + v4:base + v4 + f]  # a C-contiguous slice: the loop vectorises
                m = np.float32(0.0)
                for j in range(f):
                    m += row[j] * q[j]
                if a4 >= 0:
                    m = f32[base + a4] + m
                if dfsq:
                    dfv = f32[base + df4]
                    m = m + dfv * dfv
                if size + 2 > cap:
                    cap *= 2
                    hp2 = np.empty(cap, np.float32)
                    hn2 = np.empty(cap, np.int64)
                    hp2[:size] = hp[:size]
                    hn2[:size] = hn[:size]
                    hp, hn = hp2, hn2
                for side in range(2):
                    child = i32[base + ch4 + side]
                    pr = min(d, m) if side == 1 else min(d, -m)
                    pos = size
                    size += 1
                    hp[pos] = pr
                    hn[pos] = child
                    while pos > 0:
                        parent = (pos - 1) >> 1
                        if _above(hp[pos], hn[pos], hp[parent], hn[parent]):
                            hp[pos], hp[parent] = hp[parent], hp[pos]
                            hn[pos], hn[parent] = hn[parent], hn[pos]
                            pos = parent
                        else:
                            break
                continue
            if nd == 1 and i < n_items:
                count = 1
                start = -1
            else:
                count = nd if nd > 0 else 0
                start = base + ch4
            collected += count
            for c in range(count):
                item = i if start < 0 else np.int64(i32[start + c])
                if check:
                    if item < 0 or item >= n_items or i32[item * s4] != 1:
                        continue
                mark = seen[item]
                if mark >> 2 != stamp:
                    mark = stamp << 2
                if (mark & 3) == 3:
                    continue  # already a candidate
                mark += 1
                if (mark & 3) < votes:
                    seen[item] = mark
                    continue
                seen[item] = (stamp << 2) | 3
                if nc == ccap:
                    ccap *= 2
                    cand2 = np.empty(ccap, np.int64)
                    cand2[:nc] = cand[:nc]
                    cand = cand2
                cand[nc] = item
                nc += 1
        # distances in one tight pass over the ids in file order: neighbouring records share pages
        # and cache lines, and the hardware prefetcher can follow (random order is several times
        # slower on large files)
        if keys.shape[0] < nc:
            keys = np.empty(ccap, np.float32)
        cand[:nc].sort()
        for c in range(nc):
            ib = cand[c] * s4
            row = f32[ib + v4:ib + v4 + f]
            key = np.float32(0.0)
            if metric == 0:
                pq = np.float32(0.0)
                pp = f32[ib + 1]
                for j in range(f):
                    pq += row[j] * q[j]
                if pp == 0:
                    for j in range(f):
                        pp += row[j] * row[j]
                ppqq = np.float32(pp * qq)  # annoy's formula, for annoy's exact ordering
                if ppqq > 0:
                    key = np.float32(2.0 - 2.0 * np.float64(pq) / np.float64(np.sqrt(ppqq)))
                else:
                    key = np.float32(2.0)
            elif metric == 1:
                for j in range(f):
                    t = row[j] - q[j]
                    key += t * t
            elif metric == 2:
                for j in range(f):
                    key += abs(row[j] - q[j])
            else:
                for j in range(f):
                    key -= row[j] * q[j]
            keys[c] = key
        for c in range(nc):
            key = keys[c]
            item = cand[c]
            if nb < k:
                pos = nb
                nb += 1
            elif key < best_k[k - 1] or (key == best_k[k - 1] and item < best_i[k - 1]):
                pos = k - 1
            else:
                continue
            while pos > 0 and (best_k[pos - 1] > key or (best_k[pos - 1] == key and best_i[pos - 1] > item)):
                best_k[pos] = best_k[pos - 1]
                best_i[pos] = best_i[pos - 1]
                pos -= 1
            best_k[pos] = key
            best_i[pos] = item
        for r in range(nb):
            out_ids[b, r] = best_i[r]
            key = best_k[r]
            if metric == 0 or metric == 1:
                out_d[b, r] = np.sqrt(key) if key > 0 else 0.0
            elif metric == 2:
                out_d[b, r] = key if key > 0 else 0.0
            else:
                out_d[b, r] = -key
        for r in range(nb, k):
            out_ids[b, r] = -1
            out_d[b, r] = np.inf


@njit(cache=True, nogil=True)
def seed(value):  # pragma: no cover - compiled
    np.random.seed(value)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def split_level(xw, order, starts, lens, w, a, zeros):  # pragma: no cover - compiled
    """Side of every item of every segment (``a + w.x > 0``: side 1, ties at random) and an in-place
    partition of ``order`` (side 0 first); a segment that splits more unevenly than 99:1 (duplicate
    vectors) is split at random in two halves and its plane zeroed, as annoy falls back to."""
    f = xw.shape[1]
    buf = np.empty(order.shape[0], np.int64)
    for s in range(starts.shape[0]):
        st = starts[s]
        ln = lens[s]
        ws = w[s]
        c0 = 0
        n1 = 0
        for p in range(st, st + ln):
            it = order[p]
            row = xw[it]
            m = a[s]
            for j in range(f):
                m += row[j] * ws[j]
            if m > 0 or (m == 0 and np.random.random() < 0.5):
                buf[n1] = it
                n1 += 1
            else:
                order[st + c0] = it
                c0 += 1
        for r in range(n1):
            order[st + c0 + r] = buf[r]
        if max(c0, n1) > 0.99 * ln:
            for p in range(st + ln - 1, st, -1):  # Fisher-Yates, then halve
                r = st + np.random.randint(0, p - st + 1)
                order[p], order[r] = order[r], order[p]
            c0 = ln // 2
            for j in range(w.shape[1]):
                w[s, j] = 0
            a[s] = 0
        zeros[s] = c0


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def planes(xw, order, starts, lens, cosine, sample, iterations, w, a):  # pragma: no cover - compiled
    """Two-means hyperplane per segment from ``sample`` random members (first two distinct)."""
    f = xw.shape[1]
    p = np.empty((sample, f), np.float32)
    c0 = np.empty(f, np.float32)
    c1 = np.empty(f, np.float32)
    s0 = np.empty(f, np.float32)
    s1 = np.empty(f, np.float32)
    for s in range(starts.shape[0]):
        st = starts[s]
        ln = lens[s]
        i0 = np.random.randint(0, ln)
        i1 = (i0 + 1 + np.random.randint(0, ln - 1)) % ln
        for r in range(sample):
            idx = i0 if r == 0 else (i1 if r == 1 else np.random.randint(0, ln))
            row = xw[order[st + idx]]
            for j in range(f):
                p[r, j] = row[j]
        for j in range(f):
            c0[j] = p[0, j]
            c1[j] = p[1, j]
        for _ in range(iterations):
            n0 = 0
            n1 = 0
            for j in range(f):
                s0[j] = 0
                s1[j] = 0
            for r in range(sample):
                d0 = np.float32(0.0)
                d1 = np.float32(0.0)
                for j in range(f):
                    t0 = p[r, j] - c0[j]
                    t1 = p[r, j] - c1[j]
                    d0 += t0 * t0
                    d1 += t1 * t1
                if d0 <= d1:
                    n0 += 1
                    for j in range(f):
                        s0[j] += p[r, j]
                else:
                    n1 += 1
                    for j in range(f):
                        s1[j] += p[r, j]
            if n0 > 0:
                for j in range(f):
                    c0[j] = s0[j] / n0
            if n1 > 0:
                for j in range(f):
                    c1[j] = s1[j] / n1
            if cosine:
                for c in (c0, c1):
                    nrm = np.float32(0.0)
                    for j in range(f):
                        nrm += c[j] * c[j]
                    if nrm > 0:
                        nrm = np.sqrt(nrm)
                        for j in range(f):
                            c[j] /= nrm
        nrm = np.float32(0.0)
        for j in range(f):
            w[s, j] = c1[j] - c0[j]
            nrm += w[s, j] * w[s, j]
        off = np.float32(0.0)
        if nrm > 0:
            nrm = np.sqrt(nrm)
            for j in range(f):
                w[s, j] /= nrm
                off -= w[s, j] * (c0[j] + c1[j]) / 2
        else:
            for j in range(f):
                w[s, j] = 0
        a[s] = 0 if cosine else off
