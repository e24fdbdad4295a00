/* first_dense_float: a real-valued input row times packed +-1 weights, summed in float64.
 *
 * A plain float GEMM spends one multiply-add per weight; here the weights are bits, so four
 * inputs at a time are handled by table lookup: for every nibble q of the input (x_4q..x_4q+3)
 * the 16 signed sums T_q[b] = sum_j (bit j of b ? +x : -x) are built once per input row, and an
 * output adds T_q[its 4 weight bits]. With AVX-512 the 16 entries are two zmm registers and
 * vpermt2pd looks up 8 outputs at once (the low 4 bits of each 64-bit index lane select), so
 * one permute and one add do 32 multiply-accumulates, 4x a float64 FMA. The weight words of 8
 * outputs are loaded from panels (made once per model, or per call from 4 rows on) or gathered,
 * into the index vector, and shifted right by 4 per nibble. The permute bounds the speed (about
 * 0.7 ns each on AVX-512 Zen 4, measured: MNIST MLP batch 1, 106k of them, 82 us): float64 table
 * entries allow no wider lookup, which is why this layer stays ~3x slower than the bit planes.
 *
 * Pad bits are 0 and the table rows past k hold +-0 from zero inputs, so they add nothing. Any
 * summation order is acceptable (the runner rounds to float32, and a float64 matmul fixes no
 * order either); integer-valued inputs give exact sums.
 *
 * first_dense_float_sign: the same layer when its outputs are sign bits (z = float32(sum) +
 * bias against a threshold, as the runner decides them from the float64 sums), twice as fast:
 * float32 tables, so one vpermps looks up 16 outputs (64 multiply-accumulates), and float32
 * sums. Their error is bounded: a sum of the terms +-x_i in which each term goes through at
 * most K roundings has |s32 - s| <= gamma_K * sum |x_i| (Higham, Accuracy and Stability of
 * Numerical Algorithms, 2nd ed., §4.2; gamma_K = K u / (1 - K u), u = 2^-24); here K = 16 *
 * words + 2 (two additions in a table entry, then one per nibble), and the float64 sums' error
 * is some 2^29 times smaller. The kernel doubles the bound (b, per row: the double also covers
 * rounding s32 -/+ b to float32, under 2^-24 (sum |x_i| + b) as K >= 18), decides each
 * output at s32 - b and s32 + b, and as z is monotone in the sum, where both agree that is the
 * float64 path's decision. Where they differ, or anything is not finite (overflow, inf, NaN
 * inputs), the output is summed again in float64 (bn_float_sign_exact): a near-tie, some 1 in
 * 10^3 outputs of an MNIST-sized layer. So the bits equal the float64 path's.
 */
#include "core.h"
#include "sign32.h"

#include <math.h>
#include <stdlib.h>

#if BN_X86
#include <immintrin.h>
#endif

#define NIBBLES 16        /* per 64-bit word */
#define TABLE 16          /* entries per nibble */
#define ROWS 4            /* input rows per block */
#define OUT_GROUP 32      /* outputs per block step: 4 vectors of 8 */
#define T_BLOCK_WORDS 3   /* words of tables kept in L1 across the output groups (ROWS x 24 KiB) */
#define PANEL_MIN_ROWS 4  /* input rows from which the weights are regrouped (else gathered) */

static inline double input_at(const void *x, int f64, size_t i) {
    return f64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}

/* tables of one row: kw * 16 nibbles x 16 entries */
static void tables_portable(const void *x, int f64, size_t k, size_t kw, double *t) {
    for (size_t q = 0; q < kw * NIBBLES; ++q, t += TABLE) {
        double v[4];
        for (int j = 0; j < 4; ++j) v[j] = 4 * q + (size_t)j < k ? input_at(x, f64, 4 * q + (size_t)j) : 0.0;
        for (int b = 0; b < TABLE; ++b)
            t[b] = (((b & 1) ? v[0] : -v[0]) + ((b & 2) ? v[1] : -v[1])) +
                   (((b & 4) ? v[2] : -v[2]) + ((b & 8) ? v[3] : -v[3]));
    }
}

/* rows [0, rows) of tables x outputs [n0, n1) -> out (row stride ldo) */
static void block_portable(const double *const *tables, size_t rows, const uint64_t *w,
                           const uint64_t *panels, size_t n0, size_t n1, size_t kw, double *out,
                           size_t ldo) {
    (void)panels;
    for (size_t r = 0; r < rows; ++r) {
        for (size_t o = n0; o < n1; ++o) {
            const uint64_t *wo = w + o * kw;
            const double *t = tables[r];
            double acc = 0.0;
            for (size_t q = 0; q < kw * NIBBLES; ++q, t += TABLE)
                acc += t[(wo[q / NIBBLES] >> (4 * (q % NIBBLES))) & 15];
            out[r * ldo + o] = acc;
        }
    }
}

/* ---- first_dense_float_sign: float32 tables and sums, certain decisions ------------------- */
static inline int sign_of(float z, float t, int flip) { return flip ? z <= t : z >= t; }

int bn_float_sign_exact(const bn_float_sign_job *j, size_t r, size_t o) {
    const float *x = j->x + r * j->k;
    const uint64_t *wo = j->w + o * j->kw;
    /* 8 partial sums and the signs as factors (exact): a branch per term mispredicted half
     * the time, and these decisions cost 3.5 us each; any float64 order is as good */
    double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= j->k; i += 8)
        for (size_t l = 0; l < 8; ++l)
            p[l] += (double)x[i + l] * (double)((int)((wo[(i + l) >> 6] >> ((i + l) & 63) & 1) << 1) - 1);
    for (; i < j->k; ++i)
        p[i & 7] += (double)x[i] * (double)((int)((wo[i >> 6] >> (i & 63) & 1) << 1) - 1);
    const double s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    return sign_of((float)s + j->bias[o], j->thresh[o], j->flip[o]);
}

/* output o of row r from its float32 sum: decided at s32 -/+ b (the row's bound) where both
 * agree */
static inline int sign_decide(const bn_float_sign_job *j, size_t r, size_t o, float s32, float b) {
    const float lo = s32 - b, hi = s32 + b;
    if (fabsf(lo) < INFINITY && fabsf(hi) < INFINITY) {
        const int at_lo = sign_of(lo + j->bias[o], j->thresh[o], j->flip[o]);
        if (at_lo == sign_of(hi + j->bias[o], j->thresh[o], j->flip[o])) return at_lo;
    }
    return bn_float_sign_exact(j, r, o);
}

static double tables32_portable(const float *x, size_t k, size_t kw, float *t) {
    double sum_abs[4] = {0, 0, 0, 0}; /* four chains: one add of latency each per nibble */
    for (size_t q = 0; q < kw * NIBBLES; ++q, t += TABLE) {
        float v[4];
        for (int i = 0; i < 4; ++i) {
            v[i] = 4 * q + (size_t)i < k ? x[4 * q + (size_t)i] : 0.0f;
            sum_abs[i] += fabs((double)v[i]);
        }
        for (int b = 0; b < TABLE; ++b)
            t[b] = (((b & 1) ? v[0] : -v[0]) + ((b & 2) ? v[1] : -v[1])) +
                   (((b & 4) ? v[2] : -v[2]) + ((b & 8) ? v[3] : -v[3]));
    }
    return (sum_abs[0] + sum_abs[1]) + (sum_abs[2] + sum_abs[3]);
}

static void sign_block32_portable(const bn_float_sign_job *j, const float *const *tables,
                                  const float *bounds, size_t m0, size_t rows, size_t n0,
                                  size_t n1) {
    const size_t words = bn_words(j->n);
    for (size_t r = 0; r < rows; ++r) {
        uint64_t word = 0;
        for (size_t o = n0; o < n1; ++o) {
            const uint64_t *wo = j->w + o * j->kw;
            const float *t = tables[r];
            float s = 0.0f;
            for (size_t q = 0; q < j->kw * NIBBLES; ++q, t += TABLE)
                s += t[(wo[q / NIBBLES] >> (4 * (q % NIBBLES))) & 15];
            word |= (uint64_t)sign_decide(j, m0 + r, o, s, bounds[r]) << (o & 63);
            if ((o & 63) == 63 || o + 1 == n1) {
                j->out[(m0 + r) * words + o / 64] = word;
                word = 0;
            }
        }
    }
}

const bn_float_kernel bn_float_portable = {"portable", tables_portable, block_portable,
                                           tables32_portable, sign_block32_portable};

#if BN_X86
#define AVX512_FLOAT __attribute__((target("avx512f")))

AVX512_FLOAT static void tables_avx512(const void *x, int f64, size_t k, size_t kw, double *t) {
    /* lane b of the low vector is entry b, of the high one entry 8 + b (bit 3 set: +x3) */
    const __m512d s0 = _mm512_set_pd(1, -1, 1, -1, 1, -1, 1, -1);
    const __m512d s1 = _mm512_set_pd(1, 1, -1, -1, 1, 1, -1, -1);
    const __m512d s2 = _mm512_set_pd(1, 1, 1, 1, -1, -1, -1, -1);
    for (size_t q = 0; q < kw * NIBBLES; ++q, t += TABLE) {
        double v[4];
        for (int j = 0; j < 4; ++j) v[j] = 4 * q + (size_t)j < k ? input_at(x, f64, 4 * q + (size_t)j) : 0.0;
        const __m512d lo3 = _mm512_add_pd(_mm512_mul_pd(s0, _mm512_set1_pd(v[0])),
                                          _mm512_mul_pd(s1, _mm512_set1_pd(v[1])));
        const __m512d base = _mm512_add_pd(lo3, _mm512_mul_pd(s2, _mm512_set1_pd(v[2])));
        _mm512_storeu_pd(t, _mm512_sub_pd(base, _mm512_set1_pd(v[3])));
        _mm512_storeu_pd(t + 8, _mm512_add_pd(base, _mm512_set1_pd(v[3])));
    }
}

/* Gathers word t of the 8 outputs o + 8g .. o + 8g + 7 (rows past n1 repeat the last one). */
AVX512_FLOAT static inline __m512i gather_words(const uint64_t *w, size_t kw, size_t first,
                                                size_t n1, size_t t) {
    long long idx[8];
    for (int j = 0; j < 8; ++j) {
        const size_t o = first + (size_t)j < n1 ? first + (size_t)j : n1 - 1;
        idx[j] = (long long)(o * kw);
    }
    return _mm512_i64gather_epi64(_mm512_loadu_si512((const void *)idx), (const void *)(w + t), 8);
}

static inline __mmask8 lanes_of(size_t first, size_t n1) {
    return first >= n1 ? 0 : n1 - first >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n1 - first)) - 1u);
}

/* Word t of the 8 outputs from `first` on: one load from the panels, else a gather; none past
 * n1 (the panels end at n rounded up to 16: a group of 32 may reach past them). */
AVX512_FLOAT static inline __m512i output_words(const uint64_t *w, const uint64_t *panels,
                                                size_t kw, size_t first, size_t n1, size_t t) {
    if (first >= n1) return _mm512_setzero_si512();
    if (panels) return _mm512_loadu_si512((const void *)(panels + (first / 8 * kw + t) * 8));
    return gather_words(w, kw, first, n1, t);
}

/* One step of R rows x 4 output vectors: acc[g][r] += T_r,q[idx_g & 15]. R is a constant (the
 * block is inlined per row count), so only the rows there are get looked up: a block of 4 rows
 * for one input row did 4 times the work at batch 1. (Named accumulators, not arrays: the
 * array form compiled to the same inner loop yet ran 7% slower at 4 rows.) */
#define LOOKUP(g, r) acc##g##r = _mm512_add_pd(acc##g##r, _mm512_permutex2var_pd(lo##r, idx##g, hi##r))
#define ROW_STEP(r)                                                                              \
    if ((r) < R) {                                                                               \
        const __m512d lo##r = _mm512_loadu_pd(tables[r] + q * TABLE);                            \
        const __m512d hi##r = _mm512_loadu_pd(tables[r] + q * TABLE + 8);                        \
        LOOKUP(0, r); LOOKUP(1, r); LOOKUP(2, r); LOOKUP(3, r);                                  \
    }
#define ACC_ROW(g) __m512d acc##g##0, acc##g##1, acc##g##2, acc##g##3
#define ACC_LOAD(g, r)                                                                           \
    acc##g##r = first || (r) >= R ? _mm512_setzero_pd()                                          \
                                  : _mm512_maskz_loadu_pd(lanes##g, out + (r) * ldo + o + 8 * (g))
#define ACC_STORE(g, r)                                                                          \
    if ((r) < R && lanes##g) _mm512_mask_storeu_pd(out + (r) * ldo + o + 8 * (g), lanes##g, acc##g##r)

static inline __attribute__((target("avx512f"), always_inline)) void
block_rows(const double *const *tables, const int R, const uint64_t *w, const uint64_t *panels,
           size_t n0, size_t n1, size_t kw, double *out, size_t ldo) {
    for (size_t tb = 0; tb < kw; tb += T_BLOCK_WORDS) {
        const size_t te = tb + T_BLOCK_WORDS < kw ? tb + T_BLOCK_WORDS : kw;
        const int first = tb == 0;
        for (size_t o = n0; o < n1; o += OUT_GROUP) {
            const __mmask8 lanes0 = lanes_of(o, n1), lanes1 = lanes_of(o + 8, n1),
                           lanes2 = lanes_of(o + 16, n1), lanes3 = lanes_of(o + 24, n1);
            ACC_ROW(0); ACC_ROW(1); ACC_ROW(2); ACC_ROW(3);
            /* after the first block of words the partial sums come back from out (only the
             * rows and lanes that exist are loaded or stored) */
            ACC_LOAD(0, 0); ACC_LOAD(0, 1); ACC_LOAD(0, 2); ACC_LOAD(0, 3);
            ACC_LOAD(1, 0); ACC_LOAD(1, 1); ACC_LOAD(1, 2); ACC_LOAD(1, 3);
            ACC_LOAD(2, 0); ACC_LOAD(2, 1); ACC_LOAD(2, 2); ACC_LOAD(2, 3);
            ACC_LOAD(3, 0); ACC_LOAD(3, 1); ACC_LOAD(3, 2); ACC_LOAD(3, 3);
            for (size_t t = tb; t < te; ++t) {
                __m512i idx0 = output_words(w, panels, kw, o, n1, t),
                        idx1 = output_words(w, panels, kw, o + 8, n1, t),
                        idx2 = output_words(w, panels, kw, o + 16, n1, t),
                        idx3 = output_words(w, panels, kw, o + 24, n1, t);
                for (size_t q = t * NIBBLES; q < (t + 1) * NIBBLES; ++q) {
                    /* row by row: 16 accumulators + 4 indices + 2 table vectors in registers */
                    ROW_STEP(0); ROW_STEP(1); ROW_STEP(2); ROW_STEP(3);
                    idx0 = _mm512_srli_epi64(idx0, 4); idx1 = _mm512_srli_epi64(idx1, 4);
                    idx2 = _mm512_srli_epi64(idx2, 4); idx3 = _mm512_srli_epi64(idx3, 4);
                }
            }
            ACC_STORE(0, 0); ACC_STORE(0, 1); ACC_STORE(0, 2); ACC_STORE(0, 3);
            ACC_STORE(1, 0); ACC_STORE(1, 1); ACC_STORE(1, 2); ACC_STORE(1, 3);
            ACC_STORE(2, 0); ACC_STORE(2, 1); ACC_STORE(2, 2); ACC_STORE(2, 3);
            ACC_STORE(3, 0); ACC_STORE(3, 1); ACC_STORE(3, 2); ACC_STORE(3, 3);
        }
    }
}

AVX512_FLOAT static void block_avx512(const double *const *tables, size_t rows, const uint64_t *w,
                                      const uint64_t *panels, size_t n0, size_t n1, size_t kw,
                                      double *out, size_t ldo) {
    switch (rows) {
    case 1: block_rows(tables, 1, w, panels, n0, n1, kw, out, ldo); break;
    case 2: block_rows(tables, 2, w, panels, n0, n1, kw, out, ldo); break;
    case 3: block_rows(tables, 3, w, panels, n0, n1, kw, out, ldo); break;
    default: block_rows(tables, ROWS, w, panels, n0, n1, kw, out, ldo); break;
    }
}

/* float32 tables: lane b is entry b */
AVX512_FLOAT static double tables32_avx512(const float *x, size_t k, size_t kw, float *t) {
    double sum_abs[4] = {0, 0, 0, 0}; /* as in tables32_portable */
    float sign[4][TABLE];
    for (int b = 0; b < TABLE; ++b)
        for (int i = 0; i < 4; ++i) sign[i][b] = (b >> i & 1) ? 1.0f : -1.0f;
    const __m512 s0 = _mm512_loadu_ps(sign[0]), s1 = _mm512_loadu_ps(sign[1]);
    const __m512 s2 = _mm512_loadu_ps(sign[2]), s3 = _mm512_loadu_ps(sign[3]);
    for (size_t q = 0; q < kw * NIBBLES; ++q, t += TABLE) {
        float v[4];
        for (int i = 0; i < 4; ++i) {
            v[i] = 4 * q + (size_t)i < k ? x[4 * q + (size_t)i] : 0.0f;
            sum_abs[i] += fabs((double)v[i]);
        }
        /* products by +-1 are exact */
        const __m512 a = _mm512_add_ps(_mm512_mul_ps(s0, _mm512_set1_ps(v[0])),
                                       _mm512_mul_ps(s1, _mm512_set1_ps(v[1])));
        const __m512 b = _mm512_add_ps(_mm512_mul_ps(s2, _mm512_set1_ps(v[2])),
                                       _mm512_mul_ps(s3, _mm512_set1_ps(v[3])));
        _mm512_storeu_ps(t, _mm512_add_ps(a, b));
    }
    return (sum_abs[0] + sum_abs[1]) + (sum_abs[2] + sum_abs[3]);
}

/* the 32-bit halves (low: inputs 0-31 of word t, high: 32-63) of the 16 outputs from `first`
 * as index lanes: two panel rows of 8 words, interleaved; zeros past the panels */
AVX512_FLOAT static inline void half_words(const bn_float_sign_job *j, size_t first, size_t t,
                                           __m512i *lo, __m512i *hi) {
    const size_t end = (j->n + 15) / 16 * 16; /* the panels' outputs */
    const __m512i a = first < end ? _mm512_loadu_si512((const void *)(j->panels + (first / 8 * j->kw + t) * 8))
                                  : _mm512_setzero_si512();
    const __m512i b = first + 8 < end ? _mm512_loadu_si512((const void *)(j->panels + ((first + 8) / 8 * j->kw + t) * 8))
                                      : _mm512_setzero_si512();
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    *lo = _mm512_permutex2var_epi32(a, even, b);
    *hi = _mm512_permutex2var_epi32(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
}

/* 16 outputs from c of row r (bound b): their sign bits (lanes past n are 0) */
AVX512_FLOAT static inline uint64_t sign_lanes(const bn_float_sign_job *j, size_t r, size_t c,
                                               __m512 s, float b) {
    if (c >= j->n) return 0;
    const __mmask16 lanes = j->n - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (j->n - c)) - 1);
    unsigned bits, unsure = bn_sign32_certain(
        s, _mm512_set1_ps(b), _mm512_maskz_loadu_ps(lanes, j->bias + c),
        _mm512_maskz_loadu_ps(lanes, j->thresh + c),
        (unsigned)(j->flip_bits[c / 64] >> (c % 64)) & 0xFFFFu, lanes, &bits);
    for (; unsure; unsure &= unsure - 1) {
        const unsigned l = (unsigned)__builtin_ctz(unsure);
        bits |= (unsigned)bn_float_sign_exact(j, r, c + l) << l;
    }
    return bits;
}

/* R rows x 64 outputs at a time: 16 accumulators a<v><r>, one table vector per row and
 * nibble, one vpermps per (row, 16 outputs, nibble); named, as in block_rows */
#define LOOKUP32(v, r) a##v##r = _mm512_add_ps(a##v##r, _mm512_permutexvar_ps(i##v, tab##r))
#define ROW32(r)                                                                                 \
    if ((r) < R) {                                                                               \
        const __m512 tab##r = _mm512_loadu_ps(tables[r] + q * TABLE);                            \
        LOOKUP32(0, r); LOOKUP32(1, r); LOOKUP32(2, r); LOOKUP32(3, r);                          \
    }
#define ACC32(v) __m512 a##v##0 = _mm512_setzero_ps(), a##v##1 = a##v##0, a##v##2 = a##v##0,      \
                        a##v##3 = a##v##0
#define WORD32(r)                                                                                \
    if ((r) < R)                                                                                 \
        j->out[(m0 + (r)) * words + o / 64] =                                                    \
            sign_lanes(j, m0 + (r), o, a0##r, bounds[r]) |                                       \
            sign_lanes(j, m0 + (r), o + 16, a1##r, bounds[r]) << 16 |                            \
            sign_lanes(j, m0 + (r), o + 32, a2##r, bounds[r]) << 32 |                            \
            sign_lanes(j, m0 + (r), o + 48, a3##r, bounds[r]) << 48
static inline __attribute__((target("avx512f"), always_inline)) void
sign_rows32(const bn_float_sign_job *j, const float *const *tables, const float *bounds,
            size_t m0, const int R, size_t n0, size_t n1) {
    const size_t words = bn_words(j->n);
    for (size_t o = n0; o < n1; o += 64) {
        ACC32(0); ACC32(1); ACC32(2); ACC32(3);
        for (size_t t = 0; t < j->kw; ++t) {
            __m512i lo0, hi0, lo1, hi1, lo2, hi2, lo3, hi3;
            half_words(j, o, t, &lo0, &hi0);
            half_words(j, o + 16, t, &lo1, &hi1);
            half_words(j, o + 32, t, &lo2, &hi2);
            half_words(j, o + 48, t, &lo3, &hi3);
            for (int h = 0; h < 2; ++h) {
                __m512i i0 = h ? hi0 : lo0, i1 = h ? hi1 : lo1, i2 = h ? hi2 : lo2, i3 = h ? hi3 : lo3;
                const size_t q0 = t * NIBBLES + 8 * (size_t)h;
                for (size_t q = q0; q < q0 + 8; ++q) {
                    ROW32(0); ROW32(1); ROW32(2); ROW32(3);
                    i0 = _mm512_srli_epi32(i0, 4); i1 = _mm512_srli_epi32(i1, 4);
                    i2 = _mm512_srli_epi32(i2, 4); i3 = _mm512_srli_epi32(i3, 4);
                }
            }
        }
        WORD32(0); WORD32(1); WORD32(2); WORD32(3);
    }
}

AVX512_FLOAT static void sign_block32_avx512(const bn_float_sign_job *j, const float *const *tables,
                                             const float *bounds, size_t m0, size_t rows,
                                             size_t n0, size_t n1) {
    switch (rows) {
    case 1: sign_rows32(j, tables, bounds, m0, 1, n0, n1); break;
    case 2: sign_rows32(j, tables, bounds, m0, 2, n0, n1); break;
    case 3: sign_rows32(j, tables, bounds, m0, 3, n0, n1); break;
    default: sign_rows32(j, tables, bounds, m0, ROWS, n0, n1); break;
    }
}

const bn_float_kernel bn_float_avx512 = {"avx512f", tables_avx512, block_avx512, tables32_avx512,
                                         sign_block32_avx512};
#endif

/* ---- driver: tasks of ROWS input rows x a range of outputs ------------------------------- */
typedef struct {
    const bn_float_kernel *kr;
    const void *x;
    int f64;
    const uint64_t *w;
    const uint64_t *panels; /* bn_repack_panels(w), or NULL (gathers) */
    size_t m, n, k, kw, bn, tn;
    double *out;
    bn_scratch scratch; /* per worker: ROWS tables of kw * 256 doubles */
    const double *shared; /* the tables of all rows (one row block), else NULL: per task */
} float_job;

/* The tables of rows [m0, m0 + rows) into t (ROWS x row_doubles). */
static void row_tables(const float_job *j, size_t m0, size_t rows, double *t) {
    const size_t row_doubles = j->kw * NIBBLES * TABLE, xsize = j->f64 ? 8 : 4;
    for (size_t r = 0; r < rows; ++r)
        j->kr->tables((const char *)j->x + (m0 + r) * j->k * xsize, j->f64, j->k, j->kw,
                      t + r * row_doubles);
}

static void float_task(void *vjob, long task, int worker) {
    float_job *j = (float_job *)vjob;
    const size_t m0 = (size_t)task / j->tn * ROWS, n0 = (size_t)task % j->tn * j->bn;
    const size_t rows = j->m - m0 < ROWS ? j->m - m0 : ROWS;
    const size_t n1 = n0 + j->bn < j->n ? n0 + j->bn : j->n;
    const double *tables = j->shared;
    if (!tables) {
        double *own = (double *)bn_scratch_get(&j->scratch, worker);
        if (!own) return;
        row_tables(j, m0, rows, own);
        tables = own;
    }
    const double *rows_t[ROWS];
    for (size_t r = 0; r < ROWS; ++r)
        rows_t[r] = tables + (r < rows ? r : rows - 1) * j->kw * NIBBLES * TABLE;
    j->kr->block(rows_t, rows, j->w, j->panels, n0, n1, j->kw, j->out + m0 * j->n, j->n);
}

int bn_first_dense_float(const void *x, int f64, const uint64_t *w, const uint64_t *panels,
                         size_t m, size_t n, size_t k, double *out) {
    float_job j;
    j.kr = bn_isa()->float_dense;
    j.x = x;
    j.f64 = f64;
    j.w = w;
    j.m = m;
    j.n = n;
    j.k = k;
    j.kw = bn_words(k);
    j.out = out;
    size_t table_bytes;
    if (__builtin_mul_overflow(j.kw, (size_t)(ROWS * NIBBLES * TABLE * sizeof(double)), &table_bytes))
        return BN_EOVERFLOW;
    const size_t row_blocks = (m + ROWS - 1) / ROWS;
    const size_t threads = (size_t)bn_get_num_threads();
    /* few row blocks: split the outputs too, so every thread gets several tasks */
    j.bn = (n + OUT_GROUP - 1) / OUT_GROUP * OUT_GROUP;
    while (j.bn > OUT_GROUP && row_blocks * ((n + j.bn - 1) / j.bn) < 4 * threads)
        j.bn = (j.bn / 2 + OUT_GROUP - 1) / OUT_GROUP * OUT_GROUP;
    j.tn = (n + j.bn - 1) / j.bn;
    /* prepared panels serve any m; else, from 4 rows on, regrouping the weights once costs less
     * than gathering them per row block */
    uint64_t *own = NULL;
    if (!panels && m >= PANEL_MIN_ROWS && j.kr->block != block_portable) {
        size_t bytes;
        if (__builtin_mul_overflow(bn_panel_words(n, j.kw), sizeof(uint64_t), &bytes))
            return BN_EOVERFLOW;
        own = (uint64_t *)malloc(bytes);
        if (!own) return BN_ENOMEM;
        bn_repack_panels(w, n, j.kw, own);
        panels = own;
    }
    j.panels = panels;
    bn_scratch_init(&j.scratch, table_bytes);
    /* one row block split over outputs (batch 1 to 4): its tables once, not once per task */
    double *shared = NULL;
    if (row_blocks == 1 && j.tn > 1 && (shared = (double *)bn_scratch_get(&j.scratch, 0)))
        row_tables(&j, 0, m, shared);
    j.shared = shared;
    /* a (row, output, word) is 16 lookups, 2 permutes: measured 1.55 ns at batch 1 against
     * 0.06 ns per popcount word-operation (the unit of bn_threads_for) */
    bn_parallel_for((long)(row_blocks * j.tn),
                    bn_threads_for((double)m * (double)n * (double)j.kw * 25), float_task, &j);
    const int failed = j.scratch.failed;
    bn_scratch_free(&j.scratch);
    free(own);
    return failed ? BN_ENOMEM : BN_OK;
}

/* ---- first_dense_float_sign's driver: tasks of ROWS rows x a range of 64-output words ------- */
typedef struct {
    const bn_float_kernel *kr;
    const bn_float_sign_job *j;
    size_t bn, tn;
    double bound_scale; /* 2 gamma_K (the header says why): a row's bound is that times sum |x_i| */
    bn_scratch scratch; /* per worker: ROWS tables of kw * 256 floats, then the ROWS bounds */
    const float *shared;
} sign_run;

/* the tables of rows [m0, m0 + rows) into t, their bounds after the ROWS tables */
static void sign_tables(const sign_run *run, size_t m0, size_t rows, float *t) {
    const bn_float_sign_job *j = run->j;
    const size_t row_floats = j->kw * NIBBLES * TABLE;
    for (size_t r = 0; r < rows; ++r) {
        const double b = run->bound_scale *
                         run->kr->tables32(j->x + (m0 + r) * j->k, j->k, j->kw, t + r * row_floats);
        t[ROWS * row_floats + r] = b < 0x1p127 ? (float)b : INFINITY; /* larger: float64 */
    }
}

static void sign_task(void *vrun, long task, int worker) {
    sign_run *run = (sign_run *)vrun;
    const bn_float_sign_job *j = run->j;
    const size_t m0 = (size_t)task / run->tn * ROWS, n0 = (size_t)task % run->tn * run->bn;
    const size_t rows = j->m - m0 < ROWS ? j->m - m0 : ROWS;
    const size_t n1 = n0 + run->bn < j->n ? n0 + run->bn : j->n;
    const float *tables = run->shared;
    if (!tables) {
        float *own = (float *)bn_scratch_get(&run->scratch, worker);
        if (!own) return;
        sign_tables(run, m0, rows, own);
        tables = own;
    }
    const size_t row_floats = j->kw * NIBBLES * TABLE;
    const float *rows_t[ROWS];
    for (size_t r = 0; r < ROWS; ++r) rows_t[r] = tables + (r < rows ? r : rows - 1) * row_floats;
    run->kr->sign_block32(j, rows_t, tables + ROWS * row_floats, m0, rows, n0, n1);
}

int bn_first_dense_float_sign(const float *x, const uint64_t *w, const uint64_t *panels,
                              const float *bias, const float *thresh, const uint8_t *flip,
                              size_t m, size_t n, size_t k, uint64_t *out) {
    bn_float_sign_job j = {x, w, panels, bias, thresh, flip, NULL, m, n, k, bn_words(k), out};
    sign_run run = {bn_isa()->float_dense, &j, 0, 0, 0.0, {{0}, 0, 0}, NULL};
    size_t table_bytes;
    if (__builtin_mul_overflow(j.kw, (size_t)(ROWS * NIBBLES * TABLE * sizeof(float)), &table_bytes))
        return BN_EOVERFLOW;
    table_bytes += ROWS * sizeof(float); /* the rows' bounds */
    const double big_k = 16.0 * (double)j.kw + 2.0, u = 0x1p-24;
    run.bound_scale = big_k * u < 0.5 ? 2.0 * big_k * u / (1.0 - big_k * u) : INFINITY;
    /* the flips as bits for the vector epilogue */
    uint64_t *flip_bits = (uint64_t *)malloc(bn_words(n) * sizeof(uint64_t));
    if (!flip_bits) return BN_ENOMEM;
    bn_pack_flags(flip, n, flip_bits);
    j.flip_bits = flip_bits;
    uint64_t *own = NULL;
    if (!panels) { /* this kernel reads the weights from panels only */
        size_t bytes;
        if (__builtin_mul_overflow(bn_panel_words(n, j.kw), sizeof(uint64_t), &bytes) ||
            !(own = (uint64_t *)malloc(bytes ? bytes : 1))) {
            free(flip_bits);
            return BN_ENOMEM;
        }
        bn_repack_panels(w, n, j.kw, own);
        j.panels = own;
    }
    const size_t row_blocks = (m + ROWS - 1) / ROWS, threads = (size_t)bn_get_num_threads();
    /* few row blocks: split the outputs too, in whole words */
    run.bn = (n + 63) / 64 * 64;
    while (run.bn > 64 && row_blocks * ((n + run.bn - 1) / run.bn) < 4 * threads)
        run.bn = (run.bn / 2 + 63) / 64 * 64;
    run.tn = (n + run.bn - 1) / run.bn;
    bn_scratch_init(&run.scratch, table_bytes);
    float *shared = NULL;
    if (row_blocks == 1 && run.tn > 1 && (shared = (float *)bn_scratch_get(&run.scratch, 0)))
        sign_tables(&run, 0, m, shared);
    run.shared = shared;
    /* half the float64 kernel's cost per (row, output, word): 16 lanes a lookup */
    bn_parallel_for((long)(row_blocks * run.tn),
                    bn_threads_for((double)m * (double)n * (double)j.kw * 12), sign_task, &run);
    const int failed = run.scratch.failed;
    bn_scratch_free(&run.scratch);
    free(own);
    free(flip_bits);
    return failed ? BN_ENOMEM : BN_OK;
}
