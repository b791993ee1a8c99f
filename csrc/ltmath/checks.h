/* checks.h - argument checks shared by the long-tail math files (not public; lade_check_prior is
 * declared in lade_ltmath.h). */
#ifndef LADE_LTMATH_CHECKS_H
#define LADE_LTMATH_CHECKS_H
#include <stddef.h>
#include <stdint.h>

#include "lade_ltmath.h"

/* Finite logits and labels in range; the detail names the first bad entry and `arg`. */
lade_status lt_check_logits(const float *logits, size_t n, int classes, const char *arg);
lade_status lt_check_labels(const int64_t *labels, size_t n, int classes, const char *arg);
/* A finite scalar >= 0, such as a loss weight; the detail names `arg`. */
lade_status lt_check_nonnegative(double value, const char *arg);
/* lt_check_logits, and every value in [0, 1]. */
lade_status lt_check_probs(const float *probs, size_t n, int classes, const char *arg);
/* A 0/1 indicator matrix (n, labels) with n, labels >= 1 (multi-label targets). */
lade_status lt_check_indicators(const uint8_t *targets, size_t n, int labels, const char *arg);
#endif
