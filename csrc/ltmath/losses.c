/* losses.c - classification losses over a whole batch of logits.
 * Each adds scale * dL/dlogits into dlogits (when not NULL) and returns L.
 * Rows (cross-entropy family) or columns (LADER) are split over the thread pool;
 * per-row / per-column terms are summed serially afterwards, so the value does
 * not depend on the number of threads. */
#include "checks.h"
#include "ltmath_internal.h"

#include <float.h>

/* Below this many logits the thread pool costs more than it saves. */
#define PARALLEL_MIN_ELEMS 32768

static lade_status check_batch(const float *logits, const int64_t *labels, int n, int classes) {
    if (n < 1 || classes < 1)
        return lade_fail(LADE_EINVAL, "need n >= 1 and classes >= 1, got n=%d classes=%d", n, classes);
    lade_status st = lt_check_labels(labels, (size_t)n, classes, "labels");
    return st ? st : lt_check_logits(logits, (size_t)n, classes, "logits");
}

lade_ce_config lade_ce_config_default(void) {
    lade_ce_config cfg = {NULL, NULL, NULL, 1.0f, 0.0f, 0};
    return cfg;
}

typedef struct {
    const lade_ce_config *cfg;
    const float *logits;
    const int64_t *labels;
    float *dlogits;
    double *row_loss; /* (n) L_i before division by D */
    double grad_factor; /* scale * s / D */
    int classes;
    int failed;       /* scratch allocation failed in some chunk */
} ce_job;

static void ce_rows(void *ctx, size_t begin, size_t end) {
    ce_job *job = ctx;
    const lade_ce_config *cfg = job->cfg;
    int C = job->classes;
    float *t = lade_alloc(2 * (size_t)C * sizeof(float));
    if (!t) {
        job->failed = 1;
        return;
    }
    float *e = t + C;
    float s = cfg->logit_scale, gamma = cfg->focal_gamma;
    for (size_t i = begin; i < end; i++) {
        const float *z = job->logits + i * (size_t)C;
        int y = (int)job->labels[i];
        if (cfg->offset)
            for (int c = 0; c < C; c++) t[c] = s * (z[c] + cfg->offset[c]);
        else
            for (int c = 0; c < C; c++) t[c] = s * z[c];
        if (cfg->margin) t[y] -= s * cfg->margin[y];
        float max = lt_row_max(t, C);
        float sum = lt_exp_shift_sum(e, t, max, C);
        double lse = (double)max + log((double)sum);
        double l = lse - (double)t[y]; /* -log p_y, accurate even when p_y is near 1 */
        if (l < 0) l = 0;              /* rounding can leave -1e-7 */
        double w = cfg->class_weight ? cfg->class_weight[y] : 1.0;
        double focal = 1.0, dfocal = 1.0; /* (1-p)^g and the gradient factor g(1-p)^(g-1) p l + (1-p)^g */
        if (gamma > 0) {
            double p = exp(-l), one_minus_p = -expm1(-l);
            focal = pow(one_minus_p, gamma);
            dfocal = focal + (one_minus_p > 0 ? gamma * pow(one_minus_p, gamma - 1) * p * l : 0.0);
        }
        job->row_loss[i] = w * focal * l;
        if (job->dlogits) {
            float *g = job->dlogits + i * (size_t)C;
            float k = (float)(job->grad_factor * w * dfocal / sum);
            for (int c = 0; c < C; c++) g[c] += k * e[c];
            g[y] -= (float)(job->grad_factor * w * dfocal);
        }
    }
    lade_free(t);
}

lade_status lade_cross_entropy(double *loss, float *dlogits, float scale, const float *logits,
                               const int64_t *labels, int n, int classes, const lade_ce_config *cfg) {
    lade_status st = check_batch(logits, labels, n, classes);
    if (st) return st;
    if (!(cfg->logit_scale > 0) || !isfinite(cfg->logit_scale))
        return lade_fail(LADE_EINVAL, "argument 's' (logit scale) must be finite and > 0, got %g",
                         (double)cfg->logit_scale);
    if (!(cfg->focal_gamma >= 0) || !isfinite(cfg->focal_gamma))
        return lade_fail(LADE_EINVAL, "argument 'gamma' must be finite and >= 0, got %g", (double)cfg->focal_gamma);
    for (int c = 0; c < classes; c++) {
        if (cfg->offset && !isfinite(cfg->offset[c]))
            return lade_fail(LADE_ENONFINITE, "argument 'offset': offset[%d] = %g is not finite", c, (double)cfg->offset[c]);
        if (cfg->margin && !isfinite(cfg->margin[c]))
            return lade_fail(LADE_ENONFINITE, "argument 'margin': margin[%d] = %g is not finite", c, (double)cfg->margin[c]);
        if (cfg->class_weight && !(cfg->class_weight[c] >= 0 && isfinite(cfg->class_weight[c])))
            return lade_fail(LADE_EINVAL, "argument 'weights': weights[%d] = %g must be finite and >= 0", c,
                             (double)cfg->class_weight[c]);
    }
    double denom = n;
    if (cfg->class_weight && cfg->weight_by_sum) {
        denom = 0;
        for (int i = 0; i < n; i++) denom += cfg->class_weight[labels[i]];
        if (!(denom > 0))
            return lade_fail(LADE_EINVAL, "argument 'weights': the batch's labels have total weight %g, need > 0",
                             denom);
    }
    double *row_loss = lade_alloc((size_t)n * sizeof(double));
    if (!row_loss) return lade_fail(LADE_ENOMEM, "no memory for %d row losses", n);
    ce_job job = {cfg, logits, labels, dlogits, row_loss, (double)scale * cfg->logit_scale / denom, classes, 0};
    if ((size_t)n * (size_t)classes >= PARALLEL_MIN_ELEMS)
        lade_parallel_for((size_t)n, ce_rows, &job);
    else
        ce_rows(&job, 0, (size_t)n);
    double total = 0;
    for (int i = 0; i < n; i++) total += row_loss[i];
    lade_free(row_loss);
    if (job.failed) return lade_fail(LADE_ENOMEM, "no memory for a row of %d classes", classes);
    *loss = total / denom;
    return LADE_OK;
}

lade_status lade_softmax_ce(double *loss, float *dlogits, float scale, const float *logits,
                            const int64_t *labels, int n, int classes) {
    lade_ce_config cfg = lade_ce_config_default();
    return lade_cross_entropy(loss, dlogits, scale, logits, labels, n, classes, &cfg);
}

/* Up to this many classes the per-call vectors live on the stack. */
#define STACK_CLASSES 1024

lade_status lade_lade_ce(double *loss, float *dlogits, float scale, const float *logits,
                         const int64_t *labels, int n, int classes, const float *prior) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "need classes >= 1, got %d", classes);
    lade_status st = lade_check_prior(prior, classes, "prior");
    if (st) return st;
    float stack[STACK_CLASSES];
    float *offset = classes <= STACK_CLASSES ? stack : lade_alloc((size_t)classes * sizeof(float));
    if (!offset) return lade_fail(LADE_ENOMEM, "no memory for %d log priors", classes);
    for (int c = 0; c < classes; c++) offset[c] = (float)log((double)prior[c] + 1e-9);
    lade_ce_config cfg = lade_ce_config_default();
    cfg.offset = offset;
    st = lade_cross_entropy(loss, dlogits, scale, logits, labels, n, classes, &cfg);
    if (offset != stack) lade_free(offset);
    return st;
}

/* ---- LADER ----------------------------------------------------------------------- */
typedef struct {
    const float *logits;
    const int64_t *labels;
    const float *prior;
    const float *row_offset; /* (n) paper form: b_{y_i}; NULL for the official form */
    float *dlogits;
    float scale, lambda;
    int n, classes, form;
    const double *own_sum;   /* (C) sum of z[i][c] over samples of class c */
    const double *count;     /* (C) m_c */
    double *term;            /* (C) out: prior_c * E_c */
    float *col_max, *col_sum; /* (C) scratch */
    double log_uniform;
} lader_job;

static void lader_cols(void *ctx, size_t begin, size_t end) {
    lader_job *job = ctx;
    int C = job->classes, n = job->n, c0 = (int)begin, c1 = (int)end, w = c1 - c0;
    float *mx = job->col_max + c0, *sm = job->col_sum + c0;
    /* column max of z[i][c] + row_offset[i] */
    for (int c = 0; c < w; c++) mx[c] = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        const float *z = job->logits + (size_t)i * C + c0;
        float ro = job->row_offset ? job->row_offset[i] : 0.0f;
        for (int c = 0; c < w; c++) mx[c] = z[c] + ro > mx[c] ? z[c] + ro : mx[c];
    }
    for (int c = 0; c < w; c++) sm[c] = 0.0f;
    for (int i = 0; i < n; i++) {
        const float *z = job->logits + (size_t)i * C + c0;
        float ro = job->row_offset ? job->row_offset[i] : 0.0f;
        for (int c = 0; c < w; c++) sm[c] += lt_exp(z[c] + ro - mx[c]);
    }
    double log_n = log((double)n);
    float coef[STACK_CLASSES]; /* per column: scale * prior_c * (1 + 2 lambda S_c) / col_sum_c */
    for (int cb = 0; cb < w; cb += STACK_CLASSES) {
        int wb = w - cb < STACK_CLASSES ? w - cb : STACK_CLASSES;
        for (int c = cb; c < cb + wb; c++) {
            int cls = c0 + c;
            double pi = job->prior[cls];
            double col_offset = job->form == LADE_LADER_OFFICIAL ? job->log_uniform - log(pi + 1e-9) : 0.0;
            double S = (double)mx[c] + log((double)sm[c]) + col_offset - log_n;
            double F = job->own_sum[cls] / (job->count[cls] + 1e-8);
            double E = F - S - job->lambda * S * S;
            job->term[cls] = pi * E;
            coef[c - cb] = (float)(job->scale * pi * (1.0 + 2.0 * job->lambda * S) / sm[c]);
        }
        if (!job->dlogits) continue;
        for (int i = 0; i < n; i++) {
            const float *z = job->logits + (size_t)i * C + c0 + cb;
            float *g = job->dlogits + (size_t)i * C + c0 + cb;
            float ro = job->row_offset ? job->row_offset[i] : 0.0f;
            const float *m = mx + cb;
            for (int c = 0; c < wb; c++) g[c] += coef[c] * lt_exp(z[c] + ro - m[c]);
        }
    }
    if (!job->dlogits) return;
    /* the first term: -prior_c / (m_c + 1e-8) on each sample's own class */
    for (int i = 0; i < n; i++) {
        int y = (int)job->labels[i];
        if (y < c0 || y >= c1) continue;
        job->dlogits[(size_t)i * C + y] -= (float)(job->scale * job->prior[y] / (job->count[y] + 1e-8));
    }
}

lade_status lade_lader(double *loss, float *dlogits, float scale, const float *logits,
                       const int64_t *labels, int n, int classes, const float *prior,
                       float remine_lambda, lade_lader_form form) {
    lade_status st = check_batch(logits, labels, n, classes);
    if (st) return st;
    if ((st = lade_check_prior(prior, classes, "prior"))) return st;
    if (!isfinite(remine_lambda) || remine_lambda < 0)
        return lade_fail(LADE_EINVAL, "argument 'remine_lambda' must be finite and >= 0, got %g",
                         (double)remine_lambda);
    if (form != LADE_LADER_OFFICIAL && form != LADE_LADER_PAPER)
        return lade_fail(LADE_EINVAL, "argument 'form' must be official (0) or paper (1), got %d", (int)form);
    /* one block: own_sum, count, term (doubles), col_max, col_sum (floats), row_offset (floats) */
    size_t C = (size_t)classes;
    size_t bytes = 3 * C * sizeof(double) + 2 * C * sizeof(float) + (size_t)n * sizeof(float);
    double *own_sum = lade_alloc(bytes);
    if (!own_sum) return lade_fail(LADE_ENOMEM, "no memory for LADER scratch (%zu bytes)", bytes);
    double *count = own_sum + C, *term = count + C;
    float *col_max = (float *)(term + C), *col_sum = col_max + C, *row_offset = col_sum + C;
    memset(own_sum, 0, 2 * C * sizeof(double));
    for (int i = 0; i < n; i++) {
        int y = (int)labels[i];
        own_sum[y] += logits[(size_t)i * C + y];
        count[y] += 1;
    }
    double log_uniform = log(1.0 / classes + 1e-9);
    if (form == LADE_LADER_PAPER)
        for (int i = 0; i < n; i++)
            row_offset[i] = (float)(log_uniform - log((double)prior[labels[i]] + 1e-9));
    lader_job job = {logits, labels, prior, form == LADE_LADER_PAPER ? row_offset : NULL, dlogits, scale,
                     remine_lambda, n, classes, (int)form, own_sum, count, term, col_max, col_sum, log_uniform};
    if ((size_t)n * C >= PARALLEL_MIN_ELEMS)
        lade_parallel_for(C, lader_cols, &job);
    else
        lader_cols(&job, 0, C);
    double total = 0;
    for (int c = 0; c < classes; c++) total -= term[c];
    lade_free(own_sum);
    *loss = total;
    return LADE_OK;
}

/* ---- loss parameters from counts ----------------------------------------------------- */
lade_status lade_log_prior(float *out, const float *prior, int classes, float tau, float eps) {
    if (!isfinite(tau) || !isfinite(eps) || eps < 0)
        return lade_fail(LADE_EINVAL, "arguments 'tau' and 'eps' must be finite and eps >= 0, got tau=%g eps=%g",
                         (double)tau, (double)eps);
    lade_status st = lade_check_prior(prior, classes, "prior");
    if (st) return st;
    for (int c = 0; c < classes; c++) out[c] = (float)(tau * log((double)prior[c] + eps));
    return LADE_OK;
}

static lade_status check_counts(const int64_t *counts, int classes, int allow_zero) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "need classes >= 1, got %d", classes);
    for (int c = 0; c < classes; c++)
        if (counts[c] < 0 || (!allow_zero && counts[c] == 0))
            return lade_fail(LADE_EINVAL, "argument 'counts': counts[%d] = %lld, need %s", c,
                             (long long)counts[c], allow_zero ? ">= 0" : "> 0 (every class needs a sample)");
    return LADE_OK;
}

lade_status lade_ldam_margins(float *out, const int64_t *counts, int classes, float max_margin) {
    lade_status st = check_counts(counts, classes, 0);
    if (st) return st;
    if (!isfinite(max_margin) || max_margin < 0)
        return lade_fail(LADE_EINVAL, "argument 'max_margin' must be finite and >= 0, got %g", (double)max_margin);
    double largest = 0;
    for (int c = 0; c < classes; c++) {
        double m = 1.0 / sqrt(sqrt((double)counts[c]));
        largest = m > largest ? m : largest;
    }
    for (int c = 0; c < classes; c++) out[c] = (float)(max_margin / sqrt(sqrt((double)counts[c])) / largest);
    return LADE_OK;
}

lade_status lade_effective_number_weights(float *out, const int64_t *counts, int classes, double beta) {
    lade_status st = check_counts(counts, classes, 0);
    if (st) return st;
    if (!(beta >= 0 && beta < 1))
        return lade_fail(LADE_EINVAL, "argument 'beta' must be in [0, 1), got %g", beta);
    double sum = 0;
    for (int c = 0; c < classes; c++) {
        /* (1 - beta) / (1 - beta^n); expm1 keeps 1 - beta^n accurate for beta near 1 */
        double w = beta == 0 ? 1.0 : (1.0 - beta) / -expm1((double)counts[c] * log(beta));
        out[c] = (float)w;
        sum += w;
    }
    for (int c = 0; c < classes; c++) out[c] = (float)(out[c] * classes / sum);
    return LADE_OK;
}
