"""Fault injection for chaos tests on a real stack (off unless ``BACKBEAT_FAULTS`` is set).

``BACKBEAT_FAULTS="ingest.after_upload=0.3,ingest.before_ack=0.3,dedupe.before_success=1"`` makes
the named point raise :class:`InjectedFault` the *first* time this process reaches it for a given
key (message id, or type/hour), for a deterministic share of keys (a hash of the key, not a random
draw, so a test can predict which). The failed invocation is then retried by Pub/Sub like any crash.
Points: ``ingest.after_upload`` (staging written, not registered), ``ingest.before_ack`` (registered,
not acknowledged), ``dedupe.before_success`` (parts written, no _SUCCESS). ``ingest.poison@PREFIX``
makes ingest fail *every* time on batches whose batch_id starts with PREFIX (a message the bus
must dead-letter).
"""

from __future__ import annotations

import hashlib
import os
import threading

_lock = threading.Lock()
_fired: set[tuple[str, str]] = set()
_rates: dict[str, float] | None = None


class InjectedFault(RuntimeError):
    """A crash injected on purpose (BACKBEAT_FAULTS)."""


def _load() -> dict[str, float]:
    global _rates
    if _rates is None:
        rates: dict[str, float] = {}
        for item in filter(None, (os.environ.get("BACKBEAT_FAULTS") or "").split(",")):
            if "@" in item:
                continue  # a poison spec, see poison()
            name, _, value = item.partition("=")
            try:
                rates[name.strip()] = float(value or 1)
            except ValueError:
                from backbeat.errors import ConfigError

                raise ConfigError(f"BACKBEAT_FAULTS: {item!r} is not point=rate") from None
        _rates = rates
    return _rates


def selected(point: str, key: str, rate: float) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{point}:{key}".encode()).digest()[:4], "big")
    return h / 2**32 < rate


def point(name: str, key: str) -> None:
    """Raise once per (point, key) for the configured share of keys; a no-op when not configured."""
    rates = _load()
    if not rates or name not in rates or not selected(name, key, rates[name]):
        return
    with _lock:
        if (name, key) in _fired:
            return
        _fired.add((name, key))
    raise InjectedFault(f"injected fault at {name} for {key}")


def poison(name: str, key: str) -> None:
    """Raise every time when ``BACKBEAT_FAULTS`` has ``name@PREFIX`` and ``key`` starts with PREFIX."""
    raw = os.environ.get("BACKBEAT_FAULTS") or ""
    for item in raw.split(","):
        point_name, _, prefix = item.strip().partition("@")
        if point_name == name and prefix and key.startswith(prefix):
            raise InjectedFault(f"injected poison at {name} for {key}")


def reset(spec: str | None = None) -> None:
    """Tests: forget what fired and re-read the spec (``spec`` overrides the environment)."""
    global _rates
    with _lock:
        _fired.clear()
    _rates = None
    if spec is not None:
        os.environ["BACKBEAT_FAULTS"] = spec
