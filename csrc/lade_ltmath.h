/* lade_ltmath.h - long-tail losses, post-hoc adjustment, priors, samplers,
 * metrics and target-prior estimation. */
#ifndef LADE_LTMATH_H
#define LADE_LTMATH_H
#include "lade_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Losses: each takes logits (n, classes) row-major and int64 labels, returns
 * the mean loss in *loss and ADDS scale * dloss/dlogits into dlogits (NULL for
 * the value only). */

/* ---- softmax cross-entropy -------------------------------------------------------
 * loss = mean_i [LSE_c z[i,c] - z[i,y_i]]; dlogits += scale * dloss/dz.
 * Labels outside [0, classes) give LADE_ERANGE; a non-finite logit gives
 * LADE_ENONFINITE. dlogits may be NULL for the value only. */
LADE_API lade_status lade_softmax_ce(double *loss, float *dlogits, float scale, const float *logits,
                                     const int64_t *labels, int n, int classes);

#ifdef __cplusplus
}
#endif
#endif
