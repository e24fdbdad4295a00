/* First layer with uint8 inputs and packed +-1 weights: out[m, n] = sum_i w_ni * x_mi.
 *
 * bitplane_gemm (paper §1.6): x = sum_b 2^b x^b with 0/1 bit planes x^b, and for a 0/1 plane
 * x^b . w = 2 popcount(x^b AND wbit) - popcount(x^b) = popcount(wbit) - popcount(x^b XOR wbit)
 * (as popcount(p AND q) = (popcount(p) + popcount(q) - popcount(p XOR q)) / 2). So
 *     out = 255 * popcount(wbit) - sum_b 2^b popcount(x^b XOR wbit),
 * which runs on the same XOR-popcount tiles as bgemm, with 8 plane rows per input row.
 *
 * int_gemm: the direct integer product of u8 inputs with s8 +-1 weights, output channels across
 * the vector lanes (AVX-512 VNNI vpdpbusd, AVX2 vpmaddubsw); see "direct integer path".
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#if BN_X86
#include <immintrin.h>
#endif

/* ---- bit planes ----------------------------------------------------------------------------- */
typedef struct {
    int32_t *out; /* output row of the block's first input row */
    size_t ldo;
} plane_ctx;

static void epi_planes(void *vctx, size_t r0, int mr, size_t n0, int nr, const uint32_t *cnt,
                       int ldc) {
    const plane_ctx *c = (const plane_ctx *)vctx;
    for (int i = 0; i < mr; ++i) {
        const size_t r = r0 + (size_t)i; /* plane row: input row r / 8, plane r % 8 */
        int32_t *row = c->out + (r >> 3) * c->ldo + n0;
        for (int j = 0; j < nr; ++j) row[j] -= (int32_t)(cnt[i * ldc + j] << (r & 7));
    }
}

typedef struct {
    const bn_tile_kernels *kr;
    void (*planes)(const uint8_t *x, size_t k, uint64_t *planes); /* same ISA row as kr */
    const uint8_t *x;
    const uint64_t *w;
    const int32_t *wpop; /* 255 * popcount(w row) */
    int32_t *out;
    size_t m, n, k, kw, bm, bn, tm;
    const uint64_t *panels; /* panel path (else NULL) */
    bn_scratch scratch;     /* per worker: 8 * bm plane rows */
} plane_job;

static void plane_task(void *vjob, long t, int worker) {
    plane_job *j = (plane_job *)vjob;
    uint64_t *planes = (uint64_t *)bn_scratch_get(&j->scratch, worker);
    if (!planes) return;
    const size_t in = (size_t)t / j->tm, im = (size_t)t % j->tm;
    const size_t m0 = im * j->bm, mb = j->m - m0 < j->bm ? j->m - m0 : j->bm;
    const size_t n0 = in * j->bn, n1 = n0 + j->bn < j->n ? n0 + j->bn : j->n;
    for (size_t i = 0; i < mb; ++i) {
        j->planes(j->x + (m0 + i) * j->k, j->k, planes + 8 * i * j->kw);
        if (!j->panels) /* the panel path writes 255 popcount(w) - sum directly */
            memcpy(j->out + (m0 + i) * j->n + n0, j->wpop + n0, (n1 - n0) * sizeof(int32_t));
    }
    plane_ctx ctx = {j->out + m0 * j->n, j->n};
    if (j->panels) {
        bn_panel_job job = {j->panels, BN_EPI_PLANES, 0, NULL, ctx.out, j->n, j->wpop, NULL, NULL, NULL};
        j->kr->panel(planes, j->kw, 8 * mb, n0, n1, j->kw, &job);
    } else {
        bn_gemm_block(j->kr, planes, j->kw, 8 * mb, j->w, j->kw, n0, n1, j->kw, epi_planes, &ctx);
    }
}

/* Weight-only work, done once per model (bn_bitplane_prepare) or, without it, on every call:
 * 255 popcount(w row) per output, and the panel copy of w for the panel path. */
void bn_bitplane_prepare(const uint64_t *w, size_t n, size_t k, int32_t *wpop, uint64_t *panels) {
    const size_t kw = bn_words(k);
    const bn_tile_kernels *kr = bn_isa()->tiles;
    for (size_t r = 0; r < n; ++r) wpop[r] = 255 * (int32_t)kr->popcount(w + r * kw, kw);
    if (panels) bn_repack_panels(w, n, kw, panels);
}

/* The prepared weights of a call: `prep`'s, else made here (*owned: free both after). Panels
 * only where the panel path runs: always when prepared (repacking costs nothing then: for the
 * MNIST layer at M = 1 the panel tiles, 8 plane rows x 16 outputs with no horizontal sums, took
 * 28 us, the 4 x 4 tiles with K = 13 words 72 us), else from PANEL_MIN_ROWS plane rows. */
static int bitplane_weights(const bn_tile_kernels *kr, const uint64_t *w,
                            const bn_bitplane_weights *prep, size_t m, size_t n, size_t k,
                            bn_bitplane_weights *use, void **owned) {
    const size_t kw = bn_words(k);
    owned[0] = owned[1] = NULL;
    if (prep) {
        use->wpop = prep->wpop;
        use->panels = prep->panels && bn_use_panels(kr, SIZE_MAX, kw) ? prep->panels : NULL;
        return BN_OK;
    }
    int32_t *wpop = (int32_t *)malloc(n * sizeof(int32_t));
    uint64_t *panels = NULL;
    if (wpop && bn_use_panels(kr, 8 * m, kw))
        panels = (uint64_t *)malloc(bn_panel_words(n, kw) * sizeof(uint64_t));
    owned[0] = wpop;
    owned[1] = panels;
    if (!wpop || (bn_use_panels(kr, 8 * m, kw) && !panels)) return BN_ENOMEM;
    bn_bitplane_prepare(w, n, k, wpop, panels);
    use->wpop = wpop;
    use->panels = panels;
    return BN_OK;
}

int bn_bitplane_gemm(const uint8_t *x, const uint64_t *w, const bn_bitplane_weights *prep,
                     size_t m, size_t n, size_t k, int32_t *out) {
    const size_t kw = bn_words(k);
    const bn_isa_row *isa = bn_isa();
    plane_job j;
    j.kr = isa->tiles;
    bn_bitplane_weights use;
    void *owned[2];
    if (bitplane_weights(j.kr, w, prep, m, n, k, &use, owned)) {
        free(owned[0]);
        free(owned[1]);
        return BN_ENOMEM;
    }
    j.planes = isa->planes->planes;
    j.x = x;
    j.w = w;
    j.wpop = use.wpop;
    j.panels = use.panels;
    j.out = out;
    j.m = m; j.n = n; j.k = k; j.kw = kw;
    j.bm = bn_block_m(kw) / 8; /* input rows per task (8 plane rows each) */
    j.bn = bn_block_n(kw, 8 * m, n);
    j.tm = (m + j.bm - 1) / j.bm;
    bn_scratch_init(&j.scratch, 8 * j.bm * kw * sizeof(uint64_t));
    const long tasks = (long)(j.tm * ((n + j.bn - 1) / j.bn));
    bn_parallel_for(tasks, bn_threads_for(8.0 * m * (double)n * (double)kw), plane_task, &j);
    const int failed = j.scratch.failed;
    bn_scratch_free(&j.scratch);
    free(owned[0]);
    free(owned[1]);
    return failed ? BN_ENOMEM : BN_OK;
}

/* ---- direct integer path -------------------------------------------------------------------- */
/* SIMD: output channels run across the vector lanes, so a small K (27 at a CIFAR first conv)
 * wastes no lanes. The weights are regrouped into "quad panels": panel p, quad g (inputs
 * 4g..4g+3), lane j = the 4 int8 weights (+-1, 0 past K or N) of channel L p + j, one vector per
 * (p, g). Each step broadcasts 4 input bytes of a row and multiplies them into a whole panel
 * (AVX-512 VNNI vpdpbusd: u8 x s8, 4 products summed into each int32 lane, no saturation;
 * AVX2: vpmaddubsw then vpmaddwd with ones, |pair| <= 510 so nothing saturates). A register tile
 * of INT_MR rows x INT_NP panels shares every load. Exact int32: |sum| <= 255 k fits (checked in
 * reference._check_first_layer). Portable: plain loops over the unpacked +-1 rows. */
#define INT_MR 4          /* rows per register tile (SIMD) */
#define INT_NP 4          /* panels per register tile (SIMD) */
#define INT_ROWS 64       /* input rows per task */
#define INT_PANEL_BYTES (128u * 1024u) /* weight panels per task: about an L2 share */

struct bn_int_job {
    const bn_int_kernel *kernel; /* lanes 16 (VNNI), 8 (AVX2) or 0 (portable) */
    const uint8_t *x;
    size_t m, n, k, k4, lanes; /* k4 = ceil(k / 4) quads; lanes per panel (16 or 8) */
    size_t ldx;                /* bytes from one row of x to the next: k, or 4 k4 with the
                                * pad bytes 0 (no tail quad to assemble) */
    const int8_t *quads;       /* SIMD: panels, ceil(n / lanes) x k4 x lanes x 4 bytes */
    const int8_t *wpm;         /* portable: unpacked +-1 rows of k */
    int8_t *owned;             /* the unpacked weights when made for this call, else NULL */
    size_t panels, panels_per_task, tm;
    int32_t *out;
    /* the fused first conv's threshold epilogue (kernels with fused_threshold): when set, each
     * row r of the call is packed to bits[r * words..] against its thresholds thresh[r] (n),
     * out unused */
    const int32_t *const *thresh;
    const uint64_t *flip_bits;
    uint64_t *bits;
};

/* Input quad g of a row as an int32; the tail quad (k % 4 != 0) byte-wise, so no read passes
 * the end of the row (its missing bytes meet zero weights). */
static inline int32_t x_quad(const uint8_t *x, size_t g) {
    int32_t v;
    memcpy(&v, x + 4 * g, 4);
    return v;
}
static inline int32_t x_tail_quad(const uint8_t *x, size_t k) {
    int32_t v = 0;
    for (size_t i = k / 4 * 4; i < k; ++i) v |= (int32_t)x[i] << (8 * (i % 4));
    return v;
}

static void int_rows_portable(const bn_int_job *j, size_t m0, size_t m1, size_t p0, size_t p1) {
    (void)p0; /* every output channel: no panels */
    (void)p1;
    for (size_t r = m0; r < m1; ++r) {
        const uint8_t *xr = j->x + r * j->ldx;
        for (size_t c = 0; c < j->n; ++c) {
            const int8_t *wr = j->wpm + c * j->k;
            int32_t acc = 0;
            for (size_t i = 0; i < j->k; ++i) acc += (int32_t)xr[i] * (int32_t)wr[i];
            j->out[r * j->n + c] = acc;
        }
    }
}

const bn_int_kernel bn_int_portable = {"portable", 0, int_rows_portable, 0};

#if BN_X86
#define VNNI_KERNEL __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define MADDUBS_KERNEL __attribute__((target("avx2")))

/* rows [r0, r0 + mr) (mr <= INT_MR) x panels [p0, p0 + np) (np <= INT_NP); inlined with
 * constant mr / np for whole tiles, so the accumulators stay in registers. */
#define VNNI_STEP(XQ)                                                                            \
    do {                                                                                         \
        __m512i w[INT_NP];                                                                       \
        for (int q = 0; q < np; ++q)                                                             \
            w[q] = _mm512_loadu_si512((const void *)(panel + (q * k4 + g) * 64));                \
        for (int r = 0; r < mr; ++r) {                                                           \
            const __m512i xb = _mm512_set1_epi32(XQ);                                            \
            for (int q = 0; q < np; ++q) acc[r][q] = _mm512_dpbusd_epi32(acc[r][q], xb, w[q]);   \
        }                                                                                        \
    } while (0)

static inline __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) void
int_tile_vnni(const bn_int_job *j, size_t r0, int mr, size_t p0, int np) {
    __m512i acc[INT_MR][INT_NP];
    for (int r = 0; r < mr; ++r)
        for (int q = 0; q < np; ++q) acc[r][q] = _mm512_setzero_si512();
    const size_t k = j->k, k4 = j->k4, ldx = j->ldx, full = ldx >= 4 * k4 ? k4 : k / 4;
    const int8_t *panel = j->quads + p0 * k4 * 64;
    const uint8_t *x = j->x + r0 * ldx;
    size_t g = 0;
    for (; g < full; ++g) VNNI_STEP(x_quad(x + r * ldx, g));
    if (g < k4) VNNI_STEP(x_tail_quad(x + r * ldx, k));
    if (j->thresh) { /* bits while the sums are in registers: p0 starts a word (INT_NP = 4) */
        /* one compare a lane: thresh holds ge_thresholds (a flipped channel's bit is the
         * complement of s >= t + 1), and the word's flip bits are applied once */
        const size_t words = bn_words(j->n), c0 = p0 * 16;
        const uint64_t flips = j->flip_bits[c0 / 64];
        for (int r = 0; r < mr; ++r) {
            const int32_t *t = j->thresh[r0 + (size_t)r] + c0;
            uint64_t word = 0;
            for (int q = 0; q < np; ++q) {
                const size_t c = c0 + (size_t)q * 16;
                const __mmask16 lanes = j->n - c >= 16 ? (__mmask16)0xFFFF
                                                       : (__mmask16)((1u << (j->n - c)) - 1u);
                const __m512i th = _mm512_maskz_loadu_epi32(lanes, t + q * 16);
                word |= (uint64_t)_mm512_mask_cmpge_epi32_mask(lanes, acc[r][q], th) << (16 * q);
            }
            j->bits[(r0 + (size_t)r) * words + c0 / 64] = word ^ flips;
        }
        return;
    }
    for (int r = 0; r < mr; ++r) {
        int32_t *row = j->out + (r0 + (size_t)r) * j->n;
        for (int q = 0; q < np; ++q) {
            const size_t c = (p0 + (size_t)q) * 16;
            if (c + 16 <= j->n)
                _mm512_storeu_si512((void *)(row + c), acc[r][q]);
            else
                _mm512_mask_storeu_epi32(row + c, (__mmask16)((1u << (j->n - c)) - 1u), acc[r][q]);
        }
    }
}

VNNI_KERNEL static void int_panels_vnni(const bn_int_job *j, size_t m0, size_t m1, size_t pa,
                                        size_t pb) {
    for (size_t p = pa; p < pb; p += INT_NP) {
        const int np = pb - p < INT_NP ? (int)(pb - p) : INT_NP;
        size_t r = m0;
        if (np == INT_NP)
            for (; r + INT_MR <= m1; r += INT_MR) int_tile_vnni(j, r, INT_MR, p, INT_NP);
        for (; r < m1; ++r) int_tile_vnni(j, r, 1, p, np);
    }
}

#define MADDUBS_STEP(XQ)                                                                         \
    do {                                                                                         \
        __m256i w[INT_NP];                                                                       \
        for (int q = 0; q < np; ++q)                                                             \
            w[q] = _mm256_loadu_si256((const __m256i *)(panel + (q * k4 + g) * 32));             \
        for (int r = 0; r < mr; ++r) {                                                           \
            const __m256i xb = _mm256_set1_epi32(XQ);                                            \
            for (int q = 0; q < np; ++q)                                                         \
                acc[r][q] = _mm256_add_epi32(                                                    \
                    acc[r][q], _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w[q]), ones));         \
        }                                                                                        \
    } while (0)

static inline __attribute__((target("avx2"), always_inline)) void
int_tile_avx2(const bn_int_job *j, size_t r0, int mr, size_t p0, int np) {
    __m256i acc[INT_MR][INT_NP];
    for (int r = 0; r < mr; ++r)
        for (int q = 0; q < np; ++q) acc[r][q] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    const size_t k = j->k, k4 = j->k4, ldx = j->ldx, full = ldx >= 4 * k4 ? k4 : k / 4;
    const int8_t *panel = j->quads + p0 * k4 * 32;
    const uint8_t *x = j->x + r0 * ldx;
    size_t g = 0;
    for (; g < full; ++g) MADDUBS_STEP(x_quad(x + r * ldx, g));
    if (g < k4) MADDUBS_STEP(x_tail_quad(x + r * ldx, k));
    for (int r = 0; r < mr; ++r) {
        int32_t *row = j->out + (r0 + (size_t)r) * j->n;
        for (int q = 0; q < np; ++q) {
            const size_t c = (p0 + (size_t)q) * 8;
            if (c + 8 <= j->n) {
                _mm256_storeu_si256((__m256i *)(row + c), acc[r][q]);
            } else {
                int32_t tmp[8];
                _mm256_storeu_si256((__m256i *)tmp, acc[r][q]);
                memcpy(row + c, tmp, (j->n - c) * sizeof(int32_t));
            }
        }
    }
}

MADDUBS_KERNEL static void int_panels_avx2(const bn_int_job *j, size_t m0, size_t m1, size_t pa,
                                           size_t pb) {
    for (size_t p = pa; p < pb; p += INT_NP) {
        const int np = pb - p < INT_NP ? (int)(pb - p) : INT_NP;
        size_t r = m0;
        if (np == INT_NP)
            for (; r + INT_MR <= m1; r += INT_MR) int_tile_avx2(j, r, INT_MR, p, INT_NP);
        for (; r < m1; ++r) int_tile_avx2(j, r, 1, p, np);
    }
}

const bn_int_kernel bn_int_vnni = {"avx512vnni", 16, int_panels_vnni, 1};
const bn_int_kernel bn_int_avx2 = {"avx2", 8, int_panels_avx2, 0};
#endif

static void int_task(void *vjob, long t, int worker) {
    const bn_int_job *j = (const bn_int_job *)vjob;
    (void)worker;
    const size_t m0 = ((size_t)t % j->tm) * INT_ROWS;
    const size_t m1 = m0 + INT_ROWS < j->m ? m0 + INT_ROWS : j->m;
    const size_t pa = ((size_t)t / j->tm) * j->panels_per_task;
    const size_t pb = pa + j->panels_per_task < j->panels ? pa + j->panels_per_task : j->panels;
    j->kernel->block(j, m0, m1, pa, pb);
}

/* Weight (+-1) of channel c at input i, 0 past n or k. */
static inline int8_t weight_at(const uint64_t *w, size_t kw, size_t n, size_t k, size_t c,
                               size_t i) {
    if (c >= n || i >= k) return 0;
    return (int8_t)(2 * (int)((w[c * kw + i / 64] >> (i % 64)) & 1) - 1);
}

typedef struct {
    const uint64_t *w;
    size_t n, k, k4, lanes;
    int8_t *dst; /* quad panels (SIMD) or +-1 rows (portable, lanes = 0) */
} unpack_job;

static void unpack_task(void *vjob, long t, int worker) {
    const unpack_job *u = (const unpack_job *)vjob;
    const size_t kw = bn_words(u->k);
    (void)worker;
    if (!u->lanes) { /* portable: row t */
        for (size_t i = 0; i < u->k; ++i)
            u->dst[(size_t)t * u->k + i] = weight_at(u->w, kw, u->n, u->k, (size_t)t, i);
        return;
    }
    /* 4 weights at a time: a nibble of the packed row -> 4 bytes of +-1 */
    int32_t lut[16];
    for (int v = 0; v < 16; ++v) {
        uint32_t bytes = 0;
        for (int b = 0; b < 4; ++b) bytes |= (uint32_t)((v >> b) & 1 ? 0x01 : 0xFF) << (8 * b);
        lut[v] = (int32_t)bytes;
    }
    const uint32_t tail = u->k % 4 ? (1u << (8 * (u->k % 4))) - 1u : 0xFFFFFFFFu; /* 0 past k */
    int32_t *panel = (int32_t *)(u->dst + (size_t)t * u->k4 * u->lanes * 4); /* panel t */
    for (size_t lane = 0; lane < u->lanes; ++lane) {
        const size_t c = (size_t)t * u->lanes + lane;
        if (c >= u->n) {
            for (size_t g = 0; g < u->k4; ++g) panel[g * u->lanes + lane] = 0;
            continue;
        }
        const uint64_t *row = u->w + c * kw;
        for (size_t g = 0; g < u->k4; ++g)
            panel[g * u->lanes + lane] = lut[(row[g / 16] >> (4 * (g % 16))) & 0xF];
        panel[(u->k4 - 1) * u->lanes + lane] &= (int32_t)tail;
    }
}

/* Bytes of the unpacked weights for a kernel of `lanes` (quad panels; 0: +-1 rows), or 0 when
 * that overflows size_t (they take 8 times the packed weights, or more). */
size_t bn_int_weight_bytes(size_t n, size_t k, size_t lanes) {
    size_t bytes;
    if (!lanes) return __builtin_mul_overflow(n, k, &bytes) ? 0 : bytes;
    const size_t panel_bytes = (k + 3) / 4 * lanes * 4; /* k <= BN_FIRST_LAYER_MAX_K */
    return __builtin_mul_overflow((n + lanes - 1) / lanes, panel_bytes, &bytes) ? 0 : bytes;
}

/* The weights unpacked for a kernel of `lanes` into dst (bn_int_weight_bytes(n, k, lanes)). */
void bn_int_prepare(const uint64_t *w, size_t n, size_t k, size_t lanes, int8_t *dst) {
    unpack_job u = {w, n, k, (k + 3) / 4, lanes, dst};
    bn_parallel_for(lanes ? (long)((n + lanes - 1) / lanes) : (long)n,
                    bn_threads_for((double)n * (double)k / 8), unpack_task, &u);
}

/* The job's kernel, sizes and unpacked weights: `prep`'s when they were made for this kernel's
 * lanes, else unpacked here (j->owned: free it after); BN_OK, BN_ENOMEM or BN_EOVERFLOW. */
static int int_job_init(bn_int_job *j, const uint64_t *w, const bn_int_weights *prep, size_t m,
                        size_t n, size_t k) {
    memset(j, 0, sizeof(*j));
    j->kernel = bn_isa()->int_gemm;
    j->m = m; j->n = n; j->k = k; j->ldx = k;
    j->k4 = (k + 3) / 4;
    j->lanes = j->kernel->lanes;
    j->tm = (m + INT_ROWS - 1) / INT_ROWS;
    if (j->lanes) {
        j->panels = (n + j->lanes - 1) / j->lanes;
        const size_t panel_bytes = j->k4 * j->lanes * 4;
        size_t per = INT_PANEL_BYTES / panel_bytes / INT_NP * INT_NP;
        j->panels_per_task = per < INT_NP ? INT_NP : per;
    } else {
        j->panels = j->panels_per_task = 1;
    }
    if (prep && prep->quads && prep->lanes == j->lanes) {
        j->quads = j->wpm = prep->quads;
        return BN_OK;
    }
    const size_t bytes = bn_int_weight_bytes(n, k, j->lanes);
    if (!bytes) return BN_EOVERFLOW;
    j->owned = (int8_t *)malloc(bytes);
    if (!j->owned) return BN_ENOMEM;
    bn_int_prepare(w, n, k, j->lanes, j->owned);
    j->quads = j->wpm = j->owned;
    return BN_OK;
}

int bn_int_gemm(const uint8_t *x, const uint64_t *w, const bn_int_weights *prep, size_t m,
                size_t n, size_t k, int32_t *out) {
    bn_int_job j;
    const int rc = int_job_init(&j, w, prep, m, n, k);
    if (rc) return rc;
    j.x = x;
    j.out = out;
    const size_t tn = (j.panels + j.panels_per_task - 1) / j.panels_per_task;
    /* the int8 weights are read once per INT_ROWS rows (8 bytes a word-operation): at M = 1
     * that, not the products, takes the time (MNIST MLP: 3.2 MB, 45 us) */
    const double work = (double)m * (double)n * (double)k / 64 + (double)j.tm * n * k / 8;
    bn_parallel_for((long)(j.tm * tn), bn_threads_for(work), int_task, &j);
    free(j.owned);
    return BN_OK;
}

/* ---- fused first conv: uint8 NCHW -> im2col -> integer product -> class thresholds -------- */
/* One task per INT_ROWS output pixels: their patches (zero padding) and int32 sums live in the
 * worker's scratch (cache), so neither the (pixels, K) patch matrix nor the (pixels, O) int32
 * sums are ever written to memory (for a CIFAR first conv at batch 64 the latter is 32 MiB,
 * whose first-touch page faults alone took as long as the arithmetic). */
typedef struct {
    const bn_first_conv *s;
    const bn_int_job *ij;   /* weights and kernel; x / out / m set per task */
    const bn_threshold_kernel *th;
    const uint64_t *flip_bits;
    const int32_t *ge_thresh; /* the fused tiles' thresholds (ge_thresholds), else NULL */
    uint64_t *out;
    size_t pixels, k;
    const uint8_t *xpad;    /* the images as zero-padded NHWC (padded_nhwc), or NULL */
    size_t hp, wp;          /* its padded height and width */
    bn_scratch scratch;     /* INT_ROWS x (k bytes + O int32) */
} first_conv_job;

/* NCHW -> zero-padded NHWC, so a row of taps is kw * c consecutive bytes (one copy). */
typedef struct {
    const bn_first_conv *s;
    uint8_t *xp;
    size_t hp, wp;
} pad_job;

/* Image t: its border rows and columns zeroed, its interior interleaved row by row (the
 * channel count a constant for RGB and grey, so the loop is a few moves a pixel). */
static void pad_task(void *vjob, long t, int worker) {
    const pad_job *j = (const pad_job *)vjob;
    const bn_first_conv *s = j->s;
    const size_t n = (size_t)t, c = s->c, row = j->wp * c, plane = s->h * s->w;
    (void)worker;
    uint8_t *img = j->xp + n * j->hp * row;
    memset(img, 0, s->ph * row);
    memset(img + (s->ph + s->h) * row, 0, (j->hp - s->ph - s->h) * row);
    for (size_t y = 0; y < s->h; ++y) {
        uint8_t *dst = img + (y + s->ph) * row;
        const uint8_t *src = s->x + n * c * plane + y * s->w;
        memset(dst, 0, s->pw * c);
        memset(dst + (s->pw + s->w) * c, 0, (j->wp - s->pw - s->w) * c);
        dst += s->pw * c;
        if (c == 3) {
            for (size_t x = 0; x < s->w; ++x, dst += 3) {
                dst[0] = src[x];
                dst[1] = src[plane + x];
                dst[2] = src[2 * plane + x];
            }
        } else if (c == 1) {
            memcpy(dst, src, s->w);
        } else {
            for (size_t x = 0; x < s->w; ++x)
                for (size_t ch = 0; ch < c; ++ch) dst[x * c + ch] = src[ch * plane + x];
        }
    }
}

/* The padded NHWC copy of the images, or NULL when it would be much larger than the input
 * (huge padding: gather instead) or memory is short. */
static uint8_t *padded_nhwc(const bn_first_conv *s, size_t *hp, size_t *wp) {
    size_t bytes;
    *hp = s->h + 2 * s->ph; /* module.c keeps the padded extents within Py_ssize_t */
    *wp = s->w + 2 * s->pw;
    if (__builtin_mul_overflow(s->n * s->c, *hp, &bytes) ||
        __builtin_mul_overflow(bytes, *wp, &bytes) ||
        bytes > 4 * s->n * s->c * s->h * s->w + ((size_t)1 << 20))
        return NULL;
    pad_job j = {s, (uint8_t *)malloc(bytes), *hp, *wp};
    if (!j.xp) return NULL;
    /* a byte costs some 4 word-operations (moved one at a time; CIFAR batch 64, 222 kB: 74 us
     * on one Zen 4 core) */
    bn_parallel_for((long)s->n, bn_threads_for(4.0 * (double)bytes), pad_task, &j);
    return j.xp;
}

/* count bytes in 8-byte moves and a byte tail: a patch row is a few bytes (9 for a 3x3 RGB
 * conv), for which a memcpy call cost more than the copy */
static inline void copy_short(uint8_t *dst, const uint8_t *src, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) memcpy(dst + i, src + i, 8);
    for (; i < count; ++i) dst[i] = src[i];
}

/* The patch of `pixel` from the padded NHWC images: per kernel row one copy (undilated). */
static void first_conv_patch_padded(const first_conv_job *j, size_t n, size_t ho, size_t wo,
                                    uint8_t *dst) {
    const bn_first_conv *s = j->s;
    for (size_t i = 0; i < s->kh; ++i) {
        const uint8_t *row = j->xpad + ((n * j->hp + ho * s->sh + i * s->dh) * j->wp + wo * s->sw) * s->c;
        if (s->dw == 1) {
            copy_short(dst, row, s->kw * s->c);
            dst += s->kw * s->c;
        } else {
            for (size_t t = 0; t < s->kw; ++t, dst += s->c) memcpy(dst, row + t * s->dw * s->c, s->c);
        }
    }
}

static void first_conv_patch(const bn_first_conv *s, size_t n, size_t ho, size_t wo,
                             uint8_t *dst) {
    const int64_t hb = (int64_t)(ho * s->sh) - (int64_t)s->ph;
    const int64_t wb = (int64_t)(wo * s->sw) - (int64_t)s->pw;
    for (size_t i = 0; i < s->kh; ++i) {
        const int64_t hi = hb + (int64_t)(i * s->dh);
        for (size_t j = 0; j < s->kw; ++j) {
            const int64_t wi = wb + (int64_t)(j * s->dw);
            const int inside = hi >= 0 && hi < (int64_t)s->h && wi >= 0 && wi < (int64_t)s->w;
            const uint8_t *src = s->x + ((n * s->c) * s->h + (size_t)(inside ? hi : 0)) * s->w +
                                 (size_t)(inside ? wi : 0);
            for (size_t c = 0; c < s->c; ++c, ++dst) *dst = inside ? src[c * s->h * s->w] : 0;
        }
    }
}

static void first_conv_task(void *vjob, long t, int worker) {
    first_conv_job *j = (first_conv_job *)vjob;
    const bn_first_conv *s = j->s;
    uint8_t *patches = (uint8_t *)bn_scratch_get(&j->scratch, worker);
    if (!patches) return;
    const size_t ldx = j->ij->k4 * 4; /* patch rows padded with zeros to whole quads */
    int32_t *sums = (int32_t *)(patches + (INT_ROWS * ldx + 63) / 64 * 64);
    const size_t p0 = (size_t)t * INT_ROWS;
    const size_t rows = j->pixels - p0 < INT_ROWS ? j->pixels - p0 : INT_ROWS;
    const int32_t *thresh[INT_ROWS]; /* each pixel's thresholds: its border class's */
    const int32_t *classes = j->ge_thresh ? j->ge_thresh : s->thresh;
    /* the pixels' coordinates stepped, not divided out (divisions took as long as the patch) */
    size_t wo = p0 % s->wo, ho = p0 / s->wo % s->ho, n = p0 / s->wo / s->ho;
    for (size_t r = 0; r < rows; ++r) {
        uint8_t *patch = patches + r * ldx;
        if (j->xpad)
            first_conv_patch_padded(j, n, ho, wo, patch);
        else
            first_conv_patch(s, n, ho, wo, patch);
        for (size_t i = j->k; i < ldx; ++i) patch[i] = 0;
        thresh[r] = classes +
                    ((size_t)s->row_class[ho] * s->col_classes + (size_t)s->col_class[wo]) * s->o;
        if (++wo == s->wo) {
            wo = 0;
            if (++ho == s->ho) {
                ho = 0;
                ++n;
            }
        }
    }
    bn_int_job ij = *j->ij;
    ij.x = patches;
    ij.ldx = ldx;
    ij.out = sums;
    ij.m = rows;
    const size_t ow = bn_words(s->o);
    if (j->ge_thresh) { /* bits straight from the tiles */
        ij.thresh = thresh;
        ij.flip_bits = j->flip_bits;
        ij.bits = j->out + p0 * ow;
        ij.kernel->block(&ij, 0, rows, 0, ij.panels);
        return;
    }
    ij.kernel->block(&ij, 0, rows, 0, ij.panels);
    for (size_t r = 0; r < rows; ++r) {
        const bn_thresholds th = {thresh[r], s->flip, j->flip_bits, s->o};
        j->th->row(&th, sums + r * s->o, j->out + (p0 + r) * ow);
    }
}

/* The thresholds for bit = (s >= t') ^ flip: t' = t, or t + 1 for a flipped channel (s <= t is
 * not s >= t + 1), each clamped to [-255 k, 255 k + 1], which |s| <= 255 k cannot tell apart
 * from t's value, so t + 1 cannot overflow. NULL when out of memory. */
static int32_t *ge_thresholds(const bn_first_conv *s, size_t k) {
    const size_t classes = s->row_classes * s->col_classes;
    int32_t *t = (int32_t *)malloc(classes * s->o * sizeof(int32_t));
    if (!t) return NULL;
    const int64_t bound = 255 * (int64_t)k;
    for (size_t i = 0; i < classes; ++i)
        for (size_t c = 0; c < s->o; ++c) {
            int64_t v = (int64_t)s->thresh[i * s->o + c] + (s->flip[c] != 0);
            v = v < -bound ? -bound : v > bound + 1 ? bound + 1 : v;
            t[i * s->o + c] = (int32_t)v;
        }
    return t;
}

int bn_int_conv_threshold(const bn_first_conv *s, const uint64_t *w, uint64_t *out) {
    const size_t k = s->kh * s->kw * s->c, pixels = s->n * s->ho * s->wo;
    bn_int_job ij;
    int rc = int_job_init(&ij, w, NULL, INT_ROWS, s->o, k);
    if (rc) return rc;
    first_conv_job j = {s, &ij, bn_isa()->threshold, NULL, NULL, out, pixels, k, NULL, 0, 0,
                        {{0}, 0, 0}};
    uint64_t *flip_bits = (uint64_t *)malloc(bn_words(s->o) * sizeof(uint64_t));
    int32_t *ge_thresh = ij.kernel->fused_threshold ? ge_thresholds(s, k) : NULL;
    size_t bytes;
    if (__builtin_mul_overflow(s->o, (size_t)INT_ROWS * sizeof(int32_t), &bytes) ||
        __builtin_add_overflow(bytes, (INT_ROWS * ij.k4 * 4 + 63) / 64 * 64, &bytes)) {
        free(flip_bits);
        free(ge_thresh);
        free(ij.owned);
        return BN_EOVERFLOW;
    }
    if (!flip_bits || (ij.kernel->fused_threshold && !ge_thresh)) {
        free(flip_bits);
        free(ge_thresh);
        free(ij.owned);
        return BN_ENOMEM;
    }
    bn_pack_flags(s->flip, s->o, flip_bits);
    j.flip_bits = flip_bits;
    j.ge_thresh = ge_thresh;
    uint8_t *xpad = padded_nhwc(s, &j.hp, &j.wp);
    j.xpad = xpad;
    bn_scratch_init(&j.scratch, bytes);
    /* a pixel's patch, products and thresholds cost about a popcount word-operation per 4
     * multiply-adds (CIFAR first conv: 45 us for one image on one Zen 4 core, against 2.5e5
     * word-operations of some 15 us: so from one image on, two threads) */
    bn_parallel_for((long)((pixels + INT_ROWS - 1) / INT_ROWS),
                    bn_threads_for((double)pixels * (double)s->o * (double)k / 4),
                    first_conv_task, &j);
    rc = j.scratch.failed ? BN_ENOMEM : BN_OK;
    bn_scratch_free(&j.scratch);
    free(xpad);
    free(flip_bits);
    free(ge_thresh);
    free(ij.owned);
    return rc;
}
