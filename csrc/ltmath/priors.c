/* priors.c - long-tailed class profiles, class counts and priors. */
#include "checks.h"
#include "ltmath_internal.h"

lade_status lade_lt_profile(int64_t *counts, int classes, double img_max, double ratio, lade_profile profile) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'classes' must be >= 1, got %d", classes);
    if (!(img_max >= 1) || !isfinite(img_max) || img_max > 1e15)
        return lade_fail(LADE_EINVAL, "argument 'img_max' must be in [1, 1e15], got %g", img_max);
    if (!(ratio > 0 && ratio <= 1))
        return lade_fail(LADE_EINVAL, "argument 'ratio' (tail/head fraction) must be in (0, 1], got %g", ratio);
    for (int c = 0; c < classes; c++) {
        double v;
        if (profile == LADE_PROFILE_EXP)
            v = classes == 1 ? img_max : img_max * pow(ratio, (double)c / (classes - 1));
        else if (profile == LADE_PROFILE_STEP)
            v = c < classes / 2 ? img_max : img_max * ratio;
        else
            return lade_fail(LADE_EINVAL, "argument 'profile' must be exp (0) or step (1), got %d", (int)profile);
        counts[c] = (int64_t)v; /* truncation toward zero, as Python's int() */
    }
    return LADE_OK;
}

lade_status lade_class_counts(int64_t *counts, const int64_t *labels, size_t n, int classes) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'classes' must be >= 1, got %d", classes);
    lade_status st = lt_check_labels(labels, n, classes, "labels");
    if (st) return st;
    memset(counts, 0, (size_t)classes * sizeof *counts);
    for (size_t i = 0; i < n; i++) counts[labels[i]]++;
    return LADE_OK;
}

lade_status lade_prior_from_counts(float *prior, const int64_t *counts, int classes, double eps) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'counts' must have >= 1 class, got %d", classes);
    if (!(eps >= 0) || !isfinite(eps)) return lade_fail(LADE_EINVAL, "argument 'eps' must be finite and >= 0, got %g", eps);
    double total = 0;
    for (int c = 0; c < classes; c++) {
        if (counts[c] < 0)
            return lade_fail(LADE_EINVAL, "argument 'counts': counts[%d] = %lld is negative", c, (long long)counts[c]);
        if (counts[c] == 0 && eps == 0)
            return lade_fail(LADE_EINVAL,
                             "argument 'counts': class %d has no samples, so its prior would be 0 and its log "
                             "-inf; pass eps > 0 to floor empty classes at eps samples", c);
        total += counts[c] > eps ? (double)counts[c] : eps;
    }
    for (int c = 0; c < classes; c++) prior[c] = (float)((counts[c] > eps ? (double)counts[c] : eps) / total);
    return LADE_OK;
}

lade_status lade_label_marginals(float *marginals, const uint8_t *targets, size_t n, int labels,
                                 double pseudo_count) {
    lade_status st = lt_check_indicators(targets, n, labels, "targets");
    if (st) return st;
    if (!(pseudo_count >= 0) || !isfinite(pseudo_count))
        return lade_fail(LADE_EINVAL, "argument 'pseudo_count' must be finite and >= 0, got %g", pseudo_count);
    int64_t *count = lade_alloc((size_t)labels * sizeof *count);
    if (!count) return lade_fail(LADE_ENOMEM, "no memory for %d labels", labels);
    memset(count, 0, (size_t)labels * sizeof *count);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < labels; j++) count[j] += targets[i * (size_t)labels + j];
    for (int j = 0; j < labels && pseudo_count == 0; j++)
        if (count[j] == 0 || count[j] == (int64_t)n) {
            st = lade_fail(LADE_EINVAL,
                           "argument 'targets': label %d is %s positive (%lld of %zu rows), so its marginal would "
                           "be %d and its logit infinite; pass pseudo_count > 0 to smooth it", j,
                           count[j] ? "always" : "never", (long long)count[j], n, count[j] ? 1 : 0);
            break;
        }
    for (int j = 0; j < labels && !st; j++) {
        marginals[j] = (float)((count[j] + pseudo_count) / ((double)n + 2 * pseudo_count));
        if (!(marginals[j] > 0 && marginals[j] < 1)) /* a pseudo count too small for float */
            st = lade_fail(LADE_EINVAL, "argument 'pseudo_count' = %g is too small: label %d's smoothed marginal "
                           "rounds to %g in float32", pseudo_count, j, (double)marginals[j]);
    }
    lade_free(count);
    return st;
}
