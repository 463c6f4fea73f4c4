"""Session fixtures for the SGFormerIAM plugin tests: host-reference library, TensorRT headers, plugin build.

Build outputs go to ``build/pytest-plugins*`` under the repository root (gitignored), so a second run only
recompiles what changed. Environment knobs:
  SGFORMER_IAM_REF_LIB       use this prebuilt host reference instead of building one
  SGFORMER_TEST_CUDA_ARCHS   architectures for the compile-only build (default "87;90")
  SGFORMER_REQUIRE_NVCC=1    fail instead of skip when nvcc is missing (set in CI)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.iam_host import LIBRARY_ENV_VAR, build_host_library

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO_ROOT / "plugins" / "sgformer_iam"
BUILD_ROOT = REPO_ROOT / "build"


def load_iam_spec() -> dict:
    """plugins/sgformer_iam/spec.yaml (JSON subset of YAML with full-line comments)."""
    lines = (PLUGIN_DIR / "spec.yaml").read_text().splitlines()
    return json.loads("\n".join(line for line in lines if not line.lstrip().startswith("#")))


@pytest.fixture(scope="session")
def iam_spec() -> dict:
    return load_iam_spec()


@pytest.fixture(scope="session")
def host_ref_library() -> Path:
    """Path of libsgformer_iam_ref.so, built from the current sources (CPU only, a few seconds)."""
    prebuilt = os.environ.get(LIBRARY_ENV_VAR)
    if prebuilt:
        return Path(prebuilt)
    return build_host_library(BUILD_ROOT / "pytest-plugins-ref")


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


@pytest.fixture(scope="session")
def plugin_build(trt_include_dir: Path) -> PluginBuild:
    """CMake build of libsgformer_plugins.so and the kernel test harness against the fetched headers."""
    nvcc = find_nvcc()
    if nvcc is None:
        message = "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
        if os.environ.get("SGFORMER_REQUIRE_NVCC") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake not found on PATH")
    archs = os.environ.get("SGFORMER_TEST_CUDA_ARCHS", "87;90")
    build_dir = BUILD_ROOT / "pytest-plugins"
    configure = [cmake, "-S", str(PLUGIN_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={archs}",
                 f"-DTensorRT_ROOT={trt_include_dir.parent}"]
    start = time.perf_counter()
    result = subprocess.run(configure, capture_output=True, text=True, check=False)
    configure_s = time.perf_counter() - start
    if result.returncode != 0:
        pytest.fail(f"CMake configure failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    start = time.perf_counter()
    result = subprocess.run([cmake, "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2), "--target",
                             "sgformer_plugins", "sgformer_iam_kernel_harness"],
                            capture_output=True, text=True, check=False)
    build_s = time.perf_counter() - start
    if result.returncode != 0:
        pytest.fail(f"building libsgformer_plugins.so failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return PluginBuild(build_dir=build_dir, plugin_library=build_dir / "libsgformer_plugins.so",
                       kernel_harness=build_dir / "libsgformer_iam_kernel_harness.so", cuda_archs=archs,
                       configure_s=configure_s, build_s=build_s)
