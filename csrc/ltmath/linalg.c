/* linalg.c - the small dense linear algebra of the long-tail math, in double precision, row-major
 * d x d matrices: a Cholesky solve (Newton steps of temperature scaling, posthoc.c), a Cholesky
 * factor grown and shrunk a row and column at a time (BBSE's simplex-constrained least squares,
 * prior_shift.c) and a Gauss-Jordan inverse with its 1-norm (BBSE's condition number). */
#include "linalg.h"

#include <math.h>
#include <string.h>

int lt_cholesky_solve(double *A, double *r, int d) {
    for (int j = 0; j < d; j++) {
        double s = A[(size_t)j * d + j];
        for (int k = 0; k < j; k++) s -= A[(size_t)j * d + k] * A[(size_t)j * d + k];
        if (!(s > 0)) return 0;
        double l = sqrt(s);
        A[(size_t)j * d + j] = l;
        for (int i = j + 1; i < d; i++) {
            double v = A[(size_t)i * d + j];
            for (int k = 0; k < j; k++) v -= A[(size_t)i * d + k] * A[(size_t)j * d + k];
            A[(size_t)i * d + j] = v / l;
        }
    }
    lt_cholesky_apply(A, d, r, d);
    return 1;
}

void lt_cholesky_apply(const double *L, int ld, double *r, int d) {
    for (int i = 0; i < d; i++) {
        double v = r[i];
        for (int k = 0; k < i; k++) v -= L[(size_t)i * ld + k] * r[k];
        r[i] = v / L[(size_t)i * ld + i];
    }
    for (int i = d - 1; i >= 0; i--) {
        double v = r[i];
        for (int k = i + 1; k < d; k++) v -= L[(size_t)k * ld + i] * r[k];
        r[i] = v / L[(size_t)i * ld + i];
    }
}

int lt_cholesky_append(double *L, int ld, int k, const double *a, double diag) {
    double *row = L + (size_t)k * ld;
    for (int i = 0; i < k; i++) { /* L l = a */
        double v = a[i];
        for (int j = 0; j < i; j++) v -= L[(size_t)i * ld + j] * row[j];
        row[i] = v / L[(size_t)i * ld + i];
    }
    for (int j = 0; j < k; j++) diag -= row[j] * row[j];
    if (!(diag > 0)) return 0;
    row[k] = sqrt(diag);
    return 1;
}

void lt_cholesky_remove(double *L, int ld, int k, int j) {
    /* without row j, rows j..k-2 reach one column past the diagonal; rotations of column pairs
     * (i, i+1), which leave L L^T unchanged, clear those entries */
    for (int r = j; r < k - 1; r++) memcpy(L + (size_t)r * ld, L + (size_t)(r + 1) * ld, (size_t)k * sizeof(double));
    for (int i = j; i < k - 1; i++) {
        double a = L[(size_t)i * ld + i], b = L[(size_t)i * ld + i + 1], norm = hypot(a, b);
        double cs = a / norm, sn = b / norm;
        for (int r = i; r < k - 1; r++) {
            double x = L[(size_t)r * ld + i], y = L[(size_t)r * ld + i + 1];
            L[(size_t)r * ld + i] = cs * x + sn * y;
            L[(size_t)r * ld + i + 1] = cs * y - sn * x;
        }
    }
}

int lt_invert(double *A, double *inv, int d) {
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) inv[(size_t)i * d + j] = i == j;
    double scale = 0;
    for (int k = 0; k < d * d; k++) scale = fabs(A[k]) > scale ? fabs(A[k]) : scale;
    for (int col = 0; col < d; col++) {
        int piv = col;
        for (int r = col + 1; r < d; r++)
            if (fabs(A[(size_t)r * d + col]) > fabs(A[(size_t)piv * d + col])) piv = r;
        double pv = A[(size_t)piv * d + col];
        if (!(fabs(pv) > scale * 1e-14)) return 0;
        if (piv != col)
            for (int j = 0; j < d; j++) {
                double t = A[(size_t)col * d + j];
                A[(size_t)col * d + j] = A[(size_t)piv * d + j];
                A[(size_t)piv * d + j] = t;
                t = inv[(size_t)col * d + j];
                inv[(size_t)col * d + j] = inv[(size_t)piv * d + j];
                inv[(size_t)piv * d + j] = t;
            }
        for (int j = 0; j < d; j++) {
            A[(size_t)col * d + j] /= pv;
            inv[(size_t)col * d + j] /= pv;
        }
        for (int r = 0; r < d; r++) {
            double f = A[(size_t)r * d + col];
            if (r == col || f == 0) continue;
            for (int j = 0; j < d; j++) {
                A[(size_t)r * d + j] -= f * A[(size_t)col * d + j];
                inv[(size_t)r * d + j] -= f * inv[(size_t)col * d + j];
            }
        }
    }
    return 1;
}

double lt_norm1(const double *A, int d) {
    double best = 0;
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (int i = 0; i < d; i++) s += fabs(A[(size_t)i * d + j]);
        best = s > best ? s : best;
    }
    return best;
}
