/* Max-pooling: of thresholded bit maps (OR / AND per channel) and of int32 maps. No padding,
 * floor output sizes (torch.nn.MaxPool2d defaults). One task per output row. */
#include "core.h"

#include <stdint.h>

typedef struct {
    const void *x;
    const uint64_t *and_mask;
    void *out;
    size_t h, w, c, kh, kw, sh, sw, ho, wo;
} pool_job;

static void bits_row(void *vjob, long row, int worker) {
    const pool_job *j = (const pool_job *)vjob;
    const uint64_t *x = (const uint64_t *)j->x;
    const size_t cw = j->c, b = (size_t)row / j->ho, y = (size_t)row % j->ho;
    (void)worker;
    for (size_t xo = 0; xo < j->wo; ++xo) {
        uint64_t *dst = (uint64_t *)j->out + ((size_t)row * j->wo + xo) * cw;
        for (size_t q = 0; q < cw; ++q) {
            uint64_t any = 0, all = ~(uint64_t)0;
            for (size_t i = 0; i < j->kh; ++i) {
                const uint64_t *src = x + ((b * j->h + y * j->sh + i) * j->w + xo * j->sw) * cw + q;
                for (size_t jj = 0; jj < j->kw; ++jj) {
                    any |= src[jj * cw];
                    all &= src[jj * cw];
                }
            }
            dst[q] = (any & ~j->and_mask[q]) | (all & j->and_mask[q]);
        }
    }
}

void bn_bmaxpool2d(const uint64_t *x, size_t n, size_t h, size_t w, size_t cw,
                   const uint64_t *and_mask, size_t kh, size_t kw, size_t sh, size_t sw,
                   uint64_t *out) {
    pool_job j = {x, and_mask, out, h, w, cw, kh, kw, sh, sw, (h - kh) / sh + 1, (w - kw) / sw + 1};
    const double work = (double)n * j.ho * j.wo * cw * kh * kw;
    bn_parallel_for((long)(n * j.ho), bn_threads_for(work / 4), bits_row, &j);
}

static void int_row(void *vjob, long row, int worker) {
    const pool_job *j = (const pool_job *)vjob;
    const int32_t *x = (const int32_t *)j->x;
    const size_t c = j->c, b = (size_t)row / j->ho, y = (size_t)row % j->ho;
    (void)worker;
    for (size_t xo = 0; xo < j->wo; ++xo) {
        int32_t *dst = (int32_t *)j->out + ((size_t)row * j->wo + xo) * c;
        for (size_t ch = 0; ch < c; ++ch) dst[ch] = INT32_MIN;
        for (size_t i = 0; i < j->kh; ++i) {
            for (size_t jj = 0; jj < j->kw; ++jj) {
                const int32_t *src = x + ((b * j->h + y * j->sh + i) * j->w + xo * j->sw + jj) * c;
                for (size_t ch = 0; ch < c; ++ch) dst[ch] = src[ch] > dst[ch] ? src[ch] : dst[ch];
            }
        }
    }
}

void bn_maxpool2d_int(const int32_t *x, size_t n, size_t h, size_t w, size_t c, size_t kh,
                      size_t kw, size_t sh, size_t sw, int32_t *out) {
    pool_job j = {x, NULL, out, h, w, c, kh, kw, sh, sw, (h - kh) / sh + 1, (w - kw) / sw + 1};
    const double work = (double)n * j.ho * j.wo * c * kh * kw;
    bn_parallel_for((long)(n * j.ho), bn_threads_for(work / 4), int_row, &j);
}
