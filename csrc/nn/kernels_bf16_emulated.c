/* kernels_bf16_emulated.c - for tests only: the kernels of the AVX-512 variants
 * (16-float vectors and tiles) with no ISA flags, and the bfloat16 kernels
 * emulated in portable C on the same packed data (rounding to nearest even by
 * integer arithmetic, the products of bfloat16 values in float), so the
 * bfloat16 path runs on any CPU. Never the default; lade.set_isa("bf16_emulated")
 * or LADE_ISA selects it. */
#define KERNEL_FLOATS 16
#define KERNEL_NAME(x) x##_bf16_emulated
#define KERNEL_VARIANT "bf16_emulated"
#define KERNEL_BF16 2
#include "kernels_template.h"
