"""The scheduler: order, priorities, resources, retries, failures, dynamic deps, executors,
timeouts, leases and run records."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import backbeat.dag as dag
from backbeat.dag.records import recent_runs, run_tasks

LOG: list[str] = []
LOCK = threading.Lock()


def log(name: str) -> None:
    with LOCK:
        LOG.append(name)


@pytest.fixture(autouse=True)
def _clear_log():
    LOG.clear()
    yield
    LOG.clear()


class Leaf(dag.Task):
    name = dag.Parameter()

    def run(self) -> None:
        log(self.name)


class Mid(dag.Task):
    name = dag.Parameter()
    needs = dag.ListParameter(default=[])

    def requires(self):
        return [Leaf(n) for n in self.needs]

    def run(self) -> None:
        log(self.name)


class Top(dag.WrapperTask):
    def requires(self):
        return [Mid("m1", needs=["a", "b"]), Mid("m2", needs=["b", "c"])]


def test_dependencies_run_first_and_once() -> None:
    summary = dag.build([Top()])
    assert summary.ok and bool(summary)
    assert sorted(LOG) == ["a", "b", "c", "m1", "m2"]  # b is shared: it runs once
    assert LOG.index("m1") > max(LOG.index("a"), LOG.index("b"))
    assert LOG.index("m2") > max(LOG.index("b"), LOG.index("c"))
    assert summary.counts == {"done": 6}


class Prio(dag.Task):
    name = dag.Parameter()
    prio = dag.IntParameter(default=0)

    @property
    def priority(self) -> int:  # type: ignore[override]
        return self.prio

    def run(self) -> None:
        log(self.name)


class PrioRoot(dag.WrapperTask):
    def requires(self):
        return [Prio("low", 1), Prio("high", 10), Prio("mid", 5)]


def test_priorities_order_ready_tasks() -> None:
    assert dag.build([PrioRoot()]).ok
    assert LOG == ["high", "mid", "low"]


class Busy(dag.Task):
    i = dag.IntParameter()
    resources = {"dataproc": 1}
    state: dict = {}

    def run(self) -> None:
        st = Busy.state
        with LOCK:
            st["now"] = st.get("now", 0) + 1
            st["max"] = max(st.get("max", 0), st["now"])
        deadline = time.monotonic() + 2  # wait for company, so the cap (not luck) decides the overlap
        while st["max"] < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)
        with LOCK:
            st["now"] -= 1


class BusyRoot(dag.WrapperTask):
    def requires(self):
        return [Busy(i) for i in range(6)]


def test_counted_resources_cap_concurrency() -> None:
    Busy.state = {}
    summary = dag.build([BusyRoot()], workers=4, resources={"dataproc": 2})
    assert summary.ok
    assert Busy.state["max"] == 2


def test_task_needing_more_than_the_cap_fails_clearly() -> None:
    summary = dag.build([Busy(0)], resources={"dataproc": 0})
    assert not summary.ok
    assert "ResourceError" in summary.tasks[Busy(0).task_id]["error"]


class Flaky(dag.Task):
    fails = dag.IntParameter()
    retry_count = 3
    retry_delay = 0.05
    times: list[float] = []

    def run(self) -> None:
        Flaky.times.append(time.monotonic())
        if len(Flaky.times) <= self.fails:
            raise ConnectionError("unavailable, try later")


def test_transient_failures_are_retried_with_growing_backoff() -> None:
    Flaky.times = []
    summary = dag.build([Flaky(2)])
    assert summary.ok
    info = summary.tasks[Flaky(2).task_id]
    assert info["attempts"] == 3
    gaps = [b - a for a, b in zip(Flaky.times, Flaky.times[1:], strict=False)]
    assert gaps[0] >= 0.025  # 0.05 * 2**0, half of it fixed (equal jitter)
    assert gaps[1] >= 0.05  # 0.05 * 2**1


def test_transient_failures_give_up_after_retry_count() -> None:
    Flaky.times = []
    summary = dag.build([Flaky(10)])
    assert not summary.ok
    assert summary.tasks[Flaky(10).task_id]["attempts"] == 4
    assert "ConnectionError" in summary.tasks[Flaky(10).task_id]["error"]


class Broken(dag.Task):
    calls: list[str] = []

    def run(self) -> None:
        Broken.calls.append("run")
        raise ValueError("bad input in row 7")

    def on_failure(self, exception: BaseException) -> str:
        Broken.calls.append(f"on_failure:{type(exception).__name__}")
        return "told the owner"


class AfterBroken(dag.Task):
    def requires(self):
        return Broken()

    def run(self) -> None:
        log("after")


class Independent(dag.Task):
    def run(self) -> None:
        log("independent")


class MixedRoot(dag.WrapperTask):
    def requires(self):
        return [AfterBroken(), Independent()]


def test_permanent_failure_stops_dependents_not_other_branches() -> None:
    Broken.calls = []
    seen: list[str] = []
    handler = Broken.event_handler(dag.Event.FAILURE)(lambda task, exc: seen.append(str(exc)))
    try:
        summary = dag.build([MixedRoot()])
    finally:
        dag.Task._event_callbacks[Broken][dag.Event.FAILURE].remove(handler)
    assert not summary.ok
    assert Broken.calls == ["run", "on_failure:ValueError"]  # permanent: no retry
    assert LOG == ["independent"]
    assert summary.state(AfterBroken()) == "upstream_failed"
    assert summary.state(MixedRoot()) == "upstream_failed"
    out = summary.to_dict()
    assert out["failed"] == [Broken().task_id]
    assert "bad input in row 7" in out["errors"][Broken().task_id]
    assert summary.tasks[Broken().task_id]["message"] == "told the owner"
    assert seen and "bad input in row 7" in seen[0]


class Upstream(dag.ExternalTask):
    path = dag.Parameter()

    def output(self):
        return dag.LocalTarget(self.path)


class UsesUpstream(dag.Task):
    path = dag.Parameter()

    def requires(self):
        return Upstream(self.path)

    def output(self):
        return dag.LocalTarget(self.path + ".out")

    def run(self) -> None:
        with self.input().open("r") as src, self.output().open("w") as dst:
            dst.write(src.read().upper())


def test_external_task_missing_then_present(tmp_path: Path) -> None:
    path = str(tmp_path / "in.txt")
    summary = dag.build([UsesUpstream(path)])
    assert not summary.ok
    assert summary.missing == [Upstream(path).task_id]
    assert summary.state(UsesUpstream(path)) == "upstream_failed"
    Path(path).write_text("hello")
    assert dag.build([UsesUpstream(path)]).ok
    assert Path(path + ".out").read_text() == "HELLO"


class NoOutput(dag.Task):
    path = dag.Parameter()

    def output(self):
        return dag.LocalTarget(self.path)

    def run(self) -> None:
        pass  # forgets to write


def test_run_that_does_not_write_its_output_fails(tmp_path: Path) -> None:
    summary = dag.build([NoOutput(str(tmp_path / "x"))])
    assert not summary.ok
    assert "does not exist" in summary.to_dict()["errors"][NoOutput(str(tmp_path / "x")).task_id]


class Part(dag.Task):
    folder = dag.Parameter()
    i = dag.IntParameter()

    def output(self):
        return dag.LocalTarget(os.path.join(self.folder, f"part-{self.i}"))

    def run(self) -> None:
        with self.output().open("w") as f:
            f.write(f"{self.i}:{os.getpid()}")


class Dynamic(dag.Task):
    folder = dag.Parameter()
    runs: list[int] = []

    def output(self):
        return dag.LocalTarget(os.path.join(self.folder, "total"))

    def run(self):
        Dynamic.runs.append(1)
        n = int(Path(self.folder, "n").read_text())  # only known at run time
        parts = yield [Part(self.folder, i) for i in range(n)]
        total = sum(int(p.open("r").read().split(":")[0]) for p in parts)
        with self.output().open("w") as f:
            f.write(str(total))


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_dynamic_dependencies(tmp_path: Path, executor: str) -> None:
    Path(tmp_path, "n").write_text("4")
    Dynamic.runs = []
    summary = dag.build([Dynamic(str(tmp_path))], workers=2, executor=executor)
    assert summary.ok, summary.to_json()
    assert Path(tmp_path, "total").read_text() == "6"
    assert summary.counts == {"done": 5}
    pids = {int(Path(tmp_path, f"part-{i}").read_text().split(":")[1]) for i in range(4)}
    if executor == "process":
        assert os.getpid() not in pids
    else:
        assert pids == {os.getpid()}


def test_dry_run_lists_in_dependency_order_and_runs_nothing() -> None:
    summary = dag.build([Top()], dry_run=True)
    assert LOG == []
    assert summary.ok and summary.dry_run
    order = summary.would_run
    assert set(order) == {
        t.task_id
        for t in [
            Top(),
            Mid("m1", needs=["a", "b"]),
            Mid("m2", needs=["b", "c"]),
            Leaf("a"),
            Leaf("b"),
            Leaf("c"),
        ]
    }
    assert order.index(Leaf("b").task_id) < order.index(Mid("m1", needs=["a", "b"]).task_id)
    assert order[-1] == Top().task_id


class Sleeper(dag.Task):
    seconds = dag.FloatParameter()
    timeout = 0.5
    retry_count = 0

    def run(self) -> None:
        time.sleep(self.seconds)


def test_hard_timeout_kills_the_process() -> None:
    start = time.monotonic()
    summary = dag.build([Sleeper(30.0)], workers=1, executor="process")
    assert time.monotonic() - start < 10
    assert not summary.ok
    assert "HardTimeout" in summary.to_dict()["errors"][Sleeper(30.0).task_id]


def test_hard_timeout_in_threads_gives_up_on_the_attempt() -> None:
    start = time.monotonic()
    summary = dag.build([Sleeper(3.0)], workers=2)
    assert time.monotonic() - start < 2.5
    assert "HardTimeout" in summary.to_dict()["errors"][Sleeper(3.0).task_id]


class Slowish(dag.Task):
    soft_timeout = 0.05
    seen: list[float] = []

    def run(self) -> None:
        time.sleep(0.3)

    def on_soft_timeout(self, elapsed: float) -> None:
        Slowish.seen.append(elapsed)


@pytest.mark.parametrize("workers", [1, 2])
def test_soft_timeout_warns_and_lets_the_task_finish(workers: int) -> None:
    Slowish.seen = []
    summary = dag.build([Slowish()], workers=workers)
    assert summary.ok
    assert len(Slowish.seen) == 1 and Slowish.seen[0] >= 0.05
    assert "soft timeout" in summary.tasks[Slowish().task_id]["message"]


class Counted(dag.Task):
    folder = dag.Parameter()

    def output(self):
        return dag.LocalTarget(os.path.join(self.folder, "done"))

    def run(self) -> None:
        with open(os.path.join(self.folder, "runs"), "a") as f:
            f.write("x")
        time.sleep(0.4)
        with self.output().open("w") as f:
            f.write("ok")


def test_lease_keeps_two_runners_from_running_the_same_task(tmp_path: Path, platform) -> None:
    results = []

    def runner() -> None:
        results.append(dag.build([Counted(str(tmp_path))], platform=platform, lease_poll=0.05))

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 2 and all(r.ok for r in results)
    assert Path(tmp_path, "runs").read_text() == "x"  # ran exactly once
    states = sorted(r.state(Counted(str(tmp_path))) for r in results)
    assert states == ["complete", "done"]
    assert platform.documents.query("dag_leases") == []  # released


def test_run_records_in_the_documents_port(platform) -> None:
    Broken.calls = []
    summary = dag.build([MixedRoot()], platform=platform)
    runs = recent_runs(platform.documents)
    assert runs[0]["run_id"] == summary.run_id and runs[0]["state"] == "failed"
    assert runs[0]["counts"] == summary.counts
    tasks = {r["task_id"]: r for r in run_tasks(platform.documents, summary.run_id)}
    assert tasks[Broken().task_id]["state"] == "failed" and tasks[Broken().task_id]["attempts"] == 1
    assert "bad input" in tasks[Broken().task_id]["error"]
    assert tasks[Independent().task_id]["state"] == "done"
    assert tasks[Independent().task_id]["ended"] >= tasks[Independent().task_id]["started"]


class CycleA(dag.Task):
    def requires(self):
        return CycleB()

    def run(self) -> None:
        pass


class CycleB(dag.Task):
    def requires(self):
        return CycleA()

    def run(self) -> None:
        pass


def test_cycles_are_reported_not_hung() -> None:
    summary = dag.build([CycleA()])
    assert not summary.ok
    assert "cycle" in summary.to_dict()["errors"][CycleA().task_id]


def test_process_pool_runs_many_tasks_in_children(tmp_path: Path) -> None:
    root = [Part(str(tmp_path), i) for i in range(40)]
    summary = dag.build(root, workers=2, executor="process")
    assert summary.ok and summary.counts == {"done": 40}
    pids = {int(Path(tmp_path, f"part-{i}").read_text().split(":")[1]) for i in range(40)}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


class GcsPart(dag.Task):
    i = dag.IntParameter()

    def output(self):
        return dag.GCSTarget(f"gs://parts/p-{self.i}")

    def run(self) -> None:
        with self.output().open("w") as f:
            f.write(str(os.getpid()))


def test_process_pool_writes_through_its_own_platform_connection(platform) -> None:
    from backbeat.dag import context

    context._settings = None  # a platform given without settings: children reconnect from its data folder
    summary = dag.build([GcsPart(i) for i in range(6)], workers=2, executor="process", platform=platform)
    assert summary.ok, summary.to_json()
    pids = {int(platform.blobs.get("parts", f"p-{i}")) for i in range(6)}
    assert os.getpid() not in pids
    runs = recent_runs(platform.documents)
    assert runs[0]["run_id"] == summary.run_id and runs[0]["state"] == "ok"
