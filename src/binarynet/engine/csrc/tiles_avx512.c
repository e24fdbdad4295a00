/* AVX-512 VPOPCNTDQ popcount tiles.
 *
 * Each step loads 8 words (512 bits) of every A and W row of the tile, and accumulates
 * vpopcntq(a XOR w) per 64-bit lane for every (A row, W row) pair; the lanes are summed once at
 * the end by a transposing reduction (8 accumulators -> one vector of 8 sums). The K tail uses
 * zero-masked loads, so both operands read 0 there and add nothing.
 */
#include "core.h"

#if BN_X86
#include <immintrin.h>

#define AVX512_FN static inline __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq"), always_inline))
#define AVX512_KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq")))

/* Lane j of the result = sum of the 8 lanes of v_j. */
AVX512_FN __m512i reduce8(__m512i v0, __m512i v1, __m512i v2, __m512i v3, __m512i v4,
                          __m512i v5, __m512i v6, __m512i v7) {
    /* pairs inside 128-bit lanes: (v0,v1) -> [v0 lo+hi, v1 lo+hi] per 128-bit lane */
    __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
    __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(v2, v3), _mm512_unpackhi_epi64(v2, v3));
    __m512i t2 = _mm512_add_epi64(_mm512_unpacklo_epi64(v4, v5), _mm512_unpackhi_epi64(v4, v5));
    __m512i t3 = _mm512_add_epi64(_mm512_unpacklo_epi64(v6, v7), _mm512_unpackhi_epi64(v6, v7));
    /* 128-bit lanes (0,1) and (2,3) of two vectors added: [t0 01, t0 23, t1 01, t1 23] */
    __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(t2, t3, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lanes of the step at word t: all 8, or the words left before kw (zero-masked loads read 0
 * there in both operands, which adds nothing). A full mask costs the same as a plain load. */
static inline __mmask8 step_mask(size_t left) {
    return left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
}
#define LOAD(p) _mm512_maskz_loadu_epi64(m, (const void *)(p))

#define POPX(acc, x, y) acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(x, y)))

/* 4 rows of A x 4 rows of W: 16 accumulators + 8 operands in the 32 zmm registers. */
#define TILE_4X4_STEP(LOAD)                                                                      \
    do {                                                                                         \
        __m512i x0 = LOAD(a0 + t), x1 = LOAD(a1 + t), x2 = LOAD(a2 + t), x3 = LOAD(a3 + t);      \
        __m512i y0 = LOAD(w0 + t), y1 = LOAD(w1 + t), y2 = LOAD(w2 + t), y3 = LOAD(w3 + t);      \
        POPX(c00, x0, y0); POPX(c01, x0, y1); POPX(c02, x0, y2); POPX(c03, x0, y3);              \
        POPX(c10, x1, y0); POPX(c11, x1, y1); POPX(c12, x1, y2); POPX(c13, x1, y3);              \
        POPX(c20, x2, y0); POPX(c21, x2, y1); POPX(c22, x2, y2); POPX(c23, x2, y3);              \
        POPX(c30, x3, y0); POPX(c31, x3, y1); POPX(c32, x3, y2); POPX(c33, x3, y3);              \
    } while (0)

AVX512_KERNEL static void tile_4x4(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                                   uint32_t *cnt) {
    const uint64_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    const uint64_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00,
            c12 = c00, c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00,
            c31 = c00, c32 = c00, c33 = c00;
    for (size_t t = 0; t < kw; t += 8) {
        const __mmask8 m = step_mask(kw - t);
        TILE_4X4_STEP(LOAD);
    }
    __m512i r0 = reduce8(c00, c01, c02, c03, c10, c11, c12, c13);
    __m512i r1 = reduce8(c20, c21, c22, c23, c30, c31, c32, c33);
    _mm256_storeu_si256((__m256i *)cnt, _mm512_cvtepi64_epi32(r0));
    _mm256_storeu_si256((__m256i *)(cnt + 8), _mm512_cvtepi64_epi32(r1));
}

/* 1 row of A x 8 rows of W (GEMV): the A row is re-read from L1, W is streamed once. */
#define THIN_1X8_STEP(LOAD)                                                                      \
    do {                                                                                         \
        __m512i x = LOAD(a0 + t);                                                                \
        POPX(c0, x, LOAD(w0 + t)); POPX(c1, x, LOAD(w1 + t));                                   \
        POPX(c2, x, LOAD(w2 + t)); POPX(c3, x, LOAD(w3 + t));                                   \
        POPX(c4, x, LOAD(w4 + t)); POPX(c5, x, LOAD(w5 + t));                                   \
        POPX(c6, x, LOAD(w6 + t)); POPX(c7, x, LOAD(w7 + t));                                   \
    } while (0)

AVX512_KERNEL static void thin_1x8(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                                   uint32_t *cnt) {
    const uint64_t *a0 = a[0];
    const uint64_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5],
                   *w6 = w[6], *w7 = w[7];
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
            c7 = c0;
    for (size_t t = 0; t < kw; t += 8) {
        const __mmask8 m = step_mask(kw - t);
        THIN_1X8_STEP(LOAD);
    }
    _mm256_storeu_si256((__m256i *)cnt, _mm512_cvtepi64_epi32(reduce8(c0, c1, c2, c3, c4, c5, c6, c7)));
}

/* ---- panel path ------------------------------------------------------------------------- */
#define PANEL_MR 8 /* A rows per panel tile; x 16 outputs (two panels) = 16 accumulators */

/* counts[i] = 16 int32 sums of A row i against the 16 W rows of panels p and p + 1. */
AVX512_FN void panel_tile(const uint64_t *const *a, const uint64_t *panel, size_t kw,
                          __m512i *counts) {
    const uint64_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5],
                   *a6 = a[6], *a7 = a[7];
    const uint64_t *q0 = panel, *q1 = panel + 8 * kw;
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
            c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
            c61 = c00, c70 = c00, c71 = c00;
    for (size_t t = 0; t < kw; ++t) {
        const __m512i y0 = _mm512_loadu_si512((const void *)(q0 + 8 * t));
        const __m512i y1 = _mm512_loadu_si512((const void *)(q1 + 8 * t));
        __m512i x;
#define ROW(i)                                                                                   \
    x = _mm512_set1_epi64((long long)a##i[t]);                                                   \
    POPX(c##i##0, x, y0);                                                                        \
    POPX(c##i##1, x, y1)
        ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7);
#undef ROW
    }
#define OUT(i)                                                                                   \
    counts[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(c##i##0)),        \
                                   _mm512_cvtepi64_epi32(c##i##1), 1)
    OUT(0); OUT(1); OUT(2); OUT(3); OUT(4); OUT(5); OUT(6); OUT(7);
#undef OUT
}

/* Epilogue of one A row (block row m) for outputs [n, n + 16) (lanes past nv masked off). */
AVX512_FN void panel_epilogue(const bn_panel_job *job, size_t m, size_t n, int nv, __m512i cnt) {
    const __mmask16 lanes = (__mmask16)((1u << nv) - 1u);
    const int32_t k = job->row_k ? job->row_k[m] : job->k;
    if (job->count_le && k == job->k) { /* one compare on the counts themselves */
        const __mmask16 flip = (__mmask16)(job->flip_bits[n >> 6] >> (n & 63));
        const __m512i c = _mm512_maskz_loadu_epi32(lanes, job->count_le + n);
        const __mmask16 bits = (__mmask16)((_mm512_mask_cmple_epi32_mask(lanes, cnt, c) ^ flip) & lanes);
        ((uint64_t *)job->out)[m * job->ldo + (n >> 6)] |= (uint64_t)bits << (n & 63);
        return;
    }
    if (k == -1) { /* this row needs the scalar epilogue (a conv border pixel) */
        uint32_t tmp[16];
        _mm512_storeu_si512((void *)tmp, cnt);
        job->epi(job->epi_ctx, m, 1, n, nv, tmp, 16);
        return;
    }
    /* a conv border pixel's k differs per output (conv.c plan_border) */
    const __m512i kv = k >= 0 ? _mm512_set1_epi32(k)
                              : _mm512_maskz_loadu_epi32(lanes, job->kvec + (size_t)(-2 - k) * job->ldk + n);
    const __m512i dot = _mm512_sub_epi32(kv, _mm512_slli_epi32(cnt, 1));
    if (job->kind == BN_EPI_DOT) {
        _mm512_mask_storeu_epi32((int32_t *)job->out + m * job->ldo + n, lanes, dot);
        return;
    }
    const __m512i t = _mm512_maskz_loadu_epi32(lanes, job->thresh + n);
    const __mmask16 flip = (__mmask16)(job->flip_bits[n >> 6] >> (n & 63));
    const __mmask16 ge = _mm512_cmpge_epi32_mask(dot, t), le = _mm512_cmple_epi32_mask(dot, t);
    const __mmask16 bits = (__mmask16)(((ge & ~flip) | (le & flip)) & lanes);
    ((uint64_t *)job->out)[m * job->ldo + (n >> 6)] |= (uint64_t)bits << (n & 63);
}

/* Bit planes: the 8 rows of a tile are the 8 planes of one input row, so the tile's counts
 * combine in registers, sum_b 2^b count_b, and each output is written once:
 * out = 255 popcount(w) - that (first_layer.c). */
AVX512_FN void panel_planes(const uint64_t *a, size_t lda, size_t mb, size_t n0, size_t n1,
                            size_t kw, const bn_panel_job *job) {
    __m512i counts[PANEL_MR];
    const uint64_t *ap[PANEL_MR];
    for (size_t n = n0; n < n1; n += 16) {
        const int nv = n1 - n < 16 ? (int)(n1 - n) : 16;
        const __mmask16 lanes = (__mmask16)((1u << nv) - 1u);
        const uint64_t *panel = job->panels + (n / 8) * kw * 8;
        const __m512i wpop = _mm512_maskz_loadu_epi32(lanes, job->thresh + n);
        for (size_t i = 0; i < mb; i += PANEL_MR) {
            for (size_t r = 0; r < PANEL_MR; ++r) ap[r] = a + (i + r) * lda;
            panel_tile(ap, panel, kw, counts);
            __m512i sum = counts[0];
            for (int r = 1; r < PANEL_MR; ++r)
                sum = _mm512_add_epi32(sum, _mm512_slli_epi32(counts[r], (unsigned)r));
            int32_t *row = (int32_t *)job->out + (i / PANEL_MR) * job->ldo + n;
            const __m512i out = _mm512_sub_epi32(wpop, sum);
            if (nv == 16)
                _mm512_storeu_si512((void *)row, out);
            else
                _mm512_mask_storeu_epi32(row, lanes, out);
        }
    }
}

/* The output transform: a row tile's sums for a span of outputs are gathered as float32 in L1,
 * then go to the chunk kernel in one call, so the residual is read and y written as contiguous
 * runs, and the call and per-step dispatch are paid once per span and row tile (at 64
 * channels, one call per 16 outputs of one row, sweeping the rows once per 16 outputs, made
 * the transform 3x slower than the threshold kernel). The span's panels (span x kw words)
 * stay in L1 while the rows are swept. */
#define TRANSFORM_SPAN 256
#define TRANSFORM_PANEL_BYTES (32u * 1024u)
AVX512_FN void panel_transform(const uint64_t *a, size_t lda, size_t mb, size_t n0, size_t n1,
                               size_t kw, const bn_panel_job *job) {
    __m512i counts[PANEL_MR];
    const uint64_t *ap[PANEL_MR];
    float y[PANEL_MR][TRANSFORM_SPAN];
    const bn_transform *t = job->transform;
    size_t span = TRANSFORM_PANEL_BYTES / (kw * 8) / 16 * 16;
    span = span < 16 ? 16 : span > TRANSFORM_SPAN ? TRANSFORM_SPAN : span;
    for (size_t s0 = n0; s0 < n1; s0 += span) {
        const size_t s1 = n1 - s0 < span ? n1 : s0 + span;
        for (size_t i = 0; i < mb; i += PANEL_MR) {
            const size_t mv = mb - i < PANEL_MR ? mb - i : PANEL_MR;
            for (size_t r = 0; r < PANEL_MR; ++r) ap[r] = a + (i + (r < mv ? r : mv - 1)) * lda;
            int border = 0; /* a row with its own k (conv borders): the general loop below */
            for (size_t r = 0; r < mv && job->row_k; ++r) border |= job->row_k[i + r] != job->k;
            for (size_t n = s0; n < s1; n += 16) {
                const int nv = s1 - n < 16 ? (int)(s1 - n) : 16;
                const __mmask16 lanes = (__mmask16)((1u << nv) - 1u);
                panel_tile(ap, job->panels + (n / 8) * kw * 8, kw, counts);
                if (!border) {
                    const __m512i kv = _mm512_set1_epi32(job->k);
                    for (size_t r = 0; r < mv; ++r)
                        _mm512_storeu_ps(y[r] + (n - s0), _mm512_cvtepi32_ps(_mm512_sub_epi32(
                                                              kv, _mm512_slli_epi32(counts[r], 1))));
                    continue;
                }
                for (size_t r = 0; r < mv; ++r) {
                    const int32_t k = job->row_k[i + r];
                    if (k == -1) { /* a conv border pixel: the scalar epilogue, 16 at a time */
                        uint32_t tmp[16];
                        _mm512_storeu_si512((void *)tmp, counts[r]);
                        job->epi(job->epi_ctx, i + r, 1, n, nv, tmp, 16);
                        continue;
                    }
                    const __m512i kv =
                        k >= 0 ? _mm512_set1_epi32(k)
                               : _mm512_maskz_loadu_epi32(lanes, job->kvec + (size_t)(-2 - k) * job->ldk + n);
                    const __m512i dot = _mm512_sub_epi32(kv, _mm512_slli_epi32(counts[r], 1));
                    _mm512_storeu_ps(y[r] + (n - s0), _mm512_cvtepi32_ps(dot));
                }
            }
            /* runs of rows without the scalar epilogue, in one call each */
            for (size_t r = 0; r < mv;) {
                size_t e = r;
                while (e < mv && (!border || job->row_k[i + e] != -1)) ++e;
                if (e > r) t->chunk(t, job->row0 + i + r, e - r, s0, s1 - s0, y[r], TRANSFORM_SPAN);
                r = e + 1;
            }
        }
    }
}

AVX512_KERNEL static void panel_block(const uint64_t *a, size_t lda, size_t mb, size_t n0,
                                      size_t n1, size_t kw, const bn_panel_job *job) {
    __m512i counts[PANEL_MR];
    const uint64_t *ap[PANEL_MR];
    if (job->kind == BN_EPI_PLANES) {
        panel_planes(a, lda, mb, n0, n1, kw, job);
        return;
    }
    if (job->kind == BN_EPI_TRANSFORM) {
        panel_transform(a, lda, mb, n0, n1, kw, job);
        return;
    }
    for (size_t n = n0; n < n1; n += 16) {
        const int nv = n1 - n < 16 ? (int)(n1 - n) : 16;
        const uint64_t *panel = job->panels + (n / 8) * kw * 8;
        for (size_t i = 0; i < mb; i += PANEL_MR) {
            const size_t mv = mb - i < PANEL_MR ? mb - i : PANEL_MR;
            for (size_t r = 0; r < PANEL_MR; ++r) ap[r] = a + (i + (r < mv ? r : mv - 1)) * lda;
            panel_tile(ap, panel, kw, counts);
            for (size_t r = 0; r < mv; ++r) panel_epilogue(job, i + r, n, nv, counts[r]);
        }
    }
}

const bn_tile_kernels bn_tiles_avx512 = {"avx512vpopcntdq", 4, 4, tile_4x4, 8, thin_1x8,
                                         panel_block, bn_popcount_words_popcnt,
                                         bn_run_popcounts_popcnt};

#endif
