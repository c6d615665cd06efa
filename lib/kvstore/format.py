"""Sparkey 1.x on-disk format: headers, variable-length integers, hash functions, codecs.

Layout (little endian), learned from the reference C library's files:

* log ``.spl``: an 84-byte header (magic ``0x49b39c95``, version 1.0, file identifier, counts,
  ``data_end``, max key/value length, compression type and block size, ``max_entries_per_block``)
  then entries. An entry is ``vlq(a) vlq(b)`` then bytes: ``a == 0`` is a delete of a ``b``-byte
  key; otherwise a put of an ``a - 1``-byte key and a ``b``-byte value. With compression the
  entries are packed into blocks of at most ``block_size`` uncompressed bytes, each stored as
  ``vlq(compressed_size) compressed``; an entry larger than a block spills into the next ones.
* index ``.spi``: a 112-byte header (magic ``0x9a11318f``, version 1.1, the log's file identifier,
  hash seed, copies of the log's counts, capacity, address and hash sizes, statistics) then
  ``capacity`` slots of ``hash || address``. An address is the entry's file offset (no compression)
  or ``block_offset << entry_block_bits | index_in_block``; 0 marks an empty slot.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from backbeat.kvstore.errors import (
    CorruptFileError,
    FileMismatchError,
    TruncatedFileError,
    UnsupportedFormatError,
)

LOG_MAGIC = 0x49B39C95
LOG_MAJOR = 1
LOG_MINOR = 0
LOG_HEADER_SIZE = 84
HASH_MAGIC = 0x9A11318F
HASH_MAJOR = 1
HASH_MINOR = 1
HASH_HEADER_SIZE = 112

COMPRESSIONS = ("none", "snappy", "zstd")
DEFAULT_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 1 << 28  # readers hold one block in memory; larger is surely damage

_LOG_STRUCT = struct.Struct("<IIIIQQQQQQIIQI")
_HASH_STRUCT = struct.Struct("<IIIIIQQQQQQIIQQIQQ")
assert _LOG_STRUCT.size == LOG_HEADER_SIZE and _HASH_STRUCT.size == HASH_HEADER_SIZE


def _check_magic(
    data: bytes | memoryview, path: object, magic_expected: int, header_size: int, what: str, ext: str
) -> None:
    """The first checks of either header: long enough, the right magic number, the whole header."""
    if len(data) < 4:
        raise TruncatedFileError(path, 0, f"file is {len(data)} bytes, too short for a Sparkey {what}")
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic != magic_expected:
        raise CorruptFileError(
            path, 0, f"wrong magic number 0x{magic:08x}: not a Sparkey {what} (.{ext}) file"
        )
    if len(data) < header_size:
        raise TruncatedFileError(path, len(data), f"{what} header needs {header_size} bytes")


@dataclass
class LogHeader:
    file_identifier: int = 0
    num_puts: int = 0
    num_deletes: int = 0
    data_end: int = LOG_HEADER_SIZE
    max_key_len: int = 0
    max_value_len: int = 0
    delete_size: int = 0
    compression_type: int = 0
    compression_block_size: int = 0
    put_size: int = 0
    max_entries_per_block: int = 0

    @property
    def compression(self) -> str:
        return COMPRESSIONS[self.compression_type]

    def pack(self) -> bytes:
        return _LOG_STRUCT.pack(
            LOG_MAGIC,
            LOG_MAJOR,
            LOG_MINOR,
            self.file_identifier,
            self.num_puts,
            self.num_deletes,
            self.data_end,
            self.max_key_len,
            self.max_value_len,
            self.delete_size,
            self.compression_type,
            self.compression_block_size,
            self.put_size,
            self.max_entries_per_block,
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview, path: object, file_size: int) -> LogHeader:
        """Parse and sanity-check a log header; errors name the file and the field's offset."""
        _check_magic(data, path, LOG_MAGIC, LOG_HEADER_SIZE, "log", "spl")
        values = _LOG_STRUCT.unpack_from(data, 0)
        major, minor = values[1], values[2]
        if major != LOG_MAJOR or minor > LOG_MINOR:
            raise UnsupportedFormatError(path, 4, f"log version {major}.{minor} is not supported (1.0 is)")
        header = cls(*values[3:])
        if header.compression_type >= len(COMPRESSIONS):
            raise UnsupportedFormatError(path, 56, f"unknown compression type {header.compression_type}")
        if header.compression_type and header.compression_block_size < 10:
            raise CorruptFileError(path, 60, f"compression block size {header.compression_block_size} < 10")
        if header.compression_block_size > MAX_BLOCK_SIZE:
            raise UnsupportedFormatError(
                path, 60, f"block size {header.compression_block_size} > {MAX_BLOCK_SIZE}"
            )
        if header.data_end < LOG_HEADER_SIZE:
            raise CorruptFileError(path, 24, f"data_end {header.data_end} lies inside the header")
        if header.data_end > file_size:
            raise TruncatedFileError(
                path,
                file_size,
                f"header says data ends at {header.data_end} but the file has {file_size} bytes",
            )
        if header.num_puts > header.data_end or header.num_deletes > header.data_end:
            raise CorruptFileError(path, 16, "entry counts larger than the file")
        return header


@dataclass
class HashHeader:
    file_identifier: int = 0
    hash_seed: int = 0
    data_end: int = 0
    max_key_len: int = 0
    max_value_len: int = 0
    num_puts: int = 0
    garbage_size: int = 0
    num_entries: int = 0
    address_size: int = 4
    hash_size: int = 4
    hash_capacity: int = 1
    max_displacement: int = 0
    entry_block_bits: int = 0
    hash_collisions: int = 0
    total_displacement: int = 0

    @property
    def slot_size(self) -> int:
        return self.address_size + self.hash_size

    def pack(self) -> bytes:
        return _HASH_STRUCT.pack(
            HASH_MAGIC, HASH_MAJOR, HASH_MINOR, *(getattr(self, f.name) for f in fields(self))
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview, path: object, file_size: int) -> HashHeader:
        _check_magic(data, path, HASH_MAGIC, HASH_HEADER_SIZE, "index", "spi")
        values = _HASH_STRUCT.unpack_from(data, 0)
        major, minor = values[1], values[2]
        if major != HASH_MAJOR or minor != HASH_MINOR:
            raise UnsupportedFormatError(path, 4, f"index version {major}.{minor} is not supported (1.1 is)")
        header = cls(*values[3:])
        if header.hash_size not in (4, 8):
            raise UnsupportedFormatError(path, 72, f"hash size {header.hash_size} (4 or 8 expected)")
        if header.address_size not in (4, 8):
            raise CorruptFileError(path, 68, f"address size {header.address_size} (4 or 8 expected)")
        if header.hash_capacity < 1:
            raise CorruptFileError(path, 76, "hash capacity 0")
        if header.entry_block_bits > 31:
            raise CorruptFileError(path, 92, f"entry block bits {header.entry_block_bits} > 31")
        if header.num_entries > header.hash_capacity:
            raise CorruptFileError(path, 52, "more entries than slots")
        need = HASH_HEADER_SIZE + header.hash_capacity * header.slot_size
        if file_size < need:
            raise TruncatedFileError(
                path, file_size, f"index needs {need} bytes for {header.hash_capacity} slots"
            )
        return header

    def check_log(self, index_path: object, log_path: object, log: LogHeader) -> None:
        """The C reader's consistency rules: same identifier, index not ahead of the log."""
        if self.file_identifier != log.file_identifier:
            raise FileMismatchError(
                index_path,
                12,
                f"index belongs to another log: identifier {self.file_identifier:08x}, "
                f"but {log_path} has {log.file_identifier:08x}",
            )
        if (
            self.data_end > log.data_end
            or self.max_key_len > log.max_key_len
            or self.max_value_len > log.max_value_len
        ):
            raise CorruptFileError(index_path, 20, f"index header describes more data than {log_path} holds")


# ------------------------------------------------------------------------------ varints
def vlq(value: int) -> bytes:
    """Unsigned LEB128, as Sparkey writes lengths."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def vlq_size(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def read_vlq(buf: bytes | memoryview, pos: int, end: int, path: object, base: int = 0) -> tuple[int, int]:
    """(value, next position); a varint running past ``end`` or over 10 bytes is an error."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise TruncatedFileError(path, base + start, "entry header cut off")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptFileError(path, base + start, "length varint longer than 10 bytes")


# ------------------------------------------------------------------------------ hashing
def hash_function(hash_size: int, seed: int) -> Callable[[bytes], int]:
    """Sparkey's key hash: MurmurHash3 x86_32, or the low 64 bits of x64_128, with the seed."""
    import mmh3

    if hash_size == 4:
        h32 = mmh3.hash

        def hash4(key: bytes) -> int:
            return h32(key, seed, False)

        return hash4
    h64 = mmh3.hash64

    def hash8(key: bytes) -> int:
        return h64(key, seed, True, False)[0] & 0xFFFFFFFFFFFFFFFF

    return hash8


def int_log2(x: int) -> int:
    """Number of bits of ``x`` (Sparkey's ``int_log2``: 0 -> 0, 1 -> 1, 5 -> 3)."""
    return int(x).bit_length()


def capacity_for(num_entries: int) -> int:
    """Sparkey's capacity rule: ``1 | int(n * 1.3)`` (always odd)."""
    return 1 | int(num_entries * 1.3)


def choose_hash_size(capacity: int, requested: int) -> int:
    if requested not in (0, 4, 8):
        from backbeat.kvstore.errors import KvStoreError

        raise KvStoreError(f"hash_size must be 0 (automatic), 4 or 8, not {requested}")
    if requested:
        return requested
    return 8 if capacity >= (1 << 23) else 4


def choose_address_size(data_end: int, entry_block_bits: int) -> int:
    return 4 if data_end < (1 << (32 - entry_block_bits)) else 8


# ------------------------------------------------------------------------------ codecs
class Codec:
    """Block compression. Decompression contexts are reused (one per thread, by the reader)."""

    name = "none"

    def compress(self, data: bytes) -> bytes:  # pragma: no cover - overridden
        return data

    def decompressor(self, block_size: int) -> Callable[[bytes], bytes]:  # pragma: no cover
        return bytes


class SnappyCodec(Codec):
    """Snappy blocks. Compression prefers Google's libsnappy (found with ctypes), the library
    Sparkey links: its output is byte-identical to the reference files. Without it python-snappy
    compresses; the blocks are valid Snappy that every reader accepts, but their bytes may differ.
    """

    name = "snappy"

    def __init__(self) -> None:
        import snappy

        self._snappy = snappy
        self._lib = _libsnappy()

    @property
    def reference_compatible(self) -> bool:
        """True when blocks are compressed by Google's libsnappy (byte-identical logs)."""
        return self._lib is not None

    def compress(self, data: bytes) -> bytes:
        lib = self._lib
        if lib is None:
            return self._snappy.compress(data)
        import ctypes

        size = ctypes.c_size_t(lib.snappy_max_compressed_length(len(data)))
        out = ctypes.create_string_buffer(size.value)
        if lib.snappy_compress(data, len(data), out, ctypes.byref(size)) != 0:  # pragma: no cover
            raise RuntimeError("libsnappy failed to compress a block")
        return out.raw[: size.value]

    def unchecked_decompressor(self) -> Callable[[bytes], bytes]:
        """Plain snappy decompression, for callers that checked the declared size themselves
        (the C lookup does, before handing the block over)."""
        try:
            import pysnappy

            return pysnappy.uncompress
        except ImportError:  # pragma: no cover - pysnappy is a declared dependency
            return self._snappy.decompress

    def decompressor(self, block_size: int) -> Callable[[bytes], bytes]:
        """A block decompressor that refuses blocks declaring more than ``block_size`` bytes
        (before allocating anything). Uses pysnappy (Google's snappy, the fastest from Python)
        when installed, else python-snappy."""
        try:
            import pysnappy

            uncompress = pysnappy.uncompress
        except ImportError:  # pragma: no cover - pysnappy is a declared dependency
            uncompress = self._snappy.decompress

        def run(data: bytes) -> bytes:
            d0 = data[0]
            if d0 >= 0x80:
                d1 = data[1] if len(data) > 1 else 0x80
                if d1 < 0x80:
                    declared = (d0 & 0x7F) | (d1 << 7)
                else:
                    declared, _ = read_vlq(data, 0, min(len(data), 10), "snappy block")
                if declared > block_size or declared > 32 * len(data) + 64:
                    raise ValueError(
                        f"declares {declared} bytes (block size {block_size}, {len(data)} compressed)"
                    )
            return uncompress(data)

        return run


_LIBSNAPPY: list[Any] = []


def _libsnappy() -> Any:
    """Google's libsnappy through ctypes, or None (loaded once per process)."""
    if not _LIBSNAPPY:
        import ctypes
        import ctypes.util

        lib = None
        name = os.environ.get("BACKBEAT_LIBSNAPPY") or ctypes.util.find_library("snappy")
        if name and os.environ.get("BACKBEAT_LIBSNAPPY") != "none":
            try:
                lib = ctypes.CDLL(name)
                lib.snappy_max_compressed_length.restype = ctypes.c_size_t
                lib.snappy_max_compressed_length.argtypes = [ctypes.c_size_t]
                lib.snappy_compress.argtypes = [
                    ctypes.c_char_p,
                    ctypes.c_size_t,
                    ctypes.c_char_p,
                    ctypes.POINTER(ctypes.c_size_t),
                ]
            except (OSError, AttributeError):
                lib = None
        _LIBSNAPPY.append(lib)
    return _LIBSNAPPY[0]


class ZstdCodec(Codec):
    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        import zstandard

        self._zstd = zstandard
        self._compressor = zstandard.ZstdCompressor(level=level)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def decompressor(self, block_size: int) -> Callable[[bytes], bytes]:
        dctx = self._zstd.ZstdDecompressor()
        decompress = dctx.decompress
        content_size = self._zstd.frame_content_size

        def run(data: bytes) -> bytes:
            if content_size(data) > block_size:
                raise ValueError(f"frame declares more than the block size {block_size}")
            return decompress(data, max_output_size=block_size)

        return run


def codec_for(compression_type: int) -> Codec:
    if compression_type == 1:
        return SnappyCodec()
    if compression_type == 2:
        return ZstdCodec()
    return Codec()


def compression_type_of(name: str) -> int:
    from backbeat.kvstore.errors import KvStoreError

    if name not in COMPRESSIONS:
        raise KvStoreError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {name!r}")
    return COMPRESSIONS.index(name)


def default_index_path(log_path: str | Path) -> Path:
    """``x.spl`` -> ``x.spi`` (Sparkey's naming convention)."""
    p = Path(log_path)
    return p.with_suffix(".spi") if p.suffix == ".spl" else p.with_name(p.name + ".spi")
