"""The per-thread compiled searches (``runners.py``): one query per call must give the batched
answer every time, across the kernels' stamp wraps, on many trees, and in several threads."""

from __future__ import annotations

import numpy as np
import pytest

from backbeat.ann import AnnIndex
from backbeat.ann.search import exact_nns

from .conftest import in_threads, vectors


def _index(tmp_path, n: int, trees: int, graph: bool) -> AnnIndex:
    x = vectors("euclidean", n, seed=5)
    built = AnnIndex(x.shape[1], "euclidean")
    built.set_seed(2)
    built.add_items(x)
    built.build(trees, graph=graph)
    built.save(tmp_path / "i.ann")
    index = AnnIndex(x.shape[1], "euclidean")
    index.load(tmp_path / "i.ann")
    assert index.has_graph == graph
    return index


@pytest.mark.parametrize("graph", [False, True])
def test_single_queries_agree_with_batched_ones_across_stamp_wraps(tmp_path, graph):
    # the tree kernel's stamps wrap after 16,383 queries, the graph's after 255. Two far apart
    # clusters: the first query marks cluster A's items, then only cluster B is searched until
    # the stamp wraps; a mark left from the first query would then hide A's items
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal((250, 16)) + 60, rng.standard_normal((250, 16)) - 60])
    built = AnnIndex(16, "euclidean")
    built.set_seed(2)
    built.add_items(x.astype(np.float32))
    built.build(4, graph=graph)
    built.save(tmp_path / "i.ann")
    index, ref = AnnIndex(16, "euclidean"), AnnIndex(16, "euclidean")
    index.load(tmp_path / "i.ann")
    ref.load(tmp_path / "i.ann")
    assert index.has_graph == graph
    qa = (rng.standard_normal(16) + 60).astype(np.float32)
    qb = (rng.standard_normal((37, 16)) - 60).astype(np.float32)
    first = index.get_nns_by_vector(qa, 5, search_k=120, include_distances=True)
    assert all(i < 250 for i in first[0])
    ids, dist = ref.query(qb, 5, 120)
    calls = (1 << 14) - 2 if not graph else 254  # the first query had stamp 1; A's next one wraps to 1
    for c in range(calls):
        got_ids, got_dist = index.get_nns_by_vector(qb[c % 37], 5, search_k=120, include_distances=True)
        assert got_ids == ids[c % 37].tolist(), c
        assert np.allclose(got_dist, dist[c % 37]), c
    assert index.get_nns_by_vector(qa, 5, search_k=120, include_distances=True) == first
    again = index.query(qb, 5, 120)[0]  # batched calls go on with the thread's stamps
    assert np.array_equal(again, ids)


def test_more_trees_than_the_first_heap_holds(tmp_path):
    # all roots enter the kernel's heap first; 600 trees outgrow its first allocation
    index = _index(tmp_path, 150, 600, False)
    assert index.get_n_trees() == 600
    for row in vectors("euclidean", 10, seed=8):
        want = exact_nns(index._views, index._roots, index.get_n_items(), row, 10, 3000)
        got = index.get_nns_by_vector(row, 10, search_k=3000, include_distances=True)
        assert got[0] == want[0]
        assert np.allclose(got[1], want[1], rtol=1e-5)


def test_non_finite_queries_are_refused_on_the_quick_path(tmp_path):
    index = _index(tmp_path, 200, 3, False)
    good = vectors("euclidean", 1, seed=9)[0]
    before = index.get_nns_by_vector(good, 5)
    bad = good.copy()
    bad[3] = np.nan
    with pytest.raises(Exception, match="component 3"):
        index.get_nns_by_vector(bad, 5)
    assert index.get_nns_by_vector(good, 5) == before  # the refused call left no trace
    many = np.stack([good, bad])
    with pytest.raises(Exception, match="row 1"):
        index.query(many, 5)


@pytest.mark.parametrize("graph", [False, True])
def test_threads_each_get_their_own_runner(tmp_path, graph):
    index = _index(tmp_path, 500, 5, graph)
    q = vectors("euclidean", 150, seed=10)
    expected = [index.get_nns_by_vector(row, 10, search_k=200) for row in q]

    def work() -> list[list[int]]:
        return [index.get_nns_by_vector(row, 10, search_k=200) for _ in range(3) for row in q]

    for out in in_threads(work):
        assert out == expected * 3


def test_single_query_state_is_laid_out_anew_as_k_and_search_k_grow(tmp_path):
    # one query at a time runs on a per-thread state sized for k answers and search_k candidates;
    # a larger k or search_k lays out a larger one, carrying the stamps: answers stay the batched
    # ones before, across and after each change, batched calls in between included
    index = _index(tmp_path, 700, 4, False)
    ref = AnnIndex(index.f, "euclidean")
    ref.load(tmp_path / "i.ann")
    q = vectors("euclidean", 12, seed=11)
    sizes = []
    for k, search_k in [(5, 40), (60, 40), (5, 3000), (200, -1), (5, 40)]:
        ids, dist = ref.query(q, k, search_k)
        for b, row in enumerate(q):
            got_ids, got_dist = index.get_nns_by_vector(row, k, search_k, include_distances=True)
            want = ids[b][ids[b] >= 0]
            assert got_ids == want.tolist(), (k, search_k, b)
            assert np.allclose(got_dist, dist[b][: len(want)]), (k, search_k, b)
        sizes.append(index._local.runner._state.shape[0])
        assert np.array_equal(index.query(q, k, search_k)[0], ids)
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3] == sizes[4]


def test_prefetching_leaves_the_answers_unchanged(tmp_path, monkeypatch):
    # records are prefetched only in files of PREFETCH_FROM bytes and more (a file the caches hold
    # gains nothing from it); the test files are small, so lower the bar to run that path too
    from backbeat.ann import _kernels

    small = _index(tmp_path, 900, 6, False)
    q = vectors("euclidean", 40, seed=12)
    want = [small.get_nns_by_vector(row, 10, 150, include_distances=True) for row in q]
    want_batched = small.query(q, 10, 150)
    assert small._compiled()["params"][16] == 0
    monkeypatch.setattr(_kernels, "PREFETCH_FROM", 0)
    index = AnnIndex(small.f, "euclidean")
    index.load(tmp_path / "i.ann")
    assert index._compiled()["params"][16] == 1
    assert [index.get_nns_by_vector(row, 10, 150, include_distances=True) for row in q] == want
    got = index.query(q, 10, 150)
    assert np.array_equal(got[0], want_batched[0]) and np.array_equal(got[1], want_batched[1])


def test_single_queries_beyond_the_states_candidate_room(tmp_path, monkeypatch):
    # a thread's state has room for CAND_ROOM candidates; past it the kernel allocates its own
    from backbeat.ann import _kernels, runners

    monkeypatch.setattr(runners, "CAND_ROOM", 260)
    index = _index(tmp_path, 800, 5, False)
    ref = AnnIndex(index.f, "euclidean")
    ref.load(tmp_path / "i.ann")
    q = vectors("euclidean", 10, seed=13)
    ids, dist = ref.query(q, 20, 2500)
    for b, row in enumerate(q):
        got_ids, got_dist = index.get_nns_by_vector(row, 20, 2500, include_distances=True)
        assert got_ids == ids[b].tolist()
        assert np.allclose(got_dist, dist[b])
    run = index._local.runner
    assert run._state[_kernels.ST_CAND + 1] == 260  # the candidates' room, not what they needed
