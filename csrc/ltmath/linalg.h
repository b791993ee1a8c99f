/* linalg.h - small dense linear algebra shared by the long-tail math (not public). Matrices are
 * double, d x d, row-major. */
#ifndef LADE_LTMATH_LINALG_H
#define LADE_LTMATH_LINALG_H
#include <stddef.h>

/* Overwrites the lower triangle of A (symmetric positive definite) with its Cholesky factor L
 * (A = L L^T); returns 0 if A is not positive definite. */
int lt_cholesky_factor(double *A, int d);
/* r becomes the solution x of L L^T x = r, for a factor L from lt_cholesky_factor. */
void lt_cholesky_apply(const double *L, double *r, int d);
/* Solves A x = r in place (A symmetric positive definite, overwritten by its Cholesky factor; r
 * becomes x). Returns 0 if A is not positive definite. */
int lt_cholesky_solve(double *A, double *r, int d);
/* Inverts A (destroyed) into inv by Gauss-Jordan with partial pivoting; returns 0 when a pivot
 * vanishes (singular to working precision). */
int lt_invert(double *A, double *inv, int d);
/* The 1-norm (largest column sum of |a_ij|). */
double lt_norm1(const double *A, int d);
#endif
