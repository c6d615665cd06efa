"""Compatibility with the files written by Sparkey's reference C library."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbeat.kvstore import Reader, Writer, build_index
from backbeat.kvstore.format import HASH_HEADER_SIZE, LOG_HEADER_SIZE, HashHeader, LogHeader
from tests.kvstore.conftest import libsnappy_or_fail


def _headers(v: dict) -> tuple[LogHeader, HashHeader]:
    spl, spi = v["spl"].read_bytes(), v["spi"].read_bytes()
    return LogHeader.unpack(spl[:LOG_HEADER_SIZE], v["spl"], len(spl)), HashHeader.unpack(
        spi[:HASH_HEADER_SIZE], v["spi"], len(spi)
    )


def test_log_iteration_reproduces_every_entry_in_order(vector: dict) -> None:
    with Reader(vector["spi"], vector["spl"]) as r:
        got = [[kind, k.hex(), None if v is None else v.hex()] for kind, k, v in r.log_entries()]
    assert got == vector["entries"]


def test_hash_lookups_reproduce_the_final_mapping(vector: dict) -> None:
    final = {bytes.fromhex(k): bytes.fromhex(v) for k, v in vector["final"].items()}
    with Reader(vector["spi"], vector["spl"]) as r:
        assert len(r) == len(final)
        assert {k: r.get(k) for k in final} == final
        assert dict(r.items()) == final
        assert r.get_many(list(final)) == list(final.values())
        gone = {bytes.fromhex(e[1]) for e in vector["entries"]} - set(final)
        assert all(r.get(k) is None and k not in r for k in gone)
        assert r.get_many(list(gone)) == [None] * len(gone)
        for k in list(final)[:20]:
            assert r[k] == final[k] and k in r
        with pytest.raises(KeyError):
            r[b"\xffno such key"]


def test_exact_index_is_byte_identical_to_the_c_library(vector: dict, tmp_path: Path) -> None:
    _, hh = _headers(vector)
    out = tmp_path / "x.spi"
    build_index(vector["spl"], out, hash_size=vector["hash_size"], seed=hh.hash_seed, method="exact")
    assert out.read_bytes() == vector["spi"].read_bytes()


def test_fast_index_answers_like_the_reference(vector: dict, tmp_path: Path) -> None:
    _, hh = _headers(vector)
    out = tmp_path / "x.spi"
    header = build_index(vector["spl"], out, hash_size=vector["hash_size"], seed=hh.hash_seed, method="fast")
    assert header.hash_capacity == hh.hash_capacity and header.num_entries == hh.num_entries
    assert (
        header.max_displacement == hh.max_displacement and header.total_displacement == hh.total_displacement
    )
    with Reader(out, vector["spl"]) as r:
        assert {k.hex(): v.hex() for k, v in r.items()} == vector["final"]
    if not vector["entries"] or all(kind == "put" for kind, _, _ in vector["entries"]):
        # no deletes: the fast builder really ran (not the exact fallback) and matches the C bytes
        keys = [k for _, k, _ in vector["entries"]]
        if len(set(keys)) == len(keys):
            assert out.read_bytes() == vector["spi"].read_bytes()


def _rewrite(vector: dict, path: Path) -> None:
    lh, _ = _headers(vector)
    with Writer(path, vector["compression"], vector["block_size"], file_identifier=lh.file_identifier) as w:
        for kind, k, v in vector["entries"]:
            if kind == "put":
                w.put(bytes.fromhex(k), bytes.fromhex(v))
            else:
                w.delete(bytes.fromhex(k))


@pytest.mark.parametrize("name", ["plain", "deletes", "hash64", "empty"])
def test_uncompressed_log_is_byte_identical(name: str, tmp_path: Path) -> None:
    from tests.kvstore.conftest import load_vector

    v = load_vector(name)
    _rewrite(v, tmp_path / "x.spl")
    assert (tmp_path / "x.spl").read_bytes() == v["spl"].read_bytes()


@pytest.mark.parametrize("name", ["snappy-4k", "snappy-deletes", "binary"])
def test_snappy_log_is_byte_identical(name: str, tmp_path: Path) -> None:
    from tests.kvstore.conftest import load_vector

    libsnappy_or_fail()
    v = load_vector(name)
    _rewrite(v, tmp_path / "x.spl")
    assert (tmp_path / "x.spl").read_bytes() == v["spl"].read_bytes()


def test_zstd_log_has_the_reference_block_layout(tmp_path: Path) -> None:
    """zstd frames may differ by library version; the header and block boundaries must not."""
    from tests.kvstore.conftest import load_vector

    v = load_vector("zstd-1k")
    _rewrite(v, tmp_path / "x.spl")
    ours = tmp_path / "x.spl"
    lh, hh = _headers(v)
    mine = LogHeader.unpack(ours.read_bytes()[:LOG_HEADER_SIZE], ours, ours.stat().st_size)
    assert (mine.num_puts, mine.num_deletes, mine.max_entries_per_block, mine.put_size) == (
        lh.num_puts,
        lh.num_deletes,
        lh.max_entries_per_block,
        lh.put_size,
    )
    build_index(ours, tmp_path / "x.spi", seed=hh.hash_seed, method="exact")
    with Reader(tmp_path / "x.spi", ours) as r:
        assert {k.hex(): val.hex() for k, val in r.items()} == v["final"]
