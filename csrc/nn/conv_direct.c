/* conv_direct.c - direct convolution without im2col.
 *
 * For the 3x3 convolutions that dominate a CIFAR ResNet, unfolding the input
 * into a 9x larger column matrix (and having the BLAS pack it once more) costs
 * more than the multiply-adds. Here the input is copied once into zero-padded
 * planes, and a register tile of output channels x runs of output pixels
 * accumulates over (input channel, ky, kx) with vector FMAs. Work is split
 * over (pixel tile, channel tile) on lade's pool; no BLAS is involved. The
 * tiles themselves are in kernels_conv.h, built per instruction set; this file
 * prepares the data and picks the run width.
 *
 * Strided convolutions: each padded row is stored split by column phase (for
 * stride 2: the even columns, then the odd ones), so that the input pixels
 * under a run of output pixels are again adjacent and one vector load reads
 * them; tap (ky, kx) starts at row ky, column (kx % stride) * phase_w + kx / stride.
 *
 * 3x3 stride-1 pad-1 convolutions take Winograd F(2x2, 3x3) instead where the
 * output shape allows (below), on the same split rows. */
#include "nn_internal.h"
#include "kernels.h"

#include <stdint.h>
#include <string.h>

/* Output pixels per vector: 16 where the variant has 16-float vectors and the
 * rows allow it, else 8. */
static int forward_run(const lade_kernel_table *k, lade_maps out) {
    return k->vector_floats == 16 && out.w % 16 == 0 ? 16 : 8;
}

/* Stride 1 or 2 (the same in both directions). */
static int stride_applies(const lade_conv2d_geom *g) {
    return g->stride_h == g->stride_w && (g->stride_h == 1 || g->stride_h == 2);
}

int lade_conv_direct_applies(const lade_conv2d_geom *g, lade_maps out) {
    return stride_applies(g) && g->cout % lade_kernels()->direct_tile_co == 0 && out.w % 8 == 0;
}

/* The padded planes: rows of stride * phase_w floats (phase_w columns per phase). */
static int phase_width(const lade_conv2d_geom *g, int w) { return (w + 2 * g->pad_w + g->stride_w - 1) / g->stride_w; }

static int is_3x3_stride1_pad1(const lade_conv2d_geom *g) {
    return g->kh == 3 && g->kw == 3 && g->stride_h == 1 && g->stride_w == 1 && g->pad_h == 1 && g->pad_w == 1;
}

/* 3x3, stride 1, pad 1, at most WINO_MAX_CIN input channels: the geometries Winograd may take (below) */
static int wino_geometry(const lade_conv2d_geom *g) { return is_3x3_stride1_pad1(g) && g->cin <= WINO_MAX_CIN; }

/* Input channels from which the Winograd weight gradient (below) beats the direct one (one
 * thread, batch 128, CPU time). With 8-float vectors, from 32: at 16 the copy to channels last
 * and the transforms cost more than the multiply-adds saved (Zen 3: 16->16 32x32 12.6-16 ms
 * against 11.5-12.4 direct), from 32 it wins (32->32 16x16 8.6-9.3 against 10.1-13.1, 64->64
 * 8x8 6.2-8.2 against 11.8-17.9). With 16-float vectors already from 16, where one vector holds
 * all of a pixel's channels (Zen 5: 16->16 32x32 4.75 against 7.1 direct). */
#define WINO_DW_MIN_CIN_8_FLOATS 32
#define WINO_DW_MIN_CIN_16_FLOATS 16
static int wino_dw_min_cin(const lade_kernel_table *k) {
    return k->vector_floats == 16 ? WINO_DW_MIN_CIN_16_FLOATS : WINO_DW_MIN_CIN_8_FLOATS;
}

/* The 3x3 stride-1 pad-1 convolutions with whole 8-float vectors of input channels that the
 * Winograd weight gradient may take under some variant. The workspace is sized for all of them,
 * whatever the variant in use, because lade.set_isa can switch the variant after it was allocated. */
static int wino_dw_geometry(const lade_conv2d_geom *g) {
    const int lowest = WINO_DW_MIN_CIN_16_FLOATS < WINO_DW_MIN_CIN_8_FLOATS ? WINO_DW_MIN_CIN_16_FLOATS
                                                                             : WINO_DW_MIN_CIN_8_FLOATS;
    return is_3x3_stride1_pad1(g) && g->cin % 8 == 0 && g->cin >= lowest && g->cout % DW_TILE_CO == 0;
}

static size_t wino_dw_workspace(const lade_conv2d_geom *g, int n, int h, int w);

size_t lade_conv_direct_workspace(const lade_conv2d_geom *g, int n, int h, int w) {
    size_t direct = (size_t)g->cin * n * (h + 2 * g->pad_h) * g->stride_w * phase_width(g, w) +
                    (size_t)g->cin * g->cout * g->kh * g->kw;
    if (wino_dw_geometry(g)) {
        size_t dw = wino_dw_workspace(g, n, h, w);
        direct = dw > direct ? dw : direct;
    }
    if (!wino_geometry(g)) return direct;
    /* Winograd: rows split into two phases (one float wider for even w), 16 weights per pair */
    size_t wino = (size_t)g->cin * n * (h + 2) * 2 * ((w + 3) / 2) + (size_t)16 * g->cin * g->cout;
    return wino > direct ? wino : direct;
}

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------------------
 * For 3x3, stride-1, pad-1 convolutions whose output has an even height and
 * rows of whole tile vectors (2 * run pixels), or 8-pixel rows and a height
 * that is a multiple of 4 (two tile rows per vector): about 2.25x fewer multiply-adds
 * than the direct tile, the rest being additions. The transforms are the
 * standard ones (Lavin and Gray 2016): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0;
 * 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], A^T = [1 1 1 0;
 * 0 1 -1 -1]; all but G's halves are exact in float. The kernels are in
 * kernels_conv.h. */
static int pad_input(lade_maps in, const lade_conv2d_geom *g, float *padded);

static int wino_run(const lade_kernel_table *k, lade_maps out) {
    return k->vector_floats == 16 && out.w % 32 == 0 ? 16 : 8;
}

static int wino_applies(const lade_kernel_table *k, const lade_conv2d_geom *g, lade_maps out) {
    return wino_geometry(g) && g->cout % k->direct_tile_co == 0 &&
           ((out.w % 16 == 0 && out.h % 2 == 0) || (out.w == 8 && out.h % 4 == 0));
}

/* u = G w G^T for the 3x3 kernel w, times f */
static void wino_weight(float u[16], const float *w, float f) {
    float gw[4][3];
    for (int c = 0; c < 3; c++) { /* G w */
        gw[0][c] = w[c];
        gw[1][c] = 0.5f * (w[c] + w[3 + c] + w[6 + c]);
        gw[2][c] = 0.5f * (w[c] - w[3 + c] + w[6 + c]);
        gw[3][c] = w[6 + c];
    }
    for (int r = 0; r < 4; r++) { /* (G w) G^T */
        u[4 * r] = f * gw[r][0];
        u[4 * r + 1] = f * (0.5f * (gw[r][0] + gw[r][1] + gw[r][2]));
        u[4 * r + 2] = f * (0.5f * (gw[r][0] - gw[r][1] + gw[r][2]));
        u[4 * r + 3] = f * gw[r][2];
    }
}

/* ut[xi][co / T][ci][co % T] = (G w G^T)[xi] for weight row co scaled by scale[co] */
static void wino_weights(float *ut, const float *weight, const float *scale, int cin, int cout, int T) {
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            float u[16];
            wino_weight(u, weight + ((size_t)co * cin + ci) * 9, scale ? scale[co] : 1.0f);
            for (int xi = 0; xi < 16; xi++) ut[(((size_t)xi * (cout / T) + co / T) * cin + ci) * T + co % T] = u[xi];
        }
}

/* x rounded to bfloat16, to nearest even (a NaN stays NaN), as the kernels round */
static uint16_t bf16_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if (x != x) return (uint16_t)((bits | 0x400000u) >> 16);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* The bfloat16 kernels' weights: ub[xi][co / T][ci / 2][co % T] holds (G w G^T)[xi] of input
 * channels ci (low 16 bits) and ci + 1 (high; 0 past an odd last channel), rounded to bfloat16. */
static void wino_weights_bf16(uint32_t *ub, const float *weight, int cin, int cout, int T) {
    const int pairs = (cin + 1) / 2;
    for (int co = 0; co < cout; co++)
        for (int cp = 0; cp < pairs; cp++) {
            float u0[16], u1[16] = {0};
            wino_weight(u0, weight + ((size_t)co * cin + 2 * cp) * 9, 1.0f);
            if (2 * cp + 1 < cin) wino_weight(u1, weight + ((size_t)co * cin + 2 * cp + 1) * 9, 1.0f);
            for (int xi = 0; xi < 16; xi++)
                ub[(((size_t)xi * (cout / T) + co / T) * pairs + cp) * T + co % T] =
                    (uint32_t)bf16_bits(u0[xi]) | (uint32_t)bf16_bits(u1[xi]) << 16;
        }
}

/* scale: not with LADE_BF16 (the eval-mode fold runs in float32) */
static void conv_wino(lade_maps out, lade_maps in, const float *weight, const float *scale, const float *bias,
                      const lade_conv2d_geom *g, float *workspace, int accumulate, const float *residual, int relu,
                      lade_precision precision) {
    const lade_kernel_table *k = lade_kernels();
    const lade_conv2d_geom split = {g->cin, g->cout, 3, 3, 2, 2, 1, 1}; /* pads by one, splits the columns */
    const int phase_w = phase_width(&split, in.w), PW = pad_input(in, &split, workspace);
    float *ut = workspace + (size_t)g->cin * in.n * (in.h + 2) * PW;
    const int bf16 = precision == LADE_BF16;
    /* the packed pairs, 16 * cout * ceil(cin / 2) words, take the place of the float weights */
    if (bf16) wino_weights_bf16((uint32_t *)(void *)ut, weight, g->cin, g->cout, k->direct_tile_co);
    else wino_weights(ut, weight, scale, g->cin, g->cout, k->direct_tile_co);
    const int run = wino_run(k, out);
    lade_wino_job job = {.out = out, .padded = workspace, .ut = bf16 ? NULL : ut,
                         .ub = bf16 ? (const uint32_t *)(const void *)ut : NULL, .bias = bias, .residual = residual,
                         .cin = g->cin, .ph = in.h + 2, .pw = PW, .phase_w = phase_w, .run = run,
                         .tiles_co = g->cout / k->direct_tile_co, .accumulate = accumulate, .relu = relu};
    size_t tile_vectors = (size_t)out.n * lade_wino_per_image(out, run);
    lade_parallel_for((tile_vectors + WINO_BLOCK - 1) / WINO_BLOCK, bf16 ? k->wino_blocks_bf16 : k->wino_blocks,
                      &job);
}

/* 8 floats, for the stride-2 column split (pairs of SSE registers at the baseline ISA); 4 floats, for the
 * channels-last copy */
typedef float vec8 __attribute__((vector_size(32)));
typedef int vec8_index __attribute__((vector_size(32)));
typedef float vec4 __attribute__((vector_size(16)));
typedef int vec4_index __attribute__((vector_size(16)));
#if defined(__clang__)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define SHUFFLE4(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (vec8_index){__VA_ARGS__})
#define SHUFFLE4(a, b, ...) __builtin_shuffle(a, b, (vec4_index){__VA_ARGS__})
#endif

typedef struct {
    lade_maps in;
    float *padded;
    int ph, pw, pad_h, pad_w, stride, phase_w;
} pad_job;

static void pad_planes(void *ctx, size_t begin, size_t end) {
    const pad_job *j = ctx;
    const int H = j->in.h, W = j->in.w, PH = j->ph, PW = j->pw, py = j->pad_h, px = j->pad_w;
    for (size_t t = begin; t < end; t++) {
        int ci = (int)(t / j->in.n), b = (int)(t % j->in.n);
        float *dst = j->padded + t * (size_t)PH * PW;
        const float *src = j->in.data + (size_t)b * j->in.stride_n + (size_t)ci * j->in.stride_c;
        memset(dst, 0, sizeof(float) * PW * py);
        for (int y = 0; y < H; y++) {
            float *row = dst + (size_t)(y + py) * PW;
            const float *in_row = src + (size_t)y * W;
            if (j->stride == 1) {
                memset(row, 0, sizeof(float) * px);
                memcpy(row + px, in_row, sizeof(float) * W);
                memset(row + px + W, 0, sizeof(float) * (PW - px - W));
            } else { /* stride 2: column x + px to phase (x + px) % 2, place (x + px) / 2 */
                memset(row, 0, sizeof(float) * PW);
                float *to_even = row + (px & 1) * j->phase_w + (px >> 1);      /* x even */
                float *to_odd = row + (~px & 1) * j->phase_w + ((px + 1) >> 1); /* x odd */
                int x = 0;
                for (; x + 16 <= W; x += 16) {
                    vec8 lo, hi;
                    memcpy(&lo, in_row + x, sizeof lo);
                    memcpy(&hi, in_row + x + 8, sizeof hi);
                    vec8 even = SHUFFLE8(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
                    vec8 odd = SHUFFLE8(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
                    memcpy(to_even + x / 2, &even, sizeof even);
                    memcpy(to_odd + x / 2, &odd, sizeof odd);
                }
                for (; x < W; x++) (x & 1 ? to_odd : to_even)[x / 2] = in_row[x];
            }
        }
        memset(dst + (size_t)(H + py) * PW, 0, sizeof(float) * PW * (PH - H - py));
    }
}

/* Fills the padded planes; returns the width of a padded row. */
static int pad_input(lade_maps in, const lade_conv2d_geom *g, float *padded) {
    const int phase_w = phase_width(g, in.w), pw = g->stride_w * phase_w;
    pad_job job = {in, padded, in.h + 2 * g->pad_h, pw, g->pad_h, g->pad_w, g->stride_w, phase_w};
    lade_parallel_for((size_t)g->cin * in.n, pad_planes, &job);
    return pw;
}

/* weight (cout, cin, kh, kw) is repacked to [co / T][ci][ky][kx][co % T], T
 * output channels per tile, so that a tile reads its weights in one sequential
 * stream (cin*kh*kw*T floats) rather than a few floats from each of cin*kh*kw
 * cache lines. */
static void conv_direct(lade_maps out, lade_maps in, const float *weight, const float *scale, const float *bias,
                        const lade_conv2d_geom *g, float *workspace, int accumulate, const float *residual, int relu,
                        lade_precision precision) {
    const lade_kernel_table *k = lade_kernels();
    if (wino_applies(k, g, out)) {
        conv_wino(out, in, weight, scale, bias, g, workspace, accumulate, residual, relu, precision);
        return;
    }
    const int PH = in.h + 2 * g->pad_h, PW = g->stride_w * phase_width(g, in.w), kk = g->kh * g->kw;
    float *padded = workspace, *wt = workspace + (size_t)g->cin * in.n * PH * PW;
    const int T = k->direct_tile_co;
    for (int co = 0; co < g->cout; co++)
        for (int ci = 0; ci < g->cin; ci++)
            for (int t = 0; t < kk; t++)
                wt[(((size_t)(co / T) * g->cin + ci) * kk + t) * T + co % T] =
                    scale ? weight[((size_t)co * g->cin + ci) * kk + t] * scale[co]
                          : weight[((size_t)co * g->cin + ci) * kk + t];
    pad_input(in, g, padded);
    const int run = forward_run(k, out);
    lade_direct_job job = {.out = out, .in = in, .padded = padded, .wt = wt, .bias = bias, .g = g, .ph = PH, .pw = PW,
                           .phase_w = phase_width(g, in.w), .run = run, .tiles_co = g->cout / k->direct_tile_co, .accumulate = accumulate,
                           .residual = residual, .relu = relu};
    size_t runs = (size_t)out.n * out.h * (out.w / run), tiles_px = (runs + DIRECT_TILE_RUNS - 1) / DIRECT_TILE_RUNS;
    lade_parallel_for(tiles_px * job.tiles_co, k->direct_tiles, &job);
}

void lade_conv_direct(lade_maps out, lade_maps in, const float *weight, const float *bias, const lade_conv2d_geom *g,
                      float *workspace, int accumulate, lade_precision precision) {
    conv_direct(out, in, weight, NULL, bias, g, workspace, accumulate, NULL, 0, precision);
}

void lade_conv_direct_fused(lade_maps out, lade_maps in, const float *weight, const float *scale, const float *bias,
                            const lade_conv2d_geom *g, float *workspace, int accumulate, const float *residual,
                            int relu) {
    conv_direct(out, in, weight, scale, bias, g, workspace, accumulate, residual, relu, LADE_FLOAT32);
}

/* ---- input gradient of a 3x3, stride-2, pad-1 convolution ------------------------
 * din[ci][2m+py][2n+px] = sum over co and taps of dout[co][m+dy][n+dx] *
 * w[co][ci][ky][kx], dy, dx in {0, 1}: each of the four pixel phases (py, px)
 * of din is a stride-1 correlation of dout with (1+py) x (1+px) of the taps
 * (tap d of phase p is kernel index 1 when p = 0, else 2 - 2d). The 9 taps
 * split into 1 + 2 + 2 + 4, so no multiply-add is wasted and there is no
 * column matrix; a register tile computes the four phases together and
 * interleaves them on the store (kernels_conv.h). */
int lade_conv_direct_dgrad_s2_applies(const lade_conv2d_geom *g, lade_maps dout) {
    return g->kh == 3 && g->kw == 3 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 1 && g->pad_w == 1 &&
           g->cin % lade_kernels()->dgrad_s2_tile_ci == 0 && dout.w % 8 == 0;
}

size_t lade_conv_direct_dgrad_s2_workspace(const lade_conv2d_geom *g, int n, int oh, int ow) {
    if (g->kh != 3 || g->kw != 3 || g->stride_h != 2 || g->stride_w != 2 || g->pad_h != 1 || g->pad_w != 1) return 0;
    return (size_t)g->cout * n * (oh + 2) * (ow + 2) + (size_t)g->cin * g->cout * 9;
}

void lade_conv_direct_dgrad_s2(lade_maps din, lade_maps dout, const float *weight, const lade_conv2d_geom *g,
                               float *workspace, int accumulate) {
    const lade_kernel_table *k = lade_kernels();
    const int n = dout.n, oh = dout.h, ow = dout.w, T = k->dgrad_s2_tile_ci;
    /* dout padded by one pixel (only the bottom row and right column are read) */
    const lade_conv2d_geom pad_geom = {g->cout, g->cin, 3, 3, 1, 1, 1, 1};
    float *padded = workspace, *wt = padded + (size_t)g->cout * n * (oh + 2) * (ow + 2);
    const int PW = pad_input(dout, &pad_geom, padded);
    for (int co = 0; co < g->cout; co++)
        for (int ci = 0; ci < g->cin; ci++)
            for (int t = 0; t < 9; t++)
                wt[(((size_t)(ci / T) * g->cout + co) * 9 + t) * T + ci % T] = weight[((size_t)co * g->cin + ci) * 9 + t];
    lade_dgrad_s2_job job = {.din = din, .padded = padded, .wt = wt, .cin = g->cin, .cout = g->cout, .n = n,
                             .oh = oh, .ow = ow, .ph = oh + 2, .pw = PW,
                             .run = k->vector_floats == 16 && ow % 16 == 0 ? 16 : 8, .accumulate = accumulate};
    lade_parallel_for((size_t)(g->cin / T) * n * oh, k->dgrad_s2_tasks, &job);
}

/* ---- Winograd F(2x2, 3x3) weight gradient ------------------------------------------
 * For 3x3, stride-1, pad-1 convolutions with an even output height and width
 * and enough input channels in whole 8-float vectors (wino_dw_min_cin): dW = G^T (sum over 2x2 output
 * tiles of (A dY A^T) * (B^T d B)) G, 16 multiply-adds per tile and channel
 * pair instead of 36. A fixed number of tasks (WINO_DW_TASKS, or one per chunk
 * of tiles when there are fewer) each sum their share of the chunks in float;
 * the tasks' sums are added in task order in double, so the result does not
 * depend on the thread count. */
#define WINO_DW_TASKS 16

static int wino_dw_applies(const lade_conv2d_geom *g, lade_maps dout) {
    return wino_dw_geometry(g) && g->cin >= wino_dw_min_cin(lade_kernels()) && dout.h % 2 == 0 && dout.w % 2 == 0;
}

static size_t wino_dw_tasks(lade_maps dout) {
    size_t chunks = ((size_t)dout.n * (dout.h / 2) * (dout.w / 2) + WINO_DW_CHUNK - 1) / WINO_DW_CHUNK;
    return chunks < WINO_DW_TASKS ? chunks : WINO_DW_TASKS;
}

/* floats of a task's chunk buffers: transformed input and output gradient */
static size_t wino_dw_scratch(const lade_conv2d_geom *g) { return (size_t)16 * WINO_DW_CHUNK * (g->cin + g->cout); }

/* the padded input (later the double sums, 32 * cout * cin floats), then per task a chunk's buffers and
 * its partial sums */
static size_t wino_dw_padded(const lade_conv2d_geom *g, int n, int h, int w) {
    size_t padded = (size_t)n * (h + 2) * (w + 2) * g->cin, sums = (size_t)32 * g->cout * g->cin;
    return padded > sums ? padded : sums;
}

static size_t wino_dw_workspace(const lade_conv2d_geom *g, int n, int h, int w) {
    return wino_dw_padded(g, n, h, w) + (size_t)WINO_DW_TASKS * (wino_dw_scratch(g) + (size_t)16 * g->cout * g->cin);
}

typedef struct {
    lade_maps in;
    float *padded;
} nhwc_job;

/* one padded row (image b, padded row y) per task: zero borders, channels last */
static void pad_nhwc_rows(void *ctx, size_t begin, size_t end) {
    const nhwc_job *j = ctx;
    const int H = j->in.h, W = j->in.w, C = j->in.c;
    for (size_t t = begin; t < end; t++) {
        const int b = (int)(t / (H + 2)), y = (int)(t % (H + 2));
        float *row = j->padded + t * (size_t)(W + 2) * C;
        if (y == 0 || y == H + 1) {
            memset(row, 0, sizeof(float) * (size_t)(W + 2) * C);
            continue;
        }
        memset(row, 0, sizeof(float) * C);
        memset(row + (size_t)(W + 1) * C, 0, sizeof(float) * C);
        const float *src = j->in.data + (size_t)b * j->in.stride_n + (size_t)(y - 1) * W;
        int ci = 0;
        /* 4 channels x 4 pixels at a time: four loads, a 4x4 transpose in registers, four stores (instead of
         * a scalar store per value); C and W are multiples of 8 on the Winograd weight gradient's shapes */
        for (; ci + 4 <= C && W % 4 == 0; ci += 4) {
            const float *s0 = src + (size_t)ci * j->in.stride_c, *s1 = s0 + j->in.stride_c;
            const float *s2 = s1 + j->in.stride_c, *s3 = s2 + j->in.stride_c;
            for (int x = 0; x < W; x += 4) {
                vec4 r0, r1, r2, r3; /* channels ci .. ci + 3, pixels x .. x + 3 */
                memcpy(&r0, s0 + x, sizeof r0), memcpy(&r1, s1 + x, sizeof r1);
                memcpy(&r2, s2 + x, sizeof r2), memcpy(&r3, s3 + x, sizeof r3);
                const vec4 ab_lo = SHUFFLE4(r0, r1, 0, 4, 1, 5), ab_hi = SHUFFLE4(r0, r1, 2, 6, 3, 7);
                const vec4 cd_lo = SHUFFLE4(r2, r3, 0, 4, 1, 5), cd_hi = SHUFFLE4(r2, r3, 2, 6, 3, 7);
                const vec4 p0 = SHUFFLE4(ab_lo, cd_lo, 0, 1, 4, 5), p1 = SHUFFLE4(ab_lo, cd_lo, 2, 3, 6, 7);
                const vec4 p2 = SHUFFLE4(ab_hi, cd_hi, 0, 1, 4, 5), p3 = SHUFFLE4(ab_hi, cd_hi, 2, 3, 6, 7);
                float *dst = row + (size_t)(x + 1) * C + ci;
                memcpy(dst, &p0, sizeof p0), memcpy(dst + C, &p1, sizeof p1);
                memcpy(dst + 2 * C, &p2, sizeof p2), memcpy(dst + 3 * C, &p3, sizeof p3);
            }
        }
        for (; ci < C; ci++) {
            const float *s = src + (size_t)ci * j->in.stride_c;
            for (int x = 0; x < W; x++) row[(size_t)(x + 1) * C + ci] = s[x];
        }
    }
}

typedef struct {
    float *dweight, *partial;
    double *sums; /* [xi][co][ci] */
    int cin, cout;
    size_t tasks;
} wino_dw_sum_job;

/* per row (xi, co) of the sums: the tasks' partial sums added in task order */
static void wino_dw_add_tasks(void *ctx, size_t begin, size_t end) {
    const wino_dw_sum_job *j = ctx;
    const size_t stride = (size_t)16 * j->cout * j->cin;
    for (size_t row = begin; row < end; row++) {
        double *m = j->sums + row * j->cin;
        for (int ci = 0; ci < j->cin; ci++) m[ci] = 0;
        for (size_t task = 0; task < j->tasks; task++) {
            const float *p = j->partial + task * stride + row * j->cin;
            for (int ci = 0; ci < j->cin; ci++) m[ci] += p[ci];
        }
    }
}

/* per output channel: dW += G^T M G for every input channel */
static void wino_dw_untransform(void *ctx, size_t begin, size_t end) {
    const wino_dw_sum_job *j = ctx;
    const size_t plane = (size_t)j->cout * j->cin;
    for (size_t co = begin; co < end; co++)
        for (int ci = 0; ci < j->cin; ci++) {
            double m[16], t[3][4];
            for (int xi = 0; xi < 16; xi++) m[xi] = j->sums[xi * plane + co * j->cin + ci];
            for (int c = 0; c < 4; c++) { /* G^T M, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] */
                t[0][c] = m[c] + 0.5 * (m[4 + c] + m[8 + c]);
                t[1][c] = 0.5 * (m[4 + c] - m[8 + c]);
                t[2][c] = 0.5 * (m[4 + c] + m[8 + c]) + m[12 + c];
            }
            float *dw = j->dweight + (co * j->cin + ci) * 9;
            for (int r = 0; r < 3; r++) { /* (G^T M) G */
                dw[3 * r] += (float)(t[r][0] + 0.5 * (t[r][1] + t[r][2]));
                dw[3 * r + 1] += (float)(0.5 * (t[r][1] - t[r][2]));
                dw[3 * r + 2] += (float)(0.5 * (t[r][1] + t[r][2]) + t[r][3]);
            }
        }
}

static void conv_wino_dw(float *dweight, lade_maps dout, lade_maps in, const lade_conv2d_geom *g, float *workspace,
                         lade_precision precision) {
    const lade_kernel_table *k = lade_kernels();
    nhwc_job pad = {in, workspace};
    lade_parallel_for((size_t)in.n * (in.h + 2), pad_nhwc_rows, &pad);
    const size_t tasks = wino_dw_tasks(dout);
    float *scratch = workspace + wino_dw_padded(g, in.n, in.h, in.w);
    float *partial = scratch + tasks * wino_dw_scratch(g);
    lade_wino_dw_job job = {.dout = dout, .padded = workspace, .partial = partial, .scratch = scratch,
                            .scratch_floats = wino_dw_scratch(g), .cin = g->cin, .cout = g->cout, .tasks = (int)tasks,
                            .run = k->vector_floats == 16 && g->cin % 16 == 0 ? 16 : 8};
    lade_parallel_for(tasks, precision == LADE_BF16 ? k->wino_dw_tasks_bf16 : k->wino_dw_tasks, &job);
    /* the double sums take the place of the padded input, no longer needed */
    wino_dw_sum_job sum = {dweight, partial, (double *)workspace, g->cin, g->cout, tasks};
    lade_parallel_for((size_t)16 * g->cout, wino_dw_add_tasks, &sum);
    lade_parallel_for((size_t)g->cout, wino_dw_untransform, &sum);
}

/* ---- weight gradient ---------------------------------------------------------------
 * dW[co][ci][ky][kx] += sum over images and output pixels of
 * dout[co][b][y][x] * padded_in[ci][b][y*s+ky][x*s+kx]; a task owns one input
 * channel and DW_TILE_CO output channels (kernels_conv.h), or, where wino_dw_applies,
 * the Winograd weight gradient above. */
int lade_conv_direct_dw_applies(const lade_conv2d_geom *g, lade_maps dout) {
    return stride_applies(g) && g->cout % DW_TILE_CO == 0 && dout.w % 8 == 0 &&
           g->kh * g->kw <= DW_MAX_TAPS && g->kw <= DW_MAX_KW;
}

void lade_conv_direct_dw(float *dweight, lade_maps dout, lade_maps in, const lade_conv2d_geom *g, float *workspace,
                         lade_precision precision) {
    if (wino_dw_applies(g, dout)) {
        conv_wino_dw(dweight, dout, in, g, workspace, precision);
        return;
    }
    const lade_kernel_table *k = lade_kernels();
    const int PH = in.h + 2 * g->pad_h, PW = pad_input(in, g, workspace);
    lade_dw_job job = {.dout = dout, .padded = workspace, .dweight = dweight, .g = g, .ph = PH, .pw = PW, .n = in.n,
                       .phase_w = phase_width(g, in.w), .run = k->vector_floats == 16 && dout.w % 16 == 0 ? 16 : 8};
    lade_parallel_for((size_t)(g->cout / DW_TILE_CO) * g->cin, k->dw_tasks, &job);
}
