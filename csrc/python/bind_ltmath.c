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
            return PyErr_Format(PyExc_ValueError, "%s: argument 'counts' must be >= 0, got counts[%d] = %lld", c->func,
                                i, (long long)counts[i]), -1;
        *k += counts[i];
    }
    return 0;
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

#include "python/gen/ltmath_table.h"
