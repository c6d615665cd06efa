"""Hypothesis drives the reader with damaged files: it may raise a KvStoreError, never anything
else, never hang; and while the log is intact, a value it returns is always the right one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.kvstore import KvStoreError, Reader, write_store
from backbeat.kvstore.verify import verify_store
from tests.kvstore.conftest import sample_pairs

PAIRS = sample_pairs(60, seed=3) + [(b"big", b"B" * 1500)]
TRUTH = dict(PAIRS)
_BUILT: dict[str, Path] = {}


def _pristine(compression: str) -> Path:
    if compression not in _BUILT:
        folder = Path(tempfile.mkdtemp(prefix="kvfuzz-"))
        write_store(PAIRS, folder / "s.spl", compression=compression, block_size=256)
        _BUILT[compression] = folder
    return _BUILT[compression]


def _exercise(folder: Path) -> list[tuple[bytes, bytes | None]]:
    """Every read path once; returns the (key, value) answers of get and get_many."""
    seen: list[tuple[bytes, bytes | None]] = []
    try:
        with Reader(folder / "s.spi", folder / "s.spl") as r:
            for k in TRUTH:
                try:
                    seen.append((k, r.get(k)))
                except KvStoreError:
                    pass
            try:
                seen.extend(zip(TRUTH, r.get_many(list(TRUTH)), strict=True))
            except KvStoreError:
                pass
            for iterate in (r.items, r.log_entries):
                try:
                    for _ in iterate():
                        pass
                except KvStoreError:
                    pass
        verify_store(folder / "s.spi", folder / "s.spl")
    except KvStoreError:
        pass
    return seen


mutation = st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(min_value=0, max_value=255))


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["s.spl", "s.spi"]),
    mutations=st.lists(mutation, min_size=0, max_size=6),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 20)),
)
def test_damaged_files_never_crash_or_lie(
    compression: str, target: str, mutations: list, cut: int | None
) -> None:
    pristine = _pristine(compression)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(pristine / "s.spl", folder / "s.spl")
        shutil.copy(pristine / "s.spi", folder / "s.spi")
        path = folder / target
        data = bytearray(path.read_bytes())
        for offset, byte in mutations:
            data[offset % len(data)] = byte
        if cut is not None:
            data = data[: cut % (len(data) + 1)]
        path.write_bytes(bytes(data))
        seen = _exercise(folder)
        if target == "s.spi":  # the log is intact: any value returned must be the stored one
            for k, v in seen:
                assert v is None or v == TRUTH[k], f"wrong value for {k!r}"
        if not mutations and cut is None:
            assert seen == list(TRUTH.items()) * 2
