/* bind_nn.c - Python bindings for lade_nn.h: layers, ResNet-32, SGD, schedules.
 *
 * Outputs given by the caller are written in place (forward: overwritten,
 * backward: accumulated into). Outputs not given are allocated here: forward
 * outputs uninitialised, gradients zero-filled. */
#include "bind.h"

#include <string.h>

/* ---- argument helpers --------------------------------------------------------------- */
static int parse_pair(PyObject *o, const char *func, const char *arg, int *a, int *b) {
    if (PyLong_Check(o)) {
        long v = PyLong_AsLong(o);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < -1000000 || v > 1000000) goto bad;
        *a = *b = (int)v;
        return 0;
    }
    if (PyTuple_Check(o) && PyTuple_GET_SIZE(o) == 2 && PyLong_Check(PyTuple_GET_ITEM(o, 0)) &&
        PyLong_Check(PyTuple_GET_ITEM(o, 1))) {
        long v0 = PyLong_AsLong(PyTuple_GET_ITEM(o, 0)), v1 = PyLong_AsLong(PyTuple_GET_ITEM(o, 1));
        if (PyErr_Occurred()) return -1;
        if (v0 < -1000000 || v0 > 1000000 || v1 < -1000000 || v1 > 1000000) goto bad;
        *a = (int)v0;
        *b = (int)v1;
        return 0;
    }
bad:
    PyErr_Format(PyExc_TypeError, "%s: argument '%s' must be an int or a tuple of two ints, got %R", func, arg, o);
    return -1;
}

static PyArrayObject *in_f32(PyObject *o, const char *func, const char *arg, int ndim, const npy_intp *shape) {
    return lade_py_array(o, func, arg, NPY_FLOAT32, LADE_IN, ndim, shape);
}

/* A new reference to the caller's output (checked) or to a fresh array. */
static PyArrayObject *out_array(PyObject *o, const char *func, const char *arg, int typenum, int ndim,
                                const npy_intp *shape, int zero) {
    if (o && o != Py_None) {
        PyArrayObject *a = lade_py_array(o, func, arg, typenum, LADE_OUT, ndim, shape);
        Py_XINCREF(a);
        return a;
    }
    return (PyArrayObject *)(zero ? PyArray_ZEROS(ndim, (npy_intp *)shape, typenum, 0)
                                  : PyArray_EMPTY(ndim, (npy_intp *)shape, typenum, 0));
}

static lade_maps maps4(PyArrayObject *a) {
    if (!a) return (lade_maps){0};
    npy_intp *d = PyArray_DIMS(a);
    return lade_maps_nchw((float *)PyArray_DATA(a), (int)d[0], (int)d[1], (int)d[2], (int)d[3]);
}

static float *f32(PyArrayObject *a) { return a ? (float *)PyArray_DATA(a) : NULL; }

static int check_int_dims(PyArrayObject *a, const char *func, const char *arg) {
    for (int i = 0; i < PyArray_NDIM(a); i++)
        if (PyArray_DIM(a, i) > 0x3fffffff) {
            PyErr_Format(PyExc_ValueError, "%s: argument '%s' has dimension %d of size %zd, above the 2^30 limit",
                         func, arg, i, (Py_ssize_t)PyArray_DIM(a, i));
            return -1;
        }
    return 0;
}

/* ---- conv2d ------------------------------------------------------------------------ */
static int conv_geom(const char *func, PyArrayObject *x, PyArrayObject *w, PyObject *stride, PyObject *padding,
                     lade_conv2d_geom *g, npy_intp out_shape[4]) {
    if (parse_pair(stride, func, "stride", &g->stride_h, &g->stride_w) ||
        parse_pair(padding, func, "padding", &g->pad_h, &g->pad_w))
        return -1;
    if (check_int_dims(x, func, "x") || check_int_dims(w, func, "weight")) return -1;
    g->cout = (int)PyArray_DIM(w, 0);
    g->cin = (int)PyArray_DIM(w, 1);
    g->kh = (int)PyArray_DIM(w, 2);
    g->kw = (int)PyArray_DIM(w, 3);
    if (PyArray_DIM(x, 1) != g->cin) {
        lade_py_value_error(func, "x", "must have %d channels to match weight %s, got %zd", g->cin,
                            "(cout, cin, kh, kw)", (Py_ssize_t)PyArray_DIM(x, 1));
        return -1;
    }
    int oh, ow;
    lade_status st = lade_conv2d_out_size(g, (int)PyArray_DIM(x, 2), (int)PyArray_DIM(x, 3), &oh, &ow);
    if (st) {
        lade_py_raise(st, func);
        return -1;
    }
    out_shape[0] = PyArray_DIM(x, 0);
    out_shape[1] = g->cout;
    out_shape[2] = oh;
    out_shape[3] = ow;
    return 0;
}

static PyObject *py_conv2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.conv2d_forward";
    static char *names[] = {"x", "weight", "bias", "stride", "padding", "out", "naive", NULL};
    PyObject *ox, *ow, *obias = Py_None, *ostride = NULL, *opad = NULL, *oout = Py_None;
    int naive = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OOOOp", names, &ox, &ow, &obias, &ostride, &opad, &oout, &naive))
        return NULL;
    PyObject *one = PyLong_FromLong(1), *zero = PyLong_FromLong(0);
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *w = x ? in_f32(ow, func, "weight", 4, NULL) : NULL, *b = NULL,
                  *out = NULL;
    lade_conv2d_geom g;
    npy_intp oshape[4];
    PyObject *result = NULL;
    if (!w || conv_geom(func, x, w, ostride ? ostride : one, opad ? opad : zero, &g, oshape)) goto done;
    npy_intp bshape[1] = {g.cout};
    if (lade_py_optional_array(obias, func, "bias", NPY_FLOAT32, LADE_IN, 1, bshape, &b)) goto done;
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 4, oshape, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"x", x}, {"weight", w}, {"bias", b}))
        goto done;
    lade_status st = LADE_OK;
    size_t ws_size = naive ? 0 : lade_conv2d_workspace_size(&g, (int)oshape[0], (int)PyArray_DIM(x, 2), (int)PyArray_DIM(x, 3));
    LADE_NOGIL_BEGIN
    float *ws = ws_size ? lade_alloc(ws_size * sizeof(float)) : NULL;
    if (ws_size && !ws) st = lade_fail(LADE_ENOMEM, "could not allocate a %zu-float workspace", ws_size);
    else if (naive) st = lade_conv2d_forward_naive(maps4(out), maps4(x), f32(w), f32(b), &g);
    else st = lade_conv2d_forward(maps4(out), maps4(x), f32(w), f32(b), &g, ws);
    lade_free(ws);
    LADE_NOGIL_END
    if (st) lade_py_raise(st, func);
    else result = (PyObject *)out, out = NULL;
done:
    Py_XDECREF(out);
    Py_DECREF(one);
    Py_DECREF(zero);
    return result;
}

static PyObject *py_conv2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.conv2d_backward";
    static char *names[] = {"dout", "x", "weight", "stride", "padding", "dx", "dweight", "dbias", "naive", NULL};
    PyObject *odout, *ox, *ow, *ostride = NULL, *opad = NULL, *odx = Py_None, *odw = Py_None, *odb = Py_None;
    int naive = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OOOOOp", names, &odout, &ox, &ow, &ostride, &opad, &odx, &odw,
                                     &odb, &naive))
        return NULL;
    PyObject *one = PyLong_FromLong(1), *zero = PyLong_FromLong(0), *result = NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *w = x ? in_f32(ow, func, "weight", 4, NULL) : NULL;
    PyArrayObject *dout = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    lade_conv2d_geom g;
    npy_intp oshape[4];
    if (!w || conv_geom(func, x, w, ostride ? ostride : one, opad ? opad : zero, &g, oshape)) goto done;
    if (!(dout = in_f32(odout, func, "dout", 4, oshape))) goto done;
    npy_intp bshape[1] = {g.cout};
    if (!(dx = out_array(odx, func, "dx", NPY_FLOAT32, 4, PyArray_DIMS(x), 1)) ||
        !(dw = out_array(odw, func, "dweight", NPY_FLOAT32, 4, PyArray_DIMS(w), 1)) ||
        !(db = out_array(odb, func, "dbias", NPY_FLOAT32, 1, bshape, 1)) ||
        lade_py_disjoint(func, 3, {"dx", dx}, {"dweight", dw}, {"dbias", db}, {"dout", dout}, {"x", x}, {"weight", w}))
        goto done;
    lade_status st = LADE_OK;
    size_t ws_size = naive ? 0 : lade_conv2d_workspace_size(&g, (int)oshape[0], (int)PyArray_DIM(x, 2), (int)PyArray_DIM(x, 3));
    LADE_NOGIL_BEGIN
    float *ws = ws_size ? lade_alloc(ws_size * sizeof(float)) : NULL;
    if (ws_size && !ws) st = lade_fail(LADE_ENOMEM, "could not allocate a %zu-float workspace", ws_size);
    else if (naive) st = lade_conv2d_backward_naive(maps4(dx), f32(dw), f32(db), maps4(dout), maps4(x), f32(w), &g);
    else st = lade_conv2d_backward(maps4(dx), f32(dw), f32(db), maps4(dout), maps4(x), f32(w), &g, ws);
    lade_free(ws);
    LADE_NOGIL_END
    if (st) lade_py_raise(st, func);
    else result = Py_BuildValue("OOO", dx, dw, db);
done:
    Py_XDECREF(dx);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    Py_DECREF(one);
    Py_DECREF(zero);
    return result;
}

/* ---- batch norm ----------------------------------------------------------------------- */
static PyObject *py_bn_forward_train(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.batchnorm2d_forward_train";
    static char *names[] = {"x", "weight", "bias", "running_mean", "running_var", "momentum", "eps", "out", NULL};
    PyObject *ox, *ow, *ob, *orm = Py_None, *orv = Py_None, *oout = Py_None, *result = NULL;
    float momentum = 0.1f, eps = 1e-5f;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OOffO", names, &ox, &ow, &ob, &orm, &orv, &momentum, &eps, &oout))
        return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *w = NULL, *b = NULL, *rm = NULL, *rv = NULL;
    PyArrayObject *out = NULL, *mean = NULL, *invstd = NULL;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    npy_intp cshape[1] = {PyArray_DIM(x, 1)};
    if (!(w = in_f32(ow, func, "weight", 1, cshape)) || !(b = in_f32(ob, func, "bias", 1, cshape)) ||
        lade_py_optional_array(orm, func, "running_mean", NPY_FLOAT32, LADE_OUT, 1, cshape, &rm) ||
        lade_py_optional_array(orv, func, "running_var", NPY_FLOAT32, LADE_OUT, 1, cshape, &rv))
        return NULL;
    if (!rm != !rv) {
        PyErr_Format(PyExc_ValueError, "%s: give both running_mean and running_var, or neither", func);
        return NULL;
    }
    if (PyArray_SIZE(x) == 0) return lade_py_value_error(func, "x", "must not be empty");
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 4, PyArray_DIMS(x), 0)) ||
        !(mean = (PyArrayObject *)PyArray_EMPTY(1, cshape, NPY_FLOAT32, 0)) ||
        !(invstd = (PyArrayObject *)PyArray_EMPTY(1, cshape, NPY_FLOAT32, 0)) ||
        lade_py_disjoint(func, 3, {"out", out}, {"running_mean", rm}, {"running_var", rv}, {"x", x}, {"weight", w},
                         {"bias", b}))
        goto done;
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_batchnorm2d_forward_train(maps4(out), f32(mean), f32(invstd), f32(rm), f32(rv), maps4(x), f32(w), f32(b),
                                        momentum, eps);
    LADE_NOGIL_END
    if (st) lade_py_raise(st, func);
    else result = Py_BuildValue("OOO", out, mean, invstd);
done:
    Py_XDECREF(out);
    Py_XDECREF(mean);
    Py_XDECREF(invstd);
    return result;
}

static PyObject *py_bn_forward_eval(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.batchnorm2d_forward_eval";
    static char *names[] = {"x", "weight", "bias", "running_mean", "running_var", "eps", "out", NULL};
    PyObject *ox, *ow, *ob, *orm, *orv, *oout = Py_None;
    float eps = 1e-5f;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|fO", names, &ox, &ow, &ob, &orm, &orv, &eps, &oout)) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *w, *b, *rm, *rv, *out;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    npy_intp cshape[1] = {PyArray_DIM(x, 1)};
    if (!(w = in_f32(ow, func, "weight", 1, cshape)) || !(b = in_f32(ob, func, "bias", 1, cshape)) ||
        !(rm = in_f32(orm, func, "running_mean", 1, cshape)) || !(rv = in_f32(orv, func, "running_var", 1, cshape)))
        return NULL;
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 4, PyArray_DIMS(x), 0))) return NULL;
    if (lade_py_disjoint(func, 1, {"out", out}, {"x", x}, {"weight", w}, {"bias", b}, {"running_mean", rm},
                         {"running_var", rv})) {
        Py_DECREF(out);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_batchnorm2d_forward_eval(maps4(out), maps4(x), f32(w), f32(b), f32(rm), f32(rv), eps);
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(out);
        return lade_py_raise(st, func);
    }
    return (PyObject *)out;
}

static PyObject *py_bn_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.batchnorm2d_backward";
    static char *names[] = {"dout", "x", "weight", "save_mean", "save_invstd", "dx", "dweight", "dbias", NULL};
    PyObject *odout, *ox, *ow, *om, *oi, *odx = Py_None, *odw = Py_None, *odb = Py_None, *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|OOO", names, &odout, &ox, &ow, &om, &oi, &odx, &odw, &odb))
        return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *dout, *w, *m, *is, *dx = NULL, *dw = NULL, *db = NULL;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    npy_intp cshape[1] = {PyArray_DIM(x, 1)};
    if (!(dout = in_f32(odout, func, "dout", 4, PyArray_DIMS(x))) || !(w = in_f32(ow, func, "weight", 1, cshape)) ||
        !(m = in_f32(om, func, "save_mean", 1, cshape)) || !(is = in_f32(oi, func, "save_invstd", 1, cshape)))
        return NULL;
    if (!(dx = out_array(odx, func, "dx", NPY_FLOAT32, 4, PyArray_DIMS(x), 1)) ||
        !(dw = out_array(odw, func, "dweight", NPY_FLOAT32, 1, cshape, 1)) ||
        !(db = out_array(odb, func, "dbias", NPY_FLOAT32, 1, cshape, 1)) ||
        lade_py_disjoint(func, 3, {"dx", dx}, {"dweight", dw}, {"dbias", db}, {"dout", dout}, {"x", x}, {"weight", w},
                         {"save_mean", m}, {"save_invstd", is}))
        goto done;
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_batchnorm2d_backward(maps4(dx), f32(dw), f32(db), maps4(dout), maps4(x), f32(w), f32(m), f32(is));
    LADE_NOGIL_END
    if (st) lade_py_raise(st, func);
    else result = Py_BuildValue("OOO", dx, dw, db);
done:
    Py_XDECREF(dx);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    return result;
}

/* ---- element-wise --------------------------------------------------------------------- */
static PyObject *py_relu_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.relu_forward";
    static char *names[] = {"x", "out", NULL};
    PyObject *ox, *oout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", names, &ox, &oout)) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", -1, NULL), *out;
    if (!x) return NULL;
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, PyArray_NDIM(x), PyArray_DIMS(x), 0))) return NULL;
    if (lade_py_disjoint_or_same(func, 1, {"out", out}, {"x", x})) {
        Py_DECREF(out);
        return NULL;
    }
    size_t n = (size_t)PyArray_SIZE(x);
    LADE_NOGIL_BEGIN
    lade_relu_forward(f32(out), f32(x), n);
    LADE_NOGIL_END
    return (PyObject *)out;
}

static PyObject *py_relu_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.relu_backward";
    static char *names[] = {"dout", "out", "dx", NULL};
    PyObject *odout, *oout, *odx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", names, &odout, &oout, &odx)) return NULL;
    PyArrayObject *dout = in_f32(odout, func, "dout", -1, NULL), *out, *dx;
    if (!dout || !(out = in_f32(oout, func, "out", PyArray_NDIM(dout), PyArray_DIMS(dout)))) return NULL;
    if (!(dx = out_array(odx, func, "dx", NPY_FLOAT32, PyArray_NDIM(dout), PyArray_DIMS(dout), 1))) return NULL;
    if (lade_py_disjoint(func, 1, {"dx", dx}, {"dout", dout}, {"out", out})) {
        Py_DECREF(dx);
        return NULL;
    }
    size_t n = (size_t)PyArray_SIZE(dout);
    LADE_NOGIL_BEGIN
    lade_relu_backward(f32(dx), f32(dout), f32(out), n);
    LADE_NOGIL_END
    return (PyObject *)dx;
}

static PyObject *py_add_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.add_forward";
    static char *names[] = {"a", "b", "out", NULL};
    PyObject *oa, *ob, *oout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", names, &oa, &ob, &oout)) return NULL;
    PyArrayObject *a = in_f32(oa, func, "a", -1, NULL), *b, *out;
    if (!a || !(b = in_f32(ob, func, "b", PyArray_NDIM(a), PyArray_DIMS(a)))) return NULL;
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, PyArray_NDIM(a), PyArray_DIMS(a), 0))) return NULL;
    if (lade_py_disjoint_or_same(func, 1, {"out", out}, {"a", a}, {"b", b})) {
        Py_DECREF(out);
        return NULL;
    }
    size_t n = (size_t)PyArray_SIZE(a);
    LADE_NOGIL_BEGIN
    lade_add_forward(f32(out), f32(a), f32(b), n);
    LADE_NOGIL_END
    return (PyObject *)out;
}

static PyObject *py_add_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.add_backward";
    static char *names[] = {"dout", "da", "db", NULL};
    PyObject *odout, *oda = Py_None, *odb = Py_None, *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO", names, &odout, &oda, &odb)) return NULL;
    PyArrayObject *dout = in_f32(odout, func, "dout", -1, NULL), *da = NULL, *db = NULL;
    if (!dout) return NULL;
    int nd = PyArray_NDIM(dout);
    if ((da = out_array(oda, func, "da", NPY_FLOAT32, nd, PyArray_DIMS(dout), 1)) &&
        (db = out_array(odb, func, "db", NPY_FLOAT32, nd, PyArray_DIMS(dout), 1)) &&
        !lade_py_disjoint(func, 2, {"da", da}, {"db", db}, {"dout", dout})) {
        size_t n = (size_t)PyArray_SIZE(dout);
        LADE_NOGIL_BEGIN
        lade_add_backward(f32(da), f32(db), f32(dout), n);
        LADE_NOGIL_END
        result = Py_BuildValue("OO", da, db);
    }
    Py_XDECREF(da);
    Py_XDECREF(db);
    return result;
}

/* ---- concat, pooling, shortcut ---------------------------------------------------------- */
static PyObject *py_concat_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.concat_forward";
    static char *names[] = {"a", "b", "out", NULL};
    PyObject *oa, *ob, *oout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", names, &oa, &ob, &oout)) return NULL;
    PyArrayObject *a = in_f32(oa, func, "a", 4, NULL), *b, *out;
    if (!a) return NULL;
    npy_intp bshape[4] = {PyArray_DIM(a, 0), LADE_ANY, PyArray_DIM(a, 2), PyArray_DIM(a, 3)};
    if (!(b = in_f32(ob, func, "b", 4, bshape))) return NULL;
    npy_intp oshape[4] = {bshape[0], PyArray_DIM(a, 1) + PyArray_DIM(b, 1), bshape[2], bshape[3]};
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 4, oshape, 0))) return NULL;
    if (lade_py_disjoint(func, 1, {"out", out}, {"a", a}, {"b", b})) {
        Py_DECREF(out);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_concat_forward(maps4(out), maps4(a), maps4(b));
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(out);
        return lade_py_raise(st, func);
    }
    return (PyObject *)out;
}

static PyObject *py_concat_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.concat_backward";
    static char *names[] = {"dout", "split", "da", "db", NULL};
    PyObject *odout, *oda = Py_None, *odb = Py_None, *result = NULL;
    int split;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|OO", names, &odout, &split, &oda, &odb)) return NULL;
    PyArrayObject *dout = in_f32(odout, func, "dout", 4, NULL), *da = NULL, *db = NULL;
    if (!dout) return NULL;
    if (split < 0 || split > PyArray_DIM(dout, 1))
        return lade_py_value_error(func, "split", "must be in [0, %zd], got %d", (Py_ssize_t)PyArray_DIM(dout, 1), split);
    npy_intp ashape[4] = {PyArray_DIM(dout, 0), split, PyArray_DIM(dout, 2), PyArray_DIM(dout, 3)};
    npy_intp bshape[4] = {ashape[0], PyArray_DIM(dout, 1) - split, ashape[2], ashape[3]};
    if ((da = out_array(oda, func, "da", NPY_FLOAT32, 4, ashape, 1)) &&
        (db = out_array(odb, func, "db", NPY_FLOAT32, 4, bshape, 1)) &&
        !lade_py_disjoint(func, 2, {"da", da}, {"db", db}, {"dout", dout})) {
        lade_status st;
        LADE_NOGIL_BEGIN
        st = lade_concat_backward(maps4(da), maps4(db), maps4(dout));
        LADE_NOGIL_END
        if (st) lade_py_raise(st, func);
        else result = Py_BuildValue("OO", da, db);
    }
    Py_XDECREF(da);
    Py_XDECREF(db);
    return result;
}

static PyObject *py_avgpool_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.global_avgpool_forward";
    static char *names[] = {"x", "out", NULL};
    PyObject *ox, *oout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", names, &ox, &oout)) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *out;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    npy_intp oshape[2] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1)};
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 2, oshape, 0))) return NULL;
    if (lade_py_disjoint(func, 1, {"out", out}, {"x", x})) {
        Py_DECREF(out);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_avgpool_forward(f32(out), maps4(x));
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(out);
        return lade_py_raise(st, func);
    }
    return (PyObject *)out;
}

static PyObject *py_avgpool_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.global_avgpool_backward";
    static char *names[] = {"dout", "height", "width", "dx", NULL};
    PyObject *odout, *odx = Py_None;
    int h, w;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oii|O", names, &odout, &h, &w, &odx)) return NULL;
    PyArrayObject *dout = in_f32(odout, func, "dout", 2, NULL), *dx;
    if (!dout) return NULL;
    if (h < 1 || w < 1) return lade_py_value_error(func, "height/width", "must be >= 1, got %d and %d", h, w);
    npy_intp xshape[4] = {PyArray_DIM(dout, 0), PyArray_DIM(dout, 1), h, w};
    if (!(dx = out_array(odx, func, "dx", NPY_FLOAT32, 4, xshape, 1))) return NULL;
    if (lade_py_disjoint(func, 1, {"dx", dx}, {"dout", dout})) {
        Py_DECREF(dx);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_avgpool_backward(maps4(dx), f32(dout));
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(dx);
        return lade_py_raise(st, func);
    }
    return (PyObject *)dx;
}

static PyObject *py_maxpool_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.maxpool2d_forward";
    static char *names[] = {"x", "kernel_size", "stride", "padding", "out", "argmax", NULL};
    PyObject *ox, *ostride = Py_None, *oout = Py_None, *oarg = Py_None, *result = NULL;
    lade_pool_geom g = {0, 0, 0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|OiOO", names, &ox, &g.k, &ostride, &g.pad, &oout, &oarg))
        return NULL;
    if (ostride == Py_None) g.stride = g.k;
    else if ((g.stride = (int)PyLong_AsLong(ostride)) == -1 && PyErr_Occurred()) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *out = NULL, *am = NULL;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    int oh, ow;
    lade_status st = lade_pool_out_size(&g, (int)PyArray_DIM(x, 2), (int)PyArray_DIM(x, 3), &oh, &ow);
    if (st) return lade_py_raise(st, func);
    npy_intp oshape[4] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1), oh, ow};
    if ((out = out_array(oout, func, "out", NPY_FLOAT32, 4, oshape, 0)) &&
        (am = out_array(oarg, func, "argmax", NPY_INT32, 4, oshape, 0)) &&
        !lade_py_disjoint(func, 2, {"out", out}, {"argmax", am}, {"x", x})) {
        LADE_NOGIL_BEGIN
        st = lade_maxpool_forward(maps4(out), (int32_t *)PyArray_DATA(am), maps4(x), &g);
        LADE_NOGIL_END
        if (st) lade_py_raise(st, func);
        else result = Py_BuildValue("OO", out, am);
    }
    Py_XDECREF(out);
    Py_XDECREF(am);
    return result;
}

static PyObject *py_maxpool_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.maxpool2d_backward";
    static char *names[] = {"dout", "argmax", "height", "width", "dx", NULL};
    PyObject *odout, *oarg, *odx = Py_None;
    int h, w;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOii|O", names, &odout, &oarg, &h, &w, &odx)) return NULL;
    PyArrayObject *dout = in_f32(odout, func, "dout", 4, NULL), *am, *dx;
    if (!dout || !(am = lade_py_array(oarg, func, "argmax", NPY_INT32, LADE_IN, 4, PyArray_DIMS(dout)))) return NULL;
    if (h < 1 || w < 1) return lade_py_value_error(func, "height/width", "must be >= 1, got %d and %d", h, w);
    npy_intp xshape[4] = {PyArray_DIM(dout, 0), PyArray_DIM(dout, 1), h, w};
    if (!(dx = out_array(odx, func, "dx", NPY_FLOAT32, 4, xshape, 1))) return NULL;
    if (lade_py_disjoint(func, 1, {"dx", dx}, {"dout", dout}, {"argmax", am})) {
        Py_DECREF(dx);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_maxpool_backward(maps4(dx), maps4(dout), (const int32_t *)PyArray_DATA(am));
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(dx);
        return lade_py_raise(st, func);
    }
    return (PyObject *)dx;
}

static PyObject *py_shortcut_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.shortcut_a_forward";
    static char *names[] = {"x", "out_channels", "stride", "out", NULL};
    PyObject *ox, *oout = Py_None;
    int cout, stride = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|iO", names, &ox, &cout, &stride, &oout)) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 4, NULL), *out;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    if (stride != 1 && stride != 2) return lade_py_value_error(func, "stride", "must be 1 or 2, got %d", stride);
    if (cout < PyArray_DIM(x, 1) || (cout - PyArray_DIM(x, 1)) % 2)
        return lade_py_value_error(func, "out_channels", "must be >= the %zd input channels with an even difference, got %d",
                                   (Py_ssize_t)PyArray_DIM(x, 1), cout);
    npy_intp oshape[4] = {PyArray_DIM(x, 0), cout, (PyArray_DIM(x, 2) + stride - 1) / stride,
                          (PyArray_DIM(x, 3) + stride - 1) / stride};
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 4, oshape, 0))) return NULL;
    if (lade_py_disjoint(func, 1, {"out", out}, {"x", x})) {
        Py_DECREF(out);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_shortcut_a_forward(maps4(out), maps4(x), stride);
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(out);
        return lade_py_raise(st, func);
    }
    return (PyObject *)out;
}

static PyObject *py_shortcut_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.shortcut_a_backward";
    static char *names[] = {"dout", "in_channels", "height", "width", "stride", "dx", NULL};
    PyObject *odout, *odx = Py_None;
    int cin, h, w, stride = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii|iO", names, &odout, &cin, &h, &w, &stride, &odx)) return NULL;
    PyArrayObject *dout = in_f32(odout, func, "dout", 4, NULL), *dx;
    if (!dout) return NULL;
    if (cin < 1 || h < 1 || w < 1)
        return lade_py_value_error(func, "in_channels/height/width", "must be >= 1, got %d, %d, %d", cin, h, w);
    if (stride != 1 && stride != 2) return lade_py_value_error(func, "stride", "must be 1 or 2, got %d", stride);
    npy_intp oh = (h + stride - 1) / stride, ow = (w + stride - 1) / stride;
    if (PyArray_DIM(dout, 2) != oh || PyArray_DIM(dout, 3) != ow || PyArray_DIM(dout, 1) < cin ||
        (PyArray_DIM(dout, 1) - cin) % 2)
        return lade_py_value_error(func, "dout", "must have shape (n, C, %zd, %zd) with C >= %d and C - %d even, got "
                                   "(%zd, %zd, %zd, %zd)", (Py_ssize_t)oh, (Py_ssize_t)ow, cin, cin,
                                   (Py_ssize_t)PyArray_DIM(dout, 0), (Py_ssize_t)PyArray_DIM(dout, 1),
                                   (Py_ssize_t)PyArray_DIM(dout, 2), (Py_ssize_t)PyArray_DIM(dout, 3));
    npy_intp xshape[4] = {PyArray_DIM(dout, 0), cin, h, w};
    if (!(dx = out_array(odx, func, "dx", NPY_FLOAT32, 4, xshape, 1))) return NULL;
    if (lade_py_disjoint(func, 1, {"dx", dx}, {"dout", dout})) {
        Py_DECREF(dx);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_shortcut_a_backward(maps4(dx), maps4(dout), stride);
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(dx);
        return lade_py_raise(st, func);
    }
    return (PyObject *)dx;
}

/* ---- linear ------------------------------------------------------------------------------ */
static PyObject *py_linear_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.linear_forward";
    static char *names[] = {"x", "weight", "bias", "out", NULL};
    PyObject *ox, *ow, *ob = Py_None, *oout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OO", names, &ox, &ow, &ob, &oout)) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 2, NULL), *w, *b = NULL, *out;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    npy_intp wshape[2] = {LADE_ANY, PyArray_DIM(x, 1)};
    if (!(w = in_f32(ow, func, "weight", 2, wshape)) || check_int_dims(w, func, "weight")) return NULL;
    npy_intp bshape[1] = {PyArray_DIM(w, 0)}, oshape[2] = {PyArray_DIM(x, 0), PyArray_DIM(w, 0)};
    if (lade_py_optional_array(ob, func, "bias", NPY_FLOAT32, LADE_IN, 1, bshape, &b)) return NULL;
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 2, oshape, 0))) return NULL;
    if (lade_py_disjoint(func, 1, {"out", out}, {"x", x}, {"weight", w}, {"bias", b})) {
        Py_DECREF(out);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_linear_forward(f32(out), f32(x), f32(w), f32(b), (int)oshape[0], (int)wshape[1], (int)oshape[1]);
    LADE_NOGIL_END
    if (st) {
        Py_DECREF(out);
        return lade_py_raise(st, func);
    }
    return (PyObject *)out;
}

static PyObject *py_linear_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.linear_backward";
    static char *names[] = {"dout", "x", "weight", "dx", "dweight", "dbias", NULL};
    PyObject *odout, *ox, *ow, *odx = Py_None, *odw = Py_None, *odb = Py_None, *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OOO", names, &odout, &ox, &ow, &odx, &odw, &odb)) return NULL;
    PyArrayObject *x = in_f32(ox, func, "x", 2, NULL), *w, *dout, *dx = NULL, *dw = NULL, *db = NULL;
    if (!x || check_int_dims(x, func, "x")) return NULL;
    npy_intp wshape[2] = {LADE_ANY, PyArray_DIM(x, 1)};
    if (!(w = in_f32(ow, func, "weight", 2, wshape)) || check_int_dims(w, func, "weight")) return NULL;
    npy_intp oshape[2] = {PyArray_DIM(x, 0), PyArray_DIM(w, 0)}, bshape[1] = {PyArray_DIM(w, 0)};
    if (!(dout = in_f32(odout, func, "dout", 2, oshape))) return NULL;
    if ((dx = out_array(odx, func, "dx", NPY_FLOAT32, 2, PyArray_DIMS(x), 1)) &&
        (dw = out_array(odw, func, "dweight", NPY_FLOAT32, 2, PyArray_DIMS(w), 1)) &&
        (db = out_array(odb, func, "dbias", NPY_FLOAT32, 1, bshape, 1)) &&
        !lade_py_disjoint(func, 3, {"dx", dx}, {"dweight", dw}, {"dbias", db}, {"dout", dout}, {"x", x},
                          {"weight", w})) {
        lade_status st;
        LADE_NOGIL_BEGIN
        st = lade_linear_backward(f32(dx), f32(dw), f32(db), f32(dout), f32(x), f32(w), (int)oshape[0],
                                  (int)PyArray_DIM(x, 1), (int)oshape[1]);
        LADE_NOGIL_END
        if (st) lade_py_raise(st, func);
        else result = Py_BuildValue("OOO", dx, dw, db);
    }
    Py_XDECREF(dx);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    return result;
}

/* ---- SGD and schedules ----------------------------------------------------------------------- */
static PyObject *py_sgd_step(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.SGD.step";
    static char *names[] = {"params", "grads", "velocity", "lr", "momentum", "dampening", "weight_decay", "nesterov",
                            "first_step", "decay_mask", NULL};
    PyObject *op, *og, *ov, *om = Py_None;
    float lr, momentum, dampening, wd;
    int nesterov, first;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOffffpp|O", names, &op, &og, &ov, &lr, &momentum, &dampening, &wd,
                                     &nesterov, &first, &om))
        return NULL;
    PyArrayObject *p = lade_py_array(op, func, "params", NPY_FLOAT32, LADE_OUT, 1, NULL), *g, *v, *m = NULL;
    if (!p) return NULL;
    if (!(g = in_f32(og, func, "grads", 1, PyArray_DIMS(p))) ||
        !(v = lade_py_array(ov, func, "velocity", NPY_FLOAT32, LADE_OUT, 1, PyArray_DIMS(p))) ||
        lade_py_optional_array(om, func, "decay_mask", NPY_FLOAT32, LADE_IN, 1, PyArray_DIMS(p), &m) ||
        lade_py_disjoint(func, 2, {"params", p}, {"velocity", v}, {"grads", g}, {"decay_mask", m}))
        return NULL;
    lade_sgd_config cfg = {momentum, dampening, wd, nesterov};
    size_t n = (size_t)PyArray_SIZE(p);
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_sgd_step(f32(p), f32(g), f32(v), f32(m), n, &cfg, lr, first);
    LADE_NOGIL_END
    if (st) return lade_py_raise(st, func);
    Py_RETURN_NONE;
}

static PyObject *py_lr_warmup_multistep(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.warmup_multistep_lr";
    static char *names[] = {"base_lr", "epoch", "warmup_epochs", "warmup_start", "milestones", "factor", NULL};
    double base, start = 1.0 / 3.0, factor = 0.01;
    int epoch, warmup = 5;
    PyObject *omil = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "di|idOd", names, &base, &epoch, &warmup, &start, &omil, &factor))
        return NULL;
    int milestones[64], count = 0;
    if (omil) {
        PyObject *seq = PySequence_Fast(omil, "lade.warmup_multistep_lr: argument 'milestones' must be a sequence of ints");
        if (!seq) return NULL;
        Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
        if (len > 64) {
            Py_DECREF(seq);
            return lade_py_value_error(func, "milestones", "must have at most 64 entries, got %zd", len);
        }
        for (Py_ssize_t i = 0; i < len; i++) {
            long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return NULL;
            }
            milestones[count++] = (int)v;
        }
        Py_DECREF(seq);
    } else {
        milestones[0] = 120, milestones[1] = 160, count = 2;
    }
    double lr;
    lade_status st = lade_lr_warmup_multistep(&lr, base, epoch, warmup, start, milestones, count, factor);
    if (st) return lade_py_raise(st, func);
    return PyFloat_FromDouble(lr);
}

static PyObject *py_lr_cosine(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"base_lr", "epoch", "total_epochs", "eta_min", NULL};
    double base, eta_min = 0.0;
    int epoch, total;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dii|d", names, &base, &epoch, &total, &eta_min)) return NULL;
    double lr;
    lade_status st = lade_lr_cosine(&lr, base, epoch, total, eta_min);
    if (st) return lade_py_raise(st, "lade.cosine_lr");
    return PyFloat_FromDouble(lr);
}

/* ---- the ResNet-32 object ------------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    lade_resnet *net;
    int busy; /* a call is running without the GIL: refuse a second one */
} ResNetObject;

static int resnet_init(ResNetObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"variant", "num_classes", NULL};
    int variant, classes;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii", names, &variant, &classes)) return -1;
    if (self->net) {
        PyErr_SetString(PyExc_RuntimeError, "lade.ResNet32: already initialised");
        return -1;
    }
    lade_status st = lade_resnet_create(&self->net, (lade_resnet_variant)variant, classes);
    if (st) {
        lade_py_raise(st, "lade.ResNet32");
        return -1;
    }
    return 0;
}

static void resnet_dealloc(ResNetObject *self) {
    lade_resnet_destroy(self->net);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int resnet_enter(ResNetObject *self, const char *func) {
    if (!self->net) {
        PyErr_Format(PyExc_RuntimeError, "%s: the model is not initialised", func);
        return -1;
    }
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s: the model is in use by another thread", func);
        return -1;
    }
    self->busy = 1;
    return 0;
}

/* A 1-D view of n floats owned by the model; the view keeps the model alive. */
static PyObject *model_view(ResNetObject *self, float *data, size_t n) {
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

static PyObject *resnet_params(ResNetObject *self, void *unused) {
    if (resnet_enter(self, "lade.ResNet32.params")) return NULL;
    self->busy = 0;
    return model_view(self, lade_resnet_params(self->net), lade_resnet_num_params(self->net));
}
static PyObject *resnet_grads(ResNetObject *self, void *unused) {
    if (resnet_enter(self, "lade.ResNet32.grads")) return NULL;
    self->busy = 0;
    return model_view(self, lade_resnet_grads(self->net), lade_resnet_num_params(self->net));
}
static PyObject *resnet_buffers(ResNetObject *self, void *unused) {
    if (resnet_enter(self, "lade.ResNet32.buffers")) return NULL;
    self->busy = 0;
    return model_view(self, lade_resnet_buffers(self->net), lade_resnet_num_buffers(self->net));
}

static PyObject *resnet_tensors(ResNetObject *self, PyObject *unused) {
    if (resnet_enter(self, "lade.ResNet32.tensors")) return NULL;
    self->busy = 0;
    int n = lade_resnet_num_tensors(self->net);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        const lade_tensor_info *t = lade_resnet_tensor(self->net, i);
        PyObject *shape = PyTuple_New(t->ndim);
        if (!shape) {
            Py_DECREF(list);
            return NULL;
        }
        for (int d = 0; d < t->ndim; d++) PyTuple_SET_ITEM(shape, d, PyLong_FromLong(t->dims[d]));
        PyObject *item = Py_BuildValue("(siNN)", t->name, t->is_buffer, PyLong_FromSize_t(t->offset), shape);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *resnet_init_weights(ResNetObject *self, PyObject *arg) {
    unsigned long long seed = PyLong_AsUnsignedLongLong(arg);
    if (seed == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (resnet_enter(self, "lade.ResNet32.init")) return NULL;
    lade_rng rng;
    LADE_NOGIL_BEGIN
    lade_rng_seed(&rng, seed, 0);
    lade_resnet_init(self->net, &rng);
    LADE_NOGIL_END
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *resnet_forward(ResNetObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.ResNet32.forward";
    static char *names[] = {"images", "train", "defer_running_stats", "out", NULL};
    PyObject *oimg, *oout = Py_None;
    int train = 1, defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|ppO", names, &oimg, &train, &defer, &oout)) return NULL;
    if (!self->net) return PyErr_Format(PyExc_RuntimeError, "%s: the model is not initialised", func);
    npy_intp ishape[4] = {LADE_ANY, 3, LADE_ANY, LADE_ANY};
    PyArrayObject *img = in_f32(oimg, func, "images", 4, ishape), *out;
    if (!img || check_int_dims(img, func, "images")) return NULL;
    npy_intp oshape[2] = {PyArray_DIM(img, 0), lade_resnet_num_classes(self->net)};
    if (!(out = out_array(oout, func, "out", NPY_FLOAT32, 2, oshape, 0))) return NULL;
    if (lade_py_disjoint(func, 1, {"out", out}, {"images", img}) || resnet_enter(self, func)) {
        Py_DECREF(out);
        return NULL;
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_resnet_forward(self->net, f32(img), (int)PyArray_DIM(img, 0), (int)PyArray_DIM(img, 2),
                             (int)PyArray_DIM(img, 3), train ? LADE_TRAIN : LADE_EVAL, defer, f32(out));
    LADE_NOGIL_END
    self->busy = 0;
    if (st) {
        Py_DECREF(out);
        return lade_py_raise(st, func);
    }
    return (PyObject *)out;
}

static PyObject *resnet_commit(ResNetObject *self, PyObject *unused) {
    static const char *func = "lade.ResNet32.commit_running_stats";
    if (resnet_enter(self, func)) return NULL;
    lade_status st = lade_resnet_commit_running_stats(self->net);
    self->busy = 0;
    if (st) return lade_py_raise(st, func);
    Py_RETURN_NONE;
}

static PyObject *resnet_backward(ResNetObject *self, PyObject *arg) {
    static const char *func = "lade.ResNet32.backward";
    if (!self->net) return PyErr_Format(PyExc_RuntimeError, "%s: the model is not initialised", func);
    npy_intp shape[2] = {LADE_ANY, lade_resnet_num_classes(self->net)};
    PyArrayObject *d = in_f32(arg, func, "dlogits", 2, shape);
    if (!d) return NULL;
    if (resnet_enter(self, func)) return NULL;
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_resnet_backward(self->net, f32(d), (int)PyArray_DIM(d, 0));
    LADE_NOGIL_END
    self->busy = 0;
    if (st) return lade_py_raise(st, func);
    Py_RETURN_NONE;
}

static PyObject *resnet_zero_grad(ResNetObject *self, PyObject *unused) {
    if (resnet_enter(self, "lade.ResNet32.zero_grad")) return NULL;
    lade_resnet_zero_grad(self->net);
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *resnet_features(ResNetObject *self, PyObject *args, PyObject *kw) {
    static const char *func = "lade.ResNet32.features";
    static char *names[] = {"out", NULL};
    PyObject *oout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", names, &oout)) return NULL;
    if (resnet_enter(self, func)) return NULL;
    self->busy = 0;
    int n = lade_resnet_last_batch(self->net);
    if (n < 1) return PyErr_Format(PyExc_RuntimeError, "%s: no forward pass has run yet", func);
    npy_intp shape[2] = {n, lade_resnet_feature_dim(self->net)};
    PyArrayObject *out = out_array(oout, func, "out", NPY_FLOAT32, 2, shape, 0);
    if (!out) return NULL;
    memcpy(PyArray_DATA(out), lade_resnet_features(self->net), sizeof(float) * shape[0] * shape[1]);
    return (PyObject *)out;
}

static PyObject *resnet_profile(ResNetObject *self, PyObject *unused) {
    if (resnet_enter(self, "lade.ResNet32.profile")) return NULL;
    self->busy = 0;
    double s[LADE_PROF_COUNT];
    lade_resnet_profile(self->net, s);
    PyObject *d = PyDict_New();
    for (int k = 0; d && k < LADE_PROF_COUNT; k++) {
        PyObject *v = PyFloat_FromDouble(s[k]);
        if (!v || PyDict_SetItemString(d, lade_prof_name((lade_prof_kind)k), v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *resnet_profile_reset(ResNetObject *self, PyObject *unused) {
    if (resnet_enter(self, "lade.ResNet32.profile_reset")) return NULL;
    lade_resnet_profile_reset(self->net);
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *resnet_conv_profile(ResNetObject *self, PyObject *unused) {
    if (resnet_enter(self, "lade.ResNet32.conv_profile")) return NULL;
    self->busy = 0;
    int count = lade_resnet_num_convs(self->net);
    PyObject *list = PyList_New(count);
    for (int i = 0; list && i < count; i++) {
        lade_conv_profile c;
        lade_resnet_conv_profile(self->net, i, &c);
        PyObject *d = Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:d,s:d,s:d,s:d}", "name", c.name, "cin",
                                    c.geom.cin, "cout", c.geom.cout, "kernel", c.geom.kh, "stride", c.geom.stride_h,
                                    "in_h", c.in_h, "in_w", c.in_w, "forward_seconds", c.forward_seconds,
                                    "backward_seconds", c.backward_seconds, "forward_flops", c.forward_flops,
                                    "backward_flops", c.backward_flops);
        if (!d) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyMethodDef resnet_methods[] = {
    {"tensors", (PyCFunction)resnet_tensors, METH_NOARGS, "[(name, is_buffer, offset, shape)] in flat-buffer order"},
    {"init", (PyCFunction)resnet_init_weights, METH_O, "init(seed): initialise the weights from a seed"},
    {"forward", (PyCFunction)(void (*)(void))resnet_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(images, train=True, defer_running_stats=False, out=None) -> logits"},
    {"commit_running_stats", (PyCFunction)resnet_commit, METH_NOARGS, "apply a deferred running-statistics update"},
    {"backward", (PyCFunction)resnet_backward, METH_O, "backward(dlogits): grads += dloss/dparams"},
    {"zero_grad", (PyCFunction)resnet_zero_grad, METH_NOARGS, "set all gradients to zero"},
    {"features", (PyCFunction)(void (*)(void))resnet_features, METH_VARARGS | METH_KEYWORDS,
     "features(out=None) -> copy of the pooled features of the last forward"},
    {"profile", (PyCFunction)resnet_profile, METH_NOARGS, "seconds per layer kind since the last reset"},
    {"profile_reset", (PyCFunction)resnet_profile_reset, METH_NOARGS, "reset the profile"},
    {"conv_profile", (PyCFunction)resnet_conv_profile, METH_NOARGS,
     "per convolution: name, shape, seconds forward/backward since the last reset, flops per image"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef resnet_getset[] = {
    {"params", (getter)resnet_params, NULL, "flat float32 view of all parameters", NULL},
    {"grads", (getter)resnet_grads, NULL, "flat float32 view of all gradients", NULL},
    {"buffers", (getter)resnet_buffers, NULL, "flat float32 view of the BN running statistics", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ResNetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lade._C.ResNetCore",
    .tp_basicsize = sizeof(ResNetObject),
    .tp_dealloc = (destructor)resnet_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ResNetCore(variant, num_classes): the C model behind lade.ResNet32",
    .tp_methods = resnet_methods,
    .tp_getset = resnet_getset,
    .tp_init = (initproc)resnet_init,
    .tp_new = PyType_GenericNew,
};

#define KW(name, fn, doc) {name, (PyCFunction)(void (*)(void))fn, METH_VARARGS | METH_KEYWORDS, doc}
static PyMethodDef methods[] = {
    KW("conv2d_forward", py_conv2d_forward,
       "conv2d_forward(x, weight, bias=None, stride=1, padding=0, out=None, naive=False) -> out"),
    KW("conv2d_backward", py_conv2d_backward,
       "conv2d_backward(dout, x, weight, stride=1, padding=0, dx=None, dweight=None, dbias=None, naive=False)"
       " -> (dx, dweight, dbias), accumulated"),
    KW("batchnorm2d_forward_train", py_bn_forward_train,
       "batchnorm2d_forward_train(x, weight, bias, running_mean=None, running_var=None, momentum=0.1, eps=1e-5,"
       " out=None) -> (out, save_mean, save_invstd)"),
    KW("batchnorm2d_forward_eval", py_bn_forward_eval,
       "batchnorm2d_forward_eval(x, weight, bias, running_mean, running_var, eps=1e-5, out=None) -> out"),
    KW("batchnorm2d_backward", py_bn_backward,
       "batchnorm2d_backward(dout, x, weight, save_mean, save_invstd, dx=None, dweight=None, dbias=None)"
       " -> (dx, dweight, dbias), accumulated"),
    KW("relu_forward", py_relu_forward, "relu_forward(x, out=None) -> out (out may be x)"),
    KW("relu_backward", py_relu_backward, "relu_backward(dout, out, dx=None) -> dx, accumulated; out is the forward output"),
    KW("add_forward", py_add_forward, "add_forward(a, b, out=None) -> out"),
    KW("add_backward", py_add_backward, "add_backward(dout, da=None, db=None) -> (da, db), accumulated"),
    KW("concat_forward", py_concat_forward, "concat_forward(a, b, out=None) -> out, channel concat"),
    KW("concat_backward", py_concat_backward, "concat_backward(dout, split, da=None, db=None) -> (da, db), accumulated"),
    KW("global_avgpool_forward", py_avgpool_forward, "global_avgpool_forward(x, out=None) -> (n, c)"),
    KW("global_avgpool_backward", py_avgpool_backward,
       "global_avgpool_backward(dout, height, width, dx=None) -> dx, accumulated"),
    KW("maxpool2d_forward", py_maxpool_forward,
       "maxpool2d_forward(x, kernel_size, stride=None, padding=0, out=None, argmax=None) -> (out, argmax)"),
    KW("maxpool2d_backward", py_maxpool_backward,
       "maxpool2d_backward(dout, argmax, height, width, dx=None) -> dx, accumulated"),
    KW("shortcut_a_forward", py_shortcut_forward, "shortcut_a_forward(x, out_channels, stride=2, out=None) -> out"),
    KW("shortcut_a_backward", py_shortcut_backward,
       "shortcut_a_backward(dout, in_channels, height, width, stride=2, dx=None) -> dx, accumulated"),
    KW("linear_forward", py_linear_forward, "linear_forward(x, weight, bias=None, out=None) -> out"),
    KW("linear_backward", py_linear_backward,
       "linear_backward(dout, x, weight, dx=None, dweight=None, dbias=None) -> (dx, dweight, dbias), accumulated"),
    KW("sgd_step", py_sgd_step, "sgd_step(params, grads, velocity, lr, momentum, dampening, weight_decay, nesterov,"
                                " first_step, decay_mask=None)"),
    KW("warmup_multistep_lr", py_lr_warmup_multistep,
       "warmup_multistep_lr(base_lr, epoch, warmup_epochs=5, warmup_start=1/3, milestones=(120, 160), factor=0.01)"),
    KW("cosine_lr", py_lr_cosine, "cosine_lr(base_lr, epoch, total_epochs, eta_min=0.0)"),
    {NULL, NULL, 0, NULL},
};

int lade_register_nn(PyObject *module) {
    if (PyType_Ready(&ResNetType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "ResNetCore", (PyObject *)&ResNetType) < 0) return -1;
    return PyModule_AddFunctions(module, methods);
}
