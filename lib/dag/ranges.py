"""Hourly and daily ranges: which partitions of a task are missing, found with one prefix listing.

``RangeHourly(of=Cls, start=..., stop=...)`` requires ``Cls(hour=h)`` for every missing hour of
``[start, stop)`` (UTC), newest first, at most ``task_limit`` of them. Completeness is decided in
bulk: when every candidate's outputs can be listed (local files, GCS objects, the events bucket's
``_SUCCESS`` markers), the longest common prefix of their names is listed once and each hour is
checked against that set, instead of one existence check per hour.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from backbeat.dag.errors import ParameterError
from backbeat.dag.parameters import (
    BoolParameter,
    DateHourParameter,
    DateParameter,
    DictParameter,
    IntParameter,
    Parameter,
    TaskParameter,
)
from backbeat.dag.task import Task, WrapperTask, flatten

UTC = dt.UTC


def hours_between(start: dt.datetime, stop: dt.datetime) -> list[dt.datetime]:
    """Every UTC hour in ``[start, stop)``."""
    start = DateHourParameter().normalize(start)
    stop = DateHourParameter().normalize(stop)
    n = int((stop - start).total_seconds() // 3600)
    return [start + dt.timedelta(hours=i) for i in range(max(0, n))]


def days_between(start: dt.date, stop: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(max(0, (stop - start).days))]


def _param_name(of: type, kinds: tuple[type, ...], given: str | None) -> str:
    if given:
        if given not in of._param_index:
            raise ParameterError(f"{of.get_task_family()} has no parameter {given!r}")
        return given
    for name, param in of._params:
        if isinstance(param, kinds):
            return name
    raise ParameterError(f"{of.get_task_family()} has no {'/'.join(k.__name__ for k in kinds)} to range over")


def bulk_complete(tasks: list[Task]) -> list[bool]:
    """Completeness of many tasks: one listing of the common prefix when every output is listable,
    else one ``complete()`` call per task."""
    outputs = [flatten(t.output()) for t in tasks]
    listings = []
    for outs in outputs:
        if not outs:
            return [t.complete() for t in tasks]
        per = [o.listing() for o in outs]
        if any(x is None for x in per):
            return [t.complete() for t in tasks]
        listings.append(per)
    namespaces = {ns for per in listings for ns, _, _ in per}
    if len(namespaces) != 1:
        return [t.complete() for t in tasks]
    names = [name for per in listings for _, name, _ in per]
    prefix = os.path.commonprefix(names)
    lister = listings[0][0][2]
    existing = set(lister(prefix))
    return [all(name in existing for _, name, _ in per) for per in listings]


def missing_datetimes(
    of: type,
    start: dt.datetime,
    stop: dt.datetime,
    of_params: dict[str, Any] | None = None,
    param_name: str | None = None,
) -> list[dt.datetime]:
    """The hours of ``[start, stop)`` whose ``of`` task is not complete, newest first."""
    name = _param_name(of, (DateHourParameter,), param_name)
    hours = hours_between(start, stop)
    tasks = [of(**{**dict(of_params or {}), name: h}) for h in hours]
    done = bulk_complete(tasks) if tasks else []
    return sorted((h for h, ok in zip(hours, done, strict=True) if not ok), reverse=True)


def missing_dates(
    of: type,
    start: dt.date,
    stop: dt.date,
    of_params: dict[str, Any] | None = None,
    param_name: str | None = None,
) -> list[dt.date]:
    """The days of ``[start, stop)`` whose ``of`` task is not complete, newest first."""
    name = _param_name(of, (DateParameter,), param_name)
    days = days_between(start, stop)
    tasks = [of(**{**dict(of_params or {}), name: d}) for d in days]
    done = bulk_complete(tasks) if tasks else []
    return sorted((d for d, ok in zip(days, done, strict=True) if not ok), reverse=True)


def _now_hour() -> dt.datetime:
    return dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


class RangeHourly(WrapperTask):
    """Requires ``of`` for the missing hours of ``[start, stop)``: newest first, ``task_limit`` at most.

    ``stop`` defaults to the current UTC hour (exclusive), ``start`` to ``stop - hours_back``."""

    of = TaskParameter()
    of_params = DictParameter(default={})
    start = DateHourParameter(default=None)
    stop = DateHourParameter(default=None)
    hours_back = IntParameter(default=24)
    task_limit = IntParameter(default=50)
    param_name = Parameter(default=None)
    reverse = BoolParameter(default=True)

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        stop = self.stop or _now_hour()
        start = self.start or stop - dt.timedelta(hours=self.hours_back)
        return start, stop

    def gaps(self) -> list[dt.datetime]:
        """Every missing hour of the window, newest first (not limited)."""
        if not hasattr(self, "_gaps"):
            start, stop = self.window()
            self._gaps = missing_datetimes(self.of, start, stop, dict(self.of_params), self.param_name)
        return self._gaps

    def requires(self) -> list[Task]:
        chosen = self.gaps()[: max(0, self.task_limit)]
        if not self.reverse:
            chosen = sorted(chosen)
        name = _param_name(self.of, (DateHourParameter,), self.param_name)
        return [self.of(**{**dict(self.of_params), name: h}) for h in chosen]

    def complete(self) -> bool:
        return not self.gaps()


class RangeDaily(WrapperTask):
    """Requires ``of`` for the missing days of ``[start, stop)`` (UTC dates), newest first."""

    of = TaskParameter()
    of_params = DictParameter(default={})
    start = DateParameter(default=None)
    stop = DateParameter(default=None)
    days_back = IntParameter(default=7)
    task_limit = IntParameter(default=50)
    param_name = Parameter(default=None)
    reverse = BoolParameter(default=True)

    def window(self) -> tuple[dt.date, dt.date]:
        stop = self.stop or dt.datetime.now(UTC).date()
        start = self.start or stop - dt.timedelta(days=self.days_back)
        return start, stop

    def gaps(self) -> list[dt.date]:
        if not hasattr(self, "_gaps"):
            start, stop = self.window()
            self._gaps = missing_dates(self.of, start, stop, dict(self.of_params), self.param_name)
        return self._gaps

    def requires(self) -> list[Task]:
        chosen = self.gaps()[: max(0, self.task_limit)]
        if not self.reverse:
            chosen = sorted(chosen)
        name = _param_name(self.of, (DateParameter,), self.param_name)
        return [self.of(**{**dict(self.of_params), name: d}) for d in chosen]

    def complete(self) -> bool:
        return not self.gaps()
