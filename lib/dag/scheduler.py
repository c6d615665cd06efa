"""The event-driven scheduler behind ``build``.

Discovery walks ``requires()`` once (a complete task's requirements are not walked, as in Luigi),
giving each task a node with a counter of unfinished dependencies. Nodes whose counter is zero
wait in a heap ordered by priority then discovery order; finishing a node decrements its
dependents' counters. Every step is a heap operation or a counter update: O((N + E) log N).

Execution: with one thread worker, tasks run inline in the scheduler's thread (no hand-off cost);
otherwise in worker threads or forked worker processes (``executor="process"``). Retries of
transient failures wait on a timer heap (exponential backoff with jitter) without holding a worker;
so do polling tasks (``Poll``) such as Dataproc jobs, which keep their resources and lease.
"""

from __future__ import annotations

import heapq
import json
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from backbeat.dag.errors import DagError, HardTimeout
from backbeat.dag.runner import Result, execute
from backbeat.dag.task import Event, Task

TERMINAL = frozenset({"done", "complete", "failed", "upstream_failed", "missing"})
GOOD = frozenset({"done", "complete"})
BAD = frozenset({"failed", "upstream_failed", "missing"})


_DEFAULT_COMPLETE = Task.complete
_DEFAULT_OUTPUT = Task.output


class TaskFailed(DagError):
    """Passed to FAILURE event handlers: the failure of a task, as text (it may come from a process)."""


class Node:
    __slots__ = (
        "task",
        "id",
        "seq",
        "state",
        "deps",
        "dependents",
        "deps_left",
        "attempts",
        "started",
        "ended",
        "seconds",
        "error",
        "traceback",
        "message",
        "priority",
        "resources",
        "token",
        "holds",
        "resuming",
        "polls",
    )

    def __init__(self, task: Task, seq: int) -> None:
        self.task = task
        self.id = task.task_id
        self.seq = seq
        self.state = "pending"
        self.deps: list[Node] = []
        self.dependents: list[Node] = []
        self.deps_left = 0
        self.attempts = 0
        self.started = 0.0
        self.ended = 0.0
        self.seconds = 0.0
        self.error = ""
        self.traceback = ""
        self.message = ""
        self.priority = task.priority
        res = task.resources
        self.resources = (
            task.process_resources()
            if res or type(task).process_resources is not Task.process_resources
            else None
        )
        self.token = 0
        self.holds = False
        self.resuming = False
        self.polls = 0

    def info(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
            "message": self.message,
            "seconds": round(self.seconds, 6),
            "started": self.started or None,
            "ended": self.ended or None,
        }


class Summary:
    """What a build did. ``ok`` is True only when every task is complete (ran now or before)."""

    def __init__(
        self,
        run_id: str,
        roots: list[str],
        nodes: list[Node],
        started: float,
        ended: float,
        dry_run: bool,
        ok_override: bool | None = None,
    ) -> None:
        self.run_id = run_id
        self.roots = roots
        self._nodes = nodes
        self.started = started
        self.ended = ended
        self.seconds = ended - started
        self.dry_run = dry_run
        counts: dict[str, int] = {}
        for n in nodes:
            counts[n.state] = counts.get(n.state, 0) + 1
        self.counts = counts
        self.failed = [n.id for n in nodes if n.state == "failed"]
        self.upstream_failed = [n.id for n in nodes if n.state == "upstream_failed"]
        self.missing = [n.id for n in nodes if n.state == "missing"]
        self.done = [n.id for n in nodes if n.state == "done"]
        self.would_run = [n.id for n in _topological(nodes) if n.state == "pending"] if dry_run else []
        if ok_override is not None:
            self.ok = ok_override
        elif dry_run:
            self.ok = not self.failed and not self.missing and not self.upstream_failed
        else:
            self.ok = all(n.state in GOOD for n in nodes)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return {n.id: n.info() for n in self._nodes}

    def state(self, task: Task | str) -> str:
        tid = task if isinstance(task, str) else task.task_id
        for n in self._nodes:
            if n.id == tid:
                return n.state
        raise KeyError(tid)

    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def to_dict(self, include_tasks: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "run_id": self.run_id,
            "roots": self.roots,
            "started": self.started,
            "ended": self.ended,
            "seconds": round(self.seconds, 6),
            "dry_run": self.dry_run,
            "counts": self.counts,
            "failed": self.failed,
            "upstream_failed": self.upstream_failed[:100],
            "missing": self.missing,
            "errors": {n.id: n.error for n in self._nodes if n.state == "failed"},
        }
        if self.dry_run:
            out["would_run"] = self.would_run
        if include_tasks:
            out["tasks"] = self.tasks
        return out

    def to_json(self, include_tasks: bool = False) -> str:
        return json.dumps(self.to_dict(include_tasks), indent=2, sort_keys=True, default=str)

    def __repr__(self) -> str:
        return f"Summary(ok={self.ok}, counts={self.counts}, seconds={self.seconds:.3f})"


def _topological(nodes: list[Node]) -> list[Node]:
    """Dependencies first (Kahn's algorithm over the nodes still to run)."""
    pending = [n for n in nodes if n.state not in TERMINAL]
    left = {id(n): sum(1 for d in n.deps if d.state not in TERMINAL) for n in pending}
    order = [n for n in pending if left[id(n)] == 0]
    i = 0
    while i < len(order):
        for dep in order[i].dependents:
            key = id(dep)
            if key in left:
                left[key] -= 1
                if left[key] == 0:
                    order.append(dep)
        i += 1
    return order


class Scheduler:
    def __init__(
        self,
        workers: int = 1,
        executor: str = "thread",
        resources: dict[str, int] | None = None,
        documents: Any = None,
        leases: bool = True,
        records: bool = True,
        lease_ttl: float = 300.0,
        lease_poll: float = 5.0,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        seed: int | None = None,
        run_id: str | None = None,
    ) -> None:
        if executor not in ("thread", "process"):
            raise DagError(f"executor must be 'thread' or 'process', not {executor!r}")
        if workers < 1:
            raise DagError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        self.executor = executor
        self.capacity = dict(resources or {})
        self.in_use: dict[str, int] = {}
        self.dry_run = dry_run
        self.progress = progress
        self.rng = random.Random(seed)
        self.run_id = run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{self.run_id}"
        self.nodes: dict[str, Node] = {}
        self.order: list[Node] = []
        self.ready: list[tuple[int, int, Node]] = []
        self.timers: list[tuple[float, int, str, Node | None, int]] = []
        self._tseq = 0
        self._fired = 0
        self.running = 0
        self.unfinished = 0
        self.finished = 0
        self.by_token: dict[int, Node] = {}
        self._token = 0
        self.results: queue.Queue = queue.Queue()
        self.pool: Any = None
        self.inline = executor == "thread" and workers == 1
        self.lease_poll = lease_poll
        self.leases = None
        self.recorder = None
        if documents is not None and not dry_run:
            from backbeat.dag.records import LeaseManager, RunRecorder

            if leases:
                self.leases = LeaseManager(documents, self.owner, lease_ttl)
            if records:
                self.recorder = RunRecorder(documents, self.run_id)
        self._has_handlers = bool(Task._event_callbacks)

    # ------------------------------------------------------------------ discovery
    def _node(self, task: Task, fresh: list[Node]) -> Node:
        node = self.nodes.get(task.task_id)
        if node is None:
            if not isinstance(task, Task):
                raise DagError(f"{task!r} is not a Task")
            node = Node(task, len(self.order))
            self.nodes[node.id] = node
            self.order.append(node)
            fresh.append(node)
        return node

    def discover(self, tasks: Iterable[Task]) -> list[Node]:
        """Add ``tasks`` and everything they (transitively) require; returns their nodes."""
        fresh: list[Node] = []
        roots = [self._node(t, fresh) for t in tasks]
        i = 0
        while i < len(fresh):
            node = fresh[i]
            i += 1
            task = node.task
            cls = type(task)
            try:
                # a task with Luigi's default complete() and no outputs is never complete
                complete = (
                    False
                    if cls.complete is _DEFAULT_COMPLETE and cls.output is _DEFAULT_OUTPUT
                    else task.complete()
                )
            except Exception as exc:
                node.state, node.error = "failed", f"complete() raised {type(exc).__name__}: {exc}"
                continue
            if complete:
                node.state = "complete"
                continue
            if task.run is None:
                node.state = "missing"
                node.error = "external dependency is not complete"
                if self._has_handlers:
                    task.trigger_event(Event.DEPENDENCY_MISSING)
                continue
            try:
                deps = task.deps()
            except Exception as exc:
                node.state, node.error = "failed", f"requires() raised {type(exc).__name__}: {exc}"
                continue
            node.deps = [self._node(d, fresh) for d in deps]
        self._wire(fresh)
        return roots

    def _wire(self, fresh: list[Node]) -> None:
        for node in fresh:
            if node.state in TERMINAL:
                self.finished += 1
                if node.state != "complete":
                    self._record(node)
                continue
            self.unfinished += 1
        for node in fresh:
            if node.state != "pending":
                if node.state in BAD:
                    self._propagate(node)
                continue
            left = 0
            bad = None
            for dep in node.deps:
                st = dep.state
                if st in GOOD:
                    continue
                if st in BAD:
                    bad = dep
                    continue
                left += 1
                dep.dependents.append(node)
            node.deps_left = left
            if bad is not None:
                self._fail_upstream(node, bad)
            elif left == 0 and not self.dry_run:
                heapq.heappush(self.ready, (-node.priority, node.seq, node))

    def _fail_upstream(self, node: Node, cause: Node) -> None:
        if node.state in TERMINAL:
            return
        node.state = "upstream_failed"
        node.error = f"dependency {cause.id} {cause.state}"
        self._finish_count(node)
        self._propagate(node)

    def _propagate(self, node: Node) -> None:
        stack = list(node.dependents)
        cause = node
        while stack:
            dep = stack.pop()
            if dep.state in TERMINAL or dep.state == "running":
                continue
            dep.state = "upstream_failed"
            dep.error = f"dependency {cause.id} {cause.state}"
            self._finish_count(dep)
            stack.extend(dep.dependents)

    def _finish_count(self, node: Node) -> None:
        self.unfinished -= 1
        self.finished += 1
        self._record(node)
        if self.progress is not None:
            self.progress(self.finished, len(self.order))

    # ------------------------------------------------------------------ running
    def run(self, tasks: Iterable[Task]) -> Summary:
        started = time.time()
        roots = list(tasks)
        if self.recorder is not None:
            self.recorder.start([t.task_id for t in roots], self.owner, started)
        try:
            self.discover(roots)
            if not self.dry_run:
                if not self.inline:
                    cls = ThreadPool if self.executor == "thread" else ProcessPool
                    self.pool = cls(self.workers, self.results)
                if self.leases is not None:
                    self._timer(self.leases.ttl / 3, "renew", None, 0)
                self._loop()
        finally:
            if self.pool is not None:
                self.pool.close()
            if self.leases is not None:
                self.leases.release_all()
        summary = Summary(
            self.run_id, [t.task_id for t in roots], self.order, started, time.time(), self.dry_run
        )
        if self.recorder is not None:
            self.recorder.finish(summary.to_dict())
        return summary

    def _timer(self, delay: float, kind: str, node: Node | None, token: int) -> None:
        self._tseq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self._tseq, kind, node, token))

    def _loop(self) -> None:
        while self.unfinished > 0:
            self._dispatch()
            if self.unfinished <= 0:
                break
            if self.running == 0 and not self.ready:
                if not any(kind != "renew" for _, _, kind, _, _ in self.timers):
                    self._stuck()
                    break
            fired_before = self._fired
            delay = self._fire_timers()
            if self.unfinished <= 0:
                break
            if self.running == 0:
                if self._fired == fired_before and delay is not None and delay > 0:
                    time.sleep(delay)  # every ready task is blocked on resources or waits on a timer
                continue
            try:
                token, result = self.results.get(timeout=delay)
            except queue.Empty:
                continue
            self._handle(token, result)
            while True:
                try:
                    token, result = self.results.get_nowait()
                except queue.Empty:
                    break
                self._handle(token, result)

    def _fire_timers(self) -> float | None:
        """Run due timers; return seconds until the next one (None if there is none)."""
        timers = self.timers
        while timers:
            when = timers[0][0]
            now = time.monotonic()
            if when > now:
                return when - now
            _, _, kind, node, token = heapq.heappop(timers)
            self._fired += 1
            if kind == "renew":
                if self.leases is not None and self.unfinished > 0:
                    self.leases.renew()
                    self._timer(self.leases.ttl / 3, "renew", None, 0)
            elif kind in ("retry", "resume", "lease"):
                assert node is not None
                if kind == "lease":
                    try:
                        if node.task.complete():
                            node.state = "complete"
                            node.message = "completed by another runner"
                            self._finish_count(node)
                            self._release_dependents(node)
                            continue
                    except Exception:  # noqa: S110 - checked again on the next attempt
                        pass
                if node.state in ("pending", "polling", "waiting_lease"):
                    node.state = "pending"
                    node.resuming = kind == "resume"
                    heapq.heappush(self.ready, (-node.priority, node.seq, node))
            elif kind == "soft":
                assert node is not None
                if node.token == token and node.state == "running":
                    elapsed = time.time() - node.started
                    node.message = f"passed its soft timeout ({elapsed:.1f}s)"
                    node.task.trigger_event(Event.TIMEOUT, elapsed)
                    try:
                        node.task.on_soft_timeout(elapsed)
                    except Exception:  # noqa: S110 - a callback must not stop the run
                        pass
            elif kind == "hard":
                assert node is not None
                if node.token == token and node.state == "running" and self.by_token.pop(token, None):
                    self.pool.add_worker()  # the old thread cannot be stopped; keep the capacity
                    self.running -= 1
                    hard = node.task.hard_timeout()
                    self._after_result(
                        node,
                        Result(
                            "failed",
                            float(hard or 0),
                            transient=True,
                            error=f"HardTimeout: still running after {hard}s "
                            "(thread abandoned; use executor='process' to kill)",
                        ),
                    )
        return None

    def _can_take(self, need: dict[str, int]) -> bool:
        cap = self.capacity
        for name, amount in need.items():
            if name in cap and self.in_use.get(name, 0) + amount > cap[name]:
                return False
        return True

    def _take(self, node: Node) -> None:
        if node.resources and not node.holds:
            for name, amount in node.resources.items():
                self.in_use[name] = self.in_use.get(name, 0) + amount
            node.holds = True

    def _give_back(self, node: Node) -> None:
        if node.holds:
            for name, amount in node.resources.items():  # type: ignore[union-attr]
                self.in_use[name] -= amount
            node.holds = False

    def _dispatch(self) -> None:
        ready = self.ready
        blocked: list[tuple[int, int, Node]] = []
        inline = self.inline
        while ready and self.running < self.workers:
            item = heapq.heappop(ready)
            node = item[2]
            if node.state != "pending":
                continue
            need = node.resources
            if need and not node.holds:
                over = [k for k, v in need.items() if k in self.capacity and v > self.capacity[k]]
                if over:
                    self._after_result(
                        node,
                        Result(
                            "failed",
                            error=f"ResourceError: needs {need} but the build allows {self.capacity}",
                            transient=False,
                        ),
                    )
                    continue
                if not self._can_take(need):
                    blocked.append(item)
                    continue
            if self.leases is not None and node.id not in self.leases.held:
                taken, holder = self.leases.acquire(node.id)
                if not taken:
                    node.state = "waiting_lease"
                    node.message = f"lease held by {holder.get('owner') if holder else '?'}"
                    wait = self.lease_poll
                    if holder and "expires_at" in holder:
                        wait = max(0.05, min(wait, float(holder["expires_at"]) - time.time() + 0.05))
                    self._timer(wait, "lease", node, 0)
                    continue
            self._take(node)
            if not node.resuming:
                node.attempts += 1
            node.resuming = False
            node.state = "running"
            if not node.started:
                node.started = time.time()
            task = node.task
            final = node.attempts > task.retry_count
            if self._has_handlers:
                task.trigger_event(Event.START)
            soft, hard = task.soft_timeout, task.hard_timeout()
            if inline:
                self.running += 1
                if soft is None and hard is None:
                    result = execute(task, node.attempts, final)
                else:
                    result = self._inline_with_timeouts(node, final, soft, hard)
                self.running -= 1
                self._after_result(node, result)
                continue
            self._token += 1
            token = self._token
            node.token = token
            self.by_token[token] = node
            self.running += 1
            if soft is not None:
                self._timer(soft, "soft", node, token)
            if hard is not None and self.executor == "thread":
                self._timer(hard, "hard", node, token)
            self.pool.submit(token, task, node.attempts, final, hard)
        for item in blocked:
            heapq.heappush(ready, item)

    def _inline_with_timeouts(
        self, node: Node, final: bool, soft: float | None, hard: float | None
    ) -> Result:
        box: list[Result] = []
        thread = threading.Thread(
            target=lambda: box.append(execute(node.task, node.attempts, final)), daemon=True
        )
        start = time.monotonic()
        thread.start()
        if soft is not None and (hard is None or soft < hard):
            thread.join(soft)
            if thread.is_alive():
                elapsed = time.monotonic() - start
                node.message = f"passed its soft timeout ({elapsed:.1f}s)"
                node.task.trigger_event(Event.TIMEOUT, elapsed)
                try:
                    node.task.on_soft_timeout(elapsed)
                except Exception:  # noqa: S110
                    pass
        thread.join(None if hard is None else max(0.0, hard - (time.monotonic() - start)))
        if box:
            return box[0]
        return Result(
            "failed",
            time.monotonic() - start,
            transient=True,
            error=f"HardTimeout: still running after {hard}s (thread abandoned; "
            "use executor='process' to kill)",
        )

    def _handle(self, token: int, result: Result) -> None:
        node = self.by_token.pop(token, None)
        if node is None:  # a result of an attempt given up on (hard timeout)
            return
        self.running -= 1
        self._after_result(node, result)

    def _after_result(self, node: Node, result: Result) -> None:
        node.seconds += result.seconds
        status = result.status
        if status == "ok":
            node.state = "done"
            node.ended = time.time()
            node.message = result.message or node.message
            node.error = ""
            self._give_back(node)
            self._release_lease(node)
            self._finish_count(node)
            if self._has_handlers:
                node.task.trigger_event(Event.SUCCESS)
                node.task.trigger_event(Event.PROCESSING_TIME, result.seconds)
            self._release_dependents(node)
        elif status == "poll":
            node.state = "polling"
            node.polls += 1
            node.message = result.message
            if not node.task.hold_resources_while_polling:
                self._give_back(node)
            self._timer(max(0.0, result.after), "resume", node, 0)
        elif status == "deps":
            node.attempts -= 1
            self._give_back(node)
            node.state = "pending"
            new = self.discover(result.deps)
            left = 0
            bad = None
            for dep in new:
                node.deps.append(dep)
                if dep.state in GOOD:
                    continue
                if dep.state in BAD:
                    bad = dep
                    continue
                left += 1
                dep.dependents.append(node)
            node.deps_left = left
            if bad is not None:
                self._fail_upstream(node, bad)
            elif left == 0:
                heapq.heappush(self.ready, (-node.priority, node.seq, node))
        else:
            node.error = result.error
            node.traceback = result.traceback
            node.message = result.message or node.message
            self._give_back(node)
            if result.transient and node.attempts <= node.task.retry_count:
                delay = self._backoff(node)
                node.state = "pending"
                node.resuming = False
                if self._has_handlers:
                    node.task.trigger_event(Event.RETRY, node.attempts, delay)
                heapq.heappush(self.timers, (time.monotonic() + delay, self._next_tseq(), "retry", node, 0))
                return
            node.state = "failed"
            node.ended = time.time()
            self._release_lease(node)
            self._finish_count(node)
            if self._has_handlers:
                node.task.trigger_event(Event.FAILURE, TaskFailed(f"{node.id}: {result.error}"))
            self._propagate(node)

    def _next_tseq(self) -> int:
        self._tseq += 1
        return self._tseq

    def _backoff(self, node: Node) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, capped."""
        task = node.task
        delay = min(float(task.retry_max_delay), float(task.retry_delay) * (2 ** (node.attempts - 1)))
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def _release_dependents(self, node: Node) -> None:
        ready = self.ready
        for dep in node.dependents:
            dep.deps_left -= 1
            if dep.deps_left == 0 and dep.state == "pending":
                heapq.heappush(ready, (-dep.priority, dep.seq, dep))

    def _release_lease(self, node: Node) -> None:
        if self.leases is not None and node.id in self.leases.held:
            self.leases.release(node.id)

    def _record(self, node: Node) -> None:
        if self.recorder is not None:
            self.recorder.task(node.id, node.task.task_family, node.info())

    def _stuck(self) -> None:
        """Nothing runs, nothing is ready, no timer is due: what is left waits on a cycle."""
        for node in self.order:
            if node.state not in TERMINAL:
                node.state = "failed"
                node.error = "never became ready: dependency cycle"
                self._finish_count(node)


class ThreadPool:
    def __new__(cls, n: int, results: queue.Queue) -> Any:  # noqa: D102
        from backbeat.dag.pool import ThreadWorkers

        return ThreadWorkers(n, results)


class ProcessPool:
    def __new__(cls, n: int, results: queue.Queue) -> Any:  # noqa: D102
        from backbeat.dag.pool import ProcessWorkers

        return ProcessWorkers(n, results)


def build(
    tasks: Iterable[Task],
    workers: int = 1,
    executor: str = "thread",
    *,
    resources: dict[str, int] | None = None,
    platform: Any = None,
    settings: Any = None,
    documents: Any = None,
    leases: bool = True,
    records: bool = True,
    lease_ttl: float = 300.0,
    lease_poll: float = 5.0,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    seed: int | None = None,
    run_id: str | None = None,
    local_scheduler: bool = True,
    detailed_summary: bool = False,
    **_luigi_extras: Any,
) -> Summary:
    """Build ``tasks`` and everything they need; return a :class:`Summary` (``summary.ok``).

    ``platform`` (a backbeat.cloud Platform) is where GCS targets write, and its documents hold the
    leases and run records (``documents=`` alone does the same without changing the targets'
    platform). Without either, no leases or records are kept: the fastest path, for tests and
    benchmarks. ``local_scheduler``/``detailed_summary`` are accepted for Luigi call sites; the
    summary is truthy exactly when Luigi's ``build`` would return True.
    """
    if isinstance(tasks, Task):
        tasks = [tasks]
    if platform is not None:
        from backbeat.dag.context import use_platform

        use_platform(platform, settings)
        if documents is None:
            documents = platform.documents
    scheduler = Scheduler(
        workers,
        executor,
        resources,
        documents,
        leases,
        records,
        lease_ttl,
        lease_poll,
        dry_run,
        progress,
        seed,
        run_id,
    )
    return scheduler.run(list(tasks))


__all__ = ["HardTimeout", "Scheduler", "Summary", "TaskFailed", "build"]
