/* test_decoupled.c - the decoupled second stage without Python: gradient by finite differences,
 * the identities (lr 0, tau 0), a fit that learns, and bad input as statuses. */
#include <math.h>
#include <string.h>

#include "lade.h"
#include "check.h"

enum { N = 120, DIMS = 5, K = 4 };

/* Labels 0..K-1 with a long tail (60, 30, 20, 10) and features around class centres. */
static void make_data(float *x, int64_t *y) {
    static const int counts[K] = {60, 30, 20, 10};
    lade_rng r;
    lade_rng_seed(&r, 11, 0);
    int i = 0;
    for (int c = 0; c < K; c++)
        for (int k = 0; k < counts[c]; k++, i++) {
            y[i] = c;
            for (int d = 0; d < DIMS; d++) x[i * DIMS + d] = (float)((d == c ? 2.0 : 0.0) + lade_rng_normal(&r));
        }
}

static void make_classifier(float *w, float *b) {
    lade_rng r;
    lade_rng_seed(&r, 12, 0);
    for (int i = 0; i < K * DIMS; i++) w[i] = (float)(0.3 * lade_rng_normal(&r));
    for (int c = 0; c < K; c++) b[c] = (float)(0.1 * lade_rng_normal(&r));
}

TEST(lws_gradient_matches_finite_differences) {
    float x[N * DIMS], w[K * DIMS], b[K], s[K] = {0.7f, 1.0f, 1.2f, 1.5f}, g[K];
    int64_t y[N];
    make_data(x, y);
    make_classifier(w, b);
    double loss;
    CHECK_OK(lade_lws_loss(&loss, g, x, y, N, DIMS, K, w, b, s));
    for (int c = 0; c < K; c++) {
        float up[K], down[K];
        memcpy(up, s, sizeof s);
        memcpy(down, s, sizeof s);
        up[c] += 1e-2f, down[c] -= 1e-2f;
        double lu, ld;
        CHECK_OK(lade_lws_loss(&lu, NULL, x, y, N, DIMS, K, w, b, up));
        CHECK_OK(lade_lws_loss(&ld, NULL, x, y, N, DIMS, K, w, b, down));
        CHECK_CLOSE(g[c], (lu - ld) / (up[c] - down[c]), 1e-4 + 2e-3 * fabs(g[c]));
    }
}

TEST(decoupled_identities) {
    float x[N * DIMS], w[K * DIMS], b[K], w0[K * DIMS], b0[K], s[K] = {1, 1, 1, 1};
    int64_t y[N];
    make_data(x, y);
    make_classifier(w, b);
    memcpy(w0, w, sizeof w);
    memcpy(b0, b, sizeof b);
    lade_classifier_config cfg = lade_classifier_config_default();
    cfg.lr = 0.0f, cfg.weight_decay = 0.0f, cfg.epochs = 2, cfg.batch_size = 16;
    CHECK_OK(lade_classifier_fit(w, b, NULL, x, y, N, DIMS, K, &cfg));
    CHECK(!memcmp(w, w0, sizeof w) && !memcmp(b, b0, sizeof b));
    CHECK_OK(lade_lws_fit(s, NULL, x, y, N, DIMS, K, w, b, &cfg));
    for (int c = 0; c < K; c++) CHECK(s[c] == 1.0f);
    /* tau = 0: the accuracy of the classifier as trained */
    float tau0 = 0.0f, logits[N * K];
    double acc;
    int best = -1;
    CHECK_OK(lade_tau_select(&acc, &best, &tau0, 1, x, y, N, DIMS, K, w, b));
    CHECK(best == 0);
    CHECK_OK(lade_linear_forward(logits, x, w, b, N, DIMS, K));
    int64_t pred[N], seen[K] = {0}, hit[K] = {0};
    CHECK_OK(lade_argmax(pred, logits, N, K));
    for (int i = 0; i < N; i++) seen[y[i]]++, hit[y[i]] += pred[i] == y[i];
    double want = 0;
    for (int c = 0; c < K; c++) want += (double)hit[c] / seen[c] / K;
    CHECK_CLOSE(acc, want, 1e-12);
}

TEST(classifier_fit_learns) {
    float x[N * DIMS], w[K * DIMS] = {0}, b[K] = {0};
    int64_t y[N];
    make_data(x, y);
    lade_classifier_config cfg = lade_classifier_config_default();
    cfg.batch_size = 16, cfg.lr = 0.1f, cfg.epochs = 5;
    double first_loss = log((double)K), loss;
    CHECK_OK(lade_classifier_fit(w, b, &loss, x, y, N, DIMS, K, &cfg));
    CHECK(loss < 0.8 * first_loss);
    float prior[K] = {0.5f, 0.25f, 1.0f / 6, 1.0f / 12};
    memset(w, 0, sizeof w), memset(b, 0, sizeof b);
    cfg.loss = LADE_CLASSIFIER_LADE, cfg.prior = prior, cfg.sampling = LADE_SAMPLE_INSTANCE;
    CHECK_OK(lade_classifier_fit(w, b, &loss, x, y, N, DIMS, K, &cfg));
    CHECK(isfinite(loss));
}

TEST(decoupled_bad_input_is_a_status) {
    float x[N * DIMS], w[K * DIMS], b[K], w0[K * DIMS], s[K] = {1, 1, 1, 1};
    int64_t y[N];
    make_data(x, y);
    make_classifier(w, b);
    memcpy(w0, w, sizeof w);
    lade_classifier_config cfg = lade_classifier_config_default();
    y[7] = K;
    CHECK(lade_classifier_fit(w, b, NULL, x, y, N, DIMS, K, &cfg) == LADE_ERANGE);
    CHECK(strstr(lade_error_detail(), "labels[7]") != NULL);
    y[7] = 0;
    x[3] = NAN;
    CHECK(lade_lws_fit(s, NULL, x, y, N, DIMS, K, w, b, &cfg) == LADE_ENONFINITE);
    x[3] = 0;
    cfg.epochs = 0;
    CHECK(lade_classifier_fit(w, b, NULL, x, y, N, DIMS, K, &cfg) == LADE_EINVAL);
    cfg = lade_classifier_config_default();
    cfg.loss = LADE_CLASSIFIER_LADE; /* no prior */
    CHECK(lade_classifier_fit(w, b, NULL, x, y, N, DIMS, K, &cfg) == LADE_EINVAL);
    CHECK(lade_lws_fit(s, NULL, x, y, N, DIMS, K, w, b, &cfg) == LADE_EINVAL); /* LWS is CE only */
    CHECK(!memcmp(w, w0, sizeof w));
    float taus[2] = {0.0f, INFINITY};
    double acc[2];
    int best;
    CHECK(lade_tau_select(acc, &best, taus, 2, x, y, N, DIMS, K, w, b) == LADE_EINVAL);
    CHECK(lade_tau_select(acc, &best, taus, 0, x, y, N, DIMS, K, w, b) == LADE_EINVAL);
}
