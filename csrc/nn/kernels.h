/* kernels.h - the explicitly vectorised kernels, built once per instruction set.
 *
 * kernels_template.h holds their only source, written for a vector width of
 * KERNEL_FLOATS floats. kernels_generic.c (no ISA flags), kernels_avx2.c and
 * kernels_avx512.c include it under their own target, so one build carries
 * all of them; cpu.c picks a table once (CPUID, or LADE_ISA) and the callers
 * (conv_direct.c, layers.c) go through lade_kernels(). Internal to the core. */
#ifndef LADE_KERNELS_H
#define LADE_KERNELS_H
#include "lade_nn.h"

#include <stdint.h>

/* Register tile of the direct forward: a variant's direct_tile_co output
 * channels (as many as its registers hold) x DIRECT_TILE_RUNS runs of `run`
 * output pixels. The weight gradient works on DW_TILE_CO output channels with
 * up to DW_MAX_TAPS kernel taps, at most DW_MAX_KW per row. */
#define DIRECT_TILE_RUNS 3
#define DW_TILE_CO 4
#define DW_MAX_TAPS 9
#define DW_MAX_KW 3

/* A direct convolution (stride 1 or 2) over zero-padded input planes; see
 * conv_direct.c. A padded row of pw floats holds stride column phases of
 * phase_w floats each. */
typedef struct {
    lade_maps out, in;
    const float *padded, *wt, *bias; /* padded planes [ci][b][ph][pw]; wt is [co / tile][ci][ky][kx][co % tile] */
    const lade_conv2d_geom *g;
    int ph, pw, phase_w, run, tiles_co, accumulate; /* run: output pixels per vector (8 or 16) */
    /* the store: out (+)= acc + bias (+ residual, laid out as out, when not NULL), then max(., 0) if relu */
    const float *residual;
    int relu;
} lade_direct_job;

typedef struct {
    lade_maps dout;
    const float *padded;
    float *dweight;
    const lade_conv2d_geom *g;
    int ph, pw, phase_w, n, run;
} lade_dw_job;

/* The input gradient of a 3x3, stride-2, pad-1 convolution (conv_direct.c):
 * dout padded by one pixel, planes [co][b][ph][pw]; wt is the weight
 * repacked to [ci / tile][co][ky][kx][ci % tile]. */
typedef struct {
    lade_maps din;
    const float *padded, *wt;
    int cin, cout, n, oh, ow, ph, pw, run, accumulate;
} lade_dgrad_s2_job;

/* Winograd F(2x2, 3x3) for 3x3, stride-1, pad-1 convolutions (conv_direct.c):
 * padded is the input zero-padded by one pixel with each row split into its
 * even and odd columns (phase_w floats each, as for stride 2), planes
 * [ci][b][ph][pw]; ut holds the transformed weights [16][co / tile][ci][co % tile]. */
#define WINO_MAX_CIN 64 /* a block's transformed input (cin x 16 x WINO_BLOCK vectors, up to 192 KB) is on the stack */
#define WINO_BLOCK 3    /* tile vectors per block: the register tile's runs */
typedef struct {
    lade_maps out;
    const float *padded, *ut, *bias, *residual; /* residual laid out as out, or NULL */
    const uint32_t *ub; /* bfloat16 kernels: the transformed weights in pairs of input channels, [16][co / tile][ci / 2][co % tile] */
    int cin, ph, pw, phase_w, run, tiles_co, accumulate, relu;
} lade_wino_job;

/* The Winograd F(2x2, 3x3) weight gradient (conv_direct.c): the input zero-padded
 * by one pixel, channels last ([b][h + 2][w + 2][ci]), so that one vector holds
 * run input channels of a pixel. The 2x2 output tiles, numbered over the batch
 * (image, tile row, tile column), go in chunks of WINO_DW_CHUNK; task t of
 * `tasks` takes the t-th of `tasks` contiguous ranges of chunks and adds its sums over their
 * tiles of (A dY A^T)[xi][co] * (B^T d B)[xi][ci] into partial +
 * t * 16 * cout * cin, laid out [xi][co][ci]; scratch + t * scratch_floats holds
 * a chunk's transformed input [xi][tile][ci] and output gradient [xi][co][tile]. */
#define WINO_DW_CHUNK 32
typedef struct {
    lade_maps dout;
    const float *padded; /* [b][h + 2][w + 2][ci] */
    float *partial, *scratch;
    size_t scratch_floats;
    int cin, cout, tasks, run;
} lade_wino_dw_job;

/* Tile vectors per image: rows of run tiles, or (out.w == run) two half rows of the next two tile rows. */
static inline int lade_wino_per_image(lade_maps out, int run) {
    return out.w == run ? out.h / 4 : out.h / 2 * (out.w / (2 * run));
}

typedef struct {
    const char *name;
    int vector_floats;  /* widest vector the kernels use */
    int direct_tile_co; /* output channels per register tile of direct_tiles */
    /* lade_range_fn bodies over register tiles (ctx: lade_direct_job) and
     * weight-gradient tasks (ctx: lade_dw_job) */
    void (*direct_tiles)(void *ctx, size_t begin, size_t end);
    void (*dw_tasks)(void *ctx, size_t begin, size_t end);
    /* tasks (image, dout row, channel tile of dgrad_s2_tile_ci); ctx: lade_dgrad_s2_job */
    int dgrad_s2_tile_ci;
    void (*dgrad_s2_tasks)(void *ctx, size_t begin, size_t end);
    /* blocks of WINO_BLOCK tile vectors (run tiles of 2x2 output pixels side by side); ctx: lade_wino_job */
    void (*wino_blocks)(void *ctx, size_t begin, size_t end);
    /* Winograd weight-gradient tasks; ctx: lade_wino_dw_job */
    void (*wino_dw_tasks)(void *ctx, size_t begin, size_t end);
    /* The bfloat16 kernels (NULL in variants without them): wino_blocks and
     * wino_dw_tasks with the multiplications on bfloat16 values, rounded to
     * nearest even from the float transforms, and the sums in float. */
    void (*wino_blocks_bf16)(void *ctx, size_t begin, size_t end);
    void (*wino_dw_tasks_bf16)(void *ctx, size_t begin, size_t end);
    /* batch-norm plane passes */
    double (*plane_sum)(const float *x, size_t n);
    double (*plane_sq_dev)(const float *x, size_t n, float mean);
    /* The backward passes read dy masked by a ReLU that followed the batch
     * norm: dy where relu_out > 0 (or is NaN), else 0; no mask when relu_out is NULL.
     * plane_dy_sums also writes the masked dy to pass_on (adds it when
     * pass_accumulate) unless pass_on is NULL: an identity shortcut's gradient,
     * without a pass of its own over dy and relu_out. */
    void (*plane_dy_sums)(const float *dy, const float *relu_out, const float *x, size_t n, float mean,
                          double *sum_dy, double *sum_dy_xc, float *pass_on, int pass_accumulate);
    /* y = x*scale + shift (+ residual, if not NULL), then max(y, 0) if relu (NaN stays NaN) */
    void (*plane_affine)(float *y, const float *x, size_t n, float scale, float shift, const float *residual,
                         int relu);
    /* dx (+)= kdy*dy + kx*x + k0 */
    void (*plane_bn_dx)(float *dx, const float *dy, const float *relu_out, const float *x, size_t n, float kdy,
                        float kx, float k0, int accumulate);
} lade_kernel_table;

extern const lade_kernel_table lade_kernels_generic, lade_kernels_avx2, lade_kernels_avx512, lade_kernels_w16_avx2,
    lade_kernels_avx512_bf16, lade_kernels_bf16_emulated;

/* The table in use (chosen on first use when nothing chose one before). */
const lade_kernel_table *lade_kernels(void);
#endif
