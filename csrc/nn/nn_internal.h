/* nn_internal.h - kernels the models share with the public layer API, in the
 * variants the public API does not need (overwrite instead of accumulate). */
#ifndef LADE_NN_INTERNAL_H
#define LADE_NN_INTERNAL_H
#include "lade_nn.h"

/* Synchronised batch norm (lade_nn.h, "synchronised batch norm"): the
 * reducer and its buffer of 2 * channels + 1 doubles. NULL where a function
 * takes one: the statistics of the local batch only. */
typedef struct {
    lade_reduce_fn reduce;
    void *ctx;
    double *buf;
} lade_bn_sync;

/* Batch-norm forward (statistics not committed to running buffers) fused
 * with what follows it in a residual network, in the same pass over the
 * maps: out = bn(in) (+ residual, when residual.data is set), then ReLU when
 * relu is set. With sync the statistics are those of all replicas. *count
 * (if count is not NULL) is set to the number of values per channel the
 * statistics cover: the running-statistics update and a synchronised
 * backward need it. */
lade_status lade_bn_forward_train_ex(lade_maps out, float *save_mean, float *save_invstd, lade_maps in,
                                     const float *gamma, const float *beta, float eps, lade_maps residual, int relu,
                                     const lade_bn_sync *sync, size_t *count);
lade_status lade_bn_forward_eval_ex(lade_maps out, lade_maps in, const float *gamma, const float *beta,
                                    const float *running_mean, const float *running_var, float eps, lade_maps residual,
                                    int relu);
/* Batch-norm backward; with accumulate = 0 din is overwritten. When
 * relu_out.data is set, the batch norm was followed by a ReLU with that
 * output and dout is the gradient after it (masked here, in the same pass).
 * When pass_on.data is set, the masked dout is also written to it (added to
 * it when pass_accumulate) in the pass that reads dout: an identity
 * shortcut's gradient. With sync, count is the forward's *count (ignored
 * without). */
lade_status lade_bn_backward_ex(lade_maps din, float *dgamma, float *dbeta, lade_maps dout, lade_maps relu_out,
                                lade_maps pass_on, int pass_accumulate, lade_maps in, const float *gamma,
                                const float *save_mean, const float *save_invstd, int accumulate,
                                const lade_bn_sync *sync, size_t count);
/* din = dout * (out > 0), overwriting. */
void lade_relu_backward_set(float *din, const float *dout, const float *out, size_t count);
/* out += option-A shortcut of in (used to add the shortcut onto a block's output). */
lade_status lade_shortcut_a_accumulate(lade_maps out, lade_maps in, int stride);

/* lade_conv2d_backward, with din overwritten (din_accumulate 0) or accumulated into (1, the public form). */
lade_status lade_conv2d_backward_ex(lade_maps din, float *dweight, float *dbias, lade_maps dout, lade_maps in,
                                    const float *weight, const lade_conv2d_geom *g, float *workspace,
                                    int din_accumulate, lade_precision precision);

/* Direct stride-1 or stride-2 convolution (conv_direct.c; Winograd F(2x2, 3x3)
 * for the 3x3 stride-1 pad-1 shapes it covers): applies when the output width
 * is a multiple of 8 and cout of the variant's channel tile; workspace in
 * floats; out = or += conv(in). With LADE_BF16 (the caller has checked
 * lade_bf16_check) the Winograd path multiplies in bfloat16. */
int lade_conv_direct_applies(const lade_conv2d_geom *g, lade_maps out);
size_t lade_conv_direct_workspace(const lade_conv2d_geom *g, int n, int h, int w);
void lade_conv_direct(lade_maps out, lade_maps in, const float *weight, const float *bias, const lade_conv2d_geom *g,
                      float *workspace, int accumulate, lade_precision precision);
/* din = (accumulate 0) or += (1) the input gradient of a 3x3, stride-2, pad-1
 * convolution, without col2im: applies when dout's width is a multiple of 8
 * and cin of the variant's channel tile; workspace in floats. */
int lade_conv_direct_dgrad_s2_applies(const lade_conv2d_geom *g, lade_maps dout);
size_t lade_conv_direct_dgrad_s2_workspace(const lade_conv2d_geom *g, int n, int oh, int ow);
void lade_conv_direct_dgrad_s2(lade_maps din, lade_maps dout, const float *weight, const lade_conv2d_geom *g,
                               float *workspace, int accumulate);
/* lade_conv_direct with what follows the convolution done in its store:
 * weight row co multiplied by scale[co] (when scale is not NULL), then out
 * (+)= conv + bias (+ residual, laid out as out, when not NULL), then ReLU
 * when relu. An eval-mode batch norm folds into scale and bias. */
void lade_conv_direct_fused(lade_maps out, lade_maps in, const float *weight, const float *scale, const float *bias,
                            const lade_conv2d_geom *g, float *workspace, int accumulate, const float *residual,
                            int relu);
/* The eval-mode batch norm as y = x*scale + shift per channel (checks the running statistics). */
lade_status lade_bn_eval_fold(float *scale, float *shift, const float *gamma, const float *beta,
                              const float *running_mean, const float *running_var, float eps, int c);
/* dweight += the weight gradient of a direct stride-1 convolution (kernels of
 * up to 9 taps, output width a multiple of 8); workspace as for lade_conv_direct. */
int lade_conv_direct_dw_applies(const lade_conv2d_geom *g, lade_maps dout);
void lade_conv_direct_dw(float *dweight, lade_maps dout, lade_maps in, const lade_conv2d_geom *g, float *workspace,
                         lade_precision precision);
#endif
