"""The ``ann`` stage of ``backbeat demo``: build, publish, serve from the blobs port, query."""

from __future__ import annotations

import time
from typing import Any

BUCKET = "backbeat-ann"
OBJECT = "demo/embeddings.ann"


def run(ctx: Any) -> dict[str, Any]:
    """Build an index of 20,000 synthetic 32-d vectors, publish it, load it back the way a serving
    function does (download once per generation, then mmap), and measure recall and speed."""
    import numpy as np

    from backbeat.ann import AnnIndex
    from backbeat.ann.blobs import open_published, publish

    rng = np.random.default_rng(2026)
    f, n, n_q, k = 32, 20_000, 200, 10
    centers = rng.standard_normal((200, f)) * 1.2
    x = (centers[rng.integers(0, 200, n)] + rng.standard_normal((n, f))).astype(np.float32)
    queries = (centers[rng.integers(0, 200, n_q)] + rng.standard_normal((n_q, f))).astype(np.float32)

    start = time.perf_counter()
    index = AnnIndex(f, "angular")
    index.set_seed(1)
    index.add_items(x)
    index.build(10)
    path = ctx.workdir / "ann" / "embeddings.ann"
    index.save(path)
    build_s = time.perf_counter() - start
    index.unload()

    info = publish(path, ctx.platform.blobs, BUCKET, OBJECT, f=f, metric="angular")
    cache = ctx.workdir / "ann" / "cache"
    served, first = open_published(ctx.platform.blobs, BUCKET, OBJECT, cache)
    again, second = open_published(ctx.platform.blobs, BUCKET, OBJECT, cache)
    assert first["downloaded"] and not second["downloaded"], "second open must reuse the local copy"
    again.unload()

    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(qn @ xn.T), axis=1)[:, :k]

    served_graph = served.has_graph
    served.query(queries[:2], k, search_k=2000)  # compile (or load from numba's cache) before timing
    start = time.perf_counter()
    ids, _ = served.query(queries, k, search_k=2000)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    single = [served.get_nns_by_vector(q, k, search_k=2000) for q in queries[:50]]
    single_s = time.perf_counter() - start
    trees = AnnIndex(f, "angular")
    trees.load(first["path"], graph=False)  # the same file searched the way annoy searches it
    trees.query(queries[:2], k, search_k=2000)
    start = time.perf_counter()
    annoy_way = [trees.get_nns_by_vector(q, k, search_k=2000) for q in queries[:50]]
    trees_s = time.perf_counter() - start
    trees.unload()

    def recall_of(found: list[list[int]], want: list[list[int]]) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, want, strict=True)]))

    recall = recall_of(ids.tolist(), truth.tolist())
    recall_single = recall_of(single, truth[:50].tolist())
    recall_trees = recall_of(annoy_way, truth[:50].tolist())
    served.unload()
    ctx.console.print(
        f"ann: {n} items, generation {info.generation}, graph={served_graph}: recall@{k} {recall:.3f} "
        "batched "
        f"({n_q / batch_s:,.0f} q/s), {recall_single:.3f} one at a time ({50 / single_s:,.0f} q/s); "
        f"annoy's tree search on the same file: {recall_trees:.3f} ({50 / trees_s:,.0f} q/s)")
    return {
        "items": n,
        "build_s": round(build_s, 2),
        "bytes": info.size,
        "recall@10": round(recall, 3),
        "batch_qps": round(n_q / batch_s),
        "single_qps": round(50 / single_s),
        "graph": served_graph,
        "trees_only_recall@10": round(recall_trees, 3),
        "trees_only_qps": round(50 / trees_s),
    }
