/* The vectorised rule evaluator's inner loop in C: a rule is a short postfix program over whole
 * candidate columns, and one call runs every rule of a surface over a batch.
 *
 * Why this is hand-written: the numpy evaluator (assay/policy/vectorised.py) spends about 1 µs
 * of numpy work and 5 µs of Python dispatch per rule on 1,000 candidates (closures, value
 * objects, memo lookups, a ufunc call per operator); 25 rules cost about 0.35 ms, most of a
 * guard request. No library evaluates CEL over columns (numexpr has no strings, lists or CEL's
 * error semantics). The program is compiled in Python from the CEL library's checked AST by the
 * same compiler pass that decides what is vectorisable (vectorised.py: NativeCompiler), so both
 * evaluators share one meaning of every operator; rules this subset does not cover stay on the
 * numpy path. The property test in tests/policy/test_policy_agreement.py checks both against
 * the CEL library on random rules and batches.
 *
 *   evaluate(programs, slots, n, out) -> None
 *       programs: tuple of (row, code, consts): code is int32 words, two per instruction (op,
 *       arg); consts a tuple of Python constants (str, int, float, bool, or a tuple of them for a
 *       list literal). slots: tuple of per-batch attribute values (see parse_slot). out: int8
 *       (rules x n, C order); each program writes its row: 0 FALSE, 1 TRUE, 2 MISSING (error).
 *
 * The same module holds the loops the policy batch and the slate function need (moved from the
 * guard's extension when the semantics moved here; their twins are in batch.py and slate.py):
 *
 *   resolve(outcomes, kinds, table, drop_code, allow_code, fail_closed, live, pre_dropped, factors,
 *           first, failed, dropped, action, factor, soft) -> None
 *       the per-candidate rule walk (first hard match decides, fail-closed drops, soft actions
 *       before it stack). This file knows no action: ``table`` (int8, one row of (hard, drops,
 *       precedence) per action code) comes from the action types of assay.policy.actions, so a
 *       new action is one Python type and no C edit.
 *   group_ordinals(values, width, positions, ordinals[, codes]), group_ordinals_str(...)
 *       how many earlier listed rows hold the same value (a cap's grouping; sources' too).
 *   clean_strings(values, width), clean_str_objects(values), one_type(values),
 *   str_lists(rows, offsets, nulls)
 *       the batch's typing passes: fixed-width strings and str objects with no NUL or lone
 *       surrogate, a list's one element type, rows of clean str lists flattened.
 *
 * Values follow CEL: every value carries per-row error flags; strict operators propagate them,
 * && and || absorb an error where the other side decides the result. Strings compare by code
 * point, exactly (a fixed-width row's trailing NULs are padding: the policy library has already
 * marked rows with an interior NUL missing).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { T_BOOL = 1, T_INT = 2, T_DOUBLE = 3, T_STR = 4, T_LIST = 5 };
/* string rows: fixed-width UCS-4, a list of str objects, or (list elements only) Arrow's UTF-8
 * values and offsets */
enum { R_FIXED = 1, R_OBJ = 2, R_UTF8 = 3 };
/* slot kinds, as the Python side builds them (vectorised.py: _native_slot) */
enum { S_BOOL = 1, S_INT = 2, S_DOUBLE = 3, S_UCS4 = 4, S_STROBJ = 5, S_LIST = 6, S_SHARED = 7, S_UTF8 = 8 };
enum {
    OP_SLOT = 1,      /* push slot arg */
    OP_CONST = 2,     /* push constant arg */
    OP_CMP = 3,       /* pop b, a; push a <op> b; arg: 0 <, 1 <=, 2 >, 3 >=, 4 ==, 5 != */
    OP_AND = 4,
    OP_OR = 5,
    OP_NOT = 6,
    OP_IN = 7,        /* pop container, elem; push elem in container */
    OP_STARTS = 8,    /* pop b, a; push a.startsWith(b) */
    OP_ENDS = 9,
    OP_CONTAINS = 10,
    OP_SKIP_AND = 11, /* top is one error-free false for every row: jump to word arg */
    OP_SKIP_OR = 12,  /* top is one error-free true for every row: jump to word arg */
};
#define MAX_STACK 64

/* -- a bump allocator for one rule's temporaries ------------------------------------------- */
typedef struct Block {
    struct Block *next;
    size_t used, size;
    unsigned char data[];
} Block;

typedef struct {
    Block *head;
} Arena;

static void *arena_alloc(Arena *a, size_t bytes) {
    bytes = (bytes + 15) & ~(size_t)15;
    if (!a->head || a->head->used + bytes > a->head->size) {
        size_t size = bytes > 65536 ? bytes : 65536;
        Block *b = malloc(sizeof(Block) + size);
        if (!b) {
            PyErr_NoMemory();
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->size = size;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += bytes;
    return p;
}

static void arena_reset(Arena *a) { /* keep the newest block, free the rest */
    if (!a->head)
        return;
    Block *b = a->head->next;
    while (b) {
        Block *next = b->next;
        free(b);
        b = next;
    }
    a->head->next = NULL;
    a->head->used = 0;
}

static void arena_free(Arena *a) {
    arena_reset(a);
    free(a->head);
    a->head = NULL;
}

/* -- values ---------------------------------------------------------------------------------- */
typedef struct {
    int kind; /* 1, 2 or 4 bytes a code point */
    const void *data;
    Py_ssize_t len;
} StrRef;

typedef struct {
    int type;
    int scalar;           /* one value for every row */
    int serr;             /* scalar: the value is an error */
    const uint8_t *err;   /* vector: per-row error flags, NULL when none */
    /* bool / int / double */
    const uint8_t *b;
    const int64_t *i;
    const double *d;
    uint8_t sb;
    int64_t si;
    double sd;
    /* strings (vector rows, or the scalar as UCS-4) and string list elements */
    int rep;
    const uint32_t *ucs4;
    Py_ssize_t width;
    PyObject *const *objs;
    StrRef s;
    PyObject *sobj; /* the scalar string as the str object it came from */
    const char *u8; /* and as UTF-8 (NULL when it has none), for Arrow's values */
    Py_ssize_t u8len;
    /* lists: a column (offsets over flat elements held in the fields above), or one list for
     * every row (items, converted once) */
    int elem;
    const int64_t *offsets;
    const unsigned char *utf8; /* R_UTF8 elements: value k is utf8[voff[k] : voff[k + 1]] */
    const int64_t *voff;
    Py_ssize_t n_items;
    StrRef *items_s;
    PyObject **items_o;
    double *items_d;
    int64_t *items_i;
} Val;

typedef struct {
    Val val;
    Py_buffer views[4];
    int n_views;
    PyObject *keep; /* a sequence whose items objs points into */
} Slot;

static inline Py_UCS4 cp(const StrRef *r, Py_ssize_t k) {
    switch (r->kind) {
    case 1:
        return ((const uint8_t *)r->data)[k];
    case 2:
        return ((const uint16_t *)r->data)[k];
    default:
        return ((const uint32_t *)r->data)[k];
    }
}

static inline int str_cmp(const StrRef *a, const StrRef *b) {
    Py_ssize_t m = a->len < b->len ? a->len : b->len;
    if (a->kind == 4 && b->kind == 4) {
        const uint32_t *x = a->data, *y = b->data;
        for (Py_ssize_t k = 0; k < m; k++)
            if (x[k] != y[k])
                return x[k] < y[k] ? -1 : 1;
    } else if (a->kind == 1 && b->kind == 1) {
        int c = memcmp(a->data, b->data, (size_t)m);
        if (c)
            return c < 0 ? -1 : 1;
    } else {
        for (Py_ssize_t k = 0; k < m; k++) {
            Py_UCS4 x = cp(a, k), y = cp(b, k);
            if (x != y)
                return x < y ? -1 : 1;
        }
    }
    return a->len < b->len ? -1 : (a->len > b->len ? 1 : 0);
}

static inline int str_eq_at(const StrRef *a, Py_ssize_t at, const StrRef *b) { /* a[at:at+len(b)] == b */
    if (a->kind == b->kind)
        return memcmp((const char *)a->data + at * a->kind, b->data, (size_t)(b->len * b->kind)) == 0;
    for (Py_ssize_t k = 0; k < b->len; k++)
        if (cp(a, at + k) != cp(b, k))
            return 0;
    return 1;
}

static inline int str_eq(const StrRef *a, const StrRef *b) { return a->len == b->len && str_eq_at(a, 0, b); }

static inline void fixed_row(const uint32_t *base, Py_ssize_t width, Py_ssize_t j, StrRef *out) {
    const uint32_t *p = base + j * width;
    Py_ssize_t len = width;
    while (len && p[len - 1] == 0)
        len--;
    out->kind = 4;
    out->data = p;
    out->len = len;
}

static inline void obj_str(PyObject *o, StrRef *out) {
    out->kind = PyUnicode_KIND(o);
    out->data = PyUnicode_DATA(o);
    out->len = PyUnicode_GET_LENGTH(o);
}

/* string j of a string value (scalar, fixed-width or object rows) */
static inline void str_at(const Val *v, Py_ssize_t j, StrRef *out) {
    if (v->scalar)
        *out = v->s;
    else if (v->rep == R_FIXED)
        fixed_row(v->ucs4, v->width, j, out);
    else
        obj_str(v->objs[j], out);
}

/* a Python str as UCS-4 in the arena (scalars are compared with every row: one conversion) */
static int scalar_str(Arena *a, PyObject *o, StrRef *out) {
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "a string constant or shared value is not a str");
        return -1;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    uint32_t *buf = arena_alloc(a, (size_t)(len + 1) * 4);
    if (!buf || !PyUnicode_AsUCS4(o, (Py_UCS4 *)buf, len + 1, 0))
        return -1;
    out->kind = 4;
    out->data = buf;
    out->len = len;
    return 0;
}

/* one Python value (a constant or a shared attribute) as a scalar Val of the given type */
static int scalar_of(Arena *a, PyObject *o, int type, int elem, Val *v) {
    memset(v, 0, sizeof *v);
    v->type = type;
    v->scalar = 1;
    switch (type) {
    case T_BOOL:
        v->sb = (uint8_t)PyObject_IsTrue(o);
        return 0;
    case T_INT:
        v->si = PyLong_AsLongLong(o);
        return (v->si == -1 && PyErr_Occurred()) ? -1 : 0;
    case T_DOUBLE:
        v->sd = PyFloat_AsDouble(o);
        return (v->sd == -1.0 && PyErr_Occurred()) ? -1 : 0;
    case T_STR:
        v->sobj = o;
        if (scalar_str(a, o, &v->s) < 0)
            return -1;
        v->u8 = PyUnicode_AsUTF8AndSize(o, &v->u8len); /* kept in the str object: made once */
        if (!v->u8)
            PyErr_Clear(); /* no UTF-8 form (a lone surrogate): compared by code point instead */
        return 0;
    case T_LIST: {
        PyObject *seq = PySequence_Fast(o, "a list constant or shared list is not a sequence");
        if (!seq)
            return -1;
        Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
        PyObject **items = PySequence_Fast_ITEMS(seq);
        v->elem = elem;
        v->n_items = m;
        int rc = 0;
        if (elem == T_STR) {
            v->items_s = arena_alloc(a, sizeof(StrRef) * (size_t)(m + 1));
            v->items_o = arena_alloc(a, sizeof(PyObject *) * (size_t)(m + 1));
            rc = v->items_s && v->items_o ? 0 : -1;
            for (Py_ssize_t k = 0; k < m && !rc; k++) {
                v->items_o[k] = items[k];
                rc = scalar_str(a, items[k], &v->items_s[k]);
            }
        } else if (elem == T_DOUBLE) {
            v->items_d = arena_alloc(a, sizeof(double) * (size_t)(m + 1));
            rc = v->items_d ? 0 : -1;
            for (Py_ssize_t k = 0; k < m && !rc; k++) {
                v->items_d[k] = PyFloat_AsDouble(items[k]);
                rc = (v->items_d[k] == -1.0 && PyErr_Occurred()) ? -1 : 0;
            }
        } else { /* int, and bool as 0/1 */
            v->items_i = arena_alloc(a, sizeof(int64_t) * (size_t)(m + 1));
            rc = v->items_i ? 0 : -1;
            for (Py_ssize_t k = 0; k < m && !rc; k++) {
                v->items_i[k] = elem == T_BOOL ? PyObject_IsTrue(items[k]) : PyLong_AsLongLong(items[k]);
                rc = (v->items_i[k] == -1 && PyErr_Occurred()) ? -1 : 0;
            }
        }
        /* the items stay alive while the call runs: the constant or slot tuple holds the sequence,
         * or (another iterable) the new list is kept in the arena's owner below */
        if (seq != o && elem == T_STR) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "a string list constant must be a tuple or list");
            return -1;
        }
        Py_DECREF(seq);
        return rc;
    }
    }
    PyErr_SetString(PyExc_ValueError, "unknown value type");
    return -1;
}

/* -- slots: one attribute's value for the batch -------------------------------------------- */
static int view(Slot *s, PyObject *obj, Py_ssize_t want_bytes, const char *what) {
    Py_buffer *b = &s->views[s->n_views];
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    s->n_views++;
    if (want_bytes >= 0 && b->len != want_bytes) {
        PyErr_Format(PyExc_ValueError, "slot %s: %zd bytes, expected %zd", what, b->len, want_bytes);
        return -1;
    }
    return 0;
}

static int objects(Slot *s, PyObject *list, Py_ssize_t want) {
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != want) {
        PyErr_SetString(PyExc_ValueError, "slot: string objects must be a list of the right length");
        return -1;
    }
    for (Py_ssize_t k = 0; k < want; k++)
        if (!PyUnicode_Check(PyList_GET_ITEM(list, k)) || PyUnicode_READY(PyList_GET_ITEM(list, k)) < 0) {
            PyErr_SetString(PyExc_TypeError, "slot: a string row is not a str");
            return -1;
        }
    Py_INCREF(list);
    s->keep = list;
    s->val.objs = (PyObject *const *)((PyListObject *)list)->ob_item;
    return 0;
}

static int str_rows(Slot *s, long kind, PyObject *data, Py_ssize_t width, Py_ssize_t rows) {
    Val *v = &s->val;
    if (kind == S_UCS4) {
        if (width <= 0) {
            PyErr_SetString(PyExc_ValueError, "slot: fixed-width strings need a positive width");
            return -1;
        }
        if (view(s, data, rows * width * 4, "strings") < 0)
            return -1;
        v->rep = R_FIXED;
        v->ucs4 = s->views[s->n_views - 1].buf;
        v->width = width;
        return 0;
    }
    if (kind == S_STROBJ) {
        v->rep = R_OBJ;
        return objects(s, data, rows);
    }
    PyErr_SetString(PyExc_ValueError, "slot: unknown string representation");
    return -1;
}

/* count bool, int64 or double values (kind) in obj, read through the slot's data pointers */
static int numbers(Slot *s, PyObject *obj, long kind, Py_ssize_t count, const char *what) {
    if (view(s, obj, count * (kind == S_BOOL ? 1 : 8), what) < 0)
        return -1;
    const void *buf = s->views[s->n_views - 1].buf;
    s->val.b = buf;
    s->val.i = buf;
    s->val.d = buf;
    return 0;
}

static int ascending(const int64_t *offsets, int64_t count, const char *what) {
    for (int64_t k = 0; k < count; k++)
        if (offsets[k] > offsets[k + 1]) {
            PyErr_Format(PyExc_ValueError, "slot: %s must not decrease", what);
            return -1;
        }
    return 0;
}

/* (S_BOOL|S_INT|S_DOUBLE|S_UCS4|S_STROBJ, data, missing|None, width)
 * (S_LIST, elem_kind, flat, missing|None, width, offsets)
 * (S_SHARED, type, elem, ok, value) */
static int parse_slot(Arena *a, PyObject *t, Py_ssize_t n, Slot *s) {
    memset(s, 0, sizeof *s);
    Val *v = &s->val;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 4) {
        PyErr_SetString(PyExc_ValueError, "a slot must be a tuple");
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    if (kind == S_SHARED) {
        if (PyTuple_GET_SIZE(t) != 5) {
            PyErr_SetString(PyExc_ValueError, "a shared slot is (7, type, elem, ok, value)");
            return -1;
        }
        int type = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 1)), elem = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 2));
        if (PyErr_Occurred())
            return -1;
        if (type < T_BOOL || type > T_LIST || (type == T_LIST ? (elem < T_BOOL || elem > T_STR) : elem != 0)) {
            PyErr_SetString(PyExc_ValueError, "a shared slot's type is not one the evaluator knows");
            return -1;
        }
        int ok = PyObject_IsTrue(PyTuple_GET_ITEM(t, 3));
        if (ok < 0)
            return -1;
        if (!ok) { /* missing for every row: an error value, whose data is never read (strict
                    * operators short-circuit on it in run()), but kept well-formed anyway: an
                    * empty string with UTF-8, no items */
            memset(v, 0, sizeof *v);
            v->type = type;
            v->elem = elem;
            v->scalar = 1;
            v->serr = 1;
            v->s.kind = 1;
            v->s.data = "";
            v->u8 = "";
            return 0;
        }
        return scalar_of(a, PyTuple_GET_ITEM(t, 4), type, elem, v);
    }
    PyObject *missing = PyTuple_GET_ITEM(t, kind == S_LIST ? 3 : 2);
    if (missing != Py_None) {
        if (view(s, missing, n, "missing") < 0)
            return -1;
        v->err = s->views[s->n_views - 1].buf;
    }
    if (kind == S_LIST) {
        if (PyTuple_GET_SIZE(t) != 6) {
            PyErr_SetString(PyExc_ValueError, "a list slot is (6, elem kind, flat, missing, width, offsets)");
            return -1;
        }
        v->type = T_LIST;
        if (view(s, PyTuple_GET_ITEM(t, 5), (n + 1) * 8, "offsets") < 0)
            return -1;
        v->offsets = s->views[s->n_views - 1].buf;
        int64_t total = v->offsets[n];
        if (v->offsets[0] != 0 || total < 0) {
            PyErr_SetString(PyExc_ValueError, "slot: list offsets must start at 0");
            return -1;
        }
        if (ascending(v->offsets, n, "list offsets") < 0)
            return -1;
        long ek = PyLong_AsLong(PyTuple_GET_ITEM(t, 1));
        PyObject *flat = PyTuple_GET_ITEM(t, 2);
        Py_ssize_t width = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 4));
        switch (ek) {
        case S_BOOL:
        case S_INT:
        case S_DOUBLE:
            v->elem = (int)ek;
            return numbers(s, flat, ek, (Py_ssize_t)total, "flat");
        case S_UCS4:
        case S_STROBJ:
            v->elem = T_STR;
            return str_rows(s, ek, flat, width, (Py_ssize_t)total);
        case S_UTF8: { /* flat = (value offsets: int64, total + 1; the UTF-8 bytes) */
            if (!PyTuple_Check(flat) || PyTuple_GET_SIZE(flat) != 2) {
                PyErr_SetString(PyExc_ValueError, "slot: UTF-8 list values are (value offsets, bytes)");
                return -1;
            }
            if (view(s, PyTuple_GET_ITEM(flat, 0), (total + 1) * 8, "value offsets") < 0)
                return -1;
            const int64_t *voff = s->views[s->n_views - 1].buf;
            if (view(s, PyTuple_GET_ITEM(flat, 1), -1, "UTF-8 bytes") < 0)
                return -1;
            Py_ssize_t bytes = s->views[s->n_views - 1].len;
            if (voff[0] < 0 || voff[total] > bytes) {
                PyErr_SetString(PyExc_ValueError, "slot: value offsets outside the UTF-8 bytes");
                return -1;
            }
            if (ascending(voff, total, "value offsets") < 0)
                return -1;
            v->elem = T_STR;
            v->rep = R_UTF8;
            v->voff = voff;
            v->utf8 = s->views[s->n_views - 1].buf;
            return 0;
        }
        }
        PyErr_SetString(PyExc_ValueError, "slot: unknown list element kind");
        return -1;
    }
    PyObject *data = PyTuple_GET_ITEM(t, 1);
    switch (kind) {
    case S_BOOL:
    case S_INT:
    case S_DOUBLE:
        v->type = (int)kind;
        return numbers(s, data, kind, n, "data");
    case S_UCS4:
    case S_STROBJ:
        v->type = T_STR;
        return str_rows(s, kind, data, PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 3)), n);
    }
    PyErr_SetString(PyExc_ValueError, "slot: unknown kind");
    return -1;
}

static void release_slot(Slot *s) {
    for (int k = 0; k < s->n_views; k++)
        PyBuffer_Release(&s->views[k]);
    s->n_views = 0;
    Py_CLEAR(s->keep);
}

/* -- operators ------------------------------------------------------------------------------- */
/* the error flags of a strict operator's result: either side's errors */
static int strict_err(Arena *a, const Val *x, const Val *y, Py_ssize_t n, Val *out) {
    if (out->scalar) {
        out->serr = x->serr || y->serr;
        return 0;
    }
    if ((x->scalar && x->serr) || (y->scalar && y->serr)) {
        uint8_t *e = arena_alloc(a, (size_t)n);
        if (!e)
            return -1;
        memset(e, 1, (size_t)n);
        out->err = e;
    } else if (x->err && y->err) {
        uint8_t *e = arena_alloc(a, (size_t)n);
        if (!e)
            return -1;
        for (Py_ssize_t j = 0; j < n; j++)
            e[j] = x->err[j] | y->err[j];
        out->err = e;
    } else {
        out->err = x->err ? x->err : y->err;
    }
    return 0;
}

/* a bool result: one value when every operand is one, else n values from the arena */
static uint8_t *bool_result(Arena *a, int scalar, Py_ssize_t n, Val *out) {
    memset(out, 0, sizeof *out);
    out->type = T_BOOL;
    out->scalar = scalar;
    return scalar ? &out->sb : arena_alloc(a, (size_t)n);
}

#define AT(v, field, sfield, j) ((v)->scalar ? (v)->sfield : (v)->field[j])

/* r[j] = X op Y over m rows, one loop per operator, each simple enough for the compiler to
 * vectorise (X and Y index a vector or read a scalar) */
#define CMP_OPS(X, Y)                                                                                              \
    switch (op) {                                                                                                  \
    case 0: for (Py_ssize_t j = 0; j < m; j++) r[j] = (X) < (Y); break;                                           \
    case 1: for (Py_ssize_t j = 0; j < m; j++) r[j] = (X) <= (Y); break;                                          \
    case 2: for (Py_ssize_t j = 0; j < m; j++) r[j] = (X) > (Y); break;                                           \
    case 3: for (Py_ssize_t j = 0; j < m; j++) r[j] = (X) >= (Y); break;                                          \
    case 4: for (Py_ssize_t j = 0; j < m; j++) r[j] = (X) == (Y); break;                                          \
    default: for (Py_ssize_t j = 0; j < m; j++) r[j] = (X) != (Y); break;                                         \
    }

#define NUM_CMP(CT, field, sfield)                                                                                 \
    do {                                                                                                           \
        const CT *restrict xv = x->field, *restrict yv = y->field;                                                 \
        const CT xs = x->sfield, ys = y->sfield;                                                                   \
        if (x->scalar && y->scalar) {                                                                              \
            CMP_OPS(xs, ys)                                                                                        \
        } else if (y->scalar) {                                                                                    \
            CMP_OPS(xv[j], ys)                                                                                     \
        } else if (x->scalar) {                                                                                    \
            CMP_OPS(xs, yv[j])                                                                                     \
        } else {                                                                                                   \
            CMP_OPS(xv[j], yv[j])                                                                                  \
        }                                                                                                          \
    } while (0)

/* a scalar string as one fixed-width row of the column's width (NUL padded), so that a row
 * equals it exactly when their width code points are equal; NULL when it cannot be: longer
 * than the width (no row equals it), or holding a NUL (padding could not be told apart) */
static const uint32_t *padded(Arena *a, const StrRef *s, Py_ssize_t width, int *too_long) {
    *too_long = s->len > width;
    if (*too_long)
        return NULL;
    for (Py_ssize_t k = 0; k < s->len; k++)
        if (cp(s, k) == 0)
            return NULL;
    uint32_t *p = arena_alloc(a, (size_t)width * 4);
    if (!p)
        return NULL;
    for (Py_ssize_t k = 0; k < width; k++)
        p[k] = k < s->len ? cp(s, k) : 0;
    return p;
}

static inline int row_equals(const uint32_t *row, const uint32_t *want, Py_ssize_t width) {
    for (Py_ssize_t k = 0; k < width; k++)
        if (row[k] != want[k])
            return 0;
    return 1;
}

/* compiled twice where the compiler can (GCC or clang on x86-64 ELF): an AVX2 build, chosen at
 * load time on CPUs that have it, vectorises the double and int64 comparisons that SSE2 cannot */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static int compare(Arena *a, const Val *x, const Val *y, int op, Py_ssize_t n, Val *out) {
    if (x->type != y->type) {
        PyErr_SetString(PyExc_TypeError, "comparison of values of two types");
        return -1;
    }
    uint8_t *restrict r = bool_result(a, x->scalar && y->scalar, n, out);
    if (!r)
        return -1;
    Py_ssize_t m = out->scalar ? 1 : n;
    switch (x->type) {
    case T_BOOL:
        NUM_CMP(uint8_t, b, sb);
        break;
    case T_INT:
        NUM_CMP(int64_t, i, si);
        break;
    case T_DOUBLE:
        NUM_CMP(double, d, sd);
        break;
    case T_STR: {
        const Val *col = x->scalar ? y : x, *one = x->scalar ? x : y;
        if (op >= 4 && !out->scalar && one->scalar && col->rep == R_FIXED) {
            /* the usual string rule: a fixed-width column == a constant, row by row */
            int too_long;
            const uint32_t *want = padded(a, &one->s, col->width, &too_long);
            if (want || too_long) {
                uint8_t neg = op == 5;
                for (Py_ssize_t j = 0; j < n; j++)
                    r[j] = (uint8_t)((want && row_equals(col->ucs4 + j * col->width, want, col->width)) ^ neg);
                break;
            }
            if (PyErr_Occurred())
                return -1;
        }
        StrRef sx, sy;
        for (Py_ssize_t j = 0; j < m; j++) {
            str_at(x, j, &sx);
            str_at(y, j, &sy);
            int c;
            if (op >= 4) {
                c = str_eq(&sx, &sy);
                r[j] = (uint8_t)(op == 4 ? c : !c);
                continue;
            }
            c = str_cmp(&sx, &sy);
            r[j] = (uint8_t)(op == 0 ? c < 0 : op == 1 ? c <= 0 : op == 2 ? c > 0 : c >= 0);
        }
        break;
    }
    default:
        PyErr_SetString(PyExc_TypeError, "comparison of lists");
        return -1;
    }
    if (!out->scalar)
        out->b = r;
    return strict_err(a, x, y, n, out);
}

static inline uint8_t bool_at(const Val *v, Py_ssize_t j) { return v->scalar ? v->sb : v->b[j]; }
static inline uint8_t err_at(const Val *v, Py_ssize_t j) { return v->scalar ? (uint8_t)v->serr : (v->err ? v->err[j] : 0); }

static int logical(Arena *a, const Val *x, const Val *y, int is_and, Py_ssize_t n, Val *out) {
    if (x->type != T_BOOL || y->type != T_BOOL) {
        PyErr_SetString(PyExc_TypeError, "&& and || need bools");
        return -1;
    }
    int scalar = x->scalar && y->scalar;
    /* one error-free side that does not decide the result: the result is the other side */
    if (!scalar && x->scalar && !x->serr && x->sb == is_and) {
        *out = *y;
        return 0;
    }
    if (!scalar && y->scalar && !y->serr && y->sb == is_and) {
        *out = *x;
        return 0;
    }
    uint8_t *restrict r = bool_result(a, scalar, n, out);
    if (!r)
        return -1;
    Py_ssize_t m = scalar ? 1 : n;
    int any_err = (x->scalar ? x->serr : x->err != NULL) || (y->scalar ? y->serr : y->err != NULL);
    if (!any_err && !x->scalar && !y->scalar) {
        const uint8_t *restrict xb = x->b, *restrict yb = y->b;
        if (is_and)
            for (Py_ssize_t j = 0; j < n; j++)
                r[j] = xb[j] & yb[j];
        else
            for (Py_ssize_t j = 0; j < n; j++)
                r[j] = xb[j] | yb[j];
        out->b = r;
        return 0;
    }
    uint8_t *restrict e = NULL;
    if (any_err && !out->scalar && !(e = arena_alloc(a, (size_t)n)))
        return -1;
    for (Py_ssize_t j = 0; j < m; j++) {
        uint8_t xd = bool_at(x, j), yd = bool_at(y, j);
        r[j] = is_and ? (xd & yd) : (xd | yd);
        if (any_err) {
            uint8_t xe = err_at(x, j), ye = err_at(y, j);
            /* the side that decides the result absorbs the other side's error */
            uint8_t xdec = !xe && (is_and ? !xd : xd), ydec = !ye && (is_and ? !yd : yd);
            uint8_t err = (xe | ye) && !(xdec | ydec);
            if (out->scalar)
                out->serr = err;
            else
                e[j] = err;
        }
    }
    if (!out->scalar) {
        out->b = r;
        out->err = e;
    }
    return 0;
}

static int negate(Arena *a, const Val *x, Py_ssize_t n, Val *out) {
    if (x->type != T_BOOL) {
        PyErr_SetString(PyExc_TypeError, "! needs a bool");
        return -1;
    }
    *out = *x;
    if (x->scalar) {
        out->sb = !x->sb;
        return 0;
    }
    uint8_t *r = arena_alloc(a, (size_t)n);
    if (!r)
        return -1;
    for (Py_ssize_t j = 0; j < n; j++)
        r[j] = !x->b[j];
    out->b = r;
    return 0;
}

/* two str objects are equal: CPython keeps every ready str in its narrowest kind, so equal
 * strings have equal kinds and bytes */
static inline int obj_eq(PyObject *a, PyObject *b) {
    if (a == b)
        return 1;
    Py_ssize_t len = PyUnicode_GET_LENGTH(a);
    int kind = PyUnicode_KIND(a);
    return len == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len * (size_t)kind) == 0;
}

/* UTF-8 bytes (valid, as Arrow's are) equal a string, code point by code point */
static int utf8_eq(const unsigned char *u, Py_ssize_t ulen, const StrRef *s) {
    Py_ssize_t i = 0, k = 0;
    while (i < ulen) {
        unsigned char b = u[i];
        Py_UCS4 c;
        int extra = b < 0x80 ? 0 : b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
        if (i + extra >= ulen && extra)
            return 0;
        c = extra == 0 ? b : extra == 1 ? (Py_UCS4)(b & 0x1F) : extra == 2 ? (Py_UCS4)(b & 0x0F) : (Py_UCS4)(b & 0x07);
        for (int t = 1; t <= extra; t++)
            c = (c << 6) | (u[i + t] & 0x3F);
        i += 1 + extra;
        if (k >= s->len || cp(s, k) != c)
            return 0;
        k++;
    }
    return k == s->len;
}

/* element k of a list column's flat values equals row j of e (or e's one value) */
static inline int flat_eq(const Val *lst, Py_ssize_t k, const Val *e, Py_ssize_t j) {
    switch (lst->elem) {
    case T_STR: {
        if (lst->rep == R_OBJ && e->scalar && e->sobj)
            return obj_eq(lst->objs[k], e->sobj);
        if (lst->rep == R_UTF8) {
            const unsigned char *u = lst->utf8 + lst->voff[k];
            Py_ssize_t ulen = (Py_ssize_t)(lst->voff[k + 1] - lst->voff[k]);
            if (e->scalar && e->u8)
                return ulen == e->u8len && memcmp(u, e->u8, (size_t)ulen) == 0;
            StrRef es;
            str_at(e, j, &es);
            return utf8_eq(u, ulen, &es);
        }
        StrRef s, es;
        if (lst->rep == R_FIXED)
            fixed_row(lst->ucs4, lst->width, k, &s);
        else
            obj_str(lst->objs[k], &s);
        str_at(e, j, &es);
        return str_eq(&s, &es);
    }
    case T_DOUBLE:
        return lst->d[k] == AT(e, d, sd, j);
    case T_INT:
        return lst->i[k] == AT(e, i, si, j);
    default:
        return lst->b[k] == AT(e, b, sb, j);
    }
}

/* item k of a one-for-every-row list equals row j of e */
static inline int item_eq(const Val *lst, Py_ssize_t k, const Val *e, Py_ssize_t j) {
    switch (lst->elem) {
    case T_STR: {
        if (!e->scalar && e->rep == R_OBJ)
            return obj_eq(e->objs[j], lst->items_o[k]);
        StrRef es;
        str_at(e, j, &es);
        return str_eq(&lst->items_s[k], &es);
    }
    case T_DOUBLE:
        return lst->items_d[k] == AT(e, d, sd, j);
    case T_INT:
        return lst->items_i[k] == AT(e, i, si, j);
    default:
        return lst->items_i[k] == AT(e, b, sb, j);
    }
}

static int contains_elem(Arena *a, const Val *e, const Val *lst, Py_ssize_t n, Val *out) {
    if (lst->type != T_LIST || e->type != lst->elem) {
        PyErr_SetString(PyExc_TypeError, "`in` needs a list of the element's type");
        return -1;
    }
    uint8_t *restrict r = bool_result(a, e->scalar && lst->scalar, n, out);
    if (!r)
        return -1;
    Py_ssize_t m = out->scalar ? 1 : n;
    if (!lst->scalar && e->scalar) {
        /* one value in a list column: test each flat element once, and mark the row of each
         * match */
        const int64_t *off = lst->offsets;
        int64_t total = off[n];
        memset(r, 0, (size_t)n);
        const uint32_t *want = NULL;
        int too_long = 0;
        if (e->type == T_STR && lst->rep == R_FIXED) {
            want = padded(a, &e->s, lst->width, &too_long);
            if (!want && PyErr_Occurred())
                return -1;
        }
        Py_ssize_t j = 0; /* the row of element k: rows only move forward as k does */
        if (!too_long)
            for (int64_t k = 0; k < total; k++) {
                int hit = want ? row_equals(lst->ucs4 + k * lst->width, want, lst->width) : flat_eq(lst, (Py_ssize_t)k, e, 0);
                if (!hit)
                    continue;
                while (off[j + 1] <= k)
                    j++;
                r[j] = 1;
            }
        out->b = r;
        return strict_err(a, e, lst, n, out);
    }
    if (lst->scalar && !e->scalar && e->type == T_STR && e->rep == R_FIXED) {
        /* a fixed-width column in a list of constants: each constant padded to the width once */
        Py_ssize_t w = e->width, k_items = lst->n_items;
        const uint32_t **want = arena_alloc(a, sizeof(uint32_t *) * (size_t)(k_items + 1));
        int usable = want != NULL;
        for (Py_ssize_t k = 0; usable && k < k_items; k++) {
            int too_long;
            want[k] = padded(a, &lst->items_s[k], w, &too_long);
            usable = want[k] || too_long; /* too long: equals no row (NULL) */
        }
        if (PyErr_Occurred())
            return -1;
        if (usable) {
            const uint32_t *rows = e->ucs4;
            for (Py_ssize_t j = 0; j < n; j++) {
                int hit = 0;
                for (Py_ssize_t k = 0; k < k_items && !hit; k++)
                    hit = want[k] && row_equals(rows + j * w, want[k], w);
                r[j] = (uint8_t)hit;
            }
            out->b = r;
            return strict_err(a, e, lst, n, out);
        }
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        int hit = 0;
        if (lst->scalar) {
            for (Py_ssize_t k = 0; k < lst->n_items && !hit; k++)
                hit = item_eq(lst, k, e, j);
        } else {
            for (int64_t k = lst->offsets[j]; k < lst->offsets[j + 1] && !hit; k++)
                hit = flat_eq(lst, (Py_ssize_t)k, e, j);
        }
        r[j] = (uint8_t)hit;
    }
    if (!out->scalar)
        out->b = r;
    return strict_err(a, e, lst, n, out);
}

static int string_test(Arena *a, const Val *x, const Val *y, int op, Py_ssize_t n, Val *out) {
    if (x->type != T_STR || y->type != T_STR) {
        PyErr_SetString(PyExc_TypeError, "string functions need strings");
        return -1;
    }
    uint8_t *restrict r = bool_result(a, x->scalar && y->scalar, n, out);
    if (!r)
        return -1;
    Py_ssize_t m = out->scalar ? 1 : n;
    if (op == OP_STARTS && !x->scalar && x->rep == R_FIXED && y->scalar) {
        /* a fixed-width column's prefix: rows hold no interior NUL, so a NUL-free prefix
         * matches exactly when its code points equal the row's first ones */
        int too_long;
        const uint32_t *want = padded(a, &y->s, x->width, &too_long);
        if (want || too_long) {
            const uint32_t *rows = x->ucs4;
            Py_ssize_t k = y->s.len, w = x->width;
            for (Py_ssize_t j = 0; j < n; j++)
                r[j] = (uint8_t)(want && row_equals(rows + j * w, want, k));
            out->b = r;
            return strict_err(a, x, y, n, out);
        }
        if (PyErr_Occurred())
            return -1;
    }
    StrRef sx, sy;
    for (Py_ssize_t j = 0; j < m; j++) {
        str_at(x, j, &sx);
        str_at(y, j, &sy);
        int hit = 0;
        if (sy.len <= sx.len) {
            if (op == OP_STARTS)
                hit = str_eq_at(&sx, 0, &sy);
            else if (op == OP_ENDS)
                hit = str_eq_at(&sx, sx.len - sy.len, &sy);
            else
                for (Py_ssize_t at = 0; at + sy.len <= sx.len && !hit; at++)
                    hit = str_eq_at(&sx, at, &sy);
        }
        r[j] = (uint8_t)hit;
    }
    if (!out->scalar)
        out->b = r;
    return strict_err(a, x, y, n, out);
}

/* -- one program ----------------------------------------------------------------------------- */
static int run(Arena *a, const int32_t *code, Py_ssize_t words, PyObject *consts, Slot *slots, Py_ssize_t n_slots,
               Py_ssize_t n, int8_t *row) {
    Val stack[MAX_STACK];
    int top = 0;
    for (Py_ssize_t pc = 0; pc + 1 < words; pc += 2) {
        int op = code[pc], arg = code[pc + 1];
        if (op == OP_SLOT || op == OP_CONST) {
            if (top >= MAX_STACK) {
                PyErr_SetString(PyExc_ValueError, "program stack overflow");
                return -1;
            }
            if (op == OP_SLOT) {
                if (arg < 0 || arg >= n_slots) {
                    PyErr_SetString(PyExc_IndexError, "program reads a slot that is not there");
                    return -1;
                }
                stack[top++] = slots[arg].val;
            } else {
                /* consts[arg] = (type, elem, value) */
                if (arg < 0 || arg >= PyTuple_GET_SIZE(consts)) {
                    PyErr_SetString(PyExc_IndexError, "program reads a constant that is not there");
                    return -1;
                }
                PyObject *c = PyTuple_GET_ITEM(consts, arg);
                if (!PyTuple_Check(c) || PyTuple_GET_SIZE(c) != 3) {
                    PyErr_SetString(PyExc_ValueError, "a constant is (type, elem, value)");
                    return -1;
                }
                int type = (int)PyLong_AsLong(PyTuple_GET_ITEM(c, 0)), elem = (int)PyLong_AsLong(PyTuple_GET_ITEM(c, 1));
                if (scalar_of(a, PyTuple_GET_ITEM(c, 2), type, elem, &stack[top]) < 0)
                    return -1;
                top++;
            }
            continue;
        }
        if (op == OP_SKIP_AND || op == OP_SKIP_OR) {
            if (top < 1) {
                PyErr_SetString(PyExc_ValueError, "program stack underflow");
                return -1;
            }
            if (arg <= pc || arg > words || arg % 2) {
                PyErr_SetString(PyExc_ValueError, "program jumps backwards or outside itself");
                return -1;
            }
            const Val *x = &stack[top - 1];
            if (x->scalar && !x->serr && (op == OP_SKIP_AND ? !x->sb : x->sb))
                pc = arg - 2; /* the loop adds 2 */
            continue;
        }
        int arity = op == OP_NOT ? 1 : 2;
        if (top < arity) {
            PyErr_SetString(PyExc_ValueError, "program stack underflow");
            return -1;
        }
        Val result;
        Val *x = &stack[top - arity], *y = &stack[top - 1];
        int rc;
        if ((op == OP_CMP || op == OP_IN || op == OP_STARTS || op == OP_ENDS || op == OP_CONTAINS) &&
            ((x->scalar && x->serr) || (y->scalar && y->serr))) {
            /* a strict operator with an operand that is an error for every row (a request-wide
             * value that is absent): the result is an error for every row, and the operand's
             * data (which an absent value does not have) is never read */
            memset(&result, 0, sizeof result);
            result.type = T_BOOL;
            result.scalar = 1;
            result.serr = 1;
            top -= arity;
            stack[top++] = result;
            continue;
        }
        switch (op) {
        case OP_CMP:
            rc = compare(a, x, y, arg, n, &result);
            break;
        case OP_AND:
        case OP_OR:
            rc = logical(a, x, y, op == OP_AND, n, &result);
            break;
        case OP_NOT:
            rc = negate(a, x, n, &result);
            break;
        case OP_IN:
            rc = contains_elem(a, x, y, n, &result);
            break;
        case OP_STARTS:
        case OP_ENDS:
        case OP_CONTAINS:
            rc = string_test(a, x, y, op, n, &result);
            break;
        default:
            PyErr_Format(PyExc_ValueError, "unknown instruction %d", op);
            return -1;
        }
        if (rc < 0)
            return -1;
        top -= arity;
        stack[top++] = result;
    }
    if (top != 1 || stack[0].type != T_BOOL) {
        PyErr_SetString(PyExc_ValueError, "a program must leave one bool");
        return -1;
    }
    const Val *v = &stack[0];
    if (v->scalar) {
        memset(row, v->serr ? 2 : v->sb ? 1 : 0, (size_t)n);
    } else if (v->err) { /* bools are 0/1 bytes: an error row is 2 whatever its data */
        const uint8_t *restrict b = v->b, *restrict e = v->err;
        for (Py_ssize_t j = 0; j < n; j++)
            row[j] = (int8_t)((b[j] & (e[j] ^ 1)) | (e[j] << 1));
    } else {
        memcpy(row, v->b, (size_t)n);
    }
    return 0;
}

static PyObject *evaluate(PyObject *self, PyObject *args) {
    PyObject *programs, *slot_objs, *out_obj;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!O!nO", &PyTuple_Type, &programs, &PyTuple_Type, &slot_objs, &n, &out_obj))
        return NULL;
    Py_buffer out;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        return NULL;
    Py_ssize_t rows = n ? out.len / n : 0;
    if (n < 0 || (n && out.len % n)) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "out must be (rules x n) int8");
        return NULL;
    }
    /* the arenas outlive the call: their blocks are reused, not returned to malloc and faulted in
     * again every batch. A call that finds them busy (a re-entrant call from another thread, should
     * a conversion ever run Python code) takes arenas of its own. */
    static Arena kept_slots, kept_temps;
    static int busy;
    Arena own_slots = {NULL}, own_temps = {NULL};
    int mine = !busy;
    Arena *arena = mine ? &kept_slots : &own_slots, *temps = mine ? &kept_temps : &own_temps;
    busy = 1;
    Py_ssize_t n_slots = PyTuple_GET_SIZE(slot_objs);
    Slot stack_slots[32];
    Slot *slots = n_slots <= 32 ? stack_slots : calloc((size_t)n_slots, sizeof(Slot));
    int ok = slots != NULL;
    if (!ok)
        PyErr_NoMemory();
    Py_ssize_t parsed = 0;
    while (ok && parsed < n_slots) {
        int rc = parse_slot(arena, PyTuple_GET_ITEM(slot_objs, parsed), n, &slots[parsed]);
        parsed++; /* a slot that failed half-way still has views to release */
        ok = rc == 0;
    }
    for (Py_ssize_t p = 0; ok && p < PyTuple_GET_SIZE(programs); p++) {
        PyObject *prog = PyTuple_GET_ITEM(programs, p);
        Py_ssize_t row;
        PyObject *code_obj, *consts;
        if (!PyArg_ParseTuple(prog, "nOO!", &row, &code_obj, &PyTuple_Type, &consts)) {
            ok = 0;
            break;
        }
        if (row < 0 || row >= rows) {
            PyErr_SetString(PyExc_IndexError, "program row outside out");
            ok = 0;
            break;
        }
        Py_buffer code;
        if (PyObject_GetBuffer(code_obj, &code, PyBUF_C_CONTIGUOUS) < 0) {
            ok = 0;
            break;
        }
        ok = run(temps, code.buf, code.len / 4, consts, slots, n_slots, n, (int8_t *)out.buf + row * n) == 0;
        PyBuffer_Release(&code);
        arena_reset(temps);
    }
    for (Py_ssize_t k = 0; k < parsed; k++)
        release_slot(&slots[k]);
    if (slots != stack_slots)
        free(slots);
    arena_reset(arena);
    if (mine)
        busy = 0;
    else {
        arena_free(&own_slots);
        arena_free(&own_temps);
    }
    PyBuffer_Release(&out);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

/* -- typing a batch's columns, resolving outcomes, grouping caps ------------------------------------
 * (moved here from the guard's extension: the policy library's batch types every input and its
 * slate semantics resolve and cap, so the loops they need live with them) */
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
    PyObject *o[12], *table_obj;
    int drop_code, allow_code;
    if (!PyArg_ParseTuple(args, "OOOiiOOOOOOOOOO", &o[0], &o[1], &table_obj, &drop_code, &allow_code, &o[2], &o[3],
                          &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11]))
        return NULL;
    Py_buffer b[12], table;
    int got = 0, have_table = 0;
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
    if (PyObject_GetBuffer(table_obj, &table, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    have_table = 1;
    /* one row of (hard, drops, precedence) per action code; every code used must have a row */
    const Py_ssize_t codes = table.len / 3;
    if (table.len % 3 || codes < 1 || codes > 128 || drop_code < 0 || drop_code >= codes || allow_code < 0 ||
        allow_code >= codes) {
        PyErr_Format(PyExc_ValueError, "table: %zd bytes is not one (hard, drops, precedence) row per action code, "
                     "or the drop/allow codes %d/%d are outside it", table.len, drop_code, allow_code);
        goto done;
    }
    for (; got < 12; got++)
        if (get(o[got], &b[got], got >= 6, want[got], size[got], names[got]) < 0)
            goto done;
    {
        const int8_t *out = b[0].buf;
        const int8_t *kinds = b[1].buf;
        const int8_t *act = table.buf;
        const uint8_t *fail_closed = b[2].buf, *live = b[3].buf, *pre = b[4].buf;
        const double *factors = b[5].buf;
        int32_t *first = b[6].buf;
        uint8_t *failed = b[7].buf, *dropped = b[8].buf, *soft = b[11].buf;
        int8_t *action = b[9].buf;
        double *factor = b[10].buf;
        for (Py_ssize_t r = 0; r < rules; r++)
            if (kinds[r] < 0 || kinds[r] >= codes) {
                PyErr_Format(PyExc_ValueError, "kinds[%zd] = %d has no row in the action table", r, (int)kinds[r]);
                goto done;
            }
        Py_BEGIN_ALLOW_THREADS
        /* rule by rule, in order, over a row of outcomes that is mostly FALSE (zero bytes): whole
         * 8-byte words of FALSE are skipped, and a candidate stops at its deciding hard rule, so a
         * soft rule only ever acts before it */
        for (Py_ssize_t i = 0; i < n; i++) {
            first[i] = (int32_t)rules;
            failed[i] = 0;
            dropped[i] = pre[i] != 0;
            factor[i] = 1.0;
            action[i] = (int8_t)allow_code; /* the soft marks until the final pass */
        }
        for (Py_ssize_t r = 0; r < rules; r++) {
            if (!live[r])
                continue;
            const int8_t *row = out + r * n;
            const int8_t kind = kinds[r];
            const int hard_kind = act[kind * 3] != 0, drops = act[kind * 3 + 1] != 0;
            const int8_t precedence = act[kind * 3 + 2];
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
                    if (hard_kind || v == OUT_MISSING) { /* hard, or failing closed */
                        first[i] = (int32_t)r;
                        failed[i] = v == OUT_MISSING;
                        dropped[i] = failed[i] || drops;
                    } else {
                        soft[r * n + i] = 1;
                        factor[i] *= factors[r]; /* 1.0 for an action that does not scale: exact */
                        if (precedence > act[action[i] * 3 + 2]) /* the first of the highest precedence names it */
                            action[i] = kind;
                    }
                }
                i++;
            }
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (dropped[i])
                action[i] = (int8_t)drop_code;
        Py_END_ALLOW_THREADS
    }
done:
    for (int k = 0; k < got; k++)
        PyBuffer_Release(&b[k]);
    if (have_table)
        PyBuffer_Release(&table);
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
    {"evaluate", evaluate, METH_VARARGS, "Run compiled rule programs over a batch's columns into an outcome matrix."},
    {"group_ordinals_str", group_ordinals_str, METH_VARARGS, "group_ordinals for a list of str (None: one group); -1 for any other type."},
    {"one_type", one_type, METH_O, "The type every item of a list has, or None (mixed, or empty)."},
    {"str_lists", str_lists, METH_VARARGS, "Rows of clean str lists (None: missing) flattened, with offsets and a null mask; None otherwise."},
    {"clean_str_objects", clean_str_objects, METH_O, "True when every item of a list is a str holding no NUL and no lone surrogate."},
    {"clean_strings", clean_strings, METH_VARARGS, "True when no row of a fixed-width str array holds a NUL before a code point or a lone surrogate."},
    {"resolve", resolve, METH_VARARGS, "Resolve rule outcomes per candidate: first hard match, stacked soft actions."},
    {"group_ordinals", group_ordinals, METH_VARARGS, "For listed fixed-width rows, how many earlier listed rows are equal."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "The vectorised rule evaluator's inner loop.", -1, methods};

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
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    return m;
}
