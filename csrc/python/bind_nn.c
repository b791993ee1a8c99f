/* bind_nn.c - Python bindings for lade_nn.h: layers, Causal Norm, ResNet-32, SGD, schedules.
 *
 * Outputs given by the caller are written in place (forward: overwritten,
 * backward: accumulated into). Outputs not given are allocated: forward
 * outputs uninitialised, gradients zero-filled (bind.h: OUT and GRAD). */
#include "bind.h"

#include <string.h>

static lade_maps maps(const lade_call *c, const char *name) {
    PyArrayObject *a = lade_array(c, name);
    if (!a) return (lade_maps){0};
    npy_intp *d = PyArray_DIMS(a);
    return lade_maps_nchw((float *)PyArray_DATA(a), (int)d[0], (int)d[1], (int)d[2], (int)d[3]);
}

/* The output height and width (p, q) that a geometry's out_size gave, or its error. The sizes are
 * read after the call that wrote them (an argument's order of evaluation is unspecified). */
static int bind_out_size(lade_call *c, lade_status st, const int *oh, const int *ow) {
    if (st) return lade_py_raise(st, c->func), -1;
    LADE_BIND(c, 'p', *oh);
    return LADE_BIND(c, 'q', *ow), 0;
}

/* ---- conv2d ------------------------------------------------------------------------ */
/* stride and padding: an int or a pair (height, width); the core checks their ranges */
static lade_conv2d_geom conv_geom(const lade_call *c) {
    int ns, np;
    const int *s = lade_ints(c, "stride", &ns), *p = lade_ints(c, "padding", &np);
    return (lade_conv2d_geom){.cout = DIM(c, 'o'), .cin = DIM(c, 'c'), .kh = DIM(c, 'k'), .kw = DIM(c, 'l'),
                              .stride_h = ns ? s[0] : 1, .stride_w = ns ? s[ns - 1] : 1, .pad_h = np ? p[0] : 0,
                              .pad_w = np ? p[np - 1] : 0};
}

static int conv_infer(lade_call *c) {
    for (int k = 0; k < 2; k++) {
        const char *arg = k ? "padding" : "stride";
        int n;
        lade_ints(c, arg, &n);
        if (lade_given(c, arg) && n != 1 && n != 2)
            return lade_py_value_error(c->func, arg, "must be an int or a pair of ints, got %d ints", n), -1;
    }
    lade_conv2d_geom g = conv_geom(c);
    int oh, ow;
    return bind_out_size(c, lade_conv2d_out_size(&g, DIM(c, 'h'), DIM(c, 'w'), &oh, &ow), &oh, &ow);
}

/* precision: "float32" (also when absent) or "bf16" */
static lade_status precision_arg(const lade_call *c, lade_precision *precision) {
    const char *name = lade_str(c, "precision");
    *precision = LADE_FLOAT32;
    if (!name || !strcmp(name, "float32")) return LADE_OK;
    if (!strcmp(name, "bf16")) {
        *precision = LADE_BF16;
        return LADE_OK;
    }
    return lade_fail(LADE_EINVAL, "argument 'precision' must be 'float32' or 'bf16', got '%s'", name);
}

/* The workspace of the fast path; naive: the reference loops (float32 only). */
static lade_status conv_run(lade_call *c, int backward) {
    lade_conv2d_geom g = conv_geom(c);
    int naive = (int)lade_int(c, "naive");
    lade_precision precision;
    lade_status pst = precision_arg(c, &precision);
    if (pst) return pst;
    if (naive && precision != LADE_FLOAT32)
        return lade_fail(LADE_EINVAL, "the naive reference runs in float32 only; got precision 'bf16'");
    size_t ws_size = naive ? 0 : lade_conv2d_workspace_size(&g, DIM(c, 'n'), DIM(c, 'h'), DIM(c, 'w'));
    float *ws = ws_size ? lade_alloc(ws_size * sizeof(float)) : NULL;
    lade_status st;
    if (ws_size && !ws) st = lade_fail(LADE_ENOMEM, "could not allocate a %zu-float workspace", ws_size);
    else if (!backward && naive)
        st = lade_conv2d_forward_naive(maps(c, "out"), maps(c, "x"), F32(c, "weight"), F32(c, "bias"), &g);
    else if (!backward)
        st = lade_conv2d_forward_precision(maps(c, "out"), maps(c, "x"), F32(c, "weight"), F32(c, "bias"), &g, ws,
                                           precision);
    else if (naive)
        st = lade_conv2d_backward_naive(maps(c, "dx"), F32(c, "dweight"), F32(c, "dbias"), maps(c, "dout"),
                                        maps(c, "x"), F32(c, "weight"), &g);
    else
        st = lade_conv2d_backward_precision(maps(c, "dx"), F32(c, "dweight"), F32(c, "dbias"), maps(c, "dout"),
                                            maps(c, "x"), F32(c, "weight"), &g, ws, precision);
    lade_free(ws);
    return st;
}
static lade_status conv_forward(lade_call *c) { return conv_run(c, 0); }
static lade_status conv_backward(lade_call *c) { return conv_run(c, 1); }

/* ---- batch norm ----------------------------------------------------------------------- */
static int bn_train_infer(lade_call *c) {
    if (lade_given(c, "running_mean") != lade_given(c, "running_var")) {
        PyErr_Format(PyExc_ValueError, "%s: give both running_mean and running_var, or neither", c->func);
        return -1;
    }
    if (PyArray_SIZE(lade_array(c, "x")) == 0) return lade_py_value_error(c->func, "x", "must not be empty"), -1;
    return 0;
}
static lade_status bn_train(lade_call *c) {
    return lade_batchnorm2d_forward_train(maps(c, "out"), F32(c, "save_mean"), F32(c, "save_invstd"),
                                          F32(c, "running_mean"), F32(c, "running_var"), maps(c, "x"),
                                          F32(c, "weight"), F32(c, "bias"), (float)lade_num(c, "momentum"),
                                          (float)lade_num(c, "eps"));
}

static lade_status bn_eval(lade_call *c) {
    return lade_batchnorm2d_forward_eval(maps(c, "out"), maps(c, "x"), F32(c, "weight"), F32(c, "bias"),
                                         F32(c, "running_mean"), F32(c, "running_var"), (float)lade_num(c, "eps"));
}

static lade_status bn_backward(lade_call *c) {
    return lade_batchnorm2d_backward(maps(c, "dx"), F32(c, "dweight"), F32(c, "dbias"), maps(c, "dout"),
                                     maps(c, "x"), F32(c, "weight"), F32(c, "save_mean"), F32(c, "save_invstd"));
}

/* ---- element-wise --------------------------------------------------------------------- */
static size_t size_of(const lade_call *c, const char *name) { return (size_t)PyArray_SIZE(lade_array(c, name)); }

static lade_status relu_forward(lade_call *c) {
    lade_relu_forward(F32(c, "out"), F32(c, "x"), size_of(c, "x"));
    return LADE_OK;
}

static lade_status relu_backward(lade_call *c) {
    lade_relu_backward(F32(c, "dx"), F32(c, "dout"), F32(c, "out"), size_of(c, "dout"));
    return LADE_OK;
}

static lade_status add_forward(lade_call *c) {
    lade_add_forward(F32(c, "out"), F32(c, "a"), F32(c, "b"), size_of(c, "a"));
    return LADE_OK;
}

static lade_status add_backward(lade_call *c) {
    lade_add_backward(F32(c, "da"), F32(c, "db"), F32(c, "dout"), size_of(c, "dout"));
    return LADE_OK;
}

/* ---- concat, pooling, shortcut ---------------------------------------------------------- */
static int concat_forward_infer(lade_call *c) { return LADE_BIND(c, 'c', DIM(c, 'a') + DIM(c, 'b')), 0; }
static lade_status concat_forward(lade_call *c) {
    return lade_concat_forward(maps(c, "out"), maps(c, "a"), maps(c, "b"));
}

static int concat_backward_infer(lade_call *c) {
    long long split = lade_int(c, "split");
    if (split < 0 || split > DIM(c, 'c'))
        return lade_py_value_error(c->func, "split", "must be in [0, %d], got %lld", DIM(c, 'c'), split), -1;
    LADE_BIND(c, 'a', split);
    LADE_BIND(c, 'b', DIM(c, 'c') - split);
    return 0;
}
static lade_status concat_backward(lade_call *c) {
    return lade_concat_backward(maps(c, "da"), maps(c, "db"), maps(c, "dout"));
}

static lade_status avgpool_forward(lade_call *c) { return lade_avgpool_forward(F32(c, "out"), maps(c, "x")); }

/* height and width of the forward input, for the backwards that cannot infer them */
static int bind_height_width(lade_call *c) {
    long long h = lade_int(c, "height"), w = lade_int(c, "width");
    if (h < 1 || w < 1)
        return lade_py_value_error(c->func, "height/width", "must be >= 1, got %lld and %lld", h, w), -1;
    LADE_BIND(c, 'h', h);
    LADE_BIND(c, 'w', w);
    return 0;
}

static lade_status avgpool_backward(lade_call *c) { return lade_avgpool_backward(maps(c, "dx"), F32(c, "dout")); }

static lade_pool_geom pool_geom(const lade_call *c) {
    int k = (int)lade_int(c, "kernel_size");
    return (lade_pool_geom){k, lade_given(c, "stride") ? (int)lade_int(c, "stride") : k, (int)lade_int(c, "padding")};
}
static int maxpool_forward_infer(lade_call *c) {
    lade_pool_geom g = pool_geom(c);
    int oh, ow;
    return bind_out_size(c, lade_pool_out_size(&g, DIM(c, 'h'), DIM(c, 'w'), &oh, &ow), &oh, &ow);
}
static lade_status maxpool_forward(lade_call *c) {
    lade_pool_geom g = pool_geom(c);
    return lade_maxpool_forward(maps(c, "out"), (int32_t *)lade_data(c, "argmax"), maps(c, "x"), &g);
}

static lade_status maxpool_backward(lade_call *c) {
    return lade_maxpool_backward(maps(c, "dx"), maps(c, "dout"), (const int32_t *)lade_data(c, "argmax"));
}

static int check_stride(lade_call *c, long long s) {
    return s == 1 || s == 2 ? 0 : (lade_py_value_error(c->func, "stride", "must be 1 or 2, got %lld", s), -1);
}

static int shortcut_forward_infer(lade_call *c) {
    long long cout = lade_int(c, "out_channels"), s = lade_int(c, "stride");
    if (check_stride(c, s)) return -1;
    if (cout < DIM(c, 'c') || (cout - DIM(c, 'c')) % 2)
        return lade_py_value_error(c->func, "out_channels",
                                   "must be >= the %d input channels with an even difference, got %lld", DIM(c, 'c'),
                                   cout), -1;
    LADE_BIND(c, 'o', cout);
    LADE_BIND(c, 'p', (DIM(c, 'h') + s - 1) / s);
    LADE_BIND(c, 'q', (DIM(c, 'w') + s - 1) / s);
    return 0;
}
static lade_status shortcut_forward(lade_call *c) {
    return lade_shortcut_a_forward(maps(c, "out"), maps(c, "x"), (int)lade_int(c, "stride"));
}

static int shortcut_backward_infer(lade_call *c) {
    long long cin = lade_int(c, "in_channels"), s = lade_int(c, "stride");
    if (cin < 1) return lade_py_value_error(c->func, "in_channels", "must be >= 1, got %lld", cin), -1;
    if (check_stride(c, s)) return -1;
    if (bind_height_width(c)) return -1;
    int oh = (int)((DIM(c, 'h') + s - 1) / s), ow = (int)((DIM(c, 'w') + s - 1) / s);
    if (DIM(c, 'p') != oh || DIM(c, 'q') != ow || DIM(c, 'o') < cin || (DIM(c, 'o') - cin) % 2)
        return lade_py_value_error(c->func, "dout", "must have shape (n, C, %d, %d) with C >= %lld and C - %lld even, "
                                   "got (%d, %d, %d, %d)", oh, ow, cin, cin, DIM(c, 'n'), DIM(c, 'o'), DIM(c, 'p'),
                                   DIM(c, 'q')), -1;
    return LADE_BIND(c, 'c', cin), 0;
}
static lade_status shortcut_backward(lade_call *c) {
    return lade_shortcut_a_backward(maps(c, "dx"), maps(c, "dout"), (int)lade_int(c, "stride"));
}

/* ---- linear ------------------------------------------------------------------------------ */
static lade_status linear_forward(lade_call *c) {
    return lade_linear_forward(F32(c, "out"), F32(c, "x"), F32(c, "weight"), F32(c, "bias"), DIM(c, 'n'), DIM(c, 'k'),
                               DIM(c, 'o'));
}

static lade_status linear_backward(lade_call *c) {
    return lade_linear_backward(F32(c, "dx"), F32(c, "dweight"), F32(c, "dbias"), F32(c, "dout"), F32(c, "x"),
                                F32(c, "weight"), DIM(c, 'n'), DIM(c, 'k'), DIM(c, 'o'));
}

/* ---- Causal Norm classifier ------------------------------------------------------------ */
static lade_causal_norm_config causal_norm_config(const lade_call *c) {
    return (lade_causal_norm_config){(int)lade_int(c, "heads"), (float)lade_num(c, "tau"), (float)lade_num(c, "gamma"),
                                     (float)lade_num(c, "alpha"), (float)lade_num(c, "mean_momentum")};
}

/* the workspace the core needs, or NULL with a status in *st */
static float *causal_norm_workspace(const lade_call *c, lade_status *st) {
    size_t size = lade_causal_norm_workspace_size(DIM(c, 'n'), DIM(c, 'k'), DIM(c, 'o'));
    float *ws = size ? lade_alloc(size * sizeof(float)) : NULL;
    *st = size && !ws ? lade_fail(LADE_ENOMEM, "could not allocate a %zu-float workspace", size) : LADE_OK;
    return ws;
}

static lade_status causal_norm_forward(lade_call *c) {
    lade_causal_norm_config cfg = causal_norm_config(c);
    lade_status st;
    float *ws = causal_norm_workspace(c, &st);
    if (!st)
        st = lade_causal_norm_forward(F32(c, "out"), F32(c, "x"), F32(c, "weight"), F32(c, "mean"), &cfg, DIM(c, 'n'),
                                      DIM(c, 'k'), DIM(c, 'o'), ws);
    lade_free(ws);
    return st;
}

static lade_status causal_norm_backward(lade_call *c) {
    lade_causal_norm_config cfg = causal_norm_config(c);
    lade_status st;
    float *ws = causal_norm_workspace(c, &st);
    if (!st)
        st = lade_causal_norm_backward(F32(c, "dx"), F32(c, "dweight"), F32(c, "dout"), F32(c, "x"), F32(c, "weight"),
                                       &cfg, DIM(c, 'n'), DIM(c, 'k'), DIM(c, 'o'), ws);
    lade_free(ws);
    return st;
}

/* ---- SGD and schedules ----------------------------------------------------------------------- */
static lade_status sgd_step(lade_call *c) {
    lade_sgd_config cfg = {(float)lade_num(c, "momentum"), (float)lade_num(c, "dampening"),
                           (float)lade_num(c, "weight_decay"), (int)lade_int(c, "nesterov")};
    return lade_sgd_step(F32(c, "params"), F32(c, "grads"), F32(c, "velocity"), F32(c, "decay_mask"),
                         (size_t)DIM(c, 'n'), &cfg, (float)lade_num(c, "lr"), (int)lade_int(c, "first_step"));
}

static lade_status warmup_multistep(lade_call *c) {
    int count;
    const int *milestones = lade_ints(c, "milestones", &count);
    return lade_lr_warmup_multistep(&c->ret[0], lade_num(c, "base_lr"), (int)lade_int(c, "epoch"),
                                    (int)lade_int(c, "warmup_epochs"), lade_num(c, "warmup_start"), milestones, count,
                                    lade_num(c, "factor"));
}

static lade_status cosine(lade_call *c) {
    return lade_lr_cosine(&c->ret[0], lade_num(c, "base_lr"), (int)lade_int(c, "epoch"),
                          (int)lade_int(c, "total_epochs"), lade_num(c, "eta_min"));
}

/* ---- the ResNet object (ResNet-32s and ResNet-18) ------------------------------------------------------------------ */
/* core: the lade_resnet */
#define NET(obj) ((lade_resnet *)(obj)->core)
static PyTypeObject ResNetType;
typedef struct {
    LADE_OBJECT_HEAD
    PyObject *bn_reducer; /* synchronised batch norm: the Python callable, or NULL (per replica) */
} resnet_object;

/* heads = 0: the linear classifier (fc with bias); otherwise the Causal Norm classifier with these values */
static int resnet_init(lade_object *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {REQ("variant", 'i'), REQ("stem", 'i'), REQ("num_classes", 'i'),
                                    OPT("heads", 'i', 0), OPT("tau", 'f', 0), OPT("gamma", 'f', 0),
                                    OPT("alpha", 'f', 0), OPT("mean_momentum", 'f', 0), END};
    lade_call c;
    if (lade_parse(&c, "lade.ResNet32", spec, args, kw))
        return lade_call_end(&c, NULL), -1;
    lade_resnet *net = NULL;
    lade_causal_norm_config cn = causal_norm_config(&c);
    lade_status st = self->core ? lade_fail(LADE_ESTATE, "already initialised")
                                : lade_resnet_create(&net, (lade_resnet_variant)lade_int(&c, "variant"),
                                                     (lade_stem)lade_int(&c, "stem"),
                                                     (int)lade_int(&c, "num_classes"), cn.heads ? &cn : NULL);
    self->core = self->core ? self->core : net;
    if (st) lade_py_raise(st, c.func);
    return lade_call_end(&c, NULL), st ? -1 : 0;
}

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

static void resnet_dealloc(resnet_object *self) {
    PyObject_GC_UnTrack(self);
    resnet_clear(self);
    lade_resnet_destroy(self->core);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A 1-D view of n floats owned by the model; the view keeps the model alive. */
static PyObject *model_view(lade_object *self, float *data, size_t n) {
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *a = PyArray_SimpleNewFromData(1, dims, NPY_FLOAT32, data);
    if (!a) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)a, (PyObject *)self) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

/* params, grads or buffers: a flat view (the getter's closure names which) */
static PyObject *resnet_flat(lade_object *self, void *which) {
    if (lade_object_ready(self, "lade.ResNet32")) return NULL;
    lade_resnet *net = NET(self);
    if (!strcmp(which, "params")) return model_view(self, lade_resnet_params(net), lade_resnet_num_params(net));
    if (!strcmp(which, "grads")) return model_view(self, lade_resnet_grads(net), lade_resnet_num_params(net));
    return model_view(self, lade_resnet_buffers(net), lade_resnet_num_buffers(net));
}

static PyObject *resnet_tensors(lade_object *self, PyObject *unused) {
    if (lade_object_ready(self, "lade.ResNet32.tensors")) return NULL;
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
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *result = NULL, *view = PyArray_SimpleNewFromData(1, dims, NPY_FLOAT64, buf);
    if (view) { /* a view kept past the call stays valid: it keeps the model alive */
        Py_INCREF(self);
        if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)self) < 0) Py_CLEAR(view);
    }
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

static PyObject *resnet_profile(lade_object *self, PyObject *unused) {
    if (lade_object_ready(self, "lade.ResNet32.profile")) return NULL;
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

static PyObject *resnet_conv_profile(lade_object *self, PyObject *unused) {
    if (lade_object_ready(self, "lade.ResNet32.conv_profile")) return NULL;
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

/* the methods in the tables (resnet_bindings) */
static lade_status resnet_seed(lade_call *c) {
    lade_rng rng;
    lade_rng_seed(&rng, lade_u64(c, "seed"), 0);
    lade_resnet_init(NET(c->self), &rng);
    return LADE_OK;
}
static int bind_model_classes(lade_call *c) { return LADE_BIND(c, 'k', lade_resnet_num_classes(NET(c->self))), 0; }
static lade_status resnet_forward(lade_call *c) {
    return lade_resnet_forward(NET(c->self), F32(c, "images"), DIM(c, 'n'), DIM(c, 'h'), DIM(c, 'w'),
                               lade_int(c, "train") ? LADE_TRAIN : LADE_EVAL, (int)lade_int(c, "defer_running_stats"),
                               F32(c, "out"));
}
static lade_status resnet_backward(lade_call *c) {
    return lade_resnet_backward(NET(c->self), F32(c, "dlogits"), DIM(c, 'n'));
}
static int features_infer(lade_call *c) {
    int n = lade_resnet_last_batch(NET(c->self));
    if (n < 1) return PyErr_Format(PyExc_RuntimeError, "%s: no forward pass has run yet", c->func), -1;
    LADE_BIND(c, 'n', n);
    return LADE_BIND(c, 'f', lade_resnet_feature_dim(NET(c->self))), 0;
}
static lade_status resnet_features(lade_call *c) {
    memcpy(F32(c, "out"), lade_resnet_features(NET(c->self)), sizeof(float) * DIM(c, 'n') * DIM(c, 'f'));
    return LADE_OK;
}
static lade_status resnet_commit(lade_call *c) { return lade_resnet_commit_running_stats(NET(c->self)); }
static lade_status resnet_set_precision(lade_call *c) {
    lade_precision precision;
    lade_status st = precision_arg(c, &precision);
    return st ? st : lade_resnet_set_precision(NET(c->self), precision);
}

static lade_status resnet_zero_grad(lade_call *c) { return lade_resnet_zero_grad(NET(c->self)), LADE_OK; }
static lade_status resnet_profile_reset(lade_call *c) { return lade_resnet_profile_reset(NET(c->self)), LADE_OK; }
/* set_bn_reducer: the callable is checked and kept in inference, which holds the GIL */
static int keep_reducer(lade_call *c) {
    PyObject *reducer = lade_obj(c, "reducer");
    if (reducer == Py_None) reducer = NULL;
    if (reducer && !PyCallable_Check(reducer))
        return PyErr_Format(PyExc_TypeError, "%s: argument 'reducer' must be callable or None, got %s", c->func,
                            Py_TYPE(reducer)->tp_name), -1;
    Py_XSETREF(((resnet_object *)c->self)->bn_reducer, Py_XNewRef(reducer));
    return 0;
}
static lade_status resnet_set_reducer(lade_call *c) {
    resnet_object *self = (resnet_object *)c->self;
    lade_resnet_set_bn_reducer(NET(c->self), self->bn_reducer ? python_reduce : NULL, self);
    return LADE_OK;
}

#define METHOD(name, args, infer, run, returns, doc) {#name, "lade.ResNet32." #name, args, infer, run, returns, doc}
#define MODEL SELF(&ResNetType)
static const lade_binding resnet_bindings[] = {
    METHOD(init, ARGS(MODEL, REQ("seed", 'K')), NULL, resnet_seed, "", "initialise the weights from a seed"),
    METHOD(forward, ARGS(MODEL, IN("images", F32T, "n3hw"), OPT("train", 'p', 1), OPT("defer_running_stats", 'p', 0),
                         OUT("out", F32T, "nk")), bind_model_classes, resnet_forward, "A", "-> logits"),
    METHOD(backward, ARGS(MODEL, IN_LATE("dlogits", F32T, "nk")), bind_model_classes, resnet_backward, "",
           "grads += dloss/dparams"),
    METHOD(features, ARGS(MODEL, OUT("out", F32T, "nf")), features_infer, resnet_features, "A",
           "-> copy of the pooled features of the last forward"),
    METHOD(commit_running_stats, ARGS(MODEL), NULL, resnet_commit, "", "apply a deferred running-statistics update"),
    METHOD(zero_grad, ARGS(MODEL), NULL, resnet_zero_grad, "", "set all gradients to zero"),
    METHOD(set_precision, ARGS(MODEL, REQ("precision", 's')), NULL, resnet_set_precision, "",
           "precision of the training convolutions: 'float32' or 'bf16' (needs the bfloat16 kernels)"),
    METHOD(profile_reset, ARGS(MODEL), NULL, resnet_profile_reset, "", "reset the profile"),
    METHOD(set_bn_reducer, ARGS(MODEL, OBJ_OPT("reducer", NULL)), keep_reducer, resnet_set_reducer, "",
           "synchronised batch norm through reducer(buf), which sums buf over the replicas in place (None: per "
           "replica)"),
    {NULL},
};

static PyMethodDef resnet_methods[] = {
    {"tensors", (PyCFunction)resnet_tensors, METH_NOARGS, "[(name, is_buffer, offset, shape)] in flat-buffer order"},
    {"profile", (PyCFunction)resnet_profile, METH_NOARGS, "seconds per layer kind since the last reset"},
    {"conv_profile", (PyCFunction)resnet_conv_profile, METH_NOARGS,
     "per convolution: name, shape, seconds forward/backward since the last reset, flops per image"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef resnet_getset[] = {
    {"params", (getter)resnet_flat, NULL, "flat float32 view of all parameters", "params"},
    {"grads", (getter)resnet_flat, NULL, "flat float32 view of all gradients", "grads"},
    {"buffers", (getter)resnet_flat, NULL, "flat float32 view of the running statistics (BN, Causal Norm's mean)",
     "buffers"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ResNetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lade._C.ResNetCore",
    .tp_basicsize = sizeof(resnet_object),
    .tp_dealloc = (destructor)resnet_dealloc,
    .tp_traverse = (traverseproc)resnet_traverse,
    .tp_clear = (inquiry)resnet_clear,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ResNetCore(variant, stem, num_classes, heads=0, tau, gamma, alpha, mean_momentum): the C model behind "
               "lade.ResNet32 and lade.ResNet18 (heads > 0: the Causal Norm classifier)",
    .tp_methods = resnet_methods,
    .tp_getset = resnet_getset,
    .tp_init = (initproc)resnet_init,
    .tp_new = PyType_GenericNew,
};

#define BIND(name, args, infer, run) {#name, "lade." #name, args, infer, run}
#define IN4(name) IN(name, F32T, "nchw")
#define IN_LATE4(name) IN_LATE(name, F32T, "nchw")
#define OUT4(name) OUT(name, F32T, "nchw")
#define GRAD4(name) GRAD(name, F32T, "nchw")  /* (n, c, h, w) maps */
static const lade_binding bindings[] = {
    BIND(conv2d_forward,
         ARGS(IN4("x"), IN("weight", F32T, "ockl"), IN_OPT("bias", F32T, "o"), OPT("stride", 'I', 0),
              OPT("padding", 'I', 0), OUT("out", F32T, "nopq"), OPT("naive", 'p', 0), OPT("precision", 's', 0)), conv_infer,
         conv_forward),
    BIND(conv2d_backward,
         ARGS(IN_LATE("dout", F32T, "nopq"), IN4("x"), IN("weight", F32T, "ockl"), OPT("stride", 'I', 0),
              OPT("padding", 'I', 0), GRAD4("dx"), GRAD("dweight", F32T, "ockl"), GRAD("dbias", F32T, "o"),
              OPT("naive", 'p', 0), OPT("precision", 's', 0)), conv_infer, conv_backward),
    BIND(batchnorm2d_forward_train,
         ARGS(IN4("x"), IN("weight", F32T, "c"), IN("bias", F32T, "c"), INOUT_OPT("running_mean", F32T, "c"),
              INOUT_OPT("running_var", F32T, "c"), OPT("momentum", 'f', 0.1), OPT("eps", 'f', 1e-5), OUT4("out"),
              OUT_HIDDEN("save_mean", F32T, "c"), OUT_HIDDEN("save_invstd", F32T, "c")), bn_train_infer, bn_train),
    BIND(batchnorm2d_forward_eval,
         ARGS(IN4("x"), IN("weight", F32T, "c"), IN("bias", F32T, "c"), IN("running_mean", F32T, "c"),
              IN("running_var", F32T, "c"), OPT("eps", 'f', 1e-5), OUT4("out")), NULL, bn_eval),
    BIND(batchnorm2d_backward,
         ARGS(IN_LATE4("dout"), IN4("x"), IN("weight", F32T, "c"), IN("save_mean", F32T, "c"),
              IN("save_invstd", F32T, "c"), GRAD4("dx"), GRAD("dweight", F32T, "c"), GRAD("dbias", F32T, "c")),
         NULL, bn_backward),
    BIND(relu_forward, ARGS(IN("x", F32T, "..."), OUT_INPLACE("out", F32T, "...")), NULL, relu_forward),
    BIND(relu_backward, ARGS(IN("dout", F32T, "..."), IN("out", F32T, "..."), GRAD("dx", F32T, "...")), NULL,
         relu_backward),
    BIND(add_forward, ARGS(IN("a", F32T, "..."), IN("b", F32T, "..."), OUT_INPLACE("out", F32T, "...")), NULL,
         add_forward),
    BIND(add_backward, ARGS(IN("dout", F32T, "..."), GRAD("da", F32T, "..."), GRAD("db", F32T, "...")), NULL,
         add_backward),
    BIND(concat_forward, ARGS(IN("a", F32T, "nahw"), IN("b", F32T, "nbhw"), OUT4("out")), concat_forward_infer,
         concat_forward),
    BIND(concat_backward,
         ARGS(IN4("dout"), REQ("split", 'i'), GRAD("da", F32T, "nahw"), GRAD("db", F32T, "nbhw")),
         concat_backward_infer, concat_backward),
    BIND(global_avgpool_forward, ARGS(IN4("x"), OUT("out", F32T, "nc")), NULL, avgpool_forward),
    BIND(global_avgpool_backward, ARGS(IN("dout", F32T, "nc"), REQ("height", 'i'), REQ("width", 'i'), GRAD4("dx")),
         bind_height_width, avgpool_backward),
    BIND(maxpool2d_forward,
         ARGS(IN4("x"), REQ("kernel_size", 'i'), OPT("stride", 'i', 0), OPT("padding", 'i', 0),
              OUT("out", F32T, "ncpq"), OUT("argmax", NPY_INT32, "ncpq")), maxpool_forward_infer, maxpool_forward),
    BIND(maxpool2d_backward,
         ARGS(IN("dout", F32T, "ncpq"), IN("argmax", NPY_INT32, "ncpq"), REQ("height", 'i'), REQ("width", 'i'),
              GRAD4("dx")), bind_height_width, maxpool_backward),
    BIND(shortcut_a_forward,
         ARGS(IN4("x"), REQ("out_channels", 'i'), OPT("stride", 'i', 2), OUT("out", F32T, "nopq")),
         shortcut_forward_infer, shortcut_forward),
    BIND(shortcut_a_backward,
         ARGS(IN("dout", F32T, "nopq"), REQ("in_channels", 'i'), REQ("height", 'i'), REQ("width", 'i'),
              OPT("stride", 'i', 2), GRAD4("dx")), shortcut_backward_infer, shortcut_backward),
    BIND(linear_forward,
         ARGS(IN("x", F32T, "nk"), IN("weight", F32T, "ok"), IN_OPT("bias", F32T, "o"), OUT("out", F32T, "no")),
         NULL, linear_forward),
    BIND(linear_backward,
         ARGS(IN_LATE("dout", F32T, "no"), IN("x", F32T, "nk"), IN("weight", F32T, "ok"), GRAD("dx", F32T, "nk"),
              GRAD("dweight", F32T, "ok"), GRAD("dbias", F32T, "o")), NULL, linear_backward),
    BIND(causal_norm_forward,
         ARGS(IN("x", F32T, "nk"), IN("weight", F32T, "ok"), REQ("heads", 'i'), REQ("tau", 'f'), REQ("gamma", 'f'),
              IN_OPT("mean", F32T, "k"), OPT("alpha", 'f', 0), OUT("out", F32T, "no")), NULL, causal_norm_forward),
    BIND(causal_norm_backward,
         ARGS(IN_LATE("dout", F32T, "no"), IN("x", F32T, "nk"), IN("weight", F32T, "ok"), REQ("heads", 'i'),
              REQ("tau", 'f'), REQ("gamma", 'f'), GRAD("dx", F32T, "nk"), GRAD("dweight", F32T, "ok")), NULL,
         causal_norm_backward),
    {"sgd_step", "lade.SGD.step",
     ARGS(INOUT("params", F32T, "n"), IN("grads", F32T, "n"), INOUT("velocity", F32T, "n"), REQ("lr", 'f'),
          REQ("momentum", 'f'), REQ("dampening", 'f'), REQ("weight_decay", 'f'), REQ("nesterov", 'p'),
          REQ("first_step", 'p'), IN_OPT("decay_mask", F32T, "n")), NULL, sgd_step, ""},
    {"warmup_multistep_lr", "lade.warmup_multistep_lr",
     ARGS(REQ("base_lr", 'f'), REQ("epoch", 'i'), REQ("warmup_epochs", 'i'), REQ("warmup_start", 'f'),
          REQ("milestones", 'I'), REQ("factor", 'f')), NULL, warmup_multistep, "d",
     "-> lr (the recipe's values are in lade/app/configs)"},
    {"cosine_lr", "lade.cosine_lr",
     ARGS(REQ("base_lr", 'f'), REQ("epoch", 'i'), REQ("total_epochs", 'i'), OPT("eta_min", 'f', 0.0)), NULL, cosine,
     "d"},
    {NULL},
};

int lade_register_nn(PyObject *module) {
    if (PyType_Ready(&ResNetType) < 0) return -1;
    if (lade_add_methods(&ResNetType, resnet_bindings) < 0) return -1;
    if (PyModule_AddObjectRef(module, "ResNetCore", (PyObject *)&ResNetType) < 0) return -1;
    return lade_add_bindings(module, bindings);
}
