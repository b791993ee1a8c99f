/* lade_ltmath.h - long-tail losses, post-hoc adjustment, priors, samplers,
 * metrics and target-prior estimation.
 *
 * Conventions (see ../shared/docs/lade-spec.md §1-§3, §7):
 *   logits  float (n, classes) row-major; labels int64 (n,) in [0, classes).
 *   A "prior" is a float (classes,) vector, every entry > 0, summing to 1 within
 *   1e-3; anything else is LADE_EINVAL with a detail naming the argument.
 *   Non-finite logits give LADE_ENONFINITE, labels out of range LADE_ERANGE.
 *
 * Example (one LADE step, dlogits zeroed by the caller):
 *     double loss;
 *     lade_lade_loss(&loss, NULL, NULL, dlogits, 1.0f, logits, labels, n, C, prior, 0.1, 0.01f,
 *                    LADE_LADER_OFFICIAL);
 */
#ifndef LADE_LTMATH_H
#define LADE_LTMATH_H
#include "lade_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================ losses (losses.c) ==================================
 * Each takes logits (n, classes) and labels (n,), returns the loss in *loss and
 * ADDS scale * dloss/dlogits into dlogits (n, classes) (NULL for the value only),
 * so several losses can share one gradient buffer. */

/* ---- softmax cross-entropy -------------------------------------------------------
 * loss = mean_i [LSE_c z[i,c] - z[i,y_i]] (spec §1.2). */
LADE_API lade_status lade_softmax_ce(double *loss, float *dlogits, float scale, const float *logits,
                                     const int64_t *labels, int n, int classes);

/* ---- generalised cross-entropy ------------------------------------------------------
 * One kernel behind LADE-CE, logit adjustment, focal, class-balanced and LDAM:
 *   t[i,c] = logit_scale * (z[i,c] + offset[c] - [c == y_i] * margin[y_i])
 *   l_i    = LSE_c t[i,c] - t[i,y_i],   p_i = exp(-l_i)
 *   L_i    = w[y_i] * (1 - p_i)^focal_gamma * l_i
 *   loss   = sum_i L_i / D,  D = n (weight_by_sum = 0) or sum_i w[y_i] (weight_by_sum = 1,
 *            PyTorch's weighted-mean convention).
 * NULL offset / margin / class_weight mean 0 / 0 / 1. */
typedef struct {
    const float *offset;       /* (classes) added to every row, e.g. log prior; or NULL */
    const float *margin;       /* (classes) subtracted from the label's logit (LDAM); or NULL */
    const float *class_weight; /* (classes) per-label weight; or NULL */
    float logit_scale;         /* s > 0; 1 for plain losses */
    float focal_gamma;         /* >= 0; 0 is cross-entropy */
    int weight_by_sum;         /* 0: divide by n; 1: divide by the batch's total weight */
} lade_ce_config;

/* A config equal to plain softmax cross-entropy. */
LADE_API lade_ce_config lade_ce_config_default(void);
LADE_API lade_status lade_cross_entropy(double *loss, float *dlogits, float scale, const float *logits,
                                        const int64_t *labels, int n, int classes, const lade_ce_config *cfg);

/* LADE-CE = PriorCE = Balanced Softmax (spec §1.3): CE on z + log(prior + 1e-9). */
LADE_API lade_status lade_lade_ce(double *loss, float *dlogits, float scale, const float *logits,
                                  const int64_t *labels, int n, int classes, const float *prior);

/* ---- LADER regulariser (spec §1.4, §1.6) ----------------------------------------
 * OFFICIAL: the importance offset of column c is log(1/C + 1e-9) - log(prior[c] + 1e-9)
 *           (the column class, as the official code does, spec §7.1).
 * PAPER:    sample i's term is weighted by p_u(y_i)/p_s(y_i) (the paper/poster form).
 * Class weights are prior[c] in both; the loss is a prior-weighted sum over all classes,
 * absent classes included. */
typedef enum { LADE_LADER_OFFICIAL = 0, LADE_LADER_PAPER = 1 } lade_lader_form;
LADE_API lade_status lade_lader(double *loss, float *dlogits, float scale, const float *logits,
                                const int64_t *labels, int n, int classes, const float *prior,
                                float remine_lambda, lade_lader_form form);

/* ---- the LADE loss (spec §1.5) -------------------------------------------------------
 * loss = LADE-CE + alpha * LADER (remine_lambda and form as in lade_lader; alpha finite and
 * >= 0, added in double); the gradient added is what lade_lade_ce with `scale` and then
 * lade_lader with (float)(scale * alpha) add. lade_ce and lader (each may be NULL) receive the
 * two terms. */
LADE_API lade_status lade_lade_loss(double *loss, double *lade_ce, double *lader, float *dlogits, float scale,
                                    const float *logits, const int64_t *labels, int n, int classes,
                                    const float *prior, double alpha, float remine_lambda, lade_lader_form form);

/* ---- helpers that turn counts into loss parameters ---------------------------------- */
/* out[c] = tau * log(prior[c] + eps) (LADE-CE uses tau 1, eps 1e-9; logit adjustment tau, 1e-12). */
LADE_API lade_status lade_log_prior(float *out, const float *prior, int classes, float tau, float eps);
/* LDAM margins (Cao et al. 2019): m_c proportional to counts[c]^(-1/4), largest = max_margin. */
LADE_API lade_status lade_ldam_margins(float *out, const int64_t *counts, int classes, float max_margin);
/* Class-balanced weights by effective number (Cui et al. 2019): w_c = (1 - beta) / (1 - beta^n_c),
 * normalised so that sum_c w_c = classes. beta in [0, 1); beta = 0 gives all ones. */
LADE_API lade_status lade_effective_number_weights(float *out, const int64_t *counts, int classes, double beta);

/* ============================ priors (priors.c) ==================================== */
typedef enum { LADE_PROFILE_EXP = 0, LADE_PROFILE_STEP = 1 } lade_profile;
/* CIFAR-LT per-class counts (spec §3.1): EXP n_c = int(img_max * ratio^(c/(C-1)));
 * STEP: the first floor(C/2) classes get int(img_max), the rest int(img_max * ratio).
 * ratio in (0, 1] is the tail/head fraction (0.01 for "imbalance 100"). */
LADE_API lade_status lade_lt_profile(int64_t *counts, int classes, double img_max, double ratio,
                                     lade_profile profile);
/* counts[c] = number of labels equal to c. */
LADE_API lade_status lade_class_counts(int64_t *counts, const int64_t *labels, size_t n, int classes);
/* prior[c] = max(counts[c], eps) / sum_k max(counts[k], eps). eps = 0 makes a zero count an error
 * (LADE_EINVAL naming the class); eps > 0 is the documented floor, in units of samples. */
LADE_API lade_status lade_prior_from_counts(float *prior, const int64_t *counts, int classes, double eps);
/* Multi-label (independent sigmoid outputs): "marginals" are a float (labels,) vector, marginals[j] =
 * P(y_j = 1), every entry in the open interval (0, 1) (they need not sum to anything); 0, 1 or a
 * non-finite entry is LADE_EINVAL / LADE_ENONFINITE with a detail naming `arg` and the index.
 * Indicator matrices ("targets") are uint8 (n, labels) of 0 and 1. */
LADE_API lade_status lade_check_marginals(const float *marginals, int labels, const char *arg);
/* marginals[j] = (count_j + a) / (n + 2 a), count_j the rows with targets[i,j] = 1 (a = pseudo_count,
 * an add-a estimate: Beta(a, a) smoothing). a = 0 makes a label that is never or always positive an
 * error (LADE_EINVAL naming it: its logit would be infinite); a > 0 is the documented smoothing. */
LADE_API lade_status lade_label_marginals(float *marginals, const uint8_t *targets, size_t n, int labels,
                                          double pseudo_count);
/* Validates a prior (see the top of this header); `arg` names it in the error detail. */
LADE_API lade_status lade_check_prior(const float *prior, int classes, const char *arg);
/* The arrays of lade.prior_shift.adapt, checked before any work: source_prior a prior, test_logits
 * (n, classes) finite, and when calib_logits is not NULL, calib_logits (m, classes) finite with
 * calib_labels (m) in range. The detail names the argument. */
LADE_API lade_status lade_check_adapt(const float *source_prior, const float *test_logits, int n, int classes,
                                      const float *calib_logits, const int64_t *calib_labels, int m);

/* The arrays of lade.prior_shift.adapt_multilabel, checked before any work: source_marginals marginals
 * (see lade_check_marginals), test_logits (n, labels) finite. */
LADE_API lade_status lade_check_multilabel_adapt(const float *source_marginals, const float *test_logits, int n,
                                                 int labels);

/* ============================ sampling (sampling.c) ================================
 * Every function draws from a lade_rng seeded with lade_rng_seed(&r, seed, stream), so
 * a result is a pure function of its arguments. */

/* Long-tailed subset of a dataset: for each class c ascending, its indices in stored
 * order are shuffled (stream c of `seed`) and the first counts[c] kept. out (sum counts)
 * is grouped by class. A class with fewer than counts[c] samples is LADE_ERANGE. */
LADE_API lade_status lade_lt_subset(int64_t *out, size_t out_len, const int64_t *labels, size_t n,
                                    int classes, const int64_t *counts, uint64_t seed);

/* Instance sampler: lade_epoch_permutation, the order the loader gives without indices. */
LADE_API lade_status lade_sample_instance(int64_t *out, size_t n, uint64_t seed, uint64_t epoch);
/* Class-aware sampler (spec §3.5): out_len = max_count * number of non-empty classes
 * (lade_class_aware_length). Classes are visited in a shuffled cyclic order (reshuffled at
 * each wrap); each visit emits samples_per_class consecutive draws from the class's own
 * cyclic shuffled index list (reshuffled at each wrap). Unlike the official sampler, whose
 * iterators run on across epochs, every epoch restarts from a state seeded by (seed, epoch). */
LADE_API lade_status lade_class_aware_length(size_t *out_len, const int64_t *labels, size_t n, int classes);
LADE_API lade_status lade_sample_class_aware(int64_t *out, size_t out_len, const int64_t *labels, size_t n,
                                             int classes, int samples_per_class, uint64_t seed,
                                             uint64_t epoch);
/* Class-probability sampler: each draw picks class c with probability class_prob[c], then a
 * sample of that class uniformly (with replacement). Classes without samples must have
 * probability 0. */
LADE_API lade_status lade_sample_by_class(int64_t *out, size_t out_len, const int64_t *labels, size_t n,
                                          int classes, const double *class_prob, uint64_t seed,
                                          uint64_t epoch);
/* Class probabilities for lade_sample_by_class:
 *   power:       p_c proportional to counts[c]^q (q = 1/2 square-root, 0 class-balanced, 1 instance);
 *   progressive: (1 - t) * counts/N + t / K with t = epoch / (total_epochs - 1) clipped to [0, 1]
 *                (Kang et al. 2020, "progressively balanced"); K = number of non-empty classes.
 * Empty classes get 0. */
LADE_API lade_status lade_class_prob_power(double *prob, const int64_t *counts, int classes, double q);
LADE_API lade_status lade_class_prob_progressive(double *prob, const int64_t *counts, int classes,
                                                 uint64_t epoch, uint64_t total_epochs);

/* Shifted test sets (spec §2.3). Classes are ranked by train_prior, largest first; ties keep
 * the lower class index first (stable). ratio >= 1 is the imbalance (50 means 1/50).
 * FORWARD rank k gets int(img_max * (1/ratio)^(k/(C-1))), BACKWARD int(img_max *
 * (1/ratio)^((C-1-k)/(C-1))), UNIFORM int(img_max). */
typedef enum { LADE_SHIFT_FORWARD = 0, LADE_SHIFT_BACKWARD = 1, LADE_SHIFT_UNIFORM = 2 } lade_shift_direction;
LADE_API lade_status lade_shift_counts(int64_t *counts, const float *train_prior, int classes, double img_max,
                                       double ratio, lade_shift_direction direction);
/* Keeps the first counts[c] samples of every class in stored order; out has sum(counts)
 * entries, ascending. A class with too few samples is LADE_ERANGE. */
LADE_API lade_status lade_first_k_per_class(int64_t *out, size_t out_len, const int64_t *labels, size_t n,
                                            int classes, const int64_t *counts);

/* Random priors: out (m, classes) rows from Dirichlet(alpha) (alpha (classes,) > 0, stream =
 * row). Entries are floored at 1e-12 and rows renormalised so every prior has a finite log. */
LADE_API lade_status lade_dirichlet(float *out, int m, int classes, const double *alpha, uint64_t seed);

/* ============================ post-hoc (posthoc.c) ================================= */
/* out[i,c] = z[i,c] - source_tau * log(source_prior[c]) + log(target_prior[c]).
 * A NULL prior skips its term: PC Softmax = (ps, 1, pt); LADE/Balanced Softmax = (NULL, 0, pt);
 * Menon's post-hoc logit adjustment = (ps, tau, NULL or pt). out may equal logits. */
LADE_API lade_status lade_adjust_logits(float *out, const float *logits, int n, int classes,
                                        const float *source_prior, float source_tau, const float *target_prior);
/* out = softmax(logits / temperature + bias) row-wise (bias may be NULL). out may equal logits. */
LADE_API lade_status lade_softmax(float *out, const float *logits, int n, int classes, double temperature,
                                  const double *bias);
/* tau-normalisation (Kang et al. 2020): out[c,:] = w[c,:] / ||w[c,:]||_2^tau, rows with zero norm kept. */
LADE_API lade_status lade_tau_normalize(float *out, const float *weights, int rows, int cols, float tau);
/* Fits temperature scaling (bias == NULL) or bias-corrected temperature scaling (bias (classes,),
 * Alexandari et al. 2020) by minimising the NLL of softmax(logits / T + bias) with Newton's
 * method (damped, convex in (1/T, bias)). Returns T in *temperature, the biases (mean zero) in
 * bias, the final NLL in *nll. Cost O(n C^2) per iteration with bias. */
LADE_API lade_status lade_fit_temperature(double *temperature, double *bias, double *nll, const float *logits,
                                          const int64_t *labels, int n, int classes, int max_iter);

/* Multi-label prior correction, label by label (the per-label PC Softmax): with logit(p) = log p - log(1 - p),
 *   out[i,j] = z[i,j] - logit(source_marginals[j]) + logit(target_marginals[j]).
 * A NULL marginal vector skips its term (the balanced marginal 0.5, whose logit is 0): target NULL
 * corrects to balanced labels. probabilities != 0: out = sigmoid of that instead, 1 / (1 + e^-t) for
 * t >= 0 and e^t / (1 + e^t) below (no overflow for any finite t). Computed in double, rounded once.
 * out may equal logits. */
LADE_API lade_status lade_adjust_logodds(float *out, const float *logits, int n, int labels,
                                         const float *source_marginals, const float *target_marginals,
                                         int probabilities);

/* ============================ decoupled second stage (decoupled.c) ================
 * Kang et al. (ICLR 2020) on saved penultimate features (n, dim) float32 and labels (n,):
 * the classifier logits are features @ weight^T + bias, weight (classes, dim), bias (classes).
 * Training runs `epochs` epochs of SGD (PyTorch semantics, weight decay on every trained
 * parameter) with the learning rate of epoch e (0-based) lr * (1 + cos(pi e / epochs)) / 2.
 * Epoch e visits n rows in consecutive batches of batch_size (the last one smaller):
 *   INSTANCE:       lade_sample_instance(rows, n, seed, e), a permutation;
 *   CLASS_BALANCED: lade_sample_by_class(rows, n, labels, n, classes, p, seed, e) with
 *                   p = lade_class_prob_power(counts, classes, 0) (classes without rows get 0).
 * The batch loss is softmax CE or, for LADE, lade_lade_loss (official form). */
typedef enum { LADE_SAMPLE_INSTANCE = 0, LADE_SAMPLE_CLASS_BALANCED = 1 } lade_classifier_sampling;
typedef enum { LADE_CLASSIFIER_CE = 0, LADE_CLASSIFIER_LADE = 1 } lade_classifier_loss;
typedef struct {
    int epochs, batch_size;
    float lr, momentum, weight_decay;
    lade_classifier_sampling sampling;
    lade_classifier_loss loss;
    const float *prior;        /* (classes) the training prior, for the LADE loss; else NULL */
    float alpha, remine_lambda; /* LADE loss */
    uint64_t seed;
} lade_classifier_config;
/* The LADE loss's alpha and remine_lambda of the CIFAR recipe: the one owner of these defaults
 * (lade._C's lade_fit default from them; lade/losses.py LADE_DEFAULTS, which the CLI and the API
 * read, is held to them by a test). */
#define LADE_DEFAULT_ALPHA 0.1
#define LADE_DEFAULT_REMINE_LAMBDA 0.01
/* cRT's recipe: 10 epochs, batch 512, lr 0.2, momentum 0.9, weight decay 5e-4, class-balanced, CE
 * (alpha and remine_lambda: the defaults above). */
LADE_API lade_classifier_config lade_classifier_config_default(void);

/* cRT (class-balanced sampling, CE) or a LADE-loss re-training (instance sampling, LADE): trains
 * weight and bias in place from their given values; *last_epoch_loss is the mean batch loss of
 * the last epoch (may be NULL). On failure weight and bias are unchanged. */
LADE_API lade_status lade_classifier_fit(float *weight, float *bias, double *last_epoch_loss, const float *features,
                                         const int64_t *labels, int n, int dim, int classes,
                                         const lade_classifier_config *cfg);
/* LWS: logits[i,c] = scales[c] * (features[i] . weight[c] + bias[c]) with weight and bias fixed
 * (bias may be NULL). lade_lws_loss gives the mean CE over all n rows and, when dscales is not
 * NULL, overwrites dscales (classes) with its gradient. lade_lws_fit trains scales in place
 * (cfg->loss must be CE). */
LADE_API lade_status lade_lws_loss(double *loss, float *dscales, const float *features, const int64_t *labels, int n,
                                   int dim, int classes, const float *weight, const float *bias, const float *scales);
LADE_API lade_status lade_lws_fit(float *scales, double *last_epoch_loss, const float *features,
                                  const int64_t *labels, int n, int dim, int classes, const float *weight,
                                  const float *bias, const lade_classifier_config *cfg);
/* tau-normalisation's choice of tau: for each taus[t], the balanced accuracy (mean over the classes
 * present in labels of their top-1 accuracy) of features @ lade_tau_normalize(weight, tau)^T + bias
 * (bias kept, may be NULL; so tau = 0 is the classifier as trained). *best is the first t with the
 * highest balanced accuracy. */
LADE_API lade_status lade_tau_select(double *balanced_accuracy, int *best, const float *taus, int num_taus,
                                     const float *features, const int64_t *labels, int n, int dim, int classes,
                                     const float *weight, const float *bias);

/* ============================ metrics (metrics.c) ================================== */
/* Top-k: sample i is correct when its label is among the first k of a descending sort of its
 * scores with ties broken by lower class index (so k = 1 is numpy's argmax). correct (n,) may be NULL. */
LADE_API lade_status lade_topk_accuracy(double *accuracy, uint8_t *correct, const float *scores,
                                        const int64_t *labels, int n, int classes, int k);
/* predictions[i] = first argmax of row i. */
LADE_API lade_status lade_argmax(int64_t *predictions, const float *scores, int n, int classes);
/* confusion (classes, classes), row = true label, column = prediction; overwritten. */
LADE_API lade_status lade_confusion_matrix(int64_t *confusion, const int64_t *predictions,
                                           const int64_t *labels, size_t n, int classes);
/* Per-class accuracy from a confusion matrix; NaN for classes absent from the labels. */
LADE_API lade_status lade_per_class_accuracy(double *accuracy, const int64_t *confusion, int classes);
/* Many / medium / few (spec §2.2): mean per-class accuracy over classes with train count
 * > many_above / within [few_below, many_above] / < few_below, present in the labels
 * (per_class_acc not NaN). A group without such classes gives NaN. out[3]. */
LADE_API lade_status lade_shot_accuracy(double *out, const double *per_class_acc, const int64_t *train_counts,
                                        int classes, int64_t many_above, int64_t few_below);

/* Reliability bins on top-label confidence (max prob) and correctness (argmax == label).
 * STANDARD: nbins bins (lo, hi] (Guo et al. 2017; a confidence of 0 goes to bin 0).
 * SPEC20:   spec §2.4 (Google uncertainty-metrics): bin = number of upper edges k/nbins
 *           (k = 1..nbins) <= confidence, so [lo, hi) plus an extra bin for exactly 1.0;
 *           counts carry an eps of 2.2e-16 in the ECE. Arrays have nbins + 1 entries (the
 *           last is always 0 for STANDARD). conf_mean/acc_mean are 0 for empty bins. */
typedef enum { LADE_BINS_STANDARD = 0, LADE_BINS_SPEC20 = 1 } lade_bin_mode;
/* nbins in [1, LADE_MAX_BINS] (the arrays' size, nbins + 1, is known before the call), else LADE_EINVAL. */
#define LADE_MAX_BINS 100000
LADE_API lade_status lade_reliability_check_bins(int nbins);
LADE_API lade_status lade_reliability(double *ece, double *conf_mean, double *acc_mean, int64_t *count,
                                      const float *probs, const int64_t *labels, int n, int classes,
                                      int nbins, lade_bin_mode mode);
/* NLL = mean -log(clip(p_y, 1e-15, 1)); Brier = mean (sum_c p_c^2 - 2 p_y + 1). */
LADE_API lade_status lade_nll_brier(double *nll, double *brier, const float *probs, const int64_t *labels,
                                    int n, int classes);

/* Multi-label metrics of logits (n, labels) (sigmoid outputs) against targets (n, labels) 0/1, per label j:
 *   nll[j]      = mean_i softplus(z) - y z (binary cross-entropy from the logit, finite for any finite z);
 *   brier[j]    = mean_i (sigmoid(z) - y)^2;
 *   accuracy[j] = mean_i [pred == y], pred = sigmoid(z) >= threshold (z >= logit(threshold));
 *   f1[j]       = 2 TP / (2 TP + FP + FN) of pred, NaN when the label is neither present nor predicted.
 * mean[4] = (mean nll, mean Brier, mean accuracy, macro-F1 = mean of the f1 that are not NaN, NaN if none).
 * threshold in (0, 1). A per-label shift of the logits leaves each label's ranking (AP, AUC) unchanged:
 * it moves only thresholded and calibration metrics. */
LADE_API lade_status lade_multilabel_metrics(double *nll, double *brier, double *accuracy, double *f1, double *mean,
                                             const float *logits, const uint8_t *targets, int n, int labels,
                                             double threshold);

/* Paired bootstrap of a difference in accuracy. correct_a and correct_b (models, n) hold 0/1: whether
 * methods a and b got test sample i right, for `models` independently trained models each (seeds).
 * *difference = mean over models of (accuracy_a - accuracy_b). A replicate redraws the n samples with
 * replacement, the same draw for every model and both methods (hence paired), so it keeps the seed
 * spread and adds the test-set noise. replicates (num_boot,); [*lo, *hi] the central `level`
 * percentile interval. Replicate r draws from stream r of `seed`: the result does not depend on threads. */
LADE_API lade_status lade_paired_bootstrap(double *difference, double *lo, double *hi, double *replicates,
                                           int num_boot, const uint8_t *correct_a, const uint8_t *correct_b,
                                           int models, int n, double level, uint64_t seed);

/* ============================ prior shift (prior_shift.c) ========================== */
/* EM re-estimation of the target prior (Saerens et al. 2002). source_probs (n, classes) are
 * calibrated source posteriors of unlabelled target samples, source_prior the prior they
 * embody. Iterates p_t <- (sum_i w_i normalize(p_i * p_t / p_s) + a) / (sum_i w_i + classes a)
 * from p_t = p_s until the largest change is below tol; pseudo_count a = 0 is maximum
 * likelihood, a > 0 the MAP estimate under a Dirichlet(1 + a) prior (keeps every class > 0). row_weight (n,) may be NULL (all 1; the bootstrap uses counts).
 * Writes target_prior (floored at 1e-8 and renormalised, so its log is finite), *iterations,
 * *converged; *loglik = sum_i w_i log sum_c p_ic p_t/p_s at the estimate (0 at p_t = p_s; with
 * a = 0, 2 * loglik is the likelihood-ratio statistic of "no shift", Saerens et al. §3.3,
 * chi-square with C-1 dof). */
LADE_API lade_status lade_em_prior_map(float *target_prior, int *iterations, int *converged, double *loglik,
                                       const float *source_probs, const double *row_weight, int n, int classes,
                                       const float *source_prior, double pseudo_count, double tol, int max_iter);
/* lade_em_prior_map accelerated by SQUAREM (Varadhan & Roland 2008): two EM maps, an extrapolation
 * (replaced by the second map when it leaves the simplex) and a stabilising map per step; the
 * same fixed point in several times fewer passes over the rows when EM is slow (many classes).
 * *iterations counts EM maps; convergence: the last map moved no class by tol or more. */
LADE_API lade_status lade_em_prior_squarem(float *target_prior, int *iterations, int *converged, double *loglik,
                                           const float *source_probs, const double *row_weight, int n, int classes,
                                           const float *source_prior, double pseudo_count, double tol, int max_iter);
/* lade_em_prior_map with pseudo_count = 0 (maximum likelihood). */
LADE_API lade_status lade_em_prior(float *target_prior, int *iterations, int *converged, double *loglik,
                                   const float *source_probs, const double *row_weight, int n, int classes,
                                   const float *source_prior, double tol, int max_iter);
/* The maximum-likelihood target prior within the one-parameter tilted family
 * p_g ∝ source_prior * tilt_prior^g: the long-tail direction, along which the head classes (large
 * tilt_prior) grow more common (g > 0) or less (g < 0); g = 0 is no shift. source_probs as for
 * lade_em_prior. g is found by safeguarded Newton on the likelihood's derivative, bracketed in
 * |g| <= 30 / (max log tilt_prior - min log tilt_prior) (beyond it the family's prior ratio exceeds
 * e^30), until a step moves g by less than tol. A constant tilt_prior (uniform) leaves the family
 * one prior: g = 0. Writes target_prior (floored at 1e-8 and renormalised), *exponent = g,
 * *loglik = sum_i log sum_c p_ic p_g,c / source_prior_c (0 at g = 0: 2 * loglik is the
 * likelihood-ratio statistic of "no shift" within the family, chi-square with 1 dof), *iterations
 * and *converged. */
LADE_API lade_status lade_tilt_prior(float *target_prior, double *exponent, double *loglik, int *iterations,
                                     int *converged, const float *source_probs, int n, int classes,
                                     const float *source_prior, const float *tilt_prior, double tol, int max_iter);
/* prior = mean of the rows of probs (n, classes), floored at 1e-8 and renormalised: the prior
 * that calibrated posteriors embody on the data they were calibrated on (Alexandari et al.
 * 2020 use it as the EM reference, so EM's fixed point without shift is exactly "no shift"). */
LADE_API lade_status lade_mean_posterior(float *prior, const float *probs, int n, int classes);
/* BBSE (Lipton et al. 2018) as a constrained least-squares problem. calib_scores (m, classes)
 * with labels on labelled source data give the conditional confusion M[i][j] = P(pred = i | y = j)
 * (hard: argmax counts; soft: mean score i over the samples of class j); target_scores (n, classes)
 * give mu[i] = P(pred = i). target_prior = argmin over the probability simplex of
 * 0.5 sum_i (M q - mu)_i^2 / v_i + 0.5 ridge |q - source_prior|^2 (exact, by an active-set
 * method; of several minimisers, the one nearest source_prior), v_i = (M p_cal)_i the calibration frequency of prediction i floored at 0.01 /
 * classes (a Pearson chi-square distance: rare predictions count as much as frequent ones), so a
 * singular or noisy M still yields a prior instead of negative weights; ridge > 0 shrinks
 * towards no shift (as RLLS, Azizzadenesheli et al. 2019). Floored at 1e-8 and renormalised.
 * *cond = 1-norm condition number of M (INFINITY if singular, e.g. a class absent from
 * calib_labels or, hard, never predicted); when it exceeds cond_limit, *fell_back = 1 and
 * target_prior = source_prior (no shift). */
LADE_API lade_status lade_bbse_prior(float *target_prior, double *cond, int *fell_back, const float *calib_scores,
                                     const int64_t *calib_labels, int m, const float *target_scores, int n,
                                     int classes, const float *source_prior, int soft, double ridge,
                                     double cond_limit);
/* RLLS (Azizzadenesheli et al. 2019), regularised BBSE: with A[i][j] = P(pred = i, y = j) the joint
 * confusion on the labelled calibration data (soft or hard as in lade_bbse_prior) and mu the target's
 * mean prediction, the importance weights w = argmin over w >= 0 of |A w - mu|_2 + rho |w - 1|_2, and
 * target_prior = w * p_cal renormalised (p_cal the calibration label frequencies; floored at 1e-8).
 * rho = reg * 3 (2 L / (3 m) + sqrt(2 L / m)), L = log(2 classes / delta): the paper's bound on the
 * confusion matrix's estimation error, scaled by reg; *rho returns it. reg = 0 is non-negative least
 * squares on the weights; a large reg gives w = 1 (target_prior = p_cal, no shift). Exact up to
 * the bisection's 1e-9 relative tolerance on the ridge parameter. */
LADE_API lade_status lade_rlls_prior(float *target_prior, double *rho, const float *calib_scores,
                                     const int64_t *calib_labels, int m, const float *target_scores, int n,
                                     int classes, int soft, double reg, double delta);
/* *cond = the 1-norm condition number of the conditional confusion M of lade_bbse_prior
 * (INFINITY if singular): how well the classifier separates the classes on the labelled
 * calibration data, hence how well any target prior is identifiable from its predictions. */
LADE_API lade_status lade_confusion_condition(double *cond, const float *calib_scores, const int64_t *calib_labels,
                                              int m, int classes, int soft);
/* out[i,c] = probs[i,c] * to_prior[c] / from_prior[c], renormalised per row: posteriors
 * under one prior moved to another (Bayes' rule with p(x|y) fixed). */
LADE_API lade_status lade_reweight_probs(float *out, const float *probs, int n, int classes, const float *from_prior,
                                         const float *to_prior);
/* Is there a shift? Pearson chi-square of the target's predicted-class counts (argmax of
 * target_scores) against those expected without shift, n * sum_j M[i][j] source_prior[j],
 * with the hard conditional confusion M as in BBSE. *dof = (cells with expectation > 0) - 1. The
 * expected counts' own sampling error (M from m_j calibration rows per class) is added to each
 * cell's Pearson denominator, n e_i + n^2 sum_j p_j^2 M_ij (1 - M_ij) / m_j, so that the test
 * keeps its level when m is not far above n. */
LADE_API lade_status lade_prediction_shift_chi2(double *statistic, int *dof, const float *calib_scores,
                                                const int64_t *calib_labels, int m, const float *target_scores,
                                                int n, int classes, const float *source_prior);
/* Bootstrap of either estimator: replicates resample the target rows (and, for BBSE, the
 * calibration rows) with replacement; replicate b uses stream b of seed, so the result does
 * not depend on the thread count. Writes replicates (num_boot, classes). */
LADE_API lade_status lade_em_bootstrap(float *replicates, int num_boot, const float *source_probs, int n,
                                       int classes, const float *source_prior, double pseudo_count, double tol,
                                       int max_iter, uint64_t seed);
LADE_API lade_status lade_bbse_bootstrap(float *replicates, int num_boot, const float *calib_scores,
                                         const int64_t *calib_labels, int m, const float *target_scores, int n,
                                         int classes, const float *source_prior, int soft, double ridge,
                                         uint64_t seed);
/* Per-class percentile interval of replicates (num_boot, classes): lo/hi at (1-level)/2 and
 * (1+level)/2 (linear interpolation, as numpy.percentile's default). */
LADE_API lade_status lade_bootstrap_interval(float *lo, float *hi, const float *replicates, int num_boot,
                                             int classes, double level);
/* EM with a few labelled target samples besides the n unlabelled ones (source_probs, as in
 * lade_em_prior_map); labelled_counts[c] = how many of class c. A labelled sample's likelihood
 * p_t(y) p(x|y) depends on the prior only through p_t(y), so its label is a hard count in the
 * M step. per_class = 0 (the labelled samples are random draws from the target, like the
 * unlabelled ones): p <- (sum_i r_i(p) + counts + a) / (n + total + C a), and the unlabelled rows'
 * prior is p. per_class = 1 (up to k labelled per class, picked by label from the target set):
 * the unlabelled rows are the rest of the set, whose prior q differs from the whole set's p
 * (q_c = (N p_c - counts_c) / n); EM (pseudo count a) estimates q from them and
 * p = (n q + counts) / (n + total). target_prior gets p, pool_prior the unlabelled rows' prior
 * (the one to adapt them to). Both floored at 1e-8 and renormalised. */
LADE_API lade_status lade_em_prior_labelled(float *target_prior, float *pool_prior, int *iterations, int *converged,
                                            const float *source_probs, int n, int classes, const float *source_prior,
                                            const int64_t *labelled_counts, int per_class, double pseudo_count,
                                            double tol, int max_iter);
/* Uncertainty of an estimated prior, as the trace of its covariance on the simplex.
 * EM: the inverse observed Fisher information of sum_i log sum_c probs_ic estimate_c /
 * source_prior_c at `estimate`, restricted to sum p = 1 (INFINITY when singular: the prior is
 * not identifiable from these posteriors). BBSE: the delta method for q = M^-1 mu,
 * Cov(q) = M^-1 (Cov(mu) + sum_j q_j^2 Cov(M_j)) M^-T with the sample covariances of the target
 * scores (n rows) and of each class's calibration scores (m_j rows); q = estimate (INFINITY when
 * M is singular). */
LADE_API lade_status lade_em_covariance_trace(double *trace, const float *source_probs, int n, int classes,
                                              const float *source_prior, const float *estimate);
LADE_API lade_status lade_bbse_covariance_trace(double *trace, const float *calib_scores,
                                                const int64_t *calib_labels, int m, const float *target_scores,
                                                int n, int classes, const float *estimate, int soft);
/* *trace = sum over classes of the variance (divisor num_boot) of replicates (num_boot >= 2,
 * classes): the bootstrap estimate of tr Cov of an estimated prior. */
LADE_API lade_status lade_replicate_variance(double *trace, const float *replicates, int num_boot, int classes);
/* Linear shrinkage of estimate towards anchor: out = w anchor + (1 - w) estimate with
 * w = min(1, covariance_trace / |estimate - anchor|^2), the plug-in of the weight that minimises
 * the expected squared error of an unbiased estimate with that covariance (James-Stein /
 * Ledoit-Wolf form). *weight = w (1 when estimate = anchor or the trace is infinite). */
LADE_API lade_status lade_shrink_prior(float *out, double *weight, const float *estimate, const float *anchor,
                                       int classes, double covariance_trace);
/* The prior's smoothing strength chosen from the data (empirical Bayes, in the spirit of MAPLS, Ye et
 * al. 2024): the target prior is taken as a draw from Dirichlet(A source_prior). First the
 * maximum-likelihood EM estimate p_ml (lade_em_prior_map, pseudo count 0) gives the soft counts
 * s = n p_ml; A maximises their Dirichlet-multinomial evidence
 * log G(A) - log G(A + n) + sum_c [log G(A r_c + s_c) - log G(A r_c)], r = source_prior, over
 * A in [0.01, 1e8] (a grid in log A refined by golden-section search); then EM runs again with the
 * per-class pseudo counts A r_c (p <- (sum_i resp_i(p) + A r) / (n + A)). Counts spread around r as
 * a multinomial draw would be give a large A (the estimate stays near no shift), counts far more
 * dispersed (a sparse or strongly shifted target) a small one (little smoothing). The soft counts of
 * a classifier that confuses classes are noisier than label counts, so A errs small (too little
 * smoothing) on weak models. Writes target_prior (floored at 1e-8), *strength = A, *iterations and
 * *converged of the second EM and *loglik at its estimate (as lade_em_prior_map). */
LADE_API lade_status lade_em_prior_eb(float *target_prior, double *strength, int *iterations, int *converged,
                                      double *loglik, const float *source_probs, int n, int classes,
                                      const float *source_prior, double tol, int max_iter);
/* The estimate's family chosen by an information criterion, -2 loglik / noise + penalty * parameters
 * (penalty log n: BIC; 2: AIC), smallest wins, ties to fewer parameters. Candidates: no shift
 * (source_prior, 0 parameters, *kind 0); the tilted family of lade_tilt_prior (1, *kind 1; skipped
 * when tilt_prior is NULL); the maximum-likelihood prior restricted to the j classes the free
 * estimate ranks first, for j = 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, ... (each the previous times
 * 1.25, rounded down, at least one more) below classes (j - 1, *kind 2, *support j; the others are
 * floored at 1e-8); the free maximum-likelihood prior (classes - 1, *kind 3). loglik is that of
 * lade_em_prior_map; noise >= 1 divides it as in the shift test of lade.prior_shift.adapt (the
 * reference prior's own sampling noise). Writes target_prior, *kind, *support (classes unless
 * sparse), *loglik and *criterion of the winner. tol, max_iter: of each fit. */
LADE_API lade_status lade_select_prior(float *target_prior, int *kind, int *support, double *loglik, double *criterion,
                                       const float *source_probs, int n, int classes, const float *source_prior,
                                       const float *tilt_prior, double penalty, double noise, double tol,
                                       int max_iter);
/* Does the sparse estimate of lade_select_prior predict unseen target rows? K-fold cross-validation on
 * the target rows themselves: the rows are split into `folds` folds by a permutation seeded with
 * `seed`; on each fold's complement the sparse estimate (lade_select_prior without the tilted family,
 * penalty log of the complement's rows, `noise` as there) and the free estimate (lade_em_prior_map with
 * pseudo_count) are fitted, and each scores the fold's rows by their log-likelihood
 * sum_i log sum_c (p_c / source_prior_c) probs[i][c]. scores[0]: the sparse estimate's sum over the folds
 * (-INFINITY when the criterion does not pick a sparse prior on some fold), scores[1]: the free one's. */
LADE_API lade_status lade_sparse_cv(double *scores, const float *source_probs, int n, int classes,
                                    const float *source_prior, double pseudo_count, double noise, int folds,
                                    uint64_t seed, double tol, int max_iter);
/* Per-label EM for multi-label outputs (Saerens et al. 2002 with two classes, run for every label on its
 * own): probs (n, labels) are calibrated sigmoid probabilities q[i,j] = P(y_j = 1 | x_i) of unlabelled
 * target rows under source_marginals. For each label, from p = source_marginals[j] (r1 = p / p_s,
 * r0 = (1 - p) / (1 - p_s)):
 *   p <- (sum_i r1 q / (r1 q + r0 (1 - q)) + a) / (n + 2 a)
 * (a = pseudo_count: 0 maximum likelihood, > 0 the MAP under Beta(1 + a, 1 + a)), each iterate clamped
 * to [1e-7, 1 - 1e-7] (so its logit is finite in float), until it moves by less than tol or max_iter
 * maps. Writes target_marginals, per label iterations[j], converged[j] (0/1) and
 * loglik[j] = sum_i log(r1 q + r0 (1 - q)) at the estimate (0 at p = p_s; with a = 0, 2 loglik[j] is
 * the likelihood-ratio statistic of "no shift of label j", chi-square with 1 dof). Labels are
 * independent: the result does not depend on the thread count. */
LADE_API lade_status lade_em_marginals(float *target_marginals, int32_t *iterations, uint8_t *converged,
                                       double *loglik, const float *probs, int n, int labels,
                                       const float *source_marginals, double pseudo_count, double tol,
                                       int max_iter);
/* Upper tail of the chi-square distribution with dof degrees of freedom at x. */
LADE_API lade_status lade_chi2_sf(double *p_value, double x, double dof);

#ifdef __cplusplus
}
#endif
#endif
