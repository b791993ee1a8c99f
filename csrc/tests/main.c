/* main.c - runs every registered C test; the last line is "N passed, N failed".
 * An optional argument runs only the tests whose name contains it. */
#include <stdio.h>
#include <string.h>

#include "check.h"

#define MAX_TESTS 1024
static struct { const char *name; check_fn fn; } tests[MAX_TESTS];
static int num_tests;

void check_register(const char *name, check_fn fn) {
    if (num_tests < MAX_TESTS) {
        tests[num_tests].name = name;
        tests[num_tests].fn = fn;
        num_tests++;
    }
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (int i = 0; i < num_tests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        int failures = 0;
        tests[i].fn(&failures);
        printf("%s %s\n", failures ? "FAIL" : "ok  ", tests[i].name);
        fflush(stdout);
        if (failures) failed++; else passed++;
    }
    if (num_tests >= MAX_TESTS) {
        printf("FAIL too many tests registered\n");
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
