/* Shared declarations of the XNOR-popcount core (no Python here: module.c does the bindings).
 *
 * Conventions (docs/design.md): bit 1 <=> +1, bit 0 <=> -1; rows packed LSB first into uint64
 * words; pad bits 0 in both operands, so dot = k - 2 * popcount(a XOR w).
 */
#ifndef BINARYNET_CORE_H
#define BINARYNET_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifndef BN_X86 /* -DBN_X86=0 builds what other CPUs get: the portable kernels only */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BN_X86 1
#else
#define BN_X86 0
#endif
#endif

/* ---- popcount tiles (tiles_*.c) ------------------------------------------------------------- */
/* Popcount tile kernels: cnt[i * nr + j] = sum_{t < kw} popcount(a[i][t] ^ w[j][t]) for an
 * mr x nr tile (mr, nr fixed per kernel). a / w hold row pointers; the driver repeats the last
 * row to fill edge tiles. */
typedef void (*bn_tile_fn)(const uint64_t *const *a, const uint64_t *const *w, size_t kw,
                           uint32_t *cnt);

/* Called for every finished tile: rows [m0, m0+mr) of the current A block, W rows [n0, n0+nr). */
typedef void (*bn_epilogue_fn)(void *ctx, size_t m0, int mr, size_t n0, int nr,
                               const uint32_t *cnt, int ldc);

/* Panel path (AVX-512). W rows are regrouped into panels of 8 with their words interleaved
 * (panel p, word t, lane j = w[8p + j][t], 0 past N). The kernel broadcasts one word of an A
 * row against a panel, so each accumulator lane is a finished sum for one output: no horizontal
 * reduction, and the epilogue (dot, threshold bits, bit-plane sums) runs on whole vectors. It
 * pays off once there are enough A rows to amortise the repacking of W. */
enum bn_epi_kind { BN_EPI_DOT = 0, BN_EPI_BITS = 1, BN_EPI_PLANES = 2, BN_EPI_TRANSFORM = 3 };
struct bn_transform;
typedef struct {
    const uint64_t *panels;    /* bn_repack_panels output */
    int kind;
    int32_t k;                 /* dot = k - 2 * count */
    const int32_t *row_k;      /* per block row k, or NULL (k for all); -1: use `epi` for the row,
                                  <= -2: a per-output k from kvec (conv borders) */
    void *out;                 /* block row 0 of: int32 rows (DOT), bit words (BITS), or the
                                  int32 rows of the input rows, plane row r -> row r / 8 (PLANES:
                                  rows come as the 8 planes of each input row, mb a multiple of 8) */
    size_t ldo;                /* elements (DOT, PLANES) or words (BITS) per output row */
    const int32_t *thresh;     /* BITS: thresholds; PLANES: 255 * popcount(w row) per output */
    const uint64_t *flip_bits; /* BITS: flip packed as bits */
    bn_epilogue_fn epi;        /* scalar epilogue for rows with row_k < 0 */
    void *epi_ctx;
    const struct bn_transform *transform; /* TRANSFORM: block row r is output row row0 + r */
    size_t row0;
    const int32_t *kvec;       /* row_k <= -2: k of output n is kvec[(-2 - row_k) * ldk + n] */
    size_t ldk;
    const int32_t *count_le;   /* BITS, or NULL: for rows of k, bit = (count <= count_le[n]) ^
                                  flip (bn_count_thresholds): one compare a vector */
} bn_panel_job;
/* A rows [0, mb) (stride lda) x outputs [n0, n1), n0 a multiple of 16. */
typedef void (*bn_panel_fn)(const uint64_t *a, size_t lda, size_t mb, size_t n0, size_t n1,
                            size_t kw, const bn_panel_job *job);

typedef struct {
    const char *name;   /* instruction set it needs, e.g. "avx512vpopcntdq" */
    int mr, nr;         /* wide tile, used when there are at least mr rows of A */
    bn_tile_fn tile;
    int thin_nr;        /* 1 x thin_nr tile for a single row of A (GEMV) */
    bn_tile_fn thin;
    bn_panel_fn panel;  /* panel path, or NULL */
    /* sum of the popcounts of n words, for setup work (conv border prefix sums, weight row
     * counts): without the popcnt instruction the builtin is a library call per word */
    uint64_t (*popcount)(const uint64_t *p, size_t n);
    /* out[r] = popcount of words [r n, r n + n) for r < runs (conv taps: one call per weight
     * row, not one per tap) */
    void (*run_popcounts)(const uint64_t *p, size_t runs, size_t n, int32_t *out);
} bn_tile_kernels;

extern const bn_tile_kernels bn_tiles_portable; /* the reference: plain C */
#if BN_X86
extern const bn_tile_kernels bn_tiles_popcnt;   /* the same C with the popcnt instruction */
extern const bn_tile_kernels bn_tiles_avx2;
extern const bn_tile_kernels bn_tiles_avx512;
uint64_t bn_popcount_words_popcnt(const uint64_t *p, size_t n); /* the popcnt instruction */
void bn_run_popcounts_popcnt(const uint64_t *p, size_t runs, size_t n, int32_t *out);
#endif

/* ---- packing kernels (pack.c) ---------------------------------------------------------------- */
enum bn_dtype { BN_F32 = 0, BN_F64 = 1, BN_I8 = 2, BN_U8 = 3, BN_NUM_DTYPES = 4 };
static inline size_t bn_dtype_size(int dtype) {
    return dtype == BN_F64 ? 8 : dtype == BN_F32 ? 4 : 1;
}
/* One row of k elements of a dtype -> ceil(k/64) words; bit = (x >= 0). */
typedef void (*bn_pack_row_fn)(const void *x, size_t k, uint64_t *out);
typedef struct {
    const char *name;
    bn_pack_row_fn row[BN_NUM_DTYPES]; /* by enum bn_dtype */
} bn_pack_kernels;
/* The 8 bit planes of a uint8 row of k values -> 8 packed rows of ceil(k/64) words. */
typedef struct {
    const char *name;
    void (*planes)(const uint8_t *x, size_t k, uint64_t *planes);
} bn_planes_kernel;

extern const bn_pack_kernels bn_pack_portable;
extern const bn_planes_kernel bn_planes_portable;
#if BN_X86
extern const bn_pack_kernels bn_pack_avx2;
extern const bn_planes_kernel bn_planes_avx2;
extern const bn_planes_kernel bn_planes_avx512;
#endif

/* ---- threshold rows (threshold.c) ------------------------------------------------------------ */
/* Batch-norm + sign of one row of n int32 sums -> ceil(n/64) words: bit = x >= thresh, or
 * x <= thresh where flipped (flip as bytes for scalar code, as bits for SIMD masks). */
typedef struct {
    const int32_t *thresh;
    const uint8_t *flip;
    const uint64_t *flip_bits;
    size_t n;
} bn_thresholds;
typedef struct {
    const char *name;
    void (*row)(const bn_thresholds *t, const int32_t *x, uint64_t *out);
} bn_threshold_kernel;

extern const bn_threshold_kernel bn_threshold_portable;
#if BN_X86
extern const bn_threshold_kernel bn_threshold_avx2;
extern const bn_threshold_kernel bn_threshold_avx512;
#endif

/* ---- direct integer first layer (first_layer.c) ---------------------------------------------- */
typedef struct bn_int_job bn_int_job;
typedef struct {
    const char *name;
    size_t lanes; /* output channels per weight panel (vector lanes); 0: unpacked +-1 rows */
    /* input rows [m0, m1) x weight panels [p0, p1) (portable: all outputs, p0 / p1 unused) */
    void (*block)(const bn_int_job *j, size_t m0, size_t m1, size_t p0, size_t p1);
    int fused_threshold; /* block packs bits against per-row thresholds (the first conv) */
} bn_int_kernel;

extern const bn_int_kernel bn_int_portable;
#if BN_X86
extern const bn_int_kernel bn_int_avx2;
extern const bn_int_kernel bn_int_vnni;
#endif

/* ---- output transform (transform.c) ---------------------------------------------------------- */
/* The float32 tail of a binary layer, applied to the sums of a tile while they are in cache:
 * y = float32(s), then each step in order (the first is the layer's scale/shift), every
 * operation rounded to float32 as numpy does (this code is built with -ffp-contract=off). Then
 * y is stored (float_out) and/or its sign packed: bit = y >= thresh, y <= thresh where flipped. */
enum bn_step_kind { BN_STEP_SCALE_SHIFT = 0, BN_STEP_RELU = 1, BN_STEP_PRELU = 2,
                    BN_STEP_ADD = 3, BN_NUM_STEP_KINDS = 4 };
#define BN_MAX_STEPS 64
static inline int bn_step_params(int kind) { /* per-channel float32 rows a step reads */
    return kind == BN_STEP_SCALE_SHIFT ? 2 : kind == BN_STEP_PRELU ? 3 : 0;
}
typedef struct bn_transform bn_transform;
/* Outputs [n, n + nv) of output rows [row, row + rows), from their values float32(s): those of
 * row row + r are x[r * ldx], ..., x[r * ldx + nv - 1]. Several rows per call: at 32 or 64
 * channels a call per row cost as much as the arithmetic. */
typedef void (*bn_transform_fn)(const bn_transform *t, size_t row, size_t rows, size_t n,
                                size_t nv, const float *x, size_t ldx);
struct bn_transform {
    size_t o;                   /* channels per output row */
    int nsteps;
    const uint8_t *kinds;       /* enum bn_step_kind */
    const float *params;        /* bn_step_params rows of o floats per step, in step order */
    const float *residual;      /* (rows, o) for BN_STEP_ADD, else NULL */
    float *y;                   /* (rows, o) output, or NULL */
    const float *thresh;        /* (o,) sign thresholds, or NULL (no bits) */
    const uint8_t *flip;        /* (o,) */
    const uint64_t *flip_bits;  /* flip packed (the drivers fill it) */
    uint64_t *bits;             /* (rows, words(o)), zeroed before: chunks OR their bits in */
    bn_transform_fn chunk;      /* the ISA row's kernel (the drivers fill it) */
};
typedef struct {
    const char *name;
    bn_transform_fn chunk;
} bn_transform_kernel;

extern const bn_transform_kernel bn_transform_portable;
#if BN_X86
extern const bn_transform_kernel bn_transform_avx2;
extern const bn_transform_kernel bn_transform_avx512;
#endif

/* ---- float-input first dense layer (float_layer.c) ------------------------------------------- */
/* first_dense_float_sign's operands (float_layer.c says how the bits are decided) */
typedef struct bn_float_sign_job {
    const float *x;        /* (m, k) */
    const uint64_t *w;     /* (n, kw) packed +-1 */
    const uint64_t *panels; /* w regrouped by bn_repack_panels */
    const float *bias, *thresh;
    const uint8_t *flip;   /* (n) */
    const uint64_t *flip_bits; /* the same, packed (bn_pack_flags) */
    size_t m, n, k, kw;
    uint64_t *out;         /* (m, bn_words(n)) */
} bn_float_sign_job;

typedef struct {
    const char *name;
    /* one input row (float32, or float64 when f64) -> its nibble tables */
    void (*tables)(const void *x, int f64, size_t k, size_t kw, double *t);
    /* up to 4 rows of tables x outputs [n0, n1) -> out rows (stride ldo); panels: w regrouped
     * by bn_repack_panels, or NULL */
    void (*block)(const double *const *tables, size_t rows, const uint64_t *w,
                  const uint64_t *panels, size_t n0, size_t n1, size_t kw, double *out,
                  size_t ldo);
    /* first_dense_float_sign: one float32 row -> its float32 nibble tables, returning the
     * row's sum |x_i| (for its error bound); up to 4 rows (from m0, with their bounds) x
     * outputs [n0, n1) (multiples of 64, or n1 = n) -> their sign bits */
    double (*tables32)(const float *x, size_t k, size_t kw, float *t);
    void (*sign_block32)(const struct bn_float_sign_job *j, const float *const *tables,
                         const float *bounds, size_t m0, size_t rows, size_t n0, size_t n1);
} bn_float_kernel;

/* the decision of output o of row r where its float32 sum is not certain enough: the float64
 * sum in input order, rounded to float32, plus the bias, against the threshold */
int bn_float_sign_exact(const bn_float_sign_job *j, size_t r, size_t o);

extern const bn_float_kernel bn_float_portable;
#if BN_X86
extern const bn_float_kernel bn_float_avx512;
#endif
/* out (m, n) float64 = x (m, k) . w^T over +-1 weights; panels: bn_repack_panels(w) made once
 * (bn_bitplane_prepare's), or NULL; BN_OK / BN_ENOMEM / BN_EOVERFLOW. */
int bn_first_dense_float(const void *x, int f64, const uint64_t *w, const uint64_t *panels,
                         size_t m, size_t n, size_t k, double *out);
int bn_first_dense_float_sign(const float *x, const uint64_t *w, const uint64_t *panels,
                              const float *bias, const float *thresh, const uint8_t *flip,
                              size_t m, size_t n, size_t k, uint64_t *out);

/* ---- real-valued convolution (float_conv.c, float_conv_avx512.c) ---------------------------- */
/* Two jobs on one driver. The real stream's conv (`out`): x (N, H, W, C) float32, zero padded;
 * weights as float32 panels32 (float_conv.py: depthwise (KH * KW, opad32), else (groups,
 * KH * KW, C/groups, opad32); opad32 = the group's outputs rounded up to BN_FCONV_LANES32, zeros
 * past them); each sum float32 from bias, then taps (kh, kw), then input channels, one fused
 * multiply-add a term -> out (N, Ho, Wo, O). The float-input first conv (`sign`): x (N, H, W, C)
 * (or (N, C, H, W)), float32 (or float64), padded with `pad`, one group; weights as float64
 * panels (KH * KW, C, opad), opad a multiple of BN_FCONV_LANES; sums float64 from 0 in the same
 * order, rounded once to float32 -> bits (N, Ho, Wo, ceil(O/64)) of z = float32(sum) +
 * sign->bias (float32): z >= thresh (z <= thresh where flip). */
#define BN_FCONV_LANES 8
#define BN_FCONV_LANES32 16
typedef struct {
    size_t n, h, w, c, o, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, groups;
} bn_fconv_shape;
typedef struct {
    const float *bias, *thresh; /* (O,) float32 */
    const uint8_t *flip;        /* (O,) 0/1 */
    uint64_t *out;              /* (N, Ho, Wo, ceil(O/64)) */
} bn_fconv_sign;
typedef struct {
    const bn_fconv_shape *s;
    const void *x;
    int x_f64, x_nchw;
    double pad;
    const double *panels;       /* sign: float64 panels; NULL for the real conv */
    const float *bias;          /* out: (O,), the sums' start */
    float *out;                 /* the real conv's float32 out, or NULL (bits: sign) */
    const bn_fconv_sign *sign;
    const uint8_t *flip8;       /* sign: flip bits, 8 channels a byte (LSB first) */
    size_t cg, og, opad;        /* per group: input and output channels; panel row length */
    int depthwise;              /* cg == og == 1 < groups: channels across the lanes */
    /* float32 panels (KH * KW, C/groups, opad32): the real conv's (the caller's), or those the
     * float32 sign path makes (float_conv.c says when and why), whose output's error bound is
     * factor32[o] * (a band's max |x|) + tiny32 */
    const float *panels32, *factor32;
    float tiny32;
    size_t opad32;
} bn_fconv_job;
/* A band of the padded input of image n, float64 (x) or float32 (x32) (rows, cols, C): padded
 * rows from oy0 * sh and padded columns from ox0 * sw, enough for output rows [oy0, oy1) x
 * columns [ox0, ox1). */
typedef struct {
    const double *x;
    const float *x32;                 /* the float32 band (x unused), else NULL */
    const float *bound32;             /* the float32 sign path's error bounds (opad32) */
    size_t n, oy0, oy1, ox0, ox1, ld; /* ld: values per band row; depthwise: x is only room */
    size_t o0, o1; /* one group: its output channels [o0, o1) (o1 may pass O); else all */
} bn_fconv_band;
typedef struct {
    const char *name;
    /* the sign path's bits of a float64 band; acc: O + BN_FCONV_LANES doubles of scratch */
    void (*block)(const bn_fconv_job *j, const bn_fconv_band *b, double *acc);
    /* the real conv's outputs of a float32 band (depthwise: none, read in place); room:
     * O + BN_FCONV_LANES doubles, then KH pointers of scratch */
    void (*block32)(const bn_fconv_job *j, const bn_fconv_band *b, double *room);
    void (*widen)(const float *x, size_t count, double *out); /* float32 -> float64 (bands) */
    uint64_t (*probe)(uint64_t iterations); /* one thread's in-register FMAs -> FMAs done */
    /* the sign bits of a float32 band (b->x32, count floats) by float32 sums, its bounds in
     * room (opad32 floats) -> 0; 1 (nothing written) when the band holds inf or NaN: the
     * float64 path takes it. NULL: no such path */
    int (*sign_block32)(const bn_fconv_job *j, bn_fconv_band *b, size_t count, float *room);
} bn_fconv_kernel;

extern const bn_fconv_kernel bn_fconv_portable;
#if BN_X86
extern const bn_fconv_kernel bn_fconv_avx512;
#endif
/* BN_OK, BN_ENOMEM or BN_EOVERFLOW (job: s, x, then panels32, bias, out for the real conv, or
 * x_f64, x_nchw, pad, panels, sign for the sign path) */
int bn_conv2d_float(bn_fconv_job *job);
/* depthwise: rows[ky] = the input of output pixels [ox, ox + nr) of row oy of b's image in
 * tap row ky, read in place where every tap is inside the image, else a zero-padded copy of
 * channels [cb, cb + width) in b->x (a patch of KH x span x C floats); x float32 NHWC (only
 * conv2d_float has depthwise convs) */
void bn_fconv_depthwise_rows(const bn_fconv_job *j, const bn_fconv_band *b, size_t oy, size_t ox,
                             size_t nr, size_t cb, size_t width, const float **rows);
/* sign->out pixel `pixel` from its O float64 sums (both kernels' epilogue, one rule) */
void bn_fconv_sign_pixel(const bn_fconv_job *j, size_t pixel, const double *acc);
/* the float32 sign path's fallback: output channel c of the pixel at band offset x0 (float32),
 * summed in float64 in the kernels' order, its sign bit */
int bn_fconv_sign_exact(const bn_fconv_job *j, const bn_fconv_band *b, const float *x0, size_t c);
/* `threads` pool tasks of `iterations` in-register float32 FMA steps -> multiply-adds done */
uint64_t bn_fma_probe(uint64_t iterations, int threads);

/* ---- in-register peak probe (probe.c) -------------------------------------------------------- */
typedef struct {
    const char *name;
    uint64_t (*fn)(uint64_t iterations); /* one thread's steps -> bit-MACs done */
} bn_probe_kernel;

extern const bn_probe_kernel bn_probe_portable;
#if BN_X86
extern const bn_probe_kernel bn_probe_popcnt;
extern const bn_probe_kernel bn_probe_avx512;
#endif
/* `threads` pool tasks of `iterations` XOR + popcount + add steps each -> bit-MACs done. */
uint64_t bn_xor_popcount_probe(uint64_t iterations, int threads);
/* `threads` pool tasks each running fn(iterations) -> the sum of their results (the driver of
 * every in-register peak probe) */
uint64_t bn_run_probe(uint64_t (*fn)(uint64_t), uint64_t iterations, int threads);

/* ---- pools of the real-valued stream (pool_float.c) ---------------------------------------- */
/* float32 NHWC (N, H, W, C) -> (N, Ho, Wo, C): max (pad -inf) or average (PyTorch's divisors)
 * over kh x kw windows, padding and output sizes as torch's MaxPool2d / AvgPool2d (ceil_mode
 * included: the binding computes ho, wo and checks every window holds an input pixel). */
typedef struct {
    size_t n, h, w, c, kh, kw, sh, sw, ph, pw, ho, wo;
    int is_max;            /* 1: max pool, 0: average */
    int count_include_pad; /* average: the padding counts in the divisor */
} bn_fpool_shape;
typedef struct {
    const char *name;
    /* channels [0, c) of one output pixel y from a window of rows x cols input pixels, the
     * first at x, c floats apart in a row, ldx floats from row to row: the max, or the sum from
     * +0 over divisor, taps in (row, column) order */
    void (*window)(const float *x, size_t ldx, size_t rows, size_t cols, size_t c, int is_max,
                   float divisor, float *y);
} bn_fpool_kernel;

extern const bn_fpool_kernel bn_fpool_portable;
#if BN_X86
extern const bn_fpool_kernel bn_fpool_avx2;
extern const bn_fpool_kernel bn_fpool_avx512;
#endif
void bn_pool2d_float(const bn_fpool_shape *s, const float *x, float *y);

/* ---- ISA dispatch (dispatch.c) --------------------------------------------------------------- */
/* One table, one row per instruction set, one entry per SIMD op. The CPU is examined once (on
 * first use, thread-safe) and each supported row is filled with the best kernel of every op
 * that its ISA allows; the portable row holds the plain-C references. An op reads the current
 * row once, at its start, so changing rows while it runs never mixes two ISAs in one result. */
enum bn_isa { BN_PORTABLE = 0, BN_AVX2 = 1, BN_AVX512 = 2, BN_NUM_ISAS = 3 };
typedef struct {
    const char *name;              /* "portable", "avx2", "avx512" */
    const bn_tile_kernels *tiles;  /* bgemm(_threshold), conv, bitplane_gemm */
    const bn_pack_kernels *pack;   /* pack */
    const bn_planes_kernel *planes; /* bitplane_gemm's input planes */
    const bn_threshold_kernel *threshold; /* threshold_pack */
    const bn_int_kernel *int_gemm;  /* int_gemm */
    const bn_transform_kernel *transform; /* *_transform, sign_pack */
    const bn_probe_kernel *probe;  /* xor_popcount_probe */
    const bn_float_kernel *float_dense; /* first_dense_float */
    const bn_fconv_kernel *float_conv;  /* conv2d_float */
    const bn_fpool_kernel *float_pool;  /* pool2d_float (filled after the others) */
} bn_isa_row;

int bn_isa_supported(int isa);
int bn_isa_current(void);
void bn_isa_select(int isa);             /* ignored unless bn_isa_supported(isa) */
const bn_isa_row *bn_isa_row_of(int isa); /* NULL when not supported */
const bn_isa_row *bn_isa(void);          /* the current row */

/* ---- driver results ---------------------------------------------------------------------------- */
/* Drivers that allocate work buffers return BN_OK, BN_ENOMEM, or BN_EOVERFLOW when a work
 * buffer's size does not fit size_t (module.c turns these into MemoryError / OverflowError);
 * BN_EPREPARED: prepared tables whose size does not fit the call (a ValueError). */
enum { BN_OK = 0, BN_ENOMEM = -1, BN_EOVERFLOW = -2, BN_EPREPARED = -3 };
/* a * b, or SIZE_MAX when that overflows (for counts that only steer a choice). */
static inline size_t bn_mul_sat(size_t a, size_t b) {
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}
/* First layer: |sum| <= 255 k must fit int32. */
#define BN_FIRST_LAYER_MAX_K (INT32_MAX / 255)

/* ---- threads (threads.c) --------------------------------------------------------------------- */
int bn_get_num_threads(void);
void bn_set_num_threads(int n);
/* fn(ctx, task, worker) for every task in [0, ntasks), on up to `threads` threads; worker is in
 * [0, threads) and unique among concurrently running tasks (for per-thread scratch buffers). */
typedef void (*bn_task_fn)(void *ctx, long task, int worker);
void bn_parallel_for(long ntasks, int threads, bn_task_fn fn, void *ctx);
/* Runs `jobs` tiny back-to-back pool jobs and returns how many misbehaved (0 when the pool is
 * correct); for the tests. */
#define BN_SELFTEST_MAX_TASKS 7
long bn_pool_selftest(long jobs, int threads);
#define BN_MAX_THREADS 256
/* Per-worker scratch memory for bn_parallel_for tasks, allocated by each worker on first use. */
typedef struct {
    void *slot[BN_MAX_THREADS];
    size_t bytes;
    int failed; /* set (by any worker) when an allocation failed; the job's result is invalid */
} bn_scratch;
void bn_scratch_init(bn_scratch *s, size_t bytes);
void *bn_scratch_get(bn_scratch *s, int worker); /* NULL (and failed set) when out of memory */
void bn_scratch_free(bn_scratch *s);
/* Threads worth using for `work` word-operations (64-bit XOR-popcounts, or about 8 byte / 2 int32
 * element steps). Below BN_PARALLEL_MIN_WORK (some 10-20 us on one core) a job runs inline on
 * the caller: on a loaded machine a worker that has taken a task may not be scheduled for
 * milliseconds. Above it the caller loses little when no core is free (it never waits for a
 * worker to arrive, only for tasks one has claimed), while batch-1 layers gain: the MNIST MLP's
 * first layer (425k) took 25 us inline, 15 us on 2 threads; a 1 x 4096 x 4096 GEMV (262k,
 * reading 2 MB of weights) 63 us, 36 us. The bound was 1e6 before, which kept both inline. */
#define BN_PARALLEL_MIN_WORK 2.5e5
static inline int bn_threads_for(double work) {
    return work >= BN_PARALLEL_MIN_WORK ? bn_get_num_threads() : 1;
}

/* ---- packing driver (pack.c) ----------------------------------------------------------------- */
/* rows x k elements (row-major) -> rows x ceil(k/64) words; bit = (x >= 0). */
void bn_pack(const void *x, int dtype, size_t rows, size_t k, uint64_t *out);
void bn_unpack(const uint64_t *p, size_t rows, size_t k, int8_t *out);

/* ---- GEMM driver (gemm.c) -------------------------------------------------------------------- */
static inline size_t bn_words(size_t k) { return (k + 63) / 64; }

/* Runs the tile kernels over A (mb rows, stride lda words) x W rows [n0, n1) (stride ldw). */
void bn_gemm_block(const bn_tile_kernels *kr, const uint64_t *a, size_t lda, size_t mb,
                   const uint64_t *w, size_t ldw, size_t n0, size_t n1, size_t kw,
                   bn_epilogue_fn epi, void *ctx);

/* Panel path: whether to take it for m rows of A; size (words) and fill of the repacked W
 * (panels of 8 rows, rounded up to an even number of panels). */
int bn_use_panels(const bn_tile_kernels *kr, size_t m, size_t kw);
size_t bn_panel_words(size_t n, size_t kw);
void bn_repack_panels(const uint64_t *w, size_t n, size_t kw, uint64_t *panels);
/* the same for panels [p0, p1) only, on the calling thread (a task's share of the repacking) */
void bn_repack_panel_range(const uint64_t *w, size_t n, size_t kw, uint64_t *panels, size_t p0,
                           size_t p1);
/* flip (n bytes of 0/1) -> bits */
void bn_pack_flags(const uint8_t *flip, size_t n, uint64_t *bits);
/* out[j]: the threshold of output j on its count c = popcount(a ^ w) for rows of k bits, so
 * that its bit (dot = k - 2 c >= thresh[j], or <= where flip[j]) is (c <= out[j]) ^ flip[j]. */
void bn_count_thresholds(const int32_t *thresh, const uint8_t *flip, size_t n, int64_t k,
                         int32_t *out);

/* Block sizes (rows of A per task, rows of W per task; the latter a multiple of 64). */
size_t bn_block_m(size_t kw);
size_t bn_block_n(size_t kw, size_t m, size_t n);
/* the same for a task list of m_blocks blocks of A rows (or other row groups) */
size_t bn_block_n_split(size_t kw, size_t m_blocks, size_t n);

/* -1 when out of memory. panels: w repacked once (bn_repack_panels, bn_panel_words(n, words(k))
 * words), read where the panel path runs, or NULL (repacked per call when it does). */
int bn_bgemm(const uint64_t *a, const uint64_t *w, const uint64_t *panels, size_t m, size_t n,
             size_t k, int32_t *out);
int bn_bgemm_threshold(const uint64_t *a, const uint64_t *w, const uint64_t *panels, size_t m,
                       size_t n, size_t k, const int32_t *thresh, const uint8_t *flip,
                       uint64_t *out);

/* ---- threshold_pack (threshold.c) ----------------------------------------------------------- */
/* int32 rows x n -> packed bits (dot >= thresh, or <= where flipped); -1 when out of memory. */
int bn_threshold_pack(const int32_t *x, size_t rows, size_t n, const int32_t *thresh,
                       const uint8_t *flip, uint64_t *out);

/* ---- convolution (conv.c); these return -1 when out of memory ------------------------------- */
enum bn_pad_mode { BN_PAD_ZERO = 0, BN_PAD_ONE = 1, BN_PAD_MINUS_ONE = 2 };
typedef struct {
    size_t n, h, w, c, cw;       /* input (N, H, W, CW) */
    size_t o, kh, kw;            /* weights (O, KH, KW, CW) */
    size_t sh, sw, ph, pw, dh, dw;
    size_t ho, wo;
    int pad_mode;
} bn_conv_shape;

/* A conv's weight-only tables made once for (weights, geometry) by bn_conv_prepare, so that a
 * call does not rebuild them (at batch 1 a fifth of an 8x8 layer's time). Any member may be
 * NULL (made per call). wpre: "zero" mode with padding, O (KH+1)(KW+1) int32 prefix sums;
 * panels: bn_panel_words(O, KH KW CW) words; kvec: the border ks, kvec_len int32 (the class
 * count follows the geometry: a call whose classes differ returns BN_EPREPARED). The bindings
 * check wpre's and panels' sizes; each is only read where the call's path uses it. */
typedef struct {
    const int32_t *wpre;
    const uint64_t *panels;
    const int32_t *kvec;
    size_t kvec_len;
} bn_conv_weights;
/* The tables a call with s and w on the current ISA row makes, malloc'd (free them), or NULL
 * where that call makes none; *_len: their element counts. */
typedef struct {
    int32_t *wpre;
    uint64_t *panels;
    int32_t *kvec;
    size_t wpre_len, panels_len, kvec_len;
} bn_conv_tables;
int bn_conv_prepare(const bn_conv_shape *s, const uint64_t *w, bn_conv_tables *out);

/* prep: tables from bn_conv_prepare, or NULL (made per call) */
int bn_bconv2d(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w, int32_t *out);
int bn_bconv2d_threshold(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                          const bn_conv_weights *prep, const int32_t *thresh, const uint8_t *flip,
                          uint64_t *out);
int bn_bconv2d_threshold_maxpool(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                                  const bn_conv_weights *prep, const int32_t *thresh,
                                  const uint8_t *flip, size_t pkh, size_t pkw, size_t psh,
                                  size_t psw, uint64_t *out);

/* Transform drivers (transform.c sign_pack; gemm.c, conv.c): t->chunk and t->flip_bits are
 * filled by the driver; BN_OK, BN_ENOMEM or BN_EOVERFLOW. */
int bn_bgemm_transform(const uint64_t *a, const uint64_t *w, const uint64_t *panels, size_t m,
                       size_t n, size_t k, bn_transform *t);
int bn_bconv2d_transform(const bn_conv_shape *s, const uint64_t *x, const uint64_t *w,
                         const bn_conv_weights *prep, bn_transform *t);
int bn_sign_pack(const float *x, size_t rows, size_t c, bn_transform *t);
/* Fills t->chunk from the current ISA row and t->flip_bits (malloc'd: bn_transform_end frees
 * it) and zeroes t->bits for `rows` rows. */
int bn_transform_begin(bn_transform *t, size_t rows);
void bn_transform_end(bn_transform *t);

/* ---- pooling (pool.c) ------------------------------------------------------------------------ */
void bn_bmaxpool2d(const uint64_t *x, size_t n, size_t h, size_t w, size_t cw,
                   const uint64_t *and_mask, size_t kh, size_t kw, size_t sh, size_t sw,
                   uint64_t *out);
void bn_maxpool2d_int(const int32_t *x, size_t n, size_t h, size_t w, size_t c, size_t kh,
                      size_t kw, size_t sh, size_t sw, int32_t *out);

/* ---- first layer (first_layer.c); -1 when out of memory ------------------------------------- */
/* Weight-only data of a first layer, made once per model so a call does only the product (at
 * batch 1 remaking it took most of the call). A NULL `prep` (or member) makes it per call. */
typedef struct {
    const int32_t *wpop;    /* 255 * popcount(w row), (n,) */
    const uint64_t *panels; /* bn_repack_panels(w) (bn_panel_words(n, kw)), or NULL */
} bn_bitplane_weights;
void bn_bitplane_prepare(const uint64_t *w, size_t n, size_t k, int32_t *wpop, uint64_t *panels);
int bn_bitplane_gemm(const uint8_t *x, const uint64_t *w, const bn_bitplane_weights *prep,
                     size_t m, size_t n, size_t k, int32_t *out);
typedef struct {
    const int8_t *quads; /* bn_int_prepare(w, n, k, lanes): used when lanes is the kernel's */
    size_t lanes;
} bn_int_weights;
size_t bn_int_weight_bytes(size_t n, size_t k, size_t lanes); /* 0 when it overflows */
void bn_int_prepare(const uint64_t *w, size_t n, size_t k, size_t lanes, int8_t *dst);
int bn_int_gemm(const uint8_t *x, const uint64_t *w, const bn_int_weights *prep, size_t m,
                size_t n, size_t k, int32_t *out);
/* Fused first conv of uint8 NCHW images with zero padding: im2col (taps in (kh, kw, c) order),
 * integer product with the packed weights (O, words(KH*KW*C)), then bit = s >= thresh[class]
 * (<= where flip) with class = row_class[y] * col_classes + col_class[x]. */
typedef struct {
    const uint8_t *x;
    size_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo;
    const int32_t *thresh;      /* (row_classes, col_classes, O) */
    size_t row_classes, col_classes;
    const int32_t *row_class;   /* (Ho,) */
    const int32_t *col_class;   /* (Wo,) */
    const uint8_t *flip;        /* (O,) */
} bn_first_conv;
int bn_int_conv_threshold(const bn_first_conv *s, const uint64_t *w, uint64_t *out);

/* Helpers shared by the drivers. */
/* Bit of an output channel: dot >= t, or dot <= t when flipped (any nonzero flip byte, as in
 * bn_pack_flags: a byte of 2 must not yield a 2, which would set the next channel's bit). */
static inline uint64_t bn_threshold_bit(int64_t dot, int32_t t, uint8_t flip) {
    /* branch-free: flip is data (about half the channels), a branch would mispredict */
    const int f = flip != 0;
    return (uint64_t)(((dot >= t) & (f ^ 1)) | ((dot <= t) & f));
}

#endif
