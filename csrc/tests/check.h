/* check.h - a small test harness for the C core (no Python involved).
 *
 *     TEST(conv_matches_naive) { ... CHECK(cond); CHECK_CLOSE(a, b, tol); }
 *
 * Tests register themselves at load time; main.c runs them all and prints
 * "N passed, N failed". */
#ifndef LADE_CHECK_H
#define LADE_CHECK_H
#include <math.h>
#include <stdio.h>

typedef void (*check_fn)(int *failures);
void check_register(const char *name, check_fn fn);

#define TEST(name)                                                          \
    static void test_##name(int *failures);                                 \
    __attribute__((constructor)) static void register_##name(void) {        \
        check_register(#name, test_##name);                                 \
    }                                                                       \
    static void test_##name(int *failures)

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            (*failures)++;                                                  \
        }                                                                   \
    } while (0)

#define CHECK_CLOSE(a, b, tol)                                              \
    do {                                                                    \
        double a_ = (a), b_ = (b);                                          \
        if (!(fabs(a_ - b_) <= (tol))) {                                    \
            fprintf(stderr, "  %s:%d: %s = %.9g, %s = %.9g, differ by more than %g\n", \
                    __FILE__, __LINE__, #a, a_, #b, b_, (double)(tol));     \
            (*failures)++;                                                  \
        }                                                                   \
    } while (0)

#define CHECK_OK(expr)                                                      \
    do {                                                                    \
        lade_status st_ = (expr);                                           \
        if (st_ != LADE_OK) {                                               \
            fprintf(stderr, "  %s:%d: %s returned %s (%s)\n", __FILE__, __LINE__, #expr, \
                    lade_status_str(st_), lade_error_detail());             \
            (*failures)++;                                                  \
        }                                                                   \
    } while (0)

#endif
