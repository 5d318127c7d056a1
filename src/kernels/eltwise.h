/* eltwise.h: the element-wise engine (unary math and broadcast binary ops), per ISA. */
#ifndef PYCONV_ELTWISE_H
#define PYCONV_ELTWISE_H

#include <stdint.h>

#include "sgemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Unary functions. The codes below PYCONV_ACT_COUNT are the fused activations of
 * enum pyconv_act (same values, same code: the GEMM epilogue calls this engine); the
 * others exist only as standalone ops. Python mirrors the names (pyconv._ext.eltwise). */
enum pyconv_unary {
    PYCONV_UNARY_EXP = PYCONV_ACT_COUNT,
    PYCONV_UNARY_ERF,
    PYCONV_UNARY_RECIPROCAL,
    PYCONV_UNARY_SQRT,
    PYCONV_UNARY_NEG,
    PYCONV_UNARY_ABS,
    PYCONV_UNARY_LOG,
    PYCONV_UNARY_COUNT
};

/* Binary operations: y = a op b. */
enum pyconv_binary {
    PYCONV_BINARY_ADD = 0,
    PYCONV_BINARY_SUB,
    PYCONV_BINARY_MUL,
    PYCONV_BINARY_DIV,
    PYCONV_BINARY_MAX,      /* NaN propagates, as np.maximum */
    PYCONV_BINARY_MIN,
    PYCONV_BINARY_POW,      /* a scalar exponent 2 or 0.5: x * x, sqrt; else powf */
    PYCONV_BINARY_COUNT
};

/* y[i] = f(x[i]) for i < n, f = enum pyconv_unary / pyconv_act with parameters (a, b) as
 * in pyconv_epilogue. y may be x (in place) but must not overlap it otherwise. */
typedef void (*pyconv_unary_fn)(int op, const float *x, float *y, int64_t n, float a, float b);

/* y[i] = a[i * sa] op b[i * sb] for i < n; sa, sb are 1 (a run) or 0 (a scalar). y may be
 * a or b (in place) but must not overlap them otherwise. */
typedef void (*pyconv_binary_fn)(int op, const float *a, int64_t sa, const float *b,
                                 int64_t sb, float *y, int64_t n);

/* One row of n floats standardised (LayerNormalization, GroupNormalization,
 * InstanceNormalization): y = (x - mean) / sqrt(var + eps) * s + b, the mean and variance
 * (two passes: the variance of the centred values, with its rounding-error correction)
 * accumulated in double over float blocks. s and b (either may be NULL: 1, 0) hold k
 * values, each for a run of n / k consecutive elements (k = n: per element; k = 1: the
 * whole row). Writes the row's mean and 1 / sqrt(var + eps) (inf or NaN when var + eps
 * <= 0, as in onnxruntime) to *mean and *inv_std. y may be x. */
typedef void (*pyconv_standardize_fn)(const float *x, float *y, int64_t n, double eps,
                                      const float *s, const float *b, int64_t k, double *mean,
                                      double *inv_std);

/* Columns [j0, j1) of a (c, p) row-major matrix (a channels-first image: c channels of p
 * pixels) standardised over their c values, as pyconv_standardize_fn does a row: s and b
 * (either may be NULL) hold one value per row (channel); mean[j] and inv_std[j] receive
 * the statistics of column j. y may be x. */
typedef void (*pyconv_standardize_cols_fn)(const float *x, float *y, int64_t c, int64_t p,
                                           int64_t j0, int64_t j1, double eps, const float *s,
                                           const float *b, double *mean, double *inv_std);

/* One row of n >= 1 floats through softmax: y = exp(x - max) / sum(exp(x - max)), or
 * with log set log_softmax: y = (x - max) - log(sum); the sum accumulated in double over
 * float blocks. A NaN anywhere makes the row NaN (as NumPy and torch). y may be x. */
typedef void (*pyconv_softmax_fn)(const float *x, float *y, int64_t n, int log);

typedef struct {
    const char *isa;
    pyconv_unary_fn unary;
    pyconv_binary_fn binary;
    pyconv_standardize_fn standardize;
    pyconv_standardize_cols_fn standardize_cols;
    pyconv_softmax_fn softmax;
} pyconv_eltwise_kernel;

extern const pyconv_eltwise_kernel pyconv_eltwise_kernel_generic;
#if defined(PYCONV_HAVE_X86_KERNELS)
extern const pyconv_eltwise_kernel pyconv_eltwise_kernel_avx2;
extern const pyconv_eltwise_kernel pyconv_eltwise_kernel_avx512;
#endif

/* The table for an ISA name ("avx512", "avx2", "generic"; unknown: generic). The caller
 * passes the name of the GEMM kernel in use, which was checked against the CPU. */
const pyconv_eltwise_kernel *pyconv_eltwise_kernel_for(const char *isa);

#ifdef __cplusplus
}
#endif
#endif
