/* augment.c - per-sample augmentation of uint8 images into normalised
 * float32 CHW: CIFAR pad-and-crop (spec 3.2), RandomResizedCrop with colour
 * jitter and resize + centre crop (spec 3.4).
 *
 * Semantics follow torchvision: the crop parameters are drawn exactly as
 * RandomResizedCrop.get_params does; resizing is Pillow's bilinear filter
 * (a triangle whose support widens with the downscale factor, i.e.
 * antialiased), computed here in float without Pillow's intermediate uint8
 * rounding; colour jitter follows torchvision's tensor functions on [0, 1]
 * pixels (grey = 0.2989 R + 0.587 G + 0.114 B, results clamped to [0, 1]). */
#include "lade_data.h"

#include <math.h>
#include <string.h>

static void set_norm(lade_transform *t, const float mean[3], const float std[3]) {
    for (int c = 0; c < 3; c++) t->mean[c] = mean[c], t->std[c] = std[c];
}

static const float cifar_mean[3] = {0.4914f, 0.4822f, 0.4465f};
static const float cifar_std[3] = {0.2023f, 0.1994f, 0.2010f};
static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

void lade_transform_cifar_train(lade_transform *t) {
    memset(t, 0, sizeof *t);
    t->kind = LADE_TF_CIFAR_CROP;
    t->out_h = t->out_w = 32;
    t->pad = 4;
    t->flip = 1;
    set_norm(t, cifar_mean, cifar_std);
}

void lade_transform_cifar_test(lade_transform *t) {
    memset(t, 0, sizeof *t);
    t->kind = LADE_TF_NORMALIZE;
    t->out_h = t->out_w = 32;
    set_norm(t, cifar_mean, cifar_std);
}

void lade_transform_imagenet_train(lade_transform *t, int size) {
    memset(t, 0, sizeof *t);
    t->kind = LADE_TF_RESIZED_CROP;
    t->out_h = t->out_w = size;
    t->scale_min = 0.08, t->scale_max = 1.0;
    t->ratio_min = 3.0 / 4.0, t->ratio_max = 4.0 / 3.0;
    t->brightness = t->contrast = t->saturation = 0.4;
    t->flip = 1;
    set_norm(t, imagenet_mean, imagenet_std);
}

void lade_transform_imagenet_eval(lade_transform *t, int resize, int crop) {
    memset(t, 0, sizeof *t);
    t->kind = LADE_TF_RESIZE_CENTER;
    t->out_h = t->out_w = crop;
    t->resize = resize;
    set_norm(t, imagenet_mean, imagenet_std);
}

lade_status lade_transform_preset(lade_transform *t, const char *name, int size, int resize) {
    if (!strcmp(name, "cifar_train")) lade_transform_cifar_train(t);
    else if (!strcmp(name, "cifar_test")) lade_transform_cifar_test(t);
    else if (!strcmp(name, "imagenet_train")) lade_transform_imagenet_train(t, size);
    else if (!strcmp(name, "imagenet_eval")) lade_transform_imagenet_eval(t, resize, size);
    else return lade_fail(LADE_EINVAL, "argument 'preset' must name a preset, got '%s'", name);
    return LADE_OK;
}

lade_status lade_transform_check(const lade_transform *t) {
    if (t->out_h < 1 || t->out_w < 1 || t->out_h > LADE_JPEG_MAX_SIDE || t->out_w > LADE_JPEG_MAX_SIDE)
        return lade_fail(LADE_EINVAL, "output size must be in [1, %d], got %d x %d", LADE_JPEG_MAX_SIDE, t->out_h,
                         t->out_w);
    for (int c = 0; c < 3; c++)
        if (!(t->std[c] > 0) || !isfinite(t->std[c]) || !isfinite(t->mean[c]))
            return lade_fail(LADE_EINVAL, "std must be finite and > 0 and mean finite, got mean[%d] = %g, std[%d] = %g",
                             c, t->mean[c], c, t->std[c]);
    switch (t->kind) {
    case LADE_TF_CIFAR_CROP:
        if (t->pad < 0 || t->pad > 1024) return lade_fail(LADE_EINVAL, "pad must be in [0, 1024], got %d", t->pad);
        return LADE_OK;
    case LADE_TF_NORMALIZE:
        return LADE_OK;
    case LADE_TF_RESIZED_CROP:
        if (!(t->scale_min > 0 && t->scale_min <= t->scale_max && t->scale_max <= 1))
            return lade_fail(LADE_EINVAL, "scale must satisfy 0 < min <= max <= 1, got (%g, %g)", t->scale_min,
                             t->scale_max);
        if (!(t->ratio_min > 0 && t->ratio_min <= t->ratio_max && isfinite(t->ratio_max)))
            return lade_fail(LADE_EINVAL, "ratio must satisfy 0 < min <= max, got (%g, %g)", t->ratio_min,
                             t->ratio_max);
        if (!(t->brightness >= 0 && t->contrast >= 0 && t->saturation >= 0 && t->brightness <= 1e6 &&
              t->contrast <= 1e6 && t->saturation <= 1e6))
            return lade_fail(LADE_EINVAL, "jitter strengths must be >= 0, got %g, %g, %g", t->brightness,
                             t->contrast, t->saturation);
        return LADE_OK;
    case LADE_TF_RESIZE_CENTER:
        if (t->resize < t->out_h || t->resize < t->out_w || t->resize > LADE_JPEG_MAX_SIDE)
            return lade_fail(LADE_EINVAL, "resize must be >= the crop size (%d x %d) and <= %d, got %d", t->out_h,
                             t->out_w, LADE_JPEG_MAX_SIDE, t->resize);
        return LADE_OK;
    }
    return lade_fail(LADE_EINVAL, "unknown transform kind %d", (int)t->kind);
}

/* ---- parameters --------------------------------------------------------- */

/* torchvision RandomResizedCrop.get_params: ten tries at a random area and
 * log-uniform aspect, then a centre crop clamped to the ratio range. */
static void resized_crop_box(const lade_transform *t, int height, int width, lade_rng *rng, lade_aug_params *p) {
    double area = (double)height * width;
    double log_lo = log(t->ratio_min), log_hi = log(t->ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (t->scale_min + (t->scale_max - t->scale_min) * lade_rng_uniform(rng));
        double aspect = exp(log_lo + (log_hi - log_lo) * lade_rng_uniform(rng));
        /* nearbyint rounds half to even, like Python's round() */
        double w = nearbyint(sqrt(target * aspect)), h = nearbyint(sqrt(target / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            p->height = (int)h, p->width = (int)w;
            p->top = (int)lade_rng_below(rng, (uint64_t)(height - p->height + 1));
            p->left = (int)lade_rng_below(rng, (uint64_t)(width - p->width + 1));
            return;
        }
    }
    double in_ratio = (double)width / height;
    if (in_ratio < t->ratio_min) {
        p->width = width;
        p->height = (int)nearbyint(width / t->ratio_min);
    } else if (in_ratio > t->ratio_max) {
        p->height = height;
        p->width = (int)nearbyint(height * t->ratio_max);
    } else {
        p->width = width, p->height = height;
    }
    if (p->height < 1) p->height = 1;
    if (p->width < 1) p->width = 1;
    if (p->height > height) p->height = height;
    if (p->width > width) p->width = width;
    p->top = (height - p->height) / 2;
    p->left = (width - p->width) / 2;
}

lade_status lade_transform_params(const lade_transform *t, int height, int width, lade_rng *rng, lade_aug_params *p) {
    memset(p, 0, sizeof *p);
    p->brightness = p->contrast = p->saturation = 1.0;
    for (int i = 0; i < 3; i++) p->jitter_order[i] = i;
    if (height < 1 || width < 1) return lade_fail(LADE_EINVAL, "image size must be >= 1, got %d x %d", height, width);
    p->resized_h = t->out_h, p->resized_w = t->out_w;
    p->height = t->out_h, p->width = t->out_w;
    switch (t->kind) {
    case LADE_TF_CIFAR_CROP:
        if (height + 2 * t->pad < t->out_h || width + 2 * t->pad < t->out_w)
            return lade_fail(LADE_EINVAL, "a %d x %d image padded by %d is smaller than the %d x %d crop", height,
                             width, t->pad, t->out_h, t->out_w);
        /* torchvision RandomCrop: top from randint(0, H - h + 1), then left */
        p->top = (int)lade_rng_below(rng, (uint64_t)(height + 2 * t->pad - t->out_h + 1));
        p->left = (int)lade_rng_below(rng, (uint64_t)(width + 2 * t->pad - t->out_w + 1));
        p->flip = t->flip && lade_rng_uniform(rng) < 0.5;
        return LADE_OK;
    case LADE_TF_NORMALIZE:
        if (height != t->out_h || width != t->out_w)
            return lade_fail(LADE_EINVAL, "image is %d x %d, the transform expects %d x %d", height, width, t->out_h,
                             t->out_w);
        return LADE_OK;
    case LADE_TF_RESIZED_CROP:
        resized_crop_box(t, height, width, rng, p);
        p->flip = t->flip && lade_rng_uniform(rng) < 0.5;
        if (t->brightness > 0 || t->contrast > 0 || t->saturation > 0) {
            /* ColorJitter.get_params: a permutation, then the factors */
            for (int i = 2; i > 0; i--) {
                int j = (int)lade_rng_below(rng, (uint64_t)i + 1);
                int tmp = p->jitter_order[i];
                p->jitter_order[i] = p->jitter_order[j], p->jitter_order[j] = tmp;
            }
            const double strength[3] = {t->brightness, t->contrast, t->saturation};
            double factor[3] = {1, 1, 1};
            for (int k = 0; k < 3; k++)
                if (strength[k] > 0) {
                    double lo = fmax(0.0, 1 - strength[k]), hi = 1 + strength[k];
                    factor[k] = lo + (hi - lo) * lade_rng_uniform(rng);
                }
            p->brightness = factor[0], p->contrast = factor[1], p->saturation = factor[2];
        }
        return LADE_OK;
    case LADE_TF_RESIZE_CENTER: {
        /* torchvision Resize(int): shorter side to `resize`, the longer one
         * int(resize * long / short); CenterCrop: int(round((H - h) / 2)) */
        if (width <= height) {
            p->resized_w = t->resize;
            p->resized_h = (int)((double)t->resize * height / width);
        } else {
            p->resized_h = t->resize;
            p->resized_w = (int)((double)t->resize * width / height);
        }
        if (p->resized_h > LADE_JPEG_MAX_SIDE || p->resized_w > LADE_JPEG_MAX_SIDE)
            return lade_fail(LADE_EINVAL, "a %d x %d image resized to shorter side %d is too large", height, width,
                             t->resize);
        p->top = (int)nearbyint((p->resized_h - t->out_h) / 2.0);
        p->left = (int)nearbyint((p->resized_w - t->out_w) / 2.0);
        return LADE_OK;
    }
    }
    return lade_fail(LADE_EINVAL, "unknown transform kind %d", (int)t->kind);
}

/* ---- resampling ----------------------------------------------------------- */

/* Filter taps of one axis: output i (of out_size over in_size inputs) reads
 * inputs first[i] .. first[i] + count[i] - 1 with weights w[i * taps ..]. */
typedef struct {
    int taps;
    int *first, *count;
    float *w;
} axis_filter;

static size_t axis_filter_taps(int in_size, int out_size) {
    double scale = (double)in_size / out_size;
    double support = scale > 1 ? scale : 1.0;
    return (size_t)ceil(support) * 2 + 1;
}

/* Pillow's precompute_coeffs for the bilinear (triangle) filter, for the
 * outputs win_start .. win_start + win_len - 1. */
static void axis_filter_build(axis_filter *f, int in_size, int out_size, int win_start, int win_len) {
    double scale = (double)in_size / out_size;
    double filterscale = scale > 1 ? scale : 1.0;
    double support = filterscale;
    for (int k = 0; k < win_len; k++) {
        double center = (win_start + k + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        if (hi - lo > f->taps) hi = lo + f->taps;
        float *w = f->w + (size_t)k * f->taps;
        double sum = 0;
        for (int x = lo; x < hi; x++) {
            double d = fabs((x - center + 0.5) / filterscale);
            double v = d < 1 ? 1 - d : 0;
            w[x - lo] = (float)v;
            sum += v;
        }
        if (sum > 0)
            for (int x = lo; x < hi; x++) w[x - lo] = (float)(w[x - lo] / sum);
        f->first[k] = lo;
        f->count[k] = hi - lo;
    }
}

static lade_status grow_scratch(void **scratch, size_t *size, size_t need) {
    if (*size >= need) return LADE_OK;
    lade_free(*scratch);
    *scratch = lade_alloc(need);
    *size = *scratch ? need : 0;
    return *scratch ? LADE_OK : lade_fail(LADE_ENOMEM, "augmentation scratch of %zu bytes", need);
}

/* Resizes the box (top, left, bh, bw) of src to rh x rw (the box edges clamp
 * the filter, as when cropping first) and writes the window (wy, wx, oh, ow)
 * of the result, in [0, 1], into out (3, oh, ow), mirrored when flip. */
static lade_status resample(const lade_image *src, int top, int left, int bh, int bw, int rh, int rw, int wy,
                            int wx, int oh, int ow, int flip, float *out, void **scratch, size_t *scratch_size) {
    axis_filter fx = {.taps = (int)axis_filter_taps(bw, rw)}, fy = {.taps = (int)axis_filter_taps(bh, rh)};
    /* layout of the scratch: x filter, y filter, then the horizontally
     * filtered rows (bh rows at most, ow x 3 floats each) */
    size_t fx_bytes = ((size_t)ow * fx.taps * sizeof(float) + (size_t)ow * 2 * sizeof(int) + 63) / 64 * 64;
    size_t fy_bytes = ((size_t)oh * fy.taps * sizeof(float) + (size_t)oh * 2 * sizeof(int) + 63) / 64 * 64;
    size_t rows_bytes;
    if (!lade_mul_size(&rows_bytes, (size_t)bh * ow, 3 * sizeof(float)))
        return lade_fail(LADE_ENOMEM, "resize buffer overflows");
    lade_status st = grow_scratch(scratch, scratch_size, fx_bytes + fy_bytes + rows_bytes);
    if (st) return st;
    char *base = *scratch;
    fx.w = (float *)base, fx.first = (int *)(fx.w + (size_t)ow * fx.taps), fx.count = fx.first + ow;
    fy.w = (float *)(base + fx_bytes), fy.first = (int *)(fy.w + (size_t)oh * fy.taps), fy.count = fy.first + oh;
    float *rows = (float *)(base + fx_bytes + fy_bytes);
    axis_filter_build(&fx, bw, rw, wx, ow);
    axis_filter_build(&fy, bh, rh, wy, oh);

    /* horizontal pass over the rows the vertical pass reads */
    int row_lo = fy.first[0], row_hi = fy.first[oh - 1] + fy.count[oh - 1];
    const ptrdiff_t sc = src->stride_c, sx = src->stride_x;
    for (int y = row_lo; y < row_hi; y++) {
        const uint8_t *line = src->data + (ptrdiff_t)(top + y) * src->stride_y + (ptrdiff_t)left * sx;
        float *dst = rows + (size_t)(y - row_lo) * ow * 3;
        for (int x = 0; x < ow; x++) {
            const float *w = fx.w + (size_t)x * fx.taps;
            const uint8_t *p = line + (ptrdiff_t)fx.first[x] * sx;
            float r = 0, g = 0, b = 0;
            for (int k = 0; k < fx.count[x]; k++, p += sx) {
                r += w[k] * p[0];
                g += w[k] * p[sc];
                b += w[k] * p[2 * sc];
            }
            dst[3 * x] = r, dst[3 * x + 1] = g, dst[3 * x + 2] = b;
        }
    }
    /* vertical pass into CHW, scaled to [0, 1] */
    size_t plane = (size_t)oh * ow;
    for (int y = 0; y < oh; y++) {
        const float *w = fy.w + (size_t)y * fy.taps;
        const float *first = rows + (size_t)(fy.first[y] - row_lo) * ow * 3;
        float *o0 = out + (size_t)y * ow, *o1 = o0 + plane, *o2 = o1 + plane;
        for (int x = 0; x < ow; x++) {
            float r = 0, g = 0, b = 0;
            const float *p = first + 3 * x;
            for (int k = 0; k < fy.count[y]; k++, p += (size_t)ow * 3) {
                r += w[k] * p[0];
                g += w[k] * p[1];
                b += w[k] * p[2];
            }
            int xo = flip ? ow - 1 - x : x;
            const float s = 1.0f / 255.0f;
            o0[xo] = fminf(fmaxf(r * s, 0.0f), 1.0f);
            o1[xo] = fminf(fmaxf(g * s, 0.0f), 1.0f);
            o2[xo] = fminf(fmaxf(b * s, 0.0f), 1.0f);
        }
    }
    return LADE_OK;
}

/* ---- colour jitter and normalisation ----------------------------------- */

static inline float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
static inline float grey(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

static void jitter(const lade_aug_params *p, float *out, size_t plane) {
    float *r = out, *g = out + plane, *b = out + 2 * plane;
    for (int k = 0; k < 3; k++) {
        int op = p->jitter_order[k];
        if (op == 0 && p->brightness != 1.0) {
            float f = (float)p->brightness;
            for (size_t i = 0; i < 3 * plane; i++) out[i] = clamp01(out[i] * f);
        } else if (op == 1 && p->contrast != 1.0) {
            double sum = 0;
            for (size_t i = 0; i < plane; i++) sum += grey(r[i], g[i], b[i]);
            float f = (float)p->contrast, mix = (float)((1 - p->contrast) * (sum / plane));
            for (size_t i = 0; i < 3 * plane; i++) out[i] = clamp01(f * out[i] + mix);
        } else if (op == 2 && p->saturation != 1.0) {
            float f = (float)p->saturation, f1 = 1 - f;
            for (size_t i = 0; i < plane; i++) {
                float m = f1 * grey(r[i], g[i], b[i]);
                r[i] = clamp01(f * r[i] + m), g[i] = clamp01(f * g[i] + m), b[i] = clamp01(f * b[i] + m);
            }
        }
    }
}

static void normalize(const lade_transform *t, float *out, size_t plane) {
    for (int c = 0; c < 3; c++) {
        float *o = out + c * plane, m = t->mean[c], inv = 1.0f / t->std[c];
        for (size_t i = 0; i < plane; i++) o[i] = (o[i] - m) * inv;
    }
}

/* CIFAR crop from the zero-padded image, straight from uint8 with a table. */
static void cifar_crop(const lade_transform *t, const lade_image *src, const lade_aug_params *p, float *out) {
    int oh = t->out_h, ow = t->out_w;
    for (int c = 0; c < 3; c++) {
        float table[256];
        for (int v = 0; v < 256; v++) table[v] = (v / 255.0f - t->mean[c]) / t->std[c];
        float *o = out + (size_t)c * oh * ow;
        for (int y = 0; y < oh; y++) {
            int sy = p->top + y - t->pad;
            for (int x = 0; x < ow; x++) {
                int sx = p->left + (p->flip ? ow - 1 - x : x) - t->pad;
                int inside = sy >= 0 && sy < src->height && sx >= 0 && sx < src->width;
                o[(size_t)y * ow + x] =
                    table[inside ? src->data[c * src->stride_c + sy * src->stride_y + sx * src->stride_x] : 0];
            }
        }
    }
}

lade_status lade_transform_apply(const lade_transform *t, const lade_image *src, const lade_aug_params *p, float *out,
                                 void **scratch, size_t *scratch_size) {
    size_t plane = (size_t)t->out_h * t->out_w;
    switch (t->kind) {
    case LADE_TF_CIFAR_CROP:
    case LADE_TF_NORMALIZE: {
        lade_aug_params none = {.top = t->pad};
        none.left = t->pad;
        if (t->kind == LADE_TF_NORMALIZE) {
            if (src->height != t->out_h || src->width != t->out_w)
                return lade_fail(LADE_EINVAL, "image is %d x %d, the transform expects %d x %d", src->height,
                                 src->width, t->out_h, t->out_w);
            none.top = none.left = 0;
        }
        cifar_crop(t, src, t->kind == LADE_TF_NORMALIZE ? &none : p, out);
        return LADE_OK;
    }
    case LADE_TF_RESIZED_CROP: {
        if (p->top < 0 || p->left < 0 || p->height < 1 || p->width < 1 || p->top + p->height > src->height ||
            p->left + p->width > src->width)
            return lade_fail(LADE_EINVAL, "crop box (%d, %d, %d, %d) lies outside the %d x %d image", p->top, p->left,
                             p->height, p->width, src->height, src->width);
        lade_status st = resample(src, p->top, p->left, p->height, p->width, t->out_h, t->out_w, 0, 0, t->out_h,
                                  t->out_w, p->flip, out, scratch, scratch_size);
        if (st) return st;
        jitter(p, out, plane);
        normalize(t, out, plane);
        return LADE_OK;
    }
    case LADE_TF_RESIZE_CENTER: {
        if (p->top < 0 || p->left < 0 || p->top + t->out_h > p->resized_h || p->left + t->out_w > p->resized_w)
            return lade_fail(LADE_EINVAL, "crop window (%d, %d) does not fit the %d x %d resized image", p->top,
                             p->left, p->resized_h, p->resized_w);
        lade_status st = resample(src, 0, 0, src->height, src->width, p->resized_h, p->resized_w, p->top, p->left,
                                  t->out_h, t->out_w, 0, out, scratch, scratch_size);
        if (st) return st;
        normalize(t, out, plane);
        return LADE_OK;
    }
    }
    return lade_fail(LADE_EINVAL, "unknown transform kind %d", (int)t->kind);
}

/* ---- a batch of in-memory images on the thread pool ---------------------- */
typedef struct {
    const lade_transform *t;
    const uint8_t *images;
    int height, width;
    uint64_t seed, stream;
    float *out;
    lade_status status; /* the first failure; written under no lock, any one wins */
} batch_ctx;

/* Draws one image's parameters from lade_rng_seed(seed, stream), then applies them. */
static lade_status transform_one(const lade_transform *t, const lade_image *img, uint64_t seed, uint64_t stream,
                                 float *out, void **scratch, size_t *scratch_size) {
    lade_rng rng;
    lade_rng_seed(&rng, seed, stream);
    lade_aug_params p;
    lade_status st = lade_transform_params(t, img->height, img->width, &rng, &p);
    return st ? st : lade_transform_apply(t, img, &p, out, scratch, scratch_size);
}

static void batch_range(void *arg, size_t begin, size_t end) {
    batch_ctx *ctx = arg;
    size_t in_size = (size_t)3 * ctx->height * ctx->width;
    size_t out_size = (size_t)3 * ctx->t->out_h * ctx->t->out_w;
    void *scratch = NULL;
    size_t scratch_size = 0;
    for (size_t i = begin; i < end; i++) {
        lade_image img = {ctx->images + i * in_size, ctx->height, ctx->width, (ptrdiff_t)ctx->height * ctx->width,
                          ctx->width, 1};
        lade_status st = transform_one(ctx->t, &img, ctx->seed, ctx->stream + i, ctx->out + i * out_size, &scratch,
                                       &scratch_size);
        if (st) {
            __atomic_store_n(&ctx->status, st, __ATOMIC_RELAXED);
            break;
        }
    }
    lade_free(scratch);
}

lade_status lade_transform_batch(const lade_transform *t, const uint8_t *images, size_t n, int height, int width,
                                 uint64_t seed, uint64_t stream, float *out) {
    lade_status st = lade_transform_check(t);
    if (st) return st;
    if (height < 1 || width < 1) return lade_fail(LADE_EINVAL, "image size must be >= 1, got %d x %d", height, width);
    /* size problems surface here, with their message, before the threads */
    lade_rng probe;
    lade_aug_params p;
    lade_rng_seed(&probe, seed, stream);
    if ((st = lade_transform_params(t, height, width, &probe, &p))) return st;
    batch_ctx ctx = {t, images, height, width, seed, stream, out, LADE_OK};
    lade_parallel_for(n, batch_range, &ctx);
    if (ctx.status) return lade_fail(ctx.status, "augmenting a %d x %d image failed", height, width);
    return LADE_OK;
}

lade_status lade_transform_image(const lade_transform *t, const uint8_t *image, int height, int width, uint64_t seed,
                                 uint64_t stream, float *out) {
    lade_image img = {image, height, width, 1, (ptrdiff_t)width * 3, 3};
    void *scratch = NULL;
    size_t scratch_size = 0;
    lade_status st = transform_one(t, &img, seed, stream, out, &scratch, &scratch_size);
    lade_free(scratch);
    return st;
}
