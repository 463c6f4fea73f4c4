"""The typed core: weights records in every format the project writes, the artifact record, naming, tolerances."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.graph import record as graph_record
from pipeline.core import ArtifactInfo, InputFormat, ModelSpec, Precision, WeightsRef, engine_dir_name, parity_rule
from pipeline.core.artifact import ArtifactInfoError, WeightsMismatchError, normalize, stage_onnx_name
from pipeline.core.errors import ConfigError
from pipeline.core.hashing import sha256_file

HEX = "ab" * 32


@pytest.mark.parametrize("text, kind, name, sha, seed", [
    (f"sgformer_s.pth sha256:{HEX}", "checkpoint", "sgformer_s.pth", HEX, None),      # export writes this
    (f"checkpoint sha256 {HEX}", "checkpoint", None, HEX, None),                      # documented manifest form
    (f"/data/ckpt/sgformer_s.pth sha256:{HEX.upper()}", "checkpoint", "sgformer_s.pth", HEX, None),
    ("sgformer_s.pth", "checkpoint", "sgformer_s.pth", None, None),                   # bench wrote a bare name
    ("random-init, seed 0", "random", None, None, 0),                                 # export without checkpoint
    ("random-init (seed 7, parity-conditioned)", "random", None, None, 7),            # info's wording
    ("unknown", "unknown", None, None, None),
    ("", "unknown", None, None, None),
    ("unspecified", "unknown", None, None, None),                                     # export_onnx's default
])
def test_weights_ref_parses_every_written_form(text, kind, name, sha, seed):
    ref = WeightsRef.parse(text)
    assert (ref.kind, ref.name, ref.sha256, ref.seed) == (kind, name, sha, seed)
    assert WeightsRef.parse(ref.to_text()) == ref  # one serialization that reads back


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from pipeline.model.sgformer import create_model

    folder = tmp_path_factory.mktemp("ckpt")
    good, other = folder / "tiny.pth", folder / "other.pth"
    torch.save(create_model("tiny-test", seed=0).state_dict(), good)
    torch.save(create_model("tiny-test", seed=1).state_dict(), other)
    return good, other


def _manifest(weights: str):
    from test_manifest import make_manifest

    return make_manifest(variant="tiny-test", img_size=(224, 224), weights=weights)


def test_weights_check_in_verify_works_for_every_manifest_form(checkpoints):
    """verify rebuilds the reference from the manifest: the checkpoint must be the recorded one in every format."""
    from pipeline.stages.verify import reference_for_manifest

    good, other = checkpoints
    digest = sha256_file(good)
    for weights in (f"{good.name} sha256:{digest}", f"checkpoint sha256 {digest}", f"{good} sha256:{digest}"):
        manifest = _manifest(weights)
        assert reference_for_manifest(manifest, str(good)) is not None
        with pytest.raises(WeightsMismatchError, match="not the checkpoint"):
            reference_for_manifest(manifest, str(other))
        with pytest.raises(ConfigError, match="pass the same checkpoint|pass that file"):
            reference_for_manifest(manifest, None)
    bare = _manifest(good.name)  # no hash recorded: the file name must match
    assert reference_for_manifest(bare, str(good)) is not None
    with pytest.raises(WeightsMismatchError, match="tiny.pth"):
        reference_for_manifest(bare, str(other))
    seeded = _manifest("random-init, seed 0")
    assert reference_for_manifest(seeded, None) is not None
    with pytest.raises(WeightsMismatchError, match="random weights"):
        reference_for_manifest(seeded, str(good))


def _graph(meta: dict[str, str], int8: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["images"], ["logits"])]
    inits = []
    if int8:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 224, 224])], inits)
    model = helper.make_model(graph)
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    return model


def test_artifact_info_round_trips_through_metadata_and_manifest():
    info = ArtifactInfo(ModelSpec("s", 448), WeightsRef.parse(f"x.pth sha256:{HEX}"), Precision.INT8,
                        InputFormat.RGB_UINT8, {"method": "entropy", "data_hash": "d" * 64, "images": 32})
    model = info.apply_to(_graph({"opset": "17", "precision": "fp32"}, int8=True))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["opset"] == "17" and meta["precision"] == "int8" and meta["input_format"] == "rgb-uint8"
    assert graph_record(model) == info
    fields = info.to_manifest_fields()
    assert fields == {"variant": "s", "img_size": (448, 448), "task": "classify", "precision": "int8",
                      "weights": f"x.pth sha256:{HEX}", "input_format": "rgb-uint8"}
    manifest = dataclasses.replace(_manifest(fields["weights"]), variant="s", img_size=(448, 448), precision="int8",
                                   input_format="rgb-uint8")
    from pipeline.store.manifest import Manifest

    again = Manifest.from_dict(manifest.to_dict())
    assert again.info.replace(calibration=None) == info.replace(calibration=None)
    old = manifest.to_dict()
    del old["input_format"]  # manifests from before the key: normalized input
    assert Manifest.from_dict(old).input_format == "normalized"


def test_artifact_info_refuses_a_record_that_disagrees_with_the_graph():
    meta = {"variant": "s", "img_size": "224", "weights": "random-init, seed 0", "precision": "fp16"}
    with pytest.raises(ArtifactInfoError, match="precision fp16 .* graph is int8"):
        graph_record(_graph(meta, int8=True))
    del meta["precision"]  # graphs from before the key: the graph decides
    assert graph_record(_graph(meta, int8=True)).precision is Precision.INT8
    with pytest.raises(ArtifactInfoError, match="does not record its variant"):
        graph_record(_graph({"img_size": "224"}))
    with pytest.raises(ArtifactInfoError, match="not supported"):
        graph_record(_graph({**meta, "img_size": "225"}))


def test_enums_and_specs_name_the_valid_values():
    with pytest.raises(ConfigError, match="fp32, fp16, int8"):
        Precision.parse("bf16")
    with pytest.raises(ConfigError, match="normalized, rgb-float01, rgb-uint8"):
        InputFormat.parse("bgr")
    with pytest.raises(ConfigError, match="unknown variant 'xl'"):
        ModelSpec("xl", 224)
    with pytest.raises(ConfigError, match="too large"):
        ModelSpec("s", 2240000 // 224 * 224)
    with pytest.raises(ConfigError, match="multiple of 224"):
        ModelSpec("s", 300)


def test_one_naming_rule():
    assert engine_dir_name("s", "int8", 448) == "s-int8-448"
    assert engine_dir_name("m", Precision.FP16, 224) == "m-fp16-224"
    assert [stage_onnx_name(s, "fp32") for s in ("export", "calibrate", "rewrite")] == [
        "model.onnx", "model.onnx", "model.iam.onnx"]
    assert [stage_onnx_name(s, "int8") for s in ("export", "calibrate", "rewrite")] == [
        "model.onnx", "model.int8.onnx", "model.iam.int8.onnx"]
    from pipeline.stages.build import engine_dir_name as build_rule

    assert build_rule("s", "fp16", 224) == engine_dir_name("s", "fp16", 224)


def test_input_formats_convert_losslessly():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    norm = InputFormat.RGB_UINT8.to_normalized(pixels)
    assert np.array_equal(norm, normalize(pixels.astype(np.float32) / np.float32(255.0)))
    for fmt in InputFormat:
        fed = fmt.from_normalized(norm)
        assert fed.dtype == fmt.numpy_dtype
        np.testing.assert_allclose(fmt.to_normalized(fed), norm, atol=1e-5, err_msg=fmt.value)
        np.testing.assert_array_equal(fmt.from_pixels(pixels), fed if fmt is not InputFormat.RGB_FLOAT01
                                      else fmt.from_pixels(pixels))
    assert np.array_equal(InputFormat.RGB_UINT8.from_normalized(norm), pixels)  # the pixels come back exactly


def test_tolerance_table():
    assert parity_rule("fp32").rel_atol == 8e-3 and parity_rule("fp32").require_top5  # relative (issue 23)
    assert parity_rule("fp32", img_size=448).rel_atol == 1.6e-2
    assert parity_rule("fp32", variant="b").rel_atol == 1.6e-2
    assert parity_rule("fp32", "tensorrt").rel_atol == 8e-3 and parity_rule("fp32").min_cosine == 0.99999
    assert parity_rule("int8").min_cosine == 0.99 and parity_rule("int8").min_top1 == 0.97
    assert parity_rule("fp16", "tensorrt").min_cosine == 0.9995
    assert "atol" not in parity_rule("int8").to_dict()
    with pytest.raises(ConfigError):
        parity_rule("fp32", "tflite")
