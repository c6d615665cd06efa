"""Rewriting dot-metric files between annoy's two dot node layouts (see ``backbeat.ann.layout``).

``v1`` -> ``v2`` inserts the squared max norm and the ``built`` flag into every item; split nodes
keep their plane and ``dot_factor``; leaf id lists are moved over whole. ``v2`` -> ``v1`` drops
them again. Both directions keep every id, so the same searches give the same answers as long as
the split nodes' ``dot_factor`` is 0 (Backbeat writes it so; annoy 1.17.3's margin adds its
square, annoy's later layout ignores it). A Backbeat neighbour graph or codes region in ``src`` is
left out: the converted file is meant for annoy's readers (rebuild to get it back).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from backbeat.ann.errors import AnnFormatError
from backbeat.ann.layout import Layout, layout_for


def convert_dot_layout(src: str | os.PathLike[str], dst: str | os.PathLike[str], f: int, to: str) -> None:
    """Write ``src`` (a dot index of dimension ``f``) to ``dst`` in dot layout ``to``."""
    if to not in ("v1", "v2"):
        raise AnnFormatError(f"unknown dot layout {to!r}")
    frm = "v1" if to == "v2" else "v2"
    a, b = layout_for("dot", f, frm), layout_for("dot", f, to)
    data = np.fromfile(src, np.uint8)
    if data.size % a.size:
        raise AnnFormatError(
            f"{src}: size {data.size} is not a multiple of the dot {frm} node ({a.size} bytes)")
    n = data.size // a.size
    rec = _without_graph(data.reshape(n, a.size), a)
    n = rec.shape[0]
    out = np.zeros((n, b.size), np.uint8)
    nd = rec[:, :4].copy().view("<i4")[:, 0]
    items = nd == 1
    leaf = (nd > 1) & (nd <= min(a.K, b.K))
    split = nd > a.K
    if ((nd > b.K) & (nd <= a.K)).any():
        raise AnnFormatError(f"{src}: a leaf holds more ids than a dot {to} node can store")
    # header: n_descendants + children + dot_factor (same offsets in both layouts)
    out[:, :16] = rec[:, :16]
    out[split | items, b.off_v:] = rec[split | items, a.off_v:a.off_v + 4 * f]
    ids_bytes = rec[leaf, 4:4 + 4 * min(a.K, b.K)]
    out[leaf, 4:4 + ids_bytes.shape[1]] = ids_bytes
    if to == "v2":
        # v2 stores up to K2 > K1 ids in a leaf: a v1 split node that small is read as a leaf by
        # annoy's v2 code, so it becomes one, listing the items of its subtree
        children = rec[:, 4:12].copy().view("<i4")
        n_items = int(nd[-1]) if n else 0
        for node in np.flatnonzero((nd > a.K) & (nd <= b.K)):
            found: list[int] = []
            stack = [int(c) for c in children[node]]
            while stack:
                i = stack.pop()
                if nd[i] == 1 and i < n_items:
                    found.append(i)
                elif nd[i] <= a.K:
                    found.extend(int(j) for j in rec[i, 4:4 + 4 * nd[i]].copy().view("<i4"))
                else:
                    stack.extend(int(c) for c in children[i])
            out[node, 4:] = 0
            ids = np.asarray(sorted(found), "<i4").tobytes()
            out[node, 4:4 + len(ids)] = np.frombuffer(ids, np.uint8)
        v = rec[items, a.off_v:a.off_v + 4 * f].copy().view("<f4")
        df = rec[items, 12:16].copy().view("<f4")[:, 0]
        max_sq = np.float32((np.einsum("ij,ij->i", v, v) + df * df).max()) if v.size else np.float32(0)
        out[items, 16:20] = np.frombuffer(max_sq.tobytes(), np.uint8)
        out[items, 20] = 1
    Path(dst).write_bytes(out.tobytes())



def _without_graph(rec: np.ndarray, layout: Layout) -> np.ndarray:
    """The records minus a Backbeat region (a graph, ``backbeat.ann.graph``, or 4-bit codes,
    ``backbeat.ann.codes``), if there is one: its records are not nodes and cannot be converted."""
    from backbeat.ann import codes as C
    from backbeat.ann import graph as G
    from backbeat.ann import regions
    from backbeat.ann.nodes import NodeViews, find_roots

    n = rec.shape[0]
    if not n:
        return rec
    flat = rec.reshape(-1)
    roots, m = find_roots(NodeViews(flat, layout, n))
    loc = G.locate(flat.view("<i4"), layout, n, len(roots), max(m, 0))
    if loc is None:
        loc = C.locate(flat.view("<i4"), layout, n, len(roots), max(m, 0))
    if loc is None:
        return rec
    return regions.drop(flat, layout.size, loc[0], loc[1]).reshape(-1, layout.size)
