"""The C lookup (``backbeat.kvstore._fastget``): same hashes as mmh3, same answers and the same
typed errors as the pure-Python reader, and a switch back to pure Python."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import mmh3
import pytest

from backbeat.kvstore import CorruptFileError, Reader, StoreClosedError, Writer, build_index, write_store
from tests.kvstore.conftest import sample_pairs


def test_the_read_path_is_the_one_asked_for(tmp_path: Path, read_path: str) -> None:
    write_store({b"a": b"1"}, tmp_path / "s.spl")
    with Reader(tmp_path / "s.spi") as r:
        assert r.accelerated is (read_path == "c")
        assert r.get(b"a") == b"1" and r.get_many([b"a", "a", b"b"]) == [b"1", b"1", None]


def test_murmur3_matches_mmh3_for_every_length_and_seed() -> None:
    from backbeat.kvstore import _fastget  # type: ignore[attr-defined]

    rnd = random.Random(5)
    for length in range(0, 70):
        for seed in (0, 1, 0x9747B28C, 0xFFFFFFFF, rnd.getrandbits(32)):
            data = rnd.randbytes(length)
            assert _fastget.murmur32(data, seed) == mmh3.hash(data, seed, False)
            low64 = mmh3.hash64(data, seed, True, False)[0] & 0xFFFFFFFFFFFFFFFF
            assert _fastget.murmur64(data, seed) == low64


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd"])
@pytest.mark.parametrize("hash_size", [4, 8])
def test_c_and_pure_paths_agree(tmp_path: Path, compression: str, hash_size: int, monkeypatch) -> None:  # noqa: ANN001
    pairs = sample_pairs(3000, seed=hash_size) + [(b"long-key-" * 30, b"v" * 5000), (b"", b"empty key")]
    write_store(pairs, tmp_path / "s.spl", compression=compression, block_size=700, hash_size=hash_size)
    keys = [k for k, _ in pairs] + [b"absent-%d" % i for i in range(300)]
    random.Random(1).shuffle(keys)
    answers = []
    for pure in ("", "1"):
        monkeypatch.setenv("BACKBEAT_KVSTORE_PURE", pure)
        with Reader(tmp_path / "s.spi") as r:
            assert r.accelerated is (pure == "")
            answers.append(([r.get(k) for k in keys], r.get_many(keys)))
    model = dict(pairs)
    expected = [model.get(k) for k in keys]
    assert answers[0] == answers[1] == (expected, expected)


def test_closed_reader_fails_even_through_a_kept_method(tmp_path: Path) -> None:
    write_store({b"a": b"1"}, tmp_path / "s.spl", compression="snappy")
    r = Reader(tmp_path / "s.spi")
    get, get_many = r.get, r.get_many
    r.close()
    with pytest.raises(StoreClosedError):
        get(b"a")
    with pytest.raises(StoreClosedError):
        get_many([b"a"])


def test_index_pointing_at_a_delete_entry(tmp_path: Path) -> None:
    with Writer(tmp_path / "s.spl") as w:
        w.put(b"key", b"value")
        w.delete(b"key")
    pos = 84 + 2 + 3 + 5  # the delete entry
    write_store({b"key": b"value"}, tmp_path / "t.spl")
    build_index(tmp_path / "s.spl", tmp_path / "s.spi")
    with Reader(tmp_path / "t.spi") as r:  # a 1-entry index: find its slot and retarget it
        seed, cap = r.header.hash_seed, r.header.hash_capacity
    data = bytearray((tmp_path / "s.spi").read_bytes())
    slot = mmh3.hash(b"key", seed, False) % cap
    h = (tmp_path / "t.spi").read_bytes()
    data[:112] = h[:112]  # the single-entry header (same log identifier below)
    data[12:16] = (tmp_path / "s.spl").read_bytes()[12:16]
    data[112:] = bytes(8 * cap)
    struct.pack_into("<II", data, 112 + slot * 8, mmh3.hash(b"key", seed, False), pos)
    (tmp_path / "s.spi").write_bytes(bytes(data))
    with (
        Reader(tmp_path / "s.spi", tmp_path / "s.spl") as r,
        pytest.raises(CorruptFileError, match=r"index points at a delete entry"),
    ):
        r.get(b"key")


def test_snappy_block_declaring_too_much_is_refused_before_inflating(tmp_path: Path) -> None:
    write_store(sample_pairs(50), tmp_path / "s.spl", compression="snappy", block_size=512)
    log = tmp_path / "s.spl"
    data = bytearray(log.read_bytes())
    start = 84 + (1 if data[84] < 0x80 else 2)  # the first block's snappy preamble
    size = data[84] if data[84] < 0x80 else (data[84] & 0x7F) | (data[85] << 7)
    assert size >= 5
    data[start : start + 5] = b"\xff\xff\xff\xff\x0f"  # declares 4 GiB
    log.write_bytes(bytes(data))
    with Reader(tmp_path / "s.spi") as r, pytest.raises(CorruptFileError, match=r"s\.spl at offset 84"):
        for k, _ in sample_pairs(50):
            r.get(k)


def test_function_zips_ship_no_compiled_extension() -> None:
    """Cloud Functions build zips from source: a ``.so`` built here must not ride along (the
    pure-Python reader serves there)."""
    from backbeat.stack.manifest import load_manifest
    from backbeat.stack.packaging import library_dir, zip_entries

    manifest = load_manifest(
        Path(__file__).resolve().parents[2] / "tests" / "e2e" / "fixtures" / "manifest.yaml"
    )
    names = [name for name, _ in zip_entries(manifest, "recorder")]
    assert "backbeat/kvstore/reader.py" in names
    assert any(p.name.endswith(".so") for p in (library_dir() / "kvstore").iterdir())  # not vacuous
    assert [n for n in names if n.endswith(".so")] == []
