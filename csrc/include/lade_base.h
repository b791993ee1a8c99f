/* lade_base.h - status codes, error details, random numbers and threads.
 *
 * Every function of the core returns a lade_status. The core never prints,
 * exits or aborts: on failure it returns a non-zero status and leaves a short
 * human-readable detail in a thread-local buffer (lade_error_detail()), the
 * way errno and strerror work. Bindings turn both into an exception.
 *
 * Random state is always explicit: a lade_rng is passed to every function
 * that draws numbers, so the same seed gives the same result, and a state
 * never crosses threads unless the caller hands it over.
 */
#ifndef LADE_BASE_H
#define LADE_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LADE_API __attribute__((visibility("default")))

typedef enum {
    LADE_OK = 0,
    LADE_EINVAL,     /* an argument has a wrong value or shape */
    LADE_ENOMEM,     /* an allocation failed */
    LADE_ENONFINITE, /* a NaN or Inf was found where a finite number is needed */
    LADE_EIO,        /* a file could not be opened or read */
    LADE_EDECODE,    /* a file's content is malformed (JPEG, CIFAR, list file) */
    LADE_ERANGE,     /* a value (label, index) lies outside its valid range */
    LADE_ESTATE,     /* an object is used in a state that does not allow it */
    LADE_ECANCELLED  /* the operation was stopped on request */
} lade_status;

LADE_API const char *lade_status_str(lade_status s);

/* The detail of the last failure in this thread ("" if none). */
LADE_API const char *lade_error_detail(void);
/* Sets the detail and returns s, so a failing path reads
 *     return lade_fail(LADE_EINVAL, "stride must be >= 1, got %d", s); */
LADE_API lade_status lade_fail(lade_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
LADE_API void lade_clear_error(void);

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---------------- */
typedef struct {
    uint64_t s[4];
    /* Box-Muller yields normals in pairs; the second one waits here. */
    double spare_normal;
    int has_spare;
} lade_rng;

/* seed and stream pick independent sequences: stream lets one seed feed many
 * workers or samples deterministically (e.g. stream = sample index). */
LADE_API void lade_rng_seed(lade_rng *r, uint64_t seed, uint64_t stream);
LADE_API uint64_t lade_rng_next_u64(lade_rng *r);
/* uniform double in [0, 1) with 53 random bits */
LADE_API double lade_rng_uniform(lade_rng *r);
/* uniform integer in [0, n), unbiased (Lemire); n must be > 0 */
LADE_API uint64_t lade_rng_below(lade_rng *r, uint64_t n);
/* standard normal */
LADE_API double lade_rng_normal(lade_rng *r);
/* Fisher-Yates shuffle of an int64 array */
LADE_API void lade_rng_shuffle_i64(lade_rng *r, int64_t *a, size_t n);
/* Instance sampling's epoch order, the one definition of it: a permutation of
 * 0..n-1 seeded by (seed, epoch) on a stream family apart from lade_rng_seed's
 * (seed, stream) pairs, so that it shares no randomness with the loader's
 * per-sample augmentation streams of the same seed. */
LADE_API void lade_epoch_permutation(int64_t *out, size_t n, uint64_t seed, uint64_t epoch);

/* ---- threads ----------------------------------------------------------------
 * One thread count governs both OpenBLAS and the core's own worker pool.
 * lade_parallel_for splits [0, n) into contiguous chunks that the threads take
 * in turn (which thread runs which chunk varies); the calling thread takes part
 * (the convolution kernels use up to 240 KB of its stack; the workers have 8
 * MB). Bodies must not call sgemm (OpenBLAS has its own threads) and must
 * write disjoint outputs. Calls from several threads at once are serialised. */
#define LADE_MAX_THREADS 256 /* n in [1, LADE_MAX_THREADS] (lade/app/config.py MAX_THREADS: held to it by a test) */
LADE_API lade_status lade_set_num_threads(int n);
LADE_API int lade_get_num_threads(void);
typedef void (*lade_range_fn)(void *ctx, size_t begin, size_t end);
LADE_API void lade_parallel_for(size_t n, lade_range_fn fn, void *ctx);

/* ---- kernel variants ----------------------------------------------------------
 * The vectorised kernels exist in several variants in one build:
 * "avx512_bf16" (avx512 and the bfloat16 kernels), "avx512" (16-float
 * vectors), "avx2" (8-float, AVX2 + FMA), "generic" (no ISA extensions), and
 * for tests "w16_avx2" (the 16-float code on AVX2) and "bf16_emulated" (the
 * 16-float code and the bfloat16 kernels in portable C, on any CPU). The
 * widest one the CPU supports is used unless one is chosen. A variant gives
 * the same bits on every CPU that supports it. */
typedef struct {
    char model[96];      /* CPU brand string with its family and model numbers (cpuid leaf 1, as lscpu prints
                          * them: brand strings like "AMD EPYC" name no generation), "unknown" when the CPU
                          * does not say */
    char features[160];  /* the ISA extensions lade looks for that the CPU has, space-separated */
    char supported[96];  /* variants this CPU can run, widest first, space-separated */
    const char *active;  /* the variant in use */
    int vector_floats;   /* floats per vector of the variant in use */
} lade_cpu_info;
LADE_API void lade_cpu_info_get(lade_cpu_info *info);
/* Switches variant; fails (naming what the CPU supports) for an unknown one
 * or one this CPU cannot run. Not while other threads run lade kernels. */
LADE_API lade_status lade_set_isa(const char *name);
LADE_API const char *lade_get_isa(void);
/* Applies the environment variable LADE_ISA if set (same checks as lade_set_isa). */
LADE_API lade_status lade_isa_from_env(void);
/* LADE_OK when the variant in use has the bfloat16 kernels (precision
 * LADE_BF16, lade_nn.h): "avx512_bf16" (AVX512-BF16 instructions, the default
 * where the CPU has them) and "bf16_emulated" (portable C, for tests; never
 * the default). Otherwise an error from func naming the CPU and what to do. */
LADE_API lade_status lade_bf16_check(const char *func);

/* ---- small helpers shared by the core -------------------------------------- */
/* a*b*... with overflow check; returns false on overflow */
LADE_API bool lade_mul_size(size_t *out, size_t a, size_t b);
/* 64-byte aligned allocation, NULL on failure; free with lade_free */
LADE_API void *lade_alloc(size_t bytes);
LADE_API void lade_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
