"""Five-field cron expressions (the Cloud Scheduler / unix-cron dialect), evaluated in UTC.

Why our own: the local scheduler only needs "does this minute match", and the manifest loader
must reject a bad schedule with a message naming the field, which a small parser does plainly.

Supported: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists ``a,b``, month and
weekday names (``jan``, ``mon``), Sunday as 0 or 7. As in unix cron, when both day-of-month and
day-of-week are restricted, a day matches if either matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from backbeat.errors import ConfigError


class CronError(ConfigError):
    """A cron expression is malformed; the message names the field and the bad part."""


_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# (name, low, high, names)
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; :meth:`matches` tells whether a minute fires."""

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool

    def matches(self, t: datetime) -> bool:
        """True if the minute containing ``t`` (UTC) fires."""
        return t.minute in self.minutes and t.hour in self.hours and self._day_matches(t)

    def _day_matches(self, t: datetime) -> bool:
        if t.month not in self.months:
            return False
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.dom_any and self.dow_any:
            return True
        if self.dom_any:
            return dow
        if self.dow_any:
            return dom
        return dom or dow

    def next_after(self, t: datetime, limit_days: int = 366 * 5) -> datetime:
        """The first firing minute strictly after ``t`` (seconds dropped)."""
        cur = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = cur + timedelta(days=limit_days)
        while cur < end:
            if not self._day_matches(cur):
                cur = cur.replace(hour=0, minute=0) + timedelta(days=1)
            elif cur.hour not in self.hours:
                cur = cur.replace(minute=0) + timedelta(hours=1)
            elif cur.minute not in self.minutes:
                cur += timedelta(minutes=1)
            else:
                return cur
        raise CronError(f"cron {self.expr!r} never fires within {limit_days} days")


def _parse_value(token: str, name: str, low: int, high: int, names: dict[str, int], expr: str) -> int:
    value = names.get(token.lower()) if names else None
    if value is None:
        if not token.isdigit():
            raise CronError(f"cron {expr!r}: {name} field has {token!r}, not a number")
        value = int(token)
    if not low <= value <= high:
        raise CronError(f"cron {expr!r}: {name} value {value} is outside {low}-{high}")
    return value


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int], expr: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"cron {expr!r}: {name} field has an empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"cron {expr!r}: {name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, stop = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start = _parse_value(a, name, low, high, names, expr)
            stop = _parse_value(b, name, low, high, names, expr)
            if stop < start:
                raise CronError(f"cron {expr!r}: {name} range {base!r} runs backwards")
        else:
            start = _parse_value(base, name, low, high, names, expr)
            stop = high if step_text else start
        out.update(range(start, stop + 1, step))
    return out


def parse_cron(expr: str) -> Cron:
    """Parse a five-field cron expression; raise :class:`CronError` naming the bad field."""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(
            f"cron {expr!r} has {len(fields)} fields; expected 5 (minute hour day-of-month month day-of-week)"
        )
    sets = [_parse_field(f, *spec, expr=expr) for f, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = {0 if d == 7 else d for d in sets[4]}
    return Cron(
        expr=expr,
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=frozenset(weekdays),
        dom_any=fields[2] == "*",
        dow_any=fields[4] == "*",
    )
