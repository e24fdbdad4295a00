/* conv2d_float: the real-valued stream's convolutions (graph format 3 conv_real, and dense_real
 * as a 1x1 conv on a 1x1 map), direct, float32 accumulation, on the engine's thread pool.
 *
 * No patch matrix and no BLAS: the shapes of a BNN's real layers (a 3-channel stem, depthwise
 * 3x3, 1x1 convs on small maps, batch 1) are far from what a GEMM library tunes for, and its
 * own threads would compete with this pool. Output channels run across the vector lanes: the
 * weights are re-laid once per call into panels (group, tap, input channel, 16-lane rows of
 * output channels, zeros past the group's outputs), so every input value is broadcast against
 * a contiguous row of weights and every accumulator lane is one finished output. Depthwise convs
 * (one input and one output channel per group) instead put the channels themselves across the
 * lanes (panels (tap, channels)). Taps that fall on the zero padding read a zero row, so border
 * pixels take the same code path as interior ones.
 *
 * The sums may be taken in any order (conv_real is compared with tolerances: docs/design.md),
 * so the AVX-512 kernels use fused multiply-adds although this file is built with
 * -ffp-contract=off for the elementwise ops elsewhere.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#if BN_X86
#include <immintrin.h>
#endif

#define LANES 16 /* output channels per panel row (one zmm of float32) */
#define TILE 6   /* output pixels per AVX-512 tile (6 x 2 accumulators + 2 weights + 1 input) */

/* Pointer to input pixel (n, iy, ix) at channel 0, or the zero row when it is padding. */
static inline const float *tap_pixel(const bn_fconv_job *j, size_t n, size_t oy, size_t ox,
                                     size_t t) {
    const bn_fconv_shape *s = j->s;
    const int64_t iy = (int64_t)(oy * s->sh) - (int64_t)s->ph + (int64_t)((t / s->kw) * s->dh);
    const int64_t ix = (int64_t)(ox * s->sw) - (int64_t)s->pw + (int64_t)((t % s->kw) * s->dw);
    if (iy < 0 || ix < 0 || iy >= (int64_t)s->h || ix >= (int64_t)s->w) return j->zeros;
    return j->x + ((n * s->h + (size_t)iy) * s->w + (size_t)ix) * s->c;
}

/* ---- portable: the reference (plain C; the compiler vectorises the inner loops) ------------ */
static void pixel_portable(const bn_fconv_job *j, size_t n, size_t oy, size_t ox, float *y) {
    const bn_fconv_shape *s = j->s;
    const size_t taps = s->kh * s->kw;
    memcpy(y, j->bias, s->o * sizeof(float));
    if (j->depthwise) {
        for (size_t t = 0; t < taps; ++t) {
            const float *xp = tap_pixel(j, n, oy, ox, t), *wp = j->panels + t * j->opad;
            for (size_t c = 0; c < s->o; ++c) y[c] += xp[c] * wp[c];
        }
        return;
    }
    for (size_t g = 0; g < s->groups; ++g) {
        float *yg = y + g * j->og;
        for (size_t t = 0; t < taps; ++t) {
            const float *xp = tap_pixel(j, n, oy, ox, t) + g * j->cg;
            const float *wp = j->panels + (g * taps + t) * j->cg * j->opad;
            for (size_t ci = 0; ci < j->cg; ++ci, wp += j->opad) {
                const float xv = xp[ci];
                for (size_t o = 0; o < j->og; ++o) yg[o] += xv * wp[o];
            }
        }
    }
}

static void rows_portable(const bn_fconv_job *j, size_t r0, size_t r1, const float **scratch) {
    const bn_fconv_shape *s = j->s;
    (void)scratch;
    for (size_t r = r0; r < r1; ++r)
        for (size_t ox = 0; ox < s->wo; ++ox)
            pixel_portable(j, r / s->ho, r % s->ho, ox, j->out + (r * s->wo + ox) * s->o);
}

const bn_fconv_kernel bn_fconv_portable = {"portable", rows_portable};

/* ---- AVX-512 ---------------------------------------------------------------------------------- */
#if BN_X86
#define AVX512_FCONV __attribute__((target("avx512f")))
#define INLINE inline __attribute__((always_inline))

AVX512_FCONV static INLINE __mmask16 lanes_upto(size_t valid) {
    return valid >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << valid) - 1);
}

/* nr (<= TILE) pixels x nv (1 or 2) vectors of output channels [ob, ob + 16 nv) of group g.
 * px: the pixels' tap pointers, px[t * TILE + r], at the group's first input channel. */
AVX512_FCONV static INLINE void tile_avx512(const bn_fconv_job *j, const float *const *px,
                                            size_t g, size_t ob, const int nr, const int nv,
                                            float *const *py) {
    const size_t taps = j->s->kh * j->s->kw, opad = j->opad;
    const size_t valid = j->og - ob;
    const __mmask16 m0 = lanes_upto(valid), m1 = valid > LANES ? lanes_upto(valid - LANES) : 0;
    const float *bias = j->bias + g * j->og + ob;
    __m512 acc[TILE][2];
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, bias);
    const __m512 b1 = nv > 1 ? _mm512_maskz_loadu_ps(m1, bias + LANES) : b0;
    for (int r = 0; r < nr; ++r) {
        acc[r][0] = b0;
        acc[r][1] = b1;
    }
    const float *wp = j->panels + g * taps * j->cg * opad + ob;
    for (size_t t = 0; t < taps; ++t) {
        const float *const *pt = px + t * TILE;
        for (size_t ci = 0; ci < j->cg; ++ci, wp += opad) {
            const __m512 w0 = _mm512_load_ps(wp);
            const __m512 w1 = nv > 1 ? _mm512_load_ps(wp + LANES) : w0;
            for (int r = 0; r < nr; ++r) {
                const __m512 xv = _mm512_set1_ps(pt[r][ci]);
                acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
            }
        }
    }
    for (int r = 0; r < nr; ++r) {
        float *y = py[r] + g * j->og + ob;
        _mm512_mask_storeu_ps(y, m0, acc[r][0]);
        if (nv > 1) _mm512_mask_storeu_ps(y + LANES, m1, acc[r][1]);
    }
}

/* nr pixels, all groups and output channels (two vectors at a time, then one) */
AVX512_FCONV static INLINE void pixels_avx512(const bn_fconv_job *j, const float **px,
                                              const int nr, float *const *py) {
    const size_t taps = j->s->kh * j->s->kw;
    for (size_t g = 0; g < j->s->groups; ++g) {
        if (g) /* the next group's input channels */
            for (size_t t = 0; t < taps; ++t)
                for (int r = 0; r < nr; ++r) px[t * TILE + r] += j->cg;
        size_t ob = 0;
        for (; ob + LANES < j->og; ob += 2 * LANES) tile_avx512(j, px, g, ob, nr, 2, py);
        if (ob < j->og) tile_avx512(j, px, g, ob, nr, 1, py);
    }
}

/* depthwise: nr pixels x all channels, 16 at a time */
AVX512_FCONV static INLINE void depthwise_avx512(const bn_fconv_job *j, const float *const *px,
                                                 const int nr, float *const *py) {
    const size_t taps = j->s->kh * j->s->kw, c = j->s->o;
    for (size_t cb = 0; cb < c; cb += LANES) {
        const __mmask16 m = lanes_upto(c - cb);
        const __m512 b = _mm512_maskz_loadu_ps(m, j->bias + cb);
        __m512 acc[TILE];
        for (int r = 0; r < nr; ++r) acc[r] = b;
        for (size_t t = 0; t < taps; ++t) {
            const __m512 w = _mm512_load_ps(j->panels + t * j->opad + cb);
            for (int r = 0; r < nr; ++r)
                acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, px[t * TILE + r] + cb), w, acc[r]);
        }
        for (int r = 0; r < nr; ++r) _mm512_mask_storeu_ps(py[r] + cb, m, acc[r]);
    }
}

AVX512_FCONV static void rows_avx512(const bn_fconv_job *j, size_t r0, size_t r1,
                                     const float **px) {
    const bn_fconv_shape *s = j->s;
    const size_t taps = s->kh * s->kw;
    for (size_t row = r0; row < r1; ++row) {
        const size_t n = row / s->ho, oy = row % s->ho;
        for (size_t ox = 0; ox < s->wo; ox += TILE) {
            const int nr = s->wo - ox < TILE ? (int)(s->wo - ox) : TILE;
            float *py[TILE];
            for (int r = 0; r < nr; ++r) {
                py[r] = j->out + ((row * s->wo) + ox + (size_t)r) * s->o;
                for (size_t t = 0; t < taps; ++t)
                    px[t * TILE + r] = tap_pixel(j, n, oy, ox + (size_t)r, t);
            }
            /* constant tile sizes, so the accumulators stay in registers */
            if (j->depthwise) {
                if (nr == TILE) depthwise_avx512(j, px, TILE, py);
                else for (int r = 0; r < nr; ++r) depthwise_avx512(j, px + r, 1, py + r);
            } else if (nr == TILE) {
                pixels_avx512(j, px, TILE, py);
            } else {
                for (int r = 0; r < nr; ++r) pixels_avx512(j, px + r, 1, py + r);
            }
        }
    }
}

const bn_fconv_kernel bn_fconv_avx512 = {"avx512f", rows_avx512};
#endif

/* ---- driver --------------------------------------------------------------------------------- */
typedef struct {
    const bn_fconv_job *j;
    const bn_fconv_kernel *kr;
    size_t rows_per_task, rows;
    bn_scratch scratch; /* per worker: taps x TILE input pointers */
} fconv_run;

static void fconv_task(void *ctx, long task, int worker) {
    fconv_run *run = (fconv_run *)ctx;
    const float **px = (const float **)bn_scratch_get(&run->scratch, worker);
    if (!px) return;
    const size_t r0 = (size_t)task * run->rows_per_task;
    const size_t r1 = r0 + run->rows_per_task < run->rows ? r0 + run->rows_per_task : run->rows;
    run->kr->rows(run->j, r0, r1, px);
}

/* weights (O, KH, KW, C/g) -> panels: depthwise (taps, opad), else (g, taps, cg, opad) */
static void relay_weights(const bn_fconv_job *j, const float *w) {
    const size_t taps = j->s->kh * j->s->kw;
    float *p = (float *)j->panels;
    for (size_t oc = 0; oc < j->s->o; ++oc) {
        const size_t g = oc / j->og, o = oc % j->og;
        for (size_t t = 0; t < taps; ++t)
            for (size_t ci = 0; ci < j->cg; ++ci) {
                const float v = w[(oc * taps + t) * j->cg + ci];
                if (j->depthwise) p[t * j->opad + oc] = v;
                else p[((g * taps + t) * j->cg + ci) * j->opad + o] = v;
            }
    }
}

int bn_conv2d_float(const bn_fconv_shape *s, const float *x, const float *w, const float *bias,
                    float *out) {
    bn_fconv_job j = {s, x, bias, NULL, NULL, out, s->c / s->groups, s->o / s->groups, 0, 0};
    j.depthwise = j.cg == 1 && j.og == 1;
    const size_t lanes_of = j.depthwise ? s->o : j.og;
    j.opad = (lanes_of + LANES - 1) / LANES * LANES;
    const size_t taps = s->kh * s->kw; /* kh * kw * cg was checked by the binding */
    size_t floats, bytes, ptr_bytes;
    if (__builtin_mul_overflow(j.depthwise ? 1 : s->groups * j.cg, taps, &floats) ||
        __builtin_mul_overflow(floats, j.opad, &floats) ||
        __builtin_mul_overflow(floats, sizeof(float), &bytes) ||
        __builtin_add_overflow(bytes, (size_t)63, &bytes) ||
        __builtin_mul_overflow(taps, TILE * sizeof(float *), &ptr_bytes))
        return BN_EOVERFLOW;
    float *panels = (float *)aligned_alloc(64, bytes / 64 * 64);
    float *zeros = (float *)calloc(s->c + LANES, sizeof(float));
    if (!panels || !zeros) {
        free(panels);
        free(zeros);
        return BN_ENOMEM;
    }
    memset(panels, 0, floats * sizeof(float)); /* lanes past a group's outputs stay 0 */
    j.panels = panels;
    j.zeros = zeros;
    relay_weights(&j, w);

    fconv_run run = {&j, bn_isa()->float_conv, 0, s->n * s->ho, {{0}, 0, 0}};
    const double macs = (double)run.rows * (double)s->wo * (double)s->o * (double)taps *
                        (double)j.cg;
    const int threads = bn_threads_for(macs / LANES);
    /* a few tasks per thread (rows differ in cost at the borders) */
    const size_t tasks = threads > 1 ? 4 * (size_t)threads : 1;
    run.rows_per_task = (run.rows + tasks - 1) / tasks;
    bn_scratch_init(&run.scratch, ptr_bytes);
    bn_parallel_for((long)((run.rows + run.rows_per_task - 1) / run.rows_per_task), threads,
                    fconv_task, &run);
    const int failed = run.scratch.failed;
    bn_scratch_free(&run.scratch);
    free(panels);
    free(zeros);
    return failed ? BN_ENOMEM : BN_OK;
}
