/*
 * SGFormerIAM: C ABI over the CUDA launcher for PyTorch (pipeline/iam_op.py loads this with ctypes).
 *
 * No TensorRT and no libtorch: the caller passes device pointers of contiguous tensors, the
 * cudaStream_t of PyTorch's current stream and a workspace it allocated from PyTorch's caching
 * allocator (sgformer_iam_torch_workspace_size bytes). The kernel is the one the TensorRT plugin
 * runs (launchSgformerIam in sgformerIamKernel.h); this file only validates arguments, fills the
 * SgformerIamParams with makeIamParams and forwards the call. Nothing is allocated or synchronized.
 *
 * Every entry returns 0 or an error code (1 argument, 2 layout, 3 CUDA); the message is then in
 * sgformer_iam_torch_last_error() (thread-local, valid until the next call on the same thread).
 */
#include "sgformerIamKernel.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#define SGFORMER_IAM_TORCH_API extern "C" __attribute__((visibility("default")))

namespace
{

constexpr int kAPI_VERSION = 1;
constexpr int kOK = 0;
constexpr int kERR_ARGUMENT = 1;
constexpr int kERR_LAYOUT = 2;
constexpr int kERR_CUDA = 3;

thread_local std::string tLastError;

int fail(int code, std::string message)
{
    tLastError = std::move(message);
    return code;
}

int cudaFail(char const* what, cudaError_t status)
{
    return fail(kERR_CUDA, std::string("SGFormerIAM (torch): ") + what + ": " + cudaGetErrorName(status) + " ("
            + cudaGetErrorString(status) + ")");
}

int makeParams(int height, int width, int const* groupSizes, int const* tierSizes, int nTiers,
    sgformer::iam::SgformerIamParams& params)
{
    char msg[256] = {};
    if (sgformer::iam::makeIamParams(height, width, groupSizes, tierSizes, nTiers, params, msg, sizeof(msg)) != 0)
    {
        return fail(kERR_LAYOUT, msg);
    }
    return kOK;
}

} // namespace

SGFORMER_IAM_TORCH_API int sgformer_iam_torch_api_version(void)
{
    return kAPI_VERSION;
}

//! Visible CUDA devices (0 without a driver or GPU; never fails).
SGFORMER_IAM_TORCH_API int sgformer_iam_torch_device_count(void)
{
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

//! Workspace bytes launchSgformerIam needs for `batch` rows of `num_tokens` tokens.
SGFORMER_IAM_TORCH_API size_t sgformer_iam_torch_workspace_size(int batch, int num_tokens)
{
    return sgformer::iam::sgformerIamWorkspaceSize(batch, num_tokens);
}

//! Output token count T of a layout, or -1 with a message naming the bad field.
SGFORMER_IAM_TORCH_API int sgformer_iam_torch_out_tokens(
    int height, int width, int const* group_sizes, int const* tier_sizes, int n_tiers)
{
    sgformer::iam::SgformerIamParams params;
    if (makeParams(height, width, group_sizes, tier_sizes, n_tiers, params) != kOK)
    {
        return -1;
    }
    tLastError.clear();
    return params.outTokens;
}

/*!
 * Enqueue the op on `stream` (a cudaStream_t; 0 is the legacy default stream) of device `device`.
 * token_type: 0 float32, 1 float16 (tokens, seq_row, seq_col). importance, weight, bias: float32.
 * All pointers are device pointers of contiguous buffers; group_sizes/tier_sizes are host arrays.
 */
SGFORMER_IAM_TORCH_API int sgformer_iam_torch_launch(int token_type, void const* tokens, float const* importance,
    float const* weight, float const* bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, void* seq_row, void* seq_col, void* workspace, size_t workspace_bytes,
    void* stream, int device)
{
    using namespace sgformer::iam;
    if (token_type != static_cast<int>(IamTokenType::kFLOAT32) && token_type != static_cast<int>(IamTokenType::kFLOAT16))
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): token_type " + std::to_string(token_type)
                + " is neither 0 (float32) nor 1 (float16)");
    }
    if (batch < 0 || batch > kMAX_BATCH || channels <= 0)
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): batch " + std::to_string(batch) + " must be in 0.."
                + std::to_string(kMAX_BATCH) + " and channels " + std::to_string(channels) + " positive");
    }
    SgformerIamParams params;
    if (makeParams(height, width, group_sizes, tier_sizes, n_tiers, params) != kOK)
    {
        return kERR_LAYOUT;
    }
    params.batch = batch;
    params.channels = channels;
    size_t const needed = sgformerIamWorkspaceSize(batch, params.numTokens);
    if (workspace_bytes < needed)
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): workspace of " + std::to_string(workspace_bytes)
                + " bytes, the launcher needs " + std::to_string(needed));
    }
    if (batch > 0
        && (tokens == nullptr || importance == nullptr || weight == nullptr || bias == nullptr || seq_row == nullptr
            || seq_col == nullptr || workspace == nullptr))
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): a device pointer is null");
    }
    // PyTorch made the primary context of `device` current; this runtime (linked statically) adopts it.
    int current = -1;
    cudaError_t status = cudaGetDevice(&current);
    if (status == cudaSuccess && current != device)
    {
        status = cudaSetDevice(device);
    }
    if (status != cudaSuccess)
    {
        return cudaFail("selecting the device", status);
    }
    status = launchSgformerIam(params, static_cast<IamTokenType>(token_type), tokens, importance, weight, bias,
        seq_row, seq_col, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
    if (status != cudaSuccess)
    {
        return cudaFail("launchSgformerIam", status);
    }
    tLastError.clear();
    return kOK;
}

SGFORMER_IAM_TORCH_API char const* sgformer_iam_torch_last_error(void)
{
    return tLastError.c_str();
}
