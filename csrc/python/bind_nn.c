/* bind_nn.c - Python bindings for lade_nn.h. */
#include "bind.h"

static PyMethodDef methods[] = {
    {NULL, NULL, 0, NULL},
};

int lade_register_nn(PyObject *module) { return PyModule_AddFunctions(module, methods); }
