"""The ``local`` bus: Pub/Sub semantics on one SQLite file, delivered in-process.

Choices (and why):

* **Durable first.** ``publish`` commits the message and one *delivery* row per subscription of
  the topic before anything runs, so a crash loses nothing: an unacknowledged delivery is handed
  out again (at-least-once). Acknowledged deliveries are deleted.
* **Pub/Sub's subscription model.** A subscription is a persisted row; it receives the messages
  published *after* it was created, whether or not a handler is attached right now. A message
  published to a topic with no subscription is dropped (as Pub/Sub does). ``close()`` detaches the
  handler but keeps the subscription: its backlog is delivered when a handler subscribes again
  (``delete_subscription`` removes it).
* **Synchronous by default.** ``publish`` (and ``subscribe``) delivers to the handlers attached in
  this process before returning, retries included, so ``backbeat hours tick`` runs the next stage
  at once. A handler that publishes does not recurse: the outer call delivers the new messages
  after the handler returns. With ``synchronous=False`` a background thread delivers instead
  (polling, so several processes sharing the data dir each deliver to their own handlers).
* **Retries and dead letters.** A handler that raises is retried after
  ``min_backoff_s * 2**(attempt-1)`` (capped at ``max_backoff_s``); after
  ``max_delivery_attempts`` the message is published to the dead-letter topic with its attributes
  plus Pub/Sub's ``CloudPubSubDeadLetterSource*`` attributes and ``BackbeatDeadLetterReason``.
  Without a dead-letter topic the delivery is kept in state ``dead`` (Pub/Sub would retry for
  ever); :meth:`LocalBus.stats` counts them.
* **Processes.** Deliveries are leased with ``BEGIN IMMEDIATE`` so two processes never run the same
  delivery at once; a lease held by a dead process (or older than ``lease_s``) is handed out again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbeat.cloud._sqlite import SqliteFile
from backbeat.cloud.ports import CloudError, Handler, Message, NotFound, TransientError
from backbeat.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY, topic TEXT NOT NULL, max_attempts INTEGER NOT NULL,
    dead_letter_topic TEXT, min_backoff REAL NOT NULL, max_backoff REAL NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, data BLOB NOT NULL,
    attributes TEXT NOT NULL, publish_time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    subscription TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending', next_at REAL NOT NULL, lease_owner TEXT, lease_until REAL,
    last_error TEXT, PRIMARY KEY (subscription, seq));
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_at);
"""

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_HOST = socket.gethostname()


def check_name(kind: str, name: str) -> str:
    """Pub/Sub's naming rule, enforced locally too so code that runs here also runs on Google Cloud."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.lower().startswith("goog"):
        raise CloudError(
            f"invalid {kind} name {name!r}: 3-255 chars, a letter first, then letters, digits or - _ . ~ + %"
        )
    return name


def check_attributes(attributes: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (attributes or {}).items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise CloudError(
                f"message attribute {k!r}={v!r}: attributes are non-empty str keys to str values"
            )
        out[k] = v
    return out


def check_delivery_policy(max_delivery_attempts: int, min_backoff_s: float, max_backoff_s: float) -> None:
    if not 5 <= int(max_delivery_attempts) <= 100:
        raise ConfigError(
            f"max_delivery_attempts={max_delivery_attempts} must be within 5..100 (Pub/Sub's range)"
        )
    if not 0 <= min_backoff_s <= max_backoff_s <= 600:
        raise ConfigError(f"backoff {min_backoff_s}..{max_backoff_s}s must satisfy 0 <= min <= max <= 600")


@dataclass
class _Sub:
    name: str
    topic: str
    handler: Handler
    max_attempts: int
    dead_letter_topic: str | None
    min_backoff: float
    max_backoff: float


class LocalSubscription:
    """Returned by :meth:`LocalBus.subscribe`; ``close()`` detaches the handler."""

    def __init__(self, bus: LocalBus, name: str) -> None:
        self._bus = bus
        self.name = name

    def close(self) -> None:
        self._bus._detach(self.name)


class LocalBus:
    """Pub/Sub on SQLite, delivered in this process (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: bool = True,
        poll_interval_s: float = 0.2,
        lease_s: float = 600.0,
    ) -> None:
        self.path = Path(path).resolve()
        self._db = SqliteFile(self.path, _SCHEMA, what="bus database")
        self.synchronous = synchronous
        self._poll = poll_interval_s
        self._lease_s = lease_s
        self._owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._subs: dict[str, _Sub] = {}
        self._subs_lock = threading.Lock()
        self._tls = threading.local()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = 0  # deliveries running in this process
        self._active_cv = threading.Condition()
        self._reclaim()

    # --------------------------------------------------------------------------------- topics
    def ensure_topic(self, topic: str) -> None:
        check_name("topic", topic)
        self._db.write(
            lambda c: c.execute("INSERT OR IGNORE INTO topics VALUES (?, ?)", (topic, time.time()))
        )

    def delete_subscription(self, subscription: str) -> None:
        self._detach(subscription)

        def tx(c: Any) -> None:
            c.execute("DELETE FROM subscriptions WHERE name = ?", (subscription,))
            c.execute("DELETE FROM deliveries WHERE subscription = ?", (subscription,))

        self._db.write(tx)

    # -------------------------------------------------------------------------------- publish
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        check_name("topic", topic)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CloudError(f"publish to {topic!r}: data must be bytes, got {type(data).__name__}")
        attrs = check_attributes(attributes)
        seq = self._db.write(lambda c: self._insert_message(c, topic, bytes(data), attrs))
        self._after_publish()
        return str(seq)

    def _insert_message(self, c: Any, topic: str, data: bytes, attrs: Mapping[str, str]) -> int:
        if c.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
            raise NotFound(f"topic {topic!r} does not exist (ensure_topic first)")
        now = time.time()
        cur = c.execute(
            "INSERT INTO messages(topic, data, attributes, publish_time) VALUES (?, ?, ?, ?)",
            (topic, data, json.dumps(attrs), now),
        )
        seq = int(cur.lastrowid)
        fanout = c.execute(
            "INSERT INTO deliveries(subscription, seq, next_at) "
            "SELECT name, ?, ? FROM subscriptions WHERE topic = ?",
            (seq, now, topic),
        )
        if fanout.rowcount == 0:  # no subscription: Pub/Sub drops it, so keep nothing
            c.execute("DELETE FROM messages WHERE seq = ?", (seq,))
        return seq

    def _after_publish(self) -> None:
        if self.synchronous:
            self._pump(wait_for_retries=True)
        else:
            self._wake.set()

    # ------------------------------------------------------------------------------ subscribe
    def subscribe(
        self,
        topic: str,
        subscription: str,
        handler: Handler,
        *,
        max_delivery_attempts: int = 5,
        dead_letter_topic: str | None = None,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
    ) -> LocalSubscription:
        check_name("topic", topic)
        check_name("subscription", subscription)
        check_delivery_policy(max_delivery_attempts, min_backoff_s, max_backoff_s)
        if dead_letter_topic is not None:
            self.ensure_topic(dead_letter_topic)

        def tx(c: Any) -> None:
            if c.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
                raise NotFound(
                    f"topic {topic!r} does not exist (ensure_topic before subscribing {subscription!r})"
                )
            row = c.execute("SELECT topic FROM subscriptions WHERE name = ?", (subscription,)).fetchone()
            if row is not None and row[0] != topic:
                raise CloudError(
                    f"subscription {subscription!r} already exists on topic {row[0]!r}, not {topic!r}"
                )
            c.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "max_attempts = excluded.max_attempts, dead_letter_topic = excluded.dead_letter_topic, "
                "min_backoff = excluded.min_backoff, max_backoff = excluded.max_backoff",
                (subscription, topic, int(max_delivery_attempts), dead_letter_topic, float(min_backoff_s),
                 float(max_backoff_s), time.time()),
            )  # fmt: skip

        self._db.write(tx)
        sub = _Sub(subscription, topic, handler, int(max_delivery_attempts), dead_letter_topic,
                   float(min_backoff_s), float(max_backoff_s))  # fmt: skip
        with self._subs_lock:
            if subscription in self._subs:
                raise CloudError(f"subscription {subscription!r} already has a handler in this process")
            self._subs[subscription] = sub
        if self.synchronous:
            self._pump(wait_for_retries=True)
        else:
            self._ensure_thread()
            self._wake.set()
        return LocalSubscription(self, subscription)

    def _detach(self, subscription: str) -> None:
        with self._subs_lock:
            self._subs.pop(subscription, None)

    # ---------------------------------------------------------------------------------- drain
    def drain(self, timeout_s: float = 30.0) -> None:
        """Deliver until no delivery for a handler attached here is pending, leased or waiting for
        a retry. Raises TransientError naming what is left after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._reclaim()
        while True:
            self._pump(wait_for_retries=True, deadline=deadline)
            left = self._outstanding()
            if not left:
                return
            if time.monotonic() >= deadline:
                raise TransientError(f"bus drain timed out after {timeout_s}s; still outstanding: {left}")
            with self._active_cv:  # deliveries running in other threads of this process
                self._active_cv.wait(timeout=0.05)

    def _outstanding(self) -> dict[str, int]:
        names = self._attached()
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = self._db.read(
            f"SELECT subscription, COUNT(*) FROM deliveries WHERE state IN ('pending', 'leased') "
            f"AND subscription IN ({marks}) GROUP BY subscription",
            tuple(names),
        )
        return {str(s): int(n) for s, n in rows}  # type: ignore[call-overload]

    def stats(self) -> dict[str, int]:
        """Counts of deliveries by state (``pending``, ``leased``, ``dead``) and of topics/subscriptions."""
        out = {"pending": 0, "leased": 0, "dead": 0}
        for state, n in self._db.read("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
            out[str(state)] = int(n)  # type: ignore[call-overload]
        out["topics"] = int(self._db.read("SELECT COUNT(*) FROM topics")[0][0])  # type: ignore[call-overload]
        out["subscriptions"] = int(self._db.read("SELECT COUNT(*) FROM subscriptions")[0][0])  # type: ignore[call-overload]
        return out

    # ------------------------------------------------------------------------------- delivery
    def _attached(self) -> list[str]:
        with self._subs_lock:
            return list(self._subs)

    def _reclaim(self) -> None:
        """Hand out again deliveries whose lease expired or whose owner process on this host died."""
        now = time.time()
        owners = self._db.read("SELECT DISTINCT lease_owner FROM deliveries WHERE state = 'leased'")
        dead = []
        for (owner,) in owners:
            host, _, rest = str(owner).partition(":")
            pid = rest.partition(":")[0]
            if host == _HOST and pid.isdigit() and not _pid_alive(int(pid)):
                dead.append(str(owner))

        def tx(c: Any) -> None:
            c.execute("UPDATE deliveries SET state = 'pending', lease_owner = NULL "
                      "WHERE state = 'leased' AND lease_until < ?", (now,))  # fmt: skip
            for owner in dead:
                c.execute("UPDATE deliveries SET state = 'pending', lease_owner = NULL "
                          "WHERE state = 'leased' AND lease_owner = ?", (owner,))  # fmt: skip

        self._db.write(tx)

    def _claim(self, names: list[str]) -> tuple[_Sub, Message] | None:
        marks = ",".join("?" * len(names))
        now = time.time()

        def tx(c: Any) -> tuple[str, Message] | None:
            row = c.execute(
                f"SELECT d.subscription, d.seq, d.attempts, m.topic, m.data, m.attributes, m.publish_time "
                f"FROM deliveries d JOIN messages m ON m.seq = d.seq WHERE d.state = 'pending' "
                f"AND d.next_at <= ? AND d.subscription IN ({marks}) ORDER BY d.next_at, d.seq LIMIT 1",
                (now, *names),
            ).fetchone()
            if row is None:
                return None
            sub, seq, attempts, topic, data, attrs, ptime = row
            c.execute(
                "UPDATE deliveries SET state = 'leased', attempts = attempts + 1, lease_owner = ?, "
                "lease_until = ? WHERE subscription = ? AND seq = ?",
                (self._owner, now + self._lease_s, sub, seq),
            )
            msg = Message(data=bytes(data), attributes=json.loads(attrs), message_id=str(seq),
                          publish_time=datetime.fromtimestamp(ptime, UTC), delivery_attempt=attempts + 1,
                          topic=topic)  # fmt: skip
            return sub, msg

        got = self._db.write(tx)
        if got is None:
            return None
        with self._subs_lock:
            sub = self._subs.get(got[0])
        if sub is None:  # detached meanwhile: give it back
            self._release(got[0], int(got[1].message_id))
            return None
        return sub, got[1]

    def _release(self, subscription: str, seq: int) -> None:
        self._db.write(lambda c: c.execute(
            "UPDATE deliveries SET state = 'pending', attempts = attempts - 1, lease_owner = NULL "
            "WHERE subscription = ? AND seq = ?", (subscription, seq)))  # fmt: skip

    def _next_due(self, names: list[str]) -> float | None:
        marks = ",".join("?" * len(names))
        rows = self._db.read(
            f"SELECT MIN(next_at) FROM deliveries WHERE state = 'pending' AND subscription IN ({marks})",
            tuple(names),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None  # type: ignore[arg-type]

    def _pump(self, *, wait_for_retries: bool, deadline: float | None = None) -> int:
        """Deliver due messages to attached handlers. Re-entrant calls (a handler publishing) return at
        once: the outermost pump delivers what they added."""
        if getattr(self._tls, "pumping", False):
            return 0
        self._tls.pumping = True
        delivered = 0
        try:
            while not self._stop.is_set():
                names = self._attached()
                if not names:
                    return delivered
                got = self._claim(names)
                if got is not None:
                    self._deliver(*got)
                    delivered += 1
                    continue
                if not wait_for_retries:
                    return delivered
                due = self._next_due(names)
                if due is None:
                    return delivered
                wait = max(0.0, due - time.time())
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return delivered
                time.sleep(min(wait, 0.5) + 0.001)
            return delivered
        finally:
            self._tls.pumping = False

    def _deliver(self, sub: _Sub, msg: Message) -> None:
        seq = int(msg.message_id)
        with self._active_cv:
            self._active += 1
        try:
            try:
                sub.handler(msg)
            except Exception as exc:  # the handler's failure is a nack, never ours
                self._nack(sub, msg, exc)
                return
            self._ack(sub.name, seq)
        finally:
            with self._active_cv:
                self._active -= 1
                self._active_cv.notify_all()

    def _ack(self, subscription: str, seq: int) -> None:
        def tx(c: Any) -> None:
            c.execute("DELETE FROM deliveries WHERE subscription = ? AND seq = ?", (subscription, seq))
            if c.execute("SELECT 1 FROM deliveries WHERE seq = ? LIMIT 1", (seq,)).fetchone() is None:
                c.execute("DELETE FROM messages WHERE seq = ?", (seq,))

        self._db.write(tx)

    def _nack(self, sub: _Sub, msg: Message, exc: Exception) -> None:
        seq = int(msg.message_id)
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        attempt = msg.delivery_attempt
        if attempt < sub.max_attempts:
            delay = min(sub.max_backoff, sub.min_backoff * 2 ** (attempt - 1))
            log.info("bus: %s nacked message %s (attempt %d): %s", sub.name, seq, attempt, reason)
            retry = (time.time() + delay, reason, sub.name, seq)
            self._db.write(lambda c: c.execute(
                "UPDATE deliveries SET state = 'pending', next_at = ?, lease_owner = NULL, last_error = ? "
                "WHERE subscription = ? AND seq = ?", retry))  # fmt: skip
            return
        log.warning("bus: %s gave up on message %s after %d attempts: %s", sub.name, seq, attempt, reason)

        def tx(c: Any) -> None:
            if sub.dead_letter_topic:
                attrs = dict(msg.attributes)
                attrs.update({
                    "CloudPubSubDeadLetterSourceSubscription": sub.name,
                    "CloudPubSubDeadLetterSourceSubscriptionProject": "local",
                    "CloudPubSubDeadLetterSourceDeliveryCount": str(attempt),
                    "CloudPubSubDeadLetterSourceTopicPublishTime": _rfc3339_ms(msg.publish_time),
                    "BackbeatDeadLetterReason": reason,
                })  # fmt: skip
                self._insert_message(c, sub.dead_letter_topic, msg.data, attrs)
                c.execute("DELETE FROM deliveries WHERE subscription = ? AND seq = ?", (sub.name, seq))
                if c.execute("SELECT 1 FROM deliveries WHERE seq = ? LIMIT 1", (seq,)).fetchone() is None:
                    c.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            else:
                c.execute(
                    "UPDATE deliveries SET state = 'dead', lease_owner = NULL, last_error = ? "
                    "WHERE subscription = ? AND seq = ?",
                    (reason, sub.name, seq),
                )

        self._db.write(tx)

    # ---------------------------------------------------------------------------- background
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"LocalBus({self.path.name})", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last_reclaim = time.monotonic()
        while not self._stop.is_set():
            try:
                self._pump(wait_for_retries=False)
                if time.monotonic() - last_reclaim > 5:
                    self._reclaim()
                    last_reclaim = time.monotonic()
            except Exception:  # keep delivering; the error is logged
                log.exception("bus: delivery loop failed")
            self._wake.wait(self._poll)
            self._wake.clear()

    def close(self) -> None:
        """Stop the background thread (if any), detach every handler and close the database."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._subs_lock:
            self._subs.clear()
        self._db.close()

    def __repr__(self) -> str:
        return f"LocalBus({str(self.path)!r}, synchronous={self.synchronous})"


def _rfc3339_ms(t: datetime) -> str:
    """Pub/Sub's timestamp format, e.g. ``2026-01-01T10:00:00.123Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
