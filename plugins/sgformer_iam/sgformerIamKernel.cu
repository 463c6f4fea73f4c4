/*
 * SGFormerIAM: CUDA kernels and launchers (algorithm in sgformerIamKernel.h and README.md).
 *
 * This file is also compiled by g++ through the CUDA-on-host layer (cudahost/, CI runs it on the CPU):
 * keep to the CUDA subset that layer implements (cudahost/README.md), and no __CUDA_ARCH__ branches here.
 */
#include "sgformerIamKernel.h"

#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_fp16.h>

#include <atomic>
#include <cstdio>

namespace sgformer
{
namespace iam
{
namespace
{

constexpr size_t kALIGN_BYTES = 256;
constexpr int32_t kWARP = 32;

// ---- fused path: block sort ----------------------------------------------------------------------
constexpr int32_t kSORT_THREADS = 512;
constexpr int32_t kSORT_WARPS = kSORT_THREADS / kWARP;
constexpr int32_t kRADIX_BITS = 4;
constexpr int32_t kRADIX = 1 << kRADIX_BITS;
constexpr int32_t kSCAN_PER_THREAD = kRADIX; // counters per thread in the flat scan (kRADIX * kSORT_THREADS total)
//! The counters are stored in rows of kSCAN_PER_THREAD (one scan run each) padded to an odd number of 4-byte
//! words (16 uint16 + 2 = 9 words): the scan's run reads (thread u: row u) then fall in 32 distinct banks,
//! where unpadded rows of 8 words put 8 lanes on each bank. The counting step's d*512+tid stays <= 2-way.
constexpr int32_t kCOUNTER_ROW = kSCAN_PER_THREAD + 2;
constexpr size_t kSORT_COUNTER_BYTES
    = size_t{kRADIX} * kSORT_THREADS / kSCAN_PER_THREAD * kCOUNTER_ROW * sizeof(uint16_t);
static_assert((kCOUNTER_ROW * sizeof(uint16_t) / 4) % 2 == 1, "an odd number of words per counter row");
static_assert(kSORT_THREADS % kWARP == 0, "whole warps: blockExclusiveScan shuffles with a full mask");
static_assert(32 % kRADIX_BITS == 0, "the digit passes cover the 32-bit key exactly");

// ---- aggregation ---------------------------------------------------------------------------------
constexpr int32_t kAGG_THREADS = 256;
constexpr int32_t kAGG_WARPS = kAGG_THREADS / kWARP;
constexpr int64_t kAGG_MAX_BLOCKS = int64_t{1} << 20;
constexpr int64_t kAGG_TARGET_WARPS = 2048; // below this many warps a narrower vector buys more parallelism

// ---- multi-CTA path (N beyond one CTA's shared memory): CUB segmented radix sort ------------------
constexpr int32_t kPREPARE_THREADS = 256;
constexpr int32_t kPREPARE_MAX_BLOCKS = 4096;

//! Dynamic shared memory a kernel may take without cudaFuncAttributeMaxDynamicSharedMemorySize.
constexpr size_t kDEFAULT_DYNAMIC_SHARED_BYTES = size_t{48} << 10;

constexpr size_t alignUp(size_t bytes)
{
    return (bytes + kALIGN_BYTES - 1) / kALIGN_BYTES * kALIGN_BYTES;
}

//! Byte offsets of the workspace parts. `sorted` (2*B*N int32: the row-major token index of every
//! sorted position, segment s = 2*b + isColumn) is used by both paths; the rest only by the CUB path.
struct WorkspaceLayout
{
    size_t sorted;
    size_t fusedTotal; //!< bytes the fused path needs
    size_t keys0;
    size_t keys1;
    size_t values1;
    size_t offsets;
    size_t cubTemp;
    size_t cubTotal; //!< bytes the CUB path needs
};

WorkspaceLayout workspaceLayout(int32_t batch, int32_t numTokens)
{
    size_t const items = size_t{2} * static_cast<size_t>(batch) * static_cast<size_t>(numTokens);
    size_t const words = alignUp(items * sizeof(uint32_t));
    WorkspaceLayout l{};
    l.sorted = 0;
    l.fusedTotal = words;
    l.keys0 = l.sorted + words;
    l.keys1 = l.keys0 + words;
    l.values1 = l.keys1 + words;
    l.offsets = l.values1 + words;
    l.cubTemp = l.offsets + alignUp((size_t{2} * static_cast<size_t>(batch) + 1) * sizeof(int32_t));
    l.cubTotal = l.cubTemp + kCUB_TEMP_RESERVE_BYTES;
    return l;
}

__host__ __device__ __forceinline__ size_t alignUp16(size_t bytes)
{
    return (bytes + 15) / 16 * 16;
}

//! Errors after which the context is unusable (sticky): every later call returns them, so they are reported
//! even when they were already pending before our launches.
bool isContextLost(cudaError_t e)
{
    return e == cudaErrorIllegalAddress || e == cudaErrorMisalignedAddress || e == cudaErrorLaunchFailure;
}

/*!
 * The status of the CUDA call or launch just made on this thread. CUDA keeps one "last error" per thread;
 * `pending` is what it held before our first call. An error that was already pending belongs to someone
 * else (TensorRT, another plugin) and stays pending for them; an error that appeared with our call is ours:
 * it is cleared (cudaGetLastError) and returned. (cudaGetLastError alone would also clear and report
 * theirs as ours.) A pending sticky error is returned: the context is lost for us too.
 */
cudaError_t ownStatus(cudaError_t pending)
{
    cudaError_t const now = cudaPeekAtLastError();
    if (now == cudaSuccess || (now == pending && !isContextLost(now)))
    {
        return cudaSuccess;
    }
    if (now != pending)
    {
        cudaGetLastError();
    }
    return now;
}

//! Dynamic shared memory of sortKernel: counters, keys by position, two position buffers (uint16).
size_t sortSharedBytes(int32_t numTokens)
{
    size_t const n = static_cast<size_t>(numTokens);
    return kSORT_COUNTER_BYTES + alignUp16(n * sizeof(uint32_t)) + 2 * alignUp16(n * sizeof(uint16_t));
}

__device__ __forceinline__ float loadToken(float x)
{
    return x;
}

__device__ __forceinline__ float loadToken(__half x)
{
    return __half2float(x);
}

template <typename T>
__device__ __forceinline__ T storeToken(float x);

template <>
__device__ __forceinline__ float storeToken<float>(float x)
{
    return x;
}

template <>
__device__ __forceinline__ __half storeToken<__half>(float x)
{
    return __float2half_rn(x);
}

//! Slot of counter (digit d, thread t) in the padded counter rows (kCOUNTER_ROW).
__device__ __forceinline__ int32_t counterSlot(int32_t d, int32_t t)
{
    int32_t const i = d * kSORT_THREADS + t;
    return (i / kSCAN_PER_THREAD) * kCOUNTER_ROW + (i % kSCAN_PER_THREAD);
}

//! V consecutive channels, loaded and stored as one aligned vector access.
template <typename T, int32_t V>
struct alignas(sizeof(T) * V) TokenVector
{
    T v[V];
};

/*!
 * Block-wide exclusive prefix sum of one value per thread; returns the sum of the values of the
 * lower threads. `total` receives the sum over the block. Two __syncthreads.
 */
__device__ __forceinline__ uint32_t blockExclusiveScan(uint32_t value, uint32_t* sWarpSums, uint32_t& total)
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) & (kWARP - 1);
    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP;
    uint32_t inclusive = value;
    for (int32_t d = 1; d < kWARP; d <<= 1)
    {
        uint32_t const up = __shfl_up_sync(0xffffffffu, inclusive, d);
        if (lane >= d)
        {
            inclusive += up;
        }
    }
    if (lane == kWARP - 1)
    {
        sWarpSums[warp] = inclusive;
    }
    __syncthreads();
    uint32_t warpBase = 0;
    uint32_t sum = 0;
    for (int32_t w = 0; w < kSORT_WARPS; ++w)
    {
        uint32_t const s = sWarpSums[w];
        warpBase += w < warp ? s : 0u;
        sum += s;
    }
    total = sum;
    __syncthreads(); // sWarpSums may be rewritten by the next scan
    return warpBase + inclusive - value;
}

/*!
 * Fused path, launch 1: one CTA per (sequence, batch row) sorts the N sort keys of its sequence in
 * shared memory with a stable LSD radix sort (4-bit digits; digits that are equal for every key of
 * the row are skipped), then writes the row-major token index of every sorted position.
 * Shared memory: counters [kRADIX][kSORT_THREADS] uint16, keys[N] uint32 by sequence position,
 * two uint16 position buffers (N <= 65535 is guaranteed by the launcher's shared-memory limit).
 * Stability: thread t owns the contiguous slice [t*ipt, (t+1)*ipt) of the current order and the
 * exclusive scan runs over (digit, thread) in digit-major order, so equal digits keep their order.
 * Banks: ipt is odd (ceil(N/512) rounded up to odd; fewer threads get work), so a warp's slice reads
 * (stride ipt) hit 32 distinct banks; counters in padded rows (kCOUNTER_ROW). The position and key
 * accesses that follow the data (scatter slots, keys by position) conflict as the data falls.
 */
__global__ void __launch_bounds__(kSORT_THREADS) sortKernel(
    SgformerIamParams const params, float const* __restrict__ importance, int32_t* __restrict__ sortedTokens)
{
    extern __shared__ __align__(16) unsigned char sDynamic[];
    __shared__ uint32_t sWarpSums[kSORT_WARPS];
    __shared__ uint32_t sWarpAnd[kSORT_WARPS];
    __shared__ uint32_t sWarpOr[kSORT_WARPS];

    int32_t const n = params.numTokens;
    bool const isColumn = blockIdx.x != 0;
    int64_t const b = blockIdx.y;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const lane = tid & (kWARP - 1);
    int32_t const warp = tid / kWARP;

    // `auto`: uint16_t* / uint32_t* here; tracked shared-memory pointers under cudahost.
    auto const sCount = reinterpret_cast<uint16_t*>(sDynamic);
    auto const sKey = reinterpret_cast<uint32_t*>(sDynamic + kSORT_COUNTER_BYTES);
    auto sSrc = reinterpret_cast<uint16_t*>(sDynamic + kSORT_COUNTER_BYTES + alignUp16(n * sizeof(uint32_t)));
    auto sDst = sSrc + alignUp16(n * sizeof(uint16_t)) / sizeof(uint16_t);

    // Keys by sequence position; the identity order; AND/OR of all keys (constant digits are skipped).
    // The column CTA reads the importance row with stride W (uncoalesced, README "cost": a coalesced read
    // would write the keys with stride H instead, measured 16-32-way bank conflicts at H = 112..224).
    float const* rowImportance = importance + b * n;
    uint32_t keyAnd = 0xffffffffu;
    uint32_t keyOr = 0u;
    for (int32_t p = tid; p < n; p += kSORT_THREADS)
    {
        uint32_t const key = importanceSortKey(rowImportance[sequenceToToken(p, isColumn, params.height, params.width)]);
        sKey[p] = key;
        sSrc[p] = static_cast<uint16_t>(p);
        keyAnd &= key;
        keyOr |= key;
    }
    for (int32_t mask = kWARP / 2; mask > 0; mask >>= 1)
    {
        keyAnd &= __shfl_xor_sync(0xffffffffu, keyAnd, mask);
        keyOr |= __shfl_xor_sync(0xffffffffu, keyOr, mask);
    }
    if (lane == 0)
    {
        sWarpAnd[warp] = keyAnd;
        sWarpOr[warp] = keyOr;
    }
    __syncthreads();
    uint32_t varying = 0u;
    for (int32_t w = 0; w < kSORT_WARPS; ++w)
    {
        varying |= sWarpAnd[w] ^ sWarpOr[w];
    }

    int32_t const perThread = ((n + kSORT_THREADS - 1) / kSORT_THREADS) | 1; // odd: conflict-free slice reads
    int32_t const begin = min(tid * perThread, n);
    int32_t const end = min(begin + perThread, n);
    for (int32_t shift = 0; shift < 32; shift += kRADIX_BITS)
    {
        if (((varying >> shift) & (kRADIX - 1)) == 0u)
        {
            continue; // same digit for every key: the stable pass would be the identity (uniform branch)
        }
        // 1. count the digits of this thread's slice (own column of the counter matrix: no races)
        for (int32_t d = 0; d < kRADIX; ++d)
        {
            sCount[counterSlot(d, tid)] = 0;
        }
        for (int32_t i = begin; i < end; ++i)
        {
            int32_t const slot = counterSlot(static_cast<int32_t>((sKey[sSrc[i]] >> shift) & (kRADIX - 1)), tid);
            sCount[slot] = static_cast<uint16_t>(sCount[slot] + 1);
        }
        __syncthreads();
        // 2. exclusive scan of the counters in (digit, thread) order: thread u owns a run of kSCAN_PER_THREAD
        auto const run = sCount + tid * kCOUNTER_ROW;
        uint32_t runSum = 0;
        for (int32_t r = 0; r < kSCAN_PER_THREAD; ++r)
        {
            runSum += run[r];
        }
        uint32_t total = 0;
        uint32_t offset = blockExclusiveScan(runSum, sWarpSums, total);
        for (int32_t r = 0; r < kSCAN_PER_THREAD; ++r)
        {
            uint32_t const c = run[r];
            run[r] = static_cast<uint16_t>(offset);
            offset += c;
        }
        __syncthreads();
        // 3. scatter this thread's slice in order
        for (int32_t i = begin; i < end; ++i)
        {
            uint16_t const pos = sSrc[i];
            int32_t const counter = counterSlot(static_cast<int32_t>((sKey[pos] >> shift) & (kRADIX - 1)), tid);
            uint16_t const slot = sCount[counter];
            sDst[slot] = pos;
            sCount[counter] = static_cast<uint16_t>(slot + 1);
        }
        __syncthreads();
        auto const tmp = sSrc;
        sSrc = sDst;
        sDst = tmp;
    }

    int32_t* const out = sortedTokens + (2 * b + (isColumn ? 1 : 0)) * static_cast<int64_t>(n);
    for (int32_t p = tid; p < n; p += kSORT_THREADS)
    {
        out[p] = sequenceToToken(sSrc[p], isColumn, params.height, params.width);
    }
}

//! CUB path, step 1: sort keys and the row-major token index as value, per (batch row, sequence).
__global__ void __launch_bounds__(kPREPARE_THREADS) prepareSortKernel(
    SgformerIamParams const params, float const* __restrict__ importance, uint32_t* __restrict__ keys,
    int32_t* __restrict__ values, int32_t* __restrict__ offsets)
{
    int64_t const n = params.numTokens;
    int64_t const segments = int64_t{2} * params.batch;
    int64_t const items = segments * n;
    int64_t const stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += stride)
    {
        int64_t const segment = i / n;
        int32_t const p = static_cast<int32_t>(i - segment * n);
        int64_t const b = segment >> 1;
        bool const isColumn = (segment & 1) != 0;
        int32_t const token = sequenceToToken(p, isColumn, params.height, params.width);
        keys[i] = importanceSortKey(importance[b * n + token]);
        // The value is the token, but the items start in position order, so LSD radix sort (stable)
        // still breaks ties by the lower sequence position.
        values[i] = token;
        // items = 2*B*N >= 2*B + 1 because every valid layout has N >= 2, so all offsets are written.
        if (i <= segments)
        {
            offsets[i] = static_cast<int32_t>(i * n);
        }
    }
}

/*!
 * Launch 2 (both paths): one warp per (batch row, sequence, output token, channel slice of 32*V).
 * Lane l owns channels slice*32*V + l*V .. +V-1 and accumulates j = 0..k-1 in order
 * (accumulateStep/finishGroup), loading V channels of token x_j as one vector: each warp reads
 * 32*V consecutive channels of a token per step (coalesced). The group's token indices and weights
 * are staged 32 at a time in the warp's slice of shared memory (one coalesced load each), so the
 * token loads of consecutive j do not wait on an index load. Grid-stride over work items; every lane
 * of a warp stays in the loop (lanes past C only skip the loads and the store) for __syncwarp.
 */
template <typename T, int32_t V>
__global__ void __launch_bounds__(kAGG_THREADS) aggregateKernel(SgformerIamParams const paramsIn,
    T const* __restrict__ tokens, int32_t const* __restrict__ sortedTokens, float const* __restrict__ weight,
    float const* __restrict__ bias, T* __restrict__ seqRow, T* __restrict__ seqCol, int32_t slices, int64_t items)
{
    using Vec = TokenVector<T, V>;
    __shared__ int32_t sIndex[kAGG_WARPS][kWARP];
    __shared__ float sWeight[kAGG_WARPS][kWARP];
    // A register copy: the tier helpers index it with constants only (sgformerIamMath.h tierValue).
    SgformerIamParams const params = paramsIn;
    int64_t const n = params.numTokens;
    int32_t const c = params.channels;
    int32_t const outTokens = params.outTokens;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) & (kWARP - 1);
    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP;
    int64_t const gridWarps = static_cast<int64_t>(gridDim.x) * kAGG_WARPS;
    // Uniform per warp: every lane of a warp runs the same items.
    for (int64_t item = static_cast<int64_t>(blockIdx.x) * kAGG_WARPS + warp; item < items; item += gridWarps)
    {
        int64_t const rest = item / slices;
        int32_t const slice = static_cast<int32_t>(item - rest * slices);
        int64_t const segment = rest / outTokens; // 2 * b + isColumn
        int32_t const t = static_cast<int32_t>(rest - segment * outTokens);
        int64_t const b = segment >> 1;
        bool const isColumn = (segment & 1) != 0;
        int32_t const ch = (slice * kWARP + lane) * V;
        bool const active = ch < c;
        int32_t const tier = tierOfOutput(params, t);
        int32_t const k = tierValue(params.groupSizes, tier);
        float const* w = weight + tierValue(params.weightOffset, tier);
        int32_t const* group = sortedTokens + segment * n + groupFirstSorted(params, tier, t);
        T const* x = tokens + b * n * c + (active ? ch : 0);
        float acc[V];
        for (int32_t v = 0; v < V; ++v)
        {
            acc[v] = 0.0f;
        }
        for (int32_t jBase = 0; jBase < k; jBase += kWARP)
        {
            int32_t const chunk = min(kWARP, k - jBase);
            __syncwarp(); // the previous chunk has been read by every lane
            if (lane < chunk)
            {
                sIndex[warp][lane] = group[jBase + lane];
                sWeight[warp][lane] = w[jBase + lane];
            }
            __syncwarp();
            if (active)
            {
#pragma unroll 8
                for (int32_t jj = 0; jj < chunk; ++jj)
                {
                    Vec const xv = *reinterpret_cast<Vec const*>(x + static_cast<int64_t>(sIndex[warp][jj]) * c);
                    float const wj = sWeight[warp][jj];
                    for (int32_t v = 0; v < V; ++v)
                    {
                        acc[v] = accumulateStep(acc[v], wj, loadToken(xv.v[v]));
                    }
                }
            }
        }
        if (active)
        {
            float const bt = bias[tier];
            Vec yv;
            for (int32_t v = 0; v < V; ++v)
            {
                yv.v[v] = storeToken<T>(finishGroup(acc[v], bt));
            }
            T* out = (isColumn ? seqCol : seqRow) + (b * outTokens + t) * static_cast<int64_t>(c) + ch;
            *reinterpret_cast<Vec*>(out) = yv;
        }
    }
}

cudaError_t sortWithCub(SgformerIamParams const& params, float const* importance, char* ws, WorkspaceLayout const& l,
    size_t workspaceBytes, int32_t const** sortedTokens, cudaError_t pending, cudaStream_t stream)
{
    if (workspaceBytes < l.cubTotal)
    {
        return cudaErrorInvalidValue;
    }
    int32_t const segments = 2 * params.batch;
    int32_t const items = segments * params.numTokens;
    int64_t const wantedBlocks = (int64_t{items} + kPREPARE_THREADS - 1) / kPREPARE_THREADS;
    int32_t const blocks = static_cast<int32_t>(wantedBlocks < kPREPARE_MAX_BLOCKS ? wantedBlocks : kPREPARE_MAX_BLOCKS);
    int32_t* const offsets = reinterpret_cast<int32_t*>(ws + l.offsets);
    prepareSortKernel<<<blocks, kPREPARE_THREADS, 0, stream>>>(params, importance,
        reinterpret_cast<uint32_t*>(ws + l.keys0), reinterpret_cast<int32_t*>(ws + l.sorted), offsets);
    cudaError_t status = ownStatus(pending);
    if (status != cudaSuccess)
    {
        return status;
    }
    cub::DoubleBuffer<uint32_t> keys(reinterpret_cast<uint32_t*>(ws + l.keys0), reinterpret_cast<uint32_t*>(ws + l.keys1));
    cub::DoubleBuffer<int32_t> values(reinterpret_cast<int32_t*>(ws + l.sorted), reinterpret_cast<int32_t*>(ws + l.values1));
    // The temporary size depends on the CUB version and the problem; query it (host arithmetic only).
    size_t tempBytes = 0;
    status = cub::DeviceSegmentedRadixSort::SortPairs(nullptr, tempBytes, keys, values, items, segments, offsets,
        offsets + 1, 0, static_cast<int>(sizeof(uint32_t) * 8), stream);
    if (status != cudaSuccess)
    {
        return status;
    }
    if (tempBytes > kCUB_TEMP_RESERVE_BYTES)
    {
        return cudaErrorInvalidValue; // the reserve in sgformerIamWorkspaceSize is too small for this CUB
    }
    status = cub::DeviceSegmentedRadixSort::SortPairs(ws + l.cubTemp, tempBytes, keys, values, items, segments,
        offsets, offsets + 1, 0, static_cast<int>(sizeof(uint32_t) * 8), stream);
    if (status != cudaSuccess)
    {
        return status;
    }
    // CUB makes one pass per radix digit and flips the buffers each pass: the result is in the buffer the
    // selector names (the original one for an even pass count), never assumed.
    *sortedTokens = values.Current();
    return ownStatus(pending);
}

template <typename T, int32_t V>
cudaError_t launchAggregateV(SgformerIamParams const& params, void const* tokens, int32_t const* sortedTokens,
    float const* weight, float const* bias, void* seqRow, void* seqCol, int32_t slices, int64_t items,
    cudaError_t pending, cudaStream_t stream)
{
    int64_t const wanted = (items + kAGG_WARPS - 1) / kAGG_WARPS;
    uint32_t const blocks = static_cast<uint32_t>(wanted < kAGG_MAX_BLOCKS ? wanted : kAGG_MAX_BLOCKS);
    aggregateKernel<T, V><<<blocks, kAGG_THREADS, 0, stream>>>(params, static_cast<T const*>(tokens), sortedTokens,
        weight, bias, static_cast<T*>(seqRow), static_cast<T*>(seqCol), slices, items);
    return ownStatus(pending);
}

template <typename T>
cudaError_t launchAggregate(SgformerIamParams const& params, void const* tokens, int32_t const* sortedTokens,
    float const* weight, float const* bias, void* seqRow, void* seqCol, cudaError_t pending, cudaStream_t stream)
{
    int32_t const v = aggregateVectorWidthFor(params.batch, params.outTokens, params.channels, sizeof(T), tokens,
        seqRow, seqCol);
    int32_t const slices = (params.channels / v + kWARP - 1) / kWARP;
    int64_t const items = int64_t{2} * params.batch * params.outTokens * slices;
#define SGFORMER_IAM_AGGREGATE(V)                                                                                      \
    launchAggregateV<T, V>(params, tokens, sortedTokens, weight, bias, seqRow, seqCol, slices, items, pending, stream)
    switch (v)
    {
    case 1: return SGFORMER_IAM_AGGREGATE(1);
    case 2: return SGFORMER_IAM_AGGREGATE(2);
    case 4: return SGFORMER_IAM_AGGREGATE(4);
    case 8:
        if constexpr (sizeof(T) == 2)
        {
            return SGFORMER_IAM_AGGREGATE(8);
        }
        break;
    default: break;
    }
#undef SGFORMER_IAM_AGGREGATE
    return cudaErrorInvalidValue;
}

/*!
 * Lets sortKernel take `smem` bytes of dynamic shared memory in the current context. A function attribute
 * belongs to the kernel in one context: after cudaDeviceReset, or in a second context on the device
 * (pycuda's make_context), the kernel is back at 48 KB. So every launch that needs more than 48 KB reads
 * the value back from the current context (cudaFuncGetAttributes: host-only, legal during stream capture)
 * and sets it only when it is lower, to the largest N of the device: one set per context, no set in the
 * steady state.
 */
cudaError_t allowSortShared(size_t smem, int optin)
{
    if (smem <= kDEFAULT_DYNAMIC_SHARED_BYTES)
    {
        return cudaSuccess;
    }
    cudaFuncAttributes attr{};
    cudaError_t const status = cudaFuncGetAttributes(&attr, sortKernel);
    if (status != cudaSuccess)
    {
        return status;
    }
    if (attr.maxDynamicSharedSizeBytes >= 0 && static_cast<size_t>(attr.maxDynamicSharedSizeBytes) >= smem)
    {
        return cudaSuccess;
    }
    size_t const limit = sortSharedBytes(sgformerIamFusedMaxTokens(static_cast<size_t>(optin)));
    return cudaFuncSetAttribute(sortKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limit));
}

} // namespace

int32_t aggregateVectorWidth(int32_t batch, int32_t outTokens, int32_t channels, size_t elementBytes) noexcept
{
    int32_t v = elementBytes == 2 ? 8 : 4; // 16-byte vectors
    while (v > 1 && (channels % v != 0 || channels / v < kWARP))
    {
        v /= 2;
    }
    // Narrower vectors -> more warps; worth it while the grid is small (batch 1 of a small layout).
    auto warps = [&](int32_t width) {
        return int64_t{2} * batch * outTokens * ((channels / width + kWARP - 1) / kWARP);
    };
    while (v > 1 && warps(v) < kAGG_TARGET_WARPS)
    {
        v /= 2;
    }
    return v;
}

int32_t aggregateVectorWidthFor(int32_t batch, int32_t outTokens, int32_t channels, size_t elementBytes,
    void const* tokens, void const* seqRow, void const* seqCol) noexcept
{
    int32_t v = aggregateVectorWidth(batch, outTokens, channels, elementBytes);
    // A vector access traps (cudaErrorMisalignedAddress, sticky) unless its address is a multiple of its
    // width: a contiguous tensor with a storage offset is aligned to its element only.
    auto aligned = [&](void const* p, int32_t width) {
        return reinterpret_cast<uintptr_t>(p) % (static_cast<size_t>(width) * elementBytes) == 0;
    };
    while (v > 1 && !(aligned(tokens, v) && aligned(seqRow, v) && aligned(seqCol, v)))
    {
        v /= 2;
    }
    return v;
}

size_t sgformerIamSortSharedBytes(int32_t numTokens) noexcept
{
    return numTokens < 0 ? 0 : sortSharedBytes(numTokens);
}

int32_t sgformerIamFusedMaxTokens(size_t sharedBytesPerBlockOptin) noexcept
{
    size_t const reserve = kSORT_COUNTER_BYTES + kSORT_STATIC_SHARED_RESERVE_BYTES + 2 * 16;
    if (sharedBytesPerBlockOptin <= reserve)
    {
        return 0;
    }
    size_t const n = (sharedBytesPerBlockOptin - reserve) / (sizeof(uint32_t) + 2 * sizeof(uint16_t));
    return static_cast<int32_t>(n < size_t{kFUSED_MAX_TOKENS_CAP} ? n : size_t{kFUSED_MAX_TOKENS_CAP});
}

size_t sgformerIamWorkspaceSize(int32_t batch, int32_t numTokens) noexcept
{
    if (batch < 0 || numTokens < 0)
    {
        return 0;
    }
    WorkspaceLayout const l = workspaceLayout(batch, numTokens);
    // The device (and so the path) is unknown here: reserve the CUB path whenever some supported
    // architecture could need it.
    return numTokens <= sgformerIamFusedMaxTokens(kMIN_SHARED_BYTES_PER_BLOCK_OPTIN) ? l.fusedTotal : l.cubTotal;
}

size_t sgformerIamPathWorkspaceSize(IamPath path, int32_t batch, int32_t numTokens) noexcept
{
    if (batch < 0 || numTokens < 0)
    {
        return 0;
    }
    WorkspaceLayout const l = workspaceLayout(batch, numTokens);
    return path == IamPath::kFUSED ? l.fusedTotal : l.cubTotal;
}

bool planIamEnqueue(SgformerIamParams const& layout, int32_t sizedBatch, int64_t batch, int64_t channels,
    bool haveWorkspace, IamEnqueuePlan& plan) noexcept
{
    plan.params = layout;
    plan.workspaceBytes = 0;
    plan.error[0] = '\0';
    if (batch < 0 || batch > kMAX_BATCH || channels <= 0 || channels > INT32_MAX)
    {
        std::snprintf(plan.error, sizeof(plan.error),
            "input 0 (tokens) has runtime batch %lld and channels %lld; expected B in 0..%d and C > 0",
            static_cast<long long>(batch), static_cast<long long>(channels), kMAX_BATCH);
        return false;
    }
    plan.params.batch = static_cast<int32_t>(batch);
    plan.params.channels = static_cast<int32_t>(channels);
    int32_t const sized = sizedBatch > 0 ? sizedBatch : plan.params.batch;
    if (plan.params.batch > sized)
    {
        std::snprintf(plan.error, sizeof(plan.error),
            "input 0 (tokens) has runtime batch %d above the profile's max %d that the workspace was sized for",
            plan.params.batch, sized);
        return false;
    }
    plan.workspaceBytes = sgformerIamWorkspaceSize(sized, layout.numTokens);
    if (plan.workspaceBytes > 0 && !haveWorkspace && plan.params.batch > 0)
    {
        std::snprintf(plan.error, sizeof(plan.error), "workspace is null but %zu bytes were requested",
            plan.workspaceBytes);
        return false;
    }
    return true;
}

cudaError_t sgformerIamSelectPath(int32_t numTokens, IamPath* path) noexcept
{
    int device = 0;
    int optin = 0;
    cudaError_t const pending = cudaPeekAtLastError();
    cudaError_t status = cudaGetDevice(&device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (status != cudaSuccess)
    {
        ownStatus(pending); // clear the error this call caused, not an earlier one
        return status;
    }
    *path = numTokens <= sgformerIamFusedMaxTokens(static_cast<size_t>(optin)) ? IamPath::kFUSED : IamPath::kCUB;
    return cudaSuccess;
}

cudaError_t launchSgformerIamPath(IamPath path, SgformerIamParams const& params, IamTokenType tokenType,
    void const* tokens, float const* importance, float const* weight, float const* bias, void* seqRow, void* seqCol,
    void* workspace, size_t workspaceBytes, cudaStream_t stream) noexcept
{
    if (params.batch == 0)
    {
        return cudaSuccess;
    }
    int64_t const items = int64_t{2} * params.batch * params.numTokens;
    if (params.batch < 0 || params.batch > kMAX_BATCH || params.channels <= 0 || params.numTokens <= 0
        || params.outTokens <= 0 || items > 0x7fffffffLL)
    {
        return cudaErrorInvalidValue;
    }
    if (tokens == nullptr || importance == nullptr || weight == nullptr || bias == nullptr || seqRow == nullptr
        || seqCol == nullptr || workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (tokenType != IamTokenType::kFLOAT32 && tokenType != IamTokenType::kFLOAT16)
    {
        return cudaErrorInvalidValue;
    }
    // Every pointer aligned to its element (the vector width adapts beyond that, aggregateVectorWidthFor).
    size_t const tokenBytes = tokenType == IamTokenType::kFLOAT32 ? sizeof(float) : sizeof(__half);
    auto misaligned = [](void const* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes != 0; };
    if (misaligned(tokens, tokenBytes) || misaligned(seqRow, tokenBytes) || misaligned(seqCol, tokenBytes)
        || misaligned(importance, sizeof(float)) || misaligned(weight, sizeof(float)) || misaligned(bias, sizeof(float))
        || misaligned(workspace, sizeof(uint32_t)))
    {
        return cudaErrorInvalidValue;
    }
    cudaError_t const pending = cudaPeekAtLastError();
    if (isContextLost(pending))
    {
        return pending;
    }
    WorkspaceLayout const l = workspaceLayout(params.batch, params.numTokens);
    char* ws = static_cast<char*>(workspace);
    int32_t const* sortedTokens = reinterpret_cast<int32_t const*>(ws + l.sorted);
    cudaError_t status = cudaSuccess;
    if (path == IamPath::kFUSED)
    {
        if (workspaceBytes < l.fusedTotal || params.numTokens > kFUSED_MAX_TOKENS_CAP)
        {
            return cudaErrorInvalidValue;
        }
        int device = 0;
        int optin = 0;
        status = cudaGetDevice(&device);
        if (status == cudaSuccess)
        {
            status = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
        }
        if (status != cudaSuccess)
        {
            ownStatus(pending); // clear the error this call caused, so later launches do not report it
            return status;
        }
        if (params.numTokens > sgformerIamFusedMaxTokens(static_cast<size_t>(optin)))
        {
            return cudaErrorInvalidValue; // does not fit one CTA's shared memory on this GPU
        }
        size_t const smem = sortSharedBytes(params.numTokens);
        status = allowSortShared(smem, optin);
        if (status != cudaSuccess)
        {
            ownStatus(pending);
            return status;
        }
        dim3 const grid(2u, static_cast<uint32_t>(params.batch), 1u);
        sortKernel<<<grid, kSORT_THREADS, smem, stream>>>(params, importance, reinterpret_cast<int32_t*>(ws + l.sorted));
        status = ownStatus(pending);
    }
    else if (path == IamPath::kCUB)
    {
        status = sortWithCub(params, importance, ws, l, workspaceBytes, &sortedTokens, pending, stream);
    }
    else
    {
        return cudaErrorInvalidValue;
    }
    if (status != cudaSuccess)
    {
        return status;
    }
    if (tokenType == IamTokenType::kFLOAT32)
    {
        return launchAggregate<float>(params, tokens, sortedTokens, weight, bias, seqRow, seqCol, pending, stream);
    }
    return launchAggregate<__half>(params, tokens, sortedTokens, weight, bias, seqRow, seqCol, pending, stream);
}

cudaError_t launchSgformerIam(SgformerIamParams const& params, IamTokenType tokenType, void const* tokens,
    float const* importance, float const* weight, float const* bias, void* seqRow, void* seqCol, void* workspace,
    size_t workspaceBytes, cudaStream_t stream) noexcept
{
    if (params.batch == 0)
    {
        return cudaSuccess;
    }
    IamPath path = IamPath::kCUB;
    cudaError_t const status = sgformerIamSelectPath(params.numTokens, &path);
    if (status != cudaSuccess)
    {
        return status;
    }
    return launchSgformerIamPath(path, params, tokenType, tokens, importance, weight, bias, seqRow, seqCol, workspace,
        workspaceBytes, stream);
}

} // namespace iam
} // namespace sgformer
