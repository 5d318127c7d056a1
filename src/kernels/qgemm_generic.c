/* qgemm_generic.c: the portable exact int8 GEMM, B packing and the per-ISA dispatch. */
#include <string.h>

#include "qgemm.h"

#if defined(PYCONV_HAVE_X86_KERNELS)
#include "cpu_id.inc"

static int detect_avx512vnni(void)
{
    unsigned r7[4];
    cpuid_count(7, 0, r7);
    int avx512f = (r7[1] >> 16) & 1, vnni = (r7[2] >> 11) & 1;
    return avx512f && vnni && os_saves(0xE6);
}

static int detect_avxvnni(void)
{
    unsigned r71[4];
    cpuid_count(7, 1, r71);
    return ((r71[0] >> 4) & 1) && os_saves(0x6);
}

/* Read once: CPUID traps to the hypervisor in a VM (microseconds), and every quantized
 * layer looks its kernel up per call. A race only computes the same answer twice. */
static int cpu_has_avx512vnni(void)
{
    static volatile int known = -1;
    if (known < 0) known = detect_avx512vnni();
    return known;
}

static int cpu_has_avxvnni(void)
{
    static volatile int known = -1;
    if (known < 0) known = detect_avxvnni();
    return known;
}
#endif

void pyconv_qgemm_pack_b(int64_t k, int64_t n, const int8_t *b, int64_t ldb, int8_t *dst)
{
    const int64_t kp = (k + PYCONV_QGEMM_KB - 1) / PYCONV_QGEMM_KB * PYCONV_QGEMM_KB;
    const int64_t np = (n + PYCONV_QGEMM_NB - 1) / PYCONV_QGEMM_NB * PYCONV_QGEMM_NB;
    memset(dst, 0, (size_t)(kp * np));
    for (int64_t kk = 0; kk < k; kk++) {
        const int64_t group = kk / PYCONV_QGEMM_KB, lane = kk % PYCONV_QGEMM_KB;
        for (int64_t j = 0; j < n; j++) {
            const int64_t block = j / PYCONV_QGEMM_NB, col = j % PYCONV_QGEMM_NB;
            dst[(block * (kp / PYCONV_QGEMM_KB) + group) * (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB)
                + col * PYCONV_QGEMM_KB + lane] = b[kk * ldb + j];
        }
    }
}

static void qgemm_generic(int64_t m, int64_t np, int64_t kp, const uint8_t *a, int64_t lda,
                          const int8_t *bp, int32_t *c, int64_t ldc)
{
    const int64_t groups = kp / PYCONV_QGEMM_KB;
    for (int64_t block = 0; block < np / PYCONV_QGEMM_NB; block++) {
        const int8_t *panel = bp + block * groups * (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB);
        for (int64_t i = 0; i < m; i++) {
            int32_t acc[PYCONV_QGEMM_NB] = {0};
            const uint8_t *row = a + i * lda;
            for (int64_t g = 0; g < groups; g++) {
                const int8_t *q = panel + g * (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB);
                const uint8_t *x = row + g * PYCONV_QGEMM_KB;
                for (int j = 0; j < PYCONV_QGEMM_NB; j++)
                    for (int t = 0; t < PYCONV_QGEMM_KB; t++)
                        acc[j] += (int32_t)x[t] * (int32_t)q[j * PYCONV_QGEMM_KB + t];
            }
            memcpy(c + i * ldc + block * PYCONV_QGEMM_NB, acc, sizeof acc);
        }
    }
}

#define QGEMM_SUFFIX generic
#include "qgemm_common.inc"

const pyconv_qgemm_kernel pyconv_qgemm_kernel_generic = {"generic", qgemm_generic, QGEMM_HELPERS, NULL, NULL};

const pyconv_qgemm_kernel *pyconv_qgemm_kernel_for(const char *isa)
{
#if defined(PYCONV_HAVE_X86_KERNELS)
    const int x86 = strcmp(isa, "avx512") == 0 || strcmp(isa, "avx2") == 0;
    if (strcmp(isa, "avx512") == 0 && cpu_has_avx512vnni())
        return &pyconv_qgemm_kernel_avx512vnni;
    if (x86 && cpu_has_avxvnni() && pyconv_qgemm_kernel_avxvnni.gemm != NULL)
        return &pyconv_qgemm_kernel_avxvnni;
    if (x86)
        return &pyconv_qgemm_kernel_avx2;
#else
    (void)isa;
#endif
    return &pyconv_qgemm_kernel_generic;
}

const pyconv_qgemm_kernel *pyconv_qgemm_kernel_named(const char *name)
{
    const pyconv_qgemm_kernel *all[] = {
        &pyconv_qgemm_kernel_generic,
#if defined(PYCONV_HAVE_X86_KERNELS)
        &pyconv_qgemm_kernel_avx2, &pyconv_qgemm_kernel_avxvnni,
        &pyconv_qgemm_kernel_avx512vnni,
#endif
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->isa, name) == 0) return all[i]->gemm != NULL ? all[i] : NULL;
    return NULL;
}
