/* Blocked, multi-threaded driver of the popcount tiles, and the dense binary GEMMs.
 *
 * The output is cut into tasks of (block of A rows) x (block of W rows); the pool's threads take
 * tasks dynamically, so M = 1 is parallel over N and large M over both. Inside a task the W
 * tile stays in L1 while the task's A block (about 16 KiB) is swept. W blocks are multiples of
 * 64 rows, so a task owns whole words of a packed (thresholded) output.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#define A_BLOCK_BYTES (16u * 1024u)
#define W_BLOCK_BYTES (256u * 1024u)
#define MAX_TILE 64 /* mr * nr and thin_nr of every backend fit */

/* GEMV streams W once, so it runs at memory speed: W rows are read 8 at a time, which the
 * hardware prefetchers do not follow well; fetch the rows a few tiles ahead explicitly. Two
 * tiles: a 1 x 4096 x 4096 GEMV with W in L3 took 57 us (4 tiles: 62 us), with W beyond L3
 * about the same as 4 tiles (no prefetch: 1.7x slower). */
#define THIN_PREFETCH_TILES 2

static inline void prefetch_rows(const uint64_t *w, size_t ldw, size_t kw, size_t first,
                                 size_t count, size_t end) {
    for (size_t r = first; r < first + count && r < end; ++r)
        for (size_t t = 0; t < kw; t += 8) __builtin_prefetch(w + r * ldw + t, 0, 3);
}

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
            if (i == m_full) prefetch_rows(w, ldw, kw, j + THIN_PREFETCH_TILES * tnr, tnr, n1);
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
    return bn_block_n_split(kw, (m + bn_block_m(kw) - 1) / bn_block_m(kw), n);
}

size_t bn_block_n_split(size_t kw, size_t m_blocks, size_t n) {
    size_t rows = W_BLOCK_BYTES / (kw * 8);
    rows = rows < 64 ? 64 : (rows / 64) * 64;
    /* few A blocks: split N finer so every thread gets several tasks */
    const size_t want = 4 * (size_t)bn_get_num_threads();
    while (rows > 64 && m_blocks * ((n + rows - 1) / rows) < want) rows -= 64;
    /* blocks of equal size (in whole words): 512 outputs in 448 + 64 left a thread idle */
    const size_t blocks = (n + rows - 1) / rows;
    if (blocks < 2) return rows;
    const size_t even = ((n + blocks - 1) / blocks + 63) / 64 * 64;
    return even < rows ? even : rows;
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

/* ---- dense: output transform (transform.c) ------------------------------------------------ */
typedef struct {
    const bn_transform *t;
    size_t row0; /* output row of the task's block row 0 */
    int64_t k;
} transform_ctx;

static void epi_transform(void *vctx, size_t m0, int mr, size_t n0, int nr, const uint32_t *cnt,
                          int ldc) {
    const transform_ctx *c = (const transform_ctx *)vctx;
    float y[MAX_TILE];
    for (int i = 0; i < mr; ++i)
        for (int j = 0; j < nr; ++j)
            y[i * nr + j] = (float)(int32_t)(c->k - 2 * (int64_t)cnt[i * ldc + j]);
    c->t->chunk(c->t, c->row0 + m0, (size_t)mr, n0, (size_t)nr, y, (size_t)nr);
}

/* ---- panel path helpers ------------------------------------------------------------------ */
#define PANEL_MIN_ROWS 32 /* fewer A rows: repacking W costs more than the panel path saves */

int bn_use_panels(const bn_tile_kernels *kr, size_t m, size_t kw) {
    /* kw < 2^24 keeps k - 2 * count inside the kernels' int32 lanes */
    return kr->panel != NULL && m >= PANEL_MIN_ROWS && kw < ((size_t)1 << 24);
}

size_t bn_panel_words(size_t n, size_t kw) { return (n + 15) / 16 * 16 * kw; }

typedef struct {
    const uint64_t *w;
    size_t n, kw;
    uint64_t *panels;
} repack_job;

#define REPACK_PANELS 16 /* panels per task */

void bn_repack_panel_range(const uint64_t *w, size_t n, size_t kw, uint64_t *panels, size_t p0,
                           size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
        uint64_t *dst = panels + p * kw * 8;
        for (size_t lane = 0; lane < 8; ++lane) {
            const size_t row = 8 * p + lane;
            if (row >= n) {
                for (size_t q = 0; q < kw; ++q) dst[q * 8 + lane] = 0;
                continue;
            }
            const uint64_t *src = w + row * kw;
            for (size_t q = 0; q < kw; ++q) dst[q * 8 + lane] = src[q];
        }
    }
}

static void repack_task(void *vjob, long t, int worker) {
    const repack_job *j = (const repack_job *)vjob;
    const size_t npanels = (j->n + 15) / 16 * 2;
    const size_t p1 = ((size_t)t + 1) * REPACK_PANELS < npanels ? ((size_t)t + 1) * REPACK_PANELS : npanels;
    (void)worker;
    bn_repack_panel_range(j->w, j->n, j->kw, j->panels, (size_t)t * REPACK_PANELS, p1);
}

void bn_repack_panels(const uint64_t *w, size_t n, size_t kw, uint64_t *panels) {
    repack_job job = {w, n, kw, panels};
    const size_t npanels = (n + 15) / 16 * 2;
    bn_parallel_for((long)((npanels + REPACK_PANELS - 1) / REPACK_PANELS),
                    bn_threads_for((double)n * (double)kw), repack_task, &job);
}

void bn_pack_flags(const uint8_t *flip, size_t n, uint64_t *bits) {
    for (size_t q = 0; q < bn_words(n); ++q) bits[q] = 0;
    for (size_t j = 0; j < n; ++j) bits[j >> 6] |= (uint64_t)(flip[j] != 0) << (j & 63);
}

void bn_count_thresholds(const int32_t *thresh, const uint8_t *flip, size_t n, int64_t k,
                         int32_t *out) {
    for (size_t j = 0; j < n; ++j) {
        /* k - 2c >= t <=> c <= floor((k - t) / 2); k - 2c <= t <=> not c <= ceil((k - t) / 2) - 1 */
        const int64_t d = k - (int64_t)thresh[j];
        const int64_t c = flip[j] ? (d >= 0 ? (d + 1) / 2 : -((-d) / 2)) - 1
                            : (d >= 0 ? d / 2 : -((-d + 1) / 2));
        out[j] = (int32_t)c; /* |d| <= k + 2^31 and k < 2^31: |c| <= 2^31 - 1 */
    }
}

/* ---- dense driver -------------------------------------------------------------------------- */
typedef struct {
    const bn_tile_kernels *kr;
    const uint64_t *a, *w;
    size_t m, n, kw, bm, bn, tm;
    int kind; /* BN_EPI_DOT or BN_EPI_BITS */
    int64_t k;
    void *out;
    size_t ldo;
    const int32_t *thresh;
    const uint8_t *flip;
    const uint64_t *panels;    /* NULL: tile path */
    const uint64_t *flip_bits; /* panel path, BITS */
    const int32_t *count_le;   /* panel path, BITS: bn_count_thresholds */
    const bn_transform *t;     /* TRANSFORM */
    const uint64_t *prepared;  /* panels made once (bn_panel_words(n, kw)), or NULL */
} dense_plan;

static void dense_task(void *vplan, long t, int worker) {
    const dense_plan *p = (const dense_plan *)vplan;
    (void)worker;
    const size_t in = (size_t)t / p->tm, im = (size_t)t % p->tm;
    const size_t m0 = im * p->bm, mb = p->m - m0 < p->bm ? p->m - m0 : p->bm;
    const size_t n0 = in * p->bn, n1 = n0 + p->bn < p->n ? n0 + p->bn : p->n;
    const uint64_t *a = p->a + m0 * p->kw;
    if (p->panels) {
        void *out = p->kind == BN_EPI_TRANSFORM ? NULL
                    : p->kind == BN_EPI_DOT     ? (void *)((int32_t *)p->out + m0 * p->ldo)
                                                : (void *)((uint64_t *)p->out + m0 * p->ldo);
        bn_panel_job job = {p->panels, p->kind, (int32_t)p->k, NULL, out, p->ldo,
                            p->thresh, p->flip_bits, NULL, NULL, p->t, m0, NULL, 0,
                            p->count_le};
        p->kr->panel(a, p->kw, mb, n0, n1, p->kw, &job);
    } else if (p->kind == BN_EPI_TRANSFORM) {
        transform_ctx ctx = {p->t, m0, p->k};
        bn_gemm_block(p->kr, a, p->kw, mb, p->w, p->kw, n0, n1, p->kw, epi_transform, &ctx);
    } else if (p->kind == BN_EPI_DOT) {
        dot_ctx ctx = {(int32_t *)p->out + m0 * p->ldo, p->ldo, p->k};
        bn_gemm_block(p->kr, a, p->kw, mb, p->w, p->kw, n0, n1, p->kw, epi_dot, &ctx);
    } else {
        bits_ctx ctx = {(uint64_t *)p->out + m0 * p->ldo, p->ldo, p->k, p->thresh, p->flip};
        bn_gemm_block(p->kr, a, p->kw, mb, p->w, p->kw, n0, n1, p->kw, epi_bits, &ctx);
    }
}

/* Returns -1 when out of memory (for the repacked weights). */
static int run_dense(dense_plan *p) {
    p->kr = bn_isa()->tiles;
    p->bm = bn_block_m(p->kw);
    p->bn = bn_block_n(p->kw, p->m, p->n);
    p->tm = (p->m + p->bm - 1) / p->bm;
    uint64_t *panels = NULL, *flip_bits = NULL;
    int32_t *count_le = NULL;
    if (bn_use_panels(p->kr, p->m, p->kw)) {
        const int bits = p->kind == BN_EPI_BITS;
        if (!p->prepared)
            panels = (uint64_t *)malloc(bn_panel_words(p->n, p->kw) * sizeof(uint64_t));
        flip_bits = (uint64_t *)malloc(bn_words(p->n) * sizeof(uint64_t));
        if (bits) count_le = (int32_t *)malloc(p->n * sizeof(int32_t));
        if ((!p->prepared && !panels) || !flip_bits || (bits && !count_le)) {
            free(panels);
            free(flip_bits);
            free(count_le);
            return BN_ENOMEM;
        }
        if (!p->prepared) bn_repack_panels(p->w, p->n, p->kw, panels);
        if (p->flip) bn_pack_flags(p->flip, p->n, flip_bits);
        if (bits) bn_count_thresholds(p->thresh, p->flip, p->n, p->k, count_le);
        p->count_le = count_le;
        p->panels = p->prepared ? p->prepared : panels;
        p->flip_bits = flip_bits;
    }
    const long tasks = (long)(p->tm * ((p->n + p->bn - 1) / p->bn));
    /* below PANEL_MIN_ROWS every weight word is streamed for a few rows only, at some 4 times
     * a word-operation's cost in cache (1 x 8192 x 1024: 25 us on one Zen 4 core), so such
     * a layer is worth a second thread from a quarter of the work */
    const double reuse = p->m < PANEL_MIN_ROWS ? 4.0 : 1.0;
    bn_parallel_for(tasks, bn_threads_for(reuse * (double)p->m * (double)p->n * (double)p->kw),
                    dense_task, p);
    free(panels);
    free(flip_bits);
    free(count_le);
    return BN_OK;
}

int bn_bgemm(const uint64_t *a, const uint64_t *w, const uint64_t *panels, size_t m, size_t n,
             size_t k, int32_t *out) {
    dense_plan p = {0};
    p.prepared = panels;
    p.a = a; p.w = w; p.m = m; p.n = n; p.kw = bn_words(k);
    p.kind = BN_EPI_DOT;
    p.k = (int64_t)k;
    p.out = out;
    p.ldo = n;
    return run_dense(&p);
}

int bn_bgemm_threshold(const uint64_t *a, const uint64_t *w, const uint64_t *panels, size_t m,
                       size_t n, size_t k, const int32_t *thresh, const uint8_t *flip,
                       uint64_t *out) {
    dense_plan p = {0};
    p.prepared = panels;
    p.a = a; p.w = w; p.m = m; p.n = n; p.kw = bn_words(k);
    p.kind = BN_EPI_BITS;
    p.k = (int64_t)k;
    p.out = out;
    p.ldo = bn_words(n);
    p.thresh = thresh;
    p.flip = flip;
    memset(out, 0, m * p.ldo * sizeof(uint64_t));
    return run_dense(&p);
}

int bn_bgemm_transform(const uint64_t *a, const uint64_t *w, const uint64_t *panels, size_t m,
                       size_t n, size_t k, bn_transform *t) {
    dense_plan p = {0};
    p.prepared = panels;
    p.a = a; p.w = w; p.m = m; p.n = n; p.kw = bn_words(k);
    p.kind = BN_EPI_TRANSFORM;
    p.k = (int64_t)k;
    p.t = t;
    t->o = n;
    if (bn_transform_begin(t, m)) return BN_ENOMEM;
    const int rc = run_dense(&p);
    bn_transform_end(t);
    return rc;
}
