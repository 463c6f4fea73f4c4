/*
 * SGFormerIAM: CUDA kernels and launchers (see sgformerIamKernel.h for the algorithm).
 */
#include "sgformerIamKernel.h"

#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_fp16.h>

namespace sgformer
{
namespace iam
{
namespace
{

constexpr int32_t kPREPARE_THREADS = 256;
constexpr int32_t kPREPARE_MAX_BLOCKS = 4096;
constexpr int32_t kAGGREGATE_THREADS = 128;
constexpr size_t kALIGN_BYTES = 256;

constexpr size_t alignUp(size_t bytes)
{
    return (bytes + kALIGN_BYTES - 1) / kALIGN_BYTES * kALIGN_BYTES;
}

//! Byte offsets of the workspace parts.
struct WorkspaceLayout
{
    size_t keys0;
    size_t keys1;
    size_t values0;
    size_t values1;
    size_t offsets;
    size_t cubTemp;
    size_t total;
};

WorkspaceLayout workspaceLayout(int32_t batch, int32_t numTokens)
{
    size_t const items = size_t{2} * static_cast<size_t>(batch) * static_cast<size_t>(numTokens);
    size_t const words = alignUp(items * sizeof(uint32_t));
    WorkspaceLayout l{};
    l.keys0 = 0;
    l.keys1 = l.keys0 + words;
    l.values0 = l.keys1 + words;
    l.values1 = l.values0 + words;
    l.offsets = l.values1 + words;
    l.cubTemp = l.offsets + alignUp((size_t{2} * static_cast<size_t>(batch) + 1) * sizeof(int32_t));
    l.total = l.cubTemp + kCUB_TEMP_RESERVE_BYTES;
    return l;
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

//! Keys and values of both sequences of every batch row; segment s = 2 * b + isColumn.
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
        values[i] = p;
        // items = 2*B*N >= 2*B + 1 because every valid layout has N >= 2, so all offsets are written.
        if (i <= segments)
        {
            offsets[i] = static_cast<int32_t>(i * n);
        }
    }
}

//! One block per (output token, sequence, batch row); threads stride over channels.
template <typename T>
__global__ void __launch_bounds__(kAGGREGATE_THREADS) aggregateKernel(SgformerIamParams const params,
    T const* __restrict__ tokens, int32_t const* __restrict__ sortedPositions, float const* __restrict__ weight,
    float const* __restrict__ bias, T* __restrict__ seqRow, T* __restrict__ seqCol)
{
    __shared__ int32_t sToken[kAGGREGATE_THREADS];
    __shared__ float sWeight[kAGGREGATE_THREADS];

    int32_t const t = blockIdx.x;
    bool const isColumn = blockIdx.y != 0;
    int64_t const b = blockIdx.z;
    int64_t const n = params.numTokens;
    int32_t const c = params.channels;

    int32_t const tier = tierOfOutput(params, t);
    int32_t const k = params.groupSizes[tier];
    int32_t const first = groupFirstSorted(params, tier, t);
    float const* w = weight + params.weightOffset[tier];
    int32_t const* positions = sortedPositions + (2 * b + (isColumn ? 1 : 0)) * n + first;
    T const* rowTokens = tokens + b * n * c;
    T* out = (isColumn ? seqCol : seqRow) + (b * params.outTokens + t) * static_cast<int64_t>(c);

    // Each thread owns channels threadIdx.x + m * kAGGREGATE_THREADS; the group is read in chunks
    // of kAGGREGATE_THREADS sorted positions staged in shared memory. Order over j is 0..k-1.
    for (int32_t cBase = 0; cBase < c; cBase += kAGGREGATE_THREADS)
    {
        int32_t const ch = cBase + static_cast<int32_t>(threadIdx.x);
        float acc = 0.0f;
        for (int32_t jBase = 0; jBase < k; jBase += kAGGREGATE_THREADS)
        {
            int32_t const chunk = min(kAGGREGATE_THREADS, k - jBase);
            __syncthreads();
            if (static_cast<int32_t>(threadIdx.x) < chunk)
            {
                int32_t const j = jBase + static_cast<int32_t>(threadIdx.x);
                sToken[threadIdx.x] = sequenceToToken(positions[j], isColumn, params.height, params.width);
                sWeight[threadIdx.x] = w[j];
            }
            __syncthreads();
            if (ch < c)
            {
                for (int32_t jj = 0; jj < chunk; ++jj)
                {
                    float const x = loadToken(rowTokens[static_cast<int64_t>(sToken[jj]) * c + ch]);
                    acc = accumulateStep(acc, sWeight[jj], x);
                }
            }
        }
        if (ch < c)
        {
            out[ch] = storeToken<T>(finishGroup(acc, bias[tier]));
        }
    }
}

cudaError_t sortSegments(SgformerIamParams const& params, char* ws, WorkspaceLayout const& l, int32_t** sortedValues,
    cudaStream_t stream)
{
    int32_t const segments = 2 * params.batch;
    int32_t const items = segments * params.numTokens;
    int32_t const* offsets = reinterpret_cast<int32_t const*>(ws + l.offsets);
    cub::DoubleBuffer<uint32_t> keys(reinterpret_cast<uint32_t*>(ws + l.keys0), reinterpret_cast<uint32_t*>(ws + l.keys1));
    cub::DoubleBuffer<int32_t> values(reinterpret_cast<int32_t*>(ws + l.values0), reinterpret_cast<int32_t*>(ws + l.values1));
    size_t tempBytes = 0;
    cudaError_t status = cub::DeviceSegmentedRadixSort::SortPairs(nullptr, tempBytes, keys, values, items, segments,
        offsets, offsets + 1, 0, static_cast<int>(sizeof(uint32_t) * 8), stream);
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
    status = cudaGetLastError();
    *sortedValues = values.Current();
    return status;
}

template <typename T>
cudaError_t launchAggregate(SgformerIamParams const& params, void const* tokens, int32_t const* sortedValues,
    float const* weight, float const* bias, void* seqRow, void* seqCol, cudaStream_t stream)
{
    dim3 const grid(static_cast<uint32_t>(params.outTokens), 2u, static_cast<uint32_t>(params.batch));
    aggregateKernel<T><<<grid, kAGGREGATE_THREADS, 0, stream>>>(params, static_cast<T const*>(tokens), sortedValues,
        weight, bias, static_cast<T*>(seqRow), static_cast<T*>(seqCol));
    return cudaGetLastError();
}

} // namespace

size_t sgformerIamWorkspaceSize(int32_t batch, int32_t numTokens) noexcept
{
    if (batch < 0 || numTokens < 0)
    {
        return 0;
    }
    return workspaceLayout(batch, numTokens).total;
}

cudaError_t launchSgformerIam(SgformerIamParams const& params, IamTokenType tokenType, void const* tokens,
    float const* importance, float const* weight, float const* bias, void* seqRow, void* seqCol, void* workspace,
    size_t workspaceBytes, cudaStream_t stream) noexcept
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
    WorkspaceLayout const l = workspaceLayout(params.batch, params.numTokens);
    if (workspaceBytes < l.total)
    {
        return cudaErrorInvalidValue;
    }
    char* ws = static_cast<char*>(workspace);

    int64_t const wantedBlocks = (items + kPREPARE_THREADS - 1) / kPREPARE_THREADS;
    int32_t const blocks = static_cast<int32_t>(wantedBlocks < kPREPARE_MAX_BLOCKS ? wantedBlocks : kPREPARE_MAX_BLOCKS);
    prepareSortKernel<<<blocks, kPREPARE_THREADS, 0, stream>>>(params, importance,
        reinterpret_cast<uint32_t*>(ws + l.keys0), reinterpret_cast<int32_t*>(ws + l.values0),
        reinterpret_cast<int32_t*>(ws + l.offsets));
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }

    int32_t* sortedValues = nullptr;
    status = sortSegments(params, ws, l, &sortedValues, stream);
    if (status != cudaSuccess)
    {
        return status;
    }

    switch (tokenType)
    {
    case IamTokenType::kFLOAT32:
        return launchAggregate<float>(params, tokens, sortedValues, weight, bias, seqRow, seqCol, stream);
    case IamTokenType::kFLOAT16:
        return launchAggregate<__half>(params, tokens, sortedValues, weight, bias, seqRow, seqCol, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace iam
} // namespace sgformer
