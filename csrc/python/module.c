/* module.c - the lade._C extension: module init and the shared binding helpers. */
#define LADE_BIND_MAIN
#include "bind.h"

#include <stdarg.h>
#include <stdio.h>

PyObject *lade_DecodeError;

static const char *dtype_name(int typenum) {
    switch (typenum) {
    case NPY_FLOAT32: return "float32";
    case NPY_FLOAT64: return "float64";
    case NPY_INT64: return "int64";
    case NPY_INT32: return "int32";
    case NPY_UINT8: return "uint8";
    case NPY_BOOL: return "bool";
    default: return "?";
    }
}

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

PyArrayObject *lade_py_array(PyObject *obj, const char *func, const char *arg, int typenum,
                             int out, int ndim, const npy_intp *shape) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: argument '%s' must be a numpy.ndarray of %s, got %s",
                     func, arg, dtype_name(typenum), Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    PyArray_Descr *d = PyArray_DESCR(a);
    if (d->type_num != typenum && !(PyArray_EquivTypenums(d->type_num, typenum) && PyArray_ISNBO(d->byteorder))) {
        PyObject *got = PyObject_Str((PyObject *)d);
        PyErr_Format(PyExc_TypeError, "%s: argument '%s' must have dtype %s, got %s%s", func, arg,
                     dtype_name(typenum), got ? PyUnicode_AsUTF8(got) : "?",
                     PyArray_ISNBO(d->byteorder) ? "" : " (non-native byte order)");
        Py_XDECREF(got);
        return NULL;
    }
    if (!PyArray_ISNBO(d->byteorder)) {
        PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be in native byte order, got a byte-swapped array",
                     func, arg);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: argument '%s' must be C-contiguous, got a non-contiguous array "
                     "(use numpy.ascontiguousarray to make a copy explicitly)", func, arg);
        return NULL;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be aligned to its dtype, got a misaligned array",
                     func, arg);
        return NULL;
    }
    if (out && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s: argument '%s' is an output and must be writeable, got a read-only array",
                     func, arg);
        return NULL;
    }
    if (shape || ndim >= 0) {
        int bad = PyArray_NDIM(a) != ndim;
        for (int i = 0; !bad && shape && i < ndim; i++)
            if (shape[i] != LADE_ANY && shape[i] != PyArray_DIM(a, i)) bad = 1;
        if (bad) {
            char want[160], got[160];
            if (shape) format_shape(want, sizeof want, ndim, shape);
            else snprintf(want, sizeof want, "%d dimensions", ndim);
            format_shape(got, sizeof got, PyArray_NDIM(a), PyArray_DIMS(a));
            PyErr_Format(PyExc_ValueError, "%s: argument '%s' must have shape %s, got %s", func, arg, want, got);
            return NULL;
        }
    }
    return a;
}

int lade_py_optional_array(PyObject *obj, const char *func, const char *arg, int typenum,
                           int out, int ndim, const npy_intp *shape, PyArrayObject **result) {
    if (obj == NULL || obj == Py_None) {
        *result = NULL;
        return 0;
    }
    *result = lade_py_array(obj, func, arg, typenum, out, ndim, shape);
    return *result ? 0 : -1;
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

int lade_py_disjoint_list(const char *func, int same_ok, int n_out, const lade_named_array *arrays, int n) {
    for (int i = 0; i < n_out; i++) {
        if (!arrays[i].array) continue;
        for (int j = 0; j < n; j++) {
            if (j == i || !arrays[j].array || !ranges_overlap(arrays[i].array, arrays[j].array)) continue;
            if (same_ok && j >= n_out && same_range(arrays[i].array, arrays[j].array)) continue;
            PyErr_Format(PyExc_ValueError,
                         "%s: argument '%s' is an output and must not share memory with argument '%s', "
                         "got overlapping arrays (pass a separate array or a copy)",
                         func, arrays[i].name, arrays[j].name);
            return -1;
        }
    }
    return 0;
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

PyObject *lade_py_value_error(const char *func, const char *arg, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    PyErr_Format(PyExc_ValueError, "%s: argument '%s' %s", func, arg, msg);
    return NULL;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_set_num_threads((int)(n > 100000 ? 100000 : n < -1 ? -1 : n));
    LADE_NOGIL_END
    if (st) return lade_py_raise(st, "lade.set_num_threads");
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    int n;
    LADE_NOGIL_BEGIN
    n = lade_get_num_threads();
    LADE_NOGIL_END
    return PyLong_FromLong(n);
}

static PyObject *py_cpu_info(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:i}", "model", info.model, "features", info.features, "supported",
                         info.supported, "variant", info.active, "vector_floats", info.vector_floats);
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyUnicode_Check(arg))
        return PyErr_Format(PyExc_TypeError, "lade.set_isa: argument 'name' must be a str, got %s",
                            Py_TYPE(arg)->tp_name);
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    lade_status st = lade_set_isa(name);
    if (st) return lade_py_raise(st, "lade.set_isa");
    Py_RETURN_NONE;
}

static PyMethodDef base_methods[] = {
    {"cpu_info", py_cpu_info, METH_NOARGS,
     "cpu_info() -> dict\n\nThe CPU model, the ISA features found, the kernel variants it supports and the one in use."},
    {"set_isa", py_set_isa, METH_O,
     "set_isa(name)\n\nSwitches the kernel variant ('avx512', 'avx2', 'generic'; 'w16_avx2' for tests)."},
    {"set_num_threads", py_set_num_threads, METH_O,
     "set_num_threads(n)\n\nThreads for OpenBLAS and lade's own pool (n >= 1)."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "lade._C", "The C core of lade (see csrc/lade.h).", -1, base_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    lade_status isa = lade_isa_from_env();
    if (isa) return lade_py_raise(isa, "import lade");
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    lade_DecodeError = PyErr_NewExceptionWithDoc(
        "lade.DecodeError", "A file's content is malformed (JPEG, CIFAR batch, list file).",
        PyExc_ValueError, NULL);
    if (!lade_DecodeError || PyModule_AddObjectRef(m, "DecodeError", lade_DecodeError) < 0 ||
        lade_register_nn(m) < 0 || lade_register_ltmath(m) < 0 || lade_register_data(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
