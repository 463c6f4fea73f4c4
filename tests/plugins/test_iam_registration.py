"""libsgformer_plugins.so registers its creator on a plain dlopen, once, and never into TensorRT-RTX.

Tools such as Polygraphy (``--plugins`` = ``ctypes.CDLL``), ``trtexec --staticPlugins``, Triton
(``--backend-config=tensorrt,plugins=``, ``LD_PRELOAD``) and DeepStream (``custom-lib-path``) only dlopen the
library. Full TensorRT is not installed here, so a stand-in "libnvinfer" is compiled in the test against the
same TensorRT headers as the plugin (third_party/tensorrt/include): its ``getPluginRegistry`` returns a
registry that records every registerCreator/deregisterCreator call, and its ``loadLibrary`` does what
TensorRT's does (dlopen, setLoggerFinder, getCreators, registerCreator for each; duplicates are refused).
Every scenario runs in a fresh child process, because a library's static initializer runs once per process.
TensorRT-RTX (pip wheel) is the real registry for the "skip" and ``load_library`` cases.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.iam import spec as plugin_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
TRT_HEADERS = REPO_ROOT / "third_party" / "tensorrt" / "include"
TRT10_VERSION = 101401  # getInferLibVersion of TensorRT 10.14.1: MAJOR*10000 + MINOR*100 + PATCH

STANDIN_SOURCE = r"""
// Stand-in for libnvinfer: getPluginRegistry() returns a registry that records calls (tests only).
#include <NvInferRuntime.h>
#include <dlfcn.h>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
struct Entry
{
    IPluginCreatorInterface* creator;
    std::string name, version, ns;
};

std::string gEvents; // one line per call: "<event> <name> <version> [<ns>]"

class RecordingRegistry final : public IPluginRegistry
{
public:
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        gEvents += "registerCreator(IPluginCreator) refused\n";
        return false;
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const*, AsciiChar const*, AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const* path) noexcept override
    {
        gEvents += std::string("loadLibrary ") + path + "\n";
        void* handle = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
        if (handle == nullptr)
        {
            return nullptr;
        }
        auto setLogger = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(handle, "setLoggerFinder"));
        auto get = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(handle, "getCreators"));
        if (setLogger == nullptr || get == nullptr)
        {
            return nullptr;
        }
        setLogger(nullptr);
        int32_t n = -1;
        IPluginCreatorInterface* const* creators = get(n);
        gEvents += "getCreators " + std::to_string(n) + "\n";
        for (int32_t i = 0; i < n; ++i)
        {
            if (!registerCreator(*creators[i], "")) // the namespace is the creator's own (all ours are "")
            {
                return nullptr;
            }
        }
        return handle;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override
    {
        std::string const kind = creator.getInterfaceInfo().kind;
        if (kind != "PLUGIN CREATOR_V3ONE")
        {
            gEvents += "register refused kind " + kind + "\n";
            return false;
        }
        auto& c = static_cast<IPluginCreatorV3One&>(creator);
        Entry e{&creator, c.getPluginName(), c.getPluginVersion(), ns != nullptr ? ns : ""};
        for (Entry const& old : mEntries)
        {
            if (old.name == e.name && old.version == e.version && old.ns == e.ns)
            {
                gEvents += "register duplicate " + e.name + " " + e.version + "\n";
                return false;
            }
        }
        mEntries.push_back(e);
        gEvents += "register " + e.name + " " + e.version + " [" + e.ns + "]\n";
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        mView.clear();
        for (Entry const& e : mEntries)
        {
            mView.push_back(e.creator);
        }
        *n = static_cast<int32_t>(mView.size());
        return mView.data();
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* name, AsciiChar const* version, AsciiChar const* ns) noexcept override
    {
        for (Entry const& e : mEntries)
        {
            if (e.name == name && e.version == version && e.ns == (ns != nullptr ? ns : ""))
            {
                return e.creator;
            }
        }
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override
    {
        for (size_t i = 0; i < mEntries.size(); ++i)
        {
            if (mEntries[i].creator == &creator)
            {
                gEvents += "deregister " + mEntries[i].name + " " + mEntries[i].version + "\n";
                mEntries.erase(mEntries.begin() + static_cast<long>(i));
                return true;
            }
        }
        gEvents += "deregister unknown\n";
        return false;
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }

private:
    std::vector<Entry> mEntries;
    mutable std::vector<IPluginCreatorInterface*> mView;
};

RecordingRegistry gRegistry;
} // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    return &gRegistry;
}
extern "C" __attribute__((visibility("default"))) int32_t getInferLibVersion() noexcept
{
    return STANDIN_VERSION;
}
// Test access (not TensorRT API).
extern "C" __attribute__((visibility("default"))) char const* standinEvents()
{
    return gEvents.c_str();
}
extern "C" __attribute__((visibility("default"))) int32_t standinCount(char const* name, char const* version)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* all = gRegistry.getAllCreators(&n);
    int32_t matches = 0;
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(all[i]);
        matches += std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), version) == 0;
    }
    return matches;
}
extern "C" __attribute__((visibility("default"))) int32_t standinLoadLibrary(char const* path)
{
    return gRegistry.loadLibrary(path) != nullptr ? 1 : 0;
}
"""

# Child-process driver: performs the steps in argv[1] (JSON list) and prints one RESULT line.
DRIVER = textwrap.dedent("""
    import ctypes, json, sys
    steps = json.loads(sys.argv[1])
    standin = None
    result = {}
    for step in steps:
        kind, arg = step[0], step[1] if len(step) > 1 else None
        if kind == "standin_global":
            standin = ctypes.CDLL(arg, mode=ctypes.RTLD_GLOBAL)
        elif kind == "standin_local":
            standin = ctypes.CDLL(arg)  # RTLD_LOCAL, the way Python's tensorrt wheel loads libnvinfer
        elif kind == "cdll":
            ctypes.CDLL(arg)  # what Polygraphy --plugins does
        elif kind == "standin_load_library":
            result.setdefault("load_library", []).append(standin.standinLoadLibrary(arg.encode()))
        elif kind == "rtx_import":
            import tensorrt_rtx as trt
        elif kind == "rtx_global":
            import tensorrt_rtx_libs, os
            ctypes.CDLL(os.path.join(os.path.dirname(tensorrt_rtx_libs.__file__), "libtensorrt_rtx.so.1"),
                        mode=ctypes.RTLD_GLOBAL)
            import tensorrt_rtx as trt
        elif kind == "rtx_load_library":
            registry = trt.get_plugin_registry()
            result["rtx_before"] = registry.get_creator("SGFormerIAM", "1", "") is not None
            result["rtx_handle"] = registry.load_library(arg) is not None
            result["rtx_after"] = registry.get_creator("SGFormerIAM", "1", "") is not None
        else:
            raise SystemExit(f"unknown step {kind}")
    if standin is not None:
        standin.standinEvents.restype = ctypes.c_char_p
        result["events"] = standin.standinEvents().decode().splitlines()
        result["count"] = standin.standinCount(b"SGFormerIAM", b"1")
    print("RESULT " + json.dumps(result))
""")


def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).resolve().parents[1] / "include"] if nvcc else []
    candidates += [Path(p) / "include" for p in (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if p]
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


def _compile_standin(folder: Path, version: int, soname: str) -> Path:
    compiler = shutil.which("g++")
    cuda_include = _cuda_include()
    if compiler is None or cuda_include is None or not (TRT_HEADERS / "NvInferRuntime.h").is_file():
        pytest.fail("the stand-in libnvinfer needs g++, the CUDA headers and third_party/tensorrt/include "
                    "(scripts/fetch_trt_headers.sh)")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "standin_nvinfer.cpp"
    source.write_text(STANDIN_SOURCE)
    library = folder / soname
    subprocess.run([compiler, "-std=c++17", "-shared", "-fPIC", "-O1", "-Wno-deprecated-declarations",
                    f"-DSTANDIN_VERSION={version}", f"-I{TRT_HEADERS}", f"-I{cuda_include}", str(source),
                    f"-Wl,-soname,{soname}", "-o", str(library)], check=True, capture_output=True, text=True)
    return library


@pytest.fixture(scope="module")
def standin(tmp_path_factory, plugin_build) -> Path:
    """libnvinfer.so.10 stand-in reporting TensorRT 10.14.1 (soname libnvinfer.so.10, like the real one)."""
    return _compile_standin(tmp_path_factory.mktemp("standin10"), TRT10_VERSION, "libnvinfer.so.10")


@pytest.fixture(scope="module")
def standin_v11(tmp_path_factory, plugin_build) -> Path:
    """Same stand-in reporting 11.0.0: a major other than the headers' the plugin was built with."""
    return _compile_standin(tmp_path_factory.mktemp("standin11"), 110000, "libnvinfer.so.11")


def _run(steps: list[list[str]], env_extra: dict[str, str] | None = None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SGFORMER_IAM_NO_AUTO_REGISTER", "SGFORMER_IAM_TRACE")}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(steps)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (f"child process failed (exit {proc.returncode}; a negative exit is a "
                                            f"signal, e.g. -11 a segfault):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):]), proc.stderr


REGISTERED = f"register {plugin_spec.PLUGIN_NAME} {plugin_spec.PLUGIN_VERSION} [{plugin_spec.PLUGIN_NAMESPACE}]"


def _registrations(events: list[str]) -> list[str]:
    return [e for e in events if e.startswith("register")]


# ------------------------------------------------------------------------------------------------ full TensorRT


@pytest.mark.parametrize("scope", ["standin_global", "standin_local"])
def test_plain_dlopen_registers_one_creator(standin, plugin_build, scope) -> None:
    """RTLD_GLOBAL: found with dlsym(RTLD_DEFAULT); RTLD_LOCAL (Python's tensorrt wheel): found by soname."""
    result, _ = _run([[scope, str(standin)], ["cdll", str(plugin_build.plugin_library)]])
    assert result["events"] == [REGISTERED], result["events"]
    assert result["count"] == 1


def test_dlopen_before_tensorrt_loads_it_by_soname(standin, plugin_build) -> None:
    """Polygraphy --plugins and LD_PRELOAD load the plugin before TensorRT: libnvinfer.so.10 is found on the loader
    path (as a NEEDED entry would be), and the runtime loaded afterwards by its path is that same copy."""
    result, _ = _run([["cdll", str(plugin_build.plugin_library)], ["standin_local", str(standin)]],
                     env_extra={"LD_LIBRARY_PATH": str(standin.parent)})
    assert result["events"] == [REGISTERED], result["events"]
    assert result["count"] == 1


def test_second_dlopen_does_not_register_again(standin, plugin_build) -> None:
    result, _ = _run([["standin_global", str(standin)], ["cdll", str(plugin_build.plugin_library)],
                      ["cdll", str(plugin_build.plugin_library)]])
    assert _registrations(result["events"]) == [REGISTERED]
    assert result["count"] == 1


def test_dlopen_then_load_library_registers_once(standin, plugin_build) -> None:
    """Plain dlopen first, then loadLibrary: getCreators takes the creator back, loadLibrary registers it."""
    lib = str(plugin_build.plugin_library)
    result, _ = _run([["standin_global", str(standin)], ["cdll", lib], ["standin_load_library", lib]])
    assert result["load_library"] == [1]
    assert result["count"] == 1
    assert not [e for e in result["events"] if "duplicate" in e], result["events"]
    # on dlopen, taken back by getCreators, registered by loadLibrary: never two at once
    assert result["events"][-3:] == [f"deregister {plugin_spec.PLUGIN_NAME} 1", "getCreators 1", REGISTERED]


@pytest.mark.parametrize("scope", ["standin_global", "standin_local"])
def test_load_library_alone_registers_once(standin, plugin_build, scope) -> None:
    """loadLibrary's own dlopen runs the on-load path first; the creator still ends up registered once."""
    lib = str(plugin_build.plugin_library)
    result, _ = _run([[scope, str(standin)], ["standin_load_library", lib]])
    assert result["load_library"] == [1]
    assert result["count"] == 1
    assert result["events"] == [f"loadLibrary {lib}", REGISTERED, f"deregister {plugin_spec.PLUGIN_NAME} 1",
                                "getCreators 1", REGISTERED]


def test_no_tensorrt_in_process_is_silent(plugin_build) -> None:
    result, stderr = _run([["cdll", str(plugin_build.plugin_library)]])
    assert "events" not in result
    assert plugin_spec.PLUGIN_NAME not in stderr, stderr


def test_other_major_version_is_not_registered(standin_v11, plugin_build) -> None:
    """The registry vtable is the headers' (10.x): a TensorRT 11 runtime gets no call, and a hint to rebuild."""
    result, stderr = _run([["standin_global", str(standin_v11)], ["cdll", str(plugin_build.plugin_library)]])
    assert result["events"] == [] and result["count"] == 0
    assert "11.0.0" in stderr and "TensorRT_ROOT" in stderr, stderr


def test_environment_switch_turns_on_load_registration_off(standin, plugin_build) -> None:
    result, _ = _run([["standin_global", str(standin)], ["cdll", str(plugin_build.plugin_library)]],
                     env_extra={"SGFORMER_IAM_NO_AUTO_REGISTER": "1"})
    assert result["events"] == [] and result["count"] == 0


# ------------------------------------------------------------------------------------------------ TensorRT-RTX

needs_rtx = pytest.mark.skipif(
    (importlib.util.find_spec("tensorrt_rtx") is None or importlib.util.find_spec("tensorrt_rtx_libs") is None)
    and os.environ.get("SGFORMER_REQUIRE_RTX") != "1",  # CI: fail instead (tests/conftest.py policy)
    reason="TensorRT-RTX not installed (pip install -e '.[trt-rtx]')")


@needs_rtx
@pytest.mark.parametrize("how", ["rtx_import", "rtx_global"])
def test_dlopen_after_tensorrt_rtx_skips_with_hint(plugin_build, how) -> None:
    """RTX's registry has another vtable: no call into it (a call would crash), one line naming load_library."""
    result, stderr = _run([[how], ["cdll", str(plugin_build.plugin_library)]])
    hints = [line for line in stderr.splitlines() if line.startswith(f"{plugin_spec.PLUGIN_NAME}:")]
    assert len(hints) == 1 and "TensorRT-RTX" in hints[0] and "load_library" in hints[0], stderr


@needs_rtx
def test_tensorrt_rtx_load_library_still_works_after_dlopen(plugin_build) -> None:
    lib = str(plugin_build.plugin_library)
    result, _ = _run([["rtx_import"], ["cdll", lib], ["rtx_load_library", lib]])
    assert result == {"rtx_before": False, "rtx_handle": True, "rtx_after": True}


@needs_rtx
def test_tensorrt_rtx_load_library_alone(plugin_build) -> None:
    lib = str(plugin_build.plugin_library)
    result, _ = _run([["rtx_import"], ["rtx_load_library", lib]])
    assert result == {"rtx_before": False, "rtx_handle": True, "rtx_after": True}
