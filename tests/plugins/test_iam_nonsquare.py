"""SGFormerIAM at H != W (issue 22): the host reference, the emulated CUDA kernel and the plugin's enqueue path.

Every other IAM test runs square grids, where a swapped height/width or a transposed column-major relayout goes
unnoticed. Here the grids are those of a 448x672 input (stage 1: 112x168, sr 8; stage 2: 56x84, sr 4; stage 3:
28x42, sr 2) and of a tall 672x448 input, so rows != columns everywhere:

- the host reference against an independent numpy statement of the contract (row-major index h*W + w; the
  column-major sequence sorts the map relaid column-major, index w*H + h, ties to the lower column-major index),
  on exact order-probe tokens, zero tolerance; a planted control (H and W swapped in the statement) must differ;
- the emulated kernel (plugins/sgformer_iam/cudahost, the fixture build of test_iam_kernel_emu.py, shared cache)
  and the plugin's IPluginV3 enqueue path against the host reference, bit for bit, fp32 and fp16.

Only public helpers of iam_cases / iam_kernel_api are used; the kernel sources are compiled unmodified.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from iam_cases import importance_map, order_probe_tokens, random_merge_params, report_mismatch
from iam_kernel_api import bits, load_kernel_harness, run_op
from pipeline.iam.host import iam_host
from pipeline.iam.reference import IamLayout, iam_layout

REPO_ROOT = Path(__file__).resolve().parents[2]
CUDAHOST_DIR = REPO_ROOT / "plugins" / "sgformer_iam" / "cudahost"
BUILD_DIR = REPO_ROOT / "build" / "pytest-cudahost"

#: (stage, sr, rows, cols) of the significance blocks of a 448x672 input, and stage 1-2 of a tall 672x448 one.
WIDE = [(1, 8, 112, 168), (2, 4, 56, 84), (3, 2, 28, 42)]
TALL = [(1, 8, 168, 112), (2, 4, 84, 56)]
GRIDS = [pytest.param(iam_layout(sr, h, w), id=f"stage{s}-{h}x{w}") for s, sr, h, w in WIDE + TALL]


# ------------------------------------------------------------------------ the contract, stated again in numpy


def _contract(tokens: np.ndarray, importance: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray],
              layout: IamLayout, *, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(seq_row, seq_col) by the written contract, for a grid of ``rows`` x ``cols`` (row-major tokens)."""
    b, n, c = tokens.shape
    # column-major position p = w*rows + h holds row-major token h*cols + w
    col_to_row = np.arange(n).reshape(rows, cols).T.ravel()

    def merge(order: np.ndarray) -> np.ndarray:
        out, start = [], 0
        for k, size, w, bias in zip(layout.group_sizes, layout.tier_sizes, weights, biases):
            picked = tokens[np.arange(b)[:, None], order[:, start:start + size]]  # [B, size, C]
            start += size
            groups = picked.reshape(b, size // k, k, c).astype(np.float64)
            out.append(np.einsum("bgkc,k->bgc", groups, w.astype(np.float64)) + float(bias[0]))
        return np.concatenate(out, axis=1).astype(np.float32)

    row_order = np.argsort(importance, axis=1, kind="stable")  # ties: lower row-major index first
    col_map = importance[:, col_to_row]
    col_order = col_to_row[np.argsort(col_map, axis=1, kind="stable")]  # ties: lower column-major index first
    return merge(row_order), merge(col_order)


def _probe(layout: IamLayout, kind: str, seed: int):
    rng = np.random.default_rng(seed)
    n = layout.num_tokens
    tokens = order_probe_tokens(2, n)
    importance = importance_map(kind, 2, n, rng)
    weights = [np.arange(1, k + 1, dtype=np.float32) for k in layout.group_sizes]  # exact integer sums
    biases = [np.zeros(1, dtype=np.float32) for _ in layout.group_sizes]
    return tokens, importance, weights, biases


def _host(tokens, importance, weights, biases, layout: IamLayout, library):
    return iam_host(tokens, importance, np.concatenate(weights), np.concatenate(biases), layout.height,
                    layout.width, layout.group_sizes, layout.tier_sizes, library=library)


@pytest.mark.parametrize("kind", ["few_values", "signed_zeros", "distinct"])
@pytest.mark.parametrize("layout", GRIDS)
def test_host_reference_follows_the_contract_at_h_ne_w(layout: IamLayout, kind: str, host_ref_library) -> None:
    tokens, importance, weights, biases = _probe(layout, kind, seed=layout.num_tokens + len(kind))
    want_row, want_col = _contract(tokens, importance, weights, biases, layout, rows=layout.height,
                                   cols=layout.width)
    got_row, got_col = _host(tokens, importance, weights, biases, layout, host_ref_library)
    assert np.array_equal(got_row, want_row), f"seq_row: {report_mismatch(got_row, want_row, 0, 0)}"
    assert np.array_equal(got_col, want_col), f"seq_col: {report_mismatch(got_col, want_col, 0, 0)}"
    if kind != "distinct":  # with ties the column-major tie order makes a different sequence: that path ran
        assert not np.array_equal(got_row, got_col)


@pytest.mark.parametrize("layout", GRIDS[:1])
def test_planted_swapped_height_and_width_is_caught(layout: IamLayout, host_ref_library) -> None:
    """Control: the contract with rows and columns swapped (the bug a square grid hides) disagrees with the host."""
    tokens, importance, weights, biases = _probe(layout, "few_values", seed=1)
    _, wrong_col = _contract(tokens, importance, weights, biases, layout, rows=layout.width, cols=layout.height)
    _, got_col = _host(tokens, importance, weights, biases, layout, host_ref_library)
    assert not np.array_equal(got_col, wrong_col)


# --------------------------------------------------------------------------- emulated kernel and plugin


def _cu2host():
    spec = importlib.util.spec_from_file_location("cu2host", CUDAHOST_DIR / "cu2host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def emu(trt_include_dir: Path):
    """The kernel + plugin harness compiled through cudahost (same build and cache as test_iam_kernel_emu.py)."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.fail("g++ not found: the cudahost tests compile the CUDA sources with it (CI has g++ 12)")
    lib = load_kernel_harness(_cu2host().build(BUILD_DIR / "base", trt_include_dir, jobs=os.cpu_count() or 2))
    lib.cudahost_set_device(90, 0, 132)
    yield lib
    lib.cudahost_set_device(90, 0, 132)


def _random_case(layout: IamLayout, batch: int, channels: int, kind: str, dtype, seed: int):
    rng = np.random.default_rng(seed)
    tokens = rng.standard_normal((batch, layout.num_tokens, channels)).astype(dtype)
    importance = importance_map(kind, batch, layout.num_tokens, rng)
    weights, biases = random_merge_params(layout, rng)
    return tokens, importance, np.concatenate(weights), np.concatenate(biases)


def _bit_exact(emu, host_ref_library, layout, batch, channels, kind, dtype, seed, **kw) -> None:
    tokens, importance, weight, bias = _random_case(layout, batch, channels, kind, dtype, seed)
    want = iam_host(tokens, importance, weight, bias, layout.height, layout.width, layout.group_sizes,
                    layout.tier_sizes, library=host_ref_library)
    got = run_op(emu, tokens, importance, weight, bias, layout, **kw)
    for name, g, w in zip(("seq_row", "seq_col"), got, want):
        assert np.array_equal(bits(g), bits(w)), f"{name} at {layout.height}x{layout.width}: " \
                                                 f"{report_mismatch(g, w, 0, 0)}"


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("layout", GRIDS)
def test_emulated_kernel_is_bit_exact_at_h_ne_w(emu, host_ref_library, layout: IamLayout, dtype) -> None:
    kind = "signed_zeros" if dtype == np.float32 else "few_values"
    _bit_exact(emu, host_ref_library, layout, 2, 8, kind, dtype, seed=layout.num_tokens)


def test_emulated_kernel_multi_cta_path_at_h_ne_w(emu, host_ref_library) -> None:
    """sm_86 (99 KiB shared memory) sends the 18,816-token stage 1 of 448x672 to the multi-CTA CUB path."""
    emu.cudahost_set_device(86, 0, 0)
    try:
        _bit_exact(emu, host_ref_library, iam_layout(8, 112, 168), 1, 4, "all_equal", np.float32, seed=3)
    finally:
        emu.cudahost_set_device(90, 0, 132)


@pytest.mark.parametrize("layout,dtype", [(GRIDS[1].values[0], np.float16), (GRIDS[4].values[0], np.float32)],
                         ids=["56x84-fp16", "84x56-fp32"])
def test_plugin_enqueue_is_bit_exact_at_h_ne_w(emu, host_ref_library, layout: IamLayout, dtype) -> None:
    _bit_exact(emu, host_ref_library, layout, 2, 8, "signed_zeros", dtype, seed=5, via_plugin=True, max_batch=4)
