/* bind_ltmath.c - Python bindings for lade_ltmath.h: losses, priors, sampling, post-hoc
 * adjustment, metrics, prior shift and the decoupled second stage. Each function is declared in
 * bindings.def (section ltmath); here are the core calls longer than an expression. */
#include "bind.h"

#include <string.h>

#include "python/gen/ltmath_args.h"

/* losses: grad is overwritten unless `accumulate` */
static void zero_grad(float *grad, npy_intp size, int accumulate) {
    if (!accumulate) memset(grad, 0, sizeof(float) * (size_t)size);
}

static lade_status prior_from_labels(const prior_from_labels_args *a) {
    lade_status st = lade_class_counts(a->out, a->labels, (size_t)a->m, a->C);
    return st ? st : lade_prior_from_counts(a->prior, a->out, a->C, a->eps);
}

static lade_status check_prior(const float *prior, int ndim, size_t size, const char *arg) {
    if (ndim != 1) return lade_fail(LADE_EINVAL, "argument '%s' must be 1-dimensional, got %d dimensions", arg, ndim);
    return lade_check_prior(prior, (int)size, arg);
}

/* *k = the sum of counts: the length of a subset drawn by class */
static int count_sum(lade_call *c, const int64_t *counts, npy_intp classes, npy_intp *k) {
    *k = 0;
    for (int i = 0; i < classes; i++) {
        if (counts[i] < 0)
            return lade_py_value_error(c->func, "counts", "must be >= 0, got counts[%d] = %lld", i,
                                       (long long)counts[i]), -1;
        *k += counts[i];
    }
    return 0;
}

static lade_status class_aware_length(double *ret, const int64_t *labels, npy_intp m, int classes) {
    size_t len;
    lade_status st = lade_class_aware_length(&len, labels, (size_t)m, classes);
    ret[0] = (double)len;
    return st;
}

/* ---- prior shift: the ints the core gives go to ret, where the returns read them ---------------- */
static lade_status em_prior(const em_prior_args *a, double *ret) {
    int iterations, converged;
    lade_status st = (a->accelerate ? lade_em_prior_squarem : lade_em_prior_map)(
        a->out, &iterations, &converged, &ret[2], a->probs, a->row_weight, a->n, a->C, a->source_prior,
        a->pseudo_count, a->tol, a->max_iter);
    ret[0] = iterations, ret[1] = converged;
    return st;
}

static lade_status tilted_prior(const tilt_prior_args *a, double *ret) {
    int iterations, converged;
    lade_status st = lade_tilt_prior(a->out, &ret[0], &ret[1], &iterations, &converged, a->probs, a->n, a->C,
                                     a->source_prior, a->tilt_prior, a->tol, a->max_iter);
    ret[2] = iterations, ret[3] = converged;
    return st;
}

static lade_status em_prior_eb(const em_prior_eb_args *a, double *ret) {
    int iterations, converged;
    lade_status st = lade_em_prior_eb(a->out, &ret[0], &iterations, &converged, &ret[3], a->probs, a->n, a->C,
                                      a->source_prior, a->tol, a->max_iter);
    ret[1] = iterations, ret[2] = converged;
    return st;
}

static lade_status select_prior(const select_prior_args *a, double *ret) {
    int kind, support;
    lade_status st = lade_select_prior(a->out, &kind, &support, &ret[2], &ret[3], a->probs, a->n, a->C,
                                       a->source_prior, a->tilt_prior, a->penalty, a->noise, a->tol, a->max_iter);
    ret[0] = kind, ret[1] = support;
    return st;
}

static lade_status bbse_prior(const bbse_prior_args *a, double *ret) {
    int fell_back;
    lade_status st = lade_bbse_prior(a->out, &ret[0], &fell_back, a->calib_scores, a->labels, a->m, a->target_scores,
                                     a->n, a->C, a->source_prior, a->soft, a->ridge, a->cond_limit);
    ret[1] = fell_back;
    return st;
}

static lade_status prediction_shift_chi2(const prediction_shift_chi2_args *a, double *ret) {
    int dof;
    lade_status st = lade_prediction_shift_chi2(&ret[0], &dof, a->calib_scores, a->labels, a->m, a->target_scores,
                                                a->n, a->C, a->source_prior);
    ret[1] = dof;
    return st;
}

static lade_status em_prior_labelled(const em_prior_labelled_args *a, double *ret) {
    int iterations, converged;
    lade_status st = lade_em_prior_labelled(a->out, a->pool_prior, &iterations, &converged, a->probs, a->n, a->C,
                                            a->source_prior, a->labelled_counts, a->per_class, a->pseudo_count,
                                            a->tol, a->max_iter);
    ret[0] = iterations, ret[1] = converged;
    return st;
}

static int calib_pair(lade_call *c, int one_missing) {
    if (one_missing)
        PyErr_Format(PyExc_ValueError, "%s: arguments 'calib_logits' and 'calib_labels' must be given together",
                     c->func);
    return one_missing ? -1 : 0;
}

/* ---- decoupled second stage: the SGD arguments (FIT_ARGS) over cRT's recipe ---------------------- */
#define FIT_CONFIG(a) fit_config((a)->epochs, (a)->batch_size, (a)->lr, (a)->momentum, (a)->weight_decay, \
                                 (a)->sampling, (a)->seed)
static lade_classifier_config fit_config(int epochs, int batch_size, double lr, double momentum, double weight_decay,
                                         int sampling, uint64_t seed) {
    lade_classifier_config cfg = lade_classifier_config_default();
    cfg.epochs = epochs, cfg.batch_size = batch_size, cfg.lr = (float)lr, cfg.momentum = (float)momentum;
    cfg.weight_decay = (float)weight_decay, cfg.sampling = (lade_classifier_sampling)sampling, cfg.seed = seed;
    return cfg;
}

static lade_status classifier_fit(const crt_fit_args *a, double *ret) {
    lade_classifier_config cfg = FIT_CONFIG(a);
    cfg.loss = (lade_classifier_loss)a->loss, cfg.prior = a->prior;
    cfg.alpha = (float)a->alpha, cfg.remine_lambda = (float)a->remine_lambda;
    return lade_classifier_fit(a->weight, a->bias, &ret[0], a->features, a->labels, a->n, a->d, a->C, &cfg);
}

static lade_status lws_fit(const lws_fit_args *a, double *ret) {
    lade_classifier_config cfg = FIT_CONFIG(a);
    return lade_lws_fit(a->scales, &ret[0], a->features, a->labels, a->n, a->d, a->C, a->weight, a->bias, &cfg);
}

static lade_status tau_select(const tau_select_args *a, double *ret) {
    int best = 0;
    lade_status st = lade_tau_select(a->out, &best, a->taus, a->t, a->features, a->labels, a->n, a->d, a->C,
                                     a->weight, a->bias);
    ret[0] = best;
    return st;
}

#include "python/gen/ltmath_table.h"

int lade_register_ltmath(PyObject *module) { return lade_add_bindings(module, ltmath_bindings); }
