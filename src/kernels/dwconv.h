/* dwconv.h: direct depthwise convolution (one input channel per output plane), per ISA. */
#ifndef PYCONV_DWCONV_H
#define PYCONV_DWCONV_H

#include <stdint.h>

#include "conv_geom.h"
#include "sgemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One output channel: y = act(conv(x, taps) + bias + residual). */
typedef struct {
    const float *x;          /* the input channel, d * h * w floats */
    const float *taps;       /* kd * kh * kw weights */
    float bias;
    float *y;                /* the output channel, od * oh * ow floats */
    const float *residual;   /* same layout as y, or NULL */
    int act;                 /* enum pyconv_act: none/relu/clip fused, others via epilogue */
    float act_a, act_b;
    pyconv_epilogue_fn epilogue;   /* the GEMM table's, for the other activations */
} pyconv_dw_channel;

/* Output rows [y0, y1) of output depth slice zd of one channel (g: its geometry). ws:
 * pyconv_dwconv_workspace_floats(g, y1 - y0) floats, 64-byte aligned, private to the
 * calling thread. */
typedef void (*pyconv_dwconv_rows_fn)(const pyconv_conv_geom *g, const pyconv_dw_channel *c,
                                      int64_t zd, int64_t y0, int64_t y1, float *ws);

/* Small maps: `lanes` channels per call, vectorised across channels (one per lane). x,
 * taps, y: the first of nch <= lanes channels (strides: a plane, kh * kw taps, a plane);
 * 2-D only (depth 1). Writes the convolution plus bias (nch floats, or NULL), then act when
 * it is relu or clip (act_a, act_b its bounds; pass NONE for anything else, and when a
 * residual must come first): the caller applies the rest. ws:
 * pyconv_dw_channels_workspace_floats(g, lanes). */
typedef void (*pyconv_dwconv_channels_fn)(const pyconv_conv_geom *g, const float *x,
                                          const float *taps, const float *bias, float *y,
                                          int64_t nch, int act, float act_a, float act_b,
                                          float *ws);

typedef struct {
    const char *isa;
    const char *name;        /* e.g. "dwconv_rows_avx512" */
    pyconv_dwconv_rows_fn rows;
    pyconv_dwconv_channels_fn channels;
    int lanes;               /* channels per vector of `channels` */
} pyconv_dwconv_kernel;

extern const pyconv_dwconv_kernel pyconv_dwconv_kernel_generic;
#if defined(PYCONV_HAVE_X86_KERNELS)
extern const pyconv_dwconv_kernel pyconv_dwconv_kernel_avx2;
extern const pyconv_dwconv_kernel pyconv_dwconv_kernel_avx512;
#endif

/* The table for an ISA name ("avx512", "avx2", "generic"; unknown: generic). The caller
 * passes the name of the GEMM kernel in use, which was checked against the CPU. */
const pyconv_dwconv_kernel *pyconv_dwconv_kernel_for(const char *isa);

/* Padded input rows are stored split into sw phases (phase q holds columns q, q + sw, ...),
 * so every tap of every stride reads contiguous floats; each phase holds lp floats,
 * enough for the widest vector read past the last output column. */
static inline int64_t pyconv_dw_phase_len(const pyconv_conv_geom *g)
{
    int64_t lp = ((g->k[2] - 1) * g->dl[2]) / g->s[2] + g->out_size[2] + 16;
    return (lp + 15) / 16 * 16;
}

/* Input rows packed for a block of `rows` output rows. */
static inline int64_t pyconv_dw_block_in_rows(const pyconv_conv_geom *g, int64_t rows)
{
    return (rows - 1) * g->s[1] + (g->k[1] - 1) * g->dl[1] + 1;
}

static inline int64_t pyconv_dwconv_workspace_floats(const pyconv_conv_geom *g, int64_t rows)
{
    const int64_t lp = pyconv_dw_phase_len(g);
    return pyconv_dw_block_in_rows(g, rows) * g->s[2] * lp;
}

/* `channels` scratch: the interleaved padded window, the taps and the output grid, lanes
 * floats per pixel or tap. */
static inline int64_t pyconv_dw_channels_workspace_floats(const pyconv_conv_geom *g,
                                                          int64_t lanes)
{
    const int64_t hp = pyconv_window_extent(g, 1), wp = pyconv_window_extent(g, 2);
    return lanes * (hp * wp + g->k[1] * g->k[2] + g->out_size[1] * g->out_size[2]) + 16;
}

#ifdef __cplusplus
}
#endif
#endif
