"""export --input-format: normalization (and the uint8 cast) inside the graph; the record carries it to every stage.

Parity is exact by construction: the graph's Cast -> Div 255 -> Sub mean -> Div std are the same float32
operations as host-side normalization (``pipeline.core.artifact.normalize``), so the pixel-input graphs must give
bit-identical logits to the normalized graph fed host-normalized pixels (onnxruntime, CPU, same batch).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from toolchains import require_tool

from pipeline.graph import read_record, record as graph_record
from pipeline.store.io import load_onnx
from pipeline.cli import main
from pipeline.core.artifact import ArtifactInfo, InputFormat, normalize
from pipeline.core.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpp"


@pytest.fixture(scope="module")
def pixel_graphs(exported, tmp_path_factory):
    """tiny-test exported once per pixel format (the normalized one comes from the session fixture)."""
    from pipeline.stages.export import export_onnx
    from pipeline.store.io import save_onnx

    ex = exported("tiny-test", 224)
    folder = tmp_path_factory.mktemp("formats")
    graphs = {InputFormat.NORMALIZED: ex.onnx}
    for fmt in (InputFormat.RGB_UINT8, InputFormat.RGB_FLOAT01):
        proto = export_onnx(ex.model, variant="tiny-test", weights="random-init, seed 0", input_format=fmt)
        graphs[fmt] = save_onnx(proto, folder / f"model.{fmt.value}.onnx")
    return graphs


def _pixels(n: int = 2) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 3, 224, 224), dtype=np.uint8)


@pytest.mark.parametrize("fmt", [InputFormat.RGB_UINT8, InputFormat.RGB_FLOAT01])
def test_pixel_input_graph_is_bit_identical_to_host_normalization(pixel_graphs, fmt):
    from pipeline.backends.onnxruntime import create_session

    model = onnx.load(str(pixel_graphs[fmt]))
    info = graph_record(model)
    assert info.input_format is fmt and info.precision.value == "fp32" and info.variant == "tiny-test"
    elem = model.graph.input[0].type.tensor_type.elem_type
    assert elem == (onnx.TensorProto.UINT8 if fmt is InputFormat.RGB_UINT8 else onnx.TensorProto.FLOAT)
    pixels = _pixels()
    got = create_session(pixel_graphs[fmt]).run(None, {"images": fmt.from_pixels(pixels)})[0]
    want = create_session(pixel_graphs[InputFormat.NORMALIZED]).run(
        None, {"images": normalize(pixels.astype(np.float32) / np.float32(255.0))})[0]
    assert np.array_equal(got, want), f"max abs diff {np.abs(got - want).max():.3g}"


def test_rewrite_keeps_the_format_and_verify_feeds_it(pixel_graphs, tmp_path, capsys):
    """rewrite carries the record; verify --onnx reads variant, size, precision and format from it (no options)."""
    from pipeline.stages.build import artifact_info_for_build
    from pipeline.store.io import load_onnx

    iam = tmp_path / "model.iam.onnx"
    assert main(["rewrite", str(pixel_graphs[InputFormat.RGB_UINT8]), "-o", str(iam)]) == 0
    info = read_record(load_onnx(iam), str(iam))
    assert info.input_format is InputFormat.RGB_UINT8
    labels = artifact_info_for_build(load_onnx(iam), iam)
    assert (labels.variant, labels.img_size, labels.precision, labels.input_format) == (
        "tiny-test", (224, 224), "fp32", "rgb-uint8")
    capsys.readouterr()
    assert main(["verify", "--onnx", str(iam), "--num-images", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS") and "x scale" in out  # the fp32 rule of the table (relative since issue 23)


def test_build_refuses_a_precision_the_graph_does_not_hold(pixel_graphs):
    from pipeline.stages.build import artifact_info_for_build
    from pipeline.store.io import load_onnx

    header = load_onnx(pixel_graphs[InputFormat.NORMALIZED])
    with pytest.raises(ConfigError, match="--precision int8 does not match .* the graph is fp32"):
        artifact_info_for_build(header, "model.onnx", precision="int8")
    with pytest.raises(ConfigError, match="--variant s does not match"):
        artifact_info_for_build(header, "model.onnx", variant="s")
    assert artifact_info_for_build(header, "model.onnx", precision="fp32").precision == "fp32"


CPP_DRIVER = r"""
#include "image.h"
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
int main(int argc, char** argv)
{
    auto const pixels = sgformer::cropPixels(sgformer::readPpm(argv[1]), std::atoi(argv[2]));
    std::FILE* out = std::fopen(argv[3], "wb");
    std::fwrite(pixels.data(), 1, pixels.size(), out);
    for (char const* name : {"normalized", "rgb-float01", "rgb-uint8"})
    {
        auto const values = sgformer::toFloatInput(pixels, sgformer::parseInputFormat(name));
        std::fwrite(values.data(), sizeof(float), values.size(), out);
    }
    std::fclose(out);
    try
    {
        sgformer::parseInputFormat("bgr");
    }
    catch (std::invalid_argument const&)
    {
        return 0;
    }
    return 3;
}
"""


def test_cpp_example_feeds_every_input_format(tmp_path):
    """The C++ app's inputs per format are the Python runners' inputs for the same cropped pixels."""
    compiler = require_tool("g++")
    from PIL import Image

    driver = tmp_path / "driver.cpp"
    driver.write_text(CPP_DRIVER)
    binary = tmp_path / "formats"
    subprocess.run([compiler, "-std=c++17", "-O2", f"-I{EXAMPLE}", str(driver), str(EXAMPLE / "image.cpp"), "-o",
                    str(binary)], check=True)
    ppm = tmp_path / "image.ppm"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(ppm)
    out = tmp_path / "out.bin"
    assert subprocess.run([str(binary), str(ppm), "224", str(out)]).returncode == 0
    raw = out.read_bytes()
    n = 3 * 224 * 224
    pixels = np.frombuffer(raw[:n], dtype=np.uint8).reshape(1, 3, 224, 224)
    floats = np.frombuffer(raw[n:], dtype=np.float32).reshape(3, 1, 3, 224, 224)
    for k, fmt in enumerate((InputFormat.NORMALIZED, InputFormat.RGB_FLOAT01, InputFormat.RGB_UINT8)):
        want = fmt.from_pixels(pixels).astype(np.float32)
        np.testing.assert_allclose(floats[k], want, rtol=0, atol=1e-6, err_msg=fmt.value)
