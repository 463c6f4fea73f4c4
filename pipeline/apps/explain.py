"""Explain: overlay SG-Former's per-stage importance (significance) maps on the image the model saw.

Contract: ``explain(image_path, variant, img_size, checkpoint=None, out_png=...) -> ExplainResult`` reads one image,
runs the reference model, and writes a PNG (atomically): the panels, a colour bar and a caption band.

What the picture shows, and the choices behind it:

- **Maps**: every hybrid-scale block of stages 1-3 emits a significance map ``[H, W]`` (56x56, 28x28 and 14x14 at
  224); the significance-guided block after it sorts its tokens by that map. Per stage the maps are reduced to one:
  ``reduce="mean"`` (default) averages the stage's hybrid blocks (1, 2 and 8 of them in SG-Former-S), the raw
  values, which are comparable within a stage because every block's map is built the same way over the same
  tokens; ``reduce="last"`` takes the stage's last hybrid block only. **Scale**: all panels share one absolute
  scale, 0 (or the lowest value) .. the highest value of any panel, shown by a colour bar, so a map whose values
  span 0.037..0.045 looks nearly flat, as it is; ``per_panel_scale=True`` stretches each panel to its own
  min..max instead (the caption then lists each panel's range and says colours are not comparable).
- **The crop**: the model sees the evaluation crop (resized, aspect kept, to cover ``floor(H / 0.9) x floor(W /
  0.9)``, center crop ``H x W``; for a square the shorter side goes to ``floor(S / 0.9)``;
  ``pipeline.data.images.crop_geometry``). Any valid input size works, e.g. 448x672 (maps 112x168, 56x84, 28x42).
  That crop is mapped back to a box in original pixel coordinates; each
  map is resized (bilinear) to that box and blended there with the ``inferno`` colormap. Pixels outside the box
  were not seen by the model: they are kept but dimmed, so the output still has the input's size.
- **Layout**: ``stage="all"`` (default) makes a 2 x 2 mosaic: the image with the crop box outlined, then stages
  1, 2 and 3, each panel the full image (enlarged so its long side is at least ``MIN_PANEL`` pixels).
  ``stage=1|2|3`` draws that stage alone at the image's size (top-left of the PNG). A colour bar sits on the
  right and a caption band below (the scale; for random weights the caveat, in red, on the image itself).
- **Sources**: by default the maps come from the PyTorch reference model (``forward_features(...,
  return_importance=True)``). ``onnx=`` reads them from a *rewritten* graph instead, where they are inputs of the
  ``SGFormerIAM`` nodes (exposed as extra outputs in onnxruntime); the exported standard-op graph and TensorRT
  engines do not expose them (engines return logits only), so those are refused with a message.
- Without a checkpoint the weights are random (seeded): the maps then show the mechanism, not what a trained
  network attends to.
"""
from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from pipeline.apps.figure import CAVEAT_RED, caption, colormap, colour_bar, compose, font
from pipeline.core.caveats import random_weights_caveat
from pipeline.core.configs import EXPLAIN_REDUCTIONS, EXPLAIN_STAGES
from pipeline.graph import image_input, input_format as graph_input_format, read_record
from pipeline.store.io import load_onnx
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.model.sgformer import PRETRAINED_CFG
from pipeline.model.sgformer import create_model
from pipeline.backends.onnxruntime import has_iam_nodes, iam_importance_names, run_model
from pipeline.core.variants import STRIDES, ImageSize, check_img_size
from pipeline.data.images import crop_geometry, load_image, preprocess
from pipeline.store.io import write_bytes

__all__ = ["explain", "ExplainResult", "StageMap", "crop_box", "reduce_stage_maps", "render_overlay", "REDUCTIONS"]

_logger = logging.getLogger("pipeline.apps.explain")

REDUCTIONS = EXPLAIN_REDUCTIONS
STAGE_CHOICES = EXPLAIN_STAGES
OUTSIDE_DIM = 0.35  # brightness kept outside the crop the model saw
MIN_PANEL = 400  # long side of a mosaic panel in pixels, at least (a 450x300 photo: 450x300 panels)


@dataclass(frozen=True)
class StageMap:
    """One stage's reduced importance map (raw values, before display scaling)."""

    stage: int
    grid: tuple[int, int]  # (rows, cols) of the stage's token grid: (H/4, W/4) for stage 1
    blocks: int
    values: np.ndarray  # [rows, cols] float32

    @property
    def label(self) -> str:
        return f"{self.grid[0]}x{self.grid[1]}"

    def summary(self) -> dict:
        return {"stage": self.stage, "grid": self.label, "blocks": self.blocks,
                "min": float(self.values.min()), "max": float(self.values.max())}


@dataclass(frozen=True)
class ExplainResult:
    output: Path
    image_size: tuple[int, int]  # (width, height) of the input image
    crop_box: tuple[float, float, float, float]  # (left, top, right, bottom) in original pixels
    stages: tuple[StageMap, ...]
    reduce: str
    source: str
    top1: Optional[int]
    picture_size: tuple[int, int] = (0, 0)  # (width, height) of the PNG: panels, colour bar, caption
    caveat: Optional[str] = None  # the random-weights caveat drawn on the picture, if any


# ---------------------------------------------------------------------------------------------- geometry


def crop_box(width: int, height: int, img_size: object) -> tuple[float, float, float, float]:
    """The evaluation crop (``pipeline.data.images.preprocess``) as a box in the original image's pixel coordinates
    (``img_size``: the network's input, a square side or H x W)."""
    size = ImageSize.parse(img_size)
    new_w, new_h, left, top = crop_geometry((width, height), size, float(PRETRAINED_CFG["crop_pct"]))
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + size.width) * sx, (top + size.height) * sy)


# ---------------------------------------------------------------------------------------------- maps


def reduce_stage_maps(maps: Sequence[np.ndarray], reduce: str = "mean") -> tuple[StageMap, ...]:
    """Group per-block maps ``[rows, cols]`` by grid (largest grid = stage 1) and reduce each group to one map."""
    if reduce not in REDUCTIONS:
        raise ConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for m in maps:
        m = np.asarray(m, dtype=np.float32)
        if m.ndim != 2:
            raise PipelineError(f"expected importance maps [rows, cols], got shape {m.shape}")
        groups.setdefault((int(m.shape[0]), int(m.shape[1])), []).append(m)
    out = []
    for stage, grid in enumerate(sorted(groups, key=lambda g: g[0] * g[1], reverse=True), start=1):
        blocks = groups[grid]
        values = np.mean(blocks, axis=0) if reduce == "mean" else blocks[-1]
        out.append(StageMap(stage=stage, grid=grid, blocks=len(blocks), values=values.astype(np.float32)))
    return tuple(out)


def _maps_from_model(images: np.ndarray, variant: str, img_size: ImageSize, checkpoint: Optional[str], seed: int,
                     trust_checkpoint: bool) -> tuple[list[np.ndarray], int]:
    import torch


    model = create_model(variant, img_size=img_size, checkpoint=checkpoint, seed=seed, trust_pickle=trust_checkpoint)
    with torch.inference_mode():
        feats, maps = model.forward_features(torch.from_numpy(images), return_importance=True)
        logits = model.forward_head(feats)
    return [m[0].numpy() for m in maps], int(logits[0].argmax())


def _maps_from_onnx(images: np.ndarray, onnx_path: str, img_size: ImageSize) -> tuple[list[np.ndarray], int]:

    model = load_onnx(onnx_path)
    images = graph_input_format(model).from_normalized(images)  # the graph's recorded input format
    if not has_iam_nodes(model):
        raise PipelineError(
            f"{onnx_path} has no SGFormerIAM nodes: only a rewritten graph exposes the importance maps (as the "
            f"nodes' inputs); pass the output of `sgformer-trt rewrite`, or drop --onnx to use the PyTorch model"
        )
    image = image_input(model)
    hw = image.image_hw if image is not None else None
    if hw is not None and tuple(hw) != tuple(img_size):
        raise ConfigError(f"{onnx_path} takes {ImageSize(*hw)} images but --img-size is {img_size}; pass "
                          f"--img-size {ImageSize(*hw)}")
    names = iam_importance_names(model)
    outputs = run_model(model, images, extra_outputs=names)
    grids = {rows * cols: (rows, cols) for rows, cols in (img_size.grid(stride) for stride in STRIDES)}
    maps = []
    for name in names:
        flat = np.asarray(outputs[name], dtype=np.float32)[0].ravel()
        if flat.size not in grids:
            raise PipelineError(f"importance tensor {name} has {flat.size} values, not a token grid of a "
                                f"{img_size} input ({', '.join(f'{r}x{c}' for r, c in grids.values())})")
        maps.append(flat.reshape(grids[flat.size]))
    logits = next(iter(outputs.values()))
    return maps, int(np.asarray(logits)[0].argmax())


# ---------------------------------------------------------------------------------------------- drawing


def display_ranges(stages: Sequence[StageMap], per_panel: bool = False) -> list[tuple[float, float]]:
    """The value range each panel is drawn with. Default: one absolute scale shared by all panels, from 0 (or the
    lowest value, if negative) to the highest value of any panel, so equal colours mean equal importance and a
    nearly flat map looks flat. ``per_panel``: each panel stretched to its own min..max (shows structure, but
    colours are not comparable across panels, and tiny differences look strong)."""
    if per_panel:
        return [(float(s.values.min()), float(s.values.max())) for s in stages]
    lo = min(0.0, min(float(s.values.min()) for s in stages))
    hi = max(float(s.values.max()) for s in stages)
    return [(lo, hi)] * len(stages)


def _scaled(values: np.ndarray, value_range: Optional[tuple[float, float]] = None) -> np.ndarray:
    lo, hi = value_range if value_range is not None else (float(values.min()), float(values.max()))
    if hi - lo <= 0.0 or not math.isfinite(hi - lo):
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _box_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    left, top = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    right, bottom = min(width, max(left + 1, int(round(box[2])))), min(height, max(top + 1, int(round(box[3]))))
    return left, top, right, bottom


def render_overlay(image: Image.Image, stage: StageMap, box: tuple[float, float, float, float],
                   alpha: float = 0.5, value_range: Optional[tuple[float, float]] = None) -> Image.Image:
    """One stage's map blended over ``image`` inside ``box``; outside the box the image is dimmed. Same size.
    ``value_range``: the raw values drawn as the colormap's ends (default: the map's own min..max)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    height, width = rgb.shape[:2]
    out = rgb * OUTSIDE_DIM
    left, top, right, bottom = _box_pixels(box, width, height)
    grid = Image.fromarray(_scaled(stage.values, value_range), mode="F")
    resized = np.asarray(grid.resize((right - left, bottom - top), Image.Resampling.BILINEAR), dtype=np.float32)
    color = colormap(np.clip(resized, 0.0, 1.0))
    inside = rgb[top:bottom, left:right]
    out[top:bottom, left:right] = (1.0 - alpha) * inside + alpha * color
    return Image.fromarray(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _label(panel: Image.Image, text: str, text_px: int) -> None:
    draw = ImageDraw.Draw(panel)
    f = font(text_px)
    x0, y0, x1, y1 = draw.textbbox((4, 3), text, font=f)
    draw.rectangle((x0 - 3, y0 - 2, x1 + 3, y1 + 2), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=f)


def _panel_scale(width: int, height: int) -> float:
    """Panels are drawn at the image's own size, enlarged so the long side is at least ``MIN_PANEL`` pixels."""
    return max(1.0, MIN_PANEL / max(width, height))


def _mosaic(image: Image.Image, stages: Sequence[StageMap], box: tuple[float, float, float, float],
            alpha: float, reduce: str, ranges: Sequence[tuple[float, float]], text_px: int) -> Image.Image:
    """2 x 2 panels, each the full image (enlarged if small): input with the crop box, then stages 1-3."""
    width, height = image.size
    scale = _panel_scale(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    original = image.convert("RGB").copy()
    ImageDraw.Draw(original).rectangle(_box_pixels(box, width, height), outline=(255, 255, 0),
                                       width=max(1, min(width, height) // 150))
    panels = [(original, "input (box: model's crop)")]
    for s, value_range in zip(stages[:3], ranges):
        how = f"mean of {s.blocks}" if reduce == "mean" and s.blocks > 1 else "last" if s.blocks > 1 else "1 block"
        panels.append((render_overlay(image, s, box, alpha, value_range), f"stage {s.stage} {s.label} ({how})"))
    canvas = Image.new("RGB", (2 * size[0], 2 * size[1]))
    for i, (panel, text) in enumerate(panels):
        row, col = divmod(i, 2)
        tile = panel.resize(size, Image.Resampling.LANCZOS) if panel.size != size else panel
        _label(tile, text, text_px)
        canvas.paste(tile, (col * size[0], row * size[1]))
    return canvas


def _decorate(picture: Image.Image, ranges: Sequence[tuple[float, float]], per_panel: bool,
              caveat: Optional[str], text_px: int) -> Image.Image:
    """Colour bar (shared scale only: per-panel scales have no single bar) and a caption band with the scale and,
    for random weights, the caveat in red."""
    lo, hi = ranges[0]
    bar = None if per_panel and len(ranges) > 1 else colour_bar(picture.height, lo, hi, "importance", text_px=text_px)
    if per_panel and len(ranges) > 1:
        scale = ("scale: each panel stretched to its own min..max (colours are NOT comparable across panels): "
                 + ", ".join(f"{a:.3g}..{b:.3g}" for a, b in ranges))
    elif per_panel:
        scale = f"scale: stretched to this map's min..max, {lo:.3g} .. {hi:.3g} (small differences look strong)"
    else:
        shared = " shared by all panels" if len(ranges) > 1 else ""
        scale = f"scale: absolute{shared}, {lo:.3g} .. {hi:.3g} (colour bar); --per-panel-scale stretches each map"
    lines = [(scale, (255, 255, 255))]
    if caveat:
        lines.insert(0, (caveat, CAVEAT_RED))
    band = caption(picture.width + (bar.width if bar is not None else 0), lines, text_px=text_px)
    return compose(picture, bar, band)


# ---------------------------------------------------------------------------------------------- entry point


#: Output suffix -> Pillow format of the picture explain writes.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def output_format(out_path: str | Path) -> str:
    """The image format ``out_path``'s suffix names (PNG or JPEG); ConfigError naming the choices otherwise."""
    suffix = Path(out_path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"-o {out_path}: explain writes {', '.join(OUTPUT_FORMATS)} pictures, not "
                          f"{suffix or 'a file without a suffix'}; name the output e.g. {Path(out_path).stem}.png")
    return OUTPUT_FORMATS[suffix]


def explain(
    image_path: str | Path,
    variant: Optional[str] = None,
    img_size: Optional[object] = None,
    checkpoint: Optional[str | Path] = None,
    out_png: str | Path = "explain.png",
    *,
    reduce: str = "mean",
    stage: str = "all",
    alpha: float = 0.5,
    seed: int = 0,
    trust_checkpoint: bool = False,
    onnx: Optional[str | Path] = None,
    per_panel_scale: bool = False,
) -> ExplainResult:
    """Write ``out_png``: the per-stage importance maps over the image, a colour bar and a caption (see module
    docstring)."""

    if Path(out_png).is_dir():
        raise ConfigError(f"-o {out_png} is a folder; pass the PNG file to write, e.g. {Path(out_png) / 'explain.png'}")
    image_format = output_format(out_png)
    if onnx is not None:  # variant and size come from the graph's record (explicit values must agree)

        record = read_record(load_onnx(onnx), str(onnx), variant=variant, img_size=img_size)
        variant, img_size = record.variant, record.img_size
        weights = record.weights.to_text()
    else:
        weights = Path(checkpoint).name if checkpoint else f"random-init, seed {seed}"
    variant = variant or "s"
    if img_size is None:
        raise ConfigError("explain needs the input size: pass img_size (CLI --img-size, e.g. 224) or an ONNX whose "
                          "record names it (--onnx)")
    img_size = check_img_size(img_size)
    if reduce not in REDUCTIONS:
        raise ConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    stage = str(stage)
    if stage not in STAGE_CHOICES:
        raise ConfigError(f"stage must be one of {', '.join(STAGE_CHOICES)}, got {stage!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    start = time.perf_counter()
    image = load_image(image_path)  # PipelineError naming the file if missing or unreadable
    width, height = image.size
    _logger.info("explain start: %s (%dx%d), %s @ %s", image_path, width, height, variant, img_size)
    images = preprocess(image, img_size)[None]
    if onnx is not None:
        maps, top1 = _maps_from_onnx(images, str(onnx), img_size)
        source = f"onnx:{Path(onnx).name}"
    else:
        maps, top1 = _maps_from_model(images, variant, img_size, None if checkpoint is None else str(checkpoint),
                                      seed, trust_checkpoint)
        source = f"pytorch:{variant} ({weights})"
    stages = reduce_stage_maps(maps, reduce)
    if len(stages) != 3:
        raise PipelineError(f"expected importance maps for 3 stages, got grids {[s.label for s in stages]}")
    box = crop_box(width, height, img_size)
    shown = stages if stage == "all" else (stages[int(stage) - 1],)
    ranges = display_ranges(shown, per_panel_scale)
    text_px = max(14, round(max(width, height) * _panel_scale(width, height) / 40))
    if stage == "all":
        picture = _mosaic(image, stages, box, alpha, reduce, ranges, text_px)
    else:
        picture = render_overlay(image, shown[0], box, alpha, ranges[0])
    caveat = random_weights_caveat(weights)
    picture = _decorate(picture, ranges, per_panel_scale, caveat, text_px)
    buf = io.BytesIO()
    if image_format == "JPEG":
        picture = picture.convert("RGB")  # JPEG has no alpha channel
    picture.save(buf, format=image_format, **({"quality": 92} if image_format == "JPEG" else {}))
    path = write_bytes(out_png, buf.getvalue())
    _logger.info("explain finish: %s (%dx%d, %d bytes) in %.1f s", path, width, height, path.stat().st_size,
                 time.perf_counter() - start)
    return ExplainResult(output=path, image_size=(width, height), picture_size=picture.size, caveat=caveat,
                         crop_box=box, stages=stages, reduce=reduce,
                         source=source, top1=top1)


# ---------------------------------------------------------------------------------------------- CLI
