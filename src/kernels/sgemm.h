/* sgemm.h: the micro-kernel table shared by the SIMD kernels and the Cython driver. */
#ifndef PYCONV_SGEMM_H
#define PYCONV_SGEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Fused epilogue activations; Python mirrors them by name (gemm.pxd, pyconv/_activations.py). */
enum pyconv_act {
    PYCONV_ACT_NONE = 0,
    PYCONV_ACT_RELU = 1,
    PYCONV_ACT_CLIP = 2,         /* min(max(x, a), b); relu6 is clip(0, 6) */
    PYCONV_ACT_LEAKY_RELU = 3,   /* x >= 0 ? x : a * x */
    PYCONV_ACT_SIGMOID = 4,
    PYCONV_ACT_HARDSIGMOID = 5,  /* clip(a * x + b, 0, 1) */
    PYCONV_ACT_HARDSWISH = 6,    /* x * clip(x / 6 + 1/2, 0, 1) */
    PYCONV_ACT_TANH = 7,
    PYCONV_ACT_SILU = 8,         /* x * sigmoid(x) */
    PYCONV_ACT_ELU = 9,          /* x >= 0 ? x : a * (exp(x) - 1) */
    PYCONV_ACT_GELU = 10,        /* x / 2 * (1 + erf(x / sqrt(2))) */
    PYCONV_ACT_GELU_TANH = 11,   /* x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) */
    PYCONV_ACT_MISH = 12,        /* x * tanh(softplus(x)) */
    PYCONV_ACT_SOFTPLUS = 13,    /* log(1 + exp(x)) */
    PYCONV_ACT_SELU = 14,        /* b * (x > 0 ? x : a * (exp(x) - 1)) */
    PYCONV_ACT_COUNT = 15
};

/* What happens to a finished C tile: out = act(acc + bias[row] + residual). */
typedef struct {
    const float *bias;      /* per row of C, indexed from the tile's first row; NULL: none */
    const float *residual;  /* same layout as C, at the tile's origin; NULL: none */
    int64_t ldr;            /* row stride of residual, in floats */
    int act;                /* enum pyconv_act */
    float act_a, act_b;     /* activation parameters */
} pyconv_epilogue;

/* C[0:MR, 0:NR] = alpha * A_panel @ B_panel + beta * C (beta == 0: C is not read).
 * a: packed A panel, kc x MR (a[k * MR + i]); b: packed B panel, kc x NR (b[k * NR + j]). */
typedef void (*pyconv_sgemm_ukernel)(int64_t kc, const float *a, const float *b,
                                     float *c, int64_t ldc, float alpha, float beta);

/* The same for a partial tile: only C[0:m, 0:n] is read and written (m <= MR, n <= NR),
 * and only the vector columns that hold the n columns are computed. */
typedef void (*pyconv_sgemm_ukernel_edge)(int64_t kc, const float *a, const float *b,
                                          float *c, int64_t ldc, float alpha, float beta,
                                          int64_t m, int64_t n);

/* The full tile with the epilogue applied in registers: C[0:MR, 0:NR] =
 * act((A_panel @ B_panel + beta * C) + bias + residual), the bits of ukernel (alpha 1)
 * followed by the epilogue. */
typedef void (*pyconv_sgemm_ukernel_ep)(int64_t kc, const float *a, const float *b, float *c,
                                        int64_t ldc, float beta, const pyconv_epilogue *ep);

/* Applies the epilogue to an m x n tile of C in place. */
typedef void (*pyconv_epilogue_fn)(float *c, int64_t ldc, int64_t m, int64_t n,
                                   const pyconv_epilogue *ep);

/* y[i] = alpha * sum_k x[i*sxi + k*sxk] * v[k*sv] + beta * y[i*sy], for i < m. */
typedef void (*pyconv_sgemv_fn)(int64_t m, int64_t k, float alpha, const float *x,
                                int64_t sxi, int64_t sxk, const float *v, int64_t sv,
                                float beta, float *y, int64_t sy);

/* The most vectors across a tile (NR / vl) of any kernel: the size of voff; and the
 * most columns (NR): the callers' per-tile arrays. */
#define PYCONV_MAX_TILE_VECTORS 16
#define PYCONV_MAX_NR 64

/* The convolution's shifted-B tile: c[i * ldc + coff[v] + j] = sum_k A[k][ir + i] *
 * src[off[k] + voff[v] + j] for i < m <= MR, v < NR / vl, j < vl (vl: the kernel's vector
 * length). A is packed as for the ukernel (KC-deep blocks of MR-row panels, mpad rows,
 * panel ir of block k0 at a + k0 * mpad + ir * kcb); B row k is read straight from the
 * caller's padded input instead of a packed panel, each vector of it at its own offset
 * voff[v] (v * vl: one contiguous run; else vectors along the output rows, none over the
 * padding columns between them). Each vector of C goes to its own offset coff[v]: a
 * scratch tile (ldc = NR, coff[v] = v * vl), or straight into the output where every
 * vector is a run of it. ep (NULL: none) is an epilogue without a residual, its bias
 * indexed from the tile's row 0: the bias and a relu or clip are applied in registers,
 * any other activation on the stored rows (coff[v] = v * vl there). */
typedef void (*pyconv_shifted_ukernel)(int64_t k, int64_t kc, int64_t mpad, int64_t ir,
                                       const float *a, const float *src, const int64_t *off,
                                       const int64_t *voff, float *c, int64_t ldc,
                                       const int64_t *coff, int64_t m,
                                       const pyconv_epilogue *ep);

/* The same for the first n < NR columns only (the last chunk of a row of tiles): only
 * the vectors holding them are computed and stored. */
typedef void (*pyconv_shifted_edge_ukernel)(int64_t k, int64_t kc, int64_t mpad, int64_t ir,
                                            const float *a, const float *src,
                                            const int64_t *off, const int64_t *voff,
                                            float *c, int64_t ldc, const int64_t *coff,
                                            int64_t m, int64_t n, const pyconv_epilogue *ep);

/* The convolution's channel tile (small maps, many channels; see sgemm_tiles.inc):
 * y[i * ldy + j] = ep(sum_k w[k * NR + i] * src[off[k] + j]) for i < m <= NR output
 * channels and j < n <= channel_cols consecutive outputs of one output row, w a K x NR
 * panel of the transposed weights (channels across, zero past m), B read as broadcasts
 * from the caller's padded input; the epilogue's bias and residual indexed from the
 * tile's first channel and output (residual rows ep->ldr apart); tile: channel_cols * NR
 * floats of scratch. */
typedef void (*pyconv_channel_tile_fn)(int64_t k, const float *w, int64_t m, const float *src,
                                       const int64_t *off, int64_t n, float *y, int64_t ldy,
                                       float *tile, const pyconv_epilogue *ep);

/* Larger strides take im2col: their phase planes would cost more than they save. */
#define PYCONV_MAX_PHASE_STRIDE 8

/* The convolution's phase copy of `channels` input channels (see conv.pyx, phase_copy;
 * channel c at x + c * xs, an h x w plane): its sh * sw phase planes, each hq rows of wq
 * floats, `plane` floats apart, plane (c * sh + py) * sw + q at dst, get
 * [i * wq + j] = x_c[iy * w + ix] with iy = i * sh + py - ph and ix = j * sw + q - pw
 * when (iy, ix) is inside the plane, else 0: the band of rows i0 <= i < i1 of the hq
 * (threads fill the rows their tiles read), each band edge inside a plane moved up to
 * the next cache line (the bands of rows i0..i1 and i1..i2 tile the plane; no line is
 * written by two of them). plane >= hq * wq is a multiple of 16 floats and dst starts
 * on a cache line, so no line holds two planes either; the band of the last row zeroes
 * the floats between hq * wq and plane. All channels in one call: a call per channel and
 * row phase cost more in set-up than its rows on small maps (a grouped 3x3 / 2 conv on
 * 16x16 made 128 calls of 9 rows). sh, sw <= PYCONV_MAX_PHASE_STRIDE. */
typedef void (*pyconv_phase_split_fn)(const float *x, int64_t xs, int64_t channels,
                                      int64_t h, int64_t w, int64_t sh, int64_t sw,
                                      int64_t ph, int64_t pw, int64_t wq, int64_t hq,
                                      int64_t plane, int64_t i0, int64_t i1, float *dst);

/* One run of consecutive floats: src offset, length, dst offset. */
typedef struct {
    int64_t src, n, dst;
} pyconv_run;

/* Packs runs of B rows into GEMM panels (the padded im2col path, see conv.pyx
 * pack_b_padded): for kk < kc and every run r,
 * dst[runs[r].dst + kk * nr + q] = src[off[kk] + runs[r].src + q] for q < runs[r].n. */
typedef void (*pyconv_pack_runs_fn)(const float *src, const int64_t *off, int64_t kc,
                                    const pyconv_run *runs, int64_t nruns, int64_t nr,
                                    float *dst);

/* y[i, :] = act(x[i, :] * scale[c] + shift[c]) for rows i < m of n floats, c = (c0 + i) % channels
 * (BatchNormalization in inference and the optimizer's ChannelAffine: NCHW rows). */
typedef void (*pyconv_channel_affine_fn)(const float *x, float *y, int64_t m, int64_t n,
                                         const float *scale, const float *shift,
                                         int64_t c0, int64_t channels, int act, float a,
                                         float b);

/* Times an FMA-only loop: returns the flops executed (used to measure machine peak). */
typedef double (*pyconv_fma_peak_fn)(int64_t iterations);

typedef struct {
    const char *isa;            /* "avx512", "avx2" or "generic" */
    const char *ukernel_name;   /* e.g. "sgemm_ukernel_8x48_avx512" */
    int mr, nr;                 /* register tile */
    int vl;                     /* floats per vector (the shifted kernels' voff unit) */
    pyconv_sgemm_ukernel ukernel;
    pyconv_sgemm_ukernel_edge ukernel_edge;  /* NULL: the driver goes through a tile buffer */
    pyconv_epilogue_fn epilogue;
    pyconv_sgemv_fn gemv;
    pyconv_fma_peak_fn fma_peak;
    pyconv_shifted_ukernel shifted;
    pyconv_shifted_edge_ukernel shifted_edge;
    pyconv_phase_split_fn phase_split;
    pyconv_pack_runs_fn pack_runs;
    pyconv_sgemm_ukernel_ep ukernel_ep;      /* NULL: ukernel, then epilogue */
    pyconv_channel_affine_fn channel_affine;
    pyconv_channel_tile_fn channel_tile;
    int channel_cols;           /* the most columns (outputs) of one channel tile */
} pyconv_sgemm_kernel;

/* One table per ISA, each defined in a file compiled with that ISA's flags. */
extern const pyconv_sgemm_kernel pyconv_sgemm_kernel_generic;
#if defined(PYCONV_HAVE_X86_KERNELS)
extern const pyconv_sgemm_kernel pyconv_sgemm_kernel_avx2;
extern const pyconv_sgemm_kernel pyconv_sgemm_kernel_avx512;
#endif

/* Runtime dispatch (cpu_features.c). */
int pyconv_cpu_has_avx2_fma(void);
int pyconv_cpu_has_avx512f(void);
/* The kernel table for an ISA name, or NULL when this CPU/build cannot run it. */
const pyconv_sgemm_kernel *pyconv_sgemm_kernel_for(const char *isa);
/* The best kernel this CPU runs. */
const pyconv_sgemm_kernel *pyconv_sgemm_kernel_best(void);
/* Cache sizes in bytes (0 when unknown). */
int64_t pyconv_cache_size(int level);

#ifdef __cplusplus
}
#endif
#endif
