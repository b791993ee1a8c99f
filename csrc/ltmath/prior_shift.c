/* prior_shift.c - estimating an unknown target prior from unlabelled predictions:
 * EM (Saerens et al. 2002), BBSE (Lipton et al. 2018), RLLS (Azizzadenesheli et al. 2019), bootstrap
 * intervals and shift tests. */
#include "checks.h"
#include "linalg.h"
#include "ltmath_internal.h"

#include <float.h>
#include <stdlib.h>

/* Estimated priors are floored so that log p_t stays finite downstream. */
#define ESTIMATE_FLOOR 1e-8

static void floor_and_normalize(double *p, int classes) {
    double sum = 0;
    for (int c = 0; c < classes; c++) sum += p[c];
    double floored = 0;
    for (int c = 0; c < classes; c++) {
        p[c] = p[c] / sum < ESTIMATE_FLOOR ? ESTIMATE_FLOOR : p[c] / sum;
        floored += p[c];
    }
    for (int c = 0; c < classes; c++) p[c] /= floored;
}

/* The E step sums over rows in blocks of EM_BLOCK rows, each block into its own partial sums,
 * which are then added in block order: the result does not depend on the number of threads. */
#define EM_BLOCK 1024

/* sum_c p[c] * r[c] in four lanes (vectorisable without reassociation flags) */
static double row_dot(const float *p, const double *r, int C) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0, tail = 0;
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        s0 += p[c] * r[c];
        s1 += p[c + 1] * r[c + 1];
        s2 += p[c + 2] * r[c + 2];
        s3 += p[c + 3] * r[c + 3];
    }
    for (; c < C; c++) tail += p[c] * r[c];
    return ((s0 + s1) + (s2 + s3)) + tail;
}

typedef struct {
    const float *probs;
    const double *weight, *ratio;
    double *partial; /* (blocks, classes) */
    int n, classes;
} em_estep_job;

/* Compiled for AVX2 as well as the baseline, the wider one picked at load time: the same
 * operations in the same order (no FMA contraction in ISO C mode), so the same result. */
__attribute__((target_clones("avx2", "default")))
static void em_estep_blocks(void *ctx, size_t begin, size_t end) {
    const em_estep_job *j = ctx;
    int C = j->classes;
    for (size_t b = begin; b < end; b++) {
        double *acc = j->partial + b * (size_t)C;
        memset(acc, 0, (size_t)C * sizeof(double));
        int hi = (int)((b + 1) * EM_BLOCK < (size_t)j->n ? (b + 1) * EM_BLOCK : (size_t)j->n);
        for (int i = (int)(b * EM_BLOCK); i < hi; i++) {
            double w = j->weight ? j->weight[i] : 1.0;
            if (w == 0) continue;
            const float *p = j->probs + (size_t)i * C;
            double norm = row_dot(p, j->ratio, C);
            if (!(norm > 0)) continue; /* a row with all mass on classes of estimated prior 0 */
            double k = w / norm;
            for (int c = 0; c < C; c++) acc[c] += k * p[c] * j->ratio[c];
        }
    }
}

/* One EM map p -> F(p) over all rows; returns max_c |F(p)_c - p_c|. */
typedef struct {
    em_estep_job job;
    const float *source_prior;
    const double *labelled, *pseudo_vec; /* pseudo_vec (classes): per-class pseudo counts, or NULL */
    double *ratio, pseudo, pseudo_total, total_w;
    size_t blocks;
    int parallel, restricted; /* restricted: classes at 0 stay there (a support-restricted fit) */
} em_map_ctx;

static double em_map(em_map_ctx *x, const double *prior, double *next) {
    int classes = x->job.classes;
    for (int c = 0; c < classes; c++) {
        x->ratio[c] = prior[c] / x->source_prior[c];
        next[c] = x->labelled ? x->labelled[c] : 0;
    }
    if (x->parallel)
        lade_parallel_for(x->blocks, em_estep_blocks, &x->job);
    else
        em_estep_blocks(&x->job, 0, x->blocks);
    for (size_t b = 0; b < x->blocks; b++)
        for (int c = 0; c < classes; c++) next[c] += x->job.partial[b * (size_t)classes + c];
    double change = 0;
    for (int c = 0; c < classes; c++) {
        next[c] = (next[c] + (x->pseudo_vec ? x->pseudo_vec[c] : x->pseudo)) / (x->total_w + x->pseudo_total);
        change = fabs(next[c] - prior[c]) > change ? fabs(next[c] - prior[c]) : change;
    }
    return change;
}

/* SQUAREM (Varadhan & Roland 2008, scheme S3): from p0, two EM maps p1 = F(p0), p2 = F(p1), then the
 * extrapolation p0 - 2 a r + a^2 v (r = p1 - p0, v = p2 - 2 p1 + p0, a = -|r| / |v| capped at -1),
 * replaced by p2 when it leaves the simplex's interior, and one more map to stabilise. It reaches
 * the same fixed point in several times fewer maps when EM converges slowly (many classes).
 * Returns the number of maps in *it and whether the last map moved less than tol. */
static int em_squarem(em_map_ctx *x, double *prior, double *work, double tol, int max_iter, int *it) {
    int C = x->job.classes;
    double *p1 = work, *p2 = work + C, *q = work + 2 * (size_t)C;
    while (*it < max_iter) {
        double change = em_map(x, prior, p1);
        ++*it;
        if (change < tol || *it >= max_iter) {
            memcpy(prior, p1, (size_t)C * sizeof(double));
            return change < tol;
        }
        change = em_map(x, p1, p2);
        ++*it;
        if (change < tol || *it >= max_iter) {
            memcpy(prior, p2, (size_t)C * sizeof(double));
            return change < tol;
        }
        double rr = 0, vv = 0;
        for (int c = 0; c < C; c++) {
            double r = p1[c] - prior[c], v = p2[c] - 2 * p1[c] + prior[c];
            rr += r * r, vv += v * v;
        }
        double a = vv > 0 ? -sqrt(rr / vv) : -1.0;
        a = a > -1.0 ? -1.0 : a;
        int inside = 1;
        double total = 0;
        for (int c = 0; c < C; c++) {
            double r = p1[c] - prior[c], v = p2[c] - 2 * p1[c] + prior[c];
            q[c] = prior[c] - 2 * a * r + a * a * v;
            inside &= (q[c] > 0 || (x->restricted && prior[c] == 0 && q[c] == 0)) && isfinite(q[c]);
            total += q[c];
        }
        if (inside)
            for (int c = 0; c < C; c++) q[c] /= total;
        else
            memcpy(q, p2, (size_t)C * sizeof(double));
        change = em_map(x, q, prior);
        ++*it;
        if (change < tol) return 1;
    }
    return 0;
}

/* EM from `init` (classes,), in place. weight (n) may be NULL. scratch: 2 * classes doubles.
 * pseudo > 0 makes it MAP under a Dirichlet(1 + pseudo) prior: each class gets `pseudo` extra
 * soft counts per M step, so no class is driven to exactly 0 by a few confident rows.
 * labelled (classes) may be NULL: known target labels drawn with the unlabelled rows from the
 * same target distribution, whose counts join the M step as hard counts. parallel: split the E
 * step over the thread pool (not from inside a pool job, e.g. a bootstrap replicate).
 * accelerate: SQUAREM steps (em_squarem); *iterations then counts EM maps. pseudo_vec (classes) may
 * be NULL; otherwise it replaces `pseudo` by a pseudo count per class (a Dirichlet(1 + pseudo_vec)
 * MAP). restricted: the classes at 0 in `init` stay at 0 (EM's map keeps them there; the flag lets
 * SQUAREM's extrapolation keep them there too). Returns LADE_ENOMEM when the block sums cannot be
 * allocated. */
static lade_status em_run(double *prior, int *iterations, int *converged, double *loglik, const float *probs,
                          const double *weight, int n, int classes, const float *source_prior, const double *labelled,
                          double pseudo, const double *pseudo_vec, int restricted, double tol, int max_iter,
                          double *scratch, int parallel, int accelerate) {
    double *ratio = scratch, *next = scratch + classes;
    size_t blocks = ((size_t)n + EM_BLOCK - 1) / EM_BLOCK;
    double *partial = lade_alloc((blocks + (accelerate ? 3 : 0)) * (size_t)classes * sizeof(double));
    if (!partial) return lade_fail(LADE_ENOMEM, "no memory for EM's %zu x %d block sums", blocks, classes);
    em_map_ctx x = {{probs, weight, ratio, partial, n, classes}, source_prior, labelled, pseudo_vec, ratio, pseudo,
                    classes * pseudo, 0, blocks, parallel, restricted};
    if (pseudo_vec) {
        x.pseudo_total = 0;
        for (int c = 0; c < classes; c++) x.pseudo_total += pseudo_vec[c];
    }
    for (int i = 0; i < n; i++) x.total_w += weight ? weight[i] : 1.0;
    if (labelled)
        for (int c = 0; c < classes; c++) x.total_w += labelled[c];
    int it = 0, done = 0;
    if (accelerate)
        done = em_squarem(&x, prior, partial + blocks * (size_t)classes, tol, max_iter, &it);
    while (!accelerate && it < max_iter && !done) {
        done = em_map(&x, prior, next) < tol;
        memcpy(prior, next, (size_t)classes * sizeof(double));
        it++;
    }
    lade_free(partial);
    floor_and_normalize(prior, classes);
    double ll = 0;
    for (int c = 0; c < classes; c++) ratio[c] = prior[c] / source_prior[c];
    for (int i = 0; i < n; i++) {
        double w = weight ? weight[i] : 1.0, norm = row_dot(probs + (size_t)i * classes, ratio, classes);
        if (w > 0) ll += w * log(norm > DBL_MIN ? norm : DBL_MIN);
    }
    *iterations = it;
    *converged = done;
    *loglik = ll;
    return LADE_OK;
}

static lade_status check_em_args(const float *probs, int n, int classes, const float *source_prior, double pseudo_count,
                                 double tol, int max_iter) {
    lade_status st = lt_check_probs(probs, (size_t)n, classes, "probs");
    if (st || (st = lade_check_prior(source_prior, classes, "source_prior"))) return st;
    for (int i = 0; i < n; i++) { /* EM divides by each row's total under the current prior */
        double sum = 0;
        for (int c = 0; c < classes; c++) sum += probs[(size_t)i * classes + c];
        if (!(sum > 0))
            return lade_fail(LADE_EINVAL, "argument 'probs': row %d is all zero; EM needs probability rows", i);
    }
    if (!(pseudo_count >= 0) || !isfinite(pseudo_count))
        return lade_fail(LADE_EINVAL, "argument 'pseudo_count' must be finite and >= 0, got %g", pseudo_count);
    if (!(tol > 0)) return lade_fail(LADE_EINVAL, "argument 'tol' must be > 0, got %g", tol);
    if (max_iter < 1) return lade_fail(LADE_EINVAL, "argument 'max_iter' must be >= 1, got %d", max_iter);
    return LADE_OK;
}

lade_status lade_em_prior(float *target_prior, int *iterations, int *converged, double *loglik,
                          const float *source_probs, const double *row_weight, int n, int classes,
                          const float *source_prior, double tol, int max_iter) {
    return lade_em_prior_map(target_prior, iterations, converged, loglik, source_probs, row_weight, n, classes,
                             source_prior, 0.0, tol, max_iter);
}

static lade_status em_prior_map(float *target_prior, int *iterations, int *converged, double *loglik,
                                const float *source_probs, const double *row_weight, int n, int classes,
                                const float *source_prior, double pseudo_count, double tol, int max_iter,
                                int accelerate) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, pseudo_count, tol, max_iter);
    if (st) return st;
    if (row_weight) {
        double total = 0;
        for (int i = 0; i < n; i++) {
            if (!(row_weight[i] >= 0) || !isfinite(row_weight[i]))
                return lade_fail(LADE_EINVAL, "argument 'row_weight': row_weight[%d] = %g must be finite and >= 0", i,
                                 row_weight[i]);
            total += row_weight[i];
        }
        if (!(total > 0)) return lade_fail(LADE_EINVAL, "argument 'row_weight' sums to 0");
    }
    double *prior = lade_alloc(3 * (size_t)classes * sizeof(double));
    if (!prior) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    for (int c = 0; c < classes; c++) prior[c] = source_prior[c];
    st = em_run(prior, iterations, converged, loglik, source_probs, row_weight, n, classes, source_prior, NULL,
                pseudo_count, NULL, 0, tol, max_iter, prior + classes, 1, accelerate);
    for (int c = 0; c < classes; c++) target_prior[c] = (float)prior[c];
    lade_free(prior);
    return st;
}

lade_status lade_em_prior_map(float *target_prior, int *iterations, int *converged, double *loglik,
                              const float *source_probs, const double *row_weight, int n, int classes,
                              const float *source_prior, double pseudo_count, double tol, int max_iter) {
    return em_prior_map(target_prior, iterations, converged, loglik, source_probs, row_weight, n, classes,
                        source_prior, pseudo_count, tol, max_iter, 0);
}

lade_status lade_em_prior_squarem(float *target_prior, int *iterations, int *converged, double *loglik,
                                  const float *source_probs, const double *row_weight, int n, int classes,
                                  const float *source_prior, double pseudo_count, double tol, int max_iter) {
    return em_prior_map(target_prior, iterations, converged, loglik, source_probs, row_weight, n, classes,
                        source_prior, pseudo_count, tol, max_iter, 1);
}

lade_status lade_reweight_probs(float *out, const float *probs, int n, int classes, const float *from_prior,
                                const float *to_prior) {
    lade_status st = lt_check_probs(probs, (size_t)n, classes, "probs");
    if (st || (st = lade_check_prior(from_prior, classes, "from_prior")) ||
        (st = lade_check_prior(to_prior, classes, "to_prior")))
        return st;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * classes;
        float *o = out + (size_t)i * classes;
        double norm = 0;
        for (int c = 0; c < classes; c++) norm += (double)p[c] * to_prior[c] / from_prior[c];
        if (!(norm > 0))
            return lade_fail(LADE_EINVAL, "argument 'probs': row %d has no probability mass", i);
        for (int c = 0; c < classes; c++) o[c] = (float)((double)p[c] * to_prior[c] / from_prior[c] / norm);
    }
    return LADE_OK;
}

lade_status lade_mean_posterior(float *prior, const float *probs, int n, int classes) {
    lade_status st = lt_check_probs(probs, (size_t)n, classes, "probs");
    if (st) return st;
    if (n < 1) return lade_fail(LADE_EINVAL, "argument 'probs' has no rows");
    double *sum = lade_alloc((size_t)classes * sizeof(double));
    if (!sum) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    memset(sum, 0, (size_t)classes * sizeof(double));
    double total = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < classes; c++) sum[c] += probs[(size_t)i * classes + c];
    for (int c = 0; c < classes; c++) total += sum[c];
    if (!(total > 0)) st = lade_fail(LADE_EINVAL, "argument 'probs' is all zeros: rows of posteriors sum to 1");
    if (!st) floor_and_normalize(sum, classes); /* which would divide 0 by 0 */
    for (int c = 0; c < classes && !st; c++) prior[c] = (float)sum[c];
    lade_free(sum);
    return st;
}

/* ---- the tilted family: one parameter along the long-tail direction ------------------- */
/* The prior p_g,c = r_c t_c^g / Z(g) with a_c = log t_c, so that p_g / r = exp(g a) / Z. Row sums
 * S_i = sum_c q_ic e_c with e_c = exp(g a_c - max_c g a_c) (the shift cancels between S_i and Z)
 * give the log-likelihood sum_i log S_i - n log Z and its first two derivatives in g. */
typedef struct {
    double loglik, grad, curv;
} tilt_moments;

static tilt_moments tilt_eval(double g, const float *probs, int n, int C, const double *r, const double *a,
                              double *e) {
    double top = -INFINITY;
    for (int c = 0; c < C; c++) top = g * a[c] > top ? g * a[c] : top;
    double z = 0, za = 0, zaa = 0;
    for (int c = 0; c < C; c++) {
        e[c] = exp(g * a[c] - top);
        z += r[c] * e[c], za += r[c] * e[c] * a[c], zaa += r[c] * e[c] * a[c] * a[c];
    }
    double mean = za / z;
    tilt_moments m = {-(double)n * log(z), -(double)n * mean, -(double)n * (zaa / z - mean * mean)};
    for (int i = 0; i < n; i++) {
        const float *q = probs + (size_t)i * C;
        double s = 0, sa = 0, saa = 0;
        for (int c = 0; c < C; c++) {
            double w = q[c] * e[c];
            s += w, sa += w * a[c], saa += w * a[c] * a[c];
        }
        if (!(s > DBL_MIN)) s = DBL_MIN; /* the row's classes all have a vanishing tilted prior */
        m.loglik += log(s);
        m.grad += sa / s;
        m.curv += saa / s - (sa / s) * (sa / s);
    }
    return m;
}

lade_status lade_tilt_prior(float *target_prior, double *exponent, double *loglik, int *iterations, int *converged,
                            const float *source_probs, int n, int classes, const float *source_prior,
                            const float *tilt_prior, double tol, int max_iter) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, 0.0, tol, max_iter);
    if (st || (st = lade_check_prior(tilt_prior, classes, "tilt_prior"))) return st;
    double *buf = lade_alloc(3 * (size_t)classes * sizeof(double));
    if (!buf) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    double *r = buf, *a = buf + classes, *e = buf + 2 * (size_t)classes;
    double lo_a = INFINITY, hi_a = -INFINITY;
    for (int c = 0; c < classes; c++) {
        r[c] = source_prior[c], a[c] = log(tilt_prior[c]);
        lo_a = a[c] < lo_a ? a[c] : lo_a, hi_a = a[c] > hi_a ? a[c] : hi_a;
    }
    /* the maximiser of a log-likelihood that may not be concave: safeguarded Newton on its
     * derivative inside a bracket [lo, hi] with grad(lo) > 0 > grad(hi), bisecting whenever the
     * Newton step leaves the bracket or the curvature is not negative. |g| is kept within the
     * range where the family's largest prior ratio is e^30 (1e13): beyond it the family puts all
     * its mass on one end. A constant tilt_prior makes the family the single prior r: g = 0. */
    double g = 0, bound = hi_a - lo_a > 1e-12 ? 30.0 / (hi_a - lo_a) : 0.0, lo = -bound, hi = bound;
    int it = 0, done = bound == 0;
    tilt_moments m = tilt_eval(g, source_probs, n, classes, r, a, e);
    while (!done && it < max_iter) {
        if (m.grad > 0) lo = g;
        else hi = g;
        double next = m.curv < 0 ? g - m.grad / m.curv : NAN;
        if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
        done = fabs(next - g) < tol || m.grad == 0;
        if (m.grad != 0) g = next;
        m = tilt_eval(g, source_probs, n, classes, r, a, e);
        it++;
    }
    double sum = 0; /* the last tilt_eval left e = exp(g a - max g a) at this g */
    for (int c = 0; c < classes; c++) sum += (e[c] *= r[c]);
    for (int c = 0; c < classes; c++) e[c] /= sum;
    floor_and_normalize(e, classes);
    for (int c = 0; c < classes; c++) target_prior[c] = (float)e[c];
    *exponent = g, *loglik = m.loglik, *iterations = it, *converged = done;
    lade_free(buf);
    return LADE_OK;
}

/* ---- BBSE -------------------------------------------------------------------------- */
typedef struct {
    double *confusion, *work, *inv, *gram; /* (C*C) each */
    double *mu, *p_cal, *lin, *q, *z, *u, *weight; /* (C) each */
    int *free_set;                                 /* (C): the indices the solve lets move */
    char *is_free;                                 /* (C) */
} bbse_scratch;

static lade_status bbse_scratch_alloc(bbse_scratch *s, int classes) {
    size_t C = (size_t)classes;
    s->confusion = lade_alloc((4 * C * C + 7 * C) * sizeof(double) + C * (sizeof(int) + 1));
    if (!s->confusion) return lade_fail(LADE_ENOMEM, "no memory for a %d x %d confusion matrix", classes, classes);
    s->work = s->confusion + C * C;
    s->inv = s->work + C * C;
    s->gram = s->inv + C * C;
    s->mu = s->gram + C * C;
    s->p_cal = s->mu + C;
    s->lin = s->p_cal + C;
    s->q = s->lin + C;
    s->z = s->q + C;
    s->u = s->z + C;
    s->weight = s->u + C;
    s->free_set = (int *)(s->weight + C);
    s->is_free = (char *)(s->free_set + C);
    return LADE_OK;
}

/* Conditional confusion M[i][j] = P(pred i | y j) and the label frequencies p_cal over the
 * (weighted) calibration rows, mu[i] = P(pred i) over the (weighted) target rows. Hard
 * predictions come precomputed (pred arrays); soft ones are the scores themselves. A class
 * without calibration rows leaves a zero column (M singular). */
static void bbse_moments(bbse_scratch *s, const float *calib, const int64_t *calib_pred, const int64_t *labels,
                         const double *calib_w, int m, const float *target, const int64_t *target_pred,
                         const double *target_w, int n, int C, int soft) {
    memset(s->confusion, 0, (size_t)C * C * sizeof(double));
    memset(s->mu, 0, (size_t)C * sizeof(double));
    memset(s->p_cal, 0, (size_t)C * sizeof(double));
    double tm = 0, tn = 0;
    for (int k = 0; k < m; k++) {
        double w = calib_w ? calib_w[k] : 1.0;
        if (w == 0) continue;
        int y = (int)labels[k];
        tm += w;
        s->p_cal[y] += w;
        if (soft)
            for (int i = 0; i < C; i++) s->confusion[(size_t)i * C + y] += w * calib[(size_t)k * C + i];
        else
            s->confusion[(size_t)calib_pred[k] * C + y] += w;
    }
    for (int k = 0; k < n; k++) {
        double w = target_w ? target_w[k] : 1.0;
        if (w == 0) continue;
        tn += w;
        if (soft)
            for (int i = 0; i < C; i++) s->mu[i] += w * target[(size_t)k * C + i];
        else
            s->mu[target_pred[k]] += w;
    }
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++)
            if (s->p_cal[j] > 0) s->confusion[(size_t)i * C + j] /= s->p_cal[j];
    for (int c = 0; c < C; c++) {
        s->p_cal[c] /= tm;
        s->mu[c] /= tn;
    }
}

/* q = argmin over the probability simplex of 0.5 sum_i (M q - mu)_i^2 / v_i + 0.5 ridge |q - ref|^2.
 * v_i = (M p_cal)_i is how often class i is predicted on the calibration data, i.e. (up to a
 * constant) the variance of mu_i without shift: a Pearson chi-square distance, so rarely predicted
 * classes are not drowned by the frequent ones (floored at 1% of uniform so that no row dominates).
 * As a quadratic program: 0.5 q'Gq - h'q with G = M^T W M + ridge I, h = M^T W mu + ridge ref,
 * solved exactly by qp_active_set from q = ref. */
#define BBSE_MAX_STEPS(C) (10 * (C) + 10)

/* Lets coordinate c move: appends it to F (position k) and grows the factor of G_FF. Returns 0 if
 * G_FF would lose definiteness (rounding only: G is positive definite). */
static int bbse_free(bbse_scratch *s, int C, int k, int c) {
    double *a = s->inv;
    for (int i = 0; i < k; i++) a[i] = s->gram[(size_t)s->free_set[i] * C + c];
    if (!lt_cholesky_append(s->work, C, k, a, s->gram[(size_t)c * C + c])) return 0;
    s->free_set[k] = c;
    s->is_free[c] = 1;
    return 1;
}

/* Adds eps |q - ref|^2 (eps = 1e-9 of G's mean diagonal) to the program in s->gram, s->lin, which
 * makes G positive definite: the minimiser is unique (with M singular, the one nearest ref) and
 * the Cholesky factor of G_FF exists. Returns the tolerance below which a multiplier is rounding. */
static double qp_regularise(bbse_scratch *s, int C, const double *ref) {
    double *G = s->gram, *h = s->lin, trace = 0, scale = 0;
    for (int a = 0; a < C; a++) trace += G[(size_t)a * C + a];
    const double eps = 1e-9 * (trace > 0 ? trace / C : 1.0);
    for (int a = 0; a < C; a++) {
        G[(size_t)a * C + a] += eps;
        h[a] += eps * ref[a];
        scale = fmax(scale, fabs(h[a]) + G[(size_t)a * C + a]);
    }
    return 1e-12 * scale;
}

/* argmin of 0.5 q'Gq - h'q (s->gram, s->lin) over q >= 0, and with simplex also sum q = 1, from the
 * feasible start s->q, into s->q: the primal active-set method (Nocedal and Wright, Numerical
 * Optimization, algorithm 16.3). On the set F of coordinates free to move, the minimiser is x = z + t u,
 * where G_FF z = h_F, G_FF u = 1 and t = (1 - sum z) / sum u with the sum constraint (t is then the
 * common gradient on F), else t = 0. Step from q towards x until a coordinate reaches 0 (it leaves F);
 * at x, free the fixed coordinate c whose multiplier (G q - h)_c - t is most negative, or stop when
 * none is below -tol. The Cholesky factor of G_FF is updated as coordinates join or leave F (O(C^2)
 * a step, not a new O(C^3) factorisation). The iteration cap is a guard against cycling on
 * degenerate ties. */
static void qp_active_set(bbse_scratch *s, int C, int simplex, double tol) {
    double *G = s->gram, *h = s->lin, *q = s->q, *z = s->z, *u = s->u;
    int *F = s->free_set;
    int k = 0; /* L (s->work, stride C) is the Cholesky factor of G_FF, F[0..k) in the factor's order */
    for (int c = 0; c < C; c++) {
        s->is_free[c] = 0;
        if (!(q[c] > 0)) continue;
        if (!bbse_free(s, C, k, c)) return; /* not reached: G is positive definite */
        k++;
    }
    for (int step = 0; step < BBSE_MAX_STEPS(C) && k > 0; step++) {
        for (int i = 0; i < k; i++) z[i] = h[F[i]], u[i] = 1;
        lt_cholesky_apply(s->work, C, z, k);
        double t = 0;
        if (simplex) {
            lt_cholesky_apply(s->work, C, u, k);
            double sum_z = 0, sum_u = 0;
            for (int i = 0; i < k; i++) sum_z += z[i], sum_u += u[i];
            t = (1 - sum_z) / sum_u;
        }
        double alpha = 1; /* the step towards x, cut where the first coordinate reaches 0 */
        int block = -1;
        for (int i = 0; i < k; i++) {
            if (simplex) z[i] += t * u[i]; /* z is now x */
            double p = z[i] - q[F[i]];
            if (p < 0 && q[F[i]] + alpha * p < 0) alpha = -q[F[i]] / p, block = i;
        }
        for (int i = 0; i < k; i++) q[F[i]] = block < 0 ? z[i] : q[F[i]] + alpha * (z[i] - q[F[i]]);
        if (block >= 0) {
            q[F[block]] = 0;
            s->is_free[F[block]] = 0;
            lt_cholesky_remove(s->work, C, k, block);
            memmove(F + block, F + block + 1, (size_t)(k - block - 1) * sizeof(int));
            k--;
            continue;
        }
        int release = -1;
        double most = -tol;
        for (int c = 0; c < C; c++) {
            if (s->is_free[c]) continue;
            double g = -h[c] - t;
            for (int b = 0; b < C; b++) g += G[(size_t)c * C + b] * q[b];
            if (g < most) most = g, release = c;
        }
        if (release < 0 || !bbse_free(s, C, k, release)) return; /* optimal (or G_FF lost definiteness) */
        k++;
    }
}

static void bbse_constrained_lsq(bbse_scratch *s, int C, const double *ref, double ridge) {
    double *G = s->gram, *h = s->lin, *w = s->weight;
    for (int i = 0; i < C; i++) {
        double v = 0;
        for (int j = 0; j < C; j++) v += s->confusion[(size_t)i * C + j] * s->p_cal[j];
        w[i] = 1.0 / (v > 0.01 / C ? v : 0.01 / C);
    }
    for (int a = 0; a < C; a++) {
        for (int b = 0; b <= a; b++) {
            double g = 0;
            for (int i = 0; i < C; i++) g += s->confusion[(size_t)i * C + a] * w[i] * s->confusion[(size_t)i * C + b];
            G[(size_t)a * C + b] = G[(size_t)b * C + a] = g;
        }
        double v = 0;
        for (int i = 0; i < C; i++) v += s->confusion[(size_t)i * C + a] * w[i] * s->mu[i];
        G[(size_t)a * C + a] += ridge;
        h[a] = v + ridge * ref[a];
    }
    const double tol = qp_regularise(s, C, ref);
    memcpy(s->q, ref, (size_t)C * sizeof(double));
    qp_active_set(s, C, 1, tol);
}

/* Solves for the target prior from the moments. *cond is the 1-norm condition number of the
 * conditional confusion M (INFINITY if singular); above cond_limit the estimate falls back to
 * the source prior (*fell_back = 1). */
static void bbse_solve(double *out, double *cond, int *fell_back, bbse_scratch *s, int C, const float *source_prior,
                       double ridge, double cond_limit) {
    memcpy(s->work, s->confusion, (size_t)C * C * sizeof(double));
    *cond = lt_invert(s->work, s->inv, C) ? lt_norm1(s->confusion, C) * lt_norm1(s->inv, C) : INFINITY;
    *fell_back = !(*cond <= cond_limit);
    for (int c = 0; c < C; c++) out[c] = source_prior[c];
    if (!*fell_back) {
        bbse_constrained_lsq(s, C, out, ridge);
        memcpy(out, s->q, (size_t)C * sizeof(double));
    }
    floor_and_normalize(out, C);
}

static lade_status check_bbse_args(const float *calib, const int64_t *labels, int m, const float *target, int n,
                                   int classes, const float *source_prior) {
    lade_status st = lt_check_probs(calib, (size_t)m, classes, "calib_scores");
    if (st || (st = lt_check_labels(labels, (size_t)m, classes, "calib_labels")) ||
        (st = lt_check_probs(target, (size_t)n, classes, "target_scores")) ||
        (st = lade_check_prior(source_prior, classes, "source_prior")))
        return st;
    return LADE_OK;
}

static int64_t *argmax_rows(const float *scores, int n, int classes) {
    int64_t *pred = lade_alloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (pred) lade_argmax(pred, scores, n, classes);
    return pred;
}

lade_status lade_bbse_prior(float *target_prior, double *cond, int *fell_back, const float *calib_scores,
                            const int64_t *calib_labels, int m, const float *target_scores, int n, int classes,
                            const float *source_prior, int soft, double ridge, double cond_limit) {
    lade_status st = check_bbse_args(calib_scores, calib_labels, m, target_scores, n, classes, source_prior);
    if (st) return st;
    if (!(cond_limit > 0)) return lade_fail(LADE_EINVAL, "argument 'cond_limit' must be > 0, got %g", cond_limit);
    if (!(ridge >= 0) || !isfinite(ridge)) return lade_fail(LADE_EINVAL, "argument 'ridge' must be finite and >= 0, got %g", ridge);
    bbse_scratch s = {0};
    if ((st = bbse_scratch_alloc(&s, classes))) return st;
    int64_t *cp = soft ? NULL : argmax_rows(calib_scores, m, classes);
    int64_t *tp = soft ? NULL : argmax_rows(target_scores, n, classes);
    double *out = lade_alloc((size_t)classes * sizeof(double));
    if (!out || (!soft && (!cp || !tp))) {
        st = lade_fail(LADE_ENOMEM, "no memory for BBSE");
    } else {
        bbse_moments(&s, calib_scores, cp, calib_labels, NULL, m, target_scores, tp, NULL, n, classes, soft);
        bbse_solve(out, cond, fell_back, &s, classes, source_prior, ridge, cond_limit);
        for (int c = 0; c < classes; c++) target_prior[c] = (float)out[c];
    }
    lade_free(out);
    lade_free(cp);
    lade_free(tp);
    lade_free(s.confusion);
    return st;
}

/* ---- RLLS ---------------------------------------------------------------------------- */
/* One ridge problem of RLLS: w = argmin over w >= 0 of 0.5 |A w - mu|^2 + 0.5 lambda |w - 1|^2, with
 * AtA = A^T A and s->weight = A^T mu; A (the joint confusion) is s->confusion. Returns
 * lambda |w - 1| / |A w - mu| (INFINITY for an exact fit); w in s->q. */
static double rlls_ridge(bbse_scratch *s, int C, const double *AtA, double lambda, const double *ones) {
    memcpy(s->gram, AtA, (size_t)C * C * sizeof(double));
    for (int a = 0; a < C; a++) {
        s->gram[(size_t)a * C + a] += lambda;
        s->lin[a] = s->weight[a] + lambda;
    }
    const double tol = qp_regularise(s, C, ones);
    memcpy(s->q, ones, (size_t)C * sizeof(double));
    qp_active_set(s, C, 0, tol);
    double shift = 0, resid = 0;
    for (int i = 0; i < C; i++) {
        double r = -s->mu[i];
        for (int j = 0; j < C; j++) r += s->confusion[(size_t)i * C + j] * s->q[j];
        resid += r * r;
        shift += (s->q[i] - 1) * (s->q[i] - 1);
    }
    return resid > 0 ? lambda * sqrt(shift / resid) : INFINITY;
}

/* The weights w = argmin over w >= 0 of |A w - mu| + rho |w - 1| (both 2-norms). Each ridge problem
 * of rlls_ridge is solved exactly; at a lambda where lambda |w - 1| = rho |A w - mu| its optimality
 * conditions, divided by |A w - mu|, are the norm problem's, so that w is the answer. The ratio
 * grows with lambda (from the exact fit's towards |A^T b| / |b|, b = mu - A 1), and bisection on
 * log lambda finds the crossing. w = 1 (no shift) when |A^T b| <= rho |b|: then 0 is a subgradient
 * at w = 1. w in s->q. */
static void rlls_solve(bbse_scratch *s, int C, double rho, double *AtA, double *ones) {
    double *A = s->confusion, *Atmu = s->weight, *b = s->z;
    double trace = 0, nb = 0, nAtb = 0;
    for (int i = 0; i < C; i++) {
        ones[i] = 1;
        b[i] = s->mu[i];
        for (int j = 0; j < C; j++) b[i] -= A[(size_t)i * C + j];
        nb += b[i] * b[i];
    }
    for (int a = 0; a < C; a++) {
        double atb = 0, atmu = 0;
        for (int i = 0; i < C; i++) atb += A[(size_t)i * C + a] * b[i], atmu += A[(size_t)i * C + a] * s->mu[i];
        nAtb += atb * atb;
        Atmu[a] = atmu;
        for (int c = 0; c <= a; c++) {
            double g = 0;
            for (int i = 0; i < C; i++) g += A[(size_t)i * C + a] * A[(size_t)i * C + c];
            AtA[(size_t)a * C + c] = AtA[(size_t)c * C + a] = g;
        }
        trace += AtA[(size_t)a * C + a];
    }
    if (!(sqrt(nAtb) > rho * sqrt(nb)) || !(trace > 0)) {
        memcpy(s->q, ones, (size_t)C * sizeof(double));
        return;
    }
    /* bracket the crossing: the ratio tends to |A^T b| / |b| > rho as lambda grows */
    double lo = trace / C, hi = lo;
    while (rlls_ridge(s, C, AtA, hi, ones) < rho && hi < 1e12 * trace) hi *= 16;
    while (rlls_ridge(s, C, AtA, lo, ones) >= rho) {
        if (lo < 1e-14 * trace) return; /* the exact fit (residual ~0) is the answer */
        lo /= 16;
    }
    while (hi > lo * (1 + 1e-9)) {
        double mid = sqrt(lo * hi);
        if (rlls_ridge(s, C, AtA, mid, ones) < rho) lo = mid;
        else hi = mid;
    }
    rlls_ridge(s, C, AtA, hi, ones);
}

lade_status lade_rlls_prior(float *target_prior, double *rho, const float *calib_scores, const int64_t *calib_labels,
                            int m, const float *target_scores, int n, int classes, int soft, double reg,
                            double delta) {
    lade_status st = lt_check_probs(calib_scores, (size_t)m, classes, "calib_scores");
    if (st || (st = lt_check_labels(calib_labels, (size_t)m, classes, "calib_labels")) ||
        (st = lt_check_probs(target_scores, (size_t)n, classes, "target_scores")))
        return st;
    if (!(reg >= 0) || !isfinite(reg)) return lade_fail(LADE_EINVAL, "argument 'reg' must be finite and >= 0, got %g", reg);
    if (!(delta > 0 && delta < 1)) return lade_fail(LADE_EINVAL, "argument 'delta' must be in (0, 1), got %g", delta);
    bbse_scratch s = {0};
    if ((st = bbse_scratch_alloc(&s, classes))) return st;
    int64_t *cp = soft ? NULL : argmax_rows(calib_scores, m, classes);
    int64_t *tp = soft ? NULL : argmax_rows(target_scores, n, classes);
    double *out = lade_alloc((size_t)classes * (classes + 1) * sizeof(double)); /* and A^T A */
    if (!out || (!soft && (!cp || !tp))) {
        st = lade_fail(LADE_ENOMEM, "no memory for RLLS");
    } else {
        bbse_moments(&s, calib_scores, cp, calib_labels, NULL, m, target_scores, tp, NULL, n, classes, soft);
        for (int i = 0; i < classes; i++) /* the joint confusion P(pred i, y j) */
            for (int j = 0; j < classes; j++) s.confusion[(size_t)i * classes + j] *= s.p_cal[j];
        const double l = log(2.0 * classes / delta);
        *rho = reg * 3 * (2 * l / (3.0 * m) + sqrt(2 * l / m));
        rlls_solve(&s, classes, *rho, out + classes, out);
        for (int c = 0; c < classes; c++) out[c] = s.q[c] * s.p_cal[c];
        floor_and_normalize(out, classes);
        for (int c = 0; c < classes; c++) target_prior[c] = (float)out[c];
    }
    lade_free(out);
    lade_free(cp);
    lade_free(tp);
    lade_free(s.confusion);
    return st;
}

lade_status lade_confusion_condition(double *cond, const float *calib_scores, const int64_t *calib_labels, int m,
                                     int classes, int soft) {
    lade_status st = lt_check_probs(calib_scores, (size_t)m, classes, "calib_scores");
    if (st || (st = lt_check_labels(calib_labels, (size_t)m, classes, "calib_labels"))) return st;
    bbse_scratch s = {0};
    if ((st = bbse_scratch_alloc(&s, classes))) return st;
    int64_t *cp = soft ? NULL : argmax_rows(calib_scores, m, classes);
    if (!soft && !cp) {
        st = lade_fail(LADE_ENOMEM, "no memory for predictions");
    } else {
        /* the calibration rows stand in as the target: only M is used */
        bbse_moments(&s, calib_scores, cp, calib_labels, NULL, m, calib_scores, cp, NULL, m, classes, soft);
        memcpy(s.work, s.confusion, (size_t)classes * classes * sizeof(double));
        *cond = lt_invert(s.work, s.inv, classes) ? lt_norm1(s.confusion, classes) * lt_norm1(s.inv, classes) : INFINITY;
    }
    lade_free(cp);
    lade_free(s.confusion);
    return st;
}

lade_status lade_prediction_shift_chi2(double *statistic, int *dof, const float *calib_scores,
                                       const int64_t *calib_labels, int m, const float *target_scores, int n,
                                       int classes, const float *source_prior) {
    lade_status st = check_bbse_args(calib_scores, calib_labels, m, target_scores, n, classes, source_prior);
    if (st) return st;
    bbse_scratch s = {0};
    if ((st = bbse_scratch_alloc(&s, classes))) return st;
    int64_t *cp = argmax_rows(calib_scores, m, classes), *tp = argmax_rows(target_scores, n, classes);
    if (!cp || !tp) {
        st = lade_fail(LADE_ENOMEM, "no memory for predictions");
        goto done;
    }
    bbse_moments(&s, calib_scores, cp, calib_labels, NULL, m, target_scores, tp, NULL, n, classes, 0);
    for (int j = 0; j < classes; j++)
        if (s.p_cal[j] == 0) {
            st = lade_fail(LADE_EINVAL, "argument 'calib_labels' has no sample of class %d", j);
            goto done;
        }
    double chi2 = 0;
    int cells = 0;
    for (int i = 0; i < classes; i++) {
        /* the expected count is itself estimated from the m_j calibration rows of each class: its
         * variance n^2 sum_j p_j^2 M_ij (1 - M_ij) / m_j joins the Pearson denominator (with
         * source_prior = the calibration label frequencies this divides the statistic by 1 + n / m) */
        double expected = 0, expected_var = 0;
        for (int j = 0; j < classes; j++) {
            double Mij = s.confusion[(size_t)i * classes + j];
            expected += Mij * source_prior[j];
            expected_var += (double)source_prior[j] * source_prior[j] * Mij * (1 - Mij) / (s.p_cal[j] * m);
        }
        expected *= n;
        double observed = s.mu[i] * n, denominator = expected + (double)n * n * expected_var;
        if (expected > 0) {
            chi2 += (observed - expected) * (observed - expected) / denominator;
            cells++;
        } else if (observed > 0) {
            chi2 = INFINITY; /* a prediction impossible without shift */
        }
    }
    *statistic = chi2;
    *dof = cells > 1 ? cells - 1 : 1;
done:
    lade_free(cp);
    lade_free(tp);
    lade_free(s.confusion);
    return st;
}

/* ---- bootstrap ------------------------------------------------------------------------ */
/* Multinomial resampling counts: weight[i] = times row i is drawn in n draws. */
static void resample_counts(double *weight, int n, lade_rng *r) {
    memset(weight, 0, (size_t)n * sizeof(double));
    for (int k = 0; k < n; k++) weight[lade_rng_below(r, (uint64_t)n)] += 1;
}

typedef struct {
    float *replicates;
    const float *probs, *source_prior;
    const double *start;
    int n, classes, max_iter;
    double pseudo, tol;
    uint64_t seed;
    int failed;
} em_boot_job;

static void em_boot_range(void *ctx, size_t begin, size_t end) {
    em_boot_job *job = ctx;
    int C = job->classes;
    double *buf = lade_alloc(((size_t)job->n + 3 * (size_t)C) * sizeof(double));
    if (!buf) {
        job->failed = 1;
        return;
    }
    double *weight = buf, *prior = buf + job->n;
    for (size_t b = begin; b < end; b++) {
        lade_rng r;
        lade_rng_seed(&r, job->seed, (uint64_t)b);
        resample_counts(weight, job->n, &r);
        memcpy(prior, job->start, (size_t)C * sizeof(double)); /* warm start at the full-data estimate */
        int iters, conv;
        double ll;
        if (em_run(prior, &iters, &conv, &ll, job->probs, weight, job->n, C, job->source_prior, NULL, job->pseudo,
                   NULL, 0, job->tol, job->max_iter, prior + C, 0, 0))
            job->failed = 1;
        for (int c = 0; c < C; c++) job->replicates[b * (size_t)C + c] = (float)prior[c];
    }
    lade_free(buf);
}

lade_status lade_em_bootstrap(float *replicates, int num_boot, const float *source_probs, int n, int classes,
                              const float *source_prior, double pseudo_count, double tol, int max_iter,
                              uint64_t seed) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, pseudo_count, tol, max_iter);
    if (st) return st;
    if (num_boot < 1) return lade_fail(LADE_EINVAL, "argument 'bootstrap' must be >= 1, got %d", num_boot);
    double *start = lade_alloc(3 * (size_t)classes * sizeof(double));
    if (!start) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    for (int c = 0; c < classes; c++) start[c] = source_prior[c];
    int iters, conv;
    double ll;
    st = em_run(start, &iters, &conv, &ll, source_probs, NULL, n, classes, source_prior, NULL, pseudo_count,
                            NULL, 0, tol, max_iter, start + classes, 1, 0);
    if (st) {
        lade_free(start);
        return st;
    }
    em_boot_job job = {replicates, source_probs, source_prior, start, n, classes, max_iter, pseudo_count, tol, seed, 0};
    lade_parallel_for((size_t)num_boot, em_boot_range, &job);
    lade_free(start);
    if (job.failed) return lade_fail(LADE_ENOMEM, "no memory for a bootstrap replicate");
    return LADE_OK;
}

typedef struct {
    float *replicates;
    const float *calib, *target, *source_prior;
    const int64_t *labels, *calib_pred, *target_pred;
    int m, n, classes, soft;
    double ridge;
    uint64_t seed;
    int failed;
} bbse_boot_job;

static void bbse_boot_range(void *ctx, size_t begin, size_t end) {
    bbse_boot_job *job = ctx;
    int C = job->classes;
    bbse_scratch s = {0};
    double *buf = lade_alloc(((size_t)job->m + (size_t)job->n + (size_t)C) * sizeof(double));
    if (!buf || bbse_scratch_alloc(&s, C)) {
        lade_free(buf);
        job->failed = 1;
        return;
    }
    double *cw = buf, *tw = buf + job->m, *out = tw + job->n;
    for (size_t b = begin; b < end; b++) {
        lade_rng r;
        lade_rng_seed(&r, job->seed, (uint64_t)b);
        resample_counts(cw, job->m, &r);
        resample_counts(tw, job->n, &r);
        bbse_moments(&s, job->calib, job->calib_pred, job->labels, cw, job->m, job->target, job->target_pred, tw,
                     job->n, C, job->soft);
        double cond;
        int fell_back;
        bbse_solve(out, &cond, &fell_back, &s, C, job->source_prior, job->ridge, INFINITY);
        for (int c = 0; c < C; c++) job->replicates[b * (size_t)C + c] = (float)out[c];
    }
    lade_free(s.confusion);
    lade_free(buf);
}

lade_status lade_bbse_bootstrap(float *replicates, int num_boot, const float *calib_scores,
                                const int64_t *calib_labels, int m, const float *target_scores, int n, int classes,
                                const float *source_prior, int soft, double ridge, uint64_t seed) {
    lade_status st = check_bbse_args(calib_scores, calib_labels, m, target_scores, n, classes, source_prior);
    if (st) return st;
    if (!(ridge >= 0) || !isfinite(ridge)) return lade_fail(LADE_EINVAL, "argument 'ridge' must be finite and >= 0, got %g", ridge);
    if (num_boot < 1) return lade_fail(LADE_EINVAL, "argument 'bootstrap' must be >= 1, got %d", num_boot);
    int64_t *cp = soft ? NULL : argmax_rows(calib_scores, m, classes);
    int64_t *tp = soft ? NULL : argmax_rows(target_scores, n, classes);
    if (!soft && (!cp || !tp)) {
        lade_free(cp);
        lade_free(tp);
        return lade_fail(LADE_ENOMEM, "no memory for predictions");
    }
    bbse_boot_job job = {replicates, calib_scores, target_scores, source_prior, calib_labels, cp, tp,
                         m, n, classes, soft, ridge, seed, 0};
    lade_parallel_for((size_t)num_boot, bbse_boot_range, &job);
    lade_free(cp);
    lade_free(tp);
    if (job.failed) return lade_fail(LADE_ENOMEM, "no memory for a bootstrap replicate");
    return LADE_OK;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

lade_status lade_bootstrap_interval(float *lo, float *hi, const float *replicates, int num_boot, int classes,
                                    double level) {
    if (num_boot < 1 || classes < 1)
        return lade_fail(LADE_EINVAL, "need num_boot >= 1 and classes >= 1, got %d, %d", num_boot, classes);
    if (!(level > 0 && level < 1)) return lade_fail(LADE_EINVAL, "argument 'level' must be in (0, 1), got %g", level);
    float *column = lade_alloc((size_t)num_boot * sizeof(float));
    if (!column) return lade_fail(LADE_ENOMEM, "no memory for %d replicates", num_boot);
    for (int c = 0; c < classes; c++) {
        for (int b = 0; b < num_boot; b++) column[b] = replicates[(size_t)b * classes + c];
        qsort(column, (size_t)num_boot, sizeof(float), cmp_float);
        for (int side = 0; side < 2; side++) {
            double q = side ? (1 + level) / 2 : (1 - level) / 2, pos = q * (num_boot - 1);
            int k = (int)floor(pos);
            double frac = pos - k, v = k + 1 < num_boot ? column[k] + frac * (column[k + 1] - column[k]) : column[k];
            (side ? hi : lo)[c] = (float)v;
        }
    }
    lade_free(column);
    return LADE_OK;
}

/* ---- chi-square tail: Q(dof/2, x/2), the regularised upper incomplete gamma --------- */
lade_status lade_chi2_sf(double *p_value, double x, double dof) {
    if (!(dof > 0) || !isfinite(dof)) return lade_fail(LADE_EINVAL, "argument 'dof' must be finite and > 0, got %g", dof);
    if (isnan(x)) return lade_fail(LADE_ENONFINITE, "argument 'x' is NaN");
    if (x <= 0) {
        *p_value = 1.0;
        return LADE_OK;
    }
    if (isinf(x)) {
        *p_value = 0.0;
        return LADE_OK;
    }
    double a = dof / 2, z = x / 2, log_front = a * log(z) - z - lgamma(a);
    if (z < a + 1) { /* series for P, then Q = 1 - P */
        double term = 1.0 / a, sum = term;
        for (int k = 1; k < 100000 && fabs(term) > fabs(sum) * 1e-16; k++) {
            term *= z / (a + k);
            sum += term;
        }
        *p_value = 1.0 - exp(log_front) * sum;
    } else { /* continued fraction for Q (modified Lentz) */
        double b = z + 1 - a, c = 1.0 / DBL_MIN, d = 1.0 / b, h = d;
        for (int k = 1; k < 100000; k++) {
            double an = -k * (k - a);
            b += 2;
            d = an * d + b;
            if (fabs(d) < DBL_MIN) d = DBL_MIN;
            c = b + an / c;
            if (fabs(c) < DBL_MIN) c = DBL_MIN;
            d = 1.0 / d;
            double delta = d * c;
            h *= delta;
            if (fabs(delta - 1) < 1e-16) break;
        }
        *p_value = exp(log_front) * h;
    }
    if (*p_value < 0) *p_value = 0;
    if (*p_value > 1) *p_value = 1;
    return LADE_OK;
}

/* ---- a few target labels --------------------------------------------------------------- */
lade_status lade_em_prior_labelled(float *target_prior, float *pool_prior, int *iterations, int *converged,
                                   const float *source_probs, int n, int classes, const float *source_prior,
                                   const int64_t *labelled_counts, int per_class, double pseudo_count, double tol,
                                   int max_iter) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, pseudo_count, tol, max_iter);
    if (st) return st;
    if (n < 1) return lade_fail(LADE_EINVAL, "argument 'probs' has no rows (no unlabelled target sample)");
    double labelled_total = 0;
    for (int c = 0; c < classes; c++) {
        if (labelled_counts[c] < 0)
            return lade_fail(LADE_EINVAL, "argument 'labelled_counts': labelled_counts[%d] = %lld must be >= 0", c,
                             (long long)labelled_counts[c]);
        labelled_total += (double)labelled_counts[c];
    }
    double *buf = lade_alloc(4 * (size_t)classes * sizeof(double));
    if (!buf) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    double *prior = buf, *counts = buf + classes, *scratch = buf + 2 * (size_t)classes;
    for (int c = 0; c < classes; c++) {
        prior[c] = source_prior[c];
        counts[c] = (double)labelled_counts[c];
    }
    double ll;
    /* random: the unlabelled rows are draws from p_t, the labels join the M step. per_class: the
     * unlabelled rows are what the per-class selection left, drawn from the pool prior q; EM
     * estimates q from them alone, and the whole target's prior is (n q + counts) / (n + total). */
    st = em_run(prior, iterations, converged, &ll, source_probs, NULL, n, classes, source_prior,
                            per_class ? NULL : counts, pseudo_count, NULL, 0, tol, max_iter, scratch, 1, 0);
    if (st) {
        lade_free(buf);
        return st;
    }
    for (int c = 0; c < classes; c++) {
        pool_prior[c] = (float)prior[c];
        if (per_class) prior[c] = (n * prior[c] + counts[c]) / (n + labelled_total);
    }
    floor_and_normalize(prior, classes);
    for (int c = 0; c < classes; c++) target_prior[c] = (float)prior[c];
    lade_free(buf);
    return LADE_OK;
}

/* ---- shrinkage towards an anchor prior ---------------------------------------------------- */
/* trace of (A^-1 V A^-T) = sum_il V_il (A^-T A^-1)_il for a C x C inverse inv (row-major). */
static double sandwich_trace(const double *inv, const double *V, double *work, int C) {
    for (int i = 0; i < C; i++)
        for (int l = 0; l < C; l++) {
            double g = 0;
            for (int a = 0; a < C; a++) g += inv[(size_t)a * C + i] * inv[(size_t)a * C + l];
            work[(size_t)i * C + l] = g;
        }
    double t = 0;
    for (size_t k = 0; k < (size_t)C * C; k++) t += V[k] * work[k];
    return t;
}

lade_status lade_em_covariance_trace(double *trace, const float *source_probs, int n, int classes,
                                     const float *source_prior, const float *estimate) {
    lade_status st = lt_check_probs(source_probs, (size_t)n, classes, "probs");
    if (st || (st = lade_check_prior(source_prior, classes, "source_prior")) ||
        (st = lade_check_prior(estimate, classes, "estimate")))
        return st;
    size_t C = (size_t)classes;
    double *info = lade_alloc((3 * C * C + 2 * C) * sizeof(double));
    if (!info) return lade_fail(LADE_ENOMEM, "no memory for a %d x %d information matrix", classes, classes);
    double *work = info + C * C, *inv = work + C * C, *a = inv + C * C, *u = a + C;
    memset(info, 0, C * C * sizeof(double));
    /* observed information of sum_i log(a_i . p), a_ic = probs_ic / source_prior_c */
    for (int i = 0; i < n; i++) {
        double dot = 0;
        for (size_t c = 0; c < C; c++) {
            a[c] = source_probs[i * C + c] / source_prior[c];
            dot += a[c] * estimate[c];
        }
        if (!(dot > 0)) continue;
        for (size_t c = 0; c < C; c++) a[c] /= dot;
        for (size_t r = 0; r < C; r++)
            if (a[r] != 0)
                for (size_t c = 0; c <= r; c++) info[r * C + c] += a[r] * a[c];
    }
    for (size_t r = 0; r < C; r++)
        for (size_t c = 0; c < r; c++) info[c * C + r] = info[r * C + c];
    memcpy(work, info, C * C * sizeof(double));
    if (!lt_invert(work, inv, classes)) {
        *trace = INFINITY; /* the prior is not identifiable from these posteriors */
    } else {
        /* covariance on the simplex (sum p = 1): I^-1 - I^-1 1 1^T I^-1 / (1^T I^-1 1) */
        double total = 0, diag = 0, norm2 = 0;
        for (size_t r = 0; r < C; r++) {
            u[r] = 0;
            for (size_t c = 0; c < C; c++) u[r] += inv[r * C + c];
            total += u[r];
            diag += inv[r * C + r];
            norm2 += u[r] * u[r];
        }
        double t = total > 0 ? diag - norm2 / total : INFINITY;
        *trace = t > 0 ? t : 0;
    }
    lade_free(info);
    return LADE_OK;
}

lade_status lade_bbse_covariance_trace(double *trace, const float *calib_scores, const int64_t *calib_labels, int m,
                                       const float *target_scores, int n, int classes, const float *estimate,
                                       int soft) {
    lade_status st = check_bbse_args(calib_scores, calib_labels, m, target_scores, n, classes, estimate);
    if (st) return st;
    if (n < 1) return lade_fail(LADE_EINVAL, "argument 'target_scores' has no rows");
    bbse_scratch s = {0};
    if ((st = bbse_scratch_alloc(&s, classes))) return st;
    int64_t *cp = soft ? NULL : argmax_rows(calib_scores, m, classes);
    int64_t *tp = soft ? NULL : argmax_rows(target_scores, n, classes);
    if (!soft && (!cp || !tp)) {
        st = lade_fail(LADE_ENOMEM, "no memory for predictions");
        goto done;
    }
    size_t C = (size_t)classes;
    bbse_moments(&s, calib_scores, cp, calib_labels, NULL, m, target_scores, tp, NULL, n, classes, soft);
    memcpy(s.work, s.confusion, C * C * sizeof(double));
    if (!lt_invert(s.work, s.inv, classes)) {
        *trace = INFINITY;
        goto done;
    }
    /* delta method for q = M^-1 mu: Cov(q) = M^-1 V M^-T with V = Cov(mu) + sum_j q_j^2 Cov(M_j),
     * the covariances of the target mean score and of each column's calibration mean (m_j rows) */
    double *V = s.gram;
    memset(V, 0, C * C * sizeof(double));
    for (int k = 0; k < m + n; k++) {
        int target = k >= m;
        int row = target ? k - m : k;
        double w;
        if (target) {
            w = 1.0 / ((double)n * n);
        } else {
            double mj = s.p_cal[calib_labels[row]] * m;
            w = (double)estimate[calib_labels[row]] * estimate[calib_labels[row]] / (mj * mj);
        }
        if (!soft) {
            int64_t p = target ? tp[row] : cp[row];
            V[p * C + p] += w;
            continue;
        }
        const float *x = (target ? target_scores : calib_scores) + (size_t)row * C;
        for (size_t i = 0; i < C; i++)
            if (x[i] != 0)
                for (size_t l = 0; l < C; l++) V[i * C + l] += w * x[i] * x[l];
    }
    for (size_t i = 0; i < C; i++)
        for (size_t l = 0; l < C; l++) {
            double sub = s.mu[i] * s.mu[l] / n;
            for (size_t j = 0; j < C; j++)
                if (s.p_cal[j] > 0)
                    sub += (double)estimate[j] * estimate[j] * s.confusion[i * C + j] * s.confusion[l * C + j] /
                           (s.p_cal[j] * m);
            V[i * C + l] -= sub;
        }
    double t = sandwich_trace(s.inv, V, s.work, classes);
    *trace = t > 0 ? t : 0;
done:
    lade_free(cp);
    lade_free(tp);
    lade_free(s.confusion);
    return st;
}

lade_status lade_shrink_prior(float *out, double *weight, const float *estimate, const float *anchor, int classes,
                              double covariance_trace) {
    lade_status st = lade_check_prior(estimate, classes, "estimate");
    if (st || (st = lade_check_prior(anchor, classes, "anchor"))) return st;
    if (!(covariance_trace >= 0))
        return lade_fail(LADE_EINVAL, "argument 'covariance_trace' must be >= 0 (or infinite), got %g",
                         covariance_trace);
    double dist2 = 0;
    for (int c = 0; c < classes; c++) dist2 += ((double)estimate[c] - anchor[c]) * ((double)estimate[c] - anchor[c]);
    /* E|lam t + (1-lam) p_hat - p|^2 is smallest at lam = tr Cov(p_hat) / E|p_hat - t|^2 for an
     * unbiased p_hat; the plug-in uses the observed distance and is clipped to [0, 1] */
    double lam = dist2 > 0 && covariance_trace < dist2 ? covariance_trace / dist2 : 1.0;
    double *p = lade_alloc((size_t)classes * sizeof(double));
    if (!p) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    for (int c = 0; c < classes; c++) p[c] = lam * anchor[c] + (1 - lam) * estimate[c];
    floor_and_normalize(p, classes);
    for (int c = 0; c < classes; c++) out[c] = (float)p[c];
    lade_free(p);
    *weight = lam;
    return LADE_OK;
}

lade_status lade_replicate_variance(double *trace, const float *replicates, int num_boot, int classes) {
    if (num_boot < 2 || classes < 1)
        return lade_fail(LADE_EINVAL, "need num_boot >= 2 and classes >= 1, got %d, %d", num_boot, classes);
    double total = 0;
    for (int c = 0; c < classes; c++) {
        double mean = 0, sq = 0;
        for (int b = 0; b < num_boot; b++) mean += replicates[(size_t)b * classes + c];
        mean /= num_boot;
        for (int b = 0; b < num_boot; b++) {
            double d = replicates[(size_t)b * classes + c] - mean;
            sq += d * d;
        }
        total += sq / num_boot;
    }
    if (!isfinite(total)) return lade_fail(LADE_ENONFINITE, "argument 'replicates' has a non-finite value");
    *trace = total;
    return LADE_OK;
}

/* ---- a Dirichlet strength chosen from the data ---------------------------------------------- */
/* log of the Dirichlet-multinomial evidence of the (soft) counts s, total N, under a Dirichlet with
 * mean m and concentration A (the multinomial coefficient, free of A, left out). */
static double dm_evidence(double A, const double *s, const float *m, double N, int C) {
    double v = lgamma(A) - lgamma(A + N);
    for (int c = 0; c < C; c++) v += lgamma(A * m[c] + s[c]) - lgamma(A * m[c]);
    return v;
}

#define EB_LOG_MIN (-4.6051701859880914) /* log 0.01 */
#define EB_LOG_MAX 18.420680743952367    /* log 1e8: the prior all but fixed at the reference */
#define EB_GRID 120

lade_status lade_em_prior_eb(float *target_prior, double *strength, int *iterations, int *converged, double *loglik,
                             const float *source_probs, int n, int classes, const float *source_prior, double tol,
                             int max_iter) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, 0.0, tol, max_iter);
    if (st) return st;
    if (n < 1) return lade_fail(LADE_EINVAL, "argument 'probs' has no rows");
    double *buf = lade_alloc(5 * (size_t)classes * sizeof(double));
    if (!buf) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    double *prior = buf, *counts = buf + classes, *pseudo = buf + 2 * (size_t)classes,
           *scratch = buf + 3 * (size_t)classes;
    for (int c = 0; c < classes; c++) prior[c] = source_prior[c];
    double ll;
    int it, conv;
    st = em_run(prior, &it, &conv, &ll, source_probs, NULL, n, classes, source_prior, NULL, 0.0, NULL, 0, tol, max_iter,
                scratch, 1, 1);
    if (st) goto done;
    for (int c = 0; c < classes; c++) counts[c] = n * prior[c];
    /* the evidence over log A: the best of a grid, refined by golden-section search between its
     * neighbours (the evidence is unimodal in A for the counts met here; the grid guards the rest) */
    int best = 0;
    double best_v = -INFINITY, step = (EB_LOG_MAX - EB_LOG_MIN) / (EB_GRID - 1);
    for (int k = 0; k < EB_GRID; k++) {
        double v = dm_evidence(exp(EB_LOG_MIN + k * step), counts, source_prior, n, classes);
        if (v > best_v) best_v = v, best = k;
    }
    double lo = EB_LOG_MIN + (best > 0 ? best - 1 : 0) * step,
           hi = EB_LOG_MIN + (best < EB_GRID - 1 ? best + 1 : best) * step;
    const double golden = 0.6180339887498949;
    double x1 = hi - golden * (hi - lo), x2 = lo + golden * (hi - lo);
    double f1 = dm_evidence(exp(x1), counts, source_prior, n, classes),
           f2 = dm_evidence(exp(x2), counts, source_prior, n, classes);
    for (int k = 0; k < 60 && hi - lo > 1e-9; k++) {
        if (f1 < f2) {
            lo = x1, x1 = x2, f1 = f2, x2 = lo + golden * (hi - lo);
            f2 = dm_evidence(exp(x2), counts, source_prior, n, classes);
        } else {
            hi = x2, x2 = x1, f2 = f1, x1 = hi - golden * (hi - lo);
            f1 = dm_evidence(exp(x1), counts, source_prior, n, classes);
        }
    }
    double a = exp(0.5 * (lo + hi));
    for (int c = 0; c < classes; c++) {
        pseudo[c] = a * source_prior[c];
        prior[c] = source_prior[c];
    }
    st = em_run(prior, iterations, converged, loglik, source_probs, NULL, n, classes, source_prior, NULL, 0.0, pseudo,
                0, tol, max_iter, scratch, 1, 1);
    if (st) goto done;
    *strength = a;
    for (int c = 0; c < classes; c++) target_prior[c] = (float)prior[c];
done:
    lade_free(buf);
    return st;
}

/* ---- choosing the estimate's family by an information criterion ----------------------------- */
/* order[0..C) = the classes by key, largest first, ties by lower index (insertion sort: stable, and
 * C is at most a few thousand) */
static void order_by_key_desc(int *order, const double *key, int C) {
    for (int c = 0; c < C; c++) {
        int k = c;
        for (; k > 0 && key[order[k - 1]] < key[c]; k--) order[k] = order[k - 1];
        order[k] = c;
    }
}

lade_status lade_select_prior(float *target_prior, int *kind, int *support, double *loglik, double *criterion,
                              const float *source_probs, int n, int classes, const float *source_prior,
                              const float *tilt_prior, double penalty, double noise, double tol, int max_iter) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, 0.0, tol, max_iter);
    if (st) return st;
    if (tilt_prior && (st = lade_check_prior(tilt_prior, classes, "tilt_prior"))) return st;
    if (n < 1) return lade_fail(LADE_EINVAL, "argument 'probs' has no rows");
    if (!(penalty >= 0) || !isfinite(penalty))
        return lade_fail(LADE_EINVAL, "argument 'penalty' must be finite and >= 0, got %g", penalty);
    if (!(noise >= 1) || !isfinite(noise))
        return lade_fail(LADE_EINVAL, "argument 'noise' must be finite and >= 1, got %g", noise);
    double *buf = lade_alloc(7 * (size_t)classes * sizeof(double));
    int *order = lade_alloc((size_t)classes * sizeof(int));
    float *tilted = lade_alloc((size_t)classes * sizeof(float));
    if (!buf || !order || !tilted) {
        st = lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
        goto done;
    }
    double *free_fit = buf, *fit = buf + classes, *best = buf + 2 * (size_t)classes,
           *scratch = buf + 3 * (size_t)classes;
    int it, conv;
    double ll;
    /* no shift: 0 parameters, log-likelihood ratio 0 */
    for (int c = 0; c < classes; c++) best[c] = source_prior[c];
    double best_score = 0, best_ll = 0;
    int best_kind = 0, best_support = classes;
    if (tilt_prior) { /* the tilted family: 1 parameter */
        double g;
        st = lade_tilt_prior(tilted, &g, &ll, &it, &conv, source_probs, n, classes, source_prior, tilt_prior, tol,
                             max_iter);
        if (st) goto done;
        double score = -2.0 * ll / noise + penalty;
        if (score < best_score) {
            for (int c = 0; c < classes; c++) best[c] = tilted[c];
            best_score = score, best_ll = ll, best_kind = 1;
        }
    }
    /* the free maximum-likelihood estimate: classes - 1 parameters */
    for (int c = 0; c < classes; c++) free_fit[c] = source_prior[c];
    st = em_run(free_fit, &it, &conv, &ll, source_probs, NULL, n, classes, source_prior, NULL, 0.0, NULL, 0, tol,
                max_iter, scratch, 1, 1);
    if (st) goto done;
    double score = -2.0 * ll / noise + penalty * (classes - 1);
    if (score < best_score) {
        memcpy(best, free_fit, (size_t)classes * sizeof(double));
        best_score = score, best_ll = ll, best_kind = 3;
    }
    /* sparse: the maximum-likelihood prior on the j classes the free estimate ranks first, j - 1
     * parameters, for j on a geometric grid below classes */
    order_by_key_desc(order, free_fit, classes);
    for (int j = 1; j < classes; j = j + 1 > (int)(j * 1.25) ? j + 1 : (int)(j * 1.25)) {
        double mass = 0;
        for (int c = 0; c < classes; c++) fit[c] = 0;
        for (int k = 0; k < j; k++) mass += (fit[order[k]] = source_prior[order[k]]);
        for (int k = 0; k < j; k++) fit[order[k]] /= mass;
        st = em_run(fit, &it, &conv, &ll, source_probs, NULL, n, classes, source_prior, NULL, 0.0, NULL, 1, tol,
                    max_iter, scratch, 1, 1);
        if (st) goto done;
        score = -2.0 * ll / noise + penalty * (j - 1);
        if (score < best_score) {
            memcpy(best, fit, (size_t)classes * sizeof(double));
            best_score = score, best_ll = ll, best_kind = 2, best_support = j;
        }
    }
    for (int c = 0; c < classes; c++) target_prior[c] = (float)best[c];
    *kind = best_kind, *support = best_support, *loglik = best_ll, *criterion = best_score;
done:
    lade_free(buf);
    lade_free(order);
    lade_free(tilted);
    return st;
}

/* sum over rows i in idx of log sum_c (prior_c / source_prior_c) probs[i][c] */
static double rows_loglik(const float *probs, const int64_t *idx, int count, int classes, const float *prior,
                          const float *source_prior, double *ratio) {
    for (int c = 0; c < classes; c++) ratio[c] = (double)prior[c] / source_prior[c];
    double ll = 0;
    for (int k = 0; k < count; k++) {
        double norm = row_dot(probs + (size_t)idx[k] * classes, ratio, classes);
        ll += log(norm > DBL_MIN ? norm : DBL_MIN);
    }
    return ll;
}

lade_status lade_sparse_cv(double *scores, const float *source_probs, int n, int classes, const float *source_prior,
                           double pseudo_count, double noise, int folds, uint64_t seed, double tol, int max_iter) {
    lade_status st = check_em_args(source_probs, n, classes, source_prior, pseudo_count, tol, max_iter);
    if (st) return st;
    if (folds < 2 || folds > n)
        return lade_fail(LADE_EINVAL, "argument 'folds' must be in [2, rows = %d], got %d", n, folds);
    if (!(noise >= 1) || !isfinite(noise))
        return lade_fail(LADE_EINVAL, "argument 'noise' must be finite and >= 1, got %g", noise);
    int64_t *order = lade_alloc((size_t)n * sizeof(int64_t));
    float *train = lade_alloc((size_t)n * classes * sizeof(float));
    float *fit = lade_alloc((size_t)classes * sizeof(float));
    double *ratio = lade_alloc((size_t)classes * sizeof(double));
    if (!order || !train || !fit || !ratio) {
        st = lade_fail(LADE_ENOMEM, "no memory for %d rows of %d classes", n, classes);
        goto done;
    }
    lade_rng r;
    lade_rng_seed(&r, seed, 0);
    for (int i = 0; i < n; i++) order[i] = i;
    lade_rng_shuffle_i64(&r, order, (size_t)n);
    scores[0] = scores[1] = 0;
    /* fold f holds the rows order[lo .. hi): the training rows are the others, kept in order */
    for (int f = 0; f < folds; f++) {
        int lo = (int)((int64_t)n * f / folds), hi = (int)((int64_t)n * (f + 1) / folds), m = 0;
        for (int k = 0; k < n; k++)
            if (k < lo || k >= hi)
                memcpy(train + (size_t)m++ * classes, source_probs + (size_t)order[k] * classes,
                       (size_t)classes * sizeof(float));
        int kind, support, it, conv;
        double ll, crit;
        st = lade_select_prior(fit, &kind, &support, &ll, &crit, train, m, classes, source_prior, NULL, log((double)m),
                               noise, tol, max_iter);
        if (st) goto done;
        /* no sparse prior on this fold's training rows: the sparse estimate does not generalise */
        scores[0] = kind == 2 && isfinite(scores[0])
                        ? scores[0] + rows_loglik(source_probs, order + lo, hi - lo, classes, fit, source_prior, ratio)
                        : -INFINITY;
        st = em_prior_map(fit, &it, &conv, &ll, train, NULL, m, classes, source_prior, pseudo_count, tol, max_iter, 1);
        if (st) goto done;
        scores[1] += rows_loglik(source_probs, order + lo, hi - lo, classes, fit, source_prior, ratio);
    }
done:
    lade_free(order);
    lade_free(train);
    lade_free(fit);
    lade_free(ratio);
    return st;
}

/* ---- multi-label: per-label binary EM ------------------------------------------------ */
/* Each iterate is kept in [MARGINAL_FLOOR, 1 - MARGINAL_FLOOR]: both weights r1, r0 stay > 0 (no 0 / 0
 * in the E step) and the estimate rounds to a float strictly inside (0, 1), so its logit is finite. */
#define MARGINAL_FLOOR 1e-7

typedef struct {
    const float *probs, *source;
    float *target;
    int32_t *iterations;
    uint8_t *converged;
    double *loglik;
    double *scratch; /* 4 doubles per label: estimate, r1, r0, sum */
    int n, labels, max_iter;
    double pseudo, tol;
} em_marginals_job;

static double clamp_marginal(double p) {
    return p < MARGINAL_FLOOR ? MARGINAL_FLOOR : p > 1 - MARGINAL_FLOOR ? 1 - MARGINAL_FLOOR : p;
}

/* Labels [begin, end): every pass over the rows updates the labels of the range that have not yet
 * converged. A label's numbers (its sums in row order) do not depend on the others or on the range. */
static void em_marginals_labels(void *ctx, size_t begin, size_t end) {
    const em_marginals_job *j = ctx;
    const int L = j->labels;
    double *p = j->scratch, *r1 = p + L, *r0 = r1 + L, *sum = r0 + L;
    for (size_t c = begin; c < end; c++) {
        p[c] = j->source[c];
        j->iterations[c] = 0;
        j->converged[c] = 0;
    }
    for (int it = 0; it < j->max_iter; it++) {
        int active = 0;
        for (size_t c = begin; c < end; c++) {
            if (j->converged[c]) continue;
            active = 1;
            r1[c] = p[c] / j->source[c];
            r0[c] = (1 - p[c]) / (1 - j->source[c]);
            sum[c] = 0;
        }
        if (!active) break;
        for (int i = 0; i < j->n; i++) {
            const float *q = j->probs + (size_t)i * L;
            for (size_t c = begin; c < end; c++) {
                if (j->converged[c]) continue;
                double a = r1[c] * q[c];
                sum[c] += a / (a + r0[c] * (1 - q[c]));
            }
        }
        for (size_t c = begin; c < end; c++) {
            if (j->converged[c]) continue;
            double next = clamp_marginal((sum[c] + j->pseudo) / (j->n + 2 * j->pseudo));
            j->converged[c] = fabs(next - p[c]) < j->tol;
            p[c] = next;
            j->iterations[c] = it + 1;
        }
    }
    for (size_t c = begin; c < end; c++) {
        r1[c] = p[c] / j->source[c];
        r0[c] = (1 - p[c]) / (1 - j->source[c]);
        sum[c] = 0;
        j->target[c] = (float)p[c];
    }
    for (int i = 0; i < j->n; i++) {
        const float *q = j->probs + (size_t)i * L;
        for (size_t c = begin; c < end; c++) sum[c] += log(r1[c] * q[c] + r0[c] * (1 - q[c]));
    }
    for (size_t c = begin; c < end; c++) j->loglik[c] = sum[c];
}

lade_status lade_em_marginals(float *target_marginals, int32_t *iterations, uint8_t *converged, double *loglik,
                              const float *probs, int n, int labels, const float *source_marginals,
                              double pseudo_count, double tol, int max_iter) {
    lade_status st = lt_check_probs(probs, (size_t)n, labels, "probs");
    if (st || (st = lade_check_marginals(source_marginals, labels, "source_marginals"))) return st;
    if (!(pseudo_count >= 0) || !isfinite(pseudo_count))
        return lade_fail(LADE_EINVAL, "argument 'pseudo_count' must be finite and >= 0, got %g", pseudo_count);
    if (!(tol > 0)) return lade_fail(LADE_EINVAL, "argument 'tol' must be > 0, got %g", tol);
    if (max_iter < 1) return lade_fail(LADE_EINVAL, "argument 'max_iter' must be >= 1, got %d", max_iter);
    double *scratch = lade_alloc(4 * (size_t)labels * sizeof(double));
    if (!scratch) return lade_fail(LADE_ENOMEM, "no memory for %d labels", labels);
    em_marginals_job job = {probs, source_marginals, target_marginals, iterations, converged, loglik, scratch,
                            n, labels, max_iter, pseudo_count, tol};
    if ((size_t)n * labels >= 65536 && labels > 1)
        lade_parallel_for((size_t)labels, em_marginals_labels, &job);
    else
        em_marginals_labels(&job, 0, (size_t)labels);
    lade_free(scratch);
    return LADE_OK;
}
