"""The Sparkey log (``.spl``): the writer and a random-access/sequential entry reader.

The writer follows the reference C writer's block rules exactly (an entry that fits in a block is
never split; a larger one spills into the following blocks, and the next entry starts a fresh
block), so for the same input and file identifier the uncompressed and Snappy logs are
byte-identical to the C library's.
"""

from __future__ import annotations

import mmap
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from backbeat.kvstore.errors import CorruptFileError, KvStoreError, StoreClosedError, TruncatedFileError
from backbeat.kvstore.format import (
    DEFAULT_BLOCK_SIZE,
    LOG_HEADER_SIZE,
    Codec,
    LogHeader,
    codec_for,
    compression_type_of,
    read_vlq,
    vlq,
)

_FILE_BUFFER = 1 << 20


def as_bytes(value: Any, what: str = "key") -> bytes:
    """Keys and values are bytes; ``str`` is encoded as UTF-8; anything else is a clear error."""
    if value.__class__ is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise KvStoreError(f"{what} must be bytes or str, not {type(value).__name__}")


class Writer:
    """Append puts and deletes to a Sparkey log.

    ``Writer(path, compression="none"|"snappy"|"zstd", block_size=0, append=False)``. With
    compression, ``block_size`` 0 means 4096 bytes. ``append=True`` continues an existing log (its
    compression settings win). ``flush()`` makes everything written so far visible to new readers
    (the header is rewritten last); ``close()`` flushes. The index is built separately by
    :func:`backbeat.kvstore.build_index` (or by :func:`backbeat.kvstore.write_store`).
    """

    def __init__(
        self,
        log_path: str | Path,
        compression: str = "none",
        block_size: int = 0,
        append: bool = False,
        *,
        file_identifier: int | None = None,
        zstd_level: int = 3,
    ) -> None:
        self.path = Path(log_path)
        if append and self.path.exists():
            with open(self.path, "rb") as fh:
                raw = fh.read(LOG_HEADER_SIZE)
            self.header = LogHeader.unpack(raw, self.path, self.path.stat().st_size)
            self._fh = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
            self._fh.seek(self.header.data_end)
            self._fh.truncate()
        else:
            ctype = compression_type_of(compression)
            if ctype and block_size == 0:
                block_size = DEFAULT_BLOCK_SIZE
            if ctype and block_size < 10:
                raise KvStoreError(f"compression block size must be at least 10 bytes, not {block_size}")
            if ctype == 0:
                block_size = 0
            ident = secrets.randbits(32) if file_identifier is None else file_identifier & 0xFFFFFFFF
            self.header = LogHeader(
                file_identifier=ident, compression_type=ctype, compression_block_size=block_size
            )
            try:
                self.path.unlink()  # like Sparkey: readers of the old file keep their inode
            except FileNotFoundError:
                pass
            self._fh = open(self.path, "w+b")  # noqa: SIM115 - closed in close()
            self._fh.write(self.header.pack())
        self._codec: Codec = codec_for(self.header.compression_type)
        if self.header.compression_type == 2 and zstd_level != 3:
            from backbeat.kvstore.format import ZstdCodec

            self._codec = ZstdCodec(zstd_level)
        self._compressed = self.header.compression_type != 0
        self._block_size = self.header.compression_block_size
        self._pos = self.header.data_end  # file offset of the next byte (or of the open block)
        self._chunks: list[bytes] = []
        self._chunk_bytes = 0
        self._block = bytearray()
        self._entry_count = 0
        self._flushed = False
        self._closed = False
        self.last_position = 0  # file offset (or block offset) of the last entry written
        self.last_number = 0  # its number inside its block (0 without compression)

    # -------------------------------------------------------------------------------- public
    def put(self, key: bytes | str, value: bytes | str) -> None:
        """Append a put; returns nothing (the address is available as ``last_address``)."""
        if self._closed:
            raise StoreClosedError(f"writer for {self.path} is closed")
        key = key if key.__class__ is bytes else as_bytes(key)
        value = value if value.__class__ is bytes else as_bytes(value, "value")
        klen = len(key)
        vlen = len(value)
        if klen < 127 and vlen < 128:
            entry = bytes((klen + 1, vlen)) + key + value
            head = 2
        else:
            h = vlq(klen + 1) + vlq(vlen)
            head = len(h)
            entry = h + key + value
        self._add(entry, head)
        hdr = self.header
        hdr.num_puts += 1
        hdr.put_size += len(entry)
        if klen > hdr.max_key_len:
            hdr.max_key_len = klen
        if vlen > hdr.max_value_len:
            hdr.max_value_len = vlen

    def put_many(
        self, pairs: Iterable[tuple[bytes | str, bytes | str]], hash32_seed: int | None = None
    ) -> Tracked:
        """Put every pair (the bulk path of ``write_store``: one tight loop, no per-pair call).

        With ``hash32_seed`` it also records each key's 32-bit MurmurHash3 and address, which
        lets the index be built without reading the log back."""
        import mmh3

        tracked = Tracked(hash32_seed)
        hashes = tracked.hashes
        positions = tracked.positions
        if self._compressed:
            numbers = tracked.numbers
            h32 = mmh3.hash
            for key, value in pairs:
                self.put(key, value)
                if hash32_seed is not None:
                    hashes.append(h32(key if key.__class__ is bytes else as_bytes(key), hash32_seed, False))
                    positions.append(self.last_position)
                    numbers.append(self.last_number)
            return tracked
        if self._closed:
            raise StoreClosedError(f"writer for {self.path} is closed")
        hdr = self.header
        heads = _two_byte_heads()
        chunks = self._chunks
        pending = 0
        pos = self._pos + self._chunk_bytes
        puts = put_size = 0
        max_k = hdr.max_key_len
        max_v = hdr.max_value_len
        track = hash32_seed is not None
        h32 = mmh3.hash
        add_h = hashes.append
        add_p = positions.append
        extend = chunks.extend
        for key, value in pairs:
            if key.__class__ is not bytes:
                key = as_bytes(key)
            if value.__class__ is not bytes:
                value = as_bytes(value, "value")
            kl = len(key)
            vl = len(value)
            if kl < 127 and vl < 128:
                head = heads[(kl + 1) << 7 | vl]
            else:
                head = vlq(kl + 1) + vlq(vl)
            if kl > max_k:
                max_k = kl
            if vl > max_v:
                max_v = vl
            extend((head, key, value))
            if track:
                add_h(h32(key, hash32_seed, False))
                add_p(pos)
            size = len(head) + kl + vl
            pos += size
            put_size += size
            puts += 1
            pending += size
            if pending >= _FILE_BUFFER:
                self._chunk_bytes += pending
                pending = 0
                self._flush_file()
        self._chunk_bytes += pending
        hdr.num_puts += puts
        hdr.put_size += put_size
        hdr.max_key_len = max_k
        hdr.max_value_len = max_v
        return tracked

    def delete(self, key: bytes | str) -> None:
        if self._closed:
            raise StoreClosedError(f"writer for {self.path} is closed")
        key = key if key.__class__ is bytes else as_bytes(key)
        h = b"\x00" + vlq(len(key))
        entry = h + key
        self._add(entry, len(h))
        self.header.num_deletes += 1
        self.header.delete_size += len(entry)

    def flush(self) -> None:
        """Write pending blocks and the header (so new readers see every entry so far)."""
        if self._closed:
            raise StoreClosedError(f"writer for {self.path} is closed")
        if self._block:
            self._flush_block()
        self._flush_file()
        self.header.data_end = self._pos
        self._fh.seek(0)
        self._fh.write(self.header.pack())
        self._fh.seek(self._pos)
        self._fh.flush()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._fh.close()

    def sync(self) -> None:
        """fsync the log (publishing calls it before the atomic rename)."""
        self.flush()
        os.fsync(self._fh.fileno())

    @property
    def file_identifier(self) -> int:
        return self.header.file_identifier

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ internals
    def _add(self, entry: bytes, head: int) -> None:
        if not self._compressed:
            self.last_position = self._pos + self._chunk_bytes
            self._chunks.append(entry)
            self._chunk_bytes += len(entry)
            if self._chunk_bytes >= _FILE_BUFFER:
                self._flush_file()
            return
        size = self._block_size
        remaining = size - len(self._block)
        n = len(entry)
        if remaining < head or (n <= size and n > remaining):
            self._flush_block()
        self.last_position = self._pos + self._chunk_bytes  # where the open block will be written
        self.last_number = self._entry_count
        self._entry_count += 1
        self._flushed = False
        view = memoryview(entry)
        while True:
            remaining = size - len(self._block)
            if remaining >= len(view):
                self._block += view
                break
            self._block += view[:remaining]
            view = view[remaining:]
            self._flush_block()
        if self._flushed and self._block:
            self._flush_block()

    def _flush_block(self) -> None:
        self._flushed = True
        if self._entry_count > self.header.max_entries_per_block:
            self.header.max_entries_per_block = self._entry_count
        self._entry_count = 0
        packed = self._codec.compress(bytes(self._block))
        self._block.clear()
        size = vlq(len(packed))
        self._chunks.append(size)
        self._chunks.append(packed)
        self._chunk_bytes += len(size) + len(packed)
        if self._chunk_bytes >= _FILE_BUFFER:
            self._flush_file()

    def _flush_file(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._fh.write(data)
            self._pos += len(data)
            self._chunks.clear()
            self._chunk_bytes = 0


class Tracked:
    """What ``put_many`` recorded for the index: 32-bit hashes and entry addresses, in log order."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.hashes: list[int] = []
        self.positions: list[int] = []
        self.numbers: list[int] = []


_HEADS: list[bytes] = []


def _two_byte_heads() -> list[bytes]:
    """Entry headers ``vlq(a) vlq(b)`` for a, b < 128, indexed by ``a << 7 | b``."""
    if not _HEADS:
        _HEADS.extend(bytes((i >> 7, i & 0x7F)) for i in range(1 << 14))
    return _HEADS


class LogFile:
    """A read-only, memory-mapped log: header, sequential iteration and random access by address."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise KvStoreError(f"{self.path}: no such log file") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise TruncatedFileError(self.path, 0, "empty file, not a Sparkey log")
            self.mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.header = LogHeader.unpack(self.mm[:LOG_HEADER_SIZE], self.path, size)
        self.data_end = self.header.data_end
        self.compressed = self.header.compression_type != 0
        self.block_size = self.header.compression_block_size
        self.codec = codec_for(self.header.compression_type)

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:  # pragma: no cover - a caller still holds a view; GC will unmap
            pass

    # ------------------------------------------------------------------------------ blocks
    def read_block(self, pos: int, decompress: Any) -> tuple[bytes, int]:
        """Decompress the block at file offset ``pos``: (data, offset of the next block)."""
        end = self.data_end
        if pos < LOG_HEADER_SIZE or pos >= end:
            raise CorruptFileError(self.path, pos, f"block offset outside the data (ends at {end})")
        mm = self.mm
        size = mm[pos]
        if size < 0x80:
            start = pos + 1
        elif pos + 1 < end and mm[pos + 1] < 0x80:
            size = (size & 0x7F) | (mm[pos + 1] << 7)
            start = pos + 2
        else:
            size, start = read_vlq(mm, pos, end, self.path)
        stop = start + size
        if size == 0 or stop > end:
            raise CorruptFileError(self.path, pos, f"bad block length {size} (data ends at {end})")
        try:
            data = decompress(mm[start:stop])
        except Exception as exc:
            raise CorruptFileError(self.path, pos, f"corrupt {self.codec.name} block: {exc}") from None
        if len(data) > self.block_size:
            raise CorruptFileError(
                self.path,
                pos,
                f"bad block length: block inflates to {len(data)} > block size {self.block_size}",
            )
        return data, stop

    # ------------------------------------------------------------------------------ iteration
    def entries(self) -> Iterator[tuple[int, bytes, bytes | None, int, int]]:
        """Every entry in log order: ``(kind, key, value, position, number)``, kind 1 put, 0 delete.

        ``position`` is the entry's file offset (no compression) or its block's offset, and
        ``number`` its index inside that block (0 without compression); the index stores
        ``position << entry_block_bits | number``."""
        if self.compressed:
            yield from self._entries_compressed()
            return
        mm = self.mm
        pos = LOG_HEADER_SIZE
        end = self.data_end
        path = self.path
        while pos < end:
            start = pos
            a = mm[pos]
            b = mm[pos + 1] if pos + 1 < end else 255
            if a < 128 and b < 128:
                pos += 2
            else:
                a, pos = read_vlq(mm, pos, end, path)
                b, pos = read_vlq(mm, pos, end, path)
            if a:
                kend = pos + a - 1
                vend = kend + b
                if vend > end:
                    raise TruncatedFileError(
                        path, start, f"entry of {a - 1 + b} bytes runs past the data end {end}"
                    )
                yield 1, mm[pos:kend], mm[kend:vend], start, 0
                pos = vend
            else:
                kend = pos + b
                if kend > end:
                    raise TruncatedFileError(path, start, f"delete entry runs past the data end {end}")
                yield 0, mm[pos:kend], None, start, 0
                pos = kend

    def _entries_compressed(self) -> Iterator[tuple[int, bytes, bytes | None, int, int]]:
        cursor = BlockCursor(self, self.codec.decompressor(self.block_size))
        cursor.seek(LOG_HEADER_SIZE)
        while not cursor.at_end():
            block, index = cursor.entry_start()
            a = cursor.read_vlq()
            b = cursor.read_vlq()
            if a:
                key = cursor.read(a - 1)
                yield 1, key, cursor.read(b), block, index
            else:
                yield 0, cursor.read(b), None, block, index

    def entry_at(self, address: int, bits: int, decompress: Any) -> tuple[int, bytes, bytes | None]:
        """The entry an index address points to (slow, general path: any size, any block span)."""
        if not self.compressed:
            if address < LOG_HEADER_SIZE or address >= self.data_end:
                raise CorruptFileError(self.path, address, "index address outside the log data")
            pos = address
            end = self.data_end
            a, pos = read_vlq(self.mm, pos, end, self.path)
            b, pos = read_vlq(self.mm, pos, end, self.path)
            klen = a - 1 if a else b
            vlen = b if a else 0
            if pos + klen + vlen > end:
                raise TruncatedFileError(self.path, address, "entry runs past the data end")
            key = self.mm[pos : pos + klen]
            return (1 if a else 0), key, (self.mm[pos + klen : pos + klen + vlen] if a else None)
        cursor = BlockCursor(self, decompress)
        cursor.seek(address >> bits)
        for _ in range(address & ((1 << bits) - 1)):
            cursor.skip_entry()
        if cursor.at_end():
            raise CorruptFileError(self.path, address >> bits, "index address points past the last entry")
        a = cursor.read_vlq()
        b = cursor.read_vlq()
        if a:
            key = cursor.read(a - 1)
            return 1, key, cursor.read(b)
        return 0, cursor.read(b), None


class BlockCursor:
    """Reads a compressed log as one stream of bytes, block by block (entries may span blocks)."""

    def __init__(self, log: LogFile, decompress: Any) -> None:
        self.log = log
        self.decompress = decompress
        self.buf = b""
        self.off = 0
        self.block = 0
        self.next_block = LOG_HEADER_SIZE
        self.count = -1

    def seek(self, pos: int) -> None:
        self.buf, self.next_block = self.log.read_block(pos, self.decompress)
        self.block = pos
        self.off = 0
        self.count = -1

    def _ensure(self) -> bool:
        while self.off >= len(self.buf):
            if self.next_block >= self.log.data_end:
                return False
            self.seek(self.next_block)
        return True

    def at_end(self) -> bool:
        return not self._ensure()

    def entry_start(self) -> tuple[int, int]:
        self._ensure()
        self.count += 1
        return self.block, self.count

    def read_vlq(self) -> int:
        result = shift = 0
        while True:
            if not self._ensure():
                raise TruncatedFileError(
                    self.log.path, self.block, "entry header cut off at the end of the log"
                )
            byte = self.buf[self.off]
            self.off += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise CorruptFileError(self.log.path, self.block, "length varint longer than 10 bytes")

    def read(self, n: int) -> bytes:
        if self.off + n <= len(self.buf):
            out = self.buf[self.off : self.off + n]
            self.off += n
            return out
        parts = []
        while n:
            if not self._ensure():
                raise TruncatedFileError(
                    self.log.path, self.block, f"entry cut off: {n} bytes missing at the end"
                )
            take = min(n, len(self.buf) - self.off)
            parts.append(self.buf[self.off : self.off + take])
            self.off += take
            n -= take
        return b"".join(parts)

    def skip_entry(self) -> None:
        if not self._ensure():
            raise CorruptFileError(self.log.path, self.block, "index address points past the last entry")
        a = self.read_vlq()
        b = self.read_vlq()
        self.read((a - 1 + b) if a else b)
