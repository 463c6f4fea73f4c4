"""SGFormerIAM in a real TensorRT builder: TensorRT-RTX (pip wheels) builds an engine CPU-only.

The plugin library is loaded with the registry's load_library, an onnx.helper graph with SGFormerIAM nodes
(domain "trt.plugins", dynamic batch 1..4) is parsed by the ONNX parser and serialized into an engine.
Runs in a child process (trt_rtx_build_probe.py) whose LD_LIBRARY_PATH holds the unversioned
libtensorrt_rtx.so symlink (pipeline/trt_backend.py). Needs: tensorrt-rtx-cu13, -libs, -bindings ==1.7.1.116.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.iam import spec as plugin_spec
from pipeline.iam.reference import iam_layout
from pipeline.backends.rtx_library import ensure_rtx_parser_library

PROBE = Path(__file__).with_name("trt_rtx_build_probe.py")
MAX_BATCH = 4

pytestmark = pytest.mark.skipif(
    (importlib.util.find_spec("tensorrt_rtx") is None or importlib.util.find_spec("tensorrt_rtx_libs") is None)
    and os.environ.get("SGFORMER_REQUIRE_RTX") != "1",  # CI: fail instead (tests/conftest.py policy)
    reason="TensorRT-RTX not installed (pip install tensorrt-rtx-cu13==1.7.1.116 tensorrt-rtx-cu13-libs==1.7.1.116 "
           "tensorrt-rtx-cu13-bindings==1.7.1.116)")


def _iam_graph(nodes: list[tuple[int, int, int]], token_type: int = TensorProto.FLOAT,
               break_tiers: bool = False) -> onnx.ModelProto:
    """One SGFormerIAM node per (sr, grid, C); tokens/importance are graph inputs, weights initializers."""
    graph_nodes, inputs, outputs, inits = [], [], [], []
    rng = np.random.default_rng(0)
    for i, (sr, grid, channels) in enumerate(nodes):
        layout = iam_layout(sr, grid, grid)
        n = layout.num_tokens
        inputs += [helper.make_tensor_value_info(f"tokens{i}", token_type, ["batch", n, channels]),
                   helper.make_tensor_value_info(f"importance{i}", TensorProto.FLOAT, ["batch", n])]
        inits += [numpy_helper.from_array(rng.standard_normal(sum(layout.group_sizes)).astype(np.float32),
                                          f"agg_weight{i}"),
                  numpy_helper.from_array(rng.standard_normal(len(layout.group_sizes)).astype(np.float32),
                                          f"agg_bias{i}")]
        tiers = list(layout.tier_sizes)
        if break_tiers:
            tiers[0] += 1
        graph_nodes.append(helper.make_node(
            plugin_spec.PLUGIN_NAME, [f"tokens{i}", f"importance{i}", f"agg_weight{i}", f"agg_bias{i}"],
            [f"seq_row{i}", f"seq_col{i}"], name=f"iam{i}", domain=plugin_spec.ONNX_DOMAIN,
            **{plugin_spec.ATTR_HEIGHT: grid, plugin_spec.ATTR_WIDTH: grid,
               plugin_spec.ATTR_GROUP_SIZES: list(layout.group_sizes), plugin_spec.ATTR_TIER_SIZES: tiers}))
        outputs += [helper.make_tensor_value_info(f"seq_{kind}{i}", token_type, ["batch", layout.out_tokens, channels])
                    for kind in ("row", "col")]
    graph = helper.make_graph(graph_nodes, "sgformer_iam_probe", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(plugin_spec.ONNX_DOMAIN, 1)])


def _build(model: onnx.ModelProto, plugin_library: Path, tmp_path: Path) -> tuple[dict, str]:
    onnx_path = tmp_path / "iam.onnx"
    onnx.save(model, onnx_path)
    env = dict(os.environ)
    link = ensure_rtx_parser_library()  # the unversioned libtensorrt_rtx.so the parser dlopens
    if link.needs_library_path is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(link.needs_library_path), env.get("LD_LIBRARY_PATH")]))
    env["SGFORMER_IAM_TRACE"] = "1"
    proc = subprocess.run([sys.executable, str(PROBE), str(plugin_library), str(onnx_path), str(MAX_BATCH)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (f"probe process failed (exit {proc.returncode}):\n"
                                            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):]), proc.stderr


def _traced_methods(stderr: str) -> list[str]:
    seen: list[str] = []
    for line in stderr.splitlines():
        if ": trace: " in line:
            method = line.split(": trace: ", 1)[1].strip()
            if method not in seen:
                seen.append(method)
    return seen


def test_engine_builds_cpu_only_with_plugin(plugin_build, tmp_path) -> None:
    # sr2 at 224 (N=196, C=256), sr8 at 224 (N=3136, C=64) and sr8 at 448 (N=12544 > TopK's 3840 cap).
    model = _iam_graph([(2, 14, 256), (8, 56, 64), (8, 112, 64)])
    result, stderr = _build(model, plugin_build.plugin_library, tmp_path)
    assert result["library_loaded"], result.get("load_error")
    assert result["creator_found"]
    assert result["parsed"], result["parser_errors"]
    assert result["engine_bytes"] > 0, "\n".join(result["log"][-40:])
    shapes = {o["name"]: o["shape"] for o in result["outputs"]}
    assert shapes["seq_row0"] == shapes["seq_col0"] == [-1, 147, 256]
    assert shapes["seq_row1"] == [-1, 60, 64]
    assert shapes["seq_row2"] == [-1, 240, 64]
    methods = _traced_methods(stderr)
    print(f"TensorRT-RTX {result['trt_version']}: engine {result['engine_bytes']} bytes in {result['build_s']} s; "
          f"plugin methods called: {methods}")
    for needed in ("createPlugin", "getOutputShapes", "supportsFormatCombination", "getWorkspaceSize",
                   "getFieldsToSerialize"):
        assert needed in methods, f"{needed} not called; called: {methods}"
    assert "enqueue" not in methods, "a CPU-only build must not run the kernel"


def test_engine_builds_with_fp16_tokens(plugin_build, tmp_path) -> None:
    result, _ = _build(_iam_graph([(4, 28, 128)], token_type=TensorProto.FLOAT16), plugin_build.plugin_library,
                       tmp_path)
    assert result["parsed"], result["parser_errors"]
    assert result["engine_bytes"] > 0, "\n".join(result["log"][-40:])
    assert all(o["dtype"].endswith("HALF") for o in result["outputs"]), result["outputs"]


def test_bad_attributes_fail_with_named_field(plugin_build, tmp_path) -> None:
    result, stderr = _build(_iam_graph([(2, 14, 64)], break_tiers=True), plugin_build.plugin_library, tmp_path)
    assert result["creator_found"]
    assert not result["parsed"]
    assert result["engine_bytes"] == 0
    message = [line for line in stderr.splitlines() if line.startswith("SGFormerIAM: createPlugin")]
    assert message and "tier_sizes" in message[0], stderr[-2000:]
