/* test_ltmath.c - C-level tests of the long-tail math (no Python). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lade.h"
#include "ltmath/ltmath_internal.h"
#include "check.h"

enum { N = 6, K = 5 };

static void fill(float *z, int count, uint64_t seed, double scale) {
    lade_rng r;
    lade_rng_seed(&r, seed, 0);
    for (int i = 0; i < count; i++) z[i] = (float)(scale * lade_rng_normal(&r));
}

static const int64_t LABELS[N] = {0, 2, 2, 0, 4, 0}; /* classes 1 and 3 absent */
static const float PRIOR[K] = {0.4f, 0.25f, 0.15f, 0.12f, 0.08f};

TEST(lt_exp_is_accurate) {
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.01f) {
        double rel = fabs(lt_exp(x) - exp((double)x)) / exp((double)x);
        worst = rel > worst ? rel : worst;
    }
    CHECK(worst < 5e-7);
    CHECK(lt_exp(-1000.0f) < 1e-37f && lt_exp(-1000.0f) >= 0);
}

/* the vector exponential and the row helpers give the scalar code's bits */
TEST(vector_helpers_match_scalar_code) {
    enum { LEN = 5 * LT_LANES + 7 };
    float x[LEN], e[LEN];
    fill(x, LEN, 11, 30.0);
    x[3] = -1000.0f; /* clamped */
    x[4] = 1000.0f;
    for (int k = 0; k + LT_LANES <= LEN; k += LT_LANES) {
        lt_vec v = lt_exp_vec(lt_load(x + k));
        for (int j = 0; j < LT_LANES; j++) CHECK(v[j] == lt_exp(x[k + j]));
    }
    x[4] = 0.0f;
    float max = x[0], partial[LT_LANES] = {0}, sum = 0.0f;
    for (int k = 0; k < LEN; k++) max = x[k] > max ? x[k] : max;
    CHECK(lt_row_max(x, LEN) == max);
    float total = lt_exp_shift_sum(e, x, max, LEN);
    int full = LEN / LT_LANES * LT_LANES;
    for (int k = 0; k < full; k++) partial[k % LT_LANES] += lt_exp(x[k] - max);
    for (int k = full; k < LEN; k++) sum += lt_exp(x[k] - max);
    for (int j = 0; j < LT_LANES; j++) sum += partial[j];
    CHECK(total == sum && lt_sum(e, LEN) == sum);
    for (int k = 0; k < LEN; k++) CHECK(e[k] == lt_exp(x[k] - max));
}

/* lade_lade_loss against lade_lade_ce then lade_lader with scale * alpha, bit for bit: small
 * batches and one on the thread pool whose classes end in a partial vector group */
TEST(lade_loss_is_its_parts) {
    const int shapes[3][2] = {{N, K}, {7, 37}, {256, 300}};
    for (int s = 0; s < 3; s++)
        for (int form = 0; form < 2; form++) {
            int n = shapes[s][0], k = shapes[s][1];
            size_t size = (size_t)n * k;
            float *z = malloc(size * sizeof(float)), *g1 = malloc(size * sizeof(float));
            float *g2 = malloc(size * sizeof(float)), *prior = malloc((size_t)k * sizeof(float));
            int64_t *y = malloc((size_t)n * sizeof(int64_t)), *counts = malloc((size_t)k * sizeof(int64_t));
            fill(z, (int)size, 20 + (uint64_t)s, 3.0);
            fill(g1, (int)size, 30 + (uint64_t)s, 0.1); /* gradients accumulate */
            memcpy(g2, g1, size * sizeof(float));
            for (int i = 0; i < n; i++) y[i] = (i * 7 + 3) % k;
            CHECK_OK(lade_lt_profile(counts, k, 500.0, 0.01, LADE_PROFILE_EXP));
            CHECK_OK(lade_prior_from_counts(prior, counts, k, 0.0));
            double total, ce, reg, ce_part, reg_part;
            const double alpha = 0.1;
            const float scale = 0.5f, lambda = form ? 0.3f : 0.01f;
            CHECK_OK(lade_lade_loss(&total, &ce, &reg, g1, scale, z, y, n, k, prior, alpha, lambda,
                                    (lade_lader_form)form));
            CHECK_OK(lade_lade_ce(&ce_part, g2, scale, z, y, n, k, prior));
            CHECK_OK(lade_lader(&reg_part, g2, (float)(scale * alpha), z, y, n, k, prior, lambda, (lade_lader_form)form));
            CHECK(ce == ce_part && reg == reg_part && total == ce_part + alpha * reg_part);
            CHECK(memcmp(g1, g2, size * sizeof(float)) == 0);
            double value_only;
            CHECK_OK(lade_lade_loss(&value_only, NULL, NULL, NULL, 1.0f, z, y, n, k, prior, alpha, lambda,
                                    (lade_lader_form)form));
            CHECK(value_only == total);
            free(z), free(g1), free(g2), free(prior), free(y), free(counts);
        }
}

TEST(lade_loss_checks_its_arguments) {
    float z[N * K], g[N * K] = {0};
    fill(z, N * K, 5, 1.0);
    double v;
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, LABELS, N, K, PRIOR, -0.1, 0.01f, 0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "'alpha' must be finite and >= 0") != NULL);
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, LABELS, N, K, PRIOR, NAN, 0.01f, 0) == LADE_EINVAL);
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, LABELS, N, K, PRIOR, 0.1, -1.0f, 0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "'remine_lambda' must be finite and >= 0") != NULL);
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, LABELS, N, K, PRIOR, 0.1, 0.01f, (lade_lader_form)2) ==
          LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "'form'") != NULL);
    float wrong[K] = {0.5f, 0.5f, 0.5f, 0.1f, 0.1f};
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, LABELS, N, K, wrong, 0.1, 0.01f, 0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "'prior' must sum to 1") != NULL);
    int64_t bad[N] = {0, 1, 5, 0, 0, 0};
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, bad, N, K, PRIOR, 0.1, 0.01f, 0) == LADE_ERANGE);
    z[7] = INFINITY;
    CHECK(lade_lade_loss(&v, NULL, NULL, g, 1.0f, z, LABELS, N, K, PRIOR, 0.1, 0.01f, 0) == LADE_ENONFINITE);
    CHECK(strstr(lade_error_detail(), "at [1, 2]") != NULL);
    for (int k = 0; k < N * K; k++) CHECK(g[k] == 0.0f); /* refused before any work */
}

/* the non-finite scan skips clean blocks and names the first bad value past them */
TEST(nonfinite_logits_found_past_the_first_block) {
    enum { ROWS = 40, COLS = 100 };
    static float z[ROWS * COLS];
    fill(z, ROWS * COLS, 6, 1.0);
    z[3 * COLS + 7] = NAN; /* rows 3 and 35 */
    z[35 * COLS + 9] = -INFINITY;
    int64_t y[ROWS] = {0};
    double v;
    CHECK(lade_softmax_ce(&v, NULL, 1.0f, z, y, ROWS, COLS) == LADE_ENONFINITE);
    CHECK(strstr(lade_error_detail(), "at [3, 7]") != NULL);
    z[3 * COLS + 7] = 0.0f;
    CHECK(lade_softmax_ce(&v, NULL, 1.0f, z, y, ROWS, COLS) == LADE_ENONFINITE);
    CHECK(strstr(lade_error_detail(), "at [35, 9]") != NULL);
}

TEST(losses_accumulate_with_scale) {
    float z[N * K], g1[N * K] = {0}, g2[N * K] = {0};
    fill(z, N * K, 1, 2.0);
    double a, b;
    CHECK_OK(lade_lade_ce(&a, g1, 1.0f, z, LABELS, N, K, PRIOR));
    CHECK_OK(lade_lader(&b, g1, 0.5f, z, LABELS, N, K, PRIOR, 0.01f, LADE_LADER_OFFICIAL));
    for (int rep = 0; rep < 2; rep++) {
        CHECK_OK(lade_lade_ce(&a, g2, 0.5f, z, LABELS, N, K, PRIOR));
        CHECK_OK(lade_lader(&b, g2, 0.25f, z, LABELS, N, K, PRIOR, 0.01f, LADE_LADER_OFFICIAL));
    }
    for (int k = 0; k < N * K; k++) CHECK_CLOSE(g1[k], g2[k], 1e-6);
}

/* central differences of the LADER value (float logits, h = 1e-2, loss is smooth) */
TEST(lader_gradient_matches_finite_differences) {
    for (int form = 0; form < 2; form++) {
        float z[N * K], g[N * K] = {0};
        fill(z, N * K, 2, 1.0);
        double v, vp, vm;
        CHECK_OK(lade_lader(&v, g, 1.0f, z, LABELS, N, K, PRIOR, 0.1f, (lade_lader_form)form));
        for (int k = 0; k < N * K; k++) {
            float keep = z[k];
            z[k] = keep + 0.01f;
            lade_lader(&vp, NULL, 1.0f, z, LABELS, N, K, PRIOR, 0.1f, (lade_lader_form)form);
            z[k] = keep - 0.01f;
            lade_lader(&vm, NULL, 1.0f, z, LABELS, N, K, PRIOR, 0.1f, (lade_lader_form)form);
            z[k] = keep;
            CHECK_CLOSE((vp - vm) / 0.02, g[k], 2e-4);
        }
    }
}

/* spec §1.6: column sums of dL_R/dz = prior_c (2 lambda S_c + 1 - m_c / (m_c + 1e-8)) */
TEST(lader_column_sums) {
    float z[N * K], g[N * K] = {0};
    fill(z, N * K, 3, 2.0);
    double v;
    const float lambda = 0.3f;
    CHECK_OK(lade_lader(&v, g, 1.0f, z, LABELS, N, K, PRIOR, lambda, LADE_LADER_OFFICIAL));
    for (int c = 0; c < K; c++) {
        double max = -INFINITY, sum = 0, col = 0, m = 0;
        for (int i = 0; i < N; i++) max = z[i * K + c] > max ? z[i * K + c] : max;
        for (int i = 0; i < N; i++) {
            sum += exp(z[i * K + c] - max);
            col += g[i * K + c];
            m += LABELS[i] == c;
        }
        double S = max + log(sum) + log(1.0 / K + 1e-9) - log(PRIOR[c] + 1e-9) - log((double)N);
        CHECK_CLOSE(col, PRIOR[c] * (2 * lambda * S + 1 - m / (m + 1e-8)), 1e-6);
    }
}

TEST(cross_entropy_extreme_logits_finite) {
    float z[2 * 3] = {80, -80, 0, -80, -80, 80}, g[6] = {0};
    int64_t y[2] = {1, 2};
    double v;
    CHECK_OK(lade_softmax_ce(&v, g, 1.0f, z, y, 2, 3));
    CHECK_CLOSE(v, 80.0, 1e-4); /* row 0 pays 160, row 1 pays ~0 */
    for (int k = 0; k < 6; k++) CHECK(isfinite(g[k]));
}

TEST(bad_input_statuses) {
    float z[N * K], g[N * K] = {0};
    fill(z, N * K, 4, 1.0);
    double v;
    int64_t bad[N] = {0, 1, 5, 0, 0, 0};
    CHECK(lade_softmax_ce(&v, g, 1.0f, z, bad, N, K) == LADE_ERANGE);
    CHECK(strstr(lade_error_detail(), "labels[2] = 5") != NULL);
    float wrong[K] = {0.5f, 0.5f, 0.5f, 0.1f, 0.1f};
    CHECK(lade_lader(&v, g, 1.0f, z, LABELS, N, K, wrong, 0.1f, 0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "'prior' must sum to 1") != NULL);
    float zero[K] = {0.5f, 0.5f, 0.0f, 0.0f, 0.0f};
    CHECK(lade_lade_ce(&v, g, 1.0f, z, LABELS, N, K, zero) == LADE_EINVAL);
    z[7] = NAN;
    CHECK(lade_lade_ce(&v, g, 1.0f, z, LABELS, N, K, PRIOR) == LADE_ENONFINITE);
    int64_t counts[3] = {4, 0, 2};
    float prior[3];
    CHECK(lade_prior_from_counts(prior, counts, 3, 0.0) == LADE_EINVAL);
    CHECK_OK(lade_prior_from_counts(prior, counts, 3, 1.0));
    CHECK_CLOSE(prior[1], 1.0 / 7.0, 1e-7);
}

TEST(cifar10_profile_and_shift_sizes) {
    int64_t c[10];
    static const int64_t golden[10] = {5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50};
    CHECK_OK(lade_lt_profile(c, 10, 5000.0, 0.01, LADE_PROFILE_EXP));
    for (int k = 0; k < 10; k++) CHECK(c[k] == golden[k]);
    int64_t c100[100], shifted[100];
    float prior[100];
    CHECK_OK(lade_lt_profile(c100, 100, 500.0, 0.01, LADE_PROFILE_EXP));
    CHECK_OK(lade_prior_from_counts(prior, c100, 100, 0.0));
    CHECK_OK(lade_shift_counts(shifted, prior, 100, 100.0, 50.0, LADE_SHIFT_BACKWARD));
    int64_t total = 0;
    for (int k = 0; k < 100; k++) total += shifted[k];
    CHECK(total == 2486 && shifted[0] == 2 && shifted[99] == 100);
}

TEST(samplers_are_pure_functions_of_seed_and_epoch) {
    enum { M = 300 };
    int64_t labels[M], a[M], b[M], c[M];
    for (int i = 0; i < M; i++) labels[i] = i < 200 ? 0 : i < 280 ? 1 : 2;
    size_t len;
    CHECK_OK(lade_class_aware_length(&len, labels, M, 3));
    CHECK(len == 600);
    int64_t *x = malloc(len * sizeof *x), *y = malloc(len * sizeof *y);
    CHECK_OK(lade_sample_class_aware(x, len, labels, M, 3, 1, 7, 3));
    CHECK_OK(lade_sample_class_aware(y, len, labels, M, 3, 1, 7, 3));
    CHECK(memcmp(x, y, len * sizeof *x) == 0);
    int per[3] = {0, 0, 0};
    for (size_t i = 0; i < len; i++) per[labels[x[i]]]++;
    CHECK(per[0] == 200 && per[1] == 200 && per[2] == 200);
    free(x);
    free(y);
    CHECK_OK(lade_sample_instance(a, M, 1, 0));
    CHECK_OK(lade_sample_instance(b, M, 1, 0));
    CHECK_OK(lade_sample_instance(c, M, 2, 0));
    CHECK(memcmp(a, b, sizeof a) == 0 && memcmp(a, c, sizeof a) != 0);
}

TEST(chi2_tail_known_values) {
    double p;
    CHECK_OK(lade_chi2_sf(&p, 3.841458820694124, 1));
    CHECK_CLOSE(p, 0.05, 1e-10);
    CHECK_OK(lade_chi2_sf(&p, 18.307038053275146, 10));
    CHECK_CLOSE(p, 0.05, 1e-10);
    CHECK_OK(lade_chi2_sf(&p, 2.0, 2)); /* exp(-1) */
    CHECK_CLOSE(p, exp(-1.0), 1e-12);
}

TEST(em_recovers_prior_of_separable_posteriors) {
    /* posteriors that are one-hot up to 1e-3 noise: EM must return the label frequencies */
    enum { M = 1000 };
    static float probs[M * 3];
    float source[3] = {1 / 3.0f, 1 / 3.0f, 1 / 3.0f}, est[3];
    for (int i = 0; i < M; i++) {
        int y = i < 600 ? 0 : i < 900 ? 1 : 2;
        for (int c = 0; c < 3; c++) probs[i * 3 + c] = c == y ? 0.998f : 0.001f;
    }
    int iters, conv;
    double ll;
    CHECK_OK(lade_em_prior(est, &iters, &conv, &ll, probs, NULL, M, 3, source, 1e-10, 1000));
    CHECK(conv);
    CHECK_CLOSE(est[0], 0.6, 1e-3);
    CHECK_CLOSE(est[1], 0.3, 1e-3);
    CHECK_CLOSE(est[2], 0.1, 1e-3);
    CHECK(ll > 0);
}

TEST(spec20_bins_put_one_in_extra_bin) {
    float probs[4] = {1.0f, 0.0f, 0.5f, 0.5f};
    int64_t labels[2] = {0, 1};
    double ece, conf[21], acc[21];
    int64_t count[21];
    CHECK_OK(lade_reliability(&ece, conf, acc, count, probs, labels, 2, 2, 20, LADE_BINS_SPEC20));
    CHECK(count[20] == 1 && count[10] == 1);
    CHECK_CLOSE(ece, 0.25, 1e-12); /* bin 10: conf 0.5, acc 0 (argmax 0 != 1) */
}

TEST(paired_bootstrap_difference_and_interval) {
    enum { M = 2, S = 400, B = 300 };
    static uint8_t a[M * S], b[M * S];
    lade_rng r;
    lade_rng_seed(&r, 7, 0);
    for (int k = 0; k < M * S; k++) {
        a[k] = lade_rng_uniform(&r) < 0.6;
        b[k] = lade_rng_uniform(&r) < 0.4 ? 1 - a[k] : a[k]; /* disagrees with a on 40 % of samples */
    }
    long diff = 0;
    for (int k = 0; k < M * S; k++) diff += (long)a[k] - b[k];
    double d, lo, hi, reps[B], again[B];
    CHECK_OK(lade_paired_bootstrap(&d, &lo, &hi, reps, B, a, b, M, S, 0.9, 3));
    CHECK(fabs(d - (double)diff / (M * S)) < 1e-12);
    CHECK(lo < d && d < hi);
    int below = 0, above = 0; /* at most 5 % strictly outside each end (replicates tie often) */
    for (int i = 0; i < B; i++) below += reps[i] < lo, above += reps[i] > hi;
    CHECK(below <= B / 20 + 1 && above <= B / 20 + 1 && below + above >= B / 20);
    CHECK_OK(lade_paired_bootstrap(&d, &lo, &hi, again, B, a, b, M, S, 0.9, 3));
    CHECK(memcmp(reps, again, sizeof reps) == 0);
    /* one method against itself: every replicate is exactly 0 */
    CHECK_OK(lade_paired_bootstrap(&d, &lo, &hi, reps, B, a, a, M, S, 0.9, 3));
    CHECK(d == 0 && lo == 0 && hi == 0);
    a[5] = 2;
    CHECK(lade_paired_bootstrap(&d, &lo, &hi, reps, B, a, b, M, S, 0.9, 3) == LADE_EINVAL);
    CHECK(lade_paired_bootstrap(&d, &lo, &hi, reps, 0, b, b, M, S, 0.9, 3) == LADE_EINVAL);
    CHECK(lade_paired_bootstrap(&d, &lo, &hi, reps, B, b, b, M, S, 1.0, 3) == LADE_EINVAL);
}
