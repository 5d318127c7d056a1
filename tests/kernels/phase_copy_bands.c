/* phase_copy_bands.c: the phase copy's bands (sgemm_common.inc, phase_split) on random
 * geometries, for the ISA of the kernel file it is built with (-DKERNEL_FILE=...):
 * - filled in 1 to 6 bands (random, some empty), the copy equals the one made in one
 *   call, bit for bit;
 * - a band alone writes exactly its floats of each plane: from band_edge(i0) to
 *   band_edge(i1), plus the gap after the last row for the band of the last row (threads
 *   fill neighbouring bands at once: a float written by two of them would be a race,
 *   invisible in the result). Destinations start NaN-filled, so unwritten floats show,
 *   and 64 floats past the end must stay so.
 * Prints "ok <tests>" or the first mismatch and exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include KERNEL_FILE

#define SPLIT PYCONV_ISA_FN(phase_split)
#define GUARD 64

static float *nan_filled(int64_t n)
{
    float *p = aligned_alloc(64, (size_t)((n + GUARD + 15) / 16 * 16) * sizeof(float));
    for (int64_t i = 0; i < n + GUARD; i++) p[i] = NAN;
    return p;
}

int main(int argc, char **argv)
{
    const int cases = argc > 1 ? atoi(argv[1]) : 20000;
    srand(argc > 2 ? (unsigned)atoi(argv[2]) : 1u);
    long tests = 0;
    for (int t = 0; t < cases; t++) {
        /* one row in eight wide, most over PHASE_ONE_PASS_STEPS vectors (the band logic) */
        const int64_t c = 1 + rand() % 4, h = 1 + rand() % 40;
        const int64_t w = rand() % 8 ? 1 + rand() % 90 : 200 + rand() % 700;
        const int64_t sh = 1 + rand() % 2, sw = 1 + rand() % 3, k = 1 + rand() % 5;
        const int64_t dl = 1 + rand() % 3, ph = rand() % (k * dl), pw = rand() % (k * dl);
        int64_t oh = h + 2 * ph - dl * (k - 1) - 1, ow = w + 2 * pw - dl * (k - 1) - 1;
        if (oh < 0 || ow < 0) continue;
        oh = oh / sh + 1;
        ow = ow / sw + 1;
        const int64_t hq = oh + (k - 1) * dl / sh, wq = ow + (k - 1) * dl / sw;
        const int64_t plane = (hq * wq + 15) / 16 * 16, n = c * sh * sw * plane;
        float *x = aligned_alloc(64, (size_t)((c * h * w + 15) / 16 * 16) * sizeof(float));
        for (int64_t i = 0; i < c * h * w; i++) x[i] = (float)(rand() % 100 + 1);
        float *whole = nan_filled(n), *bands = nan_filled(n), *one = nan_filled(n);
        SPLIT(x, h * w, c, h, w, sh, sw, ph, pw, wq, hq, plane, 0, hq, whole);
        const int nb = 1 + rand() % 6;
        for (int64_t b = 0, prev = 0; b < nb; b++) {
            int64_t end = b + 1 == nb ? hq : hq * (b + 1) / nb + rand() % 3 - 1;
            end = end < prev ? prev : end > hq ? hq : end;
            SPLIT(x, h * w, c, h, w, sh, sw, ph, pw, wq, hq, plane, prev, end, bands);
            prev = end;
        }
        const int64_t i0 = rand() % (hq + 1), i1 = i0 + rand() % (hq - i0 + 1);
        SPLIT(x, h * w, c, h, w, sh, sw, ph, pw, wq, hq, plane, i0, i1, one);
        const int64_t e0 = PYCONV_ISA_FN(band_edge)(one, i0, wq, hq);
        const int64_t e1 = PYCONV_ISA_FN(band_edge)(one, i1, wq, hq);
        for (int64_t i = 0; i < n + GUARD; i++) {
            const int64_t off = i % plane;
            const int mine = i < n && ((off >= e0 && off < e1) || (i1 >= hq && off >= hq * wq));
            const int same = isnan(whole[i]) ? isnan(bands[i]) != 0 : whole[i] == bands[i];
            if (!same || (i < n) == (isnan(whole[i]) != 0) || mine == (isnan(one[i]) != 0)) {
                printf("c=%lld h=%lld w=%lld sh=%lld sw=%lld ph=%lld pw=%lld wq=%lld hq=%lld "
                       "plane=%lld: float %lld: whole %g, %d bands %g; band %lld..%lld "
                       "(floats %lld..%lld of a plane) %g\n",
                       (long long)c, (long long)h, (long long)w, (long long)sh,
                       (long long)sw, (long long)ph, (long long)pw, (long long)wq,
                       (long long)hq, (long long)plane, (long long)i, whole[i], nb, bands[i],
                       (long long)i0, (long long)i1, (long long)e0, (long long)e1, one[i]);
                return 1;
            }
        }
        free(x);
        free(whole);
        free(bands);
        free(one);
        tests++;
    }
    printf("ok %ld\n", tests);
    return 0;
}
