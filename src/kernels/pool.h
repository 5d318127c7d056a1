/* pool.h: max / average pooling rows, per ISA. */
#ifndef PYCONV_POOL_H
#define PYCONV_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sliding-window geometry on (planes, d, h, w) -> (planes, od, oh, ow); ow_lo, ow_hi: the
 * interior output columns (every w tap inside the input). */
typedef struct {
    int64_t planes, d, h, w, od, oh, ow;
    int64_t k[3], s[3], pb[3], pe[3], dl[3];
    int64_t ow_lo, ow_hi;
    int is_max;              /* else average */
    int count_include_pad;   /* average: divide by the taps inside the padded input */
    float divisor;           /* average: fixed divisor; 0: none */
} pyconv_pool_geom;

/* Output rows [r0, r1), r = (plane * od + z) * oh + y, of max / average pooling without
 * indices, border columns included, any geometry. Separable: the window's input rows are
 * combined element-wise into one row (vertical pass), then each output column combines its
 * taps of that row (horizontal pass; vectorised over the interior columns, whose taps are
 * all inside the row, at strides 1 and 2, and clipped one by one at the borders). Max runs
 * a plain max and checks its inputs for NaN (a NaN, or +inf with -inf): such a row is
 * redone with torch's NaN rule. tmp: w + 32 floats. */
typedef void (*pyconv_pool_rows_fn)(const pyconv_pool_geom *g, const float *x, float *y,
                                    int64_t r0, int64_t r1, float *tmp);

typedef struct {
    const char *isa;
    const char *name;        /* e.g. "pool_rows_avx512" */
    pyconv_pool_rows_fn rows;
} pyconv_pool_kernel;

extern const pyconv_pool_kernel pyconv_pool_kernel_generic;
#if defined(PYCONV_HAVE_X86_KERNELS)
extern const pyconv_pool_kernel pyconv_pool_kernel_avx2;
extern const pyconv_pool_kernel pyconv_pool_kernel_avx512;
#endif

/* The table for an ISA name (unknown: generic); see pyconv_dwconv_kernel_for. */
const pyconv_pool_kernel *pyconv_pool_kernel_for(const char *isa);

#ifdef __cplusplus
}
#endif
#endif
