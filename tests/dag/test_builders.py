"""The kvstore and ann index templates: built from a dataset, published with _SUCCESS last."""

from __future__ import annotations

import json

import numpy as np

import backbeat.dag as dag
from backbeat.dag.builders import AnnIndexTask, KVStoreTask


class Store(KVStoreTask):
    n = dag.IntParameter()
    compression = "zstd"

    def output(self):
        return dag.GCSFlagTarget(f"gs://stores/kv-{self.n}/")

    def records(self):
        for i in range(self.n):
            yield f"key-{i}", json.dumps({"i": i})


class Vectors(AnnIndexTask):
    n = dag.IntParameter()
    n_trees = 4

    def output(self):
        return dag.GCSFlagTarget(f"gs://stores/ann-{self.n}/")

    def dimension(self):
        return 8

    def items(self):
        rng = np.random.default_rng(3)
        return enumerate(rng.normal(size=(self.n, 8)).astype(np.float32))


def test_kvstore_template(platform, tmp_path) -> None:
    from backbeat.kvstore import Reader

    assert dag.build([Store(500)]).ok
    target = Store(500).output()
    assert target.read_flag()["entries"] == 500
    for name in ("store.spl", "store.spi"):
        platform.blobs.download_to("stores", target.prefix + name, tmp_path / name)
    with Reader(tmp_path / "store.spi", tmp_path / "store.spl") as reader:
        assert len(reader) == 500
        assert json.loads(reader.get(b"key-321")) == {"i": 321}


def test_ann_template_matches_annoy(platform, tmp_path) -> None:
    from annoy import AnnoyIndex

    assert dag.build([Vectors(300)]).ok
    target = Vectors(300).output()
    flag = target.read_flag()
    assert (flag["items"], flag["dim"], flag["metric"], flag["n_trees"]) == (300, 8, "angular", 4)
    platform.blobs.download_to("stores", target.prefix + "index.ann", tmp_path / "index.ann")
    index = AnnoyIndex(8, "angular")
    index.load(str(tmp_path / "index.ann"))
    assert index.get_n_items() == 300 and index.get_n_trees() == 4
    assert index.get_nns_by_item(7, 1) == [7]
