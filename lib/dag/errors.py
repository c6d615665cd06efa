"""Typed errors of the task engine; each message names the task, parameter or target at fault."""

from __future__ import annotations

from backbeat.errors import BackbeatError


class DagError(BackbeatError):
    """Base class of the task engine's own errors."""


class ParameterError(DagError):
    """A parameter is missing, unknown, or its value does not parse (names task and parameter)."""


class TaskDefinitionError(DagError):
    """A task class or a task's requires()/output() is malformed."""


class TargetError(DagError):
    """A target could not be read or written (names the path or object)."""


class TransientTaskError(DagError):
    """Raise from run() to say "worth retrying": the scheduler retries it with backoff."""


class PermanentTaskError(DagError):
    """Raise from run() to say "retrying will not help": the task fails at once."""


class HardTimeout(DagError):
    """A task ran past its hard timeout and was stopped (process pool) or abandoned (threads)."""


class LeaseHeld(DagError):
    """Another runner holds the lease of this task id."""


class JobFailed(DagError):
    """A Dataproc or BigQuery job ended in ERROR; the message carries the job id and details."""


class ModuleTaskError(DagError):
    """``module:Task`` on the command line does not name an importable task class."""
