"""Damaged, truncated and mismatched files raise typed errors naming the file and the offset."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from backbeat.kvstore import (
    CorruptFileError,
    FileMismatchError,
    KvStoreError,
    Reader,
    TruncatedFileError,
    write_store,
)
from backbeat.kvstore.verify import verify_store
from tests.kvstore.conftest import sample_pairs


@pytest.fixture
def store(tmp_path: Path) -> Path:
    write_store(sample_pairs(200), tmp_path / "s.spl")
    return tmp_path / "s.spl"


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_wrong_magic_in_the_log(store: Path) -> None:
    _patch(store, 0, b"\0\0\0\0")
    with pytest.raises(CorruptFileError, match=r"s\.spl at offset 0: wrong magic number") as err:
        Reader(store.with_suffix(".spi"))
    assert err.value.path == str(store) and err.value.offset == 0


def test_wrong_magic_in_the_index(store: Path) -> None:
    _patch(store.with_suffix(".spi"), 0, b"SPKY")
    with pytest.raises(
        CorruptFileError, match=r"s\.spi at offset 0: wrong magic number .* not a Sparkey index"
    ):
        Reader(store.with_suffix(".spi"))


def test_index_of_another_log_is_refused(store: Path, tmp_path: Path) -> None:
    write_store(sample_pairs(200), tmp_path / "other.spl")  # same data, new file identifier
    with pytest.raises(FileMismatchError, match=r"s\.spi at offset 12: index belongs to another log") as err:
        Reader(store.with_suffix(".spi"), tmp_path / "other.spl")
    assert "other.spl" in str(err.value)


def test_truncated_log(store: Path) -> None:
    size = store.stat().st_size
    with open(store, "r+b") as fh:
        fh.truncate(size - 10)
    with pytest.raises(
        TruncatedFileError, match=rf"s\.spl at offset {size - 10}: header says data ends at {size}"
    ):
        Reader(store.with_suffix(".spi"))


def test_truncated_index(store: Path) -> None:
    spi = store.with_suffix(".spi")
    with open(spi, "r+b") as fh:
        fh.truncate(spi.stat().st_size - 1)
    with pytest.raises(TruncatedFileError, match=r"s\.spi at offset \d+: index needs \d+ bytes"):
        Reader(spi)
    with open(spi, "r+b") as fh:
        fh.truncate(50)
    with pytest.raises(TruncatedFileError, match=r"index header needs 112 bytes"):
        Reader(spi)


def test_cut_off_entry(tmp_path: Path) -> None:
    """The last entry claims more bytes than the log holds: iteration and lookup both say so."""
    write_store([(b"a", b"1"), (b"b", b"22"), (b"last", b"333")], tmp_path / "s.spl")
    log = tmp_path / "s.spl"
    last = log.stat().st_size - (2 + 4 + 3)
    _patch(log, last + 1, bytes([90]))  # value length 3 -> 90
    with Reader(tmp_path / "s.spi") as r:
        with pytest.raises(
            TruncatedFileError, match=rf"s\.spl at offset {last}: entry of 94 bytes runs past"
        ):
            list(r.log_entries())
        with pytest.raises(TruncatedFileError, match=rf"s\.spl at offset {last}"):
            r.get(b"last")
        assert r.get(b"a") == b"1"


def test_bad_block_length(tmp_path: Path) -> None:
    write_store(sample_pairs(300), tmp_path / "s.spl", compression="snappy", block_size=512)
    log = tmp_path / "s.spl"
    _patch(log, 84, b"\xff\xff\xff\x0f")  # first block claims ~32 MB
    with Reader(tmp_path / "s.spi") as r:
        with pytest.raises(CorruptFileError, match=r"s\.spl at offset 84: bad block length \d+"):
            list(r.log_entries())
        with pytest.raises(CorruptFileError, match=r"s\.spl at offset 84"):
            for k, _ in sample_pairs(300):
                r.get(k)


def test_corrupt_compressed_block(tmp_path: Path) -> None:
    for compression in ("snappy", "zstd"):
        write_store(sample_pairs(300), tmp_path / "s.spl", compression=compression, block_size=512)
        log = tmp_path / "s.spl"
        _patch(log, 90, b"\xee" * 40)
        with (
            Reader(tmp_path / "s.spi") as r,
            pytest.raises(CorruptFileError, match=rf"offset 84: corrupt {compression}"),
        ):
            list(r.log_entries())


def test_index_slot_pointing_outside_the_log(store: Path) -> None:
    spi = store.with_suffix(".spi")
    with Reader(spi) as r:
        cap, key = r.header.hash_capacity, sample_pairs(1)[0][0]
    data = bytearray(spi.read_bytes())
    for slot in range(cap):  # every occupied slot now points far past the data
        off = 112 + slot * 8
        if struct.unpack_from("<I", data, off + 4)[0]:
            struct.pack_into("<I", data, off + 4, 0x7FFFFFF0)
    spi.write_bytes(bytes(data))
    with (
        Reader(spi) as r,
        pytest.raises(CorruptFileError, match=r"s\.spi at offset \d+: slot points to 2147483632"),
    ):
        r.get(key)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(KvStoreError, match="no such log file"):
        Reader(tmp_path / "nope.spi")
    (tmp_path / "e.spl").write_bytes(b"")
    (tmp_path / "e.spi").write_bytes(b"")
    with pytest.raises(TruncatedFileError, match=r"e\.spl at offset 0: empty file"):
        Reader(tmp_path / "e.spi")


def test_verify_finds_a_damaged_index(store: Path, tmp_path: Path) -> None:
    assert verify_store(store.with_suffix(".spi"))["entries"] == 200
    spi = store.with_suffix(".spi")
    data = bytearray(spi.read_bytes())
    off = next(112 + s * 8 for s in range(10_000) if struct.unpack_from("<I", data, 112 + s * 8 + 4)[0])
    struct.pack_into("<I", data, off, struct.unpack_from("<I", data, off)[0] ^ 0xFFFF)  # damage one hash
    spi.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"s\.spi"):
        verify_store(spi)


def test_cli_prints_one_line_and_exits_1(store: Path) -> None:
    broken = store.parent / "broken.spl"
    shutil.copy(store, broken)
    shutil.copy(store.with_suffix(".spi"), broken.with_suffix(".spi"))
    _patch(broken, 0, b"XXXX")
    out = subprocess.run(
        [sys.executable, "-m", "backbeat.cli", "kv", "verify", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: {broken} at offset 0: wrong magic number 0x58585858: not a Sparkey log (.spl) file"
    ]
