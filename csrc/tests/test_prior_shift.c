/* test_prior_shift.c - BBSE as least squares over the simplex and RLLS, against hand-computed cases. */
#include <math.h>
#include <stdint.h>

#include "lade.h"
#include "check.h"

/* Calibration rows of class j all carry the score column M[:, j], so the soft conditional
 * confusion is exactly M; target rows do the same with class j repeated count[j] times, so
 * mu = M q with q = count / sum(count). */
static void rows_from_columns(float *scores, int64_t *labels, const double *M, const int *count, int C) {
    int k = 0;
    for (int j = 0; j < C; j++)
        for (int r = 0; r < count[j]; r++, k++) {
            for (int i = 0; i < C; i++) scores[k * C + i] = (float)M[i * C + j];
            if (labels) labels[k] = j;
        }
}

TEST(bbse_soft_recovers_prior_exactly) {
    enum { C = 3 };
    const double M[C * C] = {0.7, 0.2, 0.1, 0.2, 0.6, 0.3, 0.1, 0.2, 0.6}; /* columns sum to 1 */
    const int cal_count[C] = {5, 3, 2}, test_count[C] = {1, 3, 6};
    float cal[10 * C], test[10 * C], out[C];
    int64_t labels[10];
    const float source[C] = {0.5f, 0.3f, 0.2f};
    rows_from_columns(cal, labels, M, cal_count, C);
    rows_from_columns(test, NULL, M, test_count, C);
    double cond;
    int fell_back;
    CHECK_OK(lade_bbse_prior(out, &cond, &fell_back, cal, labels, 10, test, 10, C, source, 1, 0.0, 1e4));
    CHECK(!fell_back && cond > 1 && cond < 10);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], test_count[c] / 10.0, 1e-6);
}

TEST(rlls_fits_exactly_without_penalty_and_keeps_no_shift_under_a_large_one) {
    enum { C = 3 };
    const double M[C * C] = {0.7, 0.2, 0.1, 0.2, 0.6, 0.3, 0.1, 0.2, 0.6};
    const int cal_count[C] = {5, 3, 2}, test_count[C] = {1, 3, 6};
    float cal[10 * C], test[10 * C], out[C];
    int64_t labels[10];
    rows_from_columns(cal, labels, M, cal_count, C);
    rows_from_columns(test, NULL, M, test_count, C);
    double rho;
    CHECK_OK(lade_rlls_prior(out, &rho, cal, labels, 10, test, 10, C, 1, 0.0, 0.05));
    CHECK(rho == 0);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], test_count[c] / 10.0, 1e-6);
    CHECK_OK(lade_rlls_prior(out, &rho, cal, labels, 10, test, 10, C, 1, 1e6, 0.05));
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], cal_count[c] / 10.0, 1e-6); /* w = 1: p_cal */
    CHECK(lade_rlls_prior(out, &rho, cal, labels, 10, test, 10, C, 1, -1.0, 0.05) == LADE_EINVAL);
    CHECK(lade_rlls_prior(out, &rho, cal, labels, 10, test, 10, C, 1, 0.01, 1.0) == LADE_EINVAL);
}

TEST(rlls_with_a_perfect_classifier_is_all_or_nothing) {
    /* M = I, p_cal = (0.5, 0.5): A = I / 2, mu = (0.9, 0.1). From w = 1 towards the exact fit
     * w = (1.8, 0.2), w = 1 + t (0.8, -0.8) has |A w - mu| = 0.4 sqrt2 (1 - t) and |w - 1| =
     * 0.8 sqrt2 t: the objective is linear in t, so the answer is the exact fit for rho < 0.5
     * (= |A^T b| / |b|) and no shift above. rho = reg * bound, the bound at m = 2, delta = 0.05. */
    enum { C = 2 };
    const double M[C * C] = {1, 0, 0, 1};
    const int cal_count[C] = {1, 1};
    float cal[2 * C], test[2 * C] = {0.9f, 0.1f, 0.9f, 0.1f}, out[C];
    int64_t labels[2];
    rows_from_columns(cal, labels, M, cal_count, C);
    const double L = log(2.0 * C / 0.05), bound = 3 * (2 * L / 6 + sqrt(L));
    double rho;
    CHECK_OK(lade_rlls_prior(out, &rho, cal, labels, 2, test, 2, C, 1, 0.4 / bound, 0.05));
    CHECK_CLOSE(rho, 0.4, 1e-12);
    CHECK_CLOSE(out[0], 0.9, 1e-6);
    CHECK_CLOSE(out[1], 0.1, 1e-6);
    CHECK_OK(lade_rlls_prior(out, &rho, cal, labels, 2, test, 2, C, 1, 0.6 / bound, 0.05));
    CHECK_CLOSE(out[0], 0.5, 1e-6);
    CHECK_CLOSE(out[1], 0.5, 1e-6);
}

TEST(bbse_projects_an_infeasible_solution_onto_the_simplex) {
    /* M = [[0.8, 0.3], [0.2, 0.7]], mu = (0.9, 0.1): the unconstrained solution is q0 = 1.2,
     * q1 = -0.2; the objective is a convex parabola in q0 on [0, 1], so q = (1, 0). */
    enum { C = 2 };
    const double M[C * C] = {0.8, 0.3, 0.2, 0.7};
    const int cal_count[C] = {1, 1};
    float cal[2 * C], test[2 * C] = {0.9f, 0.1f, 0.9f, 0.1f}, out[C];
    int64_t labels[2];
    const float source[C] = {0.5f, 0.5f};
    rows_from_columns(cal, labels, M, cal_count, C);
    double cond;
    int fell_back;
    CHECK_OK(lade_bbse_prior(out, &cond, &fell_back, cal, labels, 2, test, 2, C, source, 1, 0.0, 1e4));
    CHECK(!fell_back);
    CHECK_CLOSE(out[0], 1.0, 1e-6);
    CHECK_CLOSE(out[1], 1e-8, 1e-9); /* the floor */
    /* a ridge r towards the source prior: with q1 = 1 - q0 and the row weights 1 / v,
     * v = M p_cal = (0.55, 0.45), the objective is k (0.5 q0 - 0.6)^2 + r (q0 - 0.5)^2 with
     * k = (1/0.55 + 1/0.45) / 2, minimised at q0 = (0.6 k + r) / (0.5 k + 2 r) = 0.85 at r = k / 4 */
    const double r = (1 / 0.55 + 1 / 0.45) / 8;
    CHECK_OK(lade_bbse_prior(out, &cond, &fell_back, cal, labels, 2, test, 2, C, source, 1, r, 1e4));
    CHECK_CLOSE(out[0], 0.85, 1e-6);
    CHECK_CLOSE(out[1], 0.15, 1e-6);
}

TEST(bbse_singular_confusion_falls_back_or_stays_feasible) {
    /* classes 1 and 2 have the same score column: M is singular */
    enum { C = 3 };
    const double M[C * C] = {0.8, 0.1, 0.1, 0.1, 0.45, 0.45, 0.1, 0.45, 0.45};
    const int cal_count[C] = {2, 2, 2}, test_count[C] = {2, 3, 5};
    float cal[6 * C], test[10 * C], out[C];
    int64_t labels[6];
    const float source[C] = {1 / 3.0f, 1 / 3.0f, 1 / 3.0f};
    rows_from_columns(cal, labels, M, cal_count, C);
    rows_from_columns(test, NULL, M, test_count, C);
    double cond;
    int fell_back;
    CHECK_OK(lade_bbse_prior(out, &cond, &fell_back, cal, labels, 6, test, 10, C, source, 1, 0.0, 1e4));
    CHECK(fell_back && isinf(cond));
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], 1 / 3.0, 1e-6);
    /* no limit: q0 is identified (0.2), q1 + q2 = 0.8 is not; of these minimisers the solve
     * returns the one nearest the source prior, with q1 = q2 */
    CHECK_OK(lade_bbse_prior(out, &cond, &fell_back, cal, labels, 6, test, 10, C, source, 1, 0.0, INFINITY));
    CHECK(!fell_back);
    CHECK_CLOSE(out[0], 0.2, 1e-6);
    CHECK_CLOSE(out[1], 0.4, 1e-6);
    CHECK_CLOSE(out[2], 0.4, 1e-6);
}

/* One-hot posteriors: row i is certain of class cls[i] (a perfect classifier). */
static void one_hot(float *probs, const int *cls, int n, int C) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) probs[i * C + c] = c == cls[i] ? 1.0f : 0.0f;
}

TEST(em_labelled_counts_join_the_m_step) {
    /* with certain posteriors EM returns the unlabelled rows' frequencies q = (2, 1, 1) / 4 */
    enum { C = 3, N = 4 };
    const int cls[N] = {0, 0, 1, 2};
    const int64_t labelled[C] = {0, 2, 2};
    const float source[C] = {0.5f, 0.3f, 0.2f};
    float probs[N * C], target[C], pool[C];
    one_hot(probs, cls, N, C);
    int iters, conv;
    /* per class: pool = q, target = (4 q + counts) / 8 = (2, 3, 3) / 8 */
    CHECK_OK(lade_em_prior_labelled(target, pool, &iters, &conv, probs, N, C, source, labelled, 1, 0.0, 1e-12, 5000));
    CHECK(conv);
    CHECK_CLOSE(pool[0], 0.5, 1e-6);
    CHECK_CLOSE(pool[1], 0.25, 1e-6);
    CHECK_CLOSE(target[0], 2 / 8.0, 1e-6);
    CHECK_CLOSE(target[1], 3 / 8.0, 1e-6);
    CHECK_CLOSE(target[2], 3 / 8.0, 1e-6);
    /* random: the labels are counted in the M step and the unlabelled rows share the prior */
    CHECK_OK(lade_em_prior_labelled(target, pool, &iters, &conv, probs, N, C, source, labelled, 0, 0.0, 1e-12, 5000));
    for (int c = 0; c < C; c++) CHECK_CLOSE(pool[c], target[c], 1e-7);
    CHECK_CLOSE(target[0], 2 / 8.0, 1e-6);
    CHECK_CLOSE(target[1], 3 / 8.0, 1e-6);
    const int64_t negative[C] = {1, -1, 0};
    CHECK(lade_em_prior_labelled(target, pool, &iters, &conv, probs, N, C, source, negative, 1, 0.0, 1e-9, 100) ==
          LADE_EINVAL);
    CHECK(lade_em_prior_labelled(target, pool, &iters, &conv, probs, 0, C, source, labelled, 1, 0.0, 1e-9, 100) ==
          LADE_EINVAL);
}

TEST(covariance_traces_of_a_perfect_classifier_are_multinomial) {
    /* certain posteriors: both estimators reduce to label frequencies p, whose covariance on the
     * simplex is (diag p - p p^T) / n, trace (1 - sum p^2) / n */
    enum { C = 3, N = 8 };
    const int cls[N] = {0, 0, 0, 0, 1, 1, 1, 2};
    const float source[C] = {1 / 3.0f, 1 / 3.0f, 1 / 3.0f}, p[C] = {0.5f, 0.375f, 0.125f};
    float probs[N * C], cal[6 * C];
    int64_t labels[6] = {0, 0, 1, 1, 2, 2};
    const int cal_cls[6] = {0, 0, 1, 1, 2, 2};
    one_hot(probs, cls, N, C);
    one_hot(cal, cal_cls, 6, C);
    const double expected = (1 - (0.25 + 0.140625 + 0.015625)) / N;
    double trace;
    CHECK_OK(lade_em_covariance_trace(&trace, probs, N, C, source, p));
    CHECK_CLOSE(trace, expected, 1e-9);
    for (int soft = 0; soft < 2; soft++) {
        CHECK_OK(lade_bbse_covariance_trace(&trace, cal, labels, 6, probs, N, C, p, soft));
        CHECK_CLOSE(trace, expected, 1e-9);
    }
    /* a class the calibration data lack makes M singular: infinite uncertainty */
    int64_t missing[6] = {0, 0, 1, 1, 1, 1};
    CHECK_OK(lade_bbse_covariance_trace(&trace, cal, missing, 6, probs, N, C, p, 1));
    CHECK(isinf(trace));
}

TEST(shrink_prior_weight_is_trace_over_squared_distance) {
    enum { C = 2 };
    const float est[C] = {0.8f, 0.2f}, anchor[C] = {0.5f, 0.5f};
    float out[C];
    double w;
    CHECK_OK(lade_shrink_prior(out, &w, est, anchor, C, 0.045)); /* distance^2 = 0.18 */
    CHECK_CLOSE(w, 0.25, 1e-6);
    CHECK_CLOSE(out[0], 0.725, 1e-6);
    CHECK_OK(lade_shrink_prior(out, &w, est, anchor, C, INFINITY));
    CHECK(w == 1.0);
    CHECK_CLOSE(out[0], 0.5, 1e-7);
    CHECK_OK(lade_shrink_prior(out, &w, est, anchor, C, 0.0));
    CHECK(w == 0.0);
    CHECK_CLOSE(out[0], 0.8, 1e-7);
    CHECK(lade_shrink_prior(out, &w, est, anchor, C, -1.0) == LADE_EINVAL);
    CHECK(lade_shrink_prior(out, &w, est, anchor, C, NAN) == LADE_EINVAL);
}

TEST(prediction_shift_chi2_counts_the_calibration_noise) {
    /* M = [[0.75, 0], [0.25, 1]] from 4 calibration rows per class, p_s = (0.5, 0.5), n = 8 test
     * rows predicted (6, 2): expected (3, 5); each cell's denominator adds
     * 64 * 0.25 * 0.75 * 0.25 / 4 = 0.75, so chi2 = 9 / 3.75 + 9 / 5.75 */
    enum { C = 2 };
    const int cal_cls[8] = {0, 0, 0, 1, 1, 1, 1, 1}, test_cls[8] = {0, 0, 0, 0, 0, 0, 1, 1};
    int64_t labels[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    float cal[8 * C], test[8 * C];
    const float source[C] = {0.5f, 0.5f};
    one_hot(cal, cal_cls, 8, C);
    one_hot(test, test_cls, 8, C);
    double stat;
    int dof;
    CHECK_OK(lade_prediction_shift_chi2(&stat, &dof, cal, labels, 8, test, 8, C, source));
    CHECK(dof == 1);
    CHECK_CLOSE(stat, 9 / 3.75 + 9 / 5.75, 1e-9);
}

TEST(replicate_variance_sums_the_per_class_variances) {
    const float reps[3 * 2] = {0.2f, 0.8f, 0.4f, 0.6f, 0.6f, 0.4f}; /* each column has variance 0.08 / 3 */
    double trace;
    CHECK_OK(lade_replicate_variance(&trace, reps, 3, 2));
    CHECK_CLOSE(trace, 2 * 0.08 / 3, 1e-7);
    CHECK(lade_replicate_variance(&trace, reps, 1, 2) == LADE_EINVAL);
}

TEST(tilt_prior_matches_the_moment_of_its_family) {
    /* certain posteriors: the likelihood is that of the label counts, whose maximiser in the
     * exponential family p_g ∝ r t^g matches its mean of log t to the labels' mean of log t */
    enum { C = 4, N = 10 };
    const int cls[N] = {0, 0, 0, 0, 0, 1, 1, 1, 2, 3};
    const float r[C] = {0.25f, 0.25f, 0.25f, 0.25f}, t[C] = {0.5f, 0.25f, 0.15f, 0.1f};
    float probs[N * C], out[C];
    one_hot(probs, cls, N, C);
    double g, ll, target = 0, mean = 0;
    int iters, conv;
    CHECK_OK(lade_tilt_prior(out, &g, &ll, &iters, &conv, probs, N, C, r, t, 1e-12, 100));
    CHECK(conv && iters < 20);
    CHECK(g > 0); /* the head classes are more common than in r */
    for (int i = 0; i < N; i++) target += log(t[cls[i]]) / N;
    for (int c = 0; c < C; c++) mean += out[c] * log(t[c]);
    CHECK_CLOSE(mean, target, 1e-6);
    double norm = 0, expect = 0;
    for (int c = 0; c < C; c++) norm += r[c] * pow(t[c], g);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], r[c] * pow(t[c], g) / norm, 1e-6);
    for (int i = 0; i < N; i++) expect += log(out[cls[i]] / r[cls[i]]);
    CHECK_CLOSE(ll, expect, 1e-5);
    /* a constant direction leaves the family one prior: g = 0, p = r, no shift (loglik 0) */
    const float flat[C] = {0.25f, 0.25f, 0.25f, 0.25f};
    CHECK_OK(lade_tilt_prior(out, &g, &ll, &iters, &conv, probs, N, C, r, flat, 1e-12, 100));
    CHECK(g == 0 && conv && iters == 0);
    CHECK_CLOSE(ll, 0.0, 1e-6);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], 0.25, 1e-7);
    /* every label in the tail class: the maximum is at the bracket's end, finite and floored */
    const int tail[N] = {3, 3, 3, 3, 3, 3, 3, 3, 3, 3};
    one_hot(probs, tail, N, C);
    CHECK_OK(lade_tilt_prior(out, &g, &ll, &iters, &conv, probs, N, C, r, t, 1e-12, 200));
    CHECK(g < 0 && isfinite(g) && out[3] > 0.99f && out[0] > 0);
    const float bad[C] = {0.5f, 0.5f, 0.0f, 0.0f};
    CHECK(lade_tilt_prior(out, &g, &ll, &iters, &conv, probs, N, C, r, bad, 1e-12, 100) == LADE_EINVAL);
}

/* log Dirichlet-multinomial evidence of counts under Dirichlet(A m), as lade_em_prior_eb maximises */
static double evidence(double A, const int *counts, const float *m, int C) {
    double n = 0, v = 0;
    for (int c = 0; c < C; c++) n += counts[c], v += lgamma(A * m[c] + counts[c]) - lgamma(A * m[c]);
    return v + lgamma(A) - lgamma(A + n);
}

TEST(em_prior_eb_strength_follows_the_dispersion_of_the_counts) {
    /* certain posteriors: EM's soft counts are the label counts whatever the prior, so the estimate
     * is (counts + A m) / (n + A) with A the maximiser of the counts' evidence */
    enum { C = 4, N = 40 };
    const float m[C] = {0.25f, 0.25f, 0.25f, 0.25f};
    float probs[N * C], out[C];
    int cls[N], iters, conv;
    double A, ll;
    /* a sparse target: two classes of four. Little smoothing: A small, the absent classes near 0 */
    const int sparse[C] = {24, 16, 0, 0};
    for (int i = 0; i < N; i++) cls[i] = i < 24 ? 0 : 1;
    one_hot(probs, cls, N, C);
    CHECK_OK(lade_em_prior_eb(out, &A, &iters, &conv, &ll, probs, N, C, m, 1e-12, 5000));
    CHECK(conv && A > 0.01 && A < 2);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], (sparse[c] + A * m[c]) / (N + A), 1e-6);
    CHECK(evidence(A, sparse, m, C) >= evidence(A * 1.01, sparse, m, C) &&
          evidence(A, sparse, m, C) >= evidence(A / 1.01, sparse, m, C));
    /* counts exactly proportional to m, less dispersed than any multinomial draw: the evidence grows
     * with A up to the bound (1e8; the search ends near it), and the estimate stays at m */
    for (int i = 0; i < N; i++) cls[i] = i % C;
    one_hot(probs, cls, N, C);
    CHECK_OK(lade_em_prior_eb(out, &A, &iters, &conv, &ll, probs, N, C, m, 1e-12, 5000));
    CHECK(A > 1e7);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], 0.25, 1e-6);
    CHECK_CLOSE(ll, 0.0, 1e-6);
    CHECK(lade_em_prior_eb(out, &A, &iters, &conv, &ll, probs, 0, C, m, 1e-12, 5000) == LADE_EINVAL);
    CHECK(lade_em_prior_eb(out, &A, &iters, &conv, &ll, probs, N, C, m, 0.0, 5000) == LADE_EINVAL);
}

TEST(select_prior_picks_the_family_by_its_criterion) {
    enum { C = 4, N = 10 };
    const float r[C] = {0.25f, 0.25f, 0.25f, 0.25f}, t[C] = {0.5f, 0.25f, 0.15f, 0.1f};
    float probs[N * C], out[C], ref[C];
    int kind, support, iters, conv;
    double ll, crit, g, ll_tilt, ll_free;
    /* two classes present: the restricted fit on them has the free fit's likelihood with 2 parameters
     * fewer, so BIC keeps it */
    const int two[N] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    one_hot(probs, two, N, C);
    CHECK_OK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, NULL, log(N), 1.0, 1e-12, 5000));
    CHECK(kind == 2 && support == 2);
    CHECK_CLOSE(out[0], 0.6, 1e-6);
    CHECK_CLOSE(out[1], 0.4, 1e-6);
    CHECK(out[2] < 1e-7 && out[3] < 1e-7);
    CHECK_CLOSE(ll, 6 * log(0.6 / 0.25) + 4 * log(0.4 / 0.25), 1e-5);
    CHECK_CLOSE(crit, -2 * ll + log(N), 1e-6);
    /* the labels of the tilted family's test: which candidate wins moves with the penalty */
    const int cls[N] = {0, 0, 0, 0, 0, 1, 1, 1, 2, 3};
    one_hot(probs, cls, N, C);
    CHECK_OK(lade_tilt_prior(ref, &g, &ll_tilt, &iters, &conv, probs, N, C, r, t, 1e-12, 100));
    CHECK_OK(lade_em_prior_map(ref, &iters, &conv, &ll_free, probs, NULL, N, C, r, 0.0, 1e-12, 5000));
    CHECK_OK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, t, 0.0, 1.0, 1e-12, 5000));
    CHECK(kind == 3 && support == C); /* no penalty: the largest likelihood, the free fit */
    CHECK_CLOSE(ll, ll_free, 1e-6);
    for (int c = 0; c < C; c++) CHECK_CLOSE(out[c], ref[c], 1e-6);
    /* tilt beats no shift when 2 ll_tilt > penalty, and the free fit when penalty > ll_free - ll_tilt
     * (free has 2 parameters more); sparse fits lose to both here */
    double lo = ll_free - ll_tilt, hi = 2 * ll_tilt;
    CHECK(lo < hi);
    CHECK_OK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, t, 0.5 * (lo + hi), 1.0, 1e-12,
                               5000));
    CHECK(kind == 1);
    CHECK_CLOSE(ll, ll_tilt, 1e-6);
    /* above 2 ll_tilt, or with the likelihood divided by a large noise factor: no shift */
    CHECK_OK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, t, 1.01 * hi, 1.0, 1e-12, 5000));
    CHECK(kind == 0 && crit == 0 && ll == 0);
    for (int c = 0; c < C; c++) CHECK(out[c] == r[c]);
    CHECK_OK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, t, 0.5 * (lo + hi), 1e6, 1e-12,
                               5000));
    CHECK(kind == 0);
    CHECK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, t, -1.0, 1.0, 1e-12, 5000) ==
          LADE_EINVAL);
    CHECK(lade_select_prior(out, &kind, &support, &ll, &crit, probs, N, C, r, t, 1.0, 0.5, 1e-12, 5000) ==
          LADE_EINVAL);
}

TEST(sparse_cv_scores_unseen_rows) {
    enum { C = 4, N = 20 };
    const float r[C] = {0.25f, 0.25f, 0.25f, 0.25f};
    float probs[N * C];
    double scores[2];
    /* two classes present (12 and 8 rows). Leave-one-out does not depend on the permutation: without row
     * i of class c the sparse fit is count / (N - 1) on the two classes, so row i scores
     * log((count_c - 1) / (N - 1) / 0.25) */
    int cls[N];
    for (int i = 0; i < N; i++) cls[i] = i < 12 ? 0 : 1;
    one_hot(probs, cls, N, C);
    CHECK_OK(lade_sparse_cv(scores, probs, N, C, r, 1.0, 1.0, N, 7, 1e-12, 5000));
    CHECK_CLOSE(scores[0], 12 * log(11.0 / 19 / 0.25) + 8 * log(7.0 / 19 / 0.25), 1e-5);
    /* the free estimate's pseudo count leaves mass on the absent classes: it predicts the rows worse */
    CHECK(scores[1] < scores[0] - 1);
    /* without smoothing the free fit is the sparse one up to the estimate's floor, on any folds */
    CHECK_OK(lade_sparse_cv(scores, probs, N, C, r, 0.0, 1.0, 5, 7, 1e-12, 5000));
    CHECK_CLOSE(scores[1], scores[0], 1e-4);
    /* every class as common as the reference: no sparse prior is picked, so it scores -inf */
    for (int i = 0; i < N; i++) cls[i] = i % C;
    one_hot(probs, cls, N, C);
    CHECK_OK(lade_sparse_cv(scores, probs, N, C, r, 1.0, 1.0, 5, 7, 1e-12, 5000));
    CHECK(isinf(scores[0]) && scores[0] < 0 && isfinite(scores[1]));
    CHECK(lade_sparse_cv(scores, probs, N, C, r, 1.0, 1.0, 1, 7, 1e-12, 5000) == LADE_EINVAL);
    CHECK(lade_sparse_cv(scores, probs, N, C, r, 1.0, 1.0, N + 1, 7, 1e-12, 5000) == LADE_EINVAL);
    CHECK(lade_sparse_cv(scores, probs, N, C, r, 1.0, 0.5, 5, 7, 1e-12, 5000) == LADE_EINVAL);
    CHECK(lade_sparse_cv(scores, probs, N, C, r, -1.0, 1.0, 5, 7, 1e-12, 5000) == LADE_EINVAL);
}
