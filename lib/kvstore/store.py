"""``write_store``: the bulk path (log + index in one call, published atomically)."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backbeat.kvstore.format import HashHeader, default_index_path
from backbeat.kvstore.index import build_index
from backbeat.kvstore.log import Writer


def write_store(
    pairs: Iterable[tuple[bytes | str, bytes | str]] | Mapping[Any, Any],
    log_path: str | Path,
    index_path: str | Path | None = None,
    *,
    compression: str = "none",
    block_size: int = 0,
    hash_size: int = 0,
    seed: int | None = None,
    file_identifier: int | None = None,
    method: str = "auto",
    progress: Any = None,
) -> HashHeader:
    """Write every ``(key, value)`` to a fresh store and return the index header.

    Both files are written under temporary names in the destination folder and renamed into
    place, the log first, then the index: a reader never sees a half-written file, and an index
    always matches its log because the new log has a new file identifier (an old index is
    refused as belonging to another log rather than giving wrong answers)."""
    log_path = Path(log_path)
    index_path = Path(index_path) if index_path is not None else default_index_path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    fd, tmp_log = tempfile.mkstemp(prefix=f".{log_path.name}.", suffix=".tmp", dir=log_path.parent)
    os.close(fd)
    tmp_index = index_path.parent / f".{index_path.name}.{os.getpid()}.tmp"
    try:
        seed = secrets.randbits(32) if seed is None else seed & 0xFFFFFFFF
        with Writer(
            tmp_log, compression=compression, block_size=block_size, file_identifier=file_identifier
        ) as w:
            tracked = w.put_many(items, hash32_seed=seed if hash_size in (0, 4) else None)
        header = build_index(
            tmp_log,
            tmp_index,
            hash_size=hash_size,
            seed=seed,
            method=method,
            progress=progress,
            tracked=tracked,
        )
        os.chmod(tmp_log, 0o644)
        os.replace(tmp_log, log_path)
        os.replace(tmp_index, index_path)
        return header
    finally:
        for tmp in (tmp_log, tmp_index):
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
