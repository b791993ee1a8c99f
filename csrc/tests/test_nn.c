/* test_nn.c - layers, models and SGD of the C core, without Python. */
#include <stdlib.h>
#include <string.h>

#include "lade.h"
#include "check.h"

static float *random_floats(lade_rng *r, size_t n, double scale) {
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = (float)(scale * lade_rng_normal(r));
    return a;
}

static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* NCHW -> CNHW copy, to run the same data through both layouts */
static void to_cnhw(float *dst, const float *src, int n, int c, int plane) {
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            memcpy(dst + ((size_t)ch * n + b) * plane, src + ((size_t)b * c + ch) * plane, sizeof(float) * plane);
}

static void check_conv_against_naive(int *failures, const lade_conv2d_geom *geoms, size_t count, int h, int w) {
    lade_rng r;
    lade_rng_seed(&r, 1, 0);
    for (size_t gi = 0; gi < count; gi++) {
        const lade_conv2d_geom *g = &geoms[gi];
        int n = 3, oh, ow;
        CHECK_OK(lade_conv2d_out_size(g, h, w, &oh, &ow));
        size_t nin = (size_t)n * g->cin * h * w, nout = (size_t)n * g->cout * oh * ow;
        size_t nw = (size_t)g->cout * g->cin * g->kh * g->kw;
        float *x = random_floats(&r, nin, 1.0), *wt = random_floats(&r, nw, 0.5), *bias = random_floats(&r, g->cout, 1.0);
        float *dy = random_floats(&r, nout, 1.0);
        float *ref = zeros(nout), *fast = zeros(nout), *ws = malloc(lade_conv2d_workspace_size(g, n, h, w) * sizeof(float));
        CHECK_OK(lade_conv2d_forward_naive(lade_maps_nchw(ref, n, g->cout, oh, ow), lade_maps_nchw(x, n, g->cin, h, w), wt, bias, g));
        CHECK_OK(lade_conv2d_forward(lade_maps_nchw(fast, n, g->cout, oh, ow), lade_maps_nchw(x, n, g->cin, h, w), wt, bias, g, ws));
        CHECK(max_abs_diff(ref, fast, nout) < 1e-4);

        /* channel-major layout: convert input, compare converted output */
        float *xc = zeros(nin), *yc = zeros(nout), *refc = zeros(nout);
        to_cnhw(xc, x, n, g->cin, h * w);
        to_cnhw(refc, ref, n, g->cout, oh * ow);
        CHECK_OK(lade_conv2d_forward(lade_maps_cnhw(yc, n, g->cout, oh, ow), lade_maps_cnhw(xc, n, g->cin, h, w), wt, bias, g, ws));
        CHECK(max_abs_diff(refc, yc, nout) < 1e-4);

        /* backward: fast vs naive, and accumulation (a second call doubles) */
        float *dx_ref = zeros(nin), *dw_ref = zeros(nw), *db_ref = zeros(g->cout);
        float *dx = zeros(nin), *dw = zeros(nw), *db = zeros(g->cout);
        CHECK_OK(lade_conv2d_backward_naive(lade_maps_nchw(dx_ref, n, g->cin, h, w), dw_ref, db_ref,
                                            lade_maps_nchw(dy, n, g->cout, oh, ow), lade_maps_nchw(x, n, g->cin, h, w), wt, g));
        for (int rep = 0; rep < 2; rep++)
            CHECK_OK(lade_conv2d_backward(lade_maps_nchw(dx, n, g->cin, h, w), dw, db, lade_maps_nchw(dy, n, g->cout, oh, ow),
                                          lade_maps_nchw(x, n, g->cin, h, w), wt, g, ws));
        for (size_t i = 0; i < nin; i++) dx[i] *= 0.5f;
        for (size_t i = 0; i < nw; i++) dw[i] *= 0.5f;
        for (int i = 0; i < g->cout; i++) db[i] *= 0.5f;
        CHECK(max_abs_diff(dx_ref, dx, nin) < 1e-3);
        CHECK(max_abs_diff(dw_ref, dw, nw) < 1e-3);
        CHECK(max_abs_diff(db_ref, db, g->cout) < 1e-3);
        free(x), free(wt), free(bias), free(dy), free(ref), free(fast), free(ws), free(xc), free(yc), free(refc);
        free(dx_ref), free(dw_ref), free(db_ref), free(dx), free(dw), free(db);
    }
}

TEST(conv_im2col_matches_naive_in_both_layouts) {
    const lade_conv2d_geom geoms[] = {
        {3, 8, 3, 3, 1, 1, 1, 1}, {5, 4, 3, 3, 2, 2, 1, 1}, {4, 6, 1, 1, 1, 1, 0, 0},
        {2, 3, 5, 3, 2, 1, 2, 0}, {3, 2, 7, 7, 3, 3, 3, 3}, {3, 5, 5, 3, 1, 1, 2, 0}, {2, 4, 3, 3, 1, 1, 0, 2},
    };
    check_conv_against_naive(failures, geoms, sizeof geoms / sizeof geoms[0], 11, 9);
}

/* Output widths that are multiples of 8 take the direct (no im2col) path. */
TEST(conv_direct_matches_naive_in_both_layouts) {
    const lade_conv2d_geom geoms[] = {
        {5, 8, 3, 3, 1, 1, 1, 1}, {3, 16, 3, 3, 1, 1, 1, 1}, {4, 4, 1, 1, 1, 1, 0, 0},
        {2, 8, 5, 5, 1, 1, 2, 2}, {3, 4, 3, 5, 1, 1, 0, 2},
    };
    check_conv_against_naive(failures, geoms, sizeof geoms / sizeof geoms[0], 6, 16);
    check_conv_against_naive(failures, geoms, sizeof geoms / sizeof geoms[0], 4, 8);
}

TEST(conv_rejects_bad_geometry) {
    lade_conv2d_geom g = {3, 4, 5, 5, 1, 1, 0, 0};
    int oh, ow;
    CHECK(lade_conv2d_out_size(&g, 4, 4, &oh, &ow) == LADE_EINVAL);
    g.stride_h = 0;
    CHECK(lade_conv2d_out_size(&g, 8, 8, &oh, &ow) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "stride") != NULL);
}

/* Central finite differences of a scalar loss sum(out * probe) w.r.t. inputs. */
TEST(batchnorm_train_matches_definition_and_finite_differences) {
    lade_rng r;
    lade_rng_seed(&r, 2, 0);
    int n = 4, c = 3, h = 5, w = 3, plane = h * w;
    size_t count = (size_t)n * c * plane;
    float *x = random_floats(&r, count, 2.0), *y = zeros(count), *probe = random_floats(&r, count, 1.0);
    float gamma[3] = {1.5f, -0.5f, 2.0f}, beta[3] = {0.1f, 0.2f, -0.3f}, mean[3], invstd[3];
    float rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
    lade_maps xm = lade_maps_nchw(x, n, c, h, w), ym = lade_maps_nchw(y, n, c, h, w);
    CHECK_OK(lade_batchnorm2d_forward_train(ym, mean, invstd, rm, rv, xm, gamma, beta, 0.1f, 1e-5f));
    for (int ch = 0; ch < c; ch++) {
        double s = 0, sq = 0;
        for (int b = 0; b < n; b++)
            for (int p = 0; p < plane; p++) s += x[((size_t)b * c + ch) * plane + p];
        double m = s / (n * plane);
        for (int b = 0; b < n; b++)
            for (int p = 0; p < plane; p++) sq += pow(x[((size_t)b * c + ch) * plane + p] - m, 2);
        double var = sq / (n * plane), unbiased = sq / (n * plane - 1);
        CHECK_CLOSE(mean[ch], m, 1e-5);
        CHECK_CLOSE(invstd[ch], 1.0 / sqrt(var + 1e-5), 1e-4);
        CHECK_CLOSE(rm[ch], 0.1 * m, 1e-6);
        CHECK_CLOSE(rv[ch], 0.9 + 0.1 * unbiased, 1e-5);
        double y0 = (x[ch * plane] - m) / sqrt(var + 1e-5) * gamma[ch] + beta[ch];
        CHECK_CLOSE(y[ch * plane], y0, 1e-4);
    }
    float *dx = zeros(count), dgamma[3] = {0}, dbeta[3] = {0};
    CHECK_OK(lade_batchnorm2d_backward(lade_maps_nchw(dx, n, c, h, w), dgamma, dbeta, lade_maps_nchw(probe, n, c, h, w),
                                       xm, gamma, mean, invstd));
    /* finite differences on a few inputs, in double via repeated float evaluation */
    const float eps = 1e-2f;
    for (size_t i = 0; i < count; i += 7) {
        float saved = x[i];
        double f[2];
        for (int s = 0; s < 2; s++) {
            x[i] = saved + (s ? -eps : eps);
            float m2[3], i2[3];
            lade_batchnorm2d_forward_train(ym, m2, i2, NULL, NULL, xm, gamma, beta, 0.1f, 1e-5f);
            double acc = 0;
            for (size_t k = 0; k < count; k++) acc += (double)y[k] * probe[k];
            f[s] = acc;
        }
        x[i] = saved;
        CHECK_CLOSE(dx[i], (f[0] - f[1]) / (2 * eps), 2e-2);
    }
    free(x), free(y), free(probe), free(dx);
}

TEST(shortcut_a_places_channels_in_the_middle) {
    float x[1 * 2 * 4 * 4], y[1 * 4 * 2 * 2], dx[32] = {0};
    for (int i = 0; i < 32; i++) x[i] = (float)i;
    CHECK_OK(lade_shortcut_a_forward(lade_maps_nchw(y, 1, 4, 2, 2), lade_maps_nchw(x, 1, 2, 4, 4), 2));
    /* channel 0 and 3 are zero padding; channel 1 = input channel 0 at (0,0),(0,2),(2,0),(2,2) */
    CHECK(y[0] == 0 && y[3] == 0 && y[12] == 0 && y[15] == 0);
    CHECK(y[4] == 0 && y[5] == 2 && y[6] == 8 && y[7] == 10);
    CHECK(y[8] == 16 && y[11] == 26);
    float dy[16];
    for (int i = 0; i < 16; i++) dy[i] = 1.0f;
    CHECK_OK(lade_shortcut_a_backward(lade_maps_nchw(dx, 1, 2, 4, 4), lade_maps_nchw(dy, 1, 4, 2, 2), 2));
    CHECK(dx[0] == 1 && dx[1] == 0 && dx[2] == 1 && dx[5] == 0 && dx[16] == 1);
    CHECK(lade_shortcut_a_forward(lade_maps_nchw(y, 1, 3, 2, 2), lade_maps_nchw(x, 1, 2, 4, 4), 2) == LADE_EINVAL);
}

TEST(linear_and_softmax_ce_gradients) {
    lade_rng r;
    lade_rng_seed(&r, 3, 0);
    int n = 5, fin = 7, fout = 4;
    float *x = random_floats(&r, n * fin, 1), *w = random_floats(&r, fout * fin, 1), *b = random_floats(&r, fout, 1);
    float *y = zeros(n * fout), *dy = zeros(n * fout), *dw = zeros(fout * fin), *db = zeros(fout), *dx = zeros(n * fin);
    int64_t labels[5] = {0, 3, 2, 1, 3};
    CHECK_OK(lade_linear_forward(y, x, w, b, n, fin, fout));
    double loss;
    CHECK_OK(lade_softmax_ce(&loss, dy, 1.0f, y, labels, n, fout));
    CHECK_OK(lade_linear_backward(dx, dw, db, dy, x, w, n, fin, fout));
    const float eps = 1e-2f;
    for (int i = 0; i < fout * fin; i += 3) {
        float saved = w[i];
        double f[2];
        for (int s = 0; s < 2; s++) {
            w[i] = saved + (s ? -eps : eps);
            lade_linear_forward(y, x, w, b, n, fin, fout);
            lade_softmax_ce(&f[s], NULL, 1.0f, y, labels, n, fout);
        }
        w[i] = saved;
        CHECK_CLOSE(dw[i], (f[0] - f[1]) / (2 * eps), 1e-3);
    }
    labels[0] = 4;
    CHECK(lade_softmax_ce(&loss, NULL, 1.0f, y, labels, n, fout) == LADE_ERANGE);
    free(x), free(w), free(b), free(y), free(dy), free(dw), free(db), free(dx);
}

TEST(maxpool_picks_the_first_maximum) {
    float x[16] = {1, 5, 2, 0, 5, 3, 9, 9, 0, 0, 1, 1, 7, 0, 1, 2}, y[4], dx[16] = {0}, dy[4] = {1, 1, 1, 1};
    int32_t am[4];
    lade_pool_geom g = {2, 2, 0};
    CHECK_OK(lade_maxpool_forward(lade_maps_nchw(y, 1, 1, 2, 2), am, lade_maps_nchw(x, 1, 1, 4, 4), &g));
    CHECK(y[0] == 5 && am[0] == 1 && y[1] == 9 && am[1] == 6 && y[2] == 7 && y[3] == 2);
    CHECK_OK(lade_maxpool_backward(lade_maps_nchw(dx, 1, 1, 4, 4), lade_maps_nchw(dy, 1, 1, 2, 2), am));
    CHECK(dx[1] == 1 && dx[4] == 0 && dx[6] == 1 && dx[7] == 0);
}

TEST(sgd_matches_pytorch_formula) {
    float p[3] = {1, -2, 3}, g[3] = {0.5f, 0.1f, -1}, v[3] = {0};
    lade_sgd_config cfg = {0.9f, 0.0f, 0.01f, 0};
    CHECK_OK(lade_sgd_step(p, g, v, NULL, 3, &cfg, 0.1f, 1));
    /* first step: v = g + wd p */
    CHECK_CLOSE(v[0], 0.5 + 0.01, 1e-7);
    CHECK_CLOSE(p[0], 1 - 0.1 * 0.51, 1e-6);
    float p1 = p[0];
    CHECK_OK(lade_sgd_step(p, g, v, NULL, 3, &cfg, 0.1f, 0));
    double v2 = 0.9 * 0.51 + 0.5 + 0.01 * p1;
    CHECK_CLOSE(v[0], v2, 1e-6);
    CHECK_CLOSE(p[0], p1 - 0.1 * v2, 1e-6);
    float bad[3] = {0, NAN, 0}, before = p[0];
    CHECK(lade_sgd_step(p, bad, v, NULL, 3, &cfg, 0.1f, 0) == LADE_ENONFINITE);
    CHECK(p[0] == before);
}

static double warmup_lr(int epoch) {
    const int milestones[2] = {120, 160};
    double lr;
    return lade_lr_warmup_multistep(&lr, 0.2, epoch, 5, 1.0 / 3, milestones, 2, 0.01) == LADE_OK ? lr : NAN;
}

static double cosine_lr(int epoch) {
    double lr;
    return lade_lr_cosine(&lr, 0.1, epoch, 10, 0) == LADE_OK ? lr : NAN;
}

TEST(warmup_multistep_schedule_values) {
    CHECK_CLOSE(warmup_lr(1), 0.0933333, 1e-6);
    CHECK_CLOSE(warmup_lr(4), 0.1733333, 1e-6);
    CHECK_CLOSE(warmup_lr(5), 0.2, 1e-12);
    CHECK_CLOSE(warmup_lr(119), 0.2, 1e-12);
    CHECK_CLOSE(warmup_lr(120), 0.002, 1e-12);
    CHECK_CLOSE(warmup_lr(200), 0.00002, 1e-12);
    CHECK_CLOSE(cosine_lr(0), 0.1, 1e-12);
    CHECK_CLOSE(cosine_lr(10), 0.0, 1e-12);
}

TEST(schedules_refuse_negative_epochs_and_steps_past_the_end) {
    const int milestones[2] = {120, 160}, unordered[2] = {160, 120};
    double lr = 7;
    CHECK(lade_lr_warmup_multistep(&lr, 0.2, -1, 5, 1.0 / 3, milestones, 2, 0.01) == LADE_EINVAL);
    CHECK(lade_lr_warmup_multistep(&lr, 0.2, 3, 5, 1.0 / 3, unordered, 2, 0.01) == LADE_EINVAL);
    CHECK(lade_lr_warmup_multistep(&lr, NAN, 3, 5, 1.0 / 3, milestones, 2, 0.01) == LADE_EINVAL);
    CHECK(lade_lr_cosine(&lr, 0.1, -1, 10, 0) == LADE_EINVAL);
    CHECK(lade_lr_cosine(&lr, 0.1, 11, 10, 0) == LADE_EINVAL);
    CHECK(lr == 7);
}

TEST(huge_planes_are_refused_before_any_memory_is_touched) {
    /* maps over no memory: the checks must fail before a single pixel is read */
    lade_maps in = lade_maps_nchw(NULL, 1, 1, 65536, 65536), out = lade_maps_nchw(NULL, 1, 1, 65536, 65536);
    lade_pool_geom pool = {1, 1, 0};
    int32_t argmax[1];
    CHECK(lade_maxpool_forward(out, argmax, in, &pool) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "int32 argmax") != NULL);
    lade_conv2d_geom g = {0};
    g.cin = g.cout = 1, g.kh = g.kw = 3, g.stride_h = g.stride_w = 1, g.pad_h = g.pad_w = 1000000;
    int oh, ow;
    CHECK(lade_conv2d_out_size(&g, 4, 4, &oh, &ow) == LADE_EINVAL);
    g.pad_h = g.pad_w = 1 << 30; /* 2 * pad overflows int */
    CHECK(lade_conv2d_out_size(&g, 4, 4, &oh, &ow) == LADE_EINVAL);
}

TEST(rng_is_reproducible_and_streams_differ) {
    lade_rng a, b, c;
    lade_rng_seed(&a, 42, 0);
    lade_rng_seed(&b, 42, 0);
    lade_rng_seed(&c, 42, 1);
    int same = 1, differ = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = lade_rng_next_u64(&a), y = lade_rng_next_u64(&b), z = lade_rng_next_u64(&c);
        same &= x == y;
        differ |= x != z;
    }
    CHECK(same && differ);
    double s = 0, sq = 0;
    for (int i = 0; i < 100000; i++) {
        double v = lade_rng_normal(&a);
        s += v;
        sq += v * v;
    }
    CHECK_CLOSE(s / 100000, 0.0, 0.02);
    CHECK_CLOSE(sq / 100000, 1.0, 0.02);
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) hist[lade_rng_below(&a, 7)]++;
    for (int k = 0; k < 7; k++) CHECK(hist[k] > 9500 && hist[k] < 10500);
}

/* Central differences of the softmax-CE loss at three parameters (probes) against their
 * backward gradients g; p are the model's parameters, perturbed by +-eps and restored.
 * Returns how many of the three disagree (or -1 when the batch does not fit). */
static int finite_difference_mismatches(lade_resnet *net, const float *img, int n, int h, int w,
                                        const int64_t *labels, int classes, float *p, const float *g, const size_t probes[3], float eps) {
    float logits[64];
    if (n * classes > 64) return -1;
    int mismatches = 0;
    for (int k = 0; k < 3; k++) {
        size_t i = probes[k];
        float saved = p[i];
        double f[2];
        for (int s = 0; s < 2; s++) {
            p[i] = saved + (s ? -eps : eps);
            lade_resnet_forward(net, img, n, h, w, LADE_TRAIN, 1, logits);
            lade_softmax_ce(&f[s], NULL, 1.0f, logits, labels, n, classes);
        }
        p[i] = saved;
        double fd = (f[0] - f[1]) / (2 * eps);
        mismatches += !(fabs(g[i] - fd) <= 2e-3 + 0.05 * fabs(fd));
    }
    return mismatches;
}

/* The whole model: deterministic init, parameter count, and a finite-difference
 * check of a few weight gradients through every layer type. */
TEST(resnet_init_forward_backward) {
    lade_resnet *net;
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 100, NULL));
    if (!net) return;
    CHECK(lade_resnet_num_params(net) == 550388);
    CHECK(lade_resnet_num_buffers(net) == 2528);
    CHECK(strcmp(lade_resnet_tensor(net, 0)->name, "conv1.weight") == 0);
    lade_rng r;
    lade_rng_seed(&r, 7, 0);
    lade_resnet_init(net, &r);
    float *copy = malloc(lade_resnet_num_params(net) * sizeof(float));
    memcpy(copy, lade_resnet_params(net), lade_resnet_num_params(net) * sizeof(float));
    lade_rng_seed(&r, 7, 0);
    lade_resnet_init(net, &r);
    CHECK(memcmp(copy, lade_resnet_params(net), lade_resnet_num_params(net) * sizeof(float)) == 0);
    free(copy);
    lade_resnet_destroy(net);

    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_CLASSIC, LADE_STEM_3X3, 5, NULL));
    lade_rng_seed(&r, 8, 0);
    lade_resnet_init(net, &r);
    int n = 4, h = 8, w = 8;
    float *img = random_floats(&r, (size_t)n * 3 * h * w, 1.0), logits[20], dlogits[20] = {0};
    int64_t labels[4] = {0, 1, 2, 4};
    double loss;
    CHECK_OK(lade_resnet_forward(net, img, n, h, w, LADE_TRAIN, 0, logits));
    CHECK_OK(lade_softmax_ce(&loss, dlogits, 1.0f, logits, labels, n, 5));
    lade_resnet_zero_grad(net);
    CHECK_OK(lade_resnet_backward(net, dlogits, n));
    CHECK(lade_resnet_backward(net, dlogits, n + 1) == LADE_EINVAL);
    float *p = lade_resnet_params(net), *g = lade_resnet_grads(net);
    /* a weight from the stem, from a middle block and from the classifier */
    const size_t probes[3] = {5, lade_resnet_tensor(net, 30)->offset + 3, lade_resnet_num_params(net) - 7};
    CHECK(finite_difference_mismatches(net, img, n, h, w, labels, 5, p, g, probes, 1e-2f) == 0);
    free(img);
    lade_resnet_destroy(net);
}

/* ResNet-18 with torchvision's stem (7x7/2 + max pool) and projection
 * shortcuts: its size, names, a refused bad stem, and finite differences at a
 * layer2 conv weight, a projection weight and a classifier weight (every
 * gradient is compared with PyTorch in tests/test_resnet18.py; differences
 * through the float32 stem and max pool are too noisy for a tight check). */
TEST(resnet18_forward_backward_and_projection_shortcuts) {
    lade_resnet *net;
    CHECK(lade_resnet_create(&net, LADE_RESNET18, (lade_stem)7, 10, NULL) == LADE_EINVAL);
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET18, LADE_STEM_7X7_STRIDE2_MAXPOOL, 5, NULL));
    if (!net) return;
    CHECK(lade_resnet_feature_dim(net) == 512);
    CHECK(lade_resnet_num_params(net) == 11181642 - 5 * 513); /* torchvision's resnet18(num_classes=10) less 5 classes */
    CHECK(lade_resnet_num_convs(net) == 1 + 8 * 2 + 3);
    int proj = -1, mid = -1;
    for (int i = 0; i < lade_resnet_num_tensors(net); i++) {
        if (strcmp(lade_resnet_tensor(net, i)->name, "layer3.0.downsample.0.weight") == 0) proj = i;
        if (strcmp(lade_resnet_tensor(net, i)->name, "layer2.1.conv2.weight") == 0) mid = i;
    }
    CHECK(proj >= 0 && mid >= 0);
    if (proj < 0 || mid < 0) return;
    CHECK(lade_resnet_tensor(net, proj)->dims[0] == 256 && lade_resnet_tensor(net, proj)->dims[2] == 1);
    lade_rng r;
    lade_rng_seed(&r, 11, 0);
    lade_resnet_init(net, &r);
    int n = 2, h = 64, w = 64;
    float *img = random_floats(&r, (size_t)n * 3 * h * w, 1.0), logits[10], dlogits[10] = {0};
    int64_t labels[2] = {1, 4};
    double loss;
    CHECK_OK(lade_resnet_forward(net, img, n, h, w, LADE_TRAIN, 0, logits));
    CHECK_OK(lade_softmax_ce(&loss, dlogits, 1.0f, logits, labels, n, 5));
    lade_resnet_zero_grad(net);
    CHECK_OK(lade_resnet_backward(net, dlogits, n));
    float *p = lade_resnet_params(net), *g = lade_resnet_grads(net);
    const size_t probes[3] = {lade_resnet_tensor(net, mid)->offset + 1234, lade_resnet_tensor(net, proj)->offset + 300,
                              lade_resnet_num_params(net) - 9};
    CHECK(finite_difference_mismatches(net, img, n, h, w, labels, 5, p, g, probes, 1e-3f) == 0);
    free(img);
    lade_resnet_destroy(net);
}

/* ---- kernel variants ------------------------------------------------------------------ */
/* Splits cpu info's space-separated list of supported variants. */
static int supported_variants(char names[][16], int max) {
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    int count = 0;
    for (const char *p = info.supported; *p && count < max;) {
        int len = 0;
        while (p[len] && p[len] != ' ') len++;
        snprintf(names[count++], 16, "%.*s", len, p);
        p += len;
        while (*p == ' ') p++;
    }
    return count;
}

/* Batch norm forward (train) and backward of one variant against double sums. */
static void check_batchnorm_against_double(int *failures, int n, int c, int h, int w) {
    lade_rng r;
    lade_rng_seed(&r, 9, 0);
    size_t plane = (size_t)h * w, count = (size_t)n * c * plane;
    float *x = random_floats(&r, count, 3.0), *y = zeros(count), *dy = random_floats(&r, count, 1.0), *dx = zeros(count);
    float *gamma = random_floats(&r, c, 1.0), *beta = random_floats(&r, c, 1.0);
    float *mean = zeros(c), *invstd = zeros(c), *dgamma = zeros(c), *dbeta = zeros(c);
    lade_maps xm = lade_maps_nchw(x, n, c, h, w);
    CHECK_OK(lade_batchnorm2d_forward_train(lade_maps_nchw(y, n, c, h, w), mean, invstd, NULL, NULL, xm, gamma, beta,
                                            0.1f, 1e-5f));
    CHECK_OK(lade_batchnorm2d_backward(lade_maps_nchw(dx, n, c, h, w), dgamma, dbeta, lade_maps_nchw(dy, n, c, h, w), xm,
                                       gamma, mean, invstd));
    for (int ch = 0; ch < c; ch++) {
        double s = 0, sq = 0, sdy = 0, sdyx = 0, m, is;
        for (int b = 0; b < n; b++)
            for (size_t p = 0; p < plane; p++) s += x[((size_t)b * c + ch) * plane + p];
        m = s / (n * plane);
        for (int b = 0; b < n; b++)
            for (size_t p = 0; p < plane; p++) sq += pow(x[((size_t)b * c + ch) * plane + p] - m, 2);
        is = 1.0 / sqrt(sq / (n * plane) + 1e-5);
        CHECK_CLOSE(mean[ch], m, 1e-5 * (1 + fabs(m)));
        CHECK_CLOSE(invstd[ch], is, 1e-5 * is);
        for (int b = 0; b < n; b++)
            for (size_t p = 0; p < plane; p++) {
                size_t i = ((size_t)b * c + ch) * plane + p;
                sdy += dy[i];
                sdyx += dy[i] * (x[i] - m) * is;
            }
        CHECK_CLOSE(dbeta[ch], sdy, 1e-5 * (1 + fabs(sdy)));
        CHECK_CLOSE(dgamma[ch], sdyx, 1e-5 * (1 + fabs(sdyx)));
        double worst_y = 0, worst_dx = 0;
        for (int b = 0; b < n; b++)
            for (size_t p = 0; p < plane; p++) {
                size_t i = ((size_t)b * c + ch) * plane + p;
                double xhat = (x[i] - m) * is;
                worst_y = fmax(worst_y, fabs(y[i] - (xhat * gamma[ch] + beta[ch])));
                double ref = gamma[ch] * is * (dy[i] - sdy / (n * plane) - xhat * sdyx / (n * plane));
                worst_dx = fmax(worst_dx, fabs(dx[i] - ref) / (1 + fabs(ref)));
            }
        CHECK(worst_y < 1e-5 * (1 + fabs(gamma[ch]) * 4 + fabs(beta[ch])));
        CHECK(worst_dx < 1e-4);
    }
    free(x), free(y), free(dy), free(dx), free(gamma), free(beta), free(mean), free(invstd), free(dgamma), free(dbeta);
}

/* Every variant this CPU runs: the direct convolution (8- and 16-pixel runs,
 * odd heights and widths, tails, stride 2), the Winograd ones and batch norm against the naive
 * references. */
TEST(every_kernel_variant_matches_the_references) {
    char names[8][16];
    int count = supported_variants(names, 8);
    const char *before = lade_get_isa();
    CHECK(count >= 1);
    const lade_conv2d_geom geoms[] = {
        {5, 8, 3, 3, 1, 1, 1, 1}, {3, 16, 3, 3, 1, 1, 1, 1}, {2, 8, 5, 5, 1, 1, 2, 2}, {3, 8, 1, 1, 1, 1, 0, 0},
        /* stride 2: the input gradient as four phase correlations */
        {8, 8, 3, 3, 2, 2, 1, 1}, {16, 4, 3, 3, 2, 2, 1, 1},
        /* the Winograd weight gradient where the output is even-sized: 32 input channels; 16 (with
         * 16-float vectors one odd vector, 12 output channels: a tile of 8 and one of 4); 40 (five
         * 8-float vectors) */
        {32, 8, 3, 3, 1, 1, 1, 1}, {16, 12, 3, 3, 1, 1, 1, 1}, {40, 8, 3, 3, 1, 1, 1, 1},
    };
    for (int v = 0; v < count; v++) {
        CHECK_OK(lade_set_isa(names[v]));
        CHECK(strcmp(lade_get_isa(), names[v]) == 0);
        int before_failures = *failures;
        const int shapes[][2] = {{6, 16}, {3, 16}, {5, 32}, {4, 8}, {7, 48}, {9, 15}, {2, 32}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_conv_against_naive(failures, geoms, sizeof geoms / sizeof geoms[0], shapes[s][0], shapes[s][1]);
        check_batchnorm_against_double(failures, 3, 4, 5, 3);  /* planes shorter than a vector */
        check_batchnorm_against_double(failures, 2, 3, 5, 8);  /* 40: vectors and a tail */
        check_batchnorm_against_double(failures, 4, 2, 32, 32);
        if (*failures != before_failures) fprintf(stderr, "  (kernel variant %s)\n", names[v]);
    }
    CHECK_OK(lade_set_isa(before));
}

/* lade.set_isa may switch the variant after a model sized its workspace, so the size must not
 * depend on the variant: the 16-channel stage takes the Winograd weight gradient under 16-float
 * variants only, and its workspace is there under every one (batch 128: at small batches the
 * column matrix is the larger and would hide a difference). w16_avx2 covers it on AVX2 machines. */
TEST(conv_workspace_size_does_not_depend_on_the_variant) {
    char names[8][16];
    int count = supported_variants(names, 8);
    const char *before = lade_get_isa();
    const lade_conv2d_geom geoms[] = {{16, 16, 3, 3, 1, 1, 1, 1}, {32, 32, 3, 3, 1, 1, 1, 1}, {16, 32, 3, 3, 2, 2, 1, 1}};
    for (size_t i = 0; i < sizeof geoms / sizeof geoms[0]; i++) {
        CHECK_OK(lade_set_isa(names[0]));
        size_t first = lade_conv2d_workspace_size(&geoms[i], 128, 32, 32);
        for (int v = 1; v < count; v++) {
            CHECK_OK(lade_set_isa(names[v]));
            CHECK(lade_conv2d_workspace_size(&geoms[i], 128, 32, 32) == first);
        }
    }
    CHECK_OK(lade_set_isa(before));
}

TEST(an_unsupported_or_unknown_variant_is_refused) {
    const char *before = lade_get_isa();
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    CHECK(strcmp(info.active, before) == 0);
    CHECK(info.model[0] != '\0');
    CHECK(strstr(info.supported, "generic") != NULL);
    if (!strstr(info.supported, "avx512")) {
        CHECK(lade_set_isa("avx512") == LADE_EINVAL);
        CHECK(strstr(lade_error_detail(), "avx512") != NULL && strstr(lade_error_detail(), "supports") != NULL);
    }
    CHECK(lade_set_isa("sse9") == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "sse9") != NULL && strstr(lade_error_detail(), "generic") != NULL);
    CHECK(strcmp(lade_get_isa(), before) == 0); /* a refused switch changes nothing */
}

/* rms(a - ref) / rms(ref) */
static double rms_rel(const float *a, const float *ref, size_t n) {
    double e = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) e += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), r += (double)ref[i] * ref[i];
    return sqrt(e / r);
}

/* The bfloat16 kernels (the Winograd blocks and weight-gradient chunks) of every variant that has
 * them against the naive reference (double sums). Tolerance, as derived in tests/test_bf16.py: one
 * bfloat16 rounding per factor is 0.0016 rms relative, 0.0023 per product, times Winograd's rms gain
 * of 5/3 (the energy of the transformed terms against the direct sum): ~0.004, independent of the
 * reduction length for random signs; allowed: 2^-7. Shapes: 16-pixel runs (32 x 32), 8-pixel runs
 * (16 x 16), two tile rows per vector (8 x 8), an odd cin (3, a zero partner channel), and weight
 * gradients of 16, 32 and 64 input channels. */
TEST(bf16_kernels_match_the_naive_reference) {
    const char *before = lade_get_isa();
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    const char *bf16_variants[] = {"avx512_bf16", "bf16_emulated"};
    const struct { int cin, cout, h; } shapes[] = {{16, 16, 32}, {32, 16, 16}, {64, 64, 8}, {3, 16, 32}};
    lade_rng r;
    lade_rng_seed(&r, 5, 0);
    for (int v = 0; v < 2; v++) {
        if (!strstr(info.supported, bf16_variants[v])) continue;
        CHECK_OK(lade_set_isa(bf16_variants[v]));
        CHECK_OK(lade_bf16_check("test"));
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const lade_conv2d_geom g = {shapes[s].cin, shapes[s].cout, 3, 3, 1, 1, 1, 1};
            const int n = 2, h = shapes[s].h;
            size_t nin = (size_t)n * g.cin * h * h, nout = (size_t)n * g.cout * h * h, nw = (size_t)g.cout * g.cin * 9;
            float *x = random_floats(&r, nin, 1.0), *wt = random_floats(&r, nw, 0.5);
            float *dy = random_floats(&r, nout, 1.0);
            float *ref = zeros(nout), *y = zeros(nout), *dx_ref = zeros(nin), *dw_ref = zeros(nw);
            float *dx = zeros(nin), *dw = zeros(nw);
            float *ws = malloc(lade_conv2d_workspace_size(&g, n, h, h) * sizeof(float));
            lade_maps in = lade_maps_nchw(x, n, g.cin, h, h), out = lade_maps_nchw(y, n, g.cout, h, h);
            CHECK_OK(lade_conv2d_forward_naive(lade_maps_nchw(ref, n, g.cout, h, h), in, wt, NULL, &g));
            CHECK_OK(lade_conv2d_forward_precision(out, in, wt, NULL, &g, ws, LADE_BF16));
            double e = rms_rel(y, ref, nout);
            CHECK(e < 1.0 / 128 && e > 1e-4); /* within the tolerance, and bfloat16 did run */
            CHECK_OK(lade_conv2d_backward_naive(lade_maps_nchw(dx_ref, n, g.cin, h, h), dw_ref, NULL,
                                                lade_maps_nchw(dy, n, g.cout, h, h), in, wt, &g));
            CHECK_OK(lade_conv2d_backward_precision(lade_maps_nchw(dx, n, g.cin, h, h), dw, NULL,
                                                    lade_maps_nchw(dy, n, g.cout, h, h), in, wt, &g, ws, LADE_BF16));
            CHECK(rms_rel(dx, dx_ref, nin) < 1.0 / 128);
            CHECK(rms_rel(dw, dw_ref, nw) < 1.0 / 128);
            free(x), free(wt), free(dy), free(ref), free(y), free(dx_ref), free(dw_ref), free(dx), free(dw), free(ws);
        }
        if (*failures) fprintf(stderr, "  (kernel variant %s)\n", bf16_variants[v]);
    }
    CHECK_OK(lade_set_isa(before));
}

/* bf16 where the variant in use has no bfloat16 kernels is refused with a status naming it, and so
 * is a precision that does not exist; nothing is computed. */
TEST(bf16_without_the_kernels_is_refused) {
    const char *before = lade_get_isa();
    CHECK_OK(lade_set_isa("generic"));
    const lade_conv2d_geom g = {8, 8, 3, 3, 1, 1, 1, 1};
    float x[8 * 8 * 8] = {0}, y[8 * 8 * 8], w[8 * 8 * 9] = {0};
    float *ws = malloc(lade_conv2d_workspace_size(&g, 1, 8, 8) * sizeof(float));
    lade_maps in = lade_maps_nchw(x, 1, 8, 8, 8), out = lade_maps_nchw(y, 1, 8, 8, 8);
    CHECK(lade_conv2d_forward_precision(out, in, w, NULL, &g, ws, LADE_BF16) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "bf16") != NULL && strstr(lade_error_detail(), "generic") != NULL);
    CHECK(lade_conv2d_forward_precision(out, in, w, NULL, &g, ws, (lade_precision)7) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "precision") != NULL);
    lade_resnet *net;
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 10, NULL));
    CHECK(lade_resnet_set_precision(net, LADE_BF16) == LADE_EINVAL);
    CHECK(lade_resnet_get_precision(net) == LADE_FLOAT32);
    CHECK(lade_resnet_set_precision(net, (lade_precision)-1) == LADE_EINVAL);
    CHECK_OK(lade_set_isa("bf16_emulated"));
    CHECK_OK(lade_resnet_set_precision(net, LADE_BF16));
    CHECK(lade_resnet_get_precision(net) == LADE_BF16);
    lade_resnet_destroy(net);
    free(ws);
    CHECK_OK(lade_set_isa(before));
}

/* ---- synchronised batch norm ------------------------------------------------------------
 * Two replicas on two threads, each with its own model and half of a batch; the fake
 * all-reduce between them replaces each caller's buffer by the sum of both. */
#include <pthread.h>

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t done;
    double *bufs[2];
    size_t sizes[2];
    int arrived, mismatch;
    unsigned long generation;
} pair_reducer;

typedef struct {
    pair_reducer *pair;
    int slot;
    lade_resnet *net;
    const float *images, *dlogits;
    int n, h, w, classes;
    float *logits;
    lade_status forward, backward;
} replica;

static lade_status pair_reduce(double *buf, size_t n, void *ctx) {
    replica *me = ctx;
    pair_reducer *p = me->pair;
    pthread_mutex_lock(&p->lock);
    p->bufs[me->slot] = buf;
    p->sizes[me->slot] = n;
    if (++p->arrived == 2) {
        p->mismatch = p->sizes[0] != p->sizes[1];
        for (size_t i = 0; !p->mismatch && i < n; i++) p->bufs[0][i] = p->bufs[1][i] = p->bufs[0][i] + p->bufs[1][i];
        p->arrived = 0;
        p->generation++;
        pthread_cond_broadcast(&p->done);
    } else {
        unsigned long gen = p->generation;
        while (gen == p->generation) pthread_cond_wait(&p->done, &p->lock);
    }
    int mismatch = p->mismatch;
    pthread_mutex_unlock(&p->lock);
    return mismatch ? lade_fail(LADE_EINVAL, "the replicas reduced buffers of different sizes") : LADE_OK;
}

static void *replica_step(void *arg) {
    replica *r = arg;
    r->forward = lade_resnet_forward(r->net, r->images, r->n, r->h, r->w, LADE_TRAIN, 0, r->logits);
    lade_resnet_zero_grad(r->net);
    r->backward = r->forward ? r->forward : lade_resnet_backward(r->net, r->dlogits, r->n);
    return NULL;
}

static lade_resnet *seeded_model(int classes) {
    lade_resnet *net = NULL;
    lade_rng r;
    lade_rng_seed(&r, 21, 0);
    if (lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, classes, NULL) == LADE_OK) lade_resnet_init(net, &r);
    return net;
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return diff / (scale > 0 ? scale : 1.0);
}

/* Each half forwarded and back-propagated on its own replica, with or without the reducer;
 * returns the largest relative differences to the whole batch on one model. */
static void check_two_halves(int *failures, int sync, double *logits_diff, double *grads_diff) {
    const int half = 3, h = 8, w = 8, classes = 7;
    lade_rng r;
    lade_rng_seed(&r, 22, 0);
    float *images = random_floats(&r, (size_t)2 * half * 3 * h * w, 1.0);
    float *probe = random_floats(&r, (size_t)2 * half * classes, 1.0); /* d loss / d logits of sum(logits * probe) */
    float *logits = zeros((size_t)2 * half * classes), *half_logits = zeros((size_t)2 * half * classes);
    lade_resnet *whole = seeded_model(classes), *nets[2] = {seeded_model(classes), seeded_model(classes)};
    CHECK(whole && nets[0] && nets[1]);
    if (!whole || !nets[0] || !nets[1]) return;
    CHECK_OK(lade_resnet_forward(whole, images, 2 * half, h, w, LADE_TRAIN, 0, logits));
    lade_resnet_zero_grad(whole);
    CHECK_OK(lade_resnet_backward(whole, probe, 2 * half));

    pair_reducer pair = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};
    replica reps[2];
    pthread_t threads[2];
    for (int k = 0; k < 2; k++) {
        reps[k] = (replica){&pair, k, nets[k], images + (size_t)k * half * 3 * h * w,
                            probe + (size_t)k * half * classes, half, h, w, classes,
                            half_logits + (size_t)k * half * classes, LADE_OK, LADE_OK};
        if (sync) lade_resnet_set_bn_reducer(nets[k], pair_reduce, &reps[k]);
    }
    for (int k = 0; k < 2; k++) CHECK(pthread_create(&threads[k], NULL, replica_step, &reps[k]) == 0);
    for (int k = 0; k < 2; k++) pthread_join(threads[k], NULL);
    for (int k = 0; k < 2; k++) {
        CHECK_OK(reps[k].forward);
        CHECK_OK(reps[k].backward);
    }
    size_t np = lade_resnet_num_params(whole), nb = lade_resnet_num_buffers(whole);
    float *sum = zeros(np);
    for (size_t i = 0; i < np; i++) sum[i] = lade_resnet_grads(nets[0])[i] + lade_resnet_grads(nets[1])[i];
    *logits_diff = rel_diff(half_logits, logits, (size_t)2 * half * classes);
    *grads_diff = rel_diff(sum, lade_resnet_grads(whole), np);
    if (sync) { /* the running statistics: those of the whole batch, and the same bits on both replicas */
        CHECK(memcmp(lade_resnet_buffers(nets[0]), lade_resnet_buffers(nets[1]), nb * sizeof(float)) == 0);
        CHECK(rel_diff(lade_resnet_buffers(nets[0]), lade_resnet_buffers(whole), nb) < 1e-5);
    }
    free(images), free(probe), free(logits), free(half_logits), free(sum);
    lade_resnet_destroy(whole), lade_resnet_destroy(nets[0]), lade_resnet_destroy(nets[1]);
}

TEST(synchronised_batchnorm_over_two_halves_equals_the_whole_batch) {
    int threads = lade_get_num_threads();
    CHECK_OK(lade_set_num_threads(1)); /* one thread per replica, as under mpirun */
    double logits_diff, grads_diff;
    check_two_halves(failures, 1, &logits_diff, &grads_diff);
    CHECK(logits_diff < 1e-5);
    CHECK(grads_diff < 1e-4);
    /* and the check can fail: per-replica statistics differ from the whole batch's */
    check_two_halves(failures, 0, &logits_diff, &grads_diff);
    CHECK(logits_diff > 1e-2);
    CHECK(grads_diff > 1e-2);
    CHECK_OK(lade_set_num_threads(threads));
}

static lade_status failing_reduce(double *buf, size_t n, void *ctx) {
    return lade_fail(LADE_ESTATE, "the link to replica %d is down", *(int *)ctx);
}

static lade_status zeroing_reduce(double *buf, size_t n, void *ctx) {
    memset(buf, 0, n * sizeof *buf);
    return LADE_OK;
}

static int reduce_calls;
static lade_status counting_reduce(double *buf, size_t n, void *ctx) {
    reduce_calls++;
    return LADE_OK; /* one replica: the sum is the buffer itself */
}

TEST(synchronised_batchnorm_reports_a_failing_or_wrong_reducer) {
    lade_resnet *net = seeded_model(5);
    CHECK(net != NULL);
    if (!net) return;
    const int n = 2, h = 8, w = 8;
    lade_rng r;
    lade_rng_seed(&r, 23, 0);
    float *images = random_floats(&r, (size_t)n * 3 * h * w, 1.0), logits[10], dlogits[10] = {1, -1};
    size_t nb = lade_resnet_num_buffers(net);
    float *before = malloc(nb * sizeof(float));
    memcpy(before, lade_resnet_buffers(net), nb * sizeof(float));
    int replica_id = 1;
    lade_resnet_set_bn_reducer(net, failing_reduce, &replica_id);
    CHECK(lade_resnet_forward(net, images, n, h, w, LADE_TRAIN, 0, logits) == LADE_ESTATE);
    CHECK(strstr(lade_error_detail(), "batchnorm2d forward: the statistics reducer failed: the link to replica 1") !=
          NULL);
    CHECK(lade_resnet_backward(net, dlogits, n) == LADE_ESTATE); /* no training forward to go back through */
    lade_resnet_set_bn_reducer(net, zeroing_reduce, NULL);
    CHECK(lade_resnet_forward(net, images, n, h, w, LADE_TRAIN, 0, logits) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "total count of 0") != NULL);
    CHECK(memcmp(before, lade_resnet_buffers(net), nb * sizeof(float)) == 0); /* no statistics committed */
    /* eval mode never reduces; training calls it twice per batch norm forward and once backward */
    lade_resnet_set_bn_reducer(net, counting_reduce, NULL);
    reduce_calls = 0;
    CHECK_OK(lade_resnet_forward(net, images, n, h, w, LADE_EVAL, 0, logits));
    CHECK(reduce_calls == 0);
    CHECK_OK(lade_resnet_forward(net, images, n, h, w, LADE_TRAIN, 0, logits));
    int bn_layers = lade_resnet_num_convs(net);
    CHECK(reduce_calls == 2 * bn_layers); /* the mean, then the variance */
    lade_resnet_set_bn_reducer(net, failing_reduce, &replica_id);
    CHECK(lade_resnet_backward(net, dlogits, n) == LADE_ESTATE); /* a new reducer needs a new forward */
    lade_resnet_set_bn_reducer(net, counting_reduce, NULL);
    CHECK_OK(lade_resnet_forward(net, images, n, h, w, LADE_TRAIN, 0, logits));
    reduce_calls = 0;
    CHECK_OK(lade_resnet_backward(net, dlogits, n));
    CHECK(reduce_calls == bn_layers);
    free(images), free(before);
    lade_resnet_destroy(net);
}

/* ---- Causal Norm classifier ---------------------------------------------------------- */
/* The spec's formula (§1.7) in double: out (n, fout), TDE when mean is not NULL. */
static void causal_norm_reference(double *out, const float *x, const float *w, const float *mean,
                                  const lade_causal_norm_config *cfg, int n, int fin, int fout) {
    int len = fin / cfg->heads;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < fout; c++) {
            double sum = 0.0;
            for (int h = 0; h < cfg->heads; h++) {
                const float *xh = x + (size_t)i * fin + h * len, *wh = w + (size_t)c * fin + h * len;
                double nx = 0, nw = 0, nm = 0, xm = 0, xw = 0, mw = 0;
                for (int k = 0; k < len; k++) {
                    nx += (double)xh[k] * xh[k];
                    nw += (double)wh[k] * wh[k];
                    xw += (double)xh[k] * wh[k];
                    if (mean) {
                        const float *mh = mean + h * len;
                        nm += (double)mh[k] * mh[k];
                        xm += (double)xh[k] * mh[k];
                        mw += (double)mh[k] * wh[k];
                    }
                }
                nx = sqrt(nx), nw = sqrt(nw) + cfg->gamma, nm = sqrt(nm);
                double dot = xw / nx;
                if (mean) dot -= cfg->alpha * (xm / (nx * nm)) * mw / nm;
                sum += dot / nw;
            }
            out[(size_t)i * fout + c] = cfg->tau / cfg->heads * sum;
        }
}

/* sum(out * probe) of the training form, for finite differences */
static double causal_norm_probe(const float *x, const float *w, const float *probe, const lade_causal_norm_config *cfg,
                                int n, int fin, int fout, float *out, float *ws) {
    lade_causal_norm_forward(out, x, w, NULL, cfg, n, fin, fout, ws);
    double s = 0.0;
    for (int i = 0; i < n * fout; i++) s += (double)out[i] * probe[i];
    return s;
}

TEST(causal_norm_forward_tde_and_backward) {
    lade_rng r;
    lade_rng_seed(&r, 31, 0);
    const int n = 5, fin = 12, fout = 7;
    const lade_causal_norm_config cfg = {3, 16.0f, 1.0f / 32, 1.5f, 0.9f};
    float *x = random_floats(&r, n * fin, 1), *w = random_floats(&r, fout * fin, 0.3), *m = random_floats(&r, fin, 1);
    float *probe = random_floats(&r, n * fout, 1), *out = zeros(n * fout), *dx = zeros(n * fin), *dw = zeros(fout * fin);
    float *ws = malloc(lade_causal_norm_workspace_size(n, fin, fout) * sizeof(float));
    double ref[35];
    for (int tde = 0; tde < 2; tde++) {
        CHECK_OK(lade_causal_norm_forward(out, x, w, tde ? m : NULL, &cfg, n, fin, fout, ws));
        causal_norm_reference(ref, x, w, tde ? m : NULL, &cfg, n, fin, fout);
        for (int i = 0; i < n * fout; i++) CHECK_CLOSE(out[i], ref[i], 1e-4 * (1 + fabs(ref[i])));
    }
    /* backward accumulates: two calls give twice the gradient */
    for (int rep = 0; rep < 2; rep++) CHECK_OK(lade_causal_norm_backward(dx, dw, probe, x, w, &cfg, n, fin, fout, ws));
    const float eps = 1e-3f;
    for (int k = 0; k < 2; k++) {
        float *v = k ? w : x, *g = k ? dw : dx;
        int count = k ? fout * fin : n * fin;
        for (int i = 0; i < count; i++) {
            float saved = v[i];
            v[i] = saved + eps;
            double up = causal_norm_probe(x, w, probe, &cfg, n, fin, fout, out, ws);
            v[i] = saved - eps;
            double down = causal_norm_probe(x, w, probe, &cfg, n, fin, fout, out, ws);
            v[i] = saved;
            double fd = (up - down) / (2 * eps);
            CHECK_CLOSE(0.5 * g[i], fd, 2e-2 + 2e-2 * fabs(fd));
        }
    }
    /* a head of zero features or weights: finite logits and gradients (the 1e-12 floor), gamma 0 included */
    lade_causal_norm_config pure = cfg;
    pure.gamma = 0.0f;
    for (int k = 0; k < 4; k++) x[k] = 0.0f, w[k] = 0.0f;
    CHECK_OK(lade_causal_norm_forward(out, x, w, m, &pure, n, fin, fout, ws));
    CHECK_OK(lade_causal_norm_backward(dx, dw, probe, x, w, &pure, n, fin, fout, ws));
    int finite = 1;
    for (int i = 0; i < n * fout; i++) finite &= isfinite(out[i]);
    for (int i = 0; i < n * fin; i++) finite &= isfinite(dx[i]);
    for (int i = 0; i < fout * fin; i++) finite &= isfinite(dw[i]);
    CHECK(finite);
    /* bad configurations and sizes are statuses */
    lade_causal_norm_config bad = cfg;
    bad.heads = 5;
    CHECK(lade_causal_norm_forward(out, x, w, NULL, &bad, n, fin, fout, ws) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "divide the feature size 12, got 5") != NULL);
    bad = cfg, bad.tau = 0.0f;
    CHECK(lade_causal_norm_check(&bad, fin) == LADE_EINVAL);
    bad = cfg, bad.gamma = NAN;
    CHECK(lade_causal_norm_check(&bad, fin) == LADE_EINVAL);
    bad = cfg, bad.alpha = -1.0f;
    CHECK(lade_causal_norm_check(&bad, fin) == LADE_EINVAL);
    bad = cfg, bad.mean_momentum = 1.5f;
    CHECK(lade_causal_norm_check(&bad, fin) == LADE_EINVAL);
    CHECK(lade_causal_norm_backward(dx, dw, probe, x, w, &cfg, 0, fin, fout, ws) == LADE_EINVAL);
    free(x), free(w), free(m), free(probe), free(out), free(dx), free(dw), free(ws);
}

/* The model with the Causal Norm classifier: its tensors, the running feature mean (committed with
 * the BN statistics, through the reducer), TDE logits in eval mode, and finite differences. */
TEST(resnet_with_causal_norm_classifier) {
    const lade_causal_norm_config cfg = {2, 16.0f, 1.0f / 32, 1.5f, 0.9f};
    lade_resnet *net;
    lade_causal_norm_config bad = cfg;
    bad.heads = 3;
    CHECK(lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 100, &bad) == LADE_EINVAL);
    CHECK(net == NULL);
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 100, &cfg));
    if (!net) return;
    CHECK(lade_resnet_num_params(net) == 550388 - 100); /* no bias */
    CHECK(lade_resnet_num_buffers(net) == 2528 + 128);
    const lade_tensor_info *last = lade_resnet_tensor(net, lade_resnet_num_tensors(net) - 1);
    CHECK(strcmp(last->name, "fc.feature_mean") == 0 && last->is_buffer && last->ndim == 1 && last->dims[0] == 128);
    CHECK(strcmp(lade_resnet_tensor(net, lade_resnet_num_tensors(net) - 2)->name, "fc.weight") == 0);
    lade_resnet_destroy(net);

    const int classes = 5, n = 4, h = 8, w = 8, d = 64;
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_CLASSIC, LADE_STEM_3X3, classes, &cfg));
    lade_rng r;
    lade_rng_seed(&r, 32, 0);
    lade_resnet_init(net, &r);
    float *mean = lade_resnet_buffers(net) + lade_resnet_num_buffers(net) - d, expected[64] = {0};
    CHECK(mean[0] == 0.0f && mean[d - 1] == 0.0f);
    float *img = random_floats(&r, (size_t)n * 3 * h * w, 1.0), logits[20], tde[20];
    for (int step = 0; step < 2; step++) {
        CHECK_OK(lade_resnet_forward(net, img + step * 3 * h * w, n - step, h, w, LADE_TRAIN, 1, logits));
        const float *f = lade_resnet_features(net);
        for (int j = 0; j < d; j++) {
            double s = 0.0;
            for (int i = 0; i < n - step; i++) s += f[(size_t)i * d + j];
            expected[j] = 0.9f * expected[j] + (float)(s / (n - step));
        }
        CHECK(step || mean[0] == 0.0f); /* deferred: nothing moves before the commit */
        CHECK_OK(lade_resnet_commit_running_stats(net));
        CHECK(max_abs_diff(mean, expected, d) < 1e-6);
    }
    /* eval: the TDE logits of the eval-mode features with the running mean */
    CHECK_OK(lade_resnet_forward(net, img, n, h, w, LADE_EVAL, 0, logits));
    float *ws = malloc(lade_causal_norm_workspace_size(n, d, classes) * sizeof(float));
    const float *weight = lade_resnet_params(net) + lade_resnet_num_params(net) - (size_t)classes * d;
    CHECK_OK(lade_causal_norm_forward(tde, lade_resnet_features(net), weight, mean, &cfg, n, d, classes, ws));
    CHECK(max_abs_diff(logits, tde, (size_t)n * classes) == 0.0);
    /* the reducer gets one more call per training forward: the feature sums and the image count */
    lade_resnet_set_bn_reducer(net, counting_reduce, NULL);
    reduce_calls = 0;
    CHECK_OK(lade_resnet_forward(net, img, n, h, w, LADE_TRAIN, 1, logits));
    CHECK(reduce_calls == 2 * lade_resnet_num_convs(net) + 1);
    lade_resnet_set_bn_reducer(net, NULL, NULL);
    /* gradients through the classifier and the trunk */
    int64_t labels[4] = {0, 1, 2, 4};
    float dlogits[20] = {0};
    double loss;
    CHECK_OK(lade_resnet_forward(net, img, n, h, w, LADE_TRAIN, 1, logits));
    CHECK_OK(lade_softmax_ce(&loss, dlogits, 1.0f, logits, labels, n, classes));
    lade_resnet_zero_grad(net);
    CHECK_OK(lade_resnet_backward(net, dlogits, n));
    float *p = lade_resnet_params(net), *g = lade_resnet_grads(net);
    const size_t probes[3] = {5, lade_resnet_tensor(net, 30)->offset + 3, lade_resnet_num_params(net) - 7};
    /* a smaller step than the linear model's: tau = 16 on unit-norm features makes the loss curve faster */
    CHECK(finite_difference_mismatches(net, img, n, h, w, labels, classes, p, g, probes, 2e-3f) == 0);
    free(img), free(ws);
    lade_resnet_destroy(net);
}

static lade_status fails_on_129(double *buf, size_t n, void *ctx) {
    return n == 129 ? lade_fail(LADE_ESTATE, "the link is down") : LADE_OK;
}

/* The feature sums of the LADE variant (128 features and the count: the only call of 129) failing:
 * the forward fails naming it, and nothing is committed. */
TEST(causal_norm_mean_reducer_failure_is_named) {
    const lade_causal_norm_config cfg = {2, 16.0f, 1.0f / 32, 1.5f, 0.9f};
    lade_resnet *net;
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 5, &cfg));
    if (!net) return;
    lade_rng r;
    lade_rng_seed(&r, 33, 0);
    lade_resnet_init(net, &r);
    float *img = random_floats(&r, (size_t)2 * 3 * 8 * 8, 1.0), logits[10];
    lade_resnet_set_bn_reducer(net, fails_on_129, NULL);
    CHECK(lade_resnet_forward(net, img, 2, 8, 8, LADE_TRAIN, 0, logits) == LADE_ESTATE);
    CHECK(strstr(lade_error_detail(), "causal norm feature mean: the statistics reducer failed: the link is down"));
    CHECK(lade_resnet_commit_running_stats(net) == LADE_ESTATE);
    const float *mean = lade_resnet_buffers(net) + lade_resnet_num_buffers(net) - 128;
    int zero = 1;
    for (int j = 0; j < 128; j++) zero &= mean[j] == 0.0f;
    CHECK(zero);
    free(img);
    lade_resnet_destroy(net);
}
