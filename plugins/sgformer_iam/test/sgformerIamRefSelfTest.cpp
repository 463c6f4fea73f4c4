/*
 * ctest self-test of the SGFormerIAM host reference: hand-computed tie order on a 2x2 grid, signed
 * zeros, layout errors, and the half conversions of sgformerIamMath.h (all 2^16 patterns).
 * The full comparison against PyTorch is tests/plugins/test_iam_host_ref.py.
 */
#include "sgformerIamMath.h"
#include "sgformerIamRef.h"

#include <cstdio>
#include <cstring>
#include <string>

namespace
{

int gFailures = 0;

void check(bool ok, std::string const& what)
{
    if (!ok)
    {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        ++gFailures;
    }
}

//! A float32 call on a 1 x 2 x 2 x 1 input with two tiers (groups/tiers given), the rest filled in.
int runFp32(float const* tokens, float const* importance, float const* weight, float const* bias,
    int const* groups, int const* tiers, int nTiers, float* row, float* col)
{
    SgformerIamCall call{};
    call.token_type = SGFORMER_IAM_FLOAT32;
    call.batch = 1;
    call.height = 2;
    call.width = 2;
    call.channels = 1;
    call.n_tiers = nTiers;
    call.group_sizes = groups;
    call.tier_sizes = tiers;
    call.tokens = tokens;
    call.importance = importance;
    call.agg_weight = weight;
    call.agg_bias = bias;
    call.seq_row = row;
    call.seq_col = col;
    return sgformer_iam_ref_run(&call);
}

void checkOrderWithTies(float zeroA, float zeroB)
{
    // 2x2 grid, C = 1, token value = row-major index. All importances tie, so the row sequence is
    // tokens 0,1,2,3 and the column sequence is tokens 0,2,1,3 (column-major positions).
    float const tokens[4] = {0.f, 1.f, 2.f, 3.f};
    float const importance[4] = {zeroA, zeroB, zeroA, zeroB};
    float const weight[3] = {1.f, 10.f, 100.f}; // tier 1: k = 2, tier 2: k = 1
    float const bias[2] = {0.5f, -1.f};
    int const groups[2] = {2, 1};
    int const tiers[2] = {2, 2};
    float row[3] = {};
    float col[3] = {};
    int const status = runFp32(tokens, importance, weight, bias, groups, tiers, 2, row, col);
    check(status == SGFORMER_IAM_OK, std::string("status ok: ") + sgformer_iam_ref_last_error());
    float const wantRow[3] = {10.5f, 199.f, 299.f};
    float const wantCol[3] = {20.5f, 99.f, 299.f};
    for (int i = 0; i < 3; ++i)
    {
        check(row[i] == wantRow[i], "seq_row[" + std::to_string(i) + "]=" + std::to_string(row[i]));
        check(col[i] == wantCol[i], "seq_col[" + std::to_string(i) + "]=" + std::to_string(col[i]));
    }
}

void checkAscending()
{
    // Distinct importances: descending row-major values put token 3 first.
    float const tokens[4] = {0.f, 1.f, 2.f, 3.f};
    float const importance[4] = {4.f, 3.f, 2.f, 1.f};
    float const weight[3] = {1.f, 10.f, 100.f};
    float const bias[2] = {0.f, 0.f};
    int const groups[2] = {2, 1};
    int const tiers[2] = {2, 2};
    float row[3] = {};
    float col[3] = {};
    check(runFp32(tokens, importance, weight, bias, groups, tiers, 2, row, col) == 0,
        "status ok (ascending)");
    check(row[0] == 3.f + 20.f && row[1] == 100.f && row[2] == 0.f, "ascending seq_row");
    check(col[0] == row[0] && col[1] == row[1] && col[2] == row[2], "seq_col equals seq_row without ties");
}

void checkErrors()
{
    float dummy[8] = {};
    int const groups[2] = {2, 1};
    int const badTiers[2] = {2, 1};
    int status = runFp32(dummy, dummy, dummy, dummy, groups, badTiers, 2, dummy, dummy);
    check(status == SGFORMER_IAM_ERR_LAYOUT, "tier sum mismatch rejected");
    check(std::strstr(sgformer_iam_ref_last_error(), "tier_sizes") != nullptr, "message names tier_sizes");
    int const tiers[2] = {2, 2};
    status = runFp32(nullptr, dummy, dummy, dummy, groups, tiers, 2, dummy, dummy);
    check(status == SGFORMER_IAM_ERR_ARGUMENT, "null tokens rejected");
    check(sgformer_iam_ref_run(nullptr) == SGFORMER_IAM_ERR_ARGUMENT, "null call rejected");
    SgformerIamCall badType{};
    badType.token_type = 7;
    check(sgformer_iam_ref_run_plain(&badType) == SGFORMER_IAM_ERR_ARGUMENT, "token_type 7 rejected");
    check(std::strstr(sgformer_iam_ref_last_error(), "token_type=7") != nullptr, "message names token_type");
    check(sgformer_iam_ref_out_tokens(2, 2, groups, tiers, 2) == 3, "out_tokens of 2x2 layout");
    check(sgformer_iam_ref_out_tokens(2, 2, groups, tiers, 4) == -1, "4 tiers rejected");
}

void checkHalfConversions()
{
    using namespace sgformer::iam;
    for (uint32_t h = 0; h < 0x10000u; ++h)
    {
        bool const isNan = ((h & 0x7c00u) == 0x7c00u) && (h & 0x3ffu);
        if (isNan)
        {
            continue;
        }
        uint16_t const back = floatToHalfBits(halfBitsToFloat(static_cast<uint16_t>(h)));
        if (back != h)
        {
            check(false, "half round trip of 0x" + std::to_string(h));
            return;
        }
    }
    check(floatToHalfBits(65519.f) == 0x7bffu, "65519 -> max half");
    check(floatToHalfBits(65520.f) == 0x7c00u, "65520 -> inf");
    check(floatToHalfBits(1.f + 1.f / 2048.f) == 0x3c00u, "tie to even (down)");
    check(floatToHalfBits(1.f + 3.f / 2048.f) == 0x3c02u, "tie to even (up)");
    check(floatToHalfBits(2.9802322387695312e-08f) == 0x0000u, "2^-25 ties to zero");
    check(floatToHalfBits(4.4703483581542969e-08f) == 0x0001u, "1.5 * 2^-25 rounds to smallest subnormal");
    check(floatToHalfBits(-0.f) == 0x8000u, "-0 keeps its sign");
}

} // namespace

int main()
{
    checkOrderWithTies(0.25f, 0.25f);
    checkOrderWithTies(0.0f, -0.0f); // +0 and -0 tie
    checkAscending();
    checkErrors();
    checkHalfConversions();
    if (gFailures != 0)
    {
        std::fprintf(stderr, "%d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("sgformer_iam_ref_selftest: all checks passed\n");
    return 0;
}
