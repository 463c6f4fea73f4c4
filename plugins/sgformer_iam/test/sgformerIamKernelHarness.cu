/*
 * ctypes harness for the GPU tests (tests/plugins/test_iam_kernel_gpu.py): runs the CUDA launcher on
 * host buffers with the same C signature as the host reference (sgformerIamRef.h), so the test can
 * compare both bit for bit. Not part of the plugin library. Also built through cudahost (CPU, CI):
 * tests/plugins/iam_kernel_api.py documents the C API for both.
 */
#include "sgformerIamKernel.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace
{

thread_local std::string tLastError;

//! -1: launchSgformerIam picks the path (sgformerIamSelectPath); 0: fused; 1: CUB (sgformer_iam_cuda_set_path).
int gForcedPath = -1;

//! Elements by which the token input and the two outputs start after their allocation (a tensor view with a
//! storage offset); sgformer_iam_cuda_set_offsets.
int gTokenOffset = 0;
int gOutputOffset = 0;

//! Owns one device allocation.
struct DeviceBuffer
{
    void* ptr{nullptr};
    explicit DeviceBuffer(size_t bytes)
    {
        if (bytes > 0 && cudaMalloc(&ptr, bytes) != cudaSuccess)
        {
            ptr = nullptr;
        }
    }
    ~DeviceBuffer()
    {
        if (ptr != nullptr)
        {
            cudaFree(ptr);
        }
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

int fail(std::string const& what, cudaError_t status)
{
    tLastError = "SGFormerIAM kernel harness: " + what + ": " + cudaGetErrorName(status) + " ("
        + cudaGetErrorString(status) + ")";
    return 3;
}

int run(sgformer::iam::IamTokenType type, size_t tokenBytes, void const* tokens, float const* importance,
    float const* weight, float const* bias, int batch, int height, int width, int channels, int const* groupSizes,
    int const* tierSizes, int nTiers, void* seqRow, void* seqCol)
{
    using namespace sgformer::iam;
    SgformerIamParams p;
    char msg[256] = {};
    if (makeIamParams(height, width, groupSizes, tierSizes, nTiers, p, msg, sizeof(msg)) != 0)
    {
        tLastError = msg;
        return 2;
    }
    p.batch = batch;
    p.channels = channels;
    size_t const n = static_cast<size_t>(p.numTokens);
    size_t const inBytes = static_cast<size_t>(batch) * n * channels * tokenBytes;
    size_t const outBytes = static_cast<size_t>(batch) * p.outTokens * channels * tokenBytes;
    size_t const impBytes = static_cast<size_t>(batch) * n * sizeof(float);
    size_t wsBytes = sgformerIamWorkspaceSize(batch, p.numTokens);
    if (gForcedPath >= 0)
    {
        size_t const pathBytes = sgformerIamPathWorkspaceSize(static_cast<IamPath>(gForcedPath), batch, p.numTokens);
        wsBytes = pathBytes > wsBytes ? pathBytes : wsBytes;
    }
    size_t const tokShift = static_cast<size_t>(gTokenOffset) * tokenBytes;
    size_t const outShift = static_cast<size_t>(gOutputOffset) * tokenBytes;
    DeviceBuffer dTokAlloc(inBytes + tokShift), dImp(impBytes), dW(p.totalWeights * sizeof(float)),
        dB(p.numTiers * sizeof(float)), dRowAlloc(outBytes + outShift), dColAlloc(outBytes + outShift), dWs(wsBytes);
    if (!dTokAlloc.ptr || !dImp.ptr || !dW.ptr || !dB.ptr || !dRowAlloc.ptr || !dColAlloc.ptr || !dWs.ptr)
    {
        return fail("cudaMalloc", cudaErrorMemoryAllocation);
    }
    struct View
    {
        void* ptr;
    };
    View const dTok{static_cast<char*>(dTokAlloc.ptr) + tokShift};
    View const dRow{static_cast<char*>(dRowAlloc.ptr) + outShift};
    View const dCol{static_cast<char*>(dColAlloc.ptr) + outShift};
    cudaStream_t stream{};
    cudaError_t s = cudaStreamCreate(&stream);
    if (s != cudaSuccess)
    {
        return fail("cudaStreamCreate", s);
    }
    auto copyIn = [&](void* dst, void const* src, size_t bytes) {
        return s == cudaSuccess ? (s = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream)) : s;
    };
    copyIn(dTok.ptr, tokens, inBytes);
    copyIn(dImp.ptr, importance, impBytes);
    copyIn(dW.ptr, weight, p.totalWeights * sizeof(float));
    copyIn(dB.ptr, bias, p.numTiers * sizeof(float));
    // Poison the outputs so a skipped write shows up.
    if (s == cudaSuccess)
    {
        s = cudaMemsetAsync(dRow.ptr, 0xff, outBytes, stream);
    }
    if (s == cudaSuccess)
    {
        s = cudaMemsetAsync(dCol.ptr, 0xff, outBytes, stream);
    }
    if (s == cudaSuccess)
    {
        if (gForcedPath < 0)
        {
            s = launchSgformerIam(p, type, dTok.ptr, static_cast<float const*>(dImp.ptr),
                static_cast<float const*>(dW.ptr), static_cast<float const*>(dB.ptr), dRow.ptr, dCol.ptr, dWs.ptr,
                wsBytes, stream);
        }
        else
        {
            s = launchSgformerIamPath(static_cast<IamPath>(gForcedPath), p, type, dTok.ptr,
                static_cast<float const*>(dImp.ptr), static_cast<float const*>(dW.ptr),
                static_cast<float const*>(dB.ptr), dRow.ptr, dCol.ptr, dWs.ptr, wsBytes, stream);
        }
    }
    if (s == cudaSuccess)
    {
        s = cudaMemcpyAsync(seqRow, dRow.ptr, outBytes, cudaMemcpyDeviceToHost, stream);
    }
    if (s == cudaSuccess)
    {
        s = cudaMemcpyAsync(seqCol, dCol.ptr, outBytes, cudaMemcpyDeviceToHost, stream);
    }
    cudaError_t const syncStatus = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    if (s == cudaSuccess)
    {
        s = syncStatus;
    }
    if (s != cudaSuccess)
    {
        return fail("launchSgformerIam", s);
    }
    tLastError.clear();
    return 0;
}

} // namespace

extern "C"
{

int sgformer_iam_cuda_fp32(float const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, float* seq_row, float* seq_col)
{
    return run(sgformer::iam::IamTokenType::kFLOAT32, sizeof(float), tokens, importance, agg_weight, agg_bias, batch,
        height, width, channels, group_sizes, tier_sizes, n_tiers, seq_row, seq_col);
}

int sgformer_iam_cuda_fp16(uint16_t const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, uint16_t* seq_row, uint16_t* seq_col)
{
    return run(sgformer::iam::IamTokenType::kFLOAT16, sizeof(uint16_t), tokens, importance, agg_weight, agg_bias,
        batch, height, width, channels, group_sizes, tier_sizes, n_tiers, seq_row, seq_col);
}

int sgformer_iam_cuda_device_count(void)
{
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

size_t sgformer_iam_cuda_workspace_size(int batch, int num_tokens)
{
    return sgformer::iam::sgformerIamWorkspaceSize(batch, num_tokens);
}

//! Start the token input `tokens` elements and both outputs `outputs` elements after their allocations (an
//! offset view: aligned to the element only). Returns 1 for a negative value.
int sgformer_iam_cuda_set_offsets(int tokens, int outputs)
{
    if (tokens < 0 || outputs < 0)
    {
        return 1;
    }
    gTokenOffset = tokens;
    gOutputOffset = outputs;
    return 0;
}

//! The aggregation's vector width for this shape and these offsets (elements) of the token and output pointers
//! from a 256-byte aligned base.
int sgformer_iam_cuda_vector_width(int batch, int out_tokens, int channels, int element_bytes, int token_offset,
    int output_offset)
{
    alignas(256) static char base[1];
    char* b = base;
    return sgformer::iam::aggregateVectorWidthFor(batch, out_tokens, channels, static_cast<size_t>(element_bytes),
        b + static_cast<size_t>(token_offset) * element_bytes, b + static_cast<size_t>(output_offset) * element_bytes,
        b + static_cast<size_t>(output_offset) * element_bytes);
}

//! -1: automatic path (default), 0: force the fused path, 1: force the CUB path. Returns 0, or 1 for another value.
int sgformer_iam_cuda_set_path(int path)
{
    if (path < -1 || path > 1)
    {
        return 1;
    }
    gForcedPath = path;
    return 0;
}

//! Path the automatic choice takes for N tokens on the current device (0 fused, 1 CUB), or -1 on error.
int sgformer_iam_cuda_auto_path(int num_tokens)
{
    sgformer::iam::IamPath path{};
    return sgformer::iam::sgformerIamSelectPath(num_tokens, &path) == cudaSuccess ? static_cast<int>(path) : -1;
}

//! Largest N of the fused path on a device with this opt-in shared memory per block.
int sgformer_iam_cuda_fused_max_tokens(size_t shared_optin)
{
    return sgformer::iam::sgformerIamFusedMaxTokens(shared_optin);
}

char const* sgformer_iam_cuda_last_error(void)
{
    return tLastError.c_str();
}

} // extern "C"
