/* pool_avx512.c: max / average pooling rows (built with -mavx512f -mfma). */
#define PYCONV_SIMD_AVX512 1
#define PYCONV_ISA_SUFFIX avx512
#include "simd_ops.inc"
#include "pool_common.inc"

const pyconv_pool_kernel pyconv_pool_kernel_avx512 = {"avx512", "pool_rows_avx512",
                                                      pool_rows_avx512, pool_lanes_avx512, VL};
