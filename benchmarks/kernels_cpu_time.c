/* kernels_cpu_time.c - the core's kernels timed by CPU time on one thread.
 *
 * On a shared machine wall-clock time swings with the other load; the CPU
 * time of the calling thread (CLOCK_THREAD_CPUTIME_ID) with one lade thread
 * does not, so two builds can be compared kernel by kernel. Prints the best
 * of `reps` repetitions, in ms, per ResNet-32 convolution shape (forward,
 * input gradient, weight gradient, at batch 128, CNHW maps as the model uses
 * them) and for the whole model (training step at batch 128 and 256, eval
 * forward at batch 256, ms per image).
 *
 * Build against a source tree (benchmarks/kernels_cpu_time.sh builds the
 * current tree and any older commit, and runs them interleaved):
 *   cc -O3 -std=c11 -D_GNU_SOURCE -Icsrc/include -Icsrc benchmarks/kernels_cpu_time.c \
 *      csrc/base/*.c csrc/nn/*.c -lopenblas -lm -pthread -o kernels_cpu_time
 * Usage: kernels_cpu_time [reps] [isa|-] [conv|model|all|step]
 * "step" times only the training step at batch 128, in float32 and (where the
 * variant has the bfloat16 kernels) in bf16, alternately, and prints the
 * CPU-time share of each layer kind (the model's profile, wall time of the one
 * thread, taken over the best repetition's pass). */
#include <string.h>
#include "lade.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *random_floats(size_t count, lade_rng *rng) {
    float *p = malloc(count * sizeof *p);
    for (size_t i = 0; i < count; i++) p[i] = (float)lade_rng_normal(rng);
    return p;
}

#define BEST(reps, best, body)                          \
    do {                                                \
        best = 1e30;                                    \
        for (int r_ = 0; r_ < (reps); r_++) {           \
            double t0_ = cpu_seconds();                 \
            body;                                       \
            double dt_ = cpu_seconds() - t0_;           \
            if (dt_ < best) best = dt_;                 \
        }                                               \
    } while (0)

static void conv_shape(const char *name, int n, int cin, int cout, int size, int stride, int reps, lade_rng *rng) {
    lade_conv2d_geom g = {cin, cout, 3, 3, stride, stride, 1, 1};
    int oh, ow;
    lade_conv2d_out_size(&g, size, size, &oh, &ow);
    float *x = random_floats((size_t)n * cin * size * size, rng), *dx = calloc((size_t)n * cin * size * size, 4);
    float *y = random_floats((size_t)n * cout * oh * ow, rng), *w = random_floats((size_t)cout * cin * 9, rng);
    float *dw = calloc((size_t)cout * cin * 9, 4);
    float *ws = malloc(lade_conv2d_workspace_size(&g, n, size, size) * sizeof(float));
    lade_maps in = lade_maps_cnhw(x, n, cin, size, size), din = lade_maps_cnhw(dx, n, cin, size, size);
    lade_maps out = lade_maps_cnhw(y, n, cout, oh, ow), none = {0};
    double fwd, bin, bw;
    BEST(reps, fwd, lade_conv2d_forward(out, in, w, NULL, &g, ws));
    BEST(reps, bin, lade_conv2d_backward(din, NULL, NULL, out, in, w, &g, ws));
    BEST(reps, bw, lade_conv2d_backward(none, dw, NULL, out, in, w, &g, ws));
    double gflop = 2.0 * cout * cin * 9 * oh * ow * n * 1e-9;
    printf("conv %-18s fwd %7.2f ms %5.1f GF/s  din %7.2f ms %5.1f GF/s  dw %7.2f ms %5.1f GF/s\n", name, 1e3 * fwd,
           gflop / fwd, 1e3 * bin, gflop / bin, 1e3 * bw, gflop / bw);
    free(x), free(dx), free(y), free(w), free(dw), free(ws);
}

static void model(int reps, lade_rng *rng) {
    lade_resnet *net;
    if (lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 100, NULL)) return;
    lade_resnet_init(net, rng);
    float *images = random_floats((size_t)256 * 3 * 32 * 32, rng), *logits = malloc(256 * 100 * sizeof(float));
    float *dlogits = random_floats(256 * 100, rng);
    for (int i = 0; i < 256 * 100; i++) dlogits[i] *= 1e-3f;
    const int batches[2] = {128, 256};
    for (int k = 0; k < 2; k++) {
        int n = batches[k];
        double best;
        lade_resnet_forward(net, images, n, 32, 32, LADE_TRAIN, 0, logits); /* sizes the arena */
        BEST(reps, best, {
            lade_resnet_forward(net, images, n, 32, 32, LADE_TRAIN, 0, logits);
            lade_resnet_backward(net, dlogits, n);
        });
        printf("model train step batch %d: %.3f ms per image\n", n, 1e3 * best / n);
    }
    double best;
    lade_resnet_forward(net, images, 256, 32, 32, LADE_EVAL, 0, logits);
    BEST(reps, best, lade_resnet_forward(net, images, 256, 32, 32, LADE_EVAL, 0, logits));
    printf("model eval batch 256: %.3f ms per image\n", 1e3 * best / 256);
    free(images), free(logits), free(dlogits);
    lade_resnet_destroy(net);
}

/* float32 and bf16 training steps at batch 128, alternately, best of reps each */
static void step(int reps, lade_rng *rng) {
    lade_resnet *net;
    if (lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, 100, NULL)) return;
    lade_resnet_init(net, rng);
    const int n = 128;
    float *images = random_floats((size_t)n * 3 * 32 * 32, rng), *logits = malloc(n * 100 * sizeof(float));
    float *dlogits = random_floats(n * 100, rng);
    for (int i = 0; i < n * 100; i++) dlogits[i] *= 1e-3f;
    const int has_bf16 = lade_bf16_check("step") == LADE_OK;
    lade_clear_error();
    double best[2] = {1e30, 1e30}, prof[2][LADE_PROF_COUNT];
    for (int r = 0; r < reps; r++)
        for (int p = 0; p < 1 + has_bf16; p++) {
            lade_resnet_set_precision(net, p ? LADE_BF16 : LADE_FLOAT32);
            lade_resnet_forward(net, images, n, 32, 32, LADE_TRAIN, 0, logits); /* sizes the arena */
            lade_resnet_backward(net, dlogits, n);
            lade_resnet_profile_reset(net);
            double t0 = cpu_seconds();
            lade_resnet_forward(net, images, n, 32, 32, LADE_TRAIN, 0, logits);
            lade_resnet_backward(net, dlogits, n);
            double dt = cpu_seconds() - t0;
            if (dt < best[p]) {
                best[p] = dt;
                lade_resnet_profile(net, prof[p]);
            }
        }
    for (int p = 0; p < 1 + has_bf16; p++) {
        double total = 0.0;
        for (int k = 0; k < LADE_PROF_COUNT; k++) total += prof[p][k];
        printf("step batch %d %s: %.1f ms  (", n, p ? "bf16" : "float32", 1e3 * best[p]);
        for (int k = 0; k < LADE_PROF_COUNT; k++)
            printf("%s%s %.1f%%", k ? ", " : "", lade_prof_name((lade_prof_kind)k), 100.0 * prof[p][k] / total);
        printf(")\n");
    }
    if (has_bf16) printf("step bf16/float32 speed-up: %.3f\n", best[0] / best[1]);
    free(images), free(logits), free(dlogits);
    lade_resnet_destroy(net);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    const char *what = argc > 3 ? argv[3] : "all";
    if (argc > 2 && strcmp(argv[2], "-") != 0 && lade_set_isa(argv[2])) {
        fprintf(stderr, "%s\n", lade_error_detail());
        return 1;
    }
    lade_set_num_threads(1);
    lade_rng rng;
    lade_rng_seed(&rng, 1, 0);
    const int n = 128;
    if (strcmp(what, "step") == 0) {
        step(reps, &rng);
        return 0;
    }
    if (strcmp(what, "model") == 0) {
        model(reps, &rng);
        return 0;
    }
    conv_shape("16->16 32x32", n, 16, 16, 32, 1, reps, &rng);
    conv_shape("16->32 32x32 s2", n, 16, 32, 32, 2, reps, &rng);
    conv_shape("32->32 16x16", n, 32, 32, 16, 1, reps, &rng);
    conv_shape("32->64 16x16 s2", n, 32, 64, 16, 2, reps, &rng);
    conv_shape("64->64 8x8", n, 64, 64, 8, 1, reps, &rng);
    if (strcmp(what, "all") == 0) model(reps, &rng);
    return 0;
}
