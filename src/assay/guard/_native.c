/* The guard's candidate check in C.
 *
 * Why this is hand-written: a batch's ids must be non-empty strings, none repeated, checked on
 * every request before any rule runs. A set of 1,000 Python strings costs more than the check
 * needs; here it is one pass over the ids' own cached str hashes into an open-addressing table.
 * Its twin is the set-based check in assay/guard/candidates.py (tested side by side in
 * tests/guard/test_guard_native.py); the extension is optional and the twin serves without.
 * (The typing of columns, the rule resolution and the cap grouping this extension used to hold
 * are the policy library's now: src/assay/policy/_native.c.)
 *
 *   check_ids(ids) -> int
 *       -1 when every id in the list is a non-empty str and none repeats (a hash set of the ids'
 *       own cached str hashes), else the first position that breaks it (the caller names it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static PyMethodDef methods[] = {
    {"check_ids", check_ids, METH_VARARGS, "-1 when every id is a non-empty str and none repeats, else the first position that is not."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "The guard's candidate id check.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
