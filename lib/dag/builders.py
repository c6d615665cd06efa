"""Templates that build the two static stores from a dataset: a Sparkey-compatible kvstore and an
Annoy-compatible nearest-neighbour index, published as a flag folder (files first, ``_SUCCESS``
last), so a reader never sees half a store.

    class UserProfiles(KVStoreTask):
        day = DateParameter()
        def requires(self): ...
        def output(self): return GCSFlagTarget(f"gs://stores/profiles/{self.day}/")
        def records(self):            # (key, value), str or bytes
            for row in ...: yield row.user_id, row.to_json()
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

from backbeat.dag.errors import DagError
from backbeat.dag.targets import GCSFlagTarget
from backbeat.dag.task import Task


def _folder(task: Task) -> GCSFlagTarget:
    out = task.output()
    if not isinstance(out, GCSFlagTarget):
        raise DagError(f"{task.task_id}: output() must be a GCSFlagTarget folder, not {out!r}")
    return out


class KVStoreTask(Task):
    """Writes ``records()`` into ``<folder>/<log_name>`` + ``<folder>/<index_name>``; the flag
    records the number of entries. Later duplicates of a key win (Sparkey's semantics)."""

    compression: str = "none"
    block_size: int = 0
    log_name: str = "store.spl"
    index_name: str = "store.spi"

    def records(self) -> Iterable[tuple[str | bytes, str | bytes]]:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_files(self) -> dict[str, bytes]:
        """More small files to publish in the same folder (before the flag)."""
        return {}

    def flag_extra(self) -> dict[str, Any]:
        return {}

    def run(self) -> None:
        from backbeat.kvstore import Writer, build_index

        folder = _folder(self)
        with tempfile.TemporaryDirectory() as tmp:
            log_path, index_path = os.path.join(tmp, self.log_name), os.path.join(tmp, self.index_name)
            entries = 0
            with Writer(log_path, compression=self.compression, block_size=self.block_size) as writer:
                for key, value in self.records():
                    writer.put(key, value)
                    entries += 1
            build_index(log_path, index_path)
            with folder.writer({"entries": entries, **self.flag_extra()}) as out:
                out.put_file(self.log_name, log_path)
                out.put_file(self.index_name, index_path)
                for name, data in self.extra_files().items():
                    out.put(name, data)


class AnnIndexTask(Task):
    """Builds ``<folder>/<index_name>`` from ``items()`` (``(id, vector)`` pairs, ids from 0) with
    ``backbeat.ann.AnnIndex``; the flag records items, dimension, metric and trees."""

    metric: str = "angular"
    n_trees: int = 10
    seed: int = 42
    index_name: str = "index.ann"

    def dimension(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def items(self) -> Iterable[tuple[int, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_files(self) -> dict[str, bytes]:
        return {}

    def flag_extra(self) -> dict[str, Any]:
        return {}

    def run(self) -> None:
        from backbeat.ann import AnnIndex

        folder = _folder(self)
        dim = int(self.dimension())
        index = AnnIndex(dim, self.metric)
        index.set_seed(int(self.seed))
        count = 0
        for i, vector in self.items():
            index.add_item(int(i), vector)
            count += 1
        if count == 0:
            raise DagError(f"{self.task_id}: no items to index")
        index.build(int(self.n_trees))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, self.index_name)
            index.save(path)
            try:
                extra = {"items": count, "dim": dim, "metric": self.metric, "n_trees": int(self.n_trees)}
                with folder.writer({**extra, **self.flag_extra()}) as out:
                    out.put_file(self.index_name, path)
                    for name, data in self.extra_files().items():
                        out.put(name, data)
            finally:
                index.unload()
