"""Shared fixtures. Expensive artifacts (exports, rewrites) are made once per session and cached by key."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.core.variants import TEST_VARIANTS_ENV
from pipeline.model.sgformer import SGFormer, create_model

# The test variants (tiny-test) are registered here only: `make engine` / `sgformer-trt engine` refuse them without
# this variable (pipeline.core.variants.TEST_VARIANTS); child processes of the tests inherit it.
os.environ[TEST_VARIANTS_ENV] = "1"


# --------------------------------------------------------------------- one suite, several workers (pytest-xdist)
# `make test` runs two workers (--dist loadfile). Artifacts that several test files need (the S export, the S fp16
# engine) are made once per run in a folder the workers share, under a lock: the first worker makes them, the
# others wait and read them. Build folders under build/ are locked the same way.


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder of this test run that every worker sees (the run's base temp folder; one worker: its own)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Exclusive flock on ``folder/.workers.lock`` while the block runs (waits for another worker's turn). Not the
    ``.lock`` of ``pipeline.store.locking``: a folder holding that file is an engine folder to the pipeline, whose
    writers would then wait for this lock."""
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 1800  # the slowest holder (the S fp16 engine) takes about 2 minutes
    with open(folder / ".workers.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"waited 30 minutes for {folder / '.workers.lock'}: another worker holds it")
                time.sleep(0.5)
        yield


def randomize_merge_weights_(model: SGFormer, seed: int = 0) -> SGFormer:
    """Give every f1/f2/f3 distinct, non-uniform weights (in place).

    The parity conditioning sets them to 1/k, identical per size, which the exporter de-duplicates and which
    hides a mix-up of tiers or of positions inside a group; graph-surgery tests want them distinct.
    """
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for block in model.significance_blocks():
            for f in block.attn.merge_layers():
                k = f.in_features
                f.weight.copy_((0.5 + torch.rand(f.weight.shape, generator=gen)) / k)
                f.bias.copy_(torch.randn(f.bias.shape, generator=gen) * 0.05)
    return model


@dataclass
class Exported:
    """One model with its exported (``onnx``) and rewritten (``iam``) graphs on disk."""

    model: SGFormer
    onnx: Path
    iam: Path
    export_s: float
    rewrite_s: float

    def load(self, which: str = "onnx") -> onnx.ModelProto:
        return onnx.load(str(getattr(self, which)))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(variant, img_size, distinct_f=False)`` -> ``Exported``, each combination built once per session."""
    from pipeline.stages.export import export_onnx
    from pipeline.store.io import save_onnx
    from pipeline.stages.rewrite import replace_iam_with_plugin

    cache: dict[tuple, Exported] = {}

    def get(variant: str, img_size: int = 224, distinct_f: bool = False) -> Exported:
        key = (variant, img_size, distinct_f)
        if key not in cache:
            model = create_model(variant, img_size=img_size, seed=0)
            if distinct_f:
                randomize_merge_weights_(model)
            folder = shared_dir(tmp_path_factory, f"export-{variant}-{img_size}{'-f' if distinct_f else ''}")
            done = folder / "timings.json"
            with folder_lock(folder):  # another worker may be exporting the same model: wait, then read its files
                if not done.is_file():
                    start = time.perf_counter()
                    proto = export_onnx(model, variant=variant, weights="random-init, seed 0")
                    export_s = time.perf_counter() - start
                    save_onnx(proto, folder / "model.onnx")
                    start = time.perf_counter()
                    iam = replace_iam_with_plugin(proto)
                    rewrite_s = time.perf_counter() - start
                    save_onnx(iam, folder / "model.iam.onnx")
                    done.write_text(json.dumps({"export_s": export_s, "rewrite_s": rewrite_s}))
            timings = json.loads(done.read_text())
            cache[key] = Exported(model, folder / "model.onnx", folder / "model.iam.onnx", timings["export_s"],
                                  timings["rewrite_s"])
        return cache[key]

    return get


@pytest.fixture(scope="session")
def sample_batch():
    """``sample_batch(img_size, n=2)`` -> (names, float32 [n, 3, S, S]) from the bundled sample photos."""
    from pipeline.data.images import sample_images

    cache: dict[tuple, tuple[list[str], np.ndarray]] = {}

    def get(img_size: int = 224, n: int = 2):
        if (img_size, n) not in cache:
            pairs = sample_images(n, img_size)
            cache[(img_size, n)] = ([p[0] for p in pairs], np.stack([p[1] for p in pairs]))
        return cache[(img_size, n)]

    return get

from toolchains import REQUIRE_NVCC, REQUIRE_RTX, missing_tool  # noqa: E402 (the one missing-tool policy)

# ------------------------------------------------------------------ TensorRT headers and the plugin library
# Build outputs go to ``build/pytest-plugins*`` (gitignored), so a second run only recompiles what changed.
# SGFORMER_TEST_CUDA_ARCHS picks the architectures (default "87;90"); SGFORMER_REQUIRE_NVCC=1 (set by
# `make test`) fails instead of skipping when nvcc is missing.

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO_ROOT / "plugins" / "sgformer_iam"


@pytest.fixture(scope="module")
def host_library():
    """The host-reference library the CPU op (and gpu-check's dry run) load from $SGFORMER_IAM_REF_LIB: the one
    given, else built here once; the variable is restored after the module."""
    from pipeline.iam.host import build_host_library

    old = os.environ.get("SGFORMER_IAM_REF_LIB")
    library = Path(old) if old else build_host_library(REPO_ROOT / "build" / "pytest-plugins-ref")
    os.environ["SGFORMER_IAM_REF_LIB"] = str(library)
    yield library
    if old is None:
        os.environ.pop("SGFORMER_IAM_REF_LIB", None)
    else:
        os.environ["SGFORMER_IAM_REF_LIB"] = old
BUILD_ROOT = REPO_ROOT / "build"


@pytest.fixture(scope="session")
def trt_include_dir() -> Path:
    """TensorRT 10.14 headers from scripts/fetch_trt_headers.sh (downloads a 235 KB wheel once)."""
    script = REPO_ROOT / "scripts" / "fetch_trt_headers.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        pytest.fail(f"scripts/fetch_trt_headers.sh failed (exit {result.returncode}); it needs network access to "
                    f"PyPI:\n{result.stdout}\n{result.stderr}")
    include = REPO_ROOT / "third_party" / "tensorrt" / "include"
    assert (include / "NvInfer.h").is_file(), f"NvInfer.h missing in {include}"
    return include


def find_nvcc() -> str | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        if cuda_home and (Path(cuda_home) / "bin" / "nvcc").is_file():
            nvcc = str(Path(cuda_home) / "bin" / "nvcc")
    return nvcc


@dataclass(frozen=True)
class PluginBuild:
    build_dir: Path
    plugin_library: Path
    kernel_harness: Path
    cuda_archs: str
    configure_s: float
    build_s: float
    torch_library: Path | None = None  # libsgformer_iam_torch.so (CUDA implementation of sgformer::iam)


@pytest.fixture(scope="session")
def plugin_build(request) -> PluginBuild:
    """CMake build of libsgformer_plugins.so and the kernel test harness against the fetched headers.

    With ``SGFORMER_KERNEL_HARNESS_LIB`` set (``make gpu-check`` on a machine without TensorRT) that prebuilt
    harness is used and nothing is built; ``plugin_library`` then need not exist.
    """
    prebuilt = os.environ.get("SGFORMER_KERNEL_HARNESS_LIB")
    if prebuilt:
        harness = Path(prebuilt)
        if not harness.is_file():
            pytest.fail(f"SGFORMER_KERNEL_HARNESS_LIB={prebuilt} does not name a file")
        return PluginBuild(build_dir=harness.parent, plugin_library=harness.parent / "libsgformer_plugins.so",
                           kernel_harness=harness, cuda_archs=os.environ.get("SGFORMER_TEST_CUDA_ARCHS", "prebuilt"),
                           configure_s=0.0, build_s=0.0,
                           torch_library=Path(os.environ["SGFORMER_IAM_TORCH_LIB"])
                           if os.environ.get("SGFORMER_IAM_TORCH_LIB") else None)
    trt_include_dir: Path = request.getfixturevalue("trt_include_dir")
    nvcc = find_nvcc()
    if nvcc is None:
        missing_tool("nvcc (set CUDA_HOME or put nvcc on PATH)", REQUIRE_NVCC)
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake not found on PATH")
    archs = os.environ.get("SGFORMER_TEST_CUDA_ARCHS", "87;90")
    build_dir = BUILD_ROOT / "pytest-plugins"
    configure = [cmake, "-S", str(PLUGIN_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={archs}",
                 f"-DTensorRT_ROOT={trt_include_dir.parent}"]
    with folder_lock(build_dir):  # the other worker builds the same folder: wait, then find it up to date
        start = time.perf_counter()
        result = subprocess.run(configure, capture_output=True, text=True, check=False)
        configure_s = time.perf_counter() - start
        if result.returncode != 0:
            pytest.fail(f"CMake configure failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        start = time.perf_counter()
        result = subprocess.run([cmake, "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2), "--target",
                                 "sgformer_plugins", "sgformer_iam_kernel_harness", "sgformer_iam_torch"],
                                capture_output=True, text=True, check=False)
        build_s = time.perf_counter() - start
        if result.returncode != 0:
            pytest.fail(f"building libsgformer_plugins.so failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return PluginBuild(build_dir=build_dir, plugin_library=build_dir / "libsgformer_plugins.so",
                       torch_library=build_dir / "libsgformer_iam_torch.so",
                       kernel_harness=build_dir / "libsgformer_iam_kernel_harness.so", cuda_archs=archs,
                       configure_s=configure_s, build_s=build_s)


# ------------------------------------------------------------------------------------------------ engine directories


@pytest.fixture(scope="session")
def built_engine_dir(exported, plugin_build, tmp_path_factory):
    """``built_engine_dir(precision="fp16", variant="s")`` -> a real engine directory (224, batch 1..2) that
    `sgformer-trt build` made with TensorRT-RTX (CPU-only) and the plugin library; each (variant, precision) is built
    once per session. Only tests that need a real-size engine ask for S (one S fp16 build, shared); the rest use
    tiny-test (about 13 s instead of 45-66 s).

    The steps are those of tests/test_engine.py (calibrate -> rewrite -> build --max-batch 2), so that test can take
    its engines from here too."""
    import importlib.util

    if importlib.util.find_spec("tensorrt_rtx") is None:
        missing_tool("TensorRT-RTX (pip install -e '.[trt-rtx]')", REQUIRE_RTX)
    cache: dict[tuple[str, str], Path] = {}

    def get(precision: str = "fp16", variant: str = "s") -> Path:
        if (variant, precision) not in cache:
            folder = shared_dir(tmp_path_factory, f"engine-{variant}-{precision}")
            with folder_lock(folder):  # made once per run, whichever worker asks first
                if not (folder / "engines" / f"{variant}-{precision}-224" / "manifest.json").is_file():
                    _build_engine_dir(folder, exported(variant, 224).onnx, precision, plugin_build)
            cache[(variant, precision)] = folder / "engines" / f"{variant}-{precision}-224"
        return cache[(variant, precision)]

    return get


def _build_engine_dir(folder: Path, src: Path, precision: str, plugin_build) -> None:
    """calibrate -> rewrite -> build --max-batch 2 into ``folder/engines``."""
    from pipeline.cli import main

    if precision != "fp32":
        calibrated = folder / f"model.{precision}.onnx"
        calib = ["--num-images", "4", "--cache-dir", str(folder / "cache")] if precision == "int8" else []
        assert main(["calibrate", "--onnx", str(src), "--precision", precision, *calib,
                     "-o", str(calibrated)]) == 0
        src = calibrated
    iam = folder / "model.iam.onnx"
    assert main(["rewrite", str(src), "-o", str(iam)]) == 0
    assert main(["build", "--onnx", str(iam), "--out-dir", str(folder / "engines"), "--plugins",
                 str(plugin_build.plugin_library), "--backend", "tensorrt-rtx", "--max-batch", "2"]) == 0
