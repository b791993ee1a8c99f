/* ltmath_internal.h - helpers shared by the long-tail math files (not public). */
#ifndef LADE_LTMATH_INTERNAL_H
#define LADE_LTMATH_INTERNAL_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lade_ltmath.h"

/* exp(x) in float for loops the compiler can vectorise: x = n ln2 + r with |r| <= ln2/2,
 * e^r by its degree-7 Taylor polynomial (relative error < 2e-7), 2^n built in the exponent
 * bits. x is clamped to [-87, 88], so very negative inputs give about 1.6e-38, not 0. */
static inline float lt_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick (vectorises, unlike a floorf call) */
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - k * 0.693145751953125f - k * 1.42860682030941723e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
              r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Sum and max with 16 independent lanes, so the compiler can vectorise them without
 * reassociating floating point on its own (no -ffast-math). */
static inline float lt_sum(const float *x, int len) {
    float part[16] = {0};
    int c = 0;
    for (; c + 16 <= len; c += 16)
        for (int j = 0; j < 16; j++) part[j] += x[c + j];
    float sum = 0.0f;
    for (; c < len; c++) sum += x[c];
    for (int j = 0; j < 16; j++) sum += part[j];
    return sum;
}

static inline float lt_row_max(const float *z, int len) {
    float part[16];
    for (int j = 0; j < 16; j++) part[j] = z[0];
    int c = 0;
    for (; c + 16 <= len; c += 16)
        for (int j = 0; j < 16; j++) part[j] = z[c + j] > part[j] ? z[c + j] : part[j];
    float m = z[0];
    for (; c < len; c++) m = z[c] > m ? z[c] : m;
    for (int j = 0; j < 16; j++) m = part[j] > m ? part[j] : m;
    return m;
}

/* out[c] = exp(in[c] - shift) for c < len (out may equal in); returns the sum. */
static inline float lt_exp_shift_sum(float *out, const float *in, float shift, int len) {
    for (int c = 0; c < len; c++) out[c] = lt_exp(in[c] - shift);
    return lt_sum(out, len);
}

#endif
