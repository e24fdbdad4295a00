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
#include "core.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t i0, i1, j0, j1; /* valid taps of an output pixel */
} tap_window;

typedef struct {
    const bn_conv_shape *s;
    const bn_tile_kernels *kr; /* the ISA row's tiles, read once per call */
    const uint64_t *x;
    const uint64_t *w;
    uint64_t *pad_row; /* CW words */
    int32_t *wpre;     /* "zero" mode: (KH+1) x (KW+1) prefix sums of popcount(w[o,i,j]), entry
                          e of output o at e * O + o (so the border ks vectorize over o) */
    size_t kwords;     /* KH * KW * CW */
    int64_t kfull;     /* KH * KW * c */
    int direct;        /* 1x1, stride 1, no padding: the input rows are the GEMM rows */
    size_t ho0, ho1, wo0, wo1; /* undilated: output rows / columns whose taps all lie inside */
    uint64_t *panels;  /* panel path: repacked weights (else NULL) */
    uint64_t *flip_bits;
    /* panel path, "zero" mode with padding (plan_border): per border class, per output k */
    int32_t *kvec;     /* (classes, O), or NULL: border rows take the scalar epilogue */
    int32_t *hid, *wid; /* class index part of a row range (i0, i1) at i0 * (KH+1) + i1, etc. */
    size_t nhid, nwid; /* row and column classes: class = hid * nwid + wid */
    int32_t *ranges;   /* (lo, hi) tap ranges of the row classes, then of the column classes */
} conv_plan;

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

/* Outputs [lo, hi) of an undilated axis whose k taps (from y * stride - pad) lie in [0, size). */
static void interior(size_t out, size_t stride, size_t pad, size_t size, size_t k, size_t *lo,
                     size_t *hi) {
    *lo = (pad + stride - 1) / stride;
    *hi = size + pad < k ? 0 : (size + pad - k) / stride + 1;
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

/* The plan's buffers are allocated (and the cheap ones filled) here, on the caller; the
 * per-output weight tables (wpre, kvec, panels) are filled by plan_prepare, in parallel. */
static int plan_init(conv_plan *p, const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                     const bn_tile_kernels *kr) {
    memset(p, 0, sizeof(*p));
    p->s = s;
    p->kr = kr;
    p->x = x;
    p->w = w;
    p->kwords = s->kh * s->kw * s->cw;
    p->kfull = (int64_t)(s->kh * s->kw * s->c);
    p->direct = s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0;
    if (s->dh == 1 && s->dw == 1) { /* else the interior stays empty: the general path */
        interior(s->ho, s->sh, s->ph, s->h, s->kh, &p->ho0, &p->ho1);
        interior(s->wo, s->sw, s->pw, s->w, s->kw, &p->wo0, &p->wo1);
    }
    p->pad_row = (uint64_t *)calloc(s->cw, sizeof(uint64_t));
    if (!p->pad_row) return BN_ENOMEM;
    if (s->pad_mode == BN_PAD_ONE) {
        for (size_t q = 0; q < s->cw; ++q) p->pad_row[q] = ~(uint64_t)0;
        if (s->c % 64) p->pad_row[s->cw - 1] = ((uint64_t)1 << (s->c % 64)) - 1;
    }
    if (s->pad_mode == BN_PAD_ZERO && (s->ph > 0 || s->pw > 0)) {
        const size_t stride = (s->kh + 1) * (s->kw + 1);
        p->wpre = (int32_t *)calloc(s->o * stride, sizeof(int32_t));
        if (!p->wpre) return BN_ENOMEM;
    }
    return BN_OK;
}

/* wpre of output o: 2-D prefix sums of the popcounts of its taps */
#define TAP_CHUNK 64
static void fill_prefix_sums(const conv_plan *p, size_t o) {
    const bn_conv_shape *s = p->s;
    const size_t ld = s->kw + 1;
    int32_t *P = p->wpre + o;
#define P(e) P[(e) * s->o]
    int32_t pops[TAP_CHUNK];
    for (size_t i = 0; i < s->kh; ++i) {
        int32_t row = 0; /* taps [0, j] of kernel row i (in a register: a chain through the
                            strided table stalled on store forwarding) */
        for (size_t j0 = 0; j0 < s->kw; j0 += TAP_CHUNK) {
            const size_t nj = s->kw - j0 < TAP_CHUNK ? s->kw - j0 : TAP_CHUNK;
            p->kr->run_popcounts(p->w + ((o * s->kh + i) * s->kw + j0) * s->cw, nj, s->cw, pops);
            for (size_t j = j0; j < j0 + nj; ++j) {
                row += pops[j - j0];
                P((i + 1) * ld + j + 1) = P(i * ld + j + 1) + row;
            }
        }
    }
#undef P
}

/* Panel path for m output pixels when the backend has one (plan_prepare repacks the weights);
 * -1 when out of memory. */
static int plan_panels(conv_plan *p, size_t m, const uint8_t *flip) {
    if (!bn_use_panels(p->kr, m, p->kwords)) return 0;
    p->panels = (uint64_t *)malloc(bn_panel_words(p->s->o, p->kwords) * sizeof(uint64_t));
    p->flip_bits = (uint64_t *)malloc(bn_words(p->s->o) * sizeof(uint64_t));
    if (!p->panels || !p->flip_bits) return BN_ENOMEM;
    if (flip) bn_pack_flags(flip, p->s->o, p->flip_bits);
    return BN_OK;
}

static void plan_free(conv_plan *p) {
    free(p->pad_row);
    free(p->wpre);
    free(p->panels);
    free(p->flip_bits);
    free(p->kvec);
    free(p->hid);
    free(p->wid);
    free(p->ranges);
}

static void valid_range(int64_t base, size_t d, size_t size, size_t k, int32_t *lo, int32_t *hi);
static int64_t rect_excess(const conv_plan *p, size_t o, int32_t i0, int32_t i1, int32_t j0,
                           int32_t j1);

/* The distinct valid-tap ranges of one axis over its `out` positions: ids[i0 * (k+1) + i1]
 * (-1 where unused) and the ranges themselves (lo, hi pairs); returns how many, or 0 when out
 * of memory. */
static size_t axis_classes(size_t out, size_t stride, size_t pad, size_t dil, size_t size,
                           size_t k, int32_t **ids, int32_t *ranges) {
    const size_t slots = (k + 1) * (k + 1);
    *ids = (int32_t *)malloc(slots * sizeof(int32_t));
    if (!*ids) return 0;
    for (size_t q = 0; q < slots; ++q) (*ids)[q] = -1;
    size_t count = 0;
    for (size_t y = 0; y < out; ++y) {
        int32_t lo, hi;
        valid_range((int64_t)(y * stride) - (int64_t)pad, dil, size, k, &lo, &hi);
        int32_t *id = *ids + (size_t)lo * (k + 1) + (size_t)hi;
        if (*id < 0) {
            *id = (int32_t)count;
            ranges[2 * count] = lo;
            ranges[2 * count + 1] = hi;
            ++count;
        }
    }
    return count;
}

/* Panel path, "zero" mode with padding: the border correction as vectors. The valid-tap
 * rectangles of the output pixels fall into few classes (row range x column range: 3 x 3 for a
 * 3x3 kernel with padding 1); for each, k'[o] = Kv + 2 * excess_o is tabulated, so a border
 * row's dot products are k'[o] - 2 count like any interior row's (the scalar epilogue took 44%
 * of an 8x8 layer's time). Large kernels or too many classes keep the scalar epilogue. */
#define BORDER_MAX_KERNEL 32
#define BORDER_MAX_ENTRIES ((size_t)1 << 22)
static int plan_border(conv_plan *p) {
    const bn_conv_shape *s = p->s;
    if (!p->panels || !p->wpre || s->kh > BORDER_MAX_KERNEL || s->kw > BORDER_MAX_KERNEL)
        return BN_OK;
    const size_t slots = (BORDER_MAX_KERNEL + 1) * (BORDER_MAX_KERNEL + 1);
    p->ranges = (int32_t *)malloc(4 * slots * sizeof(int32_t));
    if (!p->ranges) return BN_ENOMEM;
    const size_t nh = axis_classes(s->ho, s->sh, s->ph, s->dh, s->h, s->kh, &p->hid, p->ranges);
    const size_t nw = axis_classes(s->wo, s->sw, s->pw, s->dw, s->w, s->kw, &p->wid,
                                   p->ranges + 2 * slots);
    if (!nh || !nw) return BN_ENOMEM;
    if (nh * nw > BORDER_MAX_ENTRIES / s->o) return BN_OK;
    p->kvec = (int32_t *)malloc(nh * nw * s->o * sizeof(int32_t));
    if (!p->kvec) return BN_ENOMEM;
    p->nhid = nh;
    p->nwid = nw;
    return BN_OK;
}

/* kvec entries of outputs [o0, o1) (their wpre filled): k' = Kv + 2 (all - rectangle) */
static void fill_border_ks(const conv_plan *p, size_t o0, size_t o1) {
    const bn_conv_shape *s = p->s;
    const int32_t *hr = p->ranges, *wr = p->ranges + 2 * (BORDER_MAX_KERNEL + 1) * (BORDER_MAX_KERNEL + 1);
    const size_t ld = s->kw + 1;
    const int32_t *all = p->wpre + (s->kh * ld + s->kw) * s->o;
    for (size_t a = 0; a < p->nhid; ++a) {
        for (size_t b = 0; b < p->nwid; ++b) {
            const int32_t i0 = hr[2 * a], i1 = hr[2 * a + 1], j0 = wr[2 * b], j1 = wr[2 * b + 1];
            /* |k'| <= 2 kfull < 2^31 (the panel path needs kwords < 2^24): int32 throughout */
            const int32_t kv = (i1 - i0) * (j1 - j0) * (int32_t)s->c;
            const int32_t *p11 = p->wpre + (i1 * ld + j1) * s->o, *p01 = p->wpre + (i0 * ld + j1) * s->o;
            const int32_t *p10 = p->wpre + (i1 * ld + j0) * s->o, *p00 = p->wpre + (i0 * ld + j0) * s->o;
            int32_t *row = p->kvec + (a * p->nwid + b) * s->o;
            for (size_t o = o0; o < o1; ++o)
                row[o] = kv + 2 * (all[o] - (p11[o] - p01[o] - p10[o] + p00[o]));
        }
    }
}

/* The per-output weight tables, outputs [64 t, 64 t + 64) per task: at batch 1 preparing the
 * weights on one thread took a quarter of a layer's time (the repacking alone as much as the
 * border tables), and the second thread waited for it. */
#define PREP_OUTPUTS 64 /* a multiple of 16: a task repacks whole panel pairs */
static void prep_range(const conv_plan *p, size_t o0, size_t o1) {
    const size_t o = p->s->o;
    /* a panel's 8 weight rows at a time, read once into L1 for all three tables */
    for (size_t q0 = o0; q0 < o1; q0 += 8) {
        const size_t q1 = o1 - q0 < 8 ? o1 : q0 + 8;
        for (size_t q = q0; q < q1 && p->wpre; ++q) fill_prefix_sums(p, q);
        if (p->panels) /* the last task also zeroes the panels' rows past O */
            bn_repack_panel_range(p->w, o, p->kwords, p->panels, q0 / 8,
                                  (q1 == o ? (o + 15) / 16 * 16 : q1) / 8);
    }
    if (p->kvec) fill_border_ks(p, o0, o1);
}

static void prep_task(void *vplan, long t, int worker) {
    const conv_plan *p = (const conv_plan *)vplan;
    const size_t o0 = (size_t)t * PREP_OUTPUTS;
    (void)worker;
    prep_range(p, o0, p->s->o - o0 < PREP_OUTPUTS ? p->s->o : o0 + PREP_OUTPUTS);
}

/* Small maps on several threads: one task per thread, each a block of outputs (whole words)
 * over every pixel, preparing its own weight tables. Split by pixels, each task read weight
 * panels that the other core had just written: at 8x8 and 16x16 maps the cross-core traffic
 * made two threads slower than one. The pixels' im2col is then built once per task, which
 * costs less than moving the weights when there are no more pixels than outputs. */
static size_t channel_block(size_t m, size_t o, int threads) {
    if (threads < 2 || m > o || o < 64 * (size_t)threads) return 0;
    return ((o + (size_t)threads - 1) / (size_t)threads + 63) / 64 * 64;
}

static void plan_prepare(conv_plan *p, int threads) {
    bn_parallel_for((long)((p->s->o + PREP_OUTPUTS - 1) / PREP_OUTPUTS), threads, prep_task, p);
}


/* ceil(a / b) for a >= 0, b >= 1, without the a + b - 1 that could overflow. */
static inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* Taps i in [lo, hi) with 0 <= base + i * d < size. module.c keeps the padded extent (size + 2
 * padding) within int64, so -padding <= base and size - base never overflow. */
static void valid_range(int64_t base, size_t d, size_t size, size_t k, int32_t *lo, int32_t *hi) {
    /* undilated: no division (two per axis and pixel were a third of im2col at 9-word rows) */
    int64_t first = base >= 0 ? 0 : d == 1 ? -base : ceil_div(-base, (int64_t)d);
    int64_t last = (int64_t)size - base <= 0 ? 0
                   : d == 1                  ? (int64_t)size - base
                                             : ceil_div((int64_t)size - base, (int64_t)d);
    if (last > (int64_t)k) last = (int64_t)k;
    if (first > last) first = last;
    *lo = (int32_t)first;
    *hi = (int32_t)last;
}

/* memcpy, without the library call for the few words of a small layer's tap row */
static inline void copy_words(uint64_t *dst, const uint64_t *src, size_t n) {
    if (n > 16) {
        memcpy(dst, src, n * sizeof(uint64_t));
        return;
    }
    for (size_t q = 0; q < n; ++q) {
        dst[q] = src[q];
        __asm__("" ::: "memory"); /* keeps GCC from turning the loop back into memcpy */
    }
}

/* Gathers the taps of output pixel (n, ho, wo) into dst (kwords words). Coordinates are int64:
 * ho * sh <= padded extent and tap rows stay in [-padding, size + padding). */
static void im2col_row(const conv_plan *p, size_t n, size_t ho, size_t wo, uint64_t *dst,
                       tap_window *win) {
    const bn_conv_shape *s = p->s;
    if (ho >= p->ho0 && ho < p->ho1 && wo >= p->wo0 && wo < p->wo1) {
        /* interior pixel: kh runs of kw * cw words (the checks below cost more than the copy
         * of a small layer's 9 or 18 words) */
        const size_t run = s->kw * s->cw;
        const uint64_t *src = p->x + ((n * s->h + ho * s->sh - s->ph) * s->w + wo * s->sw - s->pw) * s->cw;
        for (size_t i = 0; i < s->kh; ++i) copy_words(dst + i * run, src + i * s->w * s->cw, run);
        *win = (tap_window){0, (int32_t)s->kh, 0, (int32_t)s->kw};
        return;
    }
    const int64_t hb = (int64_t)(ho * s->sh) - (int64_t)s->ph;
    const int64_t wb = (int64_t)(wo * s->sw) - (int64_t)s->pw;
    valid_range(hb, s->dh, s->h, s->kh, &win->i0, &win->i1);
    valid_range(wb, s->dw, s->w, s->kw, &win->j0, &win->j1);
    const size_t cw = s->cw;
    /* undilated full rows of taps are kw * cw consecutive input words: one copy */
    const int whole_rows = s->dw == 1 && win->j0 == 0 && win->j1 == (int32_t)s->kw;
    for (size_t i = 0; i < s->kh; ++i) {
        const int row_ok = (int32_t)i >= win->i0 && (int32_t)i < win->i1;
        const int64_t hi = hb + (int64_t)(i * s->dh);
        if (row_ok && whole_rows) {
            copy_words(dst, p->x + ((n * s->h + (size_t)hi) * s->w + (size_t)wb) * cw, s->kw * cw);
            dst += s->kw * cw;
            continue;
        }
        for (size_t j = 0; j < s->kw; ++j, dst += cw) {
            const uint64_t *src = p->pad_row;
            if (row_ok && (int32_t)j >= win->j0 && (int32_t)j < win->j1) {
                const int64_t wi = wb + (int64_t)(j * s->dw);
                src = p->x + ((n * s->h + (size_t)hi) * s->w + (size_t)wi) * cw;
            }
            for (size_t q = 0; q < cw; ++q) dst[q] = src[q];
        }
    }
}

/* popcount(w[o]) over the taps outside the rectangle [i0, i1) x [j0, j1) ("zero" mode) */
static int64_t rect_excess(const conv_plan *p, size_t o, int32_t i0, int32_t i1, int32_t j0,
                           int32_t j1) {
    const bn_conv_shape *s = p->s;
    const size_t ld = s->kw + 1;
    const int32_t *P = p->wpre + o;
    const size_t O = s->o;
    const int64_t rect = (int64_t)P[(i1 * ld + j1) * O] - P[(i0 * ld + j1) * O] -
                         P[(i1 * ld + j0) * O] + P[(i0 * ld + j0) * O];
    return (int64_t)P[(s->kh * ld + s->kw) * O] - rect;
}

static inline int64_t conv_dot(const conv_plan *p, const tap_window *win, size_t o, uint32_t cnt) {
    const bn_conv_shape *s = p->s;
    if (!p->wpre || (win->i0 == 0 && win->i1 == (int32_t)s->kh && win->j0 == 0 &&
                     win->j1 == (int32_t)s->kw))
        return p->kfull - 2 * (int64_t)cnt;
    const int64_t excess = rect_excess(p, o, win->i0, win->i1, win->j0, win->j1);
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

/* Panel-path k of each block row: the full K; for a "zero"-mode border row -2 - its border
 * class (plan_border), or -1 (the scalar epilogue) without class table. */
static void row_ks(const conv_plan *p, const tap_window *win, size_t rows, int32_t *row_k) {
    const bn_conv_shape *s = p->s;
    for (size_t r = 0; r < rows; ++r) {
        const int full = win[r].i0 == 0 && win[r].i1 == (int32_t)s->kh && win[r].j0 == 0 &&
                         win[r].j1 == (int32_t)s->kw;
        if (!p->wpre || full) {
            row_k[r] = (int32_t)p->kfull;
        } else if (p->kvec) {
            const int32_t h = p->hid[(size_t)win[r].i0 * (s->kh + 1) + (size_t)win[r].i1];
            const int32_t w = p->wid[(size_t)win[r].j0 * (s->kw + 1) + (size_t)win[r].j1];
            row_k[r] = -2 - (int32_t)((size_t)h * p->nwid + (size_t)w);
        } else {
            row_k[r] = -1;
        }
    }
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
    if (row_k) row_ks(p, ctx->win, mb, row_k);
    const int kind = ctx->dot_out ? BN_EPI_DOT : ctx->t ? BN_EPI_TRANSFORM : BN_EPI_BITS;
    bn_panel_job job = {p->panels, kind, (int32_t)p->kfull, row_k,
                        ctx->dot_out ? (void *)ctx->dot_out : (void *)ctx->bits_out, ctx->ldo,
                        ctx->thresh, p->flip_bits, epi, ctx, ctx->t, ctx->row0, p->kvec, p->s->o};
    kr->panel(a, kwords, mb, n0, n1, kwords, &job);
}

/* Output pixels [m0, m0 + mb) in NHWo order -> im2col rows and windows. */
static void fill_block(const conv_plan *p, size_t m0, size_t mb, uint64_t *buf, tap_window *win) {
    const bn_conv_shape *s = p->s;
    size_t wo = m0 % s->wo, ho = (m0 / s->wo) % s->ho, n = m0 / (s->wo * s->ho);
    for (size_t r = 0; r < mb; ++r) {
        im2col_row(p, n, ho, wo, buf + r * p->kwords, win + r);
        if (++wo == s->wo) {
            wo = 0;
            if (++ho == s->ho) {
                ho = 0;
                ++n;
            }
        }
    }
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
    int by_channels;    /* channel_block: task t is outputs [t bn, t bn + bn) over all pixels */
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
        fill_block(p, m0, mb, buf, win);
    }
    conv_epi_ctx ctx = {p, win, j->dot_out ? j->dot_out + m0 * j->ldo : NULL, bits, j->ldo,
                        j->thresh, j->flip, t, m0};
    conv_block(p, j->kr, a, mb, n0, n1, &ctx, row_k);
}

/* A block of outputs over all pixels (channel_block). Its bits are staged in the task's own
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
    prep_range(j->plan, n0, n1);
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
static int run_conv(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w, int32_t *dot_out,
                    uint64_t *bits_out, const int32_t *thresh, const uint8_t *flip,
                    const bn_transform *t) {
    conv_job j;
    j.kr = bn_isa()->tiles; /* read once */
    conv_plan plan;
    if (plan_init(&plan, s, x, w, j.kr)) {
        plan_free(&plan);
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
    const size_t cb = channel_block(j.m, s->o, threads);
    j.by_channels = cb > 0;
    j.bn = cb ? cb : bn_block_n_split(plan.kwords, j.tm, s->o);
    if (plan_panels(&plan, j.m, flip) || plan_border(&plan)) {
        plan_free(&plan);
        return BN_ENOMEM;
    }
    if (!j.by_channels) plan_prepare(&plan, threads);
    /* by_channels: m <= o, so the staged bit rows are no larger than the weights */
    bn_scratch_init(&j.scratch,
                    j.bm * (plan.kwords * sizeof(uint64_t) + sizeof(tap_window) + sizeof(int32_t)) +
                        (cb ? j.m * bn_words(s->o) * sizeof(uint64_t) : 0));
    if (bits_out) memset(bits_out, 0, j.m * j.ldo * sizeof(uint64_t));
    const long tasks = (long)((j.by_channels ? 1 : j.tm) * ((s->o + j.bn - 1) / j.bn));
    bn_parallel_for(tasks, threads, conv_task, &j);
    const int failed = j.scratch.failed;
    bn_scratch_free(&j.scratch);
    plan_free(&plan);
    return failed ? BN_ENOMEM : BN_OK;
}

int bn_bconv2d(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w, int32_t *out) {
    return run_conv(s, x, w, out, NULL, NULL, NULL, NULL);
}

int bn_bconv2d_threshold(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                         const int32_t *thresh, const uint8_t *flip, uint64_t *out) {
    return run_conv(s, x, w, NULL, out, thresh, flip, NULL);
}

int bn_bconv2d_transform(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                         bn_transform *t) {
    t->o = s->o;
    if (bn_transform_begin(t, s->n * s->ho * s->wo)) return BN_ENOMEM;
    const int rc = run_conv(s, x, w, NULL, NULL, NULL, NULL, t);
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
    int by_channels; /* channel_block: task t is outputs [t cb, t cb + cb) over all rows */
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
            im2col_row(p, n, py * j->psh + di, c, buf + (di * wneed + c) * kwords, win + di * wneed + c);
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
    prep_range(j->plan, n0, n1);
    for (size_t row = 0; row < pooled_rows; ++row) pool_row(j, buf, row, n0, n1);
}

int bn_bconv2d_threshold_maxpool(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                                 const int32_t *thresh, const uint8_t *flip, size_t pkh, size_t pkw,
                                 size_t psh, size_t psw, uint64_t *out) {
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
    if (plan_init(&plan, s, x, w, j.kr) || plan_panels(&plan, pixels, flip) ||
        plan_border(&plan)) {
        plan_free(&plan);
        free(and_mask);
        return BN_ENOMEM;
    }
    const long pooled_rows = (long)(s->n * j.hp);
    const int threads =
        bn_threads_for((double)pooled_rows * j.rows * (double)s->o * plan.kwords);
    const size_t cb = channel_block(pixels, s->o, threads);
    j.by_channels = cb > 0;
    j.cb = cb ? cb : bn_block_n_split(plan.kwords, (size_t)pooled_rows, s->o);
    const long tasks = (j.by_channels ? 1 : pooled_rows) * (long)((s->o + j.cb - 1) / j.cb);
    if (!j.by_channels) plan_prepare(&plan, threads);
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
    plan_free(&plan);
    free(and_mask);
    return failed ? BN_ENOMEM : BN_OK;
}
