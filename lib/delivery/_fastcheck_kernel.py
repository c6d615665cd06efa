"""The numba kernel of fastcheck.py (imported on first use only: numba is heavy to import).

``walk_block`` walks every block of a ``null``-codec Avro container from ``pos``, running the
schema program (opcodes of fastcheck.py) once per record. Any doubt returns ok=0; the caller then
decodes with fastavro. Opcode values must match fastcheck.py.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NULL, _BOOLEAN, _INT, _LONG, _FLOAT, _DOUBLE, _BYTES, _STRING, _ENUM, _FIXED, _UNION = range(11)


@njit(cache=True, nogil=True, inline="always")
def _varint(buf, pos, end):  # noqa: ANN001, ANN202 - numba
    result = np.uint64(0)
    shift = 0
    while True:
        if pos >= end or shift > 63:
            return np.int64(0), pos, False
        b = np.uint64(buf[pos])
        pos += 1
        if shift == 63 and b > 1:
            return np.int64(0), pos, False
        result |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if b < 0x80:
            v = np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1))
            return v, pos, True
        shift += 7


@njit(cache=True, nogil=True, inline="always")
def _utf8_ok(buf, pos, end):  # noqa: ANN001, ANN202 - numba
    """Strict UTF-8 (what Python's decode accepts: no overlongs, no surrogates, <= U+10FFFF)."""
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            pos += 1
            continue
        if 0xC2 <= b <= 0xDF:
            if pos + 1 >= end or (buf[pos + 1] & 0xC0) != 0x80:
                return False
            pos += 2
        elif 0xE0 <= b <= 0xEF:
            if pos + 2 >= end:
                return False
            c1, c2 = buf[pos + 1], buf[pos + 2]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80:
                return False
            if b == 0xE0 and c1 < 0xA0:
                return False
            if b == 0xED and c1 > 0x9F:
                return False
            pos += 3
        elif 0xF0 <= b <= 0xF4:
            if pos + 3 >= end:
                return False
            c1, c2, c3 = buf[pos + 1], buf[pos + 2], buf[pos + 3]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80 or (c3 & 0xC0) != 0x80:
                return False
            if b == 0xF0 and c1 < 0x90:
                return False
            if b == 0xF4 and c1 > 0x8F:
                return False
            pos += 4
        else:
            return False
    return True


@njit(cache=True, nogil=True)
def walk_block(buf, pos, sync, ops, args, out, recv):  # noqa: ANN001, ANN201 - numba
    """Returns int64[4]: records, bytes written to ``out`` (ids, each followed by \\n), longest id
    in bytes, ok (1) / doubt (0)."""
    res = np.zeros(4, dtype=np.int64)
    n = buf.shape[0]
    nops = ops.shape[0]
    nrec = 0
    nout = 0
    maxid = 0
    while pos < n:
        count, pos, ok = _varint(buf, pos, n)
        if not ok or count < 0:
            return res
        size, pos, ok = _varint(buf, pos, n)
        if not ok or size < 0 or pos + size + 16 > n:
            return res
        end = pos + size
        for _ in range(count):
            if nrec >= recv.shape[0]:
                return res
            i = 0
            while i < nops:
                op = ops[i]
                arg = args[i]
                step = 1
                if op == _UNION:
                    idx, pos, ok = _varint(buf, pos, end)
                    if not ok or idx < 0 or idx >= arg:
                        return res
                    step = arg + 1
                    op = ops[i + 1 + idx]
                    arg = args[i + 1 + idx]
                if op == _NULL:
                    pass
                elif op == _BOOLEAN:
                    if pos >= end or buf[pos] > 1:
                        return res
                    pos += 1
                elif op == _INT or op == _LONG or op == _ENUM:
                    v, pos, ok = _varint(buf, pos, end)
                    if not ok:
                        return res
                    if op == _INT and (v < -2147483648 or v > 2147483647):
                        return res
                    if op == _ENUM and (v < 0 or v >= arg):
                        return res
                    if i == 1:
                        recv[nrec] = v
                elif op == _FLOAT or op == _DOUBLE or op == _FIXED:
                    width = 4 if op == _FLOAT else 8 if op == _DOUBLE else arg
                    if width < 0 or pos + width > end:
                        return res
                    pos += width
                elif op == _BYTES or op == _STRING:
                    ln, pos, ok = _varint(buf, pos, end)
                    if not ok or ln < 0 or pos + ln > end:
                        return res
                    if op == _STRING and not _utf8_ok(buf, pos, pos + ln):
                        return res
                    if i == 0:
                        if ln == 0:
                            return res
                        for k in range(ln):
                            c = buf[pos + k]
                            if c == 10:
                                return res
                            out[nout + k] = c
                        out[nout + ln] = 10
                        nout += ln + 1
                        if ln > maxid:
                            maxid = ln
                    pos += ln
                else:
                    return res
                i += step
            nrec += 1
        if pos != end:
            return res
        for k in range(16):
            if buf[end + k] != sync[k]:
                return res
        pos = end + 16
    res[0] = nrec
    res[1] = nout
    res[2] = maxid
    res[3] = 1
    return res
