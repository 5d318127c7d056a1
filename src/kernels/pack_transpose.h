/* pack_transpose.h: the transposing copy of GEMM packing (gemm.pyx): rows of a matrix that
 * are contiguous in k become the k-major panels the micro-kernels read. A row-major A
 * (every batched product packs it per call) and a transposed B (Q @ K.T, X.T in a
 * linear layer) go through it. In 4 x 4 blocks of SSE shuffles (8 per 16 floats) where
 * the build has SSE, element by element elsewhere. */
#ifndef PYCONV_PACK_TRANSPOSE_H
#define PYCONV_PACK_TRANSPOSE_H

#include <stdint.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* dst[kk * ld + i] = src[i * ss + kk] for i < rows, kk < k. */
static inline void pyconv_transpose_rows(const float *src, int64_t ss, int64_t k, float *dst,
                                         int64_t ld, int64_t rows)
{
    int64_t i = 0, kk;
#if defined(__SSE__)
    for (; i + 4 <= rows; i += 4) {
        const float *s0 = src + i * ss, *s1 = s0 + ss, *s2 = s1 + ss, *s3 = s2 + ss;
        float *d = dst + i;
        for (kk = 0; kk + 4 <= k; kk += 4) {
            __m128 r0 = _mm_loadu_ps(s0 + kk), r1 = _mm_loadu_ps(s1 + kk);
            __m128 r2 = _mm_loadu_ps(s2 + kk), r3 = _mm_loadu_ps(s3 + kk);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(d + kk * ld, r0);
            _mm_storeu_ps(d + (kk + 1) * ld, r1);
            _mm_storeu_ps(d + (kk + 2) * ld, r2);
            _mm_storeu_ps(d + (kk + 3) * ld, r3);
        }
        for (; kk < k; kk++) {
            d[kk * ld] = s0[kk];
            d[kk * ld + 1] = s1[kk];
            d[kk * ld + 2] = s2[kk];
            d[kk * ld + 3] = s3[kk];
        }
    }
#endif
    for (; i < rows; i++)
        for (kk = 0; kk < k; kk++) dst[kk * ld + i] = src[i * ss + kk];
}

#endif
