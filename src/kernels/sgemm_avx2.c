/* sgemm_avx2.c: 6x16 SGEMM micro-kernel in AVX2+FMA intrinsics (built with -mavx2 -mfma). */
#include "sgemm.h"

#define PYCONV_SIMD_AVX2 1
#define PYCONV_ISA_SUFFIX avx2
#include "simd_ops.inc"
#include "sgemm_common.inc"

#define MR 6
#define NR 16

/* 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers. */
static void sgemm_ukernel_6x16_avx2(int64_t kc, const float *restrict a, const float *restrict b,
                                    float *restrict c, int64_t ldc, float alpha, float beta)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        PREFETCH_A(a);
        __m256 ai;
        ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += MR;
        b += NR;
    }
    const __m256 va = _mm256_set1_ps(alpha);
#define STORE_ROW(i, r0, r1)                                                                  \
    do {                                                                                      \
        float *cr = c + (i) * ldc;                                                            \
        __m256 o0 = _mm256_mul_ps(va, r0), o1 = _mm256_mul_ps(va, r1);                        \
        if (beta != 0.0f) {                                                                   \
            const __m256 vb = _mm256_set1_ps(beta);                                           \
            o0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), o0);                                \
            o1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), o1);                            \
        }                                                                                     \
        _mm256_storeu_ps(cr, o0);                                                             \
        _mm256_storeu_ps(cr + 8, o1);                                                         \
    } while (0)
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
#undef STORE_ROW
}

/* Edge and shifted kernels: the shared template over 8-float vectors. The main tile
 * above stays here, scheduled by hand for the 16 ymm registers; so does the peak loop. */
/* 2 vectors of channels x 6 columns: 12 accumulators, 2 weights and a broadcast in the 16
 * ymm registers. */
#define CHANNEL_COLS 6
#include "sgemm_tiles.inc"

/* 12 independent FMA chains: covers 2 FMA ports x 5-cycle latency with room to spare. */
static double fma_peak_avx2(int64_t iterations)
{
    __m256 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i * 1e-3f);
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int64_t it = 0; it < iterations; it++) {
        acc[0] = _mm256_fmadd_ps(acc[0], x, y); acc[1] = _mm256_fmadd_ps(acc[1], x, y);
        acc[2] = _mm256_fmadd_ps(acc[2], x, y); acc[3] = _mm256_fmadd_ps(acc[3], x, y);
        acc[4] = _mm256_fmadd_ps(acc[4], x, y); acc[5] = _mm256_fmadd_ps(acc[5], x, y);
        acc[6] = _mm256_fmadd_ps(acc[6], x, y); acc[7] = _mm256_fmadd_ps(acc[7], x, y);
        acc[8] = _mm256_fmadd_ps(acc[8], x, y); acc[9] = _mm256_fmadd_ps(acc[9], x, y);
        acc[10] = _mm256_fmadd_ps(acc[10], x, y); acc[11] = _mm256_fmadd_ps(acc[11], x, y);
    }
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
    volatile float sink = _mm256_cvtss_f32(s);
    (void)sink;
    return 2.0 * 12 * 8 * (double)iterations;
}

const pyconv_sgemm_kernel pyconv_sgemm_kernel_avx2 = {
    "avx2", "sgemm_ukernel_6x16_avx2", MR, NR, VL, sgemm_ukernel_6x16_avx2, ukernel_edge_avx2,
    epilogue_avx2, gemv_avx2, fma_peak_avx2, shifted_avx2,
    shifted_edge_avx2, phase_split_avx2, pack_runs_avx2, NULL, channel_affine_avx2,
    channel_tile_avx2, CHANNEL_COLS,
};
