/* Batch SHA-256 for the decision trace: many small messages per call, the GIL released.
 *
 * Why this is hand-written: hashlib hashes one message per Python call (about 0.5 us of overhead
 * each, and it holds the GIL for inputs under 2 KiB), and no maintained package hashes an Arrow
 * column of small messages in one call (DuckDB's sha256() measured slower than hashlib here).
 * The hashing itself is OpenSSL's (SHA-NI where the CPU has it); this file only loops.
 *
 *   sha256_rows(parts, n) -> bytes (n * 32)
 *       row i's message is the concatenation, in order, of each part's row i: a part is either a
 *       bytes-like constant (the same for every row) or a tuple (offsets, data, offset) holding
 *       the int32 offsets buffer and the data buffer of an Arrow string/binary array and the
 *       array's slice offset. This hashes a record's RFC 8785 JSON from its column pieces
 *       without building the joined string first.
 *   leaf_hashes(hashes) -> bytes    SHA-256(0x00 || h) for each 32-byte h (RFC 9162 leaf)
 *   node_hashes(pairs) -> bytes     SHA-256(0x01 || l || r) for each 64-byte l || r (RFC 9162 node)
 *
 * Every function is checked against hashlib in tests/trace/test_trace_native.py.
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

typedef struct {
    const int32_t *offsets; /* NULL for a constant */
    const uint8_t *data;
    Py_ssize_t length;      /* constant: its length; column: the data buffer's length */
} Part;

static PyObject *sha256_rows(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "On", &seq, &n))
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
    Py_buffer *views = calloc(np ? 2 * np : 1, sizeof(Py_buffer));
    int *held = calloc(np ? 2 * np : 1, sizeof(int));
    PyObject *result = NULL;
    uint8_t *row = NULL;
    if (!parts || !views || !held) {
        PyErr_NoMemory();
        goto done;
    }
    size_t fixed = 0; /* bytes contributed by constants */
    for (Py_ssize_t j = 0; j < np; j++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, j);
        if (PyTuple_Check(item)) {
            PyObject *ob, *db;
            Py_ssize_t off;
            if (!PyArg_ParseTuple(item, "OOn", &ob, &db, &off))
                goto done;
            if (PyObject_GetBuffer(ob, &views[2 * j], PyBUF_SIMPLE) < 0)
                goto done;
            held[2 * j] = 1;
            if (PyObject_GetBuffer(db, &views[2 * j + 1], PyBUF_SIMPLE) < 0)
                goto done;
            held[2 * j + 1] = 1;
            if (off < 0 || (size_t)views[2 * j].len < (size_t)(off + n + 1) * sizeof(int32_t)) {
                PyErr_Format(PyExc_ValueError, "part %zd: the offsets buffer is too short for %zd rows", j, n);
                goto done;
            }
            parts[j].offsets = (const int32_t *)views[2 * j].buf + off;
            parts[j].data = views[2 * j + 1].buf;
            parts[j].length = views[2 * j + 1].len;
            /* Offsets must rise and stay inside the data buffer. */
            const int32_t *o = parts[j].offsets;
            if (o[0] < 0 || (n && o[n] > parts[j].length)) {
                PyErr_Format(PyExc_ValueError, "part %zd: offsets point outside the data buffer", j);
                goto done;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                if (o[i + 1] < o[i]) {
                    PyErr_Format(PyExc_ValueError, "part %zd: offsets decrease at row %zd", j, i);
                    goto done;
                }
            }
        } else {
            if (PyObject_GetBuffer(item, &views[2 * j], PyBUF_SIMPLE) < 0)
                goto done;
            held[2 * j] = 1;
            parts[j].offsets = NULL;
            parts[j].data = views[2 * j].buf;
            parts[j].length = views[2 * j].len;
            fixed += (size_t)parts[j].length;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, n * 32);
    if (!result)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    size_t capacity = fixed + 4096;
    row = malloc(capacity);
    if (!row) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        size_t need = fixed;
        for (Py_ssize_t j = 0; j < np; j++)
            if (parts[j].offsets)
                need += (size_t)(parts[j].offsets[i + 1] - parts[j].offsets[i]);
        if (need > capacity) {
            uint8_t *bigger = realloc(row, need);
            if (!bigger) {
                failed = 1;
                break;
            }
            row = bigger;
            capacity = need;
        }
        size_t at = 0;
        for (Py_ssize_t j = 0; j < np; j++) {
            const uint8_t *src;
            size_t len;
            if (parts[j].offsets) {
                src = parts[j].data + parts[j].offsets[i];
                len = (size_t)(parts[j].offsets[i + 1] - parts[j].offsets[i]);
            } else {
                src = parts[j].data;
                len = (size_t)parts[j].length;
            }
            memcpy(row + at, src, len);
            at += len;
        }
        sha256(row, at, out + 32 * i);
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_CLEAR(result);
        PyErr_NoMemory();
    }
done:
    if (views)
        for (Py_ssize_t k = 0; k < 2 * np; k++)
            if (held[k])
                PyBuffer_Release(&views[k]);
    free(row);
    free(parts);
    free(views);
    free(held);
    Py_DECREF(fast);
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
    uint8_t buf[65];
    buf[0] = prefix;
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(buf + 1, src + width * i, (size_t)width);
        sha256(buf, (size_t)width + 1, out + 32 * i);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    return result;
}

static PyObject *leaf_hashes(PyObject *self, PyObject *args) { return prefixed(args, 0x00, 32); }

static PyObject *node_hashes(PyObject *self, PyObject *args) { return prefixed(args, 0x01, 64); }

static PyMethodDef methods[] = {
    {"sha256_rows", sha256_rows, METH_VARARGS, "SHA-256 of each row's concatenated parts (see the module source)."},
    {"leaf_hashes", leaf_hashes, METH_VARARGS, "SHA-256(0x00 || h) for each 32-byte h."},
    {"node_hashes", node_hashes, METH_VARARGS, "SHA-256(0x01 || l || r) for each 64-byte pair."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Batch SHA-256 for the decision trace.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
