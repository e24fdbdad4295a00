/* AVX2 popcount tiles: nibble-LUT popcount (vpshufb) with byte accumulators.
 *
 * popcount of a byte = lut[low nibble] + lut[high nibble] (each <= 4), so one step adds at most
 * 8 to a byte counter; counters are flushed to 64-bit totals with vpsadbw every 31 steps
 * (31 * 8 = 248 < 256). One step covers 4 words (256 bits); the < 4 word tail is scalar.
 */
#include "core.h"

#if BN_X86
#include <immintrin.h>

#define AVX2_FN static inline __attribute__((target("avx2,popcnt"), always_inline))
#define AVX2_KERNEL __attribute__((target("avx2,popcnt")))
#define FLUSH_STEPS 31

AVX2_FN __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
}

/* Sum of all bytes of v. */
AVX2_FN uint64_t hsum_bytes(__m256i v) {
    __m256i s = _mm256_sad_epu8(v, _mm256_setzero_si256());
    __m128i q = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (uint64_t)_mm_cvtsi128_si64(q) + (uint64_t)_mm_extract_epi64(q, 1);
}

#define LUT_INIT                                                                                 \
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,  \
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);                 \
    const __m256i low = _mm256_set1_epi8(0x0f)

#define LD(p) _mm256_loadu_si256((const __m256i *)(p))
#define ACC(acc, x, y) acc = _mm256_add_epi8(acc, popcnt_bytes(_mm256_xor_si256(x, y), lut, low))

/* 2 rows of A x 4 rows of W: 8 byte accumulators, LUT, mask and operands in 16 ymm registers. */
AVX2_KERNEL static void tile_2x4(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                                 uint32_t *cnt) {
    LUT_INIT;
    const uint64_t *a0 = a[0], *a1 = a[1];
    const uint64_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    uint64_t tot[8] = {0};
    const size_t steps = kw / 4;
    for (size_t s = 0; s < steps;) {
        const size_t stop = s + FLUSH_STEPS < steps ? s + FLUSH_STEPS : steps;
        __m256i b00 = _mm256_setzero_si256(), b01 = b00, b02 = b00, b03 = b00, b10 = b00,
                b11 = b00, b12 = b00, b13 = b00;
        for (; s < stop; ++s) {
            const size_t t = 4 * s;
            __m256i x0 = LD(a0 + t), x1 = LD(a1 + t), y;
            y = LD(w0 + t); ACC(b00, x0, y); ACC(b10, x1, y);
            y = LD(w1 + t); ACC(b01, x0, y); ACC(b11, x1, y);
            y = LD(w2 + t); ACC(b02, x0, y); ACC(b12, x1, y);
            y = LD(w3 + t); ACC(b03, x0, y); ACC(b13, x1, y);
        }
        tot[0] += hsum_bytes(b00); tot[1] += hsum_bytes(b01);
        tot[2] += hsum_bytes(b02); tot[3] += hsum_bytes(b03);
        tot[4] += hsum_bytes(b10); tot[5] += hsum_bytes(b11);
        tot[6] += hsum_bytes(b12); tot[7] += hsum_bytes(b13);
    }
    for (size_t t = 4 * steps; t < kw; ++t) {
        for (int j = 0; j < 4; ++j) {
            tot[j] += (uint64_t)__builtin_popcountll(a0[t] ^ w[j][t]);
            tot[4 + j] += (uint64_t)__builtin_popcountll(a1[t] ^ w[j][t]);
        }
    }
    for (int i = 0; i < 8; ++i) cnt[i] = (uint32_t)tot[i];
}

/* 1 row of A x 8 rows of W (GEMV). */
AVX2_KERNEL static void thin_1x8(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                                 uint32_t *cnt) {
    LUT_INIT;
    const uint64_t *a0 = a[0];
    const uint64_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5],
                   *w6 = w[6], *w7 = w[7];
    uint64_t tot[8] = {0};
    const size_t steps = kw / 4;
    for (size_t s = 0; s < steps;) {
        const size_t stop = s + FLUSH_STEPS < steps ? s + FLUSH_STEPS : steps;
        __m256i b0 = _mm256_setzero_si256(), b1 = b0, b2 = b0, b3 = b0, b4 = b0, b5 = b0, b6 = b0,
                b7 = b0;
        for (; s < stop; ++s) {
            const size_t t = 4 * s;
            __m256i x = LD(a0 + t);
            ACC(b0, x, LD(w0 + t)); ACC(b1, x, LD(w1 + t));
            ACC(b2, x, LD(w2 + t)); ACC(b3, x, LD(w3 + t));
            ACC(b4, x, LD(w4 + t)); ACC(b5, x, LD(w5 + t));
            ACC(b6, x, LD(w6 + t)); ACC(b7, x, LD(w7 + t));
        }
        tot[0] += hsum_bytes(b0); tot[1] += hsum_bytes(b1);
        tot[2] += hsum_bytes(b2); tot[3] += hsum_bytes(b3);
        tot[4] += hsum_bytes(b4); tot[5] += hsum_bytes(b5);
        tot[6] += hsum_bytes(b6); tot[7] += hsum_bytes(b7);
    }
    for (size_t t = 4 * steps; t < kw; ++t)
        for (int j = 0; j < 8; ++j) tot[j] += (uint64_t)__builtin_popcountll(a0[t] ^ w[j][t]);
    for (int i = 0; i < 8; ++i) cnt[i] = (uint32_t)tot[i];
}

const bn_tile_kernels bn_tiles_avx2 = {"avx2", 2, 4, tile_2x4, 8, thin_1x8, NULL,
                                       bn_popcount_words_popcnt, bn_run_popcounts_popcnt};

#endif
