/* eltwise_avx512.c: the element-wise engine in 16-float vectors (built with -mavx512f). */
#define PYCONV_SIMD_AVX512 1
#define PYCONV_ISA_SUFFIX avx512
#include "simd_ops.inc"
#include "eltwise_common.inc"

const pyconv_eltwise_kernel pyconv_eltwise_kernel_avx512 = {
    "avx512", eltwise_unary_avx512, eltwise_binary_avx512, eltwise_standardize_avx512,
    eltwise_standardize_cols_avx512,
    eltwise_softmax_avx512};
