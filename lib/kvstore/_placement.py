"""Compiled (numba) Robin Hood insertion for logs whose keys are all distinct.

It replays exactly the insertion rule of the ``exact`` builder (and of Sparkey's C library): walk
from the home slot, steal the slot of an entry whose displacement is smaller than ours, carry the
evicted entry on. With distinct keys no key ever needs comparing, so the whole replay runs over
two integer arrays at tens of nanoseconds per entry, and the table it produces is byte-for-byte
the one the reference builds for the same seed and log order.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def place(hashes, addrs, cap):  # pragma: no cover - compiled
    th = np.zeros(cap, np.uint64)
    ta = np.zeros(cap, np.uint64)
    ucap = np.uint64(cap)
    for i in range(hashes.shape[0]):
        h = hashes[i]
        addr = addrs[i]
        slot = np.int64(h % ucap)
        d = 0
        while True:
            a2 = ta[slot]
            if a2 == 0:
                th[slot] = h
                ta[slot] = addr
                break
            h2 = th[slot]
            other = (slot - np.int64(h2 % ucap)) % cap
            if d > other:
                th[slot] = h
                ta[slot] = addr
                h = h2
                addr = a2
                d = other
            d += 1
            slot += 1
            if slot == cap:
                slot = 0
    return th, ta
