/* fma_peak.c - the machine's FMA throughput, for benchmarks/train_step.py.
 *
 * Each thread runs CHAINS independent chains acc = acc * a + b on vectors of
 * WIDTH floats (enough chains to cover the FMA latency on every port), so
 * the figure is the core's multiply-add limit, not a latency bound. Built by
 * the benchmark with the target flags of the widest vector width the CPU has:
 *     cc -O2 -ffp-contract=fast -DWIDTH=16 -mavx512f -mfma fma_peak.c -lpthread
 * Prints GFLOP/s (2 flops per lane per FMA) over all threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef WIDTH
#define WIDTH 8
#endif
#define CHAINS 12
typedef float vec __attribute__((vector_size(4 * WIDTH)));

static long iterations;
static volatile float seed = 1.0f; /* volatile: the compiler cannot fold the loop away */

static void *run(void *out) {
    vec acc[CHAINS], a = (vec){0} + 0.999999f, b = (vec){0} + 1e-7f;
    for (int c = 0; c < CHAINS; c++) acc[c] = (vec){0} + seed * (float)(c + 1);
    for (long i = 0; i < iterations; i++)
#pragma GCC unroll 16 /* unrolled, the chains live in registers */
        for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * a + b;
    float s = 0.0f;
    for (int c = 0; c < CHAINS; c++)
        for (int l = 0; l < WIDTH; l++) s += acc[c][l];
    *(float *)out = s;
    return NULL;
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    iterations = argc > 2 ? atol(argv[2]) : 100000000L;
    if (threads < 1 || threads > 256 || iterations < 1) {
        fprintf(stderr, "usage: fma_peak [threads 1..256] [iterations >= 1]\n");
        return 2;
    }
    pthread_t ids[256];
    float sums[256];
    double t0 = seconds();
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, run, &sums[t]);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    double dt = seconds() - t0, total = 0.0;
    for (int t = 0; t < threads; t++) total += sums[t];
    printf("%.1f %g\n", 2.0 * WIDTH * CHAINS * (double)iterations * threads / dt / 1e9, total);
    return 0;
}
