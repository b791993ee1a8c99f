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

/* max(v, 0) that keeps NaN: lanes below zero are cleared, NaN compares false */
static inline VEC RUN_NAME(relu)(VEC v) { return (VEC)((RUN_MASK)v & ~(RUN_MASK)(v < 0.0f)); }

/* every lane s: s - 0 is s exactly (-0 and NaN included), so it compiles to a
 * bare broadcast; 0 + s would not (-0 + 0 is +0) and costs an addition */
static inline VEC RUN_NAME(splat)(float s) { return s - (VEC){0}; }

/* The forward's store, shared by the direct and Winograd tiles: p (+)= value
 * (bias included), + the residual at p's place in out when residual is not
 * NULL, then max(., 0) when relu. */
static inline __attribute__((always_inline)) void RUN_NAME(store_epilogue)(float *p, VEC value, const float *out,
                                                                            const float *residual, int accumulate,
                                                                            int relu) {
    if (accumulate) value = RUN_NAME(load)(p) + value;
    if (residual) value += RUN_NAME(load)(residual + (p - out));
    RUN_NAME(store)(p, relu ? RUN_NAME(relu)(value) : value);
}

/* One register tile of the forward: TILE_CO output channels x `runs` runs of
 * RUN output pixels (TILE_RUNS, or fewer for the last tile). Runs are numbered
 * over the whole batch (image, row, run in the row), so a tile may span rows
 * and images; the padded planes of one input channel are adjacent in memory,
 * so every run is an offset from the channel's first plane. Inlined with
 * constant kernel sizes and run counts. */
static inline __attribute__((always_inline)) void RUN_NAME(direct_tile)(const lade_direct_job *j, size_t t,
                                                                         const int runs, const int kh, const int kw,
                                                                         const int stride) {
    const lade_conv2d_geom *g = j->g;
    const int PW = j->pw, runs_per_row = j->out.w / RUN, runs_per_image = j->out.h * runs_per_row, kk = kh * kw;
    const size_t plane = (size_t)j->ph * PW, channel = plane * j->out.n;
    /* t -> (pixel tile, channel tile), channel tiles fastest: they share the input rows */
    const int co0 = (int)(t % j->tiles_co) * TILE_CO;
    const size_t run0 = t / j->tiles_co * TILE_RUNS;
    size_t offset[TILE_RUNS];
    float *dst[TILE_RUNS];
    for (int v = 0; v < runs; v++) {
        size_t r = run0 + v;
        int b = (int)(r / runs_per_image), in_image = (int)(r % runs_per_image);
        int oy = in_image / runs_per_row, ox = in_image % runs_per_row * RUN;
        offset[v] = (size_t)b * plane + (size_t)oy * stride * PW + ox;
        dst[v] = j->out.data + (size_t)b * j->out.stride_n + (size_t)co0 * j->out.stride_c + (size_t)oy * j->out.w + ox;
    }
    VEC acc[TILE_CO][TILE_RUNS];
    for (int r = 0; r < TILE_CO; r++)
        for (int v = 0; v < runs; v++) acc[r][v] = (VEC){0};
    for (int ci = 0; ci < g->cin; ci++) {
        const float *src = j->padded + ci * channel;
        const float *w = j->wt + ((size_t)co0 * g->cin + (size_t)ci * TILE_CO) * kk;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++, w += TILE_CO) {
                const float *s = src + (size_t)ky * PW + (kx % stride) * j->phase_w + kx / stride;
                VEC x[TILE_RUNS];
                for (int v = 0; v < runs; v++) x[v] = RUN_NAME(load)(s + offset[v]);
                for (int r = 0; r < TILE_CO; r++) {
                    VEC wv = RUN_NAME(splat)(w[r]);
                    for (int v = 0; v < runs; v++) acc[r][v] += wv * x[v];
                }
            }
    }
    for (int r = 0; r < TILE_CO; r++) {
        VEC bias = RUN_NAME(splat)(j->bias ? j->bias[co0 + r] : 0.0f);
        for (int v = 0; v < runs; v++)
            RUN_NAME(store_epilogue)(dst[v] + (size_t)r * j->out.stride_c, acc[r][v] + bias, j->out.data, j->residual,
                                     j->accumulate, j->relu);
    }
}

static inline __attribute__((always_inline)) void RUN_NAME(direct_tile_k)(const lade_direct_job *j, size_t t,
                                                                           const int runs) {
    const int kh = j->g->kh, kw = j->g->kw, stride = j->g->stride_w;
    if (kh == 3 && kw == 3 && stride == 1) RUN_NAME(direct_tile)(j, t, runs, 3, 3, 1);
    else if (kh == 3 && kw == 3 && stride == 2) RUN_NAME(direct_tile)(j, t, runs, 3, 3, 2);
    else if (kh == 1 && kw == 1 && stride == 1) RUN_NAME(direct_tile)(j, t, runs, 1, 1, 1);
    else RUN_NAME(direct_tile)(j, t, runs, kh, kw, stride);
}

static void RUN_NAME(direct_tiles)(const lade_direct_job *j, size_t begin, size_t end) {
    const size_t total_runs = (size_t)j->out.n * j->out.h * (j->out.w / RUN);
    for (size_t t = begin; t < end; t++) {
        size_t left = total_runs - t / j->tiles_co * TILE_RUNS;
        if (left >= TILE_RUNS) RUN_NAME(direct_tile_k)(j, t, TILE_RUNS);
        else if (left == 2) RUN_NAME(direct_tile_k)(j, t, 2);
        else RUN_NAME(direct_tile_k)(j, t, 1);
    }
}

/* One weight-gradient task: input channel ci x DW_TILE_CO output channels.
 * Over a block of images (DW_FOLD_VECTORS vectors of pixels each, about 100 KB
 * of dout and input, which stay in L2 for the next row) and one kernel row ky
 * at a time, the DW_TILE_CO x kw sums stay in registers; they are added into
 * double totals once per block. Inlined with constant sizes. */
#define DW_FOLD_VECTORS 512 /* vectors of pixels accumulated in float before folding */
static inline __attribute__((always_inline)) void RUN_NAME(dw_task)(const lade_dw_job *j, size_t t, const int kh,
                                                                     const int kw, const int stride) {
    const lade_conv2d_geom *g = j->g;
    const int PW = j->pw, oh = j->dout.h, ow = j->dout.w;
    const size_t plane = (size_t)j->ph * PW;
    const int vectors_per_image = oh * (ow / RUN);
    int images_per_fold = DW_FOLD_VECTORS / vectors_per_image;
    if (images_per_fold < 1) images_per_fold = 1;
    int ci = (int)(t % g->cin), co0 = (int)(t / g->cin) * DW_TILE_CO;
    double total[DW_TILE_CO][DW_MAX_TAPS] = {{0}};
    for (int b0 = 0; b0 < j->n; b0 += images_per_fold) {
        int b1 = b0 + images_per_fold < j->n ? b0 + images_per_fold : j->n;
        VEC block[DW_TILE_CO][DW_MAX_TAPS];
        for (int ky = 0; ky < kh; ky++) {
            VEC acc[DW_TILE_CO][DW_MAX_KW];
            for (int r = 0; r < DW_TILE_CO; r++)
                for (int kx = 0; kx < kw; kx++) acc[r][kx] = (VEC){0};
            for (int b = b0; b < b1; b++) {
                const float *src = j->padded + ((size_t)ci * j->n + b) * plane;
                const float *d0 = j->dout.data + (size_t)b * j->dout.stride_n + (size_t)co0 * j->dout.stride_c;
                for (int y = 0; y < oh; y++) {
                    const float *s = src + (size_t)(y * stride + ky) * PW, *d = d0 + (size_t)y * ow;
                    for (int x = 0; x < ow; x += RUN) {
                        VEC in[DW_MAX_KW];
                        for (int kx = 0; kx < kw; kx++)
                            in[kx] = RUN_NAME(load)(s + (kx % stride) * j->phase_w + kx / stride + x);
                        for (int r = 0; r < DW_TILE_CO; r++) {
                            VEC dv = RUN_NAME(load)(d + r * j->dout.stride_c + x);
                            for (int kx = 0; kx < kw; kx++) acc[r][kx] += dv * in[kx];
                        }
                    }
                }
            }
            for (int r = 0; r < DW_TILE_CO; r++)
                for (int kx = 0; kx < kw; kx++) block[r][ky * kw + kx] = acc[r][kx];
        }
        for (int r = 0; r < DW_TILE_CO; r++)
            for (int k = 0; k < kh * kw; k++)
                for (int l = 0; l < RUN; l++) total[r][k] += block[r][k][l];
    }
    for (int r = 0; r < DW_TILE_CO; r++)
        for (int k = 0; k < kh * kw; k++)
            j->dweight[((size_t)(co0 + r) * g->cin + ci) * (kh * kw) + k] += (float)total[r][k];
}
#undef DW_FOLD_VECTORS

static void RUN_NAME(dw_tasks)(const lade_dw_job *j, size_t begin, size_t end) {
    const int kh = j->g->kh, kw = j->g->kw, stride = j->g->stride_w;
    for (size_t t = begin; t < end; t++) {
        if (kh == 3 && kw == 3 && stride == 1) RUN_NAME(dw_task)(j, t, 3, 3, 1);
        else if (kh == 3 && kw == 3 && stride == 2) RUN_NAME(dw_task)(j, t, 3, 3, 2);
        else if (kh == 1 && kw == 1 && stride == 1) RUN_NAME(dw_task)(j, t, 1, 1, 1);
        else RUN_NAME(dw_task)(j, t, kh, kw, stride);
    }
}

/* One task of the stride-2 input gradient (lade_conv_direct_dgrad_s2): S2_TILE_CI
 * input channels x one row m of dout of one image, all four pixel phases of
 * din rows 2m and 2m+1 at once. Per output channel, four dout vectors (rows m
 * and m+1, columns n and n+1) feed the 1 + 2 + 2 + 4 taps of the phases; the
 * column phases are interleaved in registers on the store. */
static inline VEC RUN_NAME(interleave_lo)(VEC a, VEC b) {
#if RUN == 8
    return S2_SHUFFLE(a, b, 0, 8, 1, 9, 2, 10, 3, 11);
#else
    return S2_SHUFFLE(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
#endif
}

static inline VEC RUN_NAME(interleave_hi)(VEC a, VEC b) {
#if RUN == 8
    return S2_SHUFFLE(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
#else
    return S2_SHUFFLE(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
#endif
}

/* the even and the odd lanes of the 2*RUN floats a, b (the inverse of interleave_lo / _hi) */
static inline VEC RUN_NAME(even)(VEC a, VEC b) {
#if RUN == 8
    return S2_SHUFFLE(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
#else
    return S2_SHUFFLE(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
#endif
}

static inline VEC RUN_NAME(odd)(VEC a, VEC b) {
#if RUN == 8
    return S2_SHUFFLE(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
#else
    return S2_SHUFFLE(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#endif
}

#if KERNEL_BF16
/* ---- bfloat16 pairs (KERNEL_BF16, kernels_template.h) ------------------------------
 * A PAIRS lane holds two bfloat16 values next to each other along a sum's
 * reduction dimension: the first in its low 16 bits, the second in its high 16
 * bits, the layout vdpbf16ps reads. */
typedef uint32_t RUN_NAME(pairs) __attribute__((vector_size(4 * RUN)));
#define PAIRS RUN_NAME(pairs)

static inline PAIRS RUN_NAME(load_pairs)(const void *p) {
    PAIRS v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void RUN_NAME(store_pairs)(void *p, PAIRS v) { memcpy(p, &v, sizeof v); }

static inline PAIRS RUN_NAME(splat_pair)(uint32_t s) { return s + (PAIRS){0}; }

#if KERNEL_BF16 == 2
/* x rounded to bfloat16, to nearest even, in the high 16 bits (the low ones are garbage); a NaN stays NaN */
static inline PAIRS RUN_NAME(round_bf16)(VEC x) {
    PAIRS bits;
    memcpy(&bits, &x, sizeof bits);
    PAIRS rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
    PAIRS nan = (PAIRS)(x != x);
    return (nan & (bits | 0x400000u)) | (~nan & rounded);
}
#endif

/* lane i: (first[i], second[i]) rounded to bfloat16 (to nearest even) */
static inline PAIRS RUN_NAME(pack)(VEC first, VEC second) {
#if KERNEL_BF16 == 1
#if RUN == 16
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                           21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return (PAIRS)_mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh((__m512)second, (__m512)first));
#else
    const __m256i order = _mm256_set_epi16(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
    return (PAIRS)_mm256_permutexvar_epi16(order, (__m256i)_mm256_cvtne2ps_pbh((__m256)second, (__m256)first));
#endif
#else
    return (RUN_NAME(round_bf16)(second) & 0xffff0000u) | (RUN_NAME(round_bf16)(first) >> 16);
#endif
}

/* The 2 * RUN floats a then b, rounded to bfloat16 in the same order: lane i pairs values 2i and 2i + 1 */
static inline PAIRS RUN_NAME(pack_sequence)(VEC a, VEC b) {
#if KERNEL_BF16 == 1
#if RUN == 16
    return (PAIRS)_mm512_cvtne2ps_pbh((__m512)b, (__m512)a);
#else
    return (PAIRS)_mm256_cvtne2ps_pbh((__m256)b, (__m256)a);
#endif
#else
    return RUN_NAME(pack)(RUN_NAME(even)(a, b), RUN_NAME(odd)(a, b));
#endif
}

/* acc + (product of the high halves) + (product of the low halves), per lane and in
 * that order, as vdpbf16ps does; a product of two bfloat16 values is exact in float, so
 * the emulated form (KERNEL_BF16 2) gives the same sums with or without FMA (save for
 * denormals, which the instruction flushes to zero) */
static inline VEC RUN_NAME(dot)(VEC acc, PAIRS a, PAIRS b) {
#if KERNEL_BF16 == 1
#if RUN == 16
    return (VEC)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
#else
    return (VEC)_mm256_dpbf16_ps((__m256)acc, (__m256bh)a, (__m256bh)b);
#endif
#else
    VEC a_hi, b_hi, a_lo, b_lo;
    PAIRS t;
    t = a & 0xffff0000u, memcpy(&a_hi, &t, sizeof t);
    t = b & 0xffff0000u, memcpy(&b_hi, &t, sizeof t);
    t = a << 16, memcpy(&a_lo, &t, sizeof t);
    t = b << 16, memcpy(&b_lo, &t, sizeof t);
    acc += a_hi * b_hi;
    return acc + a_lo * b_lo;
#endif
}
#endif

/* din row (W floats from p) = or += the 2*RUN values lo, hi; only `count` of them when the row ends early */
static inline void RUN_NAME(store_pair)(float *p, VEC lo, VEC hi, int count, int accumulate) {
    if (count >= 2 * RUN) {
        if (accumulate) {
            lo += RUN_NAME(load)(p);
            hi += RUN_NAME(load)(p + RUN);
        }
        RUN_NAME(store)(p, lo);
        RUN_NAME(store)(p + RUN, hi);
        return;
    }
    float tmp[2 * RUN];
    RUN_NAME(store)(tmp, lo);
    RUN_NAME(store)(tmp + RUN, hi);
    for (int i = 0; i < count; i++) p[i] = accumulate ? p[i] + tmp[i] : tmp[i];
}

static void RUN_NAME(dgrad_s2_tasks)(const lade_dgrad_s2_job *j, size_t begin, size_t end) {
    const int oh = j->oh, ow = j->ow, H = j->din.h, W = j->din.w, PW = j->pw, cout = j->cout;
    const size_t plane = (size_t)j->ph * PW, channel = plane * j->n;
    for (size_t t = begin; t < end; t++) {
        /* t -> (image, row, channel tile), channel tiles fastest: they read the same dout rows */
        const int tiles_ci = j->cin / S2_TILE_CI, ci0 = (int)(t % tiles_ci) * S2_TILE_CI;
        const int m = (int)(t / tiles_ci % oh), b = (int)(t / tiles_ci / oh);
        const float *row0 = j->padded + (size_t)b * plane + (size_t)(m + 1) * PW + 1;
        const float *w0 = j->wt + (size_t)(ci0 / S2_TILE_CI) * cout * 9 * S2_TILE_CI;
        for (int n0 = 0; n0 < ow; n0 += RUN) {
            VEC acc[S2_TILE_CI][4];
            for (int r = 0; r < S2_TILE_CI; r++)
                for (int p = 0; p < 4; p++) acc[r][p] = (VEC){0};
            const float *w = w0;
            for (int co = 0; co < cout; co++, w += 9 * S2_TILE_CI) {
                const float *s = row0 + co * channel + n0;
                VEC d00 = RUN_NAME(load)(s), d01 = RUN_NAME(load)(s + 1);
                VEC d10 = RUN_NAME(load)(s + PW), d11 = RUN_NAME(load)(s + PW + 1);
                for (int r = 0; r < S2_TILE_CI; r++) {
#define W_(ky, kx) RUN_NAME(splat)(w[((ky) * 3 + (kx)) * S2_TILE_CI + r])
                    acc[r][0] += W_(1, 1) * d00;
                    acc[r][1] += W_(1, 2) * d00 + W_(1, 0) * d01;
                    acc[r][2] += W_(2, 1) * d00 + W_(0, 1) * d10;
                    acc[r][3] += W_(2, 2) * d00 + W_(2, 0) * d01 + W_(0, 2) * d10 + W_(0, 0) * d11;
#undef W_
                }
            }
            const int count = W - 2 * n0;
            for (int r = 0; r < S2_TILE_CI; r++) {
                float *dst = j->din.data + (size_t)b * j->din.stride_n + (size_t)(ci0 + r) * j->din.stride_c +
                             (size_t)(2 * m) * W + 2 * n0;
                RUN_NAME(store_pair)(dst, RUN_NAME(interleave_lo)(acc[r][0], acc[r][1]),
                                     RUN_NAME(interleave_hi)(acc[r][0], acc[r][1]), count, j->accumulate);
                if (2 * m + 1 < H)
                    RUN_NAME(store_pair)(dst + W, RUN_NAME(interleave_lo)(acc[r][2], acc[r][3]),
                                         RUN_NAME(interleave_hi)(acc[r][2], acc[r][3]), count, j->accumulate);
            }
        }
    }
}

/* ---- Winograd F(2x2, 3x3) (lade_conv_direct_fused, 3x3 stride-1 pad-1) ----------
 * A tile vector is RUN side-by-side tiles of 2x2 output pixels, one lane per
 * tile; its 4x4 input patches are four vector loads per padded row (even and
 * odd columns, each also shifted by one). Rows of RUN / 2 tiles (out.w == RUN,
 * `half`) put two tile rows into one vector, as two half loads. Per block of
 * WINO_BLOCK tile vectors: V = B^T d B for every input channel (into a stack
 * buffer), then per channel tile and each of the 16 transformed positions the
 * sum over input channels of U * V in the forward's register tile (TILE_CO x
 * WINO_BLOCK), then Y = A^T M A, stored with the forward's epilogue
 * (store_epilogue: bias, accumulate, residual, ReLU). 16 multiply-adds per 4 output pixels and
 * channel pair instead of 36; the transforms are additions. Inlined with the
 * block's tile-vector count and `half`. */
/* RUN floats: the first half from p, the second from q. Two half-width loads joined in registers
 * (__builtin_shufflevector, GCC 12+ and Clang): a copy through memory would store two halves and
 * load them as one vector, which store-to-load forwarding cannot serve (a stall per load). */
#if defined(__clang__) || __GNUC__ >= 12
typedef float RUN_NAME(half_vec) __attribute__((vector_size(2 * RUN)));
static inline VEC RUN_NAME(load_halves)(const float *p, const float *q) {
    RUN_NAME(half_vec) lo, hi;
    memcpy(&lo, p, sizeof lo);
    memcpy(&hi, q, sizeof hi);
#if RUN == 8
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
#else
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#endif
}
#else
static inline VEC RUN_NAME(load_halves)(const float *p, const float *q) {
    float f[RUN];
    memcpy(f, p, sizeof f / 2);
    memcpy(f + RUN / 2, q, sizeof f / 2);
    return RUN_NAME(load)(f);
}
#endif

/* x[4 r + c] = (B^T d B)[r][c] for a 4x4 input patch d: additions only */
static inline __attribute__((always_inline)) void RUN_NAME(wino_input_transform)(VEC d[4][4], VEC x[16]) {
    VEC t[4][4];
    for (int c = 0; c < 4; c++) { /* B^T d */
        t[0][c] = d[0][c] - d[2][c];
        t[1][c] = d[1][c] + d[2][c];
        t[2][c] = d[2][c] - d[1][c];
        t[3][c] = d[1][c] - d[3][c];
    }
    for (int r = 0; r < 4; r++) { /* (B^T d) B */
        x[4 * r] = t[r][0] - t[r][2];
        x[4 * r + 1] = t[r][1] + t[r][2];
        x[4 * r + 2] = t[r][2] - t[r][1];
        x[4 * r + 3] = t[r][1] - t[r][3];
    }
}

/* Where tile vector v of block blk reads (offset[v], from a channel's first padded plane) and
 * writes (dst[v], channel 0 of out). */
static inline __attribute__((always_inline)) void RUN_NAME(wino_place)(const lade_wino_job *j, size_t blk,
                                                                        const int tvs, const int half,
                                                                        size_t offset[WINO_BLOCK],
                                                                        float *dst[WINO_BLOCK]) {
    const int PW = j->pw, W = j->out.w;
    const int groups = half ? 1 : W / (2 * RUN), per_image = lade_wino_per_image(j->out, RUN);
    const size_t plane = (size_t)j->ph * PW;
    for (int v = 0; v < tvs; v++) {
        size_t tv = blk * WINO_BLOCK + v;
        int b = (int)(tv / per_image), in_image = (int)(tv % per_image);
        int ty = half ? 2 * in_image : in_image / groups, gx = in_image % groups;
        offset[v] = (size_t)b * plane + (size_t)(2 * ty) * PW + (size_t)gx * RUN;
        dst[v] = j->out.data + (size_t)b * j->out.stride_n + (size_t)(2 * ty) * W + (size_t)gx * 2 * RUN;
    }
}

/* x = B^T d B for the 4x4 patches of one tile vector of input channel ci */
static inline __attribute__((always_inline)) void RUN_NAME(wino_input)(const lade_wino_job *j, int ci, size_t offset,
                                                                        const int half, VEC x[16]) {
    const int PW = j->pw, PH = j->phase_w;
    const float *src = j->padded + (size_t)ci * j->ph * PW * j->out.n + offset;
    VEC d[4][4];
    for (int r = 0; r < 4; r++) {
        const float *row = src + (size_t)r * PW, *next = row + 2 * (size_t)PW;
        const int at[4] = {0, PH, 1, PH + 1}; /* even[t], odd[t], even[t + 1], odd[t + 1] */
        for (int c = 0; c < 4; c++)
            d[r][c] = half ? RUN_NAME(load_halves)(row + at[c], next + at[c]) : RUN_NAME(load)(row + at[c]);
    }
    RUN_NAME(wino_input_transform)(d, x);
}

/* Y = A^T M A for channel tile ct, stored with the forward's epilogue */
static inline __attribute__((always_inline)) void RUN_NAME(wino_output)(const lade_wino_job *j, int ct, const int tvs,
                                                                         const int half,
                                                                         VEC M[16][TILE_CO][WINO_BLOCK],
                                                                         float *const dst[WINO_BLOCK]) {
    const int W = j->out.w;
    for (int r = 0; r < TILE_CO; r++) {
        const int co = ct * TILE_CO + r;
        const VEC bias = RUN_NAME(splat)(j->bias ? j->bias[co] : 0.0f);
        for (int v = 0; v < tvs; v++) {
            VEC s[2][4];
            for (int c = 0; c < 4; c++) { /* A^T M */
                s[0][c] = M[c][r][v] + M[4 + c][r][v] + M[8 + c][r][v];
                s[1][c] = M[4 + c][r][v] - M[8 + c][r][v] - M[12 + c][r][v];
            }
            float *p = dst[v] + (size_t)co * j->out.stride_c;
            for (int y = 0; y < 2; y++, p += W) { /* (A^T M) A: columns 2t and 2t+1, interleaved */
                VEC even = s[y][0] + s[y][1] + s[y][2], odd = s[y][1] - s[y][2] - s[y][3];
                RUN_NAME(store_epilogue)(p, RUN_NAME(interleave_lo)(even, odd) + bias, j->out.data, j->residual,
                                         j->accumulate, j->relu);
                RUN_NAME(store_epilogue)(half ? p + 2 * W : p + RUN, RUN_NAME(interleave_hi)(even, odd) + bias,
                                         j->out.data, j->residual, j->accumulate, j->relu);
            }
        }
    }
}

static inline __attribute__((always_inline)) void RUN_NAME(wino_block)(const lade_wino_job *j, size_t blk,
                                                                        const int tvs, const int half) {
    const int cin = j->cin;
    size_t offset[WINO_BLOCK];
    float *dst[WINO_BLOCK];
    RUN_NAME(wino_place)(j, blk, tvs, half, offset, dst);
    /* V[xi][ci][v]: xi = 4 * row + column of the 4x4 transformed patch */
    VEC V[16 * WINO_MAX_CIN * WINO_BLOCK];
    for (int ci = 0; ci < cin; ci++)
        for (int v = 0; v < tvs; v++) {
            VEC x[16];
            RUN_NAME(wino_input)(j, ci, offset[v], half, x);
            for (int xi = 0; xi < 16; xi++) V[((size_t)xi * cin + ci) * WINO_BLOCK + v] = x[xi];
        }
    for (int ct = 0; ct < j->tiles_co; ct++) {
        VEC M[16][TILE_CO][WINO_BLOCK];
        for (int xi = 0; xi < 16; xi++) {
            VEC acc[TILE_CO][WINO_BLOCK];
            for (int r = 0; r < TILE_CO; r++)
                for (int v = 0; v < tvs; v++) acc[r][v] = (VEC){0};
            const VEC *x = V + (size_t)xi * cin * WINO_BLOCK;
            const float *w = j->ut + ((size_t)xi * j->tiles_co + ct) * cin * TILE_CO;
            for (int ci = 0; ci < cin; ci++, x += WINO_BLOCK, w += TILE_CO)
                for (int r = 0; r < TILE_CO; r++) {
                    VEC wv = RUN_NAME(splat)(w[r]);
                    for (int v = 0; v < tvs; v++) acc[r][v] += wv * x[v];
                }
            for (int r = 0; r < TILE_CO; r++)
                for (int v = 0; v < tvs; v++) M[xi][r][v] = acc[r][v];
        }
        RUN_NAME(wino_output)(j, ct, tvs, half, M, dst);
    }
}

#if KERNEL_BF16
/* The block of wino_block with bfloat16 multiplications: the transformed input
 * of channels 2p and 2p + 1 rounded into PAIRS (a zero channel after an odd
 * last one), the transformed weights packed the same way (j->ub, conv_direct.c),
 * and the sums over channel pairs in float (dot); the transforms stay float. */
static inline __attribute__((always_inline)) void RUN_NAME(wino_block_bf16)(const lade_wino_job *j, size_t blk,
                                                                             const int tvs, const int half) {
    const int cin = j->cin, pairs = (cin + 1) / 2;
    size_t offset[WINO_BLOCK];
    float *dst[WINO_BLOCK];
    RUN_NAME(wino_place)(j, blk, tvs, half, offset, dst);
    PAIRS V[16 * (WINO_MAX_CIN / 2) * WINO_BLOCK]; /* [xi][channel pair][v] */
    for (int cp = 0; cp < pairs; cp++)
        for (int v = 0; v < tvs; v++) {
            VEC x0[16], x1[16] = {0};
            RUN_NAME(wino_input)(j, 2 * cp, offset[v], half, x0);
            if (2 * cp + 1 < cin) RUN_NAME(wino_input)(j, 2 * cp + 1, offset[v], half, x1);
            for (int xi = 0; xi < 16; xi++)
                V[((size_t)xi * pairs + cp) * WINO_BLOCK + v] = RUN_NAME(pack)(x0[xi], x1[xi]);
        }
    for (int ct = 0; ct < j->tiles_co; ct++) {
        VEC M[16][TILE_CO][WINO_BLOCK];
        for (int xi = 0; xi < 16; xi++) {
            VEC acc[TILE_CO][WINO_BLOCK];
            for (int r = 0; r < TILE_CO; r++)
                for (int v = 0; v < tvs; v++) acc[r][v] = (VEC){0};
            const PAIRS *x = V + (size_t)xi * pairs * WINO_BLOCK;
            const uint32_t *w = j->ub + ((size_t)xi * j->tiles_co + ct) * pairs * TILE_CO;
            for (int cp = 0; cp < pairs; cp++, x += WINO_BLOCK, w += TILE_CO)
                for (int r = 0; r < TILE_CO; r++) {
                    const PAIRS wv = RUN_NAME(splat_pair)(w[r]);
                    for (int v = 0; v < tvs; v++) acc[r][v] = RUN_NAME(dot)(acc[r][v], x[v], wv);
                }
            for (int r = 0; r < TILE_CO; r++)
                for (int v = 0; v < tvs; v++) M[xi][r][v] = acc[r][v];
        }
        RUN_NAME(wino_output)(j, ct, tvs, half, M, dst);
    }
}
#endif

/* bf16: wino_block_bf16 (a constant; 0 where the variant has no bfloat16 kernels) */
static inline __attribute__((always_inline)) void RUN_NAME(wino_tile_block)(const lade_wino_job *j, size_t t,
                                                                             const int tvs, const int half,
                                                                             const int bf16) {
#if KERNEL_BF16
    if (bf16) {
        RUN_NAME(wino_block_bf16)(j, t, tvs, half);
        return;
    }
#endif
    RUN_NAME(wino_block)(j, t, tvs, half);
}

static inline __attribute__((always_inline)) void RUN_NAME(wino_range)(const lade_wino_job *j, size_t begin,
                                                                        size_t end, const int half, const int bf16) {
    const size_t tile_vectors = (size_t)j->out.n * lade_wino_per_image(j->out, RUN);
    for (size_t t = begin; t < end; t++) {
        size_t left = tile_vectors - t * WINO_BLOCK;
        if (left >= WINO_BLOCK) RUN_NAME(wino_tile_block)(j, t, WINO_BLOCK, half, bf16);
        else if (left == 2) RUN_NAME(wino_tile_block)(j, t, 2, half, bf16);
        else RUN_NAME(wino_tile_block)(j, t, 1, half, bf16);
    }
}

static void RUN_NAME(wino_blocks)(const lade_wino_job *j, size_t begin, size_t end) {
    if (j->out.w == RUN) RUN_NAME(wino_range)(j, begin, end, 1, 0);
    else RUN_NAME(wino_range)(j, begin, end, 0, 0);
}

#if KERNEL_BF16
static void RUN_NAME(wino_blocks_bf16)(const lade_wino_job *j, size_t begin, size_t end) {
    if (j->out.w == RUN) RUN_NAME(wino_range)(j, begin, end, 1, 1);
    else RUN_NAME(wino_range)(j, begin, end, 0, 1);
}
#endif

/* The Winograd weight gradient's product for channel vector k alone (an odd number of
 * vectors, e.g. 16 channels in one 16-float vector): rows output channels co.. x that vector,
 * over the chunk's tiles. Inlined with a constant row count. */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_odd_vector)(float *m0, const float *v0,
                                                                                const float *y0, int cin, int k,
                                                                                int co, int count, const int rows) {
    VEC acc[2 * DW_TILE_CO];
    for (int r = 0; r < rows; r++) acc[r] = RUN_NAME(load)(m0 + (size_t)(co + r) * cin + k * RUN);
    for (int t = 0; t < count; t++) {
        const VEC x = RUN_NAME(load)(v0 + (size_t)t * cin + k * RUN);
        for (int r = 0; r < rows; r++) acc[r] += RUN_NAME(splat)(y0[(size_t)(co + r) * WINO_DW_CHUNK + t]) * x;
    }
    for (int r = 0; r < rows; r++) RUN_NAME(store)(m0 + (size_t)(co + r) * cin + k * RUN, acc[r]);
}

/* ---- Winograd F(2x2, 3x3) weight gradient (lade_conv_direct_dw) ----------------
 * dL/dU = sum over tiles of (A dY A^T) * (B^T d B), elementwise per transformed
 * position xi; the weight gradient is G^T (dL/dU) G (conv_direct.c). Here, per
 * chunk of tiles: V = B^T d B with run input channels per vector (the input is
 * channels last), Y = A dY A^T per output channel, then for each xi the product
 * Y[xi] (cout x tiles) V[xi] (tiles x cin) added into the task's partial sums by
 * a register tile of DW_TILE_CO output channels x 2 channel vectors (an odd last vector:
 * 2 DW_TILE_CO output channels x 1). */
/* (A dY A^T)[xi] of the RUN tiles t .. t + RUN - 1 of the chunk (0 past count) for the output-gradient
 * plane dy: rows y0, y0 + y1, y0 - y1, -y1 of the 2x2 tile, then the same on the columns */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_y)(const float *dy, const size_t *dy_at, int W,
                                                                       int count, int t, VEC y[16]) {
    VEC y00, y01, y10, y11; /* the four pixels of RUN tiles */
    if (t + RUN <= count && dy_at[t + RUN - 1] == dy_at[t] + 2 * (RUN - 1)) { /* side by side in a row */
        const float *p = dy + dy_at[t];
        const VEC a = RUN_NAME(load)(p), b = RUN_NAME(load)(p + RUN);
        const VEC c = RUN_NAME(load)(p + W), d = RUN_NAME(load)(p + W + RUN);
        y00 = RUN_NAME(even)(a, b), y01 = RUN_NAME(odd)(a, b), y10 = RUN_NAME(even)(c, d);
        y11 = RUN_NAME(odd)(c, d);
    } else { /* rows of fewer than RUN tiles, or the chunk's end: 0 past its last tile */
        float q[4][RUN] = {{0}};
        for (int l = 0; l < RUN && t + l < count; l++) {
            const float *r = dy + dy_at[t + l];
            q[0][l] = r[0], q[1][l] = r[1], q[2][l] = r[W], q[3][l] = r[W + 1];
        }
        y00 = RUN_NAME(load)(q[0]), y01 = RUN_NAME(load)(q[1]), y10 = RUN_NAME(load)(q[2]);
        y11 = RUN_NAME(load)(q[3]);
    }
    const VEC a[4][2] = {{y00, y01}, {y00 + y10, y01 + y11}, {y00 - y10, y01 - y11}, {-y10, -y11}};
    for (int r = 0; r < 4; r++) {
        y[4 * r] = a[r][0];
        y[4 * r + 1] = a[r][0] + a[r][1];
        y[4 * r + 2] = a[r][0] - a[r][1];
        y[4 * r + 3] = -a[r][1];
    }
}

/* x = (B^T d B) of channel vector k of tile `tile`, whose top-left output pixel is *dy_at (set here) */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_x)(const lade_wino_dw_job *j, size_t tile, int k,
                                                                       size_t *dy_at, VEC x[16]) {
    const int cin = j->cin, H = j->dout.h, W = j->dout.w, PW = W + 2, tiles_w = W / 2, per_image = H / 2 * tiles_w;
    const int b = (int)(tile / per_image), in_image = (int)(tile % per_image);
    const int ty = in_image / tiles_w, tx = in_image % tiles_w;
    *dy_at = (size_t)b * j->dout.stride_n + (size_t)(2 * ty) * W + 2 * tx;
    const float *patch = j->padded + (((size_t)b * (H + 2) + 2 * ty) * PW + 2 * tx) * cin;
    VEC d[4][4];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) d[r][c] = RUN_NAME(load)(patch + ((size_t)r * PW + c) * cin + k * RUN);
    RUN_NAME(wino_input_transform)(d, x);
}

/* The chunk's transforms, float: vbuf[xi][t][ci] = (B^T d B)[xi] of tile t, ybuf[xi][co][t] = (A dY A^T)[xi]
 * (0 past the chunk's last tile). bf16 (a constant): the same values rounded into PAIRS along the
 * tiles, tiles 2p and 2p + 1 in pair p (a zero tile after an odd last one): vbuf[xi][p][ci] and
 * ybuf[xi][co][p], in the first half of each float row. */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_transforms)(const lade_wino_dw_job *j, float *vbuf,
                                                                                float *ybuf, size_t first,
                                                                                int count, const int bf16) {
    const int cin = j->cin, cout = j->cout, W = j->dout.w, vectors = cin / RUN;
    size_t dy_at[WINO_DW_CHUNK]; /* each tile's top-left output pixel in an output-gradient plane */
    const size_t step = (size_t)cout * WINO_DW_CHUNK;
    if (!bf16) {
        for (int t = 0; t < count; t++)
            for (int k = 0; k < vectors; k++) {
                VEC x[16];
                RUN_NAME(wino_dw_x)(j, first + t, k, &dy_at[t], x);
                for (int xi = 0; xi < 16; xi++)
                    RUN_NAME(store)(vbuf + ((size_t)xi * WINO_DW_CHUNK + t) * cin + k * RUN, x[xi]);
            }
        for (int co = 0; co < cout; co++) {
            const float *dy = j->dout.data + (size_t)co * j->dout.stride_c;
            float *o = ybuf + (size_t)co * WINO_DW_CHUNK;
            for (int t = 0; t < WINO_DW_CHUNK; t += RUN) {
                VEC y[16];
                RUN_NAME(wino_dw_y)(dy, dy_at, W, count, t, y);
                for (int xi = 0; xi < 16; xi++) RUN_NAME(store)(o + xi * step + t, y[xi]);
            }
        }
        return;
    }
#if KERNEL_BF16
    for (int t = 0; t < count; t += 2)
        for (int k = 0; k < vectors; k++) {
            VEC x0[16], x1[16] = {0};
            RUN_NAME(wino_dw_x)(j, first + t, k, &dy_at[t], x0);
            if (t + 1 < count) RUN_NAME(wino_dw_x)(j, first + t + 1, k, &dy_at[t + 1], x1);
            for (int xi = 0; xi < 16; xi++)
                RUN_NAME(store_pairs)(vbuf + ((size_t)xi * WINO_DW_CHUNK + t / 2) * cin + k * RUN,
                                      RUN_NAME(pack)(x0[xi], x1[xi]));
        }
    for (int co = 0; co < cout; co++) {
        const float *dy = j->dout.data + (size_t)co * j->dout.stride_c;
        float *o = ybuf + (size_t)co * WINO_DW_CHUNK;
        for (int t = 0; t < WINO_DW_CHUNK; t += 2 * RUN) {
            VEC y0[16], y1[16];
            RUN_NAME(wino_dw_y)(dy, dy_at, W, count, t, y0);
            RUN_NAME(wino_dw_y)(dy, dy_at, W, count, t + RUN, y1);
            for (int xi = 0; xi < 16; xi++)
                RUN_NAME(store_pairs)(o + xi * step + t / 2, RUN_NAME(pack_sequence)(y0[xi], y1[xi]));
        }
    }
#endif
}

static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_chunk)(const lade_wino_dw_job *j, float *partial,
                                                                           float *vbuf, float *ybuf, size_t first,
                                                                           int count) {
    const int cin = j->cin, cout = j->cout, vectors = cin / RUN;
    RUN_NAME(wino_dw_transforms)(j, vbuf, ybuf, first, count, 0);
    for (int xi = 0; xi < 16; xi++) {
        const float *v0 = vbuf + (size_t)xi * WINO_DW_CHUNK * cin, *y0 = ybuf + (size_t)xi * cout * WINO_DW_CHUNK;
        float *m0 = partial + (size_t)xi * cout * cin;
        for (int co = 0; co < cout; co += DW_TILE_CO)
            for (int k = 0; k + 1 < vectors; k += 2) {
                VEC acc[DW_TILE_CO][2];
                for (int r = 0; r < DW_TILE_CO; r++) {
                    acc[r][0] = RUN_NAME(load)(m0 + (size_t)(co + r) * cin + k * RUN);
                    acc[r][1] = RUN_NAME(load)(m0 + (size_t)(co + r) * cin + (k + 1) * RUN);
                }
                for (int t = 0; t < count; t++) {
                    const float *v = v0 + (size_t)t * cin + k * RUN;
                    const VEC x0 = RUN_NAME(load)(v), x1 = RUN_NAME(load)(v + RUN);
                    for (int r = 0; r < DW_TILE_CO; r++) {
                        const VEC y = RUN_NAME(splat)(y0[(size_t)(co + r) * WINO_DW_CHUNK + t]);
                        acc[r][0] += y * x0;
                        acc[r][1] += y * x1;
                    }
                }
                for (int r = 0; r < DW_TILE_CO; r++) {
                    RUN_NAME(store)(m0 + (size_t)(co + r) * cin + k * RUN, acc[r][0]);
                    RUN_NAME(store)(m0 + (size_t)(co + r) * cin + (k + 1) * RUN, acc[r][1]);
                }
            }
        if (vectors % 2) { /* the last channel vector alone: twice the output channels per tile instead */
            int co = 0;
            for (; co + 2 * DW_TILE_CO <= cout; co += 2 * DW_TILE_CO)
                RUN_NAME(wino_dw_odd_vector)(m0, v0, y0, cin, vectors - 1, co, count, 2 * DW_TILE_CO);
            if (co < cout) RUN_NAME(wino_dw_odd_vector)(m0, v0, y0, cin, vectors - 1, co, count, DW_TILE_CO);
        }
    }
}

#if KERNEL_BF16
/* The weight gradient's product for channel vectors k .. k + vecs - 1 and output channels co .. co + rows - 1
 * over the chunk's tile pairs, from the packed buffers of wino_dw_chunk_bf16. Inlined with constant sizes. */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_tile_bf16)(float *m0, const uint32_t *v0,
                                                                               const uint32_t *y0, int cin, int k,
                                                                               int co, int tile_pairs, const int rows,
                                                                               const int vecs) {
    VEC acc[2 * DW_TILE_CO][2];
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < vecs; c++) acc[r][c] = RUN_NAME(load)(m0 + (size_t)(co + r) * cin + (k + c) * RUN);
    for (int tp = 0; tp < tile_pairs; tp++) {
        PAIRS x[2];
        for (int c = 0; c < vecs; c++) x[c] = RUN_NAME(load_pairs)(v0 + (size_t)tp * cin + (k + c) * RUN);
        for (int r = 0; r < rows; r++) {
            const PAIRS y = RUN_NAME(splat_pair)(y0[(size_t)(co + r) * WINO_DW_CHUNK + tp]);
            for (int c = 0; c < vecs; c++) acc[r][c] = RUN_NAME(dot)(acc[r][c], x[c], y);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < vecs; c++) RUN_NAME(store)(m0 + (size_t)(co + r) * cin + (k + c) * RUN, acc[r][c]);
}

/* wino_dw_chunk with bfloat16 multiplications: the transforms rounded into PAIRS along the tiles
 * (wino_dw_transforms), summed over tile pairs in float (dot) in the same register tiles. */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_chunk_bf16)(const lade_wino_dw_job *j,
                                                                                float *partial, float *vbuf,
                                                                                float *ybuf, size_t first, int count) {
    const int cin = j->cin, cout = j->cout, vectors = cin / RUN, tile_pairs = (count + 1) / 2;
    RUN_NAME(wino_dw_transforms)(j, vbuf, ybuf, first, count, 1);
    for (int xi = 0; xi < 16; xi++) {
        const uint32_t *vp = (const uint32_t *)(const void *)(vbuf + (size_t)xi * WINO_DW_CHUNK * cin);
        const uint32_t *yp = (const uint32_t *)(const void *)(ybuf + (size_t)xi * cout * WINO_DW_CHUNK);
        float *m0 = partial + (size_t)xi * cout * cin;
        for (int co = 0; co < cout; co += DW_TILE_CO)
            for (int k = 0; k + 1 < vectors; k += 2)
                RUN_NAME(wino_dw_tile_bf16)(m0, vp, yp, cin, k, co, tile_pairs, DW_TILE_CO, 2);
        if (vectors % 2) { /* the last channel vector alone: twice the output channels per tile instead */
            int co = 0;
            for (; co + 2 * DW_TILE_CO <= cout; co += 2 * DW_TILE_CO)
                RUN_NAME(wino_dw_tile_bf16)(m0, vp, yp, cin, vectors - 1, co, tile_pairs, 2 * DW_TILE_CO, 1);
            if (co < cout) RUN_NAME(wino_dw_tile_bf16)(m0, vp, yp, cin, vectors - 1, co, tile_pairs, DW_TILE_CO, 1);
        }
    }
}
#endif

/* bf16: wino_dw_chunk_bf16 (a constant; 0 where the variant has no bfloat16 kernels) */
static inline __attribute__((always_inline)) void RUN_NAME(wino_dw_range)(const lade_wino_dw_job *j, size_t begin,
                                                                           size_t end, const int bf16) {
    const size_t tiles = (size_t)j->dout.n * (j->dout.h / 2) * (j->dout.w / 2);
    const size_t chunks = (tiles + WINO_DW_CHUNK - 1) / WINO_DW_CHUNK, sums = (size_t)16 * j->cout * j->cin;
    for (size_t task = begin; task < end; task++) {
        float *partial = j->partial + task * sums, *vbuf = j->scratch + task * j->scratch_floats;
        float *ybuf = vbuf + (size_t)16 * WINO_DW_CHUNK * j->cin;
        memset(partial, 0, sums * sizeof(float));
        /* a contiguous range of chunks: the tiles of neighbouring chunks are neighbours in memory */
        for (size_t c = task * chunks / j->tasks; c < (task + 1) * chunks / j->tasks; c++) {
            const size_t first = c * WINO_DW_CHUNK;
            const int count = (int)(tiles - first < WINO_DW_CHUNK ? tiles - first : WINO_DW_CHUNK);
#if KERNEL_BF16
            if (bf16) {
                RUN_NAME(wino_dw_chunk_bf16)(j, partial, vbuf, ybuf, first, count);
                continue;
            }
#endif
            RUN_NAME(wino_dw_chunk)(j, partial, vbuf, ybuf, first, count);
        }
    }
}

static void RUN_NAME(wino_dw_tasks)(const lade_wino_dw_job *j, size_t begin, size_t end) {
    RUN_NAME(wino_dw_range)(j, begin, end, 0);
}

#if KERNEL_BF16
static void RUN_NAME(wino_dw_tasks_bf16)(const lade_wino_dw_job *j, size_t begin, size_t end) {
    RUN_NAME(wino_dw_range)(j, begin, end, 1);
}
#endif
