/* Stress driver for src/runtime/parallel.c, built by tests/kernels/test_parallel_sanitized.py
 * under ThreadSanitizer (data races) and AddressSanitizer + UBSan (memory errors).
 *
 * CALLERS threads each make ITERATIONS calls with random sizes, grains and thread counts
 * (more callers than the pool has job slots, so the "no free slot: run alone" path runs
 * too). Every call checks that each item ran exactly once, that no two participants
 * of one call shared a slot at the same time, and that the loop ran either as one task
 * or in tasks of whole grains inside equal ranges, one per participant (the cut
 * parallel.h promises). Exit status 0 and "ok" on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "parallel.h"

#define MAX_SLOTS 64

typedef struct {
    atomic_int *hits;                 /* per item: times it ran */
    atomic_int *starts;               /* per item: tasks that began there */
    atomic_int bad_tasks;             /* tasks not of whole grains of one range */
    atomic_int tasks_run;             /* tasks run, by every participant */
    int64_t n, grain;
    int parts;                        /* the ranges the call is cut into */
    float *data;                      /* per item: plain writes (races show under TSan) */
    atomic_int in_slot[MAX_SLOTS];    /* participants running under each slot now */
    atomic_int slot_clash;
    atomic_int bad_slot;
    int nthreads;
} job_t;

/* First item of range r of `parts` over n items (parallel.c's cut). */
static int64_t range_first(int64_t n, int parts, int r)
{
    return n / parts * r + (r < n % parts ? r : n % parts);
}

static void task(void *ctx, int64_t begin, int64_t end, int slot)
{
    job_t *j = ctx;
    if (slot < 0 || slot >= j->nthreads || slot >= MAX_SLOTS) {
        atomic_fetch_add(&j->bad_slot, 1);
        return;
    }
    atomic_fetch_add(&j->starts[begin], 1);
    atomic_fetch_add(&j->tasks_run, 1);
    /* inside one range, from a grain boundary of it to another or to its end */
    for (int r = 0; r < j->parts; r++) {
        const int64_t first = range_first(j->n, j->parts, r);
        const int64_t last = range_first(j->n, j->parts, r + 1);
        if (begin < first || begin >= last) continue;
        if ((begin - first) % j->grain || end > last ||
            (end < last && (end - first) % j->grain) || end <= begin)
            atomic_fetch_add(&j->bad_tasks, 1);
    }
    if (atomic_fetch_add(&j->in_slot[slot], 1) != 0)
        atomic_fetch_add(&j->slot_clash, 1);
    for (int64_t i = begin; i < end; i++) {
        atomic_fetch_add(&j->hits[i], 1);
        j->data[i] += 1.0f;
    }
    atomic_fetch_sub(&j->in_slot[slot], 1);
}

static int iterations;
static atomic_int failures;

static void *caller(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg * 7919u + 1u;
    for (int it = 0; it < iterations; it++) {
        int64_t n = rand_r(&seed) % 3000;
        job_t *j = calloc(1, sizeof(job_t));
        j->nthreads = 1 + rand_r(&seed) % 8;
        j->hits = calloc((size_t)n + 1, sizeof(atomic_int));
        j->data = calloc((size_t)n + 1, sizeof(float));
        j->starts = calloc((size_t)n + 1, sizeof(atomic_int));
        j->grain = 1 + rand_r(&seed) % 64;
        j->n = n;
        int64_t tasks = (n + j->grain - 1) / j->grain;
        int parts = tasks < j->nthreads ? (int)tasks : j->nthreads;
        j->parts = parts;
        pyconv_parallel_for(j->nthreads, n, j->grain, task, j);
        /* One task (run alone), or each participant's range of n / parts items (the
         * first n % parts one more) starting a task, every task whole grains of one. */
        if (atomic_load(&j->tasks_run) > 1) {
            for (int r = 0; r < parts; r++) {
                int64_t first = range_first(n, parts, r);
                if (atomic_load(&j->starts[first]) != 1 || atomic_load(&j->bad_tasks)) {
                    fprintf(stderr, "n %lld, grain %lld, %d parts, %d tasks: range %d (item "
                            "%lld) does not start a task, or a task is not whole grains of "
                            "one range\n",
                            (long long)n, (long long)j->grain, parts,
                            atomic_load(&j->tasks_run), r, (long long)first);
                    atomic_fetch_add(&failures, 1);
                    break;
                }
            }
        }
        for (int64_t i = 0; i < n; i++)
            if (atomic_load(&j->hits[i]) != 1 || j->data[i] != 1.0f) {
                fprintf(stderr, "item %lld of %lld ran %d times\n", (long long)i,
                        (long long)n, atomic_load(&j->hits[i]));
                atomic_fetch_add(&failures, 1);
                break;
            }
        if (atomic_load(&j->slot_clash) || atomic_load(&j->bad_slot)) {
            fprintf(stderr, "slot misuse: %d clashes, %d out of range\n",
                    atomic_load(&j->slot_clash), atomic_load(&j->bad_slot));
            atomic_fetch_add(&failures, 1);
        }
        free(j->hits);
        free(j->data);
        free(j->starts);
        free(j);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int callers = argc > 1 ? atoi(argv[1]) : 40;
    iterations = argc > 2 ? atoi(argv[2]) : 100;
    pthread_t *t = calloc((size_t)callers, sizeof(pthread_t));
    for (int i = 0; i < callers; i++)
        pthread_create(&t[i], NULL, caller, (void *)(size_t)i);
    for (int i = 0; i < callers; i++)
        pthread_join(t[i], NULL);
    free(t);
    if (atomic_load(&failures))
        return 1;
    printf("ok %s\n", pyconv_parallel_backend());
    return 0;
}
