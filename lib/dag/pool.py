"""Worker threads and worker processes that run task attempts and report to one result queue.

Process workers are forked once at the start of a build (so task classes defined anywhere, even
in a test function, exist in the children) and fed over a pipe by one dispatcher thread each. The
dispatcher enforces the hard timeout: it kills the process, forks a replacement and reports a
HardTimeout failure. Soft timeouts are the scheduler's business (it only raises an event).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from typing import Any

from backbeat.dag.runner import Result, execute

STOP = None


def _child_main(conn: Any) -> None:
    from backbeat.dag import context

    context.after_fork()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is STOP:
            return
        task, attempt, final = msg
        conn.send(execute(task, attempt, final))


class ThreadWorkers:
    """``n`` threads pulling ``(token, task, attempt, final, hard)`` from a queue."""

    def __init__(self, n: int, results: queue.Queue) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.results = results
        self.threads: list[threading.Thread] = []
        for _ in range(n):
            self.add_worker()

    def add_worker(self) -> None:
        t = threading.Thread(target=self._loop, daemon=True, name="dag-worker")
        t.start()
        self.threads.append(t)

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is STOP:
                return
            token, task, attempt, final, _hard = job
            self.results.put((token, execute(task, attempt, final)))

    def submit(self, token: Any, task: Any, attempt: int, final: bool, hard: float | None) -> None:
        self.jobs.put((token, task, attempt, final, hard))

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(STOP)


class ProcessWorkers:
    """``n`` forked processes, each fed by a dispatcher thread that also enforces hard timeouts."""

    def __init__(self, n: int, results: queue.Queue) -> None:
        self.ctx = multiprocessing.get_context("fork")
        self.jobs: queue.Queue = queue.Queue()
        self.results = results
        self.procs: list[Any] = [self._spawn() for _ in range(n)]
        self.threads = [
            threading.Thread(target=self._dispatch, args=(i,), daemon=True, name=f"dag-proc-{i}")
            for i in range(n)
        ]
        for t in self.threads:
            t.start()

    def _spawn(self) -> tuple[Any, Any]:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_child_main, args=(child,), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def _dispatch(self, i: int) -> None:
        while True:
            job = self.jobs.get()
            if job is STOP:
                proc, conn = self.procs[i]
                try:
                    conn.send(STOP)
                except (BrokenPipeError, OSError):
                    pass
                proc.join(2)
                if proc.is_alive():
                    proc.kill()
                return
            token, task, attempt, final, hard = job
            proc, conn = self.procs[i]
            try:
                conn.send((task, attempt, final))
                if conn.poll(hard):  # hard=None waits forever
                    result = conn.recv()
                else:
                    proc.kill()
                    proc.join()
                    self.procs[i] = self._spawn()
                    result = Result(
                        "failed", float(hard or 0), error=f"HardTimeout: killed after {hard}s", transient=True
                    )
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
                code = proc.exitcode
                proc.join(1)
                self.procs[i] = self._spawn()
                result = Result(
                    "failed", 0.0, error=f"WorkerDied: worker process exited ({code}): {exc}", transient=True
                )
            except Exception as exc:  # e.g. the task does not pickle
                result = Result(
                    "failed", 0.0, error=f"{type(exc).__name__}: cannot send task to a worker: {exc}"
                )
            self.results.put((token, result))

    def submit(self, token: Any, task: Any, attempt: int, final: bool, hard: float | None) -> None:
        self.jobs.put((token, task, attempt, final, hard))

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(STOP)
        for t in self.threads:
            t.join(5)

    @staticmethod
    def pid() -> int:
        return os.getpid()
