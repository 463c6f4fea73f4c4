"""SGFormerIAM host reference (C++ via ctypes) vs the PyTorch definition ``pipeline.iam.iam_aggregate``.

For every (variant, stage, resolution) of the model at 224 and 448, batch 2, on importance maps with many
ties: token ORDER is checked with zero tolerance (order probe), values in fp32 and fp16 with the tolerances
of plugins/sgformer_iam/spec.yaml.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iam_cases import (IamCase, all_cases, importance_map, layout_cases, order_probe_tokens,
                       random_merge_params, report_mismatch)
from pipeline.errors import ConfigError, PluginLibraryError
from pipeline.iam import iam_aggregate
from pipeline.iam_host import LIBRARY_ENV_VAR, find_host_library, iam_host

BATCH = 2


def _torch_reference(tokens: np.ndarray, importance: np.ndarray, weights: list[np.ndarray],
                     biases: list[np.ndarray], case: IamCase) -> tuple[np.ndarray, np.ndarray]:
    row, col = iam_aggregate(torch.from_numpy(tokens), torch.from_numpy(importance),
                             [torch.from_numpy(w) for w in weights], [torch.from_numpy(b) for b in biases],
                             case.layout)
    return row.numpy(), col.numpy()


def _host(tokens, importance, weights, biases, case: IamCase, library):
    L = case.layout
    return iam_host(tokens, importance, np.concatenate(weights), np.concatenate(biases), L.height, L.width,
                    L.group_sizes, L.tier_sizes, library=library)


def _assert_close(got: np.ndarray, want: np.ndarray, atol: float, rtol: float, what: str) -> None:
    ok = np.abs(got.astype(np.float64) - want.astype(np.float64)) <= atol + rtol * np.abs(want.astype(np.float64))
    assert ok.all(), f"{what}: {report_mismatch(got, want, atol, rtol)}"


@pytest.mark.parametrize("kind", ["few_values", "all_equal", "signed_zeros", "distinct"])
@pytest.mark.parametrize("case", layout_cases(), ids=lambda c: f"stage{c.stage}-{c.resolution}-N{c.layout.num_tokens}")
def test_order_matches_torch_exactly(case: IamCase, kind: str, host_ref_library) -> None:
    rng = np.random.default_rng(case.layout.num_tokens + len(kind))
    n = case.layout.num_tokens
    tokens = order_probe_tokens(BATCH, n)
    importance = importance_map(kind, BATCH, n, rng)
    weights = [np.arange(1, k + 1, dtype=np.float32) for k in case.layout.group_sizes]
    biases = [np.zeros(1, dtype=np.float32) for _ in case.layout.group_sizes]
    want_row, want_col = _torch_reference(tokens, importance, weights, biases, case)
    got_row, got_col = _host(tokens, importance, weights, biases, case, host_ref_library)
    assert np.array_equal(got_row, want_row), f"seq_row order differs: {report_mismatch(got_row, want_row, 0, 0)}"
    assert np.array_equal(got_col, want_col), f"seq_col order differs: {report_mismatch(got_col, want_col, 0, 0)}"
    if kind in ("few_values", "signed_zeros"):
        # Ties make the column-major sequence differ from the row-major one: the column path is exercised.
        assert not np.array_equal(got_row, got_col)
    if kind == "distinct":
        assert np.array_equal(got_row, got_col), "without ties both sequences hold the same tokens"


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_fp32_values_match_torch(case: IamCase, host_ref_library, iam_spec) -> None:
    tol = iam_spec["tolerances"]["host_ref_vs_torch"]["float32"]
    rng = np.random.default_rng(case.layout.num_tokens * 7 + case.channels)
    n = case.layout.num_tokens
    tokens = rng.standard_normal((BATCH, n, case.channels)).astype(np.float32)
    importance = importance_map("few_values", BATCH, n, rng)
    weights, biases = random_merge_params(case.layout, rng)
    want_row, want_col = _torch_reference(tokens, importance, weights, biases, case)
    got_row, got_col = _host(tokens, importance, weights, biases, case, host_ref_library)
    assert got_row.shape == got_col.shape == (BATCH, case.layout.out_tokens, case.channels)
    assert got_row.dtype == np.float32
    _assert_close(got_row, want_row, tol["atol"], tol["rtol"], "seq_row")
    _assert_close(got_col, want_col, tol["atol"], tol["rtol"], "seq_col")


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_fp16_values_match_torch(case: IamCase, host_ref_library, iam_spec) -> None:
    tol = iam_spec["tolerances"]["host_ref_vs_torch"]["float16"]
    rng = np.random.default_rng(case.layout.num_tokens * 11 + case.channels)
    n = case.layout.num_tokens
    tokens16 = rng.standard_normal((BATCH, n, case.channels)).astype(np.float16)
    tokens32 = tokens16.astype(np.float32)
    importance = importance_map("few_values", BATCH, n, rng)
    weights, biases = random_merge_params(case.layout, rng)
    got_row, got_col = _host(tokens16, importance, weights, biases, case, host_ref_library)
    assert got_row.dtype == np.float16
    # The fp16 path is: exact upcast, the fp32 computation, one rounding to fp16 (numpy rounds to nearest even).
    ref_row32, ref_col32 = _host(tokens32, importance, weights, biases, case, host_ref_library)
    assert np.array_equal(got_row, ref_row32.astype(np.float16))
    assert np.array_equal(got_col, ref_col32.astype(np.float16))
    want_row, want_col = _torch_reference(tokens32, importance, weights, biases, case)
    _assert_close(got_row, want_row, tol["atol"], tol["rtol"], "seq_row fp16")
    _assert_close(got_col, want_col, tol["atol"], tol["rtol"], "seq_col fp16")


def test_invalid_layout_raises_config_error(host_ref_library) -> None:
    tokens = np.zeros((1, 196, 8), dtype=np.float32)
    importance = np.zeros((1, 196), dtype=np.float32)
    with pytest.raises(ConfigError, match="tier_sizes"):
        iam_host(tokens, importance, np.ones(3, np.float32), np.zeros(2, np.float32), 14, 14, (2, 1), (98, 97),
                 library=host_ref_library)


def test_wrong_importance_dtype_raises(host_ref_library) -> None:
    tokens = np.zeros((1, 196, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="importance must be float32"):
        iam_host(tokens, np.zeros((1, 196), np.float16), np.ones(3, np.float32), np.zeros(2, np.float32), 14, 14,
                 (2, 1), (98, 98), library=host_ref_library)


def test_missing_library_says_how_to_build(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(LIBRARY_ENV_VAR, str(tmp_path / "nope.so"))
    with pytest.raises(PluginLibraryError, match="make plugins-ref"):
        find_host_library()


def test_empty_batch(host_ref_library) -> None:
    row, col = iam_host(np.zeros((0, 196, 8), np.float32), np.zeros((0, 196), np.float32), np.ones(3, np.float32),
                        np.zeros(2, np.float32), 14, 14, (2, 1), (98, 98), library=host_ref_library)
    assert row.shape == col.shape == (0, 147, 8)
