// Binary GEMM on the tensor cores' 1-bit MMA (sm_80 and later).
//
// Operands are packed +-1 rows (docs/design.md): bit 1 <=> +1, LSB first, read here as 32-bit words;
// pad bits are 0 in both operands. The instruction
//     mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc
// accumulates popc(a AND b) over 256-bit slices. Recent GPUs dropped the XOR variant, so the XNOR dot
// product of k real bits is rebuilt from row popcounts pa (activations) and pb (weights):
//     popc(a ^ b) = pa + pb - 2 popc(a & b)   =>   dot = k - 2 (pa + pb) + 4 popc(a & b)
// (pad bits are 0 in both, so they add nothing to any of the three counts).
//
// Tiling: a block computes a BM x BN output tile; its warps form a WARPS_M x WARPS_N grid of
// (BM / WARPS_M) x 32 warp tiles, i.e. MI = BM / WARPS_M / 16 row fragments x NI = 4 column fragments
// of m16n8. The reduction runs over 512-bit stages (16 words per row), copied global -> shared with
// cp.async into a STAGES-deep ring, read with ldmatrix (one .x4 gives an A fragment, one gives two
// B fragments). Shared rows are padded from 64 to 80 bytes so the 8 row addresses of each ldmatrix
// phase and of each cp.async wave hit distinct banks.
//
// Requirements (the Python loader guarantees them): words % 4 == 0 (16-byte cp.async chunks), operand
// pointers 16-byte aligned. Rows past M / N and chunks past `words` are zero-filled.
//
// Exported C functions return a cudaError_t code (0 = success).

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kStageWords = 16;               // 512 bits of k per pipeline stage
constexpr int kRowStride = kStageWords + 4;   // padded shared row: 20 words = 80 bytes
constexpr int kStages = 3;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; src_bytes = 0 writes zeros without reading global memory.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d += popc(A AND B) for a 16 x 8 x 256 bit tile.
__device__ __forceinline__ void mma_and_popc(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The 16-byte chunks one thread copies per stage, for a tile of ROWS packed rows: fixed for the
// whole reduction, so the row pointers and shared offsets are computed once.
template <int ROWS, int THREADS>
struct StageLoader {
    static constexpr int kChunksPerRow = kStageWords / 4;
    static constexpr int kPerThread = ROWS * kChunksPerRow / THREADS;
    static_assert(ROWS * kChunksPerRow % THREADS == 0, "chunks must split evenly over the threads");

    const uint32_t* src[kPerThread];  // row start + chunk offset; nullptr for rows past the matrix
    uint32_t dst[kPerThread];         // byte offset in a stage buffer
    int word[kPerThread];             // chunk offset within the stage (words)

    __device__ __forceinline__ StageLoader(const uint32_t* __restrict__ base, int row0, int nrows, int words) {
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
            const int c = threadIdx.x + i * THREADS;
            const int r = c / kChunksPerRow;
            word[i] = (c % kChunksPerRow) * 4;
            src[i] = row0 + r < nrows ? base + static_cast<size_t>(row0 + r) * words + word[i] : nullptr;
            dst[i] = static_cast<uint32_t>((r * kRowStride + word[i]) * sizeof(uint32_t));
        }
    }

    // Copy the stage starting at word k0 into the buffer at shared address `buffer`; chunks past
    // the matrix (rows or words) are zero-filled.
    __device__ __forceinline__ void load(uint32_t buffer, int k0, int words, const uint32_t* any) const {
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
            const bool ok = src[i] != nullptr && k0 + word[i] < words;
            cp_async_16(buffer + dst[i], ok ? src[i] + k0 : any, ok ? 16 : 0);
        }
    }
};

template <int BM, int BN, int WARPS_M, int WARPS_N, bool THRESHOLD>
__global__ void __launch_bounds__(WARPS_M * WARPS_N * 32)
bmma_gemm_kernel(const uint32_t* __restrict__ a, const uint32_t* __restrict__ w,
                 const int* __restrict__ pop_a, const int* __restrict__ pop_w, int M, int N, int words,
                 int k, int* __restrict__ out, int out_cols, const int* __restrict__ thresh,
                 const int8_t* __restrict__ flip) {
    constexpr int kThreads = WARPS_M * WARPS_N * 32;
    constexpr int kWarpM = BM / WARPS_M;
    constexpr int kWarpN = BN / WARPS_N;
    constexpr int MI = kWarpM / 16;
    constexpr int NI = kWarpN / 8;
    static_assert(kWarpN % 32 == 0, "a warp tile spans whole 32-bit words of output bits");
    static_assert(kWarpM % 16 == 0, "warp tile rows: a multiple of 16");

    extern __shared__ __align__(16) uint32_t smem[];
    constexpr uint32_t kStageBytesA = BM * kRowStride * sizeof(uint32_t);
    constexpr uint32_t kStageBytesB = BN * kRowStride * sizeof(uint32_t);
    const uint32_t sa = smem_addr(smem);                   // kStages x BM x kRowStride words
    const uint32_t sb = sa + kStages * kStageBytesA;       // kStages x BN x kRowStride words

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int wm = warp / WARPS_N;
    const int wn = warp % WARPS_N;
    const int row0 = blockIdx.x * BM;  // rows on x: its 2^31 - 1 limit fits any batch
    const int col0 = blockIdx.y * BN;
    const int ktiles = (words + kStageWords - 1) / kStageWords;

    int acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

    const StageLoader<BM, kThreads> load_a(a, row0, M, words);
    const StageLoader<BN, kThreads> load_b(w, col0, N, words);
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < ktiles) {
            load_a.load(sa + s * kStageBytesA, s * kStageWords, words, a);
            load_b.load(sb + s * kStageBytesB, s * kStageWords, words, w);
        }
        cp_async_commit();
    }

    // ldmatrix lane roles: lane L addresses row (L % 8) of 8x(4 words) matrix L / 8.
    const int mat = lane >> 3;
    const int mrow = lane & 7;
    // A: matrices {rows 0-7, rows 8-15} x {words 0-3, words 4-7} -> a0, a1, a2, a3.
    const uint32_t a_lane = ((wm * kWarpM + mrow + (mat & 1) * 8) * kRowStride + (mat >> 1) * 4) * 4;
    // B: matrices {words 0-3, words 4-7} x {cols 0-7, cols 8-15} -> b0, b1 of two n-fragments.
    const uint32_t b_lane = ((wn * kWarpN + mrow + (mat >> 1) * 8) * kRowStride + (mat & 1) * 4) * 4;

    int read_slot = 0;                 // stage buffer computed on this iteration
    int write_slot = kStages - 1;      // stage buffer loaded on this iteration
    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<kStages - 2>();
        __syncthreads();  // stage kt landed for every thread; stage kt - 1's buffer is free again
        const int next = kt + kStages - 1;
        if (next < ktiles) {
            load_a.load(sa + write_slot * kStageBytesA, next * kStageWords, words, a);
            load_b.load(sb + write_slot * kStageBytesB, next * kStageWords, words, w);
        }
        cp_async_commit();

        const uint32_t sa_t = sa + read_slot * kStageBytesA + a_lane;
        const uint32_t sb_t = sb + read_slot * kStageBytesB + b_lane;
        read_slot = read_slot == kStages - 1 ? 0 : read_slot + 1;
        write_slot = write_slot == kStages - 1 ? 0 : write_slot + 1;
#pragma unroll
        for (int ks = 0; ks < kStageWords / 8; ++ks) {  // two 256-bit MMA steps per stage
            uint32_t af[MI][4];
            uint32_t bf[NI / 2][4];
#pragma unroll
            for (int i = 0; i < MI; ++i)
                ldmatrix_x4(af[i], sa_t + (i * 16 * kRowStride + ks * 8) * 4);
#pragma unroll
            for (int j = 0; j < NI / 2; ++j)
                ldmatrix_x4(bf[j], sb_t + (j * 16 * kRowStride + ks * 8) * 4);
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j)
                    mma_and_popc(acc[i][j], af[i], bf[j / 2][(j % 2) * 2], bf[j / 2][(j % 2) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

    // Epilogue. Fragment c[e]: row g (+8 for e >= 2), column 2t + (e & 1), g = lane / 4, t = lane % 4.
    const int g = lane >> 2;
    const int t = lane & 3;
    int col_pop[NI][2];
    int col_thresh[NI][2];
    bool col_flip[NI][2];
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int col = col0 + wn * kWarpN + j * 8 + 2 * t + e;
            const bool ok = col < N;
            col_pop[j][e] = ok ? pop_w[col] : 0;
            if (THRESHOLD) {
                col_thresh[j][e] = ok ? thresh[col] : 0;
                col_flip[j][e] = ok && flip[col] != 0;
            }
        }

#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // h = 0: row g, h = 1: row g + 8
            const int row = row0 + wm * kWarpM + i * 16 + g + h * 8;
            const int row_pop = row < M ? pop_a[row] : 0;
            if (THRESHOLD) {
                // Each 32 columns (4 n-fragments) make one output word; the 4 lanes of a row
                // group hold 8 of its bits each.
#pragma unroll
                for (int q = 0; q < kWarpN / 32; ++q) {
                    uint32_t bits = 0;
#pragma unroll
                    for (int jj = 0; jj < 4; ++jj)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int j = q * 4 + jj;
                            const int col = col0 + wn * kWarpN + j * 8 + 2 * t + e;
                            const int dot = k - 2 * (row_pop + col_pop[j][e]) + 4 * acc[i][j][h * 2 + e];
                            const bool on = col_flip[j][e] ? dot <= col_thresh[j][e] : dot >= col_thresh[j][e];
                            if (col < N && on) bits |= 1u << (jj * 8 + 2 * t + e);
                        }
                    bits |= __shfl_xor_sync(0xffffffffu, bits, 1);
                    bits |= __shfl_xor_sync(0xffffffffu, bits, 2);
                    const int word = (col0 + wn * kWarpN) / 32 + q;
                    if (t == 0 && row < M && word < out_cols)
                        out[static_cast<size_t>(row) * out_cols + word] = static_cast<int>(bits);
                }
            } else if (row < M) {
#pragma unroll
                for (int j = 0; j < NI; ++j) {
                    const int col = col0 + wn * kWarpN + j * 8 + 2 * t;
                    int* dst = out + static_cast<size_t>(row) * N + col;
                    const int d0 = k - 2 * (row_pop + col_pop[j][0]) + 4 * acc[i][j][h * 2];
                    const int d1 = k - 2 * (row_pop + col_pop[j][1]) + 4 * acc[i][j][h * 2 + 1];
                    if ((N % 2) == 0 && col + 1 < N) {
                        *reinterpret_cast<int2*>(dst) = make_int2(d0, d1);
                    } else {
                        if (col < N) dst[0] = d0;
                        if (col + 1 < N) dst[1] = d1;
                    }
                }
            }
        }
    }
}

// Throughput probe: 8 independent chains of m16n8k256 AND-popc MMAs on register operands, no
// memory traffic; the benchmark times it to show the chip's 1-bit MMA ceiling next to the GEMM.
__global__ void bmma_peak_kernel(int iterations, uint32_t seed, int* __restrict__ sink) {
    uint32_t a[4] = {seed, seed * 3u, seed * 5u, seed * 7u};
    const uint32_t b0 = seed * 11u, b1 = seed * 13u;
    int acc[8][4] = {};
    for (int it = 0; it < iterations; ++it) {
#pragma unroll
        for (int c = 0; c < 8; ++c) mma_and_popc(acc[c], a, b0, b1);
    }
    int total = 0;
#pragma unroll
    for (int c = 0; c < 8; ++c) total += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
    if (total == 0x7fffffff) sink[blockIdx.x] = total;  // keeps the loop alive, never taken
}

// pop[r] = popcount of row r (words 32-bit words): one warp per row.
__global__ void row_popcount_kernel(const uint32_t* __restrict__ x, int rows, int words, int* __restrict__ pop) {
    const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const uint32_t* p = x + static_cast<size_t>(row) * words;
    int s = 0;
    for (int j = lane; j < words; j += 32) s += __popc(p[j]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) pop[row] = s;
}

template <int BM, int BN, int WARPS_M, int WARPS_N, bool THRESHOLD>
cudaError_t launch(const uint32_t* a, const uint32_t* w, const int* pop_a, const int* pop_w, int M, int N,
                   int words, int k, int* out, int out_cols, const int* thresh, const int8_t* flip,
                   cudaStream_t stream) {
    auto kernel = bmma_gemm_kernel<BM, BN, WARPS_M, WARPS_N, THRESHOLD>;
    const int smem = kStages * (BM + BN) * kRowStride * static_cast<int>(sizeof(uint32_t));
    // Over 48 KB of dynamic shared memory must be opted into (per device, so set it every call:
    // the call is cheap next to a GEMM).
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    const int cols = THRESHOLD ? out_cols * 32 : N;
    dim3 grid((M + BM - 1) / BM, (cols + BN - 1) / BN);
    if (grid.y > 65535) return cudaErrorInvalidConfiguration;
    kernel<<<grid, WARPS_M * WARPS_N * 32, smem, stream>>>(a, w, pop_a, pop_w, M, N, words, k, out, out_cols,
                                                           thresh, flip);
    return cudaGetLastError();
}

// Tile shapes (BM x BN, warps): large 128 x 128 (8 warps of 64 x 32), medium 64 x 64 (4 warps of
// 32 x 32), small 16 x 64 (2 warps of 16 x 32). Auto picks the largest whose grid still gives every
// multiprocessor a block: big tiles reuse each loaded word most, small ones keep small batches
// (M = 1..64) from leaving most of the chip idle. Huge, 256 x 128 (8 warps of 64 x 64: 25% less
// shared-memory traffic per MMA than large, one block per SM), is only taken on request.
enum Tile { kAuto = 0, kLarge = 1, kMedium = 2, kSmall = 3, kHuge = 4 };

int blocks(int M, int cols, int bm, int bn) { return ((M + bm - 1) / bm) * ((cols + bn - 1) / bn); }

template <bool THRESHOLD>
cudaError_t dispatch(int device, int tile, const uint32_t* a, const uint32_t* w, const int* pop_a,
                     const int* pop_w, int M, int N, int words, int k, int* out, int out_cols, const int* thresh,
                     const int8_t* flip, cudaStream_t stream) {
    if (tile == kAuto) {
        int sms = 0;
        cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        if (err != cudaSuccess) return err;
        const int cols = THRESHOLD ? out_cols * 32 : N;
        tile = blocks(M, cols, 128, 128) >= sms ? kLarge : blocks(M, cols, 64, 64) >= sms ? kMedium : kSmall;
    }
    switch (tile) {
        case kLarge:
            return launch<128, 128, 2, 4, THRESHOLD>(a, w, pop_a, pop_w, M, N, words, k, out, out_cols, thresh,
                                                     flip, stream);
        case kMedium:
            return launch<64, 64, 2, 2, THRESHOLD>(a, w, pop_a, pop_w, M, N, words, k, out, out_cols, thresh,
                                                   flip, stream);
        case kSmall:
            return launch<16, 64, 1, 2, THRESHOLD>(a, w, pop_a, pop_w, M, N, words, k, out, out_cols, thresh,
                                                   flip, stream);
        case kHuge:
            return launch<256, 128, 4, 2, THRESHOLD>(a, w, pop_a, pop_w, M, N, words, k, out, out_cols, thresh,
                                                     flip, stream);
        default:
            return cudaErrorInvalidValue;
    }
}

}  // namespace

extern "C" {

// Every entry point first selects `device`: this library has its own CUDA runtime state (cudart is
// linked statically), so it does not see the caller's current device.

int bmma_row_popcount(int device, const uint32_t* x, int rows, int words, int* pop, cudaStream_t stream) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return static_cast<int>(err);
    const int warps_per_block = 8;
    row_popcount_kernel<<<(rows + warps_per_block - 1) / warps_per_block, warps_per_block * 32, 0, stream>>>(
        x, rows, words, pop);
    return static_cast<int>(cudaGetLastError());
}

// tile: 0 = auto, 1 = large, 2 = medium, 3 = small, 4 = huge (see Tile).
int bmma_gemm(int device, int tile, const uint32_t* a, const uint32_t* w, const int* pop_a, const int* pop_w,
              int M, int N, int words, int k, int* out, cudaStream_t stream) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return static_cast<int>(err);
    return static_cast<int>(
        dispatch<false>(device, tile, a, w, pop_a, pop_w, M, N, words, k, out, N, nullptr, nullptr, stream));
}

int bmma_gemm_threshold(int device, int tile, const uint32_t* a, const uint32_t* w, const int* pop_a,
                        const int* pop_w, int M, int N, int words, int k, const int* thresh, const int8_t* flip,
                        int* out, int out_cols, cudaStream_t stream) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return static_cast<int>(err);
    return static_cast<int>(dispatch<true>(device, tile, a, w, pop_a, pop_w, M, N, words, k, out, out_cols,
                                           thresh, flip, stream));
}

// Launch the throughput probe: blocks x 128 threads, each warp doing iterations x 8 MMAs
// (16 x 8 x 256 bit-MACs each).
int bmma_peak(int device, int blocks, int iterations, int* sink, cudaStream_t stream) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return static_cast<int>(err);
    bmma_peak_kernel<<<blocks, 128, 0, stream>>>(iterations, 0x9e3779b9u, sink);
    return static_cast<int>(cudaGetLastError());
}

const char* bmma_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // extern "C"
