/* conv2d_float's AVX-512 kernels (float_conv.c has the driver, the bands and the contract).
 *
 * A tile is nr output pixels of one row x nv vectors of output channels, all nr * nv sums in
 * registers: 16 float32 lanes a vector for the real conv (tile32), 8 float64 lanes for the sign
 * path's float64 sums (tile). For each (tap, input channel) it loads the nv weight vectors once
 * and multiplies them into every pixel's sums with the pixel's input value broadcast from the
 * band (folded into the FMA as a memory operand): no other vector work in the inner loop, so
 * the tiles run near the FMA peak (bench_float_conv.py). Where the input channels of a kernel
 * row are contiguous in the band (dilation 1, one group: the stem's 7 taps x 3 channels), a row
 * of taps is one run of broadcasts and weight rows. Sizes: 6 x 4 vectors (two blocks of
 * outputs), 8 x 2 and 8 x 1 (24, 16 and 8 accumulators: enough independent chains to cover the
 * FMA latency), then 4-, 2- and 1-pixel tiles for the end of a row.
 */
#include "core.h"
#include "sign32.h"

#if BN_X86
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define LANES BN_FCONV_LANES
#define AVX512_FCONV __attribute__((target("avx512f,avx512vl")))
#define INLINE inline __attribute__((always_inline))

AVX512_FCONV static INLINE __mmask8 lanes_upto(size_t valid) {
    return valid >= LANES ? (__mmask8)0xFF : (__mmask8)((1u << valid) - 1);
}

/* up to 8 float32 -> float64 (lanes past m are 0) */
AVX512_FCONV static INLINE __m512d load8(__mmask8 m, const float *p) {
    return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, p));
}

/* count (input, weight row) steps: x[r * ps + i] times w[i * opad + 8 v] into acc[r][v]. The
 * pixels' inputs are addressed as q[k * ps] from two pointers (pixels 0-3 and 4-7) with three
 * index registers (ps, 2 ps, 3 ps): otherwise the compiler keeps the 8 offsets r * ps in vector
 * registers and spills accumulators (the 8 x 1 tile ran at half the FMA rate). */
AVX512_FCONV static INLINE void accumulate(__m512d *acc, const double *x, size_t ps,
                                           const double *w, size_t opad, size_t count,
                                           const int nr, const int nv) {
    const double *q0 = x, *q4 = x + 4 * ps;
    const size_t off[4] = {0, ps, 2 * ps, 3 * ps};
    for (size_t i = 0; i < count; ++i, w += opad, ++q0, ++q4) {
        __m512d wv[4];
        for (int v = 0; v < nv; ++v) wv[v] = _mm512_loadu_pd(w + v * LANES);
        for (int r = 0; r < nr; ++r) {
            const __m512d xv = _mm512_set1_pd((r < 4 ? q0 : q4)[off[r & 3]]);
            for (int v = 0; v < nv; ++v)
                acc[r * nv + v] = _mm512_fmadd_pd(xv, wv[v], acc[r * nv + v]);
        }
    }
}

/* the sign bits (one group: channel oc + 8 v is bit (oc + 8 v) % 64 of a word, 8 channels a
 * byte; the last block clears the bytes past the channels) */
AVX512_FCONV static INLINE void store_tile(const bn_fconv_job *j, const __m512d *acc,
                                           const __mmask8 *m, size_t pixel, size_t oc,
                                           const int nr, const int nv) {
    const size_t o = j->s->o;
    const bn_fconv_sign *sg = j->sign;
    const size_t words = bn_words(o), used = (o + 7) / 8, last = oc + (size_t)nv * LANES >= o;
    for (int r = 0; r < nr; ++r) {
        uint8_t *bytes = (uint8_t *)(sg->out + (pixel + (size_t)r) * words);
        for (int v = 0; v < nv; ++v) {
            const size_t c = oc + (size_t)v * LANES;
            const __m256 z = _mm256_add_ps(_mm512_cvtpd_ps(acc[r * nv + v]),
                                           _mm256_maskz_loadu_ps(m[v], sg->bias + c));
            const __m256 t = _mm256_maskz_loadu_ps(m[v], sg->thresh + c);
            const unsigned ge = _mm256_mask_cmp_ps_mask(m[v], z, t, _CMP_GE_OQ);
            const unsigned le = _mm256_mask_cmp_ps_mask(m[v], z, t, _CMP_LE_OQ);
            const unsigned f = j->flip8[c / LANES];
            bytes[c / LANES] = (uint8_t)((ge & ~f) | (le & f));
        }
        if (last) memset(bytes + used, 0, words * 8 - used);
    }
}

/* the sign path (one group): nr pixels from `pixel` (band input at x) x nv vectors of output
 * channels [oc, oc + 8 nv); acc: nr * nv vectors (the caller's array of exactly that size, so
 * that the compiler keeps it in registers) */
AVX512_FCONV static INLINE void tile(const bn_fconv_job *j, const bn_fconv_band *b,
                                     const double *x, size_t pixel, size_t oc, const int nr,
                                     const int nv, __m512d *acc) {
    const bn_fconv_shape *s = j->s;
    const size_t ps = s->sw * s->c, opad = j->opad;
    __mmask8 m[4];
    for (int v = 0; v < nv; ++v) {
        const size_t lo = oc + (size_t)v * LANES;
        m[v] = lo < s->o ? lanes_upto(s->o - lo) : 0;
        for (int r = 0; r < nr; ++r) acc[r * nv + v] = _mm512_setzero_pd();
    }
    const double *w = j->panels + oc;
    for (size_t ky = 0; ky < s->kh; ++ky) {
        const double *xr = x + ky * s->dh * b->ld;
        if (s->dw == 1) { /* a kernel row's taps are contiguous */
            accumulate(acc, xr, ps, w, opad, s->kw * s->c, nr, nv);
            w += s->kw * s->c * opad;
            continue;
        }
        for (size_t kx = 0; kx < s->kw; ++kx, w += s->c * opad)
            accumulate(acc, xr + kx * s->dw * s->c, ps, w, opad, s->c, nr, nv);
    }
    store_tile(j, acc, m, pixel, oc, nr, nv);
}

/* the tile sizes as functions, each with its own accumulator array */
#define DEFINE_TILE(NR, NV)                                                                      \
    AVX512_FCONV static void tile_##NR##x##NV(const bn_fconv_job *j, const bn_fconv_band *b,    \
                                              const double *x, size_t pixel, size_t oc) {       \
        __m512d acc[NR * NV];                                                                    \
        tile(j, b, x, pixel, oc, NR, NV, acc);                                                   \
    }
DEFINE_TILE(6, 4) DEFINE_TILE(4, 4) DEFINE_TILE(2, 4) DEFINE_TILE(1, 4)
DEFINE_TILE(8, 2) DEFINE_TILE(4, 2) DEFINE_TILE(2, 2) DEFINE_TILE(1, 2)
DEFINE_TILE(8, 1) DEFINE_TILE(4, 1) DEFINE_TILE(2, 1) DEFINE_TILE(1, 1)

/* a row's pixels [ox0, ox1) in tiles of NR, then 4, 2, 1 */
#define ROW_TILES(NR, NV)                                                                        \
    do {                                                                                         \
        size_t ox = b->ox0;                                                                      \
        for (; ox + NR <= b->ox1; ox += NR) tile_##NR##x##NV(j, b, X(ox), P(ox), ob);            \
        if (ox + 4 <= b->ox1) { tile_4x##NV(j, b, X(ox), P(ox), ob); ox += 4; }                  \
        if (ox + 2 <= b->ox1) { tile_2x##NV(j, b, X(ox), P(ox), ob); ox += 2; }                  \
        if (ox < b->ox1) tile_1x##NV(j, b, X(ox), P(ox), ob);                                    \
    } while (0)

AVX512_FCONV static void block_avx512(const bn_fconv_job *j, const bn_fconv_band *b,
                                      double *acc) {
    (void)acc;
    const bn_fconv_shape *s = j->s;
    const size_t cols = b->ld / s->c;
    /* the band input of output pixel ox of row oy, and the pixel's index */
#define X(ox) (b->x + ((oy - b->oy0) * s->sh * cols + ((ox) - b->ox0) * s->sw) * s->c)
#define P(ox) ((b->n * s->ho + oy) * s->wo + (ox))
    /* the sign path (one group, all its outputs): one block of 4 (then 2, then 1) vectors of
     * outputs over all rows, then the next, so the block's weights stay in cache */
    const size_t end = s->o;
    size_t ob = 0;
    for (; ob + 3 * LANES < end; ob += 4 * LANES)
        for (size_t oy = b->oy0; oy < b->oy1; ++oy) ROW_TILES(6, 4);
    if (ob + LANES < end) {
        for (size_t oy = b->oy0; oy < b->oy1; ++oy) ROW_TILES(8, 2);
        ob += 2 * LANES;
    }
    if (ob < end)
        for (size_t oy = b->oy0; oy < b->oy1; ++oy) ROW_TILES(8, 1);
#undef X
#undef P
}

AVX512_FCONV static void widen_avx512(const float *x, size_t count, double *out) {
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) _mm512_storeu_pd(out + i, load8(0xFF, x + i));
    if (i < count) _mm512_mask_storeu_pd(out + i, lanes_upto(count - i), load8(lanes_upto(count - i), x + i));
}

/* ---- float32 tiles: the real conv, and the float32 sign path (float_conv.c's header says
 * why its bits are the float64 path's), from a float32 band and panels32 ------------------- */
#define LANES32 BN_FCONV_LANES32

AVX512_FCONV static INLINE __mmask16 lanes32_upto(size_t valid) {
    return valid >= LANES32 ? (__mmask16)0xFFFF : (__mmask16)((1u << valid) - 1u);
}

/* one thread's share of the probe: vfmadd231ps on 12 zmm chains, no memory operands */
#define PROBE_ZMM(i) __m512 a##i = _mm512_set1_ps(1.0f + i)
#define PROBE_STEP(i)                                                                            \
    a##i = _mm512_fmadd_ps(a##i, m, c);                                                          \
    __asm__ volatile("" : "+v"(a##i))
AVX512_FCONV static uint64_t probe_avx512(uint64_t iterations) {
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    PROBE_ZMM(0); PROBE_ZMM(1); PROBE_ZMM(2); PROBE_ZMM(3); PROBE_ZMM(4); PROBE_ZMM(5);
    PROBE_ZMM(6); PROBE_ZMM(7); PROBE_ZMM(8); PROBE_ZMM(9); PROBE_ZMM(10); PROBE_ZMM(11);
    for (uint64_t i = 0; i < iterations; ++i) {
        PROBE_STEP(0); PROBE_STEP(1); PROBE_STEP(2); PROBE_STEP(3); PROBE_STEP(4); PROBE_STEP(5);
        PROBE_STEP(6); PROBE_STEP(7); PROBE_STEP(8); PROBE_STEP(9); PROBE_STEP(10); PROBE_STEP(11);
    }
    __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                               _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    __asm__ volatile("" : : "v"(sum));
    return iterations * 12 * LANES32;
}

AVX512_FCONV static INLINE void accumulate32(__m512 *acc, const float *x, size_t ps,
                                             const float *w, size_t opad, size_t count,
                                             const int nr, const int nv) {
    const float *q0 = x, *q4 = x + 4 * ps;
    const size_t off[4] = {0, ps, 2 * ps, 3 * ps};
    for (size_t i = 0; i < count; ++i, w += opad, ++q0, ++q4) {
        __m512 wv[4];
        for (int v = 0; v < nv; ++v) wv[v] = _mm512_loadu_ps(w + v * LANES32);
        for (int r = 0; r < nr; ++r) {
            const __m512 xv = _mm512_set1_ps((r < 4 ? q0 : q4)[off[r & 3]]);
            for (int v = 0; v < nv; ++v)
                acc[r * nv + v] = _mm512_fmadd_ps(xv, wv[v], acc[r * nv + v]);
        }
    }
}

/* the sign bits of nr pixels x nv vectors of 16 channels from oc: decided at s -/+ bound where
 * both ends agree, else by bn_fconv_sign_exact; 16 bits a vector (the last block clears the
 * halves past the channels) */
AVX512_FCONV static INLINE void store_sign32(const bn_fconv_job *j, const bn_fconv_band *b,
                                             const float *x, size_t ps, const __m512 *acc,
                                             size_t pixel, size_t oc, const int nr, const int nv) {
    const bn_fconv_sign *sg = j->sign;
    const size_t o = j->s->o, halves = bn_words(o) * 4, used = (o + 15) / 16;
    for (int v = 0; v < nv; ++v) {
        const size_t c = oc + (size_t)v * LANES32;
        if (c >= o) continue;
        const __mmask16 lanes = o - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (o - c)) - 1u);
        const __m512 bias = _mm512_maskz_loadu_ps(lanes, sg->bias + c);
        const __m512 t = _mm512_maskz_loadu_ps(lanes, sg->thresh + c);
        const __m512 bound = _mm512_loadu_ps(b->bound32 + c);
        const unsigned f = (unsigned)j->flip8[c / 8] |
                           (c / 8 + 1 <= o / 8 ? (unsigned)j->flip8[c / 8 + 1] << 8 : 0u);
        for (int r = 0; r < nr; ++r) {
            unsigned bits, unsure = bn_sign32_certain(acc[r * nv + v], bound, bias, t, f,
                                                      lanes, &bits);
            for (; unsure; unsure &= unsure - 1) {
                const unsigned l = (unsigned)__builtin_ctz(unsure);
                bits |= (unsigned)bn_fconv_sign_exact(j, b, x + (size_t)r * ps, c + l) << l;
            }
            uint16_t *row = (uint16_t *)(sg->out + (pixel + (size_t)r) * (halves / 4));
            row[c / 16] = (uint16_t)bits;
            if (c / 16 + 1 == used)
                for (size_t h = used; h < halves; ++h) row[h] = 0;
        }
    }
}

/* nr pixels x nv vectors of 16 output channels [oc, oc + 16 nv) of group g (block offset ob in
 * the group's panel rows): the real conv's floats from its bias, or the sign path's bits */
AVX512_FCONV static INLINE void tile32(const bn_fconv_job *j, const bn_fconv_band *b,
                                       const float *x, size_t pixel, size_t g, size_t ob,
                                       const int nr, const int nv, __m512 *acc) {
    const bn_fconv_shape *s = j->s;
    const size_t oc = g * j->og + ob, ps = s->sw * s->c, opad = j->opad32;
    __mmask16 m[4];
    for (int v = 0; v < nv; ++v) {
        const size_t lo = ob + (size_t)v * LANES32;
        m[v] = lo < j->og ? lanes32_upto(j->og - lo) : 0;
        const __m512 start = j->out ? _mm512_maskz_loadu_ps(m[v], j->bias + oc + (size_t)v * LANES32)
                                    : _mm512_setzero_ps();
        for (int r = 0; r < nr; ++r) acc[r * nv + v] = start;
    }
    const float *w = j->panels32 + g * s->kh * s->kw * j->cg * opad + ob;
    const int one_run = s->dw == 1 && j->cg == s->c; /* a kernel row's taps are contiguous */
    for (size_t ky = 0; ky < s->kh; ++ky) {
        const float *xr = x + ky * s->dh * b->ld + g * j->cg;
        if (one_run) {
            accumulate32(acc, xr, ps, w, opad, s->kw * j->cg, nr, nv);
            w += s->kw * j->cg * opad;
            continue;
        }
        for (size_t kx = 0; kx < s->kw; ++kx, w += j->cg * opad)
            accumulate32(acc, xr + kx * s->dw * s->c, ps, w, opad, j->cg, nr, nv);
    }
    if (!j->out) {
        store_sign32(j, b, x, ps, acc, pixel, ob, nr, nv);
        return;
    }
    for (int r = 0; r < nr; ++r)
        for (int v = 0; v < nv; ++v)
            _mm512_mask_storeu_ps(j->out + (pixel + (size_t)r) * s->o + oc + (size_t)v * LANES32,
                                  m[v], acc[r * nv + v]);
}

#define DEFINE_TILE32(NR, NV)                                                                    \
    AVX512_FCONV static void tile32_##NR##x##NV(const bn_fconv_job *j, const bn_fconv_band *b,  \
                                                const float *x, size_t pixel, size_t g,         \
                                                size_t ob) {                                    \
        __m512 acc[NR * NV];                                                                     \
        tile32(j, b, x, pixel, g, ob, NR, NV, acc);                                              \
    }
DEFINE_TILE32(6, 4) DEFINE_TILE32(4, 4) DEFINE_TILE32(2, 4) DEFINE_TILE32(1, 4)
DEFINE_TILE32(8, 2) DEFINE_TILE32(4, 2) DEFINE_TILE32(2, 2) DEFINE_TILE32(1, 2)
DEFINE_TILE32(8, 1) DEFINE_TILE32(4, 1) DEFINE_TILE32(2, 1) DEFINE_TILE32(1, 1)

#define ROW_TILES32(NR, NV)                                                                      \
    do {                                                                                         \
        size_t ox = b->ox0;                                                                      \
        for (; ox + NR <= b->ox1; ox += NR) tile32_##NR##x##NV(j, b, X32(ox), P32(ox), g, ob);   \
        if (ox + 4 <= b->ox1) { tile32_4x##NV(j, b, X32(ox), P32(ox), g, ob); ox += 4; }         \
        if (ox + 2 <= b->ox1) { tile32_2x##NV(j, b, X32(ox), P32(ox), g, ob); ox += 2; }         \
        if (ox < b->ox1) tile32_1x##NV(j, b, X32(ox), P32(ox), g, ob);                           \
    } while (0)
/* the band input of output pixel ox of row oy, and the pixel's index */
#define X32(ox) (b->x32 + ((oy - b->oy0) * s->sh * cols + ((ox) - b->ox0) * s->sw) * s->c)
#define P32(ox) ((b->n * s->ho + oy) * s->wo + (ox))

/* group g's outputs [ob, end) of the band's rows: one block of 4 (then 2, then 1) vectors over
 * all rows, then the next, so the block's weights stay in cache */
AVX512_FCONV static void band_tiles32(const bn_fconv_job *j, const bn_fconv_band *b, size_t g,
                                      size_t ob, size_t end) {
    const bn_fconv_shape *s = j->s;
    const size_t cols = b->ld / s->c;
    for (; ob + 3 * LANES32 < end; ob += 4 * LANES32)
        for (size_t oy = b->oy0; oy < b->oy1; ++oy) ROW_TILES32(6, 4);
    if (ob + LANES32 < end) {
        for (size_t oy = b->oy0; oy < b->oy1; ++oy) ROW_TILES32(8, 2);
        ob += 2 * LANES32;
    }
    if (ob < end)
        for (size_t oy = b->oy0; oy < b->oy1; ++oy) ROW_TILES32(8, 1);
}

/* the real conv, depthwise: nr pixels x nv vectors of 16 channels from cb (taps only: one
 * channel per group); rows[ky]: the pixels' input in tap row ky (bn_fconv_depthwise_rows: in
 * place, float32) */
AVX512_FCONV static INLINE void depthwise_tile32(const bn_fconv_job *j, const float *const *rows,
                                                 size_t pixel, size_t cb, const int nr,
                                                 const int nv, __m512 *acc) {
    const bn_fconv_shape *s = j->s;
    const size_t ps = s->sw * s->c;
    __mmask16 m[4];
    for (int v = 0; v < nv; ++v) {
        const size_t lo = cb + (size_t)v * LANES32;
        m[v] = lanes32_upto(s->c - lo);
        const __m512 start = _mm512_maskz_loadu_ps(m[v], j->bias + lo);
        for (int r = 0; r < nr; ++r) acc[r * nv + v] = start;
    }
    for (size_t ky = 0; ky < s->kh; ++ky)
        for (size_t kx = 0; kx < s->kw; ++kx) {
            const float *xt = rows[ky] + kx * s->dw * s->c + cb;
            const float *wt = j->panels32 + (ky * s->kw + kx) * j->opad32 + cb;
            for (int v = 0; v < nv; ++v) {
                const __m512 w = _mm512_loadu_ps(wt + v * LANES32);
                for (int r = 0; r < nr; ++r)
                    acc[r * nv + v] = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(m[v], xt + (size_t)r * ps + (size_t)v * LANES32), w,
                        acc[r * nv + v]);
            }
        }
    for (int r = 0; r < nr; ++r)
        for (int v = 0; v < nv; ++v)
            _mm512_mask_storeu_ps(j->out + (pixel + (size_t)r) * s->o + cb + (size_t)v * LANES32,
                                  m[v], acc[r * nv + v]);
}

#define DEFINE_DEPTHWISE32(NR, NV)                                                               \
    AVX512_FCONV static void depthwise32_##NR##x##NV(const bn_fconv_job *j,                     \
                                                     const bn_fconv_band *b, size_t oy,         \
                                                     size_t ox, size_t cb, const float **rows) {\
        __m512 acc[NR * NV];                                                                     \
        bn_fconv_depthwise_rows(j, b, oy, ox, NR, cb, NV * LANES32, rows);                       \
        depthwise_tile32(j, rows, (b->n * j->s->ho + oy) * j->s->wo + ox, cb, NR, NV, acc);      \
    }
DEFINE_DEPTHWISE32(6, 4) DEFINE_DEPTHWISE32(4, 4) DEFINE_DEPTHWISE32(2, 4)
DEFINE_DEPTHWISE32(1, 4) DEFINE_DEPTHWISE32(6, 2) DEFINE_DEPTHWISE32(4, 2)
DEFINE_DEPTHWISE32(2, 2) DEFINE_DEPTHWISE32(1, 2) DEFINE_DEPTHWISE32(6, 1)
DEFINE_DEPTHWISE32(4, 1) DEFINE_DEPTHWISE32(2, 1) DEFINE_DEPTHWISE32(1, 1)

/* a row's pixels in depthwise tiles of NV vectors of channels: those with a tap on the padding
 * ([ox0, in0) and [in1, ox1)) one at a time (each copies its padded input: a patch), the
 * interior in tiles of 6, then 4, 2, 1 pixels that read the image in place */
#define DEPTHWISE_ROW32(NV)                                                                      \
    do {                                                                                         \
        size_t ox = b->ox0;                                                                      \
        for (; ox < in0; ++ox) depthwise32_1x##NV(j, b, oy, ox, cb, rows);                       \
        for (; ox + 6 <= in1; ox += 6) depthwise32_6x##NV(j, b, oy, ox, cb, rows);               \
        if (ox + 4 <= in1) { depthwise32_4x##NV(j, b, oy, ox, cb, rows); ox += 4; }              \
        if (ox + 2 <= in1) { depthwise32_2x##NV(j, b, oy, ox, cb, rows); ox += 2; }              \
        for (; ox < b->ox1; ++ox) depthwise32_1x##NV(j, b, oy, ox, cb, rows);                    \
    } while (0)

AVX512_FCONV static void depthwise_band32(const bn_fconv_job *j, const bn_fconv_band *b,
                                          double *room) {
    const bn_fconv_shape *s = j->s;
    const float **rows = (const float **)(room + s->o + LANES);
    /* the band's columns whose taps are all inside the image: [in0, in1) */
    const size_t reach = (s->kw - 1) * s->dw + 1;
    size_t in0 = (s->pw + s->sw - 1) / s->sw, in1 = 0;
    if (s->pw + s->w >= reach) in1 = (s->pw + s->w - reach) / s->sw + 1;
    in0 = in0 < b->ox0 ? b->ox0 : in0 > b->ox1 ? b->ox1 : in0;
    in1 = in1 < in0 ? in0 : in1 > b->ox1 ? b->ox1 : in1;
    for (size_t oy = b->oy0; oy < b->oy1; ++oy) {
        size_t cb = 0;
        for (; cb + 3 * LANES32 < s->c; cb += 4 * LANES32) DEPTHWISE_ROW32(4);
        if (cb + LANES32 < s->c) {
            DEPTHWISE_ROW32(2);
            cb += 2 * LANES32;
        }
        if (cb < s->c) DEPTHWISE_ROW32(1);
    }
}

/* the real conv's dense row (1x1 conv of a 1x1 map, one group, fewer pixels than a small tile):
 * all the band's sums in memory (acc, in L1) and the weights streamed once in panel order, 4
 * input channels per pass over acc; tiles would walk each output block's weights down a column
 * with one page stride per input channel. Each sum still takes its terms in input-channel order. */
AVX512_FCONV static void dense_row32(const bn_fconv_job *j, const float *x, size_t pixel,
                                     size_t o0, size_t o1, float *acc) {
    const size_t k = j->s->c, o = j->s->o, opad = j->opad32, end = o1 < opad ? o1 : opad;
    for (size_t v = o0; v < end; v += LANES32)
        _mm512_storeu_ps(acc + v, _mm512_maskz_loadu_ps(v < o ? lanes32_upto(o - v) : 0,
                                                        j->bias + v));
    size_t ci = 0;
    for (; ci + 4 <= k; ci += 4) {
        const __m512 x0 = _mm512_set1_ps(x[ci]), x1 = _mm512_set1_ps(x[ci + 1]);
        const __m512 x2 = _mm512_set1_ps(x[ci + 2]), x3 = _mm512_set1_ps(x[ci + 3]);
        const float *w = j->panels32 + ci * opad;
        for (size_t v = o0; v < end; v += LANES32) {
            __m512 a = _mm512_loadu_ps(acc + v);
            a = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w + v), a);
            a = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w + opad + v), a);
            a = _mm512_fmadd_ps(x2, _mm512_loadu_ps(w + 2 * opad + v), a);
            a = _mm512_fmadd_ps(x3, _mm512_loadu_ps(w + 3 * opad + v), a);
            _mm512_storeu_ps(acc + v, a);
        }
    }
    for (; ci < k; ++ci) {
        const __m512 xv = _mm512_set1_ps(x[ci]);
        const float *w = j->panels32 + ci * opad;
        for (size_t v = o0; v < end; v += LANES32)
            _mm512_storeu_ps(acc + v, _mm512_fmadd_ps(xv, _mm512_loadu_ps(w + v),
                                                      _mm512_loadu_ps(acc + v)));
    }
    for (size_t v = o0; v < end && v < o; v += LANES32)
        _mm512_mask_storeu_ps(j->out + pixel * o + v, lanes32_upto(o - v), _mm512_loadu_ps(acc + v));
}

/* the real conv's outputs of a band */
AVX512_FCONV static void block32_avx512(const bn_fconv_job *j, const bn_fconv_band *b,
                                        double *room) {
    const bn_fconv_shape *s = j->s;
    if (j->depthwise) {
        depthwise_band32(j, b, room);
        return;
    }
    const size_t cols = b->ld / s->c;
    if (s->kh == 1 && s->kw == 1 && s->groups == 1 && b->ox1 - b->ox0 < 4) {
        for (size_t oy = b->oy0; oy < b->oy1; ++oy)
            for (size_t ox = b->ox0; ox < b->ox1; ++ox)
                dense_row32(j, X32(ox), P32(ox), b->o0, b->o1, (float *)room);
        return;
    }
    for (size_t g = 0; g < s->groups; ++g) /* one group: the band's outputs [o0, o1) */
        band_tiles32(j, b, g, s->groups == 1 ? b->o0 : 0,
                     s->groups == 1 && b->o1 < j->og ? b->o1 : j->og);
}

/* max |x| of count float32 values, INFINITY when one is inf or NaN: |x| as unsigned bits
 * orders as the floats do, and inf / NaN are the bit patterns from 0x7F800000 on */
AVX512_FCONV static float band_max32(const float *x, size_t count) {
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
    __m512i m = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + LANES32 <= count; i += LANES32)
        m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_loadu_si512((const void *)(x + i)), magnitude));
    if (i < count)
        m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_maskz_loadu_epi32(
            (__mmask16)((1u << (count - i)) - 1u), x + i), magnitude));
    const uint32_t bits = _mm512_reduce_max_epu32(m);
    float f;
    memcpy(&f, &bits, sizeof f);
    return bits < 0x7F800000u ? f : INFINITY;
}

AVX512_FCONV static int sign_block32_avx512(const bn_fconv_job *j, bn_fconv_band *b, size_t count,
                                            float *room) {
    const float xmax = band_max32(b->x32, count);
    if (!(xmax < INFINITY)) return 1;
    const __m512 m = _mm512_set1_ps(xmax), tiny = _mm512_set1_ps(j->tiny32);
    for (size_t c = 0; c < j->opad32; c += LANES32)
        _mm512_storeu_ps(room + c, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(j->factor32 + c), m), tiny));
    b->bound32 = room;
    band_tiles32(j, b, 0, 0, j->s->o);
    return 0;
}

#undef X32
#undef P32

const bn_fconv_kernel bn_fconv_avx512 = {"avx512f", block_avx512, block32_avx512, widen_avx512,
                                         probe_avx512, sign_block32_avx512};
#endif
