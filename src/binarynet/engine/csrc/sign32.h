/* The float32 sign paths' one decision rule (first_dense_float_sign in float_layer.c, the
 * float32 first conv in float_conv_avx512.c): 16 float32 sums s, each within `bound` of the
 * sum that the float64 path rounds, against thresholds t after the bias, <= where flipped. */
#ifndef BN_SIGN32_H
#define BN_SIGN32_H

#include "core.h"

#if BN_X86
#include <immintrin.h>
#include <math.h>

/* The bits of the lanes decided at both s - bound and s + bound alike (z is monotone in the
 * sum, so that is the float64 sum's decision) into *bits; returns the lanes of `lanes` that
 * are not (the two ends differ, or one is not finite): those are summed again in float64. */
__attribute__((target("avx512f"))) static inline unsigned
bn_sign32_certain(__m512 s, __m512 bound, __m512 bias, __m512 t, unsigned flip, unsigned lanes,
                  unsigned *bits) {
    const __m512 lo = _mm512_sub_ps(s, bound), hi = _mm512_add_ps(s, bound);
    const __m512 zlo = _mm512_add_ps(lo, bias), zhi = _mm512_add_ps(hi, bias);
    const unsigned at_lo = (_mm512_cmp_ps_mask(zlo, t, _CMP_GE_OQ) & ~flip) |
                           (_mm512_cmp_ps_mask(zlo, t, _CMP_LE_OQ) & flip);
    const unsigned at_hi = (_mm512_cmp_ps_mask(zhi, t, _CMP_GE_OQ) & ~flip) |
                           (_mm512_cmp_ps_mask(zhi, t, _CMP_LE_OQ) & flip);
    const __m512 inf = _mm512_set1_ps(INFINITY);
    const unsigned finite = _mm512_cmp_ps_mask(_mm512_abs_ps(lo), inf, _CMP_LT_OQ) &
                            _mm512_cmp_ps_mask(_mm512_abs_ps(hi), inf, _CMP_LT_OQ);
    const unsigned unsure = lanes & ~(finite & ~(at_lo ^ at_hi));
    *bits = at_lo & lanes & ~unsure;
    return unsure;
}
#endif

#endif
