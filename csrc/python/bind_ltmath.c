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

#include "python/gen/ltmath_table.h"
