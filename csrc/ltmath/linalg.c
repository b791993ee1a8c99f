/* linalg.c - the small dense linear algebra of the long-tail math, in double precision, row-major
 * d x d matrices: a Cholesky factorisation and solve (Newton steps of temperature scaling, posthoc.c;
 * BBSE's simplex-constrained least squares, prior_shift.c) and a Gauss-Jordan inverse with its
 * 1-norm (BBSE's condition number, prior_shift.c). */
#include "linalg.h"

#include <math.h>

int lt_cholesky_factor(double *A, int d) {
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
    return 1;
}

void lt_cholesky_apply(const double *L, double *r, int d) {
    for (int i = 0; i < d; i++) {
        double v = r[i];
        for (int k = 0; k < i; k++) v -= L[(size_t)i * d + k] * r[k];
        r[i] = v / L[(size_t)i * d + i];
    }
    for (int i = d - 1; i >= 0; i--) {
        double v = r[i];
        for (int k = i + 1; k < d; k++) v -= L[(size_t)k * d + i] * r[k];
        r[i] = v / L[(size_t)i * d + i];
    }
}

int lt_cholesky_solve(double *A, double *r, int d) {
    if (!lt_cholesky_factor(A, d)) return 0;
    lt_cholesky_apply(A, r, d);
    return 1;
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
