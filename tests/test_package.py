"""`sgformer-trt package --triton / --deepstream` from an engine directory.

End to end on a real engine directory that `build` made with TensorRT-RTX (session fixture ``built_engine_dir``):
the Triton config.pbtxt is parsed with Triton's own ``ModelConfig`` protobuf (tritonclient's model_config_pb2)
and every value is checked against the manifest; the DeepStream nvinfer config is parsed as the key file it is
and checked the same way. Refusals (changed engine, input format DeepStream cannot express, min batch > 1) run
on small synthetic engine directories.
"""
from __future__ import annotations

import dataclasses

import configparser
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.hashing import sha256_file
from pipeline.store.manifest import (BatchProfile, BuildRecord, FileRef, Manifest, Target, TensorSpec, read_manifest,
                               write_manifest)
from pipeline.core.errors import IntegrityError
from pipeline.apps.package import DEEPSTREAM_CONFIG_NAME, PackageError, package_deepstream, package_triton

TRITON_DTYPE = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}


def _model_config_pb2():
    """tritonclient's generated ModelConfig module, loaded by file (its grpc package __init__ needs grpcio)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("tritonclient is not installed: make venv installs it (pip install --no-deps 'tritonclient==2.73.0')")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _parse_triton(text: str):
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    return pb2, text_format.Parse(text, pb2.ModelConfig())


def _parse_deepstream(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive in GKeyFile
    parser.read_string(path.read_text())
    assert parser.sections() == ["property"]
    return dict(parser["property"])


# ------------------------------------------------------------------------------------------------ synthetic dirs


def _fake_engine_dir(folder: Path, *, input_format: str | None = "rgb-float01", min_batch: int = 1,
                     precision: str = "fp16", dtype: str = "float32", variant: str = "s",
                     outputs: tuple = (TensorSpec("logits", (-1, 1000), "float32"),)) -> Path:
    folder.mkdir(parents=True)
    engine = folder / f"s-{precision}.engine"
    engine.write_bytes(b"not a real engine, but the bytes the manifest records" * 10)
    plugin = folder / "libsgformer_plugins.so"
    plugin.write_bytes(b"\x7fELF stand-in")
    onnx_file = folder / "model.iam.onnx"  # named by the manifest but not deployed: package does not need it
    onnx_file.write_bytes(b"")
    onnx_ref = FileRef(onnx_file.name, sha256_file(onnx_file))
    onnx_file.unlink()
    manifest = Manifest(
        variant=variant, img_size=(224, 224), precision=precision, weights="random-init, seed 0",
        engine=FileRef(engine.name, sha256_file(engine), engine.stat().st_size),
        onnx=onnx_ref,
        plugin=FileRef(plugin.name, sha256_file(plugin)),
        backend_flavour="TensorRT", backend_version="10.14.1", cuda_version="12.6",
        target=Target("sm_87 only", ("sm_87",)),
        inputs=(TensorSpec("images", (-1, 3, 224, 224), dtype),), outputs=outputs,
        batch=BatchProfile(min_batch, max(min_batch, 2), 8),
        build=BuildRecord(seconds=1.0, created="2026-01-01T00:00:00+00:00", host="test"),
        **({} if input_format is None else {"input_format": input_format}),
    )
    write_manifest(folder, manifest)  # sealed: hand edits after this are integrity errors
    return folder


def test_triton_package_of_a_users_own_model_lists_its_outputs_without_labels(tmp_path) -> None:
    """An engine built from a user's own graph (a detector with SG-Former inside, `verify --against`): Triton gets
    every input and output as the manifest records them, no ImageNet labels and no claim about the preprocessing;
    DeepStream (a classifier's nvinfer config here) still refuses it, naming what to do."""
    outputs = (TensorSpec("boxes", (-1, 100, 4), "float32"), TensorSpec("scores", (-1, 100), "float32"))
    src = _fake_engine_dir(tmp_path / "det", variant="foreign", outputs=outputs, input_format=None)
    made = package_triton(tmp_path / "repo", src, name="my_detector")
    pb2, config = _parse_triton(made.config.read_text())
    assert [(o.name, list(o.dims), o.data_type, o.label_filename) for o in config.output] == [
        ("boxes", [100, 4], pb2.TYPE_FP32, ""), ("scores", [100], pb2.TYPE_FP32, "")]
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [3, 224, 224])]
    assert sorted(p.name for p in made.model_dir.iterdir()) == ["1", "README.md", "config.pbtxt",
                                                                 "libsgformer_plugins.so"]
    readme = made.readme.read_text()
    assert "a model of your own" in readme and "`boxes` float32 `[N, 100, 4]`" in readme
    assert "ImageNet mean" not in readme and "center crop" not in readme  # no preprocessing claim: not our graph
    with pytest.raises(PackageError, match="foreign graph .* 2 outputs"):
        package_deepstream(tmp_path / "ds", src)
    # planted: the same engine recorded as SG-Former's classifier gets labels on output 0, so the check above can fail
    classifier = package_triton(tmp_path / "repo2", _fake_engine_dir(tmp_path / "cls"), name="cls")
    assert _parse_triton(classifier.config.read_text())[1].output[0].label_filename


def test_changed_engine_is_refused_before_anything_is_written(tmp_path) -> None:
    src = _fake_engine_dir(tmp_path / "e")
    engine = src / "s-fp16.engine"
    engine.write_bytes(engine.read_bytes()[:-1] + b"!")  # same size, other bytes
    with pytest.raises(IntegrityError, match="engine s-fp16.engine has sha256"):
        package_triton(tmp_path / "repo", src)
    engine.write_bytes(b"short")
    with pytest.raises(IntegrityError, match="engine s-fp16.engine is 5 bytes"):
        package_deepstream(tmp_path / "ds", src)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
    assert not (tmp_path / "ds").exists()


def test_changed_plugin_is_refused(tmp_path) -> None:
    src = _fake_engine_dir(tmp_path / "e")
    (src / "libsgformer_plugins.so").write_bytes(b"another build")
    with pytest.raises(IntegrityError, match="plugin library libsgformer_plugins.so has sha256"):
        package_triton(tmp_path / "repo", src)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_an_onnx_in_the_folder_is_checked_too(tmp_path) -> None:
    """Package runs the same integrity check as verify/run: an ONNX that is there must be the one built from."""
    src = _fake_engine_dir(tmp_path / "e")
    assert package_triton(tmp_path / "ok", src)  # without the ONNX: engine + plugin checks only
    (src / "model.iam.onnx").write_bytes(b"some other graph")
    with pytest.raises(IntegrityError, match="ONNX model.iam.onnx has sha256"):
        package_deepstream(tmp_path / "ds", src)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("input_format, why", [(None, "per-channel std"), ("normalized", "per-channel std"),
                                               ("rgb-uint8", "float tensors")])
def test_deepstream_refuses_input_formats_it_cannot_express(tmp_path, input_format, why) -> None:
    src = _fake_engine_dir(tmp_path / "e", input_format=input_format,
                           dtype="uint8" if input_format == "rgb-uint8" else "float32")
    with pytest.raises(PackageError, match=why) as info:
        package_deepstream(tmp_path / "ds", src)
    assert "make engine INPUT_FORMAT=rgb-float01" in str(info.value)
    assert not (tmp_path / "ds").exists()


def test_triton_refuses_a_profile_that_does_not_start_at_one(tmp_path) -> None:
    src = _fake_engine_dir(tmp_path / "e", min_batch=2)
    with pytest.raises(PackageError, match="--min-batch 1"):
        package_triton(tmp_path / "repo", src)


def test_existing_package_needs_force(tmp_path) -> None:
    src = _fake_engine_dir(tmp_path / "e")
    package_triton(tmp_path / "repo", src, name="m")
    with pytest.raises(PackageError, match="--force"):
        package_triton(tmp_path / "repo", src, name="m")
    package_triton(tmp_path / "repo", src, name="m", force=True)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["m"]  # no temp folders left behind


def test_cli_without_a_target_is_a_one_line_error(tmp_path, capsys) -> None:
    src = _fake_engine_dir(tmp_path / "e")
    assert main(["package", str(src)]) == 2
    assert "pass --triton REPO and/or --deepstream DIR" in capsys.readouterr().err


def test_triton_uint8_input_and_preferred_batches_from_the_manifest(tmp_path) -> None:
    src = _fake_engine_dir(tmp_path / "e", input_format="rgb-uint8", dtype="uint8")
    pkg = package_triton(tmp_path / "repo", src, name="u8")
    _, config = _parse_triton(pkg.config.read_text())
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.input[0].data_type == _model_config_pb2().TYPE_UINT8


# ------------------------------------------------------------------------------------------------ real engine


@pytest.fixture(scope="module")
def engine_dir(built_engine_dir) -> Path:
    return built_engine_dir("fp16")


def test_triton_package_from_a_built_engine_dir(engine_dir, tmp_path) -> None:
    manifest = read_manifest(engine_dir)
    repo = tmp_path / "repo"
    assert main(["package", "--triton", str(repo), str(engine_dir), "--model-name", "sgformer_s"]) == 0
    model = repo / "sgformer_s"
    pb2, config = _parse_triton((model / "config.pbtxt").read_text())
    assert config.name == "sgformer_s"
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == manifest.batch.max == 2
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        (t.name, TRITON_DTYPE[t.dtype], list(t.shape[1:])) for t in manifest.inputs]
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        (t.name, TRITON_DTYPE[t.dtype], list(t.shape[1:])) for t in manifest.outputs]
    assert list(config.dynamic_batching.preferred_batch_size) == [2]
    assert [(g.kind, g.count) for g in config.instance_group] == [(pb2.ModelInstanceGroup.KIND_GPU, 1)]
    # the plan is the engine the manifest describes; the plugin library is the one it was built with
    assert sha256_file(model / "1" / "model.plan") == manifest.engine.sha256
    assert sha256_file(model / manifest.plugin.file) == manifest.plugin.sha256
    labels = (model / config.output[0].label_filename).read_text().splitlines()
    assert len(labels) == manifest.outputs[0].shape[-1] == 1000 and labels[0] == "tench"
    readme = (model / "README.md").read_text()
    # In-container paths: the repository is mounted at /models; the host path appears only as the mount source.
    assert "tritonserver --model-repository=/models" in readme and f"-v {repo.resolve()}:/models" in readme
    assert f"--backend-config=tensorrt,plugins=/models/sgformer_s/{manifest.plugin.file}" in readme
    assert (model / manifest.plugin.file).is_file()
    assert "RANDOM WEIGHTS" in readme  # the engine was built without a checkpoint
    assert "TensorRT-RTX" in readme  # says that Triton needs a full-TensorRT engine


def test_deepstream_package_from_a_built_engine_dir(engine_dir, tmp_path, capsys) -> None:
    """The real engine, its manifest marked ``rgb-float01`` (what `export --input-format rgb-float01` records).

    The engine's ONNX says "normalized", so with it in the folder the edited manifest fails the integrity check
    (as it must); the deployable folder without the ONNX is what gets packaged."""
    src = tmp_path / "engine"
    shutil.copytree(engine_dir, src)
    # through the Manifest (re-sealed): a hand edit of the JSON is refused by the seal (test_reliability_consumers)
    write_manifest(src, dataclasses.replace(read_manifest(src), input_format="rgb-float01"))
    manifest = read_manifest(src)
    out = tmp_path / "ds"
    assert main(["package", "--deepstream", str(out), str(src)]) == 2
    assert "says input format 'rgb-float01'" in capsys.readouterr().err and not out.exists()
    (src / manifest.onnx.file).unlink()
    assert main(["package", "--deepstream", str(out), str(src)]) == 0
    props = _parse_deepstream(out / DEEPSTREAM_CONFIG_NAME)
    assert sha256_file(out / props["model-engine-file"]) == manifest.engine.sha256
    assert sha256_file(out / props["custom-lib-path"]) == manifest.plugin.sha256
    assert int(props["batch-size"]) == manifest.batch.max
    assert int(props["network-mode"]) == {"fp32": 0, "int8": 1, "fp16": 2}[manifest.precision]
    assert props["network-type"] == "1" and props["process-mode"] == "1"  # primary classifier
    image = manifest.inputs[0]
    assert [int(d) for d in props["infer-dims"].split(";")] == list(image.shape[1:]) == [3, 224, 224]
    assert props["model-color-format"] == "0"  # RGB
    assert float(props["net-scale-factor"]) == pytest.approx(1 / 255, rel=1e-15)
    assert [float(v) for v in props["offsets"].split(";")] == [0.0, 0.0, 0.0]
    assert props["output-blob-names"] == manifest.outputs[0].name
    lines = (out / props["labelfile-path"]).read_text().splitlines()
    assert len(lines) == 1 and len(lines[0].split(";")) == manifest.outputs[0].shape[-1]
    assert f"nvinfer config-file-path={DEEPSTREAM_CONFIG_NAME}" in (out / "README.md").read_text()
