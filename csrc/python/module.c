/* module.c - the lade._C extension: the module, its base functions (threads, kernel variant,
 * CPU; declared in bindings.def) and the registration of the subsystems' functions and types
 * (lade_register_<section>, generated into the gen/<section>_table.h that each file includes). */
#define LADE_BIND_MAIN
#include "bind.h"

#include "python/gen/base_args.h"

static PyObject *cpu_info(lade_call *c) {
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:i}", "model", info.model, "features", info.features, "supported",
                         info.supported, "variant", info.active, "vector_floats", info.vector_floats);
}

#include "python/gen/base_table.h"

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "lade._C", "The C core of lade (see csrc/lade.h).", -1, NULL,
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
        lade_register_base(m) < 0 || lade_register_nn(m) < 0 || lade_register_ltmath(m) < 0 ||
        lade_register_data(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
