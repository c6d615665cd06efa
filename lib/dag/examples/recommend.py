"""The example pipeline: closed hours of play events -> item co-occurrence -> item vectors (numpy)
-> an ann index of the items -> a kvstore of each user's top recommendations -> published files.

    backbeat dag run backbeat.dag.examples.recommend:Publish --start 2026-01-01T00 --stop 2026-01-01T06

Every stage writes create-only GCS outputs (folders finish with ``_SUCCESS``), so a rerun skips
what is done and a crash never publishes half a version. ``Publish`` writes the version's manifest
and then moves the ``recommend/LATEST`` pointer, which the ``recommend`` function follows.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tempfile
from typing import Any

from backbeat.dag import context
from backbeat.dag.builders import AnnIndexTask, KVStoreTask
from backbeat.dag.errors import DagError
from backbeat.dag.parameters import DateHourParameter, IntParameter, Parameter
from backbeat.dag.ranges import hours_between
from backbeat.dag.targets import GCSFlagTarget, GCSTarget, HourClosedTarget
from backbeat.dag.task import ExternalTask, Task

RECS_BUCKET = "backbeat-recs"
MAX_ITEMS = 20_000


def _events_bucket(name: str) -> str:
    return name or context.current_settings().events_bucket


class PlayHourClosed(ExternalTask):
    """Event delivery closed and deduplicated this hour of plays."""

    hour = DateHourParameter()
    events_bucket = Parameter(default="")

    def output(self) -> HourClosedTarget:
        return HourClosedTarget("play", self.hour, bucket=_events_bucket(self.events_bucket))


class HourPlays(Task):
    """Plays per (user, track) in one closed hour, as TSV."""

    hour = DateHourParameter()
    events_bucket = Parameter(default="")
    out_bucket = Parameter(default=RECS_BUCKET)

    def requires(self) -> PlayHourClosed:
        return PlayHourClosed(self.hour, self.events_bucket)

    def output(self) -> GCSTarget:
        return GCSTarget(self.out_bucket, f"dag/plays/dt={self.hour:%Y-%m-%d}/hour={self.hour:%H}/plays.tsv")

    def run(self) -> None:
        import fastavro

        source = self.input()
        blobs = source.blobs
        counts: dict[tuple[str, str], int] = {}
        for name in source.data_files():
            data = blobs.get(source.bucket, name)
            try:
                for rec in fastavro.reader(io.BytesIO(data)):
                    key = (str(rec["user_id"]), str(rec["track_id"]))
                    counts[key] = counts.get(key, 0) + 1
            except (ValueError, KeyError, EOFError) as exc:
                raise DagError(f"gs://{source.bucket}/{name}: not an Avro file of plays: {exc}") from None
        lines = [f"{u}\t{t}\t{n}\n" for (u, t), n in sorted(counts.items())]
        self.output().put_bytes("".join(lines).encode(), content_type="text/tab-separated-values")


class _Window(Task):
    start = DateHourParameter()
    stop = DateHourParameter()
    events_bucket = Parameter(default="")
    out_bucket = Parameter(default=RECS_BUCKET)

    def hours(self) -> list[dt.datetime]:
        hours = hours_between(self.start, self.stop)
        if not hours:
            raise DagError(f"{self.task_id}: empty window (stop must be after start)")
        return hours

    def version(self) -> str:
        return f"{self.start:%Y%m%dT%H}-{self.stop:%Y%m%dT%H}"

    def window(self, cls: type, **extra: Any) -> Task:
        return cls(
            start=self.start,
            stop=self.stop,
            events_bucket=self.events_bucket,
            out_bucket=self.out_bucket,
            **extra,
        )


class CoOccurrence(_Window):
    """Users x items play matrix and the item co-occurrence counts of the window."""

    def requires(self) -> list[Task]:
        return [HourPlays(h, self.events_bucket, self.out_bucket) for h in self.hours()]

    def output(self) -> GCSTarget:
        return GCSTarget(self.out_bucket, f"dag/cooc/{self.version()}/cooc.npz")

    def run(self) -> None:
        import numpy as np

        counts: dict[tuple[str, str], int] = {}
        for target in self.input():
            for line in target.get_bytes().decode().splitlines():
                user, track, n = line.split("\t")
                counts[(user, track)] = counts.get((user, track), 0) + int(n)
        users = sorted({u for u, _ in counts})
        items = sorted({t for _, t in counts})
        if not items:
            raise DagError(f"{self.task_id}: no plays in the window")
        if len(items) > MAX_ITEMS:
            raise DagError(
                f"{self.task_id}: {len(items)} items; the example pipeline handles {MAX_ITEMS} at most"
            )
        ui, ii = {u: i for i, u in enumerate(users)}, {t: i for i, t in enumerate(items)}
        rows = np.array([ui[u] for u, _ in counts], dtype=np.int32)
        cols = np.array([ii[t] for _, t in counts], dtype=np.int32)
        vals = np.array(list(counts.values()), dtype=np.float32)
        x = np.zeros((len(users), len(items)), dtype=np.float32)
        x[rows, cols] = 1.0
        cooc = x.T @ x
        buf = io.BytesIO()
        np.savez_compressed(
            buf, users=np.array(users), items=np.array(items), rows=rows, cols=cols, vals=vals, cooc=cooc
        )
        self.output().put_bytes(buf.getvalue())


def _load_npz(target: GCSTarget) -> Any:
    import numpy as np

    return np.load(io.BytesIO(target.get_bytes()), allow_pickle=False)


class ItemVectors(_Window):
    """Item vectors: positive PMI of the co-occurrences, factorised by SVD, rows unit length."""

    dim = IntParameter(default=16)

    def requires(self) -> CoOccurrence:
        return self.window(CoOccurrence)

    def output(self) -> GCSTarget:
        return GCSTarget(self.out_bucket, f"dag/vectors/{self.version()}/d{self.dim}.npz")

    def run(self) -> None:
        import numpy as np

        data = _load_npz(self.input())
        cooc = data["cooc"].astype(np.float64)
        total = cooc.sum()
        marg = cooc.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            pmi = np.log((cooc * total) / np.outer(marg, marg))
        ppmi = np.nan_to_num(np.maximum(pmi, 0.0), nan=0.0, posinf=0.0, neginf=0.0)
        u, s, _ = np.linalg.svd(ppmi, hermitian=True)
        dim = min(self.dim, len(s))
        vecs = u[:, :dim] * np.sqrt(s[:dim])
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = (vecs / np.where(norms == 0, 1, norms)).astype(np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, items=data["items"], vectors=vecs)
        self.output().put_bytes(buf.getvalue())


class ItemIndex(_Window, AnnIndexTask):
    """An Annoy-compatible index of the item vectors (angular), with the item id of each row."""

    dim = IntParameter(default=16)
    n_trees = IntParameter(default=10)
    index_name = "items.ann"

    def requires(self) -> ItemVectors:
        return self.window(ItemVectors, dim=self.dim)

    def output(self) -> GCSFlagTarget:
        return GCSFlagTarget(self.out_bucket, f"recommend/{self.version()}-d{self.dim}/index/")

    def _data(self) -> Any:
        if not hasattr(self, "_loaded"):
            self._loaded = _load_npz(self.input())
        return self._loaded

    def dimension(self) -> int:
        return int(self._data()["vectors"].shape[1])

    def items(self) -> Any:
        return enumerate(self._data()["vectors"])

    def extra_files(self) -> dict[str, bytes]:
        return {"items.json": json.dumps([str(t) for t in self._data()["items"]]).encode()}


class UserRecommendations(_Window, KVStoreTask):
    """Each user's top ``k`` unplayed tracks (nearest items to the mean of their plays), as a
    Sparkey-compatible kvstore: key user id, value JSON ``[[track_id, score], ...]``."""

    dim = IntParameter(default=16)
    n_trees = IntParameter(default=10)
    k = IntParameter(default=10)
    log_name = "recs.spl"
    index_name = "recs.spi"

    def requires(self) -> dict[str, Task]:
        return {
            "cooc": self.window(CoOccurrence),
            "vectors": self.window(ItemVectors, dim=self.dim),
            "index": self.window(ItemIndex, dim=self.dim, n_trees=self.n_trees),
        }

    def output(self) -> GCSFlagTarget:
        return GCSFlagTarget(self.out_bucket, f"recommend/{self.version()}-d{self.dim}/users/")

    def flag_extra(self) -> dict[str, Any]:
        return {"users": self._users, "k": self.k}

    def records(self) -> Any:
        import numpy as np

        from backbeat.ann import AnnIndex

        inputs = self.input()
        cooc = _load_npz(inputs["cooc"])
        vecs = _load_npz(inputs["vectors"])["vectors"]
        users, items = cooc["users"], cooc["items"]
        self._users = len(users)
        played = np.zeros((len(users), len(items)), dtype=np.float32)
        played[cooc["rows"], cooc["cols"]] = cooc["vals"]
        profile = np.log1p(played) @ vecs
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        profile = profile / np.where(norms == 0, 1, norms)
        index_target: GCSFlagTarget = inputs["index"]
        with tempfile.TemporaryDirectory() as tmp:
            ann_path = os.path.join(tmp, "items.ann")
            index_target.blobs.download_to(index_target.bucket, index_target.prefix + "items.ann", ann_path)
            index = AnnIndex(int(vecs.shape[1]), "angular")
            index.load(ann_path)
            extra = int((played > 0).sum(axis=1).max()) if len(users) else 0
            ids, dists = index.query(profile, min(len(items), self.k + extra))
            index.unload()
        for u, user in enumerate(users):
            recs = []
            for j, d in zip(ids[u], dists[u], strict=True):
                if j < 0 or played[u, j] > 0:
                    continue
                recs.append([str(items[j]), round(float(1 - d * d / 2), 4)])  # cosine from angular distance
                if len(recs) == self.k:
                    break
            yield str(user), json.dumps(recs)


class Publish(_Window):
    """Write the version's manifest (create-only), then point ``recommend/LATEST`` at it."""

    dim = IntParameter(default=16)
    n_trees = IntParameter(default=10)
    k = IntParameter(default=10)

    def requires(self) -> dict[str, Task]:
        return {
            "index": self.window(ItemIndex, dim=self.dim, n_trees=self.n_trees),
            "users": self.window(UserRecommendations, dim=self.dim, n_trees=self.n_trees, k=self.k),
        }

    def published_version(self) -> str:
        return f"{self.version()}-d{self.dim}"

    def output(self) -> GCSTarget:
        return GCSTarget(self.out_bucket, f"recommend/published/{self.published_version()}.json")

    def run(self) -> None:
        inputs = self.input()
        index, users = inputs["index"], inputs["users"]
        manifest = {
            "version": self.published_version(),
            "window": [self.start.isoformat(), self.stop.isoformat()],
            "dim": index.read_flag().get("dim", self.dim),
            "items": index.read_flag().get("items"),
            "users": users.read_flag().get("users"),
            "k": self.k,
            "files": {
                "ann": index.prefix + "items.ann",
                "items": index.prefix + "items.json",
                "recs_log": users.prefix + "recs.spl",
                "recs_index": users.prefix + "recs.spi",
            },
        }
        self.output().put_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode(), "application/json")
        pointer = {"version": manifest["version"], "manifest": self.output().name}
        self.output().blobs.put(
            self.out_bucket, "recommend/LATEST", json.dumps(pointer).encode(), content_type="application/json"
        )  # the one mutable alias, moved last
