/* qgemm_avx512vnni.c: exact int8 GEMM on AVX-512 VNNI (vpdpbusd: 4 uint8 x int8 products
 * summed into each int32 lane, no intermediate saturation). Tiles of up to 6 rows x 64
 * columns: 24 accumulators, 4 B vectors and one broadcast A value in 32 registers. */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define MR 6
#define NBLK 4     /* 16-column blocks per tile */
#define GROUP_BYTES (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB)

static inline __attribute__((always_inline)) void tile(const int rows, const int blocks,
                                                       int64_t groups, const uint8_t *a,
                                                       int64_t lda, const int8_t *b,
                                                       int64_t bstride, int32_t *c,
                                                       int64_t ldc)
{
    __m512i acc[MR][NBLK];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < blocks; j++) acc[r][j] = _mm512_setzero_si512();
    for (int64_t g = 0; g < groups; g++) {
        __m512i bv[NBLK];
        for (int j = 0; j < blocks; j++)
            bv[j] = _mm512_loadu_si512((const void *)(b + j * bstride + g * GROUP_BYTES));
        for (int r = 0; r < rows; r++) {
            int32_t four;
            memcpy(&four, a + r * lda + g * PYCONV_QGEMM_KB, sizeof four);
            const __m512i av = _mm512_set1_epi32(four);
            for (int j = 0; j < blocks; j++) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, bv[j]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < blocks; j++)
            _mm512_storeu_si512((void *)(c + r * ldc + j * PYCONV_QGEMM_NB), acc[r][j]);
}

#define TILE(R, NB) tile(R, NB, groups, a + i * lda, lda, panel, bstride, \
                         c + i * ldc + blk * PYCONV_QGEMM_NB, ldc)

static void qgemm_avx512vnni(int64_t m, int64_t np, int64_t kp, const uint8_t *a, int64_t lda,
                             const int8_t *bp, int32_t *c, int64_t ldc)
{
    const int64_t groups = kp / PYCONV_QGEMM_KB, bstride = groups * GROUP_BYTES;
    const int64_t nblocks = np / PYCONV_QGEMM_NB;
    for (int64_t blk = 0; blk < nblocks; blk += NBLK) {
        const int8_t *panel = bp + blk * bstride;
        const int nb = (int)(nblocks - blk < NBLK ? nblocks - blk : NBLK);
        int64_t i = 0;
        for (; i + MR <= m; i += MR) {
            switch (nb) {
            case 4: TILE(MR, 4); break;
            case 3: TILE(MR, 3); break;
            case 2: TILE(MR, 2); break;
            default: TILE(MR, 1); break;
            }
        }
        for (; i < m; i++) {
            switch (nb) {
            case 4: TILE(1, 4); break;
            case 3: TILE(1, 3); break;
            case 2: TILE(1, 2); break;
            default: TILE(1, 1); break;
            }
        }
    }
}

#define QGEMM_SUFFIX avx512vnni
#include "qgemm_common.inc"

const pyconv_qgemm_kernel pyconv_qgemm_kernel_avx512vnni = {"avx512vnni", qgemm_avx512vnni, QGEMM_HELPERS};
