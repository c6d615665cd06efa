"""``add_graph`` / ``backbeat ann graph``: a graph added to files annoy wrote, annoy unaffected."""

from __future__ import annotations

import json

import annoy
import numpy as np
import pytest
from typer.testing import CliRunner

from backbeat.ann import AnnIndex
from backbeat.ann import graph as G
from backbeat.ann.errors import AnnFormatError, AnnStateError
from backbeat.ann.upgrade import add_graph

from .conftest import brute, vectors, write_version_1

N = 3000


def annoy_file(metric: str, path, ids=None) -> np.ndarray:
    x = vectors(metric, N)
    a = annoy.AnnoyIndex(x.shape[1], metric)
    a.set_seed(3)
    for i, row in zip(range(N) if ids is None else ids, x, strict=True):
        a.add_item(int(i), row.tolist())
    a.build(5, n_jobs=1)
    a.save(str(path))
    a.unload()
    return x


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_annoy_files_get_a_graph_and_annoy_answers_as_before(metric, tmp_path):
    src, dst = tmp_path / "annoy.ann", tmp_path / "graph.ann"
    x = annoy_file(metric, src)
    before = src.read_bytes()
    info = add_graph(src, dst, x.shape[1], metric, n_jobs=2)
    assert src.read_bytes() == before
    assert info["graph"]["degree"] == G.GraphParams().degree and info["n_trees"] == 5
    old, new = annoy.AnnoyIndex(x.shape[1], metric), annoy.AnnoyIndex(x.shape[1], metric)
    old.load(str(src))
    new.load(str(dst))
    assert new.get_n_trees() == old.get_n_trees() == 5
    q = vectors(metric, 40, seed=4)
    for v in q[:20].tolist():
        assert new.get_nns_by_vector(v, 10, search_k=400) == old.get_nns_by_vector(v, 10, search_k=400)
    index = AnnIndex(x.shape[1], metric)
    index.load(dst)
    assert index.has_graph
    present = np.ones(N, bool)
    hits = sum(len(set(index.get_nns_by_vector(v, 10, search_k=1000))
                   & set(brute(metric, x, present, v, 10).tolist())) for v in q)
    assert hits / (10 * len(q)) >= (0.85 if metric == "dot" else 0.93)


def test_holes_stay_holes(tmp_path):
    src, dst = tmp_path / "annoy.ann", tmp_path / "graph.ann"
    ids = np.arange(N) * 2 + 1  # every even id is a hole
    x = annoy_file("euclidean", src, ids)
    add_graph(src, dst, x.shape[1], "euclidean")
    index = AnnIndex(x.shape[1], "euclidean")
    index.load(dst)
    got = index.query(x[:200], 10, 1000)[0]
    assert set(got.ravel().tolist()) <= set(ids.tolist())
    assert (got[:, 0] == ids[:200]).mean() > 0.97


def test_refusals(tmp_path):
    src, dst = tmp_path / "annoy.ann", tmp_path / "graph.ann"
    x = annoy_file("euclidean", src)
    add_graph(src, dst, x.shape[1], "euclidean")
    with pytest.raises(AnnStateError, match="already has a neighbour graph"):
        add_graph(dst, tmp_path / "again.ann", x.shape[1], "euclidean")
    with pytest.raises(AnnStateError, match="is the input"):
        add_graph(src, src, x.shape[1], "euclidean")
    with pytest.raises(AnnFormatError):  # wrong dimension: the size does not fit
        add_graph(src, tmp_path / "bad.ann", x.shape[1] + 1, "euclidean")
    h = vectors("hamming", 100)
    a = annoy.AnnoyIndex(h.shape[1], "hamming")
    for i, row in enumerate(h):
        a.add_item(i, row.tolist())
    a.build(2)
    a.save(str(tmp_path / "h.ann"))
    with pytest.raises(AnnStateError, match="no neighbour graph for metric 'hamming'"):
        add_graph(tmp_path / "h.ann", tmp_path / "h2.ann", h.shape[1], "hamming")
    assert not (tmp_path / "again.ann").exists() and not (tmp_path / "h2.ann").exists()


def test_a_failed_build_leaves_no_output(tmp_path, monkeypatch):
    src, dst = tmp_path / "annoy.ann", tmp_path / "graph.ann"
    x = annoy_file("angular", src)

    def boom(*args, **kwargs):
        raise MemoryError("simulated: out of memory in the middle of the graph build")

    monkeypatch.setattr(G, "build_graph_and_codes", boom)
    with pytest.raises(MemoryError):
        add_graph(src, dst, x.shape[1], "angular")
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["annoy.ann"]


def test_cli_adds_a_graph(tmp_path):
    from backbeat.cli import app

    src, dst = tmp_path / "annoy.ann", tmp_path / "graph.ann"
    x = annoy_file("angular", src)
    res = CliRunner().invoke(app, ["ann", "graph", str(src), str(dst), "--f", str(x.shape[1]),
                                   "--metric", "angular", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["graph"]["used"] and info["n_items"] == N
    assert info["bytes"] == dst.stat().st_size


@pytest.mark.parametrize("metric", ["angular", "dot"])
def test_version_1_graphs_are_rewritten_as_version_2_without_a_new_build(tmp_path, monkeypatch, metric):
    """A file from before region version 2 (an n x R matrix, no codes) gets the same edges packed
    and the codes made from its vectors: byte for byte the file the current build writes."""
    x = vectors(metric, N)
    index = AnnIndex(x.shape[1], metric)
    index.set_seed(2)
    index.add_items(x[1:], ids=np.arange(1, N))  # id 0 a hole
    index.build(5, n_jobs=1)
    current = tmp_path / "v2.ann"
    index.save(current)
    old = tmp_path / "v1.ann"
    write_version_1(index, current, old)
    index.unload()

    def no_build(*args, **kwargs):
        raise AssertionError("the graph was built again")

    monkeypatch.setattr(G, "build_graph_and_codes", no_build)
    steps: list[str] = []
    info = add_graph(old, tmp_path / "new.ann", x.shape[1], metric, progress=steps.append)
    assert (tmp_path / "new.ann").read_bytes() == current.read_bytes()
    assert info["graph"]["used"] and info["n_items"] == N and any("version 1" in m for m in steps)
    with pytest.raises(AnnStateError, match="already has a neighbour graph"):
        add_graph(tmp_path / "new.ann", tmp_path / "again.ann", x.shape[1], metric)
