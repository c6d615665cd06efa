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
def search(i32, f32, s4, ch4, v4, a4, df4, dfsq, K, n_items, roots, metric, f, qs, k, search_k, check,
           seen, epoch, votes, out_ids, out_d):  # pragma: no cover - compiled
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
                vb = base + v4
                m = np.float32(0.0)
                for j in range(f):
                    m += f32[vb + j] * q[j]
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
        # distances in one tight pass: independent iterations keep many memory loads in flight
        if keys.shape[0] < nc:
            keys = np.empty(ccap, np.float32)
        for c in range(nc):
            ib = cand[c] * s4
            vb = ib + v4
            key = np.float32(0.0)
            if metric == 0:
                pq = np.float32(0.0)
                pp = f32[ib + 1]
                for j in range(f):
                    pq += f32[vb + j] * q[j]
                if pp == 0:
                    for j in range(f):
                        pp += f32[vb + j] * f32[vb + j]
                ppqq = np.float32(pp * qq)  # annoy's formula, for annoy's exact ordering
                if ppqq > 0:
                    key = np.float32(2.0 - 2.0 * np.float64(pq) / np.float64(np.sqrt(ppqq)))
                else:
                    key = np.float32(2.0)
            elif metric == 1:
                for j in range(f):
                    t = f32[vb + j] - q[j]
                    key += t * t
            elif metric == 2:
                for j in range(f):
                    key += abs(f32[vb + j] - q[j])
            else:
                for j in range(f):
                    key -= f32[vb + j] * q[j]
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
