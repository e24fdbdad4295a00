/* conv2d_float: the real-valued stream's convolutions (graph format 3 conv_real, and dense_real
 * as a 1x1 conv on a 1x1 map) and the float-input first conv (bits out), direct, on the
 * engine's thread pool. This file: the driver, the input bands, the portable kernels, the
 * shared sign epilogue and the FMA probe; float_conv_avx512.c: the AVX-512 kernels.
 *
 * No patch matrix and no BLAS: the shapes of a BNN's real layers (a 3-channel stem, depthwise
 * 3x3, 1x1 convs on small maps, batch 1) are far from what a GEMM library tunes for, and its
 * own threads would compete with this pool. Output channels run across the vector lanes: the
 * weights come as panels (group, tap, input channel, rows of the group's output channels padded
 * with zeros to whole vectors; laid out once by the caller, float_conv.py), so every input value
 * is broadcast against a contiguous row of weights and every accumulator lane is one finished
 * output. Depthwise convs (one input and one output channel per group) instead put the channels
 * themselves across the lanes (panels (tap, channels)).
 *
 * Each task first copies the input its outputs read into a band: NHWC, the zero (or pad-value)
 * border written in. So the kernels take no per-tap pointers and no border cases, and one input
 * layout serves NHWC or NCHW images (the first conv reads the model's NCHW input without a
 * transposed copy). Depthwise convs instead read their input in place (one load per
 * multiply-add either way; the band copy cost them 20-30%), border pixels from a small
 * zero-padded patch. A 1x1 conv with stride 1 and no padding is one long row of N*H*W pixels
 * (so its tiles stay full on 7x7 maps), split across tasks by columns when there are fewer rows
 * than tasks, or by output channels when the row is short (weight-bound: dense layers, 1x1
 * convs on small maps).
 *
 * The real conv's sums are float32, in one fixed order that the numpy twin (float_conv.py)
 * repeats: y = bias, then for each tap (kh, kw) and each input channel of the group,
 * y = fma(x, w, y), one rounding a term, as PyTorch's float32 convolutions round (in their own
 * orders): a model gives the same floats on every CPU and every ISA row, and the stem (7x7x3 ->
 * 64 at 224x224: 118 M multiply-adds an image) runs at the float32 FMA rate, twice float64's.
 * Summed in float64 instead, the engine's stream was closer to the exact values than torch's;
 * in float32 it is as close as torch's: on randomised zoo models about one sample in a few
 * hundred has a sign decision that differs from torch's, each a near-tie that
 * export.exactness.agreement counts (tests/test_export_dag_models.py).
 *
 * The sign path (the float-input first conv of a paper network, bits out) decides on float64
 * sums in the same order, y rounded once to float32, so its bits are those of the exact sum
 * but for float32 near-ties (the paper chain's exactness). On rows with sign_block32 (AVX-512)
 * with float32 input it sums in float32 instead, twice the lanes, and keeps the float64 path's
 * bits: a float32 dot product of K terms by fused multiply-adds is within gamma_K *
 * sum |x_i w_i| of the exact sum (Higham, Accuracy and Stability of Numerical Algorithms, 2nd
 * ed., §3.1; gamma_K = K u / (1 - K u), u = 2^-24), and sum |x_i w_i| <= max |x| * sum_i |w_oi|,
 * so per output o the bound b_o = 3 gamma_K max|x| |w_o|_1 + K 2^-149 (the last for products
 * that underflow), with max |x| over the band (its pad values included), holds for every pixel
 * of the band. Each output is decided at s32 - b_o and s32 + b_o (z is monotone in the sum);
 * where the two agree, that is the float64 sum's decision, and the rest (near-ties, and any sum
 * that is not finite) is summed again in float64 in the kernels' order (bn_fconv_sign_exact).
 * A band holding inf or NaN takes the float64 path.
 */
#include "core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LANES BN_FCONV_LANES
#define BAND_BYTES (256u << 10) /* a task's band chunk: within L2 beside the weights */
/* a row of fewer output pixels (a 1x1 conv on a 7x7 map, a dense layer) splits by outputs:
 * split by pixels, every task read all the weights (1.1x on 2 threads at 7x7 256 -> 512) */
#define SHORT_ROW 64

/* ---- the sign epilogue (both kernels' bits) ------------------------------------------------ */
void bn_fconv_sign_pixel(const bn_fconv_job *j, size_t pixel, const double *acc) {
    const bn_fconv_sign *sg = j->sign;
    const size_t o = j->s->o, words = bn_words(o);
    uint64_t *row = sg->out + pixel * words;
    for (size_t wd = 0; wd < words; ++wd) {
        uint64_t word = 0;
        for (size_t b = 0; b < 64 && wd * 64 + b < o; ++b) {
            const size_t c = wd * 64 + b;
            const float z = (float)acc[c] + sg->bias[c]; /* float32 add, as numpy's */
            const int bit = sg->flip[c] ? z <= sg->thresh[c] : z >= sg->thresh[c];
            word |= (uint64_t)bit << b;
        }
        row[wd] = word;
    }
}

int bn_fconv_sign_exact(const bn_fconv_job *j, const bn_fconv_band *b, const float *x0, size_t c) {
    const bn_fconv_shape *s = j->s;
    const double *w = j->panels + c; /* one group */
    double y = 0.0;
    for (size_t ky = 0; ky < s->kh; ++ky)
        for (size_t kx = 0; kx < s->kw; ++kx) {
            const float *xp = x0 + ky * s->dh * b->ld + kx * s->dw * s->c;
            for (size_t ci = 0; ci < s->c; ++ci, w += j->opad) y += (double)xp[ci] * *w;
        }
    const bn_fconv_sign *sg = j->sign;
    const float z = (float)y + sg->bias[c];
    return sg->flip[c] ? z <= sg->thresh[c] : z >= sg->thresh[c];
}

/* ---- depthwise input, read in place ---------------------------------------------------------- */
void bn_fconv_depthwise_rows(const bn_fconv_job *j, const bn_fconv_band *b, size_t oy, size_t ox,
                             size_t nr, size_t cb, size_t width, const float **rows) {
    const bn_fconv_shape *s = j->s;
    const size_t c = s->c, span = (nr - 1) * s->sw + (s->kw - 1) * s->dw + 1;
    const size_t py0 = oy * s->sh, px0 = ox * s->sw; /* padded coordinates */
    const int inside_x = px0 >= s->pw && px0 + span <= s->pw + s->w;
    const float *image = (const float *)j->x + b->n * s->h * s->w * c;
    float *patch = (float *)b->x;
    if (width > c - cb) width = c - cb;
    for (size_t ky = 0; ky < s->kh; ++ky) {
        const size_t py = py0 + ky * s->dh;
        const int row_in = py >= s->ph && py - s->ph < s->h;
        const float *line = image + (row_in ? (py - s->ph) * s->w * c : 0);
        if (row_in && inside_x) {
            rows[ky] = line + (px0 - s->pw) * c;
            continue;
        }
        float *d = patch + ky * span * c; /* channels [cb, cb + width) of the span, zeros outside */
        rows[ky] = d;
        for (size_t i = 0; i < span; ++i) {
            const size_t px = px0 + i;
            if (row_in && px >= s->pw && px - s->pw < s->w)
                memcpy(d + i * c + cb, line + (px - s->pw) * c + cb, width * sizeof(float));
            else
                memset(d + i * c + cb, 0, width * sizeof(float));
        }
    }
}

/* ---- portable: the reference (plain C) ------------------------------------------------------ */
/* the sign path: float64 sums of one group into its bits */
static void block_portable(const bn_fconv_job *j, const bn_fconv_band *b, double *acc) {
    const bn_fconv_shape *s = j->s;
    const size_t c = s->c, cols = b->ld / c;
    for (size_t oy = b->oy0; oy < b->oy1; ++oy)
        for (size_t ox = b->ox0; ox < b->ox1; ++ox) {
            const double *x0 = b->x + ((oy - b->oy0) * s->sh * cols + (ox - b->ox0) * s->sw) * c;
            for (size_t o = 0; o < s->o; ++o) acc[o] = 0.0;
            const double *wp = j->panels;
            for (size_t ky = 0; ky < s->kh; ++ky)
                for (size_t kx = 0; kx < s->kw; ++kx) {
                    const double *xp = x0 + ky * s->dh * b->ld + kx * s->dw * c;
                    for (size_t ci = 0; ci < c; ++ci, wp += j->opad)
                        for (size_t o = 0; o < s->o; ++o) acc[o] += xp[ci] * wp[o];
                }
            bn_fconv_sign_pixel(j, (b->n * s->ho + oy) * s->wo + ox, acc);
        }
}

/* the real conv, depthwise: each channel's taps from its rows, fmaf a term */
static void depthwise32_portable(const bn_fconv_job *j, const bn_fconv_band *b, double *room) {
    const bn_fconv_shape *s = j->s;
    const float **rows = (const float **)(room + s->o + LANES);
    for (size_t oy = b->oy0; oy < b->oy1; ++oy)
        for (size_t ox = b->ox0; ox < b->ox1; ++ox) {
            bn_fconv_depthwise_rows(j, b, oy, ox, 1, 0, s->c, rows);
            float *y = j->out + ((b->n * s->ho + oy) * s->wo + ox) * s->o;
            for (size_t g = 0; g < s->o; ++g) {
                float acc = j->bias[g];
                for (size_t ky = 0; ky < s->kh; ++ky)
                    for (size_t kx = 0; kx < s->kw; ++kx)
                        acc = fmaf(rows[ky][kx * s->dw * s->c + g],
                                   j->panels32[(ky * s->kw + kx) * j->opad32 + g], acc);
                y[g] = acc;
            }
        }
}

/* the real conv: float32 sums of the band's outputs [o0, o1) (all groups' when there are
 * several), fmaf a term */
static void block32_portable(const bn_fconv_job *j, const bn_fconv_band *b, double *room) {
    const bn_fconv_shape *s = j->s;
    if (j->depthwise) {
        depthwise32_portable(j, b, room);
        return;
    }
    const size_t taps = s->kh * s->kw, c = s->c, cols = b->ld / c;
    const size_t o0 = b->o0, o1 = b->o1 < s->o ? b->o1 : s->o;
    for (size_t oy = b->oy0; oy < b->oy1; ++oy)
        for (size_t ox = b->ox0; ox < b->ox1; ++ox) {
            const float *x0 = b->x32 + ((oy - b->oy0) * s->sh * cols + (ox - b->ox0) * s->sw) * c;
            float *y = j->out + ((b->n * s->ho + oy) * s->wo + ox) * s->o;
            for (size_t o = o0; o < o1; ++o) {
                const size_t g = o / j->og;
                const float *wp = j->panels32 + g * taps * j->cg * j->opad32 + (o - g * j->og);
                float acc = j->bias[o];
                for (size_t ky = 0; ky < s->kh; ++ky)
                    for (size_t kx = 0; kx < s->kw; ++kx) {
                        const float *xp = x0 + ky * s->dh * b->ld + kx * s->dw * c + g * j->cg;
                        for (size_t ci = 0; ci < j->cg; ++ci, wp += j->opad32)
                            acc = fmaf(xp[ci], *wp, acc);
                    }
                y[o] = acc;
            }
        }
}

/* one thread's share of the probe: 8 chains of float32 multiply-add, as the portable kernel's
 * (the chains cannot be folded: no -ffast-math, no contraction) */
static uint64_t probe_portable(uint64_t iterations) {
    float a0 = 1, a1 = 2, a2 = 3, a3 = 4, a4 = 5, a5 = 6, a6 = 7, a7 = 8;
    const float m = 0.999999f, c = 1e-7f;
    for (uint64_t i = 0; i < iterations; ++i) {
        a0 = fmaf(a0, m, c); a1 = fmaf(a1, m, c); a2 = fmaf(a2, m, c); a3 = fmaf(a3, m, c);
        a4 = fmaf(a4, m, c); a5 = fmaf(a5, m, c); a6 = fmaf(a6, m, c); a7 = fmaf(a7, m, c);
    }
    const float sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    __asm__ volatile("" : : "g"(sum));
    return iterations * 8;
}

static void widen_portable(const float *x, size_t count, double *out) {
    for (size_t i = 0; i < count; ++i) out[i] = (double)x[i];
}

const bn_fconv_kernel bn_fconv_portable = {"portable", block_portable, block32_portable,
                                           widen_portable, probe_portable, NULL};

/* ---- bands ------------------------------------------------------------------------------------ */
static size_t band_rows(const bn_fconv_shape *s, size_t out_rows) {
    return (out_rows - 1) * s->sh + (s->kh - 1) * s->dh + 1;
}

static size_t band_cols(const bn_fconv_shape *s, size_t out_cols) {
    return (out_cols - 1) * s->sw + (s->kw - 1) * s->dw + 1;
}

/* x's input (row iy, columns [ix, ix + count)) of image n as float64 NHWC at d */
static void copy_run(const bn_fconv_job *j, const bn_fconv_kernel *kr, size_t n, size_t iy,
                     size_t ix, size_t count, double *d) {
    const bn_fconv_shape *s = j->s;
    const size_t c = s->c;
    if (!j->x_nchw) {
        const size_t at = ((n * s->h + iy) * s->w + ix) * c;
        if (j->x_f64) memcpy(d, (const double *)j->x + at, count * c * sizeof(double));
        else kr->widen((const float *)j->x + at, count * c, d);
        return;
    }
    for (size_t ch = 0; ch < c; ++ch) {
        const size_t at = ((n * c + ch) * s->h + iy) * s->w + ix;
        if (j->x_f64)
            for (size_t i = 0; i < count; ++i) d[i * c + ch] = ((const double *)j->x)[at + i];
        else
            for (size_t i = 0; i < count; ++i) d[i * c + ch] = (double)((const float *)j->x)[at + i];
    }
}

/* fills the band of b (its x: rows x cols x C doubles) from the input and the padding */
static void fill_band(const bn_fconv_job *j, const bn_fconv_kernel *kr, bn_fconv_band *b,
                      double *band) {
    const bn_fconv_shape *s = j->s;
    const size_t rows = band_rows(s, b->oy1 - b->oy0), cols = band_cols(s, b->ox1 - b->ox0);
    const size_t c = s->c;
    b->ld = cols * c;
    b->x = band;
    /* the band's columns [lo, hi) read the image's columns [lo + col0 - pw, ...) */
    const size_t col0 = b->ox0 * s->sw;
    const size_t lo = col0 < s->pw ? s->pw - col0 : 0;
    size_t hi = s->pw + s->w > col0 ? s->pw + s->w - col0 : 0;
    if (hi > cols) hi = cols;
    for (size_t r = 0; r < rows; ++r) {
        double *d = band + r * b->ld;
        const size_t py = b->oy0 * s->sh + r;
        const int inside = py >= s->ph && py - s->ph < s->h && lo < hi;
        const size_t from = inside ? lo : cols, to = inside ? hi : cols;
        for (size_t i = 0; i < from * c; ++i) d[i] = j->pad;
        if (inside) copy_run(j, kr, b->n, py - s->ph, col0 + lo - s->pw, hi - lo, d + lo * c);
        for (size_t i = to * c; i < cols * c; ++i) d[i] = j->pad;
    }
}

/* fill_band for float32 input (the real conv, the float32 sign path): a float32 band, NHWC or
 * NCHW -> its floats */
static size_t fill_band32(const bn_fconv_job *j, bn_fconv_band *b, float *band) {
    const bn_fconv_shape *s = j->s;
    const size_t rows = band_rows(s, b->oy1 - b->oy0), cols = band_cols(s, b->ox1 - b->ox0);
    const size_t c = s->c, col0 = b->ox0 * s->sw;
    const size_t lo = col0 < s->pw ? s->pw - col0 : 0;
    size_t hi = s->pw + s->w > col0 ? s->pw + s->w - col0 : 0;
    if (hi > cols) hi = cols;
    const float pad = (float)j->pad, *x = (const float *)j->x;
    b->ld = cols * c;
    b->x32 = band;
    for (size_t r = 0; r < rows; ++r) {
        float *d = band + r * b->ld;
        const size_t py = b->oy0 * s->sh + r;
        const int inside = py >= s->ph && py - s->ph < s->h && lo < hi;
        const size_t from = inside ? lo : cols, to = inside ? hi : cols;
        for (size_t i = 0; i < from * c; ++i) d[i] = pad;
        if (inside) {
            const size_t iy = py - s->ph, ix = col0 + lo - s->pw, count = hi - lo;
            if (!j->x_nchw)
                memcpy(d + lo * c, x + ((b->n * s->h + iy) * s->w + ix) * c, count * c * sizeof(float));
            else
                for (size_t ch = 0; ch < c; ++ch) {
                    const float *src = x + ((b->n * c + ch) * s->h + iy) * s->w + ix;
                    for (size_t i = 0; i < count; ++i) d[(lo + i) * c + ch] = src[i];
                }
        }
        for (size_t i = to * c; i < cols * c; ++i) d[i] = pad;
    }
    return rows * b->ld;
}

/* The float32 sign path's weights and bounds (the header says when it runs and why it is exact)
 * into job: BN_OK, BN_ENOMEM, or 1 when it does not apply (the float64 path runs). */
static int prepare_sign32(bn_fconv_job *job, const bn_fconv_kernel *kr, float **owned) {
    const bn_fconv_shape *s = job->s;
    *owned = NULL;
    if (!job->sign || job->x_f64 || !kr->sign_block32 || s->groups != 1 ||
        (s->kh == 1 && s->kw == 1)) /* 1x1 first convs (dense rows) stay on the float64 path */
        return 1;
    const size_t taps = s->kh * s->kw, opad = (s->o + 15) / 16 * 16;
    float *mem = (float *)calloc(taps * s->c * opad + opad, sizeof(float));
    if (!mem) return BN_ENOMEM;
    float *factor = mem + taps * s->c * opad;
    const double k = (double)(taps * s->c) + 1.0, u = 0x1p-24, gamma = k * u / (1.0 - k * u);
    for (size_t o = 0; o < s->o; ++o) {
        double l1 = 0.0;
        for (size_t t = 0; t < taps * s->c; ++t) {
            const double w = job->panels[t * job->opad + o];
            mem[t * opad + o] = (float)w; /* exact: float32 weights */
            l1 += fabs(w);
        }
        const double f = 3.0 * gamma * l1;
        factor[o] = f < 0x1p127 ? (float)f : INFINITY;
    }
    job->panels32 = mem;
    job->factor32 = factor;
    job->tiny32 = (float)(k * 0x1p-149);
    job->opad32 = opad;
    *owned = mem;
    return BN_OK;
}

/* ---- driver ------------------------------------------------------------------------------- */
typedef struct {
    const bn_fconv_job *j;
    const bn_fconv_kernel *kr;
    size_t rows_per_task, cols_per_task, col_tasks, chunk_rows, band_doubles;
    size_t outs_per_task, out_tasks; /* one group: its outputs split too (whole vectors) */
    int sign32;                      /* the float32 sign path */
    bn_scratch scratch;
} fconv_run;

static void fconv_task(void *ctx, long task, int worker) {
    fconv_run *run = (fconv_run *)ctx;
    const bn_fconv_shape *s = run->j->s;
    double *band = (double *)bn_scratch_get(&run->scratch, worker);
    if (!band) return;
    const size_t rows = s->n * s->ho, at = (size_t)task / run->out_tasks;
    const size_t r0 = at / run->col_tasks * run->rows_per_task;
    const size_t r1 = r0 + run->rows_per_task < rows ? r0 + run->rows_per_task : rows;
    bn_fconv_band b = {NULL, NULL, NULL, 0, 0, 0, at % run->col_tasks * run->cols_per_task, 0, 0,
                       0, 0};
    b.o0 = (size_t)task % run->out_tasks * run->outs_per_task;
    b.o1 = b.o0 + run->outs_per_task;
    b.ox1 = b.ox0 + run->cols_per_task < s->wo ? b.ox0 + run->cols_per_task : s->wo;
    for (size_t r = r0; r < r1;) { /* chunks of rows of one image */
        b.n = r / s->ho;
        b.oy0 = r % s->ho;
        b.oy1 = b.oy0 + run->chunk_rows;
        if (b.oy1 > s->ho) b.oy1 = s->ho;
        if (b.oy1 - b.oy0 > r1 - r) b.oy1 = b.oy0 + (r1 - r);
        double *room = band + run->band_doubles;
        if (run->j->out) { /* the real conv; depthwise: read in place, the band a patch's room */
            b.x = band;
            if (!run->j->depthwise) fill_band32(run->j, &b, (float *)band);
            run->kr->block32(run->j, &b, room);
        } else if (!run->sign32 || /* the float32 sign path's bounds in the sums' room */
                   run->kr->sign_block32(run->j, &b, fill_band32(run->j, &b, (float *)band),
                                         (float *)room)) {
            b.x32 = NULL;
            fill_band(run->j, run->kr, &b, band);
            run->kr->block(run->j, &b, room);
        }
        r += b.oy1 - b.oy0;
    }
}

/* rows and columns per task: rows when there are enough, else columns of single rows; when
 * that still leaves a thread idle, or the row is short (SHORT_ROW), one group's float outputs
 * split too, so each thread reads only its share of the weights (weight-bound). -> the task
 * count */
static size_t split_tasks(fconv_run *run, int threads) {
    const bn_fconv_shape *s = run->j->s;
    const size_t rows = s->n * s->ho, tasks = threads > 1 ? 4 * (size_t)threads : 1;
    run->cols_per_task = s->wo;
    run->col_tasks = 1;
    run->outs_per_task = s->o; /* all of them */
    run->out_tasks = 1;
    if (rows >= tasks) {
        run->rows_per_task = (rows + tasks - 1) / tasks;
        return (rows + run->rows_per_task - 1) / run->rows_per_task;
    }
    run->rows_per_task = 1;
    /* (the sign epilogue writes whole words of a pixel: its outputs are not split) */
    const int by_outputs = s->groups == 1 && run->j->out && threads > 1;
    const size_t lanes = run->j->out ? BN_FCONV_LANES32 : LANES; /* the panels' vector */
    size_t split = (tasks + rows - 1) / rows, max_split = (s->wo + lanes - 1) / lanes;
    if (split > max_split) split = max_split;
    if (by_outputs && rows == 1 && s->wo < SHORT_ROW) split = 1; /* weight-bound: outputs */
    run->cols_per_task = (s->wo + split - 1) / split;
    run->col_tasks = (s->wo + run->cols_per_task - 1) / run->cols_per_task;
    const size_t opad = run->j->out ? run->j->opad32 : run->j->opad;
    const size_t spatial = rows * run->col_tasks, vectors = opad / lanes;
    if (by_outputs && spatial < (size_t)threads) {
        /* a few tasks per thread, but a dense row (one pass over the weights per pixel) in
         * one part per thread: in 8 parts 512 -> 1000 took 53 us on 2 threads, in 2 44 us */
        const size_t per = rows == 1 && s->wo < 4 ? (size_t)threads : tasks;
        size_t parts = (per + spatial - 1) / spatial;
        if (parts > (vectors + 3) / 4) parts = (vectors + 3) / 4; /* whole 4-vector tiles */
        run->outs_per_task = (vectors + parts - 1) / parts * lanes;
        run->out_tasks = (opad + run->outs_per_task - 1) / run->outs_per_task;
    }
    return spatial * run->out_tasks;
}

int bn_conv2d_float(bn_fconv_job *job) {
    bn_fconv_shape flat = *job->s;
    const bn_fconv_shape *s = job->s;
    if (s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0 &&
        !job->x_nchw) { /* 1x1: one row of all pixels (same memory, same outputs) */
        flat.w = flat.wo = s->n * s->h * s->w;
        flat.n = flat.h = flat.ho = 1;
        job->s = s = &flat;
    }
    job->cg = s->c / s->groups;
    job->og = s->o / s->groups;
    /* (one group of one channel has the same panels either way: the tiles also do bits) */
    job->depthwise = job->cg == 1 && job->og == 1 && s->groups > 1;
    const size_t lanes = job->out ? BN_FCONV_LANES32 : LANES, width = job->depthwise ? s->o : job->og;
    if (job->out) job->opad32 = (width + lanes - 1) / lanes * lanes;
    else job->opad = (width + lanes - 1) / lanes * lanes;
    uint8_t *flip8 = NULL;
    if (job->sign) { /* the flips 8 channels a byte, for the vector epilogue */
        flip8 = (uint8_t *)calloc(s->o / 8 + 1, 1);
        if (!flip8) return BN_ENOMEM;
        for (size_t o = 0; o < s->o; ++o) flip8[o / 8] |= (uint8_t)((job->sign->flip[o] & 1) << (o % 8));
    }
    job->flip8 = flip8;

    fconv_run run = {job, bn_isa()->float_conv, 0, 0, 1, 0, 0, 0, 1, 0, {{0}, 0, 0}};
    float *owned32 = NULL;
    const int sign32 = prepare_sign32(job, run.kr, &owned32);
    if (sign32 == BN_ENOMEM) {
        free(flip8);
        return BN_ENOMEM;
    }
    run.sign32 = sign32 == BN_OK;
    const double macs = (double)s->n * (double)s->ho * (double)s->wo * (double)s->o *
                        (double)(s->kh * s->kw) * (double)job->cg;
    /* threads from 5e5 multiply-adds, 1.25e5 depthwise (at some 15% of the FMA peak, against
     * 30-80% elsewhere, a depthwise multiply-add costs some 4 times more): in quiet moments of
     * a shared 2-core machine every bench_float_conv.py shape, forced onto 2 threads, took
     * 0.52-0.69 of its one-thread time (0.8 for the 512 -> 1000 dense layer), down to
     * QuickNet's 13x13x256 depthwise (1.1e5 multiply-adds, 29 -> 19 us) */
    int threads = bn_threads_for(job->depthwise ? macs * 2 : macs / 2);
    const size_t tasks = split_tasks(&run, threads);
    if (tasks < (size_t)threads) threads = (int)tasks; /* no thread woken for no task */
    /* rows per band chunk: a band within BAND_BYTES, at least one output row */
    const size_t cols = band_cols(s, run.cols_per_task);
    size_t row_bytes, chunk = 1, doubles, bytes;
    if (!__builtin_mul_overflow(s->sh, cols * s->c * sizeof(double), &row_bytes) &&
        row_bytes && BAND_BYTES / row_bytes > 1)
        chunk = BAND_BYTES / row_bytes;
    run.chunk_rows = chunk < run.rows_per_task ? chunk : run.rows_per_task;
    if (run.chunk_rows > s->ho) run.chunk_rows = s->ho;
    if (__builtin_mul_overflow(band_rows(s, run.chunk_rows), cols, &doubles) ||
        __builtin_mul_overflow(doubles, s->c, &doubles) ||
        __builtin_add_overflow(doubles, s->o + LANES, &bytes) ||
        __builtin_mul_overflow(bytes, sizeof(double), &bytes) ||
        __builtin_add_overflow(bytes, s->kh * sizeof(float *), &bytes)) { /* depthwise rows */
        free(flip8);
        free(owned32);
        return BN_EOVERFLOW;
    }
    run.band_doubles = doubles;
    bn_scratch_init(&run.scratch, bytes);
    bn_parallel_for((long)tasks, threads, fconv_task, &run);
    const int failed = run.scratch.failed;
    bn_scratch_free(&run.scratch);
    free(flip8);
    free(owned32);
    return failed ? BN_ENOMEM : BN_OK;
}

/* ---- the float64 FMA peak probe (driven as the popcount probe is: probe.c) ------------------ */
uint64_t bn_fma_probe(uint64_t iterations, int threads) {
    return bn_run_probe(bn_isa()->float_conv->probe, iterations, threads);
}
