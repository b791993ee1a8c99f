/* lade_nn.h - layers with forward and backward passes, ResNet models, SGD.
 *
 * Conventions (after llm.c):
 * - Arguments: outputs first, then what backward needs saved, then inputs and
 *   weights, then sizes.
 * - Every backward ACCUMULATES (+=) into its gradient buffers, activation
 *   gradients included; zeroing is the caller's one memset. Any gradient
 *   pointer may be NULL to skip that gradient.
 * - Feature maps are lade_maps: n images of c planes of h*w floats, each plane
 *   contiguous. NCHW arrays have stride_n = c*h*w and stride_c = h*w. The
 *   models keep activations channel-major (CNHW: stride_c = n*h*w,
 *   stride_n = h*w), which turns a convolution over many images into one
 *   large GEMM; lade_maps_nchw / lade_maps_cnhw build both.
 * - Semantics follow PyTorch (conv2d, batch_norm, max_pool2d, linear).
 */
#ifndef LADE_NN_H
#define LADE_NN_H

#include "lade_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float *data;
    int n, c, h, w;
    ptrdiff_t stride_n, stride_c; /* in floats */
} lade_maps;

LADE_API lade_maps lade_maps_nchw(float *data, int n, int c, int h, int w);
LADE_API lade_maps lade_maps_cnhw(float *data, int n, int c, int h, int w);

/* ---- conv2d: im2col + sgemm, and a naive reference -------------------------
 * weight (cout, cin, kh, kw), bias (cout) or NULL; out is
 * (n, cout, (h + 2*pad_h - kh)/stride_h + 1, (w + 2*pad_w - kw)/stride_w + 1). */
typedef struct {
    int cin, cout, kh, kw, stride_h, stride_w, pad_h, pad_w;
} lade_conv2d_geom;

LADE_API lade_status lade_conv2d_out_size(const lade_conv2d_geom *g, int h, int w, int *oh, int *ow);
/* Floats of scratch space that forward and backward need for n images. */
LADE_API size_t lade_conv2d_workspace_size(const lade_conv2d_geom *g, int n, int h, int w);
LADE_API lade_status lade_conv2d_forward(lade_maps out, lade_maps in, const float *weight, const float *bias,
                                         const lade_conv2d_geom *g, float *workspace);
/* din.data may be NULL (first layer); dweight/dbias may be NULL. */
LADE_API lade_status lade_conv2d_backward(lade_maps din, float *dweight, float *dbias, lade_maps dout,
                                          lade_maps in, const float *weight, const lade_conv2d_geom *g,
                                          float *workspace);
/* Mixed precision: with LADE_BF16 the 3x3 stride-1 pad-1 convolutions that
 * take the Winograd path (the CIFAR ResNets' all but the strided ones) multiply
 * bfloat16 values (the float transforms of input, weights and output gradient
 * rounded to nearest even) and sum in float; the others run in float32.
 * Needs the bfloat16 kernels (lade_bf16_check). Inputs, outputs and
 * gradients stay float32. */
typedef enum { LADE_FLOAT32 = 0, LADE_BF16 = 1 } lade_precision;
LADE_API lade_status lade_conv2d_forward_precision(lade_maps out, lade_maps in, const float *weight,
                                                   const float *bias, const lade_conv2d_geom *g, float *workspace,
                                                   lade_precision precision);
LADE_API lade_status lade_conv2d_backward_precision(lade_maps din, float *dweight, float *dbias, lade_maps dout,
                                                    lade_maps in, const float *weight, const lade_conv2d_geom *g,
                                                    float *workspace, lade_precision precision);
LADE_API lade_status lade_conv2d_forward_naive(lade_maps out, lade_maps in, const float *weight,
                                               const float *bias, const lade_conv2d_geom *g);
LADE_API lade_status lade_conv2d_backward_naive(lade_maps din, float *dweight, float *dbias, lade_maps dout,
                                                lade_maps in, const float *weight, const lade_conv2d_geom *g);

/* ---- batchnorm2d -------------------------------------------------------------
 * Training: normalise with the batch mean and the biased variance; save the
 * mean and 1/sqrt(var + eps) per channel for backward. If running_mean and
 * running_var are not NULL they move by momentum towards the batch mean and
 * the UNBIASED batch variance (PyTorch). Eval: use the running statistics. */
LADE_API lade_status lade_batchnorm2d_forward_train(lade_maps out, float *save_mean, float *save_invstd,
                                                    float *running_mean, float *running_var, lade_maps in,
                                                    const float *gamma, const float *beta, float momentum,
                                                    float eps);
/* The running-statistics update on its own, from saved batch statistics
 * (lets a training step defer it until the loss is known to be finite). */
LADE_API void lade_batchnorm2d_update_running(float *running_mean, float *running_var, const float *save_mean,
                                              const float *save_invstd, int channels, size_t count,
                                              float momentum, float eps);
LADE_API lade_status lade_batchnorm2d_forward_eval(lade_maps out, lade_maps in, const float *gamma,
                                                   const float *beta, const float *running_mean,
                                                   const float *running_var, float eps);
/* Backward of the training forward; `in` is the forward input. */
LADE_API lade_status lade_batchnorm2d_backward(lade_maps din, float *dgamma, float *dbeta, lade_maps dout,
                                               lade_maps in, const float *gamma, const float *save_mean,
                                               const float *save_invstd);

/* ---- synchronised batch norm (data-parallel training) -----------------------
 * The core never communicates; a reducer does it for the models' batch norms
 * (lade_resnet_set_bn_reducer). reduce(buf, n, ctx) must replace buf[0, n)
 * by its element-wise sum over all replicas, in place (an all-reduce with
 * SUM), and return LADE_OK, or a failed status (with lade_fail's message),
 * which fails the forward or backward. It is called on the calling thread,
 * never from the worker pool, and every replica makes the same calls in the
 * same order with the same n (the layers' order). Per batch norm of C
 * channels, in training mode:
 * - forward, two calls: n = C + 1: [sum of x per channel (C), number of
 *   values per channel], which gives the global mean; then n = C: [sum of
 *   (x - global mean)^2 per channel] (two passes, as one process computes
 *   the variance: a sum of x^2 loses a channel's variance when its mean is
 *   large against its spread). The layer normalises with the mean and biased
 *   variance of all replicas' values, and the running statistics move
 *   towards those (unbiased over the total count), the same on every replica;
 * - backward: n = 2C: [sum of dy (C), sum of dy * xhat (C)], from which the
 *   input gradient follows; gamma and beta keep this replica's share of their
 *   gradient (sum the gradient buffers over the replicas afterwards, as for
 *   every other parameter).
 * A model with the Causal Norm classifier makes one more call per training
 * forward, after the last batch norm's: n = D + 1: [sum of each of the D
 * pooled features over the batch, number of images], so that its running
 * feature mean moves by the mean of all replicas' features.
 * The sums are doubles in a buffer of 2C + 1 that lives as long as the
 * model (read it only during the call). */
typedef lade_status (*lade_reduce_fn)(double *buf, size_t n, void *ctx);

/* ---- element-wise and shape layers (flat arrays of `count` floats) --------- */
LADE_API void lade_relu_forward(float *out, const float *in, size_t count); /* out may be in */
/* din += dout * (out > 0); `out` is the forward output. */
LADE_API void lade_relu_backward(float *din, const float *dout, const float *out, size_t count);
LADE_API void lade_add_forward(float *out, const float *a, const float *b, size_t count);
/* da += dout and db += dout (either may be NULL). */
LADE_API void lade_add_backward(float *da, float *db, const float *dout, size_t count);

/* out (n, ca+cb, h, w) = [a (n, ca, h, w), b (n, cb, h, w)] along channels. */
LADE_API lade_status lade_concat_forward(lade_maps out, lade_maps a, lade_maps b);
LADE_API lade_status lade_concat_backward(lade_maps da, lade_maps db, lade_maps dout);

/* Global average pool: out (n, c) row-major. */
LADE_API lade_status lade_avgpool_forward(float *out, lade_maps in);
LADE_API lade_status lade_avgpool_backward(lade_maps din, const float *dout);

/* Max pool with PyTorch's padding semantics (padding counts as -inf); argmax
 * (same layout as out, flat index within the input plane) is saved. */
typedef struct { int k, stride, pad; } lade_pool_geom;
LADE_API lade_status lade_pool_out_size(const lade_pool_geom *g, int h, int w, int *oh, int *ow);
LADE_API lade_status lade_maxpool_forward(lade_maps out, int32_t *argmax, lade_maps in, const lade_pool_geom *g);
LADE_API lade_status lade_maxpool_backward(lade_maps din, lade_maps dout, const int32_t *argmax);

/* Option-A shortcut of CIFAR ResNets: out (n, cout, ceil(h/2), ceil(w/2)) takes
 * every second row and column of `in` (n, cin, h, w) for stride 2 (every one
 * for stride 1) and puts the cin channels in the middle of (cout - cin)/2
 * zero channels before and after. */
LADE_API lade_status lade_shortcut_a_forward(lade_maps out, lade_maps in, int stride);
LADE_API lade_status lade_shortcut_a_backward(lade_maps din, lade_maps dout, int stride);

/* Linear: out (n, fout) = in (n, fin) @ weight(fout, fin)^T + bias (fout or NULL). */
LADE_API lade_status lade_linear_forward(float *out, const float *in, const float *weight, const float *bias,
                                         int n, int fin, int fout);
LADE_API lade_status lade_linear_backward(float *din, float *dweight, float *dbias, const float *dout,
                                          const float *in, const float *weight, int n, int fin, int fout);

/* ---- Causal Norm classifier (Tang et al. 2020; spec §1.7) -------------------------
 * A multi-head cosine classifier without bias. in (n, fin) and each row of
 * weight (fout, fin) are cut into `heads` consecutive slices of fin / heads;
 * per head h the feature slice is L2-normalised and the weight slice divided
 * by (its norm + gamma):
 *   out[i][c] = tau / heads * sum_h <x_ih / ||x_ih||, w_ch / (||w_ch|| + gamma)>.
 * A divisor below 1e-12 counts as 1e-12 (PyTorch's F.normalize; the
 * reference code divides by zero and gives NaN).
 * TDE inference: with mean (fin), the running feature mean, not NULL, each
 * normalised head first loses alpha * cos(x_h, m_h) * m_h / ||m_h||.
 * mean_momentum is for the model's running mean, updated at every training
 * step as mean = mean_momentum * mean + the batch mean of the features (a
 * weighted sum, as the reference; only its direction matters). */
typedef struct {
    int heads;
    float tau, gamma, alpha, mean_momentum;
} lade_causal_norm_config;

/* LADE_OK if cfg is valid for fin features: heads >= 1 dividing fin, tau > 0,
 * gamma >= 0, alpha >= 0 (finite), mean_momentum in [0, 1]. */
LADE_API lade_status lade_causal_norm_check(const lade_causal_norm_config *cfg, int fin);
/* Floats of scratch space that forward and backward need. */
LADE_API size_t lade_causal_norm_workspace_size(int n, int fin, int fout);
/* out (n, fout); mean (fin) or NULL (no TDE: the training form). */
LADE_API lade_status lade_causal_norm_forward(float *out, const float *in, const float *weight, const float *mean,
                                              const lade_causal_norm_config *cfg, int n, int fin, int fout,
                                              float *workspace);
/* Backward of the training form (no TDE): din (n, fin) and dweight (fout, fin)
 * accumulate; either may be NULL. */
LADE_API lade_status lade_causal_norm_backward(float *din, float *dweight, const float *dout, const float *in,
                                               const float *weight, const lade_causal_norm_config *cfg, int n,
                                               int fin, int fout, float *workspace);

/* ---- ResNet models ------------------------------------------------------------------
 * LADE_RESNET32_LADE: the BBN variant used by LADE (stages 5/5/4 blocks, then
 *   cb_block and rb_block on the layer3 output concatenated to 128 channels).
 * LADE_RESNET32_CLASSIC: 5/5/5 blocks and a 64-d feature.
 *   Both ResNet-32s: 16/32/64 channels, option-A shortcuts.
 * LADE_RESNET18: torchvision's ResNet-18 layout and names (64/128/256/512
 *   channels, 2 basic blocks per stage, 1x1 conv + BN projection shortcuts
 *   "layerK.0.downsample.{0,1}" where the shape changes), 512-d feature.
 * All: global average pool, then the classifier: fc with bias (causal_norm
 *   NULL), or the Causal Norm classifier of *causal_norm ("fc.weight" without
 *   a bias) with its running feature mean the buffer "fc.feature_mean" (fin),
 *   updated with the BN running statistics (commit) at every training
 *   forward; eval-mode forwards give the TDE logits.
 * The stem is a conv + BN + ReLU: LADE_STEM_3X3 (stride 1, for 32 px),
 * LADE_STEM_3X3_STRIDE2 (halves the resolution, e.g. 64 px inputs) or
 * LADE_STEM_7X7_STRIDE2_MAXPOOL (torchvision's ImageNet stem: 7x7 stride 2
 * pad 3, then a 3x3 stride 2 pad 1 max pool; a quarter of the resolution). */
typedef enum { LADE_RESNET32_LADE = 0, LADE_RESNET32_CLASSIC = 1, LADE_RESNET18 = 2 } lade_resnet_variant;
typedef enum { LADE_STEM_3X3 = 0, LADE_STEM_3X3_STRIDE2 = 1, LADE_STEM_7X7_STRIDE2_MAXPOOL = 2 } lade_stem;
typedef enum { LADE_EVAL = 0, LADE_TRAIN = 1 } lade_mode;
typedef struct lade_resnet lade_resnet;

typedef struct {
    const char *name;   /* PyTorch state_dict key, e.g. "layer1.0.conv2.weight" */
    int is_buffer;      /* 0: parameter (in params/grads), 1: running statistic (in buffers) */
    size_t offset;      /* in floats, into params or buffers */
    int ndim;
    int dims[4];
} lade_tensor_info;

LADE_API lade_status lade_resnet_create(lade_resnet **out, lade_resnet_variant variant, lade_stem stem,
                                        int num_classes, const lade_causal_norm_config *causal_norm);
LADE_API void lade_resnet_destroy(lade_resnet *net);
LADE_API int lade_resnet_num_classes(const lade_resnet *net);
LADE_API int lade_resnet_feature_dim(const lade_resnet *net);
LADE_API size_t lade_resnet_num_params(const lade_resnet *net);
LADE_API size_t lade_resnet_num_buffers(const lade_resnet *net);
LADE_API float *lade_resnet_params(lade_resnet *net);
LADE_API float *lade_resnet_grads(lade_resnet *net);
LADE_API float *lade_resnet_buffers(lade_resnet *net);
LADE_API int lade_resnet_num_tensors(const lade_resnet *net);
LADE_API const lade_tensor_info *lade_resnet_tensor(const lade_resnet *net, int index);
/* Kaiming-normal convs (fan_in, gain sqrt 2), BN weight 1 / bias 0, running
 * mean 0 / var 1, fc uniform(+-1/sqrt(feature_dim)) for weight and bias
 * (Causal Norm: its weight, and a zero feature mean). */
LADE_API void lade_resnet_init(lade_resnet *net, lade_rng *rng);
LADE_API void lade_resnet_zero_grad(lade_resnet *net);
/* images: (n, 3, h, w) NCHW float32; logits: (n, num_classes).
 * In training mode the BN running statistics are updated unless
 * defer_running_stats is set, in which case lade_resnet_commit_running_stats
 * applies that update later (the training step does so once the loss is
 * known to be finite). */
LADE_API lade_status lade_resnet_forward(lade_resnet *net, const float *images, int n, int h, int w,
                                         lade_mode mode, int defer_running_stats, float *logits);
LADE_API lade_status lade_resnet_commit_running_stats(lade_resnet *net);
/* The precision of the training-mode convolutions, forward and backward
 * (lade_conv2d_forward_precision); LADE_FLOAT32 unless set. Parameters,
 * gradients, batch norm, the head and the loss stay float32, and eval-mode
 * forwards run in float32. LADE_BF16 fails (lade_bf16_check) without the
 * bfloat16 kernels, and so does a training step when the kernel variant has
 * changed to one without them since. */
LADE_API lade_status lade_resnet_set_precision(lade_resnet *net, lade_precision precision);
LADE_API lade_precision lade_resnet_get_precision(const lade_resnet *net);
/* The pooled feature of the last forward, (n, feature_dim). */
LADE_API const float *lade_resnet_features(const lade_resnet *net);
/* Backward of the last training forward: grads += d loss / d params.
 * dlogits is (n, num_classes); n must be the batch of that forward. */
LADE_API lade_status lade_resnet_backward(lade_resnet *net, const float *dlogits, int n);
/* Synchronised batch norm (see "synchronised batch norm" above): every later
 * training forward and backward sums its batch-norm statistics over the
 * replicas through reduce(buf, n, ctx). reduce = NULL (the default) keeps
 * per-replica statistics. Eval-mode forwards never call it. */
LADE_API void lade_resnet_set_bn_reducer(lade_resnet *net, lade_reduce_fn reduce, void *ctx);
/* Batch size of the last forward (0 before the first). */
LADE_API int lade_resnet_last_batch(const lade_resnet *net);
/* Seconds spent per layer kind since the last reset (profiling). */
typedef enum {
    LADE_PROF_CONV_FWD, LADE_PROF_CONV_BWD, LADE_PROF_BN_FWD, LADE_PROF_BN_BWD,
    LADE_PROF_ELTWISE_FWD, LADE_PROF_ELTWISE_BWD, LADE_PROF_HEAD_FWD, LADE_PROF_HEAD_BWD,
    LADE_PROF_COUNT
} lade_prof_kind;
LADE_API const char *lade_prof_name(lade_prof_kind k);
LADE_API void lade_resnet_profile(const lade_resnet *net, double seconds[LADE_PROF_COUNT]);
LADE_API void lade_resnet_profile_reset(lade_resnet *net);
/* Per convolution (0: the stem, then conv1, conv2 (and downsample.0) of each block in order):
 * its time since the last reset, and its multiply-add work per image
 * (2 flops each) at the input size of the last forward. */
typedef struct {
    const char *name; /* the weight tensor's name, e.g. "layer2.0.conv1.weight" */
    lade_conv2d_geom geom;
    int in_h, in_w;
    double forward_seconds, backward_seconds;
    double forward_flops, backward_flops; /* per image */
} lade_conv_profile;
LADE_API int lade_resnet_num_convs(const lade_resnet *net);
LADE_API lade_status lade_resnet_conv_profile(const lade_resnet *net, int index, lade_conv_profile *out);

/* ---- SGD (PyTorch semantics) and learning-rate schedules ---------------------------
 * d = g + weight_decay * p; v = momentum * v + (1 - dampening) * d (v = d on
 * the first step); d = nesterov ? d + momentum * v : v; p -= lr * d.
 * decay_mask (n floats of 0/1) or NULL for weight decay on every parameter.
 * If any gradient is not finite nothing is changed and LADE_ENONFINITE is
 * returned. */
typedef struct {
    float momentum, dampening, weight_decay;
    int nesterov;
} lade_sgd_config;
LADE_API lade_status lade_sgd_step(float *params, const float *grads, float *velocity, const float *decay_mask,
                                   size_t n, const lade_sgd_config *cfg, float lr, int first_step);

/* LADE's CIFAR recipe, stepped at the start of each epoch (1-based):
 * base * w(e) * factor^(milestones <= e), w(e) = start + (1-start)*e/warmup
 * for e < warmup, else 1. */
LADE_API lade_status lade_lr_warmup_multistep(double *lr, double base, int epoch, int warmup_epochs,
                                              double warmup_start, const int *milestones, int num_milestones,
                                              double factor);
/* CosineAnnealingLR to eta_min over total epochs: epoch e in [0, total] (past the end is an error). */
LADE_API lade_status lade_lr_cosine(double *lr, double base, int epoch, int total_epochs, double eta_min);

#ifdef __cplusplus
}
#endif
#endif
