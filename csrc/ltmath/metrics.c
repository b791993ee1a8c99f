/* metrics.c - accuracy, confusion, many/medium/few, calibration (ECE, reliability), NLL, Brier,
 * and the paired bootstrap of an accuracy difference. */
#include "checks.h"
#include "ltmath_internal.h"

#include <stdlib.h>

static lade_status check_scores(const float *scores, const int64_t *labels, int n, int classes, const char *arg) {
    lade_status st = lt_check_logits(scores, (size_t)n, classes, arg);
    return st ? st : lt_check_labels(labels, (size_t)n, classes, "labels");
}

static int row_argmax(const float *z, int classes) {
    int best = 0;
    for (int c = 1; c < classes; c++)
        if (z[c] > z[best]) best = c;
    return best;
}

typedef struct {
    const float *scores;
    const int64_t *labels;
    uint8_t *correct;
    size_t hits; /* added to atomically: an integer sum, the same in any order */
    int classes, k;
} topk_job;

static void topk_rows(void *ctx, size_t begin, size_t end) {
    topk_job *j = ctx;
    size_t hits = 0;
    for (size_t i = begin; i < end; i++) {
        const float *z = j->scores + i * j->classes;
        int y = (int)j->labels[i], ahead = 0; /* classes sorted before the label */
        for (int c = 0; c < j->classes; c++) ahead += z[c] > z[y] || (z[c] == z[y] && c < y);
        int ok = ahead < j->k;
        hits += (size_t)ok;
        if (j->correct) j->correct[i] = (uint8_t)ok;
    }
    __atomic_add_fetch(&j->hits, hits, __ATOMIC_RELAXED);
}

lade_status lade_topk_accuracy(double *accuracy, uint8_t *correct, const float *scores, const int64_t *labels,
                               int n, int classes, int k) {
    lade_status st = check_scores(scores, labels, n, classes, "scores");
    if (st) return st;
    if (k < 1) return lade_fail(LADE_EINVAL, "argument 'k' must be >= 1, got %d", k);
    topk_job job = {scores, labels, correct, 0, classes, k};
    if ((size_t)n * classes >= 65536) /* rows are independent: any thread count counts the same hits */
        lade_parallel_for((size_t)n, topk_rows, &job);
    else
        topk_rows(&job, 0, (size_t)n);
    *accuracy = (double)job.hits / n;
    return LADE_OK;
}

lade_status lade_argmax(int64_t *predictions, const float *scores, int n, int classes) {
    lade_status st = lt_check_logits(scores, (size_t)n, classes, "scores");
    if (st) return st;
    for (int i = 0; i < n; i++) predictions[i] = row_argmax(scores + (size_t)i * classes, classes);
    return LADE_OK;
}

lade_status lade_confusion_matrix(int64_t *confusion, const int64_t *predictions, const int64_t *labels, size_t n,
                                  int classes) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'classes' must be >= 1, got %d", classes);
    lade_status st = lt_check_labels(labels, n, classes, "labels");
    if (st || (st = lt_check_labels(predictions, n, classes, "predictions"))) return st;
    memset(confusion, 0, (size_t)classes * classes * sizeof(int64_t));
    for (size_t i = 0; i < n; i++) confusion[(size_t)labels[i] * classes + predictions[i]]++;
    return LADE_OK;
}

lade_status lade_per_class_accuracy(double *accuracy, const int64_t *confusion, int classes) {
    for (int r = 0; r < classes; r++) {
        int64_t total = 0;
        for (int c = 0; c < classes; c++) {
            int64_t v = confusion[(size_t)r * classes + c];
            /* counts: a negative one would give a recall outside [0, 1], or 1 for [[-1, 1], ...] */
            if (v < 0)
                return lade_fail(LADE_EINVAL, "argument 'confusion': confusion[%d][%d] = %lld is negative (counts "
                                 "must be >= 0)", r, c, (long long)v);
            if (v > INT64_MAX - total)
                return lade_fail(LADE_ERANGE, "argument 'confusion': row %d sums to more than 2^63 - 1", r);
            total += v;
        }
        accuracy[r] = total ? (double)confusion[(size_t)r * classes + r] / total : NAN;
    }
    return LADE_OK;
}

lade_status lade_shot_accuracy(double *out, const double *per_class_acc, const int64_t *train_counts, int classes,
                               int64_t many_above, int64_t few_below) {
    if (few_below > many_above + 1)
        return lade_fail(LADE_EINVAL, "need few_below <= many_above + 1, got few_below=%lld many_above=%lld",
                         (long long)few_below, (long long)many_above);
    double sum[3] = {0, 0, 0};
    int num[3] = {0, 0, 0};
    for (int c = 0; c < classes; c++) {
        if (train_counts[c] < 0)
            return lade_fail(LADE_EINVAL, "argument 'train_counts': train_counts[%d] = %lld is negative", c,
                             (long long)train_counts[c]);
        if (isnan(per_class_acc[c])) continue; /* class absent from the evaluated labels */
        int group = train_counts[c] > many_above ? 0 : train_counts[c] < few_below ? 2 : 1;
        sum[group] += per_class_acc[c];
        num[group]++;
    }
    for (int g = 0; g < 3; g++) out[g] = num[g] ? sum[g] / num[g] : NAN;
    return LADE_OK;
}

lade_status lade_reliability_check_bins(int nbins) {
    if (nbins < 1 || nbins > LADE_MAX_BINS)
        return lade_fail(LADE_EINVAL, "argument 'n_bins' must be in [1, %d], got %d", LADE_MAX_BINS, nbins);
    return LADE_OK;
}

lade_status lade_reliability(double *ece, double *conf_mean, double *acc_mean, int64_t *count, const float *probs,
                             const int64_t *labels, int n, int classes, int nbins, lade_bin_mode mode) {
    lade_status st = check_scores(probs, labels, n, classes, "probs");
    if (st) return st;
    if ((st = lade_reliability_check_bins(nbins))) return st;
    if (mode != LADE_BINS_STANDARD && mode != LADE_BINS_SPEC20)
        return lade_fail(LADE_EINVAL, "argument 'variant' must be standard (0) or spec20 (1), got %d", (int)mode);
    double step = 1.0 / nbins; /* upper edges k * step (k < nbins) and exactly 1, as numpy.linspace */
    for (int b = 0; b <= nbins; b++) conf_mean[b] = acc_mean[b] = 0, count[b] = 0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * classes;
        int top = row_argmax(p, classes);
        double conf = p[top];
        if (!(conf >= 0 && conf <= 1))
            return lade_fail(LADE_EINVAL, "argument 'probs': row %d has top probability %g outside [0, 1]", i, conf);
        int bin = 0; /* number of upper edges <= conf (SPEC20) or < conf (STANDARD) */
        for (int k = 1; k <= nbins; k++) {
            double edge = k == nbins ? 1.0 : k * step;
            if (mode == LADE_BINS_SPEC20 ? edge <= conf : edge < conf) bin = k;
            else break;
        }
        conf_mean[bin] += conf;
        acc_mean[bin] += top == labels[i];
        count[bin]++;
    }
    double total = 0;
    const double eps = mode == LADE_BINS_SPEC20 ? 2.220446049250313e-16 : 0.0;
    for (int b = 0; b <= nbins; b++) {
        double denom = (double)count[b] + eps;
        if (denom > 0) {
            conf_mean[b] /= denom;
            acc_mean[b] /= denom;
        }
        total += denom / n * fabs(acc_mean[b] - conf_mean[b]);
    }
    *ece = total;
    return LADE_OK;
}

lade_status lade_nll_brier(double *nll, double *brier, const float *probs, const int64_t *labels, int n, int classes) {
    lade_status st = lt_check_probs(probs, (size_t)n, classes, "probs");
    if (st || (st = lt_check_labels(labels, (size_t)n, classes, "labels"))) return st;
    double nll_sum = 0, brier_sum = 0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * classes;
        double py = p[labels[i]], sq = 0;
        for (int c = 0; c < classes; c++) sq += (double)p[c] * p[c];
        nll_sum -= log(py < 1e-15 ? 1e-15 : py > 1 ? 1 : py);
        brier_sum += sq - 2 * py + 1;
    }
    *nll = nll_sum / n;
    *brier = brier_sum / n;
    return LADE_OK;
}

/* ---- multi-label (sigmoid outputs) -------------------------------------------------------- */
lade_status lade_multilabel_metrics(double *nll, double *brier, double *accuracy, double *f1, double *mean,
                                    const float *logits, const uint8_t *targets, int n, int labels, double threshold) {
    lade_status st = lt_check_logits(logits, (size_t)n, labels, "logits");
    if (st || (st = lt_check_indicators(targets, (size_t)n, labels, "targets"))) return st;
    if (!(threshold > 0 && threshold < 1))
        return lade_fail(LADE_EINVAL, "argument 'threshold' must lie in the open interval (0, 1), got %g", threshold);
    int64_t *counts = lade_alloc(3 * (size_t)labels * sizeof *counts); /* TP, FP, FN */
    if (!counts) return lade_fail(LADE_ENOMEM, "no memory for %d labels", labels);
    memset(counts, 0, 3 * (size_t)labels * sizeof *counts);
    int64_t *tp = counts, *fp = tp + labels, *fn = fp + labels;
    const double cut = log(threshold) - log1p(-threshold); /* sigmoid(z) >= threshold  <=>  z >= cut */
    for (int c = 0; c < labels; c++) nll[c] = brier[c] = accuracy[c] = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * labels;
        const uint8_t *y = targets + (size_t)i * labels;
        for (int c = 0; c < labels; c++) {
            double t = z[c], e = exp(-fabs(t));
            /* softplus(t) - y t = max(t, 0) - y t + log(1 + e^-|t|) */
            nll[c] += (t > 0 ? t : 0) - y[c] * t + log1p(e);
            double p = t >= 0 ? 1 / (1 + e) : e / (1 + e);
            brier[c] += (p - y[c]) * (p - y[c]);
            int pred = t >= cut;
            accuracy[c] += pred == y[c];
            tp[c] += pred && y[c];
            fp[c] += pred && !y[c];
            fn[c] += !pred && y[c];
        }
    }
    double sums[3] = {0, 0, 0}, f1_sum = 0;
    int defined = 0;
    for (int c = 0; c < labels; c++) {
        nll[c] /= n, brier[c] /= n, accuracy[c] /= n;
        sums[0] += nll[c], sums[1] += brier[c], sums[2] += accuracy[c];
        int64_t denominator = 2 * tp[c] + fp[c] + fn[c];
        f1[c] = denominator ? 2.0 * tp[c] / denominator : NAN;
        if (denominator) f1_sum += f1[c], defined++;
    }
    for (int k = 0; k < 3; k++) mean[k] = sums[k] / labels;
    mean[3] = defined ? f1_sum / defined : NAN;
    lade_free(counts);
    return LADE_OK;
}

/* ---- paired bootstrap of an accuracy difference ------------------------------------------ */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between order statistics of sorted[0..m) (numpy's default percentile). */
static double quantile(const double *sorted, int m, double q) {
    double pos = q * (m - 1);
    int k = (int)floor(pos);
    return k + 1 < m ? sorted[k] + (pos - k) * (sorted[k + 1] - sorted[k]) : sorted[k];
}

lade_status lade_paired_bootstrap(double *difference, double *lo, double *hi, double *replicates, int num_boot,
                                  const uint8_t *correct_a, const uint8_t *correct_b, int models, int n,
                                  double level, uint64_t seed) {
    if (num_boot < 1) return lade_fail(LADE_EINVAL, "argument 'replicates' must be >= 1, got %d", num_boot);
    if (models < 1 || n < 1)
        return lade_fail(LADE_EINVAL, "need at least one model and one sample, got %d models and %d samples", models,
                         n);
    if (!(level > 0 && level < 1)) return lade_fail(LADE_EINVAL, "argument 'level' must be in (0, 1), got %g", level);
    size_t total = (size_t)models * (size_t)n;
    for (size_t k = 0; k < total; k++)
        if (correct_a[k] > 1 || correct_b[k] > 1)
            return lade_fail(LADE_EINVAL, "argument '%s' must hold 0 or 1, got %d at model %zu, sample %zu",
                             correct_a[k] > 1 ? "correct_a" : "correct_b",
                             correct_a[k] > 1 ? correct_a[k] : correct_b[k], k / (size_t)n, k % (size_t)n);
    /* per sample: how many more models method a got right than method b, in [-models, models] */
    int *margin = lade_alloc((size_t)n * sizeof(int));
    double *sorted = lade_alloc((size_t)num_boot * sizeof(double));
    if (!margin || !sorted) {
        lade_free(margin);
        lade_free(sorted);
        return lade_fail(LADE_ENOMEM, "no memory for %d samples and %d replicates", n, num_boot);
    }
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        margin[i] = 0;
        for (int m = 0; m < models; m++) margin[i] += (int)correct_a[(size_t)m * n + i] - correct_b[(size_t)m * n + i];
        sum += margin[i];
    }
    double scale = 1.0 / ((double)n * models);
    *difference = (double)sum * scale;
    for (int r = 0; r < num_boot; r++) {
        lade_rng rng;
        lade_rng_seed(&rng, seed, (uint64_t)r);
        int64_t s = 0;
        for (int k = 0; k < n; k++) s += margin[lade_rng_below(&rng, (uint64_t)n)];
        replicates[r] = sorted[r] = (double)s * scale;
    }
    qsort(sorted, (size_t)num_boot, sizeof(double), cmp_double);
    *lo = quantile(sorted, num_boot, (1 - level) / 2);
    *hi = quantile(sorted, num_boot, (1 + level) / 2);
    lade_free(margin);
    lade_free(sorted);
    return LADE_OK;
}
