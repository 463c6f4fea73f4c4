"""Backbone mode and H x W inputs (issue 22), on the tiny-test variant at 224x448 (the smallest non-square size).

- sizes: one typed ``ImageSize``; each side a multiple of 224; other sizes refused with the nearest valid ones;
  old records (``resolution: 224``, metadata ``"224"``) read as (224, 224);
- the model: ``features_only`` / ``out_indices`` give NCHW stage maps after each stage norm (strides 4..32),
  ``pos_embed`` is resampled from a checkpoint's square grid to (H/4) x (W/4), the fused IAM op equals the
  reference at H != W;
- the feature comparison (the gate verify applies to a backbone) with a planted control;
- one real run of the pipeline (export -> rewrite -> TensorRT-RTX build -> verify) of a backbone engine: the
  manifest names every output's stride and channels and records per-output parity; `run` prints the shapes; the
  Triton config lists every output.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.core.artifact import ArtifactInfo, ModelSpec, Task, WeightsRef, engine_dir_name
from pipeline.core.errors import ConfigError
from pipeline.core.tolerances import feature_rule
from pipeline.core.variants import ImageSize, check_img_size, nearest_valid_sizes
from pipeline.model.sgformer import create_model
from pipeline.stages.compare import compare_features

SIZE = ImageSize(224, 448)


# ------------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("text,want", [("224", (224, 224)), ("448x672", (448, 672)), (" 896X1344 ", (896, 1344)),
                                       (448, (448, 448)), ((224, 448), (224, 448))])
def test_sizes_parse_into_one_type(text, want):
    size = check_img_size(text)
    assert isinstance(size, ImageSize) and size == want
    assert str(size) == (str(want[0]) if want[0] == want[1] else f"{want[0]}x{want[1]}")


def test_an_800x1333_image_is_told_to_pad_to_896x1344():
    with pytest.raises(ConfigError) as info:
        check_img_size("800x1333")
    text = str(info.value)
    assert "each side (H and W) to be a multiple of 224" in text and "nearest valid sizes are 896x1344" in text
    assert nearest_valid_sizes(ImageSize(800, 1333))[0] == (896, 1344)
    for bad in ("448x600", "300", "0x224", "2464x224", "448x", "x"):
        with pytest.raises(ConfigError):
            check_img_size(bad)


def test_engine_verb_takes_task_and_hxw_and_refuses_in_one_line(capsys):
    from pipeline.cli import main

    assert main(["engine", "--check", "--task", "features", "--img-size", "448x672"]) == 0
    assert "engines/s-fp16-448x672-features" in capsys.readouterr().out
    assert main(["engine", "--check", "--task", "features", "--img-size", "800x1333"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "896x1344" in err[0] and "(make: RES)" in err[0], err


def test_records_keep_reading_what_older_versions_wrote():
    """Metadata "224" and a manifest's "resolution": 224 are (224, 224); a non-square record round-trips."""
    from pipeline.store.manifest import _read_size

    info = ArtifactInfo(ModelSpec("tiny-test", "448x672", Task.FEATURES), WeightsRef.random(0))
    meta = info.to_metadata()
    assert meta["img_size"] == "448x672" and meta["task"] == "features" and meta["out_indices"] == "0,1,2,3"
    assert ArtifactInfo.from_metadata(meta) == info
    old = {k: v for k, v in meta.items() if k not in ("task", "out_indices")} | {"img_size": "224"}
    assert ArtifactInfo.from_metadata(old).spec == ModelSpec("tiny-test", (224, 224))
    assert _read_size({"resolution": 224}) == (224, 224) and _read_size({"img_size": [448, 672]}) == (448, 672)
    assert engine_dir_name("s", "int8", "448x672", "features") == "s-int8-448x672-features"
    assert engine_dir_name("s", "fp16", 224) == "s-fp16-224"  # square folders keep their names
    with pytest.raises(TypeError, match="img_size"):
        ModelSpec("s")  # no size: an error naming the argument, never a default


# ------------------------------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def backbone():
    return create_model("tiny-test", img_size=SIZE, features_only=True)


def test_features_are_nchw_stage_maps_after_each_norm(backbone):
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = backbone(images)
        tokens, _ = backbone.forward_stages(images)
    dims = (16, 32, 64, 64)  # tiny-test's embed_dims
    assert [tuple(m.shape) for m in maps] == [(2, c, 224 // s, 448 // s) for c, s in zip(dims, (4, 8, 16, 32))]
    assert [(f.num_chs, f.reduction) for f in backbone.feature_info] == list(zip(dims, (4, 8, 16, 32)))
    for m, t in zip(maps, tokens):  # the map is the normed tokens, row-major: H rows of W columns
        assert torch.equal(m.flatten(2).transpose(1, 2), t)
    for i, m in enumerate(maps, start=1):  # each map is its stage's LayerNorm output: per position mean 0, var 1
        ln = getattr(backbone, f"norm{i}")
        y = (m.permute(0, 2, 3, 1) - ln.bias) / ln.weight
        assert y.mean(-1).abs().max() < 1e-4 and (y.var(-1, unbiased=False) - 1).abs().max() < 1e-3
    assert not hasattr(backbone.head, "weight")
    two = create_model("tiny-test", img_size=SIZE, features_only=True, out_indices=(1, 3))
    with torch.no_grad():
        assert [tuple(m.shape[1:]) for m in two(images)] == [(32, 28, 56), (64, 7, 14)]
    with pytest.raises(ConfigError, match="out_indices"):
        create_model("tiny-test", img_size=SIZE, features_only=True, out_indices=(3, 1))


def test_pos_embed_is_resampled_from_a_square_checkpoint(tmp_path):
    """A 224 checkpoint (56x56 pos_embed) loads into a 224x448 classifier and backbone: 56x112, bicubic."""
    square = create_model("tiny-test", seed=3)
    path = tmp_path / "tiny.pth"
    torch.save(square.state_dict(), path)
    for features in (False, True):
        model = create_model("tiny-test", img_size=SIZE, checkpoint=path, features_only=features)
        assert model.pos_grid == (56, 112) and model.pos_embed.shape == (1, 56 * 112, 16)
        grid = square.pos_embed.detach().reshape(1, 56, 56, 16).permute(0, 3, 1, 2)
        want = torch.nn.functional.interpolate(grid, size=(56, 112), mode="bicubic", align_corners=False)
        assert torch.equal(model.pos_embed.detach(), want.permute(0, 2, 3, 1).reshape(1, -1, 16))
        assert torch.equal(model.block3[1].attn.q.weight, square.block3[1].attn.q.weight)


def test_fused_iam_op_equals_the_reference_at_h_ne_w(backbone):
    """The sgformer::iam op (C++ host reference) inside the model, on 56x112, 28x56 and 14x28 grids."""
    fused = create_model("tiny-test", img_size=SIZE, features_only=True, iam="fused")
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for want, got in zip(backbone(images), fused(images)):
            assert (got - want).abs().max().item() <= 1e-5  # fp32 sums in another order (test_iam_op's bound)


# ------------------------------------------------------------------------------------- the feature gate


def _maps(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"stage{i + 1}": rng.standard_normal((2, c, 224 // s, 448 // s)).astype(np.float32)
            for i, (c, s) in enumerate(zip((16, 32, 64, 64), (4, 8, 16, 32)))}


def test_feature_gate_passes_close_maps_and_planted_bug_fails():
    ref = _maps()
    close = {k: v + np.float32(1e-4) * np.sign(v) for k, v in ref.items()}  # 1e-4 x rms ~ an fp32 rounding drift
    report = compare_features(close, ref, backend="test", rule=feature_rule("fp32"))
    assert report.passed, report.message
    assert set(report.to_dict()) == {"stage1", "stage2", "stage3", "stage4"}
    planted = dict(close)
    planted["stage3"] = close["stage3"].copy()
    planted["stage3"][:, :, 5, 7] += 0.5  # one wrong column of one map (a bad tile, a wrong index)
    bad = compare_features(planted, ref, backend="test", rule=feature_rule("fp32"))
    assert not bad.passed and "stage3" in bad.message.split("outside")[0].rsplit(":", 1)[-1]
    assert [m["passed"] for m in bad.to_dict().values()] == [True, True, False, True]


# ------------------------------------------------------------------------------- one real backbone engine


def test_backbone_engine_end_to_end(plugin_build, tmp_path, capsys):
    """export -> rewrite -> build (TensorRT-RTX, CPU-only) -> verify (CPU stand-in) of a 224x448 backbone."""
    import importlib.util

    from pipeline.apps.package import package_triton
    from pipeline.cli import main
    from pipeline.data.images import sample_images
    from pipeline.flow import PipelineConfig, run_pipeline

    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX not installed (pip install -e '.[trt-rtx]')")
    config = PipelineConfig(variant="tiny-test", precision="fp32", img_size="224x448", task="features",
                            plugin_library=plugin_build.plugin_library, backend="tensorrt-rtx", max_batch=2,
                            out_dir=tmp_path / "engines")
    result = run_pipeline(config, verify_images=sample_images(2, SIZE))
    assert result.path.name == "tiny-test-fp32-224x448-features" and result.passed, result.report
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["img_size"] == [224, 448] and manifest["task"] == "features"
    assert [(o["name"], o["stride"], o["channels"], o["shape"]) for o in manifest["outputs"]] == [
        ("stage1", 4, 16, [-1, 16, 56, 112]), ("stage2", 8, 32, [-1, 32, 28, 56]),
        ("stage3", 16, 64, [-1, 64, 14, 28]), ("stage4", 32, 64, [-1, 64, 7, 14])]
    parity = manifest["parity"]
    assert parity["passed"] and parity["stand_in"] and set(parity["outputs"]) == {"stage1", "stage2", "stage3",
                                                                                     "stage4"}
    assert all(o["cosine_min"] >= 0.99999 and o["passed"] for o in parity["outputs"].values())
    assert parity["rule"] == feature_rule("fp32").to_dict()

    image = tmp_path / "photo.png"
    from pipeline.data.images import sample_photos

    sample_photos(1)[0][1].save(image)
    capsys.readouterr()
    assert main(["run", "--engine", str(result.path), "--cpu", str(image)]) == 0
    out = capsys.readouterr().out
    assert "stage1: shape [1, 16, 56, 112]" in out and "stage4: shape [1, 64, 7, 14]" in out

    package = package_triton(tmp_path / "repo", result.path)
    config_text = package.config.read_text()
    for name, dims in (("stage1", "16, 56, 112"), ("stage2", "32, 28, 56"), ("stage3", "64, 14, 28"),
                       ("stage4", "64, 7, 14")):
        assert f'name: "{name}"' in config_text and f"dims: [ {dims} ]" in config_text
    assert "label_filename" not in config_text and not (package.model_dir / "labels.txt").exists()
