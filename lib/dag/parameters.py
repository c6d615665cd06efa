"""Typed task parameters: they form a task's identity and parse from the command line.

A parameter is a class attribute of a task; the task's constructor turns the given value (or the
default) into the normalised instance attribute. ``serialize`` produces the canonical text used in
the task id, so two tasks with equal parameters are the same task. Dates and hours are UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from backbeat.dag.errors import ParameterError

_NO_VALUE = object()
_counter = itertools.count()
UTC = dt.UTC


class FrozenDict(Mapping):
    """An immutable, hashable mapping: the normalised value of a DictParameter."""

    __slots__ = ("_d", "_h")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._d = dict(*args, **kwargs)
        self._h: int | None = None

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __repr__(self) -> str:
        return f"FrozenDict({self._d!r})"

    def get_wrapped(self) -> dict[Any, Any]:
        return dict(self._d)


def freeze(value: Any) -> Any:
    """Lists become tuples and dicts FrozenDicts, recursively, so parameter values are hashable."""
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Parameter:
    """A string parameter, and the base of every typed parameter.

    Arguments follow Luigi's: ``default``, ``significant`` (False keeps it out of the task id),
    ``description``, ``positional``.
    """

    type_name = "str"
    fast_type: type | None = str  # values of exactly this type need no normalising (a hot path)

    def __init__(
        self,
        default: Any = _NO_VALUE,
        *,
        significant: bool = True,
        description: str | None = None,
        positional: bool = True,
        **_luigi_extras: Any,
    ) -> None:
        self._default = default
        self.significant = significant
        self.description = description
        self.positional = positional
        self._order = next(_counter)

    # --- values
    @property
    def has_default(self) -> bool:
        return self._default is not _NO_VALUE

    def default_value(self, owner: str, name: str) -> Any:
        if self._default is _NO_VALUE:
            raise ParameterError(f"{owner}: missing value for parameter {name!r} ({self.type_name})")
        if self._default is None:
            return None
        return self.normalize(self._default)

    def parse(self, text: str) -> Any:
        """Text from the command line -> value."""
        return text

    def serialize(self, value: Any) -> str:
        """Value -> canonical text (task ids, command lines, run records)."""
        return str(value)

    def normalize(self, value: Any) -> Any:
        """Any accepted input -> the canonical in-memory value."""
        return value

    def _coerce(self, value: Any, owner: str, name: str) -> Any:
        if value is None and self._default is None:
            return None
        try:
            return self.normalize(value)
        except ParameterError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ParameterError(
                f"{owner}: parameter {name!r} ({self.type_name}): bad value {value!r}: {exc}"
            ) from None

    def parse_from(self, text: str, owner: str, name: str) -> Any:
        try:
            return self.normalize(self.parse(text))
        except ParameterError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ParameterError(
                f"{owner}: parameter {name!r} ({self.type_name}): cannot parse {text!r}: {exc}"
            ) from None


class IntParameter(Parameter):
    type_name = "int"
    fast_type = int

    def parse(self, text: str) -> int:
        return int(text)

    def normalize(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"expected an int, got {type(value).__name__}")
        return int(value)


class FloatParameter(Parameter):
    type_name = "float"
    fast_type = float

    def parse(self, text: str) -> float:
        return float(text)

    def normalize(self, value: Any) -> float:
        if isinstance(value, bool):
            raise TypeError("expected a float, got bool")
        return float(value)

    def serialize(self, value: Any) -> str:
        return repr(float(value))


class BoolParameter(Parameter):
    type_name = "bool"
    fast_type = bool
    _TRUE = {"true", "1", "yes", "y", "on"}
    _FALSE = {"false", "0", "no", "n", "off", ""}

    def __init__(self, default: Any = False, **kwargs: Any) -> None:
        super().__init__(default, **kwargs)

    def parse(self, text: str) -> bool:
        low = str(text).strip().lower()
        if low in self._TRUE:
            return True
        if low in self._FALSE:
            return False
        raise ValueError("expected true/false")

    def normalize(self, value: Any) -> bool:
        if isinstance(value, str):
            return self.parse(value)
        if not isinstance(value, bool | int):
            raise TypeError(f"expected a bool, got {type(value).__name__}")
        return bool(value)

    def serialize(self, value: Any) -> str:
        return "true" if value else "false"


class DateParameter(Parameter):
    """A calendar day (UTC), written ``YYYY-MM-DD``."""

    type_name = "date"
    fast_type = dt.date

    def parse(self, text: str) -> dt.date:
        return dt.date.fromisoformat(text.strip())

    def normalize(self, value: Any) -> dt.date:
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC)
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            return self.parse(value)
        raise TypeError(f"expected a date, got {type(value).__name__}")

    def serialize(self, value: Any) -> str:
        return value.isoformat()


class DateHourParameter(Parameter):
    """An hour in UTC, written ``YYYY-MM-DDTHH``; values are timezone-aware UTC datetimes truncated to
    the hour (naive inputs are taken as UTC)."""

    type_name = "hour"
    fast_type = None

    def parse(self, text: str) -> dt.datetime:
        text = text.strip()
        if len(text) == 13 and text[10] in "T ":
            return dt.datetime.strptime(text[:10] + "T" + text[11:], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

    def normalize(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            value = self.parse(value)
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(minute=0, second=0, microsecond=0)

    def serialize(self, value: Any) -> str:
        return value.strftime("%Y-%m-%dT%H")


class EnumParameter(Parameter):
    """A member of ``enum``, written by name."""

    type_name = "enum"
    fast_type = None

    def __init__(self, default: Any = _NO_VALUE, *, enum: type[enum.Enum], **kwargs: Any) -> None:
        self.enum = enum
        super().__init__(default, **kwargs)

    def parse(self, text: str) -> enum.Enum:
        try:
            return self.enum[text]
        except KeyError:
            raise ValueError(f"not one of {[m.name for m in self.enum]}") from None

    def normalize(self, value: Any) -> enum.Enum:
        if isinstance(value, self.enum):
            return value
        if isinstance(value, str):
            return self.parse(value)
        return self.enum(value)

    def serialize(self, value: Any) -> str:
        return value.name


class ChoiceParameter(Parameter):
    """One of a fixed set of values (``var_type`` parses the text)."""

    type_name = "choice"
    fast_type = None

    def __init__(
        self, default: Any = _NO_VALUE, *, choices: Any, var_type: type = str, **kwargs: Any
    ) -> None:
        self.choices = tuple(choices)
        self.var_type = var_type
        super().__init__(default, **kwargs)

    def parse(self, text: str) -> Any:
        return self.var_type(text)

    def normalize(self, value: Any) -> Any:
        if value not in self.choices:
            raise ValueError(f"not one of {list(self.choices)}")
        return value


class ListParameter(Parameter):
    """A list (JSON on the command line); held as a tuple so it can be part of the identity."""

    type_name = "list"
    fast_type = None

    def parse(self, text: str) -> Any:
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError("expected a JSON list")
        return value

    def normalize(self, value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = self.parse(value)
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return freeze(value)

    def serialize(self, value: Any) -> str:
        return json.dumps(_thaw(value), separators=(",", ":"), sort_keys=True, default=str)


class DictParameter(Parameter):
    """A mapping (JSON on the command line); held as a FrozenDict."""

    type_name = "dict"
    fast_type = FrozenDict

    def parse(self, text: str) -> Any:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value

    def normalize(self, value: Any) -> FrozenDict:
        if isinstance(value, str):
            value = self.parse(value)
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {type(value).__name__}")
        return freeze(value)

    def serialize(self, value: Any) -> str:
        return json.dumps(_thaw(value), separators=(",", ":"), sort_keys=True, default=str)


class TaskParameter(Parameter):
    """A task class, written by its family name (used by the range tasks' ``of``)."""

    type_name = "task"
    fast_type = None

    def parse(self, text: str) -> type:
        from backbeat.dag.task import Register

        return Register.get_task_cls(text)

    def normalize(self, value: Any) -> type:
        if isinstance(value, str):
            return self.parse(value)
        if not isinstance(value, type):
            raise TypeError(f"expected a task class, got {type(value).__name__}")
        return value

    def serialize(self, value: Any) -> str:
        return value.get_task_family()


NumericalParameter = FloatParameter
OptionalParameter = Parameter
