"""Full consistency check of a store (``backbeat kv verify``): every byte of the log is parsed,
every index slot is checked, every live key is looked up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backbeat.kvstore.errors import CorruptFileError
from backbeat.kvstore.reader import Reader


def verify_store(
    index_path: str | Path, log_path: str | Path | None = None, progress: Any = None
) -> dict[str, int]:
    """Return figures on success; raise a CorruptFileError naming the file and offset otherwise."""
    import numpy as np

    with Reader(index_path, log_path) as r:
        h = r.header
        table = r._table()
        hashes = table["h"].astype(np.uint64)
        addrs = table["a"].astype(np.uint64)
        occupied = np.nonzero(addrs)[0]
        if len(occupied) != h.num_entries:
            raise CorruptFileError(
                r.index_path, 52, f"header says {h.num_entries} entries, {len(occupied)} slots used"
            )
        disp = occupied.astype(np.int64) - (hashes[occupied] % np.uint64(h.hash_capacity)).astype(np.int64)
        disp %= h.hash_capacity
        if len(disp) and int(disp.max()) != h.max_displacement:
            raise CorruptFileError(
                r.index_path, 84, f"max displacement {h.max_displacement}, table has {int(disp.max())}"
            )
        puts = deletes = 0
        live = set(addrs[occupied].tolist())
        found = 0
        total = r._log.header.num_puts + r._log.header.num_deletes
        bits = h.entry_block_bits
        for n, (kind, key, value, pos, number) in enumerate(r._log.entries(), 1):
            if kind:
                puts += 1
                if (pos << bits | number) in live:
                    found += 1
                    if r.get(key) != value:
                        raise CorruptFileError(
                            r.index_path, None, f"lookup of key {key[:40]!r} does not return its value"
                        )
            else:
                deletes += 1
            if progress is not None and not n & 0x3FFF:
                progress(n, total)
        lh = r._log.header
        if (puts, deletes) != (lh.num_puts, lh.num_deletes):
            raise CorruptFileError(
                r.log_path,
                16,
                f"header counts {lh.num_puts} puts/{lh.num_deletes} deletes, log holds {puts}/{deletes}",
            )
        if found != len(live):
            raise CorruptFileError(
                r.index_path, None, f"{len(live) - found} index slots point at no put entry"
            )
        if progress is not None:
            progress(total, total)
        return {
            "entries": h.num_entries,
            "puts": puts,
            "deletes": deletes,
            "slots": h.hash_capacity,
            "max_displacement": h.max_displacement,
        }
