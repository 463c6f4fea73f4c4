/*
 * SGFormerIAM: helpers shared by the TensorRT glue (sgformerIamPlugin.cpp) and the library entry points
 * (sgformerIamRegistration.cpp). Internal to libsgformer_plugins.so: nothing here is exported.
 *
 * - logging through the ILoggerFinder that IPluginRegistry::loadLibrary hands over (stderr without one);
 * - guarded(): the one try/catch tail of every noexcept override;
 * - the creator singleton that both registration paths (on dlopen and through getCreators) hand out.
 */
#ifndef SGFORMER_IAM_GLUE_H
#define SGFORMER_IAM_GLUE_H

#include <NvInferRuntime.h>

#include <exception>
#include <string>

namespace sgformer
{
namespace iam
{

class SgformerIamPluginCreator;

//! Status values returned by the int32_t overrides.
constexpr int32_t kSTATUS_SUCCESS = 0;
constexpr int32_t kSTATUS_FAILURE = -1;

//! Logger finder from setLoggerFinder (null until TensorRT calls it).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log `message` through TensorRT's logger, or to stderr when there is none. Never throws.
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

//! Log "SGFormerIAM: <method>[(<who>)]: <what>" at kERROR. Never throws.
void reportError(char const* method, char const* what, char const* who = nullptr) noexcept;

//! With SGFORMER_IAM_TRACE=1 in the environment, log "SGFormerIAM: trace: <method>" (kINFO).
void trace(char const* method) noexcept;

//! Run `body` for the noexcept override `method`: trace it, return body's result, or log the exception
//! (message naming the method and, for createPlugin, the node `who`) and return `onError`.
template <typename R, typename Body>
R guarded(char const* method, R onError, Body&& body, char const* who = nullptr) noexcept
{
    trace(method);
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        reportError(method, e.what(), who);
    }
    catch (...)
    {
        reportError(method, "unknown exception", who);
    }
    return onError;
}

//! The library's one creator (both registration paths hand out this object).
SgformerIamPluginCreator& pluginCreator();

} // namespace iam
} // namespace sgformer

#endif // SGFORMER_IAM_GLUE_H
