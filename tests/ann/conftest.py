"""Shared data for the ann tests: small real files written by the reference ``annoy`` package."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

METRICS = ["angular", "euclidean", "manhattan", "dot", "hamming"]


def dim(metric: str) -> int:
    return 70 if metric == "hamming" else 16  # hamming: 70 bits -> two 64-bit words


def vectors(metric: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if metric == "hamming":
        return (rng.random((n, dim(metric))) > 0.5).astype(np.float32)
    centers = rng.standard_normal((20, dim(metric))) * 3
    return (centers[rng.integers(0, 20, n)] + rng.standard_normal((n, dim(metric)))).astype(np.float32)


def in_threads(work: Callable[[], Any], n: int = 4) -> list[Any]:
    """Run ``work`` in ``n`` threads at once; their results (an exception fails the test)."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            results[t] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


def assert_batched_is_single(index: Any, q: np.ndarray, k: int, search_k: int, rtol: float,
                             atol: float = 0.0) -> None:
    """``index.query`` gives, row by row, the ids of ``get_nns_by_vector`` and its distances
    (within ``rtol``/``atol``)."""
    ids, dist = index.query(q, k, search_k=search_k)
    for row, v in enumerate(q):
        got, d = index.get_nns_by_vector(v, k, search_k=search_k, include_distances=True)
        assert ids[row].tolist() == got
        np.testing.assert_allclose(dist[row], d, rtol=rtol, atol=atol)


def brute(metric: str, x: np.ndarray, present: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    ids = np.flatnonzero(present)
    xs = x[ids]
    if metric == "angular":
        d = -(xs @ q) / (np.linalg.norm(xs, axis=1) * np.linalg.norm(q))
    elif metric == "dot":
        d = -(xs @ q)
    elif metric == "euclidean":
        d = ((xs - q) ** 2).sum(1)
    elif metric == "manhattan":
        d = np.abs(xs - q).sum(1)
    else:
        d = (xs != q).sum(1)
    return ids[np.argsort(d, kind="stable")[:k]]


@pytest.fixture(scope="session")
def annoy_files(tmp_path_factory):
    """One annoy-written file per metric, 1,500 ids with every 7th id a hole, 8 trees."""
    import annoy

    out = {}
    root = tmp_path_factory.mktemp("annoy")
    for metric in METRICS:
        x = vectors(metric, 1500)
        present = np.arange(1500) % 7 != 3
        a = annoy.AnnoyIndex(dim(metric), metric)
        a.set_seed(42)
        for i in np.flatnonzero(present):
            a.add_item(int(i), x[i].tolist())
        a.build(8)
        path = root / f"{metric}.ann"
        a.save(str(path))
        out[metric] = (path, x, present)
    return out


def write_version_1(index: Any, src: Any, dst: Any) -> None:
    """Write ``dst``: file ``src`` (``index``, built with a graph, serves it) with its graph region
    in version 1, an n x R matrix with -1 after the last edge and no codes, as Backbeat wrote it
    before the packed lists: the files older sessions left behind."""
    from backbeat.ann import graph as G

    start, records, degree = index._graph
    s = index.layout.size
    n = index.get_n_items()
    raw = np.fromfile(src, np.uint8)
    off, ids, _, _ = G.lists(raw, index.layout, start, records, degree, n, index.f)
    adj = np.full((n, degree), -1, np.int32)
    for i in range(n):
        adj[i, : off[i + 1] - off[i]] = ids[off[i]: off[i + 1]]
    old = G.region_v1(adj, index.layout)
    np.concatenate([raw[: start * s], old, raw[(start + records + 1) * s:]]).tofile(dst)
