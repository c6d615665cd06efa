"""Running one attempt of one task: in the scheduler's thread, a worker thread or a pool process.

The result is a small picklable record; exceptions travel as text plus a transient/permanent
verdict, so the scheduler can decide on a retry without unpickling foreign exception types.
"""

from __future__ import annotations

import inspect
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from backbeat.dag.errors import HardTimeout, PermanentTaskError, TaskDefinitionError, TransientTaskError
from backbeat.dag.task import Task, flatten, getpaths

_DEFAULT_OUTPUT = Task.output
_DEFAULT_ON_SUCCESS = Task.on_success


class Poll(Exception):  # noqa: N818 - a signal, not an error
    """Raise from ``run()`` to say "my work runs elsewhere; ask me again in ``after`` seconds".

    The scheduler frees the worker (keeping the task's resources and lease) and calls ``run`` again
    later. Dataproc and BigQuery templates use it so a long job never blocks a worker."""

    def __init__(self, after: float = 10.0, note: str = "") -> None:
        super().__init__(note or f"poll again in {after}s")
        self.after = float(after)
        self.note = note


@dataclass
class Result:
    status: str  # ok | failed | deps | poll
    seconds: float = 0.0
    error: str = ""
    traceback: str = ""
    transient: bool = False
    message: str = ""
    deps: list[Task] = field(default_factory=list)
    after: float = 0.0


_TRANSIENT_NAMES = {
    "ServiceUnavailable",
    "TooManyRequests",
    "DeadlineExceeded",
    "InternalServerError",
    "BadGateway",
    "GatewayTimeout",
    "Aborted",
    "ResourceExhausted",
    "RetryError",
    "TransientError",
}


def is_transient(task: Task, exc: BaseException) -> bool:
    """The retry verdict: the task's own ``is_transient`` first, then the default rules (transient:
    TransientTaskError, the ports' TransientError, connection and timeout errors, Google API
    unavailable/throttled/deadline errors, hard timeouts; everything else is permanent)."""
    verdict = task.is_transient(exc)
    if verdict is not None:
        return bool(verdict)
    if isinstance(exc, PermanentTaskError):
        return False
    if isinstance(exc, TransientTaskError | HardTimeout | ConnectionError | TimeoutError):
        return True
    return any(k.__name__ in _TRANSIENT_NAMES for k in type(exc).__mro__)


def execute(task: Task, attempt: int, final_attempt: bool) -> Result:
    """Run one attempt of ``task``; never raises (except KeyboardInterrupt/SystemExit)."""
    start = time.perf_counter()
    task.attempt = attempt  # type: ignore[attr-defined]
    try:
        run = task.run
        if run is None:
            raise TaskDefinitionError(f"{task.task_id}: external task is not complete")
        out = run()
        if inspect.isgenerator(out):
            send: Any = None
            while True:
                try:
                    requested = out.send(send)
                except StopIteration:
                    break
                deps = flatten(requested)
                for dep in deps:
                    if not isinstance(dep, Task):
                        raise TaskDefinitionError(f"{task.task_id}: run() yielded {dep!r}, not a Task")
                if all(dep.complete() for dep in deps):
                    send = getpaths(requested)
                else:
                    out.close()
                    return Result("deps", time.perf_counter() - start, deps=deps)
        cls = type(task)
        outputs = flatten(task.output()) if cls.output is not _DEFAULT_OUTPUT else ()
        if outputs:
            missing = [o for o in outputs if not o.exists()]
            if missing:
                raise TaskDefinitionError(
                    f"{task.task_id}: run() finished but output {missing[0]!r} does not exist"
                )
        message = task.on_success() if cls.on_success is not _DEFAULT_ON_SUCCESS else None
        return Result("ok", time.perf_counter() - start, message=str(message) if message else "")
    except Poll as poll:
        return Result("poll", time.perf_counter() - start, after=poll.after, message=poll.note)
    except Exception as exc:
        transient = is_transient(task, exc)
        message = ""
        if not transient or final_attempt:
            try:
                message = task.on_failure(exc) or ""
            except Exception as cb_exc:  # the callback itself failed: say so, keep the first error
                message = f"on_failure raised {type(cb_exc).__name__}: {cb_exc}"
        return Result(
            "failed",
            time.perf_counter() - start,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=20),
            transient=transient,
            message=str(message),
        )
