/* checks.c - the argument checks shared by the long-tail math files (every failure names the
 * argument and the first bad entry). */
#include "checks.h"

#include <math.h>
#include <string.h>

/* Values per block of the non-finite scan. */
#define SCAN_BLOCK 1024

/* The index of the first non-finite value of x[0, total), or total. A block is scanned
 * without an early exit (all-ones exponent bits: Inf or NaN), which vectorises, and only a
 * block that holds one is searched again. Compiled for AVX-512 and AVX2 as well as the
 * baseline, the widest the CPU has picked at load time. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static size_t first_nonfinite(const float *x, size_t total) {
    for (size_t b = 0; b < total; b += SCAN_BLOCK) {
        size_t end = total - b < SCAN_BLOCK ? total : b + SCAN_BLOCK;
        uint32_t bad = 0;
        for (size_t k = b; k < end; k++) {
            uint32_t bits;
            memcpy(&bits, x + k, sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (bad)
            for (size_t k = b; k < end; k++)
                if (!isfinite(x[k])) return k;
    }
    return total;
}

lade_status lt_check_logits(const float *logits, size_t n, int classes, const char *arg) {
    if (n < 1 || classes < 1)
        return lade_fail(LADE_EINVAL, "argument '%s' must have n >= 1 rows and classes >= 1, got n=%zu classes=%d",
                         arg, n, classes);
    size_t total = n * (size_t)classes, k = first_nonfinite(logits, total);
    if (k < total)
        return lade_fail(LADE_ENONFINITE, "argument '%s' has a non-finite value %g at [%zu, %zu]", arg,
                         (double)logits[k], k / (size_t)classes, k % (size_t)classes);
    return LADE_OK;
}

lade_status lt_check_probs(const float *probs, size_t n, int classes, const char *arg) {
    lade_status st = lt_check_logits(probs, n, classes, arg);
    if (st) return st;
    for (size_t k = 0; k < n * (size_t)classes; k++)
        if (probs[k] < 0 || probs[k] > 1)
            return lade_fail(LADE_EINVAL, "argument '%s' must hold probabilities in [0, 1], got %g at [%zu, %zu]", arg,
                             (double)probs[k], k / (size_t)classes, k % (size_t)classes);
    return LADE_OK;
}

lade_status lt_check_nonnegative(double value, const char *arg) {
    if (!(value >= 0) || !isfinite(value))
        return lade_fail(LADE_EINVAL, "argument '%s' must be finite and >= 0, got %g", arg, value);
    return LADE_OK;
}

lade_status lt_check_labels(const int64_t *labels, size_t n, int classes, const char *arg) {
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return lade_fail(LADE_ERANGE, "argument '%s': %s[%zu] = %lld is outside [0, %d)", arg, arg, i,
                             (long long)labels[i], classes);
    return LADE_OK;
}

/* Tolerance on a prior's sum: float32 rounding over thousands of classes stays far below it. */
#define PRIOR_SUM_TOL 1e-3

lade_status lade_check_prior(const float *prior, int classes, const char *arg) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "need classes >= 1, got %d", classes);
    double sum = 0;
    for (int c = 0; c < classes; c++) {
        if (!isfinite(prior[c]))
            return lade_fail(LADE_ENONFINITE, "argument '%s': %s[%d] = %g is not finite", arg, arg, c,
                             (double)prior[c]);
        if (prior[c] <= 0)
            return lade_fail(LADE_EINVAL,
                             "argument '%s': %s[%d] = %g, every class needs a prior > 0 (a class without "
                             "training samples needs an explicit floor, e.g. prior_from_counts(..., eps=...))",
                             arg, arg, c, (double)prior[c]);
        sum += prior[c];
    }
    if (fabs(sum - 1.0) > PRIOR_SUM_TOL)
        return lade_fail(LADE_EINVAL, "argument '%s' must sum to 1, got %.6g", arg, sum);
    return LADE_OK;
}

lade_status lade_check_adapt(const float *source_prior, const float *test_logits, int n, int classes,
                             const float *calib_logits, const int64_t *calib_labels, int m) {
    lade_status st = lade_check_prior(source_prior, classes, "source_prior");
    if (!st) st = lt_check_logits(test_logits, (size_t)n, classes, "test_logits");
    if (!st && calib_logits) st = lt_check_logits(calib_logits, (size_t)m, classes, "calib_logits");
    if (!st && calib_labels) st = lt_check_labels(calib_labels, (size_t)m, classes, "calib_labels");
    return st;
}

lade_status lade_check_marginals(const float *marginals, int labels, const char *arg) {
    if (labels < 1) return lade_fail(LADE_EINVAL, "argument '%s' must have labels >= 1, got %d", arg, labels);
    for (int j = 0; j < labels; j++) {
        if (!isfinite(marginals[j]))
            return lade_fail(LADE_ENONFINITE, "argument '%s': %s[%d] = %g is not finite", arg, arg, j,
                             (double)marginals[j]);
        if (!(marginals[j] > 0 && marginals[j] < 1))
            return lade_fail(LADE_EINVAL,
                             "argument '%s': %s[%d] = %g, every label's marginal must lie in the open interval "
                             "(0, 1) (its logit is infinite at 0 and 1; a label never or always positive in the "
                             "training data needs smoothing, e.g. label_marginals(..., pseudo_count=...))",
                             arg, arg, j, (double)marginals[j]);
    }
    return LADE_OK;
}

lade_status lt_check_indicators(const uint8_t *targets, size_t n, int labels, const char *arg) {
    if (n < 1 || labels < 1)
        return lade_fail(LADE_EINVAL, "argument '%s' must have n >= 1 rows and labels >= 1, got n=%zu labels=%d",
                         arg, n, labels);
    for (size_t k = 0; k < n * (size_t)labels; k++)
        if (targets[k] > 1)
            return lade_fail(LADE_EINVAL, "argument '%s' must hold 0 or 1, got %d at [%zu, %zu]", arg,
                             (int)targets[k], k / (size_t)labels, k % (size_t)labels);
    return LADE_OK;
}

lade_status lade_check_multilabel_adapt(const float *source_marginals, const float *test_logits, int n,
                                        int labels) {
    lade_status st = lade_check_marginals(source_marginals, labels, "source_marginals");
    return st ? st : lt_check_logits(test_logits, (size_t)n, labels, "test_logits");
}
