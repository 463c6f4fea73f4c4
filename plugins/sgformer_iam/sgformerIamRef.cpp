/*
 * SGFormerIAM: CPU host reference. Loops over the math of sgformerIamMath.h; built without CUDA.
 */
#include "sgformerIamRef.h"

#include "sgformerIamMath.h"

#include <algorithm>
#include <exception>
#include <numeric>
#include <string>
#include <vector>

namespace
{

using sgformer::iam::SgformerIamParams;

thread_local std::string tLastError;

int32_t setError(int32_t code, std::string message)
{
    tLastError = std::move(message);
    return code;
}

struct Fp32Tokens
{
    using Storage = float;
    static float load(float v)
    {
        return v;
    }
    static float store(float v)
    {
        return v;
    }
};

struct Fp16Tokens
{
    using Storage = uint16_t;
    static float load(uint16_t v)
    {
        return sgformer::iam::halfBitsToFloat(v);
    }
    static uint16_t store(float v)
    {
        return sgformer::iam::floatToHalfBits(v);
    }
};

int32_t checkArguments(void const* tokens, float const* importance, float const* weight, float const* bias,
    int32_t batch, int32_t height, int32_t width, int32_t channels, int32_t const* groupSizes,
    int32_t const* tierSizes, int32_t numTiers, void const* seqRow, void const* seqCol, SgformerIamParams& params)
{
    char msg[256] = {};
    if (sgformer::iam::makeIamParams(height, width, groupSizes, tierSizes, numTiers, params, msg, sizeof(msg)) != 0)
    {
        return setError(SGFORMER_IAM_ERR_LAYOUT, msg);
    }
    if (batch < 0 || channels <= 0)
    {
        return setError(SGFORMER_IAM_ERR_ARGUMENT,
            "SGFormerIAM: batch=" + std::to_string(batch) + " must be >= 0 and channels=" + std::to_string(channels)
                + " must be > 0");
    }
    if (batch > 0
        && (tokens == nullptr || importance == nullptr || weight == nullptr || bias == nullptr || seqRow == nullptr
            || seqCol == nullptr))
    {
        return setError(SGFORMER_IAM_ERR_ARGUMENT,
            "SGFormerIAM: null pointer among tokens (input 0), importance (1), agg_weight (2), agg_bias (3), "
            "seq_row (output 0), seq_col (output 1)");
    }
    params.batch = batch;
    params.channels = channels;
    return SGFORMER_IAM_OK;
}

//! One sequence (row- or column-major) of one batch row.
template <typename Tokens>
void aggregateSequence(SgformerIamParams const& p, typename Tokens::Storage const* tokens, float const* importance,
    float const* weight, float const* bias, bool isColumn, std::vector<uint32_t>& keys, std::vector<int32_t>& order,
    std::vector<float>& acc, typename Tokens::Storage* out)
{
    using namespace sgformer::iam;
    int32_t const n = p.numTokens;
    int32_t const c = p.channels;
    for (int32_t i = 0; i < n; ++i)
    {
        keys[i] = importanceSortKey(importance[sequenceToToken(i, isColumn, p.height, p.width)]);
    }
    std::iota(order.begin(), order.end(), 0);
    // Stable: equal keys keep ascending sequence position, i.e. the lower index wins the tie.
    std::stable_sort(order.begin(), order.end(), [&keys](int32_t a, int32_t b) { return keys[a] < keys[b]; });

    for (int32_t t = 0; t < p.outTokens; ++t)
    {
        int32_t const tier = tierOfOutput(p, t);
        int32_t const first = groupFirstSorted(p, tier, t);
        float const* w = weight + p.weightOffset[tier];
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int32_t j = 0; j < p.groupSizes[tier]; ++j)
        {
            int32_t const token = sequenceToToken(order[first + j], isColumn, p.height, p.width);
            typename Tokens::Storage const* x = tokens + static_cast<size_t>(token) * c;
            for (int32_t ch = 0; ch < c; ++ch)
            {
                acc[ch] = accumulateStep(acc[ch], w[j], Tokens::load(x[ch]));
            }
        }
        typename Tokens::Storage* y = out + static_cast<size_t>(t) * c;
        for (int32_t ch = 0; ch < c; ++ch)
        {
            y[ch] = Tokens::store(finishGroup(acc[ch], bias[tier]));
        }
    }
}

template <typename Tokens>
int32_t runReference(typename Tokens::Storage const* tokens, float const* importance, float const* weight,
    float const* bias, int32_t batch, int32_t height, int32_t width, int32_t channels, int32_t const* groupSizes,
    int32_t const* tierSizes, int32_t numTiers, typename Tokens::Storage* seqRow, typename Tokens::Storage* seqCol)
{
    try
    {
        SgformerIamParams p;
        int32_t const status = checkArguments(tokens, importance, weight, bias, batch, height, width, channels,
            groupSizes, tierSizes, numTiers, seqRow, seqCol, p);
        if (status != SGFORMER_IAM_OK)
        {
            return status;
        }
        std::vector<uint32_t> keys(p.numTokens);
        std::vector<int32_t> order(p.numTokens);
        std::vector<float> acc(p.channels);
        size_t const inStride = static_cast<size_t>(p.numTokens) * p.channels;
        size_t const outStride = static_cast<size_t>(p.outTokens) * p.channels;
        for (int32_t b = 0; b < p.batch; ++b)
        {
            auto const* tok = tokens + b * inStride;
            float const* imp = importance + static_cast<size_t>(b) * p.numTokens;
            aggregateSequence<Tokens>(p, tok, imp, weight, bias, false, keys, order, acc, seqRow + b * outStride);
            aggregateSequence<Tokens>(p, tok, imp, weight, bias, true, keys, order, acc, seqCol + b * outStride);
        }
        tLastError.clear();
        return SGFORMER_IAM_OK;
    }
    catch (std::exception const& e)
    {
        return setError(SGFORMER_IAM_ERR_INTERNAL, std::string("SGFormerIAM: host reference failed: ") + e.what());
    }
    catch (...)
    {
        return setError(SGFORMER_IAM_ERR_INTERNAL, "SGFormerIAM: host reference failed with an unknown exception");
    }
}

} // namespace

extern "C"
{

int sgformer_iam_ref_api_version(void)
{
    return 1;
}

int sgformer_iam_ref_fp32(float const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, float* seq_row, float* seq_col)
{
    return runReference<Fp32Tokens>(tokens, importance, agg_weight, agg_bias, batch, height, width, channels,
        group_sizes, tier_sizes, n_tiers, seq_row, seq_col);
}

int sgformer_iam_ref_fp16(uint16_t const* tokens, float const* importance, float const* agg_weight,
    float const* agg_bias, int batch, int height, int width, int channels, int const* group_sizes,
    int const* tier_sizes, int n_tiers, uint16_t* seq_row, uint16_t* seq_col)
{
    return runReference<Fp16Tokens>(tokens, importance, agg_weight, agg_bias, batch, height, width, channels,
        group_sizes, tier_sizes, n_tiers, seq_row, seq_col);
}

int sgformer_iam_ref_out_tokens(int height, int width, int const* group_sizes, int const* tier_sizes, int n_tiers)
{
    SgformerIamParams p;
    char msg[256] = {};
    if (sgformer::iam::makeIamParams(height, width, group_sizes, tier_sizes, n_tiers, p, msg, sizeof(msg)) != 0)
    {
        setError(SGFORMER_IAM_ERR_LAYOUT, msg);
        return -1;
    }
    return p.outTokens;
}

char const* sgformer_iam_ref_last_error(void)
{
    return tLastError.c_str();
}

} // extern "C"
