/* sgemm_avx512.c: 8x48 SGEMM micro-kernel in AVX-512F intrinsics (built with -mavx512f -mfma). */
#include "sgemm.h"

#define PYCONV_SIMD_AVX512 1
#define PYCONV_ISA_SUFFIX avx512
#include "simd_ops.inc"
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

/* The 24 accumulators c<i><v> declared and summed over kc steps of the packed panels a
 * and b (both pointers advanced); B prefetched 8 steps ahead in L1, A 4 KiB ahead in L2. */
#define TILE_8x48_ACCUMULATE()                                                                \
    ROW_DECL(0); ROW_DECL(1); ROW_DECL(2); ROW_DECL(3);                                       \
    ROW_DECL(4); ROW_DECL(5); ROW_DECL(6); ROW_DECL(7);                                       \
    for (int64_t k = 0; k < kc; k++) {                                                        \
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);                     \
        const __m512 b2 = _mm512_load_ps(b + 32);                                             \
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);                                \
        PREFETCH_A(a);                                                                        \
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3);                                       \
        ROW_FMA(4); ROW_FMA(5); ROW_FMA(6); ROW_FMA(7);                                       \
        a += MR;                                                                              \
        b += NR;                                                                              \
    }

static void sgemm_ukernel_8x48_avx512(int64_t kc, const float *restrict a,
                                      const float *restrict b, float *restrict c, int64_t ldc,
                                      float alpha, float beta)
{
    TILE_8x48_ACCUMULATE();
    const __m512 va = _mm512_set1_ps(alpha);
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3);
    ROW_STORE(4); ROW_STORE(5); ROW_STORE(6); ROW_STORE(7);
}

/* The same tile with the epilogue in registers: (acc + beta * C) + bias, + residual, then
 * the activation (the element-wise engine's vector code, so the bits of the separate
 * epilogue), stored once. On small-K GEMMs (1x1 convs of 32 channels) the epilogue's
 * second pass over the tile cost a sixth of the time. */
#define ROW_STORE_EP(i)                                                                       \
    do {                                                                                      \
        float *cr = c + (i) * ldc;                                                            \
        __m512 o0 = c##i##0, o1 = c##i##1, o2 = c##i##2;                                      \
        if (beta != 0.0f) {                                                                   \
            const __m512 vb = _mm512_set1_ps(beta);                                           \
            o0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), o0);                                \
            o1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), o1);                           \
            o2 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 32), o2);                           \
        }                                                                                     \
        if (ep->bias) {                                                                       \
            const __m512 bi = _mm512_set1_ps(ep->bias[i]);                                    \
            o0 = _mm512_add_ps(o0, bi);                                                       \
            o1 = _mm512_add_ps(o1, bi);                                                       \
            o2 = _mm512_add_ps(o2, bi);                                                       \
        }                                                                                     \
        if (ep->residual) {                                                                   \
            const float *rr = ep->residual + (i) * ep->ldr;                                   \
            o0 = _mm512_add_ps(o0, _mm512_loadu_ps(rr));                                      \
            o1 = _mm512_add_ps(o1, _mm512_loadu_ps(rr + 16));                                 \
            o2 = _mm512_add_ps(o2, _mm512_loadu_ps(rr + 32));                                 \
        }                                                                                     \
        if (act != PYCONV_ACT_NONE) {                                                         \
            o0 = (__m512)ev_unary(act, (ev_f)o0, aa, ab);                                     \
            o1 = (__m512)ev_unary(act, (ev_f)o1, aa, ab);                                     \
            o2 = (__m512)ev_unary(act, (ev_f)o2, aa, ab);                                     \
        }                                                                                     \
        _mm512_storeu_ps(cr, o0);                                                             \
        _mm512_storeu_ps(cr + 16, o1);                                                        \
        _mm512_storeu_ps(cr + 32, o2);                                                        \
    } while (0)

/* act is a constant in every instance (ev_unary inlined, no switch per vector). */
static inline __attribute__((always_inline)) void
sgemm_ukernel_8x48_ep_body(const int act, int64_t kc, const float *restrict a,
                           const float *restrict b, float *restrict c, int64_t ldc,
                           float beta, const pyconv_epilogue *ep)
{
    TILE_8x48_ACCUMULATE();
    const float aa = ep->act_a, ab = ep->act_b;
    ROW_STORE_EP(0); ROW_STORE_EP(1); ROW_STORE_EP(2); ROW_STORE_EP(3);
    ROW_STORE_EP(4); ROW_STORE_EP(5); ROW_STORE_EP(6); ROW_STORE_EP(7);
}

/* The cheap activations get their own instance; the others go through the separate
 * epilogue (their vector code is long, and small-K GEMMs rarely carry them). */
static void sgemm_ukernel_8x48_ep_avx512(int64_t kc, const float *restrict a,
                                         const float *restrict b, float *restrict c,
                                         int64_t ldc, float beta, const pyconv_epilogue *ep)
{
    switch (ep->act) {
    case PYCONV_ACT_RELU:
        sgemm_ukernel_8x48_ep_body(PYCONV_ACT_RELU, kc, a, b, c, ldc, beta, ep);
        break;
    case PYCONV_ACT_CLIP:
        sgemm_ukernel_8x48_ep_body(PYCONV_ACT_CLIP, kc, a, b, c, ldc, beta, ep);
        break;
    case PYCONV_ACT_NONE:
        sgemm_ukernel_8x48_ep_body(PYCONV_ACT_NONE, kc, a, b, c, ldc, beta, ep);
        break;
    default:
        sgemm_ukernel_8x48_avx512(kc, a, b, c, ldc, 1.0f, beta);
        epilogue_avx512(c, ldc, MR, NR, ep);
        break;
    }
}

/* Edge and shifted kernels: the shared template over 16-float vectors. The main tile
 * above stays here, scheduled by hand for the 32 zmm registers; so does the peak loop. */
#include "sgemm_tiles.inc"

/* A partial tile of n < 8 columns (the last of 7x7 = 48 + 1 or 14x14 = 4 * 48 + 4
 * outputs) with the vectors across the tile's 8 rows instead: one 8-float A load and n
 * broadcasts of B per k step, every lane useful, where the 16-column edge tile would
 * compute 16 columns for n. chains partial sums over interleaved k steps keep enough
 * FMAs in flight when n is small. A 96 x 576 GEMM on 49 columns: 27.7 -> 20.7 us (48
 * columns: 16-17.7; with the partial panel zeroed only as far as read). */
PYCONV_INLINE void narrow_edge(const int n, const int chains, int64_t kc,
                               const float *restrict a, const float *restrict b,
                               float *restrict c, int64_t ldc, float alpha, float beta,
                               int64_t m)
{
    __m256 acc[4][7];
#pragma GCC unroll 4
    for (int s = 0; s < chains; s++)
#pragma GCC unroll 7
        for (int j = 0; j < n; j++) acc[s][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + chains <= kc; k += chains) {
#pragma GCC unroll 4
        for (int s = 0; s < chains; s++) {
            const __m256 av = _mm256_loadu_ps(a + (k + s) * MR);
            const float *bk = b + (k + s) * NR;
#pragma GCC unroll 7
            for (int j = 0; j < n; j++)
                acc[s][j] = _mm256_fmadd_ps(av, _mm256_broadcast_ss(bk + j), acc[s][j]);
        }
    }
    for (; k < kc; k++) {
        const __m256 av = _mm256_loadu_ps(a + k * MR);
#pragma GCC unroll 7
        for (int j = 0; j < n; j++)
            acc[0][j] = _mm256_fmadd_ps(av, _mm256_broadcast_ss(b + k * NR + j), acc[0][j]);
    }
    float col[7][MR];
#pragma GCC unroll 7
    for (int j = 0; j < n; j++) {
#pragma GCC unroll 4
        for (int s = 1; s < chains; s++) acc[0][j] = _mm256_add_ps(acc[0][j], acc[s][j]);
        _mm256_storeu_ps(col[j], acc[0][j]);
    }
    for (int64_t i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float *ci = c + i * ldc + j;
            *ci = beta != 0.0f ? alpha * col[j][i] + beta * *ci : alpha * col[j][i];
        }
}

static void ukernel_edge_narrow_avx512(int64_t kc, const float *restrict a,
                                       const float *restrict b, float *restrict c,
                                       int64_t ldc, float alpha, float beta, int64_t m,
                                       int64_t n)
{
    switch (n) {
    case 1: narrow_edge(1, 4, kc, a, b, c, ldc, alpha, beta, m); break;
    case 2: narrow_edge(2, 4, kc, a, b, c, ldc, alpha, beta, m); break;
    case 3: narrow_edge(3, 2, kc, a, b, c, ldc, alpha, beta, m); break;
    case 4: narrow_edge(4, 2, kc, a, b, c, ldc, alpha, beta, m); break;
    case 5: narrow_edge(5, 2, kc, a, b, c, ldc, alpha, beta, m); break;
    case 6: narrow_edge(6, 1, kc, a, b, c, ldc, alpha, beta, m); break;
    case 7: narrow_edge(7, 1, kc, a, b, c, ldc, alpha, beta, m); break;
    default: ukernel_edge_avx512(kc, a, b, c, ldc, alpha, beta, m, n); break;
    }
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
    "avx512", "sgemm_ukernel_8x48_avx512", MR, NR, VL, sgemm_ukernel_8x48_avx512,
    ukernel_edge_narrow_avx512, epilogue_avx512, gemv_avx512, fma_peak_avx512,
    shifted_avx512, shifted_edge_avx512, phase_split_avx512, pack_runs_avx512,
    sgemm_ukernel_8x48_ep_avx512, channel_affine_avx512, channel_tile_avx512, CHANNEL_COLS,
};
