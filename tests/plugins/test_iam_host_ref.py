"""SGFormerIAM host reference (C++ via ctypes) vs the PyTorch definition ``pipeline.iam.reference.iam_aggregate``.

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
from pipeline.core.errors import ConfigError, PluginLibraryError
from pipeline.iam.reference import check_layout, iam_aggregate
from pipeline.iam.host import LIBRARY_ENV_VAR, find_host_library, host_layout, iam_host

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
    _check_order_against_torch(case, kind, host_ref_library)


def test_planted_off_by_one_tier_boundary_in_the_host_reference_fails(host_ref_library, monkeypatch) -> None:
    """The host reference called with its first tier boundary one step late (the smallest shift that keeps whole
    groups: lcm of the two group sizes) must fail the order check against PyTorch."""
    import math
    import sys

    this = sys.modules[__name__]
    original = this.iam_host

    def planted(tokens, importance, weight, bias, height, width, group_sizes, tier_sizes, **kwargs):
        step = math.lcm(int(group_sizes[0]), int(group_sizes[1]))
        tiers = [int(tier_sizes[0]) + step, int(tier_sizes[1]) - step, *map(int, tier_sizes[2:])]
        return original(tokens, importance, weight, bias, height, width, group_sizes, tiers, **kwargs)

    monkeypatch.setattr(this, "iam_host", planted)
    case = next(c for c in layout_cases() if c.layout.num_tokens == 196)
    with pytest.raises(AssertionError, match="seq_row order differs"):
        _check_order_against_torch(case, "distinct", host_ref_library)


def _check_order_against_torch(case: IamCase, kind: str, host_ref_library) -> None:
    rng = np.random.default_rng(case.layout.num_tokens + len(kind))
    n = case.layout.num_tokens
    tokens = order_probe_tokens(BATCH, n)
    importance = importance_map(kind, BATCH, n, rng)
    weights = [np.arange(1, k + 1, dtype=np.float32) for k in case.layout.group_sizes]
    biases = [np.zeros(1, dtype=np.float32) for _ in case.layout.group_sizes]
    want_row, want_col = _torch_reference(tokens, importance, weights, biases, case)
    got_row, got_col = _host(tokens, importance, weights, biases, case, host_ref_library)
    assert got_row.shape == want_row.shape, f"seq_row order differs: shape {got_row.shape} != {want_row.shape}"
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


#: (height, width, group_sizes, tier_sizes): each a rule of makeIamParams, plus layouts both must accept.
LAYOUT_PROBES = [
    (14, 14, (2, 1), (98, 98)), (56, 56, (196, 56, 28), (784, 1568, 784)), (7, 7, (2, 1), (48, 1)),
    (0, 14, (2, 1), (0, 0)), (14, -1, (2, 1), (98, 98)), (32768, 32768, (2, 1), (1 << 29, 1 << 29)),
    (14, 14, (2,), (196,)), (14, 14, (1, 1, 1, 1), (49, 49, 49, 49)), (14, 14, (2, 1), (98,)),
    (14, 14, (0, 1), (98, 98)), (14, 14, (2, -1), (98, 98)), (14, 14, (2, 1), (97, 99)), (14, 14, (2, 1), (0, 196)),
    (14, 14, (2, 1), (98, 97)), (14, 14, (2, 1), (100, 100)),
]


@pytest.mark.parametrize("probe", LAYOUT_PROBES, ids=lambda p: f"{p[0]}x{p[1]}-{p[2]}-{p[3]}")
def test_python_layout_check_agrees_with_the_library(probe, host_ref_library) -> None:
    """pipeline.iam.reference.check_layout (what the torch op's fake implementation runs) restates makeIamParams' rules;
    the C library is the authority. Both must accept the same layouts with the same T and refuse the same ones."""
    height, width, groups, tiers = probe
    try:
        want = host_layout(height, width, groups, tiers, library=host_ref_library).out_tokens
    except ConfigError:
        want = None
    try:
        got = check_layout(height, width, groups, tiers).out_tokens
    except ConfigError:
        got = None
    assert got == want


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


# ------------------------------------------------------------- fast path == plain specification, bit for bit


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


@pytest.fixture()
def restore_threads(host_ref_library):
    from pipeline.iam.host import host_threads, set_host_threads

    before = host_threads(host_ref_library)
    yield set_host_threads
    set_host_threads(before, host_ref_library)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", [c for c in all_cases() if c.variant == "s"], ids=lambda c: c.id)
def test_pooled_path_is_bit_identical_to_the_plain_specification(case: IamCase, dtype, host_ref_library,
                                                                 restore_threads) -> None:
    """The radix sort + worker pool path against the std::stable_sort loops: every bit, 1-4 threads, batch 1 and 5
    (batch 5 at 4 threads: sequences do not divide evenly; batch 1: one sequence split into token chunks)."""
    rng = np.random.default_rng(case.layout.num_tokens * 13 + case.channels)
    n = case.layout.num_tokens
    weights, biases = random_merge_params(case.layout, rng)
    for batch in (1, 5):
        tokens = rng.standard_normal((batch, n, case.channels)).astype(dtype)
        importance = importance_map("signed_zeros", batch, n, rng)
        importance[-1] = importance_map("distinct", 1, n, rng)[0]
        want_row, want_col = iam_host(tokens, importance, np.concatenate(weights), np.concatenate(biases),
                                      case.layout.height, case.layout.width, case.layout.group_sizes,
                                      case.layout.tier_sizes, library=host_ref_library, plain=True)
        for threads in (1, 2, 3, 4):
            restore_threads(threads, host_ref_library)
            got_row, got_col = _host(tokens, importance, weights, biases, case, host_ref_library)
            assert got_row.dtype == dtype
            assert np.array_equal(_bits(got_row), _bits(want_row)), f"seq_row, batch {batch}, {threads} threads"
            assert np.array_equal(_bits(got_col), _bits(want_col)), f"seq_col, batch {batch}, {threads} threads"


def test_concurrent_callers_get_their_own_results(host_ref_library, restore_threads) -> None:
    """Two Python threads calling at once (ctypes releases the GIL): a caller that finds the pool busy runs inline."""
    from concurrent.futures import ThreadPoolExecutor

    restore_threads(2, host_ref_library)
    case = next(c for c in all_cases() if c.variant == "s" and c.stage == 1 and c.resolution == 224)
    rng = np.random.default_rng(5)
    weights, biases = random_merge_params(case.layout, rng)
    inputs = [(rng.standard_normal((3, case.layout.num_tokens, case.channels)).astype(np.float32),
               importance_map("few_values", 3, case.layout.num_tokens, rng)) for _ in range(4)]
    want = [_host(t, i, weights, biases, case, host_ref_library) for t, i in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda ti: _host(ti[0], ti[1], weights, biases, case, host_ref_library), inputs * 5))
    for k, (row, col) in enumerate(got):
        assert np.array_equal(row, want[k % 4][0]) and np.array_equal(col, want[k % 4][1]), f"call {k}"


def test_thread_count_is_validated(host_ref_library) -> None:
    from pipeline.iam.host import set_host_threads

    with pytest.raises(ConfigError, match="at least 1"):
        set_host_threads(0, host_ref_library)


def test_out_buffers_are_written_in_place(host_ref_library) -> None:
    from pipeline.iam.host import host_layout, run_layout

    layout = host_layout(14, 14, (2, 1), (98, 98), host_ref_library)
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((2, 196, 8)).astype(np.float32)
    importance = rng.standard_normal((2, 196)).astype(np.float32)
    weight, bias = np.ones(3, np.float32), np.zeros(2, np.float32)
    row, col = np.empty((2, 147, 8), np.float32), np.empty((2, 147, 8), np.float32)
    got = run_layout(layout, tokens, importance, weight, bias, out=(row, col))
    assert got[0] is row and got[1] is col
    want = run_layout(layout, tokens, importance, weight, bias)
    assert np.array_equal(row, want[0]) and np.array_equal(col, want[1])
    with pytest.raises(ValueError, match="C-contiguous"):
        run_layout(layout, tokens, importance, weight, bias, out=(row[:1], col))


def test_call_struct_mirror_matches_the_c_layout(host_ref_library) -> None:
    """pipeline.iam.native.IamCall is the one ctypes mirror of SgformerIamCall: every field offset and the size
    agree with the compiler's offsetof/sizeof (a reordered or retyped field would pass garbage pointers)."""
    import ctypes

    from pipeline.iam.host import _load
    from pipeline.iam.native import IamCall

    lib = _load(str(host_ref_library))
    offsets = (ctypes.c_size_t * 32)()
    count = lib.sgformer_iam_ref_call_offsets(offsets, 32)
    mirror = [getattr(IamCall, name).offset for name, _ in IamCall._fields_] + [ctypes.sizeof(IamCall)]
    assert count == len(mirror) and list(offsets[:count]) == mirror


def test_call_struct_rejects_an_unknown_token_type(host_ref_library) -> None:
    """The struct's token_type is checked by the library, not trusted (ValueError naming it)."""
    import ctypes

    from pipeline.iam.host import _load
    from pipeline.iam.native import IamCall, raise_status

    lib = _load(str(host_ref_library))
    call = IamCall(token_type=5, batch=1, height=2, width=2, channels=1)
    status = lib.sgformer_iam_ref_run(ctypes.byref(call))
    with pytest.raises(ValueError, match="token_type=5"):
        raise_status(status, lib.sgformer_iam_ref_last_error().decode())
