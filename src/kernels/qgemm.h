/* qgemm.h: exact 8-bit integer GEMM, uint8 x int8 -> int32, per ISA.
 *
 * C[m, n] = sum_k A[m, k] * B[k, n] over a packed B: the operand of every quantized
 * convolution and matrix product (zero points are applied by the caller as row and column
 * sums, so the kernel only multiplies). Every ISA computes the same exact int32 sums.
 *
 * Packed B (pyconv_qgemm_pack_b): np = N rounded up to 16 columns, kp = K rounded up to 4;
 * for each block of 16 columns, for each group of 4 k, 64 bytes: column 0's 4 values,
 * column 1's 4 values, ... (the operand layout of AVX-512 VNNI's vpdpbusd). Padding is 0.
 * A is row-major uint8 with kp columns (padding 0). C is row-major int32, np columns. */
#ifndef PYCONV_QGEMM_H
#define PYCONV_QGEMM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PYCONV_QGEMM_NB 16  /* columns per packed block */
#define PYCONV_QGEMM_KB 4   /* k values per packed group */

/* Rows [0, m) of C = A * B; np, kp as above; lda, ldc in elements. */
typedef void (*pyconv_qgemm_fn)(int64_t m, int64_t np, int64_t kp, const uint8_t *a,
                                int64_t lda, const int8_t *bp, int32_t *c, int64_t ldc);

/* The loops around the GEMM (qgemm_common.inc): requantize a tile of int32 sums (rows x
 * n, per-column bias and multiplier) to 8 bits, the quantized add, a byte transpose, a
 * depthwise channel. */
typedef void (*pyconv_qgemm_requant_fn)(int64_t rows, int64_t n, const int32_t *acc,
                                        int64_t lda, const int32_t *bias, const float *mult,
                                        float lo, float hi, int32_t yz, uint8_t *dst,
                                        int64_t ldd);
typedef void (*pyconv_qgemm_add_u8_fn)(int64_t n, const uint8_t *a, const uint8_t *b,
                                       uint8_t *c, float ra, float rb, float fixed,
                                       float lo, float hi);
typedef void (*pyconv_qgemm_add_s8_fn)(int64_t n, const int8_t *a, const int8_t *b,
                                       int8_t *c, float ra, float rb, float fixed,
                                       float lo, float hi);
typedef void (*pyconv_qgemm_transpose_fn)(int64_t rows, int64_t cols, const uint8_t *src,
                                          int64_t lds, uint8_t *dst, int64_t ldd);

typedef void (*pyconv_qgemm_dw_plane_fn)(const uint8_t *x, int64_t h, int64_t w,
                                         int64_t oh, int64_t ow, int64_t kh, int64_t kw,
                                         int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                         int64_t dh, int64_t dw, const int8_t *wts,
                                         int32_t xz, int32_t bias, float mult, float lo,
                                         float hi, int32_t yz, void *acc, float *xf,
                                         uint8_t *dst);

typedef void (*pyconv_qgemm_shift_fn)(int64_t n, const uint8_t *x, int32_t xz, float *y);
typedef void (*pyconv_qgemm_requant_float_fn)(int64_t n, const float *acc, float mult,
                                              float lo, float hi, int32_t yz, uint8_t *dst);

typedef void (*pyconv_qgemm_quantize8_fn)(int64_t n, const float *x, float scale, float zp,
                                          float lo, float hi, uint8_t *dst);

/* One output row of a depthwise convolution / an 8-bit max pool over an NHWC image (see
 * qgemm_common.inc). */
typedef void (*pyconv_qgemm_dw_row_nhwc_fn)(const uint8_t *x, int64_t h, int64_t w,
                                            int64_t c, int64_t oy, int64_t ow, int64_t kh,
                                            int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                            int64_t pw, int64_t dh, int64_t dw,
                                            const float *wts, int32_t xz,
                                            const int32_t *bias, const float *mult, float lo,
                                            float hi, int32_t yz, int32_t *acc, uint8_t *dst);
typedef void (*pyconv_qgemm_maxpool_row_fn)(const uint8_t *x, int64_t h, int64_t w, int64_t c,
                                            int64_t oy, int64_t ow, int64_t kh, int64_t kw,
                                            int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                            int64_t dh, int64_t dw, uint8_t *dst);

/* A QLinearAdd fused after the requantization (uint8 output): dst = the add (qgemm_add_u8's
 * arithmetic, factors ra, rb, fixed) of the requantized value and res (row stride ldr),
 * the requantized value its first operand where conv_is_a, else its second. */
typedef struct {
    const uint8_t *res;
    int64_t ldr;
    float ra, rb, fixed;
    int conv_is_a;
} pyconv_qgemm_add_args;

/* dst (m x n bytes, row stride ldd) = requant(A * B) as pyconv_qgemm_requant_fn does, for
 * the first n <= np columns; then add's QLinearAdd where add is not NULL. */
typedef void (*pyconv_qgemm_gemm_requant_fn)(int64_t m, int64_t np, int64_t kp,
                                             const uint8_t *a, int64_t lda, const int8_t *bp,
                                             int64_t n, const int32_t *bias,
                                             const float *mult, float lo, float hi,
                                             int32_t yz, uint8_t *dst, int64_t ldd,
                                             const pyconv_qgemm_add_args *add);

/* gemm_requant for an A given as taps runs of kt bytes per row (kt a multiple of 4, kp =
 * taps * kt): row r's run t at rows[r * taps + t] (an indirect convolution: the pixels of
 * each tap read in place, a row of the input zero point for the padding). */
typedef void (*pyconv_qgemm_gemm_requant_indirect_fn)(int64_t m, int64_t np, int64_t taps,
                                                      int64_t kt,
                                                      const uint8_t *const *rows,
                                                      const int8_t *bp, int64_t n,
                                                      const int32_t *bias,
                                                      const float *mult, float lo,
                                                      float hi, int32_t yz, uint8_t *dst,
                                                      int64_t ldd,
                                                      const pyconv_qgemm_add_args *add);

typedef struct {
    const char *isa;
    pyconv_qgemm_fn gemm;
    pyconv_qgemm_requant_fn requant;
    pyconv_qgemm_add_u8_fn add_u8;
    pyconv_qgemm_add_s8_fn add_s8;
    pyconv_qgemm_transpose_fn transpose;
    pyconv_qgemm_dw_plane_fn dw_plane;  /* one depthwise channel, requantized */
    pyconv_qgemm_shift_fn shift_to_float;
    pyconv_qgemm_requant_float_fn requant_float;
    pyconv_qgemm_quantize8_fn quantize8;  /* QuantizeLinear to uint8 / int8 */
    pyconv_qgemm_dw_row_nhwc_fn dw_row_nhwc;
    pyconv_qgemm_maxpool_row_fn maxpool_row_u8;
    pyconv_qgemm_maxpool_row_fn maxpool_row_s8;
    /* The GEMM with qgemm_requant's epilogue on the registers (NULL where the ISA has
     * none: gemm, then requant). */
    pyconv_qgemm_gemm_requant_fn gemm_requant;
    /* gemm_requant over a table of row pointers (NULL where the ISA has none: im2col). */
    pyconv_qgemm_gemm_requant_indirect_fn gemm_requant_indirect;
} pyconv_qgemm_kernel;

extern const pyconv_qgemm_kernel pyconv_qgemm_kernel_generic;
#if defined(PYCONV_HAVE_X86_KERNELS)
extern const pyconv_qgemm_kernel pyconv_qgemm_kernel_avx2;
extern const pyconv_qgemm_kernel pyconv_qgemm_kernel_avxvnni;
extern const pyconv_qgemm_kernel pyconv_qgemm_kernel_avx512vnni;
#endif

/* The kernel for the float kernels' ISA name ("avx512", "avx2", "generic"): AVX-512 VNNI
 * where the CPU has it under "avx512", else AVX-VNNI (VEX, 256-bit) where the CPU has it
 * under "avx512" or "avx2", else the AVX2 one, else the portable one. */
const pyconv_qgemm_kernel *pyconv_qgemm_kernel_for(const char *isa);

/* The kernel of that name ("generic", "avx2", "avxvnni", "avx512vnni"), or NULL; the
 * caller checks that the CPU runs it (tests cover every kernel this way). */
const pyconv_qgemm_kernel *pyconv_qgemm_kernel_named(const char *name);

/* Packs int8 B (k x n, row stride ldb) into dst (np * kp bytes, see above). */
void pyconv_qgemm_pack_b(int64_t k, int64_t n, const int8_t *b, int64_t ldb, int8_t *dst);

#ifdef __cplusplus
}
#endif
#endif
