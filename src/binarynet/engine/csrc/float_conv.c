/* conv2d_float: the real-valued stream's convolutions (graph format 3 conv_real, and dense_real
 * as a 1x1 conv on a 1x1 map), direct, on the engine's thread pool.
 *
 * No patch matrix and no BLAS: the shapes of a BNN's real layers (a 3-channel stem, depthwise
 * 3x3, 1x1 convs on small maps, batch 1) are far from what a GEMM library tunes for, and its
 * own threads would compete with this pool. Output channels run across the vector lanes: the
 * weights come as panels (group, tap, input channel, rows of the group's output channels padded
 * with zeros to whole vectors; laid out once by the caller, reference.conv2d_float_panels), so
 * every input value is broadcast against a contiguous row of weights and every accumulator lane
 * is one finished output. Depthwise convs (one input and one output channel per group) instead
 * put the channels themselves across the lanes (panels (tap, channels)). Taps that fall on the
 * zero padding read a zero row, so border pixels take the same code path as interior ones. A
 * task runs one block of output channels over all its rows before the next, so the block's
 * weights stay in cache (1x1 convs on small maps and dense layers are weight-bound).
 *
 * Sums are float64, in one fixed order that reference.conv2d_float repeats in numpy: y = bias,
 * then for each tap (kh, kw) and each input channel of the group, y = y + x * w, and finally y
 * rounded to float32. A float32 product is exact in float64, so a fused multiply-add gives the
 * same bits as a multiply and an add, and every ISA row agrees with the reference bit for bit
 * (a model gives the same floats on every CPU). Float32 sums taken one term at a time would
 * drift from PyTorch's blocked sums enough to flip near-tie signs in the binary layers after
 * them; float64 sums are closer to the exact value than either.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#if BN_X86
#include <immintrin.h>
#endif

#define LANES BN_FCONV_LANES /* float64 lanes of a zmm: the panel rows are whole vectors */
#define TILE BN_FCONV_TILE /* output pixels per AVX-512 tile (6 x 4 accumulators, 4 weights) */

/* The tile of pixels [ox, ox + nr) of output row `row` (< TILE): the input pointers of every
 * tap, px[t * TILE + r] at input channel c0 (the zero row for padding), and the output pixels. */
static void tile_pointers(const bn_fconv_job *j, size_t row, size_t ox, int nr, size_t c0,
                          const float **px, float **py) {
    const bn_fconv_shape *s = j->s;
    const size_t n = row / s->ho, oy = row % s->ho;
    for (int r = 0; r < nr; ++r) py[r] = j->out + (row * s->wo + ox + (size_t)r) * s->o;
    const int64_t iy0 = (int64_t)(oy * s->sh) - (int64_t)s->ph;
    const int64_t ix0 = (int64_t)(ox * s->sw) - (int64_t)s->pw;
    const float *image = j->x + n * s->h * s->w * s->c + c0, *zero = j->zeros + c0;
    if (nr == TILE && iy0 >= 0 && iy0 + (int64_t)((s->kh - 1) * s->dh) < (int64_t)s->h &&
        ix0 >= 0 && ix0 + (int64_t)((s->kw - 1) * s->dw + (TILE - 1) * s->sw) < (int64_t)s->w) {
        /* no tap on the padding: one table of offsets, no per-pointer tests */
        const float *origin = image + ((size_t)iy0 * s->w + (size_t)ix0) * s->c;
        for (size_t q = 0; q < s->kh * s->kw * TILE; ++q) px[q] = origin + j->offsets[q];
        return;
    }
    const float **p = px;
    for (size_t ky = 0; ky < s->kh; ++ky) {
        const int64_t iy = iy0 + (int64_t)(ky * s->dh);
        const int row_in = iy >= 0 && iy < (int64_t)s->h;
        const float *line = row_in ? image + (size_t)iy * s->w * s->c : zero;
        for (size_t kx = 0; kx < s->kw; ++kx, p += TILE)
            for (int r = 0; r < nr; ++r) {
                const int64_t ix = ix0 + (int64_t)(kx * s->dw + (size_t)r * s->sw);
                p[r] = row_in && ix >= 0 && ix < (int64_t)s->w ? line + (size_t)ix * s->c : zero;
            }
    }
}

/* ---- portable: the reference (plain C) ------------------------------------------------------ */
/* one output pixel: px[t * TILE] its taps' input pointers */
static void pixel_portable(const bn_fconv_job *j, const float *const *px, double *acc,
                           float *y) {
    const bn_fconv_shape *s = j->s;
    const size_t taps = s->kh * s->kw;
    for (size_t o = 0; o < s->o; ++o) acc[o] = (double)j->bias[o];
    for (size_t g = 0; g < s->groups; ++g) {
        double *ag = acc + g * j->og;
        for (size_t t = 0; t < taps; ++t) {
            const float *xp = px[t * TILE] + g * j->cg;
            if (j->depthwise) {
                ag[0] += (double)xp[0] * (double)j->panels[t * j->opad + g];
                continue;
            }
            const float *wp = j->panels + (g * taps + t) * j->cg * j->opad;
            for (size_t ci = 0; ci < j->cg; ++ci, wp += j->opad) {
                const double xv = (double)xp[ci];
                for (size_t o = 0; o < j->og; ++o) ag[o] += xv * (double)wp[o];
            }
        }
    }
    for (size_t o = 0; o < s->o; ++o) y[o] = (float)acc[o];
}

static void rows_portable(const bn_fconv_job *j, size_t r0, size_t r1, const float **px,
                          double *acc) {
    for (size_t row = r0; row < r1; ++row)
        for (size_t ox = 0; ox < j->s->wo; ox += TILE) {
            const int nr = j->s->wo - ox < TILE ? (int)(j->s->wo - ox) : TILE;
            float *py[TILE];
            tile_pointers(j, row, ox, nr, 0, px, py);
            for (int r = 0; r < nr; ++r) pixel_portable(j, px + r, acc, py[r]);
        }
}

const bn_fconv_kernel bn_fconv_portable = {"portable", rows_portable};

/* ---- AVX-512 ---------------------------------------------------------------------------------- */
#if BN_X86
#define AVX512_FCONV __attribute__((target("avx512f")))
#define INLINE inline __attribute__((always_inline))

AVX512_FCONV static INLINE __mmask8 lanes_upto(size_t valid) {
    return valid >= LANES ? (__mmask8)0xFF : (__mmask8)((1u << valid) - 1);
}

/* up to 8 float32 -> float64 (lanes past m are 0) */
AVX512_FCONV static INLINE __m512d load8(__mmask8 m, const float *p) {
    return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_maskz_loadu_ps(m, p)));
}

AVX512_FCONV static INLINE void store8(__mmask8 m, float *p, __m512d v) {
    _mm512_mask_storeu_ps(p, m, _mm512_castps256_ps512(_mm512_cvtpd_ps(v)));
}

/* nr (<= TILE) pixels x nv (<= 4) vectors of output channels [ob, ob + 8 nv) of group g.
 * px: the pixels' tap pointers, px[t * TILE + r], at the group's first input channel. */
AVX512_FCONV static INLINE void tile_avx512(const bn_fconv_job *j, const float *const *px,
                                            size_t g, size_t ob, const int nr, const int nv,
                                            float *const *py) {
    const size_t taps = j->s->kh * j->s->kw, opad = j->opad;
    __mmask8 m[4];
    __m512d acc[TILE][4];
    for (int v = 0; v < nv; ++v) {
        const size_t lo = ob + (size_t)v * LANES;
        m[v] = lo < j->og ? lanes_upto(j->og - lo) : 0;
        const __m512d b = load8(m[v], j->bias + g * j->og + lo);
        for (int r = 0; r < nr; ++r) acc[r][v] = b;
    }
    const float *wp = j->panels + g * taps * j->cg * opad + ob;
    for (size_t t = 0; t < taps; ++t) {
        const float *const *pt = px + t * TILE;
        for (size_t ci = 0; ci < j->cg; ++ci, wp += opad) {
            __m512d w[4];
            for (int v = 0; v < nv; ++v) w[v] = _mm512_cvtps_pd(_mm256_loadu_ps(wp + v * LANES));
            for (int r = 0; r < nr; ++r) {
                const __m512d xv = _mm512_set1_pd((double)pt[r][ci]);
                for (int v = 0; v < nv; ++v) acc[r][v] = _mm512_fmadd_pd(xv, w[v], acc[r][v]);
            }
        }
    }
    for (int r = 0; r < nr; ++r)
        for (int v = 0; v < nv; ++v)
            store8(m[v], py[r] + g * j->og + ob + (size_t)v * LANES, acc[r][v]);
}

/* depthwise: nr pixels x all channels, 8 at a time */
AVX512_FCONV static INLINE void depthwise_avx512(const bn_fconv_job *j, const float *const *px,
                                                 const int nr, float *const *py) {
    const size_t taps = j->s->kh * j->s->kw, c = j->s->o;
    for (size_t cb = 0; cb < c; cb += LANES) {
        const __mmask8 m = lanes_upto(c - cb);
        const __m512d b = load8(m, j->bias + cb);
        __m512d acc[TILE];
        for (int r = 0; r < nr; ++r) acc[r] = b;
        for (size_t t = 0; t < taps; ++t) {
            const __m512d w = _mm512_cvtps_pd(_mm256_loadu_ps(j->panels + t * j->opad + cb));
            for (int r = 0; r < nr; ++r)
                acc[r] = _mm512_fmadd_pd(load8(m, px[t * TILE + r] + cb), w, acc[r]);
        }
        for (int r = 0; r < nr; ++r) store8(m, py[r] + cb, acc[r]);
    }
}

/* rows [r0, r1) x output channels [ob, ob + 8 nv) of group g, or all channels (depthwise); the
 * tile sizes are constants, so the accumulators stay in registers */
AVX512_FCONV static INLINE void block_avx512(const bn_fconv_job *j, size_t r0, size_t r1,
                                             size_t g, size_t ob, const int nv, const float **px) {
    for (size_t row = r0; row < r1; ++row)
        for (size_t ox = 0; ox < j->s->wo; ox += TILE) {
            const int nr = j->s->wo - ox < TILE ? (int)(j->s->wo - ox) : TILE;
            float *py[TILE];
            tile_pointers(j, row, ox, nr, g * j->cg, px, py);
            if (nv == 0) { /* depthwise */
                if (nr == TILE) depthwise_avx512(j, px, TILE, py);
                else for (int r = 0; r < nr; ++r) depthwise_avx512(j, px + r, 1, py + r);
            } else if (nr == TILE) {
                tile_avx512(j, px, g, ob, TILE, nv, py);
            } else {
                for (int r = 0; r < nr; ++r) tile_avx512(j, px + r, g, ob, 1, nv, py + r);
            }
        }
}

/* a dense layer (1x1 conv of 1x1 maps, one group): row by row, all O sums in memory (acc, in
 * L1) and the weights streamed once in panel order, 4 input channels per pass over acc; the
 * tiles would walk each output block's weights down a column with one page stride per input
 * channel. Each sum still takes its terms in input-channel order. */
AVX512_FCONV static void dense_avx512(const bn_fconv_job *j, size_t r0, size_t r1,
                                      double *acc) {
    const size_t k = j->s->c, o = j->s->o, opad = j->opad;
    for (size_t row = r0; row < r1; ++row) {
        const float *x = j->x + row * k;
        for (size_t v = 0; v < opad; v += LANES)
            _mm512_storeu_pd(acc + v, load8(lanes_upto(o - v), j->bias + v));
        size_t ci = 0;
        for (; ci + 4 <= k; ci += 4) {
            const __m512d x0 = _mm512_set1_pd((double)x[ci]), x1 = _mm512_set1_pd((double)x[ci + 1]);
            const __m512d x2 = _mm512_set1_pd((double)x[ci + 2]), x3 = _mm512_set1_pd((double)x[ci + 3]);
            const float *w = j->panels + ci * opad;
            for (size_t v = 0; v < opad; v += LANES) {
                __m512d a = _mm512_loadu_pd(acc + v);
                a = _mm512_fmadd_pd(x0, _mm512_cvtps_pd(_mm256_loadu_ps(w + v)), a);
                a = _mm512_fmadd_pd(x1, _mm512_cvtps_pd(_mm256_loadu_ps(w + opad + v)), a);
                a = _mm512_fmadd_pd(x2, _mm512_cvtps_pd(_mm256_loadu_ps(w + 2 * opad + v)), a);
                a = _mm512_fmadd_pd(x3, _mm512_cvtps_pd(_mm256_loadu_ps(w + 3 * opad + v)), a);
                _mm512_storeu_pd(acc + v, a);
            }
        }
        for (; ci < k; ++ci) {
            const __m512d xv = _mm512_set1_pd((double)x[ci]);
            const float *w = j->panels + ci * opad;
            for (size_t v = 0; v < opad; v += LANES)
                _mm512_storeu_pd(acc + v, _mm512_fmadd_pd(xv, _mm512_cvtps_pd(_mm256_loadu_ps(
                                                          w + v)), _mm512_loadu_pd(acc + v)));
        }
        float *y = j->out + row * o;
        for (size_t v = 0; v < opad; v += LANES)
            store8(lanes_upto(o - v), y + v, _mm512_loadu_pd(acc + v));
    }
}

AVX512_FCONV static void rows_avx512(const bn_fconv_job *j, size_t r0, size_t r1,
                                     const float **px, double *acc) {
    if (j->s->groups == 1 && j->s->h == 1 && j->s->w == 1 && j->s->kh == 1 && j->s->kw == 1 &&
        j->s->ph == 0 && j->s->pw == 0) {
        dense_avx512(j, r0, r1, acc);
        return;
    }
    if (j->depthwise) {
        block_avx512(j, r0, r1, 0, 0, 0, px);
        return;
    }
    /* one block of 4 (then 2, then 1) vectors of outputs over all rows, then the next */
    for (size_t g = 0; g < j->s->groups; ++g) {
        size_t ob = 0;
        for (; ob + 3 * LANES < j->og; ob += 4 * LANES) block_avx512(j, r0, r1, g, ob, 4, px);
        if (ob + LANES < j->og) {
            block_avx512(j, r0, r1, g, ob, 2, px);
            ob += 2 * LANES;
        }
        if (ob < j->og) block_avx512(j, r0, r1, g, ob, 1, px);
    }
}

const bn_fconv_kernel bn_fconv_avx512 = {"avx512f", rows_avx512};
#endif

/* ---- driver --------------------------------------------------------------------------------- */
typedef struct {
    const bn_fconv_job *j;
    const bn_fconv_kernel *kr;
    size_t rows_per_task, rows, pointers; /* pointers: taps x TILE, then O + LANES doubles */
    bn_scratch scratch;
} fconv_run;

static void fconv_task(void *ctx, long task, int worker) {
    fconv_run *run = (fconv_run *)ctx;
    const float **px = (const float **)bn_scratch_get(&run->scratch, worker);
    if (!px) return;
    const size_t r0 = (size_t)task * run->rows_per_task;
    const size_t r1 = r0 + run->rows_per_task < run->rows ? r0 + run->rows_per_task : run->rows;
    run->kr->rows(run->j, r0, r1, px, (double *)(px + run->pointers));
}

int bn_conv2d_float(const bn_fconv_shape *s, const float *x, const float *panels,
                    const float *bias, float *out) {
    bn_fconv_job j = {s, x, bias, panels, NULL, NULL, out, s->c / s->groups, s->o / s->groups,
                      0, 0};
    j.depthwise = j.cg == 1 && j.og == 1;
    const size_t lanes_of = j.depthwise ? s->o : j.og;
    j.opad = (lanes_of + LANES - 1) / LANES * LANES;
    const size_t taps = s->kh * s->kw; /* the binding checked the panels' size */
    size_t pointers, scratch_bytes;
    if (__builtin_mul_overflow(taps, (size_t)TILE, &pointers) ||
        __builtin_mul_overflow(pointers, sizeof(float *), &scratch_bytes) ||
        __builtin_add_overflow(scratch_bytes, (s->o + LANES) * sizeof(double), &scratch_bytes))
        return BN_EOVERFLOW;
    float *zeros = (float *)calloc(s->c + 16, sizeof(float));
    ptrdiff_t *offsets = (ptrdiff_t *)malloc(pointers * sizeof(ptrdiff_t));
    if (!zeros || !offsets) {
        free(zeros);
        free(offsets);
        return BN_ENOMEM;
    }
    for (size_t ky = 0, q = 0; ky < s->kh; ++ky)
        for (size_t kx = 0; kx < s->kw; ++kx)
            for (size_t r = 0; r < TILE; ++r, ++q)
                offsets[q] = (ptrdiff_t)(((ky * s->dh) * s->w + kx * s->dw + r * s->sw) * s->c);
    j.zeros = zeros;
    j.offsets = offsets;

    fconv_run run = {&j, bn_isa()->float_conv, 0, s->n * s->ho, pointers, {{0}, 0, 0}};
    const double macs = (double)run.rows * (double)s->wo * (double)s->o * (double)taps *
                        (double)j.cg;
    const int threads = bn_threads_for(macs / LANES);
    /* a few tasks per thread (rows differ in cost at the borders) */
    const size_t tasks = threads > 1 ? 4 * (size_t)threads : 1;
    run.rows_per_task = (run.rows + tasks - 1) / tasks;
    bn_scratch_init(&run.scratch, scratch_bytes);
    bn_parallel_for((long)((run.rows + run.rows_per_task - 1) / run.rows_per_task), threads,
                    fconv_task, &run);
    const int failed = run.scratch.failed;
    bn_scratch_free(&run.scratch);
    free(zeros);
    free(offsets);
    return failed ? BN_ENOMEM : BN_OK;
}
