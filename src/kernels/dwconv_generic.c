/* dwconv_generic.c: depthwise convolution rows in portable C, and the per-ISA dispatch. */
#include <string.h>

#define PYCONV_ISA_SUFFIX generic
#define DW_R 2
#include "simd_ops.inc"
#include "dwconv_common.inc"

const pyconv_dwconv_kernel pyconv_dwconv_kernel_generic = {"generic", "dwconv_rows_generic",
                                                           dwconv_rows_generic,
    dwconv_channels_generic, VL};

const pyconv_dwconv_kernel *pyconv_dwconv_kernel_for(const char *isa)
{
#if defined(PYCONV_HAVE_X86_KERNELS)
    if (strcmp(isa, "avx512") == 0) return &pyconv_dwconv_kernel_avx512;
    if (strcmp(isa, "avx2") == 0) return &pyconv_dwconv_kernel_avx2;
#endif
    (void)isa;
    return &pyconv_dwconv_kernel_generic;
}
