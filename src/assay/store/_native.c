/* Batch lookup of item ids in the in-memory label store's hash table.
 *
 * Why this is hand-written: the guard looks up a whole candidate batch (1,000 ids) per request.
 * A dict lookup per id from Python is a chain of dependent cache misses plus interpreter work per
 * id; the numpy path (assay/store/labels.py, _IdKeys.rows_of) converts the ids to a fixed-width
 * array first, which costs more than the lookup. Here each id's own cached string hash (SipHash
 * with the process's secret, computed at most once per string object) finds its slot, the slots
 * of the whole batch are prefetched before any is read, and a hit is confirmed by comparing the
 * strings, so a match is exact. No library probes a hash table for a batch of Python strings in
 * one call. The numpy path gives the same rows and serves where this extension is not built
 * (tests/guard/test_guard_labels.py checks both).
 *
 *   lookup(slots, shift, stored, ids, rows, hasher=None) -> bool
 *       slots: uint64 (size x 2): key (the id's hash as uint64), stored row + 1 (0: empty), built
 *       by linear probing from slot key >> shift; stored: the ids in row order (a list); ids: the
 *       query (a list); rows: int64 output, -1 where absent. Returns False, having written
 *       nothing useful, when a query id is not a str (the caller then takes its general path).
 *       hasher: None for the str hash, else the function the table was keyed with.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

static PyObject *lookup(PyObject *self, PyObject *args) {
    PyObject *slots_obj, *stored, *ids, *rows_obj, *hasher = Py_None;
    int shift;
    if (!PyArg_ParseTuple(args, "OiO!O!O|O", &slots_obj, &shift, &PyList_Type, &stored, &PyList_Type, &ids, &rows_obj, &hasher))
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
    const uint64_t mask = (uint64_t)size - 1;
    /* pass 1: every id's hash and home slot, each slot's cache line requested before any is read */
    for (Py_ssize_t i = 0; i < n; i++) {
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
    /* pass 2: probe to the slot holding the key (keys are unique in the table), and request the
     * stored string's cache line; pass 3 then confirms each match by comparing the strings */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = at[i], s = (key >> shift) & mask;
        int64_t row = -1;
        while (table[2 * s + 1]) {
            if (table[2 * s] == key) {
                row = (int64_t)table[2 * s + 1] - 1;
                if (row < n_stored)
                    __builtin_prefetch(PyList_GET_ITEM(stored, row));
                else
                    row = -1;
                break;
            }
            s = (s + 1) & mask;
        }
        out[i] = row;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (out[i] < 0)
            continue;
        PyObject *a = PyList_GET_ITEM(stored, out[i]), *b = PyList_GET_ITEM(ids, i);
        if (a != b && PyUnicode_Compare(a, b) != 0) {
            if (PyErr_Occurred())
                goto done;
            out[i] = -1; /* the same key as a stored id, but another id: absent */
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

static PyMethodDef methods[] = {
    {"lookup", lookup, METH_VARARGS, "Rows of a batch of str ids in a label table's hash table (-1: absent)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Batch id lookup for the label store.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
