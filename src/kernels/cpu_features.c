/* cpu_features.c: CPU feature and cache-size detection for runtime kernel dispatch. */
#include <string.h>

#include "sgemm.h"

#if defined(PYCONV_HAVE_X86_KERNELS)
#include "cpu_id.inc"

int pyconv_cpu_has_avx2_fma(void)
{
    unsigned r1[4], r7[4];
    cpuid_count(1, 0, r1);
    cpuid_count(7, 0, r7);
    int fma = (r1[2] >> 12) & 1, avx = (r1[2] >> 28) & 1, avx2 = (r7[1] >> 5) & 1;
    return fma && avx && avx2 && os_saves(0x6); /* XMM | YMM state */
}

int pyconv_cpu_has_avx512f(void)
{
    unsigned r7[4];
    cpuid_count(7, 0, r7);
    int avx512f = (r7[1] >> 16) & 1;
    return avx512f && pyconv_cpu_has_avx2_fma() && os_saves(0xE6); /* + opmask, ZMM state */
}
#else
int pyconv_cpu_has_avx2_fma(void) { return 0; }
int pyconv_cpu_has_avx512f(void) { return 0; }
#endif

const pyconv_sgemm_kernel *pyconv_sgemm_kernel_for(const char *isa)
{
    if (strcmp(isa, "generic") == 0) return &pyconv_sgemm_kernel_generic;
#if defined(PYCONV_HAVE_X86_KERNELS)
    if (strcmp(isa, "avx2") == 0 && pyconv_cpu_has_avx2_fma()) return &pyconv_sgemm_kernel_avx2;
    if (strcmp(isa, "avx512") == 0 && pyconv_cpu_has_avx512f())
        return &pyconv_sgemm_kernel_avx512;
#endif
    return NULL;
}

const pyconv_sgemm_kernel *pyconv_sgemm_kernel_best(void)
{
    const pyconv_sgemm_kernel *k = pyconv_sgemm_kernel_for("avx512");
    if (!k) k = pyconv_sgemm_kernel_for("avx2");
    return k ? k : &pyconv_sgemm_kernel_generic;
}

#if defined(__linux__)
#include <unistd.h>
#endif

int64_t pyconv_cache_size(int level)
{
#if defined(__linux__) && defined(_SC_LEVEL1_DCACHE_SIZE)
    long v = 0;
    if (level == 1) v = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    else if (level == 2) v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    else if (level == 3) v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? (int64_t)v : 0;
#else
    (void)level;
    return 0;
#endif
}
