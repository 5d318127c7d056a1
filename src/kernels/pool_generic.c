/* pool_generic.c: max / average pooling rows over portable vectors, and the per-ISA dispatch. */
#include <string.h>

#define PYCONV_SIMD_PORTABLE 4
#define PYCONV_ISA_SUFFIX generic
#include "simd_ops.inc"
#include "pool_common.inc"

const pyconv_pool_kernel pyconv_pool_kernel_generic = {"generic", "pool_rows_generic",
                                                       pool_rows_generic, pool_lanes_generic, VL};

const pyconv_pool_kernel *pyconv_pool_kernel_for(const char *isa)
{
#if defined(PYCONV_HAVE_X86_KERNELS)
    if (strcmp(isa, "avx512") == 0) return &pyconv_pool_kernel_avx512;
    if (strcmp(isa, "avx2") == 0) return &pyconv_pool_kernel_avx2;
#endif
    (void)isa;
    return &pyconv_pool_kernel_generic;
}
