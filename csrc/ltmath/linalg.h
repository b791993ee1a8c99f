/* linalg.h - small dense linear algebra shared by the long-tail math (not public). Matrices are
 * double, d x d, row-major. */
#ifndef LADE_LTMATH_LINALG_H
#define LADE_LTMATH_LINALG_H
#include <stddef.h>

/* Solves A x = r in place (A symmetric positive definite, overwritten by its Cholesky factor; r
 * becomes x). Returns 0 if A is not positive definite. */
int lt_cholesky_solve(double *A, double *r, int d);
/* A Cholesky factor L (lower triangular, A = L L^T, row stride ld) updated as A gains or loses
 * one row and column. r becomes the solution of L L^T x = r (order d). */
void lt_cholesky_apply(const double *L, int ld, double *r, int d);
/* A gains a last row and column (a: its k off-diagonal entries, diag: its diagonal entry); L of
 * order k grows to k + 1. Returns 0, leaving L of order k, if A is then not positive definite. */
int lt_cholesky_append(double *L, int ld, int k, const double *a, double diag);
/* A loses row and column j; L of order k shrinks to k - 1 (O(k^2), Givens rotations). */
void lt_cholesky_remove(double *L, int ld, int k, int j);
/* Inverts A (destroyed) into inv by Gauss-Jordan with partial pivoting; returns 0 when a pivot
 * vanishes (singular to working precision). */
int lt_invert(double *A, double *inv, int d);
/* The 1-norm (largest column sum of |a_ij|). */
double lt_norm1(const double *A, int d);
#endif
