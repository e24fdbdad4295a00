/* The ISA dispatch table: the one place that examines the CPU and picks kernels.
 *
 * In the style of Larq Compute Engine: each op's portable kernel is the reference and sits
 * beside its SIMD variants in the op's own file (pack.c, threshold.c, first_layer.c, the
 * tiles_*.c); this file only assembles one row per instruction set from them. A row uses, for
 * every op, the best variant its ISA allows (the AVX-512 row keeps AVX2 packing, which is
 * memory-bound anyway). The tests force every row and compare every op with the numpy
 * reference bit for bit.
 */
#include "core.h"

#include <pthread.h>
#include <stdatomic.h>

static bn_isa_row g_rows[BN_NUM_ISAS];
static int g_supported[BN_NUM_ISAS];
static _Atomic int g_current; /* set by detect() (the best row), then by bn_isa_select */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect(void) {
    g_rows[BN_PORTABLE] = (bn_isa_row){"portable", &bn_tiles_portable, &bn_pack_portable,
                                       &bn_planes_portable, &bn_threshold_portable,
                                       &bn_int_portable, &bn_transform_portable,
                                       &bn_probe_portable, &bn_float_portable,
                                       &bn_fconv_portable};
    g_rows[BN_PORTABLE].float_pool = &bn_fpool_portable;
    g_supported[BN_PORTABLE] = 1;
    int best = BN_PORTABLE;
#if BN_X86
    __builtin_cpu_init();
    const int popcnt = __builtin_cpu_supports("popcnt");
    const int avx2 = popcnt && __builtin_cpu_supports("avx2");
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512vpopcntdq");
    const int vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    /* the "portable" row is plain C; with the popcnt instruction its builtin is one instruction */
    if (popcnt) {
        g_rows[BN_PORTABLE].tiles = &bn_tiles_popcnt;
        g_rows[BN_PORTABLE].probe = &bn_probe_popcnt;
    }
    g_rows[BN_AVX2] = (bn_isa_row){"avx2", &bn_tiles_avx2, &bn_pack_avx2, &bn_planes_avx2,
                                   &bn_threshold_avx2, &bn_int_avx2,
                                   &bn_transform_avx2, &bn_probe_popcnt,
                                   &bn_float_portable, &bn_fconv_portable};
    g_rows[BN_AVX2].float_pool = &bn_fpool_avx2;
    g_supported[BN_AVX2] = avx2;
    /* VPOPCNTDQ CPUs without VNNI (Knights Mill) keep the AVX2 integer first layer */
    g_rows[BN_AVX512] = (bn_isa_row){"avx512", &bn_tiles_avx512, &bn_pack_avx2,
                                     &bn_planes_avx512, &bn_threshold_avx512,
                                     vnni ? &bn_int_vnni : &bn_int_avx2,
                                     &bn_transform_avx512, &bn_probe_avx512,
                                     &bn_float_avx512, &bn_fconv_avx512};
    g_rows[BN_AVX512].float_pool = &bn_fpool_avx512;
    g_supported[BN_AVX512] = avx512;
    best = avx512 ? BN_AVX512 : avx2 ? BN_AVX2 : BN_PORTABLE;
#endif
    atomic_store(&g_current, best);
}

static inline void ensure_detected(void) { pthread_once(&g_once, detect); }

int bn_isa_supported(int isa) {
    ensure_detected();
    return isa >= 0 && isa < BN_NUM_ISAS && g_supported[isa];
}

int bn_isa_current(void) {
    ensure_detected();
    return atomic_load_explicit(&g_current, memory_order_relaxed);
}

void bn_isa_select(int isa) {
    ensure_detected();
    if (bn_isa_supported(isa)) atomic_store_explicit(&g_current, isa, memory_order_relaxed);
}

const bn_isa_row *bn_isa_row_of(int isa) {
    return bn_isa_supported(isa) ? &g_rows[isa] : NULL;
}

const bn_isa_row *bn_isa(void) { return &g_rows[bn_isa_current()]; }
