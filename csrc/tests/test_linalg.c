/* test_linalg.c - the long-tail math's dense linear algebra (csrc/ltmath/linalg.c). */
#include <string.h>

#include "check.h"
#include "ltmath/linalg.h"

enum { D = 7 };

/* a fixed pseudo-random matrix in [-1, 1) */
static void fill(double *a, int count, unsigned seed) {
    for (int k = 0; k < count; k++) {
        seed = seed * 1664525u + 1013904223u;
        a[k] = (double)(seed >> 8) / (double)(1u << 23) - 1.0;
    }
}

TEST(linalg_cholesky_solve_matches_the_product) {
    double b[D * D], a[D * D], x[D], r[D];
    fill(b, D * D, 1);
    fill(x, D, 2);
    for (int i = 0; i < D; i++) /* A = B B^T + I: symmetric positive definite */
        for (int j = 0; j < D; j++) {
            double s = i == j;
            for (int k = 0; k < D; k++) s += b[i * D + k] * b[j * D + k];
            a[i * D + j] = s;
        }
    for (int i = 0; i < D; i++) {
        r[i] = 0;
        for (int j = 0; j < D; j++) r[i] += a[i * D + j] * x[j];
    }
    CHECK(lt_cholesky_solve(a, r, D) == 1);
    for (int i = 0; i < D; i++) CHECK_CLOSE(r[i], x[i], 1e-10);

    double indefinite[4] = {1, 2, 2, 1}, rhs[2] = {1, 1}; /* eigenvalues 3 and -1 */
    CHECK(lt_cholesky_solve(indefinite, rhs, 2) == 0);
}

TEST(linalg_cholesky_factor_grows_and_shrinks_with_its_matrix) {
    /* A = B B^T + I; the factor of A restricted to an index list, grown by appends and shrunk by
     * removals, solves that submatrix as a fresh factorisation does */
    double b[D * D], a[D * D], L[D * D], col[D], r[D], ref[D * D], rr[D];
    fill(b, D * D, 4);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double s = i == j;
            for (int k = 0; k < D; k++) s += b[i * D + k] * b[j * D + k];
            a[i * D + j] = s;
        }
    int idx[D], k = 0;
    for (int c = 0; c < D; c++) { /* grow to every index in the order 3, 0, 6, 1, 5, 2, 4 */
        int next = (3 + 4 * c) % D;
        for (int i = 0; i < k; i++) col[i] = a[idx[i] * D + next];
        CHECK(lt_cholesky_append(L, D, k, col, a[next * D + next]) == 1);
        idx[k++] = next;
    }
    const int drop[3] = {2, 0, 3}; /* positions in the shrinking list */
    for (int d = 0; d < 3; d++) {
        lt_cholesky_remove(L, D, k, drop[d]);
        memmove(idx + drop[d], idx + drop[d] + 1, (size_t)(k - drop[d] - 1) * sizeof(int));
        k--;
        for (int i = 0; i < k; i++) {
            for (int j = 0; j < k; j++) ref[i * k + j] = a[idx[i] * D + idx[j]];
            r[i] = rr[i] = 1.0 + i;
        }
        lt_cholesky_apply(L, D, r, k);
        CHECK(lt_cholesky_solve(ref, rr, k) == 1);
        for (int i = 0; i < k; i++) CHECK_CLOSE(r[i], rr[i], 1e-10);
    }
    /* a copy of an existing row and column with a smaller diagonal entry makes the matrix
     * indefinite: refused, and the factor is kept */
    for (int i = 0; i < k; i++) col[i] = a[idx[i] * D + idx[0]];
    CHECK(lt_cholesky_append(L, D, k, col, a[idx[0] * D + idx[0]] - 0.5) == 0);
    for (int i = 0; i < k; i++) r[i] = 1.0 + i;
    lt_cholesky_apply(L, D, r, k);
    for (int i = 0; i < k; i++) CHECK_CLOSE(r[i], rr[i], 1e-10);
}

TEST(linalg_invert_gives_the_inverse_and_refuses_a_singular_matrix) {
    double a[D * D], work[D * D], inv[D * D];
    fill(a, D * D, 3);
    for (int i = 0; i < D; i++) a[i * D + i] += 2; /* comfortably invertible */
    memcpy(work, a, sizeof a);
    CHECK(lt_invert(work, inv, D) == 1);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double s = 0;
            for (int k = 0; k < D; k++) s += a[i * D + k] * inv[k * D + j];
            CHECK_CLOSE(s, i == j, 1e-12);
        }

    double swap[4] = {0, 1, 1, 0}, swap_inv[4]; /* needs pivoting: the first pivot is 0 */
    CHECK(lt_invert(swap, swap_inv, 2) == 1);
    CHECK(swap_inv[0] == 0 && swap_inv[1] == 1 && swap_inv[2] == 1 && swap_inv[3] == 0);

    double singular[9] = {1, 2, 3, 2, 4, 6, 0, 1, 1}, unused[9]; /* row 2 = 2 x row 1 */
    CHECK(lt_invert(singular, unused, 3) == 0);
}

TEST(linalg_norm1_is_the_largest_absolute_column_sum) {
    double a[9] = {1, -7, 2, -3, 4, 1, 0, 0, -5}; /* columns: |1|+|-3|+0, |-7|+4+0, 2+1+|-5| */
    CHECK(lt_norm1(a, 3) == 11);
}
