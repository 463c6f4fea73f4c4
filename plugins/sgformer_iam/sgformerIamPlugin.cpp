/*
 * SGFormerIAM: TensorRT glue. Every noexcept override catches, logs a message that starts with
 * "SGFormerIAM:" and names the field or tensor index, and returns a failure status.
 */
#include "sgformerIamPlugin.h"

#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace sgformer
{
namespace iam
{
namespace
{

constexpr int32_t kSTATUS_SUCCESS = 0;
constexpr int32_t kSTATUS_FAILURE = -1;

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

void logMessage(ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, message.c_str());
        }
        else
        {
            std::fprintf(stderr, "%s\n", message.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw out of a noexcept override.
    }
}

//! Log an exception caught in `method`; the message starts with the plugin name.
void reportError(char const* method, char const* what) noexcept
{
    try
    {
        logMessage(ILogger::Severity::kERROR, std::string(kPLUGIN_NAME) + ": " + method + ": " + what);
    }
    catch (...)
    {
    }
}

void reportUnknown(char const* method) noexcept
{
    reportError(method, "unknown exception");
}

//! With SGFORMER_IAM_TRACE=1 in the environment, every override logs its name (kINFO) once it is called;
//! used to record which methods a TensorRT flavour calls (README "Measured").
void trace(char const* method) noexcept
{
    static bool const enabled = [] {
        char const* v = std::getenv("SGFORMER_IAM_TRACE");
        return v != nullptr && v[0] == '1';
    }();
    if (enabled)
    {
        logMessage(ILogger::Severity::kINFO, std::string(kPLUGIN_NAME) + ": trace: " + method);
    }
}

[[noreturn]] void fail(std::string const& message)
{
    throw std::invalid_argument(message);
}

std::string dimsToString(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

char const* dataTypeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT32: return "int32";
    case DataType::kINT8: return "int8";
    case DataType::kBOOL: return "bool";
    default: return "other";
    }
}

//! int32 values of a field given as kINT32 (what the ONNX parser produces) or kINT64.
std::vector<int32_t> readIntField(PluginField const& field)
{
    if (field.length < 0 || (field.length > 0 && field.data == nullptr))
    {
        fail(std::string("field ") + field.name + " has no data (length " + std::to_string(field.length) + ")");
    }
    std::vector<int32_t> values(static_cast<size_t>(field.length));
    if (field.type == PluginFieldType::kINT32)
    {
        auto const* p = static_cast<int32_t const*>(field.data);
        values.assign(p, p + field.length);
    }
    else if (field.type == PluginFieldType::kINT64)
    {
        auto const* p = static_cast<int64_t const*>(field.data);
        for (int32_t i = 0; i < field.length; ++i)
        {
            if (p[i] < INT32_MIN || p[i] > INT32_MAX)
            {
                fail(std::string("field ") + field.name + "[" + std::to_string(i) + "]=" + std::to_string(p[i])
                    + " does not fit int32");
            }
            values[static_cast<size_t>(i)] = static_cast<int32_t>(p[i]);
        }
    }
    else
    {
        fail(std::string("field ") + field.name + " has PluginFieldType " + std::to_string(static_cast<int>(field.type))
            + "; expected kINT32 (or kINT64)");
    }
    return values;
}

bool isKnown(int64_t d)
{
    return d >= 0;
}

} // namespace

// ---- SgformerIamPlugin ---------------------------------------------------------------------------

SgformerIamPlugin::SgformerIamPlugin(
    SgformerIamParams const& params, std::vector<int32_t> groupSizes, std::vector<int32_t> tierSizes)
    : mParams(params)
    , mGroupSizes(std::move(groupSizes))
    , mTierSizes(std::move(tierSizes))
{
}

SgformerIamPlugin::SgformerIamPlugin(SgformerIamPlugin const& other)
    : nvinfer1::IPluginV3()
    , nvinfer1::IPluginV3OneCore()
    , nvinfer1::IPluginV3OneBuild()
    , nvinfer1::IPluginV3OneRuntime()
    , mParams(other.mParams)
    , mGroupSizes(other.mGroupSizes)
    , mTierSizes(other.mTierSizes)
{
    // mSerialFields points into this object's vectors; it is rebuilt in getFieldsToSerialize.
}

nvinfer1::IPluginCapability* SgformerIamPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    trace("getCapabilityInterface");
    try
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        fail("unknown PluginCapabilityType " + std::to_string(static_cast<int>(type)));
    }
    catch (std::exception const& e)
    {
        reportError("getCapabilityInterface", e.what());
    }
    catch (...)
    {
        reportUnknown("getCapabilityInterface");
    }
    return nullptr;
}

nvinfer1::IPluginV3* SgformerIamPlugin::clone() noexcept
{
    trace("clone");
    try
    {
        return new SgformerIamPlugin(*this);
    }
    catch (std::exception const& e)
    {
        reportError("clone", e.what());
    }
    catch (...)
    {
        reportUnknown("clone");
    }
    return nullptr;
}

char const* SgformerIamPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SgformerIamPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SgformerIamPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

void SgformerIamPlugin::checkShapes(Dims const* inputs, DataType const* types, int32_t nbInputs) const
{
    if (nbInputs != kNB_INPUTS)
    {
        fail("expected " + std::to_string(kNB_INPUTS) + " inputs (tokens, importance, agg_weight, agg_bias), got "
            + std::to_string(nbInputs));
    }
    int64_t const n = mParams.numTokens;
    Dims const& tok = inputs[kTOKENS_IDX];
    if (tok.nbDims != 3 || (isKnown(tok.d[1]) && tok.d[1] != n) || tok.d[2] == 0)
    {
        fail("input 0 (tokens) has shape " + dimsToString(tok) + "; expected [B, " + std::to_string(n)
            + ", C] with N = height*width = " + std::to_string(mParams.height) + "*" + std::to_string(mParams.width));
    }
    Dims const& imp = inputs[kIMPORTANCE_IDX];
    if (imp.nbDims != 2 || (isKnown(imp.d[1]) && imp.d[1] != n)
        || (isKnown(imp.d[0]) && isKnown(tok.d[0]) && imp.d[0] != tok.d[0]))
    {
        fail("input 1 (importance) has shape " + dimsToString(imp) + "; expected [B, " + std::to_string(n)
            + "] with the batch of input 0 " + dimsToString(tok));
    }
    Dims const& w = inputs[kWEIGHT_IDX];
    if (w.nbDims != 1 || (isKnown(w.d[0]) && w.d[0] != mParams.totalWeights))
    {
        fail("input 2 (agg_weight) has shape " + dimsToString(w) + "; expected [" + std::to_string(mParams.totalWeights)
            + "] = [sum(group_sizes)]");
    }
    Dims const& b = inputs[kBIAS_IDX];
    if (b.nbDims != 1 || (isKnown(b.d[0]) && b.d[0] != mParams.numTiers))
    {
        fail("input 3 (agg_bias) has shape " + dimsToString(b) + "; expected [" + std::to_string(mParams.numTiers)
            + "] = [number of tiers]");
    }
    if (types != nullptr)
    {
        if (types[kTOKENS_IDX] != DataType::kFLOAT && types[kTOKENS_IDX] != DataType::kHALF)
        {
            fail(std::string("input 0 (tokens) has type ") + dataTypeName(types[kTOKENS_IDX])
                + "; expected float32 or float16");
        }
        for (int32_t i = kIMPORTANCE_IDX; i < kNB_INPUTS; ++i)
        {
            if (types[i] != DataType::kFLOAT)
            {
                fail("input " + std::to_string(i) + " has type " + dataTypeName(types[i])
                    + "; expected float32 (importance, agg_weight and agg_bias are always float32)");
            }
        }
    }
}

int32_t SgformerIamPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    trace("configurePlugin");
    try
    {
        if (in == nullptr || out == nullptr || nbOutputs != kNB_OUTPUTS)
        {
            fail("expected 4 inputs and 2 outputs, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        }
        Dims dims[kNB_INPUTS];
        DataType types[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS && i < nbInputs; ++i)
        {
            dims[i] = in[i].desc.dims;
            types[i] = in[i].desc.type;
        }
        checkShapes(dims, types, nbInputs);
        // Reject at build time what the kernel cannot run (instead of failing every enqueue).
        int64_t const maxBatch = in[kTOKENS_IDX].max.d[0];
        int64_t const maxChannels = in[kTOKENS_IDX].max.d[2];
        int64_t const n = mParams.numTokens;
        if (!isKnown(maxBatch) || maxBatch > kMAX_BATCH)
        {
            fail("input 0 (tokens) has profile max batch " + std::to_string(maxBatch) + "; the kernel supports 0.."
                + std::to_string(kMAX_BATCH) + " (lower the optimization profile's max batch)");
        }
        if (2 * maxBatch * n >= (int64_t{1} << 31))
        {
            fail("input 0 (tokens) has profile max batch " + std::to_string(maxBatch) + " and N = " + std::to_string(n)
                + ": 2*B*N = " + std::to_string(2 * maxBatch * n) + " must stay below 2^31 (lower the max batch to "
                + std::to_string(((int64_t{1} << 31) - 1) / (2 * n)) + ")");
        }
        if (!isKnown(maxChannels) || maxChannels > INT32_MAX)
        {
            fail("input 0 (tokens) has profile max channels " + std::to_string(maxChannels) + "; expected 1.."
                + std::to_string(INT32_MAX));
        }
        // The batch the workspace is sized for (getWorkspaceSize); enqueue checks the runtime batch against it.
        // A plugin deserialized for the runtime keeps 0 here (TensorRT allocates the build-time size).
        mParams.batch = static_cast<int32_t>(maxBatch);
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        reportError("configurePlugin", e.what());
    }
    catch (...)
    {
        reportUnknown("configurePlugin");
    }
    return kSTATUS_FAILURE;
}

int32_t SgformerIamPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    trace("getOutputDataTypes");
    try
    {
        if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != kNB_OUTPUTS || nbInputs != kNB_INPUTS)
        {
            fail("expected 4 inputs and 2 outputs, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        }
        DataType const t = inputTypes[kTOKENS_IDX];
        if (t != DataType::kFLOAT && t != DataType::kHALF)
        {
            fail(std::string("input 0 (tokens) has type ") + dataTypeName(t) + "; expected float32 or float16");
        }
        outputTypes[kSEQ_ROW_IDX] = t;
        outputTypes[kSEQ_COL_IDX] = t;
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputDataTypes", e.what());
    }
    catch (...)
    {
        reportUnknown("getOutputDataTypes");
    }
    return kSTATUS_FAILURE;
}

int32_t SgformerIamPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    trace("getOutputShapes");
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS
            || nbShapeInputs != 0)
        {
            fail("expected 4 inputs, 2 outputs and no shape inputs, got " + std::to_string(nbInputs) + ", "
                + std::to_string(nbOutputs) + " and " + std::to_string(nbShapeInputs));
        }
        if (inputs[kTOKENS_IDX].nbDims != 3)
        {
            fail("input 0 (tokens) has rank " + std::to_string(inputs[kTOKENS_IDX].nbDims) + "; expected 3 [B, N, C]");
        }
        // [B, T, C]: B and C are taken over from tokens, T is fixed by the fields. Only exprBuilder.constant
        // is called (TensorRT-RTX implements the expression classes; keep the calls into them minimal).
        nvinfer1::IDimensionExpr const* t = exprBuilder.constant(mParams.outTokens);
        if (t == nullptr)
        {
            fail("IExprBuilder::constant(" + std::to_string(mParams.outTokens) + ") returned null");
        }
        for (int32_t o = 0; o < kNB_OUTPUTS; ++o)
        {
            outputs[o].nbDims = 3;
            outputs[o].d[0] = inputs[kTOKENS_IDX].d[0];
            outputs[o].d[1] = t;
            outputs[o].d[2] = inputs[kTOKENS_IDX].d[2];
        }
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputShapes", e.what());
    }
    catch (...)
    {
        reportUnknown("getOutputShapes");
    }
    return kSTATUS_FAILURE;
}

bool SgformerIamPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    trace("supportsFormatCombination");
    try
    {
        if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
            || pos >= nbInputs + nbOutputs)
        {
            fail("position " + std::to_string(pos) + " out of range for " + std::to_string(nbInputs) + " inputs and "
                + std::to_string(nbOutputs) + " outputs");
        }
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        if (pos == kTOKENS_IDX)
        {
            return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        }
        if (pos < kNB_INPUTS)
        {
            return desc.type == DataType::kFLOAT;
        }
        return desc.type == inOut[kTOKENS_IDX].desc.type; // outputs follow tokens
    }
    catch (std::exception const& e)
    {
        reportError("supportsFormatCombination", e.what());
    }
    catch (...)
    {
        reportUnknown("supportsFormatCombination");
    }
    return false;
}

int32_t SgformerIamPlugin::getNbOutputs() const noexcept
{
    trace("getNbOutputs");
    return kNB_OUTPUTS;
}

size_t SgformerIamPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    trace("getWorkspaceSize");
    try
    {
        if (inputs == nullptr || nbInputs != kNB_INPUTS)
        {
            fail("expected 4 inputs, got " + std::to_string(nbInputs));
        }
        int64_t batch = inputs[kTOKENS_IDX].max.d[0];
        if (!isKnown(batch))
        {
            batch = inputs[kTOKENS_IDX].desc.dims.d[0];
        }
        if (!isKnown(batch) || batch > kMAX_BATCH)
        {
            fail("input 0 (tokens) has max batch " + std::to_string(batch) + "; expected 0.."
                + std::to_string(kMAX_BATCH));
        }
        // Host arithmetic only (a CPU-only builder asks for it); covers both kernel paths where the GPU
        // could need either (sgformerIamKernel.h).
        return sgformerIamWorkspaceSize(static_cast<int32_t>(batch), mParams.numTokens);
    }
    catch (std::exception const& e)
    {
        reportError("getWorkspaceSize", e.what());
    }
    catch (...)
    {
        reportUnknown("getWorkspaceSize");
    }
    return 0;
}

int32_t SgformerIamPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    trace("onShapeChange");
    try
    {
        if (in == nullptr || out == nullptr || nbOutputs != kNB_OUTPUTS)
        {
            fail("expected 4 inputs and 2 outputs, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        }
        Dims dims[kNB_INPUTS];
        DataType types[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS && i < nbInputs; ++i)
        {
            dims[i] = in[i].dims;
            types[i] = in[i].type;
        }
        checkShapes(dims, types, nbInputs);
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        reportError("onShapeChange", e.what());
    }
    catch (...)
    {
        reportUnknown("onShapeChange");
    }
    return kSTATUS_FAILURE;
}

int32_t SgformerIamPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    trace("enqueue");
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            fail("null tensor descriptors or pointers");
        }
        Dims dims[kNB_INPUTS];
        DataType types[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            dims[i] = inputDesc[i].dims;
            types[i] = inputDesc[i].type;
        }
        checkShapes(dims, types, kNB_INPUTS);
        Dims const& tok = dims[kTOKENS_IDX];
        if (tok.d[0] < 0 || tok.d[0] > kMAX_BATCH || tok.d[2] <= 0 || tok.d[2] > INT32_MAX)
        {
            fail("input 0 (tokens) has runtime shape " + dimsToString(tok) + "; expected B in 0.."
                + std::to_string(kMAX_BATCH) + " and C > 0");
        }
        SgformerIamParams params = mParams;
        params.batch = static_cast<int32_t>(tok.d[0]);
        params.channels = static_cast<int32_t>(tok.d[2]);
        IamTokenType const tokenType
            = types[kTOKENS_IDX] == DataType::kHALF ? IamTokenType::kFLOAT16 : IamTokenType::kFLOAT32;
        // The workspace TensorRT allocated is getWorkspaceSize at the profile's max batch. configurePlugin
        // recorded that batch in mParams.batch (build phase); a deserialized plugin has 0 there and
        // TensorRT allocated the build-time size, which is >= the size at any runtime batch (monotone).
        // The launcher checks this against the bytes its path really uses on this GPU.
        int32_t const sizedBatch = mParams.batch > 0 ? mParams.batch : params.batch;
        if (params.batch > sizedBatch)
        {
            fail("input 0 (tokens) has runtime batch " + std::to_string(params.batch) + " above the profile's max "
                + std::to_string(sizedBatch) + " that the workspace was sized for");
        }
        size_t const workspaceBytes = sgformerIamWorkspaceSize(sizedBatch, params.numTokens);
        if (workspaceBytes > 0 && workspace == nullptr && params.batch > 0)
        {
            fail("workspace is null but " + std::to_string(workspaceBytes) + " bytes were requested");
        }
        cudaError_t const status = launchSgformerIam(params, tokenType, inputs[kTOKENS_IDX],
            static_cast<float const*>(inputs[kIMPORTANCE_IDX]), static_cast<float const*>(inputs[kWEIGHT_IDX]),
            static_cast<float const*>(inputs[kBIAS_IDX]), outputs[kSEQ_ROW_IDX], outputs[kSEQ_COL_IDX], workspace,
            workspaceBytes, stream);
        if (status != cudaSuccess)
        {
            fail(std::string("kernel launch failed for tokens ") + dimsToString(tok) + ": " + cudaGetErrorName(status)
                + " (" + cudaGetErrorString(status) + ")");
        }
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        reportError("enqueue", e.what());
    }
    catch (...)
    {
        reportUnknown("enqueue");
    }
    return kSTATUS_FAILURE;
}

nvinfer1::IPluginV3* SgformerIamPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    trace("attachToContext");
    return clone(); // no per-context resources
}

PluginFieldCollection const* SgformerIamPlugin::getFieldsToSerialize() noexcept
{
    trace("getFieldsToSerialize");
    try
    {
        mSerialFields.clear();
        mSerialFields.emplace_back(kFIELD_HEIGHT, &mParams.height, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFIELD_WIDTH, &mParams.width, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(
            kFIELD_GROUP_SIZES, mGroupSizes.data(), PluginFieldType::kINT32, static_cast<int32_t>(mGroupSizes.size()));
        mSerialFields.emplace_back(
            kFIELD_TIER_SIZES, mTierSizes.data(), PluginFieldType::kINT32, static_cast<int32_t>(mTierSizes.size()));
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }
    catch (std::exception const& e)
    {
        reportError("getFieldsToSerialize", e.what());
    }
    catch (...)
    {
        reportUnknown("getFieldsToSerialize");
    }
    return nullptr;
}

// ---- SgformerIamPluginCreator --------------------------------------------------------------------

SgformerIamPluginCreator::SgformerIamPluginCreator()
{
    mFieldNames.emplace_back(kFIELD_HEIGHT, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFIELD_WIDTH, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFIELD_GROUP_SIZES, nullptr, PluginFieldType::kINT32, 0);
    mFieldNames.emplace_back(kFIELD_TIER_SIZES, nullptr, PluginFieldType::kINT32, 0);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* SgformerIamPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SgformerIamPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SgformerIamPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* SgformerIamPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* SgformerIamPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    trace("createPlugin");
    try
    {
        if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
        {
            fail("no plugin fields given; expected height, width, group_sizes, tier_sizes");
        }
        std::vector<int32_t> height;
        std::vector<int32_t> width;
        std::vector<int32_t> groupSizes;
        std::vector<int32_t> tierSizes;
        bool seen[kNB_FIELDS] = {false, false, false, false};
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr)
            {
                continue;
            }
            std::string const fieldName(f.name);
            if (fieldName == kFIELD_HEIGHT)
            {
                height = readIntField(f);
                seen[0] = true;
            }
            else if (fieldName == kFIELD_WIDTH)
            {
                width = readIntField(f);
                seen[1] = true;
            }
            else if (fieldName == kFIELD_GROUP_SIZES)
            {
                groupSizes = readIntField(f);
                seen[2] = true;
            }
            else if (fieldName == kFIELD_TIER_SIZES)
            {
                tierSizes = readIntField(f);
                seen[3] = true;
            }
            // Unknown fields are ignored so a newer graph can carry informational attributes.
        }
        char const* const names[kNB_FIELDS] = {kFIELD_HEIGHT, kFIELD_WIDTH, kFIELD_GROUP_SIZES, kFIELD_TIER_SIZES};
        for (int32_t i = 0; i < kNB_FIELDS; ++i)
        {
            if (!seen[i])
            {
                fail(std::string("required field ") + names[i] + " is missing");
            }
        }
        if (height.size() != 1 || width.size() != 1)
        {
            fail("fields height and width must hold one int32 each, got " + std::to_string(height.size()) + " and "
                + std::to_string(width.size()));
        }
        if (groupSizes.size() != tierSizes.size())
        {
            fail("fields group_sizes (" + std::to_string(groupSizes.size()) + " entries) and tier_sizes ("
                + std::to_string(tierSizes.size()) + " entries) must have the same length");
        }
        SgformerIamParams params;
        char msg[256] = {};
        if (makeIamParams(height[0], width[0], groupSizes.data(), tierSizes.data(),
                static_cast<int32_t>(groupSizes.size()), params, msg, sizeof(msg))
            != 0)
        {
            // makeIamParams messages carry the plugin-name prefix already; reportError adds it again.
            std::string const prefix = std::string(kPLUGIN_NAME) + ": ";
            std::string const detail(msg);
            fail(detail.compare(0, prefix.size(), prefix) == 0 ? detail.substr(prefix.size()) : detail);
        }
        return new SgformerIamPlugin(params, std::move(groupSizes), std::move(tierSizes));
    }
    catch (std::exception const& e)
    {
        std::string const where = std::string("createPlugin(") + (name != nullptr ? name : "") + ")";
        reportError(where.c_str(), e.what());
    }
    catch (...)
    {
        reportUnknown("createPlugin");
    }
    return nullptr;
}

} // namespace iam
} // namespace sgformer

// ---- Library entry points (IPluginRegistry::loadLibrary) -----------------------------------------

#if defined(_WIN32)
#define SGFORMER_IAM_EXPORT __declspec(dllexport)
#else
#define SGFORMER_IAM_EXPORT __attribute__((visibility("default")))
#endif

extern "C" SGFORMER_IAM_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    sgformer::iam::gLoggerFinder.store(finder);
    sgformer::iam::trace(finder != nullptr ? "setLoggerFinder" : "setLoggerFinder(null)");
}

extern "C" SGFORMER_IAM_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static sgformer::iam::SgformerIamPluginCreator sCreator;
    static nvinfer1::IPluginCreatorInterface* const sCreators[] = {&sCreator};
    nbCreators = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
    return sCreators;
}
