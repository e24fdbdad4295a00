/* Blocked, multi-threaded driver of the popcount tiles, and the dense binary GEMMs.
 *
 * The output is cut into tasks of (block of A rows) x (block of W rows); the pool's threads take
 * tasks dynamically, so M = 1 is parallel over N and large M over both. Inside a task the W
 * tile stays in L1 while the task's A block (about 16 KiB) is swept. W blocks are multiples of
 * 64 rows, so a task owns whole words of a packed (thresholded) output.
 */
#include "core.h"

#include <string.h>

#define A_BLOCK_BYTES (16u * 1024u)
#define W_BLOCK_BYTES (256u * 1024u)
#define MAX_TILE 64 /* mr * nr and thin_nr of every backend fit */

void bn_gemm_block(const bn_tile_kernels *kr, const uint64_t *a, size_t lda, size_t mb,
                   const uint64_t *w, size_t ldw, size_t n0, size_t n1, size_t kw,
                   bn_epilogue_fn epi, void *ctx) {
    uint32_t cnt[MAX_TILE];
    const uint64_t *ap[8];
    const uint64_t *wp[16];
    const size_t mr = (size_t)kr->mr, nr = (size_t)kr->nr, tnr = (size_t)kr->thin_nr;
    const size_t m_full = mb - mb % mr; /* rows done with wide tiles; the rest with thin ones */

    for (size_t j = n0; j < n1 && m_full > 0; j += nr) {
        const size_t nv = n1 - j < nr ? n1 - j : nr;
        for (size_t q = 0; q < nr; ++q) wp[q] = w + (j + (q < nv ? q : nv - 1)) * ldw;
        for (size_t i = 0; i < m_full; i += mr) {
            for (size_t p = 0; p < mr; ++p) ap[p] = a + (i + p) * lda;
            kr->tile(ap, wp, kw, cnt);
            epi(ctx, i, (int)mr, j, (int)nv, cnt, (int)nr);
        }
    }
    for (size_t i = m_full; i < mb; ++i) {
        ap[0] = a + i * lda;
        for (size_t j = n0; j < n1; j += tnr) {
            const size_t nv = n1 - j < tnr ? n1 - j : tnr;
            for (size_t q = 0; q < tnr; ++q) wp[q] = w + (j + (q < nv ? q : nv - 1)) * ldw;
            kr->thin(ap, wp, kw, cnt);
            epi(ctx, i, 1, j, (int)nv, cnt, (int)tnr);
        }
    }
}

size_t bn_block_m(size_t kw) {
    size_t rows = A_BLOCK_BYTES / (kw * 8);
    rows = rows < 8 ? 8 : rows > 256 ? 256 : rows;
    return rows & ~(size_t)7; /* a multiple of 8 (the bit-plane layer keeps 8 planes together) */
}

size_t bn_block_n(size_t kw, size_t m, size_t n) {
    size_t rows = W_BLOCK_BYTES / (kw * 8);
    rows = rows < 64 ? 64 : (rows / 64) * 64;
    /* few A blocks: split N finer so every thread gets several tasks */
    const size_t m_blocks = (m + bn_block_m(kw) - 1) / bn_block_m(kw);
    const size_t want = 4 * (size_t)bn_get_num_threads();
    while (rows > 64 && m_blocks * ((n + rows - 1) / rows) < want) rows -= 64;
    return rows;
}

/* ---- dense: int32 dot products ----------------------------------------------------------- */
typedef struct {
    int32_t *out; /* row 0 of the task's A block */
    size_t ldo;
    int64_t k;
} dot_ctx;

static void epi_dot(void *vctx, size_t m0, int mr, size_t n0, int nr, const uint32_t *cnt,
                    int ldc) {
    const dot_ctx *c = (const dot_ctx *)vctx;
    for (int i = 0; i < mr; ++i) {
        int32_t *row = c->out + (m0 + (size_t)i) * c->ldo + n0;
        for (int j = 0; j < nr; ++j) row[j] = (int32_t)(c->k - 2 * (int64_t)cnt[i * ldc + j]);
    }
}

/* ---- dense: thresholded, packed ---------------------------------------------------------- */
typedef struct {
    uint64_t *out; /* row 0 of the task's A block; zeroed by the caller */
    size_t ldo;    /* words per output row */
    int64_t k;
    const int32_t *thresh;
    const uint8_t *flip;
} bits_ctx;

static void epi_bits(void *vctx, size_t m0, int mr, size_t n0, int nr, const uint32_t *cnt,
                     int ldc) {
    const bits_ctx *c = (const bits_ctx *)vctx;
    for (int i = 0; i < mr; ++i) {
        uint64_t *row = c->out + (m0 + (size_t)i) * c->ldo;
        uint64_t word = 0;
        for (int j = 0; j < nr; ++j) {
            const size_t n = n0 + (size_t)j;
            const int64_t dot = c->k - 2 * (int64_t)cnt[i * ldc + j];
            word |= bn_threshold_bit(dot, c->thresh[n], c->flip[n]) << (n & 63);
        }
        /* a tile never straddles a word: nr divides 64 and tiles start at multiples of nr */
        row[n0 >> 6] |= word;
    }
}

/* Runs every (A block, W block) task; `make_ctx` fills the epilogue context of a task. */
typedef void (*task_ctx_fn)(const void *job, size_t m0, void *ctx);

typedef struct {
    const bn_tile_kernels *kr;
    const uint64_t *a, *w;
    size_t m, n, kw, bm, bn, tm;
    bn_epilogue_fn epi;
    task_ctx_fn make_ctx;
    const void *job;
} dense_plan;

static void dense_task(void *vplan, long t, int worker) {
    const dense_plan *p = (const dense_plan *)vplan;
    (void)worker;
    const size_t in = (size_t)t / p->tm, im = (size_t)t % p->tm;
    const size_t m0 = im * p->bm, mb = p->m - m0 < p->bm ? p->m - m0 : p->bm;
    const size_t n0 = in * p->bn, n1 = n0 + p->bn < p->n ? n0 + p->bn : p->n;
    union {
        dot_ctx dot;
        bits_ctx bits;
    } ctx;
    p->make_ctx(p->job, m0, &ctx);
    bn_gemm_block(p->kr, p->a + m0 * p->kw, p->kw, mb, p->w, p->kw, n0, n1, p->kw, p->epi, &ctx);
}

static void run_dense(const uint64_t *a, const uint64_t *w, size_t m, size_t n, size_t kw,
                      bn_epilogue_fn epi, task_ctx_fn make_ctx, const void *job) {
    dense_plan p = {bn_current_tiles(), a, w, m, n, kw, bn_block_m(kw), bn_block_n(kw, m, n), 0,
                    epi, make_ctx, job};
    p.tm = (m + p.bm - 1) / p.bm;
    const long tasks = (long)(p.tm * ((n + p.bn - 1) / p.bn));
    bn_parallel_for(tasks, bn_threads_for((double)m * (double)n * (double)kw), dense_task, &p);
}

typedef struct {
    int32_t *out;
    size_t n;
    int64_t k;
} dot_job;

static void make_dot_ctx(const void *vjob, size_t m0, void *vctx) {
    const dot_job *j = (const dot_job *)vjob;
    dot_ctx *c = (dot_ctx *)vctx;
    c->out = j->out + m0 * j->n;
    c->ldo = j->n;
    c->k = j->k;
}

void bn_bgemm(const uint64_t *a, const uint64_t *w, size_t m, size_t n, size_t k, int32_t *out) {
    dot_job job = {out, n, (int64_t)k};
    run_dense(a, w, m, n, bn_words(k), epi_dot, make_dot_ctx, &job);
}

typedef struct {
    uint64_t *out;
    size_t ldo;
    int64_t k;
    const int32_t *thresh;
    const uint8_t *flip;
} bits_job;

static void make_bits_ctx(const void *vjob, size_t m0, void *vctx) {
    const bits_job *j = (const bits_job *)vjob;
    bits_ctx *c = (bits_ctx *)vctx;
    c->out = j->out + m0 * j->ldo;
    c->ldo = j->ldo;
    c->k = j->k;
    c->thresh = j->thresh;
    c->flip = j->flip;
}

void bn_bgemm_threshold(const uint64_t *a, const uint64_t *w, size_t m, size_t n, size_t k,
                        const int32_t *thresh, const uint8_t *flip, uint64_t *out) {
    const size_t ldo = bn_words(n);
    memset(out, 0, m * ldo * sizeof(uint64_t));
    bits_job job = {out, ldo, (int64_t)k, thresh, flip};
    run_dense(a, w, m, n, bn_words(k), epi_bits, make_bits_ctx, &job);
}

typedef struct {
    const int32_t *x;
    size_t rows, n;
    const int32_t *thresh;
    const uint8_t *flip;
    uint64_t *out;
} threshold_job;

#define THRESHOLD_ROWS 256 /* rows per task */

static void threshold_task(void *vjob, long t, int worker) {
    const threshold_job *j = (const threshold_job *)vjob;
    (void)worker;
    const size_t ow = bn_words(j->n), r0 = (size_t)t * THRESHOLD_ROWS;
    const size_t r1 = r0 + THRESHOLD_ROWS < j->rows ? r0 + THRESHOLD_ROWS : j->rows;
    for (size_t r = r0; r < r1; ++r) {
        const int32_t *src = j->x + r * j->n;
        uint64_t *dst = j->out + r * ow;
        for (size_t q = 0; q < ow; ++q) {
            const size_t end = (q + 1) * 64 < j->n ? (q + 1) * 64 : j->n;
            uint64_t word = 0;
            for (size_t c = q * 64; c < end; ++c)
                word |= bn_threshold_bit(src[c], j->thresh[c], j->flip[c]) << (c & 63);
            dst[q] = word;
        }
    }
}

void bn_threshold_pack(const int32_t *x, size_t rows, size_t n, const int32_t *thresh,
                       const uint8_t *flip, uint64_t *out) {
    threshold_job job = {x, rows, n, thresh, flip, out};
    const long tasks = (long)((rows + THRESHOLD_ROWS - 1) / THRESHOLD_ROWS);
    bn_parallel_for(tasks, bn_threads_for((double)rows * (double)n / 8), threshold_task, &job);
}
