/* test_multilabel.c - the multi-label (sigmoid) parts of the long-tail math: the per-label log-odds
 * correction, label marginals, the per-label EM and the multi-label metrics, against direct formulas
 * and hand-checked cases, and their error statuses. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lade.h"
#include "check.h"

static double logit(double p) { return log(p / (1 - p)); }

TEST(multilabel_adjust_matches_the_formula) {
    enum { N = 3, L = 4 };
    const float z[N * L] = {0.5f, -1.25f, 3.0f, 0.0f, 80.0f, -80.0f, 2.5f, -0.75f, -3.0f, 1.0f, 0.0f, 7.0f};
    const float ps[L] = {0.1f, 0.5f, 0.9f, 0.02f}, pt[L] = {0.3f, 0.2f, 0.5f, 0.6f};
    float out[N * L], probs[N * L], inplace[N * L];
    CHECK_OK(lade_adjust_logodds(out, z, N, L, ps, pt, 0));
    CHECK_OK(lade_adjust_logodds(probs, z, N, L, ps, pt, 1));
    for (int k = 0; k < N * L; k++) {
        int c = k % L;
        double t = (double)z[k] - logit(ps[c]) + logit(pt[c]);
        CHECK_CLOSE(out[k], t, 1e-5 * fmax(1, fabs(t)));
        double p = 1 / (1 + exp(-t));
        CHECK(isfinite(probs[k]) && probs[k] >= 0 && probs[k] <= 1);
        CHECK_CLOSE(probs[k], p, 1e-7 + 1e-6 * p);
    }
    /* NULL target: balanced (0.5); NULL source too: the plain sigmoid */
    CHECK_OK(lade_adjust_logodds(out, z, N, L, ps, NULL, 0));
    for (int k = 0; k < N * L; k++) CHECK_CLOSE(out[k], (double)z[k] - logit(ps[k % L]), 1e-5 * fmax(1, fabs(z[k])));
    CHECK_OK(lade_adjust_logodds(out, z, N, L, NULL, NULL, 1));
    CHECK(out[4] == 1.0f && out[5] > 0 && out[5] < 1e-34f); /* sigmoid(+-80) */
    /* out may be the input */
    memcpy(inplace, z, sizeof z);
    CHECK_OK(lade_adjust_logodds(inplace, inplace, N, L, ps, pt, 1));
    CHECK(memcmp(inplace, probs, sizeof probs) == 0);
}

TEST(multilabel_adjust_refuses_bad_marginals) {
    enum { N = 2, L = 3 };
    const float z[N * L] = {0};
    float out[N * L];
    const float zero[L] = {0.2f, 0.0f, 0.5f}, one[L] = {0.2f, 0.5f, 1.0f}, nan_[L] = {NAN, 0.5f, 0.5f};
    const float good[L] = {0.2f, 0.5f, 0.7f};
    CHECK(lade_adjust_logodds(out, z, N, L, zero, NULL, 0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "source_marginals[1]") != NULL);
    CHECK(lade_adjust_logodds(out, z, N, L, good, one, 0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "target_marginals[2]") != NULL);
    CHECK(lade_adjust_logodds(out, z, N, L, nan_, NULL, 1) == LADE_ENONFINITE);
    CHECK(strstr(lade_error_detail(), "source_marginals[0]") != NULL);
    CHECK(lade_adjust_logodds(out, z, 0, L, good, NULL, 0) == LADE_EINVAL);
    float bad[N * L] = {0};
    bad[4] = INFINITY;
    CHECK(lade_adjust_logodds(out, bad, N, L, good, NULL, 0) == LADE_ENONFINITE);
    CHECK(strstr(lade_error_detail(), "[1, 1]") != NULL);
    CHECK(lade_check_multilabel_adapt(zero, z, N, L) == LADE_EINVAL);
    CHECK(lade_check_multilabel_adapt(good, bad, N, L) == LADE_ENONFINITE);
    CHECK(strstr(lade_error_detail(), "test_logits") != NULL);
}

TEST(label_marginals_count_and_refuse_constant_labels) {
    enum { N = 4, L = 3 };
    const uint8_t y[N * L] = {1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1};
    float m[L];
    CHECK(lade_label_marginals(m, y, N, L, 0.0) == LADE_EINVAL); /* label 2 is always positive */
    CHECK(strstr(lade_error_detail(), "label 2 is always positive") != NULL);
    CHECK_OK(lade_label_marginals(m, y, N, L, 0.5));
    CHECK_CLOSE(m[0], 3.5 / 5, 1e-7);
    CHECK_CLOSE(m[1], 1.5 / 5, 1e-7);
    CHECK_CLOSE(m[2], 4.5 / 5, 1e-7);
    const uint8_t y2[2 * 2] = {1, 0, 0, 1};
    CHECK_OK(lade_label_marginals(m, y2, 2, 2, 0.0));
    CHECK(m[0] == 0.5f && m[1] == 0.5f);
    const uint8_t never[2 * 2] = {1, 0, 0, 0};
    CHECK(lade_label_marginals(m, never, 2, 2, 0.0) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "label 1 is never positive") != NULL);
    const uint8_t two[2] = {2, 0};
    CHECK(lade_label_marginals(m, two, 2, 1, 1.0) == LADE_EINVAL);
    CHECK(lade_label_marginals(m, y2, 2, 2, -1.0) == LADE_EINVAL);
    CHECK(lade_label_marginals(m, y2, 0, 2, 1.0) == LADE_EINVAL);
}

/* d/dp of sum_i log(p q_i / ps + (1 - p)(1 - q_i) / (1 - ps)): decreasing in p (the log-likelihood is concave) */
static double score(double p, const float *q, int n, int stride, double ps) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        double a = q[i * stride] / ps, b = (1 - q[i * stride]) / (1 - ps);
        s += (a - b) / (p * a + (1 - p) * b);
    }
    return s;
}

TEST(em_marginals_on_a_small_fixed_case) {
    /* label 0: q = (0.8, 0.8, 0.8, 0.2) under ps = 0.5; label 1: every q = 0.5 under ps = 0.3, which says
     * every row is likelier positive than the prior, so the estimate runs to the upper clamp */
    enum { N = 4, L = 2 };
    const float q[N * L] = {0.8f, 0.5f, 0.8f, 0.5f, 0.8f, 0.5f, 0.2f, 0.5f};
    const float ps[L] = {0.5f, 0.3f};
    float pt[L];
    int32_t it[L];
    uint8_t conv[L];
    double ll[L];
    /* one map from p = ps is the mean posterior */
    CHECK_OK(lade_em_marginals(pt, it, conv, ll, q, N, L, ps, 0.0, 1e-12, 1));
    CHECK_CLOSE(pt[0], 0.65, 1e-7);
    CHECK(it[0] == 1 && it[1] == 1 && !conv[0] && !conv[1]);
    /* to convergence: the root of the score, found by bisection */
    CHECK_OK(lade_em_marginals(pt, it, conv, ll, q, N, L, ps, 0.0, 1e-12, 5000));
    double lo = 1e-9, hi = 1 - 1e-9;
    for (int k = 0; k < 200; k++) {
        double mid = 0.5 * (lo + hi);
        if (score(mid, q, N, L, ps[0]) > 0) lo = mid; else hi = mid;
    }
    CHECK_CLOSE(pt[0], lo, 1e-6);
    CHECK(conv[0] && conv[1] && it[0] > 2 && it[0] < 5000);
    CHECK(pt[1] < 1.0f && pt[1] > 0.9999f); /* the clamp 1 - 1e-7, still below 1 in float */
    double expected = 0; /* the log-likelihood ratio at the estimate */
    for (int i = 0; i < N; i++)
        expected += log(pt[0] / 0.5 * q[i * L] + (1 - pt[0]) / 0.5 * (1 - q[i * L]));
    CHECK_CLOSE(ll[0], expected, 1e-5);
    CHECK(ll[0] > 0 && ll[1] > 0);
    /* a pseudo count pulls the estimate towards 1/2: p = (sum q' + a) / (n + 2 a) at the fixed point */
    float smooth[L];
    CHECK_OK(lade_em_marginals(smooth, it, conv, ll, q, N, L, ps, 2.0, 1e-12, 5000));
    CHECK(smooth[0] < pt[0] && smooth[1] < 0.99f);
    double r1 = smooth[1] / 0.3, r0 = (1 - smooth[1]) / 0.7;
    CHECK_CLOSE(smooth[1], (N * r1 / (r1 + r0) + 2.0) / (N + 4.0), 1e-6);
    /* no shift: posteriors whose mean is ps and which carry no information stay at ps */
    const float flat[2 * 1] = {0.25f, 0.25f}, ps_flat[1] = {0.25f};
    CHECK_OK(lade_em_marginals(pt, it, conv, ll, flat, 2, 1, ps_flat, 0.0, 1e-10, 100));
    CHECK(pt[0] == 0.25f && it[0] == 1 && conv[0] && ll[0] == 0);
}

TEST(em_marginals_refuses_bad_arguments) {
    enum { N = 2, L = 2 };
    const float q[N * L] = {0.2f, 0.7f, 0.4f, 0.1f}, ps[L] = {0.3f, 0.4f};
    float pt[L];
    int32_t it[L];
    uint8_t conv[L];
    double ll[L];
    const float edge[L] = {0.3f, 1.0f}, nan_[L] = {0.3f, NAN};
    CHECK(lade_em_marginals(pt, it, conv, ll, q, N, L, edge, 0, 1e-8, 10) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "source_marginals[1]") != NULL);
    CHECK(lade_em_marginals(pt, it, conv, ll, q, N, L, nan_, 0, 1e-8, 10) == LADE_ENONFINITE);
    const float big[N * L] = {0.2f, 1.5f, 0.4f, 0.1f};
    CHECK(lade_em_marginals(pt, it, conv, ll, big, N, L, ps, 0, 1e-8, 10) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "argument 'probs'") != NULL);
    CHECK(lade_em_marginals(pt, it, conv, ll, q, N, L, ps, -1, 1e-8, 10) == LADE_EINVAL);
    CHECK(lade_em_marginals(pt, it, conv, ll, q, N, L, ps, 0, 0, 10) == LADE_EINVAL);
    CHECK(lade_em_marginals(pt, it, conv, ll, q, N, L, ps, 0, 1e-8, 0) == LADE_EINVAL);
    CHECK(lade_em_marginals(pt, it, conv, ll, q, 0, L, ps, 0, 1e-8, 10) == LADE_EINVAL);
}

TEST(multilabel_metrics_by_hand) {
    /* label 0: z = (2, -1, 0.5, -3), y = (1, 0, 0, 1): predictions (1, 0, 1, 0): TP 1, FP 1, FN 1, accuracy 1/2,
     * F1 = 2 / 4. label 1: never positive, never predicted: F1 undefined (NaN), accuracy 1. */
    enum { N = 4, L = 2 };
    const float z[N * L] = {2, -5, -1, -5, 0.5f, -5, -3, -5};
    const uint8_t y[N * L] = {1, 0, 0, 0, 0, 0, 1, 0};
    double nll[L], brier[L], acc[L], f1[L], mean[4];
    CHECK_OK(lade_multilabel_metrics(nll, brier, acc, f1, mean, z, y, N, L, 0.5));
    double want_nll = 0, want_brier = 0;
    for (int i = 0; i < N; i++) {
        double t = z[i * L], p = 1 / (1 + exp(-t));
        want_nll -= y[i * L] ? log(p) : log(1 - p);
        want_brier += (p - y[i * L]) * (p - y[i * L]);
    }
    CHECK_CLOSE(nll[0], want_nll / N, 1e-12);
    CHECK_CLOSE(brier[0], want_brier / N, 1e-12);
    CHECK_CLOSE(nll[1], log1p(exp(-5.0)), 1e-12);
    CHECK(acc[0] == 0.5 && acc[1] == 1.0 && f1[0] == 0.5 && isnan(f1[1]));
    CHECK_CLOSE(mean[0], (nll[0] + nll[1]) / 2, 1e-15);
    CHECK(mean[2] == 0.75 && mean[3] == 0.5);
    /* a higher threshold: only z = 2 is predicted positive */
    CHECK_OK(lade_multilabel_metrics(nll, brier, acc, f1, mean, z, y, N, L, 0.8));
    CHECK(acc[0] == 0.75 && fabs(f1[0] - 2.0 / 3) < 1e-15);
    /* extreme logits: finite */
    const float big[2] = {80, -80};
    const uint8_t wrong[2] = {0, 1};
    CHECK_OK(lade_multilabel_metrics(nll, brier, acc, f1, mean, big, wrong, 1, 2, 0.5));
    CHECK_CLOSE(nll[0], 80, 1e-12);
    CHECK_CLOSE(nll[1], 80, 1e-12);
    CHECK(brier[0] == 1 && acc[0] == 0 && f1[0] == 0);
    const uint8_t two[N * L] = {2};
    CHECK(lade_multilabel_metrics(nll, brier, acc, f1, mean, z, two, N, L, 0.5) == LADE_EINVAL);
    CHECK(strstr(lade_error_detail(), "argument 'targets'") != NULL);
    CHECK(lade_multilabel_metrics(nll, brier, acc, f1, mean, z, y, N, L, 1.0) == LADE_EINVAL);
    CHECK(lade_multilabel_metrics(nll, brier, acc, f1, mean, z, y, 0, L, 0.5) == LADE_EINVAL);
}
