"""pipeline/plan.py and the engine verb's plan: the folder of a non-default input format, the dry run's per-stage
"up to date" / "will rebuild: why", reuse of an identical export across precisions, and the runs-on line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import flow
from pipeline import plan
from pipeline.core.artifact import InputFormat, Precision, WeightsRef, engine_dir_name
from pipeline.core.configs import PipelineConfig
from pipeline.core.errors import ConfigError
from pipeline.core.flavours import RTX_DEFAULT_CAPABILITIES, RTX_TARGET_DESCRIPTION
from pipeline.flow import run_pipeline
from pipeline.store.manifest import Target


def _fake_export(folder: Path, *, seed: int = 0, input_format: str = "normalized", content: bytes = b"onnx") -> Path:
    """An engine folder whose export record says model.onnx was made from tiny-test@224, seed, input_format."""
    folder.mkdir(parents=True)
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(content)
    key = {**plan.export_key("tiny-test", 224, "classify", WeightsRef.random(seed), input_format), "code": plan.code_hash("export")}
    (folder / plan.STAGES_FILE).write_text(json.dumps({"export": {"key": key, "output": plan.sha256_file(onnx_path)}}))
    return onnx_path


def _config(tmp_path: Path, **kw) -> PipelineConfig:
    return PipelineConfig(**{"variant": "tiny-test", "precision": "fp16", "out_dir": tmp_path, "until": "export", **kw})


def test_a_non_default_input_format_gets_its_own_folder(tmp_path):
    assert engine_dir_name("s", "fp16", 224) == "s-fp16-224"
    assert engine_dir_name("s", Precision.FP16, 224, input_format=InputFormat.RGB_FLOAT01) == "s-fp16-224-rgb-float01"
    config = _config(tmp_path, input_format="rgb-float01")
    assert config.engine_dir == tmp_path / "tiny-test-fp16-224-rgb-float01"
    assert config.input_format is InputFormat.RGB_FLOAT01 and config.precision is Precision.FP16  # typed at the edge
    assert _config(tmp_path).engine_dir == tmp_path / "tiny-test-fp16-224"


def test_bad_precision_names_the_option_and_the_make_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"fp8.*--precision, make: PRECISION"):
        _config(tmp_path, precision="fp8")


def test_dry_run_says_why_a_stage_will_rebuild_and_when_it_is_up_to_date(tmp_path):
    config = _config(tmp_path)
    first = run_pipeline(config, dry_run=True).plan
    assert first[0][0] == "export" and first[0][3] == "will rebuild: never made in this folder"
    _fake_export(config.engine_dir)
    assert run_pipeline(config, dry_run=True).plan[0][3] == "up to date"
    (config.engine_dir / "model.onnx").write_bytes(b"edited by hand")
    assert run_pipeline(config, dry_run=True).plan[0][3] == "will rebuild: model.onnx was modified after it was made"
    assert run_pipeline(_config(tmp_path, seed=3), dry_run=True).plan[0][3].startswith("will rebuild: weights changed")


def test_planted_stale_record_is_not_reported_up_to_date(tmp_path):
    """Control: a record whose key differs in one setting must not pass as up to date."""
    onnx_path = _fake_export(tmp_path / "f")
    record = json.loads((tmp_path / "f" / plan.STAGES_FILE).read_text())["export"]
    key = dict(record["key"], input_format="rgb-uint8")
    assert plan.staleness(record, record["key"], onnx_path) is None
    assert plan.staleness(record, key, onnx_path) == "input_format changed"


def test_export_is_reused_across_precisions_without_exporting(tmp_path, monkeypatch):
    source = _fake_export(tmp_path / "tiny-test-fp32-224", content=b"the fp32 folder's export")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although an identical export exists")

    monkeypatch.setattr(flow, "create_model", no_export)
    config = _config(tmp_path, precision="fp16")
    dry = run_pipeline(config, dry_run=True).plan
    assert dry[0][3] == f"will copy: identical output in {source}"
    result = run_pipeline(config)
    assert result.stages["export"] == f"reused {source}"
    assert (config.engine_dir / "model.onnx").read_bytes() == b"the fp32 folder's export"
    assert run_pipeline(config, dry_run=True).plan[0][3] == "up to date"


def test_planted_different_weights_or_format_are_not_reused(tmp_path):
    _fake_export(tmp_path / "tiny-test-fp32-224", seed=1)
    _fake_export(tmp_path / "tiny-test-fp32-224-rgb-uint8", input_format="rgb-uint8")
    key = {**plan.export_key("tiny-test", 224, "classify", WeightsRef.random(0), "normalized"), "code": plan.code_hash("export")}
    assert plan.find_reusable("export", key, tmp_path / "tiny-test-fp16-224" / "model.onnx") is None
    assert plan.find_export(tmp_path, "tiny-test", 224, WeightsRef.random(0)) is None
    assert plan.find_export(tmp_path, "tiny-test", 224, WeightsRef.random(1)) == tmp_path / "tiny-test-fp32-224" / "model.onnx"


def test_runs_on_names_the_gpus_and_the_ones_it_does_not():
    rtx = plan.runs_on(Target(description=RTX_TARGET_DESCRIPTION, compute_capabilities=RTX_DEFAULT_CAPABILITIES))
    assert rtx.startswith("runs on: RTX GPUs of sm_80, sm_86, sm_89, sm_120, sm_121")
    assert "not on:" in rtx and "H100" in rtx and "Jetson" in rtx
    full = plan.runs_on(Target(description="TensorRT engine for sm_90", compute_capabilities=("sm_90",),
                               gpu_name="NVIDIA H100"))
    assert "NVIDIA H100 (sm_90)" in full and "not on: other compute capabilities" in full
    assert "RTX GPUs" in plan.rtx_fallback_notice() and "H100" in plan.rtx_fallback_notice()
