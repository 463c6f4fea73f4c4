/*
 * SGFormerIAM: CPU host reference, plain C API (usable through ctypes; no CUDA, no TensorRT).
 *
 * Same contract as the plugin; one call's arguments are one SgformerIamCall (sgformerIamCall.h).
 * The math is sgformerIamMath.h, shared with the CUDA kernel, so fp32 results are bit-identical.
 *
 * Every entry returns SGFORMER_IAM_OK (0) or an error code; sgformer_iam_ref_last_error() then
 * returns a message (thread-local, valid until the next call on the same thread).
 *
 * Threads: sgformer_iam_ref_run spreads one call over a process-wide worker pool of
 * sgformer_iam_ref_threads() threads (the caller included; default $SGFORMER_IAM_THREADS, else 1;
 * calls reading fewer than 2^17 token values stay on the calling thread;
 * change it with sgformer_iam_ref_set_threads). Idle workers block, they never spin. The result does not
 * depend on the thread count. The entries may be called from several threads at once: a call that finds
 * the pool busy runs on its own thread.
 * sgformer_iam_ref_run_plain is the single-threaded specification (std::stable_sort and scalar loops) that the
 * fast entry is tested against bit for bit.
 */
#ifndef SGFORMER_IAM_REF_H
#define SGFORMER_IAM_REF_H

#include "sgformerIamCall.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

#define SGFORMER_IAM_OK 0
#define SGFORMER_IAM_ERR_ARGUMENT 1 /* null pointer, negative batch / channels, unknown token_type */
#define SGFORMER_IAM_ERR_LAYOUT 2   /* height, width, group_sizes, tier_sizes inconsistent */
#define SGFORMER_IAM_ERR_INTERNAL 3 /* allocation failure or other exception */

/* Version of this C API (bumped when a signature changes). */
int sgformer_iam_ref_api_version(void);

/* Run the op described by `call` (host pointers; token_type float32 or float16). */
int sgformer_iam_ref_run(SgformerIamCall const* call);

/* Single-threaded specification of sgformer_iam_ref_run (same contract, same bits, slower). */
int sgformer_iam_ref_run_plain(SgformerIamCall const* call);

/* offsetof of every SgformerIamCall field, in declaration order, into offsets[0..capacity); returns the field
 * count (the ctypes mirror checks its layout against this). */
int sgformer_iam_ref_call_offsets(size_t* offsets, int capacity);

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
