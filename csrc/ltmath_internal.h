/* ltmath_internal.h - helpers shared by the long-tail math files (not public). */
#ifndef LADE_LTMATH_INTERNAL_H
#define LADE_LTMATH_INTERNAL_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lade.h"

/* exp(x) in float for loops the compiler can vectorise: x = n ln2 + r with |r| <= ln2/2,
 * e^r by its degree-7 Taylor polynomial (relative error < 2e-7), 2^n built in the exponent
 * bits. x is clamped to [-87, 88], so very negative inputs give about 1.6e-38, not 0. */
static inline float lt_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693145751953125f - k * 1.42860682030941723e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
              r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* out[c] = exp(in[c] - shift) for c < len; returns the sum (8 partial sums so it vectorises). */
static inline float lt_exp_shift_sum(float *out, const float *in, float shift, int len) {
    float part[8] = {0};
    int c = 0;
    for (; c + 8 <= len; c += 8)
        for (int j = 0; j < 8; j++) {
            out[c + j] = lt_exp(in[c + j] - shift);
            part[j] += out[c + j];
        }
    float sum = 0.0f;
    for (; c < len; c++) {
        out[c] = lt_exp(in[c] - shift);
        sum += out[c];
    }
    for (int j = 0; j < 8; j++) sum += part[j];
    return sum;
}

static inline float lt_row_max(const float *z, int len) {
    float m = z[0];
    for (int c = 1; c < len; c++) m = z[c] > m ? z[c] : m;
    return m;
}

/* Finite logits and labels in range; the detail names the first bad entry and `arg`. */
lade_status lt_check_logits(const float *logits, size_t n, int classes, const char *arg);
lade_status lt_check_labels(const int64_t *labels, size_t n, int classes, const char *arg);
#endif
