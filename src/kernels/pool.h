/* pool.h: max / average pooling rows, per ISA. */
#ifndef PYCONV_POOL_H
#define PYCONV_POOL_H

#include <stdint.h>

#include "conv_geom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sliding-window pooling of (planes, in_size) -> (planes, out_size): the conv family's
 * window geometry plus what pooling adds. ow_lo, ow_hi: the interior output columns (every
 * w tap inside the input). */
typedef struct {
    pyconv_conv_geom win;
    int64_t planes;
    int64_t ow_lo, ow_hi;
    int is_max;              /* else average */
    int count_include_pad;   /* average: divide by the taps inside the padded input */
    float divisor;           /* average: fixed divisor; 0: none */
} pyconv_pool_geom;

/* Taps [lo, hi) of output o along dim i (0, 1, 2 = d, h, w) that read the input, not the
 * padding; empty when the window holds no input element. */
static inline void pyconv_pool_taps(const pyconv_conv_geom *g, int i, int64_t o, int64_t *lo,
                                    int64_t *hi)
{
    pyconv_inside_range(o * g->s[i] - g->pb[i], g->dl[i], 1, g->in_size[i], g->k[i], lo, hi);
}

/* How many taps of output o along dim i lie inside the padded input [-pb, in_size + pe)
 * (count_include_pad's divisor); a ceil_mode window can reach past the end padding. */
static inline int64_t pyconv_pool_padded_taps(const pyconv_conv_geom *g, int i, int64_t o)
{
    int64_t lo, hi;
    pyconv_inside_range(o * g->s[i], g->dl[i], 1, g->in_size[i] + g->pb[i] + g->pe[i], g->k[i],
                        &lo, &hi);
    return hi - lo;
}

/* Output rows [r0, r1), r = (plane * od + z) * oh + y, of max / average pooling without
 * indices, border columns included, any geometry. Separable: the window's input rows are
 * combined element-wise into one row (vertical pass), then each output column combines its
 * taps of that row (horizontal pass; vectorised over the interior columns, whose taps are
 * all inside the row, at strides 1 and 2, and clipped one by one at the borders). Max runs
 * a plain max and checks its inputs for NaN (a NaN, or +inf with -inf): such a row is
 * redone with torch's NaN rule. tmp: w + 32 floats. */
typedef void (*pyconv_pool_rows_fn)(const pyconv_pool_geom *g, const float *x, float *y,
                                    int64_t r0, int64_t r1, float *tmp);

/* Small 2-D planes (depth 1, no depth window), `lanes` planes at a time across the vector
 * lanes: planes [b0 * lanes, min(b1 * lanes, g->planes)) of x into y, max or average
 * without indices, the values of pool_rows (NaN by its rule; an average's zero may lose its
 * sign). Each block of planes is transposed into a pixel-major window padded with the
 * neutral value (-inf, 0), every output pixel takes its full window there, and the result
 * is transposed back. ws: pyconv_pool_lanes_workspace_floats(g, lanes) floats, 64-byte
 * aligned, private to the calling thread. */
typedef void (*pyconv_pool_lanes_fn)(const pyconv_pool_geom *g, const float *x, float *y,
                                     int64_t b0, int64_t b1, float *ws);

typedef struct {
    const char *isa;
    const char *name;        /* e.g. "pool_rows_avx512" */
    pyconv_pool_rows_fn rows;
    pyconv_pool_lanes_fn channels;  /* NULL: none (one-float vectors) */
    int lanes;               /* planes per block of `channels` */
} pyconv_pool_kernel;

/* `channels` scratch: the padded window and the output grid (lanes floats a pixel), and
 * per output pixel the average's factor and divisor. */
static inline int64_t pyconv_pool_lanes_workspace_floats(const pyconv_conv_geom *g,
                                                         int64_t lanes)
{
    const int64_t hp = pyconv_window_extent(g, 1), wp = pyconv_window_extent(g, 2);
    const int64_t npx = g->out_size[1] * g->out_size[2];
    return lanes * (hp * wp + npx) + 2 * npx + 16;
}

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
