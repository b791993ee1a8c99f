/* bind.h - the one binding convention of lade._C. This directory is the only
 * place that sees Python.h.
 *
 * Every function takes keyword (or positional) arguments described by a table
 * of lade_arg, one entry per argument. One parser (lade_parse, lade_outputs)
 * reads the table: it checks every array (dtype, layout, shape), binds the
 * dimension letters of the shapes so that arguments that must agree do,
 * allocates the outputs the caller did not pass, refuses outputs that share
 * memory with another argument, and converts the scalars. lade_call_end frees
 * what the call holds. A binding keeps only its shape inference and the core
 * call. Errors name the public function (fixed in C), the argument, what was
 * expected and what came.
 *
 * To add a function: write its core call, `static lade_status run(lade_call *c)`
 * (it reads the arguments by name: F32(c, "x"), DIM(c, 'n'), lade_num(c, "lr"),
 * and runs without the GIL), if needed a shape inference `static int
 * infer(lade_call *c)` that LADE_BINDs the letters only argument values fix, and
 * add one lade_binding to the file's table. A method of a type that wraps a C
 * object (LADE_OBJECT_HEAD) is the same with SELF(&Type) first in its table,
 * added with lade_add_methods; c->self->core is the C object. */
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

#include "lade.h"

/* Release the GIL around pure C work. */
#define LADE_NOGIL_BEGIN Py_BEGIN_ALLOW_THREADS
#define LADE_NOGIL_END Py_END_ALLOW_THREADS

/* Roles. Arrays: IN is read; OUT is written (allocated, uninitialised, when not
 * passed); GRAD is accumulated into (allocated zero-filled when not passed);
 * INOUT is updated in place and never allocated. Flags: OPT, the argument may
 * be omitted or None; LATE, an input checked after the shape inference (its
 * shape uses dimensions only inference binds); HIDDEN, an output that is not
 * an argument; INPLACE, an output that may be exactly an input (an elementwise
 * kernel that reads each element before writing it); SELF, the object a method
 * is called on (first entry of a method's table, see SELF below). */
enum {
    LADE_IN = 1, LADE_OUT = 2, LADE_GRAD = 3, LADE_INOUT = 4, LADE_SCALAR = 5, LADE_ROLE = 7,
    LADE_OPT = 8, LADE_LATE = 16, LADE_HIDDEN = 32, LADE_INPLACE = 64, LADE_SELF = 128,
};

/* One argument. Arrays: dtype is an NPY_ type and shape has one character per
 * dimension: a letter names a dimension (the same letter must have the same
 * size in every argument of the call), a digit is that size, '*' any size;
 * "..." is any shape, the same for every argument that says "...". Scalars:
 * dtype is 'f' (a number, kept as double), 'i' (int), 'n' (a non-negative
 * size), 'K' (an unsigned 64-bit seed or epoch), 'p' (bool), 's' (str), 'I'
 * (an int or a sequence of ints, each 32-bit: read with lade_ints), 'O' (any
 * object; of `type` when set); def is the default when OPT. */
typedef struct {
    const char *name;
    int role;
    int dtype;
    const char *shape;
    double def;
    PyTypeObject *type;
} lade_arg;

/* Table entries. */
#define IN(name, dtype, shape) {name, LADE_IN, dtype, shape, 0, NULL}
#define IN_OPT(name, dtype, shape) {name, LADE_IN | LADE_OPT, dtype, shape, 0, NULL}
#define IN_LATE(name, dtype, shape) {name, LADE_IN | LADE_LATE, dtype, shape, 0, NULL}
#define OUT(name, dtype, shape) {name, LADE_OUT, dtype, shape, 0, NULL}
#define OUT_INPLACE(name, dtype, shape) {name, LADE_OUT | LADE_INPLACE, dtype, shape, 0, NULL}
#define OUT_HIDDEN(name, dtype, shape) {name, LADE_OUT | LADE_HIDDEN, dtype, shape, 0, NULL}
#define GRAD(name, dtype, shape) {name, LADE_GRAD, dtype, shape, 0, NULL}
#define INOUT(name, dtype, shape) {name, LADE_INOUT, dtype, shape, 0, NULL}
#define INOUT_OPT(name, dtype, shape) {name, LADE_INOUT | LADE_OPT, dtype, shape, 0, NULL}
#define REQ(name, kind) {name, LADE_SCALAR, kind, NULL, 0, NULL}
#define OPT(name, kind, def) {name, LADE_SCALAR | LADE_OPT, kind, NULL, def, NULL}
#define OBJ(name, type) {name, LADE_SCALAR, 'O', NULL, 0, type}
#define OBJ_OPT(name, type) {name, LADE_SCALAR | LADE_OPT, 'O', NULL, 0, type}
#define SELF(type) {"self", LADE_SCALAR | LADE_SELF, 'O', NULL, 0, type}
#define END {NULL, 0, 0, NULL, 0, NULL}
/* A table as an expression, ended by END: a compound literal, static only at file scope (in the
 * binding tables); inside a function write `static const lade_arg spec[] = {..., END};`. */
#define ARGS(...) ((const lade_arg[]){__VA_ARGS__, END})
#define F32T NPY_FLOAT32
#define F64T NPY_FLOAT64
#define I64T NPY_INT64
#define LADE_MAX_ARGS 16

/* The head of every lade._C type that wraps a C object: core is NULL before
 * __init__ (and after close); busy is set while a call runs without the GIL,
 * so that a second thread is refused instead of racing; cause is an exception
 * a Python callback raised inside the running call (owned): a failed call
 * raises its error from it. */
#define LADE_OBJECT_HEAD PyObject_HEAD void *core; int busy; PyObject *cause;
typedef struct {
    LADE_OBJECT_HEAD
} lade_object;

/* RuntimeError "func: the object is not initialised (or closed)" or "... is in
 * use by another thread", else 0. For methods outside the tables. */
int lade_object_ready(const lade_object *obj, const char *func);

typedef struct {
    const char *func;      /* the public name errors use, e.g. "lade.losses.lade_ce" */
    lade_object *self;     /* a method's object (SELF), held busy from inference to the end of run */
    const lade_arg *spec;
    int n;
    /* one slot per argument, and a last one that stays empty (what an unknown name finds) */
    PyObject *given[LADE_MAX_ARGS + 1];      /* borrowed; NULL when absent */
    PyArrayObject *array[LADE_MAX_ARGS + 1]; /* owned; NULL when absent or skipped */
    union {
        double f; long long i; unsigned long long u; PyObject *o; const char *s;
        struct { int start, count; } ints; /* 'I': its entries of ints[] */
    } value[LADE_MAX_ARGS + 1];
    char skip[LADE_MAX_ARGS + 1];          /* set by inference: do not allocate this output */
    npy_intp dim[128];                     /* size of each dimension letter, -1 while unbound */
    signed char bound_by[128];             /* the argument that bound it, -1 for inference */
    int group_by;                          /* the argument that fixed the "..." shape, or -1 */
    double ret[4];                         /* scalar results for lade_binding.returns */
    int ints[64], n_ints;                  /* the ints of the 'I' arguments */
    char func_buf[256];                    /* for a func built at run time */
} lade_call;

/* Parses args/kw against spec into c and checks the inputs (not the LATE
 * ones). Always pair with lade_call_end. Returns 0, or -1 with an exception. */
int lade_parse(lade_call *c, const char *func, const lade_arg *spec, PyObject *args, PyObject *kw);
/* Checks the LATE inputs and the outputs passed in, allocates the others
 * (every letter of their shapes must be bound), and checks that no output
 * shares memory with another argument. Returns 0 or -1. */
int lade_outputs(lade_call *c);
/* Releases what the call holds and returns result. */
PyObject *lade_call_end(lade_call *c, PyObject *result);

/* Access by argument name (a name not in the table reads as absent). */
int lade_index(const lade_call *c, const char *name);
PyArrayObject *lade_array(const lade_call *c, const char *name); /* borrowed, may be NULL */
void *lade_data(const lade_call *c, const char *name);           /* NULL when absent */
double lade_num(const lade_call *c, const char *name);
long long lade_int(const lade_call *c, const char *name);
unsigned long long lade_u64(const lade_call *c, const char *name);
PyObject *lade_obj(const lade_call *c, const char *name);         /* borrowed, NULL when absent */
const char *lade_str(const lade_call *c, const char *name);       /* 's'; NULL when absent */
const int *lade_ints(const lade_call *c, const char *name, int *count); /* 'I'; count 0 when absent */
int lade_given(const lade_call *c, const char *name);             /* passed and not None */
#define F32(c, name) ((float *)lade_data(c, name))
#define F64(c, name) ((double *)lade_data(c, name))
#define I64(c, name) ((int64_t *)lade_data(c, name))
#define DIM(c, letter) ((int)(c)->dim[(unsigned char)(letter)])
/* Binds a dimension letter (shape inference). */
#define LADE_BIND(c, letter, size) \
    ((c)->bound_by[(unsigned char)(letter)] = -1, (c)->dim[(unsigned char)(letter)] = (size))

/* A module-level function: its table, an optional shape inference (binds the
 * letters the outputs need, or refuses the arguments), and the core call, run
 * without the GIL. returns: NULL gives the outputs (None, one array, or a
 * tuple); otherwise one character per returned item: 'A' the next output in
 * table order (None when skipped), 'd' the next of c->ret as a float, 'i' as
 * an int, 'b' as a bool; "" gives None. */
typedef struct {
    const char *name; /* lade._C.<name> */
    const char *func; /* public name */
    const lade_arg *spec;
    int (*infer)(lade_call *c);
    lade_status (*run)(lade_call *c);
    const char *returns;
    const char *doc; /* after the signature, which is made from the table */
} lade_binding;

/* Adds every binding of a list ending in {NULL} to the module. */
int lade_add_bindings(PyObject *module, const lade_binding *list);
/* Adds every binding of a list ending in {NULL} as a method of a type that
 * starts with LADE_OBJECT_HEAD (after PyType_Ready). Each table starts with
 * SELF(&Type): the parser checks the object is initialised and idle and holds it
 * busy through infer and run (c->self; c->self->core is the C object). */
int lade_add_methods(PyTypeObject *type, const lade_binding *list);

/* Raises the exception for a failed status: "func: detail". Returns NULL. */
PyObject *lade_py_raise(lade_status st, const char *func);

/* Raises ValueError "func: argument 'arg' ..." from a printf format. Returns NULL. */
PyObject *lade_py_value_error(const char *func, const char *arg, const char *fmt, ...);

/* The exception class for LADE_EDECODE (lade.DecodeError, a ValueError). */
extern PyObject *lade_DecodeError;

/* Each binding file adds its functions and types to the module. */
int lade_register_nn(PyObject *module);
int lade_register_ltmath(PyObject *module);
int lade_register_data(PyObject *module);

#endif
