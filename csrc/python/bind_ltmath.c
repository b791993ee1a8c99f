/* bind_ltmath.c - Python bindings for lade_ltmath.h: losses, priors, sampling,
 * post-hoc adjustment, metrics and prior shift. Outputs are allocated here. */
#include "bind.h"
#include "../ltmath_internal.h"

#define U8T NPY_UINT8
#define NC(c) DIM(c, 'n'), DIM(c, 'C')
#define SIZE(c, letter) ((size_t)DIM(c, letter))

/* ---- losses --------------------------------------------------------------------------- */
/* The Python losses overwrite grad unless told to accumulate into it. */
static void zero_grad(lade_call *c) {
    PyArrayObject *g = lade_array(c, "grad");
    if (!lade_int(c, "accumulate")) memset(PyArray_DATA(g), 0, (size_t)PyArray_NBYTES(g));
}

static const lade_arg ce_args[] = {
    IN("logits", F32T, "nC"), IN("labels", I64T, "n"), OUT("grad", F32T, "nC"), IN_OPT("offset", F32T, "C"),
    IN_OPT("margin", F32T, "C"), IN_OPT("weights", F32T, "C"), OPT("s", 'f', 1), OPT("gamma", 'f', 0),
    OPT("by_sum", 'p', 0), OPT("accumulate", 'p', 0), END,
};
static lade_status cross_entropy(lade_call *c) {
    lade_ce_config cfg = {F32(c, "offset"), F32(c, "margin"), F32(c, "weights"), (float)lade_num(c, "s"),
                          (float)lade_num(c, "gamma"), (int)lade_int(c, "by_sum")};
    zero_grad(c);
    return lade_cross_entropy(&c->ret[0], F32(c, "grad"), 1.0f, F32(c, "logits"), I64(c, "labels"), NC(c), &cfg);
}

static const lade_arg lade_ce_args[] = {
    IN("logits", F32T, "nC"), IN("labels", I64T, "n"), IN("prior", F32T, "C"), OUT("grad", F32T, "nC"),
    OPT("accumulate", 'p', 0), END,
};
static lade_status lade_ce(lade_call *c) {
    zero_grad(c);
    return lade_lade_ce(&c->ret[0], F32(c, "grad"), 1.0f, F32(c, "logits"), I64(c, "labels"), NC(c), F32(c, "prior"));
}

/* lader: alpha scales the gradient only. lade_loss: value = lade_ce + alpha * lader,
 * ret = (value, lade_ce, lader). */
#define LADER_ARGS(alpha) {IN("logits", F32T, "nC"), IN("labels", I64T, "n"), IN("prior", F32T, "C"), alpha, \
    REQ("remine_lambda", 'f'), REQ("form", 'i'), OUT("grad", F32T, "nC"), OPT("accumulate", 'p', 0), END}
static const lade_arg lader_args[] = LADER_ARGS(OPT("alpha", 'f', 1));
static const lade_arg lade_loss_args[] = LADER_ARGS(REQ("alpha", 'f'));
static lade_status lader_term(lade_call *c, double *value) {
    return lade_lader(value, F32(c, "grad"), (float)lade_num(c, "alpha"), F32(c, "logits"), I64(c, "labels"), NC(c),
                      F32(c, "prior"), (float)lade_num(c, "remine_lambda"), (lade_lader_form)lade_int(c, "form"));
}
static lade_status lader(lade_call *c) {
    zero_grad(c);
    return lader_term(c, &c->ret[0]);
}
static lade_status lade_loss(lade_call *c) {
    lade_status st = lade_ce(c);
    if (!st) st = lader_term(c, &c->ret[2]);
    c->ret[1] = c->ret[0];
    c->ret[0] = c->ret[1] + lade_num(c, "alpha") * c->ret[2];
    return st;
}

static const lade_arg log_prior_args[] = {
    IN("prior", F32T, "C"), REQ("tau", 'f'), OPT("eps", 'f', 1e-12), OUT_HIDDEN("out", F32T, "C"), END,
};
static lade_status log_prior(lade_call *c) {
    return lade_log_prior(F32(c, "out"), F32(c, "prior"), DIM(c, 'C'), (float)lade_num(c, "tau"),
                          (float)lade_num(c, "eps"));
}

/* counts (C,) int64 in, one parameter, (C,) float32 out */
#define COUNTS_ARGS(param) {IN("counts", I64T, "C"), param, OUT_HIDDEN("out", F32T, "C"), END}
static const lade_arg ldam_args[] = COUNTS_ARGS(REQ("max_margin", 'f'));
static const lade_arg effective_number_args[] = COUNTS_ARGS(REQ("beta", 'f'));
static const lade_arg prior_from_counts_args[] = COUNTS_ARGS(OPT("eps", 'f', 0));
static lade_status ldam_margins(lade_call *c) {
    return lade_ldam_margins(F32(c, "out"), I64(c, "counts"), DIM(c, 'C'), (float)lade_num(c, "max_margin"));
}
static lade_status effective_number_weights(lade_call *c) {
    return lade_effective_number_weights(F32(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "beta"));
}
static lade_status prior_from_counts(lade_call *c) {
    return lade_prior_from_counts(F32(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "eps"));
}

/* ---- priors ----------------------------------------------------------------------------- */
static int bind_classes(lade_call *c) { return LADE_BIND(c, 'C', lade_int(c, "classes")), 0; }

static const lade_arg lt_profile_args[] = {
    REQ("classes", 'n'), REQ("img_max", 'f'), REQ("ratio", 'f'), OPT("profile", 'i', LADE_PROFILE_EXP),
    OUT_HIDDEN("out", I64T, "C"), END,
};
static lade_status lt_profile(lade_call *c) {
    return lade_lt_profile(I64(c, "out"), DIM(c, 'C'), lade_num(c, "img_max"), lade_num(c, "ratio"),
                           (lade_profile)lade_int(c, "profile"));
}

static const lade_arg class_counts_args[] = {
    IN("labels", I64T, "m"), REQ("classes", 'n'), OUT_HIDDEN("out", I64T, "C"), END,
};
static lade_status class_counts(lade_call *c) {
    return lade_class_counts(I64(c, "out"), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'));
}

static const lade_arg prior_from_labels_args[] = {
    IN("labels", I64T, "m"), REQ("classes", 'n'), OPT("eps", 'f', 0), OUT_HIDDEN("prior", F32T, "C"),
    OUT_HIDDEN("counts", I64T, "C"), END,
};
static lade_status prior_from_labels(lade_call *c) {
    lade_status st = lade_class_counts(I64(c, "counts"), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'));
    return st ? st : lade_prior_from_counts(F32(c, "prior"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "eps"));
}

/* check_prior(prior, arg="prior"): errors name `arg`, the caller's argument. */
static PyObject *py_check_prior(PyObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {OBJ("prior", NULL), {"arg", LADE_SCALAR | LADE_OPT, 's'}, END};
    lade_call c;
    PyObject *result = NULL;
    if (!lade_parse(&c, "lade.priors.check_prior", spec, args, kw)) {
        const char *arg = c.value[1].s ? c.value[1].s : "prior";
        PyArrayObject *p = lade_py_array(lade_obj(&c, "prior"), c.func, arg, NPY_FLOAT32, 0);
        lade_status st;
        if (p && PyArray_NDIM(p) != 1)
            lade_py_value_error(c.func, arg, "must be 1-dimensional, got %d dimensions", PyArray_NDIM(p));
        else if (p && (st = lade_check_prior(PyArray_DATA(p), (int)PyArray_DIM(p, 0), arg)))
            lade_py_raise(st, c.func);
        else if (p)
            result = Py_NewRef(Py_None);
    }
    return lade_call_end(&c, result);
}

/* ---- sampling ------------------------------------------------------------------------------ */
/* k = the sum of counts, the length of a subset drawn by class */
static int bind_count_sum(lade_call *c) {
    const int64_t *counts = I64(c, "counts");
    npy_intp sum = 0;
    for (int i = 0; i < DIM(c, 'C'); i++) {
        if (counts[i] < 0)
            return lade_py_value_error(c->func, "counts", "must be >= 0, got counts[%d] = %lld", i,
                                       (long long)counts[i]), -1;
        sum += counts[i];
    }
    LADE_BIND(c, 'k', sum);
    return 0;
}

static const lade_arg lt_subset_args[] = {
    IN("labels", I64T, "m"), IN("counts", I64T, "C"), OPT("seed", 'K', 0), OUT_HIDDEN("out", I64T, "k"), END,
};
static lade_status lt_subset(lade_call *c) {
    return lade_lt_subset(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'),
                          I64(c, "counts"), lade_u64(c, "seed"));
}

static const lade_arg first_k_args[] = {IN("labels", I64T, "m"), IN("counts", I64T, "C"), OUT_HIDDEN("out", I64T, "k"), END};
static lade_status first_k_per_class(lade_call *c) {
    return lade_first_k_per_class(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'),
                                  I64(c, "counts"));
}

static int bind_length(lade_call *c) { return LADE_BIND(c, 'k', lade_int(c, "length")), 0; }

static const lade_arg sample_instance_args[] = {
    REQ("length", 'n'), OPT("seed", 'K', 0), OPT("epoch", 'K', 0), OUT_HIDDEN("out", I64T, "k"), END,
};
static lade_status sample_instance(lade_call *c) {
    return lade_sample_instance(I64(c, "out"), SIZE(c, 'k'), lade_u64(c, "seed"), lade_u64(c, "epoch"));
}

static const lade_arg class_aware_length_args[] = {IN("labels", I64T, "m"), REQ("classes", 'i'), END};
static lade_status class_aware_length(lade_call *c) {
    size_t len;
    lade_status st = lade_class_aware_length(&len, I64(c, "labels"), SIZE(c, 'm'), (int)lade_int(c, "classes"));
    c->ret[0] = (double)len;
    return st;
}

static const lade_arg sample_class_aware_args[] = {
    IN("labels", I64T, "m"), REQ("classes", 'i'), REQ("length", 'n'), OPT("samples_per_class", 'i', 1),
    OPT("seed", 'K', 0), OPT("epoch", 'K', 0), OUT_HIDDEN("out", I64T, "k"), END,
};
static lade_status sample_class_aware(lade_call *c) {
    return lade_sample_class_aware(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'),
                                   (int)lade_int(c, "classes"), (int)lade_int(c, "samples_per_class"),
                                   lade_u64(c, "seed"), lade_u64(c, "epoch"));
}

static const lade_arg sample_by_class_args[] = {
    IN("labels", I64T, "m"), IN("class_prob", F64T, "C"), REQ("length", 'n'), OPT("seed", 'K', 0),
    OPT("epoch", 'K', 0), OUT_HIDDEN("out", I64T, "k"), END,
};
static lade_status sample_by_class(lade_call *c) {
    return lade_sample_by_class(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'),
                                F64(c, "class_prob"), lade_u64(c, "seed"), lade_u64(c, "epoch"));
}

static const lade_arg class_prob_power_args[] = {
    IN("counts", I64T, "C"), REQ("q", 'f'), OUT_HIDDEN("out", F64T, "C"), END,
};
static lade_status class_prob_power(lade_call *c) {
    return lade_class_prob_power(F64(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "q"));
}

static const lade_arg class_prob_progressive_args[] = {
    IN("counts", I64T, "C"), REQ("epoch", 'K'), REQ("total_epochs", 'K'), OUT_HIDDEN("out", F64T, "C"), END,
};
static lade_status class_prob_progressive(lade_call *c) {
    return lade_class_prob_progressive(F64(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_u64(c, "epoch"),
                                       lade_u64(c, "total_epochs"));
}

static const lade_arg shift_counts_args[] = {
    IN("train_prior", F32T, "C"), REQ("img_max", 'f'), REQ("ratio", 'f'), REQ("direction", 'i'),
    OUT_HIDDEN("out", I64T, "C"), END,
};
static lade_status shift_counts(lade_call *c) {
    return lade_shift_counts(I64(c, "out"), F32(c, "train_prior"), DIM(c, 'C'), lade_num(c, "img_max"),
                             lade_num(c, "ratio"), (lade_shift_direction)lade_int(c, "direction"));
}

static const lade_arg dirichlet_args[] = {
    IN("alpha", F64T, "C"), REQ("m", 'n'), OPT("seed", 'K', 0), OUT_HIDDEN("out", F32T, "rC"), END,
};
static int bind_rows(lade_call *c) { return LADE_BIND(c, 'r', lade_int(c, "m")), 0; }
static lade_status dirichlet(lade_call *c) {
    return lade_dirichlet(F32(c, "out"), DIM(c, 'r'), DIM(c, 'C'), F64(c, "alpha"), lade_u64(c, "seed"));
}

/* ---- post-hoc ------------------------------------------------------------------------------ */
static const lade_arg adjust_args[] = {
    IN("logits", F32T, "nC"), IN_OPT("source_prior", F32T, "C"), OPT("tau", 'f', 1),
    IN_OPT("target_prior", F32T, "C"), OUT_INPLACE("out", F32T, "nC"), END,
};
static lade_status adjust_logits(lade_call *c) {
    return lade_adjust_logits(F32(c, "out"), F32(c, "logits"), NC(c), F32(c, "source_prior"),
                              (float)lade_num(c, "tau"), F32(c, "target_prior"));
}

static const lade_arg softmax_args[] = {
    IN("logits", F32T, "nC"), OPT("temperature", 'f', 1), IN_OPT("bias", F64T, "C"),
    OUT_INPLACE("out", F32T, "nC"), END,
};
static lade_status softmax(lade_call *c) {
    return lade_softmax(F32(c, "out"), F32(c, "logits"), NC(c), lade_num(c, "temperature"), F64(c, "bias"));
}

static const lade_arg tau_normalize_args[] = {
    IN("weights", F32T, "rk"), OPT("tau", 'f', 1), OUT_INPLACE("out", F32T, "rk"), END,
};
static lade_status tau_normalize(lade_call *c) {
    return lade_tau_normalize(F32(c, "out"), F32(c, "weights"), DIM(c, 'r'), DIM(c, 'k'), (float)lade_num(c, "tau"));
}

/* -> (temperature, per-class bias or None, nll) */
static const lade_arg fit_temperature_args[] = {
    IN("logits", F32T, "nC"), IN("labels", I64T, "n"), OPT("bias", 'p', 0), OPT("max_iter", 'i', 100),
    OUT_HIDDEN("offsets", F64T, "C"), END,
};
static int fit_temperature_infer(lade_call *c) {
    c->skip[lade_index(c, "offsets")] = !lade_int(c, "bias");
    return 0;
}
static lade_status fit_temperature(lade_call *c) {
    return lade_fit_temperature(&c->ret[0], F64(c, "offsets"), &c->ret[1], F32(c, "logits"), I64(c, "labels"), NC(c),
                                (int)lade_int(c, "max_iter"));
}

/* ---- metrics ------------------------------------------------------------------------------- */
/* -> (accuracy, per-sample correct mask) */
static const lade_arg topk_args[] = {
    IN("scores", F32T, "nC"), IN("labels", I64T, "n"), OPT("k", 'i', 1), OUT_HIDDEN("correct", U8T, "n"), END,
};
static lade_status topk_accuracy(lade_call *c) {
    return lade_topk_accuracy(&c->ret[0], (uint8_t *)lade_data(c, "correct"), F32(c, "scores"), I64(c, "labels"),
                              NC(c), (int)lade_int(c, "k"));
}

static const lade_arg argmax_args[] = {IN("scores", F32T, "nC"), OUT_HIDDEN("out", I64T, "n"), END};
static lade_status argmax(lade_call *c) { return lade_argmax(I64(c, "out"), F32(c, "scores"), NC(c)); }

static const lade_arg confusion_args[] = {
    IN("predictions", I64T, "n"), IN("labels", I64T, "n"), REQ("classes", 'n'), OUT_HIDDEN("out", I64T, "CC"), END,
};
static lade_status confusion_matrix(lade_call *c) {
    return lade_confusion_matrix(I64(c, "out"), I64(c, "predictions"), I64(c, "labels"), SIZE(c, 'n'), DIM(c, 'C'));
}

static const lade_arg per_class_args[] = {IN("confusion", I64T, "CC"), OUT_HIDDEN("out", F64T, "C"), END};
static lade_status per_class_accuracy(lade_call *c) {
    return lade_per_class_accuracy(F64(c, "out"), I64(c, "confusion"), DIM(c, 'C'));
}

/* -> (many, medium, few) */
static const lade_arg shot_args[] = {
    IN("per_class_accuracy", F64T, "C"), IN("train_counts", I64T, "C"), OPT("many_above", 'i', 100),
    OPT("few_below", 'i', 20), END,
};
static lade_status shot_accuracy(lade_call *c) {
    return lade_shot_accuracy(c->ret, F64(c, "per_class_accuracy"), I64(c, "train_counts"), DIM(c, 'C'),
                              lade_int(c, "many_above"), lade_int(c, "few_below"));
}

/* -> (ece, confidence, accuracy, count), n_bins + 1 bins */
static const lade_arg reliability_args[] = {
    IN("probs", F32T, "nC"), IN("labels", I64T, "n"), REQ("n_bins", 'i'), OPT("variant", 'i', LADE_BINS_STANDARD),
    OUT_HIDDEN("confidence", F64T, "b"), OUT_HIDDEN("accuracy", F64T, "b"), OUT_HIDDEN("count", I64T, "b"), END,
};
static int reliability_infer(lade_call *c) {
    long long bins = lade_int(c, "n_bins");
    if (bins < 1 || bins > 100000)
        return lade_py_value_error(c->func, "n_bins", "must be in [1, 100000], got %lld", bins), -1;
    return LADE_BIND(c, 'b', bins + 1), 0;
}
static lade_status reliability(lade_call *c) {
    return lade_reliability(&c->ret[0], F64(c, "confidence"), F64(c, "accuracy"), I64(c, "count"), F32(c, "probs"),
                            I64(c, "labels"), NC(c), (int)lade_int(c, "n_bins"), (lade_bin_mode)lade_int(c, "variant"));
}

/* -> (nll, brier) */
static const lade_arg nll_brier_args[] = {IN("probs", F32T, "nC"), IN("labels", I64T, "n"), END};
static lade_status nll_brier(lade_call *c) {
    return lade_nll_brier(&c->ret[0], &c->ret[1], F32(c, "probs"), I64(c, "labels"), NC(c));
}

/* ---- prior shift ------------------------------------------------------------------------------ */
static const lade_arg reweight_args[] = {
    IN("probs", F32T, "nC"), IN("from_prior", F32T, "C"), IN("to_prior", F32T, "C"), OUT("out", F32T, "nC"), END,
};
static lade_status reweight(lade_call *c) {
    return lade_reweight_probs(F32(c, "out"), F32(c, "probs"), NC(c), F32(c, "from_prior"), F32(c, "to_prior"));
}

static const lade_arg mean_posterior_args[] = {IN("probs", F32T, "nC"), OUT_HIDDEN("out", F32T, "C"), END};
static lade_status mean_posterior(lade_call *c) { return lade_mean_posterior(F32(c, "out"), F32(c, "probs"), NC(c)); }

/* -> (prior, iterations, converged, loglik) */
static const lade_arg em_args[] = {
    IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), IN_OPT("row_weight", F64T, "n"),
    OPT("pseudo_count", 'f', 0), OPT("tol", 'f', 1e-8), OPT("max_iter", 'i', 2000), OUT_HIDDEN("out", F32T, "C"),
    END,
};
static lade_status em_prior(lade_call *c) {
    int iterations, converged;
    lade_status st = lade_em_prior_map(F32(c, "out"), &iterations, &converged, &c->ret[2], F32(c, "probs"),
                                       F64(c, "row_weight"), NC(c), F32(c, "source_prior"), lade_num(c, "pseudo_count"),
                                       lade_num(c, "tol"), (int)lade_int(c, "max_iter"));
    c->ret[0] = iterations, c->ret[1] = converged;
    return st;
}

/* calibration scores (m, C) with labels, target scores (n, C), source prior (C,) */
#define BBSE_DATA IN("calib_scores", F32T, "mC"), IN("labels", I64T, "m"), IN("target_scores", F32T, "nC"), \
    IN("source_prior", F32T, "C")
#define BBSE_CALL F32(c, "calib_scores"), I64(c, "labels"), DIM(c, 'm'), F32(c, "target_scores"), NC(c), \
    F32(c, "source_prior")

/* -> (prior, condition number, fell back) */
static const lade_arg bbse_args[] = {
    BBSE_DATA, REQ("cond_limit", 'f'), OPT("soft", 'p', 1), OPT("ridge", 'f', 0), OUT_HIDDEN("out", F32T, "C"), END,
};
static lade_status bbse_prior(lade_call *c) {
    int fell_back;
    lade_status st = lade_bbse_prior(F32(c, "out"), &c->ret[0], &fell_back, BBSE_CALL, (int)lade_int(c, "soft"),
                                     lade_num(c, "ridge"), lade_num(c, "cond_limit"));
    c->ret[1] = fell_back;
    return st;
}

static const lade_arg condition_args[] = {
    IN("calib_scores", F32T, "mC"), IN("labels", I64T, "m"), OPT("soft", 'p', 1), END,
};
static lade_status confusion_condition(lade_call *c) {
    return lade_confusion_condition(&c->ret[0], F32(c, "calib_scores"), I64(c, "labels"), DIM(c, 'm'), DIM(c, 'C'),
                                    (int)lade_int(c, "soft"));
}

/* -> (statistic, dof) */
static const lade_arg chi2_args[] = {BBSE_DATA, END};
static lade_status prediction_shift_chi2(lade_call *c) {
    int dof;
    lade_status st = lade_prediction_shift_chi2(&c->ret[0], &dof, BBSE_CALL);
    c->ret[1] = dof;
    return st;
}

static int bind_replicates(lade_call *c) { return LADE_BIND(c, 'B', lade_int(c, "replicates")), 0; }

static const lade_arg em_bootstrap_args[] = {
    IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), REQ("replicates", 'n'), OPT("pseudo_count", 'f', 0),
    OPT("tol", 'f', 1e-8), OPT("max_iter", 'i', 2000), OPT("seed", 'K', 0), OUT_HIDDEN("out", F32T, "BC"), END,
};
static lade_status em_bootstrap(lade_call *c) {
    return lade_em_bootstrap(F32(c, "out"), DIM(c, 'B'), F32(c, "probs"), NC(c), F32(c, "source_prior"),
                             lade_num(c, "pseudo_count"), lade_num(c, "tol"), (int)lade_int(c, "max_iter"),
                             lade_u64(c, "seed"));
}

static const lade_arg bbse_bootstrap_args[] = {
    BBSE_DATA, REQ("replicates", 'n'), OPT("soft", 'p', 1), OPT("ridge", 'f', 0), OPT("seed", 'K', 0),
    OUT_HIDDEN("out", F32T, "BC"), END,
};
static lade_status bbse_bootstrap(lade_call *c) {
    return lade_bbse_bootstrap(F32(c, "out"), DIM(c, 'B'), BBSE_CALL, (int)lade_int(c, "soft"), lade_num(c, "ridge"),
                               lade_u64(c, "seed"));
}

/* -> (lo, hi) */
static const lade_arg interval_args[] = {
    IN("replicates", F32T, "BC"), REQ("level", 'f'), OUT_HIDDEN("lo", F32T, "C"), OUT_HIDDEN("hi", F32T, "C"), END,
};
static lade_status bootstrap_interval(lade_call *c) {
    return lade_bootstrap_interval(F32(c, "lo"), F32(c, "hi"), F32(c, "replicates"), DIM(c, 'B'), DIM(c, 'C'),
                                   lade_num(c, "level"));
}

static const lade_arg chi2_sf_args[] = {REQ("x", 'f'), REQ("dof", 'f'), END};
static lade_status chi2_sf(lade_call *c) { return lade_chi2_sf(&c->ret[0], lade_num(c, "x"), lade_num(c, "dof")); }

/* The arguments of lade.prior_shift.adapt, checked before any work. */
static const lade_arg adapt_args[] = {
    IN("source_prior", F32T, "C"), IN("test_logits", F32T, "nC"), IN_OPT("calib_logits", F32T, "mC"),
    IN_OPT("calib_labels", I64T, "m"), END,
};
static int adapt_infer(lade_call *c) {
    if (lade_given(c, "calib_logits") == lade_given(c, "calib_labels")) return 0;
    PyErr_Format(PyExc_ValueError, "%s: arguments 'calib_logits' and 'calib_labels' must be given together", c->func);
    return -1;
}
static lade_status check_adapt(lade_call *c) {
    lade_status st = lade_check_prior(F32(c, "source_prior"), DIM(c, 'C'), "source_prior");
    if (!st) st = lt_check_logits(F32(c, "test_logits"), SIZE(c, 'n'), DIM(c, 'C'), "test_logits");
    if (!st && lade_data(c, "calib_logits"))
        st = lt_check_logits(F32(c, "calib_logits"), SIZE(c, 'm'), DIM(c, 'C'), "calib_logits");
    if (!st && lade_data(c, "calib_labels"))
        st = lt_check_labels(I64(c, "calib_labels"), SIZE(c, 'm'), DIM(c, 'C'), "calib_labels");
    return st;
}

#define LOSS(name, args, run) {#name, "lade.losses." #name, args, NULL, run, "dA", NULL}
#define FN(name, func, args, infer, run, returns) {#name, func, args, infer, run, returns, NULL}
#define ADAPT "lade.prior_shift.adapt"
static const lade_binding bindings[] = {
    LOSS(softmax_ce, ce_args, cross_entropy),
    LOSS(logit_adjusted, ce_args, cross_entropy),
    LOSS(focal, ce_args, cross_entropy),
    LOSS(class_balanced, ce_args, cross_entropy),
    LOSS(ldam, ce_args, cross_entropy),
    LOSS(lade_ce, lade_ce_args, lade_ce),
    LOSS(lader, lader_args, lader),
    {"lade_loss", "lade.losses.lade_loss", lade_loss_args, NULL, lade_loss, "dAdd", "-> (value, grad, lade_ce, lader)"},
    FN(log_prior, "lade.losses.LogitAdjustedLoss", log_prior_args, NULL, log_prior, NULL),
    FN(ldam_margins, "lade.losses.LDAMLoss", ldam_args, NULL, ldam_margins, NULL),
    FN(effective_number_weights, "lade.losses.ClassBalancedLoss", effective_number_args, NULL,
       effective_number_weights, NULL),
    FN(prior_from_counts, "lade.priors.prior_from_counts", prior_from_counts_args, NULL, prior_from_counts, NULL),
    FN(prior_from_labels, "lade.priors.prior_from_labels", prior_from_labels_args, bind_classes, prior_from_labels,
       "A"),
    FN(lt_profile, "lade.priors.lt_profile", lt_profile_args, bind_classes, lt_profile, NULL),
    FN(class_counts, "lade.priors.class_counts", class_counts_args, bind_classes, class_counts, NULL),
    FN(lt_subset, "lade.sampling.lt_subset", lt_subset_args, bind_count_sum, lt_subset, NULL),
    FN(sample_instance, "lade.sampling.InstanceSampler", sample_instance_args, bind_length, sample_instance, NULL),
    FN(class_aware_length, "lade.sampling.ClassAwareSampler", class_aware_length_args, NULL, class_aware_length, "i"),
    FN(sample_class_aware, "lade.sampling.ClassAwareSampler", sample_class_aware_args, bind_length,
       sample_class_aware, NULL),
    FN(sample_by_class, "lade.sampling.epoch_indices", sample_by_class_args, bind_length, sample_by_class, NULL),
    FN(class_prob_power, "lade.sampling.SquareRootSampler", class_prob_power_args, NULL, class_prob_power, NULL),
    FN(class_prob_progressive, "lade.sampling.ProgressivelyBalancedSampler", class_prob_progressive_args, NULL,
       class_prob_progressive, NULL),
    FN(shift_counts, "lade.sampling.shifted_test_subset", shift_counts_args, NULL, shift_counts, NULL),
    FN(first_k_per_class, "lade.sampling.shifted_test_subset", first_k_args, bind_count_sum, first_k_per_class, NULL),
    FN(dirichlet_priors, "lade.sampling.dirichlet_priors", dirichlet_args, bind_rows, dirichlet, NULL),
    FN(pc_adjust, "lade.posthoc.pc_adjust", adjust_args, NULL, adjust_logits, NULL),
    FN(lade_adjust, "lade.posthoc.lade_adjust", adjust_args, NULL, adjust_logits, NULL),
    FN(logit_adjust, "lade.posthoc.logit_adjust", adjust_args, NULL, adjust_logits, NULL),
    FN(softmax, "lade.posthoc.softmax", softmax_args, NULL, softmax, NULL),
    FN(tau_normalize, "lade.posthoc.tau_normalize", tau_normalize_args, NULL, tau_normalize, NULL),
    FN(fit_temperature, "lade.posthoc.fit_temperature", fit_temperature_args, fit_temperature_infer, fit_temperature,
       "dAd"),
    FN(topk_accuracy, "lade.metrics.topk_accuracy", topk_args, NULL, topk_accuracy, "dA"),
    FN(accuracy, "lade.metrics.accuracy", topk_args, NULL, topk_accuracy, "d"),
    FN(predictions, "lade.metrics.predictions", argmax_args, NULL, argmax, NULL),
    FN(confusion_matrix, "lade.metrics.confusion_matrix", confusion_args, bind_classes, confusion_matrix, NULL),
    FN(per_class_accuracy, "lade.metrics.per_class_accuracy", per_class_args, NULL, per_class_accuracy, NULL),
    FN(shot_accuracy, "lade.metrics.shot_accuracy", shot_args, NULL, shot_accuracy, "ddd"),
    FN(reliability_diagram, "lade.metrics.reliability_diagram", reliability_args, reliability_infer, reliability,
       "dAAA"),
    FN(nll, "lade.metrics.nll", nll_brier_args, NULL, nll_brier, "dd"),
    FN(brier, "lade.metrics.brier", nll_brier_args, NULL, nll_brier, "dd"),
    FN(reweight, "lade.prior_shift.reweight", reweight_args, NULL, reweight, NULL),
    FN(mean_posterior, "lade.prior_shift.mean_posterior", mean_posterior_args, NULL, mean_posterior, NULL),
    FN(em_prior, "lade.prior_shift.em_prior", em_args, NULL, em_prior, "Aibd"),
    FN(bbse_prior, "lade.prior_shift.bbse_prior", bbse_args, NULL, bbse_prior, "Adb"),
    FN(check_adapt, ADAPT, adapt_args, adapt_infer, check_adapt, ""),
    FN(confusion_condition, ADAPT, condition_args, NULL, confusion_condition, "d"),
    FN(prediction_shift_chi2, ADAPT, chi2_args, NULL, prediction_shift_chi2, "di"),
    FN(em_bootstrap, ADAPT, em_bootstrap_args, bind_replicates, em_bootstrap, NULL),
    FN(bbse_bootstrap, ADAPT, bbse_bootstrap_args, bind_replicates, bbse_bootstrap, NULL),
    FN(bootstrap_interval, ADAPT, interval_args, NULL, bootstrap_interval, NULL),
    FN(chi2_sf, ADAPT, chi2_sf_args, NULL, chi2_sf, "d"),
    {NULL},
};

static PyMethodDef methods[] = {
    {"check_prior", (PyCFunction)(void (*)(void))py_check_prior, METH_VARARGS | METH_KEYWORDS,
     "check_prior(prior, arg='prior'): raises unless prior is a valid float32 prior; errors name arg"},
    {NULL, NULL, 0, NULL},
};

int lade_register_ltmath(PyObject *module) {
    return PyModule_AddFunctions(module, methods) < 0 ? -1 : lade_add_bindings(module, bindings);
}
