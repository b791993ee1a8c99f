/* kernels_avx512.c - the kernels with 16-float vectors for AVX-512 (F, VL, BW, DQ) + FMA. */
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#define KERNEL_FLOATS 16
#define KERNEL_NAME(x) x##_avx512
#define KERNEL_VARIANT "avx512"
#include "kernels_template.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
