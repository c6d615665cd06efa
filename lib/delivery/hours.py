"""Hour keys and the names other tools rely on (bucket layout and document paths).

An hour is identified by the UTC start of the hour of ``received_at`` (stamped once at the edge),
written ``YYYY-MM-DDTHH``. Everything that builds a path goes through this module so the layout
documented in docs/delivery.md has exactly one implementation.

Scaled clock (tests and benchmarks only): ``BACKBEAT_HOUR_SECONDS=N`` (default 3600, read once per
process) makes a bucket "hour" last N real seconds so the whole close/dedupe cycle can be watched in
minutes. ``received_at`` stays real UTC time; bucket k = floor((received_at - 2020-01-01T00Z) / N) is
*named* as the virtual UTC hour 2020-01-01T00Z + k hours, so keys, ``hour=<YYYY-MM-DDTHH>`` and
``dt=/hour=`` stay valid and unique (N=60 in late 2026 names hours around the year 2400).
:func:`hour_start`/:func:`hour_end` return the bucket's *real* bounds (what grace, the watermark and
lags compare with); :func:`key_time` returns the virtual hour a key names (what paths show). With
N=3600 both coincide and every function is the plain UTC-hour one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backbeat.delivery.errors import DeliveryError

HOUR = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FMT = "%Y-%m-%dT%H"
SCALE_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_hour_seconds: int | None = None


def hour_seconds() -> int:
    """Real seconds in one bucket hour: ``BACKBEAT_HOUR_SECONDS`` read once (3600 = real hours)."""
    global _hour_seconds
    if _hour_seconds is None:
        from backbeat.delivery.config import hour_seconds_from_env

        _hour_seconds = hour_seconds_from_env()
    return _hour_seconds


def set_hour_seconds(seconds: int | None) -> None:
    """Override the bucket length in this process (None = re-read the environment on next use).
    For benchmarks and tests that compute keys beside a stack started with the same setting."""
    global _hour_seconds
    if seconds is not None:
        from backbeat.delivery.config import hour_seconds_from_env

        seconds = hour_seconds_from_env({"BACKBEAT_HOUR_SECONDS": str(seconds)})
    _hour_seconds = seconds


def bucket_length() -> timedelta:
    """The real duration of one bucket hour (``HOUR`` unless the clock is scaled)."""
    return timedelta(seconds=hour_seconds())


def utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime (naive values are taken to be UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 instant (``Z`` allowed; naive = UTC). Raises DeliveryError naming the text."""
    try:
        return utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise DeliveryError(f"not an ISO-8601 time: {text!r}") from None


def _bucket_index(dt: datetime, n: int) -> int:
    delta = utc(dt) - SCALE_EPOCH
    return (delta.days * 86400 + delta.seconds) // n


def floor_hour(dt: datetime) -> datetime:
    """The real start of the bucket holding ``dt``."""
    n = hour_seconds()
    if n == 3600:
        return utc(dt).replace(minute=0, second=0, microsecond=0)
    return SCALE_EPOCH + timedelta(seconds=_bucket_index(dt, n) * n)


def hour_key(dt: datetime) -> str:
    """``2026-01-01T10`` for any instant in that UTC hour (its virtual hour when scaled)."""
    n = hour_seconds()
    if n == 3600:
        return floor_hour(dt).strftime(_FMT)
    try:
        return (SCALE_EPOCH + timedelta(hours=_bucket_index(dt, n))).strftime(_FMT)
    except OverflowError:
        raise DeliveryError(f"{utc(dt).isoformat()} has no bucket name with {n}-second hours") from None


def key_time(key: str) -> datetime:
    """The UTC hour a key names (the virtual hour when scaled); used for path and table names."""
    try:
        return datetime.strptime(key, _FMT).replace(tzinfo=UTC)
    except ValueError:
        raise DeliveryError(f"not an hour key (YYYY-MM-DDTHH): {key!r}") from None


def hour_start(key: str) -> datetime:
    """The real instant the bucket ``key`` starts."""
    named = key_time(key)
    n = hour_seconds()
    if n == 3600:
        return named
    delta = named - SCALE_EPOCH
    return SCALE_EPOCH + timedelta(seconds=(delta.days * 24 + delta.seconds // 3600) * n)


def hour_end(key: str) -> datetime:
    return hour_start(key) + bucket_length()


def shift(key: str, hours: int) -> str:
    """The key ``hours`` buckets after ``key``."""
    if hour_seconds() == 3600:
        return hour_key(hour_start(key) + hours * HOUR)
    return (key_time(key) + hours * HOUR).strftime(_FMT)


def to_micros(dt: datetime) -> int:
    delta = utc(dt) - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def hour_of_micros(us: int) -> str:
    return hour_key(from_micros(us))


# ------------------------------------------------------------------------------ bucket layout
def staging_name(event_type: str, hour: str, message_id: str) -> str:
    return f"staging/{event_type}/hour={hour}/{message_id}.avro"


def manifest_name(event_type: str, hour: str) -> str:
    return f"manifests/{event_type}/{hour}.json"


def final_prefix(event_type: str, hour: str) -> str:
    start = key_time(hour)
    return f"final/{event_type}/dt={start:%Y-%m-%d}/hour={start:%H}/"


def part_name(event_type: str, hour: str, index: int) -> str:
    return f"{final_prefix(event_type, hour)}part-{index:05d}.avro"


def success_name(event_type: str, hour: str) -> str:
    return final_prefix(event_type, hour) + "_SUCCESS"


def ids_name(event_type: str, hour: str) -> str:
    """Sidecar with the hour's final event ids (zstd, one per line): lets later hours dedupe skewed
    rows without decoding the final Avro. Starts with ``_`` so Hive/Spark/globs on *.avro skip it."""
    return final_prefix(event_type, hour) + "_event_ids.zst"


def export_name(event_type: str, hour: str) -> str:
    return f"exports/{event_type}/{hour}.json"


# ---------------------------------------------------------------------------- document paths
def hour_doc(event_type: str, hour: str) -> str:
    return f"hours/{event_type}_{hour}"


def file_doc(event_type: str, hour: str, message_id: str) -> str:
    return f"{hour_doc(event_type, hour)}/files/{message_id}"


def files_collection(event_type: str, hour: str) -> str:
    return f"{hour_doc(event_type, hour)}/files"


def diverted_doc(event_type: str, hour: str, message_id: str) -> str:
    return f"{hour_doc(event_type, hour)}/diverted/{message_id}"


def dead_letter_doc(event_type: str, hour: str, key: str) -> str:
    return f"{hour_doc(event_type, hour)}/deadletters/{key}"


def dead_letters_collection(event_type: str, hour: str) -> str:
    return f"{hour_doc(event_type, hour)}/deadletters"


def backlog_doc(batch_id: str) -> str:
    return f"backlog/{batch_id}"


def split_hour_doc_id(doc_id: str) -> tuple[str, str]:
    """``page_view_2026-01-01T10`` -> (``page_view``, ``2026-01-01T10``)."""
    event_type, _, hour = doc_id.rpartition("_")
    if not event_type:
        raise DeliveryError(f"not an hour document id: {doc_id!r}")
    return event_type, hour
