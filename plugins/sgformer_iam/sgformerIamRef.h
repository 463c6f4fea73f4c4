/*
 * SGFormerIAM: CPU host reference, plain C API (usable through ctypes; no CUDA, no TensorRT).
 *
 * Same contract as the plugin (README.md): tokens [B, N, C] (N = height * width, row-major token
 * order), importance [B, N] float32, agg_weight [sum_t group_sizes[t]] float32, agg_bias [n_tiers]
 * float32 -> seq_row, seq_col [B, T, C] with T = sum_t tier_sizes[t] / group_sizes[t].
 * The math is sgformerIamMath.h, shared with the CUDA kernel, so fp32 results are bit-identical.
 *
 * Every entry returns SGFORMER_IAM_OK (0) or an error code; sgformer_iam_ref_last_error() then
 * returns a message (thread-local, valid until the next call on the same thread).
 *
 * Threads: sgformer_iam_ref_fp32/_fp16 spread one call over a process-wide worker pool of
 * sgformer_iam_ref_threads() threads (the caller included; default $SGFORMER_IAM_THREADS, else 1;
 * calls reading fewer than 2^17 token values stay on the calling thread;
 * change it with sgformer_iam_ref_set_threads). Idle workers block, they never spin. The result does not
 * depend on the thread count. The entries may be called from several threads at once: a call that finds
 * the pool busy runs on its own thread.
 * The _plain_ entries are the single-threaded specification (std::stable_sort and scalar loops) that the
 * fast entries are tested against bit for bit.
 */
#ifndef SGFORMER_IAM_REF_H
#define SGFORMER_IAM_REF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

#define SGFORMER_IAM_OK 0
#define SGFORMER_IAM_ERR_ARGUMENT 1 /* null pointer or negative batch / channels */
#define SGFORMER_IAM_ERR_LAYOUT 2   /* height, width, group_sizes, tier_sizes inconsistent */
#define SGFORMER_IAM_ERR_INTERNAL 3 /* allocation failure or other exception */

/* Version of this C API (bumped when a signature changes). */
int sgformer_iam_ref_api_version(void);

/* float32 tokens and outputs. */
int sgformer_iam_ref_fp32(float const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, float* seq_row, float* seq_col);

/* float16 tokens and outputs as raw IEEE half bits (numpy float16 buffers); accumulation in fp32. */
int sgformer_iam_ref_fp16(uint16_t const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, uint16_t* seq_row, uint16_t* seq_col);

/* Single-threaded specification of the two entries above (same contract, same bits, slower). */
int sgformer_iam_ref_plain_fp32(float const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, float* seq_row, float* seq_col);
int sgformer_iam_ref_plain_fp16(uint16_t const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, uint16_t* seq_row, uint16_t* seq_col);

/* Threads of the worker pool (caller included), >= 1; returns SGFORMER_IAM_ERR_ARGUMENT for < 1. */
int sgformer_iam_ref_set_threads(int threads);
int sgformer_iam_ref_threads(void);

/* Output token count T of a layout, or -1 (with a message) if the layout is invalid. */
int sgformer_iam_ref_out_tokens(int height, int width, int const* group_sizes, int const* tier_sizes, int n_tiers);

/* Message of the last failed call on this thread ("" if none). */
char const* sgformer_iam_ref_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SGFORMER_IAM_REF_H */
