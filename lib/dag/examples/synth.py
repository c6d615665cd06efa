"""Synthetic deduplicated play events, laid out as event delivery leaves them, for the demo and
tests when no delivery output is at hand: ``final/play/dt=<D>/hour=<HH>/part-00000.avro`` plus a
``_SUCCESS`` marker per hour. Users have tastes (a genre or two), so recommendations mean something.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from typing import Any

PLAY_SCHEMA = {
    "type": "record",
    "name": "Play",
    "namespace": "backbeat.events.play",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "user_id", "type": "string"},
        {"name": "track_id", "type": "string"},
        {"name": "ms_played", "type": "long"},
    ],
}


def genre_of(track_id: str, tracks_per_genre: int) -> int:
    return int(track_id.split("-")[1]) // tracks_per_genre


def write_synthetic_plays(
    blobs: Any,
    bucket: str,
    start: dt.datetime,
    hours: int,
    users: int = 200,
    genres: int = 6,
    tracks_per_genre: int = 30,
    plays_per_hour: int = 1500,
    seed: int = 7,
) -> dict[str, Any]:
    """Write ``hours`` closed hours of plays starting at ``start`` (UTC); returns what was written."""
    import fastavro

    rng = random.Random(seed)
    blobs.ensure_bucket(bucket)
    tastes = {f"user-{u:04d}": rng.sample(range(genres), k=rng.choice((1, 2))) for u in range(users)}
    user_ids = sorted(tastes)
    start = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    total = 0
    for h in range(hours):
        hour = start + dt.timedelta(hours=h)
        records = []
        for i in range(plays_per_hour):
            user = rng.choice(user_ids)
            genre = rng.choice(tastes[user]) if rng.random() < 0.9 else rng.randrange(genres)
            track = genre * tracks_per_genre + min(tracks_per_genre - 1, int(rng.expovariate(1 / 8)))
            records.append(
                {
                    "event_id": f"synth-{hour:%Y%m%d%H}-{i:06d}",
                    "received_at": hour + dt.timedelta(seconds=rng.randrange(3600)),
                    "user_id": user,
                    "track_id": f"track-{track:05d}",
                    "ms_played": rng.randrange(30_000, 300_000),
                }
            )
        buf = io.BytesIO()
        fastavro.writer(buf, PLAY_SCHEMA, records)
        folder = f"final/play/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
        blobs.put(bucket, folder + "part-00000.avro", buf.getvalue())
        marker = {
            "rows_in": len(records),
            "rows_out": len(records),
            "duplicates": 0,
            "skewed": 0,
            "parts": ["part-00000.avro"],
            "synthetic": True,
        }
        blobs.put(bucket, folder + "_SUCCESS", json.dumps(marker).encode())
        total += len(records)
    return {
        "hours": hours,
        "plays": total,
        "users": users,
        "tracks": genres * tracks_per_genre,
        "tastes": tastes,
        "tracks_per_genre": tracks_per_genre,
    }
