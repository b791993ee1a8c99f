/* bind.c - the one argument parser of lade._C (bind.h): array and scalar checks, shape letters,
 * output allocation and aliasing, dispatch of the binding tables, and the errors they raise. */
#include "bind.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

PyObject *lade_DecodeError;

#define LADE_ANY (-1) /* an unbound dimension, shown as * */

static void format_shape(char *buf, size_t size, int ndim, const npy_intp *dims) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, size - used, "(");
    for (int i = 0; i < ndim && used < size; i++) {
        if (dims[i] == LADE_ANY)
            used += (size_t)snprintf(buf + used, size - used, "%s*", i ? ", " : "");
        else
            used += (size_t)snprintf(buf + used, size - used, "%s%ld", i ? ", " : "", (long)dims[i]);
    }
    if (used < size) snprintf(buf + used, size - used, ndim == 1 ? ",)" : ")");
}

/* An ndarray of the argument's dtype (or an equivalent one in native byte order). */
static PyArrayObject *check_type(PyObject *obj, const char *func, const lade_arg *arg) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: argument '%s' must be a numpy.ndarray of %s, got %s",
                     func, arg->name, arg->what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    PyArray_Descr *d = PyArray_DESCR(a);
    if (d->type_num != arg->dtype && !(PyArray_EquivTypenums(d->type_num, arg->dtype) && PyArray_ISNBO(d->byteorder))) {
        PyObject *got = PyObject_Str((PyObject *)d);
        PyErr_Format(PyExc_TypeError, "%s: argument '%s' must have dtype %s, got %s%s", func, arg->name,
                     arg->what, got ? PyUnicode_AsUTF8(got) : "?",
                     PyArray_ISNBO(d->byteorder) ? "" : " (non-native byte order)");
        Py_XDECREF(got);
        return NULL;
    }
    return a;
}

/* Usable without a copy: native byte order, C-contiguous, aligned, writeable when out. */
static int check_layout(PyArrayObject *a, const char *func, const char *arg, int out) {
    PyArray_Descr *d = PyArray_DESCR(a);
    const char *problem = NULL;
    if (!PyArray_ISNBO(d->byteorder))
        problem = "must be in native byte order, got a byte-swapped array";
    else if (!PyArray_IS_C_CONTIGUOUS(a))
        problem = "must be C-contiguous, got a non-contiguous array (use numpy.ascontiguousarray to make a copy "
                  "explicitly)";
    else if (!PyArray_ISALIGNED(a))
        problem = "must be aligned to its dtype, got a misaligned array";
    else if (out && !PyArray_ISWRITEABLE(a))
        problem = "is an output and must be writeable, got a read-only array";
    for (int i = 0; !problem && i < PyArray_NDIM(a); i++)
        if (PyArray_DIM(a, i) > 0x3fffffff) {
            PyErr_Format(PyExc_ValueError, "%s: argument '%s' has dimension %d of size %zd, above the 2^30 limit",
                         func, arg, i, (Py_ssize_t)PyArray_DIM(a, i));
            return -1;
        }
    if (problem) PyErr_Format(PyExc_ValueError, "%s: argument '%s' %s", func, arg, problem);
    return problem ? -1 : 0;
}

/* ---- the argument tables ---------------------------------------------------------------- */
static int role(const lade_arg *a) { return a->role & LADE_ROLE; }
static int is_array(const lade_arg *a) { return role(a) != LADE_SCALAR; }
static int is_output(const lade_arg *a) { return role(a) == LADE_OUT || role(a) == LADE_GRAD; }

/* The wanted shape, with the letters bound so far ('*' for the others). */
static void wanted_shape(const lade_call *c, const lade_arg *a, char *buf, size_t size, int *ndim, npy_intp *dims) {
    if (!strcmp(a->shape, "...")) {
        PyArrayObject *g = c->array[c->group_by];
        *ndim = PyArray_NDIM(g);
        memcpy(dims, PyArray_DIMS(g), sizeof(npy_intp) * *ndim);
    } else {
        *ndim = (int)strlen(a->shape);
        for (int i = 0; i < *ndim; i++) {
            unsigned char ch = (unsigned char)a->shape[i];
            dims[i] = ch >= '0' && ch <= '9' ? ch - '0' : ch == '*' ? LADE_ANY : c->dim[ch];
        }
    }
    if (buf) format_shape(buf, size, *ndim, dims);
}

/* Checks the shape of argument k against its table entry, binding letters. */
static int check_shape(lade_call *c, int k) {
    const lade_arg *a = &c->spec[k];
    PyArrayObject *arr = c->array[k];
    int partner = -1, bad = 0;
    if (!strcmp(a->shape, "...")) {
        if (c->group_by < 0) {
            c->group_by = k;
            return 0;
        }
        PyArrayObject *g = c->array[c->group_by];
        bad = !PyArray_SAMESHAPE(g, arr);
        partner = c->group_by;
    } else {
        int nd = (int)strlen(a->shape);
        bad = PyArray_NDIM(arr) != nd;
        for (int i = 0; !bad && i < nd; i++) {
            unsigned char ch = (unsigned char)a->shape[i];
            npy_intp size = PyArray_DIM(arr, i);
            if (ch >= '0' && ch <= '9') bad = size != ch - '0';
            else if (ch == '*') continue;
            else if (c->dim[ch] < 0) c->dim[ch] = size, c->bound_by[ch] = (signed char)k;
            else if (c->dim[ch] != size) bad = 1, partner = c->bound_by[ch];
        }
    }
    if (!bad) return 0;
    char want[160], got[160], theirs[160], match[400] = "";
    int nd;
    npy_intp dims[NPY_MAXDIMS];
    wanted_shape(c, a, want, sizeof want, &nd, dims);
    format_shape(got, sizeof got, PyArray_NDIM(arr), PyArray_DIMS(arr));
    if (partner >= 0 && partner != k) {
        PyArrayObject *p = c->array[partner];
        format_shape(theirs, sizeof theirs, PyArray_NDIM(p), PyArray_DIMS(p));
        snprintf(match, sizeof match, " to match argument '%s' of shape %s", c->spec[partner].name, theirs);
    }
    PyErr_Format(PyExc_ValueError, "%s: argument '%s' must have shape %s%s, got %s", c->func, a->name, want, match,
                 got);
    return -1;
}

/* dtype, then shape (a shape names the argument's role), then layout */
static int check_array(lade_call *c, int k) {
    const lade_arg *a = &c->spec[k];
    PyArrayObject *arr = check_type(c->given[k], c->func, a);
    if (!arr) return -1;
    c->array[k] = (PyArrayObject *)Py_NewRef(arr);
    return check_shape(c, k) || check_layout(arr, c->func, a->name, role(a) != LADE_IN) ? -1 : 0;
}

static int convert_scalar(lade_call *c, int k) {
    const lade_arg *a = &c->spec[k];
    PyObject *o = c->given[k];
    if (!o) return 0; /* its value stays 0 */
    switch (a->dtype) {
    case 'f':
        c->value[k].f = PyFloat_AsDouble(o);
        if (c->value[k].f == -1.0 && PyErr_Occurred()) goto type_error;
        return 0;
    case 'p': {
        int t = PyObject_IsTrue(o);
        c->value[k].i = t;
        return t < 0 ? -1 : 0;
    }
    case 'i':
    case 'n':
    case 'K': {
        if (!PyLong_Check(o) && !PyIndex_Check(o)) goto type_error;
        PyObject *v = PyNumber_Index(o);
        if (!v) return -1;
        int overflow = 0;
        long long i = PyLong_AsLongLongAndOverflow(v, &overflow);
        /* K: above a long long may still fit (else an OverflowError, turned into the range's ValueError) */
        c->value[k].u = a->dtype == 'K' && overflow > 0 ? PyLong_AsUnsignedLongLong(v) : (unsigned long long)i;
        Py_DECREF(v);
        if (!PyErr_Occurred() && (a->dtype == 'K' ? overflow >= 0 && (overflow || i >= 0)
                                  : !overflow && (a->dtype == 'n' ? i >= 0 : i >= INT_MIN && i <= INT_MAX)))
            return 0;
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be %s, got %R", c->func, a->name,
                     a->dtype == 'n' ? "a size >= 0" : a->dtype == 'K' ? "in [0, 2**64)" : "a 32-bit int", o);
        return -1;
    }
    case 's': {
        const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
        if (!(c->value[k].s = s)) goto type_error;
        if (!a->shape) return 0;
        /* s(A|B): the index of s among the names "A|B" of shape */
        const char *name = a->shape;
        for (int i = 0;; i++, name += strcspn(name, "|") + 1) {
            size_t len = strcspn(name, "|");
            if (len == strlen(s) && !strncmp(name, s, len)) return c->value[k].i = i, 0;
            if (!name[len]) break;
        }
        PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be %s, got '%s'", c->func, a->name, a->what, s);
        return -1;
    }
    case 'I': { /* a sequence of ints (an ndarray too, which also has __index__), or an int */
        PyObject *seq = PySequence_Check(o) && !PyUnicode_Check(o) ? PySequence_Tuple(o)
                        : PyIndex_Check(o)                         ? PyTuple_Pack(1, o) : NULL;
        if (!seq) goto type_error;
        Py_ssize_t n = PyTuple_GET_SIZE(seq);
        int bad = n > 64 - c->n_ints ? -1 : 0;
        c->value[k].ints.start = c->n_ints, c->value[k].ints.count = (int)n;
        for (Py_ssize_t i = 0; !bad && i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(seq, i);
            int overflow = 0;
            long long v = PyIndex_Check(item) ? PyLong_AsLongLongAndOverflow(item, &overflow) : 0;
            if (!PyIndex_Check(item)) bad = 1; /* a TypeError */
            else if (PyErr_Occurred() || overflow || v < INT_MIN || v > INT_MAX) bad = -1;
            else c->ints[c->n_ints++] = (int)v;
        }
        if (bad < 0)
            PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be 32-bit ints (at most %d), got %R", c->func,
                         a->name, 64 - c->value[k].ints.start, o);
        else if (!bad && a->shape && (n < 1 || n > 2)) /* I2 */
            bad = -1, PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be an int or a pair of ints, got %zd ints",
                                   c->func, a->name, n);
        Py_DECREF(seq);
        if (bad > 0) goto type_error;
        return bad;
    }
    case 'y': /* a C-contiguous buffer, held by a memoryview */
        if (!PyObject_CheckBuffer(o) || !(c->value[k].o = PyMemoryView_FromObject(o))) goto type_error;
        if (PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(c->value[k].o), 'C')) return 0;
        goto type_error;
    case 'P': /* a path: a str in the file system's encoding */
        if (!PyUnicode_Check(o)) goto type_error;
        return (c->value[k].o = PyUnicode_EncodeFSDefault(o)) ? 0 : -1;
    default: /* 'O' */
        if (a->type && !PyObject_TypeCheck(o, a->type)) goto type_error;
        c->value[k].o = o;
        return 0;
    }
type_error:
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s: argument '%s' must be %s%s, got %s", c->func, a->name, a->type ? "a " : "",
                 a->type ? a->type->tp_name : a->what, Py_TYPE(o)->tp_name);
    return -1;
}

/* The slot of the argument a keyword names, or -1. */
static int find_arg(const lade_call *c, const char *name) {
    for (int k = 0; k < c->n; k++)
        if (!strcmp(c->spec[k].name, name)) return k;
    return -1;
}

/* Puts a method's object (SELF), the positional and the keyword arguments in their table slots. */
static int place_arguments(lade_call *c, PyObject *self, PyObject *args, PyObject *kw) {
    Py_ssize_t nargs = args ? PyTuple_GET_SIZE(args) : 0, used = 0, is_method = (c->spec[0].role & LADE_SELF) != 0;
    if (is_method) c->given[0] = self;
    for (int k = (int)is_method; k < c->n && used < nargs; k++)
        if (!(c->spec[k].role & LADE_HIDDEN)) c->given[k] = PyTuple_GET_ITEM(args, used++);
    if (used < nargs) { /* a method counts its object, as Python does */
        PyErr_Format(PyExc_TypeError, "%s: takes at most %zd positional arguments, got %zd", c->func,
                     used + is_method, nargs + is_method);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (kw && PyDict_Next(kw, &pos, &key, &value)) {
        const char *name = PyUnicode_AsUTF8(key);
        int k = name ? find_arg(c, name) : -1;
        if (k < 0 || (c->spec[k].role & (LADE_HIDDEN | LADE_SELF))) {
            if (name) PyErr_Format(PyExc_TypeError, "%s: unexpected keyword argument '%s'", c->func, name);
            return -1;
        }
        if (c->given[k]) {
            PyErr_Format(PyExc_TypeError, "%s: got multiple values for argument '%s'", c->func, name);
            return -1;
        }
        c->given[k] = value;
    }
    for (int k = 0; k < c->n; k++) {
        const lade_arg *a = &c->spec[k];
        if (c->given[k] == Py_None && ((a->role & LADE_OPT) || is_output(a))) c->given[k] = NULL;
        if (!c->given[k] && !(a->role & (LADE_OPT | LADE_HIDDEN)) && !is_output(a)) {
            PyErr_Format(PyExc_TypeError, "%s: missing required argument '%s'", c->func, a->name);
            return -1;
        }
    }
    return 0;
}

int lade_parse(lade_call *c, const char *func, const lade_arg *spec, PyObject *self, PyObject *args, PyObject *kw) {
    memset(c, 0, sizeof *c);
    c->func = func;
    c->spec = spec;
    c->group_by = -1;
    for (int i = 0; i < 128; i++) c->dim[i] = -1, c->bound_by[i] = -1;
    while (spec[c->n].name) c->n++; /* at most LADE_MAX_ARGS (gen_bindings.py checks) */
    if (place_arguments(c, self, args, kw)) return -1;
    for (int k = 0; k < c->n; k++) {
        const lade_arg *a = &spec[k];
        if (!is_array(a)) {
            if (convert_scalar(c, k)) return -1;
        } else if (c->given[k] && !is_output(a) && !(a->role & LADE_LATE) && check_array(c, k)) {
            return -1;
        }
    }
    return 0;
}

/* Arrays here are C-contiguous, so each one is the byte range [data, data + nbytes). */
static int ranges_overlap(PyArrayObject *a, PyArrayObject *b) {
    const char *a0 = PyArray_BYTES(a), *b0 = PyArray_BYTES(b);
    npy_intp na = PyArray_NBYTES(a), nb = PyArray_NBYTES(b);
    return na > 0 && nb > 0 && a0 < b0 + nb && b0 < a0 + na;
}

static int same_range(PyArrayObject *a, PyArrayObject *b) {
    return PyArray_BYTES(a) == PyArray_BYTES(b) && PyArray_NBYTES(a) == PyArray_NBYTES(b);
}

int lade_outputs(lade_call *c) {
    for (int k = 0; k < c->n; k++) {
        const lade_arg *a = &c->spec[k];
        if (!is_array(a) || c->array[k] || c->skip[k] || (a->role & LADE_NEW) || !(is_output(a) || c->given[k]))
            continue;
        if (c->given[k]) {
            if (check_array(c, k)) return -1;
            continue;
        }
        int nd;
        npy_intp dims[NPY_MAXDIMS];
        wanted_shape(c, a, NULL, 0, &nd, dims);
        for (int i = 0; i < nd; i++) {
            if (dims[i] < 0) {
                PyErr_Format(PyExc_SystemError, "%s: the size of output '%s' is unknown", c->func, a->name);
                return -1;
            }
            if (dims[i] > 0x3fffffff) {
                PyErr_Format(PyExc_ValueError, "%s: output '%s' would have dimension %d of size %zd, above the 2^30 "
                             "limit", c->func, a->name, i, (Py_ssize_t)dims[i]);
                return -1;
            }
        }
        c->array[k] = (PyArrayObject *)(role(a) == LADE_GRAD ? PyArray_ZEROS(nd, dims, a->dtype, 0)
                                                              : PyArray_EMPTY(nd, dims, a->dtype, 0));
        if (!c->array[k]) {
            char shape[160];
            format_shape(shape, sizeof shape, nd, dims);
            PyErr_Format(PyExc_MemoryError, "%s: cannot allocate output '%s' of shape %s", c->func, a->name, shape);
            return -1;
        }
    }
    /* the kernels read inputs while writing outputs: an output that aliases another
     * argument would give wrong numbers silently */
    for (int i = 0; i < c->n; i++) {
        const lade_arg *out = &c->spec[i];
        if (!c->given[i] || !c->array[i] || !(is_output(out) || role(out) == LADE_INOUT)) continue;
        for (int j = 0; j < c->n; j++) {
            if (j == i || !c->given[j] || !c->array[j] || !ranges_overlap(c->array[i], c->array[j])) continue;
            if ((out->role & LADE_INPLACE) && role(&c->spec[j]) == LADE_IN && same_range(c->array[i], c->array[j]))
                continue;
            PyErr_Format(PyExc_ValueError,
                         "%s: argument '%s' is an output and must not share memory with argument '%s', "
                         "got overlapping arrays (pass a separate array or a copy)",
                         c->func, out->name, c->spec[j].name);
            return -1;
        }
    }
    return 0;
}

PyObject *lade_call_end(lade_call *c, PyObject *result) {
    for (int k = 0; k < c->n; k++) {
        const lade_arg *a = &c->spec[k];
        Py_CLEAR(c->array[k]);
        if (a->role & LADE_NEW) lade_free(c->value[k].p);
        else if (!is_array(a) && (a->dtype == 'y' || a->dtype == 'P')) Py_CLEAR(c->value[k].o);
    }
    return result;
}

static void free_buffer(PyObject *capsule) { lade_free(PyCapsule_GetPointer(capsule, NULL)); }

PyObject *lade_adopt(lade_call *c, int k) {
    int nd;
    npy_intp dims[NPY_MAXDIMS];
    wanted_shape(c, &c->spec[k], NULL, 0, &nd, dims);
    PyObject *a = PyArray_SimpleNewFromData(nd, dims, c->spec[k].dtype, c->value[k].p);
    PyObject *owner = a ? PyCapsule_New(c->value[k].p, NULL, free_buffer) : NULL;
    if (owner) c->value[k].p = NULL; /* the capsule frees it now, and the array holds the capsule */
    if (owner && PyArray_SetBaseObject((PyArrayObject *)a, owner) == 0) return a;
    Py_XDECREF(a); /* PyArray_SetBaseObject released the capsule */
    return NULL;
}

/* ---- dispatch ---------------------------------------------------------------------------- */
int lade_object_ready(const lade_object *obj, const char *func) {
    const char *problem = !obj->core ? "is not initialised (or closed)" : obj->busy ? "is in use by another thread" : 0;
    if (problem) PyErr_Format(PyExc_RuntimeError, "%s: the %s %s", func, Py_TYPE(obj)->tp_name, problem);
    return problem ? -1 : 0;
}

/* The error of a failed method call. When a Python callback raised inside it (self->cause), that
 * exception becomes the cause of the error; one that is not an Exception (KeyboardInterrupt,
 * SystemExit) is raised as it is. */
static PyObject *raise_from_cause(lade_status st, const char *func, lade_object *self) {
    PyObject *cause = self ? self->cause : NULL;
    if (!cause) return lade_py_raise(st, func);
    self->cause = NULL;
    if (!PyObject_IsInstance(cause, PyExc_Exception)) {
        lade_clear_error();
        PyErr_SetObject((PyObject *)Py_TYPE(cause), cause);
        Py_DECREF(cause);
        return NULL;
    }
    lade_py_raise(st, func);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyException_SetCause(value, cause); /* steals cause */
    PyErr_Restore(type, value, tb);
    return NULL;
}

PyObject *lade_dispatch(const lade_binding *b, PyObject *self, PyObject *args, PyObject *kw) {
    lade_call c;
    PyObject *result = NULL;
    int ok = !lade_parse(&c, b->func, b->spec, self, args, kw);
    if (ok && b->name) b->name(&c);
    if (ok && (b->spec[0].role & LADE_SELF)) { /* a method: hold the object */
        ok = !lade_object_ready((lade_object *)c.value[0].o, c.func);
        if (ok) c.self = (lade_object *)c.value[0].o, c.self->busy = 1;
    }
    if (ok && !(b->infer && b->infer(&c)) && !lade_outputs(&c)) {
        lade_status st;
        Py_BEGIN_ALLOW_THREADS
        st = b->run(&c);
        Py_END_ALLOW_THREADS
        result = st ? raise_from_cause(st, c.func, c.self) : b->result(&c);
    }
    if (c.self) c.self->busy = 0;
    return lade_call_end(&c, result);
}

PyObject *lade_py_raise(lade_status st, const char *func) {
    const char *detail = lade_error_detail();
    if (!detail[0]) detail = lade_status_str(st);
    PyObject *type;
    switch (st) {
    case LADE_ENOMEM: type = PyExc_MemoryError; break;
    case LADE_ENONFINITE: type = PyExc_FloatingPointError; break;
    case LADE_EIO: type = PyExc_OSError; break;
    case LADE_EDECODE: type = lade_DecodeError; break;
    case LADE_ESTATE: type = PyExc_RuntimeError; break;
    case LADE_ECANCELLED: type = PyExc_KeyboardInterrupt; break;
    default: type = PyExc_ValueError; break;
    }
    PyErr_Format(type, "%s: %s", func, detail);
    lade_clear_error();
    return NULL;
}
