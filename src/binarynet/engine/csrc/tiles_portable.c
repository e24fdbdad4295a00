/* Portable C11 popcount tiles (scalar __builtin_popcountll).
 *
 * The reference the SIMD tiles are tested against. Compiled twice on x86-64: a generic build (no
 * popcnt instruction assumed) and one with target("popcnt"), which turns the builtin into one
 * instruction; dispatch.c picks at run time.
 */
#include "core.h"

#define BN_ALWAYS_INLINE static inline __attribute__((always_inline))

/* 2 rows of A x 4 rows of W: 8 scalar accumulators fit the 16 general registers. */
BN_ALWAYS_INLINE void tile_2x4_body(const uint64_t *const *a, const uint64_t *const *w,
                                    size_t kw, uint32_t *cnt) {
    const uint64_t *a0 = a[0], *a1 = a[1];
    const uint64_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    uint64_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
    for (size_t t = 0; t < kw; ++t) {
        uint64_t x0 = a0[t], x1 = a1[t], y;
        y = w0[t]; c00 += __builtin_popcountll(x0 ^ y); c10 += __builtin_popcountll(x1 ^ y);
        y = w1[t]; c01 += __builtin_popcountll(x0 ^ y); c11 += __builtin_popcountll(x1 ^ y);
        y = w2[t]; c02 += __builtin_popcountll(x0 ^ y); c12 += __builtin_popcountll(x1 ^ y);
        y = w3[t]; c03 += __builtin_popcountll(x0 ^ y); c13 += __builtin_popcountll(x1 ^ y);
    }
    cnt[0] = (uint32_t)c00; cnt[1] = (uint32_t)c01; cnt[2] = (uint32_t)c02; cnt[3] = (uint32_t)c03;
    cnt[4] = (uint32_t)c10; cnt[5] = (uint32_t)c11; cnt[6] = (uint32_t)c12; cnt[7] = (uint32_t)c13;
}

/* 1 row of A x 4 rows of W (GEMV). */
BN_ALWAYS_INLINE void thin_1x4_body(const uint64_t *const *a, const uint64_t *const *w,
                                    size_t kw, uint32_t *cnt) {
    const uint64_t *a0 = a[0];
    const uint64_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    for (size_t t = 0; t < kw; ++t) {
        uint64_t x = a0[t];
        c0 += __builtin_popcountll(x ^ w0[t]);
        c1 += __builtin_popcountll(x ^ w1[t]);
        c2 += __builtin_popcountll(x ^ w2[t]);
        c3 += __builtin_popcountll(x ^ w3[t]);
    }
    cnt[0] = (uint32_t)c0; cnt[1] = (uint32_t)c1; cnt[2] = (uint32_t)c2; cnt[3] = (uint32_t)c3;
}

BN_ALWAYS_INLINE uint64_t popcount_words_body(const uint64_t *p, size_t n) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; ++i) total += (uint64_t)__builtin_popcountll(p[i]);
    return total;
}

static uint64_t popcount_words_generic(const uint64_t *p, size_t n) {
    return popcount_words_body(p, n);
}

BN_ALWAYS_INLINE void run_popcounts_body(const uint64_t *p, size_t runs, size_t n,
                                         int32_t *out) {
    for (size_t r = 0; r < runs; ++r) out[r] = (int32_t)popcount_words_body(p + r * n, n);
}

static void run_popcounts_generic(const uint64_t *p, size_t runs, size_t n, int32_t *out) {
    run_popcounts_body(p, runs, n, out);
}

static void tile_2x4_generic(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                             uint32_t *cnt) {
    tile_2x4_body(a, w, kw, cnt);
}
static void thin_1x4_generic(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                             uint32_t *cnt) {
    thin_1x4_body(a, w, kw, cnt);
}
const bn_tile_kernels bn_tiles_portable = {"portable", 2, 4, tile_2x4_generic, 4, thin_1x4_generic,
                                            NULL, popcount_words_generic, run_popcounts_generic};

#if BN_X86
__attribute__((target("popcnt"))) static void
tile_2x4_popcnt(const uint64_t *const *a, const uint64_t *const *w, size_t kw, uint32_t *cnt) {
    tile_2x4_body(a, w, kw, cnt);
}
__attribute__((target("popcnt"))) static void
thin_1x4_popcnt(const uint64_t *const *a, const uint64_t *const *w, size_t kw, uint32_t *cnt) {
    thin_1x4_body(a, w, kw, cnt);
}
__attribute__((target("popcnt"))) uint64_t bn_popcount_words_popcnt(const uint64_t *p, size_t n) {
    return popcount_words_body(p, n);
}
__attribute__((target("popcnt"))) void bn_run_popcounts_popcnt(const uint64_t *p, size_t runs,
                                                              size_t n, int32_t *out) {
    run_popcounts_body(p, runs, n, out);
}
const bn_tile_kernels bn_tiles_popcnt = {"popcnt", 2, 4, tile_2x4_popcnt, 4, thin_1x4_popcnt, NULL,
                                         bn_popcount_words_popcnt, bn_run_popcounts_popcnt};
#endif
