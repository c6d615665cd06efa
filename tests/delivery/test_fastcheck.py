"""The compiled container walker (fastcheck.py) against fastavro, the reference.

Contract: whenever the walker accepts a container, fastavro decodes every record of it and finds
the same event ids and received_at values; on anything malformed the walker answers None (ingest
then takes the fastavro path, which names the problem). Mutations are seeded, so failures replay.
"""

from __future__ import annotations

import io
import random

import fastavro
import pytest
import zstandard

from backbeat.delivery import fastcheck
from backbeat.delivery import hours as H
from backbeat.delivery.envelope import _compiled_keys, decode, make_envelope, parsed_plain
from backbeat.delivery.errors import EnvelopeError
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events

REG = default_registry()


@pytest.fixture(autouse=True, scope="module")
def _compiled():
    assert fastcheck.warm(wait=True), "the numba kernel did not load"


HOUR = "2026-03-01T10"
T0 = H.parse_time("2026-03-01T10:00")
LO, HI = H.to_micros(H.hour_start(HOUR)), H.to_micros(H.hour_end(HOUR))

# every Avro type the walker models, nested records and a named-type reference included
WIDE = {
    "type": "record",
    "name": "Wide",
    "namespace": "t",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "received_at", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "bytes"},
        {"name": "ok", "type": "boolean"},
        {"name": "fx", "type": {"type": "fixed", "name": "Three", "size": 3}},
        {"name": "e", "type": {"type": "enum", "name": "Col", "symbols": ["r", "g", "b"]}},
        {"name": "e2", "type": "Col"},
        {
            "name": "inner",
            "type": {"type": "record", "name": "In", "fields": [{"name": "s", "type": ["null", "string"]}]},
        },
        {"name": "u", "type": ["null", "long", "double", "Three"]},
    ],
}


def _wide_records(rng: random.Random, n: int) -> list[dict]:
    return [
        {
            "event_id": f"id-{rng.getrandbits(40):x}-é",
            "received_at": LO + rng.randrange(HI - LO),
            "i": rng.randint(-(2**31), 2**31 - 1),
            "f": rng.random(),
            "d": rng.random(),
            "b": rng.randbytes(rng.randint(0, 5)),
            "ok": rng.random() < 0.5,
            "fx": rng.randbytes(3),
            "e": rng.choice("rgb"),
            "e2": rng.choice("rgb"),
            "inner": {"s": rng.choice([None, "ü€𝄞", "x"])},
            "u": rng.choice([None, rng.randint(-(2**62), 2**62), rng.random(), b"abc"]),
        }
        for _ in range(n)
    ]


def _container(schema: dict, records: list[dict], sync_interval: int = 1 << 22) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(schema), records, codec="null", sync_interval=sync_interval)
    return buf.getvalue()


def _walker(raw: bytes) -> tuple[list[str], list[int]] | None:
    try:
        header = fastcheck.read_header(raw)
        prog = fastcheck.writer_schema(header[0]["avro.schema"])[1]
    except Exception:
        return None
    assert prog is not None
    found = fastcheck.scan(raw, header, prog)
    if found is None:
        return None
    blob, received, _ = found
    return blob.decode().split("\n"), received.tolist()


def _reference(raw: bytes) -> tuple[list[str], list[int]] | None:
    try:
        rows = list(fastavro.reader(io.BytesIO(raw)))
    except Exception:
        return None
    return [r["event_id"] for r in rows], [r["received_at"] for r in rows]


def _mutations(raw: bytes, rng: random.Random, count: int) -> list[bytes]:
    start = fastcheck.read_header(raw)[2]
    out = []
    for _ in range(count):
        b = bytearray(raw)
        kind = rng.random()
        if kind < 0.6:
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(start, len(b))] = rng.randrange(256)
        elif kind < 0.8:
            del b[rng.randrange(start, len(b)) :]
        else:
            pos = rng.randrange(start, len(b))
            b[pos:pos] = rng.randbytes(rng.randint(1, 3))
        out.append(bytes(b))
    return out


def test_wide_schema_agrees_with_fastavro_and_fuzzed_bytes_never_pass_wrongly():
    rng = random.Random(11)
    raw = _container(WIDE, _wide_records(rng, 40), sync_interval=300)  # several blocks
    assert _walker(raw) == _reference(raw) and _walker(raw) is not None
    accepted = 0
    for bad in _mutations(raw, rng, 400):
        got = _walker(bad)
        if got is not None:
            accepted += 1
            assert got == _reference(bad), "walker accepted bytes fastavro reads differently"
    assert accepted < 400  # most corruptions are caught (some, e.g. in a double, stay valid Avro)


@pytest.mark.parametrize("event_type", sorted(REG.types()))
def test_every_registered_type_takes_the_compiled_path(event_type):
    schema = REG.latest(event_type)
    events = make_events(schema, 60, rng=random.Random(3), start=T0, spread_s=3000)
    env = make_envelope(schema, events, batch_id="b")
    raw = zstandard.ZstdDecompressor().decompress(env.data)
    keys = _compiled_keys(raw, schema, LO, HI)
    assert keys == ([e["event_id"] for e in events], [e["received_at"] for e in events])
    for bad in _mutations(raw, random.Random(5), 60):
        got = _walker(bad)
        if got is not None:
            assert got == _reference(bad)


def _play_raw(**overrides) -> tuple[bytes, dict]:
    schema = REG.latest("play")
    rec = {
        "event_id": "e1",
        "received_at": LO + 5,
        "user_id": "uXu",
        "track_id": "t",
        "ms_played": 1,
        "platform": "speaker",
        "country": "ZZ",
        "context_uri": None,
        "offline": False,
        "shuffle": False,
    }
    rec.update(overrides)
    buf = io.BytesIO()
    fastavro.writer(buf, parsed_plain(schema), [rec], codec="null")
    return buf.getvalue(), rec


def _attrs() -> dict[str, str]:
    return {"type": "play", "schema_version": str(REG.latest("play").version), "receive_hour": HOUR}


@pytest.mark.parametrize(
    "what",
    ["enum index out of range", "union index out of range", "invalid UTF-8", "boolean byte 2"],
)
def test_targeted_corruptions_go_to_the_fastavro_path(what):
    raw, _ = _play_raw()
    b = bytearray(raw)
    if what == "enum index out of range":
        pos = raw.index(b"\x04ZZ") - 1  # the platform enum index precedes country
        assert b[pos] == 10  # zigzag(5) = "speaker"
        b[pos] = 12
    elif what == "union index out of range":
        pos = raw.index(b"\x04ZZ") + 3  # context_uri's union branch
        b[pos] = 4
    elif what == "invalid UTF-8":
        b[raw.index(b"uXu") + 1] = 0xFF
    else:
        end = raw.index(b"\x04ZZ") + 6  # offline, shuffle follow the null branch
        b[end - 1] = 2
    bad = bytes(b)
    assert _walker(bad) is None
    schema = REG.latest("play")
    assert _compiled_keys(bad, schema, LO, HI) is None
    env_data = zstandard.ZstdCompressor().compress(bad)
    if what == "boolean byte 2":  # fastavro reads any non-zero byte as true: the batch is accepted
        batch = decode(env_data, _attrs(), REG)
        assert batch.event_ids == ["e1"]
    else:
        with pytest.raises(EnvelopeError, match="not a readable Avro container"):
            decode(env_data, _attrs(), REG)


def test_keys_the_walker_refuses_are_judged_per_event_by_the_fastavro_path():
    schema = REG.latest("play")
    raw, _ = _play_raw(event_id="")  # empty id: the walker defers, ingest dead-letters the event
    assert _compiled_keys(raw, schema, LO, HI) is None
    batch = decode(zstandard.ZstdCompressor().compress(raw), _attrs(), REG)
    assert batch.rows == 0 and batch.invalid[0]["reason"].startswith("event_id must be")
    raw, _ = _play_raw(received_at=HI)  # outside the receive hour
    assert _compiled_keys(raw, schema, LO, HI) is None
    batch = decode(zstandard.ZstdCompressor().compress(raw), _attrs(), REG)
    assert batch.rows == 0 and "outside receive_hour" in batch.invalid[0]["reason"]


def test_unmodelled_schemas_and_codecs_are_left_to_fastavro():
    keys = WIDE["fields"][:2]
    with_array = dict(WIDE, fields=[*keys, {"name": "a", "type": {"type": "array", "items": "int"}}])
    assert fastcheck.program(with_array) is None
    uuid_field = {"name": "u", "type": {"type": "string", "logicalType": "uuid"}}
    assert fastcheck.program(dict(WIDE, fields=[*keys, uuid_field])) is None
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(WIDE), _wide_records(random.Random(1), 3), codec="deflate")
    raw = buf.getvalue()
    header = fastcheck.read_header(raw)
    assert fastcheck.scan(raw, header, fastcheck.program(WIDE)) is None
