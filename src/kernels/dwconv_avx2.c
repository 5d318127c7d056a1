/* dwconv_avx2.c: depthwise convolution rows in AVX2+FMA (built with -mavx2 -mfma). */
#define PYCONV_SIMD_AVX2 1
#define PYCONV_ISA_SUFFIX avx2
#define DW_R 4
#include "simd_ops.inc"
#include "dwconv_common.inc"

const pyconv_dwconv_kernel pyconv_dwconv_kernel_avx2 = {"avx2", "dwconv_rows_avx2",
                                                        dwconv_rows_avx2,
    dwconv_channels_avx2, VL};
