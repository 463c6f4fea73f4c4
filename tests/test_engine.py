"""`make engine` end to end on the CPU: calibrate -> rewrite -> TensorRT-RTX build with the real plugin -> verify.

TensorRT-RTX builds CPU-only (docs/sgformer.md, parity targets), so this runs the real TensorRT builder over our rewritten,
explicitly typed ONNX with libsgformer_plugins.so loaded. The engine cannot be executed without a GPU; verify
then runs the engine's own ONNX (sha256-checked against the manifest) in onnxruntime with the custom op, and
records that it was a stand-in.
"""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _make_dry_run(*args: str) -> list[str]:
    out = subprocess.run(["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    out = out.replace("\\\n", " ")  # join recipe continuation lines
    return [line for line in out.splitlines() if "pipeline.cli" in line or line.startswith("cmake")]


def _engine_argv(line: str) -> list[str]:
    """The argv of a `pipeline.cli engine ...` recipe line (the shell's quoting undone)."""
    words = shlex.split(line)
    return words[words.index("pipeline.cli") + 1:]


def _plan(argv: list[str], capsys, statuses: dict | None = None) -> list[tuple[str, str]]:
    """(stage, 'inputs -> output') of `sgformer-trt engine ... --dry-run`; ``statuses`` gets stage -> status."""
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()  # per stage: "stage  status", then "  inputs -> output"
    out = []
    for head, body in zip(lines[::2], lines[1::2]):
        stage, status = head.split(None, 1)
        out.append((stage, body.strip()))
        if statuses is not None:
            statuses[stage] = status
    return out


def test_make_engine_runs_the_stages_in_order(tmp_path, capsys):
    """make validates, builds the plugin, then hands the settings to `sgformer-trt engine`, which owns the order."""
    lines = _make_dry_run("engine", "VARIANT=s", "PRECISION=int8", "RES=448", "CALIB=/data/calib", "MAX_BATCH=4")
    verbs = [line.split("pipeline.cli", 1)[1].split()[0] if "pipeline.cli" in line else "cmake" for line in lines]
    order = [v for i, v in enumerate(verbs) if i == 0 or verbs[i - 1] != v]
    assert order == ["engine", "cmake", "engine"], verbs
    assert "--check" in _engine_argv(lines[0])
    argv = _engine_argv(lines[-1])
    text = " ".join(argv)
    assert "--variant s --precision int8 --img-size 448" in text
    assert "--images /data/calib" in text
    assert "--plugins build/plugins/libsgformer_plugins.so" in text and "--max-batch 4" in text
    # The stage order, now in code: the same settings with a calibration folder that exists here.
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(32):
        (calib / f"{i}.png").write_bytes(b"")  # only counted by the dry run
    argv[argv.index("/data/calib")] = str(calib)
    plan = _plan(argv, capsys)
    assert [stage for stage, _ in plan] == ["export", "calibrate", "rewrite", "build", "verify"]
    steps = dict(plan)
    assert steps["calibrate"] == f"engines/s-int8-448/model.onnx, {calib} -> engines/s-int8-448/model.int8.onnx"
    assert steps["rewrite"].endswith("-> engines/s-int8-448/model.iam.int8.onnx")
    assert steps["build"].startswith("engines/s-int8-448/model.iam.int8.onnx, build/plugins/libsgformer_plugins.so")
    assert steps["verify"] == "engines/s-int8-448 -> engines/s-int8-448/manifest.json"


def test_make_engine_topk_builds_the_standard_op_graph_without_plugin():
    lines = _make_dry_run("engine-topk", "VARIANT=m")
    build = next(line for line in lines if " build " in line)
    assert "--onnx engines/m-fp32-224/model.onnx" in build and "--name m-fp32-topk-224" in build
    assert "--plugins" not in build


def test_make_engine_fp32_skips_calibration(capsys):
    lines = _make_dry_run("engine", "PRECISION=fp32")
    plan = _plan(_engine_argv(lines[-1]), capsys)
    assert "calibrate" not in dict(plan)
    assert dict(plan)["rewrite"] == "engines/s-fp32-224/model.onnx -> engines/s-fp32-224/model.iam.onnx"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_built_by_tensorrt_rtx_and_verified(precision, built_engine_dir):
    """calibrate -> rewrite -> build --max-batch 2 (conftest's ``built_engine_dir``, shared with test_package) -> verify."""
    engine_dir = built_engine_dir(precision)
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    assert manifest["precision"] == precision and manifest["variant"] == "s" and manifest["resolution"] == 224
    assert manifest["backend"]["flavour"] == "TensorRT-RTX"
    assert "RTX GPUs" in manifest["target"]["description"]
    assert manifest["weights"] == "random-init, seed 0"
    assert (engine_dir / manifest["engine"]["file"]).stat().st_size == manifest["engine"]["bytes"] > 1_000_000
    assert (engine_dir / "libsgformer_plugins.so").is_file()
    if precision == "int8":
        assert manifest["calibration"]["method"] == "entropy"
    assert main(["verify", "--engine", str(engine_dir), "--num-images", "2"]) == 0
    parity = json.loads((engine_dir / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["stand_in"] and "no GPU" in parity["backend"]
    assert parity["cosine_min"] >= {"fp16": 0.9995, "int8": 0.99}[precision]
    from pipeline.core.tolerances import parity_rule

    assert parity["rule"] == parity_rule(precision, "onnxruntime").to_dict()  # the stand-in's rule, from the table


def test_verify_refuses_a_changed_onnx(exported, plugin_build, tmp_path):
    """The stand-in must run the ONNX the engine was built from, not whatever sits in the folder now."""
    iam = exported("tiny-test", 224).iam
    assert main(["build", "--onnx", str(iam), "--out-dir", str(tmp_path), "--plugins", str(plugin_build.plugin_library),
                 "--backend", "tensorrt-rtx", "--max-batch", "2", "--precision", "fp32"]) == 0
    engine_dir = next(tmp_path.glob("*-fp32-224"))
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    onnx_copy = engine_dir / manifest["onnx"]["file"]
    assert not onnx_copy.exists() or onnx_copy.is_file()
    onnx_copy.write_bytes(iam.read_bytes() + b"\0")
    assert main(["verify", "--engine", str(engine_dir)]) == 2


def test_run_cpu_stand_in_prints_top5(exported, plugin_build, tmp_path, capsys):
    """`sgformer-trt run --cpu` classifies with the engine's ONNX when no GPU is there; without --cpu it says why not."""
    from PIL import Image

    iam = exported("tiny-test", 224).iam
    assert main(["build", "--onnx", str(iam), "--out-dir", str(tmp_path), "--plugins", str(plugin_build.plugin_library),
                 "--backend", "tensorrt-rtx", "--max-batch", "2", "--precision", "fp32", "--name", "my-engine"]) == 0
    engine_dir = tmp_path / "my-engine"
    image = tmp_path / "photo.png"
    Image.new("RGB", (320, 240), (120, 80, 40)).save(image)
    capsys.readouterr()
    assert main(["run", "--engine", str(engine_dir), "--cpu", str(image)]) == 0
    out = capsys.readouterr().out
    assert f"{image}: 1. " in out and " 5. " in out and "stand-in" in out
    from pipeline.backends.tensorrt import probe_gpu

    if probe_gpu(0) is None:
        assert main(["run", "--engine", str(engine_dir), str(image)]) == 2
        assert "run --cpu" in capsys.readouterr().err
