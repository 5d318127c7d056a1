/* qgemm_avxvnni.c: exact int8 GEMM on AVX-VNNI (the VEX-encoded 256-bit vpdpbusd of
 * Alder Lake and later, for CPUs without AVX-512). Tiles of up to 6 rows x 16 columns (one
 * packed block, two vectors of 8 columns x 4 k): 12 accumulators, 2 B vectors and one
 * broadcast A value in 16 registers. */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define MR 6
#define GROUP_BYTES (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB)

#if defined(__AVXVNNI__)

static inline __attribute__((always_inline)) void tile(const int rows, int64_t groups,
                                                       const uint8_t *a, int64_t lda,
                                                       const int8_t *b, int32_t *c,
                                                       int64_t ldc)
{
    __m256i acc[MR][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < groups; g++) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + g * GROUP_BYTES));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + g * GROUP_BYTES + 32));
        for (int r = 0; r < rows; r++) {
            int32_t four;
            memcpy(&four, a + r * lda + g * PYCONV_QGEMM_KB, sizeof four);
            const __m256i av = _mm256_set1_epi32(four);
            acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], av, b0);
            acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], av, b1);
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(c + r * ldc), acc[r][0]);
        _mm256_storeu_si256((__m256i *)(c + r * ldc + 8), acc[r][1]);
    }
}

static void qgemm_avxvnni(int64_t m, int64_t np, int64_t kp, const uint8_t *a, int64_t lda,
                          const int8_t *bp, int32_t *c, int64_t ldc)
{
    const int64_t groups = kp / PYCONV_QGEMM_KB, bstride = groups * GROUP_BYTES;
    for (int64_t blk = 0; blk < np / PYCONV_QGEMM_NB; blk++) {
        const int8_t *panel = bp + blk * bstride;
        int32_t *cb = c + blk * PYCONV_QGEMM_NB;
        int64_t i = 0;
        for (; i + MR <= m; i += MR) tile(MR, groups, a + i * lda, lda, panel, cb + i * ldc, ldc);
        for (; i < m; i++) tile(1, groups, a + i * lda, lda, panel, cb + i * ldc, ldc);
    }
}

#define QGEMM_SUFFIX avxvnni
#include "qgemm_common.inc"

const pyconv_qgemm_kernel pyconv_qgemm_kernel_avxvnni = {"avxvnni", qgemm_avxvnni, QGEMM_HELPERS, NULL, NULL};
#else
/* A compiler without -mavxvnni (GCC < 11, clang < 12): no kernel, never dispatched. */
const pyconv_qgemm_kernel pyconv_qgemm_kernel_avxvnni = {"avxvnni", NULL};
#endif
