/* kernels_avx512_bf16.c - the AVX-512 kernels (kernels_avx512.c) and the
 * bfloat16 ones with the AVX512-BF16 instructions (vcvtne2ps2bf16, vdpbf16ps). */
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")
#endif
#define KERNEL_FLOATS 16
#define KERNEL_NAME(x) x##_avx512_bf16
#define KERNEL_VARIANT "avx512_bf16"
#define KERNEL_BF16 1
#include "kernels_template.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
