/* pool_generic.c: the pooling dispatch; the portable path is pool.pyx's own loops. */
#include <string.h>

#include "pool.h"

/* No row kernel: the Cython loops, auto-vectorised for the baseline ISA, beat a
 * one-float-per-"vector" build of pool_common.inc (measured 2.5x on MaxPool 3x3/2). */
const pyconv_pool_kernel pyconv_pool_kernel_generic = {"generic", "pool_rows_cython", 0, NULL};

const pyconv_pool_kernel *pyconv_pool_kernel_for(const char *isa)
{
#if defined(PYCONV_HAVE_X86_KERNELS)
    if (strcmp(isa, "avx512") == 0) return &pyconv_pool_kernel_avx512;
    if (strcmp(isa, "avx2") == 0) return &pyconv_pool_kernel_avx2;
#endif
    (void)isa;
    return &pyconv_pool_kernel_generic;
}
