"""`make engine` end to end on the CPU: calibrate -> rewrite -> TensorRT-RTX build with the real plugin -> verify.

TensorRT-RTX builds CPU-only (docs/sgformer.md, parity targets), so this runs the real TensorRT builder over our rewritten,
explicitly typed ONNX with libsgformer_plugins.so loaded. The engine cannot be executed without a GPU; verify
then runs the engine's own ONNX (sha256-checked against the manifest) in onnxruntime with the custom op, and
records that it was a stand-in.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _make_dry_run(*args: str) -> list[str]:
    """The CLI and cmake lines `make -n` prints, with the settings expanded as the recipe's shell would: make passes
    them as SGF_* environment values (never expanded by make), so the printed lines name "$SGF_X"."""
    out = subprocess.run(["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    out = out.replace("\\\n", " ")  # join recipe continuation lines
    lines = [line for line in out.splitlines() if "pipeline.cli" in line or line.startswith("cmake")]
    variables = [a for a in args if "=" in a]
    settings = subprocess.run(["make", "-s", "--no-print-directory", "settings", *variables], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    env = {**os.environ, **dict(line.split("=", 1) for line in settings.splitlines() if "=" in line)}
    expand = 'set -f; eval "set -- $LINE"; for a in "$@"; do printf "%s\\0" "$a"; done'
    words = [subprocess.run(["bash", "-c", expand], env={**env, "LINE": line}, capture_output=True, text=True,
                            check=True).stdout.split("\0")[:-1] for line in lines]
    return [shlex.join(w) for w in words]


def _engine_argv(line: str) -> list[str]:
    """The argv of a `pipeline.cli engine ...` recipe line (the shell's quoting undone)."""
    words = shlex.split(line)
    argv = []
    for word in words[words.index("pipeline.cli") + 1:]:  # make writes --images="$SGF_CALIB": one word
        argv += word.split("=", 1) if word.startswith("--") and "=" in word else [word]
    return argv


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


def plugin_layouts(engine: bytes) -> list[tuple]:
    """(height, width, group_sizes, tier_sizes) of every SGFormerIAM layer serialized in ``engine``.

    TensorRT serializes a plugin layer's fields as (int32 name length, name, NUL, int32 type, int32 count, values);
    the plugin's fields come in ``pipeline.iam.spec.ATTRIBUTES`` order, ``height`` first."""
    import re
    import struct

    from pipeline.iam import spec

    layouts = []
    for match in re.finditer(re.escape(struct.pack("<i", 7) + b"height\0"), engine):
        pos, fields = match.start(), {}
        for name in spec.ATTRIBUTES:
            tag = struct.pack("<i", len(name) + 1) + name.encode() + b"\0"
            pos = engine.index(tag, pos) + len(tag)
            _, count = struct.unpack_from("<ii", engine, pos)
            fields[name] = struct.unpack_from(f"<{count}i", engine, pos + 8)
            pos += 8 + 4 * count
        layouts.append((fields["height"][0], fields["width"][0], fields["group_sizes"], fields["tier_sizes"]))
    return sorted(layouts)


@pytest.mark.parametrize("variant,precision", [("s", "fp16"), ("tiny-test", "int8")])
def test_engine_built_by_tensorrt_rtx_and_verified(variant, precision, built_engine_dir):
    """calibrate -> rewrite -> build --max-batch 2 (conftest's ``built_engine_dir``; the S fp16 engine is the one
    real-size build of the session, shared with test_package) -> verify. The engine must hold one SGFormerIAM
    layer per significance block with the layout the rewrite gave it (read from the serialized plugin fields)."""
    from pipeline.stages.rewrite import expected_layouts

    engine_dir = built_engine_dir(precision, variant)
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    assert manifest["precision"] == precision and manifest["variant"] == variant and manifest["img_size"] == [224, 224]
    assert manifest["backend"]["flavour"] == "TensorRT-RTX"
    assert "RTX GPUs" in manifest["target"]["description"]
    assert manifest["weights"] == "random-init, seed 0"
    engine = (engine_dir / manifest["engine"]["file"]).read_bytes()
    assert len(engine) == manifest["engine"]["bytes"] > 100_000
    assert plugin_layouts(engine) == sorted((l.height, l.width, l.group_sizes, l.tier_sizes)
                                            for l in expected_layouts(variant, 224))
    assert (engine_dir / "libsgformer_plugins.so").is_file()
    if precision == "int8":
        assert manifest["calibration"]["method"] == "entropy"
    assert main(["verify", "--engine", str(engine_dir), "--num-images", "2"]) == 0
    parity = json.loads((engine_dir / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["stand_in"] and "no GPU" in parity["backend"]
    assert parity["cosine_min"] >= {"fp16": 0.9995, "int8": 0.99}[precision]
    from pipeline.core.tolerances import parity_rule

    assert parity["rule"] == parity_rule(precision, "onnxruntime", variant=variant).to_dict()  # the stand-in's rule, from the table


@pytest.fixture(scope="module")
def tiny_fp32_engine(exported, plugin_build, tmp_path_factory) -> Path:
    """One tiny-test fp32 engine folder (TensorRT-RTX, real plugin), shared; tests that change it copy it first."""
    out = tmp_path_factory.mktemp("tiny-fp32")
    assert main(["build", "--onnx", str(exported("tiny-test", 224).iam), "--out-dir", str(out), "--plugins",
                 str(plugin_build.plugin_library), "--backend", "tensorrt-rtx", "--max-batch", "2", "--precision",
                 "fp32", "--name", "my-engine"]) == 0
    return out / "my-engine"


def test_verify_refuses_a_changed_onnx(tiny_fp32_engine, tmp_path, capsys):
    """The stand-in must run the ONNX the engine was built from, not whatever sits in the folder now: verify passes
    on the folder as built, then refuses (exit 2, naming the changed file) once the ONNX copy has changed."""
    import shutil

    engine_dir = Path(shutil.copytree(tiny_fp32_engine, tmp_path / "my-engine"))
    assert main(["verify", "--engine", str(engine_dir), "--cpu", "--num-images", "2"]) == 0
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    onnx_copy = engine_dir / manifest["onnx"]["file"]
    assert onnx_copy.is_file()
    onnx_copy.write_bytes(onnx_copy.read_bytes() + b"\0")
    capsys.readouterr()
    assert main(["verify", "--engine", str(engine_dir), "--cpu", "--num-images", "2"]) == 2
    err = capsys.readouterr().err
    assert manifest["onnx"]["file"] in err and "sha256" in err and "changed after the build" in err, err


def test_run_cpu_stand_in_prints_top5(tiny_fp32_engine, tmp_path, capsys):
    """`sgformer-trt run --cpu` classifies with the engine's ONNX when no GPU is there; without --cpu it says why not."""
    from PIL import Image

    engine_dir = tiny_fp32_engine
    image = tmp_path / "photo.png"
    Image.new("RGB", (320, 240), (120, 80, 40)).save(image)
    capsys.readouterr()
    assert main(["run", "--engine", str(engine_dir), "--cpu", str(image)]) == 0
    out = capsys.readouterr().out
    assert f"{image}: 1. " in out and " 5. " in out and "stand-in" in out
    from pipeline.backends.gpu import probe_gpu

    if probe_gpu(0) is None:
        assert main(["run", "--engine", str(engine_dir), str(image)]) == 2
        assert "run --cpu" in capsys.readouterr().err


# ------------------------------------------------------------------------- planted: verify on wrong numbers
# Every hash matches (the folder is consistent), only one weight of the graph differs from the recorded weights:
# verify must fail on the numbers and record passed: false. The engine folder is made by tests/reliability_helpers
# (a stand-in engine file, no TensorRT needed), since without a GPU verify runs the engine's own ONNX anyway.


def _perturb_one_weight(src: Path, dst: Path) -> Path:
    """``src`` with one element of the classifier weight (the initializer of the node that makes ``logits``)
    moved by 10 % of that weight's largest magnitude; metadata (variant, weights record) unchanged."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    head = next(n for n in model.graph.node if model.graph.output[0].name in n.output or n.op_type == "Gemm")
    inits = {i.name: i for i in model.graph.initializer}
    name = next(i for i in head.input if i in inits and numpy_helper.to_array(inits[i]).ndim == 2)
    w = numpy_helper.to_array(inits[name]).copy()
    w.flat[0] += 0.1 * float(np.abs(w).max())
    inits[name].CopyFrom(numpy_helper.from_array(w, name))
    onnx.save(model, str(dst))
    return dst


def test_verify_onnx_passes_the_graph_as_exported(exported, tmp_path):
    """The baseline of the planted control below: the same command on the unperturbed graph passes."""
    report = tmp_path / "report.json"
    assert main(["verify", "--onnx", str(exported("tiny-test", 224).iam), "--num-images", "2",
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["passed"] is True


def test_planted_perturbed_weight_fails_verify_onnx(exported, tmp_path, capsys):
    bad = _perturb_one_weight(exported("tiny-test", 224).iam, tmp_path / "model.iam.onnx")
    report = tmp_path / "report.json"
    assert main(["verify", "--onnx", str(bad), "--num-images", "2", "--report", str(report)]) == 1
    assert capsys.readouterr().out.startswith("FAIL")
    assert json.loads(report.read_text())["passed"] is False


@pytest.mark.parametrize("perturbed", [False, True], ids=["as-exported", "planted-perturbed-weight"])
def test_verify_engine_stand_in_judges_the_numbers(exported, tmp_path, perturbed):
    """verify --engine on a consistent folder: passes with the exported graph, fails and records passed: false
    when one weight of the engine's ONNX is perturbed (the planted control of the engine path's stand-in)."""
    from reliability_helpers import publish

    src = exported("tiny-test", 224).iam
    onnx_path = _perturb_one_weight(src, tmp_path / "model.iam.onnx") if perturbed else src
    folder = publish(tmp_path / "engines", onnx_path)
    assert main(["verify", "--engine", str(folder), "--cpu", "--num-images", "2"]) == (1 if perturbed else 0)
    parity = json.loads((folder / "manifest.json").read_text())["parity"]
    assert parity["stand_in"] is True and parity["passed"] is (not perturbed)
