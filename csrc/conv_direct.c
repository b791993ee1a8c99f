/* conv_direct.c - direct stride-1 convolution without im2col.
 *
 * For the 3x3 stride-1 convolutions that dominate a CIFAR ResNet, unfolding
 * the input into a 9x larger column matrix (and having the BLAS pack it once
 * more) costs more than the multiply-adds. Here the input is copied once into
 * zero-padded planes, and a register tile of 4 output channels x 4 runs of 8
 * output pixels accumulates over (input channel, ky, kx) with vector FMAs:
 * per step 4 vector loads, 4 broadcasts and 16 FMAs. Work is split over
 * (image, channel tile, pixel tile) on lade's pool; no BLAS is involved.
 * Vectors are GCC/Clang vector extensions, so the compiler emits AVX2/AVX-512
 * (or SSE) code for the machine it builds for. */
#include "nn_internal.h"

#include <string.h>

/* Let the compiler fuse a*b + c into FMA instructions here (ISO C mode turns
 * contraction off): the inner loops are nothing but multiply-adds. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

#define TILE_CO 8  /* output channels per register tile */
#define TILE_V 2   /* runs of 8 output pixels per register tile */

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

static inline v8 splat(float s) { return (v8){s, s, s, s, s, s, s, s}; }

int lade_conv_direct_applies(const lade_conv2d_geom *g, lade_maps out) {
    return g->stride_h == 1 && g->stride_w == 1 && g->cout % TILE_CO == 0 && out.w % 8 == 0 &&
           (out.h * (out.w / 8)) % TILE_V == 0;
}

size_t lade_conv_direct_workspace(const lade_conv2d_geom *g, int n, int h, int w) {
    return (size_t)g->cin * n * (h + 2 * g->pad_h) * (w + 2 * g->pad_w) + (size_t)g->cin * g->cout * g->kh * g->kw;
}

typedef struct {
    lade_maps out;
    const float *padded, *wt, *bias;
    const lade_conv2d_geom *g;
    int ph, pw, tiles_co, tiles_px, accumulate;
    lade_maps in;
} direct_job;

static void pad_planes(void *ctx, size_t begin, size_t end) {
    const direct_job *j = ctx;
    const int H = j->in.h, W = j->in.w, PH = j->ph, PW = j->pw, py = j->g->pad_h, px = j->g->pad_w;
    for (size_t t = begin; t < end; t++) {
        int ci = (int)(t / j->in.n), b = (int)(t % j->in.n);
        float *dst = (float *)j->padded + t * (size_t)PH * PW;
        const float *src = j->in.data + (size_t)b * j->in.stride_n + (size_t)ci * j->in.stride_c;
        memset(dst, 0, sizeof(float) * PW * py);
        for (int y = 0; y < H; y++) {
            float *row = dst + (size_t)(y + py) * PW;
            memset(row, 0, sizeof(float) * px);
            memcpy(row + px, src + (size_t)y * W, sizeof(float) * W);
            memset(row + px + W, 0, sizeof(float) * (PW - px - W));
        }
        memset(dst + (size_t)(H + py) * PW, 0, sizeof(float) * PW * (PH - H - py));
    }
}

/* One register tile; inlined with constant kernel sizes for the common cases. */
static inline __attribute__((always_inline)) void direct_tile_body(const direct_job *j, size_t t, const int kh,
                                                                   const int kw) {
    const lade_conv2d_geom *g = j->g;
    const int PW = j->pw, vpr = j->out.w / 8, kk = kh * kw, n = j->out.n;
    const size_t plane = (size_t)j->ph * PW;
    /* t -> (image, channel tile, pixel tile), pixel tiles fastest */
    int px_tile = (int)(t % j->tiles_px);
    int co_tile = (int)(t / j->tiles_px % j->tiles_co);
    int b = (int)(t / ((size_t)j->tiles_px * j->tiles_co));
    int co0 = co_tile * TILE_CO;
    size_t offset[TILE_V];
    int oy[TILE_V], ox[TILE_V];
    for (int v = 0; v < TILE_V; v++) {
        int idx = px_tile * TILE_V + v;
        oy[v] = idx / vpr;
        ox[v] = (idx % vpr) * 8;
        offset[v] = (size_t)oy[v] * PW + ox[v];
    }
    v8 acc[TILE_CO][TILE_V];
    for (int r = 0; r < TILE_CO; r++)
        for (int v = 0; v < TILE_V; v++) acc[r][v] = (v8){0};
    for (int ci = 0; ci < g->cin; ci++) {
        const float *src = j->padded + ((size_t)ci * n + b) * plane;
        const float *w = j->wt + ((size_t)ci * kk) * g->cout + co0; /* wt is [ci][ky][kx][co] */
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++, w += g->cout) {
                const float *s = src + (size_t)ky * PW + kx;
                v8 x[TILE_V];
                for (int v = 0; v < TILE_V; v++) x[v] = load8(s + offset[v]);
                for (int r = 0; r < TILE_CO; r++) {
                    v8 wv = splat(w[r]);
                    for (int v = 0; v < TILE_V; v++) acc[r][v] += wv * x[v];
                }
            }
    }
    for (int r = 0; r < TILE_CO; r++) {
        float *dst = j->out.data + (size_t)b * j->out.stride_n + (size_t)(co0 + r) * j->out.stride_c;
        v8 bias = splat(j->bias ? j->bias[co0 + r] : 0.0f);
        for (int v = 0; v < TILE_V; v++) {
            float *p = dst + (size_t)oy[v] * j->out.w + ox[v];
            v8 value = acc[r][v] + bias;
            store8(p, j->accumulate ? load8(p) + value : value);
        }
    }
}

static void direct_tiles(void *ctx, size_t begin, size_t end) {
    const direct_job *j = ctx;
    const int kh = j->g->kh, kw = j->g->kw;
    for (size_t t = begin; t < end; t++) {
        if (kh == 3 && kw == 3) direct_tile_body(j, t, 3, 3);
        else if (kh == 1 && kw == 1) direct_tile_body(j, t, 1, 1);
        else direct_tile_body(j, t, kh, kw);
    }
}

/* weight (cout, cin, kh, kw) is repacked to [ci][ky][kx][co] so that the
 * weights of a channel tile are adjacent. */
void lade_conv_direct(lade_maps out, lade_maps in, const float *weight, const float *bias, const lade_conv2d_geom *g,
                      float *workspace, int accumulate) {
    const int PH = in.h + 2 * g->pad_h, PW = in.w + 2 * g->pad_w, kk = g->kh * g->kw;
    float *padded = workspace, *wt = workspace + (size_t)g->cin * in.n * PH * PW;
    for (int co = 0; co < g->cout; co++)
        for (int ci = 0; ci < g->cin; ci++)
            for (int k = 0; k < kk; k++) wt[((size_t)ci * kk + k) * g->cout + co] = weight[((size_t)co * g->cin + ci) * kk + k];
    direct_job job = {out, padded, wt, bias, g, PH, PW, g->cout / TILE_CO, out.h * (out.w / 8) / TILE_V, accumulate, in};
    lade_parallel_for((size_t)g->cin * in.n, pad_planes, &job);
    lade_parallel_for((size_t)in.n * job.tiles_co * job.tiles_px, direct_tiles, &job);
}

/* ---- weight gradient ---------------------------------------------------------------
 * dW[co][ci][ky][kx] += sum over images and output pixels of
 * dout[co][b][y][x] * padded_in[ci][b][y+ky][x+kx]. A task owns one input
 * channel and a pair of output channels, so its kh*kw*2 sums stay in vector
 * registers; they are folded into double totals once per block of images. */
#define TILE_DW_CO 2
#define MAX_TAPS 9
#define DW_FOLD_VECTORS 512 /* pixel vectors accumulated in float before folding */

int lade_conv_direct_dw_applies(const lade_conv2d_geom *g, lade_maps dout) {
    return g->stride_h == 1 && g->stride_w == 1 && g->cout % TILE_DW_CO == 0 && dout.w % 8 == 0 &&
           g->kh * g->kw <= MAX_TAPS;
}

typedef struct {
    lade_maps dout;
    const float *padded;
    float *dweight;
    const lade_conv2d_geom *g;
    int ph, pw, n;
} dw_job;

/* The body, inlined with constant kernel sizes so that the accumulators can
 * live in registers (indexing them with run-time tap numbers would not). */
static inline __attribute__((always_inline)) void dw_task_body(const dw_job *j, size_t t, const int kh, const int kw) {
    const lade_conv2d_geom *g = j->g;
    const int PW = j->pw, oh = j->dout.h, ow = j->dout.w;
    const size_t plane = (size_t)j->ph * PW;
    const int vectors_per_image = oh * (ow / 8);
    int images_per_fold = DW_FOLD_VECTORS / vectors_per_image;
    if (images_per_fold < 1) images_per_fold = 1;
    int ci = (int)(t % g->cin), co0 = (int)(t / g->cin) * TILE_DW_CO;
    double total[TILE_DW_CO][MAX_TAPS] = {{0}};
    for (int b0 = 0; b0 < j->n; b0 += images_per_fold) {
        int b1 = b0 + images_per_fold < j->n ? b0 + images_per_fold : j->n;
        v8 acc[TILE_DW_CO][MAX_TAPS];
        for (int r = 0; r < TILE_DW_CO; r++)
            for (int k = 0; k < kh * kw; k++) acc[r][k] = (v8){0};
        for (int b = b0; b < b1; b++) {
            const float *src = j->padded + ((size_t)ci * j->n + b) * plane;
            const float *d0 = j->dout.data + (size_t)b * j->dout.stride_n + (size_t)co0 * j->dout.stride_c;
            for (int y = 0; y < oh; y++)
                for (int x = 0; x < ow; x += 8) {
                    v8 d[TILE_DW_CO];
                    for (int r = 0; r < TILE_DW_CO; r++) d[r] = load8(d0 + r * j->dout.stride_c + (size_t)y * ow + x);
                    const float *s = src + (size_t)y * PW + x;
                    for (int ky = 0; ky < kh; ky++)
                        for (int kx = 0; kx < kw; kx++) {
                            v8 in = load8(s + (size_t)ky * PW + kx);
                            for (int r = 0; r < TILE_DW_CO; r++) acc[r][ky * kw + kx] += d[r] * in;
                        }
                }
        }
        for (int r = 0; r < TILE_DW_CO; r++)
            for (int k = 0; k < kh * kw; k++)
                for (int l = 0; l < 8; l++) total[r][k] += acc[r][k][l];
    }
    for (int r = 0; r < TILE_DW_CO; r++)
        for (int k = 0; k < kh * kw; k++)
            j->dweight[((size_t)(co0 + r) * g->cin + ci) * (kh * kw) + k] += (float)total[r][k];
}

static void dw_tasks(void *ctx, size_t begin, size_t end) {
    const dw_job *j = ctx;
    const int kh = j->g->kh, kw = j->g->kw;
    for (size_t t = begin; t < end; t++) {
        if (kh == 3 && kw == 3) dw_task_body(j, t, 3, 3);
        else if (kh == 1 && kw == 1) dw_task_body(j, t, 1, 1);
        else dw_task_body(j, t, kh, kw);
    }
}

void lade_conv_direct_dw(float *dweight, lade_maps dout, lade_maps in, const lade_conv2d_geom *g, float *workspace) {
    const int PH = in.h + 2 * g->pad_h, PW = in.w + 2 * g->pad_w;
    direct_job pad = {.padded = workspace, .g = g, .ph = PH, .pw = PW, .in = in};
    lade_parallel_for((size_t)g->cin * in.n, pad_planes, &pad);
    dw_job job = {dout, workspace, dweight, g, PH, PW, in.n};
    lade_parallel_for((size_t)(g->cout / TILE_DW_CO) * g->cin, dw_tasks, &job);
}
