"""The envelope: one Pub/Sub message = one batch of events of one type.

Payload: ``zstd( Avro object container file )`` (``encoding=avro``, what the producer library
sends) or ``zstd( JSON lines )`` (``encoding=jsonl``, for producers without Avro; ``received_at``
as integer microseconds or ISO-8601). Attributes (all strings):

    type            event type (a folder of the registry)
    schema_version  the registry version the batch was written with
    receive_hour    YYYY-MM-DDTHH of every event's received_at (one hour per batch)
    encoding        avro | jsonl
    count           number of events
    batch_id        producer-chosen id, reused on every retry of the batch
    oldest_us       smallest received_at of the batch (microseconds): the local backlog watermark

The Avro header written by the producer declares ``received_at`` as a plain ``long`` (the parsing
canonical form is the registry's): decoding then yields integers, not datetimes, which keeps ingest
fast; final files carry the registry schema with its ``timestamp-micros`` logical type.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backbeat.delivery.errors import EnvelopeError, InvalidEvent
from backbeat.delivery.hours import hour_key, hour_of_micros, parse_time, to_micros
from backbeat.delivery.registry import EventSchema, Registry

MAX_PAYLOAD = 64 * 1024 * 1024  # decompressed bytes; Pub/Sub messages are <= 10 MB compressed
MAX_EVENT_ID = 256
META_IDS = "backbeat.event_ids"
META_RECEIVED = "backbeat.received_at"
ENCODINGS = ("avro", "jsonl")


def plain_schema(schema: EventSchema) -> dict[str, Any]:
    """The registry schema with received_at as a plain long (the staging/envelope header form)."""
    raw = copy.deepcopy(schema.raw)
    raw["fields"][1]["type"] = "long"
    return raw


_PLAIN_CACHE: dict[tuple[str, int], dict[str, Any]] = {}


def parsed_plain(schema: EventSchema) -> dict[str, Any]:
    import fastavro

    key = (schema.event_type, schema.version)
    if key not in _PLAIN_CACHE:
        _PLAIN_CACHE[key] = fastavro.parse_schema(plain_schema(schema))
    return _PLAIN_CACHE[key]


def micros_of(value: Any) -> int:
    """received_at as integer microseconds (accepts int, datetime, ISO string)."""
    if isinstance(value, bool):
        raise ValueError("received_at must be a timestamp, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, str):
        return to_micros(parse_time(value))
    raise ValueError(f"received_at must be microseconds or ISO-8601, not {type(value).__name__}")


# ------------------------------------------------------------------------------------ encode
def validate_records(schema: EventSchema, records: Sequence[Mapping[str, Any]]) -> None:
    """Raise InvalidEvent naming the first record that does not match ``schema``."""
    from fastavro.validation import ValidationError, validate

    parsed = parsed_plain(schema)
    for i, rec in enumerate(records):
        try:
            validate(rec, parsed, raise_errors=True, strict=True)
        except ValidationError as exc:
            raise InvalidEvent(
                f"{schema.event_type} v{schema.version} event #{i} (event_id={rec.get('event_id')!r}): "
                f"{'; '.join(map(str, exc.errors)) if exc.errors else exc}"
            ) from None
        if not isinstance(rec.get("event_id"), str) or not rec["event_id"]:
            raise InvalidEvent(f"{schema.event_type} event #{i}: event_id must be a non-empty string")


def encode_avro(schema: EventSchema, records: Sequence[Mapping[str, Any]], *, check: bool = True) -> bytes:
    """An uncompressed Avro container of ``records`` (received_at as int micros)."""
    import fastavro

    if check:
        validate_records(schema, records)
    buf = io.BytesIO()
    fastavro.writer(buf, parsed_plain(schema), records, codec="null", sync_interval=1 << 22)
    return buf.getvalue()


@dataclass(frozen=True)
class Envelope:
    data: bytes
    attributes: dict[str, str]
    event_ids: list[str]


def make_envelope(
    schema: EventSchema,
    records: Sequence[Mapping[str, Any]],
    *,
    batch_id: str,
    encoding: str = "avro",
    check: bool = True,
) -> Envelope:
    """Compress a batch of one type and one receive hour into a message (data + attributes)."""
    import zstandard

    if not records:
        raise InvalidEvent(f"{schema.event_type}: empty batch {batch_id}")
    micros = [micros_of(r["received_at"]) for r in records]
    hours = {hour_of_micros(m) for m in micros}
    if len(hours) != 1:
        raise InvalidEvent(
            f"{schema.event_type} batch {batch_id} spans hours {sorted(hours)}; split it per hour"
        )
    normalised = [dict(r, received_at=m) for r, m in zip(records, micros, strict=True)]
    if encoding == "avro":
        body = encode_avro(schema, normalised, check=check)
    elif encoding == "jsonl":
        body = b"\n".join(json.dumps(r, separators=(",", ":")).encode() for r in normalised)
    else:
        raise EnvelopeError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    attrs = {
        "type": schema.event_type,
        "schema_version": str(schema.version),
        "receive_hour": hours.pop(),
        "encoding": encoding,
        "count": str(len(records)),
        "batch_id": batch_id,
        "oldest_us": str(min(micros)),
    }
    return Envelope(zstandard.ZstdCompressor(level=3).compress(body), attrs, [r["event_id"] for r in records])


# ------------------------------------------------------------------------------------ decode
@dataclass
class Batch:
    """A decoded envelope: the valid records' keys, the invalid ones with reasons, and an Avro body
    (the producer's own container when every event was valid, else a re-encoded one)."""

    schema: EventSchema
    hour: str
    avro: bytes
    event_ids: list[str]
    received_us: list[int]
    invalid: list[dict[str, Any]] = field(default_factory=list)
    batch_id: str = ""

    @property
    def rows(self) -> int:
        return len(self.event_ids)


def header_attrs(attributes: Mapping[str, str], registry: Registry) -> tuple[EventSchema, str, str]:
    """(schema, receive_hour, encoding) from the attributes, or EnvelopeError naming the bad one."""
    from backbeat.delivery.errors import UnknownEventType
    from backbeat.delivery.hours import hour_start

    missing = [k for k in ("type", "schema_version", "receive_hour") if not attributes.get(k)]
    if missing:
        raise EnvelopeError(f"envelope attribute(s) missing: {', '.join(missing)}")
    try:
        schema = registry.get(attributes["type"], int(attributes["schema_version"]))
    except (UnknownEventType, ValueError) as exc:
        raise EnvelopeError(f"envelope names no registered schema: {exc}") from None
    hour = attributes["receive_hour"]
    try:
        if hour_key(hour_start(hour)) != hour:
            raise ValueError
    except Exception:
        raise EnvelopeError(f"receive_hour={hour!r} is not YYYY-MM-DDTHH") from None
    encoding = attributes.get("encoding", "avro")
    if encoding not in ENCODINGS:
        raise EnvelopeError(f"encoding={encoding!r} is not one of {ENCODINGS}")
    return schema, hour, encoding


def _decompress(data: bytes) -> bytes:
    import zstandard

    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_PAYLOAD)
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"payload is not zstd ({len(data)} bytes): {exc}") from None


def _check_event(rec: Mapping[str, Any], hour: str, lo: int, hi: int) -> tuple[str | None, int]:
    eid = rec.get("event_id")
    if not isinstance(eid, str) or not eid or len(eid) > MAX_EVENT_ID or "\n" in eid:
        return f"event_id must be a non-empty string without newlines (<= {MAX_EVENT_ID} chars)", 0
    try:
        us = micros_of(rec.get("received_at"))
    except ValueError as exc:
        return str(exc), 0
    if not lo <= us < hi:
        return f"received_at {hour_of_micros(us)} is outside receive_hour {hour}", us
    return None, us


def decode(data: bytes, attributes: Mapping[str, str], registry: Registry) -> Batch:
    """Validate one envelope. Whole-message problems raise EnvelopeError; per-event problems are
    returned in ``Batch.invalid`` (index, event_id, reason) and those events left out of ``avro``."""
    import fastavro

    from backbeat.delivery.hours import hour_end, hour_start

    schema, hour, encoding = header_attrs(attributes, registry)
    raw = _decompress(data)
    lo, hi = to_micros(hour_start(hour)), to_micros(hour_end(hour))
    if encoding == "avro":
        keys = _compiled_keys(raw, schema, lo, hi)
        if keys is not None:  # every event valid (proved without decoding rows): keep the bytes
            return Batch(schema, hour, raw, keys[0], keys[1], [], attributes.get("batch_id", ""))
        try:
            reader = fastavro.reader(io.BytesIO(raw))
            from fastavro.schema import to_parsing_canonical_form

            if to_parsing_canonical_form(reader.writer_schema) != schema.canonical:
                raise EnvelopeError(
                    f"{schema.event_type}: the batch's Avro schema is not registry version v{schema.version}"
                )
            records = list(reader)
        except EnvelopeError:
            raise
        except Exception as exc:  # fastavro: corrupt header, truncated block, bad varint...
            raise EnvelopeError(
                f"{schema.event_type}: payload is not a readable Avro container: {exc}"
            ) from None
        parsed_ok = records
        pre_invalid: list[dict[str, Any]] = []
    else:
        parsed_ok, pre_invalid = _parse_jsonl(raw, schema)
    if encoding == "avro" and records:
        fast = _fast_keys(records, lo, hi)
        if fast is not None:  # every event valid: keep the producer's container as it is
            return Batch(schema, hour, raw, fast[0], fast[1], [], attributes.get("batch_id", ""))
    ids: list[str] = []
    received: list[int] = []
    invalid = list(pre_invalid)
    keep: list[Mapping[str, Any]] = []
    for index, rec in parsed_ok if encoding == "jsonl" else enumerate(parsed_ok):
        reason, us = _check_event(rec, hour, lo, hi)
        if reason:
            invalid.append({"index": index, "event_id": rec.get("event_id"), "reason": reason, "event": rec})
            continue
        ids.append(rec["event_id"])
        received.append(us)
        keep.append(rec)
    if encoding == "avro" and not invalid:
        body = raw
    else:
        for rec, us in zip(keep, received, strict=True):
            if not isinstance(rec["received_at"], int):
                rec["received_at"] = us  # type: ignore[index]
        body = encode_avro(schema, keep, check=False) if keep else b""
    invalid.sort(key=lambda d: d["index"])
    return Batch(schema, hour, body, ids, received, invalid, attributes.get("batch_id", ""))


_CANONICAL: dict[bytes, str] = {}


def canonical_of(schema_json: bytes | str) -> str:
    """Parsing canonical form of a container header's ``avro.schema`` (cached: few distinct ones)."""
    key = schema_json.encode() if isinstance(schema_json, str) else schema_json
    canonical = _CANONICAL.get(key)
    if canonical is None:
        from fastavro.schema import to_parsing_canonical_form

        canonical = to_parsing_canonical_form(json.loads(key))
        if len(_CANONICAL) < 256:
            _CANONICAL[key] = canonical
    return canonical


def _compiled_keys(raw: bytes, schema: EventSchema, lo: int, hi: int) -> tuple[list[str], list[int]] | None:
    """The keys of an Avro batch whose events are all valid, found by the compiled walker
    (fastcheck.py) without building a dict per event; None = decide with fastavro as before."""
    from backbeat.delivery import fastcheck

    try:
        header = fastcheck.read_header(raw)
        schema_json = header[0].get("avro.schema")
        if schema_json is None:
            return None
        if canonical_of(schema_json) != schema.canonical:
            return None
        prog = fastcheck.writer_schema(schema_json)[1]
    except Exception:  # anything odd in the header: fastavro reports it precisely
        return None
    if prog is None:
        return None
    found = fastcheck.scan(raw, header, prog)
    if found is None:
        return None
    blob, received, longest = found
    if int(received.min()) < lo or int(received.max()) >= hi:
        return None
    ids = blob.decode().split("\n")
    if len(ids) != len(received) or (longest > MAX_EVENT_ID and max(map(len, ids)) > MAX_EVENT_ID):
        return None
    return ids, received.tolist()


def _fast_keys(records: list[dict[str, Any]], lo: int, hi: int) -> tuple[list[str], list[int]] | None:
    """The keys of a batch whose events all pass :func:`_check_event`, checked with whole-list
    operations (about 10x fewer Python steps than per event); None to fall back to the per-event path."""
    ids = [r["event_id"] for r in records]
    received = [r["received_at"] for r in records]
    if not all(type(v) is int for v in received) or min(received) < lo or max(received) >= hi:
        return None
    if "" in ids or max(map(len, ids)) > MAX_EVENT_ID or any("\n" in i for i in ids):
        return None
    return ids, received


def _parse_jsonl(
    raw: bytes, schema: EventSchema
) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    from fastavro.validation import ValidationError, validate

    parsed = parsed_plain(schema)
    ok: list[tuple[int, dict[str, Any]]] = []
    bad: list[dict[str, Any]] = []
    for index, line in enumerate(raw.splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            bad.append(
                {
                    "index": index,
                    "event_id": None,
                    "reason": f"line {index + 1}: bad JSON: {exc}",
                    "event": line[:200].decode("utf-8", "replace"),
                }
            )
            continue
        if "received_at" in rec:
            try:
                rec["received_at"] = micros_of(rec["received_at"])
            except ValueError:
                pass  # reported by validate below
        try:
            validate(rec, parsed, raise_errors=True, strict=True)
        except ValidationError as exc:
            bad.append(
                {
                    "index": index,
                    "event_id": rec.get("event_id"),
                    "reason": "; ".join(map(str, exc.errors)) if exc.errors else str(exc),
                    "event": rec,
                }
            )
            continue
        ok.append((index, rec))
    return ok, bad


# --------------------------------------------------------------------------- staging files
def _b64z(data: bytes) -> str:
    import zstandard

    return base64.b64encode(zstandard.ZstdCompressor(level=1).compress(data)).decode("ascii")


def _unb64z(text: str) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(base64.b64decode(text), max_output_size=MAX_PAYLOAD)


def staging_file(batch: Batch) -> bytes:
    """The staging object for a batch: its Avro blocks recompressed (snappy), with the batch's
    event ids and received_at in the header metadata so dedupe can plan without decoding rows."""
    import fastavro

    src = fastavro.reader(io.BytesIO(batch.avro))
    meta = {
        META_IDS: _b64z("\n".join(batch.event_ids).encode()),
        META_RECEIVED: _b64z(array("q", batch.received_us).tobytes()),
    }
    out = io.BytesIO()
    writer = fastavro.write.Writer(out, src.writer_schema, codec="snappy", metadata=meta)
    for block in fastavro.block_reader(io.BytesIO(batch.avro)):
        writer.write_block(block)
    writer.flush()
    return out.getvalue()


def read_keys(header_metadata: Mapping[str, Any]) -> tuple[list[str], list[int]] | None:
    """The (event_ids, received_at micros) stored by :func:`staging_file`, or None if absent."""
    found = read_keys_blob(header_metadata)
    return None if found is None else (found[1], found[2])


def read_keys_blob(header_metadata: Mapping[str, Any]) -> tuple[bytes, list[str], list[int]] | None:
    """Like :func:`read_keys`, plus the ids as stored (UTF-8, joined by ``\n``), which dedupe
    reuses for its ``_event_ids`` sidecar instead of joining and encoding the strings again.
    Metadata values may be str (fastavro's reader) or bytes (fastcheck.read_header)."""
    if META_IDS not in header_metadata or META_RECEIVED not in header_metadata:
        return None
    ids_raw = _unb64z(header_metadata[META_IDS])
    ids = ids_raw.decode().split("\n") if ids_raw else []
    rec = array("q")
    rec.frombytes(_unb64z(header_metadata[META_RECEIVED]))
    if len(rec) != len(ids):
        return None
    return ids_raw, ids, rec.tolist()


def iter_jsonable(records: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    for r in records:
        yield {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
