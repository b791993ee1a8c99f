/* losses.c - classification losses over a whole batch of logits.
 * Each adds scale * dL/dlogits into dlogits (when not NULL) and returns L. */
#include "lade.h"

#include <math.h>
#include <string.h>

/* Checks logits are finite and labels in range; names the first bad entry. */
static lade_status check_batch(const float *logits, const int64_t *labels, int n, int classes) {
    if (n < 1 || classes < 1) return lade_fail(LADE_EINVAL, "need n >= 1 and classes >= 1, got n=%d classes=%d", n, classes);
    for (int i = 0; i < n; i++) {
        if (labels && (labels[i] < 0 || labels[i] >= classes))
            return lade_fail(LADE_ERANGE, "labels[%d] = %lld is outside [0, %d)", i, (long long)labels[i], classes);
        const float *row = logits + (size_t)i * classes;
        for (int c = 0; c < classes; c++)
            if (!isfinite(row[c]))
                return lade_fail(LADE_ENONFINITE, "logits[%d, %d] = %g is not finite", i, c, (double)row[c]);
    }
    return LADE_OK;
}

lade_status lade_softmax_ce(double *loss, float *dlogits, float scale, const float *logits,
                            const int64_t *labels, int n, int classes) {
    lade_status st = check_batch(logits, labels, n, classes);
    if (st) return st;
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        double max = z[0];
        for (int c = 1; c < classes; c++) max = z[c] > max ? z[c] : max;
        double sum = 0.0;
        for (int c = 0; c < classes; c++) sum += exp(z[c] - max);
        double lse = max + log(sum);
        total += lse - z[labels[i]];
        if (dlogits) {
            float *g = dlogits + (size_t)i * classes;
            double k = (double)scale / n;
            for (int c = 0; c < classes; c++) g[c] += (float)(k * exp(z[c] - lse));
            g[labels[i]] -= (float)k;
        }
    }
    *loss = total / n;
    return LADE_OK;
}
