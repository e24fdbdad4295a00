/* A small persistent thread pool for the kernels' task loops.
 *
 * Why not an OpenMP parallel region: its join waits for every thread of the team, including one
 * the OS has not scheduled yet. On a machine shared with other busy processes a woken worker can
 * sit in the run queue for milliseconds, so a 20 us GEMV took ~20 ms with 2 OpenMP threads
 * (measured: 0.8 vs 160 GMAC/s single-threaded at 1x4096x4096 under load 10 on 2 cores).
 *
 * Here the caller works through the tasks itself (claimed with an atomic counter) and, at the
 * end, waits only for workers that joined the job and may hold a task; a worker that wakes after
 * the job closed does nothing. So the worst case is single-threaded speed, never a scheduler
 * round trip per call. Workers spin briefly before sleeping so back-to-back calls stay cheap.
 */
#define _GNU_SOURCE
#include "core.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ROUNDS 4000 /* pause-polling rounds (tens of microseconds) before sleeping */

typedef struct {
    pthread_mutex_t lock;      /* guards the fields below except `next` */
    pthread_cond_t wake;       /* a new job was published */
    pthread_cond_t idle;       /* refs dropped to 0 */
    pthread_mutex_t job_lock;  /* one job at a time; a busy pool runs the job inline */
    bn_task_fn fn;
    void *ctx;
    long ntasks;
    int width;                 /* threads allowed on this job (caller included) */
    int active;                /* workers may still join */
    _Atomic int refs;          /* workers inside the job (changed under lock) */
    _Atomic unsigned long gen; /* job generation, polled by spinning workers */
    _Atomic long next;         /* next unclaimed task */
    int started;               /* workers created so far */
} pool_t;

static pool_t g_pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
    .job_lock = PTHREAD_MUTEX_INITIALIZER,
};

static int g_threads = 0; /* 0: not chosen yet */

static inline void cpu_relax(void) {
#if BN_X86
    __builtin_ia32_pause();
#endif
}

static void run_tasks(bn_task_fn fn, void *ctx, long ntasks, int worker) {
    for (;;) {
        const long t = atomic_fetch_add_explicit(&g_pool.next, 1, memory_order_relaxed);
        if (t >= ntasks) return;
        fn(ctx, t, worker);
    }
}

static void *worker_main(void *arg) {
    const int id = (int)(intptr_t)arg;
    unsigned long seen = atomic_load(&g_pool.gen);
    for (;;) {
        for (int spin = 0; spin < SPIN_ROUNDS && atomic_load_explicit(&g_pool.gen, memory_order_relaxed) == seen; ++spin)
            cpu_relax();
        pthread_mutex_lock(&g_pool.lock);
        while (atomic_load(&g_pool.gen) == seen) pthread_cond_wait(&g_pool.wake, &g_pool.lock);
        seen = atomic_load(&g_pool.gen);
        const int join = g_pool.active && id < g_pool.width;
        bn_task_fn fn = g_pool.fn;
        void *ctx = g_pool.ctx;
        const long ntasks = g_pool.ntasks;
        if (join) atomic_fetch_add(&g_pool.refs, 1);
        pthread_mutex_unlock(&g_pool.lock);
        if (!join) continue;
        run_tasks(fn, ctx, ntasks, id);
        pthread_mutex_lock(&g_pool.lock);
        if (atomic_fetch_sub(&g_pool.refs, 1) == 1) pthread_cond_signal(&g_pool.idle);
        pthread_mutex_unlock(&g_pool.lock);
    }
    return NULL;
}

/* After fork() only the forking thread exists: forget the workers, reset the locks. */
static void after_fork_child(void) {
    pthread_mutex_init(&g_pool.lock, NULL);
    pthread_mutex_init(&g_pool.job_lock, NULL);
    pthread_cond_init(&g_pool.wake, NULL);
    pthread_cond_init(&g_pool.idle, NULL);
    g_pool.started = 0;
    atomic_store(&g_pool.refs, 0);
    g_pool.active = 0;
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
    if (threads <= 1 || pthread_mutex_trylock(&g_pool.job_lock) != 0) {
        for (long t = 0; t < ntasks; ++t) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&g_pool.lock);
    ensure_workers(threads - 1);
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.ntasks = ntasks;
    g_pool.width = threads;
    g_pool.active = 1;
    atomic_store(&g_pool.refs, 0);
    atomic_store(&g_pool.next, 0);
    atomic_fetch_add(&g_pool.gen, 1);
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.lock);

    run_tasks(fn, ctx, ntasks, 0);

    pthread_mutex_lock(&g_pool.lock);
    g_pool.active = 0; /* late workers stay out */
    pthread_mutex_unlock(&g_pool.lock);
    /* the workers inside are finishing their last tasks: poll briefly, then sleep */
    for (int spin = 0; spin < SPIN_ROUNDS && atomic_load(&g_pool.refs) > 0; ++spin) cpu_relax();
    if (atomic_load(&g_pool.refs) > 0) {
        pthread_mutex_lock(&g_pool.lock);
        while (atomic_load(&g_pool.refs) > 0) pthread_cond_wait(&g_pool.idle, &g_pool.lock);
        pthread_mutex_unlock(&g_pool.lock);
    }
    pthread_mutex_unlock(&g_pool.job_lock);
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
