"""Building the Sparkey hash index (``.spi``) from a log.

Two builders produce the same kind of table, Robin Hood linear probing over
``capacity = 1 | int(1.3 * puts)`` slots, that any Sparkey reader accepts:

* ``exact``: replays the log through the reference algorithm (insert with displacement stealing,
  replace on an equal key, delete with backward shift), so for the same seed the file is
  byte-identical to the C library's. Pure Python over two lists: about 1 µs per entry.
* ``fast``: for logs without deletes or repeated keys (the bulk ``write_store`` case) no key ever
  needs comparing, so the same insertion rule runs compiled over two integer arrays
  (``_placement.py``, numba): byte-identical to ``exact``. Without numba it falls back to numpy
  packing (sort by home slot, positions from a running maximum, wrap-around by a second pass):
  every key lands in the same slot *group* as with ``exact``, but keys that share a home slot may
  be ordered differently, so those bytes can differ while lookups are identical.

Memory is proportional to the number of keys (hash and address arrays), never to the data.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from backbeat.kvstore.errors import CorruptFileError, KvStoreError, TruncatedFileError
from backbeat.kvstore.format import (
    HASH_HEADER_SIZE,
    LOG_HEADER_SIZE,
    HashHeader,
    capacity_for,
    choose_address_size,
    choose_hash_size,
    hash_function,
    int_log2,
    read_vlq,
    vlq_size,
)
from backbeat.kvstore.log import LogFile, Tracked

METHODS = ("auto", "exact", "fast")


def build_index(
    log_path: str | Path,
    index_path: str | Path,
    hash_size: int = 0,
    seed: int | None = None,
    *,
    method: str = "auto",
    progress: Any = None,
    tracked: Tracked | None = None,
) -> HashHeader:
    """Write the index of ``log_path`` to ``index_path`` atomically (temp file + rename).

    ``hash_size`` 0 picks 4 or 8 bytes like Sparkey (8 from 2**23 slots up). ``seed`` None reuses
    the seed of an existing index of the same log (as Sparkey does) or draws a random one.
    ``method``: ``exact`` (byte-identical to the C library), ``fast`` (compiled; falls back to exact
    when the log has deletes or repeated keys), ``auto`` (= fast above 200,000 puts, else exact).
    ``progress(done, total)`` is called now and then while reading the log. ``tracked`` (from
    :meth:`Writer.put_many`) supplies hashes and addresses so the log need not be read back.
    """
    if method not in METHODS:
        raise KvStoreError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    log = LogFile(log_path)
    try:
        lh = log.header
        bits = int_log2(lh.max_entries_per_block)
        capacity = capacity_for(lh.num_puts)
        hsize = choose_hash_size(capacity, hash_size)
        if seed is None:
            seed = _previous_seed(Path(index_path), lh.file_identifier, hsize)
        seed &= 0xFFFFFFFF
        header = HashHeader(
            file_identifier=lh.file_identifier,
            hash_seed=seed,
            data_end=lh.data_end,
            max_key_len=lh.max_key_len,
            max_value_len=lh.max_value_len,
            num_puts=lh.num_puts,
            address_size=choose_address_size(lh.data_end, bits),
            hash_size=hsize,
            hash_capacity=capacity,
            entry_block_bits=bits,
        )
        if method == "auto":
            method = "fast" if lh.num_puts > 200_000 else "exact"
        entries = None
        if (
            tracked is not None
            and tracked.seed == seed
            and hsize == 4
            and lh.num_deletes == 0
            and len(tracked.hashes) == lh.num_puts
        ):
            import numpy as np

            addrs = np.array(tracked.positions, dtype=np.uint64)
            if tracked.numbers:
                addrs = (addrs << np.uint64(bits)) | np.array(tracked.numbers, dtype=np.uint64)
            entries = (None, np.array(tracked.hashes, dtype=np.uint64), addrs)
        if entries is None:
            entries = _key_hashes(log, header, progress)
        table = None
        if method == "fast" and lh.num_deletes == 0:
            table = _fast_table(log, header, entries[1], entries[2])
        if table is None:
            kinds = entries[0] if entries[0] is not None else [1] * lh.num_puts
            table = _exact_table(log, header, kinds, entries[1], entries[2])
        _finish_stats(header, *table)
        _write_atomically(Path(index_path), header, *table)
        return header
    finally:
        log.close()


def _previous_seed(index_path: Path, file_identifier: int, hash_size: int) -> int:
    try:
        with open(index_path, "rb") as fh:
            raw = fh.read(HASH_HEADER_SIZE)
        old = HashHeader.unpack(raw, index_path, 1 << 62)
        if old.file_identifier == file_identifier:
            return old.hash_seed
    except (OSError, KvStoreError):
        pass
    return secrets.randbits(32)


# ---------------------------------------------------------------------------------- reading keys
def _key_hashes(log: LogFile, header: HashHeader, progress: Any) -> tuple[list[int], list[int], list[int]]:
    """(kinds, hashes, addresses) of every entry, in log order. The uncompressed path is a tight
    loop over the mmap; compressed logs go through the block cursor."""
    hf = hash_function(header.hash_size, header.hash_seed)
    kinds: list[int] = []
    hashes: list[int] = []
    addrs: list[int] = []
    bits = header.entry_block_bits
    total = log.header.num_puts + log.header.num_deletes
    if not log.compressed:
        mm = log.mm
        pos = LOG_HEADER_SIZE
        end = log.data_end
        path = log.path
        add_h = hashes.append
        add_a = addrs.append
        add_k = kinds.append
        n = 0
        while pos < end:
            start = pos
            if pos + 1 < end and mm[pos] < 128 and mm[pos + 1] < 128:
                a = mm[pos]
                b = mm[pos + 1]
                pos += 2
            else:
                a, pos = read_vlq(mm, pos, end, path)
                b, pos = read_vlq(mm, pos, end, path)
            if a:
                kend = pos + a - 1
                nxt = kend + b
                add_k(1)
            else:
                kend = nxt = pos + b
                add_k(0)
            if nxt > end:
                raise TruncatedFileError(path, start, f"entry runs past the data end {end}")
            add_h(hf(mm[pos:kend]))
            add_a(start)
            pos = nxt
            n += 1
            if progress is not None and not n & 0xFFFF:
                progress(n, total)
    else:
        for n, (kind, key, _value, block, number) in enumerate(log.entries(), 1):
            kinds.append(kind)
            hashes.append(hf(key))
            addrs.append(block << bits | number)
            if progress is not None and not n & 0xFFFF:
                progress(n, total)
    if len(kinds) != total:
        raise CorruptFileError(log.path, 16, f"header counts {total} entries but the log holds {len(kinds)}")
    if progress is not None:
        progress(total, total)
    return kinds, hashes, addrs


# ---------------------------------------------------------------------------------- exact builder
def _exact_table(log: LogFile, header: HashHeader, kinds: Any, hashes: Any, addrs: Any) -> tuple[Any, Any]:
    """Replay the log through Sparkey's own insertion/deletion algorithm."""
    import numpy as np

    if not isinstance(hashes, list):
        hashes = hashes.tolist()
        addrs = addrs.tolist()
    cap = header.hash_capacity
    bits = header.entry_block_bits
    decompress = log.codec.decompressor(log.block_size)
    th = [0] * cap
    ta = [0] * cap
    entries = 0
    garbage = 0

    def key_at(address: int) -> tuple[int, bytes, int]:
        kind, key, value = log.entry_at(address, bits, decompress)
        return kind, key, len(value or b"")

    def same_key(address: int, other: int) -> tuple[bool, int, int]:
        kind2, key2, vlen2 = key_at(other)
        if kind2 != 1:
            raise CorruptFileError(log.path, other >> bits, "index would point at a delete entry")
        _, key, _ = key_at(address)
        return key == key2, len(key2), vlen2

    for kind, h, addr in zip(kinds, hashes, addrs, strict=True):
        slot = h % cap
        if kind:
            d = 0
            check = True
            while True:
                a2 = ta[slot]
                if a2 == 0:
                    th[slot] = h
                    ta[slot] = addr
                    entries += 1
                    break
                h2 = th[slot]
                if check and h2 == h:
                    same, klen2, vlen2 = same_key(addr, a2)
                    if same:
                        ta[slot] = addr
                        garbage += klen2 + vlen2 + vlq_size(klen2 + 1) + vlq_size(vlen2)
                        break
                other = (slot - h2 % cap) % cap
                if d > other:
                    th[slot] = h
                    ta[slot] = addr
                    h, addr, d = h2, a2, other
                    check = False
                d += 1
                slot += 1
                if slot == cap:
                    slot = 0
        else:
            _, key, _ = key_at(addr)
            garbage += 1 + vlq_size(len(key)) + len(key)
            d = 0
            while True:
                a2 = ta[slot]
                if a2 == 0:
                    break
                h2 = th[slot]
                if h2 == h:
                    kind2, key2, vlen2 = key_at(a2)
                    if kind2 != 1:
                        raise CorruptFileError(log.path, a2 >> bits, "index would point at a delete entry")
                    if key2 == key:
                        while True:
                            nxt = slot + 1 if slot + 1 < cap else 0
                            a3 = ta[nxt]
                            if a3 == 0:
                                break
                            h3 = th[nxt]
                            if h3 % cap == nxt:
                                break
                            th[slot] = h3
                            ta[slot] = a3
                            slot = nxt
                        th[slot] = 0
                        ta[slot] = 0
                        garbage += len(key2) + vlen2 + vlq_size(len(key2) + 1) + vlq_size(vlen2)
                        entries -= 1
                        break
                other = (slot - h2 % cap) % cap
                if d > other:
                    break
                d += 1
                slot += 1
                if slot == cap:
                    slot = 0
    header.num_entries = entries
    header.garbage_size = garbage
    return np.array(th, dtype=np.uint64), np.array(ta, dtype=np.uint64)


# ---------------------------------------------------------------------------------- fast builder
def _fast_table(log: LogFile, header: HashHeader, hashes: Any, addrs: Any) -> tuple[Any, Any] | None:
    """Vectorised Robin Hood placement; None when the log needs the exact replay."""
    import numpy as np

    h = np.asarray(hashes, dtype=np.uint64)
    a = np.asarray(addrs, dtype=np.uint64)
    if not _keys_distinct(log, header, h, a):
        return None
    cap = header.hash_capacity
    n = len(h)
    try:  # the reference insertion order, compiled: byte-identical to ``exact``
        from backbeat.kvstore._placement import place
    except ImportError:  # numba missing: numpy packing, same slot groups, maybe another order
        place = None
    if place is not None:
        th, ta = place(h, a, cap)
        header.num_entries = n
        header.garbage_size = 0
        return th, ta
    home = (h % np.uint64(cap)).astype(np.int64)
    order = np.argsort(home, kind="stable")  # by home slot, then log order
    home_sorted = home[order]
    idx = np.arange(n, dtype=np.int64)
    # position = max over earlier-or-equal j of (home_j + i - j): linear probing packed by home
    pos = np.maximum.accumulate(home_sorted - idx) + idx if n else home_sorted
    wrapped = 0
    while n and int(pos[-1]) >= cap:
        # the last keys run past the end: they wrap to slot 0 ahead of the keys whose home is there
        # (their displacement is larger); give them a home before 0 and pack again until it fits
        wrapped += int(np.count_nonzero(pos >= cap))
        if wrapped >= n:  # pragma: no cover - impossible below 100% load
            return None
        virt = np.concatenate([home_sorted[n - wrapped :] - cap, home_sorted[: n - wrapped]])
        pos = np.maximum.accumulate(np.maximum(virt - idx, -idx)) + idx
    if wrapped:
        order = np.concatenate([order[n - wrapped :], order[: n - wrapped]])
    th = np.zeros(cap, dtype=np.uint64)
    ta = np.zeros(cap, dtype=np.uint64)
    th[pos] = h[order]
    ta[pos] = a[order]
    header.num_entries = n
    header.garbage_size = 0
    return th, ta


def _keys_distinct(log: LogFile, header: HashHeader, h: Any, a: Any) -> bool:
    """True when no key repeats. Equal hashes are checked against the keys themselves."""
    import numpy as np

    if len(h) < 2:
        return True
    srt = np.sort(h)
    dup = srt[1:][srt[1:] == srt[:-1]]
    if not len(dup):
        return True
    bits = header.entry_block_bits
    decompress = log.codec.decompressor(log.block_size)
    for value in np.unique(dup):
        keys = [log.entry_at(int(x), bits, decompress)[1] for x in a[h == value]]
        if len(set(keys)) != len(keys):
            return False
    return True


# ---------------------------------------------------------------------------------- writing
def _finish_stats(header: HashHeader, th: Any, ta: Any) -> None:
    """max/total displacement and the collision count, computed like Sparkey does."""
    import numpy as np

    cap = header.hash_capacity
    occ = ta != 0
    slots = np.nonzero(occ)[0].astype(np.int64)
    if len(slots):
        disp = (slots - (th[slots] % np.uint64(cap)).astype(np.int64)) % cap
        header.max_displacement = int(disp.max())
        header.total_displacement = int(disp.sum())
    else:
        header.max_displacement = header.total_displacement = 0
    collisions = int(np.count_nonzero(occ[:-1] & (th[:-1] == th[1:])))
    if occ[0] and occ[-1] and th[0] == th[-1]:
        collisions += 1
    header.hash_collisions = collisions


def _write_atomically(path: Path, header: HashHeader, th: Any, ta: Any) -> None:
    import numpy as np

    dtype = np.dtype([("h", f"<u{header.hash_size}"), ("a", f"<u{header.address_size}")])
    slots = np.empty(header.hash_capacity, dtype=dtype)
    slots["h"] = th
    slots["a"] = ta
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header.pack())
            fh.write(slots.tobytes())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
