"""Accuracy report: metrics, the CLI, and SG-Former-S @ 224 fp16 / int8 against PyTorch on the smoke-test set.

Thresholds of the S @ 224 accuracy report (6 smoke images, onnxruntime 1.31 on this CPU), at about twice the
measured distance from a perfect cosine (1 - cosine_min), so a placement bug that is small but real fails:
- fp16: measured cosine min 0.999998 (1 - cos = 2e-6) -> bound 1 - 4e-6, and identical top-1. The user-facing
  rule (``pipeline.core.tolerances``: 0.9995) is looser by design (trained weights, other kernels); this test
  holds the placement of this pass to what it measurably achieves.
- int8: measured cosine min 0.99943 and 0.99920 in two runs (1 - cos = 5.7e-4, 8.0e-4) -> bound 1 - 1.6e-3.
  The weights are random
  (parity-conditioned), so the top-1 class is nearly arbitrary and not asserted for int8: the 97 % target
  (docs/sgformer.md) needs real weights and real images.
The planted controls below put a Cast (fp16) or a Q/DQ pair (int8) on the importance maps in front of every sort,
exactly what the placement passes must never do. Measured: the cosine report does NOT see them with these weights
(fp16 1 - cos 2.6e-6 planted vs 2.1e-6; int8 8.07e-4 planted vs 7.97e-4: the f weights are 1/k, so tokens that
change tier inside a near-tie barely move the logits, as with the rewrite's wiring). So the accuracy report's
placement verdict has a structural half, ``importance_path_problems``, and the planted graphs must fail it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.data import load_calibration_set
from pipeline.core.variants import ImageSize
from pipeline.apps.evaluate import evaluate, format_table, metrics
from calibration.fp16 import convert_fp16
from calibration.int8 import QuantPolicy, quantize_int8


def test_compare_logits_metrics():
    ref = np.array([[3.0, 1.0, 0.0, -1.0, -2.0, -3.0], [0.0, 2.0, 1.0, 0.0, 0.0, 0.0]])
    same = metrics("same", ref, ref, labels=np.array([0, 2]))
    assert same.top1_agreement == 1.0 and same.cosine_min == pytest.approx(1.0) and same.max_abs_diff == 0.0
    assert same.top1_accuracy == 0.5 and same.top5_accuracy == 1.0
    swapped = ref.copy()
    swapped[1, [1, 2]] = swapped[1, [2, 1]]
    m = metrics("swapped", swapped, ref)
    assert m.top1_agreement == 0.5 and m.top1_in_top5 == 1.0 and m.max_abs_diff == 1.0


def test_evaluate_cli_tiny(exported, tmp_path, capsys):
    from pipeline.cli import main

    e = exported("tiny-test", 224)
    fp16 = tmp_path / "t.fp16.onnx"
    assert main(["calibrate", "--onnx", str(e.onnx), "--precision", "fp16", "-o", str(fp16)]) == 0
    out_json = tmp_path / "report.json"
    rc = main(["evaluate", "--variant", "tiny-test", "--onnx-fp32", str(e.iam), "--onnx-fp16", str(fp16),
               "--num-images", "3", "--report", str(out_json)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "fp16" in table and "cos min" in table
    report = json.loads(out_json.read_text())
    fp32 = next(r for r in report["results"] if r["name"] == "fp32")
    assert fp32["max_abs_diff"] < 1e-3 and fp32["top1_agreement"] == 1.0


def test_evaluate_bad_input_is_a_clean_error(tmp_path):
    from pipeline.cli import main

    assert main(["evaluate", "--variant", "tiny-test", "--images", str(tmp_path / "none"),
                 "--onnx-fp32", str(tmp_path / "x.onnx")]) == 2


#: 1 - cosine_min allowed, about 2x the measured value (module docstring): fp16 2e-6 measured, int8 5.7e-4.
FP16_MAX_COSINE_LOSS = 4e-6
INT8_MAX_COSINE_LOSS = 1.6e-3
#: Ops that may sit between an importance map and its sort without changing it (fp32, not quantized).
_MAP_PLUMBING = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Cast",
                           "QuantizeLinear", "DequantizeLinear"})


def importance_path_problems(model) -> list[str]:
    """Every tensor from an importance map's producer to the sort (TopK) that reads it must stay fp32 and
    unquantized: no Cast to another type and no QuantizeLinear / DequantizeLinear on the way."""
    from onnx import TensorProto

    producer = {o: n for n in model.graph.node for o in n.output}
    problems = []
    for topk in (n for n in model.graph.node if n.op_type == "TopK"):
        node = producer.get(topk.input[0])
        while node is not None and node.op_type in _MAP_PLUMBING:
            to = {a.name: a.i for a in node.attribute}.get("to")
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") or (to is not None and to != TensorProto.FLOAT):
                problems.append(f"{node.op_type} '{node.name}' on the importance map sorted by '{topk.name}'")
            node = producer.get(node.input[0])
    return problems


def placement_problems(report, graphs=None) -> list[str]:
    """The accuracy report's verdict on the fp16 / int8 placement (empty: pass): the cosine bounds, and with
    ``graphs`` (name -> model) the importance paths' structure."""
    problems = []
    for name, model in (graphs or {}).items():
        problems += [f"{name}: {p}" for p in importance_path_problems(model)]
    for m in report.results:
        loss = 1.0 - m.cosine_min
        bound = FP16_MAX_COSINE_LOSS if m.name.startswith("fp16") else INT8_MAX_COSINE_LOSS
        if not loss <= bound:
            problems.append(f"{m.name}: 1 - cosine_min {loss:.3g} > {bound:g}")
        if m.name.startswith("fp16") and m.top1_agreement < 1.0:
            problems.append(f"{m.name}: top-1 agreement {m.top1_agreement:.0%}")
    return problems


@pytest.fixture(scope="module")
def s_placements(exported, tmp_path_factory):
    """S at 224: the fp16 and int8 (entropy, 8 calibration images) graphs and the 6-image evaluation set."""
    model = exported("s", 224).load("onnx")
    calib = load_calibration_set(224, num_images=8, seed=0)
    evalset = load_calibration_set(224, num_images=6, seed=1)
    int8 = quantize_int8(model, calib, QuantPolicy(method="entropy"), cache_dir=tmp_path_factory.mktemp("int8"))
    return {"fp16": convert_fp16(model).model, "int8": int8.model}, evalset


def _on_importance(model, make):
    """A copy of ``model`` with ``make(src, dst, i) -> nodes`` spliced in front of every TopK's data input (the
    importance maps the sorts read: the path the placement passes must leave in fp32)."""
    import copy

    out = copy.deepcopy(model)
    nodes = list(out.graph.node)
    del out.graph.node[:]
    planted = 0
    for n in nodes:
        if n.op_type == "TopK":
            src, dst = n.input[0], f"planted_importance_{planted}"
            out.graph.node.extend(make(src, dst, planted))
            n.input[0] = dst
            planted += 1
        out.graph.node.append(n)
    assert planted >= 2, "expected the sorts of the significance blocks"
    return out


def _fp16_cast_on_importance(model):
    from onnx import TensorProto, helper

    return _on_importance(model, lambda src, dst, i: [
        helper.make_node("Cast", [src], [f"{dst}_half"], to=TensorProto.FLOAT16, name=f"planted_cast_{i}"),
        helper.make_node("Cast", [f"{dst}_half"], [dst], to=TensorProto.FLOAT, name=f"planted_uncast_{i}")])


def _int8_qdq_on_importance(model, images):
    """Q/DQ with a calibrator-style scale (max |map| / 127 over ``images``) on every importance map."""
    from onnx import TensorProto, helper

    from pipeline.backends.onnxruntime import run_model

    names = [n.input[0] for n in model.graph.node if n.op_type == "TopK"]
    maps = run_model(model, images, extra_outputs=names)
    scales = {name: max(float(np.abs(maps[name]).max()), 1e-12) / 127.0 for name in names}

    def make(src, dst, i):
        s = helper.make_tensor(f"planted_scale_{i}", TensorProto.FLOAT, [], [scales[src]])
        z = helper.make_tensor(f"planted_zero_{i}", TensorProto.INT8, [], [0])
        return [helper.make_node("Constant", [], [f"{dst}_s"], value=s, name=f"planted_scale_{i}"),
                helper.make_node("Constant", [], [f"{dst}_z"], value=z, name=f"planted_zero_{i}"),
                helper.make_node("QuantizeLinear", [src, f"{dst}_s", f"{dst}_z"], [f"{dst}_q"], name=f"planted_q_{i}"),
                helper.make_node("DequantizeLinear", [f"{dst}_q", f"{dst}_s", f"{dst}_z"], [dst],
                                 name=f"planted_dq_{i}")]

    return _on_importance(model, make)


def test_accuracy_report_sgformer_s(s_placements):
    """S at 224, fp16 and int8 (entropy, 8 calibration images) on 6 smoke-test images, at ~2x the measured loss."""
    graphs, evalset = s_placements
    report = evaluate(graphs, evalset, "s")
    print(format_table(report))
    assert [m.name for m in report.results] == ["fp16", "int8"]
    assert placement_problems(report, graphs) == [], format_table(report)


def test_planted_fp16_cast_on_the_importance_path_fails_the_placement_verdict(s_placements):
    graphs, _ = s_placements
    planted = {"fp16": _fp16_cast_on_importance(graphs["fp16"])}
    problems = importance_path_problems(planted["fp16"])
    assert problems and all("Cast 'planted_cast_" in p for p in problems), problems


def test_planted_int8_qdq_on_the_importance_path_fails_the_placement_verdict(s_placements):
    graphs, evalset = s_placements
    images = np.stack([arr for _, arr in evalset.arrays()])[:2]
    problems = importance_path_problems(_int8_qdq_on_importance(graphs["int8"], images))
    assert problems and any("QuantizeLinear 'planted_q_" in p for p in problems), problems


def test_sensitivity_cli_ranks_layer_groups(exported, tmp_path, capsys):
    """One int8 run per layer group; rows sorted most sensitive (lowest cosine) first, IAM regions never listed."""
    from pipeline.cli import main

    e = exported("tiny-test", 224)
    out_json = tmp_path / "sens.json"
    assert main(["evaluate", "--variant", "tiny-test", "--onnx-fp32", str(e.onnx), "--sensitivity",
                 "--num-images", "4", "--method", "max", "--json", str(out_json)]) == 0
    assert "layer group (int8 alone)" in capsys.readouterr().out
    rows = json.loads(out_json.read_text())
    groups = [r["group"] for r in rows]
    assert len(groups) == len(set(groups)) >= 8 and "/block1.0/attn" in groups and "/block4.0/mlp" in groups
    cosines = [r["cosine_mean"] for r in rows]
    assert cosines == sorted(cosines) and all(0.5 < c <= 1.0 + 1e-9 for c in cosines)
    assert sum(r["layers"] for r in rows) >= 30
    assert main(["evaluate", "--variant", "tiny-test", "--sensitivity", "--num-images", "2"]) == 2  # needs --onnx-fp32


def _image_tree(root, files):
    from PIL import Image

    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (10 * len(rel) % 255, 90, 30)).save(path)


def test_labels_from_wordnet_folders_keep_imagenet_indices(tmp_path, caplog):
    """A subset of ImageNet class folders must map to the model's indices, not to 0..k-1 in folder order."""
    from pipeline.apps.evaluate import _labels

    _image_tree(tmp_path, ["n01484850/a.png", "n01443537/b.png", "n01443537/c.png"])  # indices 2 and 1
    data = load_calibration_set(224, images=tmp_path, min_images=1)
    labels = dict(zip((s.name.split("/")[-2] for s in data.sources), _labels(data, None)))
    assert labels == {"n01484850": 2, "n01443537": 1}


def test_labels_from_official_val_file_names(tmp_path):
    from pipeline.apps.evaluate import _labels

    _image_tree(tmp_path, ["ILSVRC2012_val_00015416.JPEG", "other.png"])
    data = load_calibration_set(224, images=tmp_path, min_images=1)
    got = {s.name.split("/")[-1]: int(v) for s, v in zip(data.sources, _labels(data, None))}
    assert got == {"ILSVRC2012_val_00015416.JPEG": 13, "other.png": -1}


def test_labels_from_other_folder_names_are_sorted_and_warned(tmp_path, caplog):
    from pipeline.apps.evaluate import _labels

    _image_tree(tmp_path, ["zebra/a.png", "ant/b.png"])
    data = load_calibration_set(224, images=tmp_path, min_images=1)
    got = {s.name.split("/")[-2]: int(v) for s, v in zip(data.sources, _labels(data, None))}
    assert got == {"ant": 0, "zebra": 1}
    assert "sorted order" in caplog.text


def test_evaluate_reads_variant_and_size_from_the_graphs(exported):
    """No --variant / --img-size: the graphs' records decide; an explicit value that disagrees is an error."""
    from pipeline.apps.evaluate import graphs_spec as _graphs_spec
    from pipeline.core.errors import ConfigError

    graphs = {"fp32": exported("tiny-test", 224).load()}
    assert _graphs_spec(graphs, None, None) == ("tiny-test", ImageSize(224, 224))
    with pytest.raises(ConfigError, match="--variant s does not match"):
        _graphs_spec(graphs, "s", None)
    with pytest.raises(ConfigError, match="--img-size 448 does not match"):
        _graphs_spec(graphs, None, 448)


def _report(labelled: int, weights: str):
    from pipeline.apps.evaluate import EvalReport, Metrics

    m = Metrics(name="pytorch-fp32", images=6, top1_agreement=1.0, top1_in_top5=1.0, cosine_min=1.0, cosine_mean=1.0,
                max_abs_diff=0.0, top1_accuracy=0.5, top5_accuracy=1.0)
    return EvalReport("s", 224, "6 images", "0" * 64, m, images=6, labelled=labelled, weights=weights)


def test_accuracy_table_says_over_how_many_labelled_images_and_warns_for_random_weights():
    from pipeline.apps.evaluate import format_table

    text = format_table(_report(2, "random-init, seed 0"))
    assert "top1 acc (2 of 6 labelled)" in text
    assert "RANDOM WEIGHTS" in text
    assert "RANDOM WEIGHTS" not in format_table(_report(6, "sgformer_s.pth"))  # control: a checkpoint has no caveat


def test_sensitivity_progress_eta_and_recommended_exclusions():
    from pipeline.apps.evaluate import format_sensitivity, recommend_exclusions
    from pipeline.core.progress import eta_text

    assert eta_text(30.0, 3, 12) == "ETA 1 min 30 s" and eta_text(4.0, 2, 3) == "ETA 2 s" and eta_text(9, 3, 3) == "done"
    rows = [("/block1.0/attn", 4, 0.90, 0.5), ("/block2.0/mlp", 2, 0.999, 1.0), ("/block3.0/mlp", 2, 0.998, 1.0),
            ("/block4.0/mlp", 2, 0.9985, 1.0)]
    assert recommend_exclusions(rows) == ["/block1.0/attn"]  # loss 0.1 vs median 0.0015
    text = format_sensitivity(rows, images=4)
    assert "over 4 images" in text and "--exclude '/block1.0/attn/*'" in text
    # Planted control: groups that all lose alike recommend nothing.
    flat = [(g, n, 0.998, t) for g, n, _, t in rows]
    assert recommend_exclusions(flat) == [] and "exclude nothing" in format_sensitivity(flat)
