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

/* 16-float vectors (GCC/Clang vector extensions) for the loops over logits. Each lane does
 * what the scalar code does to one value, so a loop gives the same bits on every instruction
 * set (a target without 16-float registers splits each operation into narrower ones). */
typedef float lt_vec __attribute__((vector_size(64)));
typedef int32_t lt_vec_int __attribute__((vector_size(64)));
#define LT_LANES 16

/* The helpers taking or returning vectors are always inlined, so no call passes one and GCC's
 * note on the ABI of 64-byte vectors (for targets without AVX-512) does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
static inline __attribute__((always_inline)) lt_vec lt_load(const float *p) {
    lt_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void lt_store(float *p, lt_vec v) { memcpy(p, &v, sizeof v); }

/* lane by lane: mask ? a : b (mask lanes all ones or zero, as comparisons give) */
static inline __attribute__((always_inline)) lt_vec lt_select(lt_vec_int mask, lt_vec a, lt_vec b) {
    return (lt_vec)((mask & (lt_vec_int)a) | (~mask & (lt_vec_int)b));
}

/* lt_exp of every lane, by the same operations */
static inline __attribute__((always_inline)) lt_vec lt_exp_vec(lt_vec x) {
    const lt_vec lo = (lt_vec){0} - 87.0f, hi = (lt_vec){0} + 88.0f;
    x = lt_select(x < lo, lo, x);
    x = lt_select(x > hi, hi, x);
    lt_vec k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    lt_vec r = x - k * 0.693145751953125f - k * 1.42860682030941723e-6f;
    lt_vec p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
               r * (1.0f / 720 + r * (1.0f / 5040)))))));
    lt_vec_int bits = (__builtin_convertvector(k, lt_vec_int) + 127) << 23;
    return p * (lt_vec)bits;
}

/* Sum and max with 16 independent lanes (fixed, so the order of the additions is too); the
 * values past the last full vector are taken first, then the lanes in order. */
static inline __attribute__((always_inline)) float lt_sum(const float *x, int len) {
    lt_vec part = {0};
    int c = 0;
    for (; c + LT_LANES <= len; c += LT_LANES) part += lt_load(x + c);
    float sum = 0.0f;
    for (; c < len; c++) sum += x[c];
    for (int j = 0; j < LT_LANES; j++) sum += part[j];
    return sum;
}

static inline __attribute__((always_inline)) float lt_row_max(const float *z, int len) {
    lt_vec part;
    for (int j = 0; j < LT_LANES; j++) part[j] = z[0];
    int c = 0;
    for (; c + LT_LANES <= len; c += LT_LANES) {
        lt_vec v = lt_load(z + c);
        part = lt_select(v > part, v, part);
    }
    float m = z[0];
    for (; c < len; c++) m = z[c] > m ? z[c] : m;
    for (int j = 0; j < LT_LANES; j++) m = part[j] > m ? part[j] : m;
    return m;
}

/* out[c] = exp(in[c] - shift) for c < len (out may equal in); returns their sum, as lt_sum. */
static inline __attribute__((always_inline)) float lt_exp_shift_sum(float *out, const float *in, float shift, int len) {
    lt_vec part = {0};
    int c = 0;
    for (; c + LT_LANES <= len; c += LT_LANES) {
        lt_vec e = lt_exp_vec(lt_load(in + c) - shift);
        lt_store(out + c, e);
        part += e;
    }
    float sum = 0.0f;
    for (; c < len; c++) {
        out[c] = lt_exp(in[c] - shift);
        sum += out[c];
    }
    for (int j = 0; j < LT_LANES; j++) sum += part[j];
    return sum;
}

#endif
