/* bind_ltmath.c - Python bindings for lade_ltmath.h: losses, priors, sampling,
 * post-hoc adjustment, metrics and prior shift. The table at the end lists
 * every function with its arguments; above it, each one's core call. */
#include "bind.h"
#include "ltmath/checks.h"

#define NC(c) DIM(c, 'n'), DIM(c, 'C')
#define SIZE(c, letter) ((size_t)DIM(c, letter))

/* ---- losses: ret[0] is the value; grad is overwritten unless `accumulate` -------------------- */
static void zero_grad(lade_call *c) {
    PyArrayObject *g = lade_array(c, "grad");
    if (!lade_int(c, "accumulate")) memset(PyArray_DATA(g), 0, (size_t)PyArray_NBYTES(g));
}

static lade_status cross_entropy(lade_call *c) {
    lade_ce_config cfg = {F32(c, "offset"), F32(c, "margin"), F32(c, "weights"), (float)lade_num(c, "s"),
                          (float)lade_num(c, "gamma"), (int)lade_int(c, "by_sum")};
    zero_grad(c);
    return lade_cross_entropy(&c->ret[0], F32(c, "grad"), 1.0f, F32(c, "logits"), I64(c, "labels"), NC(c), &cfg);
}

static lade_status lade_ce(lade_call *c) {
    zero_grad(c);
    return lade_lade_ce(&c->ret[0], F32(c, "grad"), 1.0f, F32(c, "logits"), I64(c, "labels"), NC(c), F32(c, "prior"));
}

/* alpha scales the gradient */
static lade_status lader(lade_call *c) {
    zero_grad(c);
    return lade_lader(&c->ret[0], F32(c, "grad"), (float)lade_num(c, "alpha"), F32(c, "logits"), I64(c, "labels"),
                      NC(c), F32(c, "prior"), (float)lade_num(c, "remine_lambda"), (lade_lader_form)lade_int(c, "form"));
}

/* ret = (lade_ce + alpha * lader, lade_ce, lader) */
static lade_status lade_loss(lade_call *c) {
    zero_grad(c);
    return lade_lade_loss(&c->ret[0], &c->ret[1], &c->ret[2], F32(c, "grad"), 1.0f, F32(c, "logits"),
                          I64(c, "labels"), NC(c), F32(c, "prior"), lade_num(c, "alpha"),
                          (float)lade_num(c, "remine_lambda"), (lade_lader_form)lade_int(c, "form"));
}

static lade_status log_prior(lade_call *c) {
    return lade_log_prior(F32(c, "out"), F32(c, "prior"), DIM(c, 'C'), (float)lade_num(c, "tau"),
                          (float)lade_num(c, "eps"));
}
static lade_status ldam_margins(lade_call *c) {
    return lade_ldam_margins(F32(c, "out"), I64(c, "counts"), DIM(c, 'C'), (float)lade_num(c, "max_margin"));
}
static lade_status effective_number_weights(lade_call *c) {
    return lade_effective_number_weights(F32(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "beta"));
}

/* ---- priors ----------------------------------------------------------------------------- */
static int bind_classes(lade_call *c) { return LADE_BIND(c, 'C', lade_int(c, "classes")), 0; }

static lade_status prior_from_counts(lade_call *c) {
    return lade_prior_from_counts(F32(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "eps"));
}
static lade_status lt_profile(lade_call *c) {
    return lade_lt_profile(I64(c, "out"), DIM(c, 'C'), lade_num(c, "img_max"), lade_num(c, "ratio"),
                           (lade_profile)lade_int(c, "profile"));
}
static lade_status class_counts(lade_call *c) {
    return lade_class_counts(I64(c, "out"), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'));
}
static lade_status prior_from_labels(lade_call *c) {
    lade_status st = class_counts(c);
    return st ? st : lade_prior_from_counts(F32(c, "prior"), I64(c, "out"), DIM(c, 'C'), lade_num(c, "eps"));
}

/* check_prior(prior, arg="prior"): errors name `arg`, the caller's argument (lade.priors makes prior a
 * contiguous float32 array) */
static lade_status check_prior(lade_call *c) {
    const char *arg = lade_given(c, "arg") ? lade_str(c, "arg") : "prior";
    PyArrayObject *p = lade_array(c, "prior");
    if (PyArray_NDIM(p) != 1)
        return lade_fail(LADE_EINVAL, "argument '%s' must be 1-dimensional, got %d dimensions", arg, PyArray_NDIM(p));
    return lade_check_prior(PyArray_DATA(p), (int)PyArray_DIM(p, 0), arg);
}

/* ---- sampling ------------------------------------------------------------------------------ */
/* k = the sum of counts: the length of a subset drawn by class */
static int bind_count_sum(lade_call *c) {
    const int64_t *counts = I64(c, "counts");
    npy_intp sum = 0;
    for (int i = 0; i < DIM(c, 'C'); i++) {
        if (counts[i] < 0)
            return lade_py_value_error(c->func, "counts", "must be >= 0, got counts[%d] = %lld", i,
                                       (long long)counts[i]), -1;
        sum += counts[i];
    }
    return LADE_BIND(c, 'k', sum), 0;
}
static int bind_length(lade_call *c) { return LADE_BIND(c, 'k', lade_int(c, "length")), 0; }

static lade_status lt_subset(lade_call *c) {
    return lade_lt_subset(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'),
                          I64(c, "counts"), lade_u64(c, "seed"));
}
static lade_status first_k_per_class(lade_call *c) {
    return lade_first_k_per_class(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'),
                                  I64(c, "counts"));
}
static lade_status sample_instance(lade_call *c) {
    return lade_sample_instance(I64(c, "out"), SIZE(c, 'k'), lade_u64(c, "seed"), lade_u64(c, "epoch"));
}
static lade_status class_aware_length(lade_call *c) {
    size_t len;
    lade_status st = lade_class_aware_length(&len, I64(c, "labels"), SIZE(c, 'm'), (int)lade_int(c, "classes"));
    c->ret[0] = (double)len;
    return st;
}
static lade_status sample_class_aware(lade_call *c) {
    return lade_sample_class_aware(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'),
                                   (int)lade_int(c, "classes"), (int)lade_int(c, "samples_per_class"),
                                   lade_u64(c, "seed"), lade_u64(c, "epoch"));
}
static lade_status sample_by_class(lade_call *c) {
    return lade_sample_by_class(I64(c, "out"), SIZE(c, 'k'), I64(c, "labels"), SIZE(c, 'm'), DIM(c, 'C'),
                                F64(c, "class_prob"), lade_u64(c, "seed"), lade_u64(c, "epoch"));
}
static lade_status class_prob_power(lade_call *c) {
    return lade_class_prob_power(F64(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_num(c, "q"));
}
static lade_status class_prob_progressive(lade_call *c) {
    return lade_class_prob_progressive(F64(c, "out"), I64(c, "counts"), DIM(c, 'C'), lade_u64(c, "epoch"),
                                       lade_u64(c, "total_epochs"));
}
static lade_status shift_counts(lade_call *c) {
    return lade_shift_counts(I64(c, "out"), F32(c, "train_prior"), DIM(c, 'C'), lade_num(c, "img_max"),
                             lade_num(c, "ratio"), (lade_shift_direction)lade_int(c, "direction"));
}
static int bind_rows(lade_call *c) { return LADE_BIND(c, 'r', lade_int(c, "m")), 0; }
static lade_status dirichlet(lade_call *c) {
    return lade_dirichlet(F32(c, "out"), DIM(c, 'r'), DIM(c, 'C'), F64(c, "alpha"), lade_u64(c, "seed"));
}

/* ---- post-hoc ------------------------------------------------------------------------------ */
static lade_status adjust_logits(lade_call *c) {
    return lade_adjust_logits(F32(c, "out"), F32(c, "logits"), NC(c), F32(c, "source_prior"),
                              (float)lade_num(c, "tau"), F32(c, "target_prior"));
}
static lade_status softmax(lade_call *c) {
    return lade_softmax(F32(c, "out"), F32(c, "logits"), NC(c), lade_num(c, "temperature"), F64(c, "bias"));
}
static lade_status tau_normalize(lade_call *c) {
    return lade_tau_normalize(F32(c, "out"), F32(c, "weights"), DIM(c, 'r'), DIM(c, 'k'), (float)lade_num(c, "tau"));
}
/* the per-class offsets only when `bias` */
static int fit_temperature_infer(lade_call *c) { return c->skip[lade_index(c, "offsets")] = !lade_int(c, "bias"), 0; }
static lade_status fit_temperature(lade_call *c) {
    return lade_fit_temperature(&c->ret[0], F64(c, "offsets"), &c->ret[1], F32(c, "logits"), I64(c, "labels"), NC(c),
                                (int)lade_int(c, "max_iter"));
}

/* ---- metrics ------------------------------------------------------------------------------- */
static lade_status topk_accuracy(lade_call *c) {
    return lade_topk_accuracy(&c->ret[0], (uint8_t *)lade_data(c, "correct"), F32(c, "scores"), I64(c, "labels"),
                              NC(c), (int)lade_int(c, "k"));
}
static lade_status argmax(lade_call *c) { return lade_argmax(I64(c, "out"), F32(c, "scores"), NC(c)); }
static lade_status confusion_matrix(lade_call *c) {
    return lade_confusion_matrix(I64(c, "out"), I64(c, "predictions"), I64(c, "labels"), SIZE(c, 'n'), DIM(c, 'C'));
}
static lade_status per_class_accuracy(lade_call *c) {
    return lade_per_class_accuracy(F64(c, "out"), I64(c, "confusion"), DIM(c, 'C'));
}
static lade_status shot_accuracy(lade_call *c) {
    return lade_shot_accuracy(c->ret, F64(c, "per_class_accuracy"), I64(c, "train_counts"), DIM(c, 'C'),
                              lade_int(c, "many_above"), lade_int(c, "few_below"));
}
/* n_bins + 1 bins: the last one is spec20's bin for confidence 1.0 */
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
static lade_status nll_brier(lade_call *c) {
    return lade_nll_brier(&c->ret[0], &c->ret[1], F32(c, "probs"), I64(c, "labels"), NC(c));
}
static lade_status paired_bootstrap(lade_call *c) {
    return lade_paired_bootstrap(&c->ret[0], &c->ret[1], &c->ret[2], F64(c, "out"), DIM(c, 'B'),
                                 (const uint8_t *)lade_data(c, "correct_a"), (const uint8_t *)lade_data(c, "correct_b"),
                                 DIM(c, 'm'), DIM(c, 'n'), lade_num(c, "level"), lade_u64(c, "seed"));
}

/* ---- prior shift ------------------------------------------------------------------------------ */
static lade_status reweight(lade_call *c) {
    return lade_reweight_probs(F32(c, "out"), F32(c, "probs"), NC(c), F32(c, "from_prior"), F32(c, "to_prior"));
}
static lade_status mean_posterior(lade_call *c) { return lade_mean_posterior(F32(c, "out"), F32(c, "probs"), NC(c)); }
static lade_status em_prior(lade_call *c) {
    int iterations, converged;
    lade_status (*em)(float *, int *, int *, double *, const float *, const double *, int, int, const float *, double,
                      double, int) = lade_int(c, "accelerate") ? lade_em_prior_squarem : lade_em_prior_map;
    lade_status st = em(F32(c, "out"), &iterations, &converged, &c->ret[2], F32(c, "probs"),
                                       F64(c, "row_weight"), NC(c), F32(c, "source_prior"), lade_num(c, "pseudo_count"),
                                       lade_num(c, "tol"), (int)lade_int(c, "max_iter"));
    c->ret[0] = iterations, c->ret[1] = converged;
    return st;
}

static lade_status tilt_prior(lade_call *c) {
    int iterations, converged;
    lade_status st = lade_tilt_prior(F32(c, "out"), &c->ret[0], &c->ret[1], &iterations, &converged, F32(c, "probs"),
                                     NC(c), F32(c, "source_prior"), F32(c, "tilt_prior"), lade_num(c, "tol"),
                                     (int)lade_int(c, "max_iter"));
    c->ret[2] = iterations, c->ret[3] = converged;
    return st;
}

static lade_status em_prior_eb(lade_call *c) {
    int iterations, converged;
    lade_status st = lade_em_prior_eb(F32(c, "out"), &c->ret[0], &iterations, &converged, &c->ret[3], F32(c, "probs"),
                                      NC(c), F32(c, "source_prior"), lade_num(c, "tol"), (int)lade_int(c, "max_iter"));
    c->ret[1] = iterations, c->ret[2] = converged;
    return st;
}

static lade_status select_prior(lade_call *c) {
    int kind, support;
    lade_status st = lade_select_prior(F32(c, "out"), &kind, &support, &c->ret[2], &c->ret[3], F32(c, "probs"), NC(c),
                                       F32(c, "source_prior"), F32(c, "tilt_prior"), lade_num(c, "penalty"),
                                       lade_num(c, "noise"), lade_num(c, "tol"), (int)lade_int(c, "max_iter"));
    c->ret[0] = kind, c->ret[1] = support;
    return st;
}

/* calibration scores (m, C) with labels, target scores (n, C), source prior (C,) */
#define BBSE_DATA IN("calib_scores", F32T, "mC"), IN("labels", I64T, "m"), IN("target_scores", F32T, "nC"), \
    IN("source_prior", F32T, "C")
#define BBSE_CALL F32(c, "calib_scores"), I64(c, "labels"), DIM(c, 'm'), F32(c, "target_scores"), NC(c), \
    F32(c, "source_prior")
static lade_status bbse_prior(lade_call *c) {
    int fell_back;
    lade_status st = lade_bbse_prior(F32(c, "out"), &c->ret[0], &fell_back, BBSE_CALL, (int)lade_int(c, "soft"),
                                     lade_num(c, "ridge"), lade_num(c, "cond_limit"));
    c->ret[1] = fell_back;
    return st;
}
static lade_status confusion_condition(lade_call *c) {
    return lade_confusion_condition(&c->ret[0], F32(c, "calib_scores"), I64(c, "labels"), DIM(c, 'm'), DIM(c, 'C'),
                                    (int)lade_int(c, "soft"));
}
static lade_status prediction_shift_chi2(lade_call *c) {
    int dof;
    lade_status st = lade_prediction_shift_chi2(&c->ret[0], &dof, BBSE_CALL);
    c->ret[1] = dof;
    return st;
}
static int bind_replicates(lade_call *c) { return LADE_BIND(c, 'B', lade_int(c, "replicates")), 0; }
static lade_status em_bootstrap(lade_call *c) {
    return lade_em_bootstrap(F32(c, "out"), DIM(c, 'B'), F32(c, "probs"), NC(c), F32(c, "source_prior"),
                             lade_num(c, "pseudo_count"), lade_num(c, "tol"), (int)lade_int(c, "max_iter"),
                             lade_u64(c, "seed"));
}
static lade_status bbse_bootstrap(lade_call *c) {
    return lade_bbse_bootstrap(F32(c, "out"), DIM(c, 'B'), BBSE_CALL, (int)lade_int(c, "soft"), lade_num(c, "ridge"),
                               lade_u64(c, "seed"));
}
static lade_status bootstrap_interval(lade_call *c) {
    return lade_bootstrap_interval(F32(c, "lo"), F32(c, "hi"), F32(c, "replicates"), DIM(c, 'B'), DIM(c, 'C'),
                                   lade_num(c, "level"));
}
static lade_status em_prior_labelled(lade_call *c) {
    int iterations, converged;
    lade_status st = lade_em_prior_labelled(F32(c, "out"), F32(c, "pool_prior"), &iterations, &converged,
                                            F32(c, "probs"), NC(c), F32(c, "source_prior"), I64(c, "labelled_counts"),
                                            (int)lade_int(c, "per_class"), lade_num(c, "pseudo_count"),
                                            lade_num(c, "tol"), (int)lade_int(c, "max_iter"));
    c->ret[0] = iterations, c->ret[1] = converged;
    return st;
}
static lade_status em_covariance_trace(lade_call *c) {
    return lade_em_covariance_trace(&c->ret[0], F32(c, "probs"), NC(c), F32(c, "source_prior"), F32(c, "estimate"));
}
static lade_status bbse_covariance_trace(lade_call *c) {
    return lade_bbse_covariance_trace(&c->ret[0], F32(c, "calib_scores"), I64(c, "labels"), DIM(c, 'm'),
                                      F32(c, "target_scores"), NC(c), F32(c, "estimate"), (int)lade_int(c, "soft"));
}
static lade_status replicate_variance(lade_call *c) {
    return lade_replicate_variance(&c->ret[0], F32(c, "replicates"), DIM(c, 'B'), DIM(c, 'C'));
}
static lade_status shrink_prior(lade_call *c) {
    return lade_shrink_prior(F32(c, "out"), &c->ret[0], F32(c, "estimate"), F32(c, "anchor"), DIM(c, 'C'),
                             lade_num(c, "covariance_trace"));
}
static lade_status chi2_sf(lade_call *c) { return lade_chi2_sf(&c->ret[0], lade_num(c, "x"), lade_num(c, "dof")); }

/* The arrays of lade.prior_shift.adapt, checked before any work. */
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

/* ---- decoupled second stage ----------------------------------------------------------------- */
static lade_classifier_config classifier_config(lade_call *c) {
    lade_classifier_config cfg = lade_classifier_config_default();
    cfg.epochs = (int)lade_int(c, "epochs"), cfg.batch_size = (int)lade_int(c, "batch_size");
    cfg.lr = (float)lade_num(c, "lr"), cfg.momentum = (float)lade_num(c, "momentum");
    cfg.weight_decay = (float)lade_num(c, "weight_decay");
    cfg.sampling = (lade_classifier_sampling)lade_int(c, "sampling");
    cfg.loss = (lade_classifier_loss)lade_int(c, "loss");
    cfg.prior = F32(c, "prior");
    if (lade_index(c, "alpha") < c->n) cfg.alpha = (float)lade_num(c, "alpha"); /* LADE re-training only */
    if (lade_index(c, "remine_lambda") < c->n) cfg.remine_lambda = (float)lade_num(c, "remine_lambda");
    cfg.seed = lade_u64(c, "seed");
    return cfg;
}
#define FEATURES(c) F32(c, "features"), I64(c, "labels"), DIM(c, 'n'), DIM(c, 'd'), DIM(c, 'C')
static lade_status classifier_fit(lade_call *c) {
    lade_classifier_config cfg = classifier_config(c);
    return lade_classifier_fit(F32(c, "weight"), F32(c, "bias"), &c->ret[0], FEATURES(c), &cfg);
}
static lade_status lws_fit(lade_call *c) {
    lade_classifier_config cfg = classifier_config(c);
    return lade_lws_fit(F32(c, "scales"), &c->ret[0], FEATURES(c), F32(c, "weight"), F32(c, "bias"), &cfg);
}
static lade_status lws_loss(lade_call *c) {
    return lade_lws_loss(&c->ret[0], F32(c, "grad"), FEATURES(c), F32(c, "weight"), F32(c, "bias"), F32(c, "scales"));
}
static lade_status tau_select(lade_call *c) {
    int best = 0;
    lade_status st = lade_tau_select(F64(c, "out"), &best, F32(c, "taus"), DIM(c, 't'), FEATURES(c), F32(c, "weight"),
                                     F32(c, "bias"));
    c->ret[0] = best;
    return st;
}

/* ---- the table --------------------------------------------------------------------------------- */
#define BATCH(scores) IN(scores, F32T, "nC"), IN("labels", I64T, "n")
#define CE_ARGS ARGS(BATCH("logits"), OUT("grad", F32T, "nC"), IN_OPT("offset", F32T, "C"), \
    IN_OPT("margin", F32T, "C"), IN_OPT("weights", F32T, "C"), OPT("s", 'f', 1), OPT("gamma", 'f', 0), \
    OPT("by_sum", 'p', 0), OPT("accumulate", 'p', 0))
#define LADER_ARGS(alpha) ARGS(BATCH("logits"), IN("prior", F32T, "C"), alpha, REQ("remine_lambda", 'f'), \
    REQ("form", 'i'), OUT("grad", F32T, "nC"), OPT("accumulate", 'p', 0))
#define COUNTS_TO_FLOATS(param) ARGS(IN("counts", I64T, "C"), param, OUT_HIDDEN("out", F32T, "C"))
#define LOSS(name, args, run) {#name, "lade.losses." #name, args, NULL, run, "dA", "-> (value, grad)"}
#define ADAPT "lade.prior_shift.adapt"
#define SEED_EPOCH OPT("seed", 'K', 0), OPT("epoch", 'K', 0)
#define ADJUST_ARGS ARGS(IN("logits", F32T, "nC"), IN_OPT("source_prior", F32T, "C"), OPT("tau", 'f', 1), \
    IN_OPT("target_prior", F32T, "C"), OUT_INPLACE("out", F32T, "nC"))
#define CLASSIFIER_DATA IN("features", F32T, "nd"), IN("labels", I64T, "n")
#define FIT_ARGS REQ("epochs", 'i'), REQ("batch_size", 'i'), REQ("lr", 'f'), REQ("momentum", 'f'), \
    REQ("weight_decay", 'f'), REQ("sampling", 'i'), OPT("seed", 'K', 0)
#define CLASSIFIER_FIT_ARGS ARGS(CLASSIFIER_DATA, INOUT("weight", F32T, "Cd"), INOUT("bias", F32T, "C"), \
    REQ("loss", 'i'), FIT_ARGS, IN_OPT("prior", F32T, "C"), OPT("alpha", 'f', 0.1), OPT("remine_lambda", 'f', 0.01))
static const lade_binding bindings[] = {
    LOSS(softmax_ce, CE_ARGS, cross_entropy),
    LOSS(logit_adjusted, CE_ARGS, cross_entropy),
    LOSS(focal, CE_ARGS, cross_entropy),
    LOSS(class_balanced, CE_ARGS, cross_entropy),
    LOSS(ldam, CE_ARGS, cross_entropy),
    LOSS(lade_ce, ARGS(BATCH("logits"), IN("prior", F32T, "C"), OUT("grad", F32T, "nC"), OPT("accumulate", 'p', 0)),
         lade_ce),
    LOSS(lader, LADER_ARGS(OPT("alpha", 'f', 1)), lader),
    {"lade_loss", "lade.losses.lade_loss", LADER_ARGS(REQ("alpha", 'f')), NULL, lade_loss, "dAdd",
     "-> (lade_ce + alpha * lader, grad, lade_ce, lader)"},
    {"log_prior", "lade.losses.LogitAdjustedLoss",
     ARGS(IN("prior", F32T, "C"), REQ("tau", 'f'), OPT("eps", 'f', 1e-12), OUT_HIDDEN("out", F32T, "C")), NULL,
     log_prior},
    {"ldam_margins", "lade.losses.LDAMLoss", COUNTS_TO_FLOATS(REQ("max_margin", 'f')), NULL, ldam_margins},
    {"effective_number_weights", "lade.losses.ClassBalancedLoss", COUNTS_TO_FLOATS(REQ("beta", 'f')), NULL,
     effective_number_weights},
    {"prior_from_counts", "lade.priors.prior_from_counts", COUNTS_TO_FLOATS(OPT("eps", 'f', 0)), NULL,
     prior_from_counts},
    {"prior_from_labels", "lade.priors.prior_from_labels",
     ARGS(IN("labels", I64T, "m"), REQ("classes", 'n'), OPT("eps", 'f', 0), OUT_HIDDEN("prior", F32T, "C"),
          OUT_HIDDEN("out", I64T, "C")), bind_classes, prior_from_labels, "A", "-> prior (the counts are dropped)"},
    {"lt_profile", "lade.priors.lt_profile",
     ARGS(REQ("classes", 'n'), REQ("img_max", 'f'), REQ("ratio", 'f'), OPT("profile", 'i', LADE_PROFILE_EXP),
          OUT_HIDDEN("out", I64T, "C")), bind_classes, lt_profile},
    {"check_prior", "lade.priors.check_prior", ARGS(IN("prior", F32T, "..."), OPT("arg", 's', 0)), NULL, check_prior, "",
     "raises unless prior is a valid float32 prior; errors name arg"},
    {"class_counts", "lade.priors.class_counts",
     ARGS(IN("labels", I64T, "m"), REQ("classes", 'n'), OUT_HIDDEN("out", I64T, "C")), bind_classes, class_counts},
    {"lt_subset", "lade.sampling.lt_subset",
     ARGS(IN("labels", I64T, "m"), IN("counts", I64T, "C"), OPT("seed", 'K', 0), OUT_HIDDEN("out", I64T, "k")),
     bind_count_sum, lt_subset},
    {"sample_instance", "lade.sampling.InstanceSampler",
     ARGS(REQ("length", 'n'), SEED_EPOCH, OUT_HIDDEN("out", I64T, "k")), bind_length, sample_instance},
    {"class_aware_length", "lade.sampling.ClassAwareSampler", ARGS(IN("labels", I64T, "m"), REQ("classes", 'i')),
     NULL, class_aware_length, "i"},
    {"sample_class_aware", "lade.sampling.ClassAwareSampler",
     ARGS(IN("labels", I64T, "m"), REQ("classes", 'i'), REQ("length", 'n'), OPT("samples_per_class", 'i', 1),
          SEED_EPOCH, OUT_HIDDEN("out", I64T, "k")), bind_length, sample_class_aware},
    {"sample_by_class", "lade.sampling.epoch_indices",
     ARGS(IN("labels", I64T, "m"), IN("class_prob", F64T, "C"), REQ("length", 'n'), SEED_EPOCH,
          OUT_HIDDEN("out", I64T, "k")), bind_length, sample_by_class},
    {"class_prob_power", "lade.sampling.SquareRootSampler",
     ARGS(IN("counts", I64T, "C"), REQ("q", 'f'), OUT_HIDDEN("out", F64T, "C")), NULL, class_prob_power},
    {"class_prob_progressive", "lade.sampling.ProgressivelyBalancedSampler",
     ARGS(IN("counts", I64T, "C"), REQ("epoch", 'K'), REQ("total_epochs", 'K'), OUT_HIDDEN("out", F64T, "C")), NULL,
     class_prob_progressive},
    {"shift_counts", "lade.sampling.shifted_test_subset",
     ARGS(IN("train_prior", F32T, "C"), REQ("img_max", 'f'), REQ("ratio", 'f'), REQ("direction", 'i'),
          OUT_HIDDEN("out", I64T, "C")), NULL, shift_counts},
    {"first_k_per_class", "lade.sampling.shifted_test_subset",
     ARGS(IN("labels", I64T, "m"), IN("counts", I64T, "C"), OUT_HIDDEN("out", I64T, "k")), bind_count_sum,
     first_k_per_class},
    {"dirichlet_priors", "lade.sampling.dirichlet_priors",
     ARGS(IN("alpha", F64T, "C"), REQ("m", 'n'), OPT("seed", 'K', 0), OUT_HIDDEN("out", F32T, "rC")), bind_rows,
     dirichlet},
    {"pc_adjust", "lade.posthoc.pc_adjust", ADJUST_ARGS, NULL, adjust_logits},
    {"lade_adjust", "lade.posthoc.lade_adjust", ADJUST_ARGS, NULL, adjust_logits},
    {"logit_adjust", "lade.posthoc.logit_adjust", ADJUST_ARGS, NULL, adjust_logits},
    {"softmax", "lade.posthoc.softmax",
     ARGS(IN("logits", F32T, "nC"), OPT("temperature", 'f', 1), IN_OPT("bias", F64T, "C"),
          OUT_INPLACE("out", F32T, "nC")), NULL, softmax},
    {"tau_normalize", "lade.posthoc.tau_normalize",
     ARGS(IN("weights", F32T, "rk"), OPT("tau", 'f', 1), OUT_INPLACE("out", F32T, "rk")), NULL, tau_normalize},
    {"fit_temperature", "lade.posthoc.fit_temperature",
     ARGS(BATCH("logits"), OPT("bias", 'p', 0), OPT("max_iter", 'i', 100), OUT_HIDDEN("offsets", F64T, "C")),
     fit_temperature_infer, fit_temperature, "dAd", "-> (temperature, per-class bias or None, nll)"},
    {"topk_accuracy", "lade.metrics.topk_accuracy",
     ARGS(BATCH("scores"), OPT("k", 'i', 1), OUT_HIDDEN("correct", NPY_UINT8, "n")), NULL, topk_accuracy, "dA",
     "-> (accuracy, per-sample uint8 correct)"},
    {"accuracy", "lade.metrics.accuracy",
     ARGS(BATCH("scores"), OPT("k", 'i', 1), OUT_HIDDEN("correct", NPY_UINT8, "n")), NULL, topk_accuracy, "d"},
    {"predictions", "lade.metrics.predictions", ARGS(IN("scores", F32T, "nC"), OUT_HIDDEN("out", I64T, "n")), NULL,
     argmax},
    {"confusion_matrix", "lade.metrics.confusion_matrix",
     ARGS(IN("predictions", I64T, "n"), IN("labels", I64T, "n"), REQ("classes", 'n'), OUT_HIDDEN("out", I64T, "CC")),
     bind_classes, confusion_matrix},
    {"per_class_accuracy", "lade.metrics.per_class_accuracy",
     ARGS(IN("confusion", I64T, "CC"), OUT_HIDDEN("out", F64T, "C")), NULL, per_class_accuracy},
    {"shot_accuracy", "lade.metrics.shot_accuracy",
     ARGS(IN("per_class_accuracy", F64T, "C"), IN("train_counts", I64T, "C"), REQ("many_above", 'i'),
          REQ("few_below", 'i')), NULL, shot_accuracy, "ddd", "-> (many, medium, few)"},
    {"reliability_diagram", "lade.metrics.reliability_diagram",
     ARGS(BATCH("probs"), REQ("n_bins", 'i'), REQ("variant", 'i'), OUT_HIDDEN("confidence", F64T, "b"),
          OUT_HIDDEN("accuracy", F64T, "b"), OUT_HIDDEN("count", I64T, "b")), reliability_infer, reliability, "dAAA",
     "-> (ece, confidence, accuracy, count), n_bins + 1 bins"},
    {"nll", "lade.metrics.nll", ARGS(BATCH("probs")), NULL, nll_brier, "dd", "-> (nll, brier)"},
    {"brier", "lade.metrics.brier", ARGS(BATCH("probs")), NULL, nll_brier, "dd", "-> (nll, brier)"},
    {"paired_bootstrap", "lade.metrics.paired_bootstrap",
     ARGS(IN("correct_a", NPY_UINT8, "mn"), IN("correct_b", NPY_UINT8, "mn"), REQ("replicates", 'n'),
          REQ("level", 'f'), REQ("seed", 'K'), OUT_HIDDEN("out", F64T, "B")), bind_replicates, paired_bootstrap,
     "dddA", "-> (difference, lo, hi, replicates)"},
    {"reweight", "lade.prior_shift.reweight",
     ARGS(IN("probs", F32T, "nC"), IN("from_prior", F32T, "C"), IN("to_prior", F32T, "C"), OUT("out", F32T, "nC")),
     NULL, reweight},
    {"mean_posterior", "lade.prior_shift.mean_posterior", ARGS(IN("probs", F32T, "nC"), OUT_HIDDEN("out", F32T, "C")),
     NULL, mean_posterior},
    {"em_prior", "lade.prior_shift.em_prior",
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), IN_OPT("row_weight", F64T, "n"),
          REQ("pseudo_count", 'f'), REQ("tol", 'f'), REQ("max_iter", 'i'), OPT("accelerate", 'p', 0),
          OUT_HIDDEN("out", F32T, "C")), NULL, em_prior, "Aibd", "-> (prior, iterations, converged, loglik)"},
    {"tilt_prior", "lade.prior_shift.tilted_prior",
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), IN("tilt_prior", F32T, "C"), REQ("tol", 'f'),
          REQ("max_iter", 'i'), OUT_HIDDEN("out", F32T, "C")), NULL, tilt_prior, "Addib",
     "-> (prior, exponent, loglik, iterations, converged)"},
    {"em_prior_eb", "lade.prior_shift.em_prior_eb",
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), REQ("tol", 'f'), REQ("max_iter", 'i'),
          OUT_HIDDEN("out", F32T, "C")), NULL, em_prior_eb, "Adibd",
     "-> (prior, strength, iterations, converged, loglik)"},
    {"select_prior", "lade.prior_shift.select_prior",
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), IN_OPT("tilt_prior", F32T, "C"),
          REQ("penalty", 'f'), REQ("noise", 'f'), REQ("tol", 'f'), REQ("max_iter", 'i'), OUT_HIDDEN("out", F32T, "C")),
     NULL, select_prior, "Aiidd", "-> (prior, kind, support, loglik, criterion)"},
    {"bbse_prior", "lade.prior_shift.bbse_prior",
     ARGS(BBSE_DATA, REQ("cond_limit", 'f'), REQ("soft", 'p'), REQ("ridge", 'f'), OUT_HIDDEN("out", F32T, "C")),
     NULL, bbse_prior, "Adb", "-> (prior, condition number, fell back)"},
    {"check_adapt", ADAPT,
     ARGS(IN("source_prior", F32T, "C"), IN("test_logits", F32T, "nC"), IN_OPT("calib_logits", F32T, "mC"),
          IN_OPT("calib_labels", I64T, "m")), adapt_infer, check_adapt, ""},
    {"confusion_condition", ADAPT, ARGS(IN("calib_scores", F32T, "mC"), IN("labels", I64T, "m"), REQ("soft", 'p')),
     NULL, confusion_condition, "d"},
    {"prediction_shift_chi2", ADAPT, ARGS(BBSE_DATA), NULL, prediction_shift_chi2, "di", "-> (statistic, dof)"},
    {"em_bootstrap", ADAPT,
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), REQ("replicates", 'n'), REQ("pseudo_count", 'f'),
          REQ("tol", 'f'), REQ("max_iter", 'i'), REQ("seed", 'K'), OUT_HIDDEN("out", F32T, "BC")), bind_replicates,
     em_bootstrap},
    {"bbse_bootstrap", ADAPT,
     ARGS(BBSE_DATA, REQ("replicates", 'n'), REQ("soft", 'p'), REQ("ridge", 'f'), REQ("seed", 'K'),
          OUT_HIDDEN("out", F32T, "BC")), bind_replicates, bbse_bootstrap},
    {"bootstrap_interval", ADAPT,
     ARGS(IN("replicates", F32T, "BC"), REQ("level", 'f'), OUT_HIDDEN("lo", F32T, "C"), OUT_HIDDEN("hi", F32T, "C")),
     NULL, bootstrap_interval},
    {"chi2_sf", ADAPT, ARGS(REQ("x", 'f'), REQ("dof", 'f')), NULL, chi2_sf, "d"},
    {"em_prior_labelled", ADAPT,
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), IN("labelled_counts", I64T, "C"),
          REQ("per_class", 'p'), REQ("pseudo_count", 'f'), REQ("tol", 'f'), REQ("max_iter", 'i'),
          OUT_HIDDEN("out", F32T, "C"), OUT_HIDDEN("pool_prior", F32T, "C")), NULL, em_prior_labelled, "AAib",
     "-> (prior, pool prior, iterations, converged)"},
    {"em_covariance_trace", ADAPT,
     ARGS(IN("probs", F32T, "nC"), IN("source_prior", F32T, "C"), IN("estimate", F32T, "C")), NULL,
     em_covariance_trace, "d"},
    {"bbse_covariance_trace", ADAPT,
     ARGS(IN("calib_scores", F32T, "mC"), IN("labels", I64T, "m"), IN("target_scores", F32T, "nC"),
          IN("estimate", F32T, "C"), REQ("soft", 'p')), NULL, bbse_covariance_trace, "d"},
    {"replicate_variance", ADAPT, ARGS(IN("replicates", F32T, "BC")), NULL, replicate_variance, "d"},
    {"shrink_prior", ADAPT,
     ARGS(IN("estimate", F32T, "C"), IN("anchor", F32T, "C"), REQ("covariance_trace", 'f'),
          OUT_HIDDEN("out", F32T, "C")), NULL, shrink_prior, "Ad", "-> (shrunk prior, weight of the anchor)"},
    {"crt_fit", "lade.decoupled.crt", CLASSIFIER_FIT_ARGS, NULL, classifier_fit, "d",
     "-> mean loss of the last epoch (weight and bias trained in place)"},
    {"lade_fit", "lade.decoupled.lade_retrain", CLASSIFIER_FIT_ARGS, NULL, classifier_fit, "d",
     "-> mean loss of the last epoch (weight and bias trained in place)"},
    {"lws_fit", "lade.decoupled.lws",
     ARGS(CLASSIFIER_DATA, IN("weight", F32T, "Cd"), IN_OPT("bias", F32T, "C"), INOUT("scales", F32T, "C"), FIT_ARGS),
     NULL, lws_fit, "d", "-> mean loss of the last epoch (scales in place)"},
    {"lws_loss", "lade.decoupled.lws_loss",
     ARGS(CLASSIFIER_DATA, IN("weight", F32T, "Cd"), IN_OPT("bias", F32T, "C"), IN("scales", F32T, "C"),
          OUT("grad", F32T, "C")), NULL, lws_loss, "dA", "-> (mean CE, d CE / d scales)"},
    {"tau_select", "lade.decoupled.tau_normalize_select",
     ARGS(CLASSIFIER_DATA, IN("taus", F32T, "t"), IN("weight", F32T, "Cd"), IN_OPT("bias", F32T, "C"),
          OUT_HIDDEN("out", F64T, "t")), NULL, tau_select, "Ai", "-> (balanced accuracy per tau, index of the best)"},
    {NULL},
};

int lade_register_ltmath(PyObject *module) { return lade_add_bindings(module, bindings); }
