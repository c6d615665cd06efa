"""A seeded, realistic event stream for demos, tests, benchmarks and ``backbeat events publish``.

Per-type generators give plausible values (user and track ids drawn from skewed populations,
country codes, search queries...); a type without a generator gets values synthesised from its
schema, so a newly registered type can be published at once.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from backbeat.delivery import hours as H
from backbeat.delivery.registry import EventSchema

COUNTRIES = ["SE", "US", "GB", "DE", "BR", "MX", "FR", "IN", "JP", "ES", "NL", "AU"]
QUERIES = [
    "lofi beats",
    "taylor swift",
    "workout",
    "abba",
    "jazz for sleep",
    "bad bunny",
    "podcast news",
    "the weeknd",
    "chill hits",
    "metallica",
    "ambient focus",
    "roadtrip",
]
PAGES = ["home", "search", "library", "artist", "album", "playlist", "settings", "now_playing"]
COMPONENTS = ["player", "auth", "playlist-service", "search-api", "ads", "offline-sync"]


def _user(rng: random.Random) -> str:
    return f"user-{int(rng.paretovariate(1.2) * 97) % 50_000:05d}"


def _track(rng: random.Random) -> str:
    return f"track-{int(rng.paretovariate(1.1) * 31) % 200_000:06d}"


def _fields(event_type: str, schema: EventSchema, rng: random.Random) -> dict[str, Any]:
    if event_type == "play":
        rec: dict[str, Any] = {
            "user_id": _user(rng),
            "track_id": _track(rng),
            "ms_played": rng.randint(30_000, 420_000),
            "platform": rng.choice(["ios", "android", "web", "desktop", "car", "speaker"]),
            "country": rng.choice(COUNTRIES),
            "context_uri": rng.choice(
                [None, f"playlist:{rng.randint(1, 5000)}", f"album:{rng.randint(1, 900)}"]
            ),
        }
        if "offline" in schema.field_names:
            rec.update(offline=rng.random() < 0.1, shuffle=rng.random() < 0.4)
        return rec
    if event_type == "skip":
        return {
            "user_id": _user(rng),
            "track_id": _track(rng),
            "position_ms": rng.randint(0, 60_000),
            "reason": rng.choice(["forward", "forward", "backward", "endplay", "remote", "unknown"]),
        }
    if event_type == "search":
        return {
            "user_id": _user(rng),
            "query": rng.choice(QUERIES),
            "results": rng.randint(0, 50),
            "latency_ms": rng.randint(8, 400),
            "clicked_uri": rng.choice([None, f"track:{_track(rng)}", f"artist:{rng.randint(1, 9000)}"]),
        }
    if event_type == "page_view":
        return {
            "user_id": _user(rng),
            "session_id": f"s-{rng.getrandbits(40):010x}",
            "page": rng.choice(PAGES),
            "referrer": rng.choice([None, *PAGES]),
            "duration_ms": rng.randint(200, 300_000),
        }
    if event_type == "ad_impression":
        return {
            "user_id": _user(rng),
            "ad_id": f"ad-{rng.randint(1, 3000):04d}",
            "campaign_id": f"cmp-{rng.randint(1, 120):03d}",
            "placement": rng.choice(["audio", "video", "display", "sponsored_session"]),
            "cost_micros": rng.randint(500, 40_000),
        }
    if event_type == "error":
        return {
            "user_id": rng.choice([None, _user(rng)]),
            "component": rng.choice(COMPONENTS),
            "code": rng.choice([400, 401, 404, 429, 500, 503]),
            "severity": rng.choice(["info", "warning", "error", "error", "fatal"]),
            "message": rng.choice(["timeout", "connection reset", "token expired", "not found"]),
        }
    return {f["name"]: _from_type(f["type"], rng) for f in schema.raw["fields"][2:]}


def _from_type(t: Any, rng: random.Random) -> Any:
    if isinstance(t, list):
        return _from_type(next((x for x in t if x != "null"), "null"), rng)
    if isinstance(t, dict):
        if t.get("type") == "enum":
            return rng.choice(t["symbols"])
        if t.get("type") == "array":
            return [_from_type(t["items"], rng) for _ in range(rng.randint(0, 3))]
        if t.get("type") == "map":
            return {f"k{i}": _from_type(t["values"], rng) for i in range(rng.randint(0, 2))}
        if t.get("type") == "record":
            return {f["name"]: _from_type(f["type"], rng) for f in t["fields"]}
        return _from_type(t.get("type"), rng)
    return {
        "null": None,
        "boolean": rng.random() < 0.5,
        "int": rng.randint(0, 1000),
        "long": rng.randint(0, 10**9),
        "float": rng.random(),
        "double": rng.random(),
        "string": f"s{rng.getrandbits(32):08x}",
        "bytes": rng.randbytes(4),
    }.get(t, None)


def make_events(
    schema: EventSchema,
    count: int,
    *,
    rng: random.Random,
    start: datetime,
    spread_s: float = 0.0,
    late_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """``count`` events of one type received from ``start`` over ``spread_s`` seconds (clamped to
    ``start``'s hour); a ``late_rate`` share is stamped one hour earlier (a client that held them)."""
    start = H.utc(start)
    room = (H.floor_hour(start) + H.bucket_length() - start).total_seconds() - 0.001
    spread = max(0.0, min(spread_s, room))
    out = []
    for _ in range(count):
        at = start + timedelta(seconds=rng.uniform(0, spread) if spread else 0)
        if late_rate and rng.random() < late_rate:
            at -= H.bucket_length()
        rec = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "received_at": H.to_micros(at),
        }
        rec.update(_fields(schema.event_type, schema, rng))
        out.append(rec)
    return out
