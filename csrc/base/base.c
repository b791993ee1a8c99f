/* base.c - status strings, thread-local error detail, RNG, allocation. */
#include "lade_base.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lade_status_str(lade_status s) {
    switch (s) {
    case LADE_OK: return "ok";
    case LADE_EINVAL: return "invalid argument";
    case LADE_ENOMEM: return "out of memory";
    case LADE_ENONFINITE: return "non-finite value";
    case LADE_EIO: return "input/output error";
    case LADE_EDECODE: return "malformed data";
    case LADE_ERANGE: return "value out of range";
    case LADE_ESTATE: return "invalid state";
    case LADE_ECANCELLED: return "cancelled";
    }
    return "unknown status";
}

static _Thread_local char error_detail[512];

const char *lade_error_detail(void) { return error_detail; }

void lade_clear_error(void) { error_detail[0] = '\0'; }

lade_status lade_fail(lade_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_detail, sizeof error_detail, fmt, ap);
    va_end(ap);
    return s;
}

/* ---- RNG ------------------------------------------------------------------- */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lade_rng_seed(lade_rng *r, uint64_t seed, uint64_t stream) {
    /* Mix the stream through splitmix first so that neighbouring (seed, stream)
     * pairs land on unrelated states. */
    uint64_t x = seed;
    uint64_t mixed = splitmix64(&x) ^ (stream * 0xD1342543DE82EF95ull + 0x2545F4914F6CDD1Dull);
    x = mixed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* all-zero is a fixed point */
    r->spare_normal = 0.0;
    r->has_spare = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lade_rng_next_u64(lade_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lade_rng_uniform(lade_rng *r) {
    return (double)(lade_rng_next_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t lade_rng_below(lade_rng *r, uint64_t n) {
    /* Lemire's multiply-and-reject: unbiased, one multiplication most of the time. */
    uint64_t x = lade_rng_next_u64(r);
    __uint128_t m = (__uint128_t)x * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            x = lade_rng_next_u64(r);
            m = (__uint128_t)x * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double lade_rng_normal(lade_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare_normal;
    }
    double u1, u2;
    do u1 = lade_rng_uniform(r); while (u1 <= 0.0);
    u2 = lade_rng_uniform(r);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586476925286766559 * u2;
    r->spare_normal = radius * sin(angle);
    r->has_spare = 1;
    return radius * cos(angle);
}

void lade_rng_shuffle_i64(lade_rng *r, int64_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)lade_rng_below(r, i);
        int64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void lade_epoch_permutation(int64_t *out, size_t n, uint64_t seed, uint64_t epoch) {
    for (size_t i = 0; i < n; i++) out[i] = (int64_t)i;
    lade_rng r;
    lade_rng_seed(&r, seed ^ 0x53485546464C4500ull, epoch); /* "SHUFFLE\0": apart from the sample streams */
    lade_rng_shuffle_i64(&r, out, n);
}

/* ---- memory ---------------------------------------------------------------- */
bool lade_mul_size(size_t *out, size_t a, size_t b) {
    return !__builtin_mul_overflow(a, b, out);
}

void *lade_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    if (posix_memalign(&p, 64, rounded) != 0) return NULL;
    return p;
}

void lade_free(void *p) { free(p); }
