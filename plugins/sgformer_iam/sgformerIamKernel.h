/*
 * SGFormerIAM: CUDA launchers. Plain C++ API, no TensorRT types.
 *
 * Algorithm (README.md "Algorithm on the GPU and its cost"), two launches per op on the fused path:
 *   1. sortKernel: one CTA (512 threads) per (sequence, batch row), 2*B CTAs. Builds the 32-bit sort
 *      keys (sgformerIamMath.h importanceSortKey) of its sequence in shared memory and sorts the
 *      positions with a stable LSD radix sort (4-bit digits, digits constant over the row skipped),
 *      so equal keys keep the lower (row- or column-major) index first. Writes the row-major token
 *      index of every sorted position to the workspace (2*B*N int32).
 *   2. aggregateKernel<T, V>: one warp per (batch row, sequence, output token, slice of 32*V
 *      channels); lanes own V consecutive channels (one vector load per token), the group sum runs
 *      j = 0 .. k-1 with accumulateStep/finishGroup, as in the host reference.
 *   N beyond one CTA's shared memory (sgformerIamFusedMaxTokens of the device) takes the CUB path:
 *   prepareSortKernel + cub::DeviceSegmentedRadixSort::SortPairs (multi-CTA, no cap on N) + the same
 *   aggregateKernel.
 * Deterministic: no atomics, fixed order everywhere.
 */
#ifndef SGFORMER_IAM_KERNEL_H
#define SGFORMER_IAM_KERNEL_H

#include "sgformerIamMath.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace sgformer
{
namespace iam
{

enum class IamTokenType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

//! Scratch bytes reserved for CUB's temporary storage. With DoubleBuffer (overwrite allowed) CUB needs
//! only alignment padding (a few hundred bytes); enqueue checks the real size against this reserve.
constexpr size_t kCUB_TEMP_RESERVE_BYTES = size_t{64} << 10;

//! Largest batch the launcher accepts (grid y limit of the sort kernel).
constexpr int32_t kMAX_BATCH = 65535;

//! Largest N of the fused path (positions are uint16 in shared memory); the device's shared memory
//! usually caps it lower (sgformerIamFusedMaxTokens).
constexpr int32_t kFUSED_MAX_TOKENS_CAP = 65535;

//! Static shared memory of sortKernel budgeted by sgformerIamFusedMaxTokens (ptxas: 192 bytes).
constexpr size_t kSORT_STATIC_SHARED_RESERVE_BYTES = 1024;

//! Smallest opt-in shared memory per block of the architectures the plugin may run on (sm_75: 64 KiB;
//! sm_86/89/120: 99 KiB; sm_80/87: 163 KiB; sm_90/100: 227 KiB). sgformerIamWorkspaceSize reserves the
//! CUB path whenever N exceeds the fused limit of this size, because the builder may not know the GPU.
constexpr size_t kMIN_SHARED_BYTES_PER_BLOCK_OPTIN = size_t{64} << 10;

//! Which sort a launch uses.
enum class IamPath : int32_t
{
    kFUSED = 0, //!< block radix sort in shared memory (1 launch) + aggregation (1 launch)
    kCUB = 1,   //!< prepare + CUB segmented radix sort + aggregation (multi-CTA sort, any N)
};

/*!
 * Workspace bytes for `batch` rows of `numTokens` tokens. The fused path needs the sorted token
 * indices (2*B*N int32, 256-byte aligned); when N may exceed the fused limit on some supported GPU
 * (sgformerIamFusedMaxTokens(kMIN_SHARED_BYTES_PER_BLOCK_OPTIN)) it also reserves the CUB path's
 * buffers (three more 2*B*N word buffers, 2*B+1 offsets, kCUB_TEMP_RESERVE_BYTES). Monotone in batch.
 * Pure host arithmetic (no CUDA call), so TensorRT can ask for it on a machine without a GPU.
 */
size_t sgformerIamWorkspaceSize(int32_t batch, int32_t numTokens) noexcept;

//! Workspace bytes one path uses (launchSgformerIamPath); sgformerIamWorkspaceSize is the max over the
//! paths some supported GPU may take.
size_t sgformerIamPathWorkspaceSize(IamPath path, int32_t batch, int32_t numTokens) noexcept;

//! One TensorRT enqueue's launch: the op's params at the runtime shape and the workspace the caller holds.
struct IamEnqueuePlan
{
    SgformerIamParams params; //!< the layout's params with this launch's batch and channels
    size_t workspaceBytes;    //!< bytes of the workspace TensorRT allocated (getWorkspaceSize's answer)
    char error[256];          //!< why planIamEnqueue refused, when it returns false
};

/*!
 * The workspace policy of an enqueue, on the launcher's side: the runtime batch (0..kMAX_BATCH) and channels
 * (1..INT32_MAX) are checked; TensorRT allocated sgformerIamWorkspaceSize at `sizedBatch`, the profile's max batch
 * that configurePlugin recorded (0 for a plugin deserialized for the runtime: TensorRT then allocated the
 * build-time size, which is >= the size at any runtime batch because the size is monotone in the batch, so the
 * runtime batch is used); a runtime batch above `sizedBatch` and a null workspace that a launch would need are
 * refused. The launcher checks workspaceBytes again against what its path really uses on the GPU.
 * Host arithmetic only; returns false with a message in plan.error.
 */
bool planIamEnqueue(SgformerIamParams const& layout, int32_t sizedBatch, int64_t batch, int64_t channels,
    bool haveWorkspace, IamEnqueuePlan& plan) noexcept;

//! Dynamic shared memory bytes of the fused sort kernel for N tokens (host arithmetic).
size_t sgformerIamSortSharedBytes(int32_t numTokens) noexcept;

//! Largest N the fused path handles on a device with this opt-in shared memory per block.
int32_t sgformerIamFusedMaxTokens(size_t sharedBytesPerBlockOptin) noexcept;

//! Channels per lane (1, 2, 4, or 8 for fp16) the aggregation kernel uses for this shape.
int32_t aggregateVectorWidth(int32_t batch, int32_t outTokens, int32_t channels, size_t elementBytes) noexcept;

//! aggregateVectorWidth narrowed until tokens, seqRow and seqCol are all aligned to V elements (a tensor
//! with a storage offset is only element-aligned): the width launchSgformerIam really uses.
int32_t aggregateVectorWidthFor(int32_t batch, int32_t outTokens, int32_t channels, size_t elementBytes,
    void const* tokens, void const* seqRow, void const* seqCol) noexcept;

//! The path launchSgformerIam takes for N tokens on the current device (queries its shared memory).
cudaError_t sgformerIamSelectPath(int32_t numTokens, IamPath* path) noexcept;

/*!
 * launchSgformerIam with an explicit path (tests; kFUSED fails with cudaErrorInvalidValue or a launch
 * error if N does not fit the device). Checks `workspaceBytes` against what that path really uses.
 */
cudaError_t launchSgformerIamPath(IamPath path, SgformerIamParams const& params, IamTokenType tokenType,
    void const* tokens, float const* importance, float const* weight, float const* bias, void* seqRow, void* seqCol,
    void* workspace, size_t workspaceBytes, cudaStream_t stream) noexcept;

/*!
 * Run the op on `stream`. `params` must come from makeIamParams with batch and channels set.
 * tokens/seqRow/seqCol hold float or __half according to `tokenType`; importance, weight and bias
 * are float. Picks the path with sgformerIamSelectPath. Returns cudaErrorInvalidValue for bad
 * arguments (a pointer not aligned to its element, a workspace smaller than the chosen path uses),
 * otherwise the status of our launches: an error pending on the thread before the call is left
 * pending for its owner (cudaPeekAtLastError; only an error our launch caused is cleared), except a
 * sticky one, which is returned. Two launches on the fused path, four on the CUB path.
 */
cudaError_t launchSgformerIam(SgformerIamParams const& params, IamTokenType tokenType, void const* tokens,
    float const* importance, float const* weight, float const* bias, void* seqRow, void* seqCol, void* workspace,
    size_t workspaceBytes, cudaStream_t stream) noexcept;

} // namespace iam
} // namespace sgformer

#endif // SGFORMER_IAM_KERNEL_H
