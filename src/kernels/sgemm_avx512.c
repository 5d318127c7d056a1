/* sgemm_avx512.c: 8x48 SGEMM micro-kernel in AVX-512F intrinsics (built with -mavx512f -mfma). */
#include <immintrin.h>

#include "sgemm.h"

#define PYCONV_ISA_SUFFIX avx512
#include "sgemm_common.inc"

#define MR 8
#define NR 48

/* 24 accumulators + 3 B vectors + 1 broadcast = 28 of the 32 zmm registers; per k step
 * 3 loads and 8 broadcasts feed 24 FMAs. */
#define ROW_FMA(i)                                                                            \
    do {                                                                                      \
        const __m512 ai = _mm512_set1_ps(a[i]);                                               \
        c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);                                           \
        c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);                                           \
        c##i##2 = _mm512_fmadd_ps(ai, b2, c##i##2);                                           \
    } while (0)

#define ROW_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = c##i##0, c##i##2 = c##i##0

#define ROW_STORE(i)                                                                          \
    do {                                                                                      \
        float *cr = c + (i) * ldc;                                                            \
        __m512 o0 = _mm512_mul_ps(va, c##i##0), o1 = _mm512_mul_ps(va, c##i##1);              \
        __m512 o2 = _mm512_mul_ps(va, c##i##2);                                               \
        if (beta != 0.0f) {                                                                   \
            const __m512 vb = _mm512_set1_ps(beta);                                           \
            o0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), o0);                                \
            o1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), o1);                           \
            o2 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 32), o2);                           \
        }                                                                                     \
        _mm512_storeu_ps(cr, o0);                                                             \
        _mm512_storeu_ps(cr + 16, o1);                                                        \
        _mm512_storeu_ps(cr + 32, o2);                                                        \
    } while (0)

static void sgemm_ukernel_8x48_avx512(int64_t kc, const float *restrict a,
                                      const float *restrict b, float *restrict c, int64_t ldc,
                                      float alpha, float beta)
{
    ROW_DECL(0); ROW_DECL(1); ROW_DECL(2); ROW_DECL(3);
    ROW_DECL(4); ROW_DECL(5); ROW_DECL(6); ROW_DECL(7);
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        const __m512 b2 = _mm512_load_ps(b + 32);
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3);
        ROW_FMA(4); ROW_FMA(5); ROW_FMA(6); ROW_FMA(7);
        a += MR;
        b += NR;
    }
    const __m512 va = _mm512_set1_ps(alpha);
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3);
    ROW_STORE(4); ROW_STORE(5); ROW_STORE(6); ROW_STORE(7);
}

/* Partial tiles: NV = 1..3 vector columns, masked loads/stores for the last one. */
static inline __attribute__((always_inline)) void
edge_8xnv_avx512(const int nv, int64_t kc, const float *restrict a, const float *restrict b,
                 float *restrict c, int64_t ldc, float alpha, float beta, int64_t m, int64_t n)
{
    __m512 acc[MR][3];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m512 bv[3];
        for (int v = 0; v < nv; v++) bv[v] = _mm512_load_ps(b + 16 * v);
        for (int i = 0; i < MR; i++) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            for (int v = 0; v < nv; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += MR;
        b += NR;
    }
    __mmask16 mask[3];
    for (int v = 0; v < nv; v++) {
        const int64_t left = n - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int i = 0; i < m; i++) {
        float *cr = c + i * ldc;
        for (int v = 0; v < nv; v++) {
            __m512 o = _mm512_mul_ps(va, acc[i][v]);
            if (beta != 0.0f)
                o = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], cr + 16 * v), o);
            _mm512_mask_storeu_ps(cr + 16 * v, mask[v], o);
        }
    }
}

static void sgemm_ukernel_8x48_edge_avx512(int64_t kc, const float *restrict a,
                                           const float *restrict b, float *restrict c,
                                           int64_t ldc, float alpha, float beta, int64_t m,
                                           int64_t n)
{
    if (n <= 16) edge_8xnv_avx512(1, kc, a, b, c, ldc, alpha, beta, m, n);
    else if (n <= 32) edge_8xnv_avx512(2, kc, a, b, c, ldc, alpha, beta, m, n);
    else edge_8xnv_avx512(3, kc, a, b, c, ldc, alpha, beta, m, n);
}

static void shifted_ukernel_avx512(int64_t k, int64_t kc, int64_t mpad, int64_t ir,
                                   const float *restrict apacked, const float *restrict src,
                                   const int64_t *restrict off, float *restrict tile)
{
    ROW_DECL(0); ROW_DECL(1); ROW_DECL(2); ROW_DECL(3);
    ROW_DECL(4); ROW_DECL(5); ROW_DECL(6); ROW_DECL(7);
    for (int64_t k0 = 0; k0 < k; k0 += kc) {
        const int64_t kcb = k - k0 < kc ? k - k0 : kc;
        const float *restrict a = apacked + k0 * mpad + ir * kcb;
        for (int64_t kk = k0; kk < k0 + kcb; kk++) {
            const float *b = src + off[kk];
            const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
            const __m512 b2 = _mm512_loadu_ps(b + 32);
            ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3);
            ROW_FMA(4); ROW_FMA(5); ROW_FMA(6); ROW_FMA(7);
            a += MR;
        }
    }
#define TILE_STORE(i)                                                                         \
    do {                                                                                      \
        _mm512_store_ps(tile + (i) * NR, c##i##0);                                            \
        _mm512_store_ps(tile + (i) * NR + 16, c##i##1);                                       \
        _mm512_store_ps(tile + (i) * NR + 32, c##i##2);                                       \
    } while (0)
    TILE_STORE(0); TILE_STORE(1); TILE_STORE(2); TILE_STORE(3);
    TILE_STORE(4); TILE_STORE(5); TILE_STORE(6); TILE_STORE(7);
#undef TILE_STORE
}

/* The shifted tile for n < NR columns: NV = 1 or 2 vectors (a partial last chunk). */
static inline __attribute__((always_inline)) void
shifted_nv_avx512(const int nv, int64_t k, int64_t kc, int64_t mpad, int64_t ir,
                  const float *restrict apacked, const float *restrict src,
                  const int64_t *restrict off, float *restrict tile)
{
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < k; k0 += kc) {
        const int64_t kcb = k - k0 < kc ? k - k0 : kc;
        const float *restrict a = apacked + k0 * mpad + ir * kcb;
        for (int64_t kk = k0; kk < k0 + kcb; kk++) {
            const float *b = src + off[kk];
            __m512 bv[2];
            for (int v = 0; v < nv; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
            for (int i = 0; i < MR; i++) {
                const __m512 ai = _mm512_set1_ps(a[i]);
                for (int v = 0; v < nv; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
            }
            a += MR;
        }
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < nv; v++) _mm512_store_ps(tile + i * NR + 16 * v, acc[i][v]);
}

static void shifted_edge_avx512(int64_t k, int64_t kc, int64_t mpad, int64_t ir,
                                const float *restrict apacked, const float *restrict src,
                                const int64_t *restrict off, float *restrict tile, int64_t n)
{
    if (n <= 16) shifted_nv_avx512(1, k, kc, mpad, ir, apacked, src, off, tile);
    else if (n <= 32) shifted_nv_avx512(2, k, kc, mpad, ir, apacked, src, off, tile);
    else shifted_ukernel_avx512(k, kc, mpad, ir, apacked, src, off, tile);
}

/* 16 independent FMA chains of 16 floats. */
static double fma_peak_avx512(int64_t iterations)
{
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i * 1e-3f);
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int64_t it = 0; it < iterations; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 2.0 * 16 * 16 * (double)iterations;
}

const pyconv_sgemm_kernel pyconv_sgemm_kernel_avx512 = {
    "avx512", "sgemm_ukernel_8x48_avx512", MR, NR, sgemm_ukernel_8x48_avx512,
    sgemm_ukernel_8x48_edge_avx512,    epilogue_avx512, gemv_avx512, fma_peak_avx512,
    shifted_ukernel_avx512, shifted_edge_avx512, phase_split_avx512, pack_runs_avx512,
};
