"""Add a neighbour graph to an ``.ann`` file annoy (or Backbeat without a graph) wrote.

Why: teams switching from annoy have files built by pipelines they do not want to rerun; the item
vectors are all in the file, so the graph can be built from them and spliced in where annoy never
looks (see ``backbeat.ann.graph``). The items and trees stay byte for byte what they were: annoy
keeps answering from the new file exactly as from the old one, and Backbeat walks the graph.

A file with a graph in the region version 1 (Backbeat before the packed lists and codes) gets the
same edges rewritten as version 2, plus the codes made from its vectors: no graph build, and its
queries walk on the codes (1.7-2x the queries per second on GloVe-50, docs/ann.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backbeat.ann import graph as G
from backbeat.ann import regions
from backbeat.ann.errors import AnnStateError


def add_graph(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    f: int,
    metric: str,
    *,
    n_jobs: int = -1,
    seed: int = 1,
    dot_layout: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``dst``: the index file ``src`` (dimension ``f``, ``metric``) with a neighbour graph
    added (or its version 1 graph rewritten as version 2), then check that it loads with the
    graph. Returns ``AnnIndex.info()`` of the new file.

    Refused with ``AnnStateError``: a file that already has a current graph, hamming (no graph),
    an index of fewer than two items, and ``dst`` naming ``src`` (the old file stays as it was
    until the new one is complete; write elsewhere and rename)."""
    from backbeat.ann.build import leaf_orders
    from backbeat.ann.index import AnnIndex, _write_atomic

    src_p, dst_p = Path(src), Path(dst)
    if dst_p.exists() and src_p.exists() and dst_p.resolve() == src_p.resolve():
        raise AnnStateError(f"ann graph: the output {dst_p} is the input; write a new file")
    index = AnnIndex(f, metric)
    index.load(src_p, dot_layout=dot_layout, graph=False)
    try:
        layout = index.layout
        found = index._graph
        raw = np.fromfile(src_p, np.uint8)
        if found is not None and G.region_version(raw, layout, found[0], found[1]) != 1:
            raise AnnStateError(f"ann graph: {src_p} already has a neighbour graph")
        if not G.supported(layout):
            raise AnnStateError(f"ann graph: no neighbour graph for metric {metric!r} with f={f}")
        views = index._views
        assert views is not None
        n_items = index.get_n_items()
        present = np.asarray(views.ndesc[:n_items]) == 1  # holes (ids never added) have 0
        if int(present.sum()) < 2:
            raise AnnStateError(f"ann graph: {src_p} holds fewer than two items")
        x = np.zeros((n_items, f), np.float32)
        x[present] = np.asarray(views.v[:n_items])[present]
        n_roots = index.get_n_trees()
        coded = index._codes  # 4-bit codes (a forest Backbeat built without a graph): the graph
    finally:  # region takes their place (it carries codes of its own)
        index.unload()
    if coded is not None:
        raw = regions.drop(raw, layout.size, *coded)
    if found is not None:
        start, records, degree = found
        if progress:
            progress("graph: version 1 region rewritten as version 2 (same edges, codes added)")
        _, ids, _, _ = G.lists(raw, layout, start, records, degree, n_items, f)
        adj = ids.reshape(n_items, degree)  # version 1: the matrix itself, -1 after the last edge
        raw = regions.drop(raw, layout.size, start, records)
        codes = G.codes_of(x, present, layout.metric)
    else:
        if progress:
            progress("graph: leaf orders")
        params = G.GraphParams()
        orders = leaf_orders(x, present, layout, params.init_trees, seed)
        adj, codes = G.build_graph_and_codes(x, present, orders, layout, params, seed=seed,
                                             progress=progress, n_jobs=n_jobs)
    _write_atomic(dst_p, G.splice(raw, n_roots, layout, adj, codes))
    check = AnnIndex(f, metric)
    check.load(dst_p, dot_layout=dot_layout)
    try:
        if not check.has_graph or check.get_n_items() != n_items or check.get_n_trees() != n_roots:
            raise AnnStateError(f"ann graph: {dst_p} did not load back with its graph")  # pragma: no cover
        return check.info()
    finally:
        check.unload()
