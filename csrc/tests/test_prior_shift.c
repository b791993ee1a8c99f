/* test_prior_shift.c - BBSE as least squares over the simplex, against hand-computed cases. */
#include <math.h>
#include <stdint.h>

#include "../lade.h"
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
    /* no limit: q0 is identified (0.2), q1 + q2 = 0.8 is not; starting from the source
     * prior, the projected gradient keeps them equal */
    CHECK_OK(lade_bbse_prior(out, &cond, &fell_back, cal, labels, 6, test, 10, C, source, 1, 0.0, INFINITY));
    CHECK(!fell_back);
    CHECK_CLOSE(out[0], 0.2, 1e-6);
    CHECK_CLOSE(out[1], 0.4, 1e-6);
    CHECK_CLOSE(out[2], 0.4, 1e-6);
}
