"""Build stage: BuildConfig validation, backend discovery, and real CPU-only TensorRT-RTX builds.

The TensorRT-RTX tests skip when its wheels are not installed; they build small graphs made here (a seeded
tiny-test SG-Former export, onnx.helper graphs) and a probe plugin compiled from the source below against the
TensorRT headers in third_party/tensorrt/include (``scripts/fetch_trt_headers.sh``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.backends import gpu as gpu_probe
from pipeline.backends import rtx_library
from pipeline.backends import tensorrt as trt_backend
from pipeline.graph import detect_precision
from pipeline.stages.build import BuildConfig, build_engine, save_engine_dir
from pipeline.core.errors import BuildError, ConfigError, PluginLibraryError
from pipeline.store.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
TRT_HEADERS = ROOT / "third_party" / "tensorrt" / "include"


def _rtx_available() -> bool:
    try:
        trt_backend.load_backend("tensorrt-rtx")
    except BuildError:
        return False
    return True


# SGFORMER_REQUIRE_RTX=1 (CI, `make test`): no skip, so a missing wheel fails these tests (tests/conftest.py policy).
needs_rtx = pytest.mark.skipif(not _rtx_available() and os.environ.get("SGFORMER_REQUIRE_RTX") != "1", reason="TensorRT-RTX wheels not installed (pip install .[trt-rtx])")


# ------------------------------------------------------------------------------------------------ graphs


def matmul_graph(batch: object = "batch", op_domain: str | None = None, op_type: str = "SgtProbeIdentity") -> onnx.ModelProto:
    """images [B, 8] -> MatMul -> Relu (-> optional custom op) -> logits [B, 4]."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["images", "W"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    if op_domain is None:
        nodes.append(helper.make_node("Identity", ["z"], ["logits"]))
    else:
        nodes.append(helper.make_node(op_type, ["z"], ["logits"], domain=op_domain))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])], [weight],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(op_domain, 1)] if op_domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def fp16_cast_graph() -> onnx.ModelProto:
    """Strongly typed fp16: images fp32 -> Cast fp16 -> Conv (fp16 weights) -> Cast fp32 -> logits."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float16), "W")
    nodes = [
        helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "W"], ["y16"], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["y16"], ["logits"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8, 16, 16])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """Seeded tiny-test SG-Former at 224 with a dynamic batch, exported to opset 17 (standard ops)."""
    import torch

    from pipeline.model.sgformer import create_model

    torch.manual_seed(0)
    model = create_model("tiny-test", 224).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny-test.onnx"
    torch.onnx.export(
        model, torch.randn(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
        input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    exported = onnx.load(str(path))
    for key, value in {"variant": "tiny-test", "img_size": "224", "weights": "random-init, seed 0"}.items():
        exported.metadata_props.add(key=key, value=value)
    onnx.save(exported, str(path))
    return path


PROBE_PLUGIN_SOURCE = r"""
// Identity plugin "SgtProbeIdentity" (fp32, linear): exercises plugin loading in builder tests. Never runs.
#include <NvInferRuntime.h>
#include <new>

using namespace nvinfer1;

namespace
{
constexpr char const* kNAME = "SgtProbeIdentity";
constexpr char const* kVERSION = "1";

class ProbePlugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime
{
public:
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override { return new (std::nothrow) ProbePlugin(); }
    AsciiChar const* getPluginName() const noexcept override { return kNAME; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVERSION; }
    AsciiChar const* getPluginNamespace() const noexcept override { return ""; }
    int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*, int32_t) noexcept override
    {
        return 0;
    }
    int32_t getOutputDataTypes(DataType* out, int32_t, DataType const* in, int32_t) const noexcept override
    {
        out[0] = in[0];
        return 0;
    }
    int32_t getOutputShapes(DimsExprs const* in, int32_t, DimsExprs const*, int32_t, DimsExprs* out, int32_t,
        IExprBuilder&) noexcept override
    {
        out[0] = in[0];
        return 0;
    }
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t, int32_t) noexcept override
    {
        return io[pos].desc.format == TensorFormat::kLINEAR && io[pos].desc.type == DataType::kFLOAT;
    }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override { return 0; }
    int32_t enqueue(PluginTensorDesc const*, PluginTensorDesc const*, void const* const*, void* const*, void*,
        cudaStream_t) noexcept override
    {
        return -1;
    }
    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFields; }

private:
    PluginFieldCollection mFields{0, nullptr};
};

class ProbeCreator final : public IPluginCreatorV3One
{
public:
    IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const*, TensorRTPhase) noexcept override
    {
        return new (std::nothrow) ProbePlugin();
    }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mFields; }
    AsciiChar const* getPluginName() const noexcept override { return kNAME; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVERSION; }
    AsciiChar const* getPluginNamespace() const noexcept override { return ""; }

private:
    PluginFieldCollection mFields{0, nullptr};
};
} // namespace

extern "C" void setLoggerFinder(ILoggerFinder*) {}

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static ProbeCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
"""


def _cuda_include() -> Path | None:
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", "/usr/local/cuda-13.0", "/usr/local/cuda-12.6"):
        if candidate and (Path(candidate) / "include" / "cuda_runtime_api.h").is_file():
            return Path(candidate) / "include"
    return None


@pytest.fixture(scope="module")
def probe_plugin(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    cuda_include = _cuda_include()
    if not (TRT_HEADERS / "NvInferRuntime.h").is_file() or compiler is None or cuda_include is None:
        pytest.skip("needs g++, CUDA headers and TensorRT headers in third_party/tensorrt/include "
                    "(scripts/fetch_trt_headers.sh)")
    folder = tmp_path_factory.mktemp("probe")
    source = folder / "probe.cpp"
    source.write_text(PROBE_PLUGIN_SOURCE)
    library = folder / "libsgt_probe.so"
    subprocess.run(
        [compiler, "-std=c++17", "-shared", "-fPIC", "-O1", "-Wno-deprecated-declarations", f"-I{TRT_HEADERS}",
         f"-I{cuda_include}", str(source), "-o", str(library)],
        check=True, capture_output=True, text=True,
    )
    return library


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(backend="onnxruntime"), "backend"),
        (dict(min_batch=0), "1 <= min"),
        (dict(min_batch=4, opt_batch=2), "1 <= min <= opt <= max"),
        (dict(opt_batch=16, max_batch=8), "1 <= min <= opt <= max"),
        (dict(max_batch=2.5), "max_batch must be an int"),
        (dict(workspace_mb=0), "workspace_mb"),
        (dict(opt_level=6), "opt_level"),
        (dict(hardware_compatibility="turing_plus"), "hardware_compatibility"),
        (dict(compute_capabilities=("89",)), "sm_89"),
        (dict(compute_capabilities=["sm_89"]), "tuple"),
        (dict(hardware_compatibility="ampere_plus", compute_capabilities=("sm_89",)), "either"),
    ],
)
def test_build_config_rejects(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        BuildConfig(**kwargs)


def test_build_config_defaults_and_path_coercion():
    config = BuildConfig(plugin_library="lib.so", timing_cache="cache.bin")
    assert config.plugin_library == Path("lib.so") and config.timing_cache == Path("cache.bin")
    assert (config.min_batch, config.opt_batch, config.max_batch) == (1, 1, 8)


def test_detect_precision():
    assert detect_precision(matmul_graph()) == "fp32"
    assert detect_precision(fp16_cast_graph()) == "fp16"
    qdq = matmul_graph()
    qdq.graph.node.insert(0, helper.make_node("QuantizeLinear", ["images", "s"], ["q"]))
    assert detect_precision(qdq) == "int8"


# ------------------------------------------------------------------------------------------------ backend


def test_no_tensorrt_names_the_packages(monkeypatch):
    for module in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    monkeypatch.setattr(trt_backend, "_BACKENDS", {})
    with pytest.raises(BuildError) as info:
        trt_backend.load_backend("auto")
    message = str(info.value)
    for needle in ("pip install tensorrt-cu12", "python3-libnvinfer", "tensorrt-rtx-cu13-libs",
                   "tensorrt-rtx-cu13-bindings"):
        assert needle in message
    with pytest.raises(BuildError, match="TensorRT-RTX Python package"):
        trt_backend.load_backend("tensorrt-rtx")


def test_build_without_tensorrt_fails_before_touching_files(monkeypatch, tmp_path, capsys):
    """Every file the build would read or write lies in tmp_path: the ONNX stays as it was, and neither the timing
    cache, the engine folder nor a temporary file appears (library call and CLI)."""
    for module in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(trt_backend, "_BACKENDS", {})
    source = tmp_path / "model.onnx"
    onnx.save(matmul_graph(), str(source))
    before = source.read_bytes()
    with pytest.raises(BuildError, match="no usable TensorRT"):
        build_engine(source, BuildConfig(timing_cache=tmp_path / "timing.cache"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    from pipeline.cli import main

    assert main(["build", "--onnx", str(source), "--out-dir", str(tmp_path / "engines"), "--timing-cache",
                 str(tmp_path / "timing.cache"), "--variant", "mm", "--resolution", "8"]) == 2
    assert "no usable TensorRT" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert source.read_bytes() == before


def test_custom_op_without_plugin_library_hints_make_plugins():
    model = matmul_graph(op_domain="trt.plugins", op_type="SGFormerIAM")
    with pytest.raises(BuildError, match="op SGFormerIAM has no plugin: pass --plugins libsgformer_plugins.so"):
        build_engine(model, BuildConfig())


def test_missing_plugin_library_file(tmp_path):
    with pytest.raises(PluginLibraryError, match="make plugins"):
        build_engine(matmul_graph(), BuildConfig(plugin_library=tmp_path / "libnothing.so"))


def test_missing_onnx_file(tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        build_engine(tmp_path / "missing.onnx", BuildConfig())


class TestRtxLibraryLink:
    """The unversioned libtensorrt_rtx.so that TensorRT-RTX's parser dlopens (fake wheel folder, no TensorRT)."""

    @pytest.fixture
    def fake_wheel(self, tmp_path, monkeypatch):
        libs = tmp_path / "tensorrt_rtx_libs"
        libs.mkdir()
        (libs / "libtensorrt_rtx.so.1").write_bytes(b"\x7fELF")
        monkeypatch.setattr(rtx_library, "_rtx_libs_dir", lambda: libs)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
        return libs

    def test_link_beside_the_wheel_library(self, fake_wheel):
        state = rtx_library.ensure_rtx_parser_library()
        assert state.ok and state.link == fake_wheel / "libtensorrt_rtx.so"
        assert os.readlink(state.link) == "libtensorrt_rtx.so.1"
        assert rtx_library.ensure_rtx_parser_library() == state  # idempotent
        rtx_library.require_rtx_parser_library()

    def test_read_only_wheel_falls_back_to_cache_and_explains(self, fake_wheel, monkeypatch, tmp_path):
        real = rtx_library._make_symlink
        monkeypatch.setattr(rtx_library, "_make_symlink",
                            lambda link, target: False if link.parent == fake_wheel else real(link, target))
        state = rtx_library.ensure_rtx_parser_library()
        cache = tmp_path / "cache" / "sgformer-trt" / "tensorrt-rtx-lib"
        assert state.link == cache / "libtensorrt_rtx.so" and state.needs_library_path == cache
        with pytest.raises(BuildError, match=f"export LD_LIBRARY_PATH={cache}"):
            rtx_library.require_rtx_parser_library()
        calls = []
        monkeypatch.setattr(rtx_library.os, "execve", lambda exe, argv, env: calls.append((argv, env)))
        rtx_library.reexec_with_rtx_library_path(["-m", "pipeline.cli", "build"])
        (argv, env), = calls
        assert argv[1:] == ["-m", "pipeline.cli", "build"]
        assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(cache) and env["SGFORMER_TRT_REEXEC"] == "1"
        monkeypatch.setenv("LD_LIBRARY_PATH", str(cache))
        assert rtx_library.ensure_rtx_parser_library().ok


# ------------------------------------------------------------------------------------------------ TensorRT-RTX


@needs_rtx
def test_rtx_builds_tiny_sgformer_fp32(tiny_onnx, tmp_path):
    config = BuildConfig(backend="tensorrt-rtx", min_batch=1, opt_batch=2, max_batch=4)
    engine, info = build_engine(tiny_onnx, config)
    assert len(engine) > 100_000 and info.engine_bytes == len(engine)
    assert info.backend_flavour == "TensorRT-RTX" and info.strongly_typed
    assert info.inputs[0].name == "images" and info.inputs[0].shape == (-1, 3, 224, 224)
    assert info.outputs[0].name == "logits" and info.outputs[0].shape == (-1, 1000)
    engine_dir = save_engine_dir(tmp_path, engine, info, variant="tiny-test", precision="fp32", img_size=224,
                                 weights="random-init, seed 0", onnx_file=str(tiny_onnx), config=config)
    assert engine_dir == tmp_path / "tiny-test-fp32-224"
    manifest = read_manifest(engine_dir)
    assert manifest.backend_flavour == "TensorRT-RTX" and manifest.backend_version.startswith("1.")
    assert "TensorRT-RTX engine for RTX GPUs" in manifest.target.description
    assert "sm_87" not in manifest.target.compute_capabilities
    assert (engine_dir / manifest.engine.file).stat().st_size == len(engine)
    assert manifest.batch.max == 4 and manifest.plugin is None


@needs_rtx
def test_rtx_builds_strongly_typed_fp16_graph():
    engine, info = build_engine(fp16_cast_graph(), BuildConfig(backend="tensorrt-rtx", max_batch=2))
    assert len(engine) > 0 and info.strongly_typed


@needs_rtx
def test_rtx_explicit_compute_capability():
    engine, info = build_engine(fp16_cast_graph(), BuildConfig(backend="tensorrt-rtx", compute_capabilities=("sm_86",)))
    assert len(engine) > 0 and info.target.compute_capabilities == ("sm_86",)
    with pytest.raises(BuildError, match="cannot target sm_87"):
        build_engine(fp16_cast_graph(), BuildConfig(backend="tensorrt-rtx", compute_capabilities=("sm_87",)))


@needs_rtx
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(version_compatible=True), "lean runtime"),
        (dict(hardware_compatibility="ampere_plus"), "compute capability"),
    ],
)
def test_rtx_rejects_full_tensorrt_options(kwargs, fragment):
    with pytest.raises(BuildError, match=fragment):
        build_engine(matmul_graph(), BuildConfig(backend="tensorrt-rtx", **kwargs))


@needs_rtx
def test_rtx_static_batch_mismatch_is_explained():
    with pytest.raises(BuildError, match="fixed batch of 2"):
        build_engine(matmul_graph(batch=2), BuildConfig(backend="tensorrt-rtx", max_batch=4))
    engine, _ = build_engine(matmul_graph(batch=2), BuildConfig(backend="tensorrt-rtx", min_batch=2, opt_batch=2,
                                                                max_batch=2))
    assert engine


@needs_rtx
def test_rtx_builds_graph_with_plugin(probe_plugin, tmp_path):
    model = matmul_graph(op_domain="trt.plugins")
    config = BuildConfig(backend="tensorrt-rtx", plugin_library=probe_plugin, max_batch=4)
    engine, info = build_engine(model, config)
    assert engine and info.plugin_library == probe_plugin
    engine_dir = save_engine_dir(tmp_path, engine, info, variant="probe", precision="fp32", img_size=8,
                                 weights="none", onnx_file="probe.onnx", config=config)
    manifest = read_manifest(engine_dir)
    assert manifest.plugin is not None and (engine_dir / manifest.plugin.file).is_file()
    from pipeline.core.hashing import sha256_file

    assert manifest.plugin.sha256 == sha256_file(probe_plugin)


@needs_rtx
def test_rtx_plugin_library_without_the_op_lists_parser_errors(probe_plugin):
    # The plugin registry is process-global: once another test has loaded the real libsgformer_plugins.so,
    # SGFormerIAM stays registered. Then run this test alone in a fresh interpreter.
    if os.environ.get("SGFORMER_TEST_ISOLATED") != "1" and trt_backend.has_plugin_creator(
        trt_backend.load_backend("tensorrt-rtx"), "SGFormerIAM"
    ):
        node = f"{__file__}::test_rtx_plugin_library_without_the_op_lists_parser_errors"
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
                                env=dict(os.environ, SGFORMER_TEST_ISOLATED="1"), capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return
    model = matmul_graph(op_domain="trt.plugins", op_type="SGFormerIAM")
    with pytest.raises(BuildError) as info:
        build_engine(model, BuildConfig(backend="tensorrt-rtx", plugin_library=probe_plugin))
    message = str(info.value)
    assert "could not parse" in message and "op SGFormerIAM" in message and "Plugin not found" in message
    assert "does not register SGFormerIAM" in message


@needs_rtx
def test_cli_build_writes_engine_dir(tmp_path, capsys):
    from pipeline.cli import main

    onnx_path = tmp_path / "mm.onnx"
    onnx.save(matmul_graph(), str(onnx_path))
    code = main(["build", "--onnx", str(onnx_path), "--out-dir", str(tmp_path / "engines"), "--backend",
                 "tensorrt-rtx", "--variant", "mm", "--resolution", "8", "--max-batch", "2",
                 "--timing-cache", str(tmp_path / "timing.cache")])
    assert code == 0
    out = capsys.readouterr().out
    assert "TensorRT-RTX" in out and "mm-fp32-8" in out
    data = json.loads((tmp_path / "engines" / "mm-fp32-8" / "manifest.json").read_text())
    assert data["backend"]["flavour"] == "TensorRT-RTX" and data["batch"] == {"min": 1, "opt": 1, "max": 2}
    assert not (tmp_path / "timing.cache").exists()  # TensorRT-RTX has no timing cache


def test_cli_build_reports_errors_in_one_line(tmp_path, capsys):
    from pipeline.cli import main

    onnx_path = tmp_path / "iam.onnx"
    onnx.save(matmul_graph(op_domain="trt.plugins", op_type="SGFormerIAM"), str(onnx_path))
    assert main(["build", "--onnx", str(onnx_path), "--out-dir", str(tmp_path), "--resolution", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgformer-trt build: error:") and "op SGFormerIAM has no plugin" in err


@pytest.mark.trt
def test_full_tensorrt_build_with_timing_cache(tmp_path):
    try:
        backend = trt_backend.load_backend("tensorrt")
    except BuildError as exc:
        pytest.skip(f"full TensorRT not installed: {exc}")
    if gpu_probe.probe_gpu() is None:
        pytest.skip("full TensorRT builds need a GPU")
    cache = tmp_path / "timing.cache"
    engine, info = build_engine(matmul_graph(), BuildConfig(backend="tensorrt", timing_cache=cache, max_batch=4))
    assert engine and info.backend_flavour == "TensorRT" and backend.version == info.backend_version
    assert cache.stat().st_size > 0 and info.target.compute_capabilities


@needs_rtx
def test_rtx_builds_rewritten_tiny_sgformer_at_448_with_the_iam_plugin(tmp_path, plugin_build):
    """The standard-op graph cannot build at 448 (TopK K <= 3840); the rewritten graph with the plugin can."""
    library = plugin_build.plugin_library
    import torch

    from pipeline.stages.export import export_onnx
    from pipeline.model.sgformer import create_model
    from pipeline.stages.rewrite import replace_iam_with_plugin

    torch.manual_seed(0)
    exported = export_onnx(create_model("tiny-test", 448), batch=None, variant="tiny-test",
                           weights="random-init, seed 0")
    with pytest.raises(BuildError, match="rewrite it with `sgformer-trt rewrite`"):
        build_engine(exported, BuildConfig(backend="tensorrt-rtx"))
    rewritten = replace_iam_with_plugin(exported)
    config = BuildConfig(backend="tensorrt-rtx", plugin_library=library, max_batch=2)
    engine, info = build_engine(rewritten, config)
    assert len(engine) > 100_000 and info.inputs[0].shape == (-1, 3, 448, 448)
    engine_dir = save_engine_dir(tmp_path, engine, info, variant="tiny-test", precision="fp32", img_size=448,
                                 weights="random-init, seed 0", onnx_file="tiny-test.iam.onnx", config=config)
    manifest = read_manifest(engine_dir)
    assert manifest.plugin is not None and manifest.plugin.file == library.name
