/* module.c - the lade._C extension: the module, its base functions (threads, kernel variant,
 * CPU) and the registration of the subsystems' binding tables (bind_nn.c, bind_ltmath.c,
 * bind_data.c), all read by the parser in bind.c. */
#define LADE_BIND_MAIN
#include "bind.h"

static lade_status set_num_threads(lade_call *c) {
    long long n = lade_int(c, "n");
    return lade_set_num_threads((int)(n > 100000 ? 100000 : n < -1 ? -1 : n));
}
static lade_status get_num_threads(lade_call *c) { return c->ret[0] = lade_get_num_threads(), LADE_OK; }

static lade_status set_isa(lade_call *c) { return lade_set_isa(lade_str(c, "name")); }

static const lade_binding base_bindings[] = {
    {"set_num_threads", "lade.set_num_threads", ARGS(REQ("n", 'i')), NULL, set_num_threads, "",
     "threads for OpenBLAS and lade's own pool (n >= 1)"},
    {"get_num_threads", "lade.get_num_threads", (const lade_arg[]){END}, NULL, get_num_threads, "i"},
    {"set_isa", "lade.set_isa", ARGS(REQ("name", 's')), NULL, set_isa, "",
     "switches the kernel variant ('avx512_bf16', 'avx512', 'avx2', 'generic'; 'w16_avx2' and 'bf16_emulated' "
     "for tests)"},
    {NULL},
};

static PyObject *py_cpu_info(PyObject *self, PyObject *unused) {
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:i}", "model", info.model, "features", info.features, "supported",
                         info.supported, "variant", info.active, "vector_floats", info.vector_floats);
}

static PyMethodDef base_methods[] = {
    {"cpu_info", py_cpu_info, METH_NOARGS,
     "cpu_info() -> dict: the CPU model, the ISA features found, the kernel variants it supports and the one in use"},
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
        lade_add_bindings(m, base_bindings) < 0 || lade_register_nn(m) < 0 || lade_register_ltmath(m) < 0 ||
        lade_register_data(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
