/* threads.c - one thread count for OpenBLAS and the core's own worker pool.
 *
 * The pool is deliberately plain: persistent workers that sleep on a condition
 * variable (no spinning, so they never compete with OpenBLAS's threads for the
 * cores), one job at a time, each thread taking one contiguous chunk. */
#include "lade_base.h"
#include "blas.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#define MAX_THREADS 256

static pthread_mutex_t dispatch_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;

static int num_threads;              /* 0 until first use */
static int num_workers;              /* num_threads - 1 workers are running */
static pthread_t workers[MAX_THREADS];
static uint64_t generation;          /* bumped for every job and for shutdown */
static uint64_t spawn_generation;    /* generation when the workers were started */
static int pending;                  /* workers still busy with this job */
static int shutting_down;
static lade_range_fn job_fn;
static void *job_ctx;
static size_t job_n;

static void run_chunk(int index, int total) {
    size_t begin = job_n * (size_t)index / (size_t)total;
    size_t end = job_n * (size_t)(index + 1) / (size_t)total;
    if (begin < end) job_fn(job_ctx, begin, end);
}

static void *worker_main(void *arg) {
    int index = (int)(intptr_t)arg; /* worker i takes chunk i + 1; the caller takes chunk 0 */
    pthread_mutex_lock(&pool_lock);
    /* Not `generation`: a job may already be posted before this thread runs. */
    uint64_t seen = spawn_generation;
    for (;;) {
        while (generation == seen) pthread_cond_wait(&work_ready, &pool_lock);
        seen = generation;
        if (shutting_down) break;
        int total = num_workers + 1;
        pthread_mutex_unlock(&pool_lock);
        run_chunk(index + 1, total);
        pthread_mutex_lock(&pool_lock);
        if (--pending == 0) pthread_cond_signal(&work_done);
    }
    pthread_mutex_unlock(&pool_lock);
    return NULL;
}

static void stop_workers(void) {
    pthread_mutex_lock(&pool_lock);
    shutting_down = 1;
    generation++;
    pthread_cond_broadcast(&work_ready);
    pthread_mutex_unlock(&pool_lock);
    for (int i = 0; i < num_workers; i++) pthread_join(workers[i], NULL);
    num_workers = 0;
    shutting_down = 0;
}

static lade_status start_workers(int n) {
    spawn_generation = generation;
    for (int i = 0; i < n - 1; i++) {
        if (pthread_create(&workers[i], NULL, worker_main, (void *)(intptr_t)i) != 0) {
            stop_workers();
            return lade_fail(LADE_ENOMEM, "could not start worker thread %d", i + 1);
        }
        num_workers = i + 1;
    }
    return LADE_OK;
}

static int default_thread_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n < MAX_THREADS ? n : MAX_THREADS;
    }
    return 1;
}

lade_status lade_set_num_threads(int n) {
    if (n < 1 || n > MAX_THREADS)
        return lade_fail(LADE_EINVAL, "thread count must be in [1, %d], got %d", MAX_THREADS, n);
    pthread_mutex_lock(&dispatch_lock);
    stop_workers();
    lade_status st = start_workers(n);
    num_threads = st == LADE_OK ? n : 1;
    openblas_set_num_threads(num_threads);
    pthread_mutex_unlock(&dispatch_lock);
    return st;
}

int lade_get_num_threads(void) {
    if (num_threads == 0) lade_set_num_threads(default_thread_count());
    return num_threads;
}

void lade_parallel_for(size_t n, lade_range_fn fn, void *ctx) {
    if (n == 0) return;
    int threads = lade_get_num_threads();
    if (threads == 1 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&dispatch_lock);
    pthread_mutex_lock(&pool_lock);
    job_fn = fn;
    job_ctx = ctx;
    job_n = n;
    pending = num_workers;
    int total = num_workers + 1;
    generation++;
    pthread_cond_broadcast(&work_ready);
    pthread_mutex_unlock(&pool_lock);

    run_chunk(0, total);

    pthread_mutex_lock(&pool_lock);
    while (pending > 0) pthread_cond_wait(&work_done, &pool_lock);
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&dispatch_lock);
}
