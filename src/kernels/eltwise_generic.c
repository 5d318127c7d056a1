/* eltwise_generic.c: the element-wise engine in portable vectors, and the per-ISA dispatch. */
#include <string.h>

#define PYCONV_SIMD_PORTABLE 4
#define PYCONV_ISA_SUFFIX generic
#include "simd_ops.inc"
#include "eltwise_common.inc"

const pyconv_eltwise_kernel pyconv_eltwise_kernel_generic = {
    "generic", eltwise_unary_generic, eltwise_binary_generic, eltwise_standardize_generic,
    eltwise_standardize_cols_generic,
    eltwise_softmax_generic};

const pyconv_eltwise_kernel *pyconv_eltwise_kernel_for(const char *isa)
{
#if defined(PYCONV_HAVE_X86_KERNELS)
    if (strcmp(isa, "avx512") == 0) return &pyconv_eltwise_kernel_avx512;
    if (strcmp(isa, "avx2") == 0) return &pyconv_eltwise_kernel_avx2;
#endif
    (void)isa;
    return &pyconv_eltwise_kernel_generic;
}
