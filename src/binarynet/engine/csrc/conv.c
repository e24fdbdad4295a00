/* Binary 2-D convolution as implicit GEMM over channel-packed NHWC maps.
 *
 * A task gathers the taps of a block of output pixels into rows of KH*KW*CW words (im2col of
 * packed words, one tap = CW words) and runs the popcount tiles against the weights, which are
 * already rows of (KH, KW, CW) words. Padded taps are filled with a pad row: all valid channel
 * bits set for pad_mode "one", all clear for "minus_one" and "zero".
 *
 * "zero" mode: a padded tap must contribute 0, but the all-clear pad row counted
 * popcount(w[o, tap]) mismatches (it read as -1 inputs). The valid taps of a pixel form a
 * rectangle [i0, i1) x [j0, j1) of the kernel, so with 2-D prefix sums P_o of popcount(w[o, i, j])
 * the epilogue removes that excess in O(1):
 *     dot = Kv - 2 * (cnt - (P_o(all) - P_o(rectangle))),   Kv = (i1 - i0) * (j1 - j0) * c.
 */
#include "conv_plan.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const conv_plan *plan;
    const tap_window *win; /* per row of the block */
    int32_t *dot_out;      /* row 0 of the block (int32 output), or NULL */
    uint64_t *bits_out;    /* row 0 of the block (packed output), or NULL */
    size_t ldo;            /* output row length (elements or words) */
    const int32_t *thresh;
    const uint8_t *flip;
    const bn_transform *t; /* output transform (transform.c), or NULL */
    size_t row0;           /* output row (pixel) of block row 0, for t */
} conv_epi_ctx;

static inline int64_t conv_dot(const conv_plan *p, const tap_window *win, size_t o, uint32_t cnt) {
    const bn_conv_shape *s = p->s;
    if (!p->wpre || (win->i0 == 0 && win->i1 == (int32_t)s->kh && win->j0 == 0 &&
                     win->j1 == (int32_t)s->kw))
        return p->kfull - 2 * (int64_t)cnt;
    const int64_t excess = conv_rect_excess(p, o, win->i0, win->i1, win->j0, win->j1);
    const int64_t kv = (int64_t)(win->i1 - win->i0) * (win->j1 - win->j0) * (int64_t)s->c;
    return kv - 2 * ((int64_t)cnt - excess);
}

static void epi_conv_dot(void *vctx, size_t m0, int mr, size_t n0, int nr, const uint32_t *cnt,
                         int ldc) {
    const conv_epi_ctx *c = (const conv_epi_ctx *)vctx;
    for (int i = 0; i < mr; ++i) {
        const tap_window *win = c->win + m0 + (size_t)i;
        int32_t *row = c->dot_out + (m0 + (size_t)i) * c->ldo;
        for (int j = 0; j < nr; ++j)
            row[n0 + (size_t)j] = (int32_t)conv_dot(c->plan, win, n0 + (size_t)j, cnt[i * ldc + j]);
    }
}

static void epi_conv_bits(void *vctx, size_t m0, int mr, size_t n0, int nr, const uint32_t *cnt,
                          int ldc) {
    const conv_epi_ctx *c = (const conv_epi_ctx *)vctx;
    for (int i = 0; i < mr; ++i) {
        const tap_window *win = c->win + m0 + (size_t)i;
        uint64_t word = 0;
        for (int j = 0; j < nr; ++j) {
            const size_t o = n0 + (size_t)j;
            const int64_t dot = conv_dot(c->plan, win, o, cnt[i * ldc + j]);
            word |= bn_threshold_bit(dot, c->thresh[o], c->flip[o]) << (o & 63);
        }
        c->bits_out[(m0 + (size_t)i) * c->ldo + (n0 >> 6)] |= word;
    }
}

static void epi_conv_transform(void *vctx, size_t m0, int mr, size_t n0, int nr,
                               const uint32_t *cnt, int ldc) {
    const conv_epi_ctx *c = (const conv_epi_ctx *)vctx;
    float y[64]; /* mr * nr <= 64 (gemm.c MAX_TILE) */
    for (int i = 0; i < mr; ++i) {
        const tap_window *win = c->win + m0 + (size_t)i;
        for (int j = 0; j < nr; ++j)
            y[i * nr + j] = (float)(int32_t)conv_dot(c->plan, win, n0 + (size_t)j, cnt[i * ldc + j]);
    }
    c->t->chunk(c->t, c->row0 + m0, (size_t)mr, n0, (size_t)nr, y, (size_t)nr);
}

/* Runs rows [0, mb) of an im2col block against outputs [n0, n1) through the tiles or panels. */
static void conv_block(const conv_plan *p, const bn_tile_kernels *kr, const uint64_t *a, size_t mb,
                       size_t n0, size_t n1, conv_epi_ctx *ctx, int32_t *row_k) {
    const size_t kwords = p->kwords;
    const bn_epilogue_fn epi = ctx->dot_out ? epi_conv_dot : ctx->t ? epi_conv_transform
                                                                    : epi_conv_bits;
    if (!p->panels) {
        bn_gemm_block(kr, a, kwords, mb, p->w, kwords, n0, n1, kwords, epi, ctx);
        return;
    }
    if (row_k) conv_row_ks(p, ctx->win, mb, row_k);
    const int kind = ctx->dot_out ? BN_EPI_DOT : ctx->t ? BN_EPI_TRANSFORM : BN_EPI_BITS;
    bn_panel_job job = {p->panels, kind, (int32_t)p->kfull, row_k,
                        ctx->dot_out ? (void *)ctx->dot_out : (void *)ctx->bits_out, ctx->ldo,
                        ctx->thresh, p->flip_bits, epi, ctx, ctx->t, ctx->row0, p->kvec, p->s->o,
                        ctx->dot_out || ctx->t ? NULL : p->count_le};
    kr->panel(a, kwords, mb, n0, n1, kwords, &job);
}

typedef struct {
    const conv_plan *plan;
    const bn_tile_kernels *kr;
    int32_t *dot_out;
    uint64_t *bits_out;
    const int32_t *thresh;
    const uint8_t *flip;
    const bn_transform *t;
    size_t m, bm, bn, tm, ldo;
    int by_channels;    /* conv_channel_block: task t is outputs [t bn, t bn + bn) over all pixels */
    bn_scratch scratch; /* per worker: bm im2col rows, bm tap windows, bm row ks; by_channels:
                           then m staged rows of output bits */
} conv_job;

/* Pixels [m0, m0 + mb) x outputs [n0, n1); bits (block row 0) and t replace the job's own. */
static void conv_pixels(const conv_job *j, uint64_t *buf, size_t m0, size_t mb, size_t n0,
                        size_t n1, uint64_t *bits, const bn_transform *t) {
    const conv_plan *p = j->plan;
    const size_t kwords = p->kwords;
    tap_window *win = (tap_window *)(buf + j->bm * kwords);
    int32_t *row_k = (int32_t *)(win + j->bm);
    const uint64_t *a = buf;
    if (p->direct) {
        a = p->x + m0 * kwords; /* no padding: windows unused, every row has the full K */
        row_k = NULL;
    } else {
        conv_fill_block(p, m0, mb, buf, win);
    }
    conv_epi_ctx ctx = {p, win, j->dot_out ? j->dot_out + m0 * j->ldo : NULL, bits, j->ldo,
                        j->thresh, j->flip, t, m0};
    conv_block(p, j->kr, a, mb, n0, n1, &ctx, row_k);
}

/* A block of outputs over all pixels (conv_channel_block). Its bits are staged in the task's own
 * rows and copied out at the end: ORed into the shared rows tile by tile, the words of two
 * threads' blocks in one cache line bounced between the cores. */
static void channel_task(const conv_job *j, uint64_t *buf, size_t n0, size_t n1) {
    const size_t ow = bn_words(j->plan->s->o);
    uint64_t *out = j->bits_out ? j->bits_out : j->t && j->t->bits ? j->t->bits : NULL;
    uint64_t *staged = out ? (uint64_t *)((int32_t *)(buf + j->bm * j->plan->kwords) +
                                          j->bm * (sizeof(tap_window) / 4 + 1))
                           : NULL;
    bn_transform local;
    if (j->t) {
        local = *j->t;
        if (staged) local.bits = staged;
    }
    if (staged) memset(staged, 0, j->m * ow * sizeof(uint64_t));
    conv_prep_range(j->plan, n0, n1);
    for (size_t m0 = 0; m0 < j->m; m0 += j->bm)
        conv_pixels(j, buf, m0, j->m - m0 < j->bm ? j->m - m0 : j->bm, n0, n1,
                    j->bits_out ? staged + m0 * ow : NULL, j->t ? &local : NULL);
    for (size_t r = 0; r < j->m && out; ++r)
        for (size_t q = n0 / 64; q < bn_words(n1); ++q) out[r * ow + q] = staged[r * ow + q];
}

static void conv_task(void *vjob, long t, int worker) {
    conv_job *j = (conv_job *)vjob;
    const size_t o = j->plan->s->o;
    uint64_t *buf = (uint64_t *)bn_scratch_get(&j->scratch, worker);
    if (!buf) return;
    const size_t in = j->by_channels ? (size_t)t : (size_t)t / j->tm;
    const size_t n0 = in * j->bn, n1 = n0 + j->bn < o ? n0 + j->bn : o;
    if (j->by_channels) {
        channel_task(j, buf, n0, n1);
        return;
    }
    const size_t m0 = (size_t)t % j->tm * j->bm;
    conv_pixels(j, buf, m0, j->m - m0 < j->bm ? j->m - m0 : j->bm, n0, n1,
                j->bits_out ? j->bits_out + m0 * j->ldo : NULL, j->t);
}

/* One of: dot_out (int32 sums), bits_out with thresh / flip (thresholded bits), t (transform). */
static int run_conv(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                    const bn_conv_weights *prep, int32_t *dot_out, uint64_t *bits_out,
                    const int32_t *thresh, const uint8_t *flip, const bn_transform *t) {
    conv_job j;
    j.kr = bn_isa()->tiles; /* read once */
    conv_plan plan;
    if (conv_plan_init(&plan, s, x, w, j.kr, prep)) {
        conv_plan_free(&plan);
        return BN_ENOMEM;
    }
    j.plan = &plan;
    j.dot_out = dot_out;
    j.bits_out = bits_out;
    j.thresh = thresh;
    j.flip = flip;
    j.t = t;
    j.m = s->n * s->ho * s->wo;
    j.bm = bn_block_m(plan.kwords);
    j.tm = (j.m + j.bm - 1) / j.bm;
    /* blocks of equal size (multiples of 8 rows): at batch 1 a 64-pixel map made blocks of 56
     * and 8 rows, and the small tasks ran at a fraction of the large ones' rate */
    j.bm = ((j.m + j.tm - 1) / j.tm + 7) / 8 * 8;
    j.ldo = dot_out ? s->o : bn_words(s->o);
    const int threads = bn_threads_for((double)j.m * (double)s->o * (double)plan.kwords);
    const size_t cb = conv_channel_block(j.m, s->o, threads);
    j.by_channels = cb > 0;
    j.bn = cb ? cb : bn_block_n_split(plan.kwords, j.tm, s->o);
    int rc = conv_plan_panels(&plan, j.m, thresh, flip);
    if (rc || (rc = conv_plan_border(&plan))) {
        conv_plan_free(&plan);
        return rc;
    }
    if (!j.by_channels) conv_plan_prepare(&plan, threads);
    /* by_channels: m <= o, so the staged bit rows are no larger than the weights */
    bn_scratch_init(&j.scratch,
                    j.bm * (plan.kwords * sizeof(uint64_t) + sizeof(tap_window) + sizeof(int32_t)) +
                        (cb ? j.m * bn_words(s->o) * sizeof(uint64_t) : 0));
    if (bits_out) memset(bits_out, 0, j.m * j.ldo * sizeof(uint64_t));
    const long tasks = (long)((j.by_channels ? 1 : j.tm) * ((s->o + j.bn - 1) / j.bn));
    bn_parallel_for(tasks, threads, conv_task, &j);
    const int failed = j.scratch.failed;
    bn_scratch_free(&j.scratch);
    conv_plan_free(&plan);
    return failed ? BN_ENOMEM : BN_OK;
}

int bn_bconv2d(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w, int32_t *out) {
    return run_conv(s, x, w, NULL, out, NULL, NULL, NULL, NULL);
}

int bn_bconv2d_threshold(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                         const bn_conv_weights *prep, const int32_t *thresh, const uint8_t *flip,
                         uint64_t *out) {
    return run_conv(s, x, w, prep, NULL, out, thresh, flip, NULL);
}

int bn_bconv2d_transform(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                         const bn_conv_weights *prep, bn_transform *t) {
    t->o = s->o;
    if (bn_transform_begin(t, s->n * s->ho * s->wo)) return BN_ENOMEM;
    const int rc = run_conv(s, x, w, prep, NULL, NULL, NULL, NULL, t);
    bn_transform_end(t);
    return rc;
}

/* Fused conv -> threshold -> max-pool (OR where flip is 0, AND where 1). One task per pooled
 * output row and block of output channels (whole words): it computes the KHp conv rows under
 * it (only the columns the pool reads) into a local bit buffer, then pools them. The channel
 * blocks keep both threads busy on small maps (an 8x8 map has only 4 pooled rows). */
typedef struct {
    const conv_plan *plan;
    const bn_tile_kernels *kr;
    const int32_t *thresh;
    const uint8_t *flip;
    const uint64_t *and_mask;
    uint64_t *out;
    size_t pkh, pkw, psh, psw, hp, wp, wneed, rows, ow;
    size_t cb; /* output channels per task, a multiple of 64 */
    int by_channels; /* conv_channel_block: task t is outputs [t cb, t cb + cb) over all rows */
    bn_scratch scratch; /* per worker: rows im2col rows, bit rows, tap windows, row ks */
} pool_job;

/* Pooled output row `row` (of all images) for outputs [n0, n1). */
static void pool_row(const pool_job *j, uint64_t *buf, size_t row, size_t n0, size_t n1) {
    const conv_plan *p = j->plan;
    const size_t kwords = p->kwords, ow = j->ow, rows = j->rows, wneed = j->wneed;
    uint64_t *bits = buf + rows * kwords;
    tap_window *win = (tap_window *)(bits + rows * ow);
    int32_t *row_k = (int32_t *)(win + rows);
    const size_t n = row / j->hp, py = row % j->hp;
    for (size_t di = 0; di < j->pkh; ++di)
        for (size_t c = 0; c < wneed; ++c)
            conv_im2col_row(p, n, py * j->psh + di, c, buf + (di * wneed + c) * kwords, win + di * wneed + c);
    memset(bits, 0, rows * ow * sizeof(uint64_t));
    conv_epi_ctx ctx = {p, win, NULL, bits, ow, j->thresh, j->flip};
    conv_block(p, j->kr, buf, rows, n0, n1, &ctx, row_k);
    uint64_t *dst = j->out + (n * j->hp + py) * j->wp * ow;
    for (size_t px = 0; px < j->wp; ++px) {
        for (size_t q = n0 / 64; q < bn_words(n1); ++q) {
            uint64_t any = 0, all = ~(uint64_t)0;
            for (size_t di = 0; di < j->pkh; ++di) {
                for (size_t dj = 0; dj < j->pkw; ++dj) {
                    const uint64_t v = bits[(di * wneed + px * j->psw + dj) * ow + q];
                    any |= v;
                    all &= v;
                }
            }
            dst[px * ow + q] = (any & ~j->and_mask[q]) | (all & j->and_mask[q]);
        }
    }
}

static void pool_task(void *vjob, long t, int worker) {
    const pool_job *j = (const pool_job *)vjob;
    uint64_t *buf = (uint64_t *)bn_scratch_get((bn_scratch *)&j->scratch, worker);
    if (!buf) return;
    const size_t o = j->plan->s->o, pooled_rows = j->plan->s->n * j->hp;
    const size_t n0 = (j->by_channels ? (size_t)t : (size_t)t / pooled_rows) * j->cb;
    const size_t n1 = o - n0 < j->cb ? o : n0 + j->cb;
    if (!j->by_channels) {
        pool_row(j, buf, (size_t)t % pooled_rows, n0, n1);
        return;
    }
    conv_prep_range(j->plan, n0, n1);
    for (size_t row = 0; row < pooled_rows; ++row) pool_row(j, buf, row, n0, n1);
}

int bn_bconv2d_threshold_maxpool(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                                 const bn_conv_weights *prep, const int32_t *thresh,
                                 const uint8_t *flip, size_t pkh, size_t pkw, size_t psh,
                                 size_t psw, uint64_t *out) {
    pool_job j;
    const size_t ow = bn_words(s->o);
    j.pkh = pkh; j.pkw = pkw; j.psh = psh; j.psw = psw;
    j.hp = (s->ho - pkh) / psh + 1;
    j.wp = (s->wo - pkw) / psw + 1;
    j.wneed = (j.wp - 1) * psw + pkw;
    j.ow = ow;
    /* a task's conv rows (pkh x wneed) are bounded by no buffer: a large pool window over a
     * heavily padded map can ask for more than size_t holds */
    size_t scratch_bytes;
    const size_t row_bytes = (s->kh * s->kw * s->cw + ow) * sizeof(uint64_t) +
                             sizeof(tap_window) + sizeof(int32_t);
    if (__builtin_mul_overflow(pkh, j.wneed, &j.rows) ||
        __builtin_mul_overflow(j.rows, row_bytes, &scratch_bytes))
        return BN_EOVERFLOW;
    conv_plan plan;
    j.kr = bn_isa()->tiles; /* read once: the panels below must be the tiles' own */
    uint64_t *and_mask = (uint64_t *)calloc(ow, sizeof(uint64_t));
    if (!and_mask) return BN_ENOMEM;
    const size_t pixels = bn_mul_sat(s->n, bn_mul_sat(s->ho, s->wo)); /* steers panels only */
    int rc = conv_plan_init(&plan, s, x, w, j.kr, prep);
    if (rc || (rc = conv_plan_panels(&plan, pixels, thresh, flip)) || (rc = conv_plan_border(&plan))) {
        conv_plan_free(&plan);
        free(and_mask);
        return rc;
    }
    const long pooled_rows = (long)(s->n * j.hp);
    const int threads =
        bn_threads_for((double)pooled_rows * j.rows * (double)s->o * plan.kwords);
    const size_t cb = conv_channel_block(pixels, s->o, threads);
    j.by_channels = cb > 0;
    j.cb = cb ? cb : bn_block_n_split(plan.kwords, (size_t)pooled_rows, s->o);
    const long tasks = (j.by_channels ? 1 : pooled_rows) * (long)((s->o + j.cb - 1) / j.cb);
    if (!j.by_channels) conv_plan_prepare(&plan, threads);
    for (size_t o = 0; o < s->o; ++o)
        if (flip[o]) and_mask[o >> 6] |= (uint64_t)1 << (o & 63);
    j.plan = &plan;
    j.thresh = thresh;
    j.flip = flip;
    j.and_mask = and_mask;
    j.out = out;
    bn_scratch_init(&j.scratch, scratch_bytes);
    bn_parallel_for(tasks, threads, pool_task, &j);
    const int failed = j.scratch.failed;
    bn_scratch_free(&j.scratch);
    conv_plan_free(&plan);
    free(and_mask);
    return failed ? BN_ENOMEM : BN_OK;
}
