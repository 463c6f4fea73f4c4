"""The one image source (pipeline.data.images): every PIL mode to 8-bit RGB, EXIF, pixel limit, bad paths, one listing.

Every image is generated here, in the mode under test, and written in a lossless format (PNG / TIFF), so each
expected array is exact: no tolerance anywhere in this file. The expected values follow the conversion rules
in ``pipeline/images.py`` (16-bit scaled by 255/65535 and rounded; alpha composited over white).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.data import images
from pipeline.core.errors import ConfigError, PipelineError


def _rgb(path) -> np.ndarray:
    img = images.load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def _gray3(values) -> np.ndarray:
    gray = np.asarray(values, dtype=np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


# --------------------------------------------------------------------------------------------- 16-bit, I, F


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("I;16B", ".tif")])
def test_16_bit_gray_ramp_is_scaled_not_clipped(tmp_path, mode, suffix):
    """A 16-bit ramp 257*k (k = 0..255) must decode to the 8-bit ramp k, not to 0 then 255 everywhere."""
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (16, 16), ramp.astype(dtype).tobytes())
    path = tmp_path / f"ramp16{suffix}"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == mode  # the file really is 16-bit in this mode
    np.testing.assert_array_equal(_rgb(path), _gray3(np.arange(256).reshape(16, 16)))


def test_16_bit_mid_values_round():
    img = Image.frombytes("I;16", (3, 1), np.array([32767, 32896, 65535], dtype="<u2").tobytes())
    np.testing.assert_array_equal(np.asarray(images.to_rgb(img)), _gray3([[127, 128, 255]]))


def test_32_bit_integer_is_taken_as_16_bit_data(tmp_path):
    values = np.array([[0, 257, 65535, 70000], [-5, 128 * 257, 1000, 65536]], dtype=np.int32)
    path = tmp_path / "int32.tif"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode == "I"
    want = np.rint(np.clip(values, 0, 65535) * (255 / 65535))
    np.testing.assert_array_equal(_rgb(path), _gray3(want))


def test_float_01_image_is_scaled_to_8_bit(tmp_path):
    values = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    path = tmp_path / "float.tif"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode == "F"
    np.testing.assert_array_equal(_rgb(path), _gray3(np.rint(values.astype(np.float64) * 255)))


def test_float_0_255_image_and_nan():
    values = np.array([[0.0, 12.4, 254.6, 300.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(images.to_rgb(Image.fromarray(values))), _gray3([[0, 12, 255, 255, 0]]))


# ------------------------------------------------------------------------------------- gray, 1-bit, palette


def test_grayscale_l(tmp_path):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "gray.png"
    Image.fromarray(values, "L").save(path)
    np.testing.assert_array_equal(_rgb(path), _gray3(values))


def test_one_bit(tmp_path):
    bits = np.indices((4, 6)).sum(axis=0) % 2 == 1  # checkerboard
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    with Image.open(path) as check:
        assert check.mode == "1"
    np.testing.assert_array_equal(_rgb(path), _gray3(bits * 255))


def test_palette_with_transparency_is_white_where_transparent(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 200, 10, 20, 5, 250, 60] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)  # index 0 (stored black) is transparent
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 0
    np.testing.assert_array_equal(_rgb(path), [[[255, 255, 255], [200, 10, 20], [5, 250, 60]]])


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([9, 8, 7, 1, 2, 3] + [0] * (256 * 3 - 6))
    img.putdata([1, 0])
    path = tmp_path / "palette.png"
    img.save(path)
    np.testing.assert_array_equal(_rgb(path), [[[1, 2, 3], [9, 8, 7]]])


# ------------------------------------------------------------------------------------------- alpha, CMYK


def _over_white(rgb, alpha):
    a = np.asarray(alpha, dtype=np.float64)[..., None] / 255.0
    return np.rint(np.asarray(rgb, dtype=np.float64) * a + 255.0 * (1.0 - a))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.array([[[0, 0, 0, 0], [10, 20, 30, 255], [200, 100, 0, 128], [0, 0, 255, 1]]], dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    want = _over_white(rgba[..., :3], rgba[..., 3])
    np.testing.assert_array_equal(_rgb(path), want)
    assert want[0, 0].tolist() == [255, 255, 255] and want[0, 1].tolist() == [10, 20, 30]


def test_la_is_composited_over_white(tmp_path):
    la = np.array([[[100, 0], [100, 128], [100, 255]]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(path)
    gray = _over_white(la[..., :1], la[..., 1])[..., 0]
    np.testing.assert_array_equal(_rgb(path), _gray3(gray))
    assert gray.tolist() == [[255, 177, 100]]  # 100 * 128/255 + 255 * 127/255 = 177.2


def test_cmyk(tmp_path):
    path = tmp_path / "cmyk.tif"
    img = Image.new("CMYK", (4, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)])
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    np.testing.assert_array_equal(_rgb(path), [[[255, 255, 255], [0, 255, 255], [255, 0, 0], [0, 0, 0]]])


# ------------------------------------------------------------------------------------------------- EXIF


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 (rotate 90 clockwise to view): a 4x2 image stored with a red top-left pixel is shown 2x4 with
    the red pixel top-right."""
    stored = np.zeros((2, 4, 3), dtype=np.uint8)
    stored[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.png"
    Image.fromarray(stored).save(path, exif=exif)
    got = _rgb(path)
    want = np.zeros((4, 2, 3), dtype=np.uint8)
    want[0, 1] = (255, 0, 0)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------- pixel limit, bad paths


def _png_header_only(path, width, height):
    """A PNG whose IHDR claims width x height with (truncated) gray data: enough for the header to be read."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_225_megapixel_image_gives_a_typed_error_naming_file_limit_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("SGFORMER_MAX_IMAGE_PIXELS", raising=False)
    path = tmp_path / "huge.png"
    _png_header_only(path, 15000, 15000)
    with pytest.raises(PipelineError) as info:
        images.load_image(path)
    message = str(info.value)
    assert type(info.value).__name__ == "ImageTooLargeError"
    for part in ("huge.png", "15000x15000", "225.0 megapixels", "limit of 100 megapixels",
                 "SGFORMER_MAX_IMAGE_PIXELS=225000000"):
        assert part in message, (part, message)


def test_pixel_limit_override(tmp_path, monkeypatch):
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(small)
    monkeypatch.setenv("SGFORMER_MAX_IMAGE_PIXELS", "199")
    with pytest.raises(PipelineError, match="limit of 0.000199 megapixels"):
        images.load_image(small)
    monkeypatch.setenv("SGFORMER_MAX_IMAGE_PIXELS", "200")
    assert _rgb(small).shape == (10, 20, 3)
    assert images.load_image(small, max_pixels=10_000).size == (20, 10)
    # Raised above Pillow's own bomb limit (2 x 89.5 MP), the header passes; the truncated data is then named.
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 15000, 15000)
    monkeypatch.setenv("SGFORMER_MAX_IMAGE_PIXELS", "225000000")
    with pytest.raises(PipelineError, match=r"huge\.png cannot be decoded"):
        images.load_image(huge)
    monkeypatch.setenv("SGFORMER_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="SGFORMER_MAX_IMAGE_PIXELS='lots' is not a positive integer"):
        images.load_image(small)


def test_directory_missing_unreadable_and_corrupt_files_are_named(tmp_path, monkeypatch):
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    with pytest.raises(PipelineError, match=r"photos\.jpg is a directory, not an image file"):
        images.load_image(folder)
    with pytest.raises(PipelineError, match=r"missing\.png does not exist"):
        images.load_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(PipelineError, match=r"broken\.jpg cannot be decoded .*corrupt or not an image"):
        images.load_image(broken)
    locked = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(locked)
    real_access = images.os.access  # chmod 000 does not stop root (CI containers), so the check itself is faked
    monkeypatch.setattr(images.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    with pytest.raises(PipelineError, match=r"locked\.png cannot be read \(permission denied\)"):
        images.load_image(locked)


# ------------------------------------------------------------------------------------- input-size bound


def test_img_size_has_an_upper_bound():
    from pipeline.model.sgformer import MAX_IMG_SIZE, check_img_size

    check_img_size(MAX_IMG_SIZE)
    for size in (MAX_IMG_SIZE + 224, 2240000):
        with pytest.raises(ConfigError, match=f"input size {size} is too large: the largest supported side is 2240"):
            check_img_size(size)
    # preprocess refuses it before resizing (a manifest's resolution reaches run/verify this way)
    with pytest.raises(ConfigError, match="too large"):
        images.preprocess(Image.new("RGB", (8, 8)), MAX_IMG_SIZE + 224)


def test_cli_refuses_a_huge_img_size_in_one_line(capsys):
    from pipeline.cli import main

    assert main(["info", "--img-size", "2240000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "largest supported side is 2240" in err[0]


# ------------------------------------------------------------------------------ one listing, one loader


def _tree(root):
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    files = {
        "b/z.png": Image.frombytes("I;16", (16, 16), ramp.astype("<u2").tobytes()),
        "a/y.JPG": Image.new("RGB", (20, 16), (40, 80, 120)),
        "a/deep/x.bmp": Image.new("RGB", (16, 20), (10, 20, 30)),
        "top.tif": Image.new("L", (16, 16), 77),
        "w.webp": Image.new("RGB", (16, 16), (5, 5, 5)),
    }
    for rel, img in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel)
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "dir.png").mkdir()  # a folder with an image suffix is not an image
    return sorted(files)


def test_listing_is_recursive_sorted_with_one_suffix_list(tmp_path):
    rels = _tree(tmp_path)
    got = [p.relative_to(tmp_path).as_posix() for p in images.list_images(tmp_path)]
    assert got == rels == ["a/deep/x.bmp", "a/y.JPG", "b/z.png", "top.tif", "w.webp"]
    from calibration.data import IMAGE_SUFFIXES, list_folder

    assert IMAGE_SUFFIXES == images.IMAGE_SUFFIXES
    assert list_folder(tmp_path) == images.list_images(tmp_path)


def test_subsets_are_seeded_and_the_same_in_every_stage(tmp_path):
    from calibration.data import load_calibration_set

    _tree(tmp_path)
    verify_pick = [name for name, _ in images.load_folder(tmp_path, 224, limit=3, seed=0)]
    assert verify_pick == [name for name, _ in images.load_folder(tmp_path, 224, limit=3, seed=0)]
    calib = load_calibration_set(224, images=tmp_path, num_images=3, seed=0)
    assert [str(tmp_path / name) for name in verify_pick] == [s.name for s in calib.sources]
    assert verify_pick != [name for name, _ in images.load_folder(tmp_path, 224, limit=3, seed=1)]


def test_every_stage_decodes_a_16_bit_image_the_same_way(tmp_path):
    """verify (load_folder), calibrate/evaluate (load_calibration_set), run (classify._load_batch): one loader."""
    from calibration.data import load_calibration_set
    from pipeline.apps.classify import load_batch as _load_batch

    _tree(tmp_path)
    path = tmp_path / "b" / "z.png"
    want = images.preprocess(Image.fromarray(_gray3(np.arange(256).reshape(16, 16))), 224)
    verify_arr = dict(images.load_folder(tmp_path, 224))["b/z.png"]
    calib = load_calibration_set(224, images=tmp_path)
    calib_arr = dict((s.name, a) for s, a in calib.arrays())[str(path)]
    run_arr = _load_batch([path], 224)[0]
    for got in (verify_arr, calib_arr, run_arr):
        np.testing.assert_array_equal(got, want)
    assert float(want.max()) - float(want.min()) > 3.0  # a ramp, not a flat (all-white) image


def test_too_few_images_names_the_make_variable_too(tmp_path):
    from calibration.data import load_calibration_set
    from pipeline.core.errors import CalibrationError

    _tree(tmp_path)
    with pytest.raises(CalibrationError, match=r"asked for 9 images but .* has only 5; add images or lower "
                                               r"--num-images \(CALIB_N with make\)"):
        load_calibration_set(224, images=tmp_path, num_images=9)
