/* threads.c - one thread count for OpenBLAS and the core's own worker pool.
 *
 * Persistent workers, one job at a time. A job's range is cut into chunks
 * (about CHUNKS_PER_THREAD per thread) that the threads, the caller included,
 * take in turn from a shared counter: when the machine is shared and one
 * thread loses its core for a while, the others take its chunks instead of
 * waiting for it at the end of the job. Between jobs a worker spins for up to
 * SPIN_NS before it sleeps, and so does the caller waiting for a job's end:
 * a thread that sleeps hands its core to whatever else is runnable, and on a
 * shared machine getting it back costs more than the wait. Beside one nice-19
 * busy loop, a 2-thread training step ran about 24 % faster with 500 us of
 * spinning than with 13 us (Zen 4, 4 alternating rounds); alone, the same.
 * A worker that sleeps uses no CPU (OpenBLAS's threads get the cores for
 * GEMMs). The spin is timed, not counted in pause instructions, whose latency
 * differs tenfold between CPUs. */
#include "lade_base.h"
#include "blas.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#define CHUNKS_PER_THREAD 8
#define SPIN_NS 500000u
#define SPIN_CLOCK_EVERY 64 /* pause instructions between clock reads (a read is ~25 ns) */

static pthread_mutex_t dispatch_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;

static int num_threads;              /* 0 until first use (atomic: read without a lock) */
static int num_workers;              /* num_threads - 1 workers are running */
static pthread_t workers[LADE_MAX_THREADS];
static uint64_t generation;          /* bumped for every job and for shutdown (atomic; written under pool_lock) */
static uint64_t spawn_generation;    /* generation when the workers were started */
static int shutting_down;

/* The job. Its fields are written by the caller only between jobs, and read
 * with atomic loads, since a worker that lost its core may still read them
 * after the job ended; what it read then is thrown away, because claiming a
 * chunk is a compare-and-swap on job_claim, which holds the job's tag (its
 * generation, JOB_TAG_BITS wide) and the first index not yet taken. While a
 * job has unclaimed indices it is not finished, so its fields stay unchanged;
 * before the next job's fields are written, job_claim is closed (see
 * lade_parallel_for). The fields are stored with release and loaded with
 * acquire: a worker that reads a new field also sees the closed claim, and what
 * the caller wrote behind its ctx pointer (`make tsan` checks the pool). */
#define JOB_INDEX_BITS 40
#define JOB_INDEX_MASK ((UINT64_C(1) << JOB_INDEX_BITS) - 1)
#define TAG_MASK ((UINT64_C(1) << (64 - JOB_INDEX_BITS)) - 1) /* generation bits kept in the tag */
static lade_range_fn job_fn;
static void *job_ctx;
static size_t job_n, job_chunk;
static uint64_t job_claim; /* tag << JOB_INDEX_BITS | next index */
static uint64_t job_done;  /* indices finished (atomic) */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Waits while (*word == value) == same: spins for at most SPIN_NS, then sleeps
 * on cond under pool_lock (whoever changes *word signals cond under it). A
 * worker waits for the next generation, the caller for job_done to reach n. */
static void wait_while(const uint64_t *word, uint64_t value, int same, pthread_cond_t *cond) {
    uint64_t start = now_ns();
    for (unsigned i = 1; (__atomic_load_n(word, __ATOMIC_ACQUIRE) == value) == same; i++) {
        cpu_relax();
        if (i % SPIN_CLOCK_EVERY == 0 && now_ns() - start > SPIN_NS) break;
    }
    if ((__atomic_load_n(word, __ATOMIC_ACQUIRE) == value) != same) return;
    pthread_mutex_lock(&pool_lock);
    while ((__atomic_load_n(word, __ATOMIC_ACQUIRE) == value) == same) pthread_cond_wait(cond, &pool_lock);
    pthread_mutex_unlock(&pool_lock);
}

static inline uint64_t job_tag(uint64_t gen) { return gen << JOB_INDEX_BITS; }

/* Runs chunks of the job tagged `gen` until none is left; returns at once if
 * that job is over. The thread that finishes the last index wakes the caller. */
static void take_chunks(uint64_t gen) {
    for (;;) {
        uint64_t claim = __atomic_load_n(&job_claim, __ATOMIC_ACQUIRE);
        if ((claim & ~JOB_INDEX_MASK) != job_tag(gen)) return;
        size_t n = __atomic_load_n(&job_n, __ATOMIC_ACQUIRE), chunk = __atomic_load_n(&job_chunk, __ATOMIC_ACQUIRE);
        lade_range_fn fn = __atomic_load_n(&job_fn, __ATOMIC_ACQUIRE);
        void *ctx = __atomic_load_n(&job_ctx, __ATOMIC_ACQUIRE);
        size_t begin = (size_t)(claim & JOB_INDEX_MASK);
        if (begin >= n) return;
        size_t end = n - begin < chunk ? n : begin + chunk;
        if (!__atomic_compare_exchange_n(&job_claim, &claim, job_tag(gen) | end, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        fn(ctx, begin, end);
        if (__atomic_add_fetch(&job_done, end - begin, __ATOMIC_ACQ_REL) == n) {
            pthread_mutex_lock(&pool_lock);
            pthread_cond_signal(&work_done);
            pthread_mutex_unlock(&pool_lock);
        }
    }
}

static void *worker_main(void *arg) {
    (void)arg;
    /* Not `generation`: a job may already be posted before this thread runs. */
    uint64_t seen = spawn_generation;
    for (;;) {
        wait_while(&generation, seen, 1, &work_ready);
        seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&shutting_down, __ATOMIC_ACQUIRE)) break;
        take_chunks(seen & TAG_MASK);
    }
    return NULL;
}

static void stop_workers(void) {
    pthread_mutex_lock(&pool_lock);
    __atomic_store_n(&shutting_down, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&work_ready);
    pthread_mutex_unlock(&pool_lock);
    for (int i = 0; i < num_workers; i++) pthread_join(workers[i], NULL);
    num_workers = 0;
    __atomic_store_n(&shutting_down, 0, __ATOMIC_RELAXED);
}

/* Workers get a stack of their own size rather than RLIMIT_STACK's (which may be small): the
 * Winograd kernels' frame holds a block of up to 240 KB. Reserved address space only. */
#define WORKER_STACK_BYTES ((size_t)8 << 20)

static lade_status start_workers(int n) {
    spawn_generation = generation;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return lade_fail(LADE_ENOMEM, "could not set up worker threads");
    pthread_attr_setstacksize(&attr, WORKER_STACK_BYTES);
    lade_status st = LADE_OK;
    for (int i = 0; i < n - 1; i++) {
        if (pthread_create(&workers[i], &attr, worker_main, (void *)(intptr_t)i) != 0) {
            stop_workers();
            st = lade_fail(LADE_ENOMEM, "could not start worker thread %d", i + 1);
            break;
        }
        num_workers = i + 1;
    }
    pthread_attr_destroy(&attr);
    return st;
}

static int default_thread_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n < LADE_MAX_THREADS ? n : LADE_MAX_THREADS;
    }
    return 1;
}

lade_status lade_set_num_threads(int n) {
    if (n < 1 || n > LADE_MAX_THREADS)
        return lade_fail(LADE_EINVAL, "thread count must be in [1, %d], got %d", LADE_MAX_THREADS, n);
    pthread_mutex_lock(&dispatch_lock);
    stop_workers();
    lade_status st = start_workers(n);
    int now = st == LADE_OK ? n : 1;
    __atomic_store_n(&num_threads, now, __ATOMIC_RELAXED);
    openblas_set_num_threads(now);
    pthread_mutex_unlock(&dispatch_lock);
    return st;
}

int lade_get_num_threads(void) {
    if (__atomic_load_n(&num_threads, __ATOMIC_RELAXED) == 0) lade_set_num_threads(default_thread_count());
    return __atomic_load_n(&num_threads, __ATOMIC_RELAXED);
}

void lade_parallel_for(size_t n, lade_range_fn fn, void *ctx) {
    if (n == 0) return;
    int threads = lade_get_num_threads();
    if (threads == 1 || n == 1 || n > JOB_INDEX_MASK) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&dispatch_lock);
    int total = num_workers + 1;
    size_t chunk = n / ((size_t)total * CHUNKS_PER_THREAD);
    uint64_t gen = generation + 1;
    /* Close the claim before the fields change. A worker late from the last
     * job may still hold that job's tag; with the claim at that job's end but
     * this job's (larger) n, it would take indices of this job under the old
     * tag: indices run twice, and job_done counted wrong (a caller that
     * returns early, or one that waits for ever). */
    __atomic_store_n(&job_claim, job_tag(gen & TAG_MASK) | JOB_INDEX_MASK, __ATOMIC_RELAXED);
    __atomic_store_n(&job_fn, fn, __ATOMIC_RELEASE);
    __atomic_store_n(&job_ctx, ctx, __ATOMIC_RELEASE);
    __atomic_store_n(&job_n, n, __ATOMIC_RELEASE);
    __atomic_store_n(&job_chunk, chunk < 1 ? 1 : chunk, __ATOMIC_RELEASE);
    __atomic_store_n(&job_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&job_claim, job_tag(gen & TAG_MASK), __ATOMIC_RELEASE);
    pthread_mutex_lock(&pool_lock); /* a worker checks generation under it before sleeping */
    __atomic_store_n(&generation, gen, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&work_ready);
    pthread_mutex_unlock(&pool_lock);

    take_chunks(gen & TAG_MASK);

    wait_while(&job_done, n, 0, &work_done); /* job_done never passes n */
    pthread_mutex_unlock(&dispatch_lock);
}
