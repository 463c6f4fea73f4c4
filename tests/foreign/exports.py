"""Export the foreign fixtures (``sgformer_seed``) the ways users do: TorchScript / dynamo exporter, opsets, batch
axes, onnxslim. Used by tests/test_foreign.py (TorchScript, live) and by ``python tests/foreign/exports.py`` which
regenerates the committed dynamo exports in tests/foreign/data/ (the dynamo exporter needs onnxscript and takes
1-2 minutes per model on 2 cores, too slow for every test run; tests check the files still equal the code).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional

import onnx
import torch

DATA = Path(__file__).resolve().parent / "data"
#: What tests/foreign/data holds: file -> (model, exporter, opset, dynamic batch).
DYNAMO_FIXTURES = {
    "tiny_dynamo_op18_dynbatch.onnx": ("classifier", 18, True),
    "tiny_dynamo_newest.onnx": ("classifier", None, False),
    "detector_dynamo_op18.onnx": ("detector", 18, False),
}
#: Newest opsets tried for the dynamo exporter, newest first (onnx 1.23 defines 28; torch 2.13's dynamo export
#: stops earlier: the first that succeeds is used and recorded in the file).
_NEWEST_TRIES = (25, 24, 23)


def torchscript(model: torch.nn.Module, path: Path, *, opset: int = 17, dynamic: bool = False,
                size: tuple[int, int] = (224, 224)) -> Path:
    x = torch.randn(1, 3, *size)
    names = _output_names(model, x)
    axes = {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=names, dynamic_axes=axes)
    return path


def dynamo(model: torch.nn.Module, path: Path, *, opset: Optional[int] = 18, dynamic: bool = False) -> Path:
    x = torch.randn(2 if dynamic else 1, 3, 224, 224)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=8)}} if dynamic else None
    for version in ((opset,) if opset else _NEWEST_TRIES):
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=version, input_names=["x"],
                              output_names=_output_names(model, x), dynamic_shapes=shapes)
            _inline_weights(path)
            return path
        except Exception:  # noqa: BLE001 - try the next older opset
            if version == ((opset,) if opset else _NEWEST_TRIES)[-1]:
                raise
    return path


def _inline_weights(path: Path) -> None:
    """One self-contained file (the dynamo exporter writes weights to ``<name>.data`` beside it)."""
    model = onnx.load(str(path))
    onnx.save(model, str(path))
    Path(str(path) + ".data").unlink(missing_ok=True)


def slim(src: Path, dst: Path) -> Path:
    import onnxslim

    onnx.save(onnxslim.slim(onnx.load(str(src))), str(dst))
    return dst


def _output_names(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    with torch.no_grad():
        out = model(x)
    return ["cls", "boxes"] if isinstance(out, tuple) else ["logits"]


def build_model(kind: str) -> torch.nn.Module:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from foreign.sgformer_seed import create_seed_detector, create_seed_model

    return create_seed_detector("tiny-test") if kind == "detector" else create_seed_model("tiny-test")


def main() -> None:  # pragma: no cover - regenerates committed files
    DATA.mkdir(exist_ok=True)
    for name, (kind, opset, dynamic) in DYNAMO_FIXTURES.items():
        dynamo(build_model(kind), DATA / name, opset=opset, dynamic=dynamic)
        print("wrote", DATA / name, [o.version for o in onnx.load(str(DATA / name)).opset_import if o.domain == ""])


if __name__ == "__main__":  # pragma: no cover
    main()
