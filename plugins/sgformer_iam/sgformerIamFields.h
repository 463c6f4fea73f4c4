/*
 * SGFormerIAM: identity of the op, defined once on the C++ side.
 *
 * The same strings live in pipeline/plugin_spec.py; tests/plugins/test_fields_match_spec.py parses
 * this header and checks that both lists agree. The ONNX op_type, the TensorRT plugin name and the
 * creator name are one string.
 */
#ifndef SGFORMER_IAM_FIELDS_H
#define SGFORMER_IAM_FIELDS_H

#include <cstdint>

namespace sgformer
{
namespace iam
{

constexpr char kPLUGIN_NAME[] = "SGFormerIAM";
constexpr char kPLUGIN_VERSION[] = "1";
constexpr char kPLUGIN_NAMESPACE[] = "";

// Plugin fields (ONNX node attributes), in serialization order.
constexpr char kFIELD_HEIGHT[] = "height";
constexpr char kFIELD_WIDTH[] = "width";
constexpr char kFIELD_GROUP_SIZES[] = "group_sizes";
constexpr char kFIELD_TIER_SIZES[] = "tier_sizes";
constexpr int32_t kNB_FIELDS = 4;

//! The field table: drives the creator's field list (getFieldNames), getFieldsToSerialize and createPlugin.
//! `length` 1: one int32 value; 0: an int32 array of any length. Index = IamField.
struct IamFieldSpec
{
    char const* name;
    int32_t length;
};
enum IamField : int32_t
{
    kHEIGHT_FIELD = 0,
    kWIDTH_FIELD = 1,
    kGROUP_SIZES_FIELD = 2,
    kTIER_SIZES_FIELD = 3,
};
constexpr IamFieldSpec kFIELDS[kNB_FIELDS] = {
    {kFIELD_HEIGHT, 1},
    {kFIELD_WIDTH, 1},
    {kFIELD_GROUP_SIZES, 0},
    {kFIELD_TIER_SIZES, 0},
};

// Tensor slots.
constexpr int32_t kTOKENS_IDX = 0;     // [B, N, C] float32 | float16
constexpr int32_t kIMPORTANCE_IDX = 1; // [B, N] float32
constexpr int32_t kWEIGHT_IDX = 2;     // [sum_t group_sizes[t]] float32
constexpr int32_t kBIAS_IDX = 3;       // [n_tiers] float32
constexpr int32_t kNB_INPUTS = 4;
constexpr int32_t kSEQ_ROW_IDX = 0; // [B, T, C], dtype of tokens
constexpr int32_t kSEQ_COL_IDX = 1; // [B, T, C], dtype of tokens
constexpr int32_t kNB_OUTPUTS = 2;

} // namespace iam
} // namespace sgformer

#endif // SGFORMER_IAM_FIELDS_H
