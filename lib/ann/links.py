"""The forest's links checked once before a search follows them.

Why: annoy's search, and the compiled ones here, trust every link of a tree. In a damaged file a
leaf id or a child index outside the file makes the search read outside the mapping (and write
the per-item "seen" stamp there), and a split whose child leads back to one of its ancestors makes
it loop forever: a serving process crashes or hangs on one bad record. One walk over every tree
from its root, before the first search, finds such a link and names it (~25 ms for the
150,000 tree records of a 10-tree GloVe-50 file, once per loaded index; annoy has no such check).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backbeat.ann.errors import AnnFormatError
from backbeat.ann.layout import Layout

OK, OUTSIDE, NOT_ITEM, LEAF_ID, TWICE, COUNT = range(6)


@njit(cache=True, nogil=True)
def _walk(i32, s4, ch4, K, n_items, n_nodes, roots):  # pragma: no cover - compiled
    """``(problem, node, value)`` of the first bad link met walking every tree from its root, or
    ``(OK, -1, 0)``. Items are the first ``n_items`` records (``n_descendants`` 1); a tree node is
    reached once (annoy's trees share no node), a split (``n_descendants > K``) links to two
    records, a leaf lists its ``n_descendants`` item ids (none in an empty index's roots)."""
    seen = np.zeros(n_nodes, np.uint8)
    stack = np.empty(64, np.int64)
    for r in range(roots.shape[0]):
        stack[0] = roots[r]
        top = 1
        while top > 0:
            top -= 1
            j = stack[top]
            nd = i32[j * s4]
            if j < n_items:  # a split's side holding one item
                if nd != 1:
                    return NOT_ITEM, j, nd
                continue
            if seen[j]:
                return TWICE, j, 0
            seen[j] = 1
            base = j * s4 + ch4
            if nd > K:
                if top + 2 > stack.shape[0]:
                    grown = np.empty(2 * stack.shape[0], np.int64)
                    grown[:top] = stack[:top]
                    stack = grown
                for side in range(2):
                    c = i32[base + side]
                    if c < 0 or c >= n_nodes:
                        return OUTSIDE, j, c
                    stack[top] = c
                    top += 1
            elif nd >= 0:  # a leaf (0 items: the root of an empty index)
                for t in range(nd):
                    c = i32[base + t]
                    if c < 0 or c >= n_items:
                        return LEAF_ID, j, c
            else:
                return COUNT, j, nd
    return OK, -1, 0


def check_trees(i32: np.ndarray, layout: Layout, n_items: int, roots: list[int]) -> None:
    """Raise ``AnnFormatError`` naming the first bad link of the forest in ``i32`` (the file's
    records as int32 words)."""
    n_nodes = i32.shape[0] * 4 // layout.size
    if not roots or n_nodes == 0:
        return
    problem, node, value = _walk(i32, layout.size // 4, layout.off_children // 4, layout.K, n_items,
                                 n_nodes, np.asarray(roots, dtype=np.int64))
    if problem == OK:
        return
    why = {
        OUTSIDE: f"split {node} links to record {value}, outside the file's {n_nodes} records",
        NOT_ITEM: f"a split links to record {node}, which is not an item (n_descendants {value})",
        LEAF_ID: f"leaf {node} lists item {value}, outside 0..{n_items - 1}",
        TWICE: f"node {node} is reached twice: a tree loops back or shares a subtree",
        COUNT: f"node {node} has n_descendants {value}",
    }[problem]
    raise AnnFormatError(f"damaged tree: {why}")
