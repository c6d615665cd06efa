"""The local query engine must agree with Firestore: the same random documents and queries are run
on SqliteDocuments and on the Firestore emulator, and the answers compared (fixed seed)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from backbeat.cloud.local_documents import SqliteDocuments

pytestmark = pytest.mark.emulators

VALUES: list[Any] = [None, True, False, 0, 1, 2, -1, 1.5, 2.0, "", "a", "b", "ab", "B", [1], [1, 2], {"k": 1}]


def _doc(rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for field in ("x", "y"):
        if rng.random() < 0.85:  # sometimes the field is missing
            doc[field] = rng.choice(VALUES)
    doc["g"] = rng.choice(["p", "q"])
    return doc


def _query(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(["==", "!=", "<", "<=", ">", ">=", "in", "not-in", "array_contains"])
    value: Any = rng.choice([v for v in VALUES if v is not None])
    if op in ("in", "not-in"):
        value = rng.sample([v for v in VALUES if v is not None and not isinstance(v, list)], 3)
    if op == "array_contains":
        value = rng.choice([1, 2, "a"])
    filters = [("x", op, value)]
    if rng.random() < 0.4:
        filters.append(("g", "==", rng.choice(["p", "q"])))
    q: dict[str, Any] = {"filters": filters}
    if op in ("==", "in", "array_contains") and rng.random() < 0.5:
        q["order_by"] = "y"
    elif op not in ("==", "in", "array_contains"):
        q["order_by"] = "x"  # Firestore: an inequality field must be the first order
    q["descending"] = rng.random() < 0.5
    if rng.random() < 0.5:
        q["limit"] = rng.randint(1, 6)
    return q


def test_local_queries_match_the_firestore_emulator(gcp_settings: Any, tmp_path: Path, uid: str) -> None:
    from backbeat.cloud.gcp_documents import FirestoreDocuments

    rng = random.Random(20260101)
    local = SqliteDocuments(tmp_path / "d.sqlite3")
    remote = FirestoreDocuments(gcp_settings)
    coll = f"parity{uid}"
    for i in range(30):
        doc = _doc(rng)
        local.set(f"{coll}/d{i:02d}", doc)
        remote.set(f"{coll}/d{i:02d}", doc)
    mismatches = []
    for _ in range(60):
        q = _query(rng)
        want = [p for p, _ in remote.query(coll, **q)]
        got = [p for p, _ in local.query(coll, **q)]
        if want != got:
            mismatches.append((q, want, got))
    remote.close()
    assert mismatches == []
