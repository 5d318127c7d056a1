/* conv_geom.h: the window geometry of the conv family (conv, transposed conv, pooling). */
#ifndef PYCONV_CONV_GEOM_H
#define PYCONV_CONV_GEOM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One geometry for every sliding-window kernel, like MLAS's MLAS_CONV_PARAMETERS. Always
 * 3-D, index 0, 1, 2 = depth, height, width: 1-D and 2-D problems have size-1 leading dims
 * with one tap there. Output o of a dimension reads input positions o * s - pb + t * dl,
 * taps t in [0, k). A transposed convolution keeps its own input in in_size and output in
 * out_size: input position i scatters to output positions i * s - pb + t * dl. */
typedef struct {
    int64_t in_size[3];      /* input spatial size */
    int64_t out_size[3];     /* output spatial size */
    int64_t k[3];            /* kernel (window) size */
    int64_t s[3];            /* stride, >= 1 */
    int64_t pb[3];           /* padding at the beginning */
    int64_t pe[3];           /* padding at the end (pooling reads it: count_include_pad,
                                ceil_mode); convolution, whose output size is given, sets
                                the padding its last window reaches and never reads it */
    int64_t dl[3];           /* dilation, >= 1 */
} pyconv_conv_geom;

/* a // b rounded toward minus infinity, for b >= 1 (C's / rounds toward zero). b == 1 (unit
 * stride or dilation, the common case) skips the division: a 64-bit idiv costs tens of
 * cycles, and pooling asks for ranges on every output row. */
static inline int64_t pyconv_floor_div(int64_t a, int64_t b)
{
    if (b == 1) return a;
    return a >= 0 ? a / b : -((b - 1 - a) / b);
}

/* The one tap/output range helper: the indices i in [*lo, *hi) of [0, count) whose span
 * [i * step + off, i * step + off + span) lies inside [0, size); step, span >= 1.
 *  - outputs that tap t keeps inside the input:  (t * dl - pb, s, 1, in_size, out_size)
 *  - taps of output o inside the input:          (o * s - pb, dl, 1, in_size, k)
 *  - interior outputs (every tap inside):        (-pb, s, (k - 1) * dl + 1, in_size, out_size)
 * Always lo <= hi <= count, so [lo, hi) can be looped over as is. */
static inline void pyconv_inside_range(int64_t off, int64_t step, int64_t span, int64_t size,
                                       int64_t count, int64_t *lo, int64_t *hi)
{
    int64_t a = -pyconv_floor_div(off, step);                 /* first i with i*step+off >= 0 */
    int64_t b = pyconv_floor_div(size - span - off, step) + 1;
    if (a < 0) a = 0;
    if (a > count) a = count;
    if (b > count) b = count;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* The zero (or neutral) rows (d = 1) or columns (d = 2) before (end 0) or after (end 1)
 * the input that some tap of some output reads: a padded copy of the input this large
 * holds every window. A pool's ceil_mode window can reach past its end pads, a conv's
 * never reaches all of them, and a negative (cropping) pad needs none. */
static inline int64_t pyconv_window_pad(const pyconv_conv_geom *g, int d, int end)
{
    if (!end) return g->pb[d] > 0 ? g->pb[d] : 0;
    const int64_t last = (g->out_size[d] - 1) * g->s[d] - g->pb[d] + (g->k[d] - 1) * g->dl[d];
    return last + 1 > g->in_size[d] ? last + 1 - g->in_size[d] : 0;
}

/* The input's extent along d with those pads. */
static inline int64_t pyconv_window_extent(const pyconv_conv_geom *g, int d)
{
    return pyconv_window_pad(g, d, 0) + g->in_size[d] + pyconv_window_pad(g, d, 1);
}

#ifdef __cplusplus
}
#endif
#endif
