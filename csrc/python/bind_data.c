/* bind_data.c - Python bindings for lade_data.h. */
#include "bind.h"

static PyMethodDef methods[] = {
    {NULL, NULL, 0, NULL},
};

int lade_register_data(PyObject *module) { return PyModule_AddFunctions(module, methods); }
