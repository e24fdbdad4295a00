/* The fused output transform of binary layers, and sign_pack.
 *
 * The drivers (gemm.c, conv.c) hand every finished tile's sums, converted to float32, to the ISA
 * row's chunk kernel while they are in registers or L1: the layer's scale/shift, the steps (ReLU,
 * scale/shift, PReLU, residual add), then a float32 store and/or the packed sign bits, so no int32
 * tensor is written and no second pass is made. Each operation rounds to float32 exactly as
 * numpy does on float32 arrays: setup.py builds with -ffp-contract=off (no fused multiply-add),
 * and ReLU maps -0.0 to +0.0 and keeps NaN, as np.maximum(y, 0) does. The portable kernel is the
 * reference; the AVX-512 one does 16 channels of up to 4 rows at a time, one dispatch per step
 * for them all; the AVX2 one 8 lanes, as 8 channels of a row or 4 channels of 2 rows (the AVX2
 * tiles are 2 rows x 4 outputs). A call takes several rows and a span of outputs (the panel path:
 * a whole row tile), because at 32 or 64 channels the per-call and per-step overheads cost as
 * much as the arithmetic. The AVX2 row needs its own too: with the portable one, a 3x3 binary
 * conv with residual add and sign took 1.2-2x the time of the threshold kernel at ReActNet's
 * shapes (one thread), with this one 1.05-1.2x.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#if BN_X86
#include <immintrin.h>
#endif

/* Or the bits of outputs [n, n + nv) (nv <= 64) into a packed row, across a word boundary. */
static inline void or_bits(uint64_t *row, size_t n, size_t nv, uint64_t bits) {
    const size_t s = n & 63;
    row[n >> 6] |= bits << s;
    if (s && s + nv > 64) row[(n >> 6) + 1] |= bits >> (64 - s);
}

static void row_portable(const bn_transform *t, size_t row, size_t n0, size_t nv,
                         const float *x) {
    const size_t o = t->o;
    for (size_t j = 0; j < nv; ++j) {
        const size_t c = n0 + j;
        float y = x[j];
        const float *p = t->params;
        for (int s = 0; s < t->nsteps; ++s) {
            switch (t->kinds[s]) {
            case BN_STEP_SCALE_SHIFT:
                y = y * p[c];
                y = y + p[o + c];
                break;
            case BN_STEP_RELU:
                y = y <= 0.0f ? 0.0f : y; /* NaN stays NaN, -0.0 becomes +0.0 */
                break;
            case BN_STEP_PRELU: {
                const float z = y + p[c];
                y = (z > 0.0f ? z : p[o + c] * z) + p[2 * o + c];
                break;
            }
            default: /* BN_STEP_ADD */
                y = y + t->residual[row * o + c];
            }
            p += (size_t)bn_step_params(t->kinds[s]) * o;
        }
        if (t->y) t->y[row * o + c] = y;
        if (t->bits) {
            const int f = t->flip[c] != 0;
            const uint64_t bit = (uint64_t)(f ? y <= t->thresh[c] : y >= t->thresh[c]);
            t->bits[row * bn_words(o) + (c >> 6)] |= bit << (c & 63);
        }
    }
}

static void chunk_portable(const bn_transform *t, size_t row, size_t rows, size_t n0, size_t nv,
                           const float *x, size_t ldx) {
    for (size_t r = 0; r < rows; ++r) row_portable(t, row + r, n0, nv, x + r * ldx);
}

const bn_transform_kernel bn_transform_portable = {"portable", chunk_portable};

#if BN_X86
/* The fields a chunk reads, as locals: the stores into y and bits could alias `t` (uint64_t
 * is size_t), which would make the compiler reload every field after each store. */
typedef struct {
    size_t o, ow;
    int nsteps;
    const uint8_t *kinds;
    const float *params, *residual, *thresh;
    float *y;
    uint64_t *bits;
    const uint64_t *flip_bits;
} chunk_view;

static inline chunk_view view_of(const bn_transform *t) {
    return (chunk_view){t->o,        bn_words(t->o), t->nsteps, t->kinds, t->params,
                        t->residual, t->thresh,      t->y,      t->bits,  t->flip_bits};
}

/* Flip bits of outputs [c, c + width) in the low bits (past o: whatever, lanes mask them off). */
static inline uint64_t flips_at(const uint64_t *flip_bits, size_t o, size_t c, unsigned width) {
    uint64_t f = flip_bits[c >> 6] >> (c & 63);
    if ((c & 63) > 64 - width && (c >> 6) + 1 < bn_words(o))
        f |= flip_bits[(c >> 6) + 1] << (64 - (c & 63));
    return f;
}

#define AVX512_TRANSFORM __attribute__((target("avx512f,avx512bw,avx512vl")))

#define AVX512_INLINE static inline __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))

static inline __mmask16 flips16(const uint64_t *flip_bits, size_t o, size_t c) {
    return (__mmask16)flips_at(flip_bits, o, c, 16);
}

/* R rows [row, row + R) x 16 outputs [c, c + 16) (lanes past `lanes` masked off), values in y:
 * the steps, one dispatch per step for all R rows (each step's parameters are loaded once),
 * then y stored and the sign bits gathered into words[r] (or or'd into the row if !aligned). */
AVX512_INLINE void group16(const chunk_view *v, size_t row, size_t c, __mmask16 lanes, int R,
                           __m512 *y, int aligned, uint64_t *words) {
    const size_t o = v->o;
    const float *p = v->params;
    const __m512 zero = _mm512_setzero_ps();
    for (int s = 0; s < v->nsteps; ++s) {
        switch (v->kinds[s]) {
        case BN_STEP_SCALE_SHIFT: {
            const __m512 a = _mm512_maskz_loadu_ps(lanes, p + c);
            const __m512 b = _mm512_maskz_loadu_ps(lanes, p + o + c);
            for (int r = 0; r < R; ++r) y[r] = _mm512_add_ps(_mm512_mul_ps(y[r], a), b);
            break;
        }
        case BN_STEP_RELU:
            for (int r = 0; r < R; ++r)
                y[r] = _mm512_mask_mov_ps(y[r], _mm512_cmp_ps_mask(y[r], zero, _CMP_LE_OQ), zero);
            break;
        case BN_STEP_PRELU: {
            const __m512 a = _mm512_maskz_loadu_ps(lanes, p + c);
            const __m512 slope = _mm512_maskz_loadu_ps(lanes, p + o + c);
            const __m512 b = _mm512_maskz_loadu_ps(lanes, p + 2 * o + c);
            for (int r = 0; r < R; ++r) {
                const __m512 z = _mm512_add_ps(y[r], a);
                const __m512 neg = _mm512_mul_ps(slope, z);
                y[r] = _mm512_add_ps(_mm512_mask_mov_ps(neg, _mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ), z), b);
            }
            break;
        }
        default: /* BN_STEP_ADD */
            for (int r = 0; r < R; ++r)
                y[r] = _mm512_add_ps(y[r], _mm512_maskz_loadu_ps(lanes, v->residual + (row + r) * o + c));
        }
        p += (size_t)bn_step_params(v->kinds[s]) * o;
    }
    if (v->y)
        for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(v->y + (row + r) * o + c, lanes, y[r]);
    if (!v->bits) return;
    /* bit = y >= thresh, y <= thresh where flipped */
    const __m512 th = _mm512_maskz_loadu_ps(lanes, v->thresh + c);
    const __mmask16 flip = flips16(v->flip_bits, o, c);
    const __mmask16 ge_lanes = (__mmask16)(lanes & ~flip), le_lanes = (__mmask16)(lanes & flip);
    for (int r = 0; r < R; ++r) {
        const __mmask16 bits = (__mmask16)(_mm512_mask_cmp_ps_mask(ge_lanes, y[r], th, _CMP_GE_OQ) |
                                           _mm512_mask_cmp_ps_mask(le_lanes, y[r], th, _CMP_LE_OQ));
        if (aligned)
            words[r] |= (uint64_t)bits << (c & 63);
        else
            or_bits(v->bits + (row + r) * v->ow, c, (size_t)__builtin_popcount(lanes), bits);
    }
}

#define CHUNK_ROWS 4 /* rows sharing a step's dispatch and parameters (8 measured slower) */

/* R <= CHUNK_ROWS rows of x (stride ldx) from output row `row`, outputs [n0, n0 + nv). */
AVX512_INLINE void rows_avx512(const chunk_view *v, size_t row, int R, size_t n0, size_t nv,
                               const float *x, size_t ldx) {
    /* groups at c % 16 == 0 (the panel path, sign_pack) never straddle a word: their bits are
     * gathered into whole words; or_bits handles the rest */
    const int aligned = n0 % 16 == 0;
    uint64_t words[CHUNK_ROWS] = {0};
    __m512 y[CHUNK_ROWS];
    for (size_t j = 0; j < nv; j += 16) {
        const size_t c = n0 + j, left = nv - j;
        const __mmask16 lanes = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        for (int r = 0; r < R; ++r) y[r] = _mm512_maskz_loadu_ps(lanes, x + (size_t)r * ldx + j);
        group16(v, row, c, lanes, R, y, aligned, words);
        if (aligned && v->bits && ((c & 63) == 48 || left <= 16)) { /* words complete */
            for (int r = 0; r < R; ++r) {
                v->bits[(row + r) * v->ow + (c >> 6)] |= words[r];
                words[r] = 0;
            }
        }
    }
}

AVX512_TRANSFORM static void chunk_avx512(const bn_transform *t, size_t row, size_t rows,
                                          size_t n0, size_t nv, const float *x, size_t ldx) {
    const chunk_view v = view_of(t);
    size_t r = 0;
    for (; r + CHUNK_ROWS <= rows; r += CHUNK_ROWS)
        rows_avx512(&v, row + r, CHUNK_ROWS, n0, nv, x + r * ldx, ldx);
    for (; r < rows; ++r) rows_avx512(&v, row + r, 1, n0, nv, x + r * ldx, ldx);
}

const bn_transform_kernel bn_transform_avx512 = {"avx512f", chunk_avx512};

/* AVX2: 8 float32 lanes as two halves of 4 outputs, [c[h], c[h] + n[h]) of row row[h] with
 * their values at x[h]: one row's 8 outputs (wide: c[1] = c[0] + 4, same row), or 4 outputs of
 * two rows (pair: same outputs, rows row and row + 1). Lanes past n[h] hold 0 and are masked off
 * the stores and bits. No FMA in the target: multiply and add round separately, as in numpy. */
#define AVX2_TRANSFORM __attribute__((target("avx2")))

#define AVX2_INLINE static inline __attribute__((target("avx2"), always_inline))

typedef struct {
    size_t row[2], c[2];
    unsigned n[2]; /* 0..4 */
    const float *x[2];
} lanes8;

AVX2_INLINE __m128i mask4(unsigned n) {
    return _mm_cmpgt_epi32(_mm_set1_epi32((int)n), _mm_setr_epi32(0, 1, 2, 3));
}

/* Floats [0, n) of p, zeros past them (masked lanes are not read). */
AVX2_INLINE __m128 load4(const float *p, unsigned n) {
    return n == 4 ? _mm_loadu_ps(p) : n ? _mm_maskload_ps(p, mask4(n)) : _mm_setzero_ps();
}

AVX2_INLINE void store4(float *p, unsigned n, __m128 v) {
    if (n == 4)
        _mm_storeu_ps(p, v);
    else if (n)
        _mm_maskstore_ps(p, mask4(n), v);
}

/* A per-output parameter row p (o floats) at the lanes' outputs. */
AVX2_INLINE __m256 outputs8(const float *p, const lanes8 *L, int pair) {
    if (!pair && L->n[1] == 4) return _mm256_loadu_ps(p + L->c[0]);
    const __m128 lo = load4(p + L->c[0], L->n[0]);
    return _mm256_set_m128(pair ? lo : load4(p + L->c[1], L->n[1]), lo);
}

/* A (rows, o) tensor at the lanes' rows and outputs. */
AVX2_INLINE __m256 rows8(const float *p, size_t o, const lanes8 *L) {
    return _mm256_set_m128(load4(p + L->row[1] * o + L->c[1], L->n[1]),
                           load4(p + L->row[0] * o + L->c[0], L->n[0]));
}

AVX2_INLINE __m256 steps8(const chunk_view *v, const lanes8 *L, int pair, __m256 y) {
    const size_t o = v->o;
    const float *p = v->params;
    const __m256 zero = _mm256_setzero_ps();
    for (int s = 0; s < v->nsteps; ++s) {
        switch (v->kinds[s]) {
        case BN_STEP_SCALE_SHIFT:
            y = _mm256_add_ps(_mm256_mul_ps(y, outputs8(p, L, pair)), outputs8(p + o, L, pair));
            break;
        case BN_STEP_RELU: /* y <= 0 -> +0.0 (NaN compares false and stays) */
            y = _mm256_andnot_ps(_mm256_cmp_ps(y, zero, _CMP_LE_OQ), y);
            break;
        case BN_STEP_PRELU: {
            const __m256 z = _mm256_add_ps(y, outputs8(p, L, pair));
            const __m256 neg = _mm256_mul_ps(outputs8(p + o, L, pair), z);
            y = _mm256_add_ps(_mm256_blendv_ps(neg, z, _mm256_cmp_ps(z, zero, _CMP_GT_OQ)),
                              outputs8(p + 2 * o, L, pair));
            break;
        }
        default: /* BN_STEP_ADD */
            y = _mm256_add_ps(y, rows8(v->residual, o, L));
        }
        p += (size_t)bn_step_params(v->kinds[s]) * o;
    }
    return y;
}

/* The lanes' outputs: steps, then y stored and the sign bits or'd into their rows. */
AVX2_INLINE void group8(const chunk_view *v, const lanes8 *L, int pair) {
    __m256 y = _mm256_set_m128(load4(L->x[1], L->n[1]), load4(L->x[0], L->n[0]));
    y = steps8(v, L, pair, y);
    const size_t o = v->o;
    if (v->y) {
        if (!pair && L->n[1] == 4) {
            _mm256_storeu_ps(v->y + L->row[0] * o + L->c[0], y);
        } else {
            store4(v->y + L->row[0] * o + L->c[0], L->n[0], _mm256_castps256_ps128(y));
            store4(v->y + L->row[1] * o + L->c[1], L->n[1], _mm256_extractf128_ps(y, 1));
        }
    }
    if (!v->bits) return;
    /* bit = y >= thresh, y <= thresh where flipped */
    const __m256 th = outputs8(v->thresh, L, pair);
    const unsigned ge = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(y, th, _CMP_GE_OQ));
    const unsigned le = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(y, th, _CMP_LE_OQ));
    const unsigned f = (unsigned)flips_at(v->flip_bits, o, L->c[0], 8);
    const unsigned flip = pair ? (f & 0xFu) * 0x11u : f & 0xFFu;
    const unsigned bits = (ge & ~flip) | (le & flip);
    if (pair) {
        or_bits(v->bits + L->row[0] * v->ow, L->c[0], L->n[0], bits & ((1u << L->n[0]) - 1u));
        or_bits(v->bits + L->row[1] * v->ow, L->c[1], L->n[1], (bits >> 4) & ((1u << L->n[1]) - 1u));
    } else {
        const unsigned n = L->n[0] + L->n[1];
        or_bits(v->bits + L->row[0] * v->ow, L->c[0], n, bits & ((1u << n) - 1u));
    }
}

AVX2_TRANSFORM static void chunk_avx2(const bn_transform *t, size_t row, size_t rows, size_t n0,
                                      size_t nv, const float *x, size_t ldx) {
    const chunk_view v = view_of(t);
    size_t r = 0;
    if (nv <= 4) /* 2 rows at a time */
        for (; r + 2 <= rows; r += 2) {
            const lanes8 L = {{row + r, row + r + 1}, {n0, n0}, {(unsigned)nv, (unsigned)nv},
                              {x + r * ldx, x + (r + 1) * ldx}};
            group8(&v, &L, 1);
        }
    for (; r < rows; ++r)
        for (size_t j = 0; j < nv; j += 8) {
            const size_t left = nv - j;
            const unsigned n_lo = left < 4 ? (unsigned)left : 4u;
            const unsigned n_hi = left < 4 ? 0u : left < 8 ? (unsigned)left - 4u : 4u;
            const lanes8 L = {{row + r, row + r}, {n0 + j, n0 + j + 4}, {n_lo, n_hi},
                              {x + r * ldx + j, x + r * ldx + j + 4}};
            group8(&v, &L, 0);
        }
}

const bn_transform_kernel bn_transform_avx2 = {"avx2", chunk_avx2};
#endif

/* ---- driver helpers ----------------------------------------------------------------------- */
int bn_transform_begin(bn_transform *t, size_t rows) {
    t->chunk = bn_isa()->transform->chunk;
    t->flip_bits = NULL;
    if (!t->bits) return BN_OK;
    uint64_t *flip_bits = (uint64_t *)malloc(bn_words(t->o) * sizeof(uint64_t));
    if (!flip_bits) return BN_ENOMEM;
    bn_pack_flags(t->flip, t->o, flip_bits);
    t->flip_bits = flip_bits;
    memset(t->bits, 0, rows * bn_words(t->o) * sizeof(uint64_t));
    return BN_OK;
}

void bn_transform_end(bn_transform *t) {
    free((void *)t->flip_bits);
    t->flip_bits = NULL;
}

/* ---- sign_pack: float32 rows -> packed signs (a transform without steps) -------------------- */
typedef struct {
    const float *x;
    size_t rows;
    const bn_transform *t;
} sign_job;

#define SIGN_ROWS 64 /* rows per task */

static void sign_task(void *vjob, long task, int worker) {
    const sign_job *j = (const sign_job *)vjob;
    (void)worker;
    const size_t r0 = (size_t)task * SIGN_ROWS;
    const size_t r1 = r0 + SIGN_ROWS < j->rows ? r0 + SIGN_ROWS : j->rows;
    j->t->chunk(j->t, r0, r1 - r0, 0, j->t->o, j->x + r0 * j->t->o, j->t->o);
}

int bn_sign_pack(const float *x, size_t rows, size_t c, bn_transform *t) {
    t->o = c;
    t->nsteps = 0;
    t->y = NULL;
    t->residual = NULL;
    if (bn_transform_begin(t, rows)) return BN_ENOMEM;
    sign_job job = {x, rows, t};
    bn_parallel_for((long)((rows + SIGN_ROWS - 1) / SIGN_ROWS),
                    bn_threads_for((double)rows * (double)c / 8), sign_task, &job);
    bn_transform_end(t);
    return BN_OK;
}
