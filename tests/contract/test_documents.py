"""Documents contract: the same tests over SqliteDocuments and FirestoreDocuments (emulator)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from backbeat.cloud.ports import AlreadyExists, CloudError, Documents, NotFound, Transaction


@pytest.fixture
def coll(uid: str) -> str:
    return f"c{uid}"


def test_create_get_and_already_exists(documents: Documents, coll: str) -> None:
    path = f"{coll}/d1"
    assert documents.get(path) is None
    documents.create(path, {"n": 1, "tags": ["a", "b"], "nested": {"x": 1.5, "ok": True}, "none": None})
    with pytest.raises(AlreadyExists):
        documents.create(path, {"n": 2})
    assert documents.get(path) == {"n": 1, "tags": ["a", "b"], "nested": {"x": 1.5, "ok": True}, "none": None}


def test_update_set_delete(documents: Documents, coll: str) -> None:
    path = f"{coll}/d1"
    with pytest.raises(NotFound):
        documents.update(path, {"n": 1})
    assert documents.get(path) is None  # a failed update creates nothing
    documents.set(path, {"n": 1, "keep": "yes", "m": {"a": 1, "b": 2}})
    documents.update(path, {"n": 2, "m": {"c": 3}, "dotted.key": "literal"})
    assert documents.get(path) == {"n": 2, "keep": "yes", "m": {"c": 3}, "dotted.key": "literal"}
    documents.set(path, {"only": "this"})
    assert documents.get(path) == {"only": "this"}
    documents.delete(path)
    documents.delete(path)  # idempotent
    assert documents.get(path) is None


def test_query_filters_order_limit_direct_children_only(documents: Documents, coll: str) -> None:
    for i in range(8):
        documents.set(f"{coll}/doc{i}", {"n": i, "kind": "odd" if i % 2 else "even", "s": f"v{7 - i}"})
    documents.set(f"{coll}/zz", {"kind": "odd"})  # no "n": never matches a filter or order on n
    documents.set(f"{coll}/doc3/sub/x", {"n": 3, "kind": "odd"})  # a grandchild, not in the collection
    documents.set(f"other{coll}/doc1", {"n": 1, "kind": "odd"})

    got = documents.query(
        coll, [("kind", "==", "odd"), ("n", ">=", 3)], order_by="n", descending=True, limit=2
    )
    assert got == [(f"{coll}/doc7", {"n": 7, "kind": "odd", "s": "v0"}),
                   (f"{coll}/doc5", {"n": 5, "kind": "odd", "s": "v2"})]  # fmt: skip
    assert [p for p, _ in documents.query(coll, [("kind", "==", "odd")])] == [
        f"{coll}/doc1", f"{coll}/doc3", f"{coll}/doc5", f"{coll}/doc7", f"{coll}/zz"]  # fmt: skip
    assert [d["n"] for _, d in documents.query(coll, [("n", "in", [2, 4, 99])], order_by="n")] == [2, 4]
    assert [d["n"] for _, d in documents.query(coll, [("n", "<", 3)], order_by="s")] == [2, 1, 0]
    assert [d["n"] for _, d in documents.query(coll, order_by="n", limit=3)] == [0, 1, 2]
    assert [d["n"] for _, d in documents.query(coll, [("n", "!=", 4)], limit=3)] == [0, 1, 2]
    assert documents.query(coll, [("n", ">", "a string")]) == []  # types never compare across kinds
    assert len(documents.query(f"{coll}/doc3/sub")) == 1


def _increment(path: str, calls: list[int]) -> Any:
    def fn(t: Transaction) -> int:
        calls.append(1)
        doc = t.get(path) or {"count": 0}
        t.set(path, {"count": doc["count"] + 1})
        return doc["count"] + 1

    return fn


def test_transactions_under_contention_lose_no_update(documents: Documents, coll: str) -> None:
    path = f"{coll}/counter"
    calls: list[int] = []
    errors: list[BaseException] = []
    per_writer = 5
    barrier = threading.Barrier(2)

    def writer() -> None:
        barrier.wait()
        try:
            for _ in range(per_writer):
                documents.transaction(_increment(path, calls), max_attempts=30)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert documents.get(path) == {"count": 2 * per_writer}  # both writers' commits, none lost
    assert len(calls) >= 2 * per_writer  # a function may run again after a conflict


def test_transaction_create_one_wins(documents: Documents, coll: str) -> None:
    path = f"{coll}/lease"
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def claim(owner: str) -> None:
        def fn(t: Transaction) -> str:
            if t.get(path) is not None:
                return "taken"
            t.create(path, {"owner": owner})
            return "created"

        barrier.wait()
        try:
            outcomes.append(f"{documents.transaction(fn, max_attempts=30)}:{owner}")
        except AlreadyExists:
            outcomes.append(f"taken:{owner}")

    threads = [threading.Thread(target=claim, args=(o,)) for o in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [o for o in outcomes if o.startswith("created")]
    assert len(created) == 1 and len(outcomes) == 2
    assert documents.get(path) == {"owner": created[0].split(":")[1]}


def test_transaction_errors(documents: Documents, coll: str) -> None:
    path = f"{coll}/t"
    documents.set(path, {"v": 1})

    def read_after_write(t: Transaction) -> None:
        t.set(path, {"v": 2})
        t.get(path)

    with pytest.raises(CloudError, match="read"):
        documents.transaction(read_after_write)
    assert documents.get(path) == {"v": 1}

    def fails(t: Transaction) -> None:
        t.get(path)
        t.set(path, {"v": 3})
        raise RuntimeError("application error")

    with pytest.raises(RuntimeError):
        documents.transaction(fails)
    assert documents.get(path) == {"v": 1}  # nothing of a failed transaction is written

    with pytest.raises(NotFound):
        documents.transaction(lambda t: t.update(f"{coll}/missing", {"v": 1}))
    with pytest.raises(AlreadyExists):
        documents.transaction(lambda t: t.create(path, {"v": 9}))
    assert documents.get(path) == {"v": 1}


@pytest.mark.parametrize("bad", ["", "onlycollection", "a//b", "a/b/c"])
def test_bad_document_paths_are_typed_errors(documents: Documents, bad: str) -> None:
    with pytest.raises(CloudError, match="document path"):
        documents.get(bad)
