/*
 * SGFormerIAM: C ABI over the CUDA launcher for PyTorch (pipeline/iam/torch_op.py loads this with ctypes).
 *
 * No TensorRT and no libtorch: the caller passes device pointers of contiguous tensors, the
 * cudaStream_t of PyTorch's current stream and a workspace it allocated from PyTorch's caching
 * allocator (sgformer_iam_torch_workspace_size bytes). The kernel is the one the TensorRT plugin
 * runs (launchSgformerIam in sgformerIamKernel.h); this file only validates arguments, fills the
 * SgformerIamParams with makeIamParams from one SgformerIamCall (sgformerIamCall.h) and forwards the
 * call. Nothing is allocated or synchronized.
 *
 * Every entry returns 0 or an error code (1 argument, 2 layout, 3 CUDA); the message is then in
 * sgformer_iam_torch_last_error() (thread-local, valid until the next call on the same thread).
 */
#include "sgformerIamCall.h"
#include "sgformerIamKernel.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#define SGFORMER_IAM_TORCH_API extern "C" __attribute__((visibility("default")))

namespace
{

constexpr int kAPI_VERSION = 2;
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
 * Enqueue the op described by `call` (sgformerIamCall.h: device pointers of contiguous buffers, host arrays for
 * group_sizes/tier_sizes) on `stream` (a cudaStream_t; 0 is the legacy default stream) of device `device`, with
 * `workspace_bytes` of device workspace.
 */
SGFORMER_IAM_TORCH_API int sgformer_iam_torch_launch(
    SgformerIamCall const* call, void* workspace, size_t workspace_bytes, void* stream, int device)
{
    using namespace sgformer::iam;
    if (call == nullptr)
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): the call struct is null");
    }
    SgformerIamCall const& c = *call;
    if (c.token_type != SGFORMER_IAM_FLOAT32 && c.token_type != SGFORMER_IAM_FLOAT16)
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): token_type " + std::to_string(c.token_type)
                + " is neither 0 (float32) nor 1 (float16)");
    }
    if (c.batch < 0 || c.batch > kMAX_BATCH || c.channels <= 0)
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): batch " + std::to_string(c.batch) + " must be in 0.."
                + std::to_string(kMAX_BATCH) + " and channels " + std::to_string(c.channels) + " positive");
    }
    SgformerIamParams params;
    if (makeParams(c.height, c.width, c.group_sizes, c.tier_sizes, c.n_tiers, params) != kOK)
    {
        return kERR_LAYOUT;
    }
    params.batch = c.batch;
    params.channels = c.channels;
    size_t const needed = sgformerIamWorkspaceSize(c.batch, params.numTokens);
    if (workspace_bytes < needed)
    {
        return fail(kERR_ARGUMENT, "SGFormerIAM (torch): workspace of " + std::to_string(workspace_bytes)
                + " bytes, the launcher needs " + std::to_string(needed));
    }
    if (c.batch > 0
        && (c.tokens == nullptr || c.importance == nullptr || c.agg_weight == nullptr || c.agg_bias == nullptr
            || c.seq_row == nullptr || c.seq_col == nullptr || workspace == nullptr))
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
    status = launchSgformerIam(params, static_cast<IamTokenType>(c.token_type), c.tokens, c.importance, c.agg_weight,
        c.agg_bias, c.seq_row, c.seq_col, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
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
