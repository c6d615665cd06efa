"""The neighbour graph inside ``.ann`` files: annoy still reads the file, queries get faster, and a
damaged graph region is refused."""

from __future__ import annotations

import annoy
import numpy as np
import pytest

from backbeat.ann import AnnIndex
from backbeat.ann import graph as G
from backbeat.ann.build import leaf_orders
from backbeat.ann.errors import AnnFormatError, AnnStateError

from .conftest import assert_batched_is_single, brute, in_threads, vectors, write_version_1

N = 4000
GRAPH_METRICS = ["angular", "euclidean", "manhattan", "dot"]


def built(metric: str, graph: bool | None, tmp_path, n: int = N, name: str = "x.ann") -> tuple[AnnIndex, str]:
    x = vectors(metric, n)
    index = AnnIndex(x.shape[1], metric)
    index.set_seed(7)
    index.add_items(x)
    index.build(4, graph=graph, codes=False)  # "plain": the forest alone
    path = str(tmp_path / name)
    index.save(path)
    return index, path


@pytest.fixture(scope="module", params=GRAPH_METRICS)
def pair(request, tmp_path_factory):
    """The same items and seed built with and without the graph."""
    tmp = tmp_path_factory.mktemp(request.param)
    with_graph, gpath = built(request.param, None, tmp, name="graph.ann")
    plain, ppath = built(request.param, False, tmp, name="plain.ann")
    return request.param, with_graph, gpath, plain, ppath


def test_graph_is_built_by_default_above_the_threshold_only(tmp_path):
    big, _ = built("euclidean", None, tmp_path, n=G.MIN_ITEMS)
    small, _ = built("euclidean", None, tmp_path, n=G.MIN_ITEMS - 1, name="small.ann")
    assert big.has_graph and big.info()["graph"]["degree"] == G.GraphParams().degree
    assert not small.has_graph and small.info()["graph"] is None


def test_the_forest_part_is_unchanged_and_annoy_answers_alike(pair):
    metric, with_graph, gpath, plain, ppath = pair
    g = np.fromfile(gpath, np.uint8)
    p = np.fromfile(ppath, np.uint8)
    s = with_graph.layout.size
    start, m, _ = with_graph._graph
    n_roots = with_graph.get_n_trees()
    # the graph file is the plain file with the region inserted before the root copies
    assert g.size == p.size + (m + 1) * s
    assert np.array_equal(g[: start * s], p[: start * s])
    assert np.array_equal(g[g.size - n_roots * s:], p[p.size - n_roots * s:])
    a_g = annoy.AnnoyIndex(with_graph.f, metric)
    a_g.load(gpath)
    a_p = annoy.AnnoyIndex(plain.f, metric)
    a_p.load(ppath)
    assert (a_g.get_n_items(), a_g.get_n_trees()) == (a_p.get_n_items(), a_p.get_n_trees()) == (N, 4)
    q = vectors(metric, 20, seed=5)
    for v in q:
        want = a_p.get_nns_by_vector(v.tolist(), 10, search_k=500)
        assert a_g.get_nns_by_vector(v.tolist(), 10, search_k=500) == want


def test_graph_search_finds_the_true_neighbours(pair):
    metric, with_graph, gpath, _, _ = pair
    index = AnnIndex(with_graph.f, metric)
    index.load(gpath)
    trees = AnnIndex(with_graph.f, metric)
    trees.load(gpath, graph=False)
    assert index.has_graph and not trees.has_graph
    x = vectors(metric, N)
    present = np.ones(N, bool)
    q = vectors(metric, 50, seed=3)  # other cluster centres than the items: a hard case for graphs
    hits = 0
    for v in q:
        truth = set(brute(metric, x, present, v, 10).tolist())
        hits += len(set(index.get_nns_by_vector(v, 10, search_k=1000)) & truth)
    floor = 0.85 if metric == "dot" else 0.93  # dot: inner product is not a metric; still close
    assert hits / (10 * len(q)) >= floor
    # queries like the items (the usual case): clearly better than the trees for a small search_k
    near = x[::97] + np.random.default_rng(1).normal(0, 0.3, (len(x[::97]), x.shape[1])).astype(np.float32)
    graph_hits = tree_hits = 0
    for v in near:
        truth = set(brute(metric, x, present, v, 10).tolist())
        graph_hits += len(set(index.get_nns_by_vector(v, 10, search_k=100)) & truth)
        tree_hits += len(set(trees.get_nns_by_vector(v, 10, search_k=100)) & truth)
    assert graph_hits >= tree_hits + len(near), (graph_hits, tree_hits)  # +0.1 recall at least


@pytest.mark.parametrize("metric", ["angular", "euclidean"])
def test_a_large_forest_seeds_the_walk_from_a_few_trees_and_still_finds_far_clusters(metric):
    x = vectors(metric, N)
    index = AnnIndex(x.shape[1], metric)
    index.set_seed(5)
    index.add_items(x)
    index.build(3 * G.SEED_TREES, graph=True)
    assert index.get_n_trees() == 3 * G.SEED_TREES
    present = np.ones(N, bool)
    q = vectors(metric, 50, seed=3)  # queries between the clusters, as above
    hits = sum(len(set(index.get_nns_by_vector(v, 10, search_k=1000))
                   & set(brute(metric, x, present, v, 10).tolist())) for v in q)
    assert hits / (10 * len(q)) >= 0.93
    ids, _ = index.query(q, 10, 1000)
    assert [row.tolist() for row in ids] == [index.get_nns_by_vector(v, 10, search_k=1000) for v in q]


def test_distances_and_batches_agree_with_single_queries(pair):
    metric, with_graph, gpath, _, _ = pair
    index = AnnIndex(with_graph.f, metric)
    index.load(gpath)
    assert_batched_is_single(index, vectors(metric, 30, seed=9), 5, 800, rtol=1e-5, atol=1e-5)
    item = 123
    got, d = index.get_nns_by_item(item, 5, include_distances=True, search_k=800)
    if metric != "dot":  # by inner product an item is not always its own best match
        assert got[0] == item
    for j, dj in zip(got, d, strict=True):
        assert dj == pytest.approx(index.get_distance(item, j), rel=1e-4, abs=1e-4)


def test_graph_false_replays_annoy_exactly(pair):
    metric, with_graph, gpath, _, _ = pair
    index = AnnIndex(with_graph.f, metric)
    index.load(gpath, graph=False)
    assert not index.has_graph
    ref = annoy.AnnoyIndex(with_graph.f, metric)
    ref.load(gpath)
    for v in vectors(metric, 20, seed=11):
        assert index.get_nns_by_vector(v, 10, search_k=300) == ref.get_nns_by_vector(v.tolist(), 10, 300)


def test_threads_share_one_index(pair):
    metric, with_graph, gpath, _, _ = pair
    index = AnnIndex(with_graph.f, metric)
    index.load(gpath)
    q = vectors(metric, 200, seed=13)
    expected = index.query(q, 10, 1000)[0]

    def work() -> np.ndarray:
        out = np.empty_like(expected)
        for r in range(len(q)):
            out[r] = index.query(q[r], 10, 1000)[0][0]
        return out

    for out in in_threads(work):
        assert np.array_equal(out, expected)


def test_holes_in_the_id_range_never_come_back(tmp_path):
    x = vectors("euclidean", 3000)
    index = AnnIndex(x.shape[1], "euclidean")
    index.set_seed(1)
    ids = np.arange(3000) * 2 + 5  # ids 0..4 and every odd id are holes
    index.add_items(x, ids)
    index.build(3, graph=True)
    assert index.has_graph
    got = index.query(x[:100], 10, 1000)[0]
    assert set(got.ravel().tolist()) <= set(ids.tolist())
    assert (got[:, 0] == ids[:100]).mean() > 0.97


def test_hamming_has_no_graph(tmp_path):
    x = vectors("hamming", 3000)
    index = AnnIndex(x.shape[1], "hamming")
    index.add_items(x)
    with pytest.raises(AnnStateError, match="no neighbour graph for metric 'hamming'"):
        index.build(2, graph=True)


def _damaged(gpath: str, tmp_path, index: AnnIndex, word: int, value: int) -> str:
    data = np.fromfile(gpath, np.uint8)
    start, m, _ = index._graph
    s = index.layout.size
    header = (start + m) * s
    data[header + 4 * word: header + 4 * word + 4] = np.array([value], "<i4").view(np.uint8)
    out = tmp_path / "damaged.ann"
    data.tofile(out)
    return str(out)


def test_a_damaged_graph_header_is_refused(tmp_path):
    index, gpath = built("angular", True, tmp_path)
    bad = _damaged(gpath, tmp_path, index, 2, (9 << 16) | 48)  # version 9
    with pytest.raises(AnnFormatError, match="graph region version 9"):
        AnnIndex(index.f, "angular").load(bad)
    bad = _damaged(gpath, tmp_path, index, 3, 77)  # wrong item count
    with pytest.raises(AnnFormatError, match="does not fit the file"):
        AnnIndex(index.f, "angular").load(bad)
    # annoy itself never looks there: the damaged file still answers in annoy
    a = annoy.AnnoyIndex(index.f, "angular")
    a.load(bad)
    assert a.get_n_items() == N


def test_corrupt_graph_ids_are_refused_before_they_are_followed(tmp_path):
    index, gpath = built("euclidean", True, tmp_path)
    data = np.fromfile(gpath, np.uint8)
    start = index._graph[0] * index.layout.size
    ids_at = start + (N + 1) * 4  # the edge lists follow the N + 1 offsets
    data[ids_at + 40: ids_at + 44] = np.array([10_000_000], "<i4").view(np.uint8)
    bad = tmp_path / "bad-ids.ann"
    data.tofile(bad)
    loaded = AnnIndex(index.f, "euclidean")
    loaded.load(bad)
    with pytest.raises(AnnFormatError, match="outside 0..3999: corrupt file"):
        loaded.get_nns_by_vector(vectors("euclidean", 1)[0], 5)
    # the trees still answer when the graph is ignored
    loaded.load(bad, graph=False)
    assert len(loaded.get_nns_by_vector(vectors("euclidean", 1)[0], 5)) == 5


@pytest.mark.parametrize("word, value", [(10, -5), (10, 10**8), (N, 2**30)])
def test_corrupt_graph_offsets_are_refused(tmp_path, word, value):
    """An offset out of order, past the lists or beyond the degree would send the walk outside
    the region: refused when the graph is first used, nothing read through it."""
    index, gpath = built("euclidean", True, tmp_path)
    data = np.fromfile(gpath, np.uint8)
    at = index._graph[0] * index.layout.size + 4 * word
    data[at: at + 4] = np.array([value], "<i4").view(np.uint8)
    bad = tmp_path / "bad-offsets.ann"
    data.tofile(bad)
    loaded = AnnIndex(index.f, "euclidean")
    loaded.load(bad)
    with pytest.raises(AnnFormatError, match="does not hold its lists and codes where its header says"):
        loaded.query(vectors("euclidean", 3), 5)


def test_a_damaged_codes_header_is_refused(tmp_path):
    index, gpath = built("angular", True, tmp_path)
    for word, value in [(5, 10**9), (6, 3), (7, int(np.array([np.nan], "<f4").view("<i4")[0]))]:
        bad = _damaged(gpath, tmp_path, index, word, value)  # codes past the region, too narrow, NaN scale
        loaded = AnnIndex(index.f, "angular")
        loaded.load(bad)
        with pytest.raises(AnnFormatError, match="corrupt file"):
            loaded.get_nns_by_vector(vectors("angular", 1)[0], 5)


@pytest.mark.parametrize("metric", GRAPH_METRICS)
def test_version_1_regions_still_load_and_answer(tmp_path, metric):
    """Files Backbeat wrote before the packed lists and codes (region version 1: an n x R matrix)
    load, and answer from the float vectors alone: same neighbours as the same graph in version 2
    finds at a wide beam."""
    index, gpath = built(metric, True, tmp_path)
    degree = index._graph[2]
    path = tmp_path / "v1.ann"
    write_version_1(index, gpath, path)
    v1 = AnnIndex(index.f, metric)
    v1.load(path)
    assert v1.has_graph and v1._graph[2] == degree
    q = vectors(metric, 20, seed=5)
    a, da = v1.query(q, 10, search_k=4000)
    b, db = index.query(q, 10, search_k=4000)
    assert (a == b).mean() >= 0.97
    assert np.allclose(da[a == b], db[a == b], rtol=1e-5, atol=1e-5)
    x = vectors(metric, N)
    hits = sum(len(set(a[r].tolist()) & set(brute(metric, x, np.ones(N, bool), q[r], 10).tolist()))
               for r in range(len(q)))
    assert hits / (10 * len(q)) >= 0.95


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_threads_build_the_same_graph(metric):
    """Blocks of one tree and pruning ranges touch disjoint rows: n_jobs changes speed only."""
    x = vectors(metric, 3000)
    present = np.ones(len(x), bool)
    layout = AnnIndex(x.shape[1], metric).layout
    orders = leaf_orders(x, present, layout, 4, 3)
    params = G.GraphParams(block=128, init_trees=4)
    one = G.build_graph(x, present, orders, layout, params, n_jobs=1)
    two = G.build_graph(x, present, orders, layout, params, n_jobs=2)
    assert np.array_equal(one, two)
    assert (one >= 0).sum(axis=1).min() >= 1


def test_leaf_blocks_and_the_refining_walk_find_the_near_neighbours(tmp_path):
    """Before pruning, the lists hold most of every item's true 10 nearest: from the leaf blocks of
    10 trees alone (with or without NN-descent rounds on top), and from the blocks of only 2 trees
    once the refining walk over the first graph has improved them."""
    x = vectors("euclidean", 3000)
    present = np.ones(len(x), bool)
    layout = AnnIndex(x.shape[1], "euclidean").layout
    orders = leaf_orders(x, present, layout, 10, 5)

    def share_found(**knobs: int) -> float:
        keep_all = G.GraphParams(degree=48, forward=48, candidates=48, block=256, alpha=1e9,
                                 forward_alpha=1e9, **knobs)  # no pruning: the 48 nearest listed
        adj = G.build_graph(x, present, orders, layout, keep_all)
        hits = 0
        for i in range(0, 3000, 30):
            truth = set(brute("euclidean", x, present, x[i], 11).tolist()) - {i}
            hits += len(truth & set(adj[i].tolist()))
        return hits / (10 * 100)

    assert share_found(init_trees=10, refine=0) >= 0.9
    assert share_found(init_trees=10, refine=0, rounds=1) >= 0.9
    blocks, walked = share_found(init_trees=2, refine=0), share_found(init_trees=2, refine=1)
    assert walked >= 0.9 and walked >= blocks + 0.05, (blocks, walked)


def test_a_small_forest_borrows_leaf_orders_for_its_graph(tmp_path):
    """One tree is too few blocks for a good graph: the build grows throwaway trees for their leaf
    orders, and the file still holds just the one tree."""
    x = vectors("euclidean", 3000)
    index = AnnIndex(x.shape[1], "euclidean")
    index.set_seed(2)
    index.add_items(x)
    index.build(1, graph=True)
    assert index.get_n_trees() == 1 and index.has_graph
    present = np.ones(len(x), bool)
    hits = 0
    for v in x[::60]:
        truth = set(brute("euclidean", x, present, v, 10).tolist())
        hits += len(set(index.get_nns_by_vector(v, 10, search_k=500)) & truth)
    assert hits / (10 * len(x[::60])) >= 0.95


def test_code_distances_are_exact_at_the_extremes():
    """The build's int8 distances are kept in int32 lanes (for speed): they must still be exact
    for rows of opposite extreme codes, the largest sums a row can give."""
    from numba import njit

    from backbeat.ann import _graph_kernels as gk

    @njit
    def both(xq, a, b):
        return gk._dist(xq, a, b, False), gk._dist(xq, a, b, True)

    xq = np.random.default_rng(0).integers(-127, 128, (20, 64)).astype(np.int8)
    xq[0], xq[1] = 127, -127
    for a in range(20):
        for b in range(20):
            diff = xq[a].astype(np.int64) - xq[b].astype(np.int64)
            assert both(xq, a, b) == ((diff * diff).sum(), np.abs(diff).sum())
