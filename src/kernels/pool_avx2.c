/* pool_avx2.c: max / average pooling rows (built with -mavx2 -mfma). */
#define PYCONV_SIMD_AVX2 1
#define PYCONV_ISA_SUFFIX avx2
#include "simd_ops.inc"
#include "pool_common.inc"

const pyconv_pool_kernel pyconv_pool_kernel_avx2 = {"avx2", "pool_rows_avx2",
                                                    pool_rows_avx2, pool_lanes_avx2, VL};
