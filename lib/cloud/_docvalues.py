"""Document paths, value checks and Firestore's query semantics, shared by the documents adapters.

The ``local`` adapter evaluates queries in Python and must agree with Firestore: a filter only
matches values of the same kind (``x < 5`` never matches a string, ``True`` is not ``1``), a
document without the field never matches, ordering across kinds follows Firestore's type order,
ties break on the document id, and a query with an inequality filter but no ``order_by`` is
ordered by the (first) inequality field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from backbeat.cloud.ports import CloudError

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not-in", "array_contains")
INEQUALITIES = ("!=", "<", "<=", ">", ">=", "not-in")
_MISSING = object()


def split_document(path: str) -> tuple[str, str]:
    """``a/b/c/d`` -> (``a/b/c``, ``d``); raises CloudError if ``path`` is not a document path."""
    parts = path.split("/")
    if not path or any(not p for p in parts) or len(parts) % 2:
        raise CloudError(
            f"{path!r} is not a document path (collection/doc[/collection/doc...], no empty segments)"
        )
    return "/".join(parts[:-1]), parts[-1]


def check_collection(path: str) -> str:
    parts = path.split("/")
    if not path or any(not p for p in parts) or len(parts) % 2 == 0:
        raise CloudError(f"{path!r} is not a collection path (collection[/doc/collection...])")
    return path


def check_value(value: Any, where: str) -> None:
    """Raise CloudError unless ``value`` is JSON-like (str, int, float, bool, None, list, dict[str, ...])."""
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_value(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CloudError(f"{where}: key {k!r} is not a string")
            check_value(v, f"{where}.{k}")
        return
    raise CloudError(f"{where}: {type(value).__name__} is not a JSON-like document value")


def check_data(path: str, data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise CloudError(f"document {path!r}: data must be a mapping, got {type(data).__name__}")
    check_value(data, path)
    return dict(data)


def _rank(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, bool):
        return 1
    if isinstance(v, float) and math.isnan(v):
        return 2
    if isinstance(v, int | float):
        return 3
    if isinstance(v, str):
        return 5
    if isinstance(v, list | tuple):
        return 9
    return 10  # map


def sort_key(v: Any) -> tuple[Any, ...]:
    """A key that orders any JSON-like values the way Firestore does."""
    r = _rank(v)
    if r in (0, 2):
        return (r,)
    if r == 5:
        return (r, v.encode())
    if r == 9:
        return (r, tuple(sort_key(x) for x in v))
    if r == 10:
        return (r, tuple((k.encode(), sort_key(x)) for k, x in sorted(v.items())))
    return (r, v)


def field_value(data: Mapping[str, Any], field: str) -> Any:
    """The value at a dotted field path, or ``_MISSING``."""
    cur: Any = data
    for part in field.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _eq(a: Any, b: Any) -> bool:
    return _rank(a) == _rank(b) and sort_key(a) == sort_key(b)


def matches(data: Mapping[str, Any], flt: tuple[str, str, Any]) -> bool:
    field, op, want = flt
    have = field_value(data, field)
    if have is _MISSING:
        return False
    if op == "==":
        return _eq(have, want)
    if op == "!=":
        return have is not None and not _eq(have, want)
    if op == "in":
        return any(_eq(have, w) for w in want)
    if op == "not-in":
        return have is not None and not any(_eq(have, w) for w in want)
    if op == "array_contains":
        return isinstance(have, list) and any(_eq(x, want) for x in have)
    if _rank(have) != _rank(want):
        return False
    a, b = sort_key(have), sort_key(want)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def check_filters(filters: Sequence[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    out = []
    for f in filters:
        if not (isinstance(f, tuple | list) and len(f) == 3):
            raise CloudError(f"filter {f!r} must be (field, op, value)")
        field, op, value = f
        if op not in OPS:
            raise CloudError(f"filter {f!r}: operator {op!r} is not one of {', '.join(OPS)}")
        if op in ("in", "not-in") and not isinstance(value, list | tuple):
            raise CloudError(f"filter {f!r}: {op!r} needs a list of values")
        out.append((str(field), op, list(value) if op in ("in", "not-in") else value))
    return out


def run_query(
    rows: Sequence[tuple[str, dict[str, Any]]],
    filters: Sequence[tuple[str, str, Any]],
    order_by: str | None,
    descending: bool,
    limit: int | None,
) -> list[tuple[str, dict[str, Any]]]:
    """Filter, order and limit ``(path, data)`` rows as Firestore would."""
    flts = check_filters(filters)
    hits = [(p, d) for p, d in rows if all(matches(d, f) for f in flts)]
    field = order_by or next((f[0] for f in flts if f[1] in INEQUALITIES), None)
    doc_id = lambda p: p.rsplit("/", 1)[-1].encode()  # noqa: E731
    if field is None:
        hits.sort(key=lambda r: doc_id(r[0]), reverse=descending)
    else:
        hits = [r for r in hits if field_value(r[1], field) is not _MISSING]
        hits.sort(key=lambda r: (sort_key(field_value(r[1], field)), doc_id(r[0])), reverse=descending)
    if limit is not None:
        if limit < 0:
            raise CloudError(f"query limit {limit} must be >= 0")
        hits = hits[:limit]
    return hits
