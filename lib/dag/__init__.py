"""Backbeat dag: a Luigi-style task engine (tasks, typed parameters, atomic targets, hourly ranges,
Dataproc/BigQuery templates) with an event-driven scheduler that scales to 100,000 tasks.

``import backbeat.dag as luigi`` is enough for most Luigi task modules: the names below are Luigi's.
Heavier parts (ranges, Dataproc, BigQuery, visualisation) load on first use.
"""

from __future__ import annotations

from typing import Any

from backbeat.dag.errors import (
    DagError,
    HardTimeout,
    JobFailed,
    LeaseHeld,
    ParameterError,
    PermanentTaskError,
    TargetError,
    TaskDefinitionError,
    TransientTaskError,
)
from backbeat.dag.parameters import (
    BoolParameter,
    ChoiceParameter,
    DateHourParameter,
    DateParameter,
    DictParameter,
    EnumParameter,
    FloatParameter,
    IntParameter,
    ListParameter,
    NumericalParameter,
    OptionalParameter,
    Parameter,
    TaskParameter,
)
from backbeat.dag.runner import Poll
from backbeat.dag.scheduler import Summary, TaskFailed, build
from backbeat.dag.targets import (
    GCSFlagTarget,
    GCSTarget,
    HourClosedTarget,
    LocalTarget,
    Target,
    format,
)
from backbeat.dag.task import Event, ExternalTask, Task, WrapperTask, externalize, flatten, task

_LAZY = {
    "RangeHourly": "backbeat.dag.ranges",
    "RangeDaily": "backbeat.dag.ranges",
    "missing_datetimes": "backbeat.dag.ranges",
    "BigQueryPartitionTarget": "backbeat.dag.bigquery",
    "BigQueryLoadTask": "backbeat.dag.bigquery",
    "BigQueryQueryTask": "backbeat.dag.bigquery",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'backbeat.dag' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def run(argv: list[str] | None = None) -> bool:  # luigi.run compatibility for `python module.py Task --x 1`
    from backbeat.dag.cli import run_argv

    return run_argv(argv)


__all__ = [
    "BoolParameter",
    "ChoiceParameter",
    "DagError",
    "DateHourParameter",
    "DateParameter",
    "DictParameter",
    "EnumParameter",
    "Event",
    "ExternalTask",
    "FloatParameter",
    "GCSFlagTarget",
    "GCSTarget",
    "HardTimeout",
    "HourClosedTarget",
    "IntParameter",
    "JobFailed",
    "LeaseHeld",
    "ListParameter",
    "LocalTarget",
    "NumericalParameter",
    "OptionalParameter",
    "Parameter",
    "ParameterError",
    "PermanentTaskError",
    "Poll",
    "Summary",
    "Target",
    "TargetError",
    "Task",
    "TaskDefinitionError",
    "TaskFailed",
    "TaskParameter",
    "TransientTaskError",
    "WrapperTask",
    "build",
    "externalize",
    "flatten",
    "format",
    "task",
]
