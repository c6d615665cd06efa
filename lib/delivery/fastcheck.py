"""A compiled validator for the envelope's Avro container: ingest's fast path.

Why: decoding every event into a Python dict with fastavro (only to throw the dicts away, since the
producer's bytes are kept as the staging file) was half of ingest's time. This module walks the
container's binary records with a small schema "program" compiled by numba, checking what a full
decode would check (every varint well formed, every length within the block, enum and union indexes
in range, booleans 0/1, ints in 32 bits, strings valid UTF-8, each block consumed exactly and
followed by the sync marker) and extracting only the two key fields (``event_id``, ``received_at``).

It is a pure optimisation with a conservative answer: :func:`scan` returns the keys only when the
whole container is provably decodable by fastavro with those values, and None whenever anything is
unusual (a codec other than ``null``, a schema feature it does not model, a logical type, any
malformed byte, numba missing). The caller then takes the original fastavro path, which produces
the exact error or per-event reasons as before. tests/delivery/test_fastcheck.py fuzzes that
contract against fastavro.

numba's import and first compile take seconds (about 0.6 s once its on-disk cache is warm), so the
kernel loads in a background thread started by the first message; until it is ready, messages take
the fastavro path, and a cold-started function never waits for the compiler.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

MAGIC = b"Obj\x01"

# opcodes of the schema program (one per leaf value of the flattened record)
NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING, ENUM, FIXED, UNION = range(11)
_PRIMITIVE = {
    "null": NULL,
    "boolean": BOOLEAN,
    "int": INT,
    "long": LONG,
    "float": FLOAT,
    "double": DOUBLE,
    "bytes": BYTES,
    "string": STRING,
}


class Unsupported(Exception):
    """The schema uses something the compiled walker does not model: use fastavro."""


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def read_header(data: bytes) -> tuple[dict[str, bytes], bytes, int]:
    """(metadata, sync marker, offset of the first block) of an Avro object container."""
    if data[:4] != MAGIC:
        raise ValueError("not an Avro object container")
    pos, meta = 4, {}
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            break
        if count < 0:
            _, pos = _read_long(data, pos)  # block byte size, unused
            count = -count
        for _ in range(count):
            klen, pos = _read_long(data, pos)
            key = data[pos : pos + klen].decode()
            pos += klen
            vlen, pos = _read_long(data, pos)
            if klen < 0 or vlen < 0 or pos + vlen > len(data):
                raise ValueError("bad header")
            meta[key] = data[pos : pos + vlen]
            pos += vlen
    sync = data[pos : pos + 16]
    if len(sync) != 16:
        raise ValueError("truncated header")
    return meta, sync, pos + 16


def _compile(schema: Any, named: dict[str, Any], ops: list[int], args: list[int], ns: str) -> None:
    """Append the program of ``schema`` (records are flattened; unions hold single-op branches)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE:
            ops.append(_PRIMITIVE[schema])
            args.append(0)
            return
        full = schema if "." in schema else f"{ns}.{schema}" if ns else schema
        target = named.get(full, named.get(schema))
        if target is None:
            raise Unsupported(f"unknown named type {schema!r}")
        _compile(target, named, ops, args, ns)
        return
    if isinstance(schema, list):
        ops.append(UNION)
        args.append(len(schema))
        for branch in schema:
            sub_ops: list[int] = []
            sub_args: list[int] = []
            _compile(branch, named, sub_ops, sub_args, ns)
            if len(sub_ops) != 1 or sub_ops[0] == UNION:
                raise Unsupported("union branch that is not a single value")
            ops += sub_ops
            args += sub_args
        return
    if not isinstance(schema, dict):
        raise Unsupported(f"schema node {schema!r}")
    if "logicalType" in schema:
        raise Unsupported("logical type (fastavro would convert it)")
    t = schema.get("type")
    if isinstance(t, (dict, list)) or (isinstance(t, str) and t in _PRIMITIVE):
        _compile(t, named, ops, args, ns)
        return
    name = schema.get("name")
    if isinstance(name, str) and t in ("record", "enum", "fixed"):
        space = schema.get("namespace", ns) if "." not in name else name.rpartition(".")[0]
        named[name if "." in name else f"{space}.{name}" if space else name] = schema
        ns_here = space or ""
    else:
        ns_here = ns
    if t == "record":
        for f in schema.get("fields", []):
            _compile(f["type"], named, ops, args, ns_here)
    elif t == "enum":
        ops.append(ENUM)
        args.append(len(schema["symbols"]))
    elif t == "fixed":
        ops.append(FIXED)
        args.append(int(schema["size"]))
    else:
        raise Unsupported(f"type {t!r}")


def program(writer_schema: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The walker program of an event record whose fields 0 and 1 are ``event_id`` (string) and
    ``received_at`` (plain long), or None when the schema is outside what the walker models."""
    fields = writer_schema.get("fields") if isinstance(writer_schema, dict) else None
    if writer_schema.get("type") != "record" or not fields or len(fields) < 2:
        return None
    if fields[0].get("type") != "string" or fields[1].get("type") != "long":
        return None
    ops: list[int] = []
    args: list[int] = []
    try:
        _compile(writer_schema, {}, ops, args, writer_schema.get("namespace", ""))
    except (Unsupported, KeyError, TypeError, ValueError):
        return None
    return np.array(ops, dtype=np.int64), np.array(args, dtype=np.int64)


_KERNEL: Any = None  # the compiled kernel; False when numba is unusable here
_LOADER: threading.Thread | None = None
_LOADER_LOCK = threading.Lock()


def _load() -> None:
    global _KERNEL
    try:
        from backbeat.delivery._fastcheck_kernel import walk_block

        # compile (or load from numba's on-disk cache) for the argument types scan() passes
        z8, z64 = np.zeros(1, dtype=np.uint8), np.zeros(1, dtype=np.int64)
        walk_block(z8, 0, np.zeros(16, dtype=np.uint8), z64, z64, z8, z64)
        _KERNEL = walk_block
    except Exception:  # numba missing or unable to compile here: fastavro path
        _KERNEL = False


def warm(wait: bool = False) -> bool:
    """Start loading the kernel in a background thread (numba's import and first compile take
    seconds; a cold-started function must not wait for them: until the kernel is ready, ingest
    simply decodes with fastavro). ``wait`` blocks until it is ready. True when usable."""
    global _LOADER
    if _KERNEL is None:
        with _LOADER_LOCK:
            if _LOADER is None:
                _LOADER = threading.Thread(target=_load, name="fastcheck-compile", daemon=True)
                _LOADER.start()
        if wait:
            _LOADER.join()
    return bool(_KERNEL)


_SCHEMAS: dict[bytes, tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]] = {}


def writer_schema(schema_json: bytes) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """(parsed JSON, program) of a header's ``avro.schema`` (cached: producers reuse a few schemas)."""
    hit = _SCHEMAS.get(schema_json)
    if hit is None:
        parsed = json.loads(schema_json)
        hit = (parsed, program(parsed) if isinstance(parsed, dict) else None)
        if len(_SCHEMAS) < 256:
            _SCHEMAS[schema_json] = hit
    return hit


def scan(
    data: bytes, header: tuple[dict[str, bytes], bytes, int], prog: tuple[np.ndarray, np.ndarray]
) -> tuple[bytes, np.ndarray, int] | None:
    """(ids joined by ``\\n`` as UTF-8, received_at int64 array, max id length in bytes) of a
    ``null``-codec container whose every record is valid, or None (then use fastavro)."""
    if not warm():
        return None
    kernel = _KERNEL
    meta, sync, pos = header
    if meta.get("avro.codec", b"null") != b"null":
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    sync_arr = np.frombuffer(sync, dtype=np.uint8)
    ops, args = prog
    out = np.empty(len(data), dtype=np.uint8)
    # upper bound of the record count: each record takes at least one byte (its event_id length)
    recv = np.empty(len(data), dtype=np.int64)
    res = kernel(buf, pos, sync_arr, ops, args, out, recv)
    n_rec, n_out, max_id, ok = int(res[0]), int(res[1]), int(res[2]), int(res[3])
    if not ok or n_rec == 0:
        return None
    return out[: max(n_out - 1, 0)].tobytes(), recv[:n_rec].copy(), max_id
