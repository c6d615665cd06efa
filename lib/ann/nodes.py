"""Zero-copy numpy views over the node records of an ``.ann`` buffer (mmap or bytes).

Every view is strided over the one buffer, so many processes mapping the same file share its
pages: nothing here copies the index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backbeat.ann.layout import Layout


class NodeViews:
    """Strided views of the fields of every record in ``buf`` for ``layout``."""

    def __init__(self, buf: Any, layout: Layout, n_nodes: int) -> None:
        s = layout.size
        self.layout = layout
        self.n_nodes = n_nodes
        self.K = layout.K

        def view(offset: int, dtype: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
            return np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset, strides=strides)

        self.ndesc = view(0, "<i4", (n_nodes,), (s,))
        self.children = view(layout.off_children, "<i4", (n_nodes, 2), (s, 4))
        self.leaves = view(layout.off_children, "<i4", (n_nodes, self.K), (s, 4))
        if layout.metric == "hamming":
            self.v = view(layout.off_v, "<u8", (n_nodes, layout.words), (s, 8))
        else:
            self.v = view(layout.off_v, "<f4", (n_nodes, layout.f), (s, 4))
        self.a = view(layout.off_a, "<f4", (n_nodes,), (s,)) if layout.off_a is not None else None
        self.norm = view(layout.off_norm, "<f4", (n_nodes,), (s,)) if layout.off_norm is not None else None
        df = layout.off_dot_factor
        self.dot_factor = view(df, "<f4", (n_nodes,), (s,)) if df is not None else None
        self.built = view(layout.off_built, "u1", (n_nodes,), (s,)) if layout.off_built is not None else None


def find_roots(views: NodeViews) -> tuple[list[int], int]:
    """Annoy's own root discovery, quirks included (so ``get_n_trees`` and the default search_k
    match): scan back from the end while ``n_descendants`` equals the last record's; drop the last
    one found when it is the original of the first copy."""
    nd = views.ndesc
    roots: list[int] = []
    m = -1
    first = True
    for i in range(views.n_nodes - 1, -1, -1):
        k = int(nd[i])
        if first or k == m:
            roots.append(i)
            m = k
            first = False
        else:
            break
    if len(roots) > 1 and int(views.children[roots[0], 0]) == int(views.children[roots[-1], 0]):
        roots.pop()
    return roots, m
