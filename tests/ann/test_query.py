"""The batched numpy search: right shapes, high recall against brute force, holes never returned."""

from __future__ import annotations

import numpy as np
import pytest

from backbeat.ann import AnnIndex

from .conftest import brute, dim, vectors


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot", "hamming"])
def test_batched_query_recall_against_brute_force(metric, tmp_path):
    x = vectors(metric, 4000, seed=11)
    present = np.arange(4000) % 13 != 0
    idx = AnnIndex(dim(metric), metric)
    idx.set_seed(3)
    idx.add_items(x[present], ids=np.flatnonzero(present))
    idx.build(10)
    idx.save(tmp_path / "i.ann")
    q = vectors(metric, 60, seed=12)
    ids, dist = idx.query(q, 10, search_k=4000)
    assert ids.shape == dist.shape == (60, 10) and ids.dtype == np.int64 and dist.dtype == np.float32
    assert not np.isin(ids, np.flatnonzero(~present)).any()
    truth = np.stack([brute(metric, x, present, row, 10) for row in q])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist(), strict=True)])
    floor = {"dot": 0.6, "hamming": 0.5}.get(metric, 0.95)
    assert recall >= floor, recall
    # distances are annoy's, in ascending order (descending dot products for dot)
    for row in range(5):
        ref_ids, ref_d = idx.get_nns_by_vector(q[row], 10, search_k=10**6, include_distances=True)
        common = {i: d for i, d in zip(ref_ids, ref_d, strict=True)}
        for i, d in zip(ids[row], dist[row], strict=True):
            if int(i) in common:
                assert d == pytest.approx(common[int(i)], rel=1e-4, abs=1e-4)
        order = -dist[row] if metric == "dot" else dist[row]
        assert (np.diff(order) >= -1e-6).all()
    # one row at a time gives the same answer as the batch
    one_ids, _ = idx.query(q[3], 10, search_k=4000)
    assert one_ids[0].tolist() == ids[3].tolist()


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_search_k_covering_every_leaf_slot_gives_the_exact_answer(metric):
    """From ``search_k = trees x items`` annoy collects every item, so its answer is exact; the
    kernel then scores the items in file order instead of walking the trees: the exact top k (and
    annoy's distances, the same as one slot below, where the trees are still walked)."""
    x = vectors(metric, 1200, seed=41)
    present = np.arange(1200) % 9 != 4
    idx = AnnIndex(dim(metric), metric)
    idx.set_seed(5)
    idx.add_items(x[present], ids=np.flatnonzero(present))
    idx.build(6, graph=False)
    every_slot = 6 * int(present.sum())
    q = vectors(metric, 25, seed=42)
    truth = np.stack([brute(metric, x, present, row, 10) for row in q])
    exact = 0
    for row, want in zip(q, truth, strict=True):
        ids, dist = idx.get_nns_by_vector(row, 10, search_k=every_slot, include_distances=True)
        walked = idx.get_nns_by_vector(row, 10, search_k=every_slot - 1, include_distances=True)
        assert ids == walked[0] and dist == pytest.approx(walked[1], rel=1e-6, abs=1e-6)
        assert not set(ids) & set(np.flatnonzero(~present).tolist())
        exact += ids == want.tolist()
    assert exact >= 24  # brute force's float64 may order a near tie the other way
    for votes in (1, 3):
        ids, _ = idx.query(q, 10, search_k=every_slot, votes=votes)
        assert ids.tolist() == [idx.get_nns_by_vector(row, 10, search_k=every_slot) for row in q]


def test_more_candidates_more_recall(annoy_files):
    path, x, present = annoy_files["euclidean"]
    idx = AnnIndex(16, "euclidean")
    idx.load(path)  # a file written by annoy
    q = vectors("euclidean", 80, seed=21)
    truth = [set(brute("euclidean", x, present, row, 10).tolist()) for row in q]
    recalls = []
    for search_k in (40, 400, 4000):
        ids, _ = idx.query(q, 10, search_k=search_k)
        recalls.append(np.mean([len(set(r.tolist()) & t) / 10 for r, t in zip(ids, truth, strict=True)]))
    assert recalls[0] < recalls[2] and recalls[2] >= 0.97, recalls


def test_query_with_k_beyond_the_index():
    idx = AnnIndex(3, "euclidean")
    idx.add_items(np.eye(3, dtype=np.float32))
    idx.build(2)
    ids, dist = idx.query(np.zeros((1, 3)), 5)
    assert sorted(ids[0, :3].tolist()) == [0, 1, 2] and ids[0, 3:].tolist() == [-1, -1]
    np.testing.assert_allclose(dist[0, :3], 1.0, rtol=1e-6)
    assert np.isinf(dist[0, 3:]).all()


@pytest.mark.parametrize("metric", ["angular", "euclidean"])
def test_numpy_beam_search_without_numba(metric, monkeypatch):
    """The vectorised numpy fallback (used when numba is missing) keeps the contract and recall."""
    x = vectors(metric, 3000, seed=31)
    present = np.ones(3000, bool)
    idx = AnnIndex(dim(metric), metric)
    idx.set_seed(5)
    idx.add_items(x)
    idx.build(8, graph=False)
    q = vectors(metric, 40, seed=32)
    fast_ids, _ = idx.query(q, 10, search_k=3000)
    monkeypatch.setattr(AnnIndex, "_compiled", lambda self: None)
    monkeypatch.setattr(AnnIndex, "_graph_state", lambda self: None)
    ids, dist = idx.query(q, 10, search_k=3000)
    assert ids.shape == dist.shape == (40, 10)
    truth = [set(brute(metric, x, present, row, 10).tolist()) for row in q]
    recall = np.mean([len(set(r.tolist()) & t) / 10 for r, t in zip(ids, truth, strict=True)])
    fast = np.mean([len(set(r.tolist()) & t) / 10 for r, t in zip(fast_ids, truth, strict=True)])
    assert recall >= 0.95 and fast >= 0.95, (recall, fast)
