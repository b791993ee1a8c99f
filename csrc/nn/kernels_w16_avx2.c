/* kernels_w16_avx2.c - for tests only: the 16-float code of the AVX-512
 * variant compiled for AVX2 + FMA (each vector becomes two 8-float halves),
 * so that its tiling is exercised on CPUs without AVX-512. */
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define KERNEL_FLOATS 16
#define KERNEL_NAME(x) x##_w16_avx2
#define KERNEL_VARIANT "w16_avx2"
#include "kernels_template.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
