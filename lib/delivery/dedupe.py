"""dedupe: a closed hour's manifest in, ``final/<type>/dt=<D>/hour=<HH>/`` out (Spotify's "Deduper").

Reads exactly the files the immutable manifest lists. The winner of each ``event_id`` is the copy
with the smallest ``(received_at, messageId, row)``; a skewed row (a late batch diverted into this
hour) is also dropped when its id is already final in one of the previous K hours (their
``_event_ids-*.zst`` sidecars). Output contract, shared with the PySpark path (spark_dedupe.py):

* ``part-NNNNN.avro``: Avro, snappy, the registry schema (latest version present in the hour),
  deterministic bytes (sync marker derived from the manifest hash) so a rerun rewrites identical files;
* ``_event_ids-NNNNN.zst``: the part's ids, one per line (zstd) - for later hours' skewed rows;
* ``_SUCCESS`` last: JSON with ``rows_in``, ``rows_out``, ``duplicates``, ``skewed``,
  ``manifest_sha256`` and the part names. A rerun whose ``_SUCCESS`` already carries the manifest's
  hash does nothing; a run killed midway left no ``_SUCCESS`` and is simply redone (every write is a
  whole-object overwrite, stale parts are deleted before ``_SUCCESS``).

Planning needs only each staging file's keys, which ingest stored in the Avro header metadata, so a
file whose rows all win is copied block by block without decoding a row.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from backbeat.cloud.ports import NotFound, Platform
from backbeat.delivery import faults
from backbeat.delivery import hours as H
from backbeat.delivery.config import CLOSED, DeliveryConfig
from backbeat.delivery.envelope import parsed_plain, read_keys, read_keys_blob
from backbeat.delivery.errors import DeliveryError, HourStateError, ManifestMismatch
from backbeat.delivery.registry import EventSchema, Registry, default_registry

SUCCESS_FORMAT = "backbeat.success/1"


@dataclass
class DedupeResult:
    event_type: str
    hour: str
    rows_in: int
    rows_out: int
    duplicates: int
    skewed: int
    manifest_sha256: str
    parts: list[str] = field(default_factory=list)
    engine: str = "function"
    schema_version: int = 0
    duplicates_prior_hours: int = 0
    dead_letter_events: int = 0
    rerun_noop: bool = False

    def success_record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rerun_noop")
        d["format"] = SUCCESS_FORMAT
        d["type"] = d.pop("event_type")
        return d


def load_manifest(platform: Platform, bucket: str, event_type: str, hour: str) -> tuple[dict[str, Any], str]:
    try:
        data = platform.blobs.get(bucket, H.manifest_name(event_type, hour))
    except NotFound:
        raise HourStateError(
            f"{event_type} {hour}: no manifest {H.manifest_name(event_type, hour)}; the hour is not closed"
        ) from None
    try:
        return json.loads(data), hashlib.sha256(data).hexdigest()
    except ValueError as exc:
        raise ManifestMismatch(f"{bucket}/{H.manifest_name(event_type, hour)} is not JSON: {exc}") from None


def read_success(platform: Platform, bucket: str, event_type: str, hour: str) -> dict[str, Any] | None:
    try:
        return json.loads(platform.blobs.get(bucket, H.success_name(event_type, hour)))
    except NotFound:
        return None


def prior_ids(
    platform: Platform, bucket: str, event_type: str, hour: str, first_hour: str, k: int
) -> set[str]:
    """Final ids of the closed hours in [max(hour-K, first_hour), hour-1] (skewed rows' candidates)."""
    import zstandard

    ids: set[str] = set()
    start = max(H.hour_start(H.shift(hour, -k)), H.hour_start(first_hour))
    cur = H.hour_key(start)
    while cur < hour:
        for info in platform.blobs.list(bucket, H.final_prefix(event_type, cur) + "_event_ids"):
            raw = zstandard.ZstdDecompressor().decompress(
                platform.blobs.get(bucket, info.name), max_output_size=1 << 31
            )
            if raw:
                ids.update(raw.decode().split("\n"))
        cur = H.shift(cur, 1)
    return ids


def sync_marker(sha: str, part: int) -> bytes:
    return hashlib.sha256(f"{sha}:{part}".encode()).digest()[:16]


def file_keys(data: bytes, name: str) -> tuple[list[str], list[int], str]:
    """(event_ids, received_at micros, writer-schema canonical form) of one staging file."""
    return _file_keys(data, name)[:3]


def _file_keys(data: bytes, name: str) -> tuple[list[str], list[int], str, bytes | None]:
    """:func:`file_keys` plus the ids as stored in the header (None for a file ingest did not write).

    The keys come from the header metadata ingest wrote (no row decoded, the header parsed without
    fastavro); a file without them is decoded with fastavro."""
    from backbeat.delivery.envelope import canonical_of
    from backbeat.delivery.fastcheck import read_header

    try:
        meta, _, _ = read_header(data)
        found = read_keys_blob(meta)
        if found is not None:
            return found[1], found[2], canonical_of(meta["avro.schema"]), found[0]
    except DeliveryError:
        raise
    except Exception:
        pass  # fastavro below names the problem precisely
    import fastavro
    from fastavro.schema import to_parsing_canonical_form

    try:
        reader = fastavro.reader(io.BytesIO(data))
        canonical = to_parsing_canonical_form(reader.writer_schema)
        keys = read_keys(reader.metadata)
        if keys is None:  # not written by ingest: decode the two key fields
            ids, rec = [], []
            for r in reader:
                ids.append(r["event_id"])
                v = r["received_at"]
                rec.append(v if isinstance(v, int) else H.to_micros(v))
            keys = (ids, rec)
    except DeliveryError:
        raise
    except Exception as exc:
        raise DeliveryError(f"staging file {name} is not readable Avro: {exc}") from None
    return keys[0], keys[1], canonical, None


def output_schema(registry: Registry, event_type: str, canonicals: Iterable[str]) -> EventSchema:
    """The newest registry version among the files' writer schemas."""
    best: EventSchema | None = None
    for c in set(canonicals):
        s = registry.find_by_canonical(event_type, c)
        if s is None:
            raise DeliveryError(f"{event_type}: a staging file's schema matches no registry version")
        if best is None or s.version > best.version:
            best = s
    return best or registry.latest(event_type)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def raw_blocks(data: bytes, codec: str) -> list[tuple[int, memoryview]] | None:
    """The (record count, compressed payload) of every block of an Avro container written with
    ``codec``, or None (other codec, or anything unexpected: the caller then goes through fastavro)."""
    from backbeat.delivery.fastcheck import read_header

    try:
        meta, sync, pos = read_header(data)
        if meta.get("avro.codec", b"null").decode() != codec:
            return None
        blocks = []
        view = memoryview(data)
        while pos < len(data):
            count, pos = _read_long(data, pos)
            size, pos = _read_long(data, pos)
            if count < 0 or size < 0 or data[pos + size : pos + size + 16] != sync:
                return None
            blocks.append((count, view[pos : pos + size]))
            pos += size + 16
        return blocks
    except Exception:
        return None


def write_part(
    out: io.BytesIO | Any,
    schema: EventSchema,
    sha: str,
    part: int,
    sources: Iterable[tuple[bytes, str, list[bool] | None]],
) -> None:
    """Write one part: ``sources`` yields (file bytes, writer canonical, keep mask or None = keep all)."""
    import fastavro

    writer = fastavro.write.Writer(
        out,
        schema.parsed,
        codec="snappy",
        sync_marker=sync_marker(sha, part),
        metadata={"backbeat.manifest_sha256": sha},
    )
    reader_schema = None
    marker = sync_marker(sha, part)
    for data, canonical, keep in sources:
        if keep is None and canonical == schema.canonical:
            raw = raw_blocks(data, "snappy")
            if raw is not None:  # same codec: copy the compressed blocks byte for byte
                writer.flush()
                for count, payload in raw:
                    out.write(_zigzag(count) + _zigzag(len(payload)))
                    out.write(payload)  # a view of the staging bytes: copied once, into ``out``
                    out.write(marker)
                continue
            for block in fastavro.block_reader(io.BytesIO(data)):
                writer.write_block(block)
            continue
        if reader_schema is None:
            reader_schema = parsed_plain(schema)
        rows = (
            fastavro.reader(io.BytesIO(data), reader_schema=reader_schema)
            if canonical != schema.canonical
            else fastavro.reader(io.BytesIO(data))
        )
        for i, rec in enumerate(rows):
            if keep is None or keep[i]:
                writer.write(rec)
    writer.flush()


def plan(
    manifest: dict[str, Any],
    keys: list[tuple[list[str], list[int]]],
    prior: set[str],
) -> tuple[list[list[bool] | None], dict[str, Any]]:
    """Keep masks per manifest file (None = every row wins), the counts and the winner ids (in
    output order). Duplicates are rare, so the ids are counted with C-level operations first and the
    per-row winner rule, smallest (received_at, messageId, row), runs only on ids seen twice."""
    files = manifest["files"]
    rows_in = sum(len(ids) for ids, _ in keys)
    # ids seen in an earlier file, found with C-level set operations (about 2x cheaper than counting)
    seen: set[str] = set()
    dups: set[str] = set()
    repeats = 0
    for ids, _ in keys:
        if not seen.isdisjoint(ids):
            hit = seen.intersection(ids)
            repeats += len(hit)
            dups |= hit
        seen.update(ids)
    if rows_in - len(seen) != repeats:  # an id repeated inside one file (not ingest's doing): count
        from collections import Counter
        from itertools import chain

        counts = Counter(chain.from_iterable(ids for ids, _ in keys))
        dups = {k for k, c in counts.items() if c > 1}
    touched = [bool(dups) and not dups.isdisjoint(ids) for ids, _ in keys]
    wins, best_file = _winners(files, keys, dups, touched)
    drop: set[str] = set()  # winners in skewed files whose id is final in a previous hour
    if prior:
        for fi, (ids, _) in enumerate(keys):
            if files[fi]["skewed"]:
                for eid in prior.intersection(ids):
                    w = best_file.get(eid)
                    if w is None or w == fi:
                        drop.add(eid)
    masks: list[list[bool] | None] = []
    winner_ids: list[str] = []
    rows_out = skewed = 0
    for fi, (ids, _) in enumerate(keys):
        if not touched[fi] and (not drop or drop.isdisjoint(ids)):
            masks.append(None)
            winner_ids.extend(ids)
            n = len(ids)
        else:
            mask = wins.get(fi) or [True] * len(ids)
            if drop:
                mask = [ok and eid not in drop for eid, ok in zip(ids, mask, strict=True)]
            kept = [eid for eid, ok in zip(ids, mask, strict=True) if ok]
            winner_ids.extend(kept)
            n = len(kept)
            masks.append(None if n == len(ids) else mask)
        rows_out += n
        if files[fi]["skewed"]:
            skewed += n
    return masks, {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "skewed": skewed,
        "dropped_prior": len(drop),
        "winner_ids": winner_ids,
    }


def _winners(
    files: list[dict[str, Any]],
    keys: list[tuple[list[str], list[int]]],
    dups: set[str],
    touched: list[bool],
) -> tuple[dict[int, list[bool]], dict[str, int]]:
    """The winner rule, smallest (received_at, messageId, file, row) per duplicated id, over the
    files holding duplicates, sorted with numpy instead of compared row by row. Returns, per such
    file, which rows survive it (rows of ids that are not duplicated always do) and each
    duplicated id's winning file."""
    which = [fi for fi, t in enumerate(touched) if t]
    if not which:
        return {}, {}
    import numpy as np

    dup_list = list(dups)
    code = {eid: i for i, eid in enumerate(dup_list)}
    mid_rank = {m: r for r, m in enumerate(sorted({files[fi]["message_id"] for fi in which}))}
    sizes = [len(keys[fi][0]) for fi in which]
    codes = np.array([code.get(eid, -1) for fi in which for eid in keys[fi][0]], dtype=np.int64)
    rec = np.concatenate([np.asarray(keys[fi][1], dtype=np.int64) for fi in which])
    mids = np.repeat(np.array([mid_rank[files[fi]["message_id"]] for fi in which], dtype=np.int64), sizes)
    fis = np.repeat(np.array(which, dtype=np.int64), sizes)
    rows = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
    order = np.lexsort((rows, fis, mids, rec, codes))  # by id, then the winner rule
    sorted_codes = codes[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    winners = order[first & (sorted_codes >= 0)]
    survive = codes < 0
    survive[winners] = True
    out: dict[int, list[bool]] = {}
    start = 0
    for fi, n in zip(which, sizes, strict=True):
        out[fi] = survive[start : start + n].tolist()
        start += n
    best_file = dict(zip([dup_list[c] for c in codes[winners].tolist()], fis[winners].tolist(), strict=True))
    return out, best_file


def dedupe_hour(
    platform: Platform,
    bucket: str,
    event_type: str,
    hour: str,
    *,
    registry: Registry | None = None,
    config: DeliveryConfig | None = None,
    expected_sha: str | None = None,
    force_engine: str | None = None,
    settings: Any = None,
    spark: Any = None,
) -> DedupeResult:
    """Deduplicate one closed hour (idempotent). ``force_engine``: ``function`` or ``spark``."""
    registry = registry or default_registry()
    config = config or DeliveryConfig()
    manifest, sha = load_manifest(platform, bucket, event_type, hour)
    if expected_sha and expected_sha != sha:
        raise ManifestMismatch(
            f"{event_type} {hour}: hour-closed names manifest {expected_sha[:12]}, "
            f"the bucket holds {sha[:12]}"
        )
    doc = platform.documents.get(H.hour_doc(event_type, hour))
    if doc is not None and doc.get("state") != CLOSED:
        raise HourStateError(f"{event_type} {hour} is {doc.get('state')}, not CLOSED")
    done = read_success(platform, bucket, event_type, hour)
    if done and done.get("manifest_sha256") == sha:
        fields = {k: done[k] for k in DedupeResult.__dataclass_fields__ if k in done and k != "event_type"}
        return DedupeResult(event_type=event_type, **fields, rerun_noop=True)
    if done:
        raise ManifestMismatch(
            f"{H.success_name(event_type, hour)} names manifest "
            f"{str(done.get('manifest_sha256'))[:12]}, not {sha[:12]}"
        )
    engine = force_engine or ("spark" if manifest["rows"] > config.spark_threshold_rows else "function")
    if engine == "spark":
        from backbeat.delivery.spark_submit import DataprocTarget, submit_dedupe

        settings = settings or _settings()
        target = DataprocTarget.from_config(config, settings, bucket)
        if target is not None:  # BACKBEAT_DATAPROC_CLUSTER: the job runs and commits on the cluster
            return submit_dedupe(
                platform, bucket, manifest, sha, config=config, settings=settings, target=target
            )
        from backbeat.delivery.spark_dedupe import dedupe_hour_spark

        result = dedupe_hour_spark(
            platform, bucket, manifest, sha, registry=registry, config=config, settings=settings, spark=spark
        )
    else:
        result = _dedupe_in_function(platform, bucket, manifest, sha, registry, config)
    _finish(platform, bucket, result)
    return result


def _settings() -> Any:
    from backbeat.settings import get_settings

    return get_settings()


def skewed_prior(platform: Platform, bucket: str, manifest: dict[str, Any], k: int) -> set[str]:
    skewed_hours = [f["receive_hour"] for f in manifest["files"] if f["skewed"]]
    if not skewed_hours or k <= 0:
        return set()
    return prior_ids(platform, bucket, manifest["type"], manifest["hour"], min(skewed_hours), k)


def _dedupe_in_function(
    platform: Platform,
    bucket: str,
    manifest: dict[str, Any],
    sha: str,
    registry: Registry,
    config: DeliveryConfig,
) -> DedupeResult:
    import zstandard

    event_type, hour = manifest["type"], manifest["hour"]
    contents: list[bytes] = []
    keys: list[tuple[list[str], list[int]]] = []
    canonicals: list[str] = []
    blobs: list[bytes | None] = []
    for f in manifest["files"]:
        try:
            data = platform.blobs.get(bucket, f["name"])
        except NotFound:
            raise DeliveryError(f"{event_type} {hour}: manifest file {f['name']} is missing") from None
        ids, rec, canonical, blob = _file_keys(data, f["name"])
        if len(ids) != f["rows"]:
            raise DeliveryError(f"{f['name']}: {len(ids)} rows, the manifest says {f['rows']}")
        contents.append(data)
        keys.append((ids, rec))
        canonicals.append(canonical)
        blobs.append(blob)
    schema = output_schema(registry, event_type, canonicals)
    prior = skewed_prior(platform, bucket, manifest, config.lookback_hours)
    masks, counts = plan(manifest, keys, prior)
    out = io.BytesIO()
    write_part(
        out,
        schema,
        sha,
        0,
        (
            (contents[i], canonicals[i], masks[i])
            for i in range(len(contents))
            if masks[i] is None or any(masks[i])
        ),
    )
    part = H.part_name(event_type, hour, 0)
    # the part's upload (mostly waiting on I/O: fsync, or the network) overlaps with building and
    # writing the sidecar; both are done before _finish writes _SUCCESS
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="dedupe-put") as pool:
        upload = pool.submit(platform.blobs.put, bucket, part, out.getvalue(), content_type="avro/binary")
        ids_blob = zstandard.ZstdCompressor(level=1).compress(_winner_ids_bytes(keys, blobs, masks))
        platform.blobs.put(bucket, H.final_prefix(event_type, hour) + "_event_ids-00000.zst", ids_blob)
        upload.result()
    return DedupeResult(
        event_type,
        hour,
        counts["rows_in"],
        counts["rows_out"],
        counts["rows_in"] - counts["rows_out"],
        counts["skewed"],
        sha,
        [part],
        "function",
        schema.version,
        counts["dropped_prior"],
        manifest["dead_letters"]["events"],
    )


def _winner_ids_bytes(
    keys: list[tuple[list[str], list[int]]], blobs: list[bytes | None], masks: list[list[bool] | None]
) -> bytes:
    """The winners' ids joined by ``\n`` in output order (= ``"\n".join(winner_ids).encode()``),
    reusing each fully kept file's stored id bytes rather than joining 1,000 strings per file."""
    pieces: list[bytes] = []
    for (ids, _), blob, mask in zip(keys, blobs, masks, strict=True):
        if mask is None:
            piece = blob if blob is not None else "\n".join(ids).encode()
        else:
            piece = "\n".join(eid for eid, ok in zip(ids, mask, strict=True) if ok).encode()
        if piece:
            pieces.append(piece)
    return b"\n".join(pieces)


def _finish(platform: Platform, bucket: str, result: DedupeResult) -> None:
    """Delete stale parts/sidecars of an earlier attempt, then write _SUCCESS (last)."""
    prefix = H.final_prefix(result.event_type, result.hour)
    keep = set(result.parts)
    keep_ids = {p.replace("part-", "_event_ids-").replace(".avro", ".zst") for p in result.parts}
    for info in list(platform.blobs.list(bucket, prefix)):
        base = info.name[len(prefix) :]
        if (base.startswith("part-") and info.name not in keep) or (
            base.startswith("_event_ids") and info.name not in keep_ids
        ):
            platform.blobs.delete(bucket, info.name)
    faults.point("dedupe.before_success", f"{result.event_type}/{result.hour}")
    body = json.dumps(result.success_record(), sort_keys=True, indent=1).encode()
    platform.blobs.put(
        bucket, H.success_name(result.event_type, result.hour), body, content_type="application/json"
    )
