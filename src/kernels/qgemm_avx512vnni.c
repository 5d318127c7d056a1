/* qgemm_avx512vnni.c: exact int8 GEMM on AVX-512 VNNI (vpdpbusd: 4 uint8 x int8 products
 * summed into each int32 lane, no intermediate saturation). Tiles of up to 6 rows x 64
 * columns: 24 accumulators, 4 B vectors and one broadcast A value in 32 registers; the
 * rows left below a multiple of 6 run as one tile of their count (a row at a time would
 * stream the B panel once per row). Every tile takes the whole K, so the requantizing
 * variant (qgemm_avx512vnni_requant) requantizes the sums from the registers (the
 * epilogue of qgemm_requant, in vectors) and stores bytes. The indirect variant reads
 * each row's K as runs from a table of pointers (a convolution's pixels, no im2col). */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define MR 6
#define NBLK 4     /* 16-column blocks per tile */
#define GROUP_BYTES (PYCONV_QGEMM_NB * PYCONV_QGEMM_KB)

/* The requantization of a tile's sums: per-column bias and multiplier (n valid columns
 * from the tile's first), clamp bounds minus the zero point, the zero point. */
typedef struct {
    const int32_t *bias;
    const float *mult;
    int64_t n;
    float lo, hi;
    int32_t yz;
    uint8_t *dst;
    int64_t ldd;
    pyconv_qgemm_add_args add;  /* add.res NULL: no fused add */
} requant_args;

static inline __attribute__((always_inline)) void tile(const int rows, const int blocks,
                                                       int64_t taps, int64_t groups,
                                                       const uint8_t *a, int64_t lda,
                                                       const uint8_t *const *ap,
                                                       const int8_t *b, int64_t bstride,
                                                       int32_t *c, int64_t ldc,
                                                       const requant_args *rq, int64_t col)
{
    __m512i acc[MR][NBLK];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < blocks; j++) acc[r][j] = _mm512_setzero_si512();
    /* K is taps runs of groups * 4 bytes: row r's run t at ap[r * taps + t] (an indirect
     * convolution's pixels), or one run at a + r * lda. */
    for (int64_t t = 0; t < taps; t++) {
        const uint8_t *arow[MR];
        for (int r = 0; r < rows; r++) arow[r] = ap ? ap[r * taps + t] : a + r * lda;
        const int8_t *bt = b + t * groups * GROUP_BYTES;
        for (int64_t g = 0; g < groups; g++) {
            __m512i bv[NBLK];
            for (int j = 0; j < blocks; j++)
                bv[j] = _mm512_loadu_si512((const void *)(bt + j * bstride + g * GROUP_BYTES));
            for (int r = 0; r < rows; r++) {
                int32_t four;
                memcpy(&four, arow[r] + g * PYCONV_QGEMM_KB, sizeof four);
                const __m512i av = _mm512_set1_epi32(four);
                for (int j = 0; j < blocks; j++)
                    acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, bv[j]);
            }
        }
    }
    if (rq == NULL) {
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < blocks; j++)
                _mm512_storeu_si512((void *)(c + r * ldc + j * PYCONV_QGEMM_NB), acc[r][j]);
        return;
    }
    /* Requantized from an L1 copy of the sums (indexing the registers in a loop GCC does
     * not unroll would keep them in memory through the K loop): as qgemm_requant does,
     * float(sum + bias) * mult, clamped, rounded half to even (the default rounding of
     * vcvtps2dq), + yz, stored as bytes (in range after the clamp). */
    int32_t sums[MR][NBLK * PYCONV_QGEMM_NB] __attribute__((aligned(64)));
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < blocks; j++)
            _mm512_store_si512((void *)(sums[r] + j * PYCONV_QGEMM_NB), acc[r][j]);
    const __m512 lo = _mm512_set1_ps(rq->lo), hi = _mm512_set1_ps(rq->hi);
    const __m512i yz = _mm512_set1_epi32(rq->yz);
    for (int j = 0; j < blocks; j++) {
        const int64_t c0 = col + j * PYCONV_QGEMM_NB;
        const int64_t left = rq->n - c0;
        if (left <= 0) break;
        const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        const __m512i bias = _mm512_maskz_loadu_epi32(k, rq->bias + c0);
        const __m512 mult = _mm512_maskz_loadu_ps(k, rq->mult + c0);
        for (int r = 0; r < rows; r++) {
            const __m512i sum = _mm512_load_si512((const void *)(sums[r] + j * PYCONV_QGEMM_NB));
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(sum, bias)), mult);
            v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), yz);
            if (rq->add.res == NULL) {
                _mm512_mask_cvtepi32_storeu_epi8(rq->dst + r * rq->ldd + c0, k, q);
                continue;
            }
            /* The fused QLinearAdd on the output bytes' values, in qgemm_add_u8's
             * vectors: fma(a, ra, fma(b, rb, fixed)), clamped to [0, 255], rounded. */
            const uint8_t *rp = rq->add.res + r * rq->add.ldr + c0;
            __m128i res16;
            if (left >= 16) {
                res16 = _mm_loadu_si128((const __m128i *)rp);
            } else {
                uint8_t part[16] = {0};
                memcpy(part, rp, (size_t)left);
                res16 = _mm_loadu_si128((const __m128i *)part);
            }
            const __m512 yv = _mm512_cvtepi32_ps(q);
            const __m512 rv = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(res16));
            const __m512 av = rq->add.conv_is_a ? yv : rv, bv = rq->add.conv_is_a ? rv : yv;
            __m512 s = _mm512_fmadd_ps(av, _mm512_set1_ps(rq->add.ra),
                                       _mm512_fmadd_ps(bv, _mm512_set1_ps(rq->add.rb),
                                                       _mm512_set1_ps(rq->add.fixed)));
            s = _mm512_min_ps(_mm512_max_ps(s, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
            _mm512_mask_cvtepi32_storeu_epi8(rq->dst + r * rq->ldd + c0, k,
                                             _mm512_cvtps_epi32(s));
        }
    }
}

#define TILE(R, NB) tile(R, NB, taps, groups, ap ? NULL : a + i * lda, lda,               \
                         ap ? ap + i * taps : NULL,                                        \
                         panel, bstride, c ? c + i * ldc + blk * PYCONV_QGEMM_NB : NULL,   \
                         ldc, rq_row(rq, &row, i), blk * PYCONV_QGEMM_NB)
#define TILES(R)                                                                            \
    switch (nb) {                                                                           \
    case 4: TILE(R, 4); break;                                                              \
    case 3: TILE(R, 3); break;                                                              \
    case 2: TILE(R, 2); break;                                                              \
    default: TILE(R, 1); break;                                                             \
    }

/* The requantization of the tile starting at row i (its dst moved down i rows), or NULL
 * for int32 output. */
static inline const requant_args *rq_row(const requant_args *rq, requant_args *row, int64_t i)
{
    if (rq == NULL) return NULL;
    *row = *rq;
    row->dst = rq->dst + i * rq->ldd;
    if (rq->add.res != NULL) row->add.res = rq->add.res + i * rq->add.ldr;
    return row;
}

/* A is rows of lda bytes at a, or (ap not NULL) taps runs of kp / taps bytes per row at
 * ap[row * taps + t]. */
static inline __attribute__((always_inline)) void gemm(int64_t m, int64_t np, int64_t kp,
                                                       const uint8_t *a, int64_t lda,
                                                       const uint8_t *const *ap, int64_t taps,
                                                       const int8_t *bp, int32_t *c,
                                                       int64_t ldc, const requant_args *rq)
{
    const int64_t groups = kp / PYCONV_QGEMM_KB / taps;
    const int64_t bstride = kp / PYCONV_QGEMM_KB * GROUP_BYTES;
    const int64_t nblocks = np / PYCONV_QGEMM_NB;
    requant_args row;
    for (int64_t blk = 0; blk < nblocks; blk += NBLK) {
        const int8_t *panel = bp + blk * bstride;
        const int nb = (int)(nblocks - blk < NBLK ? nblocks - blk : NBLK);
        int64_t i = 0;
        for (; i + MR <= m; i += MR) TILES(MR)
        switch (m - i) {
        case 5: TILES(5) break;
        case 4: TILES(4) break;
        case 3: TILES(3) break;
        case 2: TILES(2) break;
        case 1: TILES(1) break;
        default: break;
        }
    }
}

static void qgemm_avx512vnni(int64_t m, int64_t np, int64_t kp, const uint8_t *a, int64_t lda,
                             const int8_t *bp, int32_t *c, int64_t ldc)
{
    gemm(m, np, kp, a, lda, NULL, 1, bp, c, ldc, NULL);
}

static void qgemm_avx512vnni_requant(int64_t m, int64_t np, int64_t kp, const uint8_t *a,
                                     int64_t lda, const int8_t *bp, int64_t n,
                                     const int32_t *bias, const float *mult, float lo,
                                     float hi, int32_t yz, uint8_t *dst, int64_t ldd,
                                     const pyconv_qgemm_add_args *add)
{
    requant_args rq = {bias, mult, n, lo, hi, yz, dst, ldd, {NULL, 0, 0.0f, 0.0f, 0.0f, 0}};
    if (add != NULL) rq.add = *add;
    gemm(m, np, kp, a, lda, NULL, 1, bp, NULL, 0, &rq);
}

static void qgemm_avx512vnni_requant_indirect(int64_t m, int64_t np, int64_t taps,
                                              int64_t kt, const uint8_t *const *rows,
                                              const int8_t *bp, int64_t n,
                                              const int32_t *bias, const float *mult,
                                              float lo, float hi, int32_t yz, uint8_t *dst,
                                              int64_t ldd, const pyconv_qgemm_add_args *add)
{
    requant_args rq = {bias, mult, n, lo, hi, yz, dst, ldd, {NULL, 0, 0.0f, 0.0f, 0.0f, 0}};
    if (add != NULL) rq.add = *add;
    gemm(m, np, taps * kt, NULL, 0, rows, taps, bp, NULL, 0, &rq);
}

#define QGEMM_SUFFIX avx512vnni
#include "qgemm_common.inc"

const pyconv_qgemm_kernel pyconv_qgemm_kernel_avx512vnni = {"avx512vnni", qgemm_avx512vnni, QGEMM_HELPERS, qgemm_avx512vnni_requant,
    qgemm_avx512vnni_requant_indirect};
