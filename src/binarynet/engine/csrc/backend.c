/* Run-time choice of the SIMD backend. */
#include "core.h"

extern const bn_tile_kernels bn_tiles_portable_generic;
#if BN_X86
extern const bn_tile_kernels bn_tiles_portable_popcnt;
#endif

static int g_backend = -1; /* -1: not chosen yet -> best supported */

int bn_backend_supported(int backend) {
    switch (backend) {
    case BN_PORTABLE:
        return 1;
#if BN_X86
    case BN_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    case BN_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
    default:
        return 0;
    }
}

int bn_get_backend(void) {
    if (g_backend < 0) {
        g_backend = bn_backend_supported(BN_AVX512) ? BN_AVX512
                    : bn_backend_supported(BN_AVX2) ? BN_AVX2
                                                    : BN_PORTABLE;
    }
    return g_backend;
}

void bn_set_backend(int backend) { g_backend = backend; }

const bn_tile_kernels *bn_current_tiles(void) {
    switch (bn_get_backend()) {
#if BN_X86
    case BN_AVX512:
        return &bn_tiles_avx512;
    case BN_AVX2:
        return &bn_tiles_avx2;
    default:
        __builtin_cpu_init();
        return __builtin_cpu_supports("popcnt") ? &bn_tiles_portable_popcnt
                                                : &bn_tiles_portable_generic;
#else
    default:
        return &bn_tiles_portable_generic;
#endif
    }
}
