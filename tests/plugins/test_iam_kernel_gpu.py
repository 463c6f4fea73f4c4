"""SGFormerIAM CUDA kernel vs the host reference, bit for bit (fp32 and fp16). Needs an NVIDIA GPU (`-m gpu`).

Uses the ctypes harness libsgformer_iam_kernel_harness.so (plugins/sgformer_iam/test/, API in iam_kernel_api.py),
built by the plugin_build fixture; set SGFORMER_TEST_CUDA_ARCHS to include the GPU's architecture (e.g. "90" on
H100/H200, "87" on Orin). Both sort paths run on every shape: the automatic choice, the fused block sort forced
(where N fits the GPU's shared memory) and the multi-CTA CUB path forced. The same cases (fewer of them) run on
the CPU in CI through cudahost: test_iam_kernel_emu.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from iam_cases import IamCase, all_cases, importance_map, random_merge_params, report_mismatch
from iam_kernel_api import PATH_AUTO, PATH_CUB, PATH_FUSED, Layout, bits, load_kernel_harness, run_op
from pipeline.iam.reference import iam_layout
from pipeline.iam.host import iam_host

pytestmark = pytest.mark.gpu

KINDS = ("few_values", "signed_zeros", "all_equal", "distinct")


@pytest.fixture(scope="module")
def kernel_harness(plugin_build):
    lib = load_kernel_harness(plugin_build.kernel_harness)
    if lib.sgformer_iam_cuda_device_count() < 1:
        pytest.skip("no CUDA device visible")
    yield lib
    lib.sgformer_iam_cuda_set_path(PATH_AUTO)


def _check(lib, host_ref_library, layout, batch, channels, kind, dtype, seed) -> None:
    rng = np.random.default_rng(seed)
    n = layout.num_tokens
    tokens = rng.standard_normal((batch, n, channels)).astype(dtype)
    importance = importance_map(kind, batch, n, rng)
    weights, biases = random_merge_params(layout, rng)
    weight, bias = np.concatenate(weights), np.concatenate(biases)
    want = iam_host(tokens, importance, weight, bias, layout.height, layout.width, layout.group_sizes,
                    layout.tier_sizes, library=host_ref_library)
    got = run_op(lib, tokens, importance, weight, bias, layout)
    for name, g, w in zip(("seq_row", "seq_col"), got, want):
        assert np.array_equal(bits(g), bits(w)), f"{name}: {report_mismatch(g, w, 0, 0)}"


def _set_path(lib, path: int, n: int) -> None:
    if path == PATH_FUSED and lib.sgformer_iam_cuda_auto_path(n) != PATH_FUSED:
        pytest.skip(f"N={n} does not fit one CTA's shared memory on this GPU (fused path not available)")
    assert lib.sgformer_iam_cuda_set_path(path) == 0


@pytest.mark.parametrize("path", [PATH_AUTO, PATH_FUSED, PATH_CUB], ids=["auto", "fused", "cub"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", [c for c in all_cases() if c.variant in ("s", "m", "b")], ids=lambda c: c.id)
def test_kernel_bit_exact_vs_host_ref(case: IamCase, kind: str, dtype, path, kernel_harness, host_ref_library,
                                      iam_spec) -> None:
    tol = iam_spec["tolerances"]["kernel_vs_host_ref"]["float32" if dtype == np.float32 else "float16"]
    assert tol["atol"] == tol["rtol"] == 0.0
    _set_path(kernel_harness, path, case.layout.num_tokens)
    for batch in (1, 2, 3, 4):
        _check(kernel_harness, host_ref_library, case.layout, batch, case.channels, kind, dtype,
               seed=case.layout.num_tokens + case.channels + batch)


@pytest.mark.parametrize("path", [PATH_FUSED, PATH_CUB], ids=["fused", "cub"])
@pytest.mark.parametrize("layout,channels", [
    (Layout(30, 30, (300, 100, 50), (300, 300, 300)), 7),
    (Layout(40, 30, (600, 20, 2), (600, 400, 200)), 33),
    (Layout(7, 9, (3, 1), (30, 33)), 1),
    (Layout(14, 14, (49, 14, 7), (49, 98, 49)), 5),
    (Layout(14, 14, (2, 1), (98, 98)), 96),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_kernel_odd_channels_and_large_groups(layout, channels, dtype, path, kernel_harness, host_ref_library) -> None:
    _set_path(kernel_harness, path, layout.num_tokens)
    _check(kernel_harness, host_ref_library, layout, 3, channels, "few_values", dtype, seed=channels)


@pytest.mark.parametrize("batch", [1, 32])
def test_kernel_large_grid_without_cap(batch, kernel_harness, host_ref_library) -> None:
    """896 px stage 1: N = 50176 (far beyond TopK's 3840 and one CTA's shared memory): the multi-CTA path."""
    kernel_harness.sgformer_iam_cuda_set_path(PATH_AUTO)
    layout = iam_layout(8, 224, 224)
    assert kernel_harness.sgformer_iam_cuda_auto_path(layout.num_tokens) == PATH_CUB
    _check(kernel_harness, host_ref_library, layout, batch, 64, "few_values", np.float32, seed=5)


def test_kernel_batch_32_fused(kernel_harness, host_ref_library) -> None:
    kernel_harness.sgformer_iam_cuda_set_path(PATH_AUTO)
    case = all_cases()[0]  # s stage 1 at 224
    _check(kernel_harness, host_ref_library, case.layout, 32, case.channels, "distinct", np.float16, seed=32)


@pytest.fixture(scope="module")
def plugin_harness(plugin_build, kernel_harness):
    """libsgformer_iam_plugin_harness.so (CMake target in the plugin_build tree): the plugin's TensorRT path."""
    import shutil
    import subprocess

    result = subprocess.run([shutil.which("cmake") or "cmake", "--build", str(plugin_build.build_dir), "--target",
                             "sgformer_iam_plugin_harness"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return load_kernel_harness(plugin_build.build_dir / "libsgformer_iam_plugin_harness.so")


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", [c for c in all_cases() if c.variant == "s"], ids=lambda c: c.id)
def test_plugin_enqueue_bit_exact(case, dtype, plugin_harness, host_ref_library) -> None:
    """createPlugin -> configurePlugin -> getWorkspaceSize -> serialize -> runtime plugin -> enqueue, on the GPU."""
    rng = np.random.default_rng(11)
    layout, batch = case.layout, 3
    tokens = rng.standard_normal((batch, layout.num_tokens, case.channels)).astype(dtype)
    importance = importance_map("signed_zeros", batch, layout.num_tokens, rng)
    weights, biases = random_merge_params(layout, rng)
    weight, bias = np.concatenate(weights), np.concatenate(biases)
    want = iam_host(tokens, importance, weight, bias, layout.height, layout.width, layout.group_sizes,
                    layout.tier_sizes, library=host_ref_library)
    got = run_op(plugin_harness, tokens, importance, weight, bias, layout, via_plugin=True, max_batch=4)
    for g, w in zip(got, want):
        assert np.array_equal(bits(g), bits(w)), report_mismatch(g, w, 0, 0)
