"""The reader: memory-mapped hash lookups, batched lookups, iteration.

Both files are mapped read-only and shared, so any number of reader processes on one store keep a
single copy of its pages in memory. A :class:`Reader` may be used by many threads at once: its
state is read-only except a per-thread decompression context and a small per-thread block cache.
Every offset read from a file is bounds-checked first, so a damaged file raises
:class:`~backbeat.kvstore.errors.CorruptFileError` (file and offset) instead of a wrong value.

Lookups run in the C extension ``backbeat.kvstore._fastget`` when it is built (one C call per
``get``; ``get_many`` in one call); otherwise, or with ``BACKBEAT_KVSTORE_PURE=1``, in the pure-Python
closures below, which give the same answers and the same errors.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import itemgetter
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
        self._slot = struct.Struct(
            "<" + {4: "I", 8: "Q"}[h.hash_size] + {4: "I", 8: "Q"}[h.address_size]
        ).unpack_from
        self._lm = self._log.mm
        self._end = self._log.data_end
        self._compressed = self._log.compressed
        self._local = threading.local()
        self._closed = False
        import mmh3

        self._h32 = mmh3.hash
        self._h64 = mmh3.hash64
        if self.header.max_displacement >= self._cap:
            raise CorruptFileError(
                self.index_path, 84, f"max displacement {self.header.max_displacement} >= capacity"
            )
        self.get = self._make_get()  # type: ignore[method-assign]
        self._fast = self._make_fast()
        if self._fast is not None:
            self.get = self._fast.get  # type: ignore[method-assign]

    @property
    def accelerated(self) -> bool:
        """True when lookups run in the C extension ``backbeat.kvstore._fastget``."""
        return self._fast is not None

    def _make_fast(self) -> Any:
        """The C lookup table over both mappings, or None (extension not built, or
        ``BACKBEAT_KVSTORE_PURE=1``): then the pure-Python closures below serve."""
        if os.environ.get("BACKBEAT_KVSTORE_PURE", "") not in ("", "0"):
            return None
        fastget = _fastget()
        if fastget is None:
            return None
        h = self.header
        tl = self._local
        new_local = self._thread_local
        log = self._log
        lm = self._lm
        log_path = self.log_path
        block_size = log.block_size
        name = log.codec.name
        ctype = log.header.compression_type

        def block_for(pos: int, start: int, stop: int) -> bytes:
            """Decompress the block at ``pos`` (compressed bytes ``[start, stop)``, bounds checked
            in C) with this thread's context (zstd contexts are not thread-safe). The C table
            keeps the last blocks; snappy blocks it decompresses itself (stateless)."""
            try:
                local = tl.v
            except AttributeError:
                local = new_local()
            try:
                data = local.decompress(lm[start:stop])
            except Exception as exc:
                raise CorruptFileError(log_path, pos, f"corrupt {name} block: {exc}") from None
            if len(data) > block_size:
                raise CorruptFileError(
                    log_path,
                    pos,
                    f"bad block length: block inflates to {len(data)} > block size {block_size}",
                )
            return data

        snappy = log.codec.unchecked_decompressor() if ctype == 1 else None  # type: ignore[attr-defined]

        return fastget.Table(
            self._im,
            self._lm,
            h.hash_capacity,
            h.hash_size,
            h.address_size,
            h.hash_seed,
            h.max_displacement,
            self._end,
            h.entry_block_bits,
            ctype,
            block_size,
            _error_raiser(self.index_path, self.log_path, self._end),
            as_bytes,
            block_for,
            self._value_slow,
            snappy,
        )

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
        """Build the lookup as a closure over locals (no attribute lookups on the hot path).

        Every key sits within ``max_displacement`` slots of its home slot (the header records
        the largest displacement), so instead of stepping slot by slot in Python the lookup asks
        ``mmap.find`` for the key's hash bytes in that window and checks slot alignment. A match
        is then confirmed against the key stored in the log, so a damaged index can make a key
        look absent but never return another key's value. Unusual cases (window wrapping past
        the end of the table, long keys, multi-byte lengths) use the general Sparkey probe."""
        import mmh3

        h = self.header
        ss = h.slot_size
        hsize = h.hash_size
        base = HASH_HEADER_SIZE
        window = (h.max_displacement + 1) * ss
        limit = base + h.hash_capacity * ss
        im, lm, cap, seed, end = self._im, self._lm, self._cap, self._seed, self._end
        find = im.find
        addr_at = struct.Struct("<" + {4: "I", 8: "Q"}[h.address_size]).unpack_from
        slow = self._probe
        slot_at = self._slot
        pair = struct.Struct("<BB").unpack_from
        h32 = mmh3.hash
        h64 = mmh3.hash64
        compressed = self._compressed
        value_compressed = self._value_compressed = self._make_value_compressed()
        value_slow = self._value_slow
        mask64 = 0xFFFFFFFFFFFFFFFF
        first = LOG_HEADER_SIZE
        end1 = end - 1

        def get(key: bytes | str) -> bytes | None:
            try:
                if key.__class__ is not bytes:
                    key = as_bytes(key)
                if hsize == 4:
                    hv = h32(key, seed, False)
                else:
                    hv = h64(key, seed, True, False)[0] & mask64
                start = base + (hv % cap) * ss
                stop = start + window
                if stop > limit:
                    return slow(key, hv)
                h2, addr = slot_at(im, start)
                if h2 == hv and not compressed and first <= addr < end1:
                    # the common case: the key sits in its home slot, one-byte lengths
                    kl = len(key)
                    a, b = pair(lm, addr)
                    if a == kl + 1 and b < 128:
                        s = addr + 1 + a
                        if lm[addr + 2 : s] == key and s + b <= end:
                            return lm[s : s + b]
                hb = hv.to_bytes(hsize, "little")
                p = find(hb, start, stop)
                while p >= 0:
                    if not (p - base) % ss:
                        (addr,) = addr_at(im, p + hsize)
                        if compressed:
                            value = value_compressed(addr, key) if addr else None
                        elif first <= addr < end1:
                            kl = len(key)
                            a, b = pair(lm, addr)
                            if a == kl + 1 and b < 128:
                                s = addr + 1 + a
                                if lm[addr + 2 : s] != key:
                                    value = None
                                elif s + b <= end:
                                    return lm[s : s + b]
                                else:
                                    value = value_slow(addr, key)  # raises: the entry is cut off
                            else:
                                value = value_slow(addr, key)
                        elif addr:
                            raise CorruptFileError(
                                self.index_path, p, f"slot points to {addr}, outside {self.log_path}"
                            )
                        else:
                            value = None
                        if value is not None:
                            return value
                    p = find(hb, p + 1, stop)
                return None
            except ValueError:
                if self._closed:  # the mmaps were closed under a kept reference to this method
                    raise StoreClosedError(f"reader of {self.index_path} is closed") from None
                raise

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
                elif not LOG_HEADER_SIZE <= addr < self._end - 1:  # the fast path's wording too
                    raise CorruptFileError(
                        self.index_path, HASH_HEADER_SIZE + slot * ss,
                        f"slot points to {addr}, outside {self.log_path}")
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
            raise CorruptFileError(
                self.index_path, None, f"index points at a delete entry ({self.log_path} @ {addr})"
            )
        return value if key2 == key else None

    def _thread_local(self) -> _Local:
        local = self._local.__dict__.get("v")
        if local is None:
            local = self._local.v = _Local(self._log)
        return local

    def _make_value_compressed(self) -> Any:
        """The compressed-entry fetch as a closure: per-thread decompression context and block
        cache, then a walk over the (never spanning) entries that precede ours in the block."""
        tl = self._local
        log = self._log
        read_block = log.read_block
        bits = self._bits
        mask = self._mask
        value_slow = self._value_slow
        new_local = self._thread_local

        def value_compressed(addr: int, key: bytes) -> bytes | None:
            try:
                local = tl.v
            except AttributeError:
                local = new_local()
            cache = local.cache
            pos = addr >> bits
            hit = cache.get(pos)
            if hit is None:
                hit = read_block(pos, local.decompress)
                if len(cache) >= _BLOCK_CACHE:
                    del cache[next(iter(cache))]
                cache[pos] = hit
            block = hit[0]
            n = addr & mask
            p = 0
            try:
                for _ in range(n):  # skip the entries before ours (none of them spans a block)
                    a = block[p]
                    b = block[p + 1]
                    if (a | b) & 0x80:
                        return value_slow(addr, key)
                    p += (a or 1) + b + 1
                a = block[p]
                b = block[p + 1]
            except IndexError:
                return value_slow(addr, key)
            if a > 1 and not (a | b) & 0x80:
                kend = p + 1 + a
                if kend + b <= len(block):
                    if a - 1 != len(key) or block[p + 2 : kend] != key:
                        return None
                    return block[kend : kend + b]
            return value_slow(addr, key)

        return value_compressed

    def get_many(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        """Values of many keys at once (None where missing), in the order given.

        Hashes are computed in one ``map``; all probe sequences advance together as numpy arrays;
        without compression the entry headers and keys are checked with numpy too, leaving one
        slice per found value in Python. Compressed stores are read in address order so each
        block is decompressed once. Anything unusual falls back to :meth:`get`."""
        import numpy as np

        if self._closed:
            raise StoreClosedError(f"reader of {self.index_path} is closed")
        keys = keys if isinstance(keys, list) else list(keys)
        if self._fast is not None:
            return self._fast.get_many(keys)
        try:
            joined = b"".join(keys)  # also proves every key is bytes-like, in one C loop
        except TypeError:
            keys = [k if k.__class__ is bytes else as_bytes(k) for k in keys]
            joined = b"".join(keys)
        n = len(keys)
        if not n:
            return []
        seed = self._seed
        if self._hsize == 4:
            hashes = np.array(list(map(self._h32, keys, repeat(seed), repeat(False))), dtype=np.uint64)
        else:
            pairs = map(self._h64, keys, repeat(seed), repeat(True), repeat(False))
            hashes = np.array([p[0] & 0xFFFFFFFFFFFFFFFF for p in pairs], dtype=np.uint64)
        table = self._table()
        th_all = table["h"]
        ta_all = table["a"]
        cap = self._cap
        ucap = np.uint64(cap)
        slot = (hashes % ucap).astype(np.int64)
        found = np.zeros(n, dtype=np.int64)  # address of the first candidate, 0 = none
        active = np.arange(n)
        d = 0
        while len(active):
            s = slot[active]
            th = th_all[s].astype(np.uint64)
            ta = ta_all[s].astype(np.int64)
            hit = (ta != 0) & (th == hashes[active])
            found[active[hit]] = ta[hit]
            other = (s - (th % ucap).astype(np.int64)) % cap
            active = active[(~hit) & (ta != 0) & (other >= d)]
            slot[active] += 1
            slot[active[slot[active] == cap]] = 0
            d += 1
        out: list[bytes | None] = [None] * n
        get = self.get
        idx = np.nonzero(found)[0]
        if self._compressed:
            value_compressed = self._value_compressed
            for i in idx[np.argsort(found[idx], kind="stable")].tolist():
                key = keys[i]
                value = value_compressed(int(found[i]), key)
                out[i] = value if value is not None else get(key)
            return out
        end = self._end
        ad = found[idx]
        inside = (ad >= LOG_HEADER_SIZE) & (ad < end - 1)
        good_idx = idx[inside]
        ad = ad[inside]
        log = self._np_log()
        a = log[ad].astype(np.int64)
        b = log[ad + 1].astype(np.int64)
        lens = np.fromiter(map(len, keys), dtype=np.int64, count=n)[good_idx]
        start = ad + 1 + a
        stop = start + b
        ok = (a == lens + 1) & (a > 1) & (a < 128) & (b < 128) & (stop <= end)
        ok_idx = good_idx[ok]
        out_arr = np.empty(n, dtype=object)
        rest: list[int] = []
        if len(ok_idx):
            picked = ok_idx.tolist()
            chosen = (
                keys
                if len(picked) == n
                else list(itemgetter(*picked)(keys))
                if len(picked) > 1
                else [keys[picked[0]]]
            )
            width = int(lens[ok].max())
            if width == int(lens[ok].min()):  # one key length: compare every key in one go
                stored = log[(ad[ok] + 2)[:, None] + np.arange(width)]
                wanted = np.frombuffer(joined if chosen is keys else b"".join(chosen), dtype=np.uint8)
                wanted = wanted.reshape(-1, width)
                same = (stored == wanted).all(axis=1)
            else:
                lm = self._lm
                slices = map(slice, (ad[ok] + 2).tolist(), start[ok].tolist())
                same = np.fromiter(
                    map(bytes.__eq__, map(lm.__getitem__, slices), chosen), dtype=bool, count=len(chosen)
                )
            lm = self._lm
            starts = start[ok][same]
            order = np.argsort(starts, kind="stable")  # slice in file order: far fewer cache misses
            values = list(
                map(lm.__getitem__, map(slice, starts[order].tolist(), stop[ok][same][order].tolist()))
            )
            out_arr[ok_idx[same][order]] = values
            rest = ok_idx[~same].tolist()
        out: list[bytes | None] = out_arr.tolist()
        for i in rest + good_idx[~ok].tolist() + idx[~inside].tolist():
            out[i] = get(keys[i])
        return out

    def _np_log(self) -> Any:
        arr = self.__dict__.get("_np_log_view")
        if arr is None:
            import numpy as np

            arr = self._np_log_view = np.frombuffer(self._lm, dtype=np.uint8, count=self._end)
        return arr

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
        self._check_open()
        for kind, key, value, _pos, _n in self._log.entries():
            yield ("put" if kind else "delete"), key, value

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Live ``(key, value)`` pairs in log order: the puts the index points to."""
        import numpy as np

        self._check_open()
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
        if self._fast is not None:
            self._fast.release()  # the C table holds buffer exports of both mappings
        self.__dict__.pop("_np_table", None)
        self.__dict__.pop("_np_log_view", None)
        for m in (self._im, self._lm):
            try:
                m.close()
            except BufferError:  # a numpy view is still alive somewhere; GC unmaps it later
                pass
        self.get = self._closed_get  # type: ignore[method-assign]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"reader of {self.index_path} is closed")

    def _closed_get(self, key: Any) -> bytes | None:
        raise StoreClosedError(f"reader of {self.index_path} is closed")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader({str(self.index_path)!r}, {str(self.log_path)!r}, entries={self.header.num_entries})"


_FASTGET: list[Any] = []


def _fastget() -> Any:
    """The C extension module, or None when it is not built (loaded once per process)."""
    if not _FASTGET:
        try:
            from backbeat.kvstore import _fastget as module  # type: ignore[attr-defined]
        except ImportError:
            module = None
        _FASTGET.append(module)
    return _FASTGET[0]


def _error_raiser(index_path: Path, log_path: Path, end: int) -> Any:
    """Turn the C lookup's error codes into the typed errors the Python path raises (no reference
    to the reader, so the C table does not keep it alive)."""

    def on_error(code: int, offset: int, addr: int) -> None:
        if code == 1:
            raise CorruptFileError(index_path, offset, f"slot points to {addr}, outside {log_path}")
        if code == 2:
            raise TruncatedFileError(log_path, addr, f"entry runs past the data end of {log_path}")
        if code == 3:
            raise TruncatedFileError(log_path, offset, "entry header cut off")
        if code == 4:
            raise CorruptFileError(log_path, offset, "length varint longer than 10 bytes")
        if code == 5:
            raise CorruptFileError(index_path, None, f"index points at a delete entry ({log_path} @ {addr})")
        if code == 6:
            raise StoreClosedError(f"reader of {index_path} is closed")
        if code == 7:
            raise CorruptFileError(log_path, offset, f"block offset outside the data (ends at {end})")
        if code == 8:
            raise CorruptFileError(log_path, offset, f"bad block length {addr} (data ends at {end})")
        if code == 9:
            raise CorruptFileError(log_path, offset, f"corrupt snappy block: declares {addr} bytes")
        if code == 10:
            raise CorruptFileError(log_path, offset, "corrupt snappy block: it does not decompress")
        if code == 11:
            raise CorruptFileError(log_path, offset, f"bad block length: block inflates to {addr} bytes")
        raise CorruptFileError(index_path, offset, f"lookup failed with code {code}")  # pragma: no cover

    return on_error


def _log_path_for(index_path: Path) -> Path:
    return (
        index_path.with_suffix(".spl")
        if index_path.suffix == ".spi"
        else index_path.with_name(index_path.name + ".spl")
    )


__all__ = ["Reader", "BlockCursor", "default_index_path"]
