"""Images for verification and calibration: loading, upstream eval preprocessing, bundled sample photos.

Preprocessing follows the official evaluation (docs/sgformer.md §8, ``PRETRAINED_CFG``): resize the shorter side to
``floor(img_size / crop_pct)`` (248 for 224, 497 for 448) with bicubic interpolation, center-crop
``img_size x img_size``, scale to [0, 1], normalize with the ImageNet mean/std. Output: float32 ``[3, S, S]``.

Sample photos come from scikit-image's bundled data (``skimage.data``; no download): real photographs first,
then texture / grayscale images (converted to RGB) when more are asked for.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError, PipelineError

__all__ = ["load_image", "preprocess", "preprocess_batch", "sample_images", "sample_photos", "load_folder",
           "IMAGE_SUFFIXES", "SAMPLE_NAMES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
#: Bundled skimage.data images, photos first. Each needs no network access.
SAMPLE_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
    "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell",
)


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB; a missing or unreadable file raises ``PipelineError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PipelineError(f"image {path} cannot be read ({type(exc).__name__}: {exc}); remove it or convert it "
                            f"to JPEG/PNG") from None


INTERPOLATIONS = _RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def preprocess(
    img: Image.Image,
    img_size: int,
    *,
    crop_pct: Optional[float] = None,
    interpolation: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Upstream eval transform of one PIL image -> float32 ``[3, img_size, img_size]``.

    Shorter side to floor(img_size / crop_pct) (bicubic), center crop, mean/std; the defaults are the
    official checkpoints' (``pipeline.model.PRETRAINED_CFG``). The one implementation used by verify, run,
    bench, explain and calibration.
    """
    from .model import PRETRAINED_CFG

    if img_size <= 0:
        raise ConfigError(f"img_size must be positive, got {img_size}")
    crop_pct = float(PRETRAINED_CFG["crop_pct"]) if crop_pct is None else float(crop_pct)
    interpolation = str(PRETRAINED_CFG["interpolation"]) if interpolation is None else interpolation
    if interpolation not in _RESAMPLE:
        raise ConfigError(f"interpolation {interpolation!r} unknown; expected one of {sorted(_RESAMPLE)}")
    img = img.convert("RGB")
    scale_size = math.floor(img_size / crop_pct)
    w, h = img.size
    if w <= h:
        new_w, new_h = scale_size, max(scale_size, int(scale_size * h / w))
    else:
        new_w, new_h = max(scale_size, int(scale_size * w / h)), scale_size
    img = img.resize((new_w, new_h), _RESAMPLE[interpolation])
    left = int(round((new_w - img_size) / 2.0))
    top = int(round((new_h - img_size) / 2.0))
    img = img.crop((left, top, left + img_size, top + img_size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    mean_a = np.asarray(PRETRAINED_CFG["mean"] if mean is None else mean, dtype=np.float32)
    std_a = np.asarray(PRETRAINED_CFG["std"] if std is None else std, dtype=np.float32)
    x = (x - mean_a) / std_a
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess_batch(images: Sequence[Image.Image], img_size: int) -> np.ndarray:
    return np.stack([preprocess(img, img_size) for img in images])


def sample_photos(n: int) -> list[tuple[str, Image.Image]]:
    """The first ``n`` bundled sample images as (name, RGB PIL image)."""
    try:
        import skimage.data as data
    except ImportError as exc:
        raise PipelineError("sample images need scikit-image (pip install scikit-image), or pass --images DIR") from exc
    if not 1 <= n <= len(SAMPLE_NAMES):
        raise ConfigError(f"asked for {n} sample images; between 1 and {len(SAMPLE_NAMES)} are bundled")
    out = []
    for name in SAMPLE_NAMES[:n]:
        array = np.asarray(getattr(data, name)())
        if array.dtype != np.uint8:
            array = (array.astype(np.float32) * (255.0 / max(float(array.max()), 1.0))).astype(np.uint8)
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        out.append((name, Image.fromarray(array[..., :3])))
    return out


def sample_images(n: int, img_size: int = 224) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` bundled sample images, preprocessed: (name, float32 [3, S, S])."""
    return [(name, preprocess(img, img_size)) for name, img in sample_photos(n)]


def load_folder(folder: str | Path, img_size: int, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Every image file directly in ``folder`` (sorted by name), preprocessed: (file name, float32 [3, S, S])."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PipelineError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    files = files[:limit] if limit else files
    return [(p.name, preprocess(load_image(p), img_size)) for p in files]
