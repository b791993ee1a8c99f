/* kernels_template.h - the source of every kernel variant (see kernels.h).
 *
 * Included once per translation unit, after it has set the instruction set
 * with a target pragma and defined
 *     KERNEL_FLOATS     8 or 16: the widest vector, in floats
 *     KERNEL_NAME(x)    x with the variant's suffix (x##_avx2, ...)
 * Vectors are GCC/Clang vector extensions, so each target gets its own code
 * from this one text (16-float vectors on a target without AVX-512 become
 * pairs of 8-float operations). Output channels or images never share a
 * vector lane, and each variant sums in one fixed order, so a variant gives
 * the same bits on every CPU that can run it. */
#include "kernels.h"

#include <stdint.h>
#include <string.h>

/* KERNEL_BF16 (optional): the variant also has the bfloat16 kernels
 * (kernels.h), 1 with the AVX512-BF16 instructions, 2 emulated in portable C
 * on the same packed data (for tests on any CPU). */
#ifndef KERNEL_BF16
#define KERNEL_BF16 0
#endif
#if KERNEL_BF16 == 1
#include <immintrin.h>
#endif

/* Fuse a*b + c into FMA instructions where the target has them (ISO C mode
 * turns contraction off); the inner loops are nothing but multiply-adds. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#else
#pragma GCC optimize("fp-contract=fast")
#endif

/* Vectors wider than the target's registers are passed to helpers that are
 * always inlined, so the ABI note GCC gives about them does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float vec8 __attribute__((vector_size(32)));
typedef float vecw __attribute__((vector_size(4 * KERNEL_FLOATS)));
typedef int32_t vec8_int __attribute__((vector_size(32)));
typedef int32_t vec16_int __attribute__((vector_size(64)));

/* ---- direct convolution: runs of 8 pixels, and of 16 where the variant has them.
 * A tile's accumulators, one input vector per run and a weight take
 * TILE_CO*3 + 3 + 1 registers: 16 with AVX2's 16, 28 with AVX-512's 32. */
#define TILE_RUNS DIRECT_TILE_RUNS
#if KERNEL_FLOATS == 16
#define TILE_CO 8
#else
#define TILE_CO 4
#endif
/* The stride-2 input gradient's tile: S2_TILE_CI channels x 4 phases of
 * accumulators, 4 dout vectors and a weight: 13 registers of AVX2's 16, 21 of
 * AVX-512's 32. */
#if KERNEL_FLOATS == 16
#define S2_TILE_CI 4
#else
#define S2_TILE_CI 2
#endif
#if defined(__clang__)
#define S2_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define S2_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (RUN_MASK){__VA_ARGS__})
#endif
#define RUN 8
#define VEC vec8
#define RUN_MASK vec8_int
#define RUN_NAME(x) x##_run8
#include "kernels_conv.h"
#undef RUN
#undef VEC
#undef RUN_MASK
#undef RUN_NAME
#if KERNEL_FLOATS == 16
#define RUN 16
#define VEC vecw
#define RUN_MASK vec16_int
#define RUN_NAME(x) x##_run16
#include "kernels_conv.h"
#undef RUN
#undef VEC
#undef RUN_MASK
#undef RUN_NAME
#endif

static void KERNEL_NAME(direct_tiles)(void *ctx, size_t begin, size_t end) {
    const lade_direct_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        direct_tiles_run16(j, begin, end);
        return;
    }
#endif
    direct_tiles_run8(j, begin, end);
}

static void KERNEL_NAME(dgrad_s2_tasks)(void *ctx, size_t begin, size_t end) {
    const lade_dgrad_s2_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        dgrad_s2_tasks_run16(j, begin, end);
        return;
    }
#endif
    dgrad_s2_tasks_run8(j, begin, end);
}

static void KERNEL_NAME(wino_blocks)(void *ctx, size_t begin, size_t end) {
    const lade_wino_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        wino_blocks_run16(j, begin, end);
        return;
    }
#endif
    wino_blocks_run8(j, begin, end);
}

static void KERNEL_NAME(wino_dw_tasks)(void *ctx, size_t begin, size_t end) {
    const lade_wino_dw_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        wino_dw_tasks_run16(j, begin, end);
        return;
    }
#endif
    wino_dw_tasks_run8(j, begin, end);
}

#if KERNEL_BF16
static void KERNEL_NAME(wino_blocks_bf16)(void *ctx, size_t begin, size_t end) {
    const lade_wino_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        wino_blocks_bf16_run16(j, begin, end);
        return;
    }
#endif
    wino_blocks_bf16_run8(j, begin, end);
}

static void KERNEL_NAME(wino_dw_tasks_bf16)(void *ctx, size_t begin, size_t end) {
    const lade_wino_dw_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        wino_dw_tasks_bf16_run16(j, begin, end);
        return;
    }
#endif
    wino_dw_tasks_bf16_run8(j, begin, end);
}
#endif

static void KERNEL_NAME(dw_tasks)(void *ctx, size_t begin, size_t end) {
    const lade_dw_job *j = ctx;
#if KERNEL_FLOATS == 16
    if (j->run == 16) {
        dw_tasks_run16(j, begin, end);
        return;
    }
#endif
    dw_tasks_run8(j, begin, end);
}

/* ---- batch-norm plane passes ----------------------------------------------------
 * A single accumulator is a serial chain, so the reductions keep one vector of
 * float partial sums and add it into double once per plane; a plane holds at
 * most a few thousand values, so float partials lose nothing measurable. */
static inline vecw loadw(const float *p) {
    vecw v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void storew(float *p, vecw v) { memcpy(p, &v, sizeof v); }

static double KERNEL_NAME(plane_sum)(const float *x, size_t n) {
    vecw acc = {0};
    size_t p = 0;
    for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS) acc += loadw(x + p);
    double s = 0.0;
    for (int k = 0; k < KERNEL_FLOATS; k++) s += acc[k];
    for (; p < n; p++) s += x[p];
    return s;
}

static double KERNEL_NAME(plane_sq_dev)(const float *x, size_t n, float mean) {
    vecw acc = {0};
    size_t p = 0;
    for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS) {
        vecw d = loadw(x + p) - mean;
        acc += d * d;
    }
    double s = 0.0;
    for (int k = 0; k < KERNEL_FLOATS; k++) s += acc[k];
    for (; p < n; p++) s += ((double)x[p] - mean) * ((double)x[p] - mean);
    return s;
}

typedef int32_t vecw_int __attribute__((vector_size(4 * KERNEL_FLOATS)));

/* max(v, 0) that keeps NaN: lanes below zero are cleared, NaN compares false */
static inline vecw relu_w(vecw v) { return (vecw)((vecw_int)v & ~(vecw_int)(v < 0.0f)); }

static inline float relu_1(float v) { return v < 0.0f ? 0.0f : v; }

static void KERNEL_NAME(plane_affine)(float *y, const float *x, size_t n, float scale, float shift,
                                      const float *residual, int relu) {
    size_t p = 0;
    if (residual && relu) {
        for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS)
            storew(y + p, relu_w(loadw(x + p) * scale + shift + loadw(residual + p)));
        for (; p < n; p++) y[p] = relu_1(x[p] * scale + shift + residual[p]);
    } else if (relu) {
        for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS) storew(y + p, relu_w(loadw(x + p) * scale + shift));
        for (; p < n; p++) y[p] = relu_1(x[p] * scale + shift);
    } else if (residual) {
        for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS)
            storew(y + p, loadw(x + p) * scale + shift + loadw(residual + p));
        for (; p < n; p++) y[p] = x[p] * scale + shift + residual[p];
    } else {
        for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS) storew(y + p, loadw(x + p) * scale + shift);
        for (; p < n; p++) y[p] = x[p] * scale + shift;
    }
}

/* dy through the ReLU that followed: cleared where relu_out <= 0 (as the
 * ReLU's own backward does, so a NaN output passes the gradient on) */
static inline vecw dy_w(const float *dy, const float *relu_out, size_t p) {
    vecw d = loadw(dy + p);
    if (!relu_out) return d;
    return (vecw)((vecw_int)d & ~(vecw_int)(loadw(relu_out + p) <= 0.0f));
}

static inline float dy_1(const float *dy, const float *relu_out, size_t p) {
    return relu_out && relu_out[p] <= 0.0f ? 0.0f : dy[p];
}

static void KERNEL_NAME(plane_dy_sums)(const float *dy, const float *relu_out, const float *x, size_t n, float mean,
                                       double *sum_dy, double *sum_dy_xc, float *pass_on, int pass_accumulate) {
    vecw a = {0}, b = {0};
    size_t p = 0;
    for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS) {
        vecw d = dy_w(dy, relu_out, p);
        a += d;
        b += d * (loadw(x + p) - mean);
        if (pass_on) storew(pass_on + p, pass_accumulate ? loadw(pass_on + p) + d : d);
    }
    double s = 0.0, t = 0.0;
    for (int k = 0; k < KERNEL_FLOATS; k++) {
        s += a[k];
        t += b[k];
    }
    for (; p < n; p++) {
        float d = dy_1(dy, relu_out, p);
        s += d;
        t += (double)d * ((double)x[p] - mean);
        if (pass_on) pass_on[p] = pass_accumulate ? pass_on[p] + d : d;
    }
    *sum_dy += s;
    *sum_dy_xc += t;
}

static void KERNEL_NAME(plane_bn_dx)(float *dx, const float *dy, const float *relu_out, const float *x, size_t n,
                                     float kdy, float kx, float k0, int accumulate) {
    size_t p = 0;
    if (accumulate) {
        for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS)
            storew(dx + p, loadw(dx + p) + (dy_w(dy, relu_out, p) * kdy + loadw(x + p) * kx + k0));
        for (; p < n; p++) dx[p] += kdy * dy_1(dy, relu_out, p) + kx * x[p] + k0;
    } else {
        for (; p + KERNEL_FLOATS <= n; p += KERNEL_FLOATS)
            storew(dx + p, dy_w(dy, relu_out, p) * kdy + loadw(x + p) * kx + k0);
        for (; p < n; p++) dx[p] = kdy * dy_1(dy, relu_out, p) + kx * x[p] + k0;
    }
}

const lade_kernel_table KERNEL_NAME(lade_kernels) = {
    .name = KERNEL_VARIANT,
    .vector_floats = KERNEL_FLOATS,
    .direct_tile_co = TILE_CO,
    .direct_tiles = KERNEL_NAME(direct_tiles),
    .dw_tasks = KERNEL_NAME(dw_tasks),
    .dgrad_s2_tile_ci = S2_TILE_CI,
    .dgrad_s2_tasks = KERNEL_NAME(dgrad_s2_tasks),
    .wino_blocks = KERNEL_NAME(wino_blocks),
    .wino_dw_tasks = KERNEL_NAME(wino_dw_tasks),
#if KERNEL_BF16
    .wino_blocks_bf16 = KERNEL_NAME(wino_blocks_bf16),
    .wino_dw_tasks_bf16 = KERNEL_NAME(wino_dw_tasks_bf16),
#endif
    .plane_sum = KERNEL_NAME(plane_sum),
    .plane_sq_dev = KERNEL_NAME(plane_sq_dev),
    .plane_dy_sums = KERNEL_NAME(plane_dy_sums),
    .plane_affine = KERNEL_NAME(plane_affine),
    .plane_bn_dx = KERNEL_NAME(plane_bn_dx),
};
