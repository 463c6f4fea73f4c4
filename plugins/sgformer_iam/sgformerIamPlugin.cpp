/*
 * SGFormerIAM: TensorRT glue. Every noexcept override that can fail runs its body through guarded()
 * (sgformerIamGlue.h), which catches, logs a message that starts with "SGFormerIAM:" and names the
 * method and the field or tensor index, and returns a failure status (the name/version/namespace
 * getters and getNbOutputs return constants). enqueue is a few lines over the launcher's workspace
 * plan (planIamEnqueue in sgformerIamKernel.h). The plugin fields are read,
 * listed and serialized from one table (kFIELDS in sgformerIamFields.h).
 */
#include "sgformerIamPlugin.h"
#include "sgformerIamGlue.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
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

// ---- Logging (declared in sgformerIamGlue.h) ----------------------------------------------------

namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

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

void reportError(char const* method, char const* what, char const* who) noexcept
{
    try
    {
        std::string where(method);
        if (who != nullptr)
        {
            where += std::string("(") + who + ")";
        }
        logMessage(ILogger::Severity::kERROR, std::string(kPLUGIN_NAME) + ": " + where + ": " + what);
    }
    catch (...)
    {
    }
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
        try
        {
            logMessage(ILogger::Severity::kINFO, std::string(kPLUGIN_NAME) + ": trace: " + method);
        }
        catch (...)
        {
        }
    }
}

SgformerIamPluginCreator& pluginCreator()
{
    static SgformerIamPluginCreator sCreator;
    return sCreator;
}

namespace
{

//! The tensor names of the input slots, for messages ("input 2 (agg_weight)").
constexpr char const* kINPUT_NAMES[kNB_INPUTS] = {"tokens", "importance", "agg_weight", "agg_bias"};

std::string inputLabel(int32_t i)
{
    return "input " + std::to_string(i) + " (" + kINPUT_NAMES[i] + ")";
}

//! "expected 4 inputs and 2 outputs, got ..." with the counts from sgformerIamFields.h.
std::string countMessage(int32_t nbInputs, int32_t nbOutputs)
{
    return "expected " + std::to_string(kNB_INPUTS) + " inputs and " + std::to_string(kNB_OUTPUTS) + " outputs, got "
        + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
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

//! Index of `name` in kFIELDS, or -1.
int32_t fieldIndex(char const* name)
{
    for (int32_t i = 0; i < kNB_FIELDS; ++i)
    {
        if (std::string(name) == kFIELDS[i].name)
        {
            return i;
        }
    }
    return -1;
}

//! "height, width, group_sizes, tier_sizes" from the table.
std::string fieldList()
{
    std::string s;
    for (int32_t i = 0; i < kNB_FIELDS; ++i)
    {
        s += (i ? ", " : "") + std::string(kFIELDS[i].name);
    }
    return s;
}

bool isKnown(int64_t d)
{
    return d >= 0;
}

} // namespace

// ---- SgformerIamPlugin ---------------------------------------------------------------------------

SgformerIamPlugin::SgformerIamPlugin(SgformerIamParams const& params, IamFieldValues fields)
    : mParams(params)
    , mFields(std::move(fields))
{
}

SgformerIamPlugin::SgformerIamPlugin(SgformerIamPlugin const& other)
    : nvinfer1::IPluginV3()
    , nvinfer1::IPluginV3OneCore()
    , nvinfer1::IPluginV3OneBuild()
    , nvinfer1::IPluginV3OneRuntime()
    , mParams(other.mParams)
    , mFields(other.mFields)
{
    // mSerialFields points into this object's vectors; it is rebuilt in getFieldsToSerialize.
}

nvinfer1::IPluginCapability* SgformerIamPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    return guarded("getCapabilityInterface", static_cast<nvinfer1::IPluginCapability*>(nullptr),
        [&]() -> nvinfer1::IPluginCapability* {
            switch (type)
            {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
            }
            fail("unknown PluginCapabilityType " + std::to_string(static_cast<int>(type)));
        });
}

nvinfer1::IPluginV3* SgformerIamPlugin::clone() noexcept
{
    return guarded("clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [&]() -> nvinfer1::IPluginV3* { return new SgformerIamPlugin(*this); });
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
        fail(inputLabel(kTOKENS_IDX) + " has shape " + dimsToString(tok) + "; expected [B, " + std::to_string(n)
            + ", C] with N = height*width = " + std::to_string(mParams.height) + "*" + std::to_string(mParams.width));
    }
    Dims const& imp = inputs[kIMPORTANCE_IDX];
    if (imp.nbDims != 2 || (isKnown(imp.d[1]) && imp.d[1] != n)
        || (isKnown(imp.d[0]) && isKnown(tok.d[0]) && imp.d[0] != tok.d[0]))
    {
        fail(inputLabel(kIMPORTANCE_IDX) + " has shape " + dimsToString(imp) + "; expected [B, " + std::to_string(n)
            + "] with the batch of input " + std::to_string(kTOKENS_IDX) + " " + dimsToString(tok));
    }
    Dims const& w = inputs[kWEIGHT_IDX];
    if (w.nbDims != 1 || (isKnown(w.d[0]) && w.d[0] != mParams.totalWeights))
    {
        fail(inputLabel(kWEIGHT_IDX) + " has shape " + dimsToString(w) + "; expected ["
            + std::to_string(mParams.totalWeights) + "] = [sum(" + kFIELD_GROUP_SIZES + ")]");
    }
    Dims const& b = inputs[kBIAS_IDX];
    if (b.nbDims != 1 || (isKnown(b.d[0]) && b.d[0] != mParams.numTiers))
    {
        fail(inputLabel(kBIAS_IDX) + " has shape " + dimsToString(b) + "; expected [" + std::to_string(mParams.numTiers)
            + "] = [number of tiers]");
    }
    if (types != nullptr)
    {
        if (types[kTOKENS_IDX] != DataType::kFLOAT && types[kTOKENS_IDX] != DataType::kHALF)
        {
            fail(inputLabel(kTOKENS_IDX) + " has type " + dataTypeName(types[kTOKENS_IDX])
                + "; expected float32 or float16");
        }
        for (int32_t i = kIMPORTANCE_IDX; i < kNB_INPUTS; ++i)
        {
            if (types[i] != DataType::kFLOAT)
            {
                fail(inputLabel(i) + " has type " + dataTypeName(types[i])
                    + "; expected float32 (importance, agg_weight and agg_bias are always float32)");
            }
        }
    }
}

int32_t SgformerIamPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded("configurePlugin", kSTATUS_FAILURE, [&]() -> int32_t {
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
    });
}

int32_t SgformerIamPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guarded("getOutputDataTypes", kSTATUS_FAILURE, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != kNB_OUTPUTS || nbInputs != kNB_INPUTS)
        {
            fail(countMessage(nbInputs, nbOutputs));
        }
        DataType const t = inputTypes[kTOKENS_IDX];
        if (t != DataType::kFLOAT && t != DataType::kHALF)
        {
            fail(inputLabel(kTOKENS_IDX) + " has type " + dataTypeName(t) + "; expected float32 or float16");
        }
        outputTypes[kSEQ_ROW_IDX] = t;
        outputTypes[kSEQ_COL_IDX] = t;
        return kSTATUS_SUCCESS;
    });
}

int32_t SgformerIamPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    return guarded("getOutputShapes", kSTATUS_FAILURE, [&]() -> int32_t {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS
            || nbShapeInputs != 0)
        {
            fail(countMessage(nbInputs, nbOutputs) + " (and " + std::to_string(nbShapeInputs)
                + " shape inputs; expected none)");
        }
        if (inputs[kTOKENS_IDX].nbDims != 3)
        {
            fail(inputLabel(kTOKENS_IDX) + " has rank " + std::to_string(inputs[kTOKENS_IDX].nbDims)
                + "; expected 3 [B, N, C]");
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
    });
}

bool SgformerIamPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded("supportsFormatCombination", false, [&]() -> bool {
        if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
            || pos >= nbInputs + nbOutputs)
        {
            fail("position " + std::to_string(pos) + " out of range for " + std::to_string(nbInputs) + " inputs and "
                + std::to_string(nbOutputs) + " outputs (" + countMessage(nbInputs, nbOutputs) + ")");
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
    });
}

int32_t SgformerIamPlugin::getNbOutputs() const noexcept
{
    trace("getNbOutputs");
    return kNB_OUTPUTS;
}

size_t SgformerIamPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return guarded("getWorkspaceSize", size_t{0}, [&]() -> size_t {
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
    });
}

int32_t SgformerIamPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded("onShapeChange", kSTATUS_FAILURE, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbOutputs != kNB_OUTPUTS)
        {
            fail(countMessage(nbInputs, nbOutputs));
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
    });
}

int32_t SgformerIamPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded("enqueue", kSTATUS_FAILURE, [&]() -> int32_t {
        Dims const tok = runtimeTokens(inputDesc, outputDesc, inputs, outputs);
        IamEnqueuePlan plan;
        if (!planIamEnqueue(mParams, mParams.batch, tok.d[0], tok.d[2], workspace != nullptr, plan))
        {
            fail(plan.error);
        }
        IamTokenType const type
            = inputDesc[kTOKENS_IDX].type == DataType::kHALF ? IamTokenType::kFLOAT16 : IamTokenType::kFLOAT32;
        cudaError_t const status = launchSgformerIam(plan.params, type, inputs[kTOKENS_IDX],
            static_cast<float const*>(inputs[kIMPORTANCE_IDX]), static_cast<float const*>(inputs[kWEIGHT_IDX]),
            static_cast<float const*>(inputs[kBIAS_IDX]), outputs[kSEQ_ROW_IDX], outputs[kSEQ_COL_IDX], workspace,
            plan.workspaceBytes, stream);
        if (status != cudaSuccess)
        {
            fail(std::string("kernel launch failed for tokens ") + dimsToString(tok) + ": " + cudaGetErrorName(status)
                + " (" + cudaGetErrorString(status) + ")");
        }
        return kSTATUS_SUCCESS;
    });
}

Dims SgformerIamPlugin::runtimeTokens(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs) const
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
    return dims[kTOKENS_IDX];
}

nvinfer1::IPluginV3* SgformerIamPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return guarded("attachToContext", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [&]() -> nvinfer1::IPluginV3* { return clone(); }); // no per-context resources
}

PluginFieldCollection const* SgformerIamPlugin::getFieldsToSerialize() noexcept
{
    return guarded("getFieldsToSerialize", static_cast<PluginFieldCollection const*>(nullptr),
        [&]() -> PluginFieldCollection const* {
            mSerialFields.clear();
            for (int32_t i = 0; i < kNB_FIELDS; ++i)
            {
                std::vector<int32_t> const& values = mFields[static_cast<size_t>(i)];
                mSerialFields.emplace_back(
                    kFIELDS[i].name, values.data(), PluginFieldType::kINT32, static_cast<int32_t>(values.size()));
            }
            mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
            mSerialCollection.fields = mSerialFields.data();
            return &mSerialCollection;
        });
}

// ---- SgformerIamPluginCreator --------------------------------------------------------------------

SgformerIamPluginCreator::SgformerIamPluginCreator()
{
    for (int32_t i = 0; i < kNB_FIELDS; ++i)
    {
        mFieldNames.emplace_back(kFIELDS[i].name, nullptr, PluginFieldType::kINT32, kFIELDS[i].length);
    }
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
    auto body = [&]() -> nvinfer1::IPluginV3* {
        if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
        {
            fail("no plugin fields given; expected " + fieldList());
        }
        IamFieldValues values;
        bool seen[kNB_FIELDS] = {};
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            int32_t const index = f.name != nullptr ? fieldIndex(f.name) : -1;
            if (index < 0)
            {
                continue; // unknown fields are ignored so a newer graph can carry informational attributes
            }
            values[static_cast<size_t>(index)] = readIntField(f);
            seen[index] = true;
        }
        for (int32_t i = 0; i < kNB_FIELDS; ++i)
        {
            if (!seen[i])
            {
                fail(std::string("required field ") + kFIELDS[i].name + " is missing");
            }
            size_t const length = values[static_cast<size_t>(i)].size();
            if (kFIELDS[i].length > 0 && length != static_cast<size_t>(kFIELDS[i].length))
            {
                fail(std::string("field ") + kFIELDS[i].name + " must hold " + std::to_string(kFIELDS[i].length)
                    + " int32 value(s), got " + std::to_string(length));
            }
        }
        std::vector<int32_t> const& groupSizes = values[kGROUP_SIZES_FIELD];
        std::vector<int32_t> const& tierSizes = values[kTIER_SIZES_FIELD];
        if (groupSizes.size() != tierSizes.size())
        {
            fail(std::string("fields ") + kFIELD_GROUP_SIZES + " (" + std::to_string(groupSizes.size())
                + " entries) and " + kFIELD_TIER_SIZES + " (" + std::to_string(tierSizes.size())
                + " entries) must have the same length");
        }
        SgformerIamParams params;
        char msg[256] = {};
        if (makeIamParams(values[kHEIGHT_FIELD][0], values[kWIDTH_FIELD][0], groupSizes.data(), tierSizes.data(),
                static_cast<int32_t>(groupSizes.size()), params, msg, sizeof(msg))
            != 0)
        {
            // makeIamParams messages carry the plugin-name prefix already; reportError adds it again.
            std::string const prefix = std::string(kPLUGIN_NAME) + ": ";
            std::string const detail(msg);
            fail(detail.compare(0, prefix.size(), prefix) == 0 ? detail.substr(prefix.size()) : detail);
        }
        return new SgformerIamPlugin(params, std::move(values));
    };
    return guarded("createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr), body, name != nullptr ? name : "");
}

} // namespace iam
} // namespace sgformer
