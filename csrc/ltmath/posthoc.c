/* posthoc.c - test-time adjustment of logits from any model: prior compensation,
 * softmax with temperature and bias, tau-normalisation, temperature fitting. */
/* Without trapping math the compiler may if-convert lt_exp's clamps and vectorise the
 * exponential (the results are the same; only floating-point exception flags could differ). */
#pragma GCC optimize("no-trapping-math")
#include "checks.h"
#include "linalg.h"
#include "ltmath_internal.h"

#include <float.h>

#include "base/blas.h"

/* Row-parallel passes: rows are independent and each is computed the same way
 * whichever thread takes it, so results do not depend on the thread count.
 * Below this many values a pass runs on the calling thread alone. */
#define PARALLEL_MIN_VALUES 65536

static void for_rows(size_t n, size_t classes, lade_range_fn fn, void *ctx) {
    if (n * classes >= PARALLEL_MIN_VALUES)
        lade_parallel_for(n, fn, ctx);
    else
        fn(ctx, 0, n);
}

typedef struct {
    float *out;
    const float *logits, *offset;
    const double *bias;
    float inv_t;
    int classes;
} rows_job;

static void adjust_rows(void *ctx, size_t begin, size_t end) {
    const rows_job *j = ctx;
    for (size_t i = begin; i < end; i++) {
        const float *z = j->logits + i * j->classes;
        float *o = j->out + i * j->classes;
        for (int c = 0; c < j->classes; c++) o[c] = z[c] + j->offset[c];
    }
}

lade_status lade_adjust_logits(float *out, const float *logits, int n, int classes, const float *source_prior,
                               float source_tau, const float *target_prior) {
    lade_status st = lt_check_logits(logits, (size_t)n, classes, "logits");
    if (st) return st;
    if (source_prior && (st = lade_check_prior(source_prior, classes, "source_prior"))) return st;
    if (target_prior && (st = lade_check_prior(target_prior, classes, "target_prior"))) return st;
    if (!isfinite(source_tau)) return lade_fail(LADE_EINVAL, "argument 'tau' must be finite, got %g", (double)source_tau);
    float *offset = lade_alloc((size_t)classes * sizeof(float));
    if (!offset) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    for (int c = 0; c < classes; c++) {
        double o = 0;
        if (source_prior) o -= source_tau * log((double)source_prior[c]);
        if (target_prior) o += log((double)target_prior[c]);
        offset[c] = (float)o;
    }
    rows_job job = {out, logits, offset, NULL, 1.0f, classes};
    for_rows((size_t)n, (size_t)classes, adjust_rows, &job);
    lade_free(offset);
    return LADE_OK;
}

/* ---- multi-label: per-label log-odds shift and sigmoid ------------------------------ */
typedef struct {
    float *out;
    const float *logits;
    const double *offset; /* (labels) -logit(p_s) + logit(p_t) */
    int labels, probabilities;
} logodds_job;

static double logit(double p) { return log(p) - log1p(-p); }

/* sigmoid(t) without overflow: exp of a non-positive number only */
static double stable_sigmoid(double t) {
    if (t >= 0) return 1.0 / (1.0 + exp(-t));
    double e = exp(t);
    return e / (1.0 + e);
}

static void logodds_rows(void *ctx, size_t begin, size_t end) {
    const logodds_job *j = ctx;
    for (size_t i = begin; i < end; i++) {
        const float *z = j->logits + i * j->labels;
        float *o = j->out + i * j->labels;
        for (int c = 0; c < j->labels; c++) {
            double t = (double)z[c] + j->offset[c];
            o[c] = (float)(j->probabilities ? stable_sigmoid(t) : t);
        }
    }
}

lade_status lade_adjust_logodds(float *out, const float *logits, int n, int labels, const float *source_marginals,
                                const float *target_marginals, int probabilities) {
    lade_status st = lt_check_logits(logits, (size_t)n, labels, "logits");
    if (st) return st;
    if (source_marginals && (st = lade_check_marginals(source_marginals, labels, "source_marginals"))) return st;
    if (target_marginals && (st = lade_check_marginals(target_marginals, labels, "target_marginals"))) return st;
    double *offset = lade_alloc((size_t)labels * sizeof(double));
    if (!offset) return lade_fail(LADE_ENOMEM, "no memory for %d labels", labels);
    for (int c = 0; c < labels; c++)
        offset[c] = (source_marginals ? -logit(source_marginals[c]) : 0) +
                    (target_marginals ? logit(target_marginals[c]) : 0);
    logodds_job job = {out, logits, offset, labels, probabilities != 0};
    for_rows((size_t)n, (size_t)labels, logodds_rows, &job);
    lade_free(offset);
    return LADE_OK;
}

/* Compiled for AVX2 as well as the baseline, the wider one picked at load time: the same
 * operations in the same order (no FMA contraction in ISO C mode), so the same result. */
__attribute__((target_clones("avx2", "default")))
static void softmax_rows(void *ctx, size_t begin, size_t end) {
    const rows_job *j = ctx;
    for (size_t i = begin; i < end; i++) {
        const float *z = j->logits + i * j->classes;
        float *o = j->out + i * j->classes;
        if (j->bias)
            for (int c = 0; c < j->classes; c++) o[c] = (float)(z[c] * (double)j->inv_t + j->bias[c]);
        else
            for (int c = 0; c < j->classes; c++) o[c] = z[c] * j->inv_t;
        float max = lt_row_max(o, j->classes);
        float inv_sum = 1.0f / lt_exp_shift_sum(o, o, max, j->classes);
        for (int c = 0; c < j->classes; c++) o[c] *= inv_sum;
    }
}

lade_status lade_softmax(float *out, const float *logits, int n, int classes, double temperature, const double *bias) {
    lade_status st = lt_check_logits(logits, (size_t)n, classes, "logits");
    if (st) return st;
    if (!(temperature > 0) || !isfinite(temperature))
        return lade_fail(LADE_EINVAL, "argument 'temperature' must be finite and > 0, got %g", temperature);
    if (bias)
        for (int c = 0; c < classes; c++)
            if (!isfinite(bias[c])) return lade_fail(LADE_ENONFINITE, "argument 'bias': bias[%d] is not finite", c);
    rows_job job = {out, logits, NULL, bias, (float)(1.0 / temperature), classes};
    for_rows((size_t)n, (size_t)classes, softmax_rows, &job);
    return LADE_OK;
}

lade_status lade_tau_normalize(float *out, const float *weights, int rows, int cols, float tau) {
    lade_status st = lt_check_logits(weights, (size_t)rows, cols, "weights");
    if (st) return st;
    if (!isfinite(tau)) return lade_fail(LADE_EINVAL, "argument 'tau' must be finite, got %g", (double)tau);
    for (int r = 0; r < rows; r++) {
        const float *w = weights + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        double sq = 0;
        for (int c = 0; c < cols; c++) sq += (double)w[c] * w[c];
        double k = sq > 0 ? pow(sqrt(sq), -(double)tau) : 1.0; /* an all-zero row stays zero */
        for (int c = 0; c < cols; c++) o[c] = (float)(w[c] * k);
    }
    return LADE_OK;
}

/* ---- temperature / bias-corrected temperature scaling ------------------------------- */
/* Per-row passes of the fit over the thread pool: each row's numbers are computed
 * the same way whichever thread takes it, and the callers add them in row order,
 * so the fit does not depend on the thread count. */
typedef struct {
    const float *logits;
    const int64_t *labels;
    int C;
    double beta;
    const double *b;
    double *probs;        /* NULL, or (n, C): the probabilities */
    double *row_a, *row_b; /* per row: the NLL (nll_rows); E_p[z], E_p[z^2] (moment_rows) */
} fit_job;

static void nll_rows(void *ctx, size_t begin, size_t end) {
    const fit_job *j = ctx;
    const int C = j->C;
    for (size_t i = begin; i < end; i++) {
        const float *z = j->logits + i * C;
        double max = -DBL_MAX;
        for (int c = 0; c < C; c++) {
            double t = j->beta * z[c] + (j->b ? j->b[c] : 0);
            max = t > max ? t : max;
        }
        double sum = 0;
        for (int c = 0; c < C; c++) {
            double e = exp(j->beta * z[c] + (j->b ? j->b[c] : 0) - max);
            sum += e;
            if (j->probs) j->probs[i * C + c] = e;
        }
        if (j->probs)
            for (int c = 0; c < C; c++) j->probs[i * C + c] /= sum;
        int y = (int)j->labels[i];
        j->row_a[i] = max + log(sum) - (j->beta * z[y] + (j->b ? j->b[y] : 0));
    }
}

static void moment_rows(void *ctx, size_t begin, size_t end) {
    const fit_job *j = ctx;
    const int C = j->C;
    for (size_t i = begin; i < end; i++) {
        const float *z = j->logits + i * C;
        const double *p = j->probs + i * C;
        double m1 = 0, m2 = 0;
        for (int c = 0; c < C; c++) {
            m1 += p[c] * z[c];
            m2 += p[c] * z[c] * z[c];
        }
        j->row_a[i] = m1;
        j->row_b[i] = m2;
    }
}

/* NLL of softmax(beta * z + b); with probs != NULL also stores the probabilities. */
static double scaled_nll(fit_job *j, int n, double beta, const double *b, double *probs) {
    j->beta = beta, j->b = b, j->probs = probs;
    for_rows((size_t)n, (size_t)j->C, nll_rows, j);
    double total = 0;
    for (int i = 0; i < n; i++) total += j->row_a[i];
    return total / n;
}

lade_status lade_fit_temperature(double *temperature, double *bias, double *nll, const float *logits,
                                 const int64_t *labels, int n, int classes, int max_iter) {
    lade_status st = lt_check_logits(logits, (size_t)n, classes, "logits");
    if (st) return st;
    if ((st = lt_check_labels(labels, (size_t)n, classes, "labels"))) return st;
    if (max_iter < 1) return lade_fail(LADE_EINVAL, "argument 'max_iter' must be >= 1, got %d", max_iter);
    int C = classes, d = bias ? C + 1 : 1; /* parameters: beta = 1/T, then the biases */
    size_t nc = (size_t)n * C;
    size_t bytes = (nc + (size_t)d * d + 4 * (size_t)d + 2 * (size_t)n) * sizeof(double);
    double *P = lade_alloc(bytes);
    if (!P) return lade_fail(LADE_ENOMEM, "no memory for temperature fitting (%zu bytes)", bytes);
    double *H = P + nc, *grad = H + (size_t)d * d, *theta = grad + d, *trial = theta + d, *step = trial + d;
    fit_job job = {logits, labels, C, 1.0, NULL, NULL, step + d, step + d + n};
    memset(theta, 0, (size_t)d * sizeof(double));
    theta[0] = 1.0;
    double f = scaled_nll(&job, n, theta[0], bias ? theta + 1 : NULL, P);
    for (int iter = 0; iter < max_iter; iter++) {
        /* gradient and Hessian of the mean NLL at theta (P holds the probabilities) */
        memset(grad, 0, (size_t)d * sizeof(double));
        memset(H, 0, (size_t)d * d * sizeof(double));
        job.probs = P;
        for_rows((size_t)n, (size_t)C, moment_rows, &job);
        for (int i = 0; i < n; i++) {
            const float *z = logits + (size_t)i * C;
            const double *p = P + (size_t)i * C;
            int y = (int)labels[i];
            double m1 = job.row_a[i], m2 = job.row_b[i];
            grad[0] += m1 - z[y];
            H[0] += m2 - m1 * m1;
            if (bias) {
                for (int c = 0; c < C; c++) {
                    grad[1 + c] += p[c];
                    H[1 + c] += p[c] * (z[c] - m1); /* d^2/(dbeta db_c) */
                    H[(size_t)(1 + c) * d + 1 + c] += p[c];
                }
                grad[1 + y] -= 1;
            }
        }
        if (bias) /* H_bb = mean(diag p) - P^T P / n: one rank-n update */
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, C, n, -1.0, P, C, 1.0, H + d + 1, d);
        for (int k = 0; k < d * d; k++) H[k] /= n;
        for (int k = 0; k < d; k++) grad[k] /= n;
        for (int c = 1; c < d; c++) H[(size_t)c * d] = H[c];
        for (int r = 1; r < d; r++) /* mirror the lower triangle */
            for (int c = r + 1; c < d; c++) H[(size_t)r * d + c] = H[(size_t)c * d + r];
        double gmax = 0;
        for (int k = 0; k < d; k++) gmax = fabs(grad[k]) > gmax ? fabs(grad[k]) : gmax;
        if (gmax < 1e-9) break;
        /* the biases are defined up to a common shift (H is singular along it): a small ridge */
        for (int k = 1; k < d; k++) H[(size_t)k * d + k] += 1e-7;
        for (int k = 0; k < d; k++) step[k] = -grad[k];
        if (!lt_cholesky_solve(H, step, d)) /* fall back to a gradient step */
            for (int k = 0; k < d; k++) step[k] = -grad[k];
        /* backtracking: halve until the NLL decreases (Armijo with c = 1e-4) */
        double slope = 0;
        for (int k = 0; k < d; k++) slope += step[k] * grad[k];
        double t = 1.0, f_new = f;
        int improved = 0;
        for (int tries = 0; tries < 40; tries++, t *= 0.5) {
            for (int k = 0; k < d; k++) trial[k] = theta[k] + t * step[k];
            if (!(trial[0] > 0)) continue;
            f_new = scaled_nll(&job, n, trial[0], bias ? trial + 1 : NULL, NULL);
            if (f_new <= f + 1e-4 * t * slope) {
                improved = 1;
                break;
            }
        }
        if (!improved) break;
        memcpy(theta, trial, (size_t)d * sizeof(double));
        double change = f - f_new;
        f = scaled_nll(&job, n, theta[0], bias ? theta + 1 : NULL, P);
        if (change < 1e-13) break;
    }
    *temperature = 1.0 / theta[0];
    if (bias) {
        double mean = 0;
        for (int c = 0; c < C; c++) mean += theta[1 + c];
        mean /= C;
        for (int c = 0; c < C; c++) bias[c] = theta[1 + c] - mean;
    }
    *nll = f;
    lade_free(P);
    return LADE_OK;
}
