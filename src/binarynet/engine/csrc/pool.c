/* Max-pooling: of thresholded bit maps (OR / AND per channel) and of int32 maps. No padding,
 * floor output sizes (torch.nn.MaxPool2d defaults). Parallel over output rows. */
#include "core.h"

#include <stdint.h>

void bn_bmaxpool2d(const uint64_t *x, size_t n, size_t h, size_t w, size_t cw,
                   const uint64_t *and_mask, size_t kh, size_t kw, size_t sh, size_t sw,
                   uint64_t *out) {
    const size_t ho = (h - kh) / sh + 1, wo = (w - kw) / sw + 1;
    const int threads = bn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(threads) if (n * ho * wo * cw * kh * kw > (1u << 16))
    for (long row = 0; row < (long)(n * ho); ++row) {
        const size_t b = (size_t)row / ho, y = (size_t)row % ho;
        for (size_t xo = 0; xo < wo; ++xo) {
            uint64_t *dst = out + ((size_t)row * wo + xo) * cw;
            for (size_t q = 0; q < cw; ++q) {
                uint64_t any = 0, all = ~(uint64_t)0;
                for (size_t i = 0; i < kh; ++i) {
                    const uint64_t *src = x + ((b * h + y * sh + i) * w + xo * sw) * cw + q;
                    for (size_t j = 0; j < kw; ++j) {
                        any |= src[j * cw];
                        all &= src[j * cw];
                    }
                }
                dst[q] = (any & ~and_mask[q]) | (all & and_mask[q]);
            }
        }
    }
}

void bn_maxpool2d_int(const int32_t *x, size_t n, size_t h, size_t w, size_t c, size_t kh,
                      size_t kw, size_t sh, size_t sw, int32_t *out) {
    const size_t ho = (h - kh) / sh + 1, wo = (w - kw) / sw + 1;
    const int threads = bn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(threads) if (n * ho * wo * c * kh * kw > (1u << 16))
    for (long row = 0; row < (long)(n * ho); ++row) {
        const size_t b = (size_t)row / ho, y = (size_t)row % ho;
        for (size_t xo = 0; xo < wo; ++xo) {
            int32_t *dst = out + ((size_t)row * wo + xo) * c;
            for (size_t ch = 0; ch < c; ++ch) dst[ch] = INT32_MIN;
            for (size_t i = 0; i < kh; ++i) {
                for (size_t j = 0; j < kw; ++j) {
                    const int32_t *src = x + ((b * h + y * sh + i) * w + xo * sw + j) * c;
                    for (size_t ch = 0; ch < c; ++ch) dst[ch] = src[ch] > dst[ch] ? src[ch] : dst[ch];
                }
            }
        }
    }
}
