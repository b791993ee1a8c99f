/* nn_internal.h - kernels the models share with the public layer API, in the
 * variants the public API does not need (overwrite instead of accumulate). */
#ifndef LADE_NN_INTERNAL_H
#define LADE_NN_INTERNAL_H
#include "lade_nn.h"

/* Batch-norm backward; with accumulate = 0 din is overwritten. */
lade_status lade_bn_backward_ex(lade_maps din, float *dgamma, float *dbeta, lade_maps dout, lade_maps in,
                                const float *gamma, const float *save_mean, const float *save_invstd,
                                int accumulate);
/* din = dout * (out > 0), overwriting. */
void lade_relu_backward_set(float *din, const float *dout, const float *out, size_t count);
/* out += option-A shortcut of in (used to add the shortcut onto a block's output). */
lade_status lade_shortcut_a_accumulate(lade_maps out, lade_maps in, int stride);
#endif
