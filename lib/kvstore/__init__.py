"""Sparkey-compatible static key/value store: a log (``.spl``) plus a hash index (``.spi``).

Reads and writes the same files as Spotify's Sparkey C library (uncompressed, Snappy and zstd
logs; 4- and 8-byte MurmurHash3 indexes; 64-bit offsets). Importing this package is cheap: numpy,
mmh3 and the codecs load on first use.

    from backbeat.kvstore import Writer, Reader, build_index, write_store
"""

from __future__ import annotations

from backbeat.kvstore.errors import (
    CorruptFileError,
    FileMismatchError,
    KvStoreError,
    PublishError,
    StoreClosedError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from backbeat.kvstore.index import build_index
from backbeat.kvstore.log import Writer
from backbeat.kvstore.reader import Reader
from backbeat.kvstore.store import write_store

__all__ = [
    "CorruptFileError",
    "FileMismatchError",
    "KvStoreError",
    "PublishError",
    "Reader",
    "StoreClosedError",
    "TruncatedFileError",
    "UnsupportedFormatError",
    "Writer",
    "build_index",
    "write_store",
]
