/* kernels_avx2.c - the kernels with 8-float vectors for AVX2 + FMA. */
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define KERNEL_FLOATS 8
#define KERNEL_NAME(x) x##_avx2
#define KERNEL_VARIANT "avx2"
#include "kernels_template.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
