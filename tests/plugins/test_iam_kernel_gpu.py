"""SGFormerIAM CUDA kernel vs the host reference, bit for bit (fp32 and fp16). Needs an NVIDIA GPU.

Uses the ctypes harness libsgformer_iam_kernel_harness.so (plugins/sgformer_iam/test/), built by the
plugin_build fixture; set SGFORMER_TEST_CUDA_ARCHS to include the GPU's architecture (e.g. "87" on Orin).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from iam_cases import IamCase, all_cases, importance_map, random_merge_params, report_mismatch
from pipeline.iam_host import iam_host

pytestmark = pytest.mark.gpu

_F32P = ctypes.POINTER(ctypes.c_float)
_U16P = ctypes.POINTER(ctypes.c_uint16)
_I32P = ctypes.POINTER(ctypes.c_int)


@pytest.fixture(scope="module")
def kernel_harness(plugin_build) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(plugin_build.kernel_harness))
    lib.sgformer_iam_cuda_device_count.restype = ctypes.c_int
    if lib.sgformer_iam_cuda_device_count() < 1:
        pytest.skip("no CUDA device visible")
    common = [ctypes.c_int] * 4 + [_I32P, _I32P, ctypes.c_int]
    lib.sgformer_iam_cuda_fp32.argtypes = [_F32P, _F32P, _F32P, _F32P, *common, _F32P, _F32P]
    lib.sgformer_iam_cuda_fp16.argtypes = [_U16P, _F32P, _F32P, _F32P, *common, _U16P, _U16P]
    lib.sgformer_iam_cuda_last_error.restype = ctypes.c_char_p
    return lib


def _run_kernel(lib: ctypes.CDLL, tokens: np.ndarray, importance: np.ndarray, weight: np.ndarray,
                bias: np.ndarray, case: IamCase) -> tuple[np.ndarray, np.ndarray]:
    L = case.layout
    groups = np.asarray(L.group_sizes, np.int32)
    tiers = np.asarray(L.tier_sizes, np.int32)
    b, _, c = tokens.shape
    row = np.empty((b, L.out_tokens, c), tokens.dtype)
    col = np.empty_like(row)
    ptr = _F32P if tokens.dtype == np.float32 else _U16P
    fn = lib.sgformer_iam_cuda_fp32 if tokens.dtype == np.float32 else lib.sgformer_iam_cuda_fp16
    status = fn(tokens.ctypes.data_as(ptr), importance.ctypes.data_as(_F32P), weight.ctypes.data_as(_F32P),
                bias.ctypes.data_as(_F32P), b, L.height, L.width, c, groups.ctypes.data_as(_I32P),
                tiers.ctypes.data_as(_I32P), len(groups), row.ctypes.data_as(ptr), col.ctypes.data_as(ptr))
    assert status == 0, lib.sgformer_iam_cuda_last_error().decode()
    return row, col


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", ["few_values", "signed_zeros", "distinct"])
@pytest.mark.parametrize("case", [c for c in all_cases() if c.variant in ("s", "b")], ids=lambda c: c.id)
def test_kernel_bit_exact_vs_host_ref(case: IamCase, kind: str, dtype, kernel_harness, host_ref_library,
                                      iam_spec) -> None:
    tol = iam_spec["tolerances"]["kernel_vs_host_ref"]["float32" if dtype == np.float32 else "float16"]
    assert tol["atol"] == tol["rtol"] == 0.0
    rng = np.random.default_rng(case.layout.num_tokens + case.channels)
    batch = 3
    n = case.layout.num_tokens
    tokens = rng.standard_normal((batch, n, case.channels)).astype(dtype)
    importance = importance_map(kind, batch, n, rng)
    weights, biases = random_merge_params(case.layout, rng)
    weight, bias = np.concatenate(weights), np.concatenate(biases)
    want_row, want_col = iam_host(tokens, importance, weight, bias, case.layout.height, case.layout.width,
                                  case.layout.group_sizes, case.layout.tier_sizes, library=host_ref_library)
    got_row, got_col = _run_kernel(kernel_harness, tokens, importance, weight, bias, case)
    assert np.array_equal(got_row.view(np.uint16 if dtype == np.float16 else np.uint32),
                          want_row.view(np.uint16 if dtype == np.float16 else np.uint32)), \
        f"seq_row: {report_mismatch(got_row, want_row, 0, 0)}"
    assert np.array_equal(got_col.view(np.uint16 if dtype == np.float16 else np.uint32),
                          want_col.view(np.uint16 if dtype == np.float16 else np.uint32)), \
        f"seq_col: {report_mismatch(got_col, want_col, 0, 0)}"


def test_kernel_large_grid_without_cap(kernel_harness, host_ref_library) -> None:
    """A 224x224 token grid (N = 50176, far beyond TopK's 3840) at sr 8 layout scaled by the official formulas."""
    from pipeline.iam import iam_layout

    layout = iam_layout(8, 224, 224)
    case = IamCase("s", 1, 896, 64, layout)
    rng = np.random.default_rng(5)
    tokens = rng.standard_normal((1, layout.num_tokens, 64)).astype(np.float32)
    importance = importance_map("few_values", 1, layout.num_tokens, rng)
    weights, biases = random_merge_params(layout, rng)
    weight, bias = np.concatenate(weights), np.concatenate(biases)
    want = iam_host(tokens, importance, weight, bias, 224, 224, layout.group_sizes, layout.tier_sizes,
                    library=host_ref_library)
    got = _run_kernel(kernel_harness, tokens, importance, weight, bias, case)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
