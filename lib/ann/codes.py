"""Four-bit codes of the items, stored inside an annoy-compatible ``.ann`` file for the tree search.

Why: annoy's forest reaches recall 0.90 on GloVe-50 only by collecting ~10,000 candidates a query
and computing each one's distance from its float32 record: 4 cache lines at random in a file far
larger than the caches, ~45 ns a candidate with prefetching, ~75 % of the query. The same items as
4-bit codes (one per component, two per byte: 25 bytes at f=50, 10 MB for 400,000 items, which
the L3 cache can hold) rank the candidates in ~12 ns each; only the best few dozen are then ranked
again on their float vectors, so the answer keeps annoy's exact distances. It costs a pass over
the vectors at build time (~0.1 s for GloVe-50) and ~f/2 bytes per item of file, which the
compact trees leave room for from ~8 trees on (docs/ann.md); a forest with a neighbour graph does
not need them (the graph region carries int8 codes of its own).

The quantiser is per component and uniform between the 0.1 % and 99.9 % quantiles of a sample of
the items (values outside are clamped): ``code = floor((x - lo) / step)``, ``step = (hi - lo) /
16``, decoded as ``lo + (code + 0.5) * step``. Angular codes are of the unit vectors (the ranking
is then by cosine); euclidean, manhattan and dot codes are of the vectors themselves.

Where it lives: in a region like the graph's (``backbeat.ann.regions``), between the last tree
node and the copies of the roots, ending with a header record whose ``n_descendants`` is 0:
annoy's scan for roots stops there, and annoy never reaches the records before it. Region layout,
version 1
(``s`` = record size, int32 words little endian, byte offsets from the region's first byte)::

    records [g, g + m)      step: f float32, lo: f float32; from byte ``c`` (64-byte aligned in
                            the file) the codes, n_items rows of w = ceil(f / 2) bytes
                            (component j in the low nibble of byte j, w + j in the high one:
                            the compiled loop over a row then vectorises)
    record g + m (header)   word 0: 0 (n_descendants), 1: magic "BBC1", 2: version << 16 | bits,
                            3: n_items, 4: m, 5: c, 6: w, 7: f
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbeat.ann import regions
from backbeat.ann.errors import AnnFormatError
from backbeat.ann.layout import Layout

MAGIC = int.from_bytes(b"BBC1", "little")
VERSION = 1
BITS = 4
LEVELS = 1 << BITS
HEADER_WORDS = 8
ALIGN = 64
MIN_F = 8  # fewer components: the float records are as small as the codes would be
CODE_METRICS = ("angular", "euclidean", "manhattan", "dot")
CLIP = 0.001  # quantile clamped at each end of every component
SAMPLE = 65_536  # rows the quantiles are taken from
CHUNK = 16_384  # rows coded per step: the temporaries stay small and in cache


@dataclass(frozen=True)
class Codes4:
    """The items' codes (user id order, zero rows for ids never added) and the quantiser."""

    codes: np.ndarray  # uint8, n_items x ceil(f / 2)
    step: np.ndarray  # float32, f
    lo: np.ndarray  # float32, f


def supported(layout: Layout) -> bool:
    return layout.metric in CODE_METRICS and layout.f >= MIN_F and layout.size >= 4 * HEADER_WORDS


def _space(x: np.ndarray, metric: str) -> np.ndarray:
    """Rows as coded: unit vectors for angular (zero rows stay zero), else as they are."""
    x = np.asarray(x, dtype=np.float32)
    if metric != "angular":
        return x
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(nrm > 0, x / np.where(nrm > 0, nrm, 1), 0).astype(np.float32)


def encode(x: np.ndarray, present: np.ndarray, metric: str, seed: int = 1) -> Codes4:
    """The codes of rows ``x`` (those marked ``present``; the others get zero codes)."""
    n, f = x.shape
    rows = np.flatnonzero(present)
    pick = rows if rows.size <= SAMPLE else np.sort(
        np.random.default_rng(seed).choice(rows, SAMPLE, replace=False))
    sample = _space(x[pick], metric) if pick.size else np.zeros((1, f), np.float32)
    lo, hi = np.quantile(sample, [CLIP, 1 - CLIP], axis=0).astype(np.float32)
    step = ((hi - lo) / np.float32(LEVELS)).astype(np.float32)
    inv = np.where(step > 0, 1 / np.where(step > 0, step, 1), 0).astype(np.float32)
    w = (f + 1) // 2
    codes = np.zeros((n, w), np.uint8)
    whole = rows.size == n
    for a in range(0, rows.size, CHUNK):
        b = min(a + CHUNK, rows.size)
        part = _space(x[a:b] if whole else x[rows[a:b]], metric)
        c = np.clip(np.floor((part - lo) * inv), 0, LEVELS - 1).astype(np.uint8)
        if f % 2:
            c = np.concatenate([c, np.zeros((c.shape[0], 1), np.uint8)], axis=1)
        packed = c[:, :w] | (c[:, w:] << 4)
        if whole:
            codes[a:b] = packed
        else:
            codes[rows[a:b]] = packed
    return Codes4(codes, step, lo)


def region(codes: Codes4, layout: Layout, at: int) -> np.ndarray:
    """The region's records (uint8, whole records, header last) for a region starting at byte ``at``."""
    n_items, w = codes.codes.shape
    f = layout.f
    table = np.concatenate([codes.step, codes.lo]).astype("<f4").tobytes()
    c = -(-(at + len(table)) // ALIGN) * ALIGN - at
    body = table + bytes(c - len(table)) + np.ascontiguousarray(codes.codes).tobytes()
    return regions.records(body, layout.size, MAGIC, (VERSION << 16) | BITS, n_items, c, w, f)


def splice(buf: np.ndarray, n_roots: int, layout: Layout, codes: Codes4) -> np.ndarray:
    """``buf`` (a built forest) with a codes region inserted before the root copies."""
    return regions.splice(buf, n_roots, layout.size, lambda at: region(codes, layout, at))


def locate(
    i32: np.ndarray, layout: Layout, n_nodes: int, n_roots: int, n_items: int
) -> tuple[int, int] | None:
    """``(first record, records)`` of the codes region, or None when the file has none. Raises
    AnnFormatError when a header is there but does not fit the file."""
    found = regions.header(i32, layout, n_nodes, n_roots, n_items, MAGIC, HEADER_WORDS)
    if found is None:
        return None
    h, words = found
    version, bits = int(words[2]) >> 16, int(words[2]) & 0xFFFF
    if version != VERSION or bits != BITS:
        raise AnnFormatError(f"codes region version {version} with {bits}-bit codes is not supported "
                             f"(this reader knows version {VERSION}, {BITS} bits)")
    g_items, m, c, w, f = (int(v) for v in words[3:8])
    start = h - m
    fits = (g_items == n_items and f == layout.f and w == (f + 1) // 2 and m >= 0 and start >= n_items
            and 8 * f <= c and c + n_items * w <= m * layout.size)
    if layout.metric not in CODE_METRICS or not fits:
        raise AnnFormatError(
            f"codes header at record {h} does not fit the file (metric {layout.metric!r}, items {g_items} "
            f"vs {n_items}, f {f} vs {layout.f}, row width {w}, {m} records)")
    return start, m


def views(
    raw: np.ndarray, layout: Layout, start: int, records: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy views of a region ``locate`` found: ``(codes, table)``, the codes as one flat
    uint8 array (row i at ``i * w``) and the float32 table ``step`` then ``lo``. Refuses a table
    holding NaN, infinity or a negative step (a damaged file: the ranking would be garbage)."""
    s = layout.size
    at, end = start * s, (start + records) * s
    f = layout.f
    c = int(np.ndarray(1, "<i4", buffer=raw, offset=end + 20)[0])
    table = np.ndarray(2 * f, "<f4", buffer=raw, offset=at)
    if not np.isfinite(table).all() or (table[:f] < 0).any():
        raise AnnFormatError(f"codes region at record {start} holds a non-finite or negative quantiser "
                             "step: corrupt file")
    codes = np.ndarray(n_items * ((f + 1) // 2), np.uint8, buffer=raw, offset=at + c)
    return codes, table
