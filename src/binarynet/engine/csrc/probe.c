/* xor_popcount_probe: the in-register peak of the binary MAC (docs/performance.md).
 *
 * Each thread runs `iterations` steps of XOR + popcount + add on several independent
 * accumulators held in registers, with no memory traffic, so the rate it reaches (the caller
 * times it) is the ceiling any bit-GEMM kernel on this CPU can approach; benchmarks print their
 * rates as a percentage of it. The operands are made opaque to the compiler once per step (an
 * empty asm), so it can neither hoist nor fold the work, and the result is kept alive likewise.
 * AVX-512 row: vpxorq + vpopcntq + vpaddq on 12 zmm chains; other rows: the scalar popcnt
 * instruction (or its portable fallback) on 6 chains of 64-bit registers, the best they have.
 */
#include "core.h"

#include <stdatomic.h>

#if BN_X86
#include <immintrin.h>
#endif

#define PROBE_CHAINS 12 /* independent zmm accumulators: enough to cover the latencies */

/* One thread's share -> the bit-MACs done. Named variables, not arrays: an asm operand that is
 * an array element keeps the array in memory (GCC 12), which would measure loads and stores. */
#define PROBE_R(j) uint64_t x##j = 0x0123456789abcdefull * (j + 1), a##j = 0
#define PROBE_RSTEP(j)                                                                           \
    x##j ^= y;                                                                                   \
    __asm__ volatile("" : "+r"(x##j));                                                           \
    a##j += (uint64_t)__builtin_popcountll(x##j)
#define SCALAR_PROBE_BODY                                                                        \
    const uint64_t y = 0x5555555555555555ull;                                                    \
    PROBE_R(0); PROBE_R(1); PROBE_R(2); PROBE_R(3); PROBE_R(4); PROBE_R(5);                      \
    for (uint64_t i = 0; i < iterations; ++i) {                                                  \
        PROBE_RSTEP(0); PROBE_RSTEP(1); PROBE_RSTEP(2);                                          \
        PROBE_RSTEP(3); PROBE_RSTEP(4); PROBE_RSTEP(5);                                          \
    }                                                                                            \
    const uint64_t sum = a0 + a1 + a2 + a3 + a4 + a5;                                            \
    __asm__ volatile("" : : "r"(sum));                                                           \
    return iterations * 6 * 64;

static uint64_t probe_portable(uint64_t iterations) { SCALAR_PROBE_BODY }

const bn_probe_kernel bn_probe_portable = {"portable", probe_portable};

#if BN_X86
__attribute__((target("popcnt"))) static uint64_t probe_popcnt(uint64_t iterations) {
    SCALAR_PROBE_BODY
}

const bn_probe_kernel bn_probe_popcnt = {"popcnt", probe_popcnt};

/* Named variables, not arrays: an asm operand that is an array element keeps the array in
 * memory (GCC 12), which turns the probe into a load/store benchmark. */
#define PROBE_ZMM(j) __m512i x##j = _mm512_set1_epi64(0x0123456789abcdefll * (j + 1)), \
                             a##j = _mm512_setzero_si512()
#define PROBE_STEP(j)                                                                            \
    x##j = _mm512_xor_si512(x##j, y);                                                            \
    __asm__ volatile("" : "+v"(x##j));                                                           \
    a##j = _mm512_add_epi64(a##j, _mm512_popcnt_epi64(x##j))

__attribute__((target("avx512f,avx512vpopcntdq"))) static uint64_t probe_avx512(
    uint64_t iterations) {
    const __m512i y = _mm512_set1_epi64(0x5555555555555555ll);
    PROBE_ZMM(0); PROBE_ZMM(1); PROBE_ZMM(2); PROBE_ZMM(3); PROBE_ZMM(4); PROBE_ZMM(5);
    PROBE_ZMM(6); PROBE_ZMM(7); PROBE_ZMM(8); PROBE_ZMM(9); PROBE_ZMM(10); PROBE_ZMM(11);
    for (uint64_t i = 0; i < iterations; ++i) {
        PROBE_STEP(0); PROBE_STEP(1); PROBE_STEP(2); PROBE_STEP(3); PROBE_STEP(4); PROBE_STEP(5);
        PROBE_STEP(6); PROBE_STEP(7); PROBE_STEP(8); PROBE_STEP(9); PROBE_STEP(10); PROBE_STEP(11);
    }
    __m512i sum = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                   _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
    sum = _mm512_add_epi64(sum, _mm512_add_epi64(_mm512_add_epi64(a8, a9), _mm512_add_epi64(a10, a11)));
    __asm__ volatile("" : : "v"(sum));
    return iterations * PROBE_CHAINS * 512;
}

const bn_probe_kernel bn_probe_avx512 = {"avx512vpopcntdq", probe_avx512};
#endif

/* ---- driver: `threads` tasks of `iterations` steps each on the pool ------------------------- */
typedef struct {
    uint64_t (*fn)(uint64_t);
    uint64_t iterations;
    _Atomic uint64_t done;
} probe_job;

static void probe_task(void *vjob, long task, int worker) {
    probe_job *j = (probe_job *)vjob;
    (void)task;
    (void)worker;
    atomic_fetch_add_explicit(&j->done, j->fn(j->iterations), memory_order_relaxed);
}

uint64_t bn_run_probe(uint64_t (*fn)(uint64_t), uint64_t iterations, int threads) {
    probe_job job = {fn, iterations, 0};
    bn_parallel_for(threads, threads, probe_task, &job);
    return atomic_load(&job.done);
}

uint64_t bn_xor_popcount_probe(uint64_t iterations, int threads) {
    return bn_run_probe(bn_isa()->probe->fn, iterations, threads);
}
