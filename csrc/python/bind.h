/* bind.h - what every binding file shares: array checks, status -> exception,
 * and the GIL macros. This directory is the only place that sees Python.h. */
#ifndef LADE_BIND_H
#define LADE_BIND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_20_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL lade_ARRAY_API
#ifndef LADE_BIND_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "../lade.h"

/* Release the GIL around pure C work. */
#define LADE_NOGIL_BEGIN Py_BEGIN_ALLOW_THREADS
#define LADE_NOGIL_END Py_END_ALLOW_THREADS

#define LADE_ANY (-1) /* a shape entry that takes any size */
enum { LADE_IN = 0, LADE_OUT = 1 };

/* Checks that obj is a NumPy array usable without a copy: exact dtype, native
 * byte order, C-contiguous, aligned, writeable when `out` is LADE_OUT, ndim
 * dimensions matching `shape` (LADE_ANY entries match anything; shape may be
 * NULL to skip the dimension check). Returns obj as an array, or NULL with a
 * TypeError/ValueError that names func, arg, what was expected and what came. */
PyArrayObject *lade_py_array(PyObject *obj, const char *func, const char *arg, int typenum,
                             int out, int ndim, const npy_intp *shape);

/* Same, but None is allowed and gives *result = NULL. Returns 0 or -1. */
int lade_py_optional_array(PyObject *obj, const char *func, const char *arg, int typenum,
                           int out, int ndim, const npy_intp *shape, PyArrayObject **result);

/* An array argument and its name, for lade_py_disjoint. */
typedef struct {
    const char *name;
    PyArrayObject *array; /* NULL (an omitted optional argument) is skipped */
} lade_named_array;

/* Checks that none of the first n_out arrays (the outputs) shares memory with
 * any other array of the list: the kernels read inputs while writing outputs,
 * so an output that aliases an input would give wrong numbers silently. With
 * same_ok (elementwise forward kernels) an output may be exactly an input, which
 * computes in place; a partial overlap is still refused. Returns 0, or -1 with a
 * ValueError naming both arguments. */
int lade_py_disjoint_list(const char *func, int same_ok, int n_out, const lade_named_array *arrays, int n);
#define LADE_NAMED_LIST(...) (const lade_named_array[]){__VA_ARGS__}, \
    (int)(sizeof((const lade_named_array[]){__VA_ARGS__}) / sizeof(lade_named_array))
#define lade_py_disjoint(func, n_out, ...) lade_py_disjoint_list(func, 0, n_out, LADE_NAMED_LIST(__VA_ARGS__))
#define lade_py_disjoint_or_same(func, n_out, ...) lade_py_disjoint_list(func, 1, n_out, LADE_NAMED_LIST(__VA_ARGS__))

/* Raises the exception for a failed status: "func: detail" (or the status
 * text when the core left no detail). Always returns NULL. */
PyObject *lade_py_raise(lade_status st, const char *func);

/* Raises ValueError "func: argument 'arg' ..." built from a printf format.
 * Always returns NULL. */
PyObject *lade_py_value_error(const char *func, const char *arg, const char *fmt, ...);

/* The exception class for LADE_EDECODE (lade.DecodeError, a ValueError). */
extern PyObject *lade_DecodeError;

/* Each binding file adds its functions to the module. */
int lade_register_nn(PyObject *module);
int lade_register_ltmath(PyObject *module);
int lade_register_data(PyObject *module);

#endif
