/* cpu.c - which kernel variant runs: CPU detection, LADE_ISA, the active table.
 *
 * The widest variant the CPU supports is chosen on first use; LADE_ISA (read
 * by lade_isa_from_env, which the Python module calls at import) or
 * lade_set_isa force another. A variant the CPU lacks is refused with a
 * status, so its instructions can never run (no SIGILL). */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LADE_X86 1
#include <cpuid.h>
#endif

typedef struct {
    const lade_kernel_table *table;
    int (*supported)(void);
} variant;

#ifdef LADE_X86
static int has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int has_avx512(void) {
    /* __builtin_cpu_supports also checks that the OS saves the vector state */
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}
static int has_avx512_bf16(void) { return has_avx512() && __builtin_cpu_supports("avx512bf16"); }
#endif
static int always(void) { return 1; }

/* Widest first: the first supported one is the default. avx512_bf16 is
 * avx512 with the bfloat16 kernels added (the same float32 code). w16_avx2
 * (the 16-float tiling on AVX2 hardware) and bf16_emulated (the bfloat16
 * kernels in portable C) exist for tests and are never the default. */
static const variant variants[] = {
#ifdef LADE_X86
    {&lade_kernels_avx512_bf16, has_avx512_bf16},
    {&lade_kernels_avx512, has_avx512},
    {&lade_kernels_avx2, has_avx2},
#endif
    {&lade_kernels_generic, always},
#ifdef LADE_X86
    {&lade_kernels_w16_avx2, has_avx2},
#endif
    {&lade_kernels_bf16_emulated, always},
};
#define NUM_VARIANTS (sizeof variants / sizeof variants[0])

static const lade_kernel_table *active;

const lade_kernel_table *lade_kernels(void) {
    const lade_kernel_table *t = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
    if (t) return t;
    for (size_t i = 0; i < NUM_VARIANTS; i++)
        if (variants[i].supported()) {
            t = variants[i].table;
            break;
        }
    __atomic_store_n(&active, t, __ATOMIC_RELEASE);
    return t;
}

static void supported_list(char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NUM_VARIANTS && used < size; i++)
        if (variants[i].supported())
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? " " : "", variants[i].table->name);
}

/* origin: "" (a call) or "environment variable LADE_ISA" (names the setting in the message) */
static lade_status select_variant(const char *name, const char *origin) {
    char supported[96], where[160] = "";
    if (origin[0]) snprintf(where, sizeof where, "%s=%s: ", origin, name);
    supported_list(supported, sizeof supported);
    for (size_t i = 0; i < NUM_VARIANTS; i++) {
        if (strcmp(name, variants[i].table->name) != 0) continue;
        if (!variants[i].supported())
            return lade_fail(LADE_EINVAL, "%sthis CPU cannot run the kernel variant '%s'; it supports: %s", where,
                             name, supported);
        __atomic_store_n(&active, variants[i].table, __ATOMIC_RELEASE);
        return LADE_OK;
    }
    char known[96];
    size_t used = 0;
    for (size_t i = 0; i < NUM_VARIANTS; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", variants[i].table->name);
    return lade_fail(LADE_EINVAL, "%s'%s' is not a kernel variant; expected one of %s (this CPU supports: %s)",
                     where, name, known, supported);
}

lade_status lade_set_isa(const char *name) {
    if (!name) return lade_fail(LADE_EINVAL, "kernel variant name is NULL");
    return select_variant(name, "");
}

const char *lade_get_isa(void) { return lade_kernels()->name; }

lade_status lade_bf16_check(const char *func) {
    const lade_kernel_table *k = lade_kernels();
    if (k->wino_blocks_bf16) return LADE_OK;
    char model[sizeof ((lade_cpu_info *)0)->model] = "unknown";
#ifdef LADE_X86
    lade_cpu_info info;
    lade_cpu_info_get(&info);
    snprintf(model, sizeof model, "%s", info.model);
    if (has_avx512_bf16())
        return lade_fail(LADE_EINVAL, "%s: precision 'bf16' needs bfloat16 kernels, and the kernel variant in use, "
                         "'%s', has none; this CPU (%s) has avx512_bf16: select 'avx512_bf16' (lade.set_isa)",
                         func, k->name, model);
#endif
    return lade_fail(LADE_EINVAL, "%s: precision 'bf16' needs a CPU with bfloat16 instructions (avx512_bf16), and "
                     "this CPU (%s) has none; train in precision 'float32' (the variant 'bf16_emulated' runs the "
                     "bfloat16 code in portable C, slowly, for tests only)", func, model);
}

lade_status lade_isa_from_env(void) {
    const char *name = getenv("LADE_ISA");
    if (!name || !name[0]) return LADE_OK;
    return select_variant(name, "environment variable LADE_ISA");
}

void lade_cpu_info_get(lade_cpu_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->model, sizeof info->model, "unknown");
#ifdef LADE_X86
    unsigned int regs[12], max_ext = __get_cpuid_max(0x80000000u, NULL);
    if (max_ext >= 0x80000004u) {
        for (unsigned int leaf = 0; leaf < 3; leaf++)
            __get_cpuid(0x80000002u + leaf, &regs[4 * leaf], &regs[4 * leaf + 1], &regs[4 * leaf + 2],
                        &regs[4 * leaf + 3]);
        char brand[49];
        memcpy(brand, regs, 48);
        brand[48] = '\0';
        const char *start = brand;
        while (*start == ' ') start++;
        size_t len = strlen(start);
        while (len && start[len - 1] == ' ') len--;
        snprintf(info->model, sizeof info->model, "%.*s", (int)len, start);
    }
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        unsigned int base_family = (eax >> 8) & 0xf, base_model = (eax >> 4) & 0xf;
        unsigned int family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
        unsigned int model = base_family == 0x6 || base_family == 0xf ? (((eax >> 16) & 0xf) << 4) + base_model
                                                                       : base_model;
        size_t used = strlen(info->model);
        snprintf(info->model + used, sizeof info->model - used, " (family %u model %u)", family, model);
    }
    __builtin_cpu_init();
    static const char *const features[] = {"sse2", "avx", "avx2", "fma", "avx512f", "avx512vl", "avx512bw",
                                           "avx512dq", "avx512bf16"};
    size_t used = 0;
    for (size_t i = 0; i < sizeof features / sizeof features[0]; i++) {
        int found;
        /* __builtin_cpu_supports needs a string literal */
        switch (i) {
        case 0: found = __builtin_cpu_supports("sse2"); break;
        case 1: found = __builtin_cpu_supports("avx"); break;
        case 2: found = __builtin_cpu_supports("avx2"); break;
        case 3: found = __builtin_cpu_supports("fma"); break;
        case 4: found = __builtin_cpu_supports("avx512f"); break;
        case 5: found = __builtin_cpu_supports("avx512vl"); break;
        case 6: found = __builtin_cpu_supports("avx512bw"); break;
        case 7: found = __builtin_cpu_supports("avx512dq"); break;
        default: found = __builtin_cpu_supports("avx512bf16"); break;
        }
        if (found)
            used += (size_t)snprintf(info->features + used, sizeof info->features - used, "%s%s", used ? " " : "",
                                     features[i]);
    }
#endif
    supported_list(info->supported, sizeof info->supported);
    info->active = lade_get_isa();
    info->vector_floats = lade_kernels()->vector_floats;
}
