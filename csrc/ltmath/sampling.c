/* sampling.c - long-tailed subsets, epoch samplers, shifted test subsets and random priors.
 * Every draw comes from a lade_rng seeded from (seed, stream), so results are pure
 * functions of the arguments (a resumed run needs only the epoch number). */
#include "checks.h"
#include "ltmath_internal.h"

#include <stdlib.h>

/* Indices grouped by class in stored order: class c owns members[start[c] .. start[c+1]). */
typedef struct {
    int64_t *start;   /* (classes + 1) */
    int64_t *members; /* (n) */
} class_groups;

static lade_status groups_build(class_groups *g, const int64_t *labels, size_t n, int classes) {
    g->start = NULL;
    g->members = NULL;
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'classes' must be >= 1, got %d", classes);
    lade_status st = lt_check_labels(labels, n, classes, "labels");
    if (st) return st;
    g->start = lade_alloc(((size_t)classes + 1) * sizeof(int64_t));
    g->members = lade_alloc((n ? n : 1) * sizeof(int64_t));
    if (!g->start || !g->members) {
        lade_free(g->start);
        lade_free(g->members);
        return lade_fail(LADE_ENOMEM, "no memory to group %zu labels", n);
    }
    memset(g->start, 0, ((size_t)classes + 1) * sizeof(int64_t));
    for (size_t i = 0; i < n; i++) g->start[labels[i] + 1]++;
    for (int c = 0; c < classes; c++) g->start[c + 1] += g->start[c];
    /* fill with a moving cursor per class, kept in start[c] then shifted back */
    for (size_t i = 0; i < n; i++) g->members[g->start[labels[i]]++] = (int64_t)i;
    for (int c = classes; c > 0; c--) g->start[c] = g->start[c - 1];
    g->start[0] = 0;
    return LADE_OK;
}

static void groups_free(class_groups *g) {
    lade_free(g->start);
    lade_free(g->members);
}

static int64_t group_size(const class_groups *g, int c) { return g->start[c + 1] - g->start[c]; }

lade_status lade_lt_subset(int64_t *out, size_t out_len, const int64_t *labels, size_t n, int classes,
                           const int64_t *counts, uint64_t seed) {
    class_groups g;
    lade_status st = groups_build(&g, labels, n, classes);
    if (st) return st;
    size_t need = 0;
    for (int c = 0; c < classes; c++) {
        if (counts[c] < 0 || counts[c] > group_size(&g, c)) {
            st = lade_fail(LADE_ERANGE, "argument 'counts': counts[%d] = %lld but the dataset has %lld samples of class %d",
                           c, (long long)counts[c], (long long)group_size(&g, c), c);
            goto done;
        }
        need += (size_t)counts[c];
    }
    if (need != out_len) {
        st = lade_fail(LADE_EINVAL, "argument 'out' must have sum(counts) = %zu entries, got %zu", need, out_len);
        goto done;
    }
    size_t pos = 0;
    for (int c = 0; c < classes; c++) {
        int64_t *members = g.members + g.start[c];
        lade_rng r;
        lade_rng_seed(&r, seed, (uint64_t)c);
        lade_rng_shuffle_i64(&r, members, (size_t)group_size(&g, c));
        memcpy(out + pos, members, (size_t)counts[c] * sizeof(int64_t));
        pos += (size_t)counts[c];
    }
done:
    groups_free(&g);
    return st;
}

lade_status lade_sample_instance(int64_t *out, size_t n, uint64_t seed, uint64_t epoch) {
    lade_epoch_permutation(out, n, seed, epoch); /* the loader's default order too */
    return LADE_OK;
}

lade_status lade_class_aware_length(size_t *out_len, const int64_t *labels, size_t n, int classes) {
    class_groups g;
    lade_status st = groups_build(&g, labels, n, classes);
    if (st) return st;
    int64_t largest = 0, nonempty = 0;
    for (int c = 0; c < classes; c++) {
        largest = group_size(&g, c) > largest ? group_size(&g, c) : largest;
        nonempty += group_size(&g, c) > 0;
    }
    groups_free(&g);
    *out_len = (size_t)largest * (size_t)nonempty;
    return LADE_OK;
}

/* A cyclic iterator over a list, reshuffled each time it wraps (and before the first pass). */
typedef struct {
    int64_t *items;
    int64_t len, next;
} cycle_iter;

static int64_t cycle_next(cycle_iter *it, lade_rng *r) {
    if (it->next == it->len) it->next = 0;
    if (it->next == 0) lade_rng_shuffle_i64(r, it->items, (size_t)it->len);
    return it->items[it->next++];
}

lade_status lade_sample_class_aware(int64_t *out, size_t out_len, const int64_t *labels, size_t n, int classes,
                                    int samples_per_class, uint64_t seed, uint64_t epoch) {
    if (samples_per_class < 1)
        return lade_fail(LADE_EINVAL, "argument 'samples_per_class' must be >= 1, got %d", samples_per_class);
    if (n < 1) return lade_fail(LADE_EINVAL, "argument 'labels' must not be empty");
    class_groups g;
    lade_status st = groups_build(&g, labels, n, classes);
    if (st) return st;
    int64_t *class_ids = lade_alloc((size_t)classes * sizeof(int64_t));
    cycle_iter *iters = lade_alloc((size_t)classes * sizeof(cycle_iter));
    if (!class_ids || !iters) {
        st = lade_fail(LADE_ENOMEM, "no memory for %d class iterators", classes);
        goto done;
    }
    int64_t nonempty = 0;
    for (int c = 0; c < classes; c++) {
        iters[c] = (cycle_iter){g.members + g.start[c], group_size(&g, c), 0};
        if (group_size(&g, c) > 0) class_ids[nonempty++] = c;
    }
    cycle_iter class_iter = {class_ids, nonempty, 0};
    lade_rng r;
    lade_rng_seed(&r, seed, epoch);
    for (size_t i = 0; i < out_len;) {
        cycle_iter *it = &iters[cycle_next(&class_iter, &r)];
        for (int j = 0; j < samples_per_class && i < out_len; j++) out[i++] = cycle_next(it, &r);
    }
done:
    lade_free(class_ids);
    lade_free(iters);
    groups_free(&g);
    return st;
}

lade_status lade_sample_by_class(int64_t *out, size_t out_len, const int64_t *labels, size_t n, int classes,
                                 const double *class_prob, uint64_t seed, uint64_t epoch) {
    class_groups g;
    lade_status st = groups_build(&g, labels, n, classes);
    if (st) return st;
    double *cdf = lade_alloc((size_t)classes * sizeof(double));
    if (!cdf) {
        st = lade_fail(LADE_ENOMEM, "no memory for %d class probabilities", classes);
        goto done;
    }
    double total = 0;
    for (int c = 0; c < classes; c++) {
        if (!(class_prob[c] >= 0) || !isfinite(class_prob[c])) {
            st = lade_fail(LADE_EINVAL, "argument 'class_prob': class_prob[%d] = %g must be finite and >= 0", c,
                           class_prob[c]);
            goto done;
        }
        if (class_prob[c] > 0 && group_size(&g, c) == 0) {
            st = lade_fail(LADE_EINVAL, "argument 'class_prob': class %d has probability %g but no samples", c,
                           class_prob[c]);
            goto done;
        }
        total += class_prob[c];
        cdf[c] = total;
    }
    if (!(total > 0)) {
        st = lade_fail(LADE_EINVAL, "argument 'class_prob' sums to %g, need > 0", total);
        goto done;
    }
    lade_rng r;
    lade_rng_seed(&r, seed, epoch);
    for (size_t i = 0; i < out_len; i++) {
        double u = lade_rng_uniform(&r) * total;
        int lo = 0, hi = classes - 1; /* first class with cdf > u */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (cdf[mid] > u) hi = mid; else lo = mid + 1;
        }
        while (group_size(&g, lo) == 0) lo--; /* u rounding onto an empty class's flat cdf step */
        out[i] = g.members[g.start[lo] + (int64_t)lade_rng_below(&r, (uint64_t)group_size(&g, lo))];
    }
done:
    lade_free(cdf);
    groups_free(&g);
    return st;
}

lade_status lade_class_prob_power(double *prob, const int64_t *counts, int classes, double q) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'counts' must have >= 1 class");
    if (!isfinite(q) || q < 0) return lade_fail(LADE_EINVAL, "argument 'q' must be finite and >= 0, got %g", q);
    double total = 0;
    for (int c = 0; c < classes; c++) {
        if (counts[c] < 0)
            return lade_fail(LADE_EINVAL, "argument 'counts': counts[%d] = %lld is negative", c, (long long)counts[c]);
        prob[c] = counts[c] > 0 ? pow((double)counts[c], q) : 0.0;
        total += prob[c];
    }
    if (!(total > 0)) return lade_fail(LADE_EINVAL, "argument 'counts' has no samples");
    for (int c = 0; c < classes; c++) prob[c] /= total;
    return LADE_OK;
}

lade_status lade_class_prob_progressive(double *prob, const int64_t *counts, int classes, uint64_t epoch,
                                        uint64_t total_epochs) {
    if (total_epochs < 1) return lade_fail(LADE_EINVAL, "argument 'total_epochs' must be >= 1");
    double *balanced = lade_alloc((size_t)(classes > 0 ? classes : 1) * sizeof(double));
    if (!balanced) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    lade_status st = lade_class_prob_power(prob, counts, classes, 1.0);
    if (!st) st = lade_class_prob_power(balanced, counts, classes, 0.0);
    if (!st) {
        double t = total_epochs == 1 ? 1.0 : (double)epoch / (double)(total_epochs - 1);
        t = t > 1 ? 1 : t;
        for (int c = 0; c < classes; c++) prob[c] = (1 - t) * prob[c] + t * balanced[c];
    }
    lade_free(balanced);
    return st;
}

/* ---- shifted test subsets ------------------------------------------------------------ */
typedef struct {
    float prior;
    int cls;
} ranked_class;

static int by_prior_desc(const void *a, const void *b) {
    const ranked_class *x = a, *y = b;
    if (x->prior != y->prior) return x->prior > y->prior ? -1 : 1;
    return x->cls - y->cls; /* ties: lower class index first (stable) */
}

lade_status lade_shift_counts(int64_t *counts, const float *train_prior, int classes, double img_max, double ratio,
                              lade_shift_direction direction) {
    lade_status st = lade_check_prior(train_prior, classes, "train_prior");
    if (st) return st;
    if (!(img_max >= 1) || !isfinite(img_max))
        return lade_fail(LADE_EINVAL, "argument 'img_max' must be finite and >= 1, got %g", img_max);
    if (!(ratio >= 1) || !isfinite(ratio))
        return lade_fail(LADE_EINVAL, "argument 'ratio' (imbalance, e.g. 50) must be finite and >= 1, got %g", ratio);
    if (direction != LADE_SHIFT_FORWARD && direction != LADE_SHIFT_BACKWARD && direction != LADE_SHIFT_UNIFORM)
        return lade_fail(LADE_EINVAL, "argument 'direction' must be forward, backward or uniform, got %d",
                         (int)direction);
    ranked_class *rank = lade_alloc((size_t)classes * sizeof *rank);
    if (!rank) return lade_fail(LADE_ENOMEM, "no memory to rank %d classes", classes);
    for (int c = 0; c < classes; c++) rank[c] = (ranked_class){train_prior[c], c};
    qsort(rank, (size_t)classes, sizeof *rank, by_prior_desc);
    double factor = 1.0 / ratio;
    for (int k = 0; k < classes; k++) {
        double v = img_max;
        if (direction != LADE_SHIFT_UNIFORM && classes > 1) {
            int step = direction == LADE_SHIFT_FORWARD ? k : classes - 1 - k;
            v = img_max * pow(factor, (double)step / (classes - 1));
        }
        counts[rank[k].cls] = (int64_t)v;
    }
    lade_free(rank);
    return LADE_OK;
}

lade_status lade_first_k_per_class(int64_t *out, size_t out_len, const int64_t *labels, size_t n, int classes,
                                   const int64_t *counts) {
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'classes' must be >= 1, got %d", classes);
    lade_status st = lt_check_labels(labels, n, classes, "labels");
    if (st) return st;
    int64_t *remaining = lade_alloc((size_t)classes * sizeof(int64_t));
    if (!remaining) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    size_t need = 0;
    for (int c = 0; c < classes; c++) {
        if (counts[c] < 0) {
            lade_free(remaining);
            return lade_fail(LADE_EINVAL, "argument 'counts': counts[%d] = %lld is negative", c, (long long)counts[c]);
        }
        remaining[c] = counts[c];
        need += (size_t)counts[c];
    }
    if (need != out_len) {
        lade_free(remaining);
        return lade_fail(LADE_EINVAL, "argument 'out' must have sum(counts) = %zu entries, got %zu", need, out_len);
    }
    size_t pos = 0;
    for (size_t i = 0; i < n && pos < need; i++)
        if (remaining[labels[i]] > 0) {
            remaining[labels[i]]--;
            out[pos++] = (int64_t)i;
        }
    for (int c = 0; c < classes; c++)
        if (remaining[c] > 0) {
            st = lade_fail(LADE_ERANGE, "argument 'labels': class %d has %lld samples, the subset needs %lld", c,
                           (long long)(counts[c] - remaining[c]), (long long)counts[c]);
            break;
        }
    lade_free(remaining);
    return st;
}

/* ---- Dirichlet priors ---------------------------------------------------------------- */
/* log of a Gamma(a, 1) draw: Marsaglia-Tsang for a >= 1; for a < 1, Gamma(a+1) * U^(1/a)
 * (kept in logs so tiny shapes do not underflow). */
static double log_gamma_draw(lade_rng *r, double a) {
    double boost = 0.0;
    if (a < 1.0) {
        double u;
        do u = lade_rng_uniform(r); while (u <= 0.0);
        boost = log(u) / a;
        a += 1.0;
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = lade_rng_normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = lade_rng_uniform(r);
        if (u > 0 && log(u) < 0.5 * x * x + d - d * v + d * log(v)) return log(d * v) + boost;
    }
}

#define DIRICHLET_FLOOR 1e-12

lade_status lade_dirichlet(float *out, int m, int classes, const double *alpha, uint64_t seed) {
    if (m < 0 || classes < 1) return lade_fail(LADE_EINVAL, "need m >= 0 and classes >= 1, got m=%d classes=%d", m, classes);
    for (int c = 0; c < classes; c++)
        if (!(alpha[c] > 0) || !isfinite(alpha[c]))
            return lade_fail(LADE_EINVAL, "argument 'alpha': alpha[%d] = %g must be finite and > 0", c, alpha[c]);
    double *logs = lade_alloc((size_t)classes * sizeof(double));
    if (!logs) return lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    for (int row = 0; row < m; row++) {
        lade_rng r;
        lade_rng_seed(&r, seed, (uint64_t)row);
        double max = -INFINITY;
        for (int c = 0; c < classes; c++) {
            logs[c] = log_gamma_draw(&r, alpha[c]);
            max = logs[c] > max ? logs[c] : max;
        }
        double sum = 0;
        for (int c = 0; c < classes; c++) sum += exp(logs[c] - max);
        double floored = 0;
        for (int c = 0; c < classes; c++) {
            double p = exp(logs[c] - max) / sum;
            logs[c] = p < DIRICHLET_FLOOR ? DIRICHLET_FLOOR : p;
            floored += logs[c];
        }
        for (int c = 0; c < classes; c++) out[(size_t)row * classes + c] = (float)(logs[c] / floored);
    }
    lade_free(logs);
    return LADE_OK;
}
