/* Batch SHA-256 and RFC 8785 row assembly for the decision trace: many small messages per call,
 * the GIL released.
 *
 * Why this is hand-written: hashlib hashes one message per Python call (about 0.5 us of overhead
 * each, and it holds the GIL for inputs under 2 KiB), and no maintained package hashes an Arrow
 * column of small messages in one call (DuckDB's sha256() measured slower than hashlib here).
 * Building each record's canonical JSON with Arrow kernels costs a pass (and an allocation) per
 * column; here a row is written once, from the column buffers, straight into the hash input.
 *
 *   sha256_rows(parts, n) -> bytes (n * 32)
 *       row i's message is the concatenation, in order, of each part's row i: a part is either a
 *       bytes-like constant (the same for every row) or a tuple (offsets, data, offset) holding
 *       the int32 offsets buffer and the data buffer of an Arrow string/binary array and the
 *       array's slice offset.
 *   json_rows(parts, n, text) -> bytes (n * 32), or (offsets, data) when text is true
 *       like sha256_rows, with typed column parts that are formatted as RFC 8785 JSON values:
 *         (0, offsets, data, offset, validity, null)  string written as is (pre-formatted JSON)
 *         (1, offsets, data, offset, validity, null)  string as a JSON string literal
 *         (2, values, offset, validity, null)         int64 as a JSON number
 *         (3, offsets, offset, validity, null, child_offsets, child_data, child_offset)
 *                                                     list<string> as a JSON array of strings
 *         (4, indices, offset, validity, null, dict_offsets, dict_data, dict_offset, dict_length)
 *                                                     dictionary<int32, string>: the value as a
 *                                                     JSON string literal
 *         (5, text)                                   numbers: text is a JSON array of numbers
 *                                                     (orjson's shortest round-trip output, null
 *                                                     for a missing value), one per row, rewritten
 *                                                     in ECMAScript's Number::toString form
 *         (6, offsets, offset, validity, null, indices, indices_offset, child_validity,
 *          dict_offsets, dict_data, dict_offset, dict_length)
 *                                                     list<dictionary<int32, string>> as a JSON
 *                                                     array of strings
 *       validity is the Arrow validity bitmap or None; null is the bytes written for a null value
 *       (None: a null is an error). text=True returns the JSON itself (int32 offsets + data).
 *   leaf_hashes(hashes) -> bytes    SHA-256(0x00 || h) for each 32-byte h (RFC 9162 leaf)
 *   node_hashes(pairs) -> bytes     SHA-256(0x01 || l || r) for each 64-byte l || r (RFC 9162 node)
 *   hmac_rows(key, offsets, data, offset, n) -> bytes (n * 32)   HMAC-SHA-256 of each string
 *   accelerated(flag=None) -> bool  whether the SHA-NI path is used (flag switches it, for tests)
 *
 * SHA-256 is OpenSSL's, except on x86 CPUs with the SHA extensions, where two messages are
 * hashed side by side with SHA-NI (OpenSSL hashes one message at a time, and one message is
 * bound by the latency of the round instruction). Why this hand-written path is kept (issue 22:
 * delete it if OpenSSL is within 10%): measured 2026-12-07 on the 2-core AMD EPYC (Zen 3, family 25) dev
 * machine, OpenSSL 3.0.19, one thread, 200k messages, best of 15, against accelerated(False):
 * record JSON 170/330/500 bytes 1.03-1.05x / 1.14-1.16x / 1.13-1.16x, RFC 9162 leaves 1.57-1.61x,
 * nodes 1.42-1.45x; per decision (record + leaf + node) ~1.23x at 170 bytes, ~1.26x at 330
 * (earlier rounds: 1.17-1.35x). `assay bench trace` reports native_vs_openssl each run.
 * Every function is checked against hashlib (and json_rows against the reference RFC 8785
 * library) in tests/trace/test_trace_native.py, on both paths.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The low-level API: OpenSSL 3's one-shot SHA256() fetches an EVP method per call, which costs
 * more than hashing a short message. */
static inline void sha256(const uint8_t *data, size_t len, uint8_t *out) {
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, data, len);
    SHA256_Final(out, &ctx);
}

/* ------------------------------------------------------------------ SHA-NI, two at a time */

#define PAD_ROOM 72 /* a message buffer holds len + PAD_ROOM bytes so it can be padded in place */

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define HAVE_SHANI_CODE 1
#include <cpuid.h>
#include <immintrin.h>

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

static const uint32_t K256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

/* The state is kept as the instructions want it: (A, B, E, F) and (C, D, G, H). */
SHANI static inline void ni_init(__m128i *s0, __m128i *s1) {
    *s0 = _mm_set_epi32(0x6a09e667, (int)0xbb67ae85, 0x510e527f, (int)0x9b05688c);
    *s1 = _mm_set_epi32(0x3c6ef372, (int)0xa54ff53a, 0x1f83d9ab, 0x5be0cd19);
}

#define BSWAP32 _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL)

/* One 64-byte block of each of two messages, interleaved instruction by instruction. */
SHANI static inline void ni_block2(__m128i *s, const uint8_t *p, const uint8_t *q) {
    const __m128i mask = BSWAP32;
    __m128i a0 = s[0], a1 = s[1], b0 = s[2], b1 = s[3], w[4], v[4];
    for (int i = 0; i < 4; i++) {
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
        v[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(q + 16 * i)), mask);
    }
    for (int i = 0; i < 16; i++) {
        if (i >= 4) { /* message schedule: the next four words from the previous sixteen */
            __m128i t = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
            __m128i u = _mm_sha256msg1_epu32(v[i & 3], v[(i + 1) & 3]);
            t = _mm_add_epi32(t, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
            u = _mm_add_epi32(u, _mm_alignr_epi8(v[(i + 3) & 3], v[(i + 2) & 3], 4));
            w[i & 3] = _mm_sha256msg2_epu32(t, w[(i + 3) & 3]);
            v[i & 3] = _mm_sha256msg2_epu32(u, v[(i + 3) & 3]);
        }
        __m128i k = _mm_load_si128((const __m128i *)(K256 + 4 * i));
        __m128i m = _mm_add_epi32(w[i & 3], k), n = _mm_add_epi32(v[i & 3], k);
        a1 = _mm_sha256rnds2_epu32(a1, a0, m);
        b1 = _mm_sha256rnds2_epu32(b1, b0, n);
        a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32(m, 0x0E));
        b0 = _mm_sha256rnds2_epu32(b0, b1, _mm_shuffle_epi32(n, 0x0E));
    }
    s[0] = _mm_add_epi32(a0, s[0]);
    s[1] = _mm_add_epi32(a1, s[1]);
    s[2] = _mm_add_epi32(b0, s[2]);
    s[3] = _mm_add_epi32(b1, s[3]);
}

SHANI static inline void ni_block1(__m128i *s, const uint8_t *p) {
    const __m128i mask = BSWAP32;
    __m128i a0 = s[0], a1 = s[1], w[4];
    for (int i = 0; i < 4; i++)
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
    for (int i = 0; i < 16; i++) {
        if (i >= 4) {
            __m128i t = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
            t = _mm_add_epi32(t, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
            w[i & 3] = _mm_sha256msg2_epu32(t, w[(i + 3) & 3]);
        }
        __m128i m = _mm_add_epi32(w[i & 3], _mm_load_si128((const __m128i *)(K256 + 4 * i)));
        a1 = _mm_sha256rnds2_epu32(a1, a0, m);
        a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32(m, 0x0E));
    }
    s[0] = _mm_add_epi32(a0, s[0]);
    s[1] = _mm_add_epi32(a1, s[1]);
}

SHANI static inline void ni_out(const __m128i *s, uint8_t *out) {
    __m128i t = _mm_shuffle_epi32(s[0], 0x1B);  /* F E B A -> A B E F */
    __m128i u = _mm_shuffle_epi32(s[1], 0xB1);  /* H G D C -> G H C D */
    __m128i abcd = _mm_blend_epi16(t, u, 0xF0);
    __m128i efgh = _mm_alignr_epi8(u, t, 8);
    _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(abcd, BSWAP32));
    _mm_storeu_si128((__m128i *)(out + 16), _mm_shuffle_epi8(efgh, BSWAP32));
}

/* SHA-256 padding in place (the buffer has PAD_ROOM spare bytes); returns the block count. */
static inline size_t pad(uint8_t *buf, size_t len) {
    size_t blocks = (len + 9 + 63) / 64, end = blocks * 64;
    uint64_t bits = (uint64_t)len * 8;
    buf[len] = 0x80;
    memset(buf + len + 1, 0, end - len - 9);
    for (int i = 0; i < 8; i++)
        buf[end - 1 - i] = (uint8_t)(bits >> (8 * i));
    return blocks;
}

/* Rows of one batch often begin alike (a record's JSON opens with its action, then columns that
 * hold one value in the batch: ~180 equal bytes), so the state after their first two blocks is
 * kept for a few distinct openings and reused: ~2 of a record's 9 blocks. Exact: the state after
 * a block depends on nothing but the blocks before it, compared here byte for byte. */
#define PREFIX_BLOCKS 2
#define PREFIX_SLOTS 8
typedef struct {
    uint8_t bytes[PREFIX_SLOTS][64 * PREFIX_BLOCKS];
    __m128i state[PREFIX_SLOTS][2];
    int count, next;
} Prefixes;

/* The state to start message m (na padded blocks) from, and the first block still to hash. */
SHANI static size_t ni_start(Prefixes *c, const uint8_t *m, size_t na, __m128i *s) {
    ni_init(&s[0], &s[1]);
    if (!c || na <= PREFIX_BLOCKS)
        return 0;
    for (int k = 0; k < c->count; k++)
        if (memcmp(c->bytes[k], m, sizeof(c->bytes[k])) == 0) {
            s[0] = c->state[k][0];
            s[1] = c->state[k][1];
            return PREFIX_BLOCKS;
        }
    for (size_t k = 0; k < PREFIX_BLOCKS; k++)
        ni_block1(s, m + 64 * k);
    int slot = c->next;
    c->next = (c->next + 1) % PREFIX_SLOTS;
    if (c->count < PREFIX_SLOTS)
        c->count++;
    memcpy(c->bytes[slot], m, sizeof(c->bytes[slot]));
    c->state[slot][0] = s[0];
    c->state[slot][1] = s[1];
    return PREFIX_BLOCKS;
}

SHANI static void ni_digest2(uint8_t *a, size_t la, uint8_t *oa, uint8_t *b, size_t lb, uint8_t *ob, Prefixes *c) {
    size_t na = pad(a, la), nb = pad(b, lb);
    __m128i s[4];
    size_t ka = ni_start(c, a, na, s), kb = ni_start(c, b, nb, s + 2);
    for (; ka < na && kb < nb; ka++, kb++)
        ni_block2(s, a + 64 * ka, b + 64 * kb);
    for (; ka < na; ka++)
        ni_block1(s, a + 64 * ka);
    for (; kb < nb; kb++)
        ni_block1(s + 2, b + 64 * kb);
    ni_out(s, oa);
    ni_out(s + 2, ob);
}

SHANI static void ni_digest1(uint8_t *a, size_t la, uint8_t *oa, Prefixes *c) {
    size_t na = pad(a, la);
    __m128i s[2];
    for (size_t k = ni_start(c, a, na, s); k < na; k++)
        ni_block1(s, a + 64 * k);
    ni_out(s, oa);
}

static int cpu_has_shani(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b >> 29) & 1;
}
#else
#define HAVE_SHANI_CODE 0
typedef struct {
    int unused;
} Prefixes;
static int cpu_has_shani(void) { return 0; }
#endif

static int shani_supported = 0, use_shani = 0;

/* SHA-256 of two messages held in buffers with PAD_ROOM spare bytes (their tails may be
 * overwritten). b may be NULL (one message); c, where not NULL, keeps common openings. */
static inline void digest2(uint8_t *a, size_t la, uint8_t *oa, uint8_t *b, size_t lb, uint8_t *ob, Prefixes *c) {
#if HAVE_SHANI_CODE
    if (use_shani) {
        if (b)
            ni_digest2(a, la, oa, b, lb, ob, c);
        else
            ni_digest1(a, la, oa, c);
        return;
    }
#else
    (void)c;
#endif
    sha256(a, la, oa);
    if (b)
        sha256(b, lb, ob);
}

/* ------------------------------------------------------------------ buffers from Python */

typedef struct {
    Py_buffer views[8];
    int held[8];
    int count;
} Views;

static void views_release(Views *v) {
    for (int k = 0; k < v->count; k++)
        if (v->held[k])
            PyBuffer_Release(&v->views[k]);
    v->count = 0;
}

/* A buffer from a bytes-like object (NULL and length 0 for None when allow_none). */
static int get_buffer(Views *v, PyObject *ob, const uint8_t **buf, Py_ssize_t *len, int allow_none) {
    if (ob == Py_None && allow_none) {
        *buf = NULL;
        *len = 0;
        return 0;
    }
    if (v->count >= 8) {
        PyErr_SetString(PyExc_ValueError, "too many buffers in one part");
        return -1;
    }
    Py_buffer *view = &v->views[v->count];
    if (PyObject_GetBuffer(ob, view, PyBUF_SIMPLE) < 0)
        return -1;
    v->held[v->count++] = 1;
    *buf = view->buf;
    *len = view->len;
    return 0;
}

/* Offsets [off, off + n] of an int32 offsets buffer: long enough, rising, inside data_len. */
static int check_offsets(const uint8_t *buf, Py_ssize_t len, Py_ssize_t off, Py_ssize_t n, Py_ssize_t data_len,
                         Py_ssize_t part) {
    if (off < 0 || (size_t)len < (size_t)(off + n + 1) * sizeof(int32_t)) {
        PyErr_Format(PyExc_ValueError, "part %zd: the offsets buffer is too short for %zd rows", part, n);
        return -1;
    }
    const int32_t *o = (const int32_t *)buf + off;
    if (o[0] < 0 || (n && o[n] > data_len)) {
        PyErr_Format(PyExc_ValueError, "part %zd: offsets point outside the data buffer", part);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (o[i + 1] < o[i]) {
            PyErr_Format(PyExc_ValueError, "part %zd: offsets decrease at row %zd", part, i);
            return -1;
        }
    return 0;
}

static int check_validity(const uint8_t *buf, Py_ssize_t len, Py_ssize_t off, Py_ssize_t n, Py_ssize_t part) {
    if (buf && (size_t)len < (size_t)(off + n + 7) / 8) {
        PyErr_Format(PyExc_ValueError, "part %zd: the validity bitmap is too short", part);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the row template */

enum { CONST = -1, RAW = 0, QUOTED = 1, INT64 = 2, LIST = 3, DICT = 4, NUMBERS = 5, LIST_DICT = 6 };

typedef struct {
    int kind;
    const int32_t *offsets;  /* RAW, QUOTED, LIST (the list offsets) */
    const uint8_t *data;     /* CONST, RAW, QUOTED: bytes; INT64: the int64 values; DICT: int32 indices */
    Py_ssize_t length;       /* CONST: its length */
    const uint8_t *validity; /* NULL: no nulls */
    Py_ssize_t offset;       /* the array's slice offset (validity bits, INT64 values) */
    const uint8_t *null;     /* written for a null value; NULL: a null is an error */
    Py_ssize_t null_len;
    const int32_t *child_offsets; /* LIST: the strings; DICT: the dictionary */
    const uint8_t *child_data;
    const uint8_t *child_validity;
    Py_ssize_t child_offset;
    const uint8_t *end, *child_end; /* where the data may be read up to */
    uint8_t *own;                   /* CONST: a copy with 16 readable bytes to spare */
    Py_ssize_t cursor;              /* NUMBERS: where the next row's number starts in data */
    size_t *quoted_offsets;         /* DICT, LIST_DICT: each value's JSON string literal, in own */
    const int32_t *indices;         /* LIST_DICT: the items' dictionary indices */
} Part;

static inline int is_null(const uint8_t *validity, Py_ssize_t bit) {
    return validity && !((validity[bit >> 3] >> (bit & 7)) & 1);
}

/* RFC 8785 string escaping (ECMAScript JSON.stringify): '"' and '\\' escaped, control characters
 * as \b \t \n \f \r or \u00xx (lower-case hex); everything else, UTF-8 included, as is. */
static inline int special_byte(uint8_t c) { return c < 0x20 || c == '"' || c == '\\'; }

/* Whether any of 8 bytes is < 0x20, '"' or '\\' (exact; bit tricks from "Bit Twiddling Hacks"). */
static inline uint64_t special_word(uint64_t x) {
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    return ((x - ones * 0x20) & ~x & high) | ((q - ones) & ~q & high) | ((b - ones) & ~b & high);
}

static inline int needs_escape(const uint8_t *s, size_t len) {
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (special_word(x))
            return 1;
    }
    for (; i < len; i++)
        if (special_byte(s[i]))
            return 1;
    return 0;
}

static inline size_t escaped_size(const uint8_t *s, size_t len) {
    if (!needs_escape(s, len))
        return len;
    size_t extra = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        if (c < 0x20)
            extra += (c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r') ? 1 : 5;
        else if (c == '"' || c == '\\')
            extra += 1;
    }
    return len + extra;
}

static inline uint8_t *write_escaped(uint8_t *dst, const uint8_t *s, size_t len, size_t size) {
    if (size == len) {
        memcpy(dst, s, len);
        return dst + len;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            *dst++ = '\\';
            *dst++ = c;
        } else if (c < 0x20) {
            *dst++ = '\\';
            switch (c) {
            case '\b': *dst++ = 'b'; break;
            case '\t': *dst++ = 't'; break;
            case '\n': *dst++ = 'n'; break;
            case '\f': *dst++ = 'f'; break;
            case '\r': *dst++ = 'r'; break;
            default:
                *dst++ = 'u';
                *dst++ = '0';
                *dst++ = '0';
                *dst++ = hex[c >> 4];
                *dst++ = hex[c & 15];
            }
        } else {
            *dst++ = c;
        }
    }
    return dst;
}

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} Out;

static inline int reserve(Out *o, size_t extra) {
    size_t need = o->len + extra + PAD_ROOM;
    if (need <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < need)
        cap *= 2;
    uint8_t *bigger = realloc(o->buf, cap);
    if (!bigger)
        return -1;
    o->buf = bigger;
    o->cap = cap;
    return 0;
}

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Copy len bytes from s to d, and say (when check is set) whether any needs escaping. Where the
 * source may be read in whole 16-byte chunks (s + len rounded up stays before end) this is one
 * vector load, store and compare a chunk; d always has PAD_ROOM (>= 16) bytes to spare. Rows
 * are made of ~36 short pieces, where a call to memcpy costs more than the copy. */
static inline int copy_piece(uint8_t *d, const uint8_t *s, size_t len, const uint8_t *end, int check) {
#ifdef __SSE2__
    if ((size_t)(end - s) >= ((len + 15) & ~(size_t)15)) {
        const __m128i low = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\');
        int found = 0;
        for (size_t k = 0; k < len; k += 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(s + k));
            _mm_storeu_si128((__m128i *)(d + k), x);
            if (check) {
                __m128i ok = _mm_cmpeq_epi8(_mm_max_epu8(x, low), x); /* x >= 0x20 */
                __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, slash));
                unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(bad, _mm_andnot_si128(ok, _mm_set1_epi8(-1))));
                if (len - k < 16)
                    m &= (1u << (len - k)) - 1;
                found |= m != 0;
            }
        }
        return found;
    }
#endif
    memcpy(d, s, len);
    return check && needs_escape(s, len);
}

static inline int put(Out *o, const uint8_t *s, size_t len, const uint8_t *end) {
    if (reserve(o, len) < 0)
        return -1;
    copy_piece(o->buf + o->len, s, len, end, 0);
    o->len += len;
    return 0;
}

static inline int put_quoted(Out *o, const uint8_t *s, size_t len, const uint8_t *end) {
    if (reserve(o, len + 2) < 0)
        return -1;
    uint8_t *at = o->buf + o->len;
    *at = '"';
    if (!copy_piece(at + 1, s, len, end, 1)) {
        at[len + 1] = '"';
        o->len += len + 2;
        return 0;
    }
    size_t size = escaped_size(s, len);
    if (reserve(o, size + 2) < 0)
        return -1;
    at = o->buf + o->len;
    *at++ = '"';
    at = write_escaped(at, s, len, size);
    *at++ = '"';
    o->len = (size_t)(at - o->buf);
    return 0;
}

static inline int put_int(Out *o, int64_t v) {
    uint8_t tmp[24];
    int k = 24;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--k] = (uint8_t)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--k] = '-';
    return put(o, tmp + k, (size_t)(24 - k), tmp + 24);
}

/* One number of a JSON array (shortest round-trip digits, any notation) rewritten as ECMAScript's
 * Number::toString writes it (RFC 8785 section 3.2.2.3): digits s (k of them, no leading or
 * trailing zeros) and n with value 0.s * 10^n; positional when -6 < n <= 21, else an exponent.
 * Returns 0, -1 on no memory, -3 on a malformed number. */
static int put_js_number(Out *o, const uint8_t *t, size_t len) {
    uint8_t digits[40];
    size_t k = 0, i = 0;
    long point = 0, exponent = 0;
    int negative = 0, seen_point = 0, any = 0;
    if (i < len && t[i] == '-')
        negative = 1, i++;
    for (; i < len && (t[i] == '.' || (t[i] >= '0' && t[i] <= '9')); i++) {
        if (t[i] == '.') {
            if (seen_point)
                return -3;
            seen_point = 1;
            continue;
        }
        any = 1;
        if (k == 0 && t[i] == '0') { /* a leading zero moves the point left (after the point) */
            if (seen_point)
                point--;
            continue;
        }
        if (k >= sizeof(digits))
            return -3; /* more than a double's shortest digits */
        digits[k++] = t[i];
        if (!seen_point)
            point++;
    }
    if (!any)
        return -3;
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        int eneg = 0, edigits = 0;
        i++;
        if (i < len && (t[i] == '+' || t[i] == '-'))
            eneg = t[i++] == '-';
        for (; i < len && t[i] >= '0' && t[i] <= '9' && edigits < 5; i++, edigits++)
            exponent = exponent * 10 + (t[i] - '0');
        if (!edigits)
            return -3;
        if (eneg)
            exponent = -exponent;
    }
    if (i != len)
        return -3;
    while (k && digits[k - 1] == '0')
        k--;
    if (reserve(o, 32 + k) < 0)
        return -1;
    uint8_t *at = o->buf + o->len;
    if (k == 0) { /* zero, -0 included */
        *at++ = '0';
        o->len = (size_t)(at - o->buf);
        return 0;
    }
    long n = point + exponent;
    if (negative)
        *at++ = '-';
    if ((long)k <= n && n <= 21) {
        memcpy(at, digits, k), at += k;
        for (long z = 0; z < n - (long)k; z++)
            *at++ = '0';
    } else if (0 < n && n <= 21) {
        memcpy(at, digits, (size_t)n), at += n;
        *at++ = '.';
        memcpy(at, digits + n, k - (size_t)n), at += k - (size_t)n;
    } else if (-6 < n && n <= 0) {
        *at++ = '0';
        *at++ = '.';
        for (long z = 0; z < -n; z++)
            *at++ = '0';
        memcpy(at, digits, k), at += k;
    } else {
        long e = n - 1;
        *at++ = digits[0];
        if (k > 1) {
            *at++ = '.';
            memcpy(at, digits + 1, k - 1), at += k - 1;
        }
        *at++ = 'e';
        *at++ = e < 0 ? '-' : '+';
        uint8_t tmp[8];
        int m = 0;
        unsigned long u = (unsigned long)(e < 0 ? -e : e);
        do {
            tmp[m++] = (uint8_t)('0' + u % 10);
            u /= 10;
        } while (u);
        while (m)
            *at++ = tmp[--m];
    }
    o->len = (size_t)(at - o->buf);
    return 0;
}

/* Write row i; returns 0, -1 on no memory, or -2 - (part index) for a null where none may be. */
#define MALFORMED (-1000) /* write_row: MALFORMED - j: part j holds a malformed number */

static int write_row(Out *o, Part *parts, Py_ssize_t np, Py_ssize_t i) {
    for (Py_ssize_t j = 0; j < np; j++) {
        Part *p = &parts[j];
        if (p->kind == CONST) {
            if (put(o, p->data, (size_t)p->length, p->end) < 0)
                return -1;
            continue;
        }
        if (p->kind == NUMBERS) { /* the next number of the array: up to ',' or the closing ']' */
            const uint8_t *t = p->data + p->cursor, *stop = p->data + p->length - 1, *end = t;
            /* One scan finds the end and whether the number is in plain positional notation:
             * with at most 21 integer digits and fewer than six zeros after "0." that is
             * ECMAScript's form already, less trailing fraction zeros ("1.0" -> "1", "-0.0" ->
             * "0"). Anything else (an exponent, null) takes the general path. */
            const uint8_t *dot = NULL;
            int plain = 1;
            if (end < stop && *end == '-')
                end++;
            const uint8_t *first = end;
            for (; end < stop && *end != ','; end++) {
                if (*end == '.' && !dot)
                    dot = end;
                else if (*end < '0' || *end > '9')
                    plain = 0;
            }
            int rc;
            if (plain && dot && dot > first && dot - first <= 21 &&
                !(dot - first == 1 && *first == '0' && end - dot >= 7 && memcmp(dot + 1, "00000", 5) == 0)) {
                const uint8_t *last = end;
                while (last > dot + 1 && last[-1] == '0')
                    last--;
                if (last == dot + 1)
                    last = dot; /* an integral value: no point */
                if (last - first == 1 && *first == '0')
                    t = first; /* zero, and -0 */
                rc = put(o, t, (size_t)(last - t), p->data + p->length);
            } else if (end - t == 4 && memcmp(t, "null", 4) == 0) {
                rc = put(o, t, 4, p->data + p->length);
            } else {
                rc = put_js_number(o, t, (size_t)(end - t));
            }
            if (rc == -3)
                return MALFORMED - (int)j;
            if (rc < 0)
                return -1;
            p->cursor = (end - p->data) + 1;
            continue;
        }
        Py_ssize_t bit = p->offset + i;
        if (is_null(p->validity, bit)) {
            if (!p->null)
                return (int)(-2 - j);
            if (put(o, p->null, (size_t)p->null_len, p->null + p->null_len) < 0)
                return -1;
            continue;
        }
        int rc = 0;
        switch (p->kind) {
        case RAW:
        case QUOTED: {
            const uint8_t *s = p->data + p->offsets[bit];
            size_t len = (size_t)(p->offsets[bit + 1] - p->offsets[bit]);
            rc = p->kind == RAW ? put(o, s, len, p->end) : put_quoted(o, s, len, p->end);
            break;
        }
        case DICT: {
            int32_t k;
            memcpy(&k, p->data + 4 * bit, 4); /* checked against the dictionary's length */
            rc = put(o, p->own + p->quoted_offsets[k], p->quoted_offsets[k + 1] - p->quoted_offsets[k], p->end);
            break;
        }
        case INT64: {
            int64_t v;
            memcpy(&v, p->data + 8 * bit, 8);
            rc = put_int(o, v);
            break;
        }
        case LIST_DICT: {
            int32_t a = p->offsets[bit], b = p->offsets[bit + 1];
            static const uint8_t null_item[] = "null";
            if (reserve(o, 1) < 0)
                return -1;
            o->buf[o->len++] = '[';
            for (int32_t k = a; k < b && rc == 0; k++) {
                if (k > a)
                    o->buf[o->len++] = ','; /* room: reserve leaves PAD_ROOM spare */
                Py_ssize_t c = p->child_offset + k;
                if (is_null(p->child_validity, c))
                    rc = put(o, null_item, 4, null_item + 4);
                else
                    rc = put(o, p->own + p->quoted_offsets[p->indices[c]],
                             p->quoted_offsets[p->indices[c] + 1] - p->quoted_offsets[p->indices[c]], p->end);
            }
            if (rc == 0 && reserve(o, 1) == 0)
                o->buf[o->len++] = ']';
            else
                rc = -1;
            break;
        }
        case LIST: {
            int32_t a = p->offsets[bit], b = p->offsets[bit + 1];
            static const uint8_t null_text[] = "null";
            if (reserve(o, 1) < 0)
                return -1;
            o->buf[o->len++] = '[';
            for (int32_t k = a; k < b && rc == 0; k++) {
                if (k > a)
                    o->buf[o->len++] = ','; /* room: reserve leaves PAD_ROOM spare */
                if (is_null(p->child_validity, p->child_offset + k))
                    rc = put(o, null_text, 4, null_text + 4);
                else {
                    Py_ssize_t c = p->child_offset + k;
                    rc = put_quoted(o, p->child_data + p->child_offsets[c],
                                    (size_t)(p->child_offsets[c + 1] - p->child_offsets[c]), p->child_end);
                }
            }
            if (rc == 0 && reserve(o, 1) == 0)
                o->buf[o->len++] = ']';
            else
                rc = -1;
            break;
        }
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Each dictionary value quoted (escaped) once, into p->own: rows then copy it as it is. The
 * offsets were checked by the caller. */
static int prequote(Part *p, const int32_t *offsets, const uint8_t *data, const uint8_t *end, Py_ssize_t count) {
    Out quoted = {0};
    p->quoted_offsets = malloc((size_t)(count + 1) * sizeof(size_t));
    if (!p->quoted_offsets) {
        PyErr_NoMemory();
        return -1;
    }
    p->quoted_offsets[0] = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        if (put_quoted(&quoted, data + offsets[k], (size_t)(offsets[k + 1] - offsets[k]), end) < 0) {
            free(quoted.buf);
            PyErr_NoMemory();
            return -1;
        }
        p->quoted_offsets[k + 1] = quoted.len;
    }
    if (reserve(&quoted, 0) < 0) { /* an empty dictionary still gets a (readable) buffer */
        PyErr_NoMemory();
        return -1;
    }
    p->own = quoted.buf; /* PAD_ROOM spare bytes: copies may read 16 at a time */
    p->end = quoted.buf + quoted.len + PAD_ROOM;
    return 0;
}

static int parse_part(PyObject *item, Py_ssize_t j, Py_ssize_t n, Part *p, Views *v) {
    memset(p, 0, sizeof(*p));
    if (!PyTuple_Check(item)) {
        p->kind = CONST;
        if (get_buffer(v, item, &p->data, &p->length, 0) < 0)
            return -1;
        p->own = malloc((size_t)p->length + 16);
        if (!p->own) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(p->own, p->data, (size_t)p->length);
        p->data = p->own;
        p->end = p->own + p->length + 16;
        return 0;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(item);
    if (size < 1) {
        PyErr_Format(PyExc_ValueError, "part %zd: empty tuple", j);
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
    if (kind == -1 && PyErr_Occurred())
        return -1;
    p->kind = (int)kind;
    PyObject *ob, *db, *vb, *nb, *cob, *cdb;
    const uint8_t *buf;
    Py_ssize_t len, data_len, vlen;
    switch (kind) {
    case RAW:
    case QUOTED:
        if (!PyArg_ParseTuple(item, "lOOnOO", &kind, &ob, &db, &p->offset, &vb, &nb))
            return -1;
        if (get_buffer(v, ob, &buf, &len, 0) < 0 || get_buffer(v, db, &p->data, &data_len, 0) < 0 ||
            check_offsets(buf, len, p->offset, n, data_len, j) < 0)
            return -1;
        p->offsets = (const int32_t *)buf;
        p->end = p->data + data_len;
        break;
    case INT64:
        if (!PyArg_ParseTuple(item, "lOnOO", &kind, &db, &p->offset, &vb, &nb))
            return -1;
        if (get_buffer(v, db, &p->data, &data_len, 0) < 0)
            return -1;
        if (p->offset < 0 || (size_t)data_len < (size_t)(p->offset + n) * 8) {
            PyErr_Format(PyExc_ValueError, "part %zd: the values buffer is too short for %zd rows", j, n);
            return -1;
        }
        break;
    case LIST: {
        Py_ssize_t child_len, cvlen;
        PyObject *cvb;
        if (!PyArg_ParseTuple(item, "lOnOOOOnO", &kind, &ob, &p->offset, &vb, &nb, &cob, &cdb, &p->child_offset, &cvb))
            return -1;
        const uint8_t *cobuf;
        Py_ssize_t colen;
        if (get_buffer(v, ob, &buf, &len, 0) < 0 || get_buffer(v, cob, &cobuf, &colen, 0) < 0 ||
            get_buffer(v, cdb, &p->child_data, &child_len, 0) < 0 ||
            get_buffer(v, cvb, &p->child_validity, &cvlen, 1) < 0)
            return -1;
        /* the list offsets index the strings, which need child_offset + (last list offset) rows */
        if (p->child_offset < 0 || (size_t)colen < sizeof(int32_t)) {
            PyErr_Format(PyExc_ValueError, "part %zd: the string offsets buffer is too short", j);
            return -1;
        }
        Py_ssize_t strings = (Py_ssize_t)(colen / sizeof(int32_t)) - 1 - p->child_offset;
        if (check_offsets(buf, len, p->offset, n, strings, j) < 0)
            return -1;
        p->offsets = (const int32_t *)buf;
        Py_ssize_t first = p->offsets[p->offset], count = n ? p->offsets[p->offset + n] - first : 0;
        if (check_offsets(cobuf, colen, p->child_offset + first, count, child_len, j) < 0 ||
            check_validity(p->child_validity, cvlen, p->child_offset + first, count, j) < 0)
            return -1;
        p->child_offsets = (const int32_t *)cobuf;
        p->child_end = p->child_data + child_len;
        break;
    }
    case NUMBERS: {
        if (!PyArg_ParseTuple(item, "lO", &kind, &db) || get_buffer(v, db, &p->data, &p->length, 0) < 0)
            return -1;
        /* "[" n numbers separated by "," "]": count them here so rows never run past the end */
        Py_ssize_t commas = 0;
        for (Py_ssize_t k = 0; k < p->length; k++)
            commas += p->data[k] == ',';
        if (p->length < 2 || p->data[0] != '[' || p->data[p->length - 1] != ']' ||
            (n ? commas != n - 1 || p->length == 2 : p->length != 2)) {
            PyErr_Format(PyExc_ValueError, "part %zd: not a JSON array of %zd numbers", j, n);
            return -1;
        }
        p->cursor = 1;
        return 0;
    }
    case DICT: {
        Py_ssize_t dict_len, colen, child_len;
        const uint8_t *cobuf;
        if (!PyArg_ParseTuple(item, "lOnOOOOnn", &kind, &db, &p->offset, &vb, &nb, &cob, &cdb, &p->child_offset, &dict_len))
            return -1;
        if (get_buffer(v, db, &p->data, &data_len, 0) < 0 || get_buffer(v, cob, &cobuf, &colen, 0) < 0 ||
            get_buffer(v, cdb, &p->child_data, &child_len, 0) < 0)
            return -1;
        if (p->offset < 0 || (size_t)data_len < (size_t)(p->offset + n) * 4) {
            PyErr_Format(PyExc_ValueError, "part %zd: the indices buffer is too short for %zd rows", j, n);
            return -1;
        }
        if (dict_len < 0 || check_offsets(cobuf, colen, p->child_offset, dict_len, child_len, j) < 0)
            return -1;
        p->child_offsets = (const int32_t *)cobuf;
        p->child_end = p->child_data + child_len;
        /* Every index must name a dictionary value (nulls may hold anything). */
        if (get_buffer(v, vb, &p->validity, &vlen, 1) < 0 || check_validity(p->validity, vlen, p->offset, n, j) < 0)
            return -1;
        const int32_t *idx = (const int32_t *)p->data + p->offset;
        for (Py_ssize_t i = 0; i < n; i++)
            if ((idx[i] < 0 || idx[i] >= dict_len) && !is_null(p->validity, p->offset + i)) {
                PyErr_Format(PyExc_ValueError, "part %zd: row %zd holds dictionary index %d of %zd", j, i, idx[i], dict_len);
                return -1;
            }
        if (nb != Py_None && get_buffer(v, nb, &p->null, &p->null_len, 0) < 0)
            return -1;
        return prequote(p, p->child_offsets + p->child_offset, p->child_data, p->child_end, dict_len);
    }
    case LIST_DICT: {
        Py_ssize_t dict_len, dict_offset, ilen, cvlen, dlen, dolen;
        const uint8_t *ibuf, *dobuf, *ddata;
        PyObject *ib, *cvb, *dob, *ddb;
        if (!PyArg_ParseTuple(item, "lOnOOOnOOOnn", &kind, &ob, &p->offset, &vb, &nb, &ib, &p->child_offset, &cvb, &dob,
                              &ddb, &dict_offset, &dict_len))
            return -1;
        if (get_buffer(v, ob, &buf, &len, 0) < 0 || get_buffer(v, ib, &ibuf, &ilen, 0) < 0 ||
            get_buffer(v, cvb, &p->child_validity, &cvlen, 1) < 0 || get_buffer(v, dob, &dobuf, &dolen, 0) < 0 ||
            get_buffer(v, ddb, &ddata, &dlen, 0) < 0)
            return -1;
        if (p->child_offset < 0 || dict_len < 0 || dict_offset < 0) {
            PyErr_Format(PyExc_ValueError, "part %zd: negative offset or length", j);
            return -1;
        }
        Py_ssize_t items = (Py_ssize_t)(ilen / sizeof(int32_t)) - p->child_offset;
        if (check_offsets(buf, len, p->offset, n, items, j) < 0 ||
            check_offsets(dobuf, dolen, dict_offset, dict_len, dlen, j) < 0)
            return -1;
        p->offsets = (const int32_t *)buf;
        p->indices = (const int32_t *)ibuf;
        Py_ssize_t first = p->offsets[p->offset], count = n ? p->offsets[p->offset + n] - first : 0;
        if (check_validity(p->child_validity, cvlen, p->child_offset + first, count, j) < 0)
            return -1;
        for (Py_ssize_t k = first; k < first + count; k++) {
            Py_ssize_t c = p->child_offset + k;
            if ((p->indices[c] < 0 || p->indices[c] >= dict_len) && !is_null(p->child_validity, c)) {
                PyErr_Format(PyExc_ValueError, "part %zd: list item %zd holds dictionary index %d of %zd", j, k,
                             p->indices[c], dict_len);
                return -1;
            }
        }
        if (get_buffer(v, vb, &p->validity, &vlen, 1) < 0 || check_validity(p->validity, vlen, p->offset, n, j) < 0)
            return -1;
        if (nb != Py_None && get_buffer(v, nb, &p->null, &p->null_len, 0) < 0)
            return -1;
        return prequote(p, (const int32_t *)dobuf + dict_offset, ddata, ddata + dlen, dict_len);
    }
    default:
        PyErr_Format(PyExc_ValueError, "part %zd: unknown kind %ld", j, kind);
        return -1;
    }
    if (get_buffer(v, vb, &p->validity, &vlen, 1) < 0 || check_validity(p->validity, vlen, p->offset, n, j) < 0)
        return -1;
    if (nb != Py_None && get_buffer(v, nb, &p->null, &p->null_len, 0) < 0)
        return -1;
    return 0;
}

static PyObject *json_rows(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_ssize_t n;
    int text = 0;
    if (!PyArg_ParseTuple(args, "On|p", &seq, &n, &text))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(seq, "parts must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t np = PySequence_Fast_GET_SIZE(fast);
    Part *parts = calloc(np ? np : 1, sizeof(Part));
    Views *views = calloc(np ? np : 1, sizeof(Views));
    PyObject *result = NULL;
    Out a = {0}, b = {0};
    int32_t *offsets = NULL;
    Prefixes *prefixes = NULL;
    if (!parts || !views) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < np; j++)
        if (parse_part(PySequence_Fast_GET_ITEM(fast, j), j, n, &parts[j], &views[j]) < 0)
            goto done;
    int rc = 0;
    Py_ssize_t bad_row = 0;
    if (text) {
        offsets = malloc((size_t)(n + 1) * sizeof(int32_t));
        if (!offsets) {
            PyErr_NoMemory();
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        offsets[0] = 0;
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            rc = write_row(&a, parts, np, i);
            if (rc == 0 && a.len > INT32_MAX)
                rc = -1;
            offsets[i + 1] = (int32_t)a.len;
            bad_row = i;
        }
        Py_END_ALLOW_THREADS
        if (rc == 0)
            result = Py_BuildValue("(y#y#)", (const char *)offsets, (Py_ssize_t)((n + 1) * sizeof(int32_t)),
                                   (const char *)(a.buf ? a.buf : (uint8_t *)""), (Py_ssize_t)a.len);
    } else {
        result = PyBytes_FromStringAndSize(NULL, n * 32);
        if (!result)
            goto done;
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        if (reserve(&a, 0) < 0 || reserve(&b, 0) < 0) { /* an empty template still needs room to pad */
            Py_CLEAR(result);
            PyErr_NoMemory();
            goto done;
        }
        prefixes = calloc(1, sizeof(Prefixes)); /* NULL: no reuse, the same hashes */
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n && rc == 0; i += 2) {
            int two = i + 1 < n;
            a.len = b.len = 0;
            bad_row = i;
            rc = write_row(&a, parts, np, i);
            if (rc == 0 && two) {
                bad_row = i + 1;
                rc = write_row(&b, parts, np, i + 1);
            }
            if (rc == 0)
                digest2(a.buf, a.len, out + 32 * i, two ? b.buf : NULL, b.len, out + 32 * (i + 1), prefixes);
        }
        Py_END_ALLOW_THREADS
        if (rc != 0)
            Py_CLEAR(result);
    }
    if (rc == -1)
        PyErr_NoMemory();
    else if (rc <= MALFORMED)
        PyErr_Format(PyExc_ValueError, "part %d: row %zd is not a JSON number", MALFORMED - rc, bad_row);
    else if (rc < -1)
        PyErr_Format(PyExc_ValueError, "part %d: row %zd is null and the part has no text for null", -2 - rc, bad_row);
done:
    if (views)
        for (Py_ssize_t j = 0; j < np; j++)
            views_release(&views[j]);
    if (parts)
        for (Py_ssize_t j = 0; j < np; j++) {
            free(parts[j].own);
            free(parts[j].quoted_offsets);
        }
    free(a.buf);
    free(b.buf);
    free(offsets);
    free(prefixes);
    free(parts);
    free(views);
    Py_DECREF(fast);
    return result;
}

/* ------------------------------------------------------------------ plain pieces */

static PyObject *sha256_rows(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "On", &seq, &n))
        return NULL;
    /* A plain piece is a RAW part without nulls: the same template code, no formatting. */
    PyObject *fast = PySequence_Fast(seq, "parts must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t np = PySequence_Fast_GET_SIZE(fast);
    PyObject *typed = PyList_New(np);
    if (!typed) {
        Py_DECREF(fast);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < np; j++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, j), *part;
        if (PyTuple_Check(item)) {
            PyObject *ob, *db;
            Py_ssize_t off;
            if (!PyArg_ParseTuple(item, "OOn", &ob, &db, &off)) {
                Py_DECREF(typed);
                Py_DECREF(fast);
                return NULL;
            }
            part = Py_BuildValue("(iOOnOO)", RAW, ob, db, off, Py_None, Py_None);
        } else {
            part = Py_NewRef(item);
        }
        if (!part) {
            Py_DECREF(typed);
            Py_DECREF(fast);
            return NULL;
        }
        PyList_SET_ITEM(typed, j, part);
    }
    Py_DECREF(fast);
    PyObject *call = Py_BuildValue("(Oni)", typed, n, 0);
    Py_DECREF(typed);
    if (!call)
        return NULL;
    PyObject *result = json_rows(self, call);
    Py_DECREF(call);
    return result;
}

static PyObject *prefixed(PyObject *args, uint8_t prefix, Py_ssize_t width) {
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in))
        return NULL;
    if (in.len % width) {
        PyBuffer_Release(&in);
        return PyErr_Format(PyExc_ValueError, "input length %zd is not a multiple of %zd", in.len, width);
    }
    Py_ssize_t n = in.len / width;
    PyObject *result = PyBytes_FromStringAndSize(NULL, n * 32);
    if (!result) {
        PyBuffer_Release(&in);
        return NULL;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    const uint8_t *src = in.buf;
    Py_BEGIN_ALLOW_THREADS
    uint8_t a[65 + PAD_ROOM], b[65 + PAD_ROOM];
    for (Py_ssize_t i = 0; i < n; i += 2) {
        int two = i + 1 < n;
        a[0] = prefix;
        memcpy(a + 1, src + width * i, (size_t)width);
        if (two) {
            b[0] = prefix;
            memcpy(b + 1, src + width * (i + 1), (size_t)width);
        }
        digest2(a, (size_t)width + 1, out + 32 * i, two ? b : NULL, (size_t)width + 1, out + 32 * (i + 1), NULL);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    return result;
}

static PyObject *leaf_hashes(PyObject *self, PyObject *args) { return prefixed(args, 0x00, 32); }

static PyObject *node_hashes(PyObject *self, PyObject *args) { return prefixed(args, 0x01, 64); }

/* HMAC-SHA-256 (RFC 2104) of each value of a string array under one key: the key's inner and
 * outer blocks are hashed once, not once a value (the trace pseudonymises thousands of subject
 * ids a batch; hmac.new costs ~2 us each in Python). */
static PyObject *hmac_rows(PyObject *self, PyObject *args) {
    Py_buffer key, offsets, data;
    Py_ssize_t offset, n;
    if (!PyArg_ParseTuple(args, "y*y*y*nn", &key, &offsets, &data, &offset, &n))
        return NULL;
    PyObject *result = NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        goto done;
    }
    if (check_offsets(offsets.buf, offsets.len, offset, n, data.len, 0) < 0)
        goto done;
    uint8_t block[64] = {0};
    if (key.len > 64)
        sha256(key.buf, (size_t)key.len, block);
    else
        memcpy(block, key.buf, (size_t)key.len);
    SHA256_CTX inner, outer;
    uint8_t pad[64];
    for (int i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x36;
    SHA256_Init(&inner);
    SHA256_Update(&inner, pad, 64);
    for (int i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&outer);
    SHA256_Update(&outer, pad, 64);
    result = PyBytes_FromStringAndSize(NULL, n * 32);
    if (!result)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    const int32_t *o = (const int32_t *)offsets.buf + offset;
    const uint8_t *d = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        SHA256_CTX c = inner;
        uint8_t mid[32];
        SHA256_Update(&c, d + o[i], (size_t)(o[i + 1] - o[i]));
        SHA256_Final(mid, &c);
        c = outer;
        SHA256_Update(&c, mid, 32);
        SHA256_Final(out + 32 * i, &c);
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *accelerated(PyObject *self, PyObject *args) {
    PyObject *flag = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &flag))
        return NULL;
    int was = use_shani;
    if (flag != Py_None) {
        int on = PyObject_IsTrue(flag);
        if (on < 0)
            return NULL;
        use_shani = on && shani_supported;
    }
    return PyBool_FromLong(was);
}

static PyMethodDef methods[] = {
    {"sha256_rows", sha256_rows, METH_VARARGS, "SHA-256 of each row's concatenated parts (see the module source)."},
    {"json_rows", json_rows, METH_VARARGS, "SHA-256 (or the text) of each row's RFC 8785 JSON from typed column parts."},
    {"leaf_hashes", leaf_hashes, METH_VARARGS, "SHA-256(0x00 || h) for each 32-byte h."},
    {"node_hashes", node_hashes, METH_VARARGS, "SHA-256(0x01 || l || r) for each 64-byte pair."},
    {"hmac_rows", hmac_rows, METH_VARARGS, "HMAC-SHA-256 of each value of a string array under one key."},
    {"accelerated", accelerated, METH_VARARGS, "Whether SHA-NI is used; accelerated(False) switches to OpenSSL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Batch SHA-256 for the decision trace.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    shani_supported = cpu_has_shani();
    use_shani = shani_supported;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddObject(m, "SHA_NI", PyBool_FromLong(shani_supported)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
