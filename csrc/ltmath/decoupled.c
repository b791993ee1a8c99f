/* decoupled.c - the decoupled second stage (Kang et al., ICLR 2020) on saved features:
 * re-training a linear classifier (cRT, or with the LADE loss), learnable weight scaling
 * (LWS) and the choice of tau for tau-normalisation. Built from the core's linear layer,
 * losses, samplers and SGD; nothing here has its own copy of that math. */
#include "checks.h"
#include "lade_nn.h" /* the linear layer and SGD */
#include "ltmath_internal.h"

#include <stdlib.h>

/* The rows of an epoch: a permutation (instance sampling) or n class-balanced draws. */
static lade_status epoch_rows(int64_t *rows, const int64_t *labels, const double *balanced_prob, int n,
                              int classes, lade_classifier_sampling sampling, uint64_t seed, int epoch) {
    if (sampling == LADE_SAMPLE_INSTANCE) return lade_sample_instance(rows, (size_t)n, seed, (uint64_t)epoch);
    return lade_sample_by_class(rows, (size_t)n, labels, (size_t)n, classes, balanced_prob, seed, (uint64_t)epoch);
}

static lade_status check_fit_config(const lade_classifier_config *cfg, int classes, int lade_loss_allowed) {
    if (cfg->epochs < 1) return lade_fail(LADE_EINVAL, "argument 'epochs' must be >= 1, got %d", cfg->epochs);
    if (cfg->batch_size < 1)
        return lade_fail(LADE_EINVAL, "argument 'batch_size' must be >= 1, got %d", cfg->batch_size);
    const char *names[3] = {"lr", "momentum", "weight_decay"};
    const float values[3] = {cfg->lr, cfg->momentum, cfg->weight_decay};
    for (int i = 0; i < 3; i++)
        if (!(values[i] >= 0) || !isfinite(values[i]))
            return lade_fail(LADE_EINVAL, "argument '%s' must be finite and >= 0, got %g", names[i], (double)values[i]);
    if (cfg->sampling != LADE_SAMPLE_INSTANCE && cfg->sampling != LADE_SAMPLE_CLASS_BALANCED)
        return lade_fail(LADE_EINVAL, "argument 'sampling' must be 0 (instance) or 1 (class-balanced), got %d",
                         (int)cfg->sampling);
    if (cfg->loss != LADE_CLASSIFIER_CE && !(lade_loss_allowed && cfg->loss == LADE_CLASSIFIER_LADE))
        return lade_fail(LADE_EINVAL, "argument 'loss' must be 0 (cross-entropy)%s, got %d",
                         lade_loss_allowed ? " or 1 (LADE)" : "", (int)cfg->loss);
    if (cfg->loss == LADE_CLASSIFIER_LADE) {
        if (!cfg->prior) return lade_fail(LADE_EINVAL, "argument 'prior' is needed for the LADE loss");
        lade_status st = lade_check_prior(cfg->prior, classes, "prior");
        if (!st) st = lt_check_nonnegative(cfg->alpha, "alpha");
        if (!st) st = lt_check_nonnegative(cfg->remine_lambda, "remine_lambda");
        if (st) return st;
    }
    return LADE_OK;
}

static lade_status check_data(const float *features, const int64_t *labels, int n, int dim, int classes) {
    if (n < 1 || dim < 1)
        return lade_fail(LADE_EINVAL, "argument 'features' must have n >= 1 rows and dim >= 1 columns, got (%d, %d)",
                         n, dim);
    if (classes < 1) return lade_fail(LADE_EINVAL, "argument 'classes' must be >= 1, got %d", classes);
    lade_status st = lt_check_labels(labels, (size_t)n, classes, "labels");
    return st ? st : lt_check_logits(features, (size_t)n, dim, "features");
}

/* What one SGD run over batches of rows needs: the sampler, the gathered batch, the schedule. */
typedef struct {
    int n, dim, classes;
    const float *features;
    const int64_t *labels;
    const lade_classifier_config *cfg;
    double *balanced_prob; /* (classes) for class-balanced sampling */
    int64_t *rows;         /* (n) this epoch's order */
    float *x;              /* (batch, dim) */
    int64_t *y;            /* (batch) */
    float *logits, *dlogits;
} fit_state;

static void fit_free(fit_state *s) {
    lade_free(s->balanced_prob);
    lade_free(s->rows);
    lade_free(s->x);
    lade_free(s->y);
    lade_free(s->logits);
    lade_free(s->dlogits);
}

static lade_status fit_init(fit_state *s, const float *features, const int64_t *labels, int n, int dim, int classes,
                            const lade_classifier_config *cfg) {
    memset(s, 0, sizeof *s);
    s->n = n, s->dim = dim, s->classes = classes, s->features = features, s->labels = labels, s->cfg = cfg;
    size_t b = (size_t)(cfg->batch_size < n ? cfg->batch_size : n);
    s->balanced_prob = lade_alloc((size_t)classes * sizeof(double));
    s->rows = lade_alloc((size_t)n * sizeof(int64_t));
    s->x = lade_alloc(b * (size_t)dim * sizeof(float));
    s->y = lade_alloc(b * sizeof(int64_t));
    s->logits = lade_alloc(b * (size_t)classes * sizeof(float));
    s->dlogits = lade_alloc(b * (size_t)classes * sizeof(float));
    if (!s->balanced_prob || !s->rows || !s->x || !s->y || !s->logits || !s->dlogits) {
        fit_free(s);
        return lade_fail(LADE_ENOMEM, "no memory for a batch of %zu rows of %d features and %d classes", b, dim,
                         classes);
    }
    if (cfg->sampling != LADE_SAMPLE_CLASS_BALANCED) return LADE_OK;
    int64_t *counts = lade_alloc((size_t)classes * sizeof(int64_t));
    lade_status st = counts ? lade_class_counts(counts, labels, (size_t)n, classes)
                            : lade_fail(LADE_ENOMEM, "no memory for %d class counts", classes);
    if (!st) st = lade_class_prob_power(s->balanced_prob, counts, classes, 0.0);
    lade_free(counts);
    if (st) fit_free(s);
    return st;
}

/* Gathers rows [start, start + len) of the epoch order into the batch buffers. */
static void gather(fit_state *s, int start, int len) {
    for (int i = 0; i < len; i++) {
        int64_t r = s->rows[start + i];
        memcpy(s->x + (size_t)i * s->dim, s->features + (size_t)r * s->dim, (size_t)s->dim * sizeof(float));
        s->y[i] = s->labels[r];
    }
}

/* The batch loss and dL/dlogits (overwritten) of the configured loss. */
static lade_status batch_loss(double *loss, fit_state *s, int len) {
    const lade_classifier_config *cfg = s->cfg;
    memset(s->dlogits, 0, (size_t)len * s->classes * sizeof(float));
    if (cfg->loss == LADE_CLASSIFIER_CE) return lade_softmax_ce(loss, s->dlogits, 1.0f, s->logits, s->y, len, s->classes);
    return lade_lade_loss(loss, NULL, NULL, s->dlogits, 1.0f, s->logits, s->y, len, s->classes, cfg->prior, cfg->alpha,
                          cfg->remine_lambda, LADE_LADER_OFFICIAL);
}

/* Runs the epochs: for each batch, step(s, len, grads) computes the loss and the gradient of the
 * trained parameters (n_params floats, overwritten); SGD updates them. */
typedef lade_status (*batch_fn)(void *ctx, fit_state *s, int len, double *loss, float *grads);

static lade_status run_sgd(fit_state *s, float *params, size_t n_params, batch_fn step, void *ctx,
                           double *last_epoch_loss) {
    const lade_classifier_config *cfg = s->cfg;
    float *grads = lade_alloc(n_params * sizeof(float));
    float *velocity = lade_alloc(n_params * sizeof(float));
    lade_status st = grads && velocity ? LADE_OK : lade_fail(LADE_ENOMEM, "no memory for %zu parameters", n_params);
    lade_sgd_config sgd = {cfg->momentum, 0.0f, cfg->weight_decay, 0};
    int first = 1;
    double epoch_loss = 0;
    for (int e = 0; e < cfg->epochs && !st; e++) {
        double lr;
        st = lade_lr_cosine(&lr, cfg->lr, e, cfg->epochs, 0.0);
        if (!st) st = epoch_rows(s->rows, s->labels, s->balanced_prob, s->n, s->classes, cfg->sampling, cfg->seed, e);
        double total = 0;
        for (int start = 0; start < s->n && !st; start += cfg->batch_size) {
            int len = s->n - start < cfg->batch_size ? s->n - start : cfg->batch_size;
            double loss;
            gather(s, start, len);
            st = step(ctx, s, len, &loss, grads);
            /* as lade.train_step: a non-finite loss stops before the step; lade_sgd_step refuses a non-finite
             * gradient. A finite step can still overflow the parameters (a huge lr), so they are checked too. */
            if (!st && !isfinite(loss))
                st = lade_fail(LADE_ENONFINITE, "the loss is %g at epoch %d (lr %g); nothing was returned", loss, e + 1,
                               lr);
            if (!st) st = lade_sgd_step(params, grads, velocity, NULL, n_params, &sgd, (float)lr, first);
            for (size_t i = 0; i < n_params && !st; i++)
                if (!isfinite(params[i]))
                    st = lade_fail(LADE_ENONFINITE, "an SGD step at epoch %d (lr %g) made parameter %zu %g; the "
                                   "learning rate is too large, nothing was returned", e + 1, lr, i, (double)params[i]);
            first = 0;
            total += loss * len;
        }
        epoch_loss = total / s->n;
    }
    if (!st && last_epoch_loss) *last_epoch_loss = epoch_loss;
    lade_free(grads);
    lade_free(velocity);
    return st;
}

/* ---- classifier re-training (cRT, LADE) ----------------------------------------------- */
typedef struct {
    int classes, dim;
    const float *params; /* [weight (classes, dim), bias (classes)], what SGD updates */
} linear_ctx;

static lade_status linear_step(void *ctx, fit_state *s, int len, double *loss, float *grads) {
    const linear_ctx *c = ctx;
    const float *w = c->params, *b = c->params + (size_t)c->classes * c->dim;
    lade_status st = lade_linear_forward(s->logits, s->x, w, b, len, c->dim, c->classes);
    if (!st) st = batch_loss(loss, s, len);
    if (st) return st;
    memset(grads, 0, ((size_t)c->classes * c->dim + c->classes) * sizeof(float));
    return lade_linear_backward(NULL, grads, grads + (size_t)c->classes * c->dim, s->dlogits, s->x, w, len, c->dim,
                                c->classes);
}

lade_status lade_classifier_fit(float *weight, float *bias, double *last_epoch_loss, const float *features,
                                const int64_t *labels, int n, int dim, int classes, const lade_classifier_config *cfg) {
    lade_status st = check_data(features, labels, n, dim, classes);
    if (!st) st = check_fit_config(cfg, classes, 1);
    if (!st) st = lt_check_logits(weight, (size_t)classes, dim, "weight");
    if (!st) st = lt_check_logits(bias, 1, classes, "bias");
    if (st) return st;
    size_t n_params = (size_t)classes * dim + (size_t)classes;
    float *params = lade_alloc(n_params * sizeof(float)); /* weight and bias, contiguous for SGD */
    if (!params) return lade_fail(LADE_ENOMEM, "no memory for %zu parameters", n_params);
    memcpy(params, weight, (size_t)classes * dim * sizeof(float));
    memcpy(params + (size_t)classes * dim, bias, (size_t)classes * sizeof(float));
    fit_state s;
    st = fit_init(&s, features, labels, n, dim, classes, cfg);
    if (!st) {
        linear_ctx ctx = {classes, dim, params};
        st = run_sgd(&s, params, n_params, linear_step, &ctx, last_epoch_loss);
        fit_free(&s);
    }
    if (!st) {
        memcpy(weight, params, (size_t)classes * dim * sizeof(float));
        memcpy(bias, params + (size_t)classes * dim, (size_t)classes * sizeof(float));
    }
    lade_free(params);
    return st;
}

/* ---- learnable weight scaling ----------------------------------------------------------- */
/* logits[i,c] = scales[c] * base[i,c]; dscales[c] = sum_i dlogits[i,c] * base[i,c]. base is kept in
 * `base` (len, classes) for the gradient. */
static lade_status lws_core(double *loss, float *dscales, fit_state *s, int len, float *base, const float *weight,
                            const float *bias, const float *scales) {
    int C = s->classes;
    lade_status st = lade_linear_forward(base, s->x, weight, bias, len, s->dim, C);
    if (st) return st;
    for (int i = 0; i < len; i++)
        for (int c = 0; c < C; c++) s->logits[(size_t)i * C + c] = scales[c] * base[(size_t)i * C + c];
    st = batch_loss(loss, s, len);
    if (st || !dscales) return st;
    for (int c = 0; c < C; c++) {
        double g = 0;
        for (int i = 0; i < len; i++) g += (double)s->dlogits[(size_t)i * C + c] * base[(size_t)i * C + c];
        dscales[c] = (float)g;
    }
    return LADE_OK;
}

static lade_status check_classifier(const float *weight, const float *bias, const float *scales, int dim, int classes) {
    lade_status st = lt_check_logits(weight, (size_t)classes, dim, "weight");
    if (!st && bias) st = lt_check_logits(bias, 1, classes, "bias");
    if (!st && scales) st = lt_check_logits(scales, 1, classes, "scales");
    return st;
}

lade_status lade_lws_loss(double *loss, float *dscales, const float *features, const int64_t *labels, int n, int dim,
                          int classes, const float *weight, const float *bias, const float *scales) {
    lade_status st = check_data(features, labels, n, dim, classes);
    if (!st) st = check_classifier(weight, bias, scales, dim, classes);
    if (st) return st;
    lade_classifier_config cfg = lade_classifier_config_default();
    cfg.batch_size = n;
    fit_state s;
    st = fit_init(&s, features, labels, n, dim, classes, &cfg);
    if (st) return st;
    float *base = lade_alloc((size_t)n * classes * sizeof(float));
    if (!base) st = lade_fail(LADE_ENOMEM, "no memory for %d x %d logits", n, classes);
    if (!st) {
        for (int i = 0; i < n; i++) s.rows[i] = i;
        gather(&s, 0, n);
        st = lws_core(loss, dscales, &s, n, base, weight, bias, scales);
    }
    lade_free(base);
    fit_free(&s);
    return st;
}

typedef struct {
    const float *weight, *bias;
    float *scales, *base;
} lws_ctx;

static lade_status lws_step(void *ctx, fit_state *s, int len, double *loss, float *grads) {
    lws_ctx *c = ctx;
    return lws_core(loss, grads, s, len, c->base, c->weight, c->bias, c->scales);
}

lade_status lade_lws_fit(float *scales, double *last_epoch_loss, const float *features, const int64_t *labels, int n,
                         int dim, int classes, const float *weight, const float *bias, const lade_classifier_config *cfg) {
    lade_status st = check_data(features, labels, n, dim, classes);
    if (!st) st = check_fit_config(cfg, classes, 0);
    if (!st) st = check_classifier(weight, bias, scales, dim, classes);
    if (st) return st;
    fit_state s;
    st = fit_init(&s, features, labels, n, dim, classes, cfg);
    if (st) return st;
    size_t b = (size_t)(cfg->batch_size < n ? cfg->batch_size : n);
    lws_ctx ctx = {weight, bias, scales, lade_alloc(b * (size_t)classes * sizeof(float))};
    st = ctx.base ? run_sgd(&s, scales, (size_t)classes, lws_step, &ctx, last_epoch_loss)
                  : lade_fail(LADE_ENOMEM, "no memory for %zu x %d logits", b, classes);
    lade_free(ctx.base);
    fit_free(&s);
    return st;
}

/* ---- tau-normalisation: the choice of tau ------------------------------------------------ */
#define TAU_CHUNK 4096 /* held-out rows per linear forward */

lade_status lade_tau_select(double *balanced_accuracy, int *best, const float *taus, int num_taus,
                            const float *features, const int64_t *labels, int n, int dim, int classes,
                            const float *weight, const float *bias) {
    lade_status st = check_data(features, labels, n, dim, classes);
    if (!st) st = check_classifier(weight, bias, NULL, dim, classes);
    if (!st && num_taus < 1) st = lade_fail(LADE_EINVAL, "argument 'taus' must hold at least one value");
    for (int t = 0; t < num_taus && !st; t++)
        if (!isfinite(taus[t])) st = lade_fail(LADE_EINVAL, "argument 'taus': taus[%d] = %g is not finite", t,
                                               (double)taus[t]);
    if (st) return st;
    size_t chunk = (size_t)(n < TAU_CHUNK ? n : TAU_CHUNK);
    float *w = lade_alloc((size_t)classes * dim * sizeof(float));
    float *logits = lade_alloc(chunk * classes * sizeof(float));
    int64_t *pred = lade_alloc(chunk * sizeof(int64_t));
    int64_t *seen = lade_alloc((size_t)classes * sizeof(int64_t)), *hit = lade_alloc((size_t)classes * sizeof(int64_t));
    if (!w || !logits || !pred || !seen || !hit) st = lade_fail(LADE_ENOMEM, "no memory for %d classes", classes);
    for (int t = 0; t < num_taus && !st; t++) {
        st = lade_tau_normalize(w, weight, classes, dim, taus[t]);
        memset(seen, 0, (size_t)classes * sizeof(int64_t));
        memset(hit, 0, (size_t)classes * sizeof(int64_t));
        for (int start = 0; start < n && !st; start += (int)chunk) {
            int len = n - start < (int)chunk ? n - start : (int)chunk;
            st = lade_linear_forward(logits, features + (size_t)start * dim, w, bias, len, dim, classes);
            if (!st) st = lade_argmax(pred, logits, len, classes);
            for (int i = 0; i < len && !st; i++) {
                int64_t y = labels[start + i];
                seen[y]++;
                hit[y] += pred[i] == y;
            }
        }
        double sum = 0;
        int present = 0;
        for (int c = 0; c < classes; c++)
            if (seen[c]) sum += (double)hit[c] / (double)seen[c], present++;
        balanced_accuracy[t] = sum / present;
        if (t == 0 || balanced_accuracy[t] > balanced_accuracy[*best]) *best = t;
    }
    lade_free(w);
    lade_free(logits);
    lade_free(pred);
    lade_free(seen);
    lade_free(hit);
    return st;
}

lade_classifier_config lade_classifier_config_default(void) {
    lade_classifier_config cfg = {10, 512, 0.2f, 0.9f, 5e-4f, LADE_SAMPLE_CLASS_BALANCED, LADE_CLASSIFIER_CE,
                                  NULL, (float)LADE_DEFAULT_ALPHA, (float)LADE_DEFAULT_REMINE_LAMBDA, 0};
    return cfg;
}
