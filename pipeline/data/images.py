"""The one image source of every stage: listing, decoding, conversion to 8-bit RGB, eval preprocessing, samples.

verify, run, explain, calibrate and evaluate read images only through this module (bench feeds seeded synthetic
tensors and reads no image files):

- **Listing** (``list_images``): every file below a folder (recursive) whose suffix is in ``IMAGE_SUFFIXES``,
  sorted by its path relative to the folder (``a/x.png`` < ``b/y.png``), so the order never depends on the file
  system. A subset of N is ``sample_indices``: ``numpy.random.default_rng(seed).choice(M, N, replace=False)``
  over that sorted list, re-sorted; the same folder, N and seed always give the same images in the same order.
- **Decoding** (``load_image``): a missing path, a directory, an unreadable file and an undecodable file each
  raise ``ImageError`` naming the path. An image with more than ``max_pixels`` pixels (default
  ``DEFAULT_MAX_PIXELS`` = 100 megapixels; environment variable ``SGFORMER_MAX_IMAGE_PIXELS`` overrides it) raises
  ``ImageTooLargeError`` before its pixels are decoded: the header alone gives the size. EXIF orientation is
  applied (``ImageOps.exif_transpose``), so a photo taken in portrait is classified upright.
- **Conversion to 8-bit RGB** (``to_rgb``), one rule per PIL mode:

  - ``RGB``: as is. ``L``: gray copied to R, G and B. ``1``: 0 -> 0, 1 -> 255, then as ``L``.
  - ``I;16`` / ``I;16L`` / ``I;16B`` / ``I;16N`` (16-bit): ``round(v * 255 / 65535)``, scaled, not clipped
    (65535 -> 255, 32896 -> 128, 257 * k -> k).
  - ``I`` (32-bit integer): taken as 16-bit data (what 16-bit PNG/TIFF decoders give): clipped to [0, 65535],
    then scaled as ``I;16``.
  - ``F`` (32-bit float): [0, 1] data if its maximum is <= 1, else [0, 255] data; scaled to [0, 255], clipped,
    rounded; NaN and infinities -> 0.
  - ``LA``, ``PA``, ``RGBA``, ``La``, ``RGBa``: **composited over white** (``ALPHA_BACKGROUND``):
    ``round(c * a + 255 * (1 - a))`` per channel with ``a`` = alpha / 255. A fully transparent pixel is white
    whatever colour it stores (``Image.convert("RGB")`` would instead drop alpha and show that colour, often black).
  - ``P`` (palette): the palette colours; with a transparency entry (PNG ``tRNS``) as ``RGBA``. ``L`` / ``RGB``
    with a transparency colour key: as ``RGBA``.
  - ``CMYK``: Pillow's conversion (no colour management: an embedded ICC profile is ignored).
  - other modes (``YCbCr``, ``HSV``, ...): Pillow's conversion to RGB; a mode it cannot convert raises ``ImageError``.

- **Preprocessing** (``preprocess``) follows the official evaluation (``PRETRAINED_CFG``; facts in
  ``docs/images.md``): resize the shorter side to ``floor(img_size / crop_pct)`` (248 for 224, 497 for 448) with
  bicubic interpolation, center-crop ``img_size x img_size``, scale to [0, 1], normalize with the ImageNet
  mean/std. Output: float32 ``[3, S, S]``. For H x W sizes the image is resized to cover
  ``floor(H / crop_pct) x floor(W / crop_pct)`` and center-cropped to H x W (``docs/dense.md``).
- **Sample photos** come from scikit-image's bundled data (``skimage.data``; no download): real photographs first,
  then texture / grayscale images (converted to RGB) when more are asked for.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import ConfigError, ImageError, ImageTooLargeError, PipelineError
from pipeline.model.sgformer import PRETRAINED_CFG, check_img_size

__all__ = ["load_image", "to_rgb", "preprocess", "crop_geometry", "list_images", "sample_indices", "load_folder", "sample_images",
           "sample_photos", "max_image_pixels", "IMAGE_SUFFIXES", "SAMPLE_NAMES", "DEFAULT_MAX_PIXELS",
           "MAX_PIXELS_ENV", "ALPHA_BACKGROUND"]

_logger = logging.getLogger("pipeline.data.images")

#: The one suffix list (case-insensitive) of every stage that reads image folders or list files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
#: Images above this many pixels are refused before decoding (a 10000 x 10000 photo is exactly at the limit).
DEFAULT_MAX_PIXELS = 100_000_000
#: Environment variable that overrides ``DEFAULT_MAX_PIXELS`` (a positive integer).
MAX_PIXELS_ENV = "SGFORMER_MAX_IMAGE_PIXELS"
#: What transparent pixels are composited over (white).
ALPHA_BACKGROUND = (255, 255, 255)
#: Bundled skimage.data images, photos first. Each needs no network access.
SAMPLE_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
    "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell",
)

INTERPOLATIONS = _RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("LA", "PA", "RGBA", "La", "RGBa")
# Pillow's own bomb check is process-global (Image.MAX_IMAGE_PIXELS); ours replaces it while a header is read.
_OPEN_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------- listing


def list_images(folder: str | Path) -> list[Path]:
    """Every ``IMAGE_SUFFIXES`` file below ``folder`` (recursive), sorted by path relative to ``folder``."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ImageError(f"{folder} is not a folder; pass a folder of images")
    paths = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not paths:
        raise ImageError(
            f"image folder {folder} holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files (searched recursively)"
        )
    return paths


def sample_indices(total: int, num: Optional[int], seed: int, what: str, option: str = "--num-images") -> list[int]:
    """Sorted indices of ``num`` of ``total`` items: seeded choice without replacement (``None``: all)."""
    if num is None or num == total:
        return list(range(total))
    if num <= 0:
        raise ConfigError(f"number of images must be positive, got {num}")
    if num > total:
        raise ConfigError(f"asked for {num} images but {what} has only {total}; add images or lower {option}")
    return sorted(int(i) for i in np.random.default_rng(seed).choice(total, num, replace=False))


# ------------------------------------------------------------------------------------------------ decoding


def max_image_pixels() -> int:
    """The pixel limit in force: ``SGFORMER_MAX_IMAGE_PIXELS`` if set, else ``DEFAULT_MAX_PIXELS``."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive integer (a pixel count, e.g. 250000000)")
    return value


def _open_checked(path: Path, limit: int) -> Image.Image:
    """Open ``path`` (header only) and refuse it if it has more than ``limit`` pixels."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our limit below replaces Pillow's warning / DecompressionBombError
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = img.size
    if width * height > limit:
        img.close()
        raise ImageTooLargeError(
            f"image {path} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
            f"{limit / 1e6:g} megapixels (a guard against decompression bombs); downscale it, or raise the limit "
            f"with {MAX_PIXELS_ENV}={width * height} if you trust the file"
        )
    return img


def load_image(path: str | Path, *, max_pixels: Optional[int] = None) -> Image.Image:
    """Decode one image file as 8-bit RGB (``to_rgb``), EXIF orientation applied.

    Raises ``ImageError`` naming the path for a missing path, a directory, an unreadable or an undecodable file,
    and ``ImageTooLargeError`` for more than ``max_pixels`` pixels (default: ``max_image_pixels()``).
    """
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file; pass image files (or the folder with --images)")
    if not path.exists():
        raise ImageError(f"image {path} does not exist")
    if not os.access(path, os.R_OK):
        raise ImageError(f"image {path} cannot be read (permission denied); check its permissions")
    try:
        img = _open_checked(path, limit)
        with img:
            img.load()
            img = _exif_upright(img, path)
            return to_rgb(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc}); it is corrupt or not an "
                         f"image: remove it or convert it to JPEG/PNG") from None


def _exif_upright(img: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block leaves the image as stored (with a warning)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - EXIF parsers raise many types on malformed tags
        _logger.warning("image %s: EXIF orientation ignored (%s: %s)", path, type(exc).__name__, exc)
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB by the rules in the module docstring (16-bit scaled, alpha over white)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(img).astype(np.float64)
        if mode == "I":
            values = np.clip(values, 0.0, 65535.0)
        return _gray_to_rgb(np.rint(values * (255.0 / 65535.0)))
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return _gray_to_rgb(np.rint(np.clip(values * scale, 0.0, 255.0)))
    if mode == "1":
        return img.convert("L").convert("RGB")
    if mode in ("P", "L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in _WITH_ALPHA:
        if mode == "La":  # premultiplied; Pillow converts La only to LA
            img = img.convert("LA")
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:4] / 255.0
        background = np.asarray(ALPHA_BACKGROUND, dtype=np.float64)
        out = rgba[..., :3] * alpha + background * (1.0 - alpha)
        return Image.fromarray(np.rint(out).astype(np.uint8), "RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"image mode {mode!r} cannot be converted to RGB ({exc}); convert the file to JPEG/PNG") \
            from None


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    gray = values.astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")


# ------------------------------------------------------------------------------------------- preprocessing


def crop_geometry(image_wh: tuple[int, int], size_hw: tuple[int, int], crop_pct: float) -> tuple[int, int, int, int]:
    """The eval transform's geometry: an image of ``image_wh`` (width, height) is resized (aspect kept) to
    ``(new_w, new_h)``, covering floor(H / crop_pct) x floor(W / crop_pct), and the H x W input is cropped at
    ``(left, top)``. Used by :func:`preprocess` and by explain's map of the crop back onto the photo."""
    height, width = size_hw
    box_h, box_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
    w, h = image_wh
    if w * box_h <= h * box_w:  # the width binds (for a square box: the shorter side is the width)
        new_w, new_h = box_w, max(box_h, int(box_w * h / w))
    else:
        new_w, new_h = max(box_w, int(box_h * w / h)), box_h
    return new_w, new_h, int(round((new_w - width) / 2.0)), int(round((new_h - height) / 2.0))


def preprocess(
    img: Image.Image,
    img_size: object,
    *,
    crop_pct: Optional[float] = None,
    interpolation: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Upstream eval transform of one PIL image -> float32 ``[3, H, W]`` (``img_size``: an int for a square, or H x W).

    Resize (bicubic, aspect kept) so the image covers floor(H / crop_pct) x floor(W / crop_pct), center crop
    H x W, mean/std; for a square this is the upstream "shorter side to floor(S / crop_pct)". The defaults are the
    official checkpoints' (``pipeline.model.sgformer.PRETRAINED_CFG``). The one implementation used by verify, run,
    explain, calibration and evaluation.
    """

    height, width = check_img_size(img_size)  # e.g. a manifest's size: refused before a huge resize is attempted
    crop_pct = float(PRETRAINED_CFG["crop_pct"]) if crop_pct is None else float(crop_pct)
    interpolation = str(PRETRAINED_CFG["interpolation"]) if interpolation is None else interpolation
    if interpolation not in _RESAMPLE:
        raise ConfigError(f"interpolation {interpolation!r} unknown; expected one of {sorted(_RESAMPLE)}")
    img = to_rgb(img)
    new_w, new_h, left, top = crop_geometry(img.size, (height, width), crop_pct)
    img = img.resize((new_w, new_h), _RESAMPLE[interpolation])
    img = img.crop((left, top, left + width, top + height))
    x = np.asarray(img, dtype=np.float32) / 255.0
    mean_a = np.asarray(PRETRAINED_CFG["mean"] if mean is None else mean, dtype=np.float32)
    std_a = np.asarray(PRETRAINED_CFG["std"] if std is None else std, dtype=np.float32)
    x = (x - mean_a) / std_a
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


# --------------------------------------------------------------------------------------- folders, samples


def load_folder(folder: str | Path, img_size: object, limit: Optional[int] = None,
                seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Images below ``folder`` (``list_images``), ``limit`` of them chosen by ``sample_indices`` (seeded; all when
    the folder has no more), preprocessed: (path relative to ``folder``, float32 [3, S, S])."""
    folder = Path(folder)
    paths = list_images(folder)
    if limit is not None and limit < len(paths):
        paths = [paths[i] for i in sample_indices(len(paths), limit, seed, f"folder {folder}")]
    return [(p.relative_to(folder).as_posix(), preprocess(load_image(p), img_size)) for p in paths]


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


def sample_images(n: int, img_size: object) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` bundled sample images, preprocessed: (name, float32 [3, S, S])."""
    return [(name, preprocess(img, img_size)) for name, img in sample_photos(n)]
