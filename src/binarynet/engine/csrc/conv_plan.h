/* The per-call plan of a binary convolution (conv_plan.c): the weight tables (panels, tap
 * popcount prefix sums, border ks) prepared per block of outputs, the border classes, and the
 * im2col of output pixels; the drivers and epilogues are in conv.c. */
#ifndef BINARYNET_CONV_PLAN_H
#define BINARYNET_CONV_PLAN_H

#include "core.h"

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
    int32_t *count_le; /* panel path with thresholds: bn_count_thresholds at kfull */
    /* panel path, "zero" mode with padding (conv_plan_border): per border class, per output k */
    int32_t *kvec;     /* (classes, O), or NULL: border rows take the scalar epilogue */
    int32_t *hid, *wid; /* class index part of a row range (i0, i1) at i0 * (KH+1) + i1, etc. */
    size_t nhid, nwid; /* row and column classes: class = hid * nwid + wid */
    int32_t *ranges;   /* (lo, hi) tap ranges of the row classes, then of the column classes */
    const bn_conv_weights *prep; /* tables made once (bn_conv_prepare), or NULL */
    int given;         /* CONV_GIVEN_* bits: tables taken from prep (neither filled nor freed) */
} conv_plan;

enum { CONV_GIVEN_WPRE = 1, CONV_GIVEN_PANELS = 2, CONV_GIVEN_KVEC = 4 };

/* Allocations (and the cheap tables); conv_prep_range / conv_plan_prepare fill the rest, but
 * for the tables taken from prep (may be NULL). All return BN_OK or BN_ENOMEM (conv_plan_border:
 * BN_EPREPARED for a prepared kvec of another class count); conv_plan_free frees what was
 * allocated, after any failure too. */
int conv_plan_init(conv_plan *p, const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                   const bn_tile_kernels *kr, const bn_conv_weights *prep);
int conv_plan_panels(conv_plan *p, size_t m, const int32_t *thresh, const uint8_t *flip);
int conv_plan_border(conv_plan *p);
void conv_plan_free(conv_plan *p);
/* weight tables of outputs [o0, o1) (o0 a multiple of 16) / of all outputs on the pool; nothing
 * where every table was given */
void conv_prep_range(const conv_plan *p, size_t o0, size_t o1);
void conv_plan_prepare(conv_plan *p, int threads);
/* outputs per task when each thread takes one block over all m pixels, else 0 */
size_t conv_channel_block(size_t m, size_t o, int threads);
/* popcount(w[o]) over the taps outside the rectangle [i0, i1) x [j0, j1) ("zero" mode) */
int64_t conv_rect_excess(const conv_plan *p, size_t o, int32_t i0, int32_t i1, int32_t j0,
                         int32_t j1);
void conv_im2col_row(const conv_plan *p, size_t n, size_t ho, size_t wo, uint64_t *dst,
                     tap_window *win);
void conv_fill_block(const conv_plan *p, size_t m0, size_t mb, uint64_t *buf, tap_window *win);
void conv_row_ks(const conv_plan *p, const tap_window *win, size_t rows, int32_t *row_k);

#endif
