/* bind.h - the one binding convention of lade._C. This directory is the only
 * place that sees Python.h.
 *
 * Every function takes keyword (or positional) arguments described by a table
 * of lade_arg, one entry per argument. One parser (lade_parse, lade_outputs)
 * reads the table: it checks every array (dtype, layout, shape), binds the
 * dimension letters of the shapes so that arguments that must agree do,
 * allocates the outputs the caller did not pass, refuses outputs that share
 * memory with another argument, and converts the scalars. lade_call_end frees
 * what the call holds. Errors name the public function (fixed in C), the
 * argument, what was expected and what came.
 *
 * bindings.def declares each function and type once, and gen_bindings.py (run
 * by setup.py; its docstring gives the syntax and what each role, shape and
 * scalar kind means) makes from it, in gen/, the tables, the typed argument
 * structs (NAME_fill), the shims, the type objects and lade_register_<section>.
 * To add a function: declare it in bindings.def (a longer core call or
 * inference goes in the section's bind_<section>.c, taking the struct), then
 * wrap it in lade/. */
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

/* Roles and flags (the roles and '?' of bindings.def; SELF: the object a method
 * is called on, the first entry of its table; NEW: an output the core call allocates). */
enum {
    LADE_IN = 1, LADE_OUT = 2, LADE_GRAD = 3, LADE_INOUT = 4, LADE_SCALAR = 5, LADE_ROLE = 7,
    LADE_OPT = 8, LADE_LATE = 16, LADE_HIDDEN = 32, LADE_INPLACE = 64, LADE_SELF = 128, LADE_NEW = 256,
};

/* One argument. Arrays: dtype is an NPY_ type and shape the declared one.
 * Scalars: dtype is the kind letter (an argument not given reads as 0: the
 * generated NAME_fill puts in the defaults), shape "2" for I2 and the names
 * "A|B" of an s(A|B); type, the class an 'O' must be. what: the dtype's name, or
 * what a scalar must be, for the errors. */
typedef struct {
    const char *name;
    int role;
    int dtype;
    const char *shape;
    PyTypeObject *type;
    const char *what;
} lade_arg;

/* The generated tables start a method's entries with SELF and end with END. */
#define SELF(type) {"self", LADE_SCALAR | LADE_SELF, 'O', NULL, type, "an object"}
#define END {NULL, 0, 0, NULL, NULL, NULL}
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
    /* one slot per argument */
    PyObject *given[LADE_MAX_ARGS];      /* borrowed; NULL when absent */
    PyArrayObject *array[LADE_MAX_ARGS]; /* owned; NULL when absent or skipped */
    union {
        double f; long long i; unsigned long long u; const char *s;
        PyObject *o;                       /* 'y' and 'P': owned (a memoryview, the encoded path) */
        struct { int start, count; } ints; /* 'I': its entries of ints[] */
        void *p;                           /* a NEW output, until its array owns it (else freed at the end) */
    } value[LADE_MAX_ARGS];
    char skip[LADE_MAX_ARGS];              /* set by inference: do not allocate this output */
    npy_intp dim[128];                     /* size of each dimension letter, -1 while unbound */
    signed char bound_by[128];             /* the argument that bound it, -1 for inference */
    int group_by;                          /* the argument that fixed the "..." shape, or -1 */
    double ret[4];                         /* the numbers a binding's result gives */
    int ints[64], n_ints;                  /* the ints of the 'I' arguments */
    char func_buf[256];                    /* for a func built at run time */
} lade_call;

/* Parses self (a method's object, the SELF slot; NULL for a function) and args/kw against spec into c
 * and checks the inputs (not the LATE ones). Always pair with lade_call_end. Returns 0, or -1 with an
 * exception. */
int lade_parse(lade_call *c, const char *func, const lade_arg *spec, PyObject *self, PyObject *args, PyObject *kw);
/* Checks the LATE inputs and the outputs passed in, allocates the others
 * (every letter of their shapes must be bound), and checks that no output
 * shares memory with another argument. Returns 0 or -1. */
int lade_outputs(lade_call *c);
/* Releases what the call holds and returns result. */
PyObject *lade_call_end(lade_call *c, PyObject *result);

/* The field of an 'I' argument in the generated NAME_fill's struct. */
typedef struct {
    const int *v;
    int count, given; /* count 0 when absent */
} lade_ints;
/* The field of a 'y' argument (a bytes-like object's bytes; v NULL when absent). */
typedef struct {
    const uint8_t *v;
    size_t len;
} lade_bytes;
/* Binds a dimension letter (shape inference). */
#define LADE_BIND(c, letter, size) \
    ((c)->bound_by[(unsigned char)(letter)] = -1, (c)->dim[(unsigned char)(letter)] = (size))

/* A generated binding: the public name, its table, an optional shape inference
 * (binds the letters the outputs need, or refuses the arguments), the core
 * call, run without the GIL, what the call gives once it succeeded, and an
 * optional public name built from the parsed arguments (c->func). */
typedef struct {
    const char *func;
    const lade_arg *spec;
    int (*infer)(lade_call *c);
    lade_status (*run)(lade_call *c);
    PyObject *(*result)(lade_call *c);
    void (*name)(lade_call *c);
} lade_binding;

/* Parses, infers, allocates, runs and gives the result: the function of each binding (self: as
 * lade_parse). A method's table starts with SELF(&Type): the parser checks the object is initialised
 * and idle and holds it busy through infer and run (c->self; c->self->core is the C object). */
PyObject *lade_dispatch(const lade_binding *b, PyObject *self, PyObject *args, PyObject *kw);

/* What a result gives: output k (None when skipped); NEW output k as an array that owns its buffer. */
static inline PyObject *lade_output(const lade_call *c, int k) {
    return Py_NewRef(c->array[k] ? (PyObject *)c->array[k] : Py_None);
}
PyObject *lade_adopt(lade_call *c, int k);

/* Raises the exception for a failed status: "func: detail". Returns NULL. */
PyObject *lade_py_raise(lade_status st, const char *func);

/* 0, or -1 with the exception of a failed status (for shape inference). */
static inline int lade_py_check(const lade_call *c, lade_status st) { return st ? (lade_py_raise(st, c->func), -1) : 0; }

/* The exception class for LADE_EDECODE (lade.DecodeError, a ValueError). */
extern PyObject *lade_DecodeError;

/* Each binding file adds its functions and types to the module (generated). */
int lade_register_base(PyObject *module);
int lade_register_nn(PyObject *module);
int lade_register_ltmath(PyObject *module);
int lade_register_data(PyObject *module);

#endif
