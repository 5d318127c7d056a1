/* sgemm_generic.c: portable 4x16 SGEMM micro-kernel (plain C, auto-vectorised), any CPU. */
#include "sgemm.h"

#define PYCONV_SIMD_PORTABLE 4
#define PYCONV_ISA_SUFFIX generic
#include "simd_ops.inc"
#include "sgemm_common.inc"

#define MR 4
#define NR 16

static void sgemm_ukernel_4x16_generic(int64_t kc, const float *restrict a,
                                       const float *restrict b, float *restrict c, int64_t ldc,
                                       float alpha, float beta)
{
    float acc[MR][NR] = {{0.0f}};
    for (int64_t k = 0; k < kc; k++) {
        for (int i = 0; i < MR; i++) {
            const float ai = a[k * MR + i];
            for (int j = 0; j < NR; j++) acc[i][j] += ai * b[k * NR + j];
        }
    }
    for (int i = 0; i < MR; i++) {
        float *restrict row = c + i * ldc;
        if (beta == 0.0f) {
            for (int j = 0; j < NR; j++) row[j] = alpha * acc[i][j];
        } else {
            for (int j = 0; j < NR; j++) row[j] = alpha * acc[i][j] + beta * row[j];
        }
    }
}

/* Edge and shifted kernels: the shared template over portable 4-float vectors. */
#include "sgemm_tiles.inc"

/* Eight independent multiply-add chains of 16 floats: enough to fill any FMA pipeline the
 * compiler targets without extra flags. */
static double fma_peak_generic(int64_t iterations)
{
    float acc[8][16];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 16; j++) acc[i][j] = (float)(i + j) * 1e-3f;
    const float x = 0.999999f, y = 1e-7f;
    for (int64_t it = 0; it < iterations; it++)
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 16; j++) acc[i][j] = acc[i][j] * x + y;
    volatile float sink = 0.0f;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 16; j++) sink += acc[i][j];
    (void)sink;
    return 2.0 * 8 * 16 * (double)iterations;
}

const pyconv_sgemm_kernel pyconv_sgemm_kernel_generic = {
    "generic", "sgemm_ukernel_4x16_generic", MR, NR, VL, sgemm_ukernel_4x16_generic,
    ukernel_edge_generic, epilogue_generic, gemv_generic, fma_peak_generic, shifted_generic,
    shifted_edge_generic, phase_split_generic, pack_runs_generic, NULL,
    channel_affine_generic, channel_tile_generic, CHANNEL_COLS,
};
