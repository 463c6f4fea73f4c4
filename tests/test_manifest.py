"""manifest.json: schema round trip, validation messages, and the engine/machine compatibility check."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.store.manifest import (
    BatchProfile,
    BuildRecord,
    Calibration,
    EngineCompatibilityError,
    FileRef,
    Manifest,
    ManifestError,
    RuntimeEnv,
    Target,
    TensorSpec,
    check_engine_compatible,
    read_manifest,
    with_parity,
    write_manifest,
)

SHA = "ab" * 32


def make_manifest(**overrides) -> Manifest:
    fields = dict(
        variant="s",
        img_size=(224, 224),
        precision="fp16",
        weights="random-init, seed 0",
        engine=FileRef("s-fp16.engine", SHA, 1234),
        onnx=FileRef("s.iam.fp16.onnx", SHA),
        plugin=FileRef("libsgformer_plugins.so", SHA),
        backend_flavour="TensorRT",
        backend_version="10.14.1.48",
        cuda_version="12.9",
        target=Target("TensorRT engine for sm_89 (NVIDIA GeForce RTX 4090)", ("sm_89",), "NVIDIA GeForce RTX 4090"),
        inputs=(TensorSpec("images", (-1, 3, 224, 224), "float32"),),
        outputs=(TensorSpec("logits", (-1, 1000), "float32"),),
        batch=BatchProfile(1, 4, 8),
        build=BuildRecord(12.5, "2026-11-29T00:00:00+00:00", "host x86_64 Linux", 4096, 3),
    )
    fields.update(overrides)
    return Manifest(**fields)


def test_round_trip_through_json(tmp_path):
    manifest = make_manifest(calibration=Calibration("cd" * 32, "entropy"))
    manifest = with_parity(manifest, {"max_abs_diff": 1e-3, "top1_agreement": 1.0})
    path = write_manifest(tmp_path, manifest)
    assert json.loads(path.read_text())["backend"] == {"flavour": "TensorRT", "version": "10.14.1.48"}
    assert read_manifest(tmp_path) == manifest
    assert read_manifest(path) == manifest


def test_optional_parts_may_be_null(tmp_path):
    manifest = make_manifest(plugin=None, cuda_version=None)
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.pop("engine"), "lacks engine"),
        (lambda d: d.update(precision="fp8"), "'precision'"),
        (lambda d: d.update(img_size="224"), "'img_size'"),
        (lambda d: d["backend"].update(flavour="TensorRT-LLM"), "'backend.flavour'"),
        (lambda d: d["target"].update(compute_capabilities=["89"]), "target.compute_capabilities"),
        (lambda d: d["batch"].update(min=9), "'batch'"),
        (lambda d: d["engine"].update(sha256="abc"), "'engine.sha256'"),
        (lambda d: d.update(schema=2), "'schema'"),
        (lambda d: d.update(inputs=[]), "inputs/outputs"),
    ],
)
def test_schema_violations_name_the_key(tmp_path, mutate, fragment):
    data = make_manifest().to_dict()
    mutate(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        read_manifest(tmp_path)


def test_missing_and_garbage_manifest(tmp_path):
    with pytest.raises(ManifestError, match="sgformer-trt build"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        read_manifest(tmp_path)


def test_compatible_engine_passes():
    check_engine_compatible(make_manifest(), RuntimeEnv("TensorRT", "10.14.1.48", "sm_89"))


def test_version_and_jetson_arch_mismatch_message():
    with pytest.raises(EngineCompatibilityError) as info:
        check_engine_compatible(make_manifest(), RuntimeEnv("TensorRT", "10.3.0.30", "sm_87"))
    assert str(info.value) == (
        "engine built with TensorRT 10.14 for sm_89; this machine has TensorRT 10.3 and sm_87 (Orin): "
        "rebuild on this device with make engine"
    )


def test_patch_version_mismatch_is_refused():
    with pytest.raises(EngineCompatibilityError, match="TensorRT 10.14 for sm_89; this machine has TensorRT 10.14"):
        check_engine_compatible(make_manifest(), RuntimeEnv("TensorRT", "10.14.2.1", "sm_89"))


def test_version_compatible_engine_runs_on_newer_same_major():
    target = dataclasses.replace(make_manifest().target, version_compatible=True)
    manifest = make_manifest(target=target)
    check_engine_compatible(manifest, RuntimeEnv("TensorRT", "10.15.0.1", "sm_89"))
    with pytest.raises(EngineCompatibilityError):
        check_engine_compatible(manifest, RuntimeEnv("TensorRT", "10.3.0.30", "sm_89"))
    with pytest.raises(EngineCompatibilityError):
        check_engine_compatible(manifest, RuntimeEnv("TensorRT", "11.0.0.1", "sm_89"))


def test_ampere_plus_excludes_turing_and_jetson():
    target = Target("TensorRT engine for Ampere and newer dGPUs", (), None, "ampere_plus")
    manifest = make_manifest(target=target)
    check_engine_compatible(manifest, RuntimeEnv("TensorRT", "10.14.1.48", "sm_90"))
    for cc in ("sm_75", "sm_87"):
        with pytest.raises(EngineCompatibilityError, match="sm_80\\+"):
            check_engine_compatible(manifest, RuntimeEnv("TensorRT", "10.14.1.48", cc))


def test_rtx_engine_refused_on_full_tensorrt_and_hopper():
    manifest = make_manifest(
        backend_flavour="TensorRT-RTX", backend_version="1.7.1.116",
        target=Target("TensorRT-RTX engine for RTX GPUs", ("sm_80", "sm_86", "sm_89", "sm_120", "sm_121")),
    )
    check_engine_compatible(manifest, RuntimeEnv("TensorRT-RTX", "1.7.1.116", "sm_120"))
    with pytest.raises(EngineCompatibilityError, match="TensorRT-RTX 1.7 for .*this machine has TensorRT 10.14"):
        check_engine_compatible(manifest, RuntimeEnv("TensorRT", "10.14.1.48", "sm_89"))
    with pytest.raises(EngineCompatibilityError, match="sm_90"):
        check_engine_compatible(manifest, RuntimeEnv("TensorRT-RTX", "1.7.1.116", "sm_90"))


def test_no_gpu_is_its_own_message():
    with pytest.raises(EngineCompatibilityError, match="needs an NVIDIA GPU"):
        check_engine_compatible(make_manifest(), RuntimeEnv("TensorRT", "10.14.1.48", None))
