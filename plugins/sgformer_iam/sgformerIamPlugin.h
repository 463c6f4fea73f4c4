/*
 * SGFormerIAM: TensorRT glue (IPluginV3 + OneCore/OneBuild/OneRuntime, IPluginCreatorV3One).
 *
 * Only interfaces TensorRT 10.3 (JetPack 6) already has are used; anything newer must be guarded
 * with NV_TENSORRT_MAJOR/MINOR. No IPluginV2. The library does not link libnvinfer: it registers
 * through the exported getCreators/setLoggerFinder pair (IPluginRegistry::loadLibrary) and, on a
 * plain dlopen, through the registry it finds in the process (sgformerIamRegistration.cpp).
 * The kernels live in sgformerIamKernel.cu; the field table in sgformerIamFields.h.
 */
#ifndef SGFORMER_IAM_PLUGIN_H
#define SGFORMER_IAM_PLUGIN_H

#include "sgformerIamFields.h"
#include "sgformerIamKernel.h"
#include "sgformerIamMath.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace sgformer
{
namespace iam
{

//! Values of the plugin fields, indexed by IamField (all int32; scalars hold one value).
using IamFieldValues = std::array<std::vector<int32_t>, kNB_FIELDS>;

class SgformerIamPlugin : public nvinfer1::IPluginV3,
                          public nvinfer1::IPluginV3OneCore,
                          public nvinfer1::IPluginV3OneBuild,
                          public nvinfer1::IPluginV3OneRuntime
{
public:
    //! `params` must come from makeIamParams on `fields` (the creator validates the fields).
    SgformerIamPlugin(SgformerIamParams const& params, IamFieldValues fields);
    SgformerIamPlugin(SgformerIamPlugin const& other);
    SgformerIamPlugin& operator=(SgformerIamPlugin const&) = delete;
    ~SgformerIamPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Throws std::invalid_argument naming the tensor index if the shapes do not fit the fields.
    void checkShapes(nvinfer1::Dims const* inputs, nvinfer1::DataType const* types, int32_t nbInputs) const;
    //! enqueue's inputs checked (non-null descriptors and pointers, checkShapes); the runtime tokens dims.
    nvinfer1::Dims runtimeTokens(nvinfer1::PluginTensorDesc const* inputDesc,
        nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs) const;

    SgformerIamParams mParams;          //!< static layout; batch = the profile's max batch once configurePlugin
                                        //!< ran (0 in a deserialized plugin); enqueue copies it and sets the
                                        //!< runtime batch and channels
    IamFieldValues mFields;             //!< the fields as given (serialized as they came in)
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

class SgformerIamPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SgformerIamPluginCreator();
    ~SgformerIamPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace iam
} // namespace sgformer

#endif // SGFORMER_IAM_PLUGIN_H
