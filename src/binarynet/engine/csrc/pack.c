/* Bit packing: bit = (x >= 0), LSB first along each row, pad bits 0; and the bit planes of
 * uint8 rows for the first layer. Each kernel set (portable reference, AVX2 compare + movemask
 * with 8..32 bits per instruction, AVX-512BW planes) is an entry of the ISA table (dispatch.c). */
#include "core.h"

#include <string.h>

#if BN_X86
#include <immintrin.h>
#endif

/* Portable: one element at a time (NaN >= 0 is false, -0.0 >= 0 is true, as in numpy). */
#define PACK_ROW_PORTABLE(NAME, T)                                                               \
    static void NAME(const void *vx, size_t k, uint64_t *out) {                                  \
        const T *x = (const T *)vx;                                                              \
        for (size_t t = 0; t * 64 < k; ++t) {                                                    \
            const size_t n = k - t * 64 < 64 ? k - t * 64 : 64;                                  \
            uint64_t word = 0;                                                                   \
            for (size_t i = 0; i < n; ++i) word |= (uint64_t)(x[t * 64 + i] >= 0) << i;          \
            out[t] = word;                                                                       \
        }                                                                                        \
    }
PACK_ROW_PORTABLE(pack_row_f32, float)
PACK_ROW_PORTABLE(pack_row_f64, double)
PACK_ROW_PORTABLE(pack_row_i8, int8_t)

static void pack_row_u8(const void *x, size_t k, uint64_t *out) {
    (void)x; /* every uint8 is >= 0 */
    const size_t kw = bn_words(k);
    for (size_t t = 0; t < kw; ++t) out[t] = ~(uint64_t)0;
    if (k % 64) out[kw - 1] = ((uint64_t)1 << (k % 64)) - 1;
}

static void planes_u8_portable(const uint8_t *x, size_t k, uint64_t *planes) {
    const size_t kw = bn_words(k);
    memset(planes, 0, 8 * kw * sizeof(uint64_t));
    for (size_t i = 0; i < k; ++i)
        for (int b = 0; b < 8; ++b)
            planes[b * kw + i / 64] |= (uint64_t)((x[i] >> b) & 1) << (i % 64);
}

const bn_pack_kernels bn_pack_portable = {"portable", {pack_row_f32, pack_row_f64, pack_row_i8,
                                                       pack_row_u8}};
const bn_planes_kernel bn_planes_portable = {"portable", planes_u8_portable};

#if BN_X86
#define AVX2_KERNEL __attribute__((target("avx2")))

AVX2_KERNEL static void pack_row_f32_avx2(const void *vx, size_t k, uint64_t *out) {
    const float *x = (const float *)vx;
    const size_t full = k / 64;
    const __m256 zero = _mm256_setzero_ps();
    for (size_t t = 0; t < full; ++t) {
        uint64_t word = 0;
        for (int g = 0; g < 8; ++g) {
            const __m256 v = _mm256_loadu_ps(x + t * 64 + g * 8);
            word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ)) << (8 * g);
        }
        out[t] = word;
    }
    if (k % 64) pack_row_f32(x + full * 64, k % 64, out + full);
}

AVX2_KERNEL static void pack_row_f64_avx2(const void *vx, size_t k, uint64_t *out) {
    const double *x = (const double *)vx;
    const size_t full = k / 64;
    const __m256d zero = _mm256_setzero_pd();
    for (size_t t = 0; t < full; ++t) {
        uint64_t word = 0;
        for (int g = 0; g < 16; ++g) {
            const __m256d v = _mm256_loadu_pd(x + t * 64 + g * 4);
            word |= (uint64_t)(unsigned)_mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_GE_OQ)) << (4 * g);
        }
        out[t] = word;
    }
    if (k % 64) pack_row_f64(x + full * 64, k % 64, out + full);
}

AVX2_KERNEL static void pack_row_i8_avx2(const void *vx, size_t k, uint64_t *out) {
    const int8_t *x = (const int8_t *)vx;
    const size_t full = k / 64;
    for (size_t t = 0; t < full; ++t) {
        /* movemask takes the sign bits: set where x < 0, so invert */
        const __m256i lo = _mm256_loadu_si256((const __m256i *)(x + t * 64));
        const __m256i hi = _mm256_loadu_si256((const __m256i *)(x + t * 64 + 32));
        const uint64_t neg = (uint64_t)(uint32_t)_mm256_movemask_epi8(lo) |
                             (uint64_t)(uint32_t)_mm256_movemask_epi8(hi) << 32;
        out[t] = ~neg;
    }
    if (k % 64) pack_row_i8(x + full * 64, k % 64, out + full);
}

/* Bit b of 32 bytes: shift it into the sign position of each byte, then movemask. The tail
 * (k % 32 bytes) goes through a zeroed 32-byte copy, so short rows (k = 27) stay vectorised. */
AVX2_KERNEL static inline void planes_chunk_avx2(__m256i v, size_t kw, size_t g, uint64_t *planes) {
    const size_t word = g / 2, shift = (g % 2) * 32;
    for (int b = 0; b < 8; ++b) {
        const __m256i s = _mm256_slli_epi16(v, 7 - b); /* per-byte: bit b -> bit 7 */
        planes[b * kw + word] |= (uint64_t)(uint32_t)_mm256_movemask_epi8(s) << shift;
    }
}

AVX2_KERNEL static void planes_u8_avx2(const uint8_t *x, size_t k, uint64_t *planes) {
    const size_t kw = bn_words(k), full = k / 32;
    memset(planes, 0, 8 * kw * sizeof(uint64_t));
    for (size_t g = 0; g < full; ++g)
        planes_chunk_avx2(_mm256_loadu_si256((const __m256i *)(x + g * 32)), kw, g, planes);
    if (k % 32) {
        uint8_t tail[32] = {0};
        memcpy(tail, x + full * 32, k % 32);
        planes_chunk_avx2(_mm256_loadu_si256((const __m256i *)tail), kw, full, planes);
    }
}

/* AVX-512BW: 64 bytes -> one whole word per plane (vpmovb2m of the shifted bytes). */
#define AVX512BW_KERNEL __attribute__((target("avx512f,avx512bw")))

AVX512BW_KERNEL static inline void planes_word_avx512(__m512i v, size_t kw, size_t t,
                                                      uint64_t *planes) {
    for (int b = 0; b < 8; ++b)
        planes[b * kw + t] = (uint64_t)_mm512_movepi8_mask(_mm512_slli_epi16(v, 7 - b));
}

AVX512BW_KERNEL static void planes_u8_avx512(const uint8_t *x, size_t k, uint64_t *planes) {
    const size_t kw = bn_words(k), full = k / 64;
    for (size_t t = 0; t < full; ++t)
        planes_word_avx512(_mm512_loadu_si512((const void *)(x + t * 64)), kw, t, planes);
    if (k % 64) {
        uint8_t tail[64] = {0};
        memcpy(tail, x + full * 64, k % 64);
        planes_word_avx512(_mm512_loadu_si512((const void *)tail), kw, full, planes);
    }
}

const bn_pack_kernels bn_pack_avx2 = {"avx2", {pack_row_f32_avx2, pack_row_f64_avx2,
                                               pack_row_i8_avx2, pack_row_u8}};
const bn_planes_kernel bn_planes_avx2 = {"avx2", planes_u8_avx2};
const bn_planes_kernel bn_planes_avx512 = {"avx512bw", planes_u8_avx512};
#endif

typedef struct {
    const void *x;
    bn_pack_row_fn row;
    size_t itemsize, rows, k;
    uint64_t *out;
} pack_job;

#define PACK_ROWS 64 /* rows per task */

static void pack_task(void *vjob, long t, int worker) {
    const pack_job *j = (const pack_job *)vjob;
    const size_t kw = bn_words(j->k), r0 = (size_t)t * PACK_ROWS;
    const size_t r1 = r0 + PACK_ROWS < j->rows ? r0 + PACK_ROWS : j->rows;
    (void)worker;
    for (size_t r = r0; r < r1; ++r)
        j->row((const char *)j->x + r * j->k * j->itemsize, j->k, j->out + r * kw);
}

void bn_pack(const void *x, int dtype, size_t rows, size_t k, uint64_t *out) {
    pack_job job = {x, bn_isa()->pack->row[dtype], bn_dtype_size(dtype), rows, k, out};
    const long tasks = (long)((rows + PACK_ROWS - 1) / PACK_ROWS);
    bn_parallel_for(tasks, bn_threads_for((double)rows * (double)k / 8), pack_task, &job);
}

void bn_unpack(const uint64_t *p, size_t rows, size_t k, int8_t *out) {
    const size_t kw = bn_words(k);
    for (size_t r = 0; r < rows; ++r)
        for (size_t i = 0; i < k; ++i)
            out[r * k + i] = (int8_t)(((p[r * kw + i / 64] >> (i % 64)) & 1) ? 1 : -1);
}
