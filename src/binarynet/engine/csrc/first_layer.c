/* First layer with uint8 inputs and packed +-1 weights: out[m, n] = sum_i w_ni * x_mi.
 *
 * bitplane_gemm (paper §1.6): x = sum_b 2^b x^b with 0/1 bit planes x^b, and for a 0/1 plane
 * x^b . w = 2 popcount(x^b AND wbit) - popcount(x^b) = popcount(wbit) - popcount(x^b XOR wbit)
 * (as popcount(p AND q) = (popcount(p) + popcount(q) - popcount(p XOR q)) / 2). So
 *     out = 255 * popcount(wbit) - sum_b 2^b popcount(x^b XOR wbit),
 * which runs on the same XOR-popcount tiles as bgemm, with 8 plane rows per input row.
 *
 * int_gemm: the direct integer product. AVX-512: the weight word is used as the byte mask of a
 * masked move, so sum_{w=+1} x comes from vpsadbw with no unpacking (out = 2 * that - sum x);
 * AVX2: vpmaddubsw of x (u8) with the unpacked +-1 weights (s8); portable: plain loops.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#if BN_X86
#include <immintrin.h>
#endif

/* ---- bit planes ----------------------------------------------------------------------------- */
typedef struct {
    int32_t *out; /* output row of the block's first input row */
    size_t ldo;
} plane_ctx;

static void epi_planes(void *vctx, size_t r0, int mr, size_t n0, int nr, const uint32_t *cnt,
                       int ldc) {
    const plane_ctx *c = (const plane_ctx *)vctx;
    for (int i = 0; i < mr; ++i) {
        const size_t r = r0 + (size_t)i; /* plane row: input row r / 8, plane r % 8 */
        int32_t *row = c->out + (r >> 3) * c->ldo + n0;
        for (int j = 0; j < nr; ++j) row[j] -= (int32_t)(cnt[i * ldc + j] << (r & 7));
    }
}

typedef struct {
    const bn_tile_kernels *kr;
    const uint8_t *x;
    const uint64_t *w;
    const int32_t *wpop; /* 255 * popcount(w row) */
    int32_t *out;
    size_t m, n, k, kw, bm, bn, tm;
    const uint64_t *panels; /* panel path (else NULL) */
    bn_scratch scratch;     /* per worker: 8 * bm plane rows */
} plane_job;

static void plane_task(void *vjob, long t, int worker) {
    plane_job *j = (plane_job *)vjob;
    uint64_t *planes = (uint64_t *)bn_scratch_get(&j->scratch, worker);
    if (!planes) return;
    const size_t in = (size_t)t / j->tm, im = (size_t)t % j->tm;
    const size_t m0 = im * j->bm, mb = j->m - m0 < j->bm ? j->m - m0 : j->bm;
    const size_t n0 = in * j->bn, n1 = n0 + j->bn < j->n ? n0 + j->bn : j->n;
    for (size_t i = 0; i < mb; ++i) {
        bn_pack_planes_u8(j->x + (m0 + i) * j->k, j->k, planes + 8 * i * j->kw);
        memcpy(j->out + (m0 + i) * j->n + n0, j->wpop + n0, (n1 - n0) * sizeof(int32_t));
    }
    plane_ctx ctx = {j->out + m0 * j->n, j->n};
    if (j->panels) {
        bn_panel_job job = {j->panels, BN_EPI_PLANES, 0, NULL, ctx.out, j->n, NULL, NULL, NULL, NULL};
        j->kr->panel(planes, j->kw, 8 * mb, n0, n1, j->kw, &job);
    } else {
        bn_gemm_block(j->kr, planes, j->kw, 8 * mb, j->w, j->kw, n0, n1, j->kw, epi_planes, &ctx);
    }
}

int bn_bitplane_gemm(const uint8_t *x, const uint64_t *w, size_t m, size_t n, size_t k,
                     int32_t *out) {
    const size_t kw = bn_words(k);
    int32_t *wpop = (int32_t *)malloc(n * sizeof(int32_t));
    if (!wpop) return -1;
    for (size_t r = 0; r < n; ++r) {
        int32_t pop = 0;
        for (size_t t = 0; t < kw; ++t) pop += (int32_t)bn_popcount64(w[r * kw + t]);
        wpop[r] = 255 * pop;
    }
    plane_job j;
    j.kr = bn_current_tiles();
    j.x = x;
    j.w = w;
    j.wpop = wpop;
    j.out = out;
    j.m = m; j.n = n; j.k = k; j.kw = kw;
    j.bm = bn_block_m(kw) / 8; /* input rows per task (8 plane rows each) */
    j.bn = bn_block_n(kw, 8 * m, n);
    j.tm = (m + j.bm - 1) / j.bm;
    uint64_t *panels = NULL;
    if (bn_use_panels(j.kr, 8 * m, kw)) {
        panels = (uint64_t *)malloc(bn_panel_words(n, kw) * sizeof(uint64_t));
        if (!panels) {
            free(wpop);
            return -1;
        }
        bn_repack_panels(w, n, kw, panels);
    }
    j.panels = panels;
    bn_scratch_init(&j.scratch, 8 * j.bm * kw * sizeof(uint64_t));
    const long tasks = (long)(j.tm * ((n + j.bn - 1) / j.bn));
    bn_parallel_for(tasks, bn_threads_for(8.0 * m * (double)n * (double)kw), plane_task, &j);
    const int failed = j.scratch.failed;
    bn_scratch_free(&j.scratch);
    free(panels);
    free(wpop);
    return failed ? -1 : 0;
}

/* ---- direct integer path -------------------------------------------------------------------- */
#define INT_ROWS 16 /* input rows per task */
#define INT_COLS 64 /* weight rows per task */

/* wpm: the unpacked +-1 weight rows, stride kpad. */
static void int_block_portable(const uint8_t *x, const int8_t *wpm, size_t kpad, size_t m0,
                               size_t m1, size_t n0, size_t n1, size_t n, size_t k, int32_t *out) {
    for (size_t r = m0; r < m1; ++r) {
        const uint8_t *xr = x + r * k;
        for (size_t j = n0; j < n1; ++j) {
            const int8_t *wr = wpm + j * kpad;
            int32_t acc = 0;
            for (size_t i = 0; i < k; ++i) acc += (int32_t)xr[i] * (int32_t)wr[i];
            out[r * n + j] = acc;
        }
    }
}

#if BN_X86
#define AVX512BW_FN static inline __attribute__((target("avx512f,avx512bw"), always_inline))

/* Lane j of the result = sum of the 8 lanes of v_j (transposing reduction). */
AVX512BW_FN __m512i reduce8_epi64(__m512i v0, __m512i v1, __m512i v2, __m512i v3, __m512i v4,
                                  __m512i v5, __m512i v6, __m512i v7) {
    __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
    __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(v2, v3), _mm512_unpackhi_epi64(v2, v3));
    __m512i t2 = _mm512_add_epi64(_mm512_unpacklo_epi64(v4, v5), _mm512_unpackhi_epi64(v4, v5));
    __m512i t3 = _mm512_add_epi64(_mm512_unpacklo_epi64(v6, v7), _mm512_unpackhi_epi64(v6, v7));
    __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(t2, t3, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* One input row x 8 weight rows per step: the weight word is the byte mask that keeps the x
 * bytes where w = +1, vpsadbw sums them; 8 accumulators are reduced together at the end. */
__attribute__((target("avx512f,avx512bw"))) static void
int_block_avx512(const uint8_t *x, const uint64_t *w, size_t m0, size_t m1, size_t n0, size_t n1,
                 size_t n, size_t k, int32_t *out) {
    const size_t kw = bn_words(k);
    const __mmask64 tail = k % 64 ? (((__mmask64)1 << (k % 64)) - 1) : ~(__mmask64)0;
    const __m512i zero = _mm512_setzero_si512();
    for (size_t r = m0; r < m1; ++r) {
        const uint8_t *xr = x + r * k;
        __m512i sx = zero;
        for (size_t t = 0; t < kw; ++t) {
            const __m512i xv = _mm512_maskz_loadu_epi8(t + 1 < kw ? ~(__mmask64)0 : tail, xr + 64 * t);
            sx = _mm512_add_epi64(sx, _mm512_sad_epu8(xv, zero));
        }
        const int64_t sum_x = _mm512_reduce_add_epi64(sx);
        for (size_t j = n0; j < n1; j += 8) {
            const size_t nv = n1 - j < 8 ? n1 - j : 8;
            const uint64_t *wr[8];
            for (size_t q = 0; q < 8; ++q) wr[q] = w + (j + (q < nv ? q : nv - 1)) * kw;
            __m512i p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero,
                    p7 = zero;
            for (size_t t = 0; t < kw; ++t) {
                const __m512i xv =
                    _mm512_maskz_loadu_epi8(t + 1 < kw ? ~(__mmask64)0 : tail, xr + 64 * t);
#define MASKED_SAD(acc, q) acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_maskz_mov_epi8(wr[q][t], xv), zero))
                MASKED_SAD(p0, 0); MASKED_SAD(p1, 1); MASKED_SAD(p2, 2); MASKED_SAD(p3, 3);
                MASKED_SAD(p4, 4); MASKED_SAD(p5, 5); MASKED_SAD(p6, 6); MASKED_SAD(p7, 7);
#undef MASKED_SAD
            }
            int64_t pos[8];
            _mm512_storeu_si512((void *)pos, reduce8_epi64(p0, p1, p2, p3, p4, p5, p6, p7));
            for (size_t q = 0; q < nv; ++q) out[r * n + j + q] = (int32_t)(2 * pos[q] - sum_x);
        }
    }
}

/* wpm rows are padded to kpad (a multiple of 32) with zeros; the x tail is copied to a zeroed
 * 32-byte chunk so no read passes the end of a row. */
__attribute__((target("avx2"))) static void
int_block_avx2(const uint8_t *x, const int8_t *wpm, size_t kpad, size_t m0, size_t m1, size_t n0,
               size_t n1, size_t n, size_t k, int32_t *out) {
    const __m256i ones = _mm256_set1_epi16(1);
    const size_t full = k / 32;
    for (size_t r = m0; r < m1; ++r) {
        const uint8_t *xr = x + r * k;
        uint8_t last[32] = {0};
        if (k % 32) memcpy(last, xr + full * 32, k % 32);
        for (size_t j = n0; j < n1; ++j) {
            const int8_t *wr = wpm + j * kpad;
            __m256i acc = _mm256_setzero_si256();
            for (size_t g = 0; g < full; ++g) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(xr + 32 * g));
                const __m256i wv = _mm256_loadu_si256((const __m256i *)(wr + 32 * g));
                /* |x * w| <= 255, pairs <= 510: vpmaddubsw cannot saturate */
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wv), ones));
            }
            if (k % 32) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)last);
                const __m256i wv = _mm256_loadu_si256((const __m256i *)(wr + 32 * full));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wv), ones));
            }
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
            out[r * n + j] = _mm_cvtsi128_si32(s);
        }
    }
}
#endif

typedef struct {
    int backend;
    const uint8_t *x;
    const uint64_t *w;
    const int8_t *wpm; /* unpacked +-1 weights (AVX2 / portable), rows of kpad */
    size_t m, n, k, kpad, tm;
    int32_t *out;
} int_job;

static void int_task(void *vjob, long t, int worker) {
    const int_job *j = (const int_job *)vjob;
    (void)worker;
    const size_t m0 = ((size_t)t % j->tm) * INT_ROWS, n0 = ((size_t)t / j->tm) * INT_COLS;
    const size_t m1 = m0 + INT_ROWS < j->m ? m0 + INT_ROWS : j->m;
    const size_t n1 = n0 + INT_COLS < j->n ? n0 + INT_COLS : j->n;
#if BN_X86
    if (j->backend == BN_AVX512) {
        int_block_avx512(j->x, j->w, m0, m1, n0, n1, j->n, j->k, j->out);
        return;
    }
    if (j->backend == BN_AVX2) {
        int_block_avx2(j->x, j->wpm, j->kpad, m0, m1, n0, n1, j->n, j->k, j->out);
        return;
    }
#endif
    int_block_portable(j->x, j->wpm, j->kpad, m0, m1, n0, n1, j->n, j->k, j->out);
}

typedef struct {
    const uint64_t *w;
    int8_t *wpm;
    size_t n, k, kpad;
} unpack_job;

static void unpack_row(void *vjob, long r, int worker) {
    const unpack_job *u = (const unpack_job *)vjob;
    const size_t kw = bn_words(u->k);
    const uint64_t *src = u->w + (size_t)r * kw;
    int8_t *dst = u->wpm + (size_t)r * u->kpad;
    (void)worker;
    for (size_t t = 0; t < kw; ++t) {
        const uint64_t v = src[t];
        const size_t count = u->k - 64 * t < 64 ? u->k - 64 * t : 64;
        for (size_t b = 0; b < count; ++b) dst[64 * t + b] = (int8_t)(2 * (int)((v >> b) & 1) - 1);
    }
}

int bn_int_gemm(const uint8_t *x, const uint64_t *w, size_t m, size_t n, size_t k, int32_t *out) {
    int_job j = {bn_get_backend(), x, w, NULL, m, n, k, (k + 31) / 32 * 32,
                 (m + INT_ROWS - 1) / INT_ROWS, out};
    int8_t *wpm = NULL;
    if (j.backend != BN_AVX512) { /* unpack the weights to +-1 bytes, zero-padded to kpad */
        wpm = (int8_t *)calloc(n * j.kpad, 1);
        if (!wpm) return -1;
        unpack_job u = {w, wpm, n, k, j.kpad};
        bn_parallel_for((long)n, bn_threads_for((double)n * (double)k / 8), unpack_row, &u);
        j.wpm = wpm;
    }
    const long tasks = (long)(j.tm * ((n + INT_COLS - 1) / INT_COLS));
    bn_parallel_for(tasks, bn_threads_for((double)m * (double)n * (double)k / 64), int_task, &j);
    free(wpm);
    return 0;
}
