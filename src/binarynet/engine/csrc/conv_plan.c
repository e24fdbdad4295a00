/* The per-call plan of a binary convolution: see conv.c for the method, conv_plan.h for the
 * parts. */
#include "conv_plan.h"

#include <stdlib.h>
#include <string.h>

/* Outputs [lo, hi) of an undilated axis whose k taps (from y * stride - pad) lie in [0, size). */
static void interior(size_t out, size_t stride, size_t pad, size_t size, size_t k, size_t *lo,
                     size_t *hi) {
    *lo = (pad + stride - 1) / stride;
    *hi = size + pad < k ? 0 : (size + pad - k) / stride + 1;
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

/* The plan's buffers are allocated (and the cheap ones filled) here, on the caller; the
 * per-output weight tables (wpre, kvec, panels) are filled by conv_plan_prepare, in parallel. */
int conv_plan_init(conv_plan *p, const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                   const bn_tile_kernels *kr, const bn_conv_weights *prep) {
    memset(p, 0, sizeof(*p));
    p->s = s;
    p->prep = prep;
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
        if (prep && prep->wpre) { /* read only: the given flag keeps it from being filled */
            p->wpre = (int32_t *)prep->wpre;
            p->given |= CONV_GIVEN_WPRE;
            return BN_OK;
        }
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

/* Panel path for m output pixels when the backend has one (conv_plan_prepare repacks the weights);
 * -1 when out of memory. */
int conv_plan_panels(conv_plan *p, size_t m, const int32_t *thresh, const uint8_t *flip) {
    if (!bn_use_panels(p->kr, m, p->kwords)) return 0;
    if (p->prep && p->prep->panels) {
        p->panels = (uint64_t *)p->prep->panels;
        p->given |= CONV_GIVEN_PANELS;
    } else {
        p->panels = (uint64_t *)malloc(bn_panel_words(p->s->o, p->kwords) * sizeof(uint64_t));
    }
    p->flip_bits = (uint64_t *)malloc(bn_words(p->s->o) * sizeof(uint64_t));
    if (!p->panels || !p->flip_bits) return BN_ENOMEM;
    if (flip) bn_pack_flags(flip, p->s->o, p->flip_bits);
    if (thresh && flip) {
        p->count_le = (int32_t *)malloc(p->s->o * sizeof(int32_t));
        if (!p->count_le) return BN_ENOMEM;
        bn_count_thresholds(thresh, flip, p->s->o, p->kfull, p->count_le);
    }
    return BN_OK;
}

void conv_plan_free(conv_plan *p) {
    free(p->pad_row);
    if (!(p->given & CONV_GIVEN_WPRE)) free(p->wpre);
    if (!(p->given & CONV_GIVEN_PANELS)) free(p->panels);
    free(p->flip_bits);
    free(p->count_le);
    if (!(p->given & CONV_GIVEN_KVEC)) free(p->kvec);
    free(p->hid);
    free(p->wid);
    free(p->ranges);
}

static void valid_range(int64_t base, size_t d, size_t size, size_t k, int32_t *lo, int32_t *hi);

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
int conv_plan_border(conv_plan *p) {
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
    p->nhid = nh;
    p->nwid = nw;
    if (p->prep && p->prep->kvec) { /* made for these classes, or for another geometry */
        if (p->prep->kvec_len != nh * nw * s->o) return BN_EPREPARED;
        p->kvec = (int32_t *)p->prep->kvec;
        p->given |= CONV_GIVEN_KVEC;
        return BN_OK;
    }
    p->kvec = (int32_t *)malloc(nh * nw * s->o * sizeof(int32_t));
    return p->kvec ? BN_OK : BN_ENOMEM;
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
static int prep_work(const conv_plan *p) {
    return (p->wpre && !(p->given & CONV_GIVEN_WPRE)) ||
           (p->panels && !(p->given & CONV_GIVEN_PANELS)) ||
           (p->kvec && !(p->given & CONV_GIVEN_KVEC));
}

void conv_prep_range(const conv_plan *p, size_t o0, size_t o1) {
    const size_t o = p->s->o;
    const int wpre = p->wpre && !(p->given & CONV_GIVEN_WPRE);
    const int panels = p->panels && !(p->given & CONV_GIVEN_PANELS);
    /* a panel's 8 weight rows at a time, read once into L1 for all three tables */
    for (size_t q0 = o0; q0 < o1 && (wpre || panels); q0 += 8) {
        const size_t q1 = o1 - q0 < 8 ? o1 : q0 + 8;
        for (size_t q = q0; q < q1 && wpre; ++q) fill_prefix_sums(p, q);
        if (panels) /* the last task also zeroes the panels' rows past O */
            bn_repack_panel_range(p->w, o, p->kwords, p->panels, q0 / 8,
                                  (q1 == o ? (o + 15) / 16 * 16 : q1) / 8);
    }
    if (p->kvec && !(p->given & CONV_GIVEN_KVEC)) fill_border_ks(p, o0, o1);
}

static void prep_task(void *vplan, long t, int worker) {
    const conv_plan *p = (const conv_plan *)vplan;
    const size_t o0 = (size_t)t * PREP_OUTPUTS;
    (void)worker;
    conv_prep_range(p, o0, p->s->o - o0 < PREP_OUTPUTS ? p->s->o : o0 + PREP_OUTPUTS);
}

/* Small maps on several threads: one task per thread, each a block of outputs (whole words)
 * over every pixel, preparing its own weight tables. Split by pixels, each task read weight
 * panels that the other core had just written: at 8x8 and 16x16 maps the cross-core traffic
 * made two threads slower than one. The pixels' im2col is then built once per task, which
 * costs less than moving the weights when there are no more pixels than outputs. */
size_t conv_channel_block(size_t m, size_t o, int threads) {
    if (threads < 2 || m > o || o < 64 * (size_t)threads) return 0;
    return ((o + (size_t)threads - 1) / (size_t)threads + 63) / 64 * 64;
}

void conv_plan_prepare(conv_plan *p, int threads) {
    if (!prep_work(p)) return; /* every table given: no task to wake the pool for */
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
void conv_im2col_row(const conv_plan *p, size_t n, size_t ho, size_t wo, uint64_t *dst,
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
int64_t conv_rect_excess(const conv_plan *p, size_t o, int32_t i0, int32_t i1, int32_t j0,
                         int32_t j1) {
    const bn_conv_shape *s = p->s;
    const size_t ld = s->kw + 1;
    const int32_t *P = p->wpre + o;
    const size_t O = s->o;
    const int64_t rect = (int64_t)P[(i1 * ld + j1) * O] - P[(i0 * ld + j1) * O] -
                         P[(i1 * ld + j0) * O] + P[(i0 * ld + j0) * O];
    return (int64_t)P[(s->kh * ld + s->kw) * O] - rect;
}

/* Panel-path k of each block row: the full K; for a "zero"-mode border row -2 - its border
 * class (conv_plan_border), or -1 (the scalar epilogue) without class table. */
void conv_row_ks(const conv_plan *p, const tap_window *win, size_t rows, int32_t *row_k) {
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

/* Output pixels [m0, m0 + mb) in NHWo order -> im2col rows and windows. */
void conv_fill_block(const conv_plan *p, size_t m0, size_t mb, uint64_t *buf, tap_window *win) {
    const bn_conv_shape *s = p->s;
    size_t wo = m0 % s->wo, ho = (m0 / s->wo) % s->ho, n = m0 / (s->wo * s->ho);
    for (size_t r = 0; r < mb; ++r) {
        conv_im2col_row(p, n, ho, wo, buf + r * p->kwords, win + r);
        if (++wo == s->wo) {
            wo = 0;
            if (++ho == s->ho) {
                ho = 0;
                ++n;
            }
        }
    }
}


/* The tables a call would make (conv_plan_panels with its pixel count, on the current ISA
 * row), filled and handed over to the caller. */
int bn_conv_prepare(const bn_conv_shape *s, const uint64_t *w, bn_conv_tables *out) {
    conv_plan p;
    memset(out, 0, sizeof(*out));
    int rc = conv_plan_init(&p, s, NULL, w, bn_isa()->tiles, NULL);
    if (!rc) rc = conv_plan_panels(&p, bn_mul_sat(s->n, bn_mul_sat(s->ho, s->wo)), NULL, NULL);
    if (!rc) rc = conv_plan_border(&p);
    if (!rc) {
        conv_plan_prepare(&p, bn_threads_for((double)s->o * (double)p.kwords * 64.0));
        out->wpre = p.wpre;
        out->panels = p.panels;
        out->kvec = p.kvec;
        out->wpre_len = p.wpre ? s->o * (s->kh + 1) * (s->kw + 1) : 0;
        out->panels_len = p.panels ? bn_panel_words(s->o, p.kwords) : 0;
        out->kvec_len = p.kvec ? p.nhid * p.nwid * s->o : 0;
        p.wpre = NULL; /* handed over: not freed below */
        p.panels = NULL;
        p.kvec = NULL;
    }
    conv_plan_free(&p);
    return rc;
}
