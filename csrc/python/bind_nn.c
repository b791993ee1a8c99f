/* bind_nn.c - Python bindings for lade_nn.h: layers, Causal Norm, ResNet-32, SGD, schedules. Each
 * function is declared in bindings.def (section nn); here are the shape inferences and core calls
 * longer than an expression, and the bodies the ResNetCore type names.
 *
 * Outputs given by the caller are written in place (forward: overwritten,
 * backward: accumulated into). Outputs not given are allocated: forward
 * outputs uninitialised, gradients zero-filled (bindings.def: out and grad). */
#include "bind.h"

#include <string.h>

#include "python/gen/nn_args.h"

#define MAPS lade_maps_nchw

/* ---- the ResNet object (ResNet-32s and ResNet-18) ------------------------------------------------------------------ */
/* core: the lade_resnet */
#define NET(obj) ((lade_resnet *)(obj)->core)
typedef struct {
    LADE_OBJECT_HEAD
    PyObject *bn_reducer; /* synchronised batch norm: the Python callable, or NULL (per replica) */
} resnet_object;

static int resnet_traverse(resnet_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->bn_reducer);
    Py_VISIT(self->cause);
    return 0;
}

static int resnet_clear(resnet_object *self) {
    if (self->core) lade_resnet_set_bn_reducer(self->core, NULL, NULL);
    Py_CLEAR(self->bn_reducer);
    Py_CLEAR(self->cause);
    return 0;
}

/* A 1-D view of n numbers owned by the model; the view keeps the model alive. */
static PyObject *model_view(resnet_object *self, void *data, size_t n, int typenum) {
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *a = PyArray_SimpleNewFromData(1, dims, typenum, data);
    if (a && PyArray_SetBaseObject((PyArrayObject *)a, Py_NewRef(self)) < 0) Py_CLEAR(a);
    return a;
}

/* params, grads or buffers: a flat view of data(net), size(net) floats */
static PyObject *resnet_flat(resnet_object *self, float *(*data)(lade_resnet *), size_t (*size)(const lade_resnet *)) {
    if (lade_object_ready((lade_object *)self, "lade.ResNet32")) return NULL;
    return model_view(self, data(NET(self)), size(NET(self)), NPY_FLOAT32);
}

static PyObject *resnet_tensors(resnet_object *self, PyObject *unused) {
    if (lade_object_ready((lade_object *)self, "lade.ResNet32.tensors")) return NULL;
    int n = lade_resnet_num_tensors(NET(self));
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        const lade_tensor_info *t = lade_resnet_tensor(NET(self), i);
        PyObject *shape = PyTuple_New(t->ndim);
        for (int d = 0; shape && d < t->ndim; d++) PyTuple_SET_ITEM(shape, d, PyLong_FromLong(t->dims[d]));
        PyObject *item = shape ? Py_BuildValue("(siNN)", t->name, t->is_buffer, PyLong_FromSize_t(t->offset), shape)
                               : NULL;
        if (!item) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* ---- synchronised batch norm: a Python callable as the core's reducer (lade_nn.h, lade_reduce_fn) ----
 * The forward and backward run without the GIL; the C reducer takes it back to call the Python one with a
 * float64 view of the core's buffer (zero-copy), which it must sum over the replicas in place, returning
 * None. An exception it raises fails the core call and becomes the cause of its error (self->cause). */
static lade_status python_reduce(double *buf, size_t n, void *ctx) {
    resnet_object *self = ctx;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = NULL, *view = model_view(self, buf, n, NPY_FLOAT64); /* valid when kept past the call */
    if (view) result = PyObject_CallOneArg(self->bn_reducer, view);
    if (result && result != Py_None)
        PyErr_Format(PyExc_TypeError, "the batch-norm reducer must sum its argument over the replicas in place and "
                     "return None, got a %s back (one that returns its result, like mpi4py's allreduce, leaves "
                     "the statistics unreduced)", Py_TYPE(result)->tp_name);
    lade_status st = LADE_OK;
    if (PyErr_Occurred()) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb) PyException_SetTraceback(value, tb);
        PyObject *text = PyObject_Str(value);
        const char *detail = text ? PyUnicode_AsUTF8(text) : NULL;
        PyErr_Clear();
        st = lade_fail(LADE_ESTATE, "the Python reducer raised %s: %s", ((PyTypeObject *)type)->tp_name,
                       detail ? detail : "?");
        Py_XDECREF(text);
        Py_XSETREF(self->cause, value);
        Py_XDECREF(type);
        Py_XDECREF(tb);
    }
    Py_XDECREF(result);
    Py_XDECREF(view);
    PyGILState_Release(gil);
    return st;
}

static PyObject *resnet_profile(resnet_object *self, PyObject *unused) {
    if (lade_object_ready((lade_object *)self, "lade.ResNet32.profile")) return NULL;
    double s[LADE_PROF_COUNT];
    lade_resnet_profile(NET(self), s);
    PyObject *d = PyDict_New();
    for (int k = 0; d && k < LADE_PROF_COUNT; k++) {
        PyObject *v = PyFloat_FromDouble(s[k]);
        if (!v || PyDict_SetItemString(d, lade_prof_name((lade_prof_kind)k), v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

static PyObject *resnet_conv_profile(resnet_object *self, PyObject *unused) {
    if (lade_object_ready((lade_object *)self, "lade.ResNet32.conv_profile")) return NULL;
    int count = lade_resnet_num_convs(NET(self));
    PyObject *list = PyList_New(count);
    for (int i = 0; list && i < count; i++) {
        lade_conv_profile c;
        lade_resnet_conv_profile(NET(self), i, &c);
        PyObject *d = Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:d,s:d,s:d,s:d}", "name", c.name, "cin",
                                    c.geom.cin, "cout", c.geom.cout, "kernel", c.geom.kh, "stride", c.geom.stride_h,
                                    "in_h", c.in_h, "in_w", c.in_w, "forward_seconds", c.forward_seconds,
                                    "backward_seconds", c.backward_seconds, "forward_flops", c.forward_flops,
                                    "backward_flops", c.backward_flops);
        if (!d) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, d);
    }
    return list;
}

/* the methods declared in bindings.def (ResNetType.*) */
static lade_status resnet_seed(lade_resnet *net, uint64_t seed) {
    lade_rng rng;
    lade_rng_seed(&rng, seed, 0);
    lade_resnet_init(net, &rng);
    return LADE_OK;
}
static int features_infer(lade_call *c, lade_resnet *net, npy_intp *n, npy_intp *f) {
    *n = lade_resnet_last_batch(net), *f = lade_resnet_feature_dim(net);
    if (*n < 1) return PyErr_Format(PyExc_RuntimeError, "%s: no forward pass has run yet", c->func), -1;
    return 0;
}
/* set_bn_reducer: the callable is checked and kept in inference, which holds the GIL */
static int keep_reducer(lade_call *c, PyObject *reducer) {
    if (reducer == Py_None) reducer = NULL;
    if (reducer && !PyCallable_Check(reducer))
        return PyErr_Format(PyExc_TypeError, "%s: argument 'reducer' must be callable or None, got %s", c->func,
                            Py_TYPE(reducer)->tp_name), -1;
    Py_XSETREF(((resnet_object *)c->self)->bn_reducer, Py_XNewRef(reducer));
    return 0;
}
static lade_status set_reducer(lade_call *c) {
    resnet_object *self = (resnet_object *)c->self;
    lade_resnet_set_bn_reducer(NET(c->self), self->bn_reducer ? python_reduce : NULL, self);
    return LADE_OK;
}

#include "python/gen/nn_table.h"
