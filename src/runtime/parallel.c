/* parallel.c: the parallel-for of parallel.h: a pthread pool (default), OpenMP, or serial. */
#include "parallel.h"

#if defined(__SSE__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1)
#include <xmmintrin.h>
/* MXCSR: bits 0-5 are sticky exception flags (per thread, left alone), the rest control
 * rounding, masks, flush-to-zero (bit 15) and denormals-are-zero (bit 6). */
#define FP_STATUS_BITS 0x3Fu
#define FP_FLUSH_BITS 0x8040u
static inline unsigned fp_get(void) { return _mm_getcsr(); }
static inline void fp_set(unsigned v) { _mm_setcsr(v); }
#else
#define FP_STATUS_BITS 0u
#define FP_FLUSH_BITS 0u
static inline unsigned fp_get(void) { return 0; }
static inline void fp_set(unsigned v) { (void)v; }
#endif

unsigned pyconv_fp_flush_denormals(void)
{
    const unsigned saved = fp_get();
    if ((saved | FP_FLUSH_BITS) != saved) fp_set(saved | FP_FLUSH_BITS);
    return saved;
}

void pyconv_fp_restore(unsigned saved)
{
    const unsigned now = fp_get();
    if ((now & ~FP_STATUS_BITS) != (saved & ~FP_STATUS_BITS))
        fp_set((now & FP_STATUS_BITS) | (saved & ~FP_STATUS_BITS));
}

/* A participant takes the caller's control word `env` (its own status flags kept);
 * returns its own for pyconv_fp_restore. */
static inline unsigned fp_enter(unsigned env)
{
    const unsigned own = fp_get();
    pyconv_fp_restore(env);
    return own;
}

#if defined(PYCONV_THREADS_POOL) || defined(PYCONV_THREADS_OPENMP)
/* The cut both parallel backends share. The items are cut into one contiguous range per
 * participant (equal counts: with ranges of whole tasks, 22 items in tasks of 3 split
 * 12 + 10), each cut into grains of `grain` items (its last shorter) with its own
 * counter word: generation (24 bits: the pool's job; 0 in the OpenMP build) | next grain
 * of the range (40). A participant claims from its own range first, then from the
 * others' in turn. On time, every thread runs a contiguous part of the loop
 * (neighbouring layers split alike, so what a thread reads is mostly what it wrote: on a
 * 16 -> 32 3x3 conv on 32x32 interleaved tasks made the second thread gain nothing, its
 * reads and writes bouncing between the cores' caches); late, its range is run by the
 * others. */
#include <stdatomic.h>

#define GEN_SHIFT 40
#define TASK_MASK 0xffffffffffULL
#define MAX_TASKS ((int64_t)1 << 30)
#define MAX_PARTICIPANTS 256          /* the pool's job word counts helpers in 8 bits */

/* A range's counter has a cache line of its own: claims from one's own range then stay
 * in one core's cache (shared lines cost a transfer per task: 24 tasks of 0.8 us took
 * 11.8 us at 2 threads, 2.4 us over the ideal). */
typedef struct {
    _Alignas(64) _Atomic uint64_t next;
} range_counter;

/* First item of range r of `parts` over n items (no overflow for any n). */
static inline int64_t range_begin(int64_t n, int parts, int r)
{
    return n / parts * r + (r < n % parts ? r : n % parts);
}

/* The participants of a loop of n > 0 items (at most one per grain, at most
 * MAX_PARTICIPANTS); fixes `grain` to at least 1 and at most MAX_TASKS grains. */
static int loop_participants(int nthreads, int64_t n, int64_t *grain)
{
    if (*grain < 1) *grain = 1;
    if ((n + *grain - 1) / *grain > MAX_TASKS) *grain = (n + MAX_TASKS - 1) / MAX_TASKS;
    const int64_t grains = (n + *grain - 1) / *grain;
    if (nthreads > grains) nthreads = (int)grains;
    return nthreads > MAX_PARTICIPANTS ? MAX_PARTICIPANTS : nthreads;
}

/* Claims and runs the grains of generation `gen` in `ranges` (one counter per range of
 * `parts` over n items) until none is left: those of range `slot` first, then of the
 * others in turn; returns how many it ran. Each claim takes a quarter of the range's
 * grains left, single grains once fewer than 8 are left (guided scheduling): few claims
 * while a range is long, so that threads finish within about a grain of each other.
 * With one claim per task and four tasks per thread, the last task of one thread's
 * range was the other's wait: a 128 -> 128 3x3 conv on 28x28 (channel tiles, 2
 * threads) spent 4% of its time in the caller's join and 3% in the worker's poll. */
static int64_t run_ranges(range_counter *ranges, uint64_t gen, pyconv_range_fn fn, void *ctx,
                          int64_t n, int64_t grain, int parts, int slot)
{
    int64_t ran = 0;
    for (int i = 0; i < parts; i++) {
        const int r = (slot + i) % parts;
        const int64_t first = range_begin(n, parts, r), end = range_begin(n, parts, r + 1);
        const int64_t ntasks = (end - first + grain - 1) / grain;
        _Atomic uint64_t *counter = &ranges[r].next;
        uint64_t word = atomic_load(counter);
        for (;;) {
            const int64_t t = (int64_t)(word & TASK_MASK);
            if (t >= ntasks || (word >> GEN_SHIFT) != gen) break;
            const int64_t take = ntasks - t >= 8 ? (ntasks - t) / 4 : 1;
            if (!atomic_compare_exchange_weak(counter, &word, word + (uint64_t)take))
                continue;                           /* word reloaded: retry or move on */
            const int64_t begin = first + t * grain, stop = begin + take * grain;
            fn(ctx, begin, stop < end ? stop : end, slot);
            ran += take;
            word = atomic_load(counter);
        }
        if ((word >> GEN_SHIFT) != gen) break;      /* the job is over */
    }
    return ran;
}
#endif

#if !defined(PYCONV_THREADS_POOL) && !defined(PYCONV_THREADS_OPENMP)

const char *pyconv_parallel_backend(void) { return "serial"; }
int pyconv_parallel_workers(void) { return 0; }

void pyconv_parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn, void *ctx)
{
    (void)nthreads;
    if (n > 0) fn(ctx, 0, n, 0);
    (void)grain;
}

#elif defined(PYCONV_THREADS_OPENMP)
/* The OpenMP build: the pool's ranges and claims inside one parallel region. Its closing
 * barrier waits for every thread of the team, late or not; the pool below does not. */
#include <omp.h>

const char *pyconv_parallel_backend(void) { return "openmp"; }
int pyconv_parallel_workers(void) { return 0; }

void pyconv_parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    nthreads = loop_participants(nthreads, n, &grain);
    if (nthreads <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    /* one range per thread asked for: a team that comes smaller runs the missing ones */
    range_counter ranges[MAX_PARTICIPANTS];
    for (int r = 0; r < nthreads; r++) atomic_init(&ranges[r].next, 0);
    const unsigned env = fp_get();
#pragma omp parallel num_threads(nthreads)
    {
        const unsigned own = fp_enter(env);
        run_ranges(ranges, 0, fn, ctx, n, grain, nthreads, omp_get_thread_num());
        pyconv_fp_restore(own);
    }
}

#else /* PYCONV_THREADS_POOL */

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

enum {
    /* Jobs that can be in flight at once (one per concurrent caller); a caller that finds
     * none free runs its loop alone. */
    MAX_JOBS = 32,
    /* Helpers per job: the joined count has 8 bits in the job word. */
    MAX_WORKERS = MAX_PARTICIPANTS - 1,
    /* An idle worker polls for new jobs this long, then sleeps until one is published.
     * First with pause (a few ns per poll: the gaps between the parallel loops of one
     * model run are microseconds), then yielding its core, so that on a busy machine a
     * polling worker gives way to whoever else has work. */
    SPIN_PAUSE_NS = 50 * 1000,
    SPIN_YIELD_NS = 500 * 1000,
    WORKER_STACK_BYTES = 4 << 20,
};

/* A job's word: generation (24 bits) | helpers joined (8) | 32 bits, all set while the
 * slot is closed (its fields being written), else 0. One compare-and-swap joins, and it
 * fails once the slot holds a newer job, so a worker that read a finished job's fields
 * can never run a task of it. Its range counters carry the same generation. */
#define JOINED_SHIFT 32
#define NEXT_MASK 0xffffffffULL
#define JOINED_MASK 0xffULL

typedef struct {
    _Alignas(64) _Atomic uint64_t word;
    _Atomic int64_t done;               /* grains finished */
    _Atomic(pyconv_range_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t n, grain, tasks;
    _Atomic int max_helpers;
    _Atomic unsigned fp_env;            /* the caller's floating-point control word */
    _Atomic int busy;                   /* owned by a caller */
    range_counter range_next[MAX_PARTICIPANTS];      /* per participant's range */
} job_slot;

static job_slot jobs[MAX_JOBS];
static _Alignas(64) _Atomic uint64_t epoch;       /* bumped by every publish */
static _Atomic int sleepers;
static _Atomic int workers_started;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;   /* sleeping, starting */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

const char *pyconv_parallel_backend(void) { return "pool"; }
int pyconv_parallel_workers(void) { return atomic_load(&workers_started); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Grains of `parts` ranges over n items, grains of `grain` items within each range: n % parts
 * ranges of n / parts + 1 items, the others of n / parts. */
static inline int64_t count_tasks(int64_t n, int64_t grain, int parts)
{
    const int64_t q = n / parts, longer = n % parts;
    return longer * ((q + grain) / grain) + (parts - longer) * ((q + grain - 1) / grain);
}

/* Runs the job's grains (run_ranges) and adds those run to `done` once, on the way out
 * (the caller waits for all of them; the job's generation cannot change before). */
static void run_tasks(job_slot *s, uint64_t gen, pyconv_range_fn fn, void *ctx, int64_t n,
                      int64_t grain, int parts, int slot)
{
    const int64_t ran = run_ranges(s->range_next, gen, fn, ctx, n, grain, parts, slot);
    if (ran > 0) atomic_fetch_add_explicit(&s->done, ran, memory_order_release);
}

/* Joins one job with work left and a free helper place; false when there is none. */
static bool help_one(void)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        job_slot *s = &jobs[i];
        uint64_t word = atomic_load(&s->word);
        for (;;) {
            /* Fields first, then the compare-and-swap validates them (same generation). */
            const int64_t tasks = atomic_load(&s->tasks);
            const int max_helpers = atomic_load(&s->max_helpers);
            const uint64_t joined = (word >> JOINED_SHIFT) & JOINED_MASK;
            if (atomic_load_explicit(&s->done, memory_order_relaxed) >= tasks ||
                (word & NEXT_MASK) == NEXT_MASK || (int)joined >= max_helpers)
                break;
            pyconv_range_fn fn = atomic_load(&s->fn);
            void *ctx = atomic_load(&s->ctx);
            const int64_t n = atomic_load(&s->n);
            const int64_t grain = atomic_load(&s->grain);
            const unsigned env = atomic_load(&s->fp_env);
            const uint64_t joined_word = word + ((uint64_t)1 << JOINED_SHIFT);
            if (atomic_compare_exchange_weak(&s->word, &word, joined_word)) {
                const unsigned own = fp_enter(env);
                run_tasks(s, word >> GEN_SHIFT, fn, ctx, n, grain, max_helpers + 1,
                          (int)joined + 1);
                pyconv_fp_restore(own);
                return true;
            }
        }
    }
    return false;
}

static void *worker_main(void *arg)
{
    (void)arg;
    for (;;) {
        uint64_t seen = atomic_load(&epoch);
        if (help_one()) continue;
        const uint64_t start = now_ns();
        bool published = false;
        for (unsigned polls = 1;; polls++) {
            if (atomic_load_explicit(&epoch, memory_order_relaxed) != seen) {
                published = true;
                break;
            }
            if (polls % 64 == 0) {
                const uint64_t waited = now_ns() - start;
                if (waited > SPIN_YIELD_NS) break;
                if (waited > SPIN_PAUSE_NS) sched_yield();
            }
            CPU_RELAX();
        }
        if (published) continue;
        pthread_mutex_lock(&lock);
        atomic_fetch_add(&sleepers, 1);
        while (atomic_load(&epoch) == seen) pthread_cond_wait(&wake, &lock);
        atomic_fetch_sub(&sleepers, 1);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* Starts workers until there are `want` (fewer when the system refuses threads: the
 * callers then simply do more of the work themselves). */
static void ensure_workers(int want)
{
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    if (atomic_load(&workers_started) >= want) return;
    pthread_mutex_lock(&lock);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, WORKER_STACK_BYTES);
    while (atomic_load(&workers_started) < want) {
        pthread_t tid;
        if (pthread_create(&tid, &attr, worker_main, NULL) != 0) break;
        atomic_fetch_add(&workers_started, 1);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&lock);
}

/* In a forked child only the forking thread exists: forget the parent's workers and
 * jobs, and start new workers on first use. */
static void after_fork_in_child(void)
{
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    atomic_store(&workers_started, 0);
    atomic_store(&sleepers, 0);
    for (int i = 0; i < MAX_JOBS; i++) {
        atomic_store(&jobs[i].busy, 0);
        atomic_store(&jobs[i].tasks, 0);
    }
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static void install_fork_handler(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

static job_slot *acquire_slot(void)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        int free_ = 0;
        if (atomic_load_explicit(&jobs[i].busy, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&jobs[i].busy, &free_, 1))
            return &jobs[i];
    }
    return NULL;
}

void pyconv_parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    nthreads = loop_participants(nthreads, n, &grain);
    job_slot *s = nthreads > 1 ? acquire_slot() : NULL;
    if (s == NULL) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_once(&fork_handler_once, install_fork_handler);
    ensure_workers(nthreads - 1);

    /* A new generation, closed (no place, no task) while the fields change: a worker
     * that read the previous job's word then fails its compare-and-swap, whichever
     * job's fields it saw. The stores are sequentially consistent to keep that order. */
    const int64_t tasks = count_tasks(n, grain, nthreads);
    const uint64_t gen = ((atomic_load(&s->word) >> GEN_SHIFT) + 1) & 0xffffffULL;
    const uint64_t word = gen << GEN_SHIFT;
    atomic_store(&s->word, word | (JOINED_MASK << JOINED_SHIFT) | NEXT_MASK);
    atomic_store(&s->fn, fn);
    atomic_store(&s->ctx, ctx);
    atomic_store(&s->n, n);
    atomic_store(&s->grain, grain);
    atomic_store(&s->tasks, tasks);
    atomic_store(&s->max_helpers, nthreads - 1);
    atomic_store(&s->fp_env, fp_get());
    atomic_store(&s->done, 0);
    for (int r = 0; r < nthreads; r++)
        atomic_store(&s->range_next[r].next, gen << GEN_SHIFT);
    atomic_store(&s->word, word);             /* opens the job */
    atomic_fetch_add(&epoch, 1);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&lock);
        if (nthreads - 1 >= atomic_load(&sleepers)) pthread_cond_broadcast(&wake);
        else for (int i = 0; i < nthreads - 1; i++) pthread_cond_signal(&wake);
        pthread_mutex_unlock(&lock);
    }

    run_tasks(s, gen, fn, ctx, n, grain, nthreads, 0);

    /* Every task is claimed; wait only for those still running on a worker. */
    const uint64_t start = now_ns();
    for (unsigned polls = 1;
         atomic_load_explicit(&s->done, memory_order_acquire) < tasks; polls++) {
        if (polls % 64 == 0 && now_ns() - start > SPIN_PAUSE_NS) sched_yield();
        else CPU_RELAX();
    }
    atomic_store(&s->busy, 0);
}

#endif
