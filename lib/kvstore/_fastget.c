/* backbeat.kvstore._fastget: the Sparkey hash lookup in C.
 *
 * Why: from Python a lookup costs ~10 interpreter-level calls (hash, find, unpacks, slices); this
 * module does the whole probe in one C call over the mmapped index and log that the Python Reader
 * already holds (their buffers are acquired once, at construction).
 *
 * Format (see docs/kvstore.md): index = 112-byte header, then `capacity` slots of
 * hash (4 or 8 bytes) || address (4 or 8 bytes), little endian, address 0 = empty. Hash =
 * MurmurHash3 x86_32 or the low 64 bits of x64_128 with the header's seed. Robin Hood probing: stop
 * at an empty slot or when our displacement exceeds the resident's. Uncompressed address = file
 * offset of `vlq(klen + 1) vlq(vlen) key value`; compressed address = block offset << bits | entry
 * number in the block.
 *
 * Safety: every offset read from a file is checked against the buffer sizes before use. Damage is
 * reported by calling the Python `on_error(code, offset, address)` callable, which raises the typed
 * CorruptFileError (file + offset); nothing here can read outside the buffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define LOG_HEADER 84
#define HASH_HEADER 112

/* error codes handed to on_error(code, offset, address) */
#define E_SLOT_OUTSIDE 1 /* offset = slot position in the index, address = the bad address */
#define E_TRUNCATED 2    /* entry at `address` runs past the data end */
#define E_HEADER_CUT 3   /* entry header (varint) cut off at `offset` */
#define E_VARINT 4       /* varint longer than 10 bytes at `offset` */
#define E_DELETE 5       /* the index points at a delete entry at `address` */
#define E_CLOSED 6       /* the reader was closed */
#define E_BLOCK_OUTSIDE 7 /* a block offset (`offset`) outside the log data */
#define E_BLOCK_LENGTH 8 /* the block at `offset` has a bad length (`address` = the length read) */
#define E_SNAPPY_SIZE 9  /* the snappy block at `offset` declares `address` bytes, more than a block */
#define E_SNAPPY_BAD 10  /* the snappy block at `offset` does not decompress */
#define E_INFLATED 11    /* the block at `offset` inflates to `address` bytes, more than a block */

#define CACHE 8 /* decompressed blocks kept per table (all access under the GIL) */

/* ------------------------------------------------------------------------------ MurmurHash3 */
static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static uint32_t murmur3_x86_32(const uint8_t *data, size_t len, uint32_t seed)
{
    const uint32_t c1 = 0xcc9e2d51u, c2 = 0x1b873593u;
    uint32_t h = seed, k;
    size_t i, nblocks = len / 4;
    for (i = 0; i < nblocks; i++) {
        k = load32(data + 4 * i);
        k *= c1;
        k = rotl32(k, 15);
        k *= c2;
        h ^= k;
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64u;
    }
    const uint8_t *tail = data + 4 * nblocks;
    k = 0;
    switch (len & 3) {
    case 3: k ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: k ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1:
        k ^= tail[0];
        k *= c1;
        k = rotl32(k, 15);
        k *= c2;
        h ^= k;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* the low 64 bits (h1) of MurmurHash3 x64_128 */
static uint64_t murmur3_x64_64(const uint8_t *data, size_t len, uint32_t seed)
{
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h1 = seed, h2 = seed, k1, k2;
    size_t i, nblocks = len / 16;
    for (i = 0; i < nblocks; i++) {
        k1 = load64(data + 16 * i);
        k2 = load64(data + 16 * i + 8);
        k1 *= c1; k1 = rotl64(k1, 31); k1 *= c2; h1 ^= k1;
        h1 = rotl64(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
        k2 *= c2; k2 = rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        h2 = rotl64(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
    }
    const uint8_t *t = data + 16 * nblocks;
    k1 = k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= (uint64_t)t[14] << 48; /* fall through */
    case 14: k2 ^= (uint64_t)t[13] << 40; /* fall through */
    case 13: k2 ^= (uint64_t)t[12] << 32; /* fall through */
    case 12: k2 ^= (uint64_t)t[11] << 24; /* fall through */
    case 11: k2 ^= (uint64_t)t[10] << 16; /* fall through */
    case 10: k2 ^= (uint64_t)t[9] << 8;   /* fall through */
    case 9:
        k2 ^= (uint64_t)t[8];
        k2 *= c2; k2 = rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        /* fall through */
    case 8: k1 ^= (uint64_t)t[7] << 56; /* fall through */
    case 7: k1 ^= (uint64_t)t[6] << 48; /* fall through */
    case 6: k1 ^= (uint64_t)t[5] << 40; /* fall through */
    case 5: k1 ^= (uint64_t)t[4] << 32; /* fall through */
    case 4: k1 ^= (uint64_t)t[3] << 24; /* fall through */
    case 3: k1 ^= (uint64_t)t[2] << 16; /* fall through */
    case 2: k1 ^= (uint64_t)t[1] << 8;  /* fall through */
    case 1:
        k1 ^= (uint64_t)t[0];
        k1 *= c1; k1 = rotl64(k1, 31); k1 *= c2; h1 ^= k1;
    }
    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    return h1;
}

/* ------------------------------------------------------------------------------ the table */
typedef struct {
    PyObject_HEAD
    Py_buffer ib, lb; /* index and log buffers (held while live) */
    int live;
    const uint8_t *im, *lm;
    uint64_t cap, max_disp, end, mask;
    uint32_t seed;
    uint64_t block_size;
    int hsize, asize, ss, bits, compressed; /* compressed: 0 none, 1 snappy, 2 zstd */
    PyObject *on_error;  /* on_error(code, offset, address): raises the typed error */
    PyObject *as_bytes;  /* as_bytes(key) -> bytes, or raises KvStoreError */
    PyObject *block_for; /* block_for(block offset, start, stop) -> decompressed block */
    PyObject *slow;      /* slow(address, key) -> bytes | None: the general Python path */
    PyObject *snappy;    /* a thread-safe snappy uncompress(bytes) -> bytes, or None */
    uint64_t cache_pos[CACHE];
    PyObject *cache_data[CACHE];
    int cache_next;
} Table;

static int fail(Table *t, int code, uint64_t offset, uint64_t addr)
{
    if (t->on_error == NULL) {
        PyErr_SetString(PyExc_ValueError, "kvstore lookup table is not initialised");
        return -1;
    }
    PyObject *r = PyObject_CallFunction(t->on_error, "iKK", code, (unsigned long long)offset,
                                        (unsigned long long)addr);
    Py_XDECREF(r);
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_RuntimeError, "kvstore lookup error %d at %llu", code,
                     (unsigned long long)offset);
    return -1;
}

/* Unsigned LEB128 within [*pos, end): 0, or E_HEADER_CUT / E_VARINT */
static inline int read_vlq(const uint8_t *b, uint64_t *pos, uint64_t end, uint64_t *out)
{
    uint64_t p = *pos, v = 0;
    int shift = 0;
    for (;;) {
        if (p >= end)
            return E_HEADER_CUT;
        uint8_t byte = b[p++];
        if (shift < 64)
            v |= (uint64_t)(byte & 0x7f) << shift;
        if (byte < 0x80)
            break;
        shift += 7;
        if (shift > 63)
            return E_VARINT;
    }
    *pos = p;
    *out = v;
    return 0;
}

/* An uncompressed put at `addr` (from slot at `slot_off`): 1 and *value set when it holds `key`,
   0 when it holds another key, -1 with an exception on damage. */
static int entry_plain(Table *t, uint64_t slot_off, uint64_t addr, const uint8_t *key, Py_ssize_t klen,
                       PyObject **value)
{
    const uint8_t *lm = t->lm;
    uint64_t end = t->end, pos = addr, a, b, start;
    int rc;
    if (addr < LOG_HEADER || addr >= end)
        return fail(t, E_SLOT_OUTSIDE, slot_off, addr);
    if (pos + 1 < end && lm[pos] < 0x80 && lm[pos + 1] < 0x80) {
        a = lm[pos];
        b = lm[pos + 1];
        pos += 2;
    } else {
        start = pos;
        if ((rc = read_vlq(lm, &pos, end, &a)) != 0)
            return fail(t, rc, start, addr);
        start = pos;
        if ((rc = read_vlq(lm, &pos, end, &b)) != 0)
            return fail(t, rc, start, addr);
    }
    if (a == 0)
        return fail(t, E_DELETE, addr, addr);
    a -= 1; /* key length */
    if (a > end - pos || b > end - pos - a)
        return fail(t, E_TRUNCATED, addr, addr);
    if (a != (uint64_t)klen || memcmp(lm + pos, key, (size_t)klen) != 0)
        return 0;
    *value = PyBytes_FromStringAndSize((const char *)lm + pos + a, (Py_ssize_t)b);
    return *value ? 1 : -1;
}

static int call_slow(Table *t, uint64_t addr, PyObject *keyobj, PyObject **value)
{
    PyObject *r = PyObject_CallFunction(t->slow, "KO", (unsigned long long)addr, keyobj);
    if (r == NULL)
        return -1;
    if (r == Py_None) {
        Py_DECREF(r);
        return 0;
    }
    *value = r;
    return 1;
}

/* A compressed put: Python hands over the decompressed block (per-thread context and cache), the
   walk to the entry and the key compare happen here. Anything unusual (an entry spanning blocks,
   damage) goes to the general Python path, which raises the typed error. */
static int entry_compressed(Table *t, uint64_t addr, const uint8_t *key, Py_ssize_t klen, PyObject *keyobj,
                            PyObject **value)
{
    uint64_t n = addr & t->mask, i, p = 0, a, b, len, pos = addr >> t->bits, start, size, end = t->end;
    PyObject *block;
    int result = -1;
    /* the block header: vlq(compressed size), then the compressed bytes */
    if (pos < LOG_HEADER || pos >= end)
        return fail(t, E_BLOCK_OUTSIDE, pos, addr);
    start = pos;
    if (read_vlq(t->lm, &start, end, &size) || size == 0 || size > end - start)
        return fail(t, E_BLOCK_LENGTH, pos, start > pos ? size : 0);
    if (t->compressed == 1) { /* refuse a snappy block that declares more than a block, before inflating */
        uint64_t q = start, declared;
        if (read_vlq(t->lm, &q, start + size, &declared) || declared > t->block_size ||
            declared > 32 * size + 64)
            return fail(t, E_SNAPPY_SIZE, pos, q > start ? declared : 0);
    }
    block = NULL;
    for (i = 0; i < CACHE; i++) {
        if (t->cache_data[i] != NULL && t->cache_pos[i] == pos) {
            block = t->cache_data[i];
            Py_INCREF(block);
            break;
        }
    }
    if (block == NULL) {
        if (t->compressed == 1 && t->snappy != Py_None) { /* stateless: called directly */
            PyObject *raw = PyBytes_FromStringAndSize((const char *)t->lm + start, (Py_ssize_t)size);
            if (raw == NULL)
                return -1;
            block = PyObject_CallOneArg(t->snappy, raw);
            Py_DECREF(raw);
            if (block == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    return -1;
                PyErr_Clear();
                return fail(t, E_SNAPPY_BAD, pos, 0);
            }
            if (PyBytes_Check(block) && (uint64_t)PyBytes_GET_SIZE(block) > t->block_size) {
                uint64_t got = (uint64_t)PyBytes_GET_SIZE(block);
                Py_DECREF(block);
                return fail(t, E_INFLATED, pos, got);
            }
        } else { /* zstd: Python holds a decompression context per thread */
            block = PyObject_CallFunction(t->block_for, "KKK", (unsigned long long)pos,
                                          (unsigned long long)start, (unsigned long long)(start + size));
            if (block == NULL)
                return -1;
        }
        if (PyBytes_Check(block)) {
            Py_INCREF(block);
            Py_XSETREF(t->cache_data[t->cache_next], block);
            t->cache_pos[t->cache_next] = pos;
            t->cache_next = (t->cache_next + 1) % CACHE;
        }
    }
    if (!t->live) {
        Py_DECREF(block);
        return fail(t, E_CLOSED, 0, 0);
    }
    if (!PyBytes_Check(block)) {
        Py_DECREF(block);
        PyErr_SetString(PyExc_TypeError, "block_for must return bytes");
        return -1;
    }
    const uint8_t *blk = (const uint8_t *)PyBytes_AS_STRING(block);
    len = (uint64_t)PyBytes_GET_SIZE(block);
    for (i = 0; i < n; i++) {
        if (read_vlq(blk, &p, len, &a) || read_vlq(blk, &p, len, &b))
            goto slow;
        uint64_t size = a ? a - 1 : 0;
        if (size > len - p || b > len - p - size)
            goto slow;
        p += size + b;
    }
    if (read_vlq(blk, &p, len, &a) || read_vlq(blk, &p, len, &b) || a == 0)
        goto slow;
    a -= 1;
    if (a > len - p || b > len - p - a)
        goto slow;
    if (a != (uint64_t)klen || memcmp(blk + p, key, (size_t)klen) != 0) {
        result = 0;
    } else {
        *value = PyBytes_FromStringAndSize((const char *)blk + p + a, (Py_ssize_t)b);
        result = *value ? 1 : -1;
    }
    Py_DECREF(block);
    return result;
slow:
    Py_DECREF(block);
    return call_slow(t, addr, keyobj, value);
}

static inline uint64_t hash_key(Table *t, const uint8_t *key, Py_ssize_t klen)
{
    return t->hsize == 4 ? (uint64_t)murmur3_x86_32(key, (size_t)klen, t->seed)
                         : murmur3_x64_64(key, (size_t)klen, t->seed);
}

static inline void read_slot(Table *t, uint64_t slot, uint64_t *h, uint64_t *addr)
{
    const uint8_t *s = t->im + HASH_HEADER + slot * (uint64_t)t->ss;
    *h = t->hsize == 4 ? load32(s) : load64(s);
    *addr = t->asize == 4 ? load32(s + t->hsize) : load64(s + t->hsize);
}

/* Robin Hood probe from the home slot: returns a new reference (bytes or None), NULL on error. */
static PyObject *lookup(Table *t, const uint8_t *key, Py_ssize_t klen, PyObject *keyobj, uint64_t hv)
{
    uint64_t cap = t->cap, slot = hv % cap, d, h2, addr, limit = t->max_disp;
    PyObject *value = NULL;
    int rc;
    if (!t->live) {
        fail(t, E_CLOSED, 0, 0);
        return NULL;
    }
    if (limit >= cap)
        limit = cap - 1;
    for (d = 0; d <= limit; d++) {
        read_slot(t, slot, &h2, &addr);
        if (addr == 0)
            break;
        if (h2 == hv) {
            if (!t->compressed && addr < t->end && t->end - addr > 128) {
                /* an entry spans 2-3 cache lines: ask for all of them at once */
                __builtin_prefetch(t->lm + addr + 64);
                __builtin_prefetch(t->lm + addr + 128);
            }
            if (t->compressed)
                rc = entry_compressed(t, addr, key, klen, keyobj, &value);
            else
                rc = entry_plain(t, HASH_HEADER + slot * (uint64_t)t->ss, addr, key, klen, &value);
            if (rc < 0)
                return NULL;
            if (rc > 0)
                return value;
            if (!t->live) { /* a callback ran Python code: the reader may have been closed */
                fail(t, E_CLOSED, 0, 0);
                return NULL;
            }
        }
        uint64_t other = (slot + cap - h2 % cap) % cap;
        if (d > other)
            break;
        if (++slot == cap)
            slot = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *get_one(Table *t, PyObject *key)
{
    PyObject *value;
    if (PyBytes_CheckExact(key)) {
        const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key);
        Py_ssize_t n = PyBytes_GET_SIZE(key);
        return lookup(t, k, n, key, hash_key(t, k, n));
    }
    PyObject *b = PyObject_CallOneArg(t->as_bytes, key);
    if (b == NULL)
        return NULL;
    if (!PyBytes_Check(b)) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_TypeError, "as_bytes must return bytes");
        return NULL;
    }
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    value = lookup(t, k, n, b, hash_key(t, k, n));
    Py_DECREF(b);
    return value;
}

static PyObject *Table_get(Table *t, PyObject *key) { return get_one(t, key); }

#define BATCH 16

typedef struct {
    uint64_t addr; /* the home slot's address when its hash matches, else 0 */
    uint64_t hv;
    Py_ssize_t i;
} Pending;

static int by_address(const void *x, const void *y)
{
    const Pending *a = x, *b = y;
    if (a->addr != b->addr)
        return a->addr < b->addr ? -1 : 1;
    return a->i < b->i ? -1 : (a->i > b->i);
}

/* Compressed logs: look the keys up in the order of the address in their home slot, so keys in
   one block follow each other and the block is decompressed once (the per-thread block cache). */
static PyObject *get_many_compressed(Table *t, PyObject *keys, PyObject *out)
{
    Py_ssize_t n = PyList_GET_SIZE(keys), j;
    Pending *order = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Pending));
    if (order == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (j = 0; j < n; j++) {
        PyObject *k = PyList_GET_ITEM(keys, j);
        order[j].i = j;
        order[j].addr = 0;
        order[j].hv = 0;
        if (PyBytes_CheckExact(k)) {
            uint64_t h2, addr;
            order[j].hv = hash_key(t, (const uint8_t *)PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
            read_slot(t, order[j].hv % t->cap, &h2, &addr);
            if (h2 == order[j].hv)
                order[j].addr = addr;
        }
    }
    qsort(order, (size_t)n, sizeof(Pending), by_address);
    for (j = 0; j < n; j++) {
        PyObject *k = PyList_GET_ITEM(keys, order[j].i), *v;
        if (!t->live) {
            fail(t, E_CLOSED, 0, 0);
            goto error;
        }
        if (PyBytes_CheckExact(k))
            v = lookup(t, (const uint8_t *)PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), k, order[j].hv);
        else
            v = get_one(t, k);
        if (v == NULL)
            goto error;
        PyList_SET_ITEM(out, order[j].i, v);
    }
    PyMem_Free(order);
    return out;
error:
    PyMem_Free(order);
    Py_DECREF(out);
    return NULL;
}

/* get_many(list) -> list: batches of 16 keys are hashed first and their home slots prefetched,
   then the entries their home slots point to, so the cache misses of a batch overlap. */
static PyObject *get_many_list(Table *t, PyObject *keys);

static PyObject *Table_get_many(Table *t, PyObject *keys)
{
    if (!PyList_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "get_many expects a list");
        return NULL;
    }
    /* our own copy: callbacks run Python code, another thread could resize the caller's list */
    PyObject *own = PyList_GetSlice(keys, 0, PyList_GET_SIZE(keys));
    if (own == NULL)
        return NULL;
    PyObject *out = get_many_list(t, own);
    Py_DECREF(own);
    return out;
}

static PyObject *get_many_list(Table *t, PyObject *keys)
{
    Py_ssize_t n = PyList_GET_SIZE(keys), i, j, stop;
    PyObject *out = PyList_New(n);
    uint64_t hv[BATCH];
    if (out == NULL)
        return NULL;
    if (!t->live) {
        Py_DECREF(out);
        fail(t, E_CLOSED, 0, 0);
        return NULL;
    }
    if (t->compressed)
        return get_many_compressed(t, keys, out);
    for (i = 0; i < n; i += BATCH) {
        if (!t->live) {
            fail(t, E_CLOSED, 0, 0);
            goto error;
        }
        stop = i + BATCH < n ? i + BATCH : n;
        for (j = i; j < stop; j++) {
            PyObject *k = PyList_GET_ITEM(keys, j);
            if (PyBytes_CheckExact(k)) {
                hv[j - i] = hash_key(t, (const uint8_t *)PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
                __builtin_prefetch(t->im + HASH_HEADER + (hv[j - i] % t->cap) * (uint64_t)t->ss);
            }
        }
        {
            for (j = i; j < stop; j++) {
                PyObject *k = PyList_GET_ITEM(keys, j);
                if (PyBytes_CheckExact(k)) {
                    uint64_t h2, addr;
                    read_slot(t, hv[j - i] % t->cap, &h2, &addr);
                    if (h2 == hv[j - i] && addr >= LOG_HEADER && addr < t->end) {
                        __builtin_prefetch(t->lm + addr);
                        if (t->end - addr > 128) {
                            __builtin_prefetch(t->lm + addr + 64);
                            __builtin_prefetch(t->lm + addr + 128);
                        }
                    }
                }
            }
        }
        for (j = i; j < stop; j++) {
            PyObject *k = PyList_GET_ITEM(keys, j), *v;
            if (PyBytes_CheckExact(k))
                v = lookup(t, (const uint8_t *)PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), k, hv[j - i]);
            else
                v = get_one(t, k);
            if (v == NULL)
                goto error;
            PyList_SET_ITEM(out, j, v);
        }
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static void release_buffers(Table *t)
{
    if (t->live) {
        t->live = 0;
        PyBuffer_Release(&t->ib);
        PyBuffer_Release(&t->lb);
        t->im = t->lm = NULL;
    }
    for (int i = 0; i < CACHE; i++)
        Py_CLEAR(t->cache_data[i]);
}

static PyObject *Table_release(Table *t, PyObject *Py_UNUSED(ignored))
{
    release_buffers(t);
    Py_RETURN_NONE;
}

static int Table_init(Table *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"index", "log", "capacity", "hash_size", "address_size", "seed",
                             "max_displacement", "data_end", "entry_block_bits", "compression",
                             "block_size", "on_error", "as_bytes", "block_for", "slow", "snappy", NULL};
    unsigned long long cap, max_disp, end, block_size;
    unsigned long seed;
    int hsize, asize, bits, compressed;
    PyObject *on_error, *as_bytes, *block_for, *slow, *snappy;
    Py_buffer ib, lb;
    if (t->live) {
        PyErr_SetString(PyExc_RuntimeError, "Table already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*KiikKKiiKOOOOO", kwlist, &ib, &lb, &cap, &hsize, &asize,
                                     &seed, &max_disp, &end, &bits, &compressed, &block_size, &on_error,
                                     &as_bytes,
                                     &block_for, &slow, &snappy))
        return -1;
    const char *bad = NULL;
    if ((hsize != 4 && hsize != 8) || (asize != 4 && asize != 8))
        bad = "hash and address sizes must be 4 or 8";
    else if ((uint64_t)ib.len < HASH_HEADER || cap < 1 ||
             cap > ((uint64_t)ib.len - HASH_HEADER) / (uint64_t)(hsize + asize))
        bad = "index buffer too small for its capacity";
    else if (end < LOG_HEADER || end > (uint64_t)lb.len)
        bad = "data_end outside the log buffer";
    else if (bits < 0 || bits > 31)
        bad = "entry_block_bits out of range";
    else if (compressed < 0 || compressed > 2)
        bad = "compression must be 0, 1 or 2";
    else if (seed > 0xffffffffUL)
        bad = "seed must fit 32 bits";
    if (bad) {
        PyBuffer_Release(&ib);
        PyBuffer_Release(&lb);
        PyErr_SetString(PyExc_ValueError, bad);
        return -1;
    }
    t->ib = ib;
    t->lb = lb;
    t->im = (const uint8_t *)ib.buf;
    t->lm = (const uint8_t *)lb.buf;
    t->cap = cap;
    t->max_disp = max_disp;
    t->end = end;
    t->seed = (uint32_t)seed;
    t->hsize = hsize;
    t->asize = asize;
    t->ss = hsize + asize;
    t->bits = bits;
    t->mask = ((uint64_t)1 << bits) - 1;
    t->compressed = compressed;
    t->block_size = block_size;
    Py_INCREF(on_error);
    Py_INCREF(as_bytes);
    Py_INCREF(block_for);
    Py_INCREF(slow);
    Py_INCREF(snappy);
    Py_XSETREF(t->snappy, snappy);
    Py_XSETREF(t->on_error, on_error);
    Py_XSETREF(t->as_bytes, as_bytes);
    Py_XSETREF(t->block_for, block_for);
    Py_XSETREF(t->slow, slow);
    t->live = 1;
    return 0;
}

static int Table_traverse(Table *t, visitproc visit, void *arg)
{
    Py_VISIT(t->on_error);
    Py_VISIT(t->as_bytes);
    Py_VISIT(t->block_for);
    Py_VISIT(t->slow);
    Py_VISIT(t->snappy);
    return 0;
}

static int Table_clear(Table *t)
{
    Py_CLEAR(t->on_error);
    Py_CLEAR(t->as_bytes);
    Py_CLEAR(t->block_for);
    Py_CLEAR(t->slow);
    Py_CLEAR(t->snappy);
    for (int i = 0; i < CACHE; i++)
        Py_CLEAR(t->cache_data[i]);
    return 0;
}

static void Table_dealloc(Table *t)
{
    PyObject_GC_UnTrack(t);
    release_buffers(t);
    Table_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef Table_methods[] = {
    {"get", (PyCFunction)Table_get, METH_O, "get(key) -> bytes | None"},
    {"get_many", (PyCFunction)Table_get_many, METH_O, "get_many(list of keys) -> list of bytes | None"},
    {"release", (PyCFunction)Table_release, METH_NOARGS, "release the buffers (before unmapping them)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "backbeat.kvstore._fastget.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Lookups over a Sparkey index and log held as buffers.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Table_init,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_traverse = (traverseproc)Table_traverse,
    .tp_clear = (inquiry)Table_clear,
    .tp_methods = Table_methods,
};

/* ------------------------------------------------------------------------------ module */
static PyObject *py_murmur32(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer b;
    unsigned long seed;
    if (!PyArg_ParseTuple(args, "y*k", &b, &seed))
        return NULL;
    uint32_t h = murmur3_x86_32((const uint8_t *)b.buf, (size_t)b.len, (uint32_t)seed);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(h);
}

static PyObject *py_murmur64(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer b;
    unsigned long seed;
    if (!PyArg_ParseTuple(args, "y*k", &b, &seed))
        return NULL;
    uint64_t h = murmur3_x64_64((const uint8_t *)b.buf, (size_t)b.len, (uint32_t)seed);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef module_methods[] = {
    {"murmur32", py_murmur32, METH_VARARGS, "MurmurHash3 x86_32 (unsigned) of bytes with a 32-bit seed"},
    {"murmur64", py_murmur64, METH_VARARGS, "low 64 bits (unsigned) of MurmurHash3 x64_128"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastget_module = {
    PyModuleDef_HEAD_INIT, "_fastget", "Sparkey hash lookups in C for backbeat.kvstore.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastget(void)
{
    if (PyType_Ready(&TableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastget_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
