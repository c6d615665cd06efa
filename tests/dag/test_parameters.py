"""Typed parameters: identity, parsing from text, clear errors, the decorator form."""

from __future__ import annotations

import datetime as dt
import enum

import pytest

import backbeat.dag as dag
from backbeat.dag.errors import ParameterError


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


class Everything(dag.Task):
    name = dag.Parameter()
    n = dag.IntParameter(default=3)
    ratio = dag.FloatParameter(default=0.5)
    flag = dag.BoolParameter()
    day = dag.DateParameter(default=dt.date(2026, 1, 2))
    hour = dag.DateHourParameter(default=dt.datetime(2026, 1, 2, 5))
    colour = dag.EnumParameter(enum=Colour, default=Colour.RED)
    items = dag.ListParameter(default=[1, 2])
    opts = dag.DictParameter(default={"a": 1})
    note = dag.Parameter(default="x", significant=False)


def test_identity_is_family_and_significant_values() -> None:
    a = Everything("alpha", n=4)
    b = Everything(name="alpha", n=4, note="ignored in identity")
    assert a == b and hash(a) == hash(b)
    assert a.task_id == b.task_id
    assert a != Everything("alpha", n=5)
    assert a.task_id.startswith(
        "Everything(name=alpha, n=4, ratio=0.5, flag=false, day=2026-01-02, hour=2026-01-02T05"
    )
    assert "note" not in a.task_id
    assert len({a, b, Everything("alpha", n=5)}) == 2


def test_values_are_normalised() -> None:
    t = Everything("a", n="7", flag="yes", hour="2026-03-04T07", items=[1, [2, 3]], opts={"k": [1]})
    assert t.n == 7 and t.flag is True
    assert t.hour == dt.datetime(2026, 3, 4, 7, tzinfo=dt.UTC)
    assert t.items == (1, (2, 3))
    assert t.opts["k"] == (1,)
    hash(t.opts)
    # naive hours are UTC; aware ones are converted and truncated to the hour
    cet = dt.timezone(dt.timedelta(hours=1))
    assert Everything("a", hour=dt.datetime(2026, 1, 1, 1, 59, tzinfo=cet)).hour == dt.datetime(
        2026, 1, 1, 0, tzinfo=dt.UTC
    )


def test_parse_every_type_from_text() -> None:
    t = Everything.from_str_params(
        {
            "name": "b",
            "n": "9",
            "ratio": "1.25",
            "flag": "true",
            "day": "2026-02-03",
            "hour": "2026-02-03T04",
            "colour": "BLUE",
            "items": '["x", 2]',
            "opts": '{"z": {"y": 1}}',
        }
    )
    assert (t.n, t.ratio, t.flag, t.day, t.colour) == (9, 1.25, True, dt.date(2026, 2, 3), Colour.BLUE)
    assert t.hour.hour == 4 and t.items == ("x", 2) and t.opts["z"]["y"] == 1
    # round trip through the canonical text
    assert Everything.from_str_params(t.to_str_params()) == t


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"name": "a", "n": "seven"}, "parameter 'n' (int)"),
        ({"name": "a", "day": "2026-13-01"}, "parameter 'day' (date)"),
        ({"name": "a", "colour": "GREEN"}, "parameter 'colour' (enum)"),
        ({"name": "a", "items": "{}"}, "parameter 'items' (list)"),
        ({"name": "a", "bogus": "1"}, "unknown parameter 'bogus'"),
        ({}, "missing value for parameter 'name'"),
    ],
)
def test_bad_values_raise_typed_errors_naming_the_parameter(params: dict, fragment: str) -> None:
    with pytest.raises(ParameterError) as err:
        Everything.from_str_params(params)
    assert fragment in str(err.value) and "Everything" in str(err.value)


def test_too_many_positional_arguments() -> None:
    with pytest.raises(ParameterError, match="positional"):
        Everything(*range(20))


def test_decorator_form(tmp_path) -> None:
    out_dir = tmp_path

    @dag.task(output=lambda day, n: dag.LocalTarget(out_dir / f"count-{day}-{n}.txt"))
    def count(day: dt.date, n: int = 2, task=None) -> None:
        with task.output().open("w") as f:
            f.write(str(n * 2))

    @dag.task(
        requires=lambda day: [count(day=day, n=i) for i in range(3)], output=str(out_dir / "sum-{day}.txt")
    )
    def total(day: dt.date, task=None) -> None:
        s = sum(int(t.open("r").read()) for t in task.input())
        with task.output().open("w") as f:
            f.write(str(s))

    t = total(day="2026-01-05")
    assert t.task_id == "total(day=2026-01-05)"
    summary = dag.build([t])
    assert summary.ok, summary.to_json()
    assert (out_dir / "sum-2026-01-05.txt").read_text() == "6"
    assert summary.counts == {"done": 4}
    # rerun skips what is done
    assert dag.build([t]).counts == {"complete": 1}
