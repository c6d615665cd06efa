"""The reader: memory-mapped hash lookups, batched lookups, iteration.

Both files are mapped read-only and shared, so any number of reader processes on one store keep a
single copy of its pages in memory. A :class:`Reader` may be used by many threads at once: its
state is read-only except a per-thread decompression context and a small per-thread block cache.
Every offset read from a file is bounds-checked first, so a damaged file raises
:class:`~backbeat.kvstore.errors.CorruptFileError` (file and offset) instead of a wrong value.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from backbeat.kvstore.errors import CorruptFileError, KvStoreError, StoreClosedError, TruncatedFileError
from backbeat.kvstore.format import HASH_HEADER_SIZE, LOG_HEADER_SIZE, HashHeader, default_index_path
from backbeat.kvstore.log import BlockCursor, LogFile, as_bytes

_BLOCK_CACHE = 8  # decompressed blocks kept per thread


class _Local(threading.local):
    def __init__(self, log: LogFile) -> None:
        self.decompress = log.codec.decompressor(log.block_size)
        self.cache: dict[int, tuple[bytes, int]] = {}


class Reader:
    """``Reader(index_path, log_path)``: ``get``, ``[]``, ``in``, ``len``, ``items()``,
    ``log_entries()``, ``get_many()``, ``close()``; also a context manager.

    ``log_path`` defaults to the index path with ``.spl``. Keys may be bytes or str (UTF-8).
    """

    def __init__(self, index_path: str | Path, log_path: str | Path | None = None) -> None:
        self.index_path = Path(index_path)
        self.log_path = Path(log_path) if log_path is not None else _log_path_for(self.index_path)
        self._log = LogFile(self.log_path)
        try:
            self._open_index()
        except BaseException:
            self._log.close()
            raise
        h = self.header
        self._seed = h.hash_seed
        self._cap = h.hash_capacity
        self._ss = h.slot_size
        self._hsize = h.hash_size
        self._bits = h.entry_block_bits
        self._mask = (1 << h.entry_block_bits) - 1
        self._slot = struct.Struct("<" + {4: "I", 8: "Q"}[h.hash_size] + {4: "I", 8: "Q"}[h.address_size]).unpack_from
        self._lm = self._log.mm
        self._end = self._log.data_end
        self._compressed = self._log.compressed
        self._local = threading.local()
        self._closed = False
        import mmh3

        self._h32 = mmh3.hash
        self._h64 = mmh3.hash64
        if self.header.max_displacement >= self._cap:
            raise CorruptFileError(self.index_path, 84, f"max displacement {self.header.max_displacement} >= capacity")
        self.get = self._make_get()  # type: ignore[method-assign]

    def _open_index(self) -> None:
        try:
            fd = os.open(self.index_path, os.O_RDONLY)
        except FileNotFoundError:
            raise KvStoreError(f"{self.index_path}: no such index file") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise TruncatedFileError(self.index_path, 0, "empty file, not a Sparkey index")
            self._im = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.header = HashHeader.unpack(self._im[:HASH_HEADER_SIZE], self.index_path, size)
        self.header.check_log(self.index_path, self.log_path, self._log.header)

    # ------------------------------------------------------------------------------ lookups
    def get(self, key: bytes | str) -> bytes | None:  # replaced per instance by _make_get()
        """The value of ``key``, or None."""
        return self._make_get()(key)

    def _make_get(self) -> Any:
        """Build the lookup as a closure over locals: the hot path is one hash, one unpack of
        the 8 slots from the home slot, ``tuple.index`` for the hash, one unpack of the entry's
        two length bytes and two slices. Anything unusual (long keys, hash collisions, keys
        displaced 8 slots or more, multi-block entries) goes to the general Sparkey probe."""
        import mmh3

        h = self.header
        width = 8
        fmt = {4: "I", 8: "Q"}
        window = struct.Struct("<" + (fmt[h.hash_size] + fmt[h.address_size]) * width).unpack_from
        span = width * h.slot_size
        limit = HASH_HEADER_SIZE + h.hash_capacity * h.slot_size
        covers = h.max_displacement < width
        im, lm, cap, seed, end = self._im, self._lm, self._cap, self._seed, self._end
        slow = self._probe
        pair = struct.Struct("<BB").unpack_from
        h32 = mmh3.hash
        h64 = mmh3.hash64
        hsize = h.hash_size
        compressed = self._compressed
        value_compressed = self._value_compressed
        mask64 = 0xFFFFFFFFFFFFFFFF

        def get(key: bytes | str) -> bytes | None:
            if key.__class__ is not bytes:
                key = as_bytes(key)
            if hsize == 4:
                hv = h32(key, seed, False)
            else:
                hv = h64(key, seed, True, False)[0] & mask64
            off = HASH_HEADER_SIZE + (hv % cap) * (span // width)
            if off + span > limit:
                return slow(key, hv)
            t = window(im, off)
            try:
                i = t.index(hv)
            except ValueError:
                return None if covers else slow(key, hv)
            if i & 1:
                return slow(key, hv)
            addr = t[i + 1]
            if compressed:
                if addr:
                    value = value_compressed(addr, key)
                    if value is not None:
                        return value
                return slow(key, hv)
            kl = len(key)
            if LOG_HEADER_SIZE <= addr < end - 1 and kl < 127:
                a, b = pair(lm, addr)
                if a == kl + 1 and b < 128:
                    s = addr + 1 + a
                    if lm[addr + 2 : s] == key and s + b <= end:
                        return lm[s : s + b]
            return slow(key, hv)

        return get

    def _probe(self, key: bytes, h: int) -> bytes | None:
        """Sparkey's probe: from the home slot, stop at an empty slot or when our displacement
        exceeds the resident's (the Robin Hood invariant)."""
        if self._closed:
            raise StoreClosedError(f"reader of {self.index_path} is closed")
        cap = self._cap
        slot = h % cap
        unpack = self._slot
        im = self._im
        ss = self._ss
        d = 0
        for _ in range(cap):
            h2, addr = unpack(im, HASH_HEADER_SIZE + slot * ss)
            if addr == 0:
                return None
            if h2 == h:
                if self._compressed:
                    value = self._value_compressed(addr, key)
                else:
                    value = self._value_slow(addr, key)
                if value is not None:
                    return value
            other = (slot - h2 % cap) % cap
            if d > other:
                return None
            d += 1
            slot += 1
            if slot == cap:
                slot = 0
        return None

    def __getitem__(self, key: bytes | str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.header.num_entries

    def _value_slow(self, addr: int, key: bytes) -> bytes | None:
        local = self._thread_local()
        kind, key2, value = self._log.entry_at(addr, self._bits, local.decompress)
        if kind != 1:
            raise CorruptFileError(self.index_path, None, f"index points at a delete entry ({self.log_path} @ {addr})")
        return value if key2 == key else None

    def _thread_local(self) -> _Local:
        local = self._local.__dict__.get("v")
        if local is None:
            local = self._local.v = _Local(self._log)
        return local

    def _block(self, pos: int) -> tuple[bytes, int]:
        local = self._local.__dict__.get("v") or self._thread_local()
        cache = local.cache
        hit = cache.get(pos)
        if hit is None:
            hit = self._log.read_block(pos, local.decompress)
            if len(cache) >= _BLOCK_CACHE:
                del cache[next(iter(cache))]
            cache[pos] = hit
        return hit

    def _value_compressed(self, addr: int, key: bytes) -> bytes | None:
        block, nxt = self._block(addr >> self._bits)
        n = addr & self._mask
        p = 0
        blen = len(block)
        while n:  # skip the entries before ours (none of them spans a block)
            if p + 1 >= blen:
                return self._value_slow(addr, key)
            a = block[p]
            b = block[p + 1]
            if a < 128 and b < 128:
                p += 1 + a + b if a else 2 + b
            else:
                return self._value_slow(addr, key)
            n -= 1
        if p + 1 < blen:
            a = block[p]
            b = block[p + 1]
            if 1 < a < 128 and b < 128 and p + 1 + a + b <= blen:
                kend = p + 1 + a
                if a - 1 != len(key) or block[p + 2 : kend] != key:
                    return None
                return block[kend : kend + b]
        return self._value_slow(addr, key)

    def get_many(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        """Values of many keys at once (None where missing), in the order given.

        The hashes are computed in one pass, every probe sequence advances together as numpy
        arrays, and the values are sliced out in one pass; collisions and unusual entries fall
        back to :meth:`get`."""
        import numpy as np

        keys = [k if k.__class__ is bytes else as_bytes(k) for k in keys]
        if not keys:
            return []
        seed = self._seed
        if self._hsize == 4:
            h32 = self._h32
            hashes = np.fromiter((h32(k, seed, False) for k in keys), dtype=np.uint64, count=len(keys))
        else:
            h64 = self._h64
            hashes = np.fromiter((h64(k, seed, True, False)[0] & 0xFFFFFFFFFFFFFFFF for k in keys), dtype=np.uint64, count=len(keys))
        table = self._table()
        cap = self._cap
        ucap = np.uint64(cap)
        slot = (hashes % ucap).astype(np.int64)
        found = np.zeros(len(keys), dtype=np.uint64)  # address of the candidate, 0 = none
        active = np.arange(len(keys))
        d = 0
        while len(active):
            s = slot[active]
            th = table["h"][s].astype(np.uint64)
            ta = table["a"][s].astype(np.uint64)
            hit = (ta != 0) & (th == hashes[active])
            found[active[hit]] = ta[hit]
            other = (s - (th % ucap).astype(np.int64)) % cap
            keep = (~hit) & (ta != 0) & (other >= d)
            active = active[keep]
            slot[active] = slot[active] + 1
            slot[slot == cap] = 0
            d += 1
        out: list[bytes | None] = [None] * len(keys)
        addrs = found.tolist()
        get = self.get
        if self._compressed:
            for i, addr in enumerate(addrs):
                if addr:
                    out[i] = get(keys[i])
            return out
        lm = self._lm
        end = self._end
        for i, addr in enumerate(addrs):
            if addr:
                if LOG_HEADER_SIZE <= addr < end - 1:
                    a = lm[addr]
                    b = lm[addr + 1]
                    if 1 < a < 128 and b < 128 and addr + 1 + a + b <= end:
                        kend = addr + 1 + a
                        k = keys[i]
                        if a - 1 == len(k) and lm[addr + 2 : kend] == k:
                            out[i] = lm[kend : kend + b]
                            continue
                out[i] = get(keys[i])
        return out

    def _table(self) -> Any:
        table = self.__dict__.get("_np_table")
        if table is None:
            import numpy as np

            dtype = np.dtype([("h", f"<u{self._hsize}"), ("a", f"<u{self.header.address_size}")])
            table = np.frombuffer(self._im, dtype=dtype, count=self._cap, offset=HASH_HEADER_SIZE)
            self._np_table = table
        return table

    # ------------------------------------------------------------------------------ iteration
    def log_entries(self) -> Iterator[tuple[str, bytes, bytes | None]]:
        """Every entry of the log in write order: ``("put", key, value)`` or ``("delete", key, None)``."""
        for kind, key, value, _pos, _n in self._log.entries():
            yield ("put" if kind else "delete"), key, value

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Live ``(key, value)`` pairs in log order: the puts the index points to."""
        import numpy as np

        live = self._table()["a"]
        live = np.sort(live[live != 0].astype(np.uint64)).tolist()
        j = 0
        bits = self._bits
        for kind, key, value, pos, n in self._log.entries():
            if j >= len(live):
                break
            if kind and (pos << bits | n) == live[j]:
                j += 1
                yield key, value  # type: ignore[misc]

    def keys(self) -> Iterator[bytes]:
        for key, _ in self.items():
            yield key

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    # ------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Unmap both files. Safe to call twice; later lookups raise StoreClosedError."""
        if self._closed:
            return
        self._closed = True
        self.__dict__.pop("_np_table", None)
        for m in (self._im, self._lm):
            try:
                m.close()
            except BufferError:  # a numpy view is still alive somewhere; GC unmaps it later
                pass
        self.get = self._closed_get  # type: ignore[method-assign]

    def _closed_get(self, key: Any) -> bytes | None:
        raise StoreClosedError(f"reader of {self.index_path} is closed")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader({str(self.index_path)!r}, {str(self.log_path)!r}, entries={self.header.num_entries})"


def _log_path_for(index_path: Path) -> Path:
    return index_path.with_suffix(".spl") if index_path.suffix == ".spi" else index_path.with_name(index_path.name + ".spl")


__all__ = ["Reader", "BlockCursor", "default_index_path"]
