/* bind_ltmath.c - Python bindings for lade_ltmath.h. */
#include "bind.h"

static PyMethodDef methods[] = {
    {NULL, NULL, 0, NULL},
};

int lade_register_ltmath(PyObject *module) { return PyModule_AddFunctions(module, methods); }
