"""Benchmark backends: what can be measured, behind one small interface.

A backend is a ``BackendSpec`` in the registry ``BACKENDS``: a name, what it runs, whether it needs a GPU, a cheap
check that returns why it cannot run here, and a factory that builds a ``BenchRunner`` inside the worker process.
A ``BenchRunner`` wraps one runner of the project's runner protocol (``pipeline.backends.runners.Runner``:
``TorchRunner``, ``OrtRunner``, ``TensorRTRunner``), so the benchmark times the very code that verify and run use,
and adds what only measurement needs: the device label and details, optional GPU-memory hooks, and an optional
``profile(images, runs)`` that returns the per-op profile (onnxruntime rows). The measurement code calls
``infer(images) -> logits`` (host arrays) and ``close()``.

To add a row (say PyTorch eager with ``iam="fused"``): write a ``_create_x(config, files) -> BenchRunner`` and append a
``BackendSpec`` in ``_registry()`` below (the "extra rows" block); the config, measurement and report code pick it
up by name, and ``report.COMPARISONS`` can pair it with the row it should be compared against.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from pipeline.core.artifact import WeightsRef, stage_onnx_name
from pipeline.core.configs import PipelineConfig
from pipeline.core.errors import PipelineError
from pipeline.plan import find_export
from pipeline.apps.bench.config import BACKENDS as BACKEND_NAMES
from pipeline.apps.bench.config import TRT_PRECISIONS, BenchConfig
from pipeline.backends import gpu as gpu_probe
from pipeline.model.sgformer import create_model
from pipeline.backends.onnxruntime import SESSION_SETTINGS, create_session, session_threads
from pipeline.apps.bench.op_profile import profile_session
from pipeline.iam import host as iam_host
from pipeline.backends import onnxruntime as ort_runner
from pipeline.store.manifest import read_manifest
from pipeline.backends.runners import OrtRunner, Runner, TensorRTRunner, TorchRunner
from pipeline.stages import rewrite
from pipeline.store.io import load_onnx, save_onnx
from pipeline.flow import run_pipeline

__all__ = ["BACKENDS", "BackendSpec", "BenchRunner", "gpu_name", "Artifacts"]

_logger = logging.getLogger("pipeline.apps.bench")


@dataclass
class BenchRunner:
    """A loaded backend: ``runner`` (the project's runner protocol) plus what measurement needs.

    ``infer(images [B,3,S,S] float32) -> logits [B, classes]`` in host memory is ``runner.infer`` followed by
    ``after_infer`` (e.g. a device-memory sample); ``close`` closes the runner, then runs ``after_close``.
    """

    runner: Runner
    device: str
    details: dict = field(default_factory=dict)
    #: GPU backends: reset and read the device-memory figure (bytes); None on CPU.
    gpu_memory_reset: Optional[Callable[[], None]] = None
    gpu_memory_peak: Optional[Callable[[], int]] = None
    gpu_memory_kind: str = ""
    #: onnxruntime rows: ``profile(batches, runs) -> [summary per batch]`` (``op_profile.profile_session``); the
    #: last call on a runner (it may release what ``infer`` uses). None where there is no per-op profiler.
    profile: Optional[Callable[[list, int], list]] = None
    after_infer: Optional[Callable[[], None]] = None
    after_close: Optional[Callable[[], None]] = None

    def infer(self, images: np.ndarray) -> np.ndarray:
        out = self.runner.infer(images)
        if self.after_infer is not None:
            self.after_infer()
        return out

    def close(self) -> None:
        self.runner.close()
        if self.after_close is not None:
            self.after_close()


@dataclass(frozen=True)
class BackendSpec:
    """One entry of the backend registry.

    ``unavailable(config)`` runs in the parent and must be cheap: it returns why the backend cannot run here,
    or None. ``prepare(config, artifacts)`` (parent, optional) makes the files the runner needs (ONNX) and
    returns them as a dict of strings. ``create(config, files)`` runs in the worker and returns a ``BenchRunner``.
    """

    name: str
    description: str
    needs_gpu: bool
    unavailable: Callable[[BenchConfig], Optional[str]]
    create: Callable[[BenchConfig, dict], BenchRunner]
    prepare: Optional[Callable[[BenchConfig, "Artifacts"], dict]] = None
    #: Modules imported before the memory baseline is taken, so library code is not counted as model memory.
    preload: tuple[str, ...] = ("torch", "pipeline.model.sgformer")


def _import_error(module: str) -> Optional[str]:
    """None if ``module`` imports, otherwise a one-line reason."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return f"{module} is not in this checkout"
        return f"{module} cannot be imported: {exc}"
    except Exception as exc:  # a half-written teammate module must not break the whole benchmark
        return f"{module} cannot be imported ({type(exc).__name__}: {exc})"
    return None


def _gpu_unavailable() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if torch.version.cuda is None:
        return f"no GPU: this PyTorch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "no GPU: torch.cuda.is_available() is False on this machine"
    return None


def gpu_name() -> Optional[str]:
    """Name and compute capability of GPU 0 (CUDA driver probe, else PyTorch), or None without a GPU."""
    try:

        gpu = gpu_probe.probe_gpu(0)
        if gpu is not None:
            return f"{gpu.name} ({gpu.compute_capability})"
    except Exception:  # the probe is optional; fall back to PyTorch's view
        pass
    if _gpu_unavailable():
        return None
    import torch

    props = torch.cuda.get_device_properties(0)
    return f"{props.name} (sm_{props.major}{props.minor})"


def _build_model(config: BenchConfig, iam: str = "reference"):

    return create_model(
        config.variant, img_size=config.img_size, checkpoint=config.checkpoint, seed=config.seed,
        trust_pickle=config.trust_checkpoint, iam=iam,
    )


# -- PyTorch eager


def _create_torch(config: BenchConfig, files: dict, device: str, iam: str = "reference") -> BenchRunner:
    import torch

    runner = TorchRunner(_build_model(config, iam), batch=max(config.batches), device=device)
    if device == "cpu":
        return BenchRunner(runner, device="cpu", details={"torch": torch.__version__,
                                                           "threads": torch.get_num_threads()})
    return BenchRunner(
        runner,
        device=gpu_name() or "cuda",
        details={"torch": torch.__version__, "cuda": torch.version.cuda},
        gpu_memory_reset=torch.cuda.reset_peak_memory_stats,
        gpu_memory_peak=torch.cuda.max_memory_allocated,
        gpu_memory_kind="torch.cuda.max_memory_allocated (tensors)",
    )


# -- onnxruntime CPU


class Artifacts:
    """ONNX files for the onnxruntime backends, made at most once per run (in the parent process)."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self._exported: Optional[Path] = Path(config.onnx_path) if config.onnx_path else None
        self._rewritten: Optional[Path] = Path(config.iam_onnx_path) if config.iam_onnx_path else None

    def _model(self):
        return _build_model(self.config)

    def exported(self) -> Path:
        if self._exported is None:  # an identical export made by make engine (same variant, size, weights, format)?
            self._exported = find_export(self.config.engine_dir, self.config.variant, self.config.img_size,
                                         self._weights_ref())
            if self._exported is not None:
                _logger.info("reusing %s (same variant, size, weights and input format; no export)", self._exported)
        if self._exported is None:
            self._make_graphs()
        if not self._exported.is_file():
            raise PipelineError(f"ONNX file {self._exported} does not exist; run `sgformer-trt export` first")
        return self._exported

    def rewritten(self) -> Path:
        if self._rewritten is None and self._exported is None:
            self._make_graphs()
        if self._rewritten is None:  # a given or reused export: the rewrite stage over it
            _logger.info("rewriting the IAM regions of %s into custom-op nodes", self._exported)
            model = rewrite.replace_iam_with_plugin(load_onnx(self.exported()))
            self._rewritten = save_onnx(model, self.workdir / "model.iam.onnx")
        if not self._rewritten.is_file():
            raise PipelineError(f"ONNX file {self._rewritten} does not exist; run `sgformer-trt rewrite` first")
        return self._rewritten

    def _make_graphs(self) -> None:
        """Export and rewrite through ``run_pipeline`` (the one place that sequences the stages), fp32, into this
        run's work folder."""
        _logger.info("exporting %s @ %s to ONNX for the onnxruntime backends", self.config.variant, self.config.img_size)
        config = PipelineConfig(variant=self.config.variant, precision="fp32", img_size=self.config.img_size,
                                checkpoint=self.config.checkpoint,
                                seed=None if self.config.checkpoint else self.config.seed,
                                out_dir=self.workdir, until="rewrite")
        folder = run_pipeline(config).path
        self._exported = folder / stage_onnx_name("export")
        self._rewritten = self._rewritten or folder / stage_onnx_name("rewrite", "fp32")

    def _weights_ref(self) -> WeightsRef:
        if self.config.checkpoint:
            return WeightsRef.from_checkpoint(self.config.checkpoint)
        return WeightsRef.random(self.config.seed)



def _ort_runner(files_key: str, config: BenchConfig, files: dict, extra: dict) -> BenchRunner:
    import onnxruntime as ort

    path = files[files_key]
    runner = OrtRunner(path, max(config.batches), threads=config.cpu_threads)

    def profile(batches: list[np.ndarray], runs: int) -> list[dict]:
        runner.close()  # the timing session goes first, so two sessions' arenas never coexist
        return profile_session(lambda options: create_session(path, threads=config.cpu_threads, options=options),
                               batches, runs)

    settings = SESSION_SETTINGS
    details = {"onnxruntime": ort.__version__, "threads": session_threads(config.cpu_threads),
               "graph": Path(path).name, "session": dict(settings), **extra}
    return BenchRunner(runner, device="cpu", details=details, profile=profile)


def _create_ort(config: BenchConfig, files: dict) -> BenchRunner:
    return _ort_runner("onnx", config, files, {})


def _ort_unavailable(config: BenchConfig) -> Optional[str]:
    reason = _import_error("onnxruntime") or _import_error("pipeline.backends.onnxruntime")
    if reason is None and config.onnx_path is None:
        reason = _import_error("pipeline.stages.export")
    return reason


def _ort_iam_unavailable(config: BenchConfig) -> Optional[str]:
    reason = _ort_unavailable(config) or _import_error("onnxruntime_extensions")
    if reason is None and config.iam_onnx_path is None:
        reason = _import_error("pipeline.stages.rewrite")
    return reason


def _create_ort_iam(config: BenchConfig, files: dict) -> BenchRunner:

    runner = _ort_runner("iam_onnx", config, files, {"custom_op": "onnxruntime-extensions Python op"})
    runner.details["op_body"] = "pipeline.iam.host.run_layout (C++ host reference, ctypes)"
    runner.details["fast_bridge"] = ort_runner.fast_bridge_active()
    runner.details["host_threads"] = iam_host.host_threads(ort_runner._host_library())
    return runner


# -- TensorRT (pipeline.backends.engine: engine directory = engine + plugin library + manifest.json)


def _engine_candidates(config: BenchConfig, backend: str) -> list[Path]:
    explicit = dict(config.engines)
    if backend in explicit:
        return [Path(explicit[backend])]
    root = Path(config.engine_dir)
    if backend == "trt-topk":  # `sgformer-trt build` labels a standard-op fp32 build "fp32" too
        names = ("fp32-topk", "fp32")
    else:
        names = (TRT_PRECISIONS[backend],)
    return [root / f"{config.variant}-{name}-{config.img_size}" for name in names]


def _engine_dir(config: BenchConfig, backend: str) -> tuple[Optional[Path], str]:
    """The engine directory for ``backend``, or None and why not.

    The plugin engines must hold the plugin library (built from the rewritten graph); the native-TopK engine must
    not (built from the standard-op graph). An explicit ``--engine`` is taken as given.
    """

    explicit = backend in dict(config.engines)
    tried = []
    for path in _engine_candidates(config, backend):
        folder = path if path.is_dir() else path.parent
        if not (folder / "manifest.json").is_file():
            tried.append(f"{folder} (no manifest.json)")
            continue
        try:
            has_plugin = read_manifest(folder).plugin is not None
        except PipelineError as exc:
            tried.append(f"{folder} ({exc})")
            continue
        if explicit or has_plugin == (backend != "trt-topk"):
            return folder, ""
        tried.append(f"{folder} ({'has' if has_plugin else 'has no'} plugin library)")
    return None, f"no engine for {backend}: tried {'; '.join(tried)}; build one with `sgformer-trt build` or pass " \
                 f"--engine {backend}=DIR"


def _trt_unavailable(config: BenchConfig, backend: str) -> Optional[str]:
    reason = _import_error("pipeline.backends.tensorrt")
    if reason:
        return reason

    if gpu_probe.probe_gpu(0) is None:
        return "no GPU: no NVIDIA driver / device found (libcuda.so.1)"
    if backend == "trt-topk" and config.img_size != (224, 224):
        return "the native TopK path only builds at 224 (TensorRT TopK K <= 3840)"
    reason = _import_error("pipeline.backends.engine") or _import_error("pycuda.driver")
    if reason:
        return reason
    folder, why = _engine_dir(config, backend)
    return why if folder is None else None


def _create_trt(config: BenchConfig, files: dict, backend: str) -> BenchRunner:
    import pycuda.driver as cuda


    # Device memory in use with a bare primary context (shared with the runner's), so the figure excludes the context.
    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    free, total = cuda.mem_get_info()
    state = {"base": total - free, "peak": 0}
    folder, _ = _engine_dir(config, backend)
    runner = TensorRTRunner(folder)  # chunks of the engine profile's max batch
    engine = runner.engine

    def sample() -> None:
        free_now, _ = cuda.mem_get_info()
        state["peak"] = max(state["peak"], total - free_now - state["base"])

    def reset() -> None:
        state["peak"] = 0
        sample()

    def release_context() -> None:
        ctx.pop()
        ctx.detach()

    if max(config.batches) > engine.max_batch:
        _logger.warning("%s: engine profile max batch %d < %d; larger batches run in chunks", backend,
                        engine.max_batch, max(config.batches))
    return BenchRunner(
        runner,
        device=gpu_name() or "cuda",
        details={"engine_dir": str(folder), "built_with": engine.manifest.backend_label,
                 "precision": engine.manifest.precision, "max_batch": engine.max_batch},
        gpu_memory_reset=reset,
        gpu_memory_peak=lambda: state["peak"],
        gpu_memory_kind="device memory in use after the calls minus in use with a bare CUDA context "
                        "(cudaMemGetInfo: engine, activations, I/O buffers)",
        after_infer=sample,
        after_close=release_context,
    )


_ORT_PRELOAD = ("torch", "onnxruntime", "pipeline.backends.onnxruntime")


def _registry() -> dict[str, BackendSpec]:
    specs = [
        BackendSpec("pytorch-cpu", "PyTorch eager fp32, CPU", False,
                    lambda c: None, lambda c, f: _create_torch(c, f, "cpu")),
        BackendSpec("ort-cpu", "onnxruntime CPU, exported standard-op graph (TopK/GatherElements)", False,
                    _ort_unavailable, _create_ort, prepare=lambda c, a: {"onnx": str(a.exported())},
                    preload=_ORT_PRELOAD),
        BackendSpec("ort-cpu-iam", "onnxruntime CPU, rewritten graph (SGFormerIAM custom op, onnxruntime-extensions)",
                    False, _ort_iam_unavailable, _create_ort_iam, prepare=lambda c, a: {"iam_onnx": str(a.rewritten())},
                    preload=_ORT_PRELOAD + ("onnxruntime_extensions", "pipeline.iam.host")),
        BackendSpec("pytorch-cuda", "PyTorch eager fp32, CUDA", True,
                    lambda c: _gpu_unavailable(), lambda c, f: _create_torch(c, f, "cuda")),
        # -- extra rows: further BackendSpec entries go here; pair them with their reference row in
        #    report.COMPARISONS. iam="fused": every significance block through the sgformer::iam op (pipeline/iam_op.py).
        BackendSpec("pytorch-cpu-fused", 'PyTorch eager fp32, CPU, iam="fused" (sgformer::iam: C++ host reference)',
                    False, lambda c: importlib.import_module("pipeline.iam.torch_op").fused_unavailable("cpu"),
                    lambda c, f: _create_torch(c, f, "cpu", iam="fused")),
        BackendSpec("pytorch-cuda-fused", 'PyTorch eager fp32, CUDA, iam="fused" (sgformer::iam: the plugin kernel)',
                    True, lambda c: _gpu_unavailable() or importlib.import_module("pipeline.iam.torch_op").fused_unavailable(
                        "cuda"), lambda c, f: _create_torch(c, f, "cuda", iam="fused")),
    ]
    for name, precision in TRT_PRECISIONS.items():
        what = "standard-op graph, native TopK" if name == "trt-topk" else f"rewritten graph + plugin, {precision}"
        specs.append(BackendSpec(
            name, f"TensorRT engine, {what}", True,
            lambda c, n=name: _trt_unavailable(c, n), lambda c, f, n=name: _create_trt(c, f, n),
            preload=("pipeline.backends.engine", "pycuda.driver"),
        ))
    return {s.name: s for s in specs}


BACKENDS: dict[str, BackendSpec] = _registry()
if tuple(BACKENDS) != BACKEND_NAMES:  # the config's list of names and the registry are one list
    raise ImportError(f"pipeline.apps.bench: config.BACKENDS {BACKEND_NAMES} != the registry's rows {tuple(BACKENDS)}")
