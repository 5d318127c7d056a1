/* eltwise_avx2.c: the element-wise engine in 8-float vectors (built with -mavx2 -mfma). */
#define PYCONV_SIMD_AVX2 1
#define PYCONV_ISA_SUFFIX avx2
#include "simd_ops.inc"
#include "eltwise_common.inc"

const pyconv_eltwise_kernel pyconv_eltwise_kernel_avx2 = {
    "avx2", eltwise_unary_avx2, eltwise_binary_avx2, eltwise_standardize_avx2,
    eltwise_standardize_cols_avx2,
    eltwise_softmax_avx2};
