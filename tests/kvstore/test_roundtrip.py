"""Writer and Reader behaviour: every option, every access path, against a Python dict."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from backbeat.kvstore import KvStoreError, Reader, StoreClosedError, Writer, build_index, write_store
from tests.kvstore.conftest import sample_pairs


def _model(ops: list[tuple[str, bytes, bytes | None]]) -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    for kind, k, v in ops:
        if kind == "put":
            model[k] = v  # type: ignore[assignment]
        else:
            model.pop(k, None)
    return model


def _ops(n: int, seed: int) -> list[tuple[str, bytes, bytes | None]]:
    rnd = random.Random(seed)
    pairs = sample_pairs(n, seed)
    ops: list[tuple[str, bytes, bytes | None]] = []
    for k, v in pairs:
        ops.append(("put", k, v))
        r = rnd.random()
        if r < 0.15:
            ops.append(("delete", rnd.choice(pairs)[0], None))
        elif r < 0.3:
            ops.append(("put", rnd.choice(pairs)[0], rnd.randbytes(rnd.randrange(0, 200))))
    ops.append(("delete", b"never written", None))
    return ops


@pytest.mark.parametrize(
    ("compression", "block_size", "hash_size"),
    [("none", 0, 0), ("none", 0, 8), ("snappy", 0, 4), ("snappy", 64, 0), ("zstd", 300, 8), ("zstd", 0, 0)],
)
def test_puts_deletes_and_overwrites_match_a_dict(
    tmp_path: Path, compression: str, block_size: int, hash_size: int
) -> None:
    ops = _ops(1500, seed=hash((compression, block_size, hash_size)) & 0xFFFF)
    model = _model(ops)
    log = tmp_path / "s.spl"
    with Writer(log, compression=compression, block_size=block_size) as w:
        for kind, k, v in ops:
            w.put(k, v) if kind == "put" else w.delete(k)  # type: ignore[arg-type]
    header = build_index(log, tmp_path / "s.spi", hash_size=hash_size)
    assert header.hash_size == (hash_size or 4)
    with Reader(tmp_path / "s.spi", log) as r:
        assert len(r) == len(model)
        assert dict(r.items()) == model
        assert [(k, key, val) for k, key, val in r.log_entries()] == ops
        keys = list(model) + [b"absent-%d" % i for i in range(50)]
        assert r.get_many(keys) == [model.get(k) for k in keys]
        assert all(r.get(k) == model.get(k) for k in keys)


def test_values_larger_than_a_block_span_blocks(tmp_path: Path) -> None:
    pairs = [(b"big%d" % i, bytes([i]) * (5000 + i)) for i in range(20)] + [
        (b"small", b"x"),
        (b"", b"empty key"),
    ]
    for compression in ("snappy", "zstd"):
        write_store(pairs, tmp_path / f"{compression}.spl", compression=compression, block_size=1024)
        with Reader(tmp_path / f"{compression}.spi") as r:
            assert dict(r.items()) == dict(pairs)
            assert r.get_many([k for k, _ in pairs]) == [v for _, v in pairs]


def test_str_keys_and_values_are_utf8(tmp_path: Path) -> None:
    with Writer(tmp_path / "s.spl") as w:
        w.put("clé", "välue")
        w.put(b"raw", b"")
    build_index(tmp_path / "s.spl", tmp_path / "s.spi")
    with Reader(tmp_path / "s.spi") as r:
        assert r["clé"] == "välue".encode() and r.get("clé".encode()) == "välue".encode()
        assert r.get("raw") == b"" and "raw" in r and "nope" not in r
        with pytest.raises(KvStoreError, match="key must be bytes or str"):
            r.get(42)  # type: ignore[arg-type]


def test_append_mode_continues_a_log_and_keeps_its_identifier(tmp_path: Path) -> None:
    log = tmp_path / "s.spl"
    for compression in ("none", "snappy"):
        with Writer(log, compression=compression, block_size=100) as w:
            w.put(b"a", b"1")
            w.put(b"b", b"2")
            ident = w.file_identifier
        with Writer(log, append=True) as w:
            assert w.file_identifier == ident
            w.delete(b"a")
            w.put(b"c", b"3" * 300)
        build_index(log, tmp_path / "s.spi")
        with Reader(tmp_path / "s.spi") as r:
            assert dict(r.items()) == {b"b": b"2", b"c": b"3" * 300}
            assert [e[0] for e in r.log_entries()] == ["put", "put", "delete", "put"]


def test_flush_makes_entries_visible_before_close(tmp_path: Path) -> None:
    log = tmp_path / "s.spl"
    w = Writer(log, compression="snappy", block_size=4096)
    w.put(b"k1", b"v1")
    w.flush()
    build_index(log, tmp_path / "s.spi")
    with Reader(tmp_path / "s.spi") as r:
        assert r.get(b"k1") == b"v1"
    w.put(b"k2", b"v2")
    w.close()
    w.close()  # idempotent
    with pytest.raises(StoreClosedError):
        w.put(b"k3", b"v3")
    build_index(log, tmp_path / "s.spi")
    with Reader(tmp_path / "s.spi") as r:
        assert r.get(b"k2") == b"v2"


def test_bad_writer_arguments_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(KvStoreError, match="compression must be one of"):
        Writer(tmp_path / "x.spl", compression="lz4")
    with pytest.raises(KvStoreError, match="at least 10 bytes"):
        Writer(tmp_path / "x.spl", compression="snappy", block_size=5)
    write_store([(b"a", b"b")], tmp_path / "y.spl")
    with pytest.raises(KvStoreError, match="hash_size must be"):
        build_index(tmp_path / "y.spl", tmp_path / "y.spi", hash_size=6)
    with pytest.raises(KvStoreError, match="method must be"):
        build_index(tmp_path / "y.spl", tmp_path / "y.spi", method="quick")


def test_closed_reader_raises_a_typed_error(tmp_path: Path) -> None:
    write_store({b"a": b"1"}, tmp_path / "s.spl")
    r = Reader(tmp_path / "s.spi")
    r.close()
    r.close()
    with pytest.raises(StoreClosedError):
        r.get(b"a")
    with pytest.raises(StoreClosedError):
        r.get_many([b"a"])
    with pytest.raises(StoreClosedError):
        list(r.items())
    with pytest.raises(StoreClosedError):
        list(r.log_entries())


def _colliding_keys() -> tuple[bytes, bytes, int]:
    """Two distinct keys with the same 32-bit MurmurHash3 for some seed (birthday search)."""
    import mmh3

    seed = 1234
    seen: dict[int, bytes] = {}
    i = 0
    while True:
        k = b"c%d" % i
        h = mmh3.hash(k, seed, False)
        if h in seen:
            return seen[h], k, seed
        seen[h] = k
        i += 1


def test_hash_collisions_are_resolved_by_comparing_keys(tmp_path: Path) -> None:
    k1, k2, seed = _colliding_keys()
    pairs = sample_pairs(3000) + [(k1, b"first"), (k2, b"second")]
    for method in ("exact", "fast"):
        write_store(pairs, tmp_path / f"{method}.spl", seed=seed, method=method, hash_size=4)
        with Reader(tmp_path / f"{method}.spi") as r:
            assert r.header.hash_collisions >= 0
            assert r.get(k1) == b"first" and r.get(k2) == b"second"
            assert r.get_many([k2, k1]) == [b"second", b"first"]
    with Writer(tmp_path / "d.spl") as w:
        w.put(k1, b"first")
        w.put(k2, b"second")
        w.delete(k1)
        w.put(k2, b"again")
    build_index(tmp_path / "d.spl", tmp_path / "d.spi", seed=seed)
    with Reader(tmp_path / "d.spi") as r:
        assert dict(r.items()) == {k2: b"again"} and r.get(k1) is None


def test_fast_and_exact_builders_agree_on_a_large_store(tmp_path: Path) -> None:
    pairs = [(b"key-%07d" % i, b"v%d" % i) for i in range(250_000)]
    header = write_store(pairs, tmp_path / "f.spl", method="fast", seed=99)
    build_index(tmp_path / "f.spl", tmp_path / "e.spi", seed=99, method="exact")
    with Reader(tmp_path / "f.spi") as fast, Reader(tmp_path / "e.spi", tmp_path / "f.spl") as exact:
        assert fast.header.max_displacement == exact.header.max_displacement
        assert fast.header.total_displacement == exact.header.total_displacement
        sample = [k for k, _ in pairs[::97]] + [b"missing"]
        model = dict(pairs)
        assert fast.get_many(sample) == exact.get_many(sample) == [model.get(k) for k in sample]
    assert header.num_entries == 250_000
    # the compiled fast builder replays the reference insertion order: the same bytes as exact
    assert (tmp_path / "f.spi").read_bytes() == (tmp_path / "e.spi").read_bytes()


def test_fast_builder_is_byte_identical_with_4_byte_hashes_and_collisions(tmp_path: Path) -> None:
    k1, k2, seed = _colliding_keys()
    pairs = sample_pairs(20_000) + [(k1, b"first"), (k2, b"second")]
    write_store(pairs, tmp_path / "f.spl", seed=seed, method="fast", hash_size=4)
    build_index(tmp_path / "f.spl", tmp_path / "e.spi", seed=seed, method="exact", hash_size=4)
    assert (tmp_path / "f.spi").read_bytes() == (tmp_path / "e.spi").read_bytes()


def test_write_store_replaces_files_atomically(tmp_path: Path) -> None:
    write_store({b"a": b"1"}, tmp_path / "s.spl")
    old = Reader(tmp_path / "s.spi")
    write_store({b"a": b"2"}, tmp_path / "s.spl")
    assert old.get(b"a") == b"1"  # the old mapping stays valid for its reader
    with Reader(tmp_path / "s.spi") as new:
        assert new.get(b"a") == b"2"
    old.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.spi", "s.spl"]
