"""Where annoy silently misbehaves, Backbeat refuses with a typed error that says why."""

from __future__ import annotations

import annoy
import numpy as np
import pytest

from backbeat.ann import (
    AnnArgumentError,
    AnnError,
    AnnFormatError,
    AnnIdError,
    AnnIndex,
    AnnStateError,
    AnnVectorError,
)
from backbeat.errors import BackbeatError


def test_errors_are_backbeat_errors():
    for cls in (AnnArgumentError, AnnFormatError, AnnIdError, AnnStateError, AnnVectorError):
        assert issubclass(cls, AnnError) and issubclass(cls, BackbeatError)


@pytest.mark.parametrize("f, metric", [(17, "angular"), (16, "euclidean"), (16, "hamming")])
def test_file_that_does_not_fit_dimension_or_metric(annoy_files, f, metric):
    path, _, _ = annoy_files["angular"]  # angular, f=16: 76-byte nodes
    with pytest.raises(AnnFormatError) as exc:
        AnnIndex(f, metric).load(path)
    msg = str(exc.value)
    assert str(path) in msg and ("not a multiple" in msg or "wrong metric or dimension" in msg)


def test_wrong_metric_same_node_size_is_caught_by_structure(annoy_files):
    # euclidean and manhattan share the node size: the file loads (annoy's behaviour) but an angular
    # file opened as euclidean (sizes 76 vs 80) and an euclidean one opened as dot v1 (both 80) are
    # told apart by where the root's fields are
    path, _, _ = annoy_files["euclidean"]
    with pytest.raises(AnnFormatError, match="wrong metric or dimension"):
        AnnIndex(16, "dot").load(path)


def test_truncated_and_empty_files(annoy_files, tmp_path):
    path, _, _ = annoy_files["euclidean"]
    data = path.read_bytes()
    cut = tmp_path / "cut.ann"
    cut.write_bytes(data[:-10])
    with pytest.raises(AnnFormatError, match="not a multiple"):
        AnnIndex(16, "euclidean").load(cut)
    empty = tmp_path / "empty.ann"
    empty.write_bytes(b"")
    with pytest.raises(AnnFormatError, match="empty"):
        AnnIndex(16, "euclidean").load(empty)
    with pytest.raises(AnnFormatError, match="can't open"):
        AnnIndex(16, "euclidean").load(tmp_path / "missing.ann")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_vectors_are_refused(bad):
    idx = AnnIndex(4, "angular")
    with pytest.raises(AnnVectorError, match="NaN or infinite"):
        idx.add_item(0, [0.0, bad, 1.0, 2.0])
    with pytest.raises(AnnVectorError, match="row 1"):
        idx.add_items(np.array([[1, 2, 3, 4], [1, bad, 3, 4]], np.float32))
    idx.add_item(0, [1, 2, 3, 4])
    idx.build(2)
    with pytest.raises(AnnVectorError):
        idx.get_nns_by_vector([bad, 0, 0, 0], 1)
    with pytest.raises(AnnVectorError, match="component 2"):  # float32 arrays take a quicker check
        idx.get_nns_by_vector(np.array([0, 1, bad, 0], np.float32), 1)
    with pytest.raises(AnnVectorError, match="component 0"):  # a strided view: the full check
        idx.get_nns_by_vector(np.array([bad, 9, 0, 9, 0, 9, 0, 9], np.float32)[::2], 1)
    with pytest.raises(AnnVectorError):
        idx.query(np.array([[bad, 0, 0, 0]]), 1)
    # annoy takes the same vector without a word
    a = annoy.AnnoyIndex(4, "angular")
    a.add_item(0, [0.0, bad, 1.0, 2.0])
    assert a.get_n_items() == 1


def test_wrong_vector_length():
    idx = AnnIndex(4, "euclidean")
    with pytest.raises(AnnVectorError, match="expected 4"):
        idx.add_item(0, [1, 2, 3])
    with pytest.raises(AnnVectorError, match=r"shape \(n, 4\)"):
        idx.add_items(np.zeros((3, 5)))
    idx.add_item(0, [1, 2, 3, 4])
    idx.build(1)
    with pytest.raises(AnnVectorError, match="expected 4"):
        idx.get_nns_by_vector([1, 2, 3, 4, 5], 1)
    with pytest.raises(AnnVectorError):
        idx.query(np.zeros((2, 3)), 1)


def test_negative_and_out_of_range_ids():
    idx = AnnIndex(3, "angular")
    with pytest.raises(AnnIdError, match="negative"):
        idx.add_item(-1, [1, 2, 3])
    with pytest.raises(AnnIdError, match="negative"):
        idx.add_items(np.ones((2, 3)), ids=[0, -5])
    idx.add_item(0, [1, 2, 3])
    idx.build(1)
    with pytest.raises(AnnIdError, match="beyond the largest item id 0"):
        idx.get_item_vector(1)
    with pytest.raises(AnnIdError, match="negative"):
        idx.get_nns_by_item(-1, 3)


def test_query_before_build_or_load_and_add_after():
    idx = AnnIndex(3, "angular")
    idx.add_item(0, [1, 2, 3])
    for call in (lambda: idx.get_nns_by_vector([1, 2, 3], 1), lambda: idx.get_nns_by_item(0, 1),
                 lambda: idx.query(np.ones((1, 3)), 1), lambda: idx.get_distance(0, 0),
                 lambda: idx.get_item_vector(0), lambda: idx.save("/tmp/never.ann")):
        with pytest.raises(AnnStateError, match="not built or loaded"):
            call()
    idx.build(1)
    with pytest.raises(AnnStateError, match="can't add"):
        idx.add_item(1, [1, 2, 3])
    with pytest.raises(AnnStateError, match="already built"):
        idx.build(1)


def test_constructor_arguments():
    with pytest.raises(AnnVectorError, match="unknown metric"):
        AnnIndex(3, "cosine")
    with pytest.raises(AnnVectorError, match="positive integer"):
        AnnIndex(0, "angular")


@pytest.mark.parametrize("graph", [True, False])
def test_counts_out_of_range_or_not_integers(graph):
    """annoy casts a negative ``n`` or a ``search_k`` below -1 to unsigned and returns every item,
    and Backbeat returned nothing for them; both now name the argument. ``n = 0`` stays annoy's
    empty answer."""
    x = np.random.default_rng(0).standard_normal((2500, 8)).astype(np.float32)
    a = annoy.AnnoyIndex(8, "euclidean")
    for i, row in enumerate(x):
        a.add_item(i, row.tolist())
    a.build(3)
    assert len(a.get_nns_by_vector(x[0].tolist(), -1)) == 2500  # what annoy does with n = -1
    index = AnnIndex(8, "euclidean")
    index.add_items(x)
    index.build(3, graph=graph)
    assert index.has_graph is graph
    q = x[0]
    for call in (lambda: index.get_nns_by_vector(q, -1), lambda: index.get_nns_by_item(0, -3)):
        with pytest.raises(AnnArgumentError, match="n must be at least 0, got -"):
            call()
    for call in (lambda: index.get_nns_by_vector(q, 5, search_k=-5),
                 lambda: index.get_nns_by_item(0, 5, search_k=-2),
                 lambda: index.query(x[:3], 5, search_k=-7)):
        with pytest.raises(AnnArgumentError, match="search_k must be -1"):
            call()
    for call in (lambda: index.get_nns_by_vector(q, 3.5), lambda: index.get_nns_by_item(0, 5, search_k=10.0),
                 lambda: index.query(x[:3], "5")):
        with pytest.raises(AnnArgumentError, match="must be an integer"):
            call()
    for k in (0, -1):
        with pytest.raises(AnnArgumentError, match="k must be at least 1"):
            index.query(x[:3], k)
    with pytest.raises(AnnArgumentError, match="votes must be 1, 2 or 3"):
        index.query(x[:3], 5, votes=4)
    assert index.get_nns_by_vector(q, 0) == [] == index.get_nns_by_item(0, 0)
    assert index.get_nns_by_vector(q, np.int64(3), search_k=np.int32(-1))[0] == 0
