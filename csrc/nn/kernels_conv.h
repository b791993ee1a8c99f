/* kernels_conv.h - the direct convolution's register tiles for one run width.
 * Included by kernels_template.h (no include guard, on purpose) with RUN (8
 * or 16 output pixels per vector), VEC (the vector type of RUN floats) and
 * RUN_NAME(x) (a name unique to this width) defined. */

static inline VEC RUN_NAME(load)(const float *p) {
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void RUN_NAME(store)(float *p, VEC v) { memcpy(p, &v, sizeof v); }

static inline VEC RUN_NAME(splat)(float s) { return (VEC){0} + s; }

/* One register tile of the forward; inlined with constant kernel sizes. */
static inline __attribute__((always_inline)) void RUN_NAME(direct_tile)(const lade_direct_job *j, size_t t,
                                                                         const int kh, const int kw) {
    const lade_conv2d_geom *g = j->g;
    const int PW = j->pw, runs_per_row = j->out.w / RUN, kk = kh * kw, n = j->out.n;
    const size_t plane = (size_t)j->ph * PW;
    /* t -> (image, channel tile, pixel tile), pixel tiles fastest */
    int px_tile = (int)(t % j->tiles_px);
    int co_tile = (int)(t / j->tiles_px % j->tiles_co);
    int b = (int)(t / ((size_t)j->tiles_px * j->tiles_co));
    int co0 = co_tile * DIRECT_TILE_CO;
    size_t offset[DIRECT_TILE_RUNS];
    int oy[DIRECT_TILE_RUNS], ox[DIRECT_TILE_RUNS];
    for (int v = 0; v < DIRECT_TILE_RUNS; v++) {
        int idx = px_tile * DIRECT_TILE_RUNS + v;
        oy[v] = idx / runs_per_row;
        ox[v] = (idx % runs_per_row) * RUN;
        offset[v] = (size_t)oy[v] * PW + ox[v];
    }
    VEC acc[DIRECT_TILE_CO][DIRECT_TILE_RUNS];
    for (int r = 0; r < DIRECT_TILE_CO; r++)
        for (int v = 0; v < DIRECT_TILE_RUNS; v++) acc[r][v] = (VEC){0};
    for (int ci = 0; ci < g->cin; ci++) {
        const float *src = j->padded + ((size_t)ci * n + b) * plane;
        const float *w = j->wt + ((size_t)ci * kk) * g->cout + co0;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++, w += g->cout) {
                const float *s = src + (size_t)ky * PW + kx;
                VEC x[DIRECT_TILE_RUNS];
                for (int v = 0; v < DIRECT_TILE_RUNS; v++) x[v] = RUN_NAME(load)(s + offset[v]);
                for (int r = 0; r < DIRECT_TILE_CO; r++) {
                    VEC wv = RUN_NAME(splat)(w[r]);
                    for (int v = 0; v < DIRECT_TILE_RUNS; v++) acc[r][v] += wv * x[v];
                }
            }
    }
    for (int r = 0; r < DIRECT_TILE_CO; r++) {
        float *dst = j->out.data + (size_t)b * j->out.stride_n + (size_t)(co0 + r) * j->out.stride_c;
        VEC bias = RUN_NAME(splat)(j->bias ? j->bias[co0 + r] : 0.0f);
        for (int v = 0; v < DIRECT_TILE_RUNS; v++) {
            float *p = dst + (size_t)oy[v] * j->out.w + ox[v];
            VEC value = acc[r][v] + bias;
            RUN_NAME(store)(p, j->accumulate ? RUN_NAME(load)(p) + value : value);
        }
    }
}

static void RUN_NAME(direct_tiles)(const lade_direct_job *j, size_t begin, size_t end) {
    const int kh = j->g->kh, kw = j->g->kw;
    for (size_t t = begin; t < end; t++) {
        if (kh == 3 && kw == 3) RUN_NAME(direct_tile)(j, t, 3, 3);
        else if (kh == 1 && kw == 1) RUN_NAME(direct_tile)(j, t, 1, 1);
        else RUN_NAME(direct_tile)(j, t, kh, kw);
    }
}

/* One weight-gradient task: input channel ci x a pair of output channels; its
 * kh*kw*2 sums stay in registers (constant kernel sizes make that possible)
 * and are folded into double totals once per block of images. */
#define DW_FOLD_VECTORS 512 /* vectors of 8 pixels accumulated in float before folding */
static inline __attribute__((always_inline)) void RUN_NAME(dw_task)(const lade_dw_job *j, size_t t, const int kh,
                                                                     const int kw) {
    const lade_conv2d_geom *g = j->g;
    const int PW = j->pw, oh = j->dout.h, ow = j->dout.w;
    const size_t plane = (size_t)j->ph * PW;
    const int vectors_per_image = oh * (ow / 8);
    int images_per_fold = DW_FOLD_VECTORS / vectors_per_image;
    if (images_per_fold < 1) images_per_fold = 1;
    int ci = (int)(t % g->cin), co0 = (int)(t / g->cin) * DW_TILE_CO;
    double total[DW_TILE_CO][DW_MAX_TAPS] = {{0}};
    for (int b0 = 0; b0 < j->n; b0 += images_per_fold) {
        int b1 = b0 + images_per_fold < j->n ? b0 + images_per_fold : j->n;
        VEC acc[DW_TILE_CO][DW_MAX_TAPS];
        for (int r = 0; r < DW_TILE_CO; r++)
            for (int k = 0; k < kh * kw; k++) acc[r][k] = (VEC){0};
        for (int b = b0; b < b1; b++) {
            const float *src = j->padded + ((size_t)ci * j->n + b) * plane;
            const float *d0 = j->dout.data + (size_t)b * j->dout.stride_n + (size_t)co0 * j->dout.stride_c;
            for (int y = 0; y < oh; y++)
                for (int x = 0; x < ow; x += RUN) {
                    VEC d[DW_TILE_CO];
                    for (int r = 0; r < DW_TILE_CO; r++)
                        d[r] = RUN_NAME(load)(d0 + r * j->dout.stride_c + (size_t)y * ow + x);
                    const float *s = src + (size_t)y * PW + x;
                    for (int ky = 0; ky < kh; ky++)
                        for (int kx = 0; kx < kw; kx++) {
                            VEC in = RUN_NAME(load)(s + (size_t)ky * PW + kx);
                            for (int r = 0; r < DW_TILE_CO; r++) acc[r][ky * kw + kx] += d[r] * in;
                        }
                }
        }
        for (int r = 0; r < DW_TILE_CO; r++)
            for (int k = 0; k < kh * kw; k++)
                for (int l = 0; l < RUN; l++) total[r][k] += acc[r][k][l];
    }
    for (int r = 0; r < DW_TILE_CO; r++)
        for (int k = 0; k < kh * kw; k++)
            j->dweight[((size_t)(co0 + r) * g->cin + ci) * (kh * kw) + k] += (float)total[r][k];
}
#undef DW_FOLD_VECTORS

static void RUN_NAME(dw_tasks)(const lade_dw_job *j, size_t begin, size_t end) {
    const int kh = j->g->kh, kw = j->g->kw;
    for (size_t t = begin; t < end; t++) {
        if (kh == 3 && kw == 3) RUN_NAME(dw_task)(j, t, 3, 3);
        else if (kh == 1 && kw == 1) RUN_NAME(dw_task)(j, t, 1, 1);
        else RUN_NAME(dw_task)(j, t, kh, kw);
    }
}
