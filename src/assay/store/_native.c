/* Batch lookup of item ids in the in-memory label store's hash table, and the row gather after it.
 *
 * Why this is hand-written: the guard looks up a whole candidate batch (1,000 ids) per request.
 * A dict lookup per id from Python is a chain of dependent cache misses plus interpreter work per
 * id; the numpy path (assay/store/labels.py, _IdKeys.rows_of) converts the ids to a fixed-width
 * array first, which costs more than the lookup. Here each id's own cached string hash (SipHash
 * with the process's secret, computed at most once per string object) finds its slot, and a hit
 * is confirmed by comparing the strings, so a match is exact; the ids go through a pipeline whose
 * stages request the next stage's cache lines (slot, stored list entry, stored string) well
 * before they are read, so the misses overlap instead of following one another. No library probes a hash table for a batch of Python strings in
 * one call. The numpy path gives the same rows and serves where this extension is not built
 * (tests/guard/test_guard_labels.py checks both).
 *
 *   lookup(slots, shift, stored, ids, rows, hasher=None) -> bool
 *       slots: uint64 (size x 2): key (the id's hash as uint64), stored row + 1 (0: empty), built
 *       by linear probing from slot key >> shift; stored: the ids in row order (a list); ids: the
 *       query (a list); rows: int64 output, -1 where absent. Returns False, having written
 *       nothing useful, when a query id is not a str (the caller then takes its general path).
 *       hasher: None for the str hash, else the function the table was keyed with. matrix,
 *       width: optionally, the float64 (rows x width) matrix the caller gathers from next: each
 *       found row's cache lines are requested as soon as the probe finds it, so the gather's
 *       misses overlap the lookup's (a hint; nothing is read from it).
 *   gather(matrix, width, cols, rows, block, ok, meta_at, meta) -> bool
 *       matrix: float64 (items x width); for each row (-1: an unknown item) the label columns
 *       cols into block (labels x n, so each label is contiguous) with ok (uint8: not NaN), and
 *       the columns meta_at and meta_at + 1 (freshness, version code) into meta (2 x n; NaN and
 *       -1 for an unknown item). One pass with the next rows prefetched, instead of a row gather,
 *       a transposing copy and a NaN test. True when every value of every row is present.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Exact equality of two str objects, as str == str decides it: the same length, kind and code
 * units (a string's kind is the narrowest that holds it). -1 with an exception set on error. */
static inline int same_str(PyObject *a, PyObject *b) {
    if (a == b)
        return 1;
    if (!PyUnicode_IS_READY(a) || !PyUnicode_IS_READY(b)) { /* a legacy string: the general path */
        int c = PyUnicode_Compare(a, b);
        return c == -1 && PyErr_Occurred() ? -1 : c == 0;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(a);
    int kind = PyUnicode_KIND(a);
    return len == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b)
           && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len * (size_t)kind) == 0;
}

static PyObject *lookup(PyObject *self, PyObject *args) {
    PyObject *slots_obj, *stored, *ids, *rows_obj, *hasher = Py_None, *matrix_obj = Py_None;
    Py_ssize_t width = 0;
    int shift;
    if (!PyArg_ParseTuple(args, "OiO!O!O|OOn", &slots_obj, &shift, &PyList_Type, &stored, &PyList_Type, &ids, &rows_obj, &hasher,
                          &matrix_obj, &width))
        return NULL;
    if (shift < 1 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be in 1..63");
        return NULL;
    }
    Py_buffer slots, rows;
    if (PyObject_GetBuffer(slots_obj, &slots, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(rows_obj, &rows, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&slots);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(ids), size = slots.len / 16, n_stored = PyList_GET_SIZE(stored);
    PyObject *result = NULL;
    uint64_t *at = NULL;
    if (rows.len != n * 8 || size != ((Py_ssize_t)1 << (64 - shift))) {
        PyErr_SetString(PyExc_ValueError, "rows must hold one int64 per id, and slots 2**(64 - shift) rows of two uint64");
        goto done;
    }
    at = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (!at) {
        PyErr_NoMemory();
        goto done;
    }
    const uint64_t *table = slots.buf;
    int64_t *out = rows.buf;
    /* the rows the gather reads next: each is requested as soon as its id is found (a hint only:
     * an id the comparison then refuses costs one wasted request) */
    const char *upcoming = NULL;
    Py_ssize_t row_bytes = 0, matrix_rows = 0;
    if (matrix_obj != Py_None) {
        Py_buffer matrix;
        if (PyObject_GetBuffer(matrix_obj, &matrix, PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        upcoming = matrix.buf; /* the caller holds the matrix for the call */
        row_bytes = width * 8;
        matrix_rows = row_bytes > 0 ? matrix.len / row_bytes : 0;
        PyBuffer_Release(&matrix);
    }
    const uint64_t mask = (uint64_t)size - 1;
    /* A software pipeline, AHEAD ids apart per stage, so that each stage's memory reads were
     * requested a stage earlier and many cache misses are in flight at once (the table, the
     * stored list and the stored strings are larger than the cache): at step i, id i is hashed
     * and its slot requested; id i - AHEAD probes its slot and requests its stored list entry;
     * id i - 2 AHEAD reads that entry and requests the stored string; id i - 3 AHEAD compares. */
    enum { AHEAD = 16 };
    for (Py_ssize_t i = 0; i < n + 3 * AHEAD; i++) {
        if (i < n) {
            if (i + AHEAD < n) /* the id objects are scattered over the heap */
                __builtin_prefetch(PyList_GET_ITEM(ids, i + AHEAD));
            PyObject *id = PyList_GET_ITEM(ids, i);
            if (!PyUnicode_CheckExact(id)) {
                result = Py_False;
                goto done;
            }
            uint64_t h;
            if (hasher == Py_None) {
                Py_hash_t ph = PyObject_Hash(id);
                if (ph == -1)
                    goto done;
                h = (uint64_t)ph;
            } else { /* the table was keyed by this function (tests force collisions with it) */
                PyObject *k = PyObject_CallOneArg(hasher, id);
                if (!k)
                    goto done;
                long long v = PyLong_AsLongLong(k);
                Py_DECREF(k);
                if (v == -1 && PyErr_Occurred())
                    goto done;
                h = (uint64_t)v;
            }
            at[i] = h;
            __builtin_prefetch(&table[2 * ((h >> shift) & mask)]);
        }
        Py_ssize_t j = i - AHEAD;
        if (j >= 0 && j < n) { /* probe to the slot holding the key (keys are unique in the table) */
            uint64_t key = at[j], s = (key >> shift) & mask;
            int64_t row = -1;
            while (table[2 * s + 1]) {
                if (table[2 * s] == key) {
                    row = (int64_t)table[2 * s + 1] - 1;
                    if (row < n_stored) {
                        __builtin_prefetch(&((PyListObject *)stored)->ob_item[row]);
                        if (row < matrix_rows) {
                            __builtin_prefetch(upcoming + row * row_bytes);
                            __builtin_prefetch(upcoming + row * row_bytes + row_bytes - 1);
                        }
                    } else
                        row = -1;
                    break;
                }
                s = (s + 1) & mask;
            }
            out[j] = row;
        }
        j -= AHEAD;
        if (j >= 0 && j < n && out[j] >= 0) { /* the header, and the line after it, where a short id's text ends */
            const char *a = (const char *)PyList_GET_ITEM(stored, out[j]);
            __builtin_prefetch(a);
            __builtin_prefetch(a + 63);
        }
        j -= AHEAD;
        if (j >= 0 && out[j] >= 0) { /* confirm the match by comparing the strings */
            int same = same_str(PyList_GET_ITEM(stored, out[j]), PyList_GET_ITEM(ids, j));
            if (same < 0)
                goto done;
            if (!same)
                out[j] = -1; /* the same key as a stored id, but another id: absent */
        }
    }
    result = Py_True;
done:
    free(at);
    PyBuffer_Release(&slots);
    PyBuffer_Release(&rows);
    if (!result)
        return NULL;
    Py_INCREF(result);
    return result;
}

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *o[6];
    Py_ssize_t width, meta_at;
    if (!PyArg_ParseTuple(args, "OnOOOOnO", &o[0], &width, &o[1], &o[2], &o[3], &o[4], &meta_at, &o[5]))
        return NULL;
    Py_buffer matrix, cols, rows, block, ok, meta;
    Py_buffer *views[6] = {&matrix, &cols, &rows, &block, &ok, &meta};
    int got = 0;
    for (; got < 6; got++)
        if (PyObject_GetBuffer(o[got], views[got], PyBUF_C_CONTIGUOUS | (got >= 3 ? PyBUF_WRITABLE : 0)) < 0)
            goto done;
    {
        Py_ssize_t n_rows = width > 0 ? matrix.len / (width * 8) : 0, labels = cols.len / 8, n = rows.len / 8;
        const int64_t *col = cols.buf, *row = rows.buf;
        if (width <= 0 || matrix.len != n_rows * width * 8 || block.len != labels * n * 8 || ok.len != labels * n
            || meta.len != 2 * n * 8 || meta_at < 0 || meta_at + 2 > width) {
            PyErr_SetString(PyExc_ValueError, "gather: buffer sizes do not match (matrix rows x width float64, "
                                              "labels x n block and ok, 2 x n meta)");
            goto done;
        }
        for (Py_ssize_t k = 0; k < labels; k++)
            if (col[k] < 0 || col[k] >= width) {
                PyErr_SetString(PyExc_IndexError, "gather: a label column is outside the matrix");
                goto done;
            }
        for (Py_ssize_t i = 0; i < n; i++)
            if (row[i] >= n_rows) {
                PyErr_SetString(PyExc_IndexError, "gather: a row is outside the matrix");
                goto done;
            }
        const double *m = matrix.buf;
        double *out = block.buf, *fresh = meta.buf, *code = (double *)meta.buf + n;
        uint8_t *present = ok.buf;
        int all = 1;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i + 8 < n && row[i + 8] >= 0) /* rows are random: ask for one a little ahead */
                __builtin_prefetch(m + row[i + 8] * width);
            if (row[i] < 0) {
                for (Py_ssize_t k = 0; k < labels; k++) {
                    out[k * n + i] = NAN;
                    present[k * n + i] = 0;
                }
                fresh[i] = NAN;
                code[i] = -1.0;
                all = 0;
                continue;
            }
            const double *r = m + row[i] * width;
            for (Py_ssize_t k = 0; k < labels; k++) {
                double v = r[col[k]];
                out[k * n + i] = v;
                present[k * n + i] = v == v;
                all &= v == v;
            }
            fresh[i] = r[meta_at];
            code[i] = r[meta_at + 1];
        }
        Py_END_ALLOW_THREADS
        for (int k = 0; k < 6; k++)
            PyBuffer_Release(views[k]);
        return PyBool_FromLong(all);
    }
done:
    for (int k = 0; k < got; k++)
        PyBuffer_Release(views[k]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"lookup", lookup, METH_VARARGS, "Rows of a batch of str ids in a label table's hash table (-1: absent)."},
    {"gather", gather, METH_VARARGS, "Label columns of the given rows, transposed, with presence, freshness and version codes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Batch id lookup for the label store.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
