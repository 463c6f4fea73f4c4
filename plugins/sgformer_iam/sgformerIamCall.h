/*
 * SGFormerIAM: the arguments of one op call as a C struct, shared by the two ctypes ABIs that run the op
 * (the host reference sgformerIamRef.h: host pointers; the torch CUDA shim sgformerIamTorchShim.cpp: device
 * pointers). pipeline/iam/native.py mirrors it once as a ctypes.Structure (IamCall); keep the two in step
 * (tests/plugins/test_iam_host_ref.py compares its field offsets with sgformer_iam_ref_call_offsets).
 *
 * Contract (README.md): tokens [B, N, C] (N = height * width, row-major token order) of token_type,
 * importance [B, N] float32, agg_weight [sum_t group_sizes[t]] float32, agg_bias [n_tiers] float32
 * -> seq_row, seq_col [B, T, C] of token_type with T = sum_t tier_sizes[t] / group_sizes[t].
 */
#ifndef SGFORMER_IAM_CALL_H
#define SGFORMER_IAM_CALL_H

#include <stdint.h>

#define SGFORMER_IAM_FLOAT32 0 /* tokens and outputs are float */
#define SGFORMER_IAM_FLOAT16 1 /* tokens and outputs are IEEE half bits (uint16_t); accumulation in fp32 */

typedef struct SgformerIamCall
{
    int32_t token_type; /* SGFORMER_IAM_FLOAT32 or SGFORMER_IAM_FLOAT16 */
    int32_t batch;
    int32_t height;
    int32_t width;
    int32_t channels;
    int32_t n_tiers;
    int32_t const* group_sizes; /* [n_tiers], host memory */
    int32_t const* tier_sizes;  /* [n_tiers], host memory */
    void const* tokens;
    float const* importance;
    float const* agg_weight;
    float const* agg_bias;
    void* seq_row;
    void* seq_col;
} SgformerIamCall;

#endif /* SGFORMER_IAM_CALL_H */
