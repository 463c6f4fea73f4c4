"""Figure parts around a picture: a labelled colour bar, a caption band (the scale, the random-weights caveat),
and readable text. Used by ``explain``; pure PIL/numpy, the colormap from matplotlib."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.core.errors import PipelineError

__all__ = ["COLORMAP", "colormap", "font", "colour_bar", "caption", "compose", "CAVEAT_RED"]

COLORMAP = "inferno"
CAVEAT_RED = (255, 70, 70)
_BG = (0, 0, 0)


def colormap(values: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] float RGB in [0, 1]."""
    try:
        from matplotlib import colormaps
    except ImportError as exc:
        raise PipelineError(f"matplotlib is needed for the colormap ({exc}); pip install matplotlib") from None
    return colormaps[COLORMAP](values)[..., :3]


def font(size: int) -> ImageFont.ImageFont:
    """PIL's bundled scalable font at ``size`` pixels (PIL >= 10.1), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older PIL: no size argument
        return ImageFont.load_default()


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def colour_bar(height: int, lo: float, hi: float, title: str, *, text_px: int) -> Image.Image:
    """A vertical bar (high at the top) with the values at top, middle and bottom and a title above."""
    f = font(text_px)
    pad = text_px // 2
    bar_w = max(12, text_px)
    labels = [_fmt(hi), _fmt((lo + hi) / 2), _fmt(lo)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(probe.textbbox((0, 0), t, font=f)[2] for t in labels + [title])
    width = pad + bar_w + pad + label_w + pad
    out = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(out)
    top, bottom = 2 * text_px + pad, height - text_px
    if bottom - top < 8:
        return out
    ramp = np.linspace(1.0, 0.0, bottom - top, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    out.paste(Image.fromarray((colormap(ramp) * 255 + 0.5).astype(np.uint8)), (pad, top))
    draw.text((pad, pad // 2), title, fill=(255, 255, 255), font=f)
    for text, y in zip(labels, (top, (top + bottom) // 2, bottom)):
        draw.line((pad + bar_w, y, pad + bar_w + pad // 2, y), fill=(255, 255, 255))
        draw.text((2 * pad + bar_w, y - text_px // 2), text, fill=(255, 255, 255), font=f)
    return out


def caption(width: int, lines: Sequence[tuple[str, tuple[int, int, int]]], *, text_px: int) -> Image.Image:
    """A band of text lines (text, colour), wrapped to ``width``."""
    f = font(text_px)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped: list[tuple[str, tuple[int, int, int]]] = []
    for text, colour in lines:
        line = ""
        for word in text.split():
            trial = f"{line} {word}".strip()
            if line and probe.textbbox((0, 0), trial, font=f)[2] > width - text_px:
                wrapped.append((line, colour))
                line = word
            else:
                line = trial
        wrapped.append((line, colour))
    step = int(text_px * 1.3)
    out = Image.new("RGB", (width, step * len(wrapped) + text_px // 2), _BG)
    draw = ImageDraw.Draw(out)
    for i, (text, colour) in enumerate(wrapped):
        draw.text((text_px // 2, text_px // 4 + i * step), text, fill=colour, font=f)
    return out


def compose(picture: Image.Image, bar: Optional[Image.Image], band: Image.Image) -> Image.Image:
    """``picture`` top-left (unchanged), ``bar`` to its right, ``band`` below both."""
    bar_w = bar.width if bar is not None else 0
    width = max(picture.width + bar_w, band.width)
    out = Image.new("RGB", (width, picture.height + band.height), _BG)
    out.paste(picture, (0, 0))
    if bar is not None:
        out.paste(bar, (picture.width, 0))
    out.paste(band, (0, picture.height))
    return out
