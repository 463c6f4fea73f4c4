"""Issue 23 item 5 (checkpoints): corrupt vs unsafe files, non-finite weights, .safetensors, fine-tuned heads.

On main: random bytes were called "pickled objects that are not on the safe list" with a --trust-checkpoint hint
(also when trust_pickle was already given); NaN weights loaded and surfaced later as a rewrite error with a NaN
model.onnx left behind; a .safetensors file got two contradicting sentences; a 10-class head failed with "check
num_classes" (no such option). Each test below fails on main (noted per test).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from pipeline.core.artifact import ArtifactInfo
from pipeline.core.errors import CheckpointError
from pipeline.flow import PipelineConfig, run_pipeline
from pipeline.graph import record
from pipeline.model.checkpoint import read_checkpoint
from pipeline.model.sgformer import create_model
from pipeline.stages.export import export_onnx
from pipeline.stages.verify import reference_for_record, verify_onnx


@pytest.fixture(scope="module")
def source():
    return create_model("tiny-test", seed=3)


def _random_bytes(seed: int, first: bytes) -> bytes:
    # a first byte that is a pickle opcode ("(" MARK) made main's unpickler call the file unsafe
    return first + np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("first", [b"(", b"\x80\x02", b"}"])
def test_random_bytes_checkpoint_is_corrupt_not_unsafe(tmp_path, first):
    # main: "holds pickled objects that are not on the safe list ... --trust-checkpoint" for the "(" and "}" files
    path = tmp_path / "model.pth"
    path.write_bytes(_random_bytes(1, first))
    for trust in (False, True):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path, trust_pickle=trust)
        text = str(err.value)
        assert "corrupt" in text and "safe list" not in text and "trust" not in text, text
        assert "\n" not in text


class Foreign:  # a class the safe unpickler refuses
    pass


def test_unsafe_pickle_still_offers_the_opt_in(tmp_path, source):
    path = tmp_path / "c.pth"
    torch.save({"state_dict": source.state_dict(), "x": Foreign()}, path)
    with pytest.raises(CheckpointError, match="not on the safe list.*--trust-checkpoint"):
        read_checkpoint(path)
    # planted control: a real torch.save file with an unsafe object is not called corrupt
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert "corrupt" not in str(err.value)


def test_nan_weights_named_at_load_before_any_export(tmp_path, source):
    # main: loaded silently; export then wrote a NaN model.onnx and rewrite failed on Expand shapes
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    sd["block1.0.attn.sr.weight"].view(-1)[:3] = float("nan")
    sd["head.bias"][0] = float("inf")
    path = tmp_path / "nan.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"non-finite weights: .*block1\.0\.attn\.sr\.weight \(3 NaN, 0 Inf\).*head\.bias \(0 NaN, 1 Inf\)"):
        create_model("tiny-test", checkpoint=path)
    config = PipelineConfig(variant="tiny-test", precision="fp32", out_dir=tmp_path / "engines", until="export",
                            checkpoint=str(path))
    with pytest.raises(CheckpointError, match="non-finite"):
        run_pipeline(config)
    assert not list((tmp_path / "engines").rglob("*.onnx"))  # no NaN graph left behind
    # planted control: the same file with finite weights loads
    sd["block1.0.attn.sr.weight"].view(-1)[:3] = 0.0
    sd["head.bias"][0] = 0.0
    torch.save(sd, path)
    create_model("tiny-test", checkpoint=path)


def test_safetensors_checkpoint_loads(tmp_path, source):
    # main: two contradicting sentences ("not on the safe list ... trust" and "not a PyTorch checkpoint")
    from safetensors.torch import save_file

    sd = {k: v.contiguous() + 0.125 for k, v in source.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    model = create_model("tiny-test", checkpoint=path)
    assert all(torch.equal(model.state_dict()[k], sd[k]) for k in sd)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: one line, called corrupt, no trust hint
    with pytest.raises(CheckpointError) as err:
        create_model("tiny-test", checkpoint=path)
    assert "corrupt .safetensors" in str(err.value) and "trust" not in str(err.value)
    assert str(err.value).count(". ") <= 1


def test_finetuned_head_num_classes_recorded_and_used(tmp_path, source):
    # main: "tensors have the wrong shape, e.g. head.weight ... Check the variant and num_classes"
    sd = dict(source.state_dict())
    g = torch.Generator().manual_seed(5)
    sd["head.weight"] = torch.randn(10, sd["head.weight"].shape[1], generator=g) * 0.02
    sd["head.bias"] = torch.zeros(10)
    path = tmp_path / "ft10.pth"
    torch.save({"state_dict": sd}, path)
    model = create_model("tiny-test", checkpoint=path)
    assert model.num_classes == 10 and model(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
    onnx_model = export_onnx(model, weights=f"checkpoint {path}")
    assert [d.dim_value for d in onnx_model.graph.output[0].type.tensor_type.shape.dim][1] == 10
    info = record(onnx_model)
    assert info.num_classes == 10
    onnx.save(onnx_model, str(tmp_path / "ft10.onnx"))
    reference = reference_for_record(info, str(path))
    images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    assert verify_onnx(tmp_path / "ft10.onnx", reference, images)
    # planted control: a record that says 1000 classes is refused against the 10-class reference
    with pytest.raises(Exception, match="records 1000 classes"):
        reference_for_record(dataclasses.replace(info, num_classes=1000), str(path))
    # the manifest's output shape is the record an engine folder keeps; package's Triton dims come from it
    from pipeline.apps.package import triton_config
    from pipeline.store.manifest import TensorSpec
    from tests.test_package import _fake_engine_dir
    from pipeline.store.manifest import read_manifest
    folder = _fake_engine_dir(tmp_path / "e")
    manifest = dataclasses.replace(read_manifest(folder), outputs=(TensorSpec("logits", (-1, 10), "float32"),))
    assert ArtifactInfo.from_manifest(manifest).num_classes == 10
    assert "dims: [ 10 ]" in triton_config(manifest, "sgformer")
