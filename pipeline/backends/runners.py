"""One runner protocol for every backend (in the spirit of Polygraphy's runners): ``infer(images) -> logits``, and
``infer_outputs(images) -> {name: array}`` for every output (a backbone's stage maps ``stage1`` .. ``stage4``).

Every runner takes *normalized* float32 images ``[N, 3, S, S]`` (ImageNet mean/std applied, as
``pipeline.data.images`` makes them) and converts them to what its artifact expects (``InputFormat`` of the
artifact record: e.g. uint8 pixels for a graph exported with ``--input-format rgb-uint8``). Runners run in
chunks of ``batch`` images (the sort makes results depend slightly on batching, so compare like with like),
are context managers, and say what they ran (``label``) and whether it is a stand-in (``stand_in``).

- :class:`TorchRunner`: the PyTorch reference.
- :class:`OrtRunner`: an ONNX graph in onnxruntime on the CPU, ``SGFormerIAM`` custom op included
  (sessions from ``pipeline.backends.onnxruntime.create_session``).
- :class:`TensorRTRunner`: an engine directory on the GPU (``pipeline.backends.engine.EngineRunner``).
- :func:`open_engine`: the engine-or-CPU-stand-in choice, made in this one place: the engine on a GPU, else the
  engine's own ONNX (sha256 checked against the manifest) in onnxruntime.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Protocol, Union, runtime_checkable

import numpy as np

from pipeline.core.artifact import META_INPUT_FORMAT, META_WEIGHTS, InputFormat
from pipeline.core.caveats import random_weights_caveat
from pipeline.core.errors import ConfigError
from pipeline.store.manifest import Manifest, engine_onnx, read_manifest
from pipeline.backends import gpu as gpu_probe
from pipeline.backends.onnxruntime import create_session
from pipeline.store.io import load_onnx
from pipeline.backends.engine import EngineRunner

__all__ = ["Runner", "BaseRunner", "TorchRunner", "OrtRunner", "TensorRTRunner", "open_engine", "open_runner",
           "split_images"]

_logger = logging.getLogger("pipeline.backends.runners")


@runtime_checkable
class Runner(Protocol):
    label: str
    stand_in: bool
    input_format: InputFormat

    def infer(self, images: np.ndarray) -> np.ndarray: ...

    def infer_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]: ...

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc: object) -> None: ...


def split_images(images: Any) -> tuple[np.ndarray, list[str]]:
    """``[N, 3, S, S]`` array, or a list of (name, ``[3, S, S]``) as from ``pipeline.data.images`` -> (array, names)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ConfigError(f"images must be [N, 3, S, S]; got shape {list(images.shape)}")
        return images.astype(np.float32, copy=False), [str(i) for i in range(len(images))]
    names = [n for n, _ in images]
    if not names:
        raise ConfigError("no images to run")
    return np.stack([a for _, a in images]).astype(np.float32), names


class BaseRunner:
    """Chunking, input-format conversion and the context-manager protocol; subclasses implement ``_run``."""

    label = "runner"
    stand_in = False
    #: Output names in graph order (set by subclasses that know them; else out0, out1, ...).
    output_names: tuple[str, ...] = ()
    #: The weights record of the artifact ("random-init, seed 0", "<file> sha256:<hex>", "unknown"), when known.
    weights: Optional[str] = None

    @property
    def caveat(self) -> Optional[str]:
        """The random-weights caveat for results of this runner (None for a checkpoint or unknown weights)."""
        return random_weights_caveat(self.weights)

    def __init__(self, batch: int = 2, input_format: InputFormat | str = InputFormat.NORMALIZED) -> None:
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"batch must be a positive integer, got {batch!r}")
        self.batch = batch
        self.input_format = InputFormat.parse(input_format)

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:  # chunk in self.input_format -> every output, in order
        raise NotImplementedError

    def infer_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output (float32), by name, for normalized images ``[N, 3, H, W]``."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4:
            raise ConfigError(f"images must be [N, 3, H, W]; got shape {list(images.shape)}")
        return self.infer_raw_outputs(self.input_format.from_normalized(images))

    def infer_raw_outputs(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for input already in this runner's ``input_format`` (e.g. uint8 pixels), in chunks."""
        feed = np.asarray(feed)
        chunks = [self._run(np.ascontiguousarray(feed[i: i + self.batch])) for i in range(0, len(feed), self.batch)]
        names = self.output_names or tuple(f"out{i}" for i in range(len(chunks[0])))
        return {name: np.concatenate([c[k] for c in chunks]).astype(np.float32) for k, name in enumerate(names)}

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Logits ``[N, classes]`` (float32) for normalized images ``[N, 3, H, W]``: the single output (a backbone's
        several maps: :meth:`infer_outputs`)."""
        return self._single(self.infer_outputs(images))

    __call__ = infer

    def infer_raw(self, feed: np.ndarray) -> np.ndarray:
        """Logits for input already in this runner's ``input_format`` (e.g. uint8 pixels), in chunks of ``batch``."""
        return self._single(self.infer_raw_outputs(feed))

    @staticmethod
    def _single(outputs: dict[str, np.ndarray]) -> np.ndarray:
        if len(outputs) != 1:
            raise ConfigError(f"this artifact has {len(outputs)} outputs ({', '.join(outputs)}): use infer_outputs")
        return next(iter(outputs.values()))

    def close(self) -> None:
        pass

    def __enter__(self) -> "BaseRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TorchRunner(BaseRunner):
    """The PyTorch model (fp32, eval mode, inference mode) on ``device`` ("cpu" or a CUDA device; a CUDA run is
    synchronized before the logits come back, so a timed ``infer`` covers the work)."""

    label = "PyTorch"

    def __init__(self, model: Any, batch: int = 2, device: str = "cpu") -> None:
        super().__init__(batch)
        self.device = device
        self.model = model.eval() if device == "cpu" else model.to(device).eval()
        if getattr(model, "features_only", False):
            self.output_names = tuple(f"stage{i + 1}" for i in model.out_indices)
        else:
            self.output_names = ("logits",)

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(chunk).to(self.device))
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            result = [t.cpu().numpy() for t in outs]
        if self.device != "cpu":
            torch.cuda.synchronize()
        return result


OnnxSource = Union[str, Path, Any]  # path or onnx.ModelProto


class OrtRunner(BaseRunner):
    """An ONNX graph in onnxruntime on the CPU (SGFormerIAM through the host reference; fp16 inputs handled)."""

    def __init__(self, model: OnnxSource, batch: int = 2, *, threads: Optional[int] = None,
                 input_format: Optional[InputFormat | str] = None, label: str = "onnxruntime",
                 stand_in: bool = False) -> None:

        if isinstance(model, (str, Path)):

            proto = load_onnx(model)
        else:
            proto = model
        meta = {p.key: p.value for p in proto.metadata_props}
        if input_format is None:
            input_format = meta.get(META_INPUT_FORMAT, InputFormat.NORMALIZED.value)
        self.weights = meta.get(META_WEIGHTS)
        super().__init__(batch, input_format)
        self.label = label
        self.stand_in = stand_in
        self.session = create_session(proto, threads=threads)
        first = self.session.get_inputs()[0]
        self._input = first.name
        self._dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(first.type, np.float32)
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(self.output_names), {self._input: np.ascontiguousarray(chunk, dtype=self._dtype)})

    def close(self) -> None:
        self.session = None


class TensorRTRunner(BaseRunner):
    """An engine directory on the GPU (``pipeline.backends.engine.EngineRunner``: manifest checks, plugin, pycuda)."""

    def __init__(self, engine_dir: str | Path, batch: Optional[int] = None, device: int = 0,
                 checked: Optional[Manifest] = None) -> None:
        self.engine = EngineRunner(engine_dir, device=device, checked=checked)
        manifest = self.engine.manifest
        super().__init__(batch or self.engine.max_batch, manifest.input_format)
        self.label = f"{manifest.backend_label} engine"
        self.output_names = tuple(self.engine.outputs)

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        outputs = self.engine.infer_outputs(chunk)
        return [outputs[name] for name in self.output_names]

    def close(self) -> None:
        self.engine.close()


def resolve_engine_dir(path: str | Path) -> Path:
    """An engine folder, or an ``.engine`` file (or ``manifest.json``) inside one -> the folder."""
    path = Path(path)
    if path.is_file():
        return path.parent
    return path


def open_engine(engine_dir: str | Path, *, device: str = "auto", batch: int = 2, device_index: int = 0,
                checked: Optional[Manifest] = None) -> BaseRunner:
    """The engine on a GPU, or (no GPU, or ``device="cpu"``) its CPU stand-in: the engine's own ONNX (sha256
    checked against the manifest) in onnxruntime. The runner's ``stand_in`` and ``label`` say which one runs.
    ``checked``: the manifest of an integrity check the caller already made (the GPU runner skips its own)."""

    if device not in ("auto", "gpu", "cpu"):
        raise ConfigError(f"device {device!r}: expected auto, gpu or cpu")
    engine_dir = resolve_engine_dir(engine_dir)
    manifest = checked if checked is not None else read_manifest(engine_dir)
    gpu = None
    if device != "cpu":
        gpu = gpu_probe.probe_gpu(device_index)
    if gpu is not None or device == "gpu":
        runner = TensorRTRunner(engine_dir, batch=batch, device=device_index, checked=checked)
        if gpu is not None:
            runner.label = f"{manifest.backend_label} engine on {gpu.name}"
    else:
        if device == "auto":
            _warn_cpu_fallback_once(engine_dir)
        runner = OrtRunner(engine_onnx(engine_dir, manifest), batch, input_format=manifest.input_format,
                           label="onnxruntime CPU stand-in (no GPU: the engine file's integrity was checked, its "
                                 "behaviour was not; the engine itself was not executed)", stand_in=True)
    runner.weights = manifest.weights
    if runner.caveat:  # once per folder and process
        _warn_once(("random weights", str(engine_dir)), "%s: %s", engine_dir, runner.caveat)
    return runner


#: The keys of the warnings this process has given (each is logged once).
_warned: set = set()


def _warn_once(key: object, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        _logger.warning(message, *args)


def _warn_cpu_fallback_once(engine_dir: Path) -> None:
    _warn_once("cpu fallback", "no GPU: %s runs as its CPU stand-in (the engine's ONNX in onnxruntime), not as the "
               "engine; pass device=\"cpu\" to choose this explicitly", engine_dir)


def open_runner(artifact: Any, *, batch: int = 2, device: str = "auto") -> BaseRunner:
    """One entry for every artifact: a PyTorch ``nn.Module`` -> :class:`TorchRunner`; an ONNX file or ModelProto ->
    :class:`OrtRunner` (SGFormerIAM op registered); an engine folder (or its ``.engine`` / ``manifest.json``) ->
    :func:`open_engine` (the engine on a GPU, else its CPU stand-in; ``device="cpu"`` forces the stand-in)."""
    if hasattr(artifact, "forward") and hasattr(artifact, "eval"):
        return TorchRunner(artifact, batch)
    if hasattr(artifact, "graph") and hasattr(artifact, "metadata_props"):
        return OrtRunner(artifact, batch)
    if not isinstance(artifact, (str, Path)):
        raise ConfigError(f"open_runner: expected an nn.Module, an ONNX ModelProto or a path, got {type(artifact).__name__}")
    path = Path(artifact)
    if path.is_file() and path.suffix == ".onnx":
        return OrtRunner(path, batch)
    if path.is_dir() or (path.is_file() and path.suffix in (".engine", ".json")):
        return open_engine(path, device=device, batch=batch)
    raise ConfigError(f"open_runner: {path} is neither an .onnx file nor an engine folder (check the path)")
