/*
 * SGFormerIAM: how libsgformer_plugins.so gets its creator into a TensorRT plugin registry.
 *
 * Two paths, one state:
 *  1. IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, registry.load_library, C++ loadLibrary):
 *     TensorRT dlopens the library and calls the exported setLoggerFinder and getCreators.
 *  2. A plain dlopen (Polygraphy --plugins = ctypes.CDLL, trtexec --staticPlugins, Triton's
 *     backend-config plugins= / LD_PRELOAD, DeepStream custom-lib-path): a static initializer looks for
 *     the process's TensorRT (getPluginRegistry, found with dlsym(RTLD_DEFAULT) or in an already loaded
 *     libnvinfer.so.N / libtensorrt_rtx.so.1 opened with RTLD_NOLOAD; when none is loaded yet, as with
 *     Polygraphy --plugins, libnvinfer.so.N is dlopened by soname like a NEEDED entry would be; nothing is
 *     linked) and registers the creator there, once.
 * Path 2 runs inside every dlopen, including the one loadLibrary does before it calls getCreators. So
 * getCreators first takes back a creator that path 2 registered (deregisterCreator) and hands it to
 * loadLibrary, which then owns it (deregisterLibrary works, --setPluginsToSerialize ships it): the creator
 * is registered once whichever paths run and in whichever order.
 *
 * Path 2 registers only into full TensorRT whose major version equals the headers' (the registry's vtable
 * is the headers'). TensorRT-RTX (libtensorrt_rtx, version 1.x) has a registry with another vtable: it is
 * detected and skipped with a one-line hint to use load_library. SGFORMER_IAM_NO_AUTO_REGISTER=1 turns
 * path 2 off.
 */
#include "sgformerIamGlue.h"
#include "sgformerIamPlugin.h"

#include <NvInferVersion.h>

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#define SGFORMER_IAM_STR2(x) #x
#define SGFORMER_IAM_STR(x) SGFORMER_IAM_STR2(x)

namespace sgformer
{
namespace iam
{
namespace
{

using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*) ();
using GetInferLibVersionFn = int32_t (*)();

//! Names under which a TensorRT runtime may already be loaded (RTLD_NOLOAD matches the soname).
constexpr char const* kRUNTIME_LIBRARIES[] = {"libnvinfer.so." SGFORMER_IAM_STR(NV_TENSORRT_MAJOR), "libnvinfer.so",
    "libtensorrt_rtx.so.1", "libtensorrt_rtx.so"};
constexpr char kREGISTRY_SYMBOL[] = "getPluginRegistry";
constexpr char kVERSION_SYMBOL[] = "getInferLibVersion";
constexpr char kRTX_LIBRARY_TAG[] = "tensorrt_rtx";
constexpr char kDISABLE_ENV[] = "SGFORMER_IAM_NO_AUTO_REGISTER";
constexpr char kLOAD_LIBRARY_HINT[]
    = "load it through the registry: registry.load_library(path) (Python), IPluginRegistry::loadLibrary (C++), "
      "trtexec --dynamicPlugins";

//! What the on-load path did; guarded by gMutex, read by getCreators.
struct RegistrationState
{
    nvinfer1::IPluginRegistry* registeredIn{nullptr}; //!< registry the on-load path registered into
};

std::mutex gMutex;
RegistrationState gState;

void logLine(nvinfer1::ILogger::Severity severity, std::string const& text) noexcept
{
    try
    {
        logMessage(severity, std::string(kPLUGIN_NAME) + ": " + text);
    }
    catch (...)
    {
    }
}

//! The TensorRT runtime found in this process: its getPluginRegistry, getInferLibVersion and file.
struct Runtime
{
    GetPluginRegistryFn getRegistry{nullptr};
    GetInferLibVersionFn getVersion{nullptr};
    std::string file;
};

std::string fileOf(void* symbol)
{
    Dl_info info{};
    if (symbol != nullptr && dladdr(symbol, &info) != 0 && info.dli_fname != nullptr)
    {
        return info.dli_fname;
    }
    return "";
}

//! getInferLibVersion of the library `file` (the one defining getPluginRegistry, not the first in scope).
GetInferLibVersionFn versionBeside(std::string const& file)
{
    if (file.empty())
    {
        return nullptr;
    }
    void* handle = dlopen(file.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr)
    {
        return nullptr;
    }
    auto fn = reinterpret_cast<GetInferLibVersionFn>(dlsym(handle, kVERSION_SYMBOL));
    dlclose(handle); // drops the reference RTLD_NOLOAD took; the library stays loaded
    return fn;
}

Runtime findRuntime()
{
    Runtime rt;
    // Global scope first (libnvinfer linked by the application, or loaded with RTLD_GLOBAL).
    if (void* sym = dlsym(RTLD_DEFAULT, kREGISTRY_SYMBOL))
    {
        rt.getRegistry = reinterpret_cast<GetPluginRegistryFn>(sym);
        rt.file = fileOf(sym);
        rt.getVersion = versionBeside(rt.file);
        if (rt.getVersion == nullptr)
        {
            rt.getVersion = reinterpret_cast<GetInferLibVersionFn>(dlsym(RTLD_DEFAULT, kVERSION_SYMBOL));
        }
        return rt;
    }
    // Python (tensorrt / tensorrt_rtx wheels) loads the runtime with RTLD_LOCAL: find it by soname.
    for (char const* name : kRUNTIME_LIBRARIES)
    {
        void* handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        void* sym = dlsym(handle, kREGISTRY_SYMBOL);
        void* version = dlsym(handle, kVERSION_SYMBOL);
        dlclose(handle);
        if (sym != nullptr)
        {
            rt.getRegistry = reinterpret_cast<GetPluginRegistryFn>(sym);
            rt.getVersion = reinterpret_cast<GetInferLibVersionFn>(version);
            rt.file = fileOf(sym);
            if (rt.file.empty())
            {
                rt.file = name;
            }
            return rt;
        }
    }
    return rt;
}

//! No runtime loaded yet (Polygraphy --plugins and LD_PRELOAD load plugins before TensorRT): load
//! libnvinfer.so.<major of the headers> by soname, the way a library that links libnvinfer gets it through
//! its NEEDED entry. The later `import tensorrt` / the application's own libnvinfer.so.N then resolve to this
//! copy when it is the same file (same soname on the loader path, or the same path). Failure is silent.
Runtime loadRuntimeBySoname()
{
    Runtime rt;
    void* handle = dlopen(kRUNTIME_LIBRARIES[0], RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        return rt;
    }
    void* sym = dlsym(handle, kREGISTRY_SYMBOL);
    if (sym == nullptr)
    {
        dlclose(handle);
        return rt;
    }
    // The handle stays open: the registry holds our creator for the life of the process.
    rt.getRegistry = reinterpret_cast<GetPluginRegistryFn>(sym);
    rt.getVersion = reinterpret_cast<GetInferLibVersionFn>(dlsym(handle, kVERSION_SYMBOL));
    rt.file = fileOf(sym);
    if (rt.file.empty())
    {
        rt.file = kRUNTIME_LIBRARIES[0];
    }
    return rt;
}

//! "10.14.1" from getInferLibVersion's MAJOR*10000 + MINOR*100 + PATCH ("unknown" when < 0).
std::string versionString(int32_t version)
{
    if (version < 0)
    {
        return "of unknown version";
    }
    return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." + std::to_string(version % 100);
}

bool disabledByEnvironment()
{
    char const* v = std::getenv(kDISABLE_ENV);
    return v != nullptr && v[0] == '1';
}

//! The on-load path (static initializer below). Never throws.
void registerOnLoad() noexcept
{
    try
    {
        if (disabledByEnvironment())
        {
            trace("registerOnLoad: disabled by SGFORMER_IAM_NO_AUTO_REGISTER=1");
            return;
        }
        Runtime rt = findRuntime();
        if (rt.getRegistry == nullptr)
        {
            rt = loadRuntimeBySoname();
        }
        if (rt.getRegistry == nullptr)
        {
            trace("registerOnLoad: no TensorRT runtime in this process or on the loader path; waiting for "
                  "loadLibrary/getCreators");
            return;
        }
        int32_t const version = rt.getVersion != nullptr ? rt.getVersion() : -1;
        int32_t const major = version >= 0 ? version / 10000 : -1; // MAJOR*10000 + MINOR*100 + PATCH
        if (rt.file.find(kRTX_LIBRARY_TAG) != std::string::npos || (major >= 0 && major < 10))
        {
            logLine(nvinfer1::ILogger::Severity::kWARNING,
                "TensorRT-RTX " + versionString(version) + " (" + rt.file
                    + ") is loaded: its plugin registry differs from TensorRT's, so a plain dlopen does not register "
                    + "the creator; " + kLOAD_LIBRARY_HINT);
            return;
        }
        if (major != NV_TENSORRT_MAJOR)
        {
            logLine(nvinfer1::ILogger::Severity::kWARNING,
                "TensorRT " + versionString(version) + " ("
                    + rt.file + ") is loaded but this library was built against TensorRT "
                    + std::to_string(NV_TENSORRT_MAJOR) + " headers: not registering on dlopen; rebuild with "
                    + "-DTensorRT_ROOT=<TensorRT " + (major < 0 ? std::string("N") : std::to_string(major))
                    + " headers>");
            return;
        }
        std::lock_guard<std::mutex> lock(gMutex);
        if (gState.registeredIn != nullptr)
        {
            return;
        }
        nvinfer1::IPluginRegistry* registry = rt.getRegistry();
        if (registry == nullptr)
        {
            logLine(nvinfer1::ILogger::Severity::kWARNING,
                std::string(kREGISTRY_SYMBOL) + "() in " + rt.file + " returned null: not registering on dlopen; "
                    + kLOAD_LIBRARY_HINT);
            return;
        }
        if (registry->registerCreator(pluginCreator(), kPLUGIN_NAMESPACE))
        {
            gState.registeredIn = registry;
            trace("registerOnLoad: registered SGFormerIAM v1 in getPluginRegistry()");
        }
        else
        {
            logLine(nvinfer1::ILogger::Severity::kWARNING,
                "the plugin registry of " + rt.file + " refused the " + kPLUGIN_NAME + " v" + kPLUGIN_VERSION
                    + " creator (another library registered one already?)");
        }
    }
    catch (...)
    {
        // A static initializer must not throw: loading the library would abort the process.
    }
}

//! Runs when the library is loaded (any dlopen, LD_PRELOAD or link).
struct RegisterOnLoad
{
    RegisterOnLoad()
    {
        registerOnLoad();
    }
};
RegisterOnLoad const gRegisterOnLoad;

} // namespace
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
    sgformer::iam::setLoggerFinder(finder);
    sgformer::iam::trace(finder != nullptr ? "setLoggerFinder" : "setLoggerFinder(null)");
}

extern "C" SGFORMER_IAM_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    using namespace sgformer::iam;
    static nvinfer1::IPluginCreatorInterface* const sCreators[] = {&pluginCreator()};
    trace("getCreators");
    nbCreators = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
    std::lock_guard<std::mutex> lock(gMutex);
    if (gState.registeredIn != nullptr)
    {
        // Registered on dlopen already: take it back so that loadLibrary registers (and owns) it once.
        if (gState.registeredIn->deregisterCreator(pluginCreator()))
        {
            gState.registeredIn = nullptr;
        }
        else
        {
            nbCreators = 0; // could not take it back: it stays registered once, through the dlopen path
        }
    }
    return sCreators;
}
