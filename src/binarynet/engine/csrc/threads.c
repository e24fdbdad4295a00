/* A small persistent thread pool for the kernels' task loops.
 *
 * Why not an OpenMP parallel region: its join waits for every thread of the team, including one
 * the OS has not scheduled yet. On a machine shared with other busy processes a woken worker can
 * sit in the run queue for milliseconds, so a 20 us GEMV took ~20 ms with 2 OpenMP threads
 * (measured: 0.8 vs 160 GMAC/s single-threaded at 1x4096x4096 under load 10 on 2 cores).
 *
 * Here the caller works through the tasks itself (claimed with a tagged atomic counter) and, at
 * the end, waits only for tasks another thread has claimed and is still running; a worker that
 * wakes late, or has nothing left to claim, is never waited for, and the caller takes no lock a
 * worker could hold unless a worker sleeps. So the worst case is single-threaded speed plus one
 * task, never a scheduler round trip per call. Workers spin briefly before sleeping so
 * back-to-back calls stay cheap. Small jobs never reach the pool (bn_threads_for in core.h).
 */
#define _GNU_SOURCE
#include "core.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ROUNDS 4000 /* pause-polling rounds (tens of microseconds) before sleeping */

/* Tasks are claimed from `claim`: job generation in the high 32 bits, next task index in the
 * low 32. A claim is a compare-and-swap that only succeeds for the current job and an index
 * below its task count, so a worker holding a stale view of an old job can never run anything:
 * the caller waits only for claimed tasks to finish, never for workers to arrive or leave.
 * Workers read a job's fields only after seeing its claims open (worker_main). */
#define CLAIM_GEN(v) ((v) >> 32)
#define CLAIM_INDEX(v) ((v) & 0xffffffffu)
#define CLAIM_CLOSED 0xffffffffu /* index that no job reaches: claims fail while fields change */

typedef struct {
    pthread_mutex_t lock;         /* only for sleeping and waking */
    pthread_cond_t wake;          /* a new job was published */
    pthread_cond_t finished;      /* the last claimed task of the job finished */
    pthread_mutex_t job_lock;     /* one job at a time; a busy pool runs the job inline */
    _Atomic(bn_task_fn) fn;       /* job fields, valid for the generation in `claim` */
    _Atomic(void *) ctx;
    _Atomic long ntasks;
    _Atomic int width;            /* threads allowed on this job (caller included) */
    _Atomic uint64_t claim;       /* generation << 32 | next task index */
    _Atomic long done;            /* tasks of the current job finished */
    _Atomic int sleepers;         /* workers blocked on `wake` */
    _Atomic int caller_sleeping;  /* the caller is blocked on `finished` */
    int started;                  /* workers created so far (caller side only) */
} pool_t;

static pool_t g_pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .finished = PTHREAD_COND_INITIALIZER,
    .job_lock = PTHREAD_MUTEX_INITIALIZER,
};

static int g_threads = 0; /* 0: not chosen yet */

static inline void cpu_relax(void) {
#if BN_X86
    __builtin_ia32_pause();
#endif
}

/* Claims the next task of job `gen` (< ntasks); -1 when the job is finished or replaced. */
static long claim_task(uint64_t gen, long ntasks) {
    uint64_t v = atomic_load_explicit(&g_pool.claim, memory_order_acquire);
    for (;;) {
        if (CLAIM_GEN(v) != gen || (long)CLAIM_INDEX(v) >= ntasks) return -1;
        if (atomic_compare_exchange_weak_explicit(&g_pool.claim, &v, v + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return (long)CLAIM_INDEX(v);
    }
}

/* Runs claimed tasks of job `gen` until none is left; returns after the last one it ran. */
static void run_tasks(uint64_t gen, bn_task_fn fn, void *ctx, long ntasks, int worker) {
    for (long t; (t = claim_task(gen, ntasks)) >= 0;) {
        fn(ctx, t, worker);
        if (atomic_fetch_add(&g_pool.done, 1) + 1 == ntasks && /* seq_cst: pairs with the caller */
            atomic_load(&g_pool.caller_sleeping)) {
            pthread_mutex_lock(&g_pool.lock);
            pthread_cond_signal(&g_pool.finished);
            pthread_mutex_unlock(&g_pool.lock);
        }
    }
}

static void *worker_main(void *arg) {
    const int id = (int)(intptr_t)arg;
    uint64_t seen = 0; /* generation last looked at */
    for (;;) {
        uint64_t gen = CLAIM_GEN(atomic_load(&g_pool.claim));
        for (int spin = 0; spin < SPIN_ROUNDS && gen == seen; ++spin) {
            cpu_relax();
            gen = CLAIM_GEN(atomic_load_explicit(&g_pool.claim, memory_order_relaxed));
        }
        if (gen == seen) {
            pthread_mutex_lock(&g_pool.lock);
            atomic_fetch_add(&g_pool.sleepers, 1);
            while ((gen = CLAIM_GEN(atomic_load(&g_pool.claim))) == seen)
                pthread_cond_wait(&g_pool.wake, &g_pool.lock);
            atomic_fetch_sub(&g_pool.sleepers, 1);
            pthread_mutex_unlock(&g_pool.lock);
        }
        seen = gen;
        /* The caller bumps the generation with the claims closed, writes the job's fields, then
         * opens the claims. A worker that saw the new generation while closed must not read the
         * fields yet (they may still be the previous job's, and its first claim would succeed
         * once the job opens): wait for the open claim word, which publishes them. */
        uint64_t v;
        while (CLAIM_GEN(v = atomic_load(&g_pool.claim)) == gen && CLAIM_INDEX(v) == CLAIM_CLOSED)
            cpu_relax();
        if (CLAIM_GEN(v) != gen) continue; /* already replaced: look at the newer job */
        /* the fields may already belong to a later job: then every claim for `gen` fails */
        bn_task_fn fn = atomic_load_explicit(&g_pool.fn, memory_order_acquire);
        void *ctx = atomic_load_explicit(&g_pool.ctx, memory_order_acquire);
        const long ntasks = atomic_load_explicit(&g_pool.ntasks, memory_order_acquire);
        if (id < atomic_load_explicit(&g_pool.width, memory_order_acquire))
            run_tasks(gen, fn, ctx, ntasks, id);
    }
    return NULL;
}

/* After fork() only the forking thread exists: forget the workers, reset the locks. */
static void after_fork_child(void) {
    pthread_mutex_init(&g_pool.lock, NULL);
    pthread_mutex_init(&g_pool.job_lock, NULL);
    pthread_cond_init(&g_pool.wake, NULL);
    pthread_cond_init(&g_pool.finished, NULL);
    g_pool.started = 0;
    atomic_store(&g_pool.sleepers, 0);
    atomic_store(&g_pool.caller_sleeping, 0);
}

static void ensure_workers(int count) {
    static int atfork_done = 0;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_done = 1;
    }
    while (g_pool.started < count) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int ok = pthread_create(&thread, &attr, worker_main,
                                      (void *)(intptr_t)(g_pool.started + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break; /* run with the workers we have */
        ++g_pool.started;
    }
}

void bn_parallel_for(long ntasks, int threads, bn_task_fn fn, void *ctx) {
    if (threads > ntasks) threads = (int)ntasks;
    if (threads <= 1 || ntasks >= (long)CLAIM_CLOSED ||
        pthread_mutex_trylock(&g_pool.job_lock) != 0) {
        for (long t = 0; t < ntasks; ++t) fn(ctx, t, 0);
        return;
    }
    ensure_workers(threads - 1);
    /* close the old generation's claims, set the fields, then open the new one */
    const uint64_t gen = CLAIM_GEN(atomic_load(&g_pool.claim)) + 1;
    atomic_store(&g_pool.claim, gen << 32 | CLAIM_CLOSED);
    atomic_store_explicit(&g_pool.fn, fn, memory_order_release);
    atomic_store_explicit(&g_pool.ctx, ctx, memory_order_release);
    atomic_store_explicit(&g_pool.ntasks, ntasks, memory_order_release);
    atomic_store_explicit(&g_pool.width, threads, memory_order_release);
    atomic_store(&g_pool.done, 0);
    atomic_store(&g_pool.claim, gen << 32); /* seq_cst: publishes the fields above */
    if (atomic_load(&g_pool.sleepers) > 0) {
        pthread_mutex_lock(&g_pool.lock);
        pthread_cond_broadcast(&g_pool.wake);
        pthread_mutex_unlock(&g_pool.lock);
    }

    run_tasks(gen, fn, ctx, ntasks, 0);

    /* every task is claimed: wait for the ones still running elsewhere (poll, then sleep) */
    for (int spin = 0; spin < SPIN_ROUNDS && atomic_load(&g_pool.done) < ntasks; ++spin)
        cpu_relax();
    if (atomic_load(&g_pool.done) < ntasks) {
        pthread_mutex_lock(&g_pool.lock);
        atomic_store(&g_pool.caller_sleeping, 1);
        while (atomic_load(&g_pool.done) < ntasks) pthread_cond_wait(&g_pool.finished, &g_pool.lock);
        atomic_store(&g_pool.caller_sleeping, 0);
        pthread_mutex_unlock(&g_pool.lock);
    }
    pthread_mutex_unlock(&g_pool.job_lock);
}

/* ---- self-test of the pool's protocol (tests/test_engine_kernels.py) ----------------------- */

typedef struct {
    _Atomic int runs[BN_SELFTEST_MAX_TASKS]; /* times each task ran */
    _Atomic long foreign;                     /* task indices outside this job's range */
    long ntasks;
} selftest_job;

static void selftest_task(void *vctx, long t, int worker) {
    selftest_job *job = (selftest_job *)vctx;
    (void)worker;
    if (t < 0 || t >= job->ntasks) atomic_fetch_add(&job->foreign, 1);
    else atomic_fetch_add(&job->runs[t], 1);
}

long bn_pool_selftest(long jobs, int threads) {
    /* Back-to-back jobs of alternating size, each with its own context, as the kernels issue
     * them; a worker that ran a task with a stale job's function or context leaves a task of the
     * current job unrun (or one of the previous job run twice). Returns the number of bad jobs. */
    selftest_job pair[2];
    long bad = 0;
    for (long j = 0; j < jobs; ++j) {
        selftest_job *job = &pair[j & 1];
        job->ntasks = (j & 1) ? 3 : BN_SELFTEST_MAX_TASKS;
        for (long t = 0; t < BN_SELFTEST_MAX_TASKS; ++t) atomic_store(&job->runs[t], 0);
        atomic_store(&job->foreign, 0);
        bn_parallel_for(job->ntasks, threads, selftest_task, job);
        int ok = atomic_load(&job->foreign) == 0;
        for (long t = 0; t < job->ntasks; ++t) ok &= atomic_load(&job->runs[t]) == 1;
        if (j > 0) { /* the previous job must not have been touched since it was checked */
            const selftest_job *prev = &pair[(j - 1) & 1];
            for (long t = 0; t < prev->ntasks; ++t) ok &= atomic_load(&prev->runs[t]) == 1;
        }
        bad += !ok;
    }
    return bad;
}

static int default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int bn_get_num_threads(void) {
    if (g_threads <= 0) {
        const int n = default_threads();
        g_threads = n > BN_MAX_THREADS ? BN_MAX_THREADS : n;
    }
    return g_threads;
}

void bn_set_num_threads(int n) { g_threads = n < 1 ? 1 : n > BN_MAX_THREADS ? BN_MAX_THREADS : n; }

void bn_scratch_init(bn_scratch *s, size_t bytes) {
    for (int i = 0; i < BN_MAX_THREADS; ++i) s->slot[i] = NULL;
    s->bytes = bytes;
    s->failed = 0;
}

void *bn_scratch_get(bn_scratch *s, int worker) {
    if (!s->slot[worker]) {
        s->slot[worker] = malloc(s->bytes ? s->bytes : 1);
        if (!s->slot[worker]) __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
    }
    return s->slot[worker];
}

void bn_scratch_free(bn_scratch *s) {
    for (int i = 0; i < BN_MAX_THREADS; ++i) free(s->slot[i]);
}
