/* bind_ltmath.c - Python bindings for lade_ltmath.h.
 *
 * Every function takes the public Python name first (e.g. "lade.losses.lade_loss") so
 * that errors name the function the user called. Arrays are checked by lade_py_array and
 * used without copies; outputs are passed in by the Python layer. */
#include <limits.h>

#include "bind.h"
#include "../ltmath_internal.h"

#define F32(a) ((float *)PyArray_DATA(a))
#define F64(a) ((double *)PyArray_DATA(a))
#define I64(a) ((int64_t *)PyArray_DATA(a))
#define U8(a) ((uint8_t *)PyArray_DATA(a))
#define OPT(a, T) ((a) ? T(a) : NULL)

/* Array check with up to two dimensions (LADE_ANY for any size). */
static PyArrayObject *arr(PyObject *o, const char *func, const char *name, int type, int out, int ndim, npy_intp d0,
                          npy_intp d1) {
    npy_intp shape[2] = {d0, d1};
    return lade_py_array(o, func, name, type, out, ndim, shape);
}

/* Optional array: None gives *res = NULL. Returns 0 or -1. */
static int opt(PyObject *o, const char *func, const char *name, int type, int out, int ndim, npy_intp d0,
               npy_intp d1, PyArrayObject **res) {
    npy_intp shape[2] = {d0, d1};
    return lade_py_optional_array(o, func, name, type, out, ndim, shape, res);
}

/* Dimension as int (the core's row/class counts), with a named error when too large. */
static int dim(PyArrayObject *a, int axis, const char *func, const char *name, int *out) {
    npy_intp d = PyArray_DIM(a, axis);
    if (d > INT_MAX) {
        lade_py_value_error(func, name, "has %ld entries along axis %d, more than %d", (long)d, axis, INT_MAX);
        return -1;
    }
    *out = (int)d;
    return 0;
}

/* The Python losses overwrite grad: the binding zeroes it, then the core accumulates. */
static void zero_grad(PyArrayObject *grad, int zero) {
    if (grad && zero) memset(PyArray_DATA(grad), 0, (size_t)PyArray_NBYTES(grad));
}

#define RUN(call)                  \
    do {                           \
        LADE_NOGIL_BEGIN           \
        st = (call);               \
        LADE_NOGIL_END             \
        if (st) return lade_py_raise(st, func); \
    } while (0)

/* logits (n, C) float32 and labels (n,) int64; sets n and C. */
static int batch(PyObject *lo, PyObject *la, const char *func, const char *logits_name, PyArrayObject **logits,
                 PyArrayObject **labels, int *n, int *C) {
    if (!(*logits = arr(lo, func, logits_name, NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY))) return -1;
    if (dim(*logits, 0, func, logits_name, n) || dim(*logits, 1, func, logits_name, C)) return -1;
    if (!(*labels = arr(la, func, "labels", NPY_INT64, LADE_IN, 1, *n, 0))) return -1;
    return 0;
}

/* ---- losses --------------------------------------------------------------------------- */
static PyObject *py_cross_entropy(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *la, *go, *oo, *mo, *wo;
    float scale, s, gamma;
    int by_sum, zero;
    if (!PyArg_ParseTuple(args, "sOOOfOOOffpp", &func, &lo, &la, &go, &scale, &oo, &mo, &wo, &s, &gamma, &by_sum,
                          &zero))
        return NULL;
    PyArrayObject *logits, *labels, *grad, *offset, *margin, *weight;
    int n, C;
    if (batch(lo, la, func, "logits", &logits, &labels, &n, &C) ||
        opt(go, func, "grad", NPY_FLOAT32, LADE_OUT, 2, n, C, &grad) ||
        opt(oo, func, "offset", NPY_FLOAT32, LADE_IN, 1, C, 0, &offset) ||
        opt(mo, func, "margin", NPY_FLOAT32, LADE_IN, 1, C, 0, &margin) ||
        opt(wo, func, "weights", NPY_FLOAT32, LADE_IN, 1, C, 0, &weight) ||
        lade_py_disjoint(func, 1, {"grad", grad}, {"offset", offset}, {"margin", margin}, {"weights", weight},
                         {"logits", logits}, {"labels", labels}))
        return NULL;
    lade_ce_config cfg = {OPT(offset, F32), OPT(margin, F32), OPT(weight, F32), s, gamma, by_sum};
    zero_grad(grad, zero);
    double loss;
    lade_status st;
    RUN(lade_cross_entropy(&loss, OPT(grad, F32), scale, F32(logits), I64(labels), n, C, &cfg));
    return PyFloat_FromDouble(loss);
}

static PyObject *py_lade_ce(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *la, *go, *po;
    float scale;
    int zero;
    if (!PyArg_ParseTuple(args, "sOOOfOp", &func, &lo, &la, &go, &scale, &po, &zero)) return NULL;
    PyArrayObject *logits, *labels, *grad, *prior;
    int n, C;
    if (batch(lo, la, func, "logits", &logits, &labels, &n, &C) ||
        opt(go, func, "grad", NPY_FLOAT32, LADE_OUT, 2, n, C, &grad) ||
        !(prior = arr(po, func, "prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"grad", grad}, {"prior", prior}, {"logits", logits}, {"labels", labels}))
        return NULL;
    double loss;
    lade_status st;
    zero_grad(grad, zero);
    RUN(lade_lade_ce(&loss, OPT(grad, F32), scale, F32(logits), I64(labels), n, C, F32(prior)));
    return PyFloat_FromDouble(loss);
}

static PyObject *py_lader(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *la, *go, *po;
    float scale, lambda;
    int form, zero;
    if (!PyArg_ParseTuple(args, "sOOOfOfip", &func, &lo, &la, &go, &scale, &po, &lambda, &form, &zero)) return NULL;
    PyArrayObject *logits, *labels, *grad, *prior;
    int n, C;
    if (batch(lo, la, func, "logits", &logits, &labels, &n, &C) ||
        opt(go, func, "grad", NPY_FLOAT32, LADE_OUT, 2, n, C, &grad) ||
        !(prior = arr(po, func, "prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"grad", grad}, {"prior", prior}, {"logits", logits}, {"labels", labels}))
        return NULL;
    double loss;
    lade_status st;
    zero_grad(grad, zero);
    RUN(lade_lader(&loss, OPT(grad, F32), scale, F32(logits), I64(labels), n, C, F32(prior), lambda,
                   (lade_lader_form)form));
    return PyFloat_FromDouble(loss);
}

static PyObject *py_log_prior(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *oo;
    float tau, eps;
    if (!PyArg_ParseTuple(args, "sOOff", &func, &po, &oo, &tau, &eps)) return NULL;
    PyArrayObject *prior, *out;
    int C;
    if (!(prior = arr(po, func, "prior", NPY_FLOAT32, LADE_IN, 1, LADE_ANY, 0)) || dim(prior, 0, func, "prior", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"prior", prior}))
        return NULL;
    lade_status st;
    RUN(lade_log_prior(F32(out), F32(prior), C, tau, eps));
    Py_RETURN_NONE;
}

/* counts (C,) int64 in, float32 (C,) out, one float parameter */
static PyObject *counts_to_float(PyObject *args, int which) {
    const char *func;
    PyObject *co, *oo;
    double param;
    if (!PyArg_ParseTuple(args, "sOOd", &func, &co, &oo, &param)) return NULL;
    PyArrayObject *counts, *out;
    int C;
    if (!(counts = arr(co, func, "counts", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) || dim(counts, 0, func, "counts", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"counts", counts}))
        return NULL;
    lade_status st;
    if (which == 0) RUN(lade_ldam_margins(F32(out), I64(counts), C, (float)param));
    else if (which == 1) RUN(lade_effective_number_weights(F32(out), I64(counts), C, param));
    else RUN(lade_prior_from_counts(F32(out), I64(counts), C, param));
    Py_RETURN_NONE;
}
static PyObject *py_ldam_margins(PyObject *self, PyObject *args) { return counts_to_float(args, 0); }
static PyObject *py_effective_number_weights(PyObject *self, PyObject *args) { return counts_to_float(args, 1); }
static PyObject *py_prior_from_counts(PyObject *self, PyObject *args) { return counts_to_float(args, 2); }

/* ---- priors ----------------------------------------------------------------------------- */
static PyObject *py_lt_profile(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *oo;
    double img_max, ratio;
    int profile;
    if (!PyArg_ParseTuple(args, "sOddi", &func, &oo, &img_max, &ratio, &profile)) return NULL;
    PyArrayObject *out;
    int C;
    if (!(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0)) || dim(out, 0, func, "out", &C)) return NULL;
    lade_status st;
    RUN(lade_lt_profile(I64(out), C, img_max, ratio, (lade_profile)profile));
    Py_RETURN_NONE;
}

static PyObject *py_class_counts(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *oo;
    if (!PyArg_ParseTuple(args, "sOO", &func, &lo, &oo)) return NULL;
    PyArrayObject *labels, *out;
    int C;
    if (!(labels = arr(lo, func, "labels", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0)) || dim(out, 0, func, "out", &C) ||
        lade_py_disjoint(func, 1, {"out", out}, {"labels", labels}))
        return NULL;
    lade_status st;
    RUN(lade_class_counts(I64(out), I64(labels), (size_t)PyArray_DIM(labels, 0), C));
    Py_RETURN_NONE;
}

static PyObject *py_check_prior(PyObject *self, PyObject *args) {
    const char *func, *name;
    PyObject *po;
    if (!PyArg_ParseTuple(args, "sOs", &func, &po, &name)) return NULL;
    PyArrayObject *prior;
    int C;
    if (!(prior = arr(po, func, name, NPY_FLOAT32, LADE_IN, 1, LADE_ANY, 0)) || dim(prior, 0, func, name, &C)) return NULL;
    lade_status st;
    RUN(lade_check_prior(F32(prior), C, name));
    Py_RETURN_NONE;
}

/* ---- sampling ------------------------------------------------------------------------------ */
static PyObject *py_lt_subset(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *co, *oo;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "sOOOK", &func, &lo, &co, &oo, &seed)) return NULL;
    PyArrayObject *labels, *counts, *out;
    int C;
    if (!(labels = arr(lo, func, "labels", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) ||
        !(counts = arr(co, func, "counts", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) || dim(counts, 0, func, "counts", &C) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"labels", labels}, {"counts", counts}))
        return NULL;
    lade_status st;
    RUN(lade_lt_subset(I64(out), (size_t)PyArray_DIM(out, 0), I64(labels), (size_t)PyArray_DIM(labels, 0), C,
                       I64(counts), seed));
    Py_RETURN_NONE;
}

static PyObject *py_sample_instance(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *oo;
    unsigned long long seed, epoch;
    if (!PyArg_ParseTuple(args, "sOKK", &func, &oo, &seed, &epoch)) return NULL;
    PyArrayObject *out;
    if (!(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0))) return NULL;
    lade_status st;
    RUN(lade_sample_instance(I64(out), (size_t)PyArray_DIM(out, 0), seed, epoch));
    Py_RETURN_NONE;
}

static PyObject *py_class_aware_length(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo;
    int C;
    if (!PyArg_ParseTuple(args, "sOi", &func, &lo, &C)) return NULL;
    PyArrayObject *labels;
    if (!(labels = arr(lo, func, "labels", NPY_INT64, LADE_IN, 1, LADE_ANY, 0))) return NULL;
    size_t len;
    lade_status st;
    RUN(lade_class_aware_length(&len, I64(labels), (size_t)PyArray_DIM(labels, 0), C));
    return PyLong_FromSize_t(len);
}

static PyObject *py_sample_class_aware(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *oo;
    int C, per_class;
    unsigned long long seed, epoch;
    if (!PyArg_ParseTuple(args, "sOiOiKK", &func, &lo, &C, &oo, &per_class, &seed, &epoch)) return NULL;
    PyArrayObject *labels, *out;
    if (!(labels = arr(lo, func, "labels", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"labels", labels}))
        return NULL;
    lade_status st;
    RUN(lade_sample_class_aware(I64(out), (size_t)PyArray_DIM(out, 0), I64(labels), (size_t)PyArray_DIM(labels, 0),
                                C, per_class, seed, epoch));
    Py_RETURN_NONE;
}

static PyObject *py_sample_by_class(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *po, *oo;
    unsigned long long seed, epoch;
    if (!PyArg_ParseTuple(args, "sOOOKK", &func, &lo, &po, &oo, &seed, &epoch)) return NULL;
    PyArrayObject *labels, *prob, *out;
    int C;
    if (!(labels = arr(lo, func, "labels", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) ||
        !(prob = arr(po, func, "class_prob", NPY_FLOAT64, LADE_IN, 1, LADE_ANY, 0)) ||
        dim(prob, 0, func, "class_prob", &C) || !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"labels", labels}, {"class_prob", prob}))
        return NULL;
    lade_status st;
    RUN(lade_sample_by_class(I64(out), (size_t)PyArray_DIM(out, 0), I64(labels), (size_t)PyArray_DIM(labels, 0), C,
                             F64(prob), seed, epoch));
    Py_RETURN_NONE;
}

static PyObject *py_class_prob(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *oo;
    double q;
    unsigned long long epoch, total;
    int progressive;
    if (!PyArg_ParseTuple(args, "sOOpdKK", &func, &co, &oo, &progressive, &q, &epoch, &total)) return NULL;
    PyArrayObject *counts, *out;
    int C;
    if (!(counts = arr(co, func, "counts", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) || dim(counts, 0, func, "counts", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT64, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"counts", counts}))
        return NULL;
    lade_status st;
    if (progressive) RUN(lade_class_prob_progressive(F64(out), I64(counts), C, epoch, total));
    else RUN(lade_class_prob_power(F64(out), I64(counts), C, q));
    Py_RETURN_NONE;
}

static PyObject *py_shift_counts(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *oo;
    double img_max, ratio;
    int direction;
    if (!PyArg_ParseTuple(args, "sOOddi", &func, &po, &oo, &img_max, &ratio, &direction)) return NULL;
    PyArrayObject *prior, *out;
    int C;
    if (!(prior = arr(po, func, "train_prior", NPY_FLOAT32, LADE_IN, 1, LADE_ANY, 0)) ||
        dim(prior, 0, func, "train_prior", &C) || !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"train_prior", prior}))
        return NULL;
    lade_status st;
    RUN(lade_shift_counts(I64(out), F32(prior), C, img_max, ratio, (lade_shift_direction)direction));
    Py_RETURN_NONE;
}

static PyObject *py_first_k_per_class(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *co, *oo;
    if (!PyArg_ParseTuple(args, "sOOO", &func, &lo, &co, &oo)) return NULL;
    PyArrayObject *labels, *counts, *out;
    int C;
    if (!(labels = arr(lo, func, "labels", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) ||
        !(counts = arr(co, func, "counts", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) || dim(counts, 0, func, "counts", &C) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, LADE_ANY, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"labels", labels}, {"counts", counts}))
        return NULL;
    lade_status st;
    RUN(lade_first_k_per_class(I64(out), (size_t)PyArray_DIM(out, 0), I64(labels), (size_t)PyArray_DIM(labels, 0), C,
                               I64(counts)));
    Py_RETURN_NONE;
}

static PyObject *py_dirichlet(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *ao, *oo;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "sOOK", &func, &ao, &oo, &seed)) return NULL;
    PyArrayObject *alpha, *out;
    int C, m;
    if (!(alpha = arr(ao, func, "alpha", NPY_FLOAT64, LADE_IN, 1, LADE_ANY, 0)) || dim(alpha, 0, func, "alpha", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 2, LADE_ANY, C)) || dim(out, 0, func, "out", &m) ||
        lade_py_disjoint(func, 1, {"out", out}, {"alpha", alpha}))
        return NULL;
    lade_status st;
    RUN(lade_dirichlet(F32(out), m, C, F64(alpha), seed));
    Py_RETURN_NONE;
}

/* ---- post-hoc ------------------------------------------------------------------------------ */
static PyObject *py_adjust_logits(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *oo, *so, *to;
    float tau;
    if (!PyArg_ParseTuple(args, "sOOOfO", &func, &lo, &oo, &so, &tau, &to)) return NULL;
    PyArrayObject *logits, *out, *sp, *tp;
    int n, C;
    if (!(logits = arr(lo, func, "logits", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(logits, 0, func, "logits", &n) || dim(logits, 1, func, "logits", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 2, n, C)) ||
        opt(so, func, "source_prior", NPY_FLOAT32, LADE_IN, 1, C, 0, &sp) ||
        opt(to, func, "target_prior", NPY_FLOAT32, LADE_IN, 1, C, 0, &tp) ||
        lade_py_disjoint_or_same(func, 1, {"out", out}, {"logits", logits}, {"source_prior", sp}, {"target_prior", tp}))
        return NULL;
    lade_status st;
    RUN(lade_adjust_logits(F32(out), F32(logits), n, C, OPT(sp, F32), tau, OPT(tp, F32)));
    Py_RETURN_NONE;
}

static PyObject *py_softmax(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *oo, *bo;
    double t;
    if (!PyArg_ParseTuple(args, "sOOdO", &func, &lo, &oo, &t, &bo)) return NULL;
    PyArrayObject *logits, *out, *bias;
    int n, C;
    if (!(logits = arr(lo, func, "logits", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(logits, 0, func, "logits", &n) || dim(logits, 1, func, "logits", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 2, n, C)) ||
        opt(bo, func, "bias", NPY_FLOAT64, LADE_IN, 1, C, 0, &bias) ||
        lade_py_disjoint_or_same(func, 1, {"out", out}, {"logits", logits}, {"bias", bias}))
        return NULL;
    lade_status st;
    RUN(lade_softmax(F32(out), F32(logits), n, C, t, OPT(bias, F64)));
    Py_RETURN_NONE;
}

static PyObject *py_tau_normalize(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *wo, *oo;
    float tau;
    if (!PyArg_ParseTuple(args, "sOOf", &func, &wo, &oo, &tau)) return NULL;
    PyArrayObject *w, *out;
    int r, c;
    if (!(w = arr(wo, func, "weights", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) || dim(w, 0, func, "weights", &r) ||
        dim(w, 1, func, "weights", &c) || !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 2, r, c)) ||
        lade_py_disjoint_or_same(func, 1, {"out", out}, {"weights", w}))
        return NULL;
    lade_status st;
    RUN(lade_tau_normalize(F32(out), F32(w), r, c, tau));
    Py_RETURN_NONE;
}

static PyObject *py_fit_temperature(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *lo, *la, *bo;
    int max_iter;
    if (!PyArg_ParseTuple(args, "sOOOi", &func, &lo, &la, &bo, &max_iter)) return NULL;
    PyArrayObject *logits, *labels, *bias;
    int n, C;
    if (batch(lo, la, func, "logits", &logits, &labels, &n, &C) ||
        opt(bo, func, "bias", NPY_FLOAT64, LADE_OUT, 1, C, 0, &bias) ||
        lade_py_disjoint(func, 1, {"bias", bias}, {"logits", logits}, {"labels", labels}))
        return NULL;
    double t, nll;
    lade_status st;
    RUN(lade_fit_temperature(&t, OPT(bias, F64), &nll, F32(logits), I64(labels), n, C, max_iter));
    return Py_BuildValue("dd", t, nll);
}

/* ---- metrics ------------------------------------------------------------------------------- */
static PyObject *py_topk_accuracy(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *so, *la, *co;
    int k;
    if (!PyArg_ParseTuple(args, "sOOiO", &func, &so, &la, &k, &co)) return NULL;
    PyArrayObject *scores, *labels, *correct;
    int n, C;
    if (batch(so, la, func, "scores", &scores, &labels, &n, &C) ||
        opt(co, func, "correct", NPY_UINT8, LADE_OUT, 1, n, 0, &correct) ||
        lade_py_disjoint(func, 1, {"correct", correct}, {"scores", scores}, {"labels", labels}))
        return NULL;
    double acc;
    lade_status st;
    RUN(lade_topk_accuracy(&acc, OPT(correct, U8), F32(scores), I64(labels), n, C, k));
    return PyFloat_FromDouble(acc);
}

static PyObject *py_argmax(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *so, *oo;
    if (!PyArg_ParseTuple(args, "sOO", &func, &so, &oo)) return NULL;
    PyArrayObject *scores, *out;
    int n, C;
    if (!(scores = arr(so, func, "scores", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(scores, 0, func, "scores", &n) || dim(scores, 1, func, "scores", &C) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 1, n, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"scores", scores}))
        return NULL;
    lade_status st;
    RUN(lade_argmax(I64(out), F32(scores), n, C));
    Py_RETURN_NONE;
}

static PyObject *py_confusion_matrix(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *la, *oo;
    if (!PyArg_ParseTuple(args, "sOOO", &func, &po, &la, &oo)) return NULL;
    PyArrayObject *pred, *labels, *out;
    int C;
    if (!(pred = arr(po, func, "predictions", NPY_INT64, LADE_IN, 1, LADE_ANY, 0)) ||
        !(labels = arr(la, func, "labels", NPY_INT64, LADE_IN, 1, PyArray_DIM(pred, 0), 0)) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 2, LADE_ANY, LADE_ANY)) || dim(out, 0, func, "out", &C) ||
        !(out = arr(oo, func, "out", NPY_INT64, LADE_OUT, 2, C, C)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"predictions", pred}, {"labels", labels}))
        return NULL;
    lade_status st;
    RUN(lade_confusion_matrix(I64(out), I64(pred), I64(labels), (size_t)PyArray_DIM(pred, 0), C));
    Py_RETURN_NONE;
}

static PyObject *py_per_class_accuracy(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *oo;
    if (!PyArg_ParseTuple(args, "sOO", &func, &co, &oo)) return NULL;
    PyArrayObject *conf, *out;
    int C;
    if (!(conf = arr(co, func, "confusion", NPY_INT64, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(conf, 0, func, "confusion", &C) || !(conf = arr(co, func, "confusion", NPY_INT64, LADE_IN, 2, C, C)) ||
        !(out = arr(oo, func, "out", NPY_FLOAT64, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"confusion", conf}))
        return NULL;
    lade_status st;
    RUN(lade_per_class_accuracy(F64(out), I64(conf), C));
    Py_RETURN_NONE;
}

static PyObject *py_shot_accuracy(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *ao, *co;
    long long many, few;
    if (!PyArg_ParseTuple(args, "sOOLL", &func, &ao, &co, &many, &few)) return NULL;
    PyArrayObject *acc, *counts;
    int C;
    if (!(acc = arr(ao, func, "per_class_accuracy", NPY_FLOAT64, LADE_IN, 1, LADE_ANY, 0)) ||
        dim(acc, 0, func, "per_class_accuracy", &C) ||
        !(counts = arr(co, func, "train_counts", NPY_INT64, LADE_IN, 1, C, 0)))
        return NULL;
    double out[3];
    lade_status st;
    RUN(lade_shot_accuracy(out, F64(acc), I64(counts), C, many, few));
    return Py_BuildValue("ddd", out[0], out[1], out[2]);
}

static PyObject *py_reliability(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *la, *co, *ao, *no;
    int nbins, mode;
    if (!PyArg_ParseTuple(args, "sOOiiOOO", &func, &po, &la, &nbins, &mode, &co, &ao, &no)) return NULL;
    PyArrayObject *probs, *labels, *conf, *acc, *count;
    int n, C;
    if (nbins < 1 || nbins > 100000) return lade_py_value_error(func, "n_bins", "must be in [1, 100000], got %d", nbins);
    if (batch(po, la, func, "probs", &probs, &labels, &n, &C) ||
        !(conf = arr(co, func, "confidence", NPY_FLOAT64, LADE_OUT, 1, nbins + 1, 0)) ||
        !(acc = arr(ao, func, "accuracy", NPY_FLOAT64, LADE_OUT, 1, nbins + 1, 0)) ||
        !(count = arr(no, func, "count", NPY_INT64, LADE_OUT, 1, nbins + 1, 0)) ||
        lade_py_disjoint(func, 3, {"confidence", conf}, {"accuracy", acc}, {"count", count}, {"probs", probs},
                         {"labels", labels}))
        return NULL;
    double ece;
    lade_status st;
    RUN(lade_reliability(&ece, F64(conf), F64(acc), I64(count), F32(probs), I64(labels), n, C, nbins,
                         (lade_bin_mode)mode));
    return PyFloat_FromDouble(ece);
}

static PyObject *py_nll_brier(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *la;
    if (!PyArg_ParseTuple(args, "sOO", &func, &po, &la)) return NULL;
    PyArrayObject *probs, *labels;
    int n, C;
    if (batch(po, la, func, "probs", &probs, &labels, &n, &C)) return NULL;
    double nll, brier;
    lade_status st;
    RUN(lade_nll_brier(&nll, &brier, F32(probs), I64(labels), n, C));
    return Py_BuildValue("dd", nll, brier);
}

/* ---- prior shift ------------------------------------------------------------------------------ */
static PyObject *py_em_prior(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *so, *oo, *wo;
    double pseudo, tol;
    int max_iter;
    if (!PyArg_ParseTuple(args, "sOOOOddi", &func, &po, &so, &oo, &wo, &pseudo, &tol, &max_iter)) return NULL;
    PyArrayObject *probs, *sp, *out, *w;
    int n, C;
    if (!(probs = arr(po, func, "probs", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(probs, 0, func, "probs", &n) || dim(probs, 1, func, "probs", &C) ||
        !(sp = arr(so, func, "source_prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        opt(wo, func, "row_weight", NPY_FLOAT64, LADE_IN, 1, n, 0, &w) ||
        lade_py_disjoint(func, 1, {"out", out}, {"probs", probs}, {"source_prior", sp}, {"row_weight", w}))
        return NULL;
    int iters, conv;
    double ll;
    lade_status st;
    RUN(lade_em_prior_map(F32(out), &iters, &conv, &ll, F32(probs), OPT(w, F64), n, C, F32(sp), pseudo, tol,
                          max_iter));
    return Py_BuildValue("iOd", iters, conv ? Py_True : Py_False, ll);
}

static PyObject *py_mean_posterior(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *oo;
    if (!PyArg_ParseTuple(args, "sOO", &func, &po, &oo)) return NULL;
    PyArrayObject *probs, *out;
    int n, C;
    if (!(probs = arr(po, func, "probs", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(probs, 0, func, "probs", &n) || dim(probs, 1, func, "probs", &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"probs", probs}))
        return NULL;
    lade_status st;
    RUN(lade_mean_posterior(F32(out), F32(probs), n, C));
    Py_RETURN_NONE;
}

static PyObject *py_reweight_probs(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *fo, *to, *oo;
    if (!PyArg_ParseTuple(args, "sOOOO", &func, &po, &fo, &to, &oo)) return NULL;
    PyArrayObject *probs, *from, *to_p, *out;
    int n, C;
    if (!(probs = arr(po, func, "probs", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(probs, 0, func, "probs", &n) || dim(probs, 1, func, "probs", &C) ||
        !(from = arr(fo, func, "from_prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(to_p = arr(to, func, "to_prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 2, n, C)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"probs", probs}, {"from_prior", from}, {"to_prior", to_p}))
        return NULL;
    lade_status st;
    RUN(lade_reweight_probs(F32(out), F32(probs), n, C, F32(from), F32(to_p)));
    Py_RETURN_NONE;
}

/* calib (m, C), calib_labels (m,), target (n, C), source_prior (C,) */
static int bbse_args(PyObject *co, PyObject *la, PyObject *to, PyObject *so, const char *func, PyArrayObject **calib,
                     PyArrayObject **labels, PyArrayObject **target, PyArrayObject **sp, int *m, int *n, int *C) {
    if (batch(co, la, func, "calib_scores", calib, labels, m, C) ||
        !(*target = arr(to, func, "target_scores", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, *C)) ||
        dim(*target, 0, func, "target_scores", n) ||
        !(*sp = arr(so, func, "source_prior", NPY_FLOAT32, LADE_IN, 1, *C, 0)))
        return -1;
    return 0;
}

static PyObject *py_bbse_prior(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *la, *to, *so, *oo;
    int soft;
    double ridge, cond_limit;
    if (!PyArg_ParseTuple(args, "sOOOOOpdd", &func, &co, &la, &to, &so, &oo, &soft, &ridge, &cond_limit)) return NULL;
    PyArrayObject *calib, *labels, *target, *sp, *out;
    int m, n, C;
    if (bbse_args(co, la, to, so, func, &calib, &labels, &target, &sp, &m, &n, &C) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"calib_scores", calib}, {"labels", labels},
                         {"target_scores", target}, {"source_prior", sp}))
        return NULL;
    double cond;
    int fell_back;
    lade_status st;
    RUN(lade_bbse_prior(F32(out), &cond, &fell_back, F32(calib), I64(labels), m, F32(target), n, C, F32(sp), soft,
                        ridge, cond_limit));
    return Py_BuildValue("dO", cond, fell_back ? Py_True : Py_False);
}

static PyObject *py_confusion_condition(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *la;
    int soft;
    if (!PyArg_ParseTuple(args, "sOOp", &func, &co, &la, &soft)) return NULL;
    PyArrayObject *calib, *labels;
    int m, C;
    if (batch(co, la, func, "calib_scores", &calib, &labels, &m, &C)) return NULL;
    double cond;
    lade_status st;
    RUN(lade_confusion_condition(&cond, F32(calib), I64(labels), m, C, soft));
    return PyFloat_FromDouble(cond);
}

static PyObject *py_prediction_shift_chi2(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *la, *to, *so;
    if (!PyArg_ParseTuple(args, "sOOOO", &func, &co, &la, &to, &so)) return NULL;
    PyArrayObject *calib, *labels, *target, *sp;
    int m, n, C;
    if (bbse_args(co, la, to, so, func, &calib, &labels, &target, &sp, &m, &n, &C)) return NULL;
    double stat;
    int dof;
    lade_status st;
    RUN(lade_prediction_shift_chi2(&stat, &dof, F32(calib), I64(labels), m, F32(target), n, C, F32(sp)));
    return Py_BuildValue("di", stat, dof);
}

static PyObject *py_em_bootstrap(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *so, *oo;
    double pseudo, tol;
    int max_iter;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "sOOOddiK", &func, &po, &so, &oo, &pseudo, &tol, &max_iter, &seed)) return NULL;
    PyArrayObject *probs, *sp, *out;
    int n, C, B;
    if (!(probs = arr(po, func, "probs", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(probs, 0, func, "probs", &n) || dim(probs, 1, func, "probs", &C) ||
        !(sp = arr(so, func, "source_prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(out = arr(oo, func, "replicates", NPY_FLOAT32, LADE_OUT, 2, LADE_ANY, C)) ||
        dim(out, 0, func, "replicates", &B) ||
        lade_py_disjoint(func, 1, {"replicates", out}, {"probs", probs}, {"source_prior", sp}))
        return NULL;
    lade_status st;
    RUN(lade_em_bootstrap(F32(out), B, F32(probs), n, C, F32(sp), pseudo, tol, max_iter, seed));
    Py_RETURN_NONE;
}

static PyObject *py_bbse_bootstrap(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *la, *to, *so, *oo;
    int soft;
    double ridge;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "sOOOOOpdK", &func, &co, &la, &to, &so, &oo, &soft, &ridge, &seed)) return NULL;
    PyArrayObject *calib, *labels, *target, *sp, *out;
    int m, n, C, B;
    if (bbse_args(co, la, to, so, func, &calib, &labels, &target, &sp, &m, &n, &C) ||
        !(out = arr(oo, func, "replicates", NPY_FLOAT32, LADE_OUT, 2, LADE_ANY, C)) ||
        dim(out, 0, func, "replicates", &B) ||
        lade_py_disjoint(func, 1, {"replicates", out}, {"calib_scores", calib}, {"labels", labels},
                         {"target_scores", target}, {"source_prior", sp}))
        return NULL;
    lade_status st;
    RUN(lade_bbse_bootstrap(F32(out), B, F32(calib), I64(labels), m, F32(target), n, C, F32(sp), soft, ridge, seed));
    Py_RETURN_NONE;
}

static PyObject *py_bootstrap_interval(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *ro, *lo, *ho;
    double level;
    if (!PyArg_ParseTuple(args, "sOOOd", &func, &ro, &lo, &ho, &level)) return NULL;
    PyArrayObject *reps, *low, *high;
    int B, C;
    if (!(reps = arr(ro, func, "replicates", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(reps, 0, func, "replicates", &B) || dim(reps, 1, func, "replicates", &C) ||
        !(low = arr(lo, func, "lo", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        !(high = arr(ho, func, "hi", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 2, {"lo", low}, {"hi", high}, {"replicates", reps}))
        return NULL;
    lade_status st;
    RUN(lade_bootstrap_interval(F32(low), F32(high), F32(reps), B, C, level));
    Py_RETURN_NONE;
}

static PyObject *py_em_prior_labelled(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *so, *lo, *oo, *qo;
    int per_class, max_iter;
    double pseudo, tol;
    if (!PyArg_ParseTuple(args, "sOOOpOOddi", &func, &po, &so, &lo, &per_class, &oo, &qo, &pseudo, &tol, &max_iter))
        return NULL;
    PyArrayObject *probs, *sp, *counts, *out, *pool;
    int n, C;
    if (!(probs = arr(po, func, "probs", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(probs, 0, func, "probs", &n) || dim(probs, 1, func, "probs", &C) ||
        !(sp = arr(so, func, "source_prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(counts = arr(lo, func, "labelled_counts", NPY_INT64, LADE_IN, 1, C, 0)) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        !(pool = arr(qo, func, "pool_prior", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 2, {"out", out}, {"pool_prior", pool}, {"probs", probs}, {"source_prior", sp},
                         {"labelled_counts", counts}))
        return NULL;
    int iters, conv;
    lade_status st;
    RUN(lade_em_prior_labelled(F32(out), F32(pool), &iters, &conv, F32(probs), n, C, F32(sp), I64(counts), per_class,
                               pseudo, tol, max_iter));
    return Py_BuildValue("iO", iters, conv ? Py_True : Py_False);
}

static PyObject *py_em_covariance_trace(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *po, *so, *eo;
    if (!PyArg_ParseTuple(args, "sOOO", &func, &po, &so, &eo)) return NULL;
    PyArrayObject *probs, *sp, *est;
    int n, C;
    if (!(probs = arr(po, func, "probs", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(probs, 0, func, "probs", &n) || dim(probs, 1, func, "probs", &C) ||
        !(sp = arr(so, func, "source_prior", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(est = arr(eo, func, "estimate", NPY_FLOAT32, LADE_IN, 1, C, 0)))
        return NULL;
    double trace;
    lade_status st;
    RUN(lade_em_covariance_trace(&trace, F32(probs), n, C, F32(sp), F32(est)));
    return PyFloat_FromDouble(trace);
}

static PyObject *py_bbse_covariance_trace(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *co, *la, *to, *eo;
    int soft;
    if (!PyArg_ParseTuple(args, "sOOOOp", &func, &co, &la, &to, &eo, &soft)) return NULL;
    PyArrayObject *calib, *labels, *target, *est;
    int m, n, C;
    if (bbse_args(co, la, to, eo, func, &calib, &labels, &target, &est, &m, &n, &C)) return NULL;
    double trace;
    lade_status st;
    RUN(lade_bbse_covariance_trace(&trace, F32(calib), I64(labels), m, F32(target), n, C, F32(est), soft));
    return PyFloat_FromDouble(trace);
}

static PyObject *py_shrink_prior(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *eo, *ao, *oo;
    double trace;
    if (!PyArg_ParseTuple(args, "sOOdO", &func, &eo, &ao, &trace, &oo)) return NULL;
    PyArrayObject *est, *anchor, *out;
    int C;
    if (!(est = arr(eo, func, "estimate", NPY_FLOAT32, LADE_IN, 1, LADE_ANY, 0)) || dim(est, 0, func, "estimate", &C) ||
        !(anchor = arr(ao, func, "anchor", NPY_FLOAT32, LADE_IN, 1, C, 0)) ||
        !(out = arr(oo, func, "out", NPY_FLOAT32, LADE_OUT, 1, C, 0)) ||
        lade_py_disjoint(func, 1, {"out", out}, {"estimate", est}, {"anchor", anchor}))
        return NULL;
    double weight;
    lade_status st;
    RUN(lade_shrink_prior(F32(out), &weight, F32(est), F32(anchor), C, trace));
    return PyFloat_FromDouble(weight);
}

static PyObject *py_replicate_variance(PyObject *self, PyObject *args) {
    const char *func;
    PyObject *ro;
    if (!PyArg_ParseTuple(args, "sO", &func, &ro)) return NULL;
    PyArrayObject *reps;
    int B, C;
    if (!(reps = arr(ro, func, "replicates", NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY)) ||
        dim(reps, 0, func, "replicates", &B) || dim(reps, 1, func, "replicates", &C))
        return NULL;
    double trace;
    lade_status st;
    RUN(lade_replicate_variance(&trace, F32(reps), B, C));
    return PyFloat_FromDouble(trace);
}

static PyObject *py_chi2_sf(PyObject *self, PyObject *args) {
    const char *func;
    double x, dof, p;
    if (!PyArg_ParseTuple(args, "sdd", &func, &x, &dof)) return NULL;
    lade_status st;
    RUN(lade_chi2_sf(&p, x, dof));
    return PyFloat_FromDouble(p);
}

/* Finite float32 (n, C) array check, naming the caller's argument. */
static PyObject *py_check_finite(PyObject *self, PyObject *args) {
    const char *func, *name;
    PyObject *ao;
    if (!PyArg_ParseTuple(args, "sOs", &func, &ao, &name)) return NULL;
    PyArrayObject *a;
    if (!(a = arr(ao, func, name, NPY_FLOAT32, LADE_IN, 2, LADE_ANY, LADE_ANY))) return NULL;
    lade_status st;
    RUN(lt_check_logits(F32(a), (size_t)PyArray_DIM(a, 0), (int)PyArray_DIM(a, 1), name));
    Py_RETURN_NONE;
}

#define M(name, fn) {name, fn, METH_VARARGS, NULL}
static PyMethodDef methods[] = {
    M("lt_cross_entropy", py_cross_entropy),
    M("lt_lade_ce", py_lade_ce),
    M("lt_lader", py_lader),
    M("lt_log_prior", py_log_prior),
    M("lt_ldam_margins", py_ldam_margins),
    M("lt_effective_number_weights", py_effective_number_weights),
    M("lt_prior_from_counts", py_prior_from_counts),
    M("lt_profile", py_lt_profile),
    M("lt_class_counts", py_class_counts),
    M("lt_check_prior", py_check_prior),
    M("lt_subset", py_lt_subset),
    M("lt_sample_instance", py_sample_instance),
    M("lt_class_aware_length", py_class_aware_length),
    M("lt_sample_class_aware", py_sample_class_aware),
    M("lt_sample_by_class", py_sample_by_class),
    M("lt_class_prob", py_class_prob),
    M("lt_shift_counts", py_shift_counts),
    M("lt_first_k_per_class", py_first_k_per_class),
    M("lt_dirichlet", py_dirichlet),
    M("lt_adjust_logits", py_adjust_logits),
    M("lt_softmax", py_softmax),
    M("lt_tau_normalize", py_tau_normalize),
    M("lt_fit_temperature", py_fit_temperature),
    M("lt_topk_accuracy", py_topk_accuracy),
    M("lt_argmax", py_argmax),
    M("lt_confusion_matrix", py_confusion_matrix),
    M("lt_per_class_accuracy", py_per_class_accuracy),
    M("lt_shot_accuracy", py_shot_accuracy),
    M("lt_reliability", py_reliability),
    M("lt_nll_brier", py_nll_brier),
    M("lt_em_prior", py_em_prior),
    M("lt_reweight_probs", py_reweight_probs),
    M("lt_bbse_prior", py_bbse_prior),
    M("lt_mean_posterior", py_mean_posterior),
    M("lt_confusion_condition", py_confusion_condition),
    M("lt_prediction_shift_chi2", py_prediction_shift_chi2),
    M("lt_em_bootstrap", py_em_bootstrap),
    M("lt_bbse_bootstrap", py_bbse_bootstrap),
    M("lt_bootstrap_interval", py_bootstrap_interval),
    M("lt_chi2_sf", py_chi2_sf),
    M("lt_em_prior_labelled", py_em_prior_labelled),
    M("lt_em_covariance_trace", py_em_covariance_trace),
    M("lt_bbse_covariance_trace", py_bbse_covariance_trace),
    M("lt_shrink_prior", py_shrink_prior),
    M("lt_replicate_variance", py_replicate_variance),
    M("lt_check_finite", py_check_finite),
    {NULL, NULL, 0, NULL},
};

int lade_register_ltmath(PyObject *module) { return PyModule_AddFunctions(module, methods); }
