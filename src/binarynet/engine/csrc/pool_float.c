/* The real-valued stream's pools (graph format 3 maxpool_real, avgpool, global_avgpool) on
 * float32 NHWC maps, on the engine's thread pool.
 *
 * Channels are contiguous in NHWC, so the vectors run across channels: an output pixel takes
 * its window's input pixels one at a time, a block of channel vectors at a time, and every lane
 * is one finished output. The taps come in float_ops' order, so every ISA row gives the numpy
 * twin's bits (but a sum's NaN payload: the compiler may swap an addition's operands):
 *  - max: a running max from -inf over the window in (row, column) order, each step numpy's
 *    np.maximum(m, t) = (isnan(m) || m > t) ? m : t (NaN propagates; on ties, +0 against -0,
 *    the later tap). float_ops' separable order (columns, then rows) gives the same: the first
 *    NaN in row-major order if there is one, else the last tap holding the maximum.
 *  - average: +0, then + each tap in (row, column) order, then / the window's divisor (PyTorch's,
 *    float_ops.avgpool_divisors), every operation rounded to float32 (no reciprocal, no FMA).
 *  - global average: the average with one window covering the map, divisor H * W.
 * Padding is skipped rather than read: a -inf tap never changes a max, and a +0 tap never changes
 * a sum that starts at +0 (which can therefore never be -0), so the result is the same.
 */
#include "core.h"

#include <math.h>

#if BN_X86
#include <immintrin.h>
#endif

#define INLINE inline __attribute__((always_inline))

/* ---- portable: the reference (plain C) ------------------------------------------------------ */
/* y accumulates in place (it is in L1): the compiler vectorises the loops over channels */
static void window_portable(const float *x, size_t ldx, size_t rows, size_t cols, size_t c,
                            int is_max, float divisor, float *y) {
    for (size_t ch = 0; ch < c; ++ch) y[ch] = is_max ? -INFINITY : 0.0f;
    for (size_t i = 0; i < rows; ++i)
        for (size_t j = 0; j < cols; ++j) {
            const float *p = x + i * ldx + j * c;
            if (is_max) {
                for (size_t ch = 0; ch < c; ++ch) {
                    const float m = y[ch], t = p[ch];
                    y[ch] = (m != m || m > t) ? m : t;
                }
            } else {
                for (size_t ch = 0; ch < c; ++ch) y[ch] = y[ch] + p[ch];
            }
        }
    if (!is_max)
        for (size_t ch = 0; ch < c; ++ch) y[ch] = y[ch] / divisor;
}

const bn_fpool_kernel bn_fpool_portable = {"portable", window_portable};

#if BN_X86
/* ---- AVX2: 8 channels a vector; blocks of 4 vectors, then 1, then a masked tail ------------ */
#define AVX2_POOL __attribute__((target("avx2")))

/* np.maximum(m, t): vmaxps gives m > t ? m : t (t on ties and NaN), then m where m is NaN */
AVX2_POOL static INLINE __m256 max256(__m256 m, __m256 t) {
    return _mm256_blendv_ps(_mm256_max_ps(m, t), m, _mm256_cmp_ps(m, m, _CMP_UNORD_Q));
}

/* channels [cb, cb + 8 nv) of a window; masked: one vector, its lanes past c masked (vmaskmovps
 * is slow on some CPUs, so only the tail takes it) */
AVX2_POOL static INLINE void block256(const float *x, size_t ldx, size_t rows, size_t cols,
                                      size_t c, size_t cb, const int nv, const int masked,
                                      const int is_max, float divisor, float *y) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(masked ? (int)(c - cb) : 8),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 acc[4];
    for (int v = 0; v < nv; ++v) acc[v] = is_max ? _mm256_set1_ps(-INFINITY) : _mm256_setzero_ps();
    for (size_t i = 0; i < rows; ++i) {
        const float *p = x + i * ldx + cb;
        for (size_t j = 0; j < cols; ++j, p += c)
            for (int v = 0; v < nv; ++v) {
                const __m256 t = masked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p + 8 * v);
                acc[v] = is_max ? max256(acc[v], t) : _mm256_add_ps(acc[v], t);
            }
    }
    for (int v = 0; v < nv; ++v) {
        const __m256 r = is_max ? acc[v] : _mm256_div_ps(acc[v], _mm256_set1_ps(divisor));
        if (masked) _mm256_maskstore_ps(y + cb, mask, r);
        else _mm256_storeu_ps(y + cb + 8 * v, r);
    }
}

/* the block sizes and flags are constants in each call, so the accumulators stay in registers */
#define BLOCKS(block, lanes)                                                                   \
    size_t cb = 0;                                                                            \
    for (; cb + 4 * (lanes) <= c; cb += 4 * (lanes)) {                                         \
        if (is_max) block(x, ldx, rows, cols, c, cb, 4, 0, 1, divisor, y);                   \
        else block(x, ldx, rows, cols, c, cb, 4, 0, 0, divisor, y);                          \
    }                                                                                         \
    for (; cb + (lanes) <= c; cb += (lanes)) {                                                 \
        if (is_max) block(x, ldx, rows, cols, c, cb, 1, 0, 1, divisor, y);                   \
        else block(x, ldx, rows, cols, c, cb, 1, 0, 0, divisor, y);                          \
    }                                                                                         \
    if (cb < c) {                                                                             \
        if (is_max) block(x, ldx, rows, cols, c, cb, 1, 1, 1, divisor, y);                   \
        else block(x, ldx, rows, cols, c, cb, 1, 1, 0, divisor, y);                          \
    }

AVX2_POOL static void window_avx2(const float *x, size_t ldx, size_t rows, size_t cols,
                                  size_t c, int is_max, float divisor, float *y) {
    BLOCKS(block256, 8)
}

const bn_fpool_kernel bn_fpool_avx2 = {"avx2", window_avx2};

/* ---- AVX-512: 16 channels a vector; blocks of 4 vectors, then 1, then a masked tail -------- */
#define AVX512_POOL __attribute__((target("avx512f")))

/* np.maximum(m, t): m where m is NaN, else vmaxps (m > t ? m : t) */
AVX512_POOL static INLINE __m512 max512(__m512 m, __m512 t) {
    return _mm512_mask_max_ps(m, _mm512_cmp_ps_mask(m, m, _CMP_ORD_Q), m, t);
}

AVX512_POOL static INLINE void block512(const float *x, size_t ldx, size_t rows, size_t cols,
                                        size_t c, size_t cb, const int nv, const int masked,
                                        const int is_max, float divisor, float *y) {
    const __mmask16 mask = masked ? (__mmask16)((1u << (c - cb)) - 1) : (__mmask16)0xFFFF;
    __m512 acc[4];
    for (int v = 0; v < nv; ++v) acc[v] = is_max ? _mm512_set1_ps(-INFINITY) : _mm512_setzero_ps();
    for (size_t i = 0; i < rows; ++i) {
        const float *p = x + i * ldx + cb;
        for (size_t j = 0; j < cols; ++j, p += c)
            for (int v = 0; v < nv; ++v) {
                const __m512 t = _mm512_maskz_loadu_ps(mask, p + 16 * v);
                acc[v] = is_max ? max512(acc[v], t) : _mm512_add_ps(acc[v], t);
            }
    }
    for (int v = 0; v < nv; ++v) {
        const __m512 r = is_max ? acc[v] : _mm512_div_ps(acc[v], _mm512_set1_ps(divisor));
        _mm512_mask_storeu_ps(y + cb + 16 * v, mask, r);
    }
}

AVX512_POOL static void window_avx512(const float *x, size_t ldx, size_t rows, size_t cols,
                                      size_t c, int is_max, float divisor, float *y) {
    BLOCKS(block512, 16)
}

const bn_fpool_kernel bn_fpool_avx512 = {"avx512f", window_avx512};
#endif

/* ---- driver --------------------------------------------------------------------------------- */
/* The window of output o along one axis: its first input index *first, *count of them (the
 * taps that are not padding), and the count its divisor takes (PyTorch's avg_pool2d: the
 * window ends at most at the padded edge; count_include_pad counts the padding in it). In
 * coordinates of the padded axis, unsigned: the binding checked size + 2 pad fits, and that
 * every window starts before the input's end (o * stride < size + pad). */
static void window_axis(size_t o, size_t size, size_t kernel, size_t stride, size_t pad,
                        int include_pad, size_t *first, size_t *count, size_t *divisor) {
    const size_t start = o * stride, end = start + kernel;
    const size_t lo = start > pad ? start : pad;
    const size_t hi = end < size + pad ? end : size + pad;
    const size_t padded_end = end < size + 2 * pad ? end : size + 2 * pad;
    *first = lo - pad;
    *count = hi - lo; /* >= 1: every window holds an input pixel */
    *divisor = include_pad ? padded_end - start : *count;
}

typedef struct {
    const bn_fpool_shape *s;
    const bn_fpool_kernel *kr;
    const float *x;
    float *y;
    size_t rows_per_task, rows;
} fpool_run;

static void fpool_task(void *ctx, long task, int worker) {
    const fpool_run *run = (const fpool_run *)ctx;
    const bn_fpool_shape *s = run->s;
    (void)worker;
    const size_t r0 = (size_t)task * run->rows_per_task;
    const size_t r1 = r0 + run->rows_per_task < run->rows ? r0 + run->rows_per_task : run->rows;
    for (size_t row = r0; row < r1; ++row) {
        const size_t b = row / s->ho, oy = row % s->ho;
        size_t iy, rows, row_div;
        window_axis(oy, s->h, s->kh, s->sh, s->ph, s->count_include_pad, &iy, &rows, &row_div);
        for (size_t ox = 0; ox < s->wo; ++ox) {
            size_t ix, cols, col_div;
            window_axis(ox, s->w, s->kw, s->sw, s->pw, s->count_include_pad, &ix, &cols, &col_div);
            /* float32 counts multiplied in float32, as float_ops.avgpool_divisors */
            const float divisor = (float)row_div * (float)col_div;
            run->kr->window(run->x + ((b * s->h + iy) * s->w + ix) * s->c, s->w * s->c, rows,
                            cols, s->c, s->is_max, divisor, run->y + (row * s->wo + ox) * s->c);
        }
    }
}

void bn_pool2d_float(const bn_fpool_shape *s, const float *x, float *y) {
    fpool_run run = {s, bn_isa()->float_pool, x, y, 0, s->n * s->ho};
    /* about one element step per tap and channel (as many as int32 steps, 2 per word-op) */
    const double taps = (double)s->kh * (double)s->kw;
    const double steps = (double)run.rows * (double)s->wo * (double)s->c * taps;
    const int threads = bn_threads_for(steps / 2);
    /* a few tasks per thread (border rows have fewer taps) */
    const size_t tasks = threads > 1 ? 4 * (size_t)threads : 1;
    run.rows_per_task = (run.rows + tasks - 1) / tasks;
    bn_parallel_for((long)((run.rows + run.rows_per_task - 1) / run.rows_per_task), threads,
                    fpool_task, &run);
}
