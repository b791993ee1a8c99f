/* layers.c - batch norm, ReLU, add, concat, pooling, option-A shortcut, linear, Causal Norm. */
#include "lade_nn.h"
#include "nn_internal.h"
#include "base/blas.h"
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int same_shape(lade_maps a, lade_maps b) {
    return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
}

/* ---- batch norm ------------------------------------------------------------------
 * Channels are independent, so the pool splits the work by channel. With a
 * reducer (synchronised batch norm) the passes are cut around the reductions,
 * which run on the calling thread: forward, the local sums, the global mean,
 * the local squared deviations from it, the global variance, then the
 * normalisation (the same two-pass variance as one process on the whole
 * batch: a sum of squares would lose the variance of a channel whose mean
 * is large against its spread); backward, the local sums of dy and dy*xhat,
 * then the input gradient from their global sums. */
typedef struct {
    lade_maps out, in, din, dout;
    float *mean, *invstd, *dgamma, *dbeta;
    const float *gamma, *beta, *cmean, *cinvstd, *cvar;
    float eps;
    int accumulate;
    lade_maps residual; /* forward: added after the affine map when residual.data is set */
    lade_maps relu_out; /* backward: output of a ReLU after the batch norm, masks dout when data is set */
    lade_maps pass_on;  /* backward: gets the masked dout too (added when pass_accumulate) when data is set */
    int pass_accumulate;
    int relu;           /* forward: ReLU last */
    double *sums;       /* synchronised: the reducer's buffer (2 * channels + 1 doubles) */
    double total;       /* synchronised: values per channel over all replicas */
} bn_job;

static float *plane_or_null(lade_maps m, int b, size_t c) {
    return m.data ? m.data + b * m.stride_n + c * m.stride_c : NULL;
}

/* The plane passes are vectorised kernels (kernels_template.h). */
static void bn_channel_normalise(const bn_job *j, const lade_kernel_table *k, size_t c, float mean, float invstd) {
    const size_t plane = (size_t)j->in.h * j->in.w;
    j->mean[c] = mean;
    j->invstd[c] = invstd;
    float scale = j->gamma[c] * invstd, shift = j->beta[c] - mean * scale;
    for (int b = 0; b < j->in.n; b++) {
        const float *x = j->in.data + b * j->in.stride_n + c * j->in.stride_c;
        float *y = j->out.data + b * j->out.stride_n + c * j->out.stride_c;
        k->plane_affine(y, x, plane, scale, shift, plane_or_null(j->residual, b, c), j->relu);
    }
}

/* The sum of channel c of the local batch, and the sum of its squared deviations from mean. */
static double bn_channel_sum(const bn_job *j, const lade_kernel_table *k, size_t c) {
    double sum = 0.0;
    for (int b = 0; b < j->in.n; b++)
        sum += k->plane_sum(j->in.data + b * j->in.stride_n + c * j->in.stride_c, (size_t)j->in.h * j->in.w);
    return sum;
}
static double bn_channel_sq_dev(const bn_job *j, const lade_kernel_table *k, size_t c, float mean) {
    double sq = 0.0;
    for (int b = 0; b < j->in.n; b++)
        sq += k->plane_sq_dev(j->in.data + b * j->in.stride_n + c * j->in.stride_c, (size_t)j->in.h * j->in.w, mean);
    return sq;
}

static void bn_train_channels(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    const lade_kernel_table *k = lade_kernels();
    const size_t count = (size_t)j->in.n * j->in.h * j->in.w;
    for (size_t c = begin; c < end; c++) {
        const float mean = (float)(bn_channel_sum(j, k, c) / count);
        double var = bn_channel_sq_dev(j, k, c, mean) / count; /* biased: the normaliser */
        bn_channel_normalise(j, k, c, mean, (float)(1.0 / sqrt(var + j->eps)));
    }
}

/* Synchronised, the three passes around the two reductions: sums[c] = the local sum of channel c; then,
 * with save_mean holding the global means, sums[c] = the local squared deviations from it; then the
 * normalisation with the global variance sums[c] / total. */
static void bn_sync_sums(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    for (size_t c = begin; c < end; c++) j->sums[c] = bn_channel_sum(j, lade_kernels(), c);
}
static void bn_sync_sq_devs(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    for (size_t c = begin; c < end; c++) j->sums[c] = bn_channel_sq_dev(j, lade_kernels(), c, j->mean[c]);
}
static void bn_sync_normalise(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    for (size_t c = begin; c < end; c++)
        bn_channel_normalise(j, lade_kernels(), c, j->mean[c], (float)(1.0 / sqrt(j->sums[c] / j->total + j->eps)));
}

void lade_batchnorm2d_update_running(float *running_mean, float *running_var, const float *save_mean,
                                     const float *save_invstd, int channels, size_t count, float momentum,
                                     float eps) {
    /* PyTorch moves the running variance towards the UNBIASED batch variance. */
    double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    for (int c = 0; c < channels; c++) {
        double var = 1.0 / ((double)save_invstd[c] * save_invstd[c]) - eps;
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * save_mean[c];
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var * unbias);
    }
}

static lade_status bn_forward_check(lade_maps out, lade_maps in, float eps, lade_maps residual) {
    if (!same_shape(out, in) || (residual.data && !same_shape(residual, in)))
        return lade_fail(LADE_EINVAL, "batchnorm2d: output (or residual) shape differs from input shape");
    if (!(eps > 0.0f)) return lade_fail(LADE_EINVAL, "batchnorm2d: eps must be > 0, got %g", (double)eps);
    return LADE_OK;
}

/* Runs the reducer on buf[0, n) and passes its failure on, naming the layer's pass. */
static lade_status bn_reduce(const lade_bn_sync *sync, size_t n, const char *pass) {
    lade_clear_error();
    lade_status st = sync->reduce(sync->buf, n, sync->ctx);
    if (st == LADE_OK) return LADE_OK;
    char detail[400];
    snprintf(detail, sizeof detail, "%s", lade_error_detail()[0] ? lade_error_detail() : lade_status_str(st));
    return lade_fail(st, "batchnorm2d %s: the statistics reducer failed: %s", pass, detail);
}

lade_status lade_bn_forward_train_ex(lade_maps out, float *save_mean, float *save_invstd, lade_maps in,
                                     const float *gamma, const float *beta, float eps, lade_maps residual, int relu,
                                     const lade_bn_sync *sync, size_t *count) {
    lade_status st = bn_forward_check(out, in, eps, residual);
    if (st) return st;
    const size_t local = (size_t)in.n * in.h * in.w;
    if (local < 2)
        return lade_fail(LADE_EINVAL, "batchnorm2d: training needs more than one value per channel, got input "
                         "(%d, %d, %d, %d)", in.n, in.c, in.h, in.w);
    bn_job j = {.out = out, .in = in, .mean = save_mean, .invstd = save_invstd, .gamma = gamma, .beta = beta,
                .eps = eps, .residual = residual, .relu = relu};
    if (count) *count = local;
    if (!sync) {
        lade_parallel_for((size_t)in.c, bn_train_channels, &j);
        return LADE_OK;
    }
    const size_t channels = (size_t)in.c;
    j.sums = sync->buf;
    lade_parallel_for(channels, bn_sync_sums, &j);
    sync->buf[channels] = (double)local;
    st = bn_reduce(sync, channels + 1, "forward");
    if (st) return st;
    j.total = sync->buf[channels];
    /* a reducer that does not sum in place shows here (the sums themselves may be NaN for NaN inputs) */
    if (!(j.total >= (double)local && j.total < 9007199254740992.0 && j.total == floor(j.total)))
        return lade_fail(LADE_EINVAL, "batchnorm2d forward: the statistics reducer gave a total count of %g values "
                         "per channel; expected a whole number >= the %zu of this replica (the reducer must sum "
                         "the buffer over all replicas, in place)", j.total, local);
    for (size_t c = 0; c < channels; c++) save_mean[c] = (float)(sync->buf[c] / j.total);
    lade_parallel_for(channels, bn_sync_sq_devs, &j);
    st = bn_reduce(sync, channels, "forward");
    if (st) return st;
    lade_parallel_for(channels, bn_sync_normalise, &j);
    if (count) *count = (size_t)j.total;
    return LADE_OK;
}

lade_status lade_batchnorm2d_forward_train(lade_maps out, float *save_mean, float *save_invstd,
                                           float *running_mean, float *running_var, lade_maps in,
                                           const float *gamma, const float *beta, float momentum, float eps) {
    lade_maps none = {0};
    size_t count = 0;
    lade_status st = lade_bn_forward_train_ex(out, save_mean, save_invstd, in, gamma, beta, eps, none, 0, NULL, &count);
    if (st) return st;
    if (running_mean && running_var)
        lade_batchnorm2d_update_running(running_mean, running_var, save_mean, save_invstd, in.c, count, momentum, eps);
    return LADE_OK;
}

static void eval_scale_shift(float *scale, float *shift, float gamma, float beta, float mean, float var, float eps) {
    float invstd = (float)(1.0 / sqrt((double)var + eps));
    *scale = gamma * invstd;
    *shift = beta - mean * *scale;
}

static lade_status check_running(const float *running_mean, const float *running_var, int c_count) {
    for (int c = 0; c < c_count; c++)
        if (!(running_var[c] >= 0) || !isfinite(running_var[c]) || !isfinite(running_mean[c]))
            return lade_fail(LADE_EINVAL, "batchnorm2d: argument 'running_var' must be finite and >= 0 and "
                             "'running_mean' finite, got var %g, mean %g for channel %d", (double)running_var[c],
                             (double)running_mean[c], c);
    return LADE_OK;
}

lade_status lade_bn_eval_fold(float *scale, float *shift, const float *gamma, const float *beta,
                              const float *running_mean, const float *running_var, float eps, int c_count) {
    lade_status st = check_running(running_mean, running_var, c_count);
    if (st) return st;
    for (int c = 0; c < c_count; c++)
        eval_scale_shift(&scale[c], &shift[c], gamma[c], beta[c], running_mean[c], running_var[c], eps);
    return LADE_OK;
}

static void bn_eval_channels(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    const lade_kernel_table *k = lade_kernels();
    const size_t plane = (size_t)j->in.h * j->in.w;
    for (size_t c = begin; c < end; c++) {
        float scale, shift;
        eval_scale_shift(&scale, &shift, j->gamma[c], j->beta[c], j->cmean[c], j->cvar[c], j->eps);
        for (int b = 0; b < j->in.n; b++) {
            const float *x = j->in.data + b * j->in.stride_n + c * j->in.stride_c;
            float *y = j->out.data + b * j->out.stride_n + c * j->out.stride_c;
            k->plane_affine(y, x, plane, scale, shift, plane_or_null(j->residual, b, c), j->relu);
        }
    }
}

lade_status lade_bn_forward_eval_ex(lade_maps out, lade_maps in, const float *gamma, const float *beta,
                                    const float *running_mean, const float *running_var, float eps, lade_maps residual,
                                    int relu) {
    lade_status st = bn_forward_check(out, in, eps, residual);
    if (!st) st = check_running(running_mean, running_var, in.c);
    if (st) return st;
    bn_job j = {.out = out, .in = in, .gamma = gamma, .beta = beta, .cmean = running_mean,
                .cvar = running_var, .eps = eps, .residual = residual, .relu = relu};
    lade_parallel_for((size_t)in.c, bn_eval_channels, &j);
    return LADE_OK;
}

lade_status lade_batchnorm2d_forward_eval(lade_maps out, lade_maps in, const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var, float eps) {
    lade_maps none = {0};
    return lade_bn_forward_eval_ex(out, in, gamma, beta, running_mean, running_var, eps, none, 0);
}

/* The local sums of channel c: of dy, and of dy * xhat (xhat from the saved statistics). */
static void bn_channel_dy_sums(const bn_job *j, const lade_kernel_table *kern, size_t c, double *sum_dy,
                               double *sum_dy_xhat) {
    const size_t plane = (size_t)j->in.h * j->in.w;
    double sdy = 0.0, sdyx = 0.0;
    for (int b = 0; b < j->in.n; b++)
        kern->plane_dy_sums(j->dout.data + b * j->dout.stride_n + c * j->dout.stride_c,
                            plane_or_null(j->relu_out, b, c), j->in.data + b * j->in.stride_n + c * j->in.stride_c,
                            plane, j->cmean[c], &sdy, &sdyx, plane_or_null(j->pass_on, b, c), j->pass_accumulate);
    *sum_dy = sdy;
    *sum_dy_xhat = sdyx * j->cinvstd[c];
}

/* dx of channel c from the sums of dy and dy * xhat over `total` values (of all replicas when synchronised) */
static void bn_channel_dx(const bn_job *j, const lade_kernel_table *kern, size_t c, double sum_dy,
                          double sum_dy_xhat, double total) {
    const size_t plane = (size_t)j->in.h * j->in.w;
    const float mean = j->cmean[c], invstd = j->cinvstd[c];
    /* dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)), with xhat = (x - mean) * invstd,
     * expanded to dx = k*dy + kx*x + k0 (two multiply-adds per value) */
    const double k = (double)j->gamma[c] * invstd, mdy = sum_dy / total, mdyx = sum_dy_xhat / total;
    const float kdy = (float)k, kx = (float)(-k * invstd * mdyx), k0 = (float)(k * (invstd * mdyx * mean - mdy));
    for (int b = 0; b < j->in.n; b++) {
        const float *x = j->in.data + b * j->in.stride_n + c * j->in.stride_c;
        const float *dy = j->dout.data + b * j->dout.stride_n + c * j->dout.stride_c;
        float *dx = j->din.data + b * j->din.stride_n + c * j->din.stride_c;
        kern->plane_bn_dx(dx, dy, plane_or_null(j->relu_out, b, c), x, plane, kdy, kx, k0, j->accumulate);
    }
}

static void bn_accumulate_affine_grads(const bn_job *j, size_t c, double sum_dy, double sum_dy_xhat) {
    if (j->dgamma) j->dgamma[c] += (float)sum_dy_xhat;
    if (j->dbeta) j->dbeta[c] += (float)sum_dy;
}

static void bn_backward_channels(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    const lade_kernel_table *kern = lade_kernels();
    const double count = (double)j->in.n * j->in.h * j->in.w;
    for (size_t c = begin; c < end; c++) {
        double sum_dy, sum_dy_xhat;
        bn_channel_dy_sums(j, kern, c, &sum_dy, &sum_dy_xhat);
        bn_accumulate_affine_grads(j, c, sum_dy, sum_dy_xhat);
        if (j->din.data) bn_channel_dx(j, kern, c, sum_dy, sum_dy_xhat, count);
    }
}

/* Synchronised, first half: the local sums; gamma and beta get this replica's share of their gradient
 * (the gradient all-reduce adds the shares), and sums[] what the input gradient needs from all replicas. */
static void bn_sync_backward_sums(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    const lade_kernel_table *kern = lade_kernels();
    for (size_t c = begin; c < end; c++) {
        double sum_dy, sum_dy_xhat;
        bn_channel_dy_sums(j, kern, c, &sum_dy, &sum_dy_xhat);
        bn_accumulate_affine_grads(j, c, sum_dy, sum_dy_xhat);
        j->sums[c] = sum_dy;
        j->sums[j->in.c + c] = sum_dy_xhat;
    }
}

static void bn_sync_backward_dx(void *ctx, size_t begin, size_t end) {
    const bn_job *j = ctx;
    const lade_kernel_table *kern = lade_kernels();
    for (size_t c = begin; c < end; c++) bn_channel_dx(j, kern, c, j->sums[c], j->sums[j->in.c + c], j->total);
}

lade_status lade_bn_backward_ex(lade_maps din, float *dgamma, float *dbeta, lade_maps dout, lade_maps relu_out,
                                lade_maps pass_on, int pass_accumulate, lade_maps in, const float *gamma,
                                const float *save_mean, const float *save_invstd, int accumulate,
                                const lade_bn_sync *sync, size_t count) {
    if (!same_shape(dout, in) || (din.data && !same_shape(din, in)) || (relu_out.data && !same_shape(relu_out, in)) ||
        (pass_on.data && !same_shape(pass_on, in)))
        return lade_fail(LADE_EINVAL, "batchnorm2d backward: gradient shapes differ from the input shape");
    bn_job j = {.din = din, .dout = dout, .in = in, .dgamma = dgamma, .dbeta = dbeta, .gamma = gamma,
                .cmean = save_mean, .cinvstd = save_invstd, .accumulate = accumulate, .relu_out = relu_out,
                .pass_on = pass_on, .pass_accumulate = pass_accumulate};
    if (!sync) {
        lade_parallel_for((size_t)in.c, bn_backward_channels, &j);
        return LADE_OK;
    }
    if (count < (size_t)in.n * in.h * in.w)
        return lade_fail(LADE_EINVAL, "batchnorm2d backward: the forward's total count %zu is below this replica's "
                         "%zu values per channel", count, (size_t)in.n * in.h * in.w);
    j.sums = sync->buf;
    j.total = (double)count;
    lade_parallel_for((size_t)in.c, bn_sync_backward_sums, &j);
    lade_status st = bn_reduce(sync, 2 * (size_t)in.c, "backward");
    if (st) return st;
    if (din.data) lade_parallel_for((size_t)in.c, bn_sync_backward_dx, &j);
    return LADE_OK;
}

lade_status lade_batchnorm2d_backward(lade_maps din, float *dgamma, float *dbeta, lade_maps dout, lade_maps in,
                                      const float *gamma, const float *save_mean, const float *save_invstd) {
    lade_maps none = {0};
    return lade_bn_backward_ex(din, dgamma, dbeta, dout, none, none, 0, in, gamma, save_mean, save_invstd, 1, NULL, 0);
}

/* ---- element-wise ----------------------------------------------------------------- */
#define ELTWISE_GRAIN 16384 /* floats per task: keeps the pool's overhead small */

typedef struct {
    float *out, *out2;
    const float *a, *b;
    int mode;
} eltwise_job;

enum { RELU_FWD, RELU_BWD_ACC, RELU_BWD_SET, ADD_FWD, ADD_BWD };

typedef struct {
    eltwise_job job;
    size_t count;
} eltwise_range;

static void eltwise_range_fn(void *ctx, size_t begin, size_t end) {
    const eltwise_range *r = ctx;
    const eltwise_job *j = &r->job;
    size_t lo = begin * ELTWISE_GRAIN, hi = end * ELTWISE_GRAIN;
    if (hi > r->count) hi = r->count;
    float *out = j->out, *out2 = j->out2;
    const float *a = j->a, *b = j->b;
    switch (j->mode) {
    /* Written so that NaN propagates, as in PyTorch: a NaN input must not
     * become a clean 0 that hides the problem from the loss check. */
    case RELU_FWD:
        for (size_t i = lo; i < hi; i++) out[i] = a[i] < 0.0f ? 0.0f : a[i];
        break;
    case RELU_BWD_ACC: /* a = dout, b = forward output */
        for (size_t i = lo; i < hi; i++) out[i] += b[i] <= 0.0f ? 0.0f : a[i];
        break;
    case RELU_BWD_SET:
        for (size_t i = lo; i < hi; i++) out[i] = b[i] <= 0.0f ? 0.0f : a[i];
        break;
    case ADD_FWD:
        for (size_t i = lo; i < hi; i++) out[i] = a[i] + b[i];
        break;
    case ADD_BWD:
        if (out)
            for (size_t i = lo; i < hi; i++) out[i] += a[i];
        if (out2)
            for (size_t i = lo; i < hi; i++) out2[i] += a[i];
        break;
    }
}

static void eltwise_run(eltwise_job job, size_t count) {
    eltwise_range r = {job, count};
    lade_parallel_for((count + ELTWISE_GRAIN - 1) / ELTWISE_GRAIN, eltwise_range_fn, &r);
}

void lade_relu_forward(float *out, const float *in, size_t count) {
    eltwise_run((eltwise_job){out, NULL, in, NULL, RELU_FWD}, count);
}
void lade_relu_backward(float *din, const float *dout, const float *out, size_t count) {
    eltwise_run((eltwise_job){din, NULL, dout, out, RELU_BWD_ACC}, count);
}
void lade_relu_backward_set(float *din, const float *dout, const float *out, size_t count) {
    eltwise_run((eltwise_job){din, NULL, dout, out, RELU_BWD_SET}, count);
}
void lade_add_forward(float *out, const float *a, const float *b, size_t count) {
    eltwise_run((eltwise_job){out, NULL, a, b, ADD_FWD}, count);
}
void lade_add_backward(float *da, float *db, const float *dout, size_t count) {
    eltwise_run((eltwise_job){da, db, dout, NULL, ADD_BWD}, count);
}

/* ---- concat, pooling, shortcut: plane-by-plane copies ------------------------------- */
static float *plane_at(lade_maps m, int b, int c) {
    return m.data + (size_t)b * m.stride_n + (size_t)c * m.stride_c;
}

lade_status lade_concat_forward(lade_maps out, lade_maps a, lade_maps b) {
    if (a.n != out.n || b.n != out.n || a.c + b.c != out.c || a.h != out.h || b.h != out.h || a.w != out.w ||
        b.w != out.w)
        return lade_fail(LADE_EINVAL, "concat: shapes (%d, %d, %d, %d) + (%d, %d, %d, %d) do not make (%d, %d, %d, %d)",
                         a.n, a.c, a.h, a.w, b.n, b.c, b.h, b.w, out.n, out.c, out.h, out.w);
    size_t bytes = sizeof(float) * out.h * out.w;
    for (int i = 0; i < out.n; i++) {
        for (int c = 0; c < a.c; c++) memcpy(plane_at(out, i, c), plane_at(a, i, c), bytes);
        for (int c = 0; c < b.c; c++) memcpy(plane_at(out, i, a.c + c), plane_at(b, i, c), bytes);
    }
    return LADE_OK;
}

lade_status lade_concat_backward(lade_maps da, lade_maps db, lade_maps dout) {
    if (da.n != dout.n || db.n != dout.n || da.c + db.c != dout.c || da.h != dout.h || db.h != dout.h ||
        da.w != dout.w || db.w != dout.w)
        return lade_fail(LADE_EINVAL, "concat backward: gradient shapes do not split (%d, %d, %d, %d)",
                         dout.n, dout.c, dout.h, dout.w);
    size_t plane = (size_t)dout.h * dout.w;
    for (int i = 0; i < dout.n; i++)
        for (int c = 0; c < dout.c; c++) {
            const float *src = plane_at(dout, i, c);
            float *dst = c < da.c ? (da.data ? plane_at(da, i, c) : NULL) : (db.data ? plane_at(db, i, c - da.c) : NULL);
            if (dst)
                for (size_t p = 0; p < plane; p++) dst[p] += src[p];
        }
    return LADE_OK;
}

lade_status lade_avgpool_forward(float *out, lade_maps in) {
    size_t plane = (size_t)in.h * in.w;
    if (plane == 0) return lade_fail(LADE_EINVAL, "global average pool: empty planes");
    for (int b = 0; b < in.n; b++)
        for (int c = 0; c < in.c; c++) {
            const float *x = plane_at(in, b, c);
            double s = 0.0;
            for (size_t p = 0; p < plane; p++) s += x[p];
            out[(size_t)b * in.c + c] = (float)(s / plane);
        }
    return LADE_OK;
}

lade_status lade_avgpool_backward(lade_maps din, const float *dout) {
    size_t plane = (size_t)din.h * din.w;
    if (plane == 0) return lade_fail(LADE_EINVAL, "global average pool: empty planes");
    for (int b = 0; b < din.n; b++)
        for (int c = 0; c < din.c; c++) {
            float *dx = plane_at(din, b, c), g = dout[(size_t)b * din.c + c] / (float)plane;
            for (size_t p = 0; p < plane; p++) dx[p] += g;
        }
    return LADE_OK;
}

lade_status lade_pool_out_size(const lade_pool_geom *g, int h, int w, int *oh, int *ow) {
    if (g->k < 1 || g->stride < 1 || g->pad < 0)
        return lade_fail(LADE_EINVAL, "max pool: need kernel >= 1, stride >= 1, padding >= 0, got %d, %d, %d",
                         g->k, g->stride, g->pad);
    if (2 * g->pad > g->k)
        return lade_fail(LADE_EINVAL, "max pool: padding %d must be at most half the kernel %d", g->pad, g->k);
    if (h < 1 || w < 1) return lade_fail(LADE_EINVAL, "max pool: input planes must be at least 1x1, got %dx%d", h, w);
    if (h + 2 * g->pad < g->k || w + 2 * g->pad < g->k)
        return lade_fail(LADE_EINVAL, "max pool: kernel %d does not fit input %dx%d with padding %d", g->k, h, w, g->pad);
    *oh = (h + 2 * g->pad - g->k) / g->stride + 1;
    *ow = (w + 2 * g->pad - g->k) / g->stride + 1;
    return LADE_OK;
}

lade_status lade_maxpool_forward(lade_maps out, int32_t *argmax, lade_maps in, const lade_pool_geom *g) {
    int oh, ow;
    lade_status st = lade_pool_out_size(g, in.h, in.w, &oh, &ow);
    if (st) return st;
    if (out.n != in.n || out.c != in.c || out.h != oh || out.w != ow)
        return lade_fail(LADE_EINVAL, "max pool: output must be (%d, %d, %d, %d), got (%d, %d, %d, %d)",
                         in.n, in.c, oh, ow, out.n, out.c, out.h, out.w);
    if ((int64_t)in.h * in.w > INT32_MAX) /* argmax holds int32 positions within a plane */
        return lade_fail(LADE_EINVAL, "max pool: input planes of %dx%d pixels exceed the 2^31-1 the int32 argmax holds",
                         in.h, in.w);
    for (int b = 0; b < in.n; b++)
        for (int c = 0; c < in.c; c++) {
            const float *x = plane_at(in, b, c);
            float *y = plane_at(out, b, c);
            int32_t *am = argmax + ((size_t)b * in.c + c) * oh * ow;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    float best = -INFINITY;
                    int32_t where = -1;
                    for (int ky = 0; ky < g->k; ky++)
                        for (int kx = 0; kx < g->k; kx++) {
                            int iy = oy * g->stride - g->pad + ky, ix = ox * g->stride - g->pad + kx;
                            if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                            float v = x[(size_t)iy * in.w + ix];
                            /* first maximum wins; NaN propagates like PyTorch */
                            if (where < 0 || v > best || (isnan(v) && !isnan(best))) {
                                best = v;
                                where = iy * in.w + ix;
                            }
                        }
                    y[oy * ow + ox] = best;
                    am[oy * ow + ox] = where;
                }
        }
    return LADE_OK;
}

lade_status lade_maxpool_backward(lade_maps din, lade_maps dout, const int32_t *argmax) {
    size_t oplane = (size_t)dout.h * dout.w, iplane = (size_t)din.h * din.w;
    if (din.n != dout.n || din.c != dout.c)
        return lade_fail(LADE_EINVAL, "max pool backward: batch or channels of the gradients differ");
    for (int b = 0; b < dout.n; b++)
        for (int c = 0; c < dout.c; c++) {
            const float *dy = plane_at(dout, b, c);
            float *dx = plane_at(din, b, c);
            const int32_t *am = argmax + ((size_t)b * dout.c + c) * oplane;
            for (size_t p = 0; p < oplane; p++) {
                if (am[p] < 0 || (size_t)am[p] >= iplane)
                    return lade_fail(LADE_ERANGE, "max pool backward: argmax %d outside the %zu-pixel plane",
                                     am[p], iplane);
                dx[am[p]] += dy[p];
            }
        }
    return LADE_OK;
}

/* ---- option-A shortcut ----------------------------------------------------------- */
static lade_status shortcut_check(lade_maps out, lade_maps in, int stride) {
    if (stride != 1 && stride != 2)
        return lade_fail(LADE_EINVAL, "option-A shortcut: stride must be 1 or 2, got %d", stride);
    int oh = (in.h + stride - 1) / stride, ow = (in.w + stride - 1) / stride;
    if (out.n != in.n || out.h != oh || out.w != ow || out.c < in.c || (out.c - in.c) % 2)
        return lade_fail(LADE_EINVAL, "option-A shortcut: from (%d, %d, %d, %d) with stride %d expected "
                         "(%d, C, %d, %d) with C - %d even and >= 0, got (%d, %d, %d, %d)",
                         in.n, in.c, in.h, in.w, stride, in.n, oh, ow, in.c, out.n, out.c, out.h, out.w);
    return LADE_OK;
}

/* dir 0: out (+)= subsample(in); dir 1: din += upsample(dout). */
static void shortcut_planes(lade_maps small, lade_maps big, int stride, int pad, int dir, int accumulate) {
    for (int b = 0; b < small.n; b++)
        for (int c = 0; c < big.c; c++) {
            float *s = plane_at(small, b, c + pad), *g = plane_at(big, b, c);
            for (int y = 0; y < small.h; y++)
                for (int x = 0; x < small.w; x++) {
                    float *sv = s + (size_t)y * small.w + x, *gv = g + (size_t)y * stride * big.w + (size_t)x * stride;
                    if (dir == 0) *sv = accumulate ? *sv + *gv : *gv;
                    else *gv += *sv;
                }
        }
}

lade_status lade_shortcut_a_forward(lade_maps out, lade_maps in, int stride) {
    lade_status st = shortcut_check(out, in, stride);
    if (st) return st;
    int pad = (out.c - in.c) / 2;
    size_t bytes = sizeof(float) * out.h * out.w;
    for (int b = 0; b < out.n; b++)
        for (int c = 0; c < out.c; c++)
            if (c < pad || c >= pad + in.c) memset(plane_at(out, b, c), 0, bytes);
    shortcut_planes(out, in, stride, pad, 0, 0);
    return LADE_OK;
}

lade_status lade_shortcut_a_accumulate(lade_maps out, lade_maps in, int stride) {
    lade_status st = shortcut_check(out, in, stride);
    if (st) return st;
    shortcut_planes(out, in, stride, (out.c - in.c) / 2, 0, 1);
    return LADE_OK;
}

lade_status lade_shortcut_a_backward(lade_maps din, lade_maps dout, int stride) {
    lade_status st = shortcut_check(dout, din, stride);
    if (st) return st;
    shortcut_planes(dout, din, stride, (dout.c - din.c) / 2, 1, 1);
    return LADE_OK;
}

/* ---- linear ----------------------------------------------------------------------- */
lade_status lade_linear_forward(float *out, const float *in, const float *weight, const float *bias, int n, int fin,
                                int fout) {
    if (n < 1 || fin < 1 || fout < 1)
        return lade_fail(LADE_EINVAL, "linear: sizes must be >= 1, got n=%d in=%d out=%d", n, fin, fout);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fout, fin, 1.0f, in, fin, weight, fin, 0.0f, out, fout);
    if (bias)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < fout; o++) out[(size_t)i * fout + o] += bias[o];
    return LADE_OK;
}

lade_status lade_linear_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                                 const float *weight, int n, int fin, int fout) {
    if (n < 1 || fin < 1 || fout < 1)
        return lade_fail(LADE_EINVAL, "linear: sizes must be >= 1, got n=%d in=%d out=%d", n, fin, fout);
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fin, fout, 1.0f, dout, fout, weight, fin, 1.0f,
                    din, fin);
    if (dweight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fout, fin, n, 1.0f, dout, fout, in, fin, 1.0f, dweight,
                    fin);
    if (dbias)
        for (int o = 0; o < fout; o++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dout[(size_t)i * fout + o];
            dbias[o] += (float)s;
        }
    return LADE_OK;
}

/* ---- Causal Norm classifier ----------------------------------------------------------
 * Forward: the normalised features and weights in the workspace, then one
 * GEMM. Backward recomputes them (two cheap passes) rather than keeping a
 * cache, GEMMs the gradients of the normalised rows, and takes each row's
 * slice back through its normalisation: for y = v / d with d = ||v|| + gamma,
 * dv = dy / d - v <v, dy> / (||v|| d^2) (no second term where ||v|| = 0 or the
 * 1e-12 floor holds d). */
#define CN_FLOOR 1e-12

lade_status lade_causal_norm_check(const lade_causal_norm_config *cfg, int fin) {
    if (cfg->heads < 1 || fin < 1 || fin % cfg->heads)
        return lade_fail(LADE_EINVAL, "causal norm: heads must be >= 1 and divide the feature size %d, got %d", fin,
                         cfg->heads);
    if (!(isfinite(cfg->tau) && cfg->tau > 0))
        return lade_fail(LADE_EINVAL, "causal norm: tau must be finite and > 0, got %g", (double)cfg->tau);
    if (!(isfinite(cfg->gamma) && cfg->gamma >= 0))
        return lade_fail(LADE_EINVAL, "causal norm: gamma must be finite and >= 0, got %g", (double)cfg->gamma);
    if (!(isfinite(cfg->alpha) && cfg->alpha >= 0))
        return lade_fail(LADE_EINVAL, "causal norm: alpha must be finite and >= 0, got %g", (double)cfg->alpha);
    if (!(cfg->mean_momentum >= 0 && cfg->mean_momentum <= 1))
        return lade_fail(LADE_EINVAL, "causal norm: mean_momentum must be in [0, 1], got %g",
                         (double)cfg->mean_momentum);
    return LADE_OK;
}

size_t lade_causal_norm_workspace_size(int n, int fin, int fout) {
    if (n < 1 || fin < 1 || fout < 1) return 0;
    return 2 * ((size_t)n + (size_t)fout) * (size_t)fin + (size_t)fin;
}

static lade_status causal_norm_args(const lade_causal_norm_config *cfg, int n, int fin, int fout) {
    if (n < 1 || fin < 1 || fout < 1)
        return lade_fail(LADE_EINVAL, "causal norm: sizes must be >= 1, got n=%d in=%d out=%d", n, fin, fout);
    return lade_causal_norm_check(cfg, fin);
}

/* The norm of a slice of len floats and its divisor max(norm + gamma, 1e-12). */
static double slice_norm(const float *v, int len, double gamma, double *divisor) {
    double s = 0.0;
    for (int k = 0; k < len; k++) s += (double)v[k] * v[k];
    s = sqrt(s);
    *divisor = s + gamma > CN_FLOOR ? s + gamma : CN_FLOOR;
    return s;
}

/* dst = each head slice of each of the rows of src divided by (its norm + gamma) */
static void normalise_heads(float *dst, const float *src, int rows, int fin, int heads, double gamma) {
    int len = fin / heads;
    for (size_t i = 0; i < (size_t)rows * heads; i++) {
        const float *v = src + i * len;
        double d;
        slice_norm(v, len, gamma, &d);
        for (int k = 0; k < len; k++) dst[i * len + k] = (float)(v[k] / d);
    }
}

/* grad (+)= the gradient of the rows of src through normalise_heads, given dnorm, the gradient of its output */
static void normalise_heads_backward(float *grad, const float *dnorm, const float *src, int rows, int fin, int heads,
                                     double gamma) {
    int len = fin / heads;
    for (size_t i = 0; i < (size_t)rows * heads; i++) {
        const float *v = src + i * len, *dy = dnorm + i * len;
        double d, s = slice_norm(v, len, gamma, &d), dot = 0.0;
        if (s > 0 && s + gamma > CN_FLOOR)
            for (int k = 0; k < len; k++) dot += (double)v[k] * dy[k];
        double c = dot != 0.0 ? dot / (s * d * d) : 0.0;
        for (int k = 0; k < len; k++) grad[i * len + k] += (float)(dy[k] / d - v[k] * c);
    }
}

lade_status lade_causal_norm_forward(float *out, const float *in, const float *weight, const float *mean,
                                     const lade_causal_norm_config *cfg, int n, int fin, int fout, float *workspace) {
    lade_status st = causal_norm_args(cfg, n, fin, fout);
    if (st) return st;
    float *xn = workspace, *wn = xn + (size_t)n * fin, *mn = wn + (size_t)fout * fin;
    normalise_heads(xn, in, n, fin, cfg->heads, 0.0);
    normalise_heads(wn, weight, fout, fin, cfg->heads, cfg->gamma);
    if (mean) { /* TDE: xn_h -= alpha * <xn_h, mn_h> mn_h per head (xn_h has norm 1: the dot is the cosine) */
        int len = fin / cfg->heads;
        normalise_heads(mn, mean, 1, fin, cfg->heads, 0.0);
        for (size_t i = 0; i < (size_t)n * cfg->heads; i++) {
            float *x = xn + i * len;
            const float *m = mn + (i % cfg->heads) * len;
            double cosine = 0.0;
            for (int k = 0; k < len; k++) cosine += (double)x[k] * m[k];
            float a = (float)(cfg->alpha * cosine);
            for (int k = 0; k < len; k++) x[k] -= a * m[k];
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fout, fin, cfg->tau / cfg->heads, xn, fin, wn, fin, 0.0f,
                out, fout);
    return LADE_OK;
}

lade_status lade_causal_norm_backward(float *din, float *dweight, const float *dout, const float *in,
                                      const float *weight, const lade_causal_norm_config *cfg, int n, int fin,
                                      int fout, float *workspace) {
    lade_status st = causal_norm_args(cfg, n, fin, fout);
    if (st) return st;
    float *xn = workspace, *wn = xn + (size_t)n * fin, *dxn = wn + (size_t)fout * fin, *dwn = dxn + (size_t)n * fin;
    const float scale = cfg->tau / cfg->heads;
    if (din) {
        normalise_heads(wn, weight, fout, fin, cfg->heads, cfg->gamma);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fin, fout, scale, dout, fout, wn, fin, 0.0f, dxn,
                    fin);
        normalise_heads_backward(din, dxn, in, n, fin, cfg->heads, 0.0);
    }
    if (dweight) {
        normalise_heads(xn, in, n, fin, cfg->heads, 0.0);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fout, fin, n, scale, dout, fout, xn, fin, 0.0f, dwn, fin);
        normalise_heads_backward(dweight, dwn, weight, fout, fin, cfg->heads, cfg->gamma);
    }
    return LADE_OK;
}
