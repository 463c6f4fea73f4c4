"""Compile-only check of the SGFormerIAM CUDA kernels + TensorRT glue (nvcc, TensorRT 10.14 headers, no GPU).

Builds libsgformer_plugins.so and the kernel test harness for SGFORMER_TEST_CUDA_ARCHS (default sm_87, sm_90)
with the plugin's own CMake, then checks what the library exports and links.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest


def _dynamic_symbols(path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    out = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if len(line.split()) == 3 and line.split()[1] == "T"}


def _needed_libraries(path) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not found")
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[")[1].split("]")[0] for line in out.splitlines() if "(NEEDED)" in line]


def test_plugin_library_builds(plugin_build) -> None:
    assert plugin_build.plugin_library.is_file()
    assert plugin_build.kernel_harness.is_file()
    print(f"archs {plugin_build.cuda_archs}: configure {plugin_build.configure_s:.1f} s, "
          f"build {plugin_build.build_s:.1f} s")


def test_plugin_library_exports_only_registry_entry_points(plugin_build) -> None:
    symbols = _dynamic_symbols(plugin_build.plugin_library)
    assert {"getCreators", "setLoggerFinder"} <= symbols
    assert "getPluginCreators" not in symbols, "IPluginV2-style entry point must not exist"
    extra = {s for s in symbols if not s.startswith("_")} - {"getCreators", "setLoggerFinder"}
    assert not extra, f"unexpected exported symbols: {sorted(extra)}"


def test_plugin_library_does_not_link_tensorrt_or_shared_cudart(plugin_build) -> None:
    needed = _needed_libraries(plugin_build.plugin_library)
    assert not [lib for lib in needed if "nvinfer" in lib or "tensorrt" in lib], needed
    assert not [lib for lib in needed if "cudart" in lib], f"cudart is linked statically: {needed}"


def test_no_ipluginv2_or_static_registration_in_code() -> None:
    import re
    from pathlib import Path

    plugin_dir = Path(__file__).resolve().parents[2] / "plugins" / "sgformer_iam"
    for path in sorted(plugin_dir.rglob("*")):
        if path.suffix not in (".h", ".cpp", ".cu"):
            continue
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)  # comments may name them
        assert not re.search(r"\bIPluginV2", code), f"{path.name} uses IPluginV2"
        assert "REGISTER_TENSORRT_PLUGIN" not in code, f"{path.name} registers statically"
