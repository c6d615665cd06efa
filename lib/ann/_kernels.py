"""Compiled (numba) search over the raw node records: annoy's best-first search, made cheaper.

The kernel walks the same priority queue as ``AnnoyIndex::_get_all_nns`` (max-heap on
``(priority, node id)``, min-margin priorities, stop after ``search_k`` collected ids), so it
returns annoy's candidate set. What it saves: duplicate ids are dropped with an epoch-stamped
"seen" array instead of sorting every collected id, each distance is computed once, straight into
a small top-k ordered by (distance, id), so the order candidates arrive in does not matter. On a
large index nearly every record read is a miss to memory, so the kernel asks for records before
it needs them: both children when a split is expanded, and the candidate a few places ahead in
the distance pass (with prefetching, sorting the candidates into file order no longer pays: it
cost more than it saved); a file the caches hold (below ``PREFETCH_FROM``) is not prefetched.
When an expanded node's better child beats the top of the heap, it is what annoy pops next: it
is kept in hand instead of going through the heap. All reads go to the mapped file
(``int32``/``float32`` views of one byte buffer): nothing is copied.

``search`` takes a batch of queries; ``one`` takes a single query and keeps everything else in
one int64 state (fewer arguments for numba's per-call dispatch, no allocations).

Metric codes: 0 angular, 1 euclidean, 2 manhattan, 3 dot. Hamming stays on the numpy path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backbeat.ann._order import pack as _pack
from backbeat.ann._order import unpack as _unpack
from backbeat.ann._prefetch import prefetch as _prefetch
from backbeat.ann._rows import NEAR
from backbeat.ann._rows import angular_gap as _angular_gap
from backbeat.ann._rows import finite as _finite
from backbeat.ann._rows import margin as _margin
from backbeat.ann._rows import next_stamp as _next_stamp
from backbeat.ann._rows import pad as _pad
from backbeat.ann._select import kth as _kth

AHEAD = 8  # distance pass: prefetch the record of the candidate this many places ahead
STAMPS = 1 << 14  # query stamps: 14 bits of an item's uint16 "seen" word, 2 bits of votes
PREFETCH_FROM = 1 << 20  # file bytes from which the search prefetches (below, a core's L2 holds it)


@njit(cache=True, nogil=True, inline="always")
def _prefetch_record(f32, start, size):  # pragma: no cover - compiled
    """Prefetch a node record: each 64-byte line of its first 512 bytes, and its last word (the
    hardware's adjacent-line prefetch follows longer records)."""
    for o in range(0, min(size, 128), 16):
        _prefetch(f32, start + o)
    _prefetch(f32, start + size - 1)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def _key(f32, ib, v4, q, qq, f, metric):  # pragma: no cover - compiled
    """The sort key of the item whose record starts at word ``ib``: annoy's distance before its
    normalisation (squared for euclidean and angular, negated for dot)."""
    row = f32[ib + v4:ib + v4 + f]  # a C-contiguous slice: the loop vectorises
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
        if key < NEAR:  # (near) duplicates: again in one summation order, see _rows
            key = np.float32(_angular_gap(f32, ib + v4, q, f))
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
    return key


@njit(cache=True, nogil=True, inline="always")
def _keep(best_k, best_i, nb, k, key, item):  # pragma: no cover - compiled
    """Offer ``(key, item)`` to the ``nb`` best so far (ordered by key, then id, as annoy's final
    sort); returns the new count."""
    if nb < k:
        pos = nb
        nb += 1
    elif key < best_k[k - 1] or (key == best_k[k - 1] and item < best_i[k - 1]):
        pos = k - 1
    else:
        return nb
    while pos > 0 and (best_k[pos - 1] > key or (best_k[pos - 1] == key and best_i[pos - 1] > item)):
        best_k[pos] = best_k[pos - 1]
        best_i[pos] = best_i[pos - 1]
        pos -= 1
    best_k[pos] = key
    best_i[pos] = item
    return nb


@njit(cache=True, nogil=True, inline="always")
def _emit(out_ids, out_d, b, best_k, best_i, nb, k, metric):  # pragma: no cover - compiled
    """Output row ``b``: the ids and annoy's normalised distances, padded past the last answer."""
    for r in range(nb):
        out_ids[b, r] = best_i[r]
        key = best_k[r]
        if metric == 0 or metric == 1:
            out_d[b, r] = np.sqrt(key) if key > 0 else 0.0
        elif metric == 2:
            out_d[b, r] = key if key > 0 else 0.0
        else:
            out_d[b, r] = -key
    _pad(out_ids, out_d, b, nb, k)


@njit(cache=True, nogil=True, inline="always")
def _push(hk, size, key):  # pragma: no cover - compiled
    """Add ``key`` to the max-heap ``hk[:size]`` (room for it is there); the new size."""
    pos = size
    while pos > 0 and hk[(pos - 1) >> 1] < key:
        hk[pos] = hk[(pos - 1) >> 1]
        pos = (pos - 1) >> 1
    hk[pos] = key
    return size + 1


@njit(cache=True, nogil=True, inline="always")
def _pop(hk, size):  # pragma: no cover - compiled
    """Drop the top of the max-heap ``hk[:size]`` (the last entry sifts down from the top); the
    new size."""
    size -= 1
    if size > 0:
        key = hk[size]
        pos = 0
        while True:
            c = 2 * pos + 1
            if c >= size:
                break
            if c + 1 < size and hk[c + 1] > hk[c]:
                c += 1
            if hk[c] > key:
                hk[pos] = hk[c]
                pos = c
            else:
                break
        hk[pos] = key
    return size


@njit(cache=True, nogil=True, inline="always")
def _score(f32, cand, nc, s4, v4, q, qq, f, metric, keys, ahead):  # pragma: no cover - compiled
    """The keys of candidates ``cand[:nc]``, each record asked for ``AHEAD`` candidates early
    when ``ahead``."""
    if not ahead:
        for c in range(nc):
            keys[c] = _key(f32, cand[c] * s4, v4, q, qq, f, metric)
        return
    for c in range(min(AHEAD, nc)):
        _prefetch_record(f32, cand[c] * s4, s4)
    for c in range(nc):
        if c + AHEAD < nc:
            _prefetch_record(f32, cand[c + AHEAD] * s4, s4)
        keys[c] = _key(f32, cand[c] * s4, v4, q, qq, f, metric)


@njit(cache=True, nogil=True, inline="always")
def _scan(i32, f32, n_items, check, s4, v4, q, qq, f, metric, best_k, best_i, k):  # pragma: no cover
    """The ``k`` best of every item, in file order (holes skipped when ``check``); their count."""
    nb = 0
    for item in range(n_items):
        if check and i32[item * s4] != 1:
            continue  # a hole: in no tree
        nb = _keep(best_k, best_i, nb, k, _key(f32, item * s4, v4, q, qq, f, metric), item)
    return nb


@njit(cache=True, nogil=True, inline="always")
def _norm2(q, f):  # pragma: no cover - compiled
    qq = np.float32(0.0)
    for j in range(f):
        qq += q[j] * q[j]
    return qq


@njit(cache=True, nogil=True, inline="always")
def _scan_all(i32, f32, params, q, qq, out_ids, out_d, b, best_k, best_i):  # pragma: no cover
    """The exact answer by one pass over the items in file order (``search_k`` reaches every leaf
    slot: annoy collects every item), into output row ``b``; one loop per metric, as in _answer."""
    s4, v4, n_items, metric, f = params[0], params[2], params[7], params[8], params[9]
    k, check = params[10], params[12] != 0
    if metric == 0:
        nb = _scan(i32, f32, n_items, check, s4, v4, q, qq, f, 0, best_k, best_i, k)
    elif metric == 1:
        nb = _scan(i32, f32, n_items, check, s4, v4, q, qq, f, 1, best_k, best_i, k)
    elif metric == 2:
        nb = _scan(i32, f32, n_items, check, s4, v4, q, qq, f, 2, best_k, best_i, k)
    else:
        nb = _scan(i32, f32, n_items, check, s4, v4, q, qq, f, 3, best_k, best_i, k)
    _emit(out_ids, out_d, b, best_k, best_i, nb, k, metric)


@njit(cache=True, nogil=True, inline="always")
def _answer(i32, f32, roots, params, q, seen, stamp,  # pragma: no cover - compiled
            out_ids, out_d, b, hk, best_k, best_i, cand, keys):
    """Annoy's answer for one finite query ``q`` into output row ``b``; returns the scratch
    arrays, which it replaces by larger ones when they run out (heap, candidates, keys)."""
    s4, v4, metric, f, k = params[0], params[2], params[8], params[9], params[10]
    ahead = params[16] != 0  # prefetching pays only where records miss the caches
    qq = _norm2(q, f)
    if params[11] >= params[15] and params[14] <= roots.shape[0]:  # every leaf slot
        _scan_all(i32, f32, params, q, qq, out_ids, out_d, b, best_k, best_i)
        return hk, cand, keys
    nc, hk, cand = _collect(i32, f32, roots, params, q, seen, stamp, hk, cand)
    if keys.shape[0] < nc:
        keys = np.empty(cand.shape[0], np.float32)
    if metric == 0:  # one loop per metric, each compiled with its metric a constant: with the
        _score(f32, cand, nc, s4, v4, q, qq, f, 0, keys, ahead)  # metric a variable the distance loops
    elif metric == 1:  # did not vectorise (3x slower)
        _score(f32, cand, nc, s4, v4, q, qq, f, 1, keys, ahead)
    elif metric == 2:
        _score(f32, cand, nc, s4, v4, q, qq, f, 2, keys, ahead)
    else:
        _score(f32, cand, nc, s4, v4, q, qq, f, 3, keys, ahead)
    nb = 0
    for c in range(nc):
        nb = _keep(best_k, best_i, nb, k, keys[c], cand[c])
    _emit(out_ids, out_d, b, best_k, best_i, nb, k, metric)
    return hk, cand, keys


@njit(cache=True, nogil=True, inline="always")
def _collect(i32, f32, roots, params, q, seen, stamp, hk, cand):  # pragma: no cover - compiled
    """Annoy's candidates for finite query ``q``: its priority queue over the trees until
    ``search_k`` ids are collected, each id kept once (``seen``) in ``cand[:nc]``. Returns ``nc``
    and the heap and candidate arrays (replaced by larger ones when they run out)."""
    s4, ch4, v4, a4, df4 = params[0], params[1], params[2], params[3], params[4]
    dfsq, K, n_items, f = params[5] != 0, params[6], params[7], params[9]
    search_k, check, votes = params[11], params[12] != 0, params[14]
    ahead = params[16] != 0  # prefetching pays only where records miss the caches
    n_roots = roots.shape[0]
    # annoy gives the roots priority +inf: it pops every one (larger id first) before any other
    # node. Expanding them here in that order saves their trips through the heap; a root that is a
    # leaf (an index of at most K items) goes in at +inf and is popped first below (only
    # expansions happen in between, and they collect nothing: the same candidates)
    cap = hk.shape[0]
    size = 0
    nc = 0
    collected = 0
    code = (stamp << 2) | 3  # "a candidate of this query" (votes: 3 in the low bits)
    plain = votes == 1 and not check  # the common case, without the vote and hole bookkeeping
    for r in range(n_roots):
        i = roots[r]
        base = i * s4
        if i32[base] <= K:
            size = _push(hk, size, _pack(np.inf, i))
            continue
        m = _margin(f32, base, v4, a4, df4, dfsq, q, f)
        size = _push(hk, size, _pack(-m, i32[base + ch4]))
        size = _push(hk, size, _pack(m, i32[base + ch4 + 1]))
    hand = np.uint64(0)  # an expanded node's better child, when it beats the whole heap
    held = False
    while True:
        if held:  # what annoy would pop next, without its trip through the heap
            held = False
            d, i = _unpack(hand)
        else:
            if collected >= search_k or size == 0:
                break
            d, i = _unpack(hk[0])
            size = _pop(hk, size)
        base = i * s4
        nd = i32[base]
        if nd > K:
            m = _margin(f32, base, v4, a4, df4, dfsq, q, f)
            if size + 2 > cap:
                cap *= 2
                hk2 = np.empty(cap, np.uint64)
                hk2[:size] = hk[:size]
                hk = hk2
            left = i32[base + ch4]
            right = i32[base + ch4 + 1]
            if ahead:  # one of them is likely the next record read
                _prefetch(i32, np.int64(left) * s4)
                _prefetch(i32, np.int64(right) * s4)
            kl = _pack(min(d, -m), left)
            kr = _pack(min(d, m), right)
            # the keys are unique (a node enters the heap once), so the pops come in one order
            # however entries are pushed: when the better child beats the heap's top, annoy pops
            # it next; it is kept in hand (an expansion collects nothing: search_k is not reached)
            size = _push(hk, size, min(kl, kr))
            if hk[0] < max(kl, kr):
                hand = max(kl, kr)
                held = True
            else:
                size = _push(hk, size, max(kl, kr))
            continue
        if nd == 1 and i < n_items:
            count = 1
            start = -1
        else:
            count = nd if nd > 0 else 0
            start = base + ch4
        collected += count
        if nc + count > cand.shape[0]:
            grown = max(2 * cand.shape[0], nc + count)
            cand2 = np.empty(grown, np.int64)
            cand2[:nc] = cand[:nc]
            cand = cand2
        if plain:  # one compare per item (0.5 us of a digits query at search_k 100 otherwise)
            for c in range(count):
                item = i if start < 0 else np.int64(i32[start + c])
                if seen[item] != code:
                    seen[item] = code
                    cand[nc] = item
                    nc += 1
            continue
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
            seen[item] = code
            cand[nc] = item
            nc += 1
    return nc, hk, cand


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def search(i32, f32, roots, params, flat_qs, seen, flat_ids, flat_d):  # pragma: no cover - compiled
    """Annoy's search for every query (``flat_qs``: the rows of an n x f matrix, one after the
    other; the answers go to ``flat_ids``/``flat_d``, n x k, likewise); returns the first row
    holding NaN or inf (its output is left empty), or -1. ``roots`` are in descending id order, the
    order annoy pops them. ``seen`` holds per item a 14-bit query stamp and a 2-bit vote count; the
    last stamp used is kept in ``params[13]``, so the caller only sets up once.

    When ``search_k`` reaches ``params[15]`` (every leaf slot of every tree: trees x items), annoy
    collects every item and its answer is the exact one; the kernel then skips the trees and
    scores the items in file order (sequential reads, no heap, no duplicates), the same keys in
    the same top-k: the same answer, an order of magnitude sooner on a small index."""
    # few arguments, and one-dimensional ones: numba's per-call dispatch cost grows with their
    # number and dimensions (a 2-D argument costs ~0.08 us more to pass)
    f, k, stamp = params[9], params[10], params[13]
    qs = flat_qs.reshape(flat_qs.shape[0] // f, f)
    out_ids = flat_ids.reshape(qs.shape[0], k)
    out_d = flat_d.reshape(qs.shape[0], k)
    hk = np.empty(max(256, 2 * roots.shape[0] + 2), np.uint64)  # annoy's max-heap: _order's keys
    best_k = np.empty(k, np.float32)
    best_i = np.empty(k, np.int64)
    cand = np.empty(256, np.int64)
    keys = np.empty(256, np.float32)
    bad = -1
    for b in range(qs.shape[0]):
        q = qs[b]
        if not _finite(q, f):  # the caller raises; no answer for this row
            bad = b if bad < 0 else bad
            _pad(out_ids, out_d, b, 0, k)
            continue
        stamp = _next_stamp(seen, stamp, STAMPS)
        hk, cand, keys = _answer(i32, f32, roots, params, q, seen, stamp, out_ids, out_d, b, hk, best_k,
                                 best_i, cand, keys)
    params[13] = stamp  # the next call goes on from here
    return bad


# Layout of a single-query state (``one``): int64 words, the N_PARAMS parameters of ``search``
# first, then where each region starts (a word offset) and its length in its own elements.
N_PARAMS = 17
ST_ROOTS, ST_SEEN, ST_IDS, ST_DIST, ST_HEAP, ST_CAND, ST_KEYS, ST_BEST_K, ST_BEST_I = range(N_PARAMS, 35, 2)
ST_WORDS = 35


@njit(cache=True, nogil=True, inline="always")
def _state_views(state):  # pragma: no cover - compiled
    """The regions of a single-query ``state`` (``runners.TreeRunner._lay_out``) as views:
    parameters, roots, stamps, output row (ids, distances), heap, candidates, keys, top k."""
    params = state[:N_PARAMS]
    k = params[10]
    roots = state[state[ST_ROOTS]:state[ST_ROOTS] + state[ST_ROOTS + 1]]
    seen = state[state[ST_SEEN]:].view(np.uint16)[:state[ST_SEEN + 1]]
    out_ids = state[state[ST_IDS]:state[ST_IDS] + k].reshape(1, k)
    out_d = state[state[ST_DIST]:].view(np.float32)[:k].reshape(1, k)
    hk = state[state[ST_HEAP]:state[ST_HEAP] + state[ST_HEAP + 1]].view(np.uint64)
    cand = state[state[ST_CAND]:state[ST_CAND] + state[ST_CAND + 1]]
    keys = state[state[ST_KEYS]:].view(np.float32)[:state[ST_KEYS + 1]]
    best_k = state[state[ST_BEST_K]:].view(np.float32)[:k]
    best_i = state[state[ST_BEST_I]:state[ST_BEST_I] + k]
    return params, roots, seen, out_ids, out_d, hk, cand, keys, best_k, best_i


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def one(f32, state, q):  # pragma: no cover - compiled
    """``search`` for one query with three arguments instead of eight, its scratch in ``state``
    (``runners.TreeRunner`` lays it out: the parameters, roots, stamps, output row, heap,
    candidates): numba's dispatch costs ~0.07 us per array argument and each allocation ~0.05 us,
    ~0.6 us of a 5 us call on a small index. Returns 0 if ``q`` holds NaN or inf, else -1."""
    i32 = f32.view(np.int32)
    params, roots, seen, out_ids, out_d, hk, cand, keys, best_k, best_i = _state_views(state)
    f, k = params[9], params[10]
    if not _finite(q, f):
        _pad(out_ids, out_d, 0, 0, k)
        return 0
    stamp = _next_stamp(seen, params[13], STAMPS)
    _answer(i32, f32, roots, params, q, seen, stamp, out_ids, out_d, 0, hk, best_k, best_i, cand, keys)
    params[13] = stamp
    return -1

# ---------------------------------------------------------------------------- the coded search
# Files Backbeat builds without a graph carry 4-bit codes of the items (``backbeat.ann.codes``):
# the candidates annoy's queue collects are ranked by their codes (~12 ns each, the codes mostly in
# L3, against ~45 ns for a float record from memory), and only the RERANK best are ranked again on
# their float records, the exact keys the answer reports.
CODES_AHEAD = 16  # code rows prefetched this many candidates ahead (8: ~25 % slower on GloVe-50)
RERANK_MIN = 128  # candidates ranked again on their float records: at least this many,
RERANK_PER_K = 16  # this many per answer asked for,
RERANK_SHIFT = 7  # and one in 2**RERANK_SHIFT of the candidates (GloVe-50, k=10: 160 kept
# recall 0.8843 of the exact 0.8853 at search_k 12,000, 320 0.9877 of 0.9880 at 70,000)


@njit(cache=True, nogil=True, inline="always")
def _rerank(k, nc):  # pragma: no cover - compiled
    return max(RERANK_MIN, RERANK_PER_K * k, nc >> RERANK_SHIFT)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def _code_key(codes, o, w, a, st, metric):  # pragma: no cover - compiled
    """The approximate key of the code row at byte ``o`` (component ``j`` in the low nibble of byte
    ``j``, ``w + j`` in the high one; decoded ``lo + (c + 0.5) step``) against the query's ``a``
    (``q * step`` for angular/dot: minus their product, the constant dropped; ``q - lo - step / 2``
    for euclidean/manhattan: the squared or absolute differences, ``st`` the steps, in halves:
    ``a[:w]``/``st[:w]`` for the low nibbles, ``a[w:]``/``st[w:]`` the high ones)."""
    row = codes[o:o + w]  # a C-contiguous slice: the loop vectorises (indexing ``codes`` did not)
    acc = np.float32(0.0)
    if metric == 0 or metric == 3:
        for j in range(w):
            b = row[j]
            acc += a[j] * np.float32(b & 15) + a[w + j] * np.float32(b >> 4)
        return -acc
    if metric == 1:
        for j in range(w):
            b = row[j]
            d0 = a[j] - st[j] * np.float32(b & 15)
            d1 = a[w + j] - st[w + j] * np.float32(b >> 4)
            acc += d0 * d0 + d1 * d1
        return acc
    for j in range(w):
        b = row[j]
        acc += abs(a[j] - st[j] * np.float32(b & 15)) + abs(a[w + j] - st[w + j] * np.float32(b >> 4))
    return acc


@njit(cache=True, nogil=True, inline="always")
def _shortlist(codes, cand, nc, w, a, st, metric, buf, r, ahead):  # pragma: no cover - compiled
    """The ``r`` candidates (r < nc) with the smallest code keys, as ``(key, slot in cand)`` pairs
    packed in ``buf[:r]`` (``buf`` holds 2r); returns their count. A key joins the buffer only
    below the r-th best so far; a full buffer is cut back to its r best by one quickselect. Most
    keys cost one compare, and the buffer is cut a few times a query."""
    thr = np.float32(np.inf)
    n = 0
    cap = buf.shape[0]
    for c in range(nc):
        if ahead and c + CODES_AHEAD < nc:
            _prefetch(codes, cand[c + CODES_AHEAD] * w)
        key = _code_key(codes, cand[c] * w, w, a, st, metric)
        if key < thr:
            buf[n] = _pack(key, c)
            n += 1
            if n == cap:
                _kth(buf, n, r - 1)
                n = r
                thr = _unpack(buf[r - 1])[0]
    if n > r:
        _kth(buf, n, r - 1)
        n = r
    return n  # fewer than r only if keys overflowed to inf (they are then left out)


@njit(cache=True, nogil=True, inline="always")
def _answer_coded(i32, f32, codes, tab, roots, params, q, seen, stamp,  # pragma: no cover - compiled
                  out_ids, out_d, b, hk, best_k, best_i, cand, a, st, sk):
    """``_answer`` with the candidates ranked by their codes first: the ``_rerank`` best by code
    are then ranked on their float records (all of them when there are that few). Returns the
    scratch arrays (heap, candidates, shortlist), replaced by larger ones as needed."""
    s4, v4, metric, f, k = params[0], params[2], params[8], params[9], params[10]
    ahead = params[16] != 0
    qq = _norm2(q, f)
    if params[11] >= params[15] and params[14] <= roots.shape[0]:  # every leaf slot: exact
        _scan_all(i32, f32, params, q, qq, out_ids, out_d, b, best_k, best_i)
        return hk, cand, sk
    nc, hk, cand = _collect(i32, f32, roots, params, q, seen, stamp, hk, cand)
    r = _rerank(k, nc)
    nb = 0
    if nc <= r:
        for c in range(nc):
            nb = _keep(best_k, best_i, nb, k, _key(f32, cand[c] * s4, v4, q, qq, f, metric), cand[c])
        _emit(out_ids, out_d, b, best_k, best_i, nb, k, metric)
        return hk, cand, sk
    w = (f + 1) // 2
    for j in range(f):
        st[j] = tab[j]
        if metric == 0 or metric == 3:
            a[j] = q[j] * tab[j]
        else:
            a[j] = q[j] - tab[f + j] - np.float32(0.5) * tab[j]
    if sk.shape[0] < 2 * r:
        sk = np.empty(2 * r, np.uint64)
    if metric == 0:  # one loop per metric, each compiled with its metric a constant
        r = _shortlist(codes, cand, nc, w, a, st, 0, sk[:2 * r], r, ahead)
    elif metric == 1:
        r = _shortlist(codes, cand, nc, w, a, st, 1, sk[:2 * r], r, ahead)
    elif metric == 2:
        r = _shortlist(codes, cand, nc, w, a, st, 2, sk[:2 * r], r, ahead)
    else:
        r = _shortlist(codes, cand, nc, w, a, st, 3, sk[:2 * r], r, ahead)
    if ahead:
        for t in range(min(AHEAD, r)):
            _prefetch_record(f32, cand[_unpack(sk[t])[1]] * s4, s4)
    for t in range(r):
        if ahead and t + AHEAD < r:
            _prefetch_record(f32, cand[_unpack(sk[t + AHEAD])[1]] * s4, s4)
        item = cand[_unpack(sk[t])[1]]
        nb = _keep(best_k, best_i, nb, k, _key(f32, item * s4, v4, q, qq, f, metric), item)
    _emit(out_ids, out_d, b, best_k, best_i, nb, k, metric)
    return hk, cand, sk


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def search_coded(codes, tab, i32, f32, roots, params, flat_qs, seen, flat_ids, flat_d):  # pragma: no cover
    """``search`` over a file with a codes region (``codes``: its rows as one flat uint8 array,
    ``tab``: the quantiser's steps then lows, float32)."""
    f, k, stamp = params[9], params[10], params[13]
    qs = flat_qs.reshape(flat_qs.shape[0] // f, f)
    out_ids = flat_ids.reshape(qs.shape[0], k)
    out_d = flat_d.reshape(qs.shape[0], k)
    hk = np.empty(max(256, 2 * roots.shape[0] + 2), np.uint64)
    best_k = np.empty(k, np.float32)
    best_i = np.empty(k, np.int64)
    cand = np.empty(256, np.int64)
    a = np.zeros(f + 1, np.float32)  # room for the odd component's pair (kept 0)
    st = np.zeros(f + 1, np.float32)
    sk = np.empty(2 * _rerank(k, 0), np.uint64)  # grown by _answer_coded for many candidates
    bad = -1
    for b in range(qs.shape[0]):
        q = qs[b]
        if not _finite(q, f):
            bad = b if bad < 0 else bad
            _pad(out_ids, out_d, b, 0, k)
            continue
        stamp = _next_stamp(seen, stamp, STAMPS)
        hk, cand, sk = _answer_coded(i32, f32, codes, tab, roots, params, q, seen, stamp, out_ids, out_d, b,
                                     hk, best_k, best_i, cand, a, st, sk)
    params[13] = stamp
    return bad


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def one_coded(f32, state, q, codes, tab):  # pragma: no cover - compiled
    """``one`` over a file with a codes region (see ``search_coded``)."""
    i32 = f32.view(np.int32)
    params, roots, seen, out_ids, out_d, hk, cand, _, best_k, best_i = _state_views(state)
    f, k = params[9], params[10]
    if not _finite(q, f):
        _pad(out_ids, out_d, 0, 0, k)
        return 0
    a = np.zeros(f + 1, np.float32)
    st = np.zeros(f + 1, np.float32)
    sk = np.empty(2 * _rerank(k, 0), np.uint64)
    stamp = _next_stamp(seen, params[13], STAMPS)
    _answer_coded(i32, f32, codes, tab, roots, params, q, seen, stamp, out_ids, out_d, 0, hk, best_k, best_i,
                  cand, a, st, sk)
    params[13] = stamp
    return -1

# ------------------------------------------------------------------------------------- building
# The tree builder (``backbeat.ann.build``). A tree is one depth-first pass over a working copy of
# the rows. Large segments are partitioned by moving the rows themselves, so a split streams
# through memory sequentially; a segment of at most ``block`` rows (it fits in cache) is finished
# by partitioning row numbers only. Cuts are at a quantile that leaves each side exactly as many
# full leaves as it needs: about log2(n / K) levels, nearly full leaves, few nodes.

_FM = {"reassoc", "contract"}
FILL_MAX = 4  # segments needing at most this many leaves get cuts that keep leaves full
SAMPLE_MIN = 32  # two-means sample of a small segment (larger ones: m // 16, up to n_sample)


@njit(cache=True, nogil=True)
def seed(value):  # pragma: no cover - compiled
    np.random.seed(value)


@njit(cache=True, nogil=True)
def _cut(v, n, k):  # pragma: no cover - compiled
    """A threshold with ``k`` of the values ``v[:n]`` (n >= 2) below it: midway between the k-th and
    the (k+1)-th smallest. ``v`` is reordered."""
    k = min(max(k, 1), n - 1)
    hi = _kth(v, n, k)
    lo = v[0]
    for i in range(1, k):
        if v[i] > lo:
            lo = v[i]
    return 0.5 * (lo + hi)


@njit(cache=True, nogil=True)
def _cut_some(v, n, k, buf, exact_max):  # pragma: no cover - compiled
    """``_cut`` exactly for up to ``exact_max`` values (the last levels, where it keeps leaves
    full), else from an evenly spaced sample of 128 of them (a cut about 3% off the rank)."""
    if n <= exact_max:
        return _cut(v, n, k)
    ns = 128
    for r in range(ns):
        buf[r] = v[(r * n) // ns]
    return _cut(buf, ns, (k * ns + n // 2) // n)


@njit(cache=True, nogil=True)
def _choose(b, m, K, balance):  # pragma: no cover - compiled
    """Rows for side 0 near ``b`` (where the two-means boundary falls), kept within ``balance * m``
    of either end and, for small segments, to a count that needs no more leaves than ``m`` rows
    need (so leaves stay nearly full)."""
    lo_n = max(1, int(balance * m))
    target = min(max(b, lo_n), m - lo_n)
    leaves = max(2, (m + K - 1) // K)
    if leaves > FILL_MAX:
        return target
    best = target
    gap = m + 1
    for l0 in range(1, leaves):
        a0 = max(m - (leaves - l0) * K, 1)
        b0 = min(l0 * K, m - 1)
        if a0 > b0:
            continue
        cand = min(max(target, a0), b0)
        if abs(cand - target) < gap:
            best = cand
            gap = abs(cand - target)
    return best


@njit(cache=True, nogil=True, fastmath=_FM)
def _normalize(v):  # pragma: no cover - compiled
    nrm = np.float32(0.0)
    for j in range(v.shape[0]):
        nrm += v[j] * v[j]
    if nrm > 0:
        nrm = np.sqrt(nrm)
        for j in range(v.shape[0]):
            v[j] /= nrm


@njit(cache=True, nogil=True, fastmath=_FM, inline="always")
def _rowdot(xs, p, v):  # pragma: no cover - compiled
    s = np.float32(0.0)
    for j in range(v.shape[0]):
        s += xs[p, j] * v[j]
    return s


@njit(cache=True, nogil=True, inline="always")
def _row(perm, lo, r, direct):  # pragma: no cover - compiled
    return lo + r if direct else perm[lo + r]


@njit(cache=True, nogil=True, fastmath=_FM, inline="always")
def _rowdot2(xs, p, v, u):  # pragma: no cover - compiled
    s = np.float32(0.0)
    t = np.float32(0.0)
    for j in range(v.shape[0]):
        x = xs[p, j]
        s += x * v[j]
        t += x * u[j]
    return s, t


@njit(cache=True, nogil=True, fastmath=_FM)
def _direction(xs, perm, lo, m, direct, cosine, iterations, d, c0, c1, s0, s1, smp):  # pragma: no cover
    """Two centres ``c0``/``c1`` of ``m`` rows and the normal ``d = c1 - c0``: two random rows,
    refined by ``iterations`` rounds of two-means on a sample of ``len(smp)`` rows (annoy's
    heuristic, on a small sample)."""
    f = xs.shape[1]
    i0 = np.random.randint(0, m)
    i1 = (i0 + 1 + np.random.randint(0, m - 1)) % m
    r0 = _row(perm, lo, i0, direct)
    r1 = _row(perm, lo, i1, direct)
    for j in range(f):
        c0[j] = xs[r0, j]
        c1[j] = xs[r1, j]
    ns = min(smp.shape[0], m, max(SAMPLE_MIN, m // 16)) if iterations > 0 else 0  # small segments: fewer
    for r in range(ns):
        src = _row(perm, lo, np.random.randint(0, m), direct)
        for j in range(f):
            smp[r, j] = xs[src, j]
    for _ in range(iterations):
        n0 = 0
        n1 = 0
        for j in range(f):
            s0[j] = 0
            s1[j] = 0
        for r in range(ns):
            d0 = np.float32(0.0)
            d1 = np.float32(0.0)
            for j in range(f):
                t0 = smp[r, j] - c0[j]
                t1 = smp[r, j] - c1[j]
                d0 += t0 * t0
                d1 += t1 * t1
            if d0 <= d1:
                n0 += 1
                for j in range(f):
                    s0[j] += smp[r, j]
            else:
                n1 += 1
                for j in range(f):
                    s1[j] += smp[r, j]
        if n0 > 0:
            for j in range(f):
                c0[j] = s0[j] / n0
        if n1 > 0:
            for j in range(f):
                c1[j] = s1[j] / n1
        if cosine:
            _normalize(c0)
            _normalize(c1)
    for j in range(f):
        d[j] = c1[j] - c0[j]


@njit(cache=True, nogil=True, fastmath=_FM)
def _centre(xs, perm, lo, m, direct, c):  # pragma: no cover - compiled
    """Direction of the mean of up to 32 random rows of the segment."""
    for j in range(c.shape[0]):
        c[j] = 0
    for _ in range(min(m, 32)):
        src = _row(perm, lo, np.random.randint(0, m), direct)
        for j in range(c.shape[0]):
            c[j] += xs[src, j]
    _normalize(c)


@njit(cache=True, nogil=True, fastmath=_FM)
def _plane(xs, perm, lo, m, direct, K, balance, cosine, iterations, w, scratch, smp, vp, vq, tmp,
           mid, qb, qoff):  # pragma: no cover - compiled
    """Hyperplane ``w.x + a`` of a split of ``m`` rows; returns ``a`` (0 for angular/dot, whose
    nodes have no offset) and whether the cut is exact, in which case ``vp[:m]`` holds every row's
    ``w.x + a`` (sides are read from it).

    The normal comes from ``_direction``. The cut goes where annoy's would (midway between the two
    centres) unless that leaves fewer than ``balance * m`` rows on a side, and moves a little to a
    count that keeps leaves full (``_choose``). Angular: the plane must contain the origin, so it
    is tilted towards the centre ``c`` of the rows, ``w = d - t c`` with ``t`` a quantile of
    ``d.x / c.x`` (a cut in the plane tangent at ``c``; ``t = 0`` is annoy's plane). Up to
    ``len(vp)`` rows get an exact cut, more a cut from a sample of ``len(tmp)`` rows."""
    f = xs.shape[1]
    c = scratch[0]
    c0 = scratch[1]
    c1 = scratch[2]
    _direction(xs, perm, lo, m, direct, cosine, iterations, w, c0, c1, scratch[3], scratch[4], smp)
    _normalize(w)
    exact = m <= vp.shape[0]
    ns = m if exact else tmp.shape[0]
    cached = cosine and qoff >= 0  # inside a block: c is the block's centre, c.x is cached in qb
    c = scratch[0] if cached else scratch[5]
    if cosine and not cached:
        _centre(xs, perm, lo, m, direct, c)
    # no random draws inside the loops below: they would stop the dot products vectorising
    if exact:
        pos = perm[lo:lo + m] if not direct else np.empty(0, np.int64)
    else:
        pos = np.empty(ns, np.int64)
        for r in range(ns):
            pos[r] = _row(perm, lo, np.random.randint(0, m), direct)
    npos = 0
    nb = 0
    for _ in range(2):
        if cached:
            for r in range(ns):
                src = pos[r]
                vp[r] = _rowdot(xs, src, w)
                vq[r] = qb[src - qoff]
        elif cosine:
            for r in range(ns):
                src = lo + r if direct and exact else pos[r]
                p, q = _rowdot2(xs, src, w, c)
                vp[r] = p
                vq[r] = q
        else:
            for r in range(ns):
                src = lo + r if direct and exact else pos[r]
                vp[r] = _rowdot(xs, src, w)
        if not cosine:
            break
        npos = 0
        nb = 0
        for r in range(ns):
            if vq[r] > 0:
                x = vp[r] / vq[r]
                tmp[npos] = x
                npos += 1
                nb += x <= 0
        if npos == ns or not cached:
            break
        cached = False  # some rows are not in the block centre's hemisphere: use the node's centre
        c = scratch[5]
        _centre(xs, perm, lo, m, direct, c)
    a = np.float32(0.0)
    if cosine:
        t = 0.0
        if npos >= 2 and 4 * npos >= 3 * ns:
            n0 = _choose((nb * m + npos // 2) // npos, m, K, balance)
            t = _cut_some(tmp, npos, (n0 * npos + m // 2) // m, mid, 8 * K)
        if t != 0:
            for j in range(f):
                w[j] -= t * c[j]
            _normalize(w)
            if exact:
                for r in range(ns):
                    vp[r] -= t * vq[r]
    else:
        tb = 0.0
        for j in range(f):
            tb += w[j] * (c0[j] + c1[j])
        tb *= 0.5
        nb = 0
        for r in range(ns):
            tmp[r] = vp[r]
            nb += vp[r] <= tb
        n0 = _choose((nb * m + ns // 2) // ns, m, K, balance)
        t = _cut_some(tmp, ns, (n0 * ns + m // 2) // m, mid, 8 * K)
        a = np.float32(-t)
        if exact:
            for r in range(ns):
                vp[r] -= t
    return a, exact


@njit(cache=True, nogil=True, inline="always")
def _sign(v, ties):  # pragma: no cover - compiled
    """Side 1 when ``v > 0``; ties (duplicate rows on the plane) alternate, so identical rows still
    split in halves."""
    if v > 0:
        return 1, ties
    if v < 0:
        return 0, ties
    return ties & 1, ties + 1


@njit(cache=True, nogil=True, inline="always")
def _swap_rows(xs, ids, i, j, ncols):  # pragma: no cover - compiled
    """Exchange the first ``ncols`` columns of working rows ``i`` and ``j`` and their item ids."""
    for c in range(ncols):
        t = xs[i, c]
        xs[i, c] = xs[j, c]
        xs[j, c] = t
    t2 = ids[i]
    ids[i] = ids[j]
    ids[j] = t2


@njit(cache=True, nogil=True, fastmath=_FM)
def _partition_rows(xs, ids, st, m, w, a, f):  # pragma: no cover - compiled
    """Move rows ``st..st+m`` (and ``ids``) so those with ``w.x + a <= 0`` come first; return how many.
    Every row's side is computed once, as the scan reaches it. Only the first ``f`` columns move
    (the others are zero padding)."""
    ties = 0
    i = st
    j = st + m  # rows [st, i) are on side 0, rows [j, st + m) on side 1
    while i < j:
        s, ties = _sign(a + _rowdot(xs, i, w), ties)
        if s == 0:
            i += 1
            continue
        while True:
            j -= 1
            if j == i:
                break
            s, ties = _sign(a + _rowdot(xs, j, w), ties)
            if s == 0:
                _swap_rows(xs, ids, i, j, f)
                i += 1
                break
    return i - st


@njit(cache=True, nogil=True)
def _partition_perm(perm, lo, m, vals):  # pragma: no cover - compiled
    """Reorder ``perm[lo:lo+m]`` by the side of ``vals[:m]`` (its rows' ``w.x + a``); return n0."""
    ties = 0
    i = 0
    j = m
    while i < j:
        s, ties = _sign(vals[i], ties)
        if s == 0:
            i += 1
            continue
        while True:
            j -= 1
            if j == i:
                break
            s, ties = _sign(vals[j], ties)
            if s == 0:
                t = perm[lo + i]
                perm[lo + i] = perm[lo + j]
                perm[lo + j] = t
                i += 1
                break
    return i


@njit(cache=True, nogil=True)
def _bit(xs, p, b):  # pragma: no cover - compiled
    return np.int64((xs[p, b >> 6] >> np.uint64(63 - (b & 63))) & np.uint64(1))


@njit(cache=True, nogil=True)
def _split_bits(xs, ids, st, m, want, nbits, n_quant):  # pragma: no cover - compiled
    """Hamming: the split is one bit (annoy's convention: bit ``b`` counted from the most significant
    end of word ``b // 64``). Of 20 random bits keep the one whose split is nearest ``want``, else
    the first bit that splits at all; partition the rows in place; return (n0, bit)."""
    exact = m <= n_quant
    ns = m if exact else n_quant
    pos = np.empty(ns, np.int64)
    for r in range(ns):
        pos[r] = st + r if exact else st + np.random.randint(0, m)
    goal = ns - (want * ns + m // 2) // m  # ones wanted in the sample
    best = -1
    gap = ns + 1
    for _ in range(20):
        b = np.random.randint(0, nbits)
        ones = 0
        for r in range(ns):
            ones += _bit(xs, pos[r], b)
        if 0 < ones < ns and abs(ones - goal) < gap:
            best = b
            gap = abs(ones - goal)
    if best < 0:
        for b in range(nbits):
            ones = 0
            for p in range(st, st + m):
                ones += _bit(xs, p, b)
            if 0 < ones < m:
                best = b
                break
    if best < 0:
        return want, 0
    i = st
    j = st + m
    while i < j:
        if _bit(xs, i, best) == 0:
            i += 1
            continue
        while True:
            j -= 1
            if j == i:
                break
            if _bit(xs, j, best) == 0:
                _swap_rows(xs, ids, i, j, xs.shape[1])
                i += 1
                break
    n0 = i - st
    if min(n0, m - n0) * 100 < m:
        n0 = want
    return n0, best


@njit(cache=True, nogil=True)
def _children(nodes, node, nd, st, m, n0, n, K, stack, top):  # pragma: no cover - compiled
    """Record split ``node`` over positions ``st..st+m`` cut after ``n0``: a single item is
    referenced by its position (``>= 0``), a leaf or split child by ``-(node + 1)``; split children
    are pushed on ``stack``. Returns the new node count and stack top."""
    nodes[node, 0] = nd
    nodes[node, 3] = 1
    for side in range(1, -1, -1):  # push side 1 first: side 0 is grown first
        cs = st if side == 0 else st + n0
        cl = n0 if side == 0 else m - n0
        if cl == 1:
            ref = cs
        else:
            k = n
            n += 1
            ref = -(k + 1)
            nodes[k, 0] = cl
            nodes[k, 1] = cs
            nodes[k, 2] = cl
            nodes[k, 3] = 0
            if cl > K:
                stack[top, 0] = cs
                stack[top, 1] = cl
                stack[top, 2] = k
                top += 1
        nodes[node, 1 + side] = ref
    return n, top


@njit(cache=True, nogil=True)
def _want(m, K):  # pragma: no cover - compiled
    """Rows for side 0: the leaves ``m`` rows need, split in halves (so leaves end nearly full)."""
    leaves = max(2, (m + K - 1) // K)
    return m * (leaves // 2) // leaves


@njit(cache=True, nogil=True)
def _shift(nodes, k, st):  # pragma: no cover - compiled
    if nodes[k, 3] == 0:
        nodes[k, 1] += st
        return
    for side in range(1, 3):
        if nodes[k, side] >= 0:
            nodes[k, side] += st


@njit(cache=True, nogil=True, fastmath=_FM)
def _block(xs, ids, st, m, node, n, nodes, planes, offs, K, root_nd, cosine, balance, iterations,
           min_two_means, perm, order, stack, scratch, smp, vp, vq, tmp, mid, qb):  # pragma: no cover
    """The whole subtree of ``m <= len(vp)`` cached rows ``st..st+m``: rows stay put, their numbers
    in ``perm`` are partitioned, and ``order[st:st+m]`` gets their items in the subtree's leaf order.
    Returns the node count."""
    for r in range(m):
        perm[r] = st + r
    first = n
    qoff = -1
    if cosine:  # the block's centre is the tangent point of all its cuts: c.x once per row
        c = scratch[0]
        for j in range(xs.shape[1]):
            c[j] = 0
        for r in range(0, m, max(1, m // 256)):
            for j in range(xs.shape[1]):
                c[j] += xs[st + r, j]
        _normalize(c)
        for r in range(m):
            qb[r] = _rowdot(xs, st + r, c)
        qoff = st
    stack[0, 0] = 0
    stack[0, 1] = m
    stack[0, 2] = node
    top = 1
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        ln = stack[top, 1]
        k = stack[top, 2]
        want = _want(ln, K)
        its = iterations if ln >= min_two_means else 0
        a, _ = _plane(xs, perm, lo, ln, False, K, balance, cosine, its, planes[k], scratch, smp, vp, vq, tmp,
                      mid, qb, qoff)
        n0 = _partition_perm(perm, lo, ln, vp)
        if min(n0, ln - n0) * 100 < ln:  # no usable plane (duplicates): halve, zero plane like annoy
            planes[k, :] = 0
            a = np.float32(0.0)
            n0 = want
        offs[k] = a
        n, top = _children(nodes, k, root_nd if k == 0 else ln, lo, ln, n0, n, K, stack, top)
    _shift(nodes, node, st)  # positions were local to the block
    for k in range(first, n):
        _shift(nodes, k, st)
    for r in range(m):  # the tree's order; the rows (and ``ids``, their items) stay where they are
        order[st + r] = ids[perm[r]]
    return n


@njit(cache=True, nogil=True)
def grow(xs, xb, ids, K, root_nd, hamming, nbits, cosine, balance, n_quant, block,  # pragma: no cover
         n_sample, iterations, min_two_means):
    """One tree over the rows of ``xs`` (float32; ``xb``: uint64 words for hamming); ``ids[p]`` is
    the item of row ``p``. Rows and ``ids`` are reordered together (the next tree starts from the
    order this one leaves).

    Returns ``(nodes, planes, offsets, order)``: ``order`` holds the items in the tree's leaf order,
    every subtree one contiguous range of it; node 0 is the root. ``nodes[k]`` = (n_descendants,
    a, b, is_split, bit): a leaf lists ``order[a:a+b]``; a split's children ``a``/``b`` (sides 0/1)
    are ``-(node + 1)``, or a position ``>= 0`` in ``order`` for a single item; ``planes[k]`` and
    ``offsets[k]`` are its hyperplane (``bit``: hamming's)."""
    n_rows = ids.shape[0]
    f = xs.shape[1]
    cap = 16 + 4 * (n_rows // K + 1)
    nodes = np.zeros((cap, 5), np.int64)
    planes = np.zeros((cap, f), np.float32)
    offs = np.zeros(cap, np.float32)
    if (n_rows <= K and (root_nd <= K or n_rows == 1)) or n_rows <= 1:
        nodes[0, 0] = root_nd
        nodes[0, 2] = n_rows
        return nodes[:1], planes[:1], offs[:1], ids.copy()
    block = max(block, n_quant)
    scratch = np.zeros((6, f), np.float32)
    smp = np.empty((n_sample, f), np.float32)
    vp = np.empty(block, np.float64)
    vq = np.empty(block, np.float64)
    tmp = np.empty(n_quant, np.float64)
    tmpb = np.empty(block, np.float64)
    mid = np.empty(block, np.float64)
    qb = np.empty(block, np.float64)
    perm = np.empty(block, np.int64)
    order = np.full(n_rows, -1, np.int64)
    stack = np.empty((n_rows + 1, 3), np.int64)
    stack2 = np.empty((block + 1, 3), np.int64)
    stack[0, 0] = 0
    stack[0, 1] = n_rows
    stack[0, 2] = 0
    top = 1
    n = 1
    while top > 0:
        top -= 1
        st = stack[top, 0]
        m = stack[top, 1]
        node = stack[top, 2]
        need = n + 2 * m + 2 if m <= block and not hamming else n + 2  # a block adds < 2 m nodes
        if need > cap:
            cap = max(2 * cap, need)
            nodes2 = np.zeros((cap, 5), np.int64)
            planes2 = np.zeros((cap, f), np.float32)
            offs2 = np.zeros(cap, np.float32)
            nodes2[:n] = nodes[:n]
            planes2[:n] = planes[:n]
            offs2[:n] = offs[:n]
            nodes, planes, offs = nodes2, planes2, offs2
        nd = root_nd if node == 0 else m
        want = _want(m, K)
        if hamming:
            n0, bit = _split_bits(xb, ids, st, m, want, nbits, n_quant)
            nodes[node, 4] = bit
        elif m <= block:
            n = _block(xs, ids, st, m, node, n, nodes, planes, offs, K, root_nd, cosine, balance, iterations,
                       min_two_means, perm, order, stack2, scratch, smp, vp, vq, tmpb, mid, qb)
            continue
        else:
            its = iterations if m >= min_two_means else 0
            a, _ = _plane(xs, perm, st, m, True, K, balance, cosine, its, planes[node], scratch, smp, vp, vq,
                          tmp, mid, qb, -1)
            n0 = _partition_rows(xs, ids, st, m, planes[node], a, min(nbits, f))
            if min(n0, m - n0) * 100 < m:
                planes[node, :] = 0
                a = np.float32(0.0)
                n0 = want
            offs[node] = a
        n, top = _children(nodes, node, nd, st, m, n0, n, K, stack, top)
    for p in range(n_rows):  # positions outside blocks: rows (and ids) were moved into place
        if order[p] < 0:
            order[p] = ids[p]
    # the buffers were sized for the worst case (a leaf block reserves 2 nodes a row): keep only
    # the rows used. Every tree is kept until the file is written, and its buffers' unused rows are
    # zeroed pages: ~1 MB a tree on a 1,600-item index (10 trees: ~2x annoy's build time in a fresh
    # process), ~45 % of them on GloVe-50 (50 trees: 170 MB, ~0.9 s); the copies reuse freed memory
    if n < cap:
        return nodes[:n].copy(), planes[:n].copy(), offs[:n].copy(), order
    return nodes[:n], planes[:n], offs[:n], order


@njit(cache=True, nogil=True)
def write_tree(i32, f32, base, nodes, planes, offs, order, ch, vo, ao, f, hamming):  # pragma: no cover
    """Write one tree's records into the file views (``i32``/``f32``: one row per record): node ``k``
    goes to record ``base + k - 1`` and the root (node 0) last, after the others, as annoy does."""
    n = nodes.shape[0]
    last = base + n - 1
    for k in range(n):
        rid = last if k == 0 else base + k - 1
        i32[rid, 0] = nodes[k, 0]
        if nodes[k, 3] == 0:
            st = nodes[k, 1]
            for r in range(nodes[k, 2]):
                i32[rid, ch + r] = order[st + r]
            continue
        for side in range(2):
            ref = nodes[k, 1 + side]
            if ref >= 0:
                i32[rid, ch + side] = order[ref]
            else:
                kk = -ref - 1
                i32[rid, ch + side] = last if kk == 0 else base + kk - 1
        if hamming:
            i32[rid, vo] = nodes[k, 4]  # the bit, as a little-endian uint64 (high word stays 0)
        else:
            for j in range(f):  # the working rows may be padded beyond f
                f32[rid, vo + j] = planes[k, j]
            if ao >= 0:
                f32[rid, ao] = offs[k]
