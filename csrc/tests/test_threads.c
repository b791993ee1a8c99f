/* test_threads.c - the core's worker pool (base/threads.c): every index of a
 * job runs exactly once, also with several callers at the same time and the
 * thread count changing under them. `make tsan` runs these tests under
 * ThreadSanitizer. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lade.h"
#include "check.h"

typedef struct { int *hits; } pool_ctx;
static void count_hits(void *ctx, size_t begin, size_t end) {
    pool_ctx *p = ctx;
    for (size_t i = begin; i < end; i++) p->hits[i]++;
}

TEST(thread_pool_covers_every_index_once) {
    int hits[1000];
    for (int threads = 1; threads <= 3; threads++) {
        CHECK_OK(lade_set_num_threads(threads));
        for (int rep = 0; rep < 50; rep++) {
            memset(hits, 0, sizeof hits);
            pool_ctx ctx = {hits};
            lade_parallel_for(1000, count_hits, &ctx);
            for (int i = 0; i < 1000; i++) CHECK(hits[i] == 1);
        }
    }
    CHECK(lade_set_num_threads(0) == LADE_EINVAL);
    CHECK_OK(lade_set_num_threads(2));
}

/* A job whose body checks that it belongs to its caller's current job (a chunk
 * run after its job ended would see the caller's next job number) and counts
 * how often each index ran. */
typedef struct {
    long job;
    const volatile long *current;
    long *hits;
    int *errors;
} owned_ctx;

static void count_owned(void *ctx, size_t begin, size_t end) {
    const owned_ctx *c = ctx;
    if (c->job != *c->current) __atomic_add_fetch(c->errors, 1, __ATOMIC_RELAXED);
    for (size_t i = begin; i < end; i++) __atomic_add_fetch(&c->hits[i], 1, __ATOMIC_RELAXED);
}

typedef struct {
    unsigned seed;
    int errors;
} caller_state;

static void *pool_caller(void *arg) {
    caller_state *st = arg;
    long hits[300];
    volatile long current = -1;
    for (long job = 0; job < 4000; job++) {
        size_t n = 1 + (size_t)rand_r(&st->seed) % 300;
        memset(hits, 0, n * sizeof *hits);
        current = job;
        owned_ctx c = {job, &current, hits, &st->errors};
        lade_parallel_for(n, count_owned, &c);
        int wrong = 0;
        for (size_t i = 0; i < n; i++) wrong += hits[i] != 1;
        __atomic_add_fetch(&st->errors, wrong, __ATOMIC_RELAXED); /* a late chunk may add to errors too */
    }
    return NULL;
}

static void *pool_resizer(void *arg) {
    int *stop = arg;
    unsigned seed = 7;
    while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
        lade_set_num_threads(1 + rand_r(&seed) % 4);
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

TEST(thread_pool_with_concurrent_callers_and_resizes) {
    CHECK_OK(lade_set_num_threads(3));
    enum { CALLERS = 3 };
    caller_state st[CALLERS];
    pthread_t callers[CALLERS], resizer;
    int stop = 0;
    CHECK(pthread_create(&resizer, NULL, pool_resizer, &stop) == 0);
    for (int i = 0; i < CALLERS; i++) {
        st[i] = (caller_state){(unsigned)(11 + i), 0};
        CHECK(pthread_create(&callers[i], NULL, pool_caller, &st[i]) == 0);
    }
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(callers[i], NULL);
        CHECK(st[i].errors == 0);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(resizer, NULL);
    CHECK_OK(lade_set_num_threads(2));
}
