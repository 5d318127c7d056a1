/* dwconv_avx512.c: depthwise convolution rows in AVX-512F (built with -mavx512f -mfma). */
#define PYCONV_SIMD_AVX512 1
#define PYCONV_ISA_SUFFIX avx512
#define DW_R 4
#include "simd_ops.inc"
#include "dwconv_common.inc"

const pyconv_dwconv_kernel pyconv_dwconv_kernel_avx512 = {"avx512", "dwconv_rows_avx512",
                                                          dwconv_rows_avx512,
    dwconv_channels_avx512, VL};
