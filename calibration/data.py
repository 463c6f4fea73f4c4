"""Calibration and evaluation images: discovery, deterministic sampling, preprocessing, batching, hashing.

A calibration set is an ordered list of ``ImageSource`` items (a file, or one of the built-in smoke-test
images). Everything that changes the tensors the quantizer sees goes into ``CalibrationSet.data_hash``:
each item's name and content sha256, and the preprocessing parameters. The hash is part of the
calibration-cache key (``calibration.int8``), so a cached range is reused only for the same data.

Sources (listing, sampling and decoding are ``pipeline.data.images``'s, the one image source of every stage):

- a folder (``images.list_images``): every ``images.IMAGE_SUFFIXES`` file below ``dir`` (recursive, sorted by
  relative path, so the order does not depend on the file system).
- a list file (``read_list``): one path per line (relative paths are relative to the list file; ``#`` comments).
- ``smoke_test_set()``: **a smoke-test set, not an accuracy set.** 32 images made from eight photos
  bundled inside scikit-image (no download): each photo as is, mirrored left-right, and two 80 %
  crops (top-left and bottom-right corner). Good enough to exercise calibration and to compare
  precisions against each other; it says nothing about ImageNet accuracy.

Sampling N of M images is ``images.sample_indices``: ``numpy.random.default_rng(seed).choice(M, N,
replace=False)`` over the sorted list, then re-sorted, so the same folder, N and seed always give the same
images in the same order. Decoding is ``images.load_image`` (every PIL mode to 8-bit RGB, EXIF orientation,
pixel limit); its errors come back as ``CalibrationError`` with the ``--skip-bad-images`` hint.

Preprocessing is the evaluation transform of the official checkpoints (``PRETRAINED_CFG``): resize the
shorter side to ``floor(S / crop_pct)`` (bicubic), center crop ``S x S``, scale to [0, 1], normalize with
the ImageNet mean/std, CHW float32, done by ``pipeline.data.images.preprocess`` (the one implementation).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from pipeline.data import images
from pipeline.core.errors import CalibrationError, ImageError, PipelineError
from pipeline.core.hashing import sha256_file
from pipeline.core.variants import ImageSize
from pipeline.model.sgformer import PRETRAINED_CFG, check_img_size
from tqdm import tqdm

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSource",
    "CalibrationSet",
    "Preprocess",
    "list_folder",
    "read_list",
    "sample_indices",
    "from_paths",
    "smoke_test_set",
    "load_calibration_set",
    "preprocess",
]

_logger = logging.getLogger("pipeline.calibration")

IMAGE_SUFFIXES = images.IMAGE_SUFFIXES
SKIP_HINT = "; or pass --skip-bad-images to skip unreadable files with a warning"

#: Photos bundled inside the scikit-image wheel (loaded without network access).
SMOKE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
)
#: Deterministic variants of each photo: name -> (mirror, crop box as fractions (left, top, right, bottom)).
SMOKE_VARIANTS = {
    "orig": (False, (0.0, 0.0, 1.0, 1.0)),
    "flip": (True, (0.0, 0.0, 1.0, 1.0)),
    "crop-tl": (False, (0.0, 0.0, 0.8, 0.8)),
    "crop-br": (False, (0.2, 0.2, 1.0, 1.0)),
}


@dataclass(frozen=True)
class Preprocess:
    """The evaluation transform; its fields are recorded in the data hash."""

    img_size: ImageSize = ImageSize(224, 224)
    crop_pct: float = float(PRETRAINED_CFG["crop_pct"])
    interpolation: str = str(PRETRAINED_CFG["interpolation"])
    mean: tuple[float, float, float] = tuple(PRETRAINED_CFG["mean"])  # type: ignore[assignment]
    std: tuple[float, float, float] = tuple(PRETRAINED_CFG["std"])  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", check_img_size(self.img_size))
        if not 0.0 < self.crop_pct <= 1.0:
            raise CalibrationError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in images.INTERPOLATIONS:
            raise CalibrationError(
                f"interpolation {self.interpolation!r} unknown; expected one of {sorted(images.INTERPOLATIONS)}"
            )


def preprocess(img: Image.Image, params: Preprocess) -> np.ndarray:
    """PIL image -> float32 [3, S, S] with ``pipeline.data.images.preprocess`` (the one eval transform)."""
    return images.preprocess(img, params.img_size, crop_pct=params.crop_pct, interpolation=params.interpolation,
                             mean=params.mean, std=params.std)


@dataclass(frozen=True)
class ImageSource:
    """One image: a display name, a content digest, and a loader returning a PIL image."""

    name: str
    sha256: str
    load: Callable[[], Image.Image] = field(compare=False, repr=False)
    label: Optional[str] = None


def _open_file(path: Path) -> Image.Image:
    try:
        return images.load_image(path)
    except ImageError as exc:
        raise CalibrationError(f"{exc}{SKIP_HINT}") from None


def _file_source(path: Path, root: Optional[Path]) -> ImageSource:
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise CalibrationError(
            f"cannot read image file {path} ({exc.strerror or exc}); check its permissions{SKIP_HINT}"
        ) from None
    label = None
    if root is not None and path.parent != root:
        label = path.parent.name  # ImageNet-style layout: <root>/<class>/<image>
    return ImageSource(name=str(path), sha256=digest, load=lambda p=path: _open_file(p), label=label)


@dataclass(frozen=True)
class CalibrationSet:
    """An ordered image list plus the preprocessing that turns it into model inputs."""

    sources: tuple[ImageSource, ...]
    params: Preprocess
    description: str

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def data_hash(self) -> str:
        """sha256 over (name, content sha256) of every image, in order, and the preprocessing parameters."""
        h = hashlib.sha256()
        h.update(json.dumps(_params_dict(self.params), sort_keys=True).encode())
        for src in self.sources:
            h.update(f"{src.name}\0{src.sha256}\n".encode())
        return h.hexdigest()

    def sample(self, num_images: Optional[int], seed: int = 0) -> "CalibrationSet":
        """``num_images`` items chosen deterministically (``None``: all). Fewer available is an error."""
        if num_images is None or num_images == len(self.sources):
            return self
        picked = sample_indices(len(self.sources), num_images, seed, self.description)
        return CalibrationSet(
            tuple(self.sources[i] for i in picked), self.params, f"{self.description} (sampled {num_images}, seed {seed})"
        )

    def arrays(self, skip_bad: bool = False) -> Iterator[tuple[ImageSource, np.ndarray]]:
        """Yield (source, preprocessed [3, S, S]) in order; undecodable files fail unless ``skip_bad``."""
        for src in self.sources:
            try:
                img = src.load()
            except CalibrationError as exc:
                if not skip_bad:
                    raise
                _logger.warning("skipping %s: %s", src.name, exc)
                continue
            yield src, preprocess(img, self.params)

    def batches(
        self, batch_size: int = 1, skip_bad: bool = False, progress: bool = True
    ) -> Iterator[np.ndarray]:
        """Yield float32 [b, 3, S, S] batches (the last one may be smaller), with a tqdm progress bar."""
        if batch_size <= 0:
            raise CalibrationError(f"batch size must be positive, got {batch_size}")

        buf: list[np.ndarray] = []
        with tqdm(total=len(self.sources), desc="images", unit="img", disable=not progress, leave=False) as bar:
            for _, arr in self.arrays(skip_bad=skip_bad):
                buf.append(arr)
                bar.update(1)
                if len(buf) == batch_size:
                    yield np.stack(buf)
                    buf = []
            if buf:
                yield np.stack(buf)

    def validate(self, skip_bad: bool = False) -> "CalibrationSet":
        """Decode every image once: returns the set without undecodable files (``skip_bad``) or raises."""
        good = []
        for src in self.sources:
            try:
                src.load()
                good.append(src)
            except CalibrationError as exc:
                if not skip_bad:
                    raise
                _logger.warning("skipping %s: %s", src.name, exc)
        if not good:
            raise CalibrationError(f"no readable image in {self.description}")
        return CalibrationSet(tuple(good), self.params, self.description)


def _params_dict(params: Preprocess) -> dict:
    return {
        # a square keeps the int it always had, so existing data hashes (and statistics caches) stay valid
        "img_size": params.img_size.height if params.img_size.is_square else list(params.img_size),
        "crop_pct": params.crop_pct,
        "interpolation": params.interpolation,
        "mean": list(params.mean),
        "std": list(params.std),
        "resize": "cover floor(H / crop_pct) x floor(W / crop_pct), center crop",
    }


def list_folder(folder: str | Path) -> list[Path]:
    """Every image file below ``folder`` (``pipeline.data.images.list_images``: recursive, sorted by relative path)."""
    try:
        return images.list_images(folder)
    except ImageError as exc:
        hint = "; pass --images DIR with calibration images" if not Path(folder).exists() else ""
        raise CalibrationError(f"{exc}{hint}") from None


def read_list(list_file: str | Path, skip_bad: bool = False) -> list[Path]:
    """Paths named in a list file, one per line (relative to the file; ``#`` starts a comment)."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise CalibrationError(f"image list {list_file} does not exist")
    paths = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        path = Path(line) if Path(line).is_absolute() else list_file.parent / line
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise CalibrationError(f"{list_file}:{lineno}: {line} is not a {'/'.join(IMAGE_SUFFIXES)} file")
        if path.is_dir():
            raise CalibrationError(f"{list_file}:{lineno}: {path} is a directory, not an image file; list image files")
        if not path.is_file():
            if skip_bad:
                _logger.warning("skipping %s:%d: %s does not exist", list_file, lineno, path)
                continue
            raise CalibrationError(f"{list_file}:{lineno}: image {path} does not exist")
        paths.append(path)
    if not paths:
        raise CalibrationError(f"image list {list_file} names no images")
    return paths


def sample_indices(total: int, num: Optional[int], seed: int, what: str) -> list[int]:
    """Sorted indices of ``num`` of ``total`` items (``pipeline.data.images.sample_indices``; ``None``: all)."""
    try:
        return images.sample_indices(total, num, seed, what, option="--num-images (CALIB_N with make)")
    except PipelineError as exc:
        raise CalibrationError(str(exc)) from None


def from_paths(
    paths: Sequence[Path], params: Preprocess, description: str, root: Optional[Path] = None, skip_bad: bool = False
) -> CalibrationSet:
    return CalibrationSet(_sources(paths, root, skip_bad), params, description)


def _sources(paths: Sequence[Path], root: Optional[Path], skip_bad: bool) -> tuple[ImageSource, ...]:
    out = []
    for p in paths:
        try:
            out.append(_file_source(p, root))
        except CalibrationError as exc:
            if not skip_bad:
                raise
            _logger.warning("skipping %s: %s", p, exc)
    return tuple(out)


def _smoke_image(photo: str, variant: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, photo)()
    img = Image.fromarray(arr).convert("RGB")
    mirror, (l, t, r, b) = SMOKE_VARIANTS[variant]
    w, h = img.size
    img = img.crop((round(l * w), round(t * h), round(r * w), round(b * h)))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror else img


def smoke_test_set(params: Preprocess) -> CalibrationSet:
    """32 images derived from scikit-image's bundled photos. A smoke-test set, NOT an accuracy set."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise CalibrationError(
            "the built-in smoke-test set needs scikit-image (pip install scikit-image); or pass --images DIR"
        ) from None
    sources = []
    for photo in SMOKE_PHOTOS:
        for variant in SMOKE_VARIANTS:
            img = _smoke_image(photo, variant)
            digest = hashlib.sha256(img.tobytes() + repr(img.size).encode()).hexdigest()
            sources.append(
                ImageSource(name=f"skimage:{photo}:{variant}", sha256=digest, load=lambda p=photo, v=variant: _smoke_image(p, v))
            )
    return CalibrationSet(tuple(sources), params, "built-in smoke-test set (scikit-image photos; not an accuracy set)")


def load_calibration_set(
    img_size: object,
    images: Optional[str | Path] = None,
    list_file: Optional[str | Path] = None,
    num_images: Optional[int] = None,
    seed: int = 0,
    skip_bad: bool = False,
    min_images: int = 1,
) -> CalibrationSet:
    """The one entry point: a folder, a list file, or (neither given) the smoke-test set; sampled and checked.

    Every image is decoded once here, so a corrupt file fails now, with its name, not mid-calibration.
    """
    params = Preprocess(img_size=img_size)
    if images is not None and list_file is not None:
        raise CalibrationError("pass either an image folder or a list file, not both")
    if images is not None:
        paths = list_folder(images)
        idx = sample_indices(len(paths), num_images, seed, f"folder {images}")
        desc = f"folder {images}" + (f" (sampled {num_images} of {len(paths)}, seed {seed})" if len(idx) < len(paths) else "")
        chosen = from_paths([paths[i] for i in idx], params, desc, Path(images), skip_bad)
    elif list_file is not None:
        paths = read_list(list_file, skip_bad)
        idx = sample_indices(len(paths), num_images, seed, f"list {list_file}")
        desc = f"list {list_file}" + (f" (sampled {num_images} of {len(paths)}, seed {seed})" if len(idx) < len(paths) else "")
        chosen = from_paths([paths[i] for i in idx], params, desc, None, skip_bad)
    else:
        _logger.warning("no calibration images given: using the built-in smoke-test set (NOT an accuracy set)")
        chosen = smoke_test_set(params).sample(num_images, seed)
    chosen = chosen.validate(skip_bad)
    if len(chosen) < min_images:
        raise CalibrationError(
            f"{chosen.description} has {len(chosen)} usable images, at least {min_images} are needed; add images"
        )
    _logger.info("calibration data: %s, %d images, hash %s", chosen.description, len(chosen), chosen.data_hash[:12])
    return chosen
