/* losses.c - classification losses over a whole batch of logits.
 * Each adds scale * dL/dlogits into dlogits (when not NULL) and returns L.
 * Rows (cross-entropy family) or columns (LADER) are split over the thread pool;
 * per-row / per-column terms are summed serially afterwards, so the value does
 * not depend on the number of threads. */
/* Without trapping math the compiler may if-convert lt_exp's clamps and vectorise the
 * exponential (the results are the same; only floating-point exception flags could differ). */
#pragma GCC optimize("no-trapping-math")
#include "checks.h"
#include "ltmath_internal.h"

#include <float.h>

/* Below this many logits the thread pool costs more than it saves. */
#define PARALLEL_MIN_ELEMS 32768

/* The loops over the logits are compiled for AVX-512 and AVX2 as well as the baseline, the
 * widest the CPU has picked at load time: the same operations in the same order (no FMA
 * contraction in ISO C mode), so the same bits. */
#define LOSS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

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

LOSS_CLONES static void ce_rows(void *ctx, size_t begin, size_t end) {
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

static lade_status check_ce_config(const lade_ce_config *cfg, int classes) {
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
    return LADE_OK;
}

/* Cross-entropy on checked arguments. */
static lade_status ce_run(double *loss, float *dlogits, float scale, const float *logits, const int64_t *labels,
                          int n, int classes, const lade_ce_config *cfg) {
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

lade_status lade_cross_entropy(double *loss, float *dlogits, float scale, const float *logits,
                               const int64_t *labels, int n, int classes, const lade_ce_config *cfg) {
    lade_status st = check_batch(logits, labels, n, classes);
    if (!st) st = check_ce_config(cfg, classes);
    return st ? st : ce_run(loss, dlogits, scale, logits, labels, n, classes, cfg);
}

lade_status lade_softmax_ce(double *loss, float *dlogits, float scale, const float *logits,
                            const int64_t *labels, int n, int classes) {
    lade_ce_config cfg = lade_ce_config_default();
    return lade_cross_entropy(loss, dlogits, scale, logits, labels, n, classes, &cfg);
}

/* ---- LADER ----------------------------------------------------------------------- */
/* lader_cols takes columns in groups of LT_LANES (a vector each) and works through its range in
 * blocks of up to LADER_BLOCK columns: a block's exponentials (n x LADER_BLOCK floats) are kept
 * for the gradient instead of being computed a second time. */
#define LADER_BLOCK 256

typedef struct {
    const float *logits;
    const int64_t *labels;
    const float *prior;
    const double *log_prior;  /* (C) log(prior + 1e-9) */
    const float *row_offset;  /* (n) paper form: b_{y_i}; NULL for the official form */
    float *dlogits;
    float scale, lambda;
    int n, classes, form;
    const double *own_sum;    /* (C) sum of z[i][c] over samples of class c */
    const double *count;      /* (C) m_c */
    double *term;             /* (C) out: prior_c * E_c */
    double log_uniform;
    int failed;               /* scratch allocation failed in some chunk */
} lader_job;

/* Column groups [begin, end): columns [begin * LT_LANES, min(end * LT_LANES, C)). */
LOSS_CLONES static void lader_cols(void *ctx, size_t begin, size_t end) {
    lader_job *job = ctx;
    int C = job->classes, n = job->n;
    int first = (int)begin * LT_LANES, last = (int)end * LT_LANES < C ? (int)end * LT_LANES : C;
    int block = last - first < LADER_BLOCK ? last - first : LADER_BLOCK;
    float *e = lade_alloc((size_t)n * block * sizeof(float));
    if (!e) {
        job->failed = 1;
        return;
    }
    double log_n = log((double)n);
    for (int c0 = first; c0 < last; c0 += block) {
        int w = last - c0 < block ? last - c0 : block;
        float mx[LADER_BLOCK], sm[LADER_BLOCK], coef[LADER_BLOCK];
        /* column max of z[i][c] + row_offset[i] */
        for (int c = 0; c < w; c++) mx[c] = -FLT_MAX;
        for (int i = 0; i < n; i++) {
            const float *z = job->logits + (size_t)i * C + c0;
            float ro = job->row_offset ? job->row_offset[i] : 0.0f;
            for (int c = 0; c < w; c++) mx[c] = z[c] + ro > mx[c] ? z[c] + ro : mx[c];
        }
        /* e[i][c] = exp(z[i][c] + row_offset[i] - max_c), summed over the rows in order */
        for (int c = 0; c < w; c++) sm[c] = 0.0f;
        for (int i = 0; i < n; i++) {
            const float *z = job->logits + (size_t)i * C + c0;
            float ro = job->row_offset ? job->row_offset[i] : 0.0f, *ei = e + (size_t)i * w;
            int c = 0;
            for (; c + LT_LANES <= w; c += LT_LANES) {
                lt_vec v = lt_exp_vec(lt_load(z + c) + ro - lt_load(mx + c));
                lt_store(ei + c, v);
                lt_store(sm + c, lt_load(sm + c) + v);
            }
            for (; c < w; c++) {
                ei[c] = lt_exp(z[c] + ro - mx[c]);
                sm[c] += ei[c];
            }
        }
        /* per column: the term and the gradient factor scale * prior_c * (1 + 2 lambda S_c) / col_sum_c */
        for (int c = 0; c < w; c++) {
            int cls = c0 + c;
            double pi = job->prior[cls];
            double col_offset = job->form == LADE_LADER_OFFICIAL ? job->log_uniform - job->log_prior[cls] : 0.0;
            double S = (double)mx[c] + log((double)sm[c]) + col_offset - log_n;
            double F = job->own_sum[cls] / (job->count[cls] + 1e-8);
            double E = F - S - job->lambda * S * S;
            job->term[cls] = pi * E;
            coef[c] = (float)(job->scale * pi * (1.0 + 2.0 * job->lambda * S) / sm[c]);
        }
        if (!job->dlogits) continue;
        for (int i = 0; i < n; i++) {
            float *g = job->dlogits + (size_t)i * C + c0;
            const float *ei = e + (size_t)i * w;
            for (int c = 0; c < w; c++) g[c] += coef[c] * ei[c];
        }
    }
    lade_free(e);
    if (!job->dlogits) return;
    /* the first term: -prior_c / (m_c + 1e-8) on each sample's own class */
    for (int i = 0; i < n; i++) {
        int y = (int)job->labels[i];
        if (y < first || y >= last) continue;
        job->dlogits[(size_t)i * C + y] -= (float)(job->scale * job->prior[y] / (job->count[y] + 1e-8));
    }
}

static lade_status check_lader(const float *prior, int classes, float remine_lambda, lade_lader_form form) {
    lade_status st = lade_check_prior(prior, classes, "prior");
    if (!st) st = lt_check_nonnegative(remine_lambda, "remine_lambda");
    if (!st && form != LADE_LADER_OFFICIAL && form != LADE_LADER_PAPER)
        st = lade_fail(LADE_EINVAL, "argument 'form' must be official (0) or paper (1), got %d", (int)form);
    return st;
}

/* LADER on checked arguments; log_prior (C) holds log(prior + 1e-9). */
static lade_status lader_run(double *loss, float *dlogits, float scale, const float *logits, const int64_t *labels,
                             int n, int classes, const float *prior, const double *log_prior, float remine_lambda,
                             lade_lader_form form) {
    /* one block: own_sum, count, term (doubles), row_offset (floats) */
    size_t C = (size_t)classes;
    size_t bytes = 3 * C * sizeof(double) + (size_t)n * sizeof(float);
    double *own_sum = lade_alloc(bytes);
    if (!own_sum) return lade_fail(LADE_ENOMEM, "no memory for LADER scratch (%zu bytes)", bytes);
    double *count = own_sum + C, *term = count + C;
    float *row_offset = (float *)(term + C);
    memset(own_sum, 0, 2 * C * sizeof(double));
    for (int i = 0; i < n; i++) {
        int y = (int)labels[i];
        own_sum[y] += logits[(size_t)i * C + y];
        count[y] += 1;
    }
    double log_uniform = log(1.0 / classes + 1e-9);
    if (form == LADE_LADER_PAPER)
        for (int i = 0; i < n; i++) row_offset[i] = (float)(log_uniform - log_prior[labels[i]]);
    lader_job job = {logits, labels, prior, log_prior, form == LADE_LADER_PAPER ? row_offset : NULL, dlogits, scale,
                     remine_lambda, n, classes, (int)form, own_sum, count, term, log_uniform, 0};
    size_t groups = (C + LT_LANES - 1) / LT_LANES;
    if ((size_t)n * C >= PARALLEL_MIN_ELEMS)
        lade_parallel_for(groups, lader_cols, &job);
    else
        lader_cols(&job, 0, groups);
    double total = 0;
    for (int c = 0; c < classes; c++) total -= term[c];
    lade_free(own_sum);
    if (job.failed) return lade_fail(LADE_ENOMEM, "no memory for LADER's exponentials (%d rows)", n);
    *loss = total;
    return LADE_OK;
}

/* *log_prior = log(prior + 1e-9) (C doubles, LADER's) and, in the same block, *offset = the
 * same rounded to float (C floats, LADE-CE's offset); lade_free(*log_prior) frees both. */
static lade_status log_prior_new(double **log_prior, float **offset, const float *prior, int classes) {
    double *lp = lade_alloc((size_t)classes * (sizeof(double) + sizeof(float)));
    if (!lp) return lade_fail(LADE_ENOMEM, "no memory for %d log priors", classes);
    float *off = (float *)(lp + classes);
    for (int c = 0; c < classes; c++) {
        lp[c] = log((double)prior[c] + 1e-9);
        off[c] = (float)lp[c];
    }
    *log_prior = lp;
    *offset = off;
    return LADE_OK;
}

lade_status lade_lader(double *loss, float *dlogits, float scale, const float *logits,
                       const int64_t *labels, int n, int classes, const float *prior,
                       float remine_lambda, lade_lader_form form) {
    lade_status st = check_batch(logits, labels, n, classes);
    if (!st) st = check_lader(prior, classes, remine_lambda, form);
    double *log_prior = NULL;
    float *offset = NULL;
    if (st || (st = log_prior_new(&log_prior, &offset, prior, classes))) return st;
    st = lader_run(loss, dlogits, scale, logits, labels, n, classes, prior, log_prior, remine_lambda, form);
    lade_free(log_prior);
    return st;
}

lade_status lade_lade_ce(double *loss, float *dlogits, float scale, const float *logits,
                         const int64_t *labels, int n, int classes, const float *prior) {
    lade_status st = lade_check_prior(prior, classes, "prior");
    if (!st) st = check_batch(logits, labels, n, classes);
    double *log_prior = NULL;
    float *offset = NULL;
    if (st || (st = log_prior_new(&log_prior, &offset, prior, classes))) return st;
    lade_ce_config cfg = lade_ce_config_default();
    cfg.offset = offset;
    st = ce_run(loss, dlogits, scale, logits, labels, n, classes, &cfg);
    lade_free(log_prior);
    return st;
}

/* ---- the LADE loss ------------------------------------------------------------------- */
lade_status lade_lade_loss(double *loss, double *lade_ce, double *lader, float *dlogits, float scale,
                           const float *logits, const int64_t *labels, int n, int classes, const float *prior,
                           double alpha, float remine_lambda, lade_lader_form form) {
    lade_status st = check_batch(logits, labels, n, classes);
    if (!st) st = check_lader(prior, classes, remine_lambda, form);
    if (!st) st = lt_check_nonnegative(alpha, "alpha");
    double *log_prior = NULL;
    float *offset = NULL;
    if (st || (st = log_prior_new(&log_prior, &offset, prior, classes))) return st;
    lade_ce_config cfg = lade_ce_config_default();
    cfg.offset = offset;
    double ce = 0, reg = 0;
    st = ce_run(&ce, dlogits, scale, logits, labels, n, classes, &cfg);
    if (!st)
        st = lader_run(&reg, dlogits, (float)(scale * alpha), logits, labels, n, classes, prior, log_prior,
                       remine_lambda, form);
    lade_free(log_prior);
    if (st) return st;
    *loss = ce + alpha * reg;
    if (lade_ce) *lade_ce = ce;
    if (lader) *lader = reg;
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
