"""Export stage: graph interface, dynamic batch, simplification safety, metadata, errors, atomic CLI writes."""
from __future__ import annotations

import argparse

import numpy as np
import onnx
import pytest

from pipeline.core.errors import StorageError
import torch

from pipeline.cli import export as export_cli  # the verb (options + run) over pipeline.stages.export
from pipeline.stages import export as export_mod
from pipeline.core.errors import ExportError
from pipeline.graph import metadata as read_metadata, op_histogram
from pipeline.stages.export import export_onnx
from pipeline.model.sgformer import create_model
from pipeline.backends.onnxruntime import run_model


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_interface_and_metadata(exported):
    ex = exported("tiny-test", 224)
    model = ex.load()
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert _dims(model.graph.input[0]) == ["batch", 3, 224, 224]
    assert _dims(model.graph.output[0]) == ["batch", 1000]
    meta = read_metadata(model)
    assert meta["variant"] == "tiny-test" and meta["img_size"] == "224" and meta["opset"] == "17"
    assert meta["batch"] == "dynamic" and "dynamo=False" in meta["exporter"] and meta["weights"].startswith("random")
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    onnx.checker.check_model(model, full_check=True)


def test_simplification_keeps_the_iam_region(exported):
    hist = op_histogram(exported("tiny-test", 224).load())
    # tiny-test: 3 significance blocks x 2 sorts; 3 + 3 + 2 tiers per sequence x 2 sequences.
    assert hist["TopK"] == 6
    assert hist["GatherElements"] == 16
    assert hist.get("Constant", 0) == 0, "onnxslim should have folded Constant nodes into initializers"


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_runs_any_batch(exported, batch):
    """The window reverse and every reshape must take the batch from the input, not bake the traced one (2)."""
    ex = exported("tiny-test", 224)
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = ex.model(images).numpy()
    got = run_model(ex.onnx, images.numpy())["logits"]
    assert got.shape == (batch, 1000)
    assert np.abs(got - ref).max() <= 1e-5


def test_fixed_batch_export():
    model = create_model("tiny-test", seed=1)
    proto = export_onnx(model, batch=1, simplify=False)
    assert _dims(proto.graph.input[0]) == [1, 3, 224, 224]
    assert read_metadata(proto)["batch"] == "1"


def test_old_opset_and_bad_batch_are_refused():
    model = create_model("tiny-test", seed=1)
    with pytest.raises(ExportError, match="opset >= 17"):
        export_onnx(model, opset=16)
    with pytest.raises(ExportError, match="positive integer"):
        export_onnx(model, batch=0)


def test_rejected_simplification_falls_back_to_raw(monkeypatch, caplog):
    """If onnxslim changed the IAM region, the raw export is kept (with a warning), never a broken graph."""
    model = create_model("tiny-test", seed=1)
    raw = export_mod._trace_to_onnx(model, None, 17)

    def bad_slim(m):  # drops one TopK
        out = onnx.ModelProto()
        out.CopyFrom(m)
        topk = next(i for i, n in enumerate(out.graph.node) if n.op_type == "TopK")
        del out.graph.node[topk]
        return out

    import onnxslim

    monkeypatch.setattr(onnxslim, "slim", bad_slim)
    kept = export_mod.simplify_onnx(raw, batch=2, img_size=224)
    assert kept is raw
    assert "TopK count changed" in caplog.text


def test_cli_writes_atomically(tmp_path, monkeypatch):
    target = tmp_path / "out" / "model.onnx"
    args = argparse.Namespace(variant="tiny-test", img_size=224, checkpoint=None, trust_checkpoint=False, seed=0,
                              batch=None, opset=17, no_simplify=True, output=str(target), task="classify")

    def failing_save(model, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", failing_save)
    with pytest.raises(StorageError, match="disk full"):  # the OSError as one typed line naming the path
        export_cli.run(args)
    assert not target.exists()
    assert list(target.parent.iterdir()) == [], "no partial or temp file may remain"
    monkeypatch.undo()
    assert export_cli.run(args) == 0
    assert onnx.load(str(target)).graph.output[0].name == "logits"
