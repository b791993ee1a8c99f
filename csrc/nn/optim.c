/* optim.c - SGD with PyTorch's semantics, and learning-rate schedules. */
#include "lade_nn.h"

#include <math.h>

#define SGD_GRAIN 32768 /* parameters per pool task */

typedef struct {
    float *params, *velocity;
    const float *grads, *decay_mask;
    size_t n;
    lade_sgd_config cfg;
    float lr;
    int first_step;
} sgd_job;

static void sgd_range(void *ctx, size_t begin, size_t end) {
    const sgd_job *j = ctx;
    const float m = j->cfg.momentum, damp = 1.0f - j->cfg.dampening, wd = j->cfg.weight_decay, lr = j->lr;
    size_t lo = begin * SGD_GRAIN, hi = end * SGD_GRAIN < j->n ? end * SGD_GRAIN : j->n;
    for (size_t i = lo; i < hi; i++) {
        float d = j->grads[i];
        if (wd != 0.0f) d += (j->decay_mask ? j->decay_mask[i] * wd : wd) * j->params[i];
        if (m != 0.0f) {
            /* PyTorch starts the momentum buffer at the first gradient, undamped */
            float v = j->first_step ? d : m * j->velocity[i] + damp * d;
            j->velocity[i] = v;
            d = j->cfg.nesterov ? d + m * v : v;
        }
        j->params[i] -= lr * d;
    }
}

lade_status lade_sgd_step(float *params, const float *grads, float *velocity, const float *decay_mask, size_t n,
                          const lade_sgd_config *cfg, float lr, int first_step) {
    if (!(lr >= 0.0f) || !isfinite(lr)) return lade_fail(LADE_EINVAL, "learning rate must be finite and >= 0, got %g", (double)lr);
    if (!(cfg->momentum >= 0.0f) || !(cfg->weight_decay >= 0.0f) || !(cfg->dampening >= 0.0f))
        return lade_fail(LADE_EINVAL, "momentum, weight decay and dampening must be >= 0, got %g, %g, %g",
                         (double)cfg->momentum, (double)cfg->weight_decay, (double)cfg->dampening);
    if (cfg->nesterov && (cfg->momentum <= 0.0f || cfg->dampening != 0.0f))
        return lade_fail(LADE_EINVAL, "Nesterov momentum needs momentum > 0 and dampening 0");
    /* Check every gradient first: a non-finite one must leave the weights untouched. */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(grads[i]))
            return lade_fail(LADE_ENONFINITE, "gradient %zu is %g; the step was not taken", i, (double)grads[i]);
    sgd_job j = {params, velocity, grads, decay_mask, n, *cfg, lr, first_step};
    lade_parallel_for((n + SGD_GRAIN - 1) / SGD_GRAIN, sgd_range, &j);
    return LADE_OK;
}

lade_status lade_lr_warmup_multistep(double *lr, double base, int epoch, int warmup_epochs, double warmup_start,
                                     const int *milestones, int num_milestones, double factor) {
    if (!(base >= 0) || !isfinite(base))
        return lade_fail(LADE_EINVAL, "argument 'base_lr' must be finite and >= 0, got %g", base);
    if (epoch < 0) return lade_fail(LADE_EINVAL, "argument 'epoch' must be >= 0, got %d", epoch);
    if (warmup_epochs < 0) return lade_fail(LADE_EINVAL, "argument 'warmup_epochs' must be >= 0, got %d", warmup_epochs);
    if (!(warmup_start >= 0 && warmup_start <= 1))
        return lade_fail(LADE_EINVAL, "argument 'warmup_start' must be in [0, 1], got %g", warmup_start);
    if (!(factor > 0) || !isfinite(factor))
        return lade_fail(LADE_EINVAL, "argument 'factor' must be finite and > 0, got %g", factor);
    for (int i = 0; i < num_milestones; i++)
        if (milestones[i] < 0 || (i > 0 && milestones[i] < milestones[i - 1]))
            return lade_fail(LADE_EINVAL, "argument 'milestones' must be increasing and >= 0, got %d at position %d",
                             milestones[i], i);
    double warm = 1.0;
    if (epoch < warmup_epochs) {
        double t = (double)epoch / warmup_epochs;
        warm = warmup_start * (1.0 - t) + t;
    }
    double decay = 1.0;
    for (int i = 0; i < num_milestones; i++)
        if (milestones[i] <= epoch) decay *= factor;
    *lr = base * warm * decay;
    return LADE_OK;
}

lade_status lade_lr_cosine(double *lr, double base, int epoch, int total_epochs, double eta_min) {
    if (!(base >= 0) || !isfinite(base))
        return lade_fail(LADE_EINVAL, "argument 'base_lr' must be finite and >= 0, got %g", base);
    if (total_epochs < 1) return lade_fail(LADE_EINVAL, "argument 'total_epochs' must be >= 1, got %d", total_epochs);
    if (epoch < 0 || epoch > total_epochs)
        return lade_fail(LADE_EINVAL, "argument 'epoch' must be in [0, total_epochs=%d], got %d", total_epochs, epoch);
    if (!(eta_min >= 0) || !isfinite(eta_min))
        return lade_fail(LADE_EINVAL, "argument 'eta_min' must be finite and >= 0, got %g", eta_min);
    *lr = eta_min + (base - eta_min) * (1.0 + cos(M_PI * (double)epoch / total_epochs)) / 2.0;
    return LADE_OK;
}
