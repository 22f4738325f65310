/* The guard's per-candidate loops in C: rule resolution, cap grouping and candidate checks.
 *
 * Why this is hand-written: after the policy library has evaluated every rule for every candidate
 * (an int8 outcome matrix, rules x candidates), what the outcomes *mean* for a slate is a walk
 * down each candidate's rules: the first hard match decides, soft actions before it stack. In
 * numpy that is some forty whole-matrix operations (each a pass over 25,000 cells and a temporary
 * array), about a quarter of a 1,000-candidate request; here it is one pass over the matrix, rule
 * by rule, skipping the (mostly FALSE) zero bytes a word at a time. No library resolves ordered
 * first-match/stacking rules. Grouping a cap's key column (fixed-width strings) is a hash table
 * with exact comparison, which numpy can only do by sorting. Every function has a Python twin
 * that gives identical results (for resolution, the policy library's own policy.decide.resolve;
 * the others in assay/guard/core.py, candidates.py and assay/policy/batch.py), tested side by
 * side in tests/guard/test_guard_native.py; the extension is optional and the twins serve without.
 *
 *   resolve(outcomes, kinds, fail_closed, live, pre_dropped, factors,
 *           first, failed, dropped, action, factor, soft) -> None
 *       outcomes: int8 (rules x n, C order) 0 FALSE / 1 TRUE / 2 MISSING; kinds: int8 per rule
 *       (0 drop, 1 allow, 2 demote, 3 label, 4 cap); fail_closed, live: uint8 per rule;
 *       pre_dropped: uint8 per candidate; factors: float64 per rule (demote factors).
 *       Written: first (int32: the deciding hard rule, or rules when none), failed (uint8: it
 *       decided by failing closed), dropped (uint8), action (int8: 2 demote, 3 label, 1 allow,
 *       0 drop), factor (float64: the demote factors multiplied in rule order), soft (uint8,
 *       rules x n, zeroed by the caller: 1 where a soft rule acts, i.e. before the deciding rule).
 *   check_ids(ids) -> int
 *       -1 when every id in the list is a non-empty str and none repeats (a hash set of the ids'
 *       own cached str hashes), else the first position that breaks it (the caller names it).
 *   clean_str_objects(values) -> bool
 *       values: a list. True when every item is a str holding no NUL and no lone surrogate (what
 *       the policy library accepts as a string), so a column of JSON strings passes as it is.
 *   one_type(values) -> type | None
 *       The type every item of a list has (exactly: a subclass is another type), or None when they
 *       differ or the list is empty; a JSON array's element type in one pass.
 *   str_lists(rows, offsets, nulls) -> list | None
 *       rows: a list of lists/tuples of str, or None (missing). Writes offsets (int64, n+1) and
 *       nulls (uint8, n) and returns the flat values, when every value is a clean str (as
 *       clean_str_objects); None when any row or value is something else.
 *   clean_strings(values, width) -> bool
 *       values: a fixed-width str array's UCS-4 buffer (width code points a row). True when no
 *       row holds a NUL followed by a code point (trailing NULs are padding) or a lone surrogate:
 *       every value is one the policy library accepts, so it need not check again.
 *   group_ordinals_str(values, positions, ordinals[, codes]) -> int
 *       The same for a list of Python str (what JSON decodes to), grouped by their own cached
 *       hashes and compared as strings; None values form one group. -1, with nothing promised
 *       about ordinals, when a value of another type is met (the caller's general path).
 *   group_ordinals(values, width, positions, ordinals[, codes]) -> int
 *       values: a fixed-width array's bytes (width bytes a row); for each row positions[k] (in
 *       order), ordinals[k] = how many earlier listed rows hold the same bytes. Both return the
 *       number of groups and, given codes (int64 like ordinals), write each listed row's group
 *       number, groups numbered in order of first appearance (what pandas.factorize gives).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { K_DROP = 0, K_ALLOW = 1, K_DEMOTE = 2, K_LABEL = 3, K_CAP = 4 };
enum { OUT_FALSE = 0, OUT_TRUE = 1, OUT_MISSING = 2 };

static int get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t want, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->len != want * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, view->len, want * itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *resolve(PyObject *self, PyObject *args) {
    PyObject *o[12];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8],
                          &o[9], &o[10], &o[11]))
        return NULL;
    Py_buffer b[12];
    int got = 0;
    Py_buffer kinds_view;
    if (PyObject_GetBuffer(o[1], &kinds_view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t rules = kinds_view.len;
    PyBuffer_Release(&kinds_view);
    Py_buffer pre_view;
    if (PyObject_GetBuffer(o[4], &pre_view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t n = pre_view.len;
    PyBuffer_Release(&pre_view);
    const Py_ssize_t want[12] = {rules * n, rules, rules, rules, n, rules, n, n, n, n, n, rules * n};
    const Py_ssize_t size[12] = {1, 1, 1, 1, 1, 8, 4, 1, 1, 1, 8, 1};
    const char *names[12] = {"outcomes", "kinds", "fail_closed", "live", "pre_dropped", "factors",
                             "first", "failed", "dropped", "action", "factor", "soft"};
    for (; got < 12; got++)
        if (get(o[got], &b[got], got >= 6, want[got], size[got], names[got]) < 0)
            goto done;
    {
        const int8_t *out = b[0].buf;
        const int8_t *kinds = b[1].buf;
        const uint8_t *fail_closed = b[2].buf, *live = b[3].buf, *pre = b[4].buf;
        const double *factors = b[5].buf;
        int32_t *first = b[6].buf;
        uint8_t *failed = b[7].buf, *dropped = b[8].buf, *soft = b[11].buf;
        int8_t *action = b[9].buf;
        double *factor = b[10].buf;
        Py_BEGIN_ALLOW_THREADS
        /* rule by rule, in order, over a row of outcomes that is mostly FALSE (zero bytes): whole
         * 8-byte words of FALSE are skipped, and a candidate stops at its deciding hard rule, so a
         * soft rule only ever acts before it */
        for (Py_ssize_t i = 0; i < n; i++) {
            first[i] = (int32_t)rules;
            failed[i] = 0;
            dropped[i] = pre[i] != 0;
            factor[i] = 1.0;
            action[i] = K_ALLOW; /* demoted / labelled marks until the final pass */
        }
        for (Py_ssize_t r = 0; r < rules; r++) {
            if (!live[r])
                continue;
            const int8_t *row = out + r * n;
            const int8_t kind = kinds[r];
            const int hard_kind = kind == K_DROP || kind == K_ALLOW;
            Py_ssize_t i = 0;
            while (i < n) {
                if (i + 8 <= n) {
                    uint64_t word;
                    memcpy(&word, row + i, 8);
                    if (!word) {
                        i += 8;
                        continue;
                    }
                }
                int8_t v = row[i];
                /* matched: TRUE, or MISSING on a fail-closed rule; not for candidates already
                 * decided by an earlier hard rule or dropped before any rule */
                if ((v == OUT_TRUE || (v == OUT_MISSING && fail_closed[r])) && first[i] == rules && !pre[i]) {
                    if (hard_kind || v == OUT_MISSING) { /* hard: drop/allow, or failing closed */
                        first[i] = (int32_t)r;
                        failed[i] = v == OUT_MISSING;
                        dropped[i] = failed[i] || kind == K_DROP;
                    } else {
                        soft[r * n + i] = 1;
                        if (kind == K_DEMOTE) {
                            factor[i] *= factors[r];
                            action[i] = K_DEMOTE;
                        } else if (kind == K_LABEL && action[i] != K_DEMOTE) {
                            action[i] = K_LABEL;
                        }
                    }
                }
                i++;
            }
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (dropped[i])
                action[i] = K_DROP;
        Py_END_ALLOW_THREADS
    }
done:
    for (int k = 0; k < got; k++)
        PyBuffer_Release(&b[k]);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static uint64_t seed; /* per process, so keys cannot be chosen to collide */

static inline uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* One multiply per 8 bytes, a full mix at the end: about a third of the cycles of mixing every
 * word. Seeded per process; a batch holds at most a few thousand rows, so even keys chosen to
 * collide could only slow one request's probing, never change a result (rows are compared). */
static inline uint64_t hash_row(const uint8_t *p, Py_ssize_t width) {
    /* each 8-byte word times its own odd constant, summed: the multiplies do not wait on each
     * other (a chained hash made every row wait ~6 multiply latencies); the mix spreads the sum */
    uint64_t h = seed ^ ((uint64_t)width * 0x9e3779b97f4a7c15ULL), k1 = 0x9e3779b97f4a7c15ULL;
    Py_ssize_t k = 0;
    for (; k + 8 <= width; k += 8) {
        uint64_t w;
        memcpy(&w, p + k, 8);
        h += (w ^ (uint64_t)k) * (k1 | 1);
        k1 = k1 * 0xbf58476d1ce4e5b9ULL + 0x94d049bb133111ebULL;
    }
    if (k < width) { /* the tail, by fixed-size loads (a variable-length copy stalls the load) */
        uint64_t w = 0;
        Py_ssize_t shift = 0;
        for (; k + 4 <= width; k += 4, shift += 32) {
            uint32_t u;
            memcpy(&u, p + k, 4);
            w |= (uint64_t)u << shift;
        }
        for (; k < width; k++, shift += 8)
            w |= (uint64_t)p[k] << shift;
        h += (w ^ (uint64_t)width) * (k1 | 1);
    }
    return mix(h);
}

static inline int same_bytes(const uint8_t *a, const uint8_t *b, Py_ssize_t width) {
    Py_ssize_t k = 0;
    for (; k + 8 <= width; k += 8) {
        uint64_t x, y;
        memcpy(&x, a + k, 8);
        memcpy(&y, b + k, 8);
        if (x != y)
            return 0;
    }
    for (; k < width; k++)
        if (a[k] != b[k])
            return 0;
    return 1;
}

/* one probe reads one slot: the group's first row (+1; 0 = empty), its hash, count and number */
typedef struct {
    int64_t row;
    uint64_t hash;
    int64_t count;
    int64_t code;
} GroupSlot;

static PyObject *group_ordinals(PyObject *self, PyObject *args) {
    PyObject *values_obj, *positions_obj, *ordinals_obj, *codes_obj = Py_None;
    Py_ssize_t width, groups = 0;
    if (!PyArg_ParseTuple(args, "OnOO|O", &values_obj, &width, &positions_obj, &ordinals_obj, &codes_obj))
        return NULL;
    if (width <= 0) {
        PyErr_SetString(PyExc_ValueError, "width must be positive");
        return NULL;
    }
    Py_buffer values, positions, ordinals, codes = {0};
    if (PyObject_GetBuffer(values_obj, &values, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(positions_obj, &positions, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    Py_ssize_t m = positions.len / 8, rows = values.len / width;
    if (get(ordinals_obj, &ordinals, 1, m, 8, "ordinals") < 0) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&positions);
        return NULL;
    }
    if (codes_obj != Py_None && get(codes_obj, &codes, 1, m, 8, "codes") < 0) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&positions);
        PyBuffer_Release(&ordinals);
        return NULL;
    }
    int have_codes = codes_obj != Py_None;
    int64_t *code = have_codes ? codes.buf : NULL;
    const int64_t *pos = positions.buf;
    for (Py_ssize_t k = 0; k < m; k++) {
        if (pos[k] < 0 || pos[k] >= rows) {
            PyErr_Format(PyExc_IndexError, "position %lld is outside the %zd rows", (long long)pos[k], rows);
            goto done;
        }
    }
    {
        size_t size = 16;
        while (size < 2 * (size_t)m)
            size <<= 1;
        GroupSlot *slots = calloc(size, sizeof(GroupSlot)); /* groups numbered in order of first appearance */
        if (!slots) {
            PyErr_NoMemory();
            goto done;
        }
        const uint8_t *base = values.buf;
        int64_t *ord = ordinals.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < m; k++) {
            if (k + 8 < m) /* rows are visited in rank order, i.e. at random: ask for one ahead */
                __builtin_prefetch(base + pos[k + 8] * width);
            const uint8_t *row = base + pos[k] * width;
            uint64_t h = hash_row(row, width);
            size_t s = (size_t)h & (size - 1);
            for (;;) {
                GroupSlot *g = &slots[s];
                if (!g->row) {
                    g->row = pos[k] + 1;
                    g->hash = h;
                    g->count = 1;
                    g->code = groups++;
                    ord[k] = 0;
                    break;
                }
                if (g->hash == h && same_bytes(base + (g->row - 1) * width, row, width)) {
                    ord[k] = g->count++;
                    break;
                }
                s = (s + 1) & (size - 1);
            }
            if (code)
                code[k] = slots[s].code;
        }
        Py_END_ALLOW_THREADS
        free(slots);
    }
done:
    PyBuffer_Release(&values);
    PyBuffer_Release(&positions);
    PyBuffer_Release(&ordinals);
    if (have_codes)
        PyBuffer_Release(&codes);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(groups);
}

static PyObject *check_ids(PyObject *self, PyObject *args) {
    PyObject *ids;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &ids))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    size_t size = 16;
    while (size < 2 * (size_t)n)
        size <<= 1;
    PyObject **slot = calloc(size, sizeof(PyObject *));
    Py_hash_t *slot_hash = malloc(size * sizeof(Py_hash_t));
    if (!slot || !slot_hash) {
        free(slot);
        free(slot_hash);
        return PyErr_NoMemory();
    }
    Py_ssize_t bad = -1;
    for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
        PyObject *id = PyList_GET_ITEM(ids, i);
        if (!PyUnicode_CheckExact(id) || PyUnicode_GET_LENGTH(id) == 0) {
            bad = i;
            break;
        }
        Py_hash_t h = PyObject_Hash(id);
        size_t s = (size_t)h & (size - 1);
        while (slot[s]) {
            if (slot_hash[s] == h && (slot[s] == id || PyUnicode_Compare(slot[s], id) == 0)) {
                bad = i; /* a duplicate */
                break;
            }
            s = (s + 1) & (size - 1);
        }
        slot[s] = id;
        slot_hash[s] = h;
    }
    free(slot);
    free(slot_hash);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(bad);
}

/* Branch-free, in passes a compiler turns into vector code (built for AVX2 too, picked at load
 * time where the CPU has it): a value holds a NUL before a code point exactly when a NUL is
 * followed by a non-NUL inside its row. Such pairs are counted over the whole buffer, where the
 * pairs that straddle two rows (a padded value, then the next one) count too; those are counted
 * apart, one per row boundary, and taken off. Lone surrogates are one range test per code point. */
__attribute__((target_clones("avx2", "default")))
static int strings_clean(const uint32_t *codes, Py_ssize_t rows, Py_ssize_t width) {
    Py_ssize_t total = rows * width;
    uint64_t pairs = 0, straddling = 0;
    uint32_t surrogate = 0;
    for (Py_ssize_t start = 0; start + 1 < total; start += (Py_ssize_t)1 << 30) {
        /* 32-bit counts, a chunk at a time, keep a vector lane per code point */
        Py_ssize_t end = total - 1 - start < ((Py_ssize_t)1 << 30) ? total - 1 : start + ((Py_ssize_t)1 << 30);
        uint32_t chunk = 0;
        for (Py_ssize_t k = start; k < end; k++) {
            chunk += (codes[k] == 0) & (codes[k + 1] != 0);
            surrogate |= codes[k] - 0xD800u < 0x800u;
        }
        pairs += chunk;
    }
    if (total)
        surrogate |= codes[total - 1] - 0xD800u < 0x800u;
    for (Py_ssize_t i = 1; i < rows; i++)
        straddling += (codes[i * width - 1] == 0) & (codes[i * width] != 0);
    return pairs == straddling && !surrogate;
}

/* true when every item of the list is an exact str holding no NUL and no lone surrogate: what
 * the policy library accepts as a string (JSON strings, which the guard then passes on as they
 * are instead of copying them into a fixed-width array) */
static int clean_str(PyObject *v);

static PyObject *clean_str_objects(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "clean_str_objects takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!clean_str(PyList_GET_ITEM(arg, i)))
            Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

static int clean_str(PyObject *v) { /* an exact str with no NUL and no lone surrogate */
    if (!PyUnicode_CheckExact(v) || PyUnicode_READY(v) < 0)
        return 0;
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    const void *data = PyUnicode_DATA(v);
    switch (PyUnicode_KIND(v)) {
    case PyUnicode_1BYTE_KIND: /* no surrogates below U+0100 */
        return memchr(data, 0, (size_t)len) == NULL;
    case PyUnicode_2BYTE_KIND: {
        const uint16_t *u = data;
        for (Py_ssize_t k = 0; k < len; k++)
            if (u[k] == 0 || (u[k] >= 0xD800 && u[k] <= 0xDFFF))
                return 0;
        return 1;
    }
    default: {
        const uint32_t *u = data;
        for (Py_ssize_t k = 0; k < len; k++)
            if (u[k] == 0 || (u[k] >= 0xD800 && u[k] <= 0xDFFF))
                return 0;
        return 1;
    }
    }
}

static PyObject *one_type(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "one_type takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    if (!n)
        Py_RETURN_NONE;
    PyTypeObject *t = Py_TYPE(PyList_GET_ITEM(arg, 0));
    for (Py_ssize_t i = 1; i < n; i++)
        if (Py_TYPE(PyList_GET_ITEM(arg, i)) != t)
            Py_RETURN_NONE;
    Py_INCREF(t);
    return (PyObject *)t;
}

static PyObject *str_lists(PyObject *self, PyObject *args) {
    PyObject *rows, *offsets_obj, *nulls_obj;
    if (!PyArg_ParseTuple(args, "O!OO", &PyList_Type, &rows, &offsets_obj, &nulls_obj))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    Py_buffer offsets, nulls;
    if (get(offsets_obj, &offsets, 1, n + 1, 8, "offsets") < 0)
        return NULL;
    if (get(nulls_obj, &nulls, 1, n, 1, "nulls") < 0) {
        PyBuffer_Release(&offsets);
        return NULL;
    }
    int64_t *off = offsets.buf;
    uint8_t *null = nulls.buf;
    PyObject *flat = PyList_New(0), *result = NULL;
    if (!flat)
        goto done;
    off[0] = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *row = PyList_GET_ITEM(rows, j);
        null[j] = row == Py_None;
        if (row != Py_None) {
            if (!PyList_CheckExact(row) && !PyTuple_CheckExact(row)) {
                result = Py_None; /* a bare string, a number: the per-row path decides */
                goto done;
            }
            Py_ssize_t m = PySequence_Fast_GET_SIZE(row);
            PyObject **items = PySequence_Fast_ITEMS(row);
            for (Py_ssize_t k = 0; k < m; k++) {
                if (!clean_str(items[k])) {
                    result = Py_None; /* a None element, a number, a NUL, a lone surrogate */
                    goto done;
                }
                if (PyList_Append(flat, items[k]) < 0)
                    goto done;
            }
        }
        off[j + 1] = PyList_GET_SIZE(flat);
    }
    result = flat; /* the new reference PyList_New made passes to the caller */
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&nulls);
    if (result != flat) {
        Py_XDECREF(flat);
        Py_XINCREF(result); /* None (borrowed) or NULL */
    }
    return result;
}

static PyObject *clean_strings(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t width; /* code points a row */
    if (!PyArg_ParseTuple(args, "On", &obj, &width))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (width <= 0 || view.len % (width * 4)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "the buffer is not rows of width UCS-4 code points");
        return NULL;
    }
    const uint32_t *codes = view.buf;
    Py_ssize_t rows = view.len / (width * 4);
    int clean;
    Py_BEGIN_ALLOW_THREADS
    clean = strings_clean(codes, rows, width);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBool_FromLong(clean);
}

static PyObject *group_ordinals_str(PyObject *self, PyObject *args) {
    PyObject *values, *positions_obj, *ordinals_obj, *codes_obj = Py_None;
    if (!PyArg_ParseTuple(args, "O!OO|O", &PyList_Type, &values, &positions_obj, &ordinals_obj, &codes_obj))
        return NULL;
    Py_buffer positions, ordinals, codes = {0};
    if (PyObject_GetBuffer(positions_obj, &positions, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t m = positions.len / 8, rows = PyList_GET_SIZE(values);
    if (get(ordinals_obj, &ordinals, 1, m, 8, "ordinals") < 0) {
        PyBuffer_Release(&positions);
        return NULL;
    }
    if (codes_obj != Py_None && get(codes_obj, &codes, 1, m, 8, "codes") < 0) {
        PyBuffer_Release(&positions);
        PyBuffer_Release(&ordinals);
        return NULL;
    }
    const int64_t *pos = positions.buf;
    int have_codes = codes_obj != Py_None;
    int64_t *ord = ordinals.buf, *code = have_codes ? codes.buf : NULL;
    Py_ssize_t groups = 0, result = -2; /* -2: an error is set */
    size_t size = 16;
    while (size < 2 * (size_t)m)
        size <<= 1;
    PyObject **slot = calloc(size, sizeof(PyObject *));
    Py_hash_t *slot_hash = malloc(size * sizeof(Py_hash_t));
    int64_t *slot_count = malloc(size * sizeof(int64_t));
    int64_t *slot_code = malloc(size * sizeof(int64_t));
    if (!slot || !slot_hash || !slot_count || !slot_code) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t absent = 0, absent_code = -1; /* None: one group of its own */
    for (Py_ssize_t k = 0; k < m; k++) {
        if (pos[k] < 0 || pos[k] >= rows) {
            PyErr_Format(PyExc_IndexError, "position %lld is outside the %zd rows", (long long)pos[k], rows);
            goto done;
        }
        PyObject *v = PyList_GET_ITEM(values, pos[k]);
        if (v == Py_None) {
            if (absent_code < 0)
                absent_code = groups++;
            ord[k] = absent++;
            if (code)
                code[k] = absent_code;
            continue;
        }
        if (!PyUnicode_CheckExact(v)) {
            result = -1; /* another type (a number, NaN, a list): the general path groups it */
            goto done;
        }
        Py_hash_t h = PyObject_Hash(v);
        size_t s = (size_t)h & (size - 1);
        for (;;) {
            if (!slot[s]) {
                slot[s] = v;
                slot_hash[s] = h;
                slot_count[s] = 1;
                slot_code[s] = groups++;
                ord[k] = 0;
                break;
            }
            if (slot_hash[s] == h && (slot[s] == v || PyUnicode_Compare(slot[s], v) == 0)) {
                ord[k] = slot_count[s]++;
                break;
            }
            if (PyErr_Occurred())
                goto done;
            s = (s + 1) & (size - 1);
        }
        if (code)
            code[k] = slot_code[s];
    }
    result = groups;
done:
    free(slot);
    free(slot_hash);
    free(slot_count);
    free(slot_code);
    PyBuffer_Release(&positions);
    PyBuffer_Release(&ordinals);
    if (have_codes)
        PyBuffer_Release(&codes);
    if (result == -2)
        return NULL;
    return PyLong_FromSsize_t(result);
}

static PyMethodDef methods[] = {
    {"group_ordinals_str", group_ordinals_str, METH_VARARGS, "group_ordinals for a list of str (None: one group); -1 for any other type."},
    {"one_type", one_type, METH_O, "The type every item of a list has, or None (mixed, or empty)."},
    {"str_lists", str_lists, METH_VARARGS, "Rows of clean str lists (None: missing) flattened, with offsets and a null mask; None otherwise."},
    {"clean_str_objects", clean_str_objects, METH_O, "True when every item of a list is a str holding no NUL and no lone surrogate."},
    {"clean_strings", clean_strings, METH_VARARGS, "True when no row of a fixed-width str array holds a NUL before a code point or a lone surrogate."},
    {"check_ids", check_ids, METH_VARARGS, "-1 when every id is a non-empty str and none repeats, else the first position that is not."},
    {"resolve", resolve, METH_VARARGS, "Resolve rule outcomes per candidate: first hard match, stacked soft actions."},
    {"group_ordinals", group_ordinals, METH_VARARGS, "For listed fixed-width rows, how many earlier listed rows are equal."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "The guard's rule resolution and cap grouping.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *os = PyImport_ImportModule("os");
    if (!os)
        return NULL;
    PyObject *bytes = PyObject_CallMethod(os, "urandom", "i", 8);
    Py_DECREF(os);
    if (!bytes)
        return NULL;
    memcpy(&seed, PyBytes_AsString(bytes), 8);
    Py_DECREF(bytes);
    return PyModule_Create(&module);
}
