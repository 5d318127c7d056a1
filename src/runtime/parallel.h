/* parallel.h: pyconv's parallel runtime: a parallel-for whose caller runs what no worker claimed. */
#ifndef PYCONV_PARALLEL_H
#define PYCONV_PARALLEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Work of one task: items [begin, end) of the loop, run by the participant `slot`.
 * Slots are 0 (the caller) to nthreads - 1 and are unique among the participants of
 * one call, so they index per-thread scratch memory. */
typedef void (*pyconv_range_fn)(void *ctx, int64_t begin, int64_t end, int slot);

/* Runs fn over [0, n) on the calling thread and at most nthreads - 1 pool workers, and
 * returns when every item is done.
 *
 * The items are cut into one range of equal count per participant, each range into
 * grains of `grain` items (its last shorter). A task is a run of whole grains of one
 * range: participants claim from their own range first, then from the others', a
 * quarter of the range's grains left at a time, down to single grains at its end (so
 * they finish within about a grain of each other). The caller never waits for a
 * worker that has not claimed a task: a worker that is late (no core for it on a busy
 * machine) therefore costs nothing, the caller runs its share. Calls from several
 * threads at once each get their own job; any number of them may run. */
void pyconv_parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn,
                         void *ctx);

/* Flush-to-zero and denormals-are-zero on the calling thread (x86 MXCSR; elsewhere
 * nothing); returns the previous floating-point control word for pyconv_fp_restore.
 * Every participant of a parallel loop computes in its caller's control word, so a
 * kernel that sets this before its loops has it on the workers too. */
unsigned pyconv_fp_flush_denormals(void);
void pyconv_fp_restore(unsigned saved);

/* "pool" (pthreads, the default), "openmp" (a build option) or "serial". */
const char *pyconv_parallel_backend(void);

/* Pool workers started so far (0 for the other backends). */
int pyconv_parallel_workers(void);

#ifdef __cplusplus
}
#endif

#endif
