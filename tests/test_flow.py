"""run_pipeline / `sgformer-trt engine` / `make engine`: validation before any work, the stage order, reuse by hash."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from pipeline.cli import main
from pipeline.core.errors import ConfigError
from pipeline.core.tolerances import parity_rule
from pipeline.flow import PipelineConfig, check_config, run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str) -> subprocess.CompletedProcess:
    # -o: never (re)make the venv from here (a shared development venv must not be rebuilt by a test)
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("setting, message", [
    ("VARIANT=xl", "unknown variant 'xl'; expected one of s, m, b"),
    ("RES=300", "multiple of 224"),
    ("RES=2240000", "too large"),
    ("PRECISION=bf16", "invalid choice: 'bf16' (choose from 'fp32', 'fp16', 'int8')"),
    ("CKPT=missing.pth", "checkpoint missing.pth does not exist"),
    ("CKPT=my weights.pth", "checkpoint my weights.pth does not exist"),  # a path with a space reaches the CLI
])
def test_make_engine_validates_before_doing_anything(setting, message):
    before = set((ROOT / "engines").iterdir())
    result = _make("engine", setting)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "No rule to make target" not in result.stderr
    assert "cmake" not in result.stdout  # the plugin build never started
    assert set((ROOT / "engines").iterdir()) == before, "no folder for invalid settings"


def test_too_few_calibration_images_names_calib_n(tmp_path):
    folder = tmp_path / "calib dir"  # a space: quoted through make
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"")
    result = _make("engine", "PRECISION=int8", f"CALIB={folder}")
    assert result.returncode != 0
    assert "holds 3 images, fewer than the 32 asked for" in result.stderr and "CALIB_N" in result.stderr, result.stderr
    with pytest.raises(ConfigError, match="CALIB_N=3"):
        check_config(PipelineConfig(precision="int8", calib_images=folder, calib_num=32), plugin=False)
    check_config(PipelineConfig(precision="int8", calib_images=folder, calib_num=3), plugin=False)


def test_engine_verb_check_lists_valid_values(capsys):
    assert main(["engine", "--check", "--variant", "xl"]) == 2
    assert "expected one of s, m, b" in capsys.readouterr().err
    assert main(["engine", "--check", "--variant", "m", "--img-size", "448", "--precision", "int8"]) == 0
    assert "engines/m-int8-448" in capsys.readouterr().out


def test_run_pipeline_builds_verifies_and_reuses(plugin_build, tmp_path):
    """tiny-test fp32 through every stage into one folder; a second run reuses every artifact and only verifies."""
    from pipeline.data.images import sample_images

    config = PipelineConfig(variant="tiny-test", precision="fp32", img_size=224, plugin_library=plugin_build.plugin_library,
                            backend="tensorrt-rtx", max_batch=2, out_dir=tmp_path / "engines")
    images = sample_images(2, 224)
    first = run_pipeline(config, verify_images=images)
    assert first.path == tmp_path / "engines" / "tiny-test-fp32-224"
    assert first.stages == {"export": "made", "calibrate": "skipped (fp32)", "rewrite": "made", "build": "made",
                            "verify": "passed"}
    names = {p.name for p in first.path.iterdir()}
    assert {"model.onnx", "model.iam.onnx", "tiny-test-fp32.engine", "libsgformer_plugins.so", "manifest.json"} <= names
    manifest = json.loads(first.manifest_path.read_text())
    assert manifest["variant"] == "tiny-test" and manifest["precision"] == "fp32" and manifest["img_size"] == [224, 224]
    assert manifest["weights"] == "random-init, seed 0" and manifest["input_format"] == "normalized"
    assert manifest["parity"]["passed"] and manifest["parity"]["rule"] == parity_rule("fp32", "onnxruntime").to_dict()
    engine_mtime = (first.path / "tiny-test-fp32.engine").stat().st_mtime_ns
    second = run_pipeline(config, verify_images=images)
    assert second.stages == {"export": "up to date", "calibrate": "skipped (fp32)", "rewrite": "up to date",
                             "build": "up to date", "verify": "passed"}
    assert (first.path / "tiny-test-fp32.engine").stat().st_mtime_ns == engine_mtime
    # Same bytes rewritten: still up to date (the record is the content, not the file's time).
    onnx_path, iam_path = first.path / "model.onnx", first.path / "model.iam.onnx"
    exported_bytes = onnx_path.read_bytes()
    onnx_path.write_bytes(exported_bytes)
    assert run_pipeline(dataclass_replace(config, until="rewrite")).stages["rewrite"] == "up to date"
    # A changed artifact is stale: the stage that made it runs again, and so does the stage that reads it.
    changed = onnx.load(str(iam_path))
    changed.metadata_props.add(key="edited", value="by hand")
    onnx.save(changed, str(iam_path))
    third = run_pipeline(dataclass_replace(config, until="rewrite"))
    assert third.stages["export"] == "up to date" and third.stages["rewrite"] == "made", third.stages
    assert "edited" not in {p.key for p in onnx.load(str(iam_path)).metadata_props}
    onnx_path.write_bytes(exported_bytes + b"\0")
    fourth = run_pipeline(dataclass_replace(config, until="rewrite"))
    assert fourth.stages["export"] == "made" and onnx_path.read_bytes() == exported_bytes, fourth.stages


def dataclass_replace(config: PipelineConfig, **changes) -> PipelineConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_two_engine_runs_for_one_folder_take_turns(tmp_path):
    """Two `sgformer-trt engine` runs for the same folder at once (two `make engine` in two terminals): the second
    waits on the folder's run lock and then finds the export the first one made up to date, instead of both
    exporting (before the lock both said "made")."""
    argv = [sys.executable, "-m", "pipeline.cli", "engine", "--variant", "tiny-test", "--precision", "fp32",
            "--until", "export", "--out-dir", str(tmp_path / "engines")]
    runs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    export = sorted(line.split(None, 1)[1] for out, _ in outputs for line in out.splitlines()
                    if line.split()[:1] == ["export"])
    assert export == ["made", "up to date"], outputs
    folder = tmp_path / "engines" / "tiny-test-fp32-224"
    assert (folder / "model.onnx").is_file() and (folder / ".run.lock").is_file()
