"""Explain: the picture (panels, colour bar, caption), crop geometry, stage reduction, shared scale, the random-weights caveat on the image, ONNX maps, unreadable-image errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.apps.explain import OUTSIDE_DIM, crop_box, explain, reduce_stage_maps


@pytest.fixture(scope="module")
def wide_image(tmp_path_factory):
    """A 211x97 JPEG-free PNG with structure (odd sizes on purpose: mosaic panels do not split evenly)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:97, 0:211]
    pixels = np.stack([xx % 256, yy * 2 % 256, (xx + yy) % 256], axis=-1) + rng.integers(0, 20, (97, 211, 3))
    path = tmp_path_factory.mktemp("img") / "wide.png"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("stage", ["all", "2"])
def test_writes_png_of_the_input_size(wide_image, tmp_path, stage):
    out = tmp_path / "sub" / "explain.png"
    result = explain(wide_image, "tiny-test", 224, out_png=out, stage=stage)
    assert result.output == out and result.image_size == (211, 97)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == result.picture_size and img.mode == "RGB"
    # Readable panels: each mosaic panel is the whole image enlarged to a 400-pixel long side; a single stage is
    # drawn at the image's size; a colour bar on the right and a caption band below come on top.
    min_w, min_h = ((2 * 400, 2 * round(97 * 400 / 211)) if stage == "all" else (211, 97))
    assert result.picture_size[0] > min_w and result.picture_size[1] > min_h
    assert [s.grid for s in result.stages] == [(56, 56), (28, 28), (14, 14)]
    assert [s.blocks for s in result.stages] == [1, 1, 1]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_outside_the_crop_is_dimmed_not_cut(wide_image, tmp_path):
    out = tmp_path / "s1.png"
    result = explain(wide_image, "tiny-test", 224, out_png=out, stage="1", alpha=1.0)
    left = result.crop_box[0]
    assert left > 50, "a 211x97 image loses its left and right sides to the center crop"
    src = np.asarray(Image.open(wide_image), dtype=np.float32)
    got = np.asarray(Image.open(out), dtype=np.float32)
    np.testing.assert_allclose(got[:97, :40], src[:, :40] * OUTSIDE_DIM, atol=1.0)  # the overlay: top-left


def test_crop_box_matches_the_eval_crop():
    assert crop_box(248, 248, 224) == (12.0, 12.0, 236.0, 236.0)  # shorter side 248 = floor(224 / 0.9)
    left, top, right, bottom = crop_box(496, 300, 224)  # resized to 410x248, crop at x 93
    assert (top, bottom) == pytest.approx((12 * 300 / 248, 236 * 300 / 248))
    assert (left, right) == pytest.approx((93 * 496 / 410, 317 * 496 / 410))
    l2, t2, r2, b2 = crop_box(448, 896, 448)  # tall image, 448 input: crop spans the width minus the margins
    assert 0 < l2 < r2 < 448 and 0 < t2 < b2 < 896


def test_crop_box_of_a_non_square_input_is_the_preprocess_crop():
    """224x448 (H x W) on a 1000x500 photo: box floor(224/0.9) x floor(448/0.9) = 248 x 497, the width binds, resize
    to 497x248, crop 448x224 at (24, 12); the box maps that back by 1000/497 and 500/248. And the pixels say so:
    preprocess (no normalization) of a photo whose red channel is its column gives the columns the box names."""
    from pipeline.data.images import preprocess

    box = crop_box(1000, 500, "224x448")
    assert box == pytest.approx((24 * 1000 / 497, 12 * 500 / 248, 472 * 1000 / 497, 236 * 500 / 248))
    ramp = np.broadcast_to((np.arange(1000) * 255 // 999).astype(np.uint8)[None, :, None], (500, 1000, 3))
    seen = preprocess(Image.fromarray(np.ascontiguousarray(ramp)), (224, 448), mean=(0, 0, 0), std=(1, 1, 1))
    assert seen.shape == (3, 224, 448)
    first, last = seen[0, 112, 0] * 999, seen[0, 112, -1] * 999  # the columns (red = column * 255 / 999)
    assert first == pytest.approx(box[0], abs=6) and last == pytest.approx(box[2], abs=6)
    assert crop_box(1000, 500, "224x448") != crop_box(1000, 500, 224)  # planted: a square crop is another box


def test_non_square_input_gives_non_square_maps_from_pytorch_and_onnx(wide_image, tmp_path):
    """RES=HxW (issue 22) reaches explain: 224x448 gives 56x112, 28x56 and 14x28 maps; the rewritten ONNX's maps
    (reshaped by the stage grids, not by a square root) equal PyTorch's."""
    from pipeline.model.sgformer import create_model
    from pipeline.stages.export import export_onnx
    from pipeline.stages.rewrite import replace_iam_with_plugin
    from pipeline.store.io import save_onnx

    ref = explain(wide_image, "tiny-test", "224x448", out_png=tmp_path / "pt.png", seed=0)
    assert [s.grid for s in ref.stages] == [(56, 112), (28, 56), (14, 28)]
    assert ref.stages[0].summary()["grid"] == "56x112"
    exported = export_onnx(create_model("tiny-test", img_size=(224, 448), seed=0), variant="tiny-test")
    rewritten = save_onnx(replace_iam_with_plugin(exported), tmp_path / "m.iam.onnx")
    got = explain(wide_image, out_png=tmp_path / "onnx.png", onnx=rewritten)
    assert got.top1 == ref.top1
    for a, b in zip(got.stages, ref.stages):
        assert a.grid == b.grid
        np.testing.assert_allclose(a.values, b.values, atol=1e-5, err_msg=f"stage {a.stage}")
    with pytest.raises(ConfigError, match="--img-size 224 does not match .* records SG-Former-tiny-test @ 224x448"):
        explain(wide_image, out_png=tmp_path / "x.png", onnx=rewritten, img_size=224)


def test_reduce_mean_and_last():
    maps = [np.full((4, 4), v, np.float32) for v in (1.0, 3.0)] + [np.full((2, 2), 5.0, np.float32)]
    mean = reduce_stage_maps(maps, "mean")
    last = reduce_stage_maps(maps, "last")
    assert [(s.stage, s.grid, s.blocks) for s in mean] == [(1, (4, 4), 2), (2, (2, 2), 1)]
    assert float(mean[0].values[0, 0]) == 2.0 and float(last[0].values[0, 0]) == 3.0
    with pytest.raises(ConfigError, match="reduce"):
        reduce_stage_maps(maps, "max")


def _tiny_graphs(request, tmp_path):
    """(exported, rewritten) tiny-test ONNX paths: the session fixture of conftest.py when present, else made here."""
    try:
        made = request.getfixturevalue("exported")("tiny-test")
        return made.onnx, made.iam
    except pytest.FixtureLookupError:
        from pipeline.stages.export import export_onnx
        from pipeline.store.io import save_onnx
        from pipeline.model.sgformer import create_model
        from pipeline.stages.rewrite import replace_iam_with_plugin

        exported = export_onnx(create_model("tiny-test", seed=0), variant="tiny-test")
        return (save_onnx(exported, tmp_path / "m.onnx"),
                save_onnx(replace_iam_with_plugin(exported), tmp_path / "m.iam.onnx"))


def test_maps_from_rewritten_onnx_match_pytorch(wide_image, tmp_path, request):
    plain, rewritten = _tiny_graphs(request, tmp_path)
    ref = explain(wide_image, "tiny-test", 224, out_png=tmp_path / "pt.png", seed=0)
    got = explain(wide_image, "tiny-test", 224, out_png=tmp_path / "onnx.png", onnx=rewritten)
    assert got.source.startswith("onnx:") and got.top1 == ref.top1
    for a, b in zip(got.stages, ref.stages):
        np.testing.assert_allclose(a.values, b.values, atol=1e-5, err_msg=f"stage {a.stage}")
    with pytest.raises(PipelineError, match="no SGFormerIAM nodes"):
        explain(wide_image, "tiny-test", 224, out_png=tmp_path / "x.png", onnx=plain)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    with pytest.raises(PipelineError, match="broken.jpg"):
        explain(bad, "tiny-test", 224, out_png=tmp_path / "out.png")
    with pytest.raises(PipelineError, match="missing.png"):
        explain(tmp_path / "missing.png", "tiny-test", 224, out_png=tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_cli(wide_image, tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert main(["explain", str(wide_image), "--variant", "tiny-test", "--reduce", "last", "-o", str(out)]) == 0
    assert "211x97" in capsys.readouterr().out and out.is_file()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    assert main(["explain", str(bad), "--variant", "tiny-test", "-o", str(out)]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert main(["explain", str(wide_image), "--variant", "tiny-test", "--alpha", "2", "-o", str(out)]) == 2


def test_onnx_record_gives_variant_and_size(wide_image, tmp_path, request):
    """With --onnx, variant and size come from the graph's record; a contradicting option or a folder as -o is refused."""
    from pipeline.core.errors import ConfigError

    _, rewritten = _tiny_graphs(request, tmp_path)
    got = explain(wide_image, out_png=tmp_path / "meta.png", onnx=rewritten)
    assert got.source.startswith("onnx:") and len(got.stages) == 3
    with pytest.raises(ConfigError, match="--variant s does not match"):
        explain(wide_image, "s", out_png=tmp_path / "x.png", onnx=rewritten)
    with pytest.raises(ConfigError, match="is a folder"):
        explain(wide_image, "tiny-test", 224, out_png=tmp_path)


def test_panels_share_one_absolute_scale_unless_asked_to_stretch():
    from pipeline.apps.explain import StageMap, display_ranges

    stages = [StageMap(1, (2, 2), 1, np.array([[0.037, 0.045], [0.04, 0.041]], np.float32)),
              StageMap(2, (2, 2), 1, np.array([[0.01, 0.02], [0.02, 0.02]], np.float32))]
    shared = display_ranges(stages)
    assert shared == [(0.0, pytest.approx(0.045))] * 2  # from 0: 0.037..0.045 stays nearly flat, as it is
    stretched = display_ranges(stages, per_panel=True)
    assert stretched[0] == (pytest.approx(0.037), pytest.approx(0.045)) and stretched[1][1] == pytest.approx(0.02)


def _red_pixels(img: Image.Image, top: int) -> int:
    """Caveat-red pixels in the caption band (rows from ``top``: below the picture and its colour bar)."""
    from pipeline.apps.figure import CAVEAT_RED

    a = np.asarray(img.convert("RGB"), dtype=np.int32)[top:]
    return int((np.abs(a - np.array(CAVEAT_RED)).sum(axis=-1) < 60).sum())


def test_random_weights_caveat_is_drawn_on_the_picture(wide_image, tmp_path):
    from pipeline.apps.explain import _decorate

    out = tmp_path / "caveat.png"
    result = explain(wide_image, "tiny-test", 224, out_png=out, stage="3")
    assert result.caveat and "RANDOM WEIGHTS" in result.caveat
    assert _red_pixels(Image.open(out), 97) > 200  # the caveat's red text in the caption band
    # Planted control: the same decoration without a caveat has no red text, so the count above can fail.
    plain = Image.new("RGB", (211, 97))
    assert _red_pixels(_decorate(plain, [(0.0, 1.0)], False, None, 14), 97) == 0
    assert _red_pixels(_decorate(plain, [(0.0, 1.0)], False, result.caveat, 14), 97) > 200
