"""4-bit codes inside ``.ann`` files (``backbeat.ann.codes``): a forest built without a graph ranks
its candidates by them; annoy still reads the file as before; the answers keep exact distances and
the plain search's recall; a damaged codes region is refused."""

from __future__ import annotations

import annoy
import numpy as np
import pytest

from backbeat.ann import AnnIndex
from backbeat.ann import _kernels as K
from backbeat.ann import codes as C
from backbeat.ann.convert import convert_dot_layout
from backbeat.ann.errors import AnnFormatError, AnnStateError
from backbeat.ann.upgrade import add_graph

from .conftest import assert_batched_is_single, brute, vectors

N = 5000
CODE_METRICS = ["angular", "euclidean", "manhattan", "dot"]


def _built(metric: str, tmp_path, codes: bool | None, n: int = N, name: str = "x.ann", f: int | None = None,
           holes: bool = False):
    rng = np.random.default_rng(3)
    x = vectors(metric, n) if f is None else rng.standard_normal((n, f)).astype(np.float32)
    index = AnnIndex(x.shape[1], metric)
    index.set_seed(11)
    if holes:
        for i in range(n):
            if i % 5 != 2:
                index.add_item(i, x[i])
    else:
        index.add_items(x)
    index.build(6, graph=False, codes=codes)
    path = tmp_path / name
    index.save(path)
    return index, path, x


@pytest.fixture(scope="module", params=CODE_METRICS)
def pair(request, tmp_path_factory):
    """The same items and seed built with and without codes."""
    tmp = tmp_path_factory.mktemp(request.param)
    coded, cpath, x = _built(request.param, tmp, None, name="coded.ann")
    plain, ppath, _ = _built(request.param, tmp, False, name="plain.ann")
    return request.param, coded, cpath, plain, ppath, x


def test_codes_are_stored_by_default_without_a_graph_from_the_threshold(tmp_path):
    big, _, _ = _built("euclidean", tmp_path, None, n=2000)
    small, _, _ = _built("euclidean", tmp_path, None, n=1999, name="small.ann")
    forced, _, _ = _built("euclidean", tmp_path, True, n=300, name="forced.ann")
    assert big.info()["codes"]["bits"] == 4 and big.info()["codes"]["used"]
    assert small.info()["codes"] is None and forced.info()["codes"] is not None
    graph = AnnIndex(16, "euclidean")
    graph.add_items(vectors("euclidean", 2000))
    graph.build(4)
    assert graph.has_graph and graph.info()["codes"] is None


def test_codes_refused_where_they_do_not_apply():
    h = AnnIndex(70, "hamming")
    h.add_items(vectors("hamming", 50))
    with pytest.raises(AnnStateError, match="4-bit codes"):
        h.build(2, codes=True)
    g = AnnIndex(16, "angular")
    g.add_items(vectors("angular", 50))
    with pytest.raises(AnnStateError, match="graph=False"):
        g.build(2, graph=True, codes=True)
    tiny = AnnIndex(4, "euclidean")  # four floats a record: codes would save nothing
    tiny.add_items(np.ones((10, 4), np.float32))
    with pytest.raises(AnnStateError, match="f >= 8"):
        tiny.build(2, codes=True)


def test_the_forest_is_unchanged_and_annoy_answers_alike(pair):
    metric, coded, cpath, plain, ppath, _ = pair
    c = np.fromfile(cpath, np.uint8)
    p = np.fromfile(ppath, np.uint8)
    s = coded.layout.size
    start, m = coded._codes
    n_roots = coded.get_n_trees()
    assert c.size == p.size + (m + 1) * s  # the region inserted before the root copies
    assert np.array_equal(c[: start * s], p[: start * s])
    assert np.array_equal(c[c.size - n_roots * s:], p[p.size - n_roots * s:])
    a_c = annoy.AnnoyIndex(coded.f, metric)
    a_c.load(str(cpath))
    a_p = annoy.AnnoyIndex(plain.f, metric)
    a_p.load(str(ppath))
    assert (a_c.get_n_items(), a_c.get_n_trees()) == (a_p.get_n_items(), a_p.get_n_trees()) == (N, 6)
    for v in vectors(metric, 20, seed=5):
        assert a_c.get_nns_by_vector(v.tolist(), 10, search_k=800) == a_p.get_nns_by_vector(v.tolist(), 10,
                                                                                           search_k=800)


def test_codes_false_replays_annoy_and_codes_keep_its_recall(pair):
    metric, coded, cpath, _, _, x = pair
    a = annoy.AnnoyIndex(coded.f, metric)
    a.load(str(cpath))
    exact = AnnIndex(coded.f, metric)
    exact.load(cpath, codes=False)
    fast = AnnIndex(coded.f, metric)
    fast.load(cpath)
    qs = vectors(metric, 60, seed=8)
    present = np.ones(N, bool)
    hits_fast = hits_exact = 0
    search_k = 3000  # ~2,000 distinct candidates: far more than the shortlist ranked again
    for q in qs:
        want = a.get_nns_by_vector(q.tolist(), 10, search_k=search_k, include_distances=True)
        assert exact.get_nns_by_vector(q, 10, search_k=search_k, include_distances=True)[0] == want[0]
        ids = fast.get_nns_by_vector(q, 10, search_k=search_k)
        truth = set(brute(metric, x, present, q, 10).tolist())
        hits_fast += len(truth & set(ids))
        hits_exact += len(truth & set(want[0]))
    assert hits_fast >= hits_exact - 0.01 * 10 * len(qs)  # the shortlist loses at most 1 % recall
    assert hits_exact > 0.5 * 10 * len(qs)  # the comparison means something


def test_reported_distances_are_the_exact_ones(pair):
    metric, coded, cpath, _, _, x = pair
    fast = AnnIndex(coded.f, metric)
    fast.load(cpath)
    assert fast._tree_runner().__class__.__name__ == "CodedTreeRunner"
    for q in vectors(metric, 10, seed=4):
        ids, dist = fast.get_nns_by_vector(q, 10, search_k=3000, include_distances=True)
        v = x[ids].astype(np.float64)
        qq = q.astype(np.float64)
        if metric == "angular":
            want = np.sqrt(np.maximum(2 - 2 * (v @ qq) / (np.linalg.norm(v, axis=1) * np.linalg.norm(qq)), 0))
        elif metric == "euclidean":
            want = np.linalg.norm(v - qq, axis=1)
        elif metric == "manhattan":
            want = np.abs(v - qq).sum(axis=1)
        else:
            want = v @ qq
        np.testing.assert_allclose(dist, want, rtol=1e-4, atol=1e-4)
        assert list(dist) == sorted(dist, reverse=metric == "dot")


def test_few_candidates_give_annoys_exact_answer(pair):
    """Up to the shortlist's size every candidate is ranked on its float record: annoy's answer."""
    metric, coded, cpath, _, _, _ = pair
    a = annoy.AnnoyIndex(coded.f, metric)
    a.load(str(cpath))
    fast = AnnIndex(coded.f, metric)
    fast.load(cpath)
    for q in vectors(metric, 20, seed=6):
        got = fast.get_nns_by_vector(q, 10, search_k=K.RERANK_MIN // 2, include_distances=True)
        want = a.get_nns_by_vector(q.tolist(), 10, search_k=K.RERANK_MIN // 2, include_distances=True)
        assert got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_batched_query_matches_single_queries(pair):
    metric, coded, cpath, _, _, _ = pair
    fast = AnnIndex(coded.f, metric)
    fast.load(cpath)
    assert_batched_is_single(fast, vectors(metric, 30, seed=12), 10, 3000, rtol=1e-6)


def test_odd_dimension_and_holes(tmp_path):
    """f = 9 leaves the last byte's high nibble unused; ids never added stay out of the answers."""
    index, path, x = _built("euclidean", tmp_path, True, n=3000, f=9, holes=True)
    assert index.info()["codes"] is not None
    present = np.arange(3000) % 5 != 2
    ref = annoy.AnnoyIndex(9, "euclidean")
    ref.load(str(path))
    q = np.random.default_rng(1).standard_normal((40, 9)).astype(np.float32)
    hits = 0
    for v in q:
        ids = index.get_nns_by_vector(v, 10, search_k=2000)
        assert all(present[i] for i in ids) and len(ids) == 10
        hits += len(set(ids) & set(brute("euclidean", x, present, v, 10).tolist()))
    assert hits >= 0.9 * 400


def test_converted_and_upgraded_files_leave_the_codes_out(tmp_path):
    coded, cpath, _ = _built("dot", tmp_path, True, n=2500, name="dot.ann")
    v2 = tmp_path / "v2.ann"
    convert_dot_layout(cpath, v2, 16, "v2")
    back = AnnIndex(16, "dot")
    back.load(v2)
    assert back.info()["codes"] is None and back.get_n_items() == 2500
    plain_a = annoy.AnnoyIndex(16, "dot")
    plain_a.load(str(cpath))
    assert back.get_n_trees() == plain_a.get_n_trees() == 6
    info = add_graph(cpath, tmp_path / "graph.ann", 16, "dot")
    assert info["graph"] is not None and info["codes"] is None
    up = AnnIndex(16, "dot")
    up.load(tmp_path / "graph.ann")
    assert up.has_graph and up.get_n_trees() == 6


def _region_header(path, index) -> tuple[np.ndarray, int]:
    data = np.fromfile(path, np.uint8)
    start, m = index._codes
    return data, (start + m) * index.layout.size


@pytest.mark.parametrize("word,value,match", [
    (2, (2 << 16) | 4, "version 2"),
    (3, 17, "does not fit"),  # n_items
    (6, 3, "does not fit"),  # row width
    (7, 15, "does not fit"),  # dimension
    (4, 10**6, "does not fit"),  # records: the region would start before the items end
])
def test_a_damaged_codes_header_is_refused(tmp_path, word, value, match):
    index, path, _ = _built("angular", tmp_path, True, n=2100)
    data, at = _region_header(path, index)
    data[at + 4 * word: at + 4 * word + 4] = np.array([value], "<i4").view(np.uint8)
    bad = tmp_path / "bad.ann"
    data.tofile(bad)
    with pytest.raises(AnnFormatError, match=match):
        AnnIndex(16, "angular").load(bad)


def test_a_damaged_quantiser_is_refused_before_the_first_search(tmp_path):
    index, path, _ = _built("angular", tmp_path, True, n=2100)
    data = np.fromfile(path, np.uint8)
    start = index._codes[0] * index.layout.size
    data[start + 8: start + 12] = np.array([np.nan], "<f4").view(np.uint8)  # step of component 2
    bad = tmp_path / "bad.ann"
    data.tofile(bad)
    loaded = AnnIndex(16, "angular")
    loaded.load(bad)
    with pytest.raises(AnnFormatError, match="quantiser"):
        loaded.get_nns_by_vector(np.ones(16, np.float32), 5)
    plain = AnnIndex(16, "angular")
    plain.load(bad, codes=False)  # the trees and items are intact: annoy's search still answers
    assert len(plain.get_nns_by_vector(np.ones(16, np.float32), 5)) == 5


def test_encode_clamps_outliers_and_keeps_constant_components():
    x = np.random.default_rng(0).standard_normal((1000, 10)).astype(np.float32)
    x[:, 3] = 2.5  # constant: step 0, every code 0
    x[0, 0] = 1e6  # an outlier: clamped to the top level
    got = C.encode(x, np.ones(1000, bool), "euclidean")
    assert got.codes.shape == (1000, 5) and got.step[3] == 0
    full = np.concatenate([got.codes & 15, got.codes >> 4], axis=1)
    assert (full[:, 3] == 0).all() and full[0, 0] == C.LEVELS - 1
    decoded = got.lo + (full[:, :10] + 0.5) * got.step
    inside = np.abs(x[1:, [0, 1, 2, 4]] - decoded[1:, [0, 1, 2, 4]]) <= got.step[[0, 1, 2, 4]] * 0.5 + 1e-6
    assert inside.mean() > 0.99  # all but the clamped 0.2 % decode to within half a step
