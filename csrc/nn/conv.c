/* conv.c - 2-D convolution as im2col + sgemm, and a naive reference.
 *
 * A chunk of nb images is unfolded into a column matrix col (K x nb*P),
 * K = cin*kh*kw rows ordered (ci, ky, kx), columns ordered (image, oy, ox),
 * P = oh*ow. Then
 *     forward:   out  = W (cout x K) . col
 *     backward:  dW  += dout . col^T,   dcol = W^T . dout,   din += col2im(dcol)
 * When the output maps are channel-major (CNHW: consecutive images of one
 * channel are adjacent) a whole chunk is one GEMM with a wide N; for NCHW
 * maps each image is its own GEMM. The GEMMs run on OpenBLAS's threads; the
 * unfolding runs on lade's pool, never both at once.
 * Where they apply, the direct kernels (conv_direct.c) replace all of this:
 * the forward and the weight gradient at stride 1 and 2, the input gradient
 * at stride 1 (transposed form) and of 3x3 stride-2 pad-1 convolutions (the
 * four pixel phases), so the CIFAR ResNets use no im2col/col2im. */
#include "lade_nn.h"
#include "nn_internal.h"
#include "base/blas.h"

#include <string.h>

/* Columns per GEMM chunk: wide enough for an efficient GEMM, small enough that
 * the column matrix stays in the outer caches. */
#define CONV_CHUNK_COLUMNS 4096

lade_maps lade_maps_nchw(float *data, int n, int c, int h, int w) {
    lade_maps m = {data, n, c, h, w, (ptrdiff_t)c * h * w, (ptrdiff_t)h * w};
    return m;
}

lade_maps lade_maps_cnhw(float *data, int n, int c, int h, int w) {
    lade_maps m = {data, n, c, h, w, (ptrdiff_t)h * w, (ptrdiff_t)n * h * w};
    return m;
}

lade_status lade_conv2d_out_size(const lade_conv2d_geom *g, int h, int w, int *oh, int *ow) {
    if (g->cin < 1 || g->cout < 1 || g->kh < 1 || g->kw < 1)
        return lade_fail(LADE_EINVAL, "conv2d: channels and kernel sizes must be >= 1, got cin=%d cout=%d kernel=%dx%d",
                         g->cin, g->cout, g->kh, g->kw);
    if (g->stride_h < 1 || g->stride_w < 1)
        return lade_fail(LADE_EINVAL, "conv2d: stride must be >= 1, got (%d, %d)", g->stride_h, g->stride_w);
    if (g->pad_h < 0 || g->pad_w < 0)
        return lade_fail(LADE_EINVAL, "conv2d: padding must be >= 0, got (%d, %d)", g->pad_h, g->pad_w);
    int64_t eh = (int64_t)h + 2 * (int64_t)g->pad_h - g->kh, ew = (int64_t)w + 2 * (int64_t)g->pad_w - g->kw;
    if (h < 1 || w < 1 || eh < 0 || ew < 0)
        return lade_fail(LADE_EINVAL, "conv2d: kernel %dx%d does not fit input %dx%d with padding (%d, %d)",
                         g->kh, g->kw, h, w, g->pad_h, g->pad_w);
    /* the padded input and the output planes are indexed with int */
    if ((eh + g->kh) * (ew + g->kw) > INT32_MAX)
        return lade_fail(LADE_EINVAL, "conv2d: padding (%d, %d) makes the %dx%d input a plane of more than 2^31-1 "
                         "pixels", g->pad_h, g->pad_w, h, w);
    *oh = (int)(eh / g->stride_h + 1);
    *ow = (int)(ew / g->stride_w + 1);
    return LADE_OK;
}

static lade_status check_maps(lade_maps out, lade_maps in, const lade_conv2d_geom *g) {
    int oh, ow;
    lade_status st = lade_conv2d_out_size(g, in.h, in.w, &oh, &ow);
    if (st) return st;
    if (in.c != g->cin || out.c != g->cout || out.n != in.n || out.h != oh || out.w != ow)
        return lade_fail(LADE_EINVAL, "conv2d: expected input (%d, %d, *, *) and output (%d, %d, %d, %d), "
                         "got input (%d, %d, %d, %d) and output (%d, %d, %d, %d)",
                         in.n, g->cin, in.n, g->cout, oh, ow, in.n, in.c, in.h, in.w, out.n, out.c, out.h, out.w);
    return LADE_OK;
}

/* Images per chunk: several when the output is channel-major, else one. */
static int chunk_images(lade_maps out) {
    size_t plane = (size_t)out.h * out.w;
    if (out.stride_n != (ptrdiff_t)plane) return 1;
    int nb = (int)(CONV_CHUNK_COLUMNS / plane);
    if (nb < 1) nb = 1;
    return nb < out.n ? nb : out.n;
}

/* Stride-1 convolutions whose padding fits inside the kernel get their input
 * gradient as a forward convolution of dout with the flipped, transposed
 * kernel (a "full" correlation): unfold + one GEMM writing din directly,
 * instead of a GEMM into a 9x larger column matrix and a scattered col2im. */
static int has_transposed_form(const lade_conv2d_geom *g) {
    return g->stride_h == 1 && g->stride_w == 1 && g->pad_h < g->kh && g->pad_w < g->kw;
}

size_t lade_conv2d_workspace_size(const lade_conv2d_geom *g, int n, int h, int w) {
    int oh, ow;
    if (lade_conv2d_out_size(g, h, w, &oh, &ow)) return 0;
    size_t plane = (size_t)oh * ow;
    /* The largest chunk any layout can ask for: CONV_CHUNK_COLUMNS worth of
     * images, or one image when a plane alone is larger. */
    size_t nb = plane >= CONV_CHUNK_COLUMNS ? 1 : CONV_CHUNK_COLUMNS / plane;
    if (nb > (size_t)n) nb = (size_t)n;
    if (nb < 1) nb = 1;
    size_t channels = g->cin, kernel = (size_t)g->kh * g->kw;
    if (has_transposed_form(g) && (size_t)g->cout > channels) channels = g->cout;
    /* column matrix or the direct path's padded copy (of the input, or of dout
     * for the transposed form), then room for the flipped kernel */
    size_t scratch = channels * kernel * nb * plane;
    size_t direct = lade_conv_direct_workspace(g, n, h, w);
    if (has_transposed_form(g)) {
        lade_conv2d_geom gt = {g->cout, g->cin, g->kh, g->kw, 1, 1, g->kh - 1 - g->pad_h, g->kw - 1 - g->pad_w};
        size_t back = lade_conv_direct_workspace(&gt, n, oh, ow);
        if (back > direct) direct = back;
    }
    size_t dgrad = lade_conv_direct_dgrad_s2_workspace(g, n, oh, ow);
    if (dgrad > direct) direct = dgrad;
    if (direct > scratch) scratch = direct;
    return scratch + (size_t)g->cin * g->cout * kernel;
}

/* ---- im2col / col2im over a chunk --------------------------------------------- */
typedef struct {
    const lade_conv2d_geom *g;
    lade_maps maps; /* input for im2col, input gradient for col2im */
    float *col;
    int b0, nb, oh, ow;
} unfold_job;

static void im2col_rows(void *ctx, size_t begin, size_t end) {
    const unfold_job *j = ctx;
    const lade_conv2d_geom *g = j->g;
    const int H = j->maps.h, W = j->maps.w, oh = j->oh, ow = j->ow;
    const size_t ncols = (size_t)j->nb * oh * ow;
    for (size_t k = begin; k < end; k++) {
        int kx = (int)(k % g->kw), ky = (int)(k / g->kw % g->kh), ci = (int)(k / ((size_t)g->kw * g->kh));
        float *row = j->col + k * ncols;
        for (int b = 0; b < j->nb; b++) {
            const float *plane = j->maps.data + (size_t)(j->b0 + b) * j->maps.stride_n + (size_t)ci * j->maps.stride_c;
            for (int oy = 0; oy < oh; oy++, row += ow) {
                int iy = oy * g->stride_h - g->pad_h + ky;
                if (iy < 0 || iy >= H) {
                    memset(row, 0, sizeof(float) * ow);
                    continue;
                }
                const float *src = plane + (size_t)iy * W;
                int ix0 = kx - g->pad_w;
                if (g->stride_w == 1) {
                    /* valid ox: 0 <= ox + ix0 < W; the zero edges are a pixel or two */
                    int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < ow ? W - ix0 : ow;
                    if (hi < lo) hi = lo;
                    for (int ox = 0; ox < lo; ox++) row[ox] = 0.0f;
                    memcpy(row + lo, src + lo + ix0, sizeof(float) * (hi - lo));
                    for (int ox = hi; ox < ow; ox++) row[ox] = 0.0f;
                } else {
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * g->stride_w + ix0;
                        row[ox] = (ix >= 0 && ix < W) ? src[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

/* Tasks are (image, input channel) pairs, so every task writes its own plane. */
static void col2im_planes(void *ctx, size_t begin, size_t end) {
    const unfold_job *j = ctx;
    const lade_conv2d_geom *g = j->g;
    const int H = j->maps.h, W = j->maps.w, oh = j->oh, ow = j->ow;
    const size_t ncols = (size_t)j->nb * oh * ow;
    for (size_t t = begin; t < end; t++) {
        int b = (int)(t / g->cin), ci = (int)(t % g->cin);
        float *plane = j->maps.data + (size_t)(j->b0 + b) * j->maps.stride_n + (size_t)ci * j->maps.stride_c;
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                size_t k = ((size_t)ci * g->kh + ky) * g->kw + kx;
                const float *row = j->col + k * ncols + (size_t)b * oh * ow;
                int ix0 = kx - g->pad_w;
                for (int oy = 0; oy < oh; oy++, row += ow) {
                    int iy = oy * g->stride_h - g->pad_h + ky;
                    if (iy < 0 || iy >= H) continue;
                    float *dst = plane + (size_t)iy * W;
                    if (g->stride_w == 1) {
                        int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < ow ? W - ix0 : ow;
                        for (int ox = lo; ox < hi; ox++) dst[ox + ix0] += row[ox];
                    } else {
                        for (int ox = 0; ox < ow; ox++) {
                            int ix = ox * g->stride_w + ix0;
                            if (ix >= 0 && ix < W) dst[ix] += row[ox];
                        }
                    }
                }
            }
        }
    }
}

/* out = conv(in) (beta 0) or out += conv(in) (beta 1). */
static void conv_forward_gemm(lade_maps out, lade_maps in, const float *weight, const float *bias,
                              const lade_conv2d_geom *g, float *workspace, float beta) {
    const int K = g->cin * g->kh * g->kw, P = out.h * out.w, nb_max = chunk_images(out);
    for (int b0 = 0; b0 < in.n; b0 += nb_max) {
        int nb = in.n - b0 < nb_max ? in.n - b0 : nb_max;
        unfold_job job = {g, in, workspace, b0, nb, out.h, out.w};
        lade_parallel_for((size_t)K, im2col_rows, &job);
        float *dst = out.data + (size_t)b0 * out.stride_n;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, nb * P, K, 1.0f, weight, K, workspace,
                    nb * P, beta, dst, (int)out.stride_c);
        if (bias)
            for (int co = 0; co < g->cout; co++) {
                float *row = dst + (size_t)co * out.stride_c, bv = bias[co];
                for (size_t i = 0; i < (size_t)nb * P; i++) row[i] += bv;
            }
    }
}

/* LADE_FLOAT32, or LADE_BF16 where the variant in use has the bfloat16 kernels */
static lade_status check_precision(const char *func, lade_precision precision) {
    if (precision == LADE_FLOAT32) return LADE_OK;
    if (precision == LADE_BF16) return lade_bf16_check(func);
    return lade_fail(LADE_EINVAL, "%s: precision must be LADE_FLOAT32 (0) or LADE_BF16 (1), got %d", func,
                     (int)precision);
}

lade_status lade_conv2d_forward_precision(lade_maps out, lade_maps in, const float *weight, const float *bias,
                                          const lade_conv2d_geom *g, float *workspace, lade_precision precision) {
    lade_status st = check_maps(out, in, g);
    if (!st) st = check_precision("conv2d", precision);
    if (st) return st;
    if (lade_conv_direct_applies(g, out)) lade_conv_direct(out, in, weight, bias, g, workspace, 0, precision);
    else conv_forward_gemm(out, in, weight, bias, g, workspace, 0.0f);
    return LADE_OK;
}

lade_status lade_conv2d_forward(lade_maps out, lade_maps in, const float *weight, const float *bias,
                                const lade_conv2d_geom *g, float *workspace) {
    return lade_conv2d_forward_precision(out, in, weight, bias, g, workspace, LADE_FLOAT32);
}

lade_status lade_conv2d_backward(lade_maps din, float *dweight, float *dbias, lade_maps dout, lade_maps in,
                                 const float *weight, const lade_conv2d_geom *g, float *workspace) {
    return lade_conv2d_backward_ex(din, dweight, dbias, dout, in, weight, g, workspace, 1, LADE_FLOAT32);
}

lade_status lade_conv2d_backward_precision(lade_maps din, float *dweight, float *dbias, lade_maps dout, lade_maps in,
                                           const float *weight, const lade_conv2d_geom *g, float *workspace,
                                           lade_precision precision) {
    return lade_conv2d_backward_ex(din, dweight, dbias, dout, in, weight, g, workspace, 1, precision);
}

lade_status lade_conv2d_backward_ex(lade_maps din, float *dweight, float *dbias, lade_maps dout, lade_maps in,
                                    const float *weight, const lade_conv2d_geom *g, float *workspace,
                                    int din_accumulate, lade_precision precision) {
    lade_status st = check_maps(dout, in, g);
    if (!st) st = check_precision("conv2d backward", precision);
    if (st) return st;
    if (din.data && (din.n != in.n || din.c != in.c || din.h != in.h || din.w != in.w))
        return lade_fail(LADE_EINVAL, "conv2d backward: input gradient (%d, %d, %d, %d) does not match input "
                         "(%d, %d, %d, %d)", din.n, din.c, din.h, din.w, in.n, in.c, in.h, in.w);
    const int K = g->cin * g->kh * g->kw, P = dout.h * dout.w, nb_max = chunk_images(dout);
    const int transposed = has_transposed_form(g);
    lade_conv2d_geom gt = {g->cout, g->cin, g->kh, g->kw, 1, 1, g->kh - 1 - g->pad_h, g->kw - 1 - g->pad_w};
    const int din_direct = din.data && transposed && lade_conv_direct_applies(&gt, din);
    const int din_s2 = din.data && lade_conv_direct_dgrad_s2_applies(g, dout);
    if (din.data && !din_accumulate && !din_direct && !din_s2) /* the other paths add into din */
        for (int b = 0; b < din.n; b++)
            for (int c = 0; c < din.c; c++)
                memset(din.data + (size_t)b * din.stride_n + (size_t)c * din.stride_c, 0,
                       sizeof(float) * din.h * din.w);
    if (dweight && lade_conv_direct_dw_applies(g, dout)) {
        lade_conv_direct_dw(dweight, dout, in, g, workspace, precision);
        dweight = NULL; /* done */
    }
    for (int b0 = 0; b0 < in.n; b0 += nb_max) {
        int nb = in.n - b0 < nb_max ? in.n - b0 : nb_max;
        const float *dsrc = dout.data + (size_t)b0 * dout.stride_n;
        const int ld = (int)dout.stride_c, ncols = nb * P;
        if (dbias)
            for (int co = 0; co < g->cout; co++) {
                const float *row = dsrc + (size_t)co * ld;
                double s = 0.0;
                for (int i = 0; i < ncols; i++) s += row[i];
                dbias[co] += (float)s;
            }
        if (dweight) {
            unfold_job job = {g, in, workspace, b0, nb, dout.h, dout.w};
            lade_parallel_for((size_t)K, im2col_rows, &job);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->cout, K, ncols, 1.0f, dsrc, ld, workspace,
                        ncols, 1.0f, dweight, K);
        }
        if (din.data && !transposed && !din_s2) {
            /* dcol overwrites the column matrix: it is no longer needed */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, ncols, g->cout, 1.0f, weight, K, dsrc, ld, 0.0f,
                        workspace, ncols);
            unfold_job job = {g, din, workspace, b0, nb, dout.h, dout.w};
            lade_parallel_for((size_t)nb * g->cin, col2im_planes, &job);
        }
    }
    if (din_s2) lade_conv_direct_dgrad_s2(din, dout, weight, g, workspace, din_accumulate);
    if (din.data && transposed) {
        /* din += correlate(dout, flipped kernel with in/out channels swapped) */
        const size_t kernel = (size_t)g->kh * g->kw;
        float *flipped = workspace + lade_conv2d_workspace_size(g, in.n, in.h, in.w) - (size_t)g->cin * g->cout * kernel;
        for (int co = 0; co < g->cout; co++)
            for (int ci = 0; ci < g->cin; ci++)
                for (size_t k = 0; k < kernel; k++)
                    flipped[((size_t)ci * g->cout + co) * kernel + (kernel - 1 - k)] =
                        weight[((size_t)co * g->cin + ci) * kernel + k];
        if (din_direct) lade_conv_direct(din, dout, flipped, NULL, &gt, workspace, din_accumulate, precision);
        else conv_forward_gemm(din, dout, flipped, NULL, &gt, workspace, 1.0f);
    }
    return LADE_OK;
}

/* ---- naive reference: direct loops with double accumulation -------------------- */
static float *map_at(lade_maps m, int b, int c, int y, int x) {
    return m.data + (size_t)b * m.stride_n + (size_t)c * m.stride_c + (size_t)y * m.w + x;
}

lade_status lade_conv2d_forward_naive(lade_maps out, lade_maps in, const float *weight, const float *bias,
                                      const lade_conv2d_geom *g) {
    lade_status st = check_maps(out, in, g);
    if (st) return st;
    for (int b = 0; b < in.n; b++)
        for (int co = 0; co < g->cout; co++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < g->cin; ci++)
                        for (int ky = 0; ky < g->kh; ky++)
                            for (int kx = 0; kx < g->kw; kx++) {
                                int iy = oy * g->stride_h - g->pad_h + ky, ix = ox * g->stride_w - g->pad_w + kx;
                                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                                s += (double)weight[((size_t)(co * g->cin + ci) * g->kh + ky) * g->kw + kx] *
                                     *map_at(in, b, ci, iy, ix);
                            }
                    *map_at(out, b, co, oy, ox) = (float)s;
                }
    return LADE_OK;
}

lade_status lade_conv2d_backward_naive(lade_maps din, float *dweight, float *dbias, lade_maps dout, lade_maps in,
                                       const float *weight, const lade_conv2d_geom *g) {
    lade_status st = check_maps(dout, in, g);
    if (st) return st;
    for (int b = 0; b < in.n; b++)
        for (int co = 0; co < g->cout; co++)
            for (int oy = 0; oy < dout.h; oy++)
                for (int ox = 0; ox < dout.w; ox++) {
                    float d = *map_at(dout, b, co, oy, ox);
                    if (dbias) dbias[co] += d;
                    for (int ci = 0; ci < g->cin; ci++)
                        for (int ky = 0; ky < g->kh; ky++)
                            for (int kx = 0; kx < g->kw; kx++) {
                                int iy = oy * g->stride_h - g->pad_h + ky, ix = ox * g->stride_w - g->pad_w + kx;
                                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                                size_t wi = ((size_t)(co * g->cin + ci) * g->kh + ky) * g->kw + kx;
                                if (dweight) dweight[wi] += d * *map_at(in, b, ci, iy, ix);
                                if (din.data) *map_at(din, b, ci, iy, ix) += d * weight[wi];
                            }
                }
    return LADE_OK;
}
