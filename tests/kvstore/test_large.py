"""64-bit offsets: a sparse log whose data runs past 4 GiB (a hole, not 4 GiB of writes)."""

from __future__ import annotations

from pathlib import Path

from backbeat.kvstore import Reader, build_index
from backbeat.kvstore.format import LOG_HEADER_SIZE, LogHeader, vlq

HOLE = (1 << 32) + 12345  # the first value is this long: a sparse run of zero bytes


def _sparse_log(path: Path) -> tuple[int, int]:
    """put(b"hole", <HOLE zero bytes>), put(b"far", b"beyond 4 GiB"), delete(b"gone"), put(b"gone"...)."""
    first = vlq(len(b"hole") + 1) + vlq(HOLE) + b"hole"
    far_entry = vlq(4) + vlq(12) + b"far" + b"beyond 4 GiB"
    tail = vlq(5) + vlq(1) + b"gone" + b"x" + b"\x00" + vlq(4) + b"gone" + vlq(5) + vlq(4) + b"last" + b"ok!!"
    far_at = LOG_HEADER_SIZE + len(first) + HOLE
    end = far_at + len(far_entry) + len(tail)
    header = LogHeader(
        file_identifier=0x5A5A5A5A,
        num_puts=4,
        num_deletes=1,
        data_end=end,
        max_key_len=4,
        max_value_len=HOLE,
        put_size=end - LOG_HEADER_SIZE - 6,
        delete_size=6,
    )
    with open(path, "wb") as fh:
        fh.write(header.pack())
        fh.write(first)
        fh.seek(far_at)  # leaves a hole: nothing is written for the 4 GiB value
        fh.write(far_entry + tail)
    return far_at, end


def test_sparse_log_beyond_4_gib(tmp_path: Path) -> None:
    log = tmp_path / "big.spl"
    far_at, end = _sparse_log(log)
    assert log.stat().st_size == end > 1 << 32
    assert log.stat().st_blocks * 512 < 1 << 20  # really sparse
    for method in ("exact", "fast"):
        header = build_index(log, tmp_path / "big.spi", seed=42, method=method)
        assert header.address_size == 8 and header.num_entries == 3
        with Reader(tmp_path / "big.spi", log) as r:
            assert r.get(b"far") == b"beyond 4 GiB"
            assert r.get(b"last") == b"ok!!"
            assert r.get(b"gone") is None and len(r) == 3
            assert r.get_many([b"last", b"far", b"gone"]) == [b"ok!!", b"beyond 4 GiB", None]
            kinds = [(kind, key) for kind, key, _ in _entries_without_values(r)]
            assert kinds == [
                ("put", b"hole"),
                ("put", b"far"),
                ("put", b"gone"),
                ("delete", b"gone"),
                ("put", b"last"),
            ]
            slot_addresses = r._table()["a"]
            assert int(slot_addresses.max()) == end - 10  # the entry of b"last", past 4 GiB


def _entries_without_values(r: Reader):  # noqa: ANN202 - walk headers only (values would be 4 GiB)
    from backbeat.kvstore.format import read_vlq

    mm, pos, end = r._lm, LOG_HEADER_SIZE, r._end
    while pos < end:
        a, pos = read_vlq(mm, pos, end, "log")
        b, pos = read_vlq(mm, pos, end, "log")
        klen = a - 1 if a else b
        yield ("put" if a else "delete"), mm[pos : pos + klen], None
        pos += klen + (b if a else 0)
