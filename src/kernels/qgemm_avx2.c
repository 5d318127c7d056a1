/* qgemm_avx2.c: exact int8 GEMM on AVX2. Values are widened to int16 and multiplied in
 * pairs with vpmaddwd (exact: 2 * 255 * 128 fits int32), not with vpmaddubsw, whose
 * int16 pair sums saturate. Tiles of 2 rows x 16 columns. */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define GROUP_BYTES (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB)

/* Lanes (c0 pair0, c0 pair1, c1 p0, c1 p1 | c2.., c3..) of two 4-column accumulators ->
 * the 8 column sums c0..c7 in order. */
static inline __m256i column_sums(__m256i lo4, __m256i hi4)
{
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo4, hi4), 0xD8);
}

static inline __m256i four_a(const uint8_t *x)
{
    return _mm256_set1_epi64x((long long)((uint64_t)x[0] | (uint64_t)x[1] << 16 |
                                          (uint64_t)x[2] << 32 | (uint64_t)x[3] << 48));
}

static void qgemm_avx2(int64_t m, int64_t np, int64_t kp, const uint8_t *a, int64_t lda,
                       const int8_t *bp, int32_t *c, int64_t ldc)
{
    const int64_t groups = kp / PYCONV_QGEMM_KB;
    for (int64_t blk = 0; blk < np / PYCONV_QGEMM_NB; blk++) {
        const int8_t *panel = bp + blk * groups * GROUP_BYTES;
        for (int64_t i = 0; i < m; i += 2) {
            const int two = i + 1 < m;
            const uint8_t *r0 = a + i * lda, *r1 = two ? r0 + lda : r0;
            __m256i acc0[4], acc1[4];
            for (int q = 0; q < 4; q++) acc0[q] = acc1[q] = _mm256_setzero_si256();
            for (int64_t g = 0; g < groups; g++) {
                const int8_t *p = panel + g * GROUP_BYTES;
                __m256i bw[4];   /* columns 4q..4q+3, 4 k each, as int16 */
                for (int q = 0; q < 4; q++)
                    bw[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 * q)));
                const __m256i a0 = four_a(r0 + g * PYCONV_QGEMM_KB);
                const __m256i a1 = four_a(r1 + g * PYCONV_QGEMM_KB);
                for (int q = 0; q < 4; q++) {
                    acc0[q] = _mm256_add_epi32(acc0[q], _mm256_madd_epi16(bw[q], a0));
                    acc1[q] = _mm256_add_epi32(acc1[q], _mm256_madd_epi16(bw[q], a1));
                }
            }
            int32_t *out = c + i * ldc + blk * PYCONV_QGEMM_NB;
            _mm256_storeu_si256((__m256i *)out, column_sums(acc0[0], acc0[1]));
            _mm256_storeu_si256((__m256i *)(out + 8), column_sums(acc0[2], acc0[3]));
            if (two) {
                _mm256_storeu_si256((__m256i *)(out + ldc), column_sums(acc1[0], acc1[1]));
                _mm256_storeu_si256((__m256i *)(out + ldc + 8), column_sums(acc1[2], acc1[3]));
            }
        }
    }
}

#define QGEMM_SUFFIX avx2
#include "qgemm_common.inc"

const pyconv_qgemm_kernel pyconv_qgemm_kernel_avx2 = {"avx2", qgemm_avx2, QGEMM_HELPERS, NULL, NULL};
