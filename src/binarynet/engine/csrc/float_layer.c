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
 */
#include "core.h"

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

const bn_float_kernel bn_float_portable = {"portable", tables_portable, block_portable};

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

const bn_float_kernel bn_float_avx512 = {"avx512f", tables_avx512, block_avx512};
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
