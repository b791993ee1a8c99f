/* kernels_generic.c - the kernels for any x86-64 (or other) CPU: no ISA flags. */
#define KERNEL_FLOATS 8
#define KERNEL_NAME(x) x##_generic
#define KERNEL_VARIANT "generic"
#include "kernels_template.h"
