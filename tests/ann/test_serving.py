"""Serving: publish through the blobs port, download once per generation, mmap; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import annoy
import numpy as np
import pytest
from typer.testing import CliRunner

from backbeat.ann import AnnFormatError, AnnIndex
from backbeat.ann.blobs import open_published, publish
from backbeat.cloud import connect
from backbeat.settings import Settings

from .conftest import vectors


@pytest.fixture()
def platform(tmp_path):
    p = connect(Settings(backend="local", data_dir=tmp_path / "data"))
    yield p
    p.close()


def _index(tmp_path, seed: int, name: str):
    x = vectors("angular", 1200, seed=seed)
    idx = AnnIndex(16, "angular")
    idx.add_items(x)
    idx.build(5)
    path = tmp_path / name
    idx.save(path)
    idx.unload()
    return path, x


def test_download_once_per_generation_then_mmap(platform, tmp_path):
    path, x = _index(tmp_path, 1, "v1.ann")
    info = publish(path, platform.blobs, "ann-test", "models/emb.ann", f=16, metric="angular")
    cache = tmp_path / "cache"
    a, first = open_published(platform.blobs, "ann-test", "models/emb.ann", cache)
    b, second = open_published(platform.blobs, "ann-test", "models/emb.ann", cache)
    assert first["downloaded"] and not second["downloaded"]
    assert first["generation"] == second["generation"] == info.generation
    assert a.get_nns_by_item(3, 5) == b.get_nns_by_item(3, 5)
    assert a.get_item_vector(7) == pytest.approx(x[7].tolist())
    # a new version is a new generation: downloaded again, the old copy stays for its readers
    path2, x2 = _index(tmp_path, 2, "v2.ann")
    publish(path2, platform.blobs, "ann-test", "models/emb.ann", f=16, metric="angular")
    c, third = open_published(platform.blobs, "ann-test", "models/emb.ann", cache)
    assert third["downloaded"] and third["generation"] != info.generation
    assert c.get_item_vector(7) == pytest.approx(x2[7].tolist())
    assert a.get_item_vector(7) == pytest.approx(x[7].tolist())
    # the served copy is the file annoy reads
    ref = annoy.AnnoyIndex(16, "angular")
    ref.load(third["path"])
    assert ref.get_nns_by_item(0, 10) == c.get_nns_by_item(0, 10)


def test_published_object_without_metadata_is_refused(platform, tmp_path):
    path, _ = _index(tmp_path, 3, "x.ann")
    platform.blobs.ensure_bucket("ann-test")
    platform.blobs.put_file("ann-test", "bare.ann", path)
    with pytest.raises(AnnFormatError, match="ann_f"):
        open_published(platform.blobs, "ann-test", "bare.ann", tmp_path / "cache")


def test_processes_share_the_mapped_pages(tmp_path):
    """Four processes serving one index: their proportional share of its pages sums to one copy."""
    path, _ = _index(tmp_path, 4, "shared.ann")
    size = path.stat().st_size
    code = (
        "import sys, numpy as np\n"
        "from backbeat.ann import AnnIndex\n"
        "i = AnnIndex(16, 'angular'); i.load(sys.argv[1], prefault=True)\n"
        "i.query(np.ones((4, 16)), 10, search_k=5000)\n"
        "print('ready', flush=True); sys.stdin.read()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        pss_kb = 0
        for p in procs:
            with open(f"/proc/{p.pid}/smaps") as fh:
                lines = fh.read().splitlines()
            inside = False
            for line in lines:
                if not line[:1].islower() and "-" in line.split(" ")[0]:
                    inside = line.rstrip().endswith(str(os.path.realpath(path)))
                elif inside and line.startswith("Pss:"):
                    pss_kb += int(line.split()[1])
        assert pss_kb * 1024 <= size * 1.1 + 4 * 4096, (pss_kb * 1024, size)
        assert pss_kb * 1024 >= size * 0.5  # the file really is mapped
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=30)


def test_cli_build_info_query(tmp_path):
    from backbeat.cli import app

    x = vectors("euclidean", 500, seed=8)
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    out = tmp_path / "x.ann"
    res = runner.invoke(app, ["ann", "build", str(tmp_path / "x.npy"), str(out), "--metric", "euclidean",
                              "--trees", "4", "--seed", "1", "--jobs", "0"])
    assert res.exit_code != 0 and "n_jobs must be -1" in str(res.exception or res.output)
    res = runner.invoke(app, ["ann", "build", str(tmp_path / "x.npy"), str(out), "--metric", "euclidean",
                              "--trees", "4", "--seed", "1", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ann", "info", str(out), "--f", "16", "--metric", "euclidean"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert (info["n_items"], info["n_trees"], info["bytes"]) == (500, 4, out.stat().st_size)
    res = runner.invoke(app, ["ann", "query", str(out), "--f", "16", "--metric", "euclidean", "--item", "3",
                              "-k", "4"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ids"][0] == 3
    np.save(tmp_path / "q.npy", x[:2])
    res = runner.invoke(app, ["ann", "query", str(out), "--f", "16", "--metric", "euclidean", "--vectors",
                              str(tmp_path / "q.npy"), "-k", "3", "--search-k", "500"])
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r["ids"][0] for r in rows] == [0, 1]
    coded = tmp_path / "coded.ann"  # 500 items: below the default threshold, codes asked for
    res = runner.invoke(app, ["ann", "build", str(tmp_path / "x.npy"), str(coded), "--metric", "euclidean",
                              "--trees", "4", "--no-graph", "--codes"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[-1])["codes"]["bits"] == 4
    # a wrong dimension is one clear line and exit 1 through the real entry point
    proc = subprocess.run([sys.executable, "-m", "backbeat.cli", "ann", "info", str(out), "--f", "17",
                           "--metric", "euclidean"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "not a multiple" in proc.stderr or "wrong metric or dimension" in proc.stderr
