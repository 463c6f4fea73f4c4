/*
 * SGFormerIAM: CUDA launchers. Plain C++ API, no TensorRT types.
 *
 * Algorithm (README.md "Algorithm and cost"):
 *   1. prepare: one thread per (batch row, sequence, position) writes the importance sort key
 *      (sgformerIamMath.h importanceSortKey) and the position itself as the value, for both the
 *      row-major and the column-major sequence, plus the segment offsets.
 *   2. sort: cub::DeviceSegmentedRadixSort::SortPairs over 2*B segments of N keys. LSD radix sort
 *      is stable and the values start in ascending position order, so equal keys keep the lower
 *      (row- or column-major) index first.
 *   3. aggregate: one block per (output token, sequence, batch row); threads over channels; the
 *      group sum runs j = 0 .. k-1 with accumulateStep/finishGroup, as in the host reference.
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

//! Largest batch the launcher accepts (grid z limit and CUB's int item count for the largest grids).
constexpr int32_t kMAX_BATCH = 65535;

/*!
 * Workspace bytes for `batch` rows of `numTokens` tokens: two key and two value buffers of 2*B*N
 * 32-bit words, 2*B+1 segment offsets and the CUB reserve, each 256-byte aligned. Pure host
 * arithmetic (no CUDA call), so TensorRT can ask for it on a machine without a GPU.
 */
size_t sgformerIamWorkspaceSize(int32_t batch, int32_t numTokens) noexcept;

/*!
 * Run the op on `stream`. `params` must come from makeIamParams with batch and channels set.
 * tokens/seqRow/seqCol hold float or __half according to `tokenType`; importance, weight and bias
 * are float. Returns cudaErrorInvalidValue for bad arguments or a too-small workspace, otherwise
 * the status of the launches (cudaGetLastError after each).
 */
cudaError_t launchSgformerIam(SgformerIamParams const& params, IamTokenType tokenType, void const* tokens,
    float const* importance, float const* weight, float const* bias, void* seqRow, void* seqCol, void* workspace,
    size_t workspaceBytes, cudaStream_t stream) noexcept;

} // namespace iam
} // namespace sgformer

#endif // SGFORMER_IAM_KERNEL_H
