"""sgformer::iam (pipeline/iam_op.py) against the reference path on the CPU: eager, torch.compile, torch.export,
autograd, create_model(iam="fused"); plus the CUDA shim's C ABI and its TensorRT-free CMake configuration.

Tolerances:
- token order: exact. Integer-valued tokens and weights make every group sum exact in any summation order, so the
  op and the reference must agree bit for bit unless a token is picked in a different order.
- fp32 values: |fused - reference| <= 2 * gamma_(k+1) * (sum_j |w_j x_j| + |b|) per element (derived in
  ``iam_op.fused_vs_reference_bound``): both paths sum the same k products, only the reduction order differs.
- logits: 1e-5, the bound of "rewritten (SGFormerIAM) vs exported ONNX" in the README parity table, which is the
  same change (the IAM group sum computed by the host reference instead of standard ops); measured 4.8e-7 for s.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from toolchains import require_tool
import torch

from pipeline.core.errors import ConfigError
from pipeline.iam.reference import iam_aggregate, iam_layout
from pipeline.iam.torch_op import FUSED_VS_REFERENCE_OP_BOUND, fused_vs_reference_bound, iam_fused
from pipeline.model.sgformer import create_model

REPO_ROOT = Path(__file__).resolve().parents[1]

# (sr, side, channels): every layout kind, s stage 1-3 at 224 and the 448 grids of stage 2-3.
LAYOUTS = [(8, 56, 64), (4, 28, 128), (2, 14, 256), (4, 56, 128), (2, 28, 96)]


@pytest.fixture(scope="module", autouse=True)
def _op_needs_the_host_library(host_library):
    """Every test here may run the op's CPU implementation (tests/conftest.py's ``host_library``)."""
    return host_library


def _inputs(sr: int, side: int, channels: int, batch: int = 2, seed: int = 0, integer: bool = False):
    layout = iam_layout(sr, side, side)
    gen = torch.Generator().manual_seed(seed)
    n = layout.num_tokens
    if integer:
        tokens = torch.randint(-8, 9, (batch, n, channels), generator=gen).float()
        weights = [torch.randint(1, 4, (k,), generator=gen).float() for k in layout.group_sizes]
        biases = [torch.randint(-2, 3, (1,), generator=gen).float() for _ in layout.group_sizes]
    else:
        tokens = torch.randn(batch, n, channels, generator=gen)
        weights = [(torch.rand(k, generator=gen) - 0.5) / k ** 0.5 for k in layout.group_sizes]
        biases = [torch.randn(1, generator=gen) * 0.1 for _ in layout.group_sizes]
    # Few distinct values and signed zeros: ties everywhere, so the tie order decides the result.
    importance = torch.tensor([0.0, -0.0, 0.125, 0.25, 0.5])[torch.randint(0, 5, (batch, n), generator=gen)]
    return tokens, importance, weights, biases, layout


@pytest.mark.parametrize("sr,side,channels", LAYOUTS)
def test_op_token_order_is_the_reference_order(sr, side, channels):
    tokens, importance, weights, biases, layout = _inputs(sr, side, channels, integer=True)
    got = iam_fused(tokens, importance, weights, biases, layout)
    want = iam_aggregate(tokens, importance, weights, biases, layout)
    for g, w in zip(got, want):
        assert g.shape == w.shape == (2, layout.out_tokens, channels)
        assert torch.equal(g, w), "a merged token differs: the op picked tokens in another order than the reference"


@pytest.mark.parametrize("sr,side,channels", LAYOUTS)
def test_op_values_within_derived_rounding_bound(sr, side, channels):
    tokens, importance, weights, biases, layout = _inputs(sr, side, channels, seed=1)
    got = iam_fused(tokens, importance, weights, biases, layout)
    want = iam_aggregate(tokens, importance, weights, biases, layout)
    # sum_j |w_j x_j| + |b| per output element: the reference path on magnitudes (same order: same importance).
    mags = iam_aggregate(tokens.abs(), importance, [w.abs() for w in weights], [b.abs() for b in biases], layout)
    bound = fused_vs_reference_bound(max(layout.group_sizes)) * 1.01  # 1 %: the magnitudes' own rounding
    for g, w, m in zip(got, want, mags):
        ratio = ((g - w).abs() / (bound * m)).max().item()
        assert ratio <= 1.0, f"error {ratio:.3g} x the bound"
    assert FUSED_VS_REFERENCE_OP_BOUND == pytest.approx(2 * 197 * 2.0 ** -24, rel=1e-4)


def test_op_fp16_rounds_the_fp32_sum_once():
    tokens, importance, weights, biases, layout = _inputs(8, 56, 64, seed=2)
    half = tokens.half()
    got = iam_fused(half, importance, weights, biases, layout)
    want = iam_aggregate(half.float(), importance, weights, biases, layout)
    # sum_j |w_j x_j| + |b| per merged value: the scale of the fp32 reduction-order error (same tokens, same order).
    scale = iam_aggregate(half.float().abs(), importance, [w.abs() for w in weights], [b.abs() for b in biases],
                          layout)
    k_max = max(layout.group_sizes)
    for g, w, sc in zip(got, want, scale):
        assert g.dtype == torch.float16
        # One rounding of the fp32 sum to fp16: at most half the fp16 spacing at |w| (spacing 2^(e-10) for
        # |w| in [2^e, 2^(e+1)), 2^-24 below the normal range), plus the fp32 order difference of the sum. A second
        # rounding (fp16 products or an fp16 accumulator) can reach a whole spacing and fails this bound.
        exponent = torch.floor(torch.log2(w.abs().clamp_min(2.0 ** -14)))
        half_spacing = torch.exp2(exponent - 10) / 2
        bound = half_spacing + fused_vs_reference_bound(k_max) * sc
        assert ((g.float() - w).abs() <= bound).all()


def _offset_view(t: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """``t``'s values in a contiguous view that starts ``offset`` elements into a larger buffer (x[1:] of a flat
    buffer): contiguous, so ``.contiguous()`` keeps it, but its first element is only element-aligned."""
    buffer = torch.full((t.numel() + offset,), float("nan"), dtype=t.dtype)
    view = buffer[offset:].view(t.shape)
    view.copy_(t)
    assert view.is_contiguous() and view.storage_offset() == offset and view.data_ptr() % 16 != 0
    return view


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.dtype == torch.float16 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_op_cpu_path_handles_offset_views_bit_exact(dtype):
    """Issue 25: tokens and importance sliced off a larger buffer (storage offset 1 and 3 elements) through the CPU
    path give the bits of the same values in fresh tensors (the host reference reads from data_ptr())."""
    tokens, importance, weights, biases, layout = _inputs(2, 14, 96)  # C = 96: the widest vector width
    tokens = tokens.to(dtype)
    want = iam_fused(tokens.clone(), importance.clone(), weights, biases, layout)
    got = iam_fused(_offset_view(tokens), _offset_view(importance, 3), weights, biases, layout)
    for g, w in zip(got, want):
        assert torch.equal(_bits(g), _bits(w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_cuda_path_call_struct_passes_offset_views_to_the_launcher(dtype, host_library):
    """The CUDA path's launch arguments (torch_op._device_call: the IamCall the shim's sgformer_iam_torch_launch
    gets) built from CPU offset views, then handed to the host reference, which takes the same struct: bit for bit
    the op's result, so pointers (storage offset included), shape and token type are what the launcher needs.
    Planted bug: the struct built from the storage's base pointer (offset dropped) is caught."""
    import ctypes

    from pipeline.iam.host import _load
    from pipeline.iam.torch_op import _device_call

    tokens, importance, weights, biases, layout = _inputs(4, 28, 64)
    tokens = tokens.to(dtype)
    weight, bias = torch.cat(weights), torch.cat(biases)
    want = iam_fused(tokens, importance, weights, biases, layout)
    lib = _load(str(host_library))
    groups = (ctypes.c_int32 * 3)(*layout.group_sizes)
    tiers = (ctypes.c_int32 * 3)(*layout.tier_sizes)

    def run(view: torch.Tensor, imp: torch.Tensor, base_pointer: bool = False):
        row, col = _offset_view(torch.zeros_like(want[0]), 2), _offset_view(torch.zeros_like(want[1]), 1)
        call = _device_call(view, imp, weight, bias, layout.height, layout.width, groups, tiers, row, col)
        if base_pointer:  # planted: what a launcher reading the storage instead of data_ptr() would get
            call.tokens = view.untyped_storage().data_ptr()
        assert lib.sgformer_iam_ref_run(ctypes.byref(call)) == 0, lib.sgformer_iam_ref_last_error()
        return row, col

    view, imp = _offset_view(tokens, 3), _offset_view(importance, 1)
    assert view.data_ptr() % 8 != 0  # not even 8-byte aligned: vector widths 2 and 4 must narrow
    for g, w in zip(run(view, imp), want):
        assert torch.equal(_bits(g), _bits(w))
    planted = run(view, imp, base_pointer=True)
    assert not all(torch.equal(_bits(g), _bits(w)) for g, w in zip(planted, want))


def test_op_rejects_bad_inputs_by_name():
    tokens, importance, weights, biases, layout = _inputs(2, 14, 8)
    weight, bias = torch.cat(weights), torch.cat(biases)
    op = torch.ops.sgformer.iam
    with pytest.raises(TypeError, match="importance must be float32"):
        op(tokens, importance.double(), weight, bias, 14, 14, list(layout.group_sizes), list(layout.tier_sizes))
    with pytest.raises(ValueError, match="weight has"):
        op(tokens, importance, weight[:-1], bias, 14, 14, list(layout.group_sizes), list(layout.tier_sizes))
    with pytest.raises(ConfigError, match="tier_sizes sum"):
        op(tokens, importance, weight, bias, 14, 14, list(layout.group_sizes), [98, 97])
    with pytest.raises(ValueError, match="N = height"):
        op(tokens[:, :100], importance[:, :100], weight, bias, 14, 14, list(layout.group_sizes),
           list(layout.tier_sizes))


def test_op_autograd_is_the_reference_gradient():
    tokens, importance, weights, biases, layout = _inputs(4, 14, 16, seed=3)
    grads = []
    for fn in (iam_fused, iam_aggregate):
        t = tokens.clone().requires_grad_()
        ws = [w.clone().requires_grad_() for w in weights]
        bs = [b.clone().requires_grad_() for b in biases]
        row, col = fn(t, importance, ws, bs, layout)
        (row.square().sum() + col.sum()).backward()
        grads.append([t.grad, *[w.grad for w in ws], *[b.grad for b in bs]])
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


class _Merge(torch.nn.Module):
    def __init__(self, weights, biases, layout):
        super().__init__()
        self.weights = torch.nn.ParameterList(weights)
        self.biases = torch.nn.ParameterList(biases)
        self.layout = layout

    def forward(self, tokens, importance):
        row, col = iam_fused(tokens, importance, list(self.weights), list(self.biases), self.layout)
        return row * 2.0 + col


def test_op_under_torch_compile_fullgraph():
    tokens, importance, weights, biases, layout = _inputs(8, 56, 32, seed=4)
    module = _Merge(weights, biases, layout).eval()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")  # fake impl through dynamo + AOTAutograd
    with torch.no_grad():
        want = module(tokens, importance)
        got = compiled(tokens, importance)
        got3 = compiled(tokens[:1].contiguous(), importance[:1].contiguous())
    assert torch.equal(got, want)
    assert torch.equal(got3, want[:1])


def test_op_under_torch_export_with_dynamic_batch():
    tokens, importance, weights, biases, layout = _inputs(4, 28, 32, batch=3, seed=5)
    module = _Merge(weights, biases, layout).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (tokens, importance), dynamic_shapes=({0: batch}, {0: batch}))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "sgformer.iam.default" in targets, targets
    with torch.no_grad():
        for b in (3, 1):
            got = program.module()(tokens[:b], importance[:b])
            assert torch.equal(got, module(tokens[:b], importance[:b]))


def test_op_has_cpu_cuda_and_meta_kernels():
    for key in ("CPU", "CUDA", "Meta"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("sgformer::iam", key), key


@pytest.mark.parametrize("variant", ["tiny-test", "s"])
def test_fused_model_gives_the_reference_logits(variant):
    reference = create_model(variant)
    fused = create_model(variant, iam="fused")
    assert all(b.attn.iam_impl == "fused" for b in fused.significance_blocks())
    assert all(b.attn.iam_impl == "reference" for b in reference.significance_blocks())
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(images), fused(images)
    assert (got - want).abs().max().item() <= 1e-5
    assert torch.equal(got.topk(5).indices, want.topk(5).indices)


def test_fused_model_under_torch_export_has_one_op_per_significance_block():
    model = create_model("tiny-test", iam="fused")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    batch = torch.export.Dim("batch", min=1, max=32)
    program = torch.export.export(model, (images,), dynamic_shapes=({0: batch},))
    ops = [n for n in program.graph.nodes if n.op == "call_function" and str(n.target) == "sgformer.iam.default"]
    assert len(ops) == len(model.significance_blocks()) == 3
    with torch.no_grad():
        assert torch.equal(program.module()(images), model(images))


def test_fused_model_exports_to_onnx_as_the_reference_graph(tmp_path):
    """The ONNX exporter traces the reference path of a fused model, so export + rewrite work unchanged."""
    from pipeline.stages.export import export_onnx

    proto = export_onnx(create_model("tiny-test", iam="fused"), variant="tiny-test", weights="random-init, seed 0")
    ops = {node.op_type for node in proto.graph.node}
    assert "TopK" in ops and not any("iam" in node.op_type.lower() for node in proto.graph.node)


def test_create_model_refuses_an_unknown_iam():
    with pytest.raises(ConfigError, match="iam='cuda' is not an IAM implementation"):
        create_model("tiny-test", iam="cuda")


# ---------------------------------------------------------------------------------------------- CUDA shim (no GPU)


def test_cuda_shim_builds_and_has_the_abi_iam_op_expects(plugin_build):
    """The CMake target sgformer_iam_torch: loads without a GPU, exports only its C entry points, static cudart."""
    from pipeline.iam.torch_op import _load_cuda

    path = plugin_build.torch_library
    assert path is not None and path.is_file()
    lib = _load_cuda(str(path))
    layout = iam_layout(8, 56, 56)
    ints = lambda v: (__import__("ctypes").c_int * len(v))(*v)  # noqa: E731
    assert lib.sgformer_iam_torch_out_tokens(56, 56, ints(layout.group_sizes), ints(layout.tier_sizes), 3) == \
        layout.out_tokens
    assert lib.sgformer_iam_torch_out_tokens(56, 56, ints(layout.group_sizes), ints((1, 2, 3)), 3) == -1
    assert b"tier_sizes" in lib.sgformer_iam_torch_last_error()
    # the fused path (N <= 6012 fits one CTA on every target): only the sorted indices of both sequences, int32
    assert lib.sgformer_iam_torch_workspace_size(2, 3136) == 2 * 2 * 3136 * 4
    assert lib.sgformer_iam_torch_device_count() >= 0
    nm, readelf = require_tool("nm"), require_tool("readelf")
    out = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    symbols = {p[-1] for p in (l.split() for l in out.splitlines()) if len(p) == 3 and p[1] == "T"}
    assert {s for s in symbols if not s.startswith("_")} == {
        "sgformer_iam_torch_api_version", "sgformer_iam_torch_device_count", "sgformer_iam_torch_workspace_size",
        "sgformer_iam_torch_out_tokens", "sgformer_iam_torch_launch", "sgformer_iam_torch_last_error"}
    dynamic = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert not [n for n in needed if "cudart" in n or "nvinfer" in n or "torch" in n or "c10" in n], needed


def test_cmake_configures_without_tensorrt(tmp_path):
    """-DSGFORMER_WITH_TRT_PLUGIN=OFF: no TensorRT headers needed; the shim and harness targets exist, the plugin not."""
    from pipeline.iam.torch_op import _find_nvcc

    nvcc, cmake = _find_nvcc(), shutil.which("cmake")
    if nvcc is None or cmake is None:
        if os.environ.get("SGFORMER_REQUIRE_NVCC") == "1":
            pytest.fail("nvcc or cmake not found")
        pytest.skip("nvcc or cmake not found")
    build = tmp_path / "build"
    result = subprocess.run([cmake, "-S", str(REPO_ROOT / "plugins" / "sgformer_iam"), "-B", str(build),
                             "-DSGFORMER_WITH_TRT_PLUGIN=OFF", "-DCMAKE_CUDA_ARCHITECTURES=90",
                             f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DTensorRT_ROOT=/nonexistent"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    targets = subprocess.run([cmake, "--build", str(build), "--target", "help"], capture_output=True, text=True,
                             check=True).stdout
    assert "sgformer_iam_torch" in targets and "sgformer_iam_kernel_harness" in targets
    assert "sgformer_plugins" not in targets


# ---------------------------------------------------------------------------------------------- CUDA (GPU only)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_cuda_op_is_bit_exact_with_the_cpu_op(dtype, request, monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to PyTorch")
    plugin_build = request.getfixturevalue("plugin_build")
    monkeypatch.setenv("SGFORMER_IAM_TORCH_LIB", str(plugin_build.torch_library))
    for sr, side, channels in LAYOUTS:
        tokens, importance, weights, biases, layout = _inputs(sr, side, channels, seed=6)
        tokens = tokens.to(dtype)
        want = iam_fused(tokens, importance, weights, biases, layout)
        got = iam_fused(tokens.cuda(), importance.cuda(), [w.cuda() for w in weights], [b.cuda() for b in biases],
                        layout)
        for g, w in zip(got, want):
            assert torch.equal(g.cpu(), w)
