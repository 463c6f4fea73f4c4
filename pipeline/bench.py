"""Benchmarks: latency, throughput and peak memory of every backend, as ratios against one baseline.

Contract: ``run_benchmarks(config) -> BenchReport`` measures each requested backend at each batch size and
returns the numbers; ``write_report(report, out_dir)`` writes ``bench-<variant>-<res>.json`` / ``.md`` /
``.png`` atomically. The CLI (``sgformer-trt bench``) does both and prints the Markdown table.

What is measured, and how:

- **Latency**: wall time of one call ``runner(batch) -> logits`` (input already in host memory, logits back
  in host memory, so GPU rows include the host<->device copies; CUDA work is synchronized before the clock
  stops). ``warmup`` untimed calls first, then ``iters`` timed calls; the report gives median, p90 and p99
  (``numpy.percentile``, linear interpolation: with fewer than 100 calls p99 lies between the two slowest).
- **Throughput**: images per second over the timed calls, ``batch * calls / sum(call times)``.
- **Peak memory (CPU)**: each backend runs in its own fresh process (``multiprocessing`` spawn), so one
  backend's allocator caches cannot hide another's. The process records its resident set size after the
  imports and the input arrays exist (the *process baseline*), then loads the model; before each batch size
  it resets the kernel's peak-RSS counter (Linux ``/proc/self/clear_refs`` = 5) and afterwards reads
  ``VmHWM``. The figure is ``VmHWM - baseline``: weights, activations, workspace and whatever the
  allocators keep, at the worst moment of that batch size. Where the counter cannot be reset (non-Linux)
  the figure is the cumulative peak since the model was loaded (``ru_maxrss``) and the report says so.
- **Peak memory (GPU)**: PyTorch CUDA reports ``torch.cuda.max_memory_allocated`` (tensors only, not the
  caching allocator's reserve or the CUDA context); TensorRT reports the device memory in use
  (``cudaMemGetInfo``) after the batch minus before loading the engine, which includes the engine, its
  activation memory and the context that loading created.
- **Ratios**: every row's throughput, median latency and memory are divided by the baseline row measured in
  the same run (default PyTorch eager fp32 CPU at batch 1; stated in every output). Each backend's logits
  for the first image are compared with PyTorch's (max abs difference), so a fast but wrong backend shows.

Backends are a small registry (``BACKENDS``): a name, what it runs, whether it needs a GPU, a cheap check that
returns why it cannot run here, and a factory that builds a runner (``batch ndarray -> logits ndarray``)
inside the worker process. GPU and TensorRT rows are produced only by a real run on a GPU and name it;
elsewhere they are listed as skipped with the reason.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import io
import logging
import multiprocessing
import os
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import ConfigError, PipelineError

__all__ = [
    "BACKENDS",
    "BackendSpec",
    "BenchConfig",
    "BenchReport",
    "Runner",
    "run_benchmarks",
    "write_report",
    "render_markdown",
    "render_plot",
]

_logger = logging.getLogger("pipeline.bench")

SCHEMA = "sgformer-trt.bench/1"
DEFAULT_BATCHES = (1, 8, 32)
TINY_BATCHES = (1, 2)
DEFAULT_ITERS = 20
DEFAULT_WARMUP = 3
TINY_ITERS = 3
TINY_WARMUP = 1
DEFAULT_BASELINE = "pytorch-cpu:1"
#: TensorRT precisions benchmarked from ``engines/<variant>-<precision>-<res>/``; "fp32-topk" is the engine
#: built from the standard-op graph (native TopK, no plugin), which only builds at 224.
TRT_PRECISIONS = {"trt-fp32": "fp32", "trt-fp16": "fp16", "trt-int8": "int8", "trt-topk": "fp32-topk"}


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark. Validated on construction (``ConfigError``)."""

    variant: str = "s"
    img_size: int = 224
    checkpoint: Optional[str] = None
    trust_checkpoint: bool = False
    seed: int = 0
    batches: tuple[int, ...] = DEFAULT_BATCHES
    iters: int = DEFAULT_ITERS
    warmup: int = DEFAULT_WARMUP
    #: Empty means every registered backend (those that cannot run here are listed as skipped).
    backends: tuple[str, ...] = ()
    baseline: str = DEFAULT_BASELINE
    #: CPU threads for PyTorch (intra-op) and onnxruntime (intra-op); None = all CPUs this process may use.
    threads: Optional[int] = None
    #: Stop timing a row after this many seconds (at least 3 timed calls are always made). None = no limit.
    max_seconds_per_row: Optional[float] = None
    #: Existing artifacts to benchmark instead of exporting/rewriting from the model in this run.
    onnx_path: Optional[str] = None
    iam_onnx_path: Optional[str] = None
    engine_dir: str = "engines"
    #: Explicit engine files: backend name -> path (overrides the ``engine_dir`` lookup).
    engines: tuple[tuple[str, str], ...] = ()
    #: Run each backend in a fresh process (honest per-backend memory). False runs in this process (debugging).
    isolate: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        from .model import VARIANTS, check_img_size

        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        check_img_size(self.img_size)
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batches!r} (e.g. --batches 1,8,32)")
        if len(set(self.batches)) != len(self.batches):
            raise ConfigError(f"batch sizes repeat: {self.batches!r}")
        if self.iters < 1:
            raise ConfigError(f"--iters must be at least 1, got {self.iters}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more, got {self.warmup}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; expected some of {', '.join(BACKENDS)}")
        for name, _ in self.engines:
            if name not in TRT_PRECISIONS:
                raise ConfigError(f"--engine {name}=...: {name} is not a TensorRT backend ({', '.join(TRT_PRECISIONS)})")
        parse_baseline(self.baseline)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.max_seconds_per_row is not None and self.max_seconds_per_row <= 0:
            raise ConfigError(f"--max-seconds must be positive, got {self.max_seconds_per_row}")

    @classmethod
    def tiny(cls, **overrides) -> "BenchConfig":
        """CI preset: small batches, few calls (still every backend)."""
        base = dict(batches=TINY_BATCHES, iters=TINY_ITERS, warmup=TINY_WARMUP)
        base.update(overrides)
        return cls(**base)

    @property
    def selected_backends(self) -> tuple[str, ...]:
        return self.backends or tuple(BACKENDS)

    @property
    def cpu_threads(self) -> int:
        return self.threads or available_cpus()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """1-minute load average (other processes competing for the CPUs skew CPU timings; the report records it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def parse_baseline(text: str) -> tuple[str, int]:
    """``"backend:batch"`` -> (backend, batch)."""
    name, _, batch = text.partition(":")
    if name not in BACKENDS or not batch.isdigit() or int(batch) < 1:
        raise ConfigError(
            f"baseline {text!r} is not BACKEND:BATCH with a known backend (e.g. {DEFAULT_BASELINE}); "
            f"backends: {', '.join(BACKENDS)}"
        )
    return name, int(batch)


# ---------------------------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """A loaded backend: ``infer(images [B,3,S,S] float32) -> logits [B, classes]`` in host memory."""

    infer: Callable[[np.ndarray], np.ndarray]
    device: str
    details: dict = field(default_factory=dict)
    #: GPU backends: reset and read the device-memory figure (bytes); None on CPU.
    gpu_memory_reset: Optional[Callable[[], None]] = None
    gpu_memory_peak: Optional[Callable[[], int]] = None
    gpu_memory_kind: str = ""
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class BackendSpec:
    """One entry of the backend registry.

    ``unavailable(config)`` runs in the parent and must be cheap: it returns why the backend cannot run here,
    or None. ``prepare(config, artifacts)`` (parent, optional) makes the files the runner needs (ONNX) and
    returns them as a dict of strings. ``create(config, files)`` runs in the worker and returns a ``Runner``.
    """

    name: str
    description: str
    needs_gpu: bool
    unavailable: Callable[[BenchConfig], Optional[str]]
    create: Callable[[BenchConfig, dict], Runner]
    prepare: Optional[Callable[[BenchConfig, "_Artifacts"], dict]] = None
    #: Modules imported before the memory baseline is taken, so library code is not counted as model memory.
    preload: tuple[str, ...] = ("torch", "pipeline.model")


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
        from .trt_backend import probe_gpu

        gpu = probe_gpu(0)
        if gpu is not None:
            return f"{gpu.name} ({gpu.compute_capability})"
    except Exception:  # the probe is optional; fall back to PyTorch's view
        pass
    if _gpu_unavailable():
        return None
    import torch

    props = torch.cuda.get_device_properties(0)
    return f"{props.name} (sm_{props.major}{props.minor})"


def _build_model(config: BenchConfig):
    from .model import create_model

    return create_model(
        config.variant, img_size=config.img_size, checkpoint=config.checkpoint, seed=config.seed,
        trust_pickle=config.trust_checkpoint,
    )


# -- PyTorch eager


def _create_torch(config: BenchConfig, files: dict, device: str) -> Runner:
    import torch

    model = _build_model(config).to(device)
    if device == "cpu":

        def infer(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(images)).numpy()

        return Runner(infer, device="cpu", details={"torch": torch.__version__, "threads": torch.get_num_threads()})

    def infer_cuda(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(images).to(device)).cpu().numpy()
        torch.cuda.synchronize()
        return out

    return Runner(
        infer_cuda,
        device=gpu_name() or "cuda",
        details={"torch": torch.__version__, "cuda": torch.version.cuda},
        gpu_memory_reset=torch.cuda.reset_peak_memory_stats,
        gpu_memory_peak=torch.cuda.max_memory_allocated,
        gpu_memory_kind="torch.cuda.max_memory_allocated (tensors)",
    )


# -- onnxruntime CPU


class _Artifacts:
    """ONNX files for the onnxruntime backends, made at most once per run (in the parent process)."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self._exported: Optional[Path] = Path(config.onnx_path) if config.onnx_path else None
        self._rewritten: Optional[Path] = Path(config.iam_onnx_path) if config.iam_onnx_path else None

    def _model(self):
        return _build_model(self.config)

    def exported(self) -> Path:
        if self._exported is None:
            from .export import export_onnx
            from .io import save_onnx

            _logger.info("exporting %s @ %d to ONNX for the onnxruntime backends", self.config.variant, self.config.img_size)
            model = export_onnx(self._model(), batch=None, variant=self.config.variant,
                                weights=self._weights())
            self._exported = save_onnx(model, self.workdir / "model.onnx")
        if not self._exported.is_file():
            raise PipelineError(f"ONNX file {self._exported} does not exist; run `sgformer-trt export` first")
        return self._exported

    def rewritten(self) -> Path:
        if self._rewritten is None:
            from . import rewrite
            from .io import load_onnx, save_onnx

            _logger.info("rewriting the IAM regions into custom-op nodes")
            model = rewrite.replace_iam_with_plugin(load_onnx(self.exported()))
            self._rewritten = save_onnx(model, self.workdir / "model.iam.onnx")
        if not self._rewritten.is_file():
            raise PipelineError(f"ONNX file {self._rewritten} does not exist; run `sgformer-trt rewrite` first")
        return self._rewritten

    def _weights(self) -> str:
        if self.config.checkpoint:
            return f"{Path(self.config.checkpoint).name}"
        return f"random-init, seed {self.config.seed}"


def _ort_runner(session, config: BenchConfig, extra: dict) -> Runner:
    import onnxruntime as ort

    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def infer(images: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: images})[0]

    details = {"onnxruntime": ort.__version__, "threads": config.cpu_threads, **extra}
    return Runner(infer, device="cpu", details=details)


def _create_ort(config: BenchConfig, files: dict) -> Runner:
    from .ort_runner import create_session

    session = create_session(files["onnx"], threads=config.cpu_threads)
    return _ort_runner(session, config, {"graph": Path(files["onnx"]).name})


def _ort_unavailable(config: BenchConfig) -> Optional[str]:
    reason = _import_error("onnxruntime") or _import_error("pipeline.ort_runner")
    if reason is None and config.onnx_path is None:
        reason = _import_error("pipeline.export")
    return reason


def _ort_iam_unavailable(config: BenchConfig) -> Optional[str]:
    reason = _ort_unavailable(config) or _import_error("onnxruntime_extensions")
    if reason is None and config.iam_onnx_path is None:
        reason = _import_error("pipeline.rewrite")
    return reason


def _create_ort_iam(config: BenchConfig, files: dict) -> Runner:
    from .ort_runner import create_session

    session = create_session(files["iam_onnx"], threads=config.cpu_threads)
    runner = _ort_runner(session, config, {"graph": Path(files["iam_onnx"]).name, "custom_op": "onnxruntime-extensions"})
    first_call = runner.infer

    def infer(images: np.ndarray) -> np.ndarray:
        out = first_call(images)
        if "op_body" not in runner.details:  # which implementation ort_runner bound to the op (known after a call)
            from . import ort_runner

            impl = getattr(ort_runner, "_impl", None)
            runner.details["op_body"] = f"{getattr(impl, '__module__', '?')}.{getattr(impl, '__name__', '?')}"
        return out

    runner.infer = infer
    return runner


# -- TensorRT (pipeline.runtime: engine directory = engine + plugin library + manifest.json)


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
    from .manifest import read_manifest

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
    reason = _import_error("pipeline.trt_backend")
    if reason:
        return reason
    from .trt_backend import probe_gpu

    if probe_gpu(0) is None:
        return "no GPU: no NVIDIA driver / device found (libcuda.so.1)"
    if backend == "trt-topk" and config.img_size != 224:
        return "the native TopK path only builds at 224 (TensorRT TopK K <= 3840)"
    reason = _import_error("pipeline.runtime") or _import_error("pycuda.driver")
    if reason:
        return reason
    folder, why = _engine_dir(config, backend)
    return why if folder is None else None


def _create_trt(config: BenchConfig, files: dict, backend: str) -> Runner:
    import pycuda.driver as cuda

    from .runtime import load_runner

    # Device memory in use with a bare primary context (shared with the runner's), so the figure excludes the context.
    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    free, total = cuda.mem_get_info()
    state = {"base": total - free, "peak": 0}
    folder, _ = _engine_dir(config, backend)
    engine = load_runner(folder)

    def sample() -> None:
        free_now, _ = cuda.mem_get_info()
        state["peak"] = max(state["peak"], total - free_now - state["base"])

    def infer(images: np.ndarray) -> np.ndarray:
        out = engine.infer(images)
        sample()
        return out

    def reset() -> None:
        state["peak"] = 0
        sample()

    def close() -> None:
        engine.close()
        ctx.pop()
        ctx.detach()

    if max(config.batches) > engine.max_batch:
        _logger.warning("%s: engine profile max batch %d < %d; larger batches run in chunks", backend,
                        engine.max_batch, max(config.batches))
    return Runner(
        infer,
        device=gpu_name() or "cuda",
        details={"engine_dir": str(folder), "built_with": engine.manifest.backend_label,
                 "precision": engine.manifest.precision, "max_batch": engine.max_batch},
        gpu_memory_reset=reset,
        gpu_memory_peak=lambda: state["peak"],
        gpu_memory_kind="device memory in use after the calls minus in use with a bare CUDA context "
                        "(cudaMemGetInfo: engine, activations, I/O buffers)",
        close=close,
    )


_ORT_PRELOAD = ("torch", "onnxruntime", "pipeline.ort_runner")


def _registry() -> dict[str, BackendSpec]:
    specs = [
        BackendSpec("pytorch-cpu", "PyTorch eager fp32, CPU", False,
                    lambda c: None, lambda c, f: _create_torch(c, f, "cpu")),
        BackendSpec("ort-cpu", "onnxruntime CPU, exported standard-op graph (TopK/GatherElements)", False,
                    _ort_unavailable, _create_ort, prepare=lambda c, a: {"onnx": str(a.exported())},
                    preload=_ORT_PRELOAD),
        BackendSpec("ort-cpu-iam", "onnxruntime CPU, rewritten graph (SGFormerIAM custom op, onnxruntime-extensions)",
                    False, _ort_iam_unavailable, _create_ort_iam, prepare=lambda c, a: {"iam_onnx": str(a.rewritten())},
                    preload=_ORT_PRELOAD + ("onnxruntime_extensions", "pipeline.iam_host")),
        BackendSpec("pytorch-cuda", "PyTorch eager fp32, CUDA", True,
                    lambda c: _gpu_unavailable(), lambda c, f: _create_torch(c, f, "cuda")),
    ]
    for name, precision in TRT_PRECISIONS.items():
        what = "standard-op graph, native TopK" if name == "trt-topk" else f"rewritten graph + plugin, {precision}"
        specs.append(BackendSpec(
            name, f"TensorRT engine, {what}", True,
            lambda c, n=name: _trt_unavailable(c, n), lambda c, f, n=name: _create_trt(c, f, n),
            preload=("pipeline.runtime", "pycuda.driver"),
        ))
    return {s.name: s for s in specs}


BACKENDS: dict[str, BackendSpec] = _registry()


# ---------------------------------------------------------------------------------------------- memory


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class _RssProbe:
    """Resident-memory figures of this process: current RSS, and a peak that can be reset per batch size."""

    def __init__(self) -> None:
        self.resettable = self._try_reset()
        self.kind = (
            "peak RSS minus the process baseline, peak reset per batch size (VmHWM, /proc/self/clear_refs)"
            if self.resettable else
            "peak RSS minus the process baseline, cumulative since the model was loaded (ru_maxrss)"
        )

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _proc_status_kib("VmHWM") is not None
        except OSError:
            return False

    def current(self) -> int:
        kib = _proc_status_kib("VmRSS")
        if kib is not None:
            return kib * 1024
        return self.peak()

    def reset_peak(self) -> None:
        if self.resettable:
            self._try_reset()

    def peak(self) -> int:
        kib = _proc_status_kib("VmHWM")
        if kib is not None:
            return kib * 1024
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


# ---------------------------------------------------------------------------------------------- worker


@dataclass(frozen=True)
class _Job:
    config: BenchConfig
    backend: str
    files: dict
    log_level: int


def _inputs(config: BenchConfig) -> np.ndarray:
    """Normalized-image-like inputs for the largest batch (seeded; smaller batches are prefixes)."""
    rng = np.random.default_rng(config.seed)
    return rng.standard_normal((max(config.batches), 3, config.img_size, config.img_size), dtype=np.float32)


def _set_threads(config: BenchConfig) -> None:
    import torch

    torch.set_num_threads(config.cpu_threads)


def _measure(job: _Job) -> dict:
    """Load one backend and time it at every batch size (runs inside the worker process)."""
    config = job.config
    spec = BACKENDS[job.backend]
    _set_threads(config)
    for module in spec.preload:
        try:
            importlib.import_module(module)
        except ImportError:  # optional helpers (e.g. the host-reference wrapper); the runner reports real problems
            _logger.debug("%s: preload of %s failed", job.backend, module)
    images = _inputs(config)
    probe = _RssProbe()
    baseline_rss = probe.current()
    probe.reset_peak()
    start = time.perf_counter()
    runner = spec.create(config, job.files)
    load_s = time.perf_counter() - start
    load_peak = probe.peak() - baseline_rss
    _logger.info("%s: loaded in %.2f s on %s", job.backend, load_s, runner.device)
    reference = runner.infer(np.ascontiguousarray(images[:1]))[0]
    rows = []
    try:
        for batch in sorted(config.batches):
            rows.append(_time_batch(config, job.backend, runner, images[:batch], probe, baseline_rss))
    finally:
        runner.close()
    return {
        "backend": job.backend,
        "device": runner.device,
        "details": runner.details,
        "load_s": load_s,
        "load_peak_bytes": load_peak,
        "memory_kind": runner.gpu_memory_kind or probe.kind,
        "rows": rows,
        "first_logits": np.asarray(reference, dtype=np.float64).tolist(),
    }


def _time_batch(config: BenchConfig, backend: str, runner: Runner, images: np.ndarray, probe: _RssProbe,
                baseline_rss: int) -> dict:
    batch = images.shape[0]
    images = np.ascontiguousarray(images)
    probe.reset_peak()
    if runner.gpu_memory_reset:
        runner.gpu_memory_reset()
    for _ in range(config.warmup):
        runner.infer(images)
    times: list[float] = []
    bar = _progress(config, total=config.iters, desc=f"{backend} b{batch}")
    budget_start = time.perf_counter()
    out = None
    for i in range(config.iters):
        t0 = time.perf_counter()
        out = runner.infer(images)
        times.append(time.perf_counter() - t0)
        bar.update(1)
        if (config.max_seconds_per_row and i >= 2
                and time.perf_counter() - budget_start > config.max_seconds_per_row):
            _logger.info("%s batch %d: time budget reached after %d calls", backend, batch, len(times))
            break
    bar.close()
    if out is None or out.shape[0] != batch or not np.all(np.isfinite(out)):
        raise PipelineError(f"{backend} returned unusable logits at batch {batch}: shape "
                            f"{None if out is None else out.shape}, finite={out is not None and bool(np.isfinite(out).all())}")
    ms = np.asarray(times) * 1e3
    memory = runner.gpu_memory_peak() if runner.gpu_memory_peak else probe.peak() - baseline_rss
    median, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    row = {
        "batch": batch,
        "calls": len(times),
        "warmup": config.warmup,
        "latency_ms": {"median": median, "p90": p90, "p99": p99, "mean": float(ms.mean()), "min": float(ms.min())},
        "throughput_ips": batch * len(times) / float(np.sum(times)),
        "peak_memory_bytes": int(memory),
    }
    _logger.info("%s batch %d: median %.2f ms, %.1f img/s, %.1f MiB", backend, batch, median,
                 row["throughput_ips"], memory / 2**20)
    return row


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(config: BenchConfig, total: int, desc: str):
    if not config.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def _worker_main(conn, job: _Job) -> None:
    """Entry point of a spawned worker: measure, send the result (or the error) back, exit."""
    logging.basicConfig(level=job.log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        conn.send({"ok": _measure(job)})
    except BaseException as exc:  # everything goes back to the parent as text; the parent decides
        conn.send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


def _run_isolated(job: _Job) -> dict:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_main, args=(sender, job), name=f"bench-{job.backend}")
    proc.start()
    sender.close()
    message = None
    try:
        while message is None:
            if receiver.poll(0.5):
                message = receiver.recv()
            elif not proc.is_alive():
                break
    except EOFError:
        pass
    proc.join()
    if message is None:
        return {"error": f"worker process died with exit code {proc.exitcode} (out of memory or a crash in native code)"}
    return message


def _run_inline(job: _Job) -> dict:
    try:
        return {"ok": _measure(job)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


# ---------------------------------------------------------------------------------------------- report


@dataclass
class BenchReport:
    """Everything one run measured. ``to_dict()`` is the JSON document."""

    config: dict
    environment: dict
    baseline: dict
    rows: list[dict]
    backends: list[dict]
    skipped: list[dict]
    failed: list[dict]
    created: str
    memory_note: str = ""
    command: str = ""

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}

    @property
    def title(self) -> str:
        return f"SG-Former-{self.config['variant']} @ {self.config['img_size']}"


def _environment(config: BenchConfig) -> dict:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    env = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus_available": available_cpus(),
        "threads": config.cpu_threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "gpu": gpu_name(),
        "loadavg_1min_at_start": load_average(),
    }
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except Exception:
        env["tensorrt"] = None
    return env


def _attach_ratios(rows: list[dict], baseline: dict) -> None:
    for row in rows:
        row["ratios"] = {
            "throughput": row["throughput_ips"] / baseline["throughput_ips"],
            "latency": row["latency_ms"]["median"] / baseline["latency_ms"]["median"],
            "memory": (row["peak_memory_bytes"] / baseline["peak_memory_bytes"]
                       if baseline["peak_memory_bytes"] > 0 else None),
        }


def _pick_baseline(config: BenchConfig, rows: list[dict]) -> dict:
    name, batch = parse_baseline(config.baseline)
    for row in rows:
        if row["backend"] == name and row["batch"] == batch:
            return {"backend": name, "batch": batch, "requested": config.baseline, "fallback": False, "row": row}
    # The requested baseline did not run (not selected, skipped or failed): use the first CPU row at the smallest batch.
    fallback = min(rows, key=lambda r: (r["device"] != "cpu", r["batch"], list(BACKENDS).index(r["backend"])))
    _logger.warning("baseline %s was not measured; using %s batch %d instead", config.baseline,
                    fallback["backend"], fallback["batch"])
    return {"backend": fallback["backend"], "batch": fallback["batch"], "requested": config.baseline,
            "fallback": True, "row": fallback}


def run_benchmarks(config: BenchConfig, command: str = "") -> BenchReport:
    """Measure every selected backend (see module docstring). Raises ``PipelineError`` if nothing ran."""
    start = time.perf_counter()
    environment = _environment(config)
    _logger.info("bench start: %s @ %d, batches %s, %d warmup + %d calls, backends %s", config.variant,
                 config.img_size, list(config.batches), config.warmup, config.iters, ", ".join(config.selected_backends))
    rows: list[dict] = []
    backends: list[dict] = []
    skipped: list[dict] = []
    failed: list[dict] = []
    memory_kinds: dict[str, str] = {}
    reference: Optional[np.ndarray] = None
    with tempfile.TemporaryDirectory(prefix="sgformer-bench-") as tmp:
        artifacts = _Artifacts(config, Path(tmp))
        for name in config.selected_backends:
            spec = BACKENDS[name]
            reason = spec.unavailable(config)
            if reason:
                _logger.info("%s: skipped (%s)", name, reason)
                skipped.append({"backend": name, "description": spec.description, "reason": reason})
                continue
            try:
                files = spec.prepare(config, artifacts) if spec.prepare else {}
            except PipelineError as exc:
                failed.append({"backend": name, "stage": "prepare", "error": str(exc)})
                _logger.error("%s: could not prepare its input (%s)", name, exc)
                continue
            job = _Job(config, name, files, _logger.getEffectiveLevel())
            _logger.info("%s: measuring (%s)", name, "own process" if config.isolate else "this process")
            result = _run_isolated(job) if config.isolate else _run_inline(job)
            if "error" in result:
                failed.append({"backend": name, "stage": "measure", "error": result["error"]})
                _logger.error("%s: failed: %s", name, result["error"])
                _logger.debug("%s", result.get("traceback", ""))
                continue
            measured = result["ok"]
            logits = np.asarray(measured.pop("first_logits"))
            if name == "pytorch-cpu" or reference is None and name == "pytorch-cuda":
                reference = logits
            diff = None if reference is None else float(np.abs(logits - reference).max())
            memory_kinds[name] = measured["memory_kind"]
            backends.append({
                "backend": name,
                "description": spec.description,
                "device": measured["device"],
                "details": measured["details"],
                "load_s": measured["load_s"],
                "load_peak_bytes": measured["load_peak_bytes"],
                "memory_kind": measured["memory_kind"],
                "max_abs_logit_diff_vs_pytorch": diff,
            })
            for row in measured["rows"]:
                rows.append({"backend": name, "device": measured["device"], **row})
    if not rows:
        raise PipelineError(
            "no backend could be measured: "
            + "; ".join(f"{s['backend']}: {s['reason']}" for s in skipped)
            + "".join(f"; {f['backend']}: {f['error']}" for f in failed)
        )
    chosen = _pick_baseline(config, rows)
    base_row = chosen.pop("row")
    chosen.update({"median_ms": base_row["latency_ms"]["median"], "throughput_ips": base_row["throughput_ips"],
                   "peak_memory_bytes": base_row["peak_memory_bytes"]})
    _attach_ratios(rows, base_row)
    config_dict = asdict(config)
    config_dict["engines"] = dict(config.engines)
    report = BenchReport(
        config=config_dict,
        environment={**environment, "loadavg_1min_at_end": load_average()},
        baseline=chosen,
        rows=rows,
        backends=backends,
        skipped=skipped,
        failed=failed,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        memory_note="; ".join(f"{k}: {v}" for k, v in memory_kinds.items()),
        command=command,
    )
    _logger.info("bench finish: %d rows, %d skipped, %d failed in %.1f s", len(rows), len(skipped), len(failed),
                 time.perf_counter() - start)
    return report


# ---------------------------------------------------------------------------------------------- outputs


def _fmt_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render_markdown(report: BenchReport) -> str:
    """The report as Markdown: a header that states machine and baseline, one table, skipped/failed lists."""
    env, cfg, base = report.environment, report.config, report.baseline
    weights = cfg["checkpoint"] or f"random-init (seed {cfg['seed']})"
    lines = [
        f"# Benchmark: {report.title}",
        "",
        f"- created {report.created} on `{env['host']}`: {env['cpu']}, {env['threads']} threads "
        f"({env['cpus_available']} CPUs available), GPU: {env['gpu'] or 'none'}; 1-min load average "
        f"{env['loadavg_1min_at_start']} at start, {env['loadavg_1min_at_end']} at end"
        + (" (**other processes competed for the CPUs: CPU timings are pessimistic**)"
           if max(env["loadavg_1min_at_start"] or 0, env["loadavg_1min_at_end"] or 0) > 0.5 + env["cpus_available"]
           else ""),
        f"- torch {env['torch']}, onnxruntime {env['onnxruntime']}, TensorRT {env['tensorrt'] or 'not installed'}, "
        f"Python {env['python']}",
        f"- weights: {weights}; "
        f"{cfg['warmup']} warmup + {cfg['iters']} timed calls per row; inputs random, seeded",
        f"- **baseline: {base['backend']} batch {base['batch']}** (median {base['median_ms']:.2f} ms, "
        f"{base['throughput_ips']:.2f} img/s, {base['peak_memory_bytes'] / 2**20:.1f} MiB)"
        + (f"; the requested baseline {base['requested']} was not measured" if base["fallback"] else ""),
    ]
    if report.command:
        lines.append(f"- command: `{report.command}`")
    lines += [
        "",
        "| backend | device | batch | median ms | p90 ms | p99 ms | img/s | throughput vs base | latency vs base "
        "| peak mem MiB | mem vs base |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.rows:
        lat, ratios = row["latency_ms"], row["ratios"]
        lines.append(
            f"| {row['backend']} | {row['device']} | {row['batch']} | {lat['median']:.2f} | {lat['p90']:.2f} "
            f"| {lat['p99']:.2f} | {row['throughput_ips']:.2f} | {_fmt_ratio(ratios['throughput'])} "
            f"| {_fmt_ratio(ratios['latency'])} | {row['peak_memory_bytes'] / 2**20:.1f} | {_fmt_ratio(ratios['memory'])} |"
        )
    lines += ["", "Backends measured:", ""]
    for b in report.backends:
        diff = b["max_abs_logit_diff_vs_pytorch"]
        lines.append(
            f"- `{b['backend']}`: {b['description']}; load {b['load_s']:.2f} s; "
            f"max abs logit diff vs PyTorch {'n/a' if diff is None else f'{diff:.2e}'}; memory: {b['memory_kind']}"
        )
    if report.skipped:
        lines += ["", "Skipped (no numbers invented):", ""]
        lines += [f"- `{s['backend']}` ({s['description']}): {s['reason']}" for s in report.skipped]
    if report.failed:
        lines += ["", "Failed:", ""]
        lines += [f"- `{f['backend']}` ({f['stage']}): {f['error']}" for f in report.failed]
    lines += [
        "",
        "Latency: one call with host input and host output, after warmup; p99 is interpolated when there are fewer "
        "than 100 calls. Throughput: batch x calls / total time of the timed calls. Memory: see each backend above.",
        "",
    ]
    return "\n".join(lines)


def render_plot(report: BenchReport) -> bytes:
    """PNG: throughput (img/s) and peak memory per backend, grouped by batch size. Uses Agg, no pyplot state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PipelineError(f"matplotlib is needed for the benchmark plot ({exc}); pip install matplotlib") from None

    backends = list(dict.fromkeys(r["backend"] for r in report.rows))
    batches = sorted({r["batch"] for r in report.rows})
    lookup = {(r["backend"], r["batch"]): r for r in report.rows}
    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(backends), 1)
    x = np.arange(len(batches))
    for i, name in enumerate(backends):
        thr = [lookup[(name, b)]["throughput_ips"] if (name, b) in lookup else 0.0 for b in batches]
        mem = [lookup[(name, b)]["peak_memory_bytes"] / 2**20 if (name, b) in lookup else 0.0 for b in batches]
        offset = (i - (len(backends) - 1) / 2) * width
        bars = axes[0].bar(x + offset, thr, width, label=name)
        for rect, b in zip(bars, batches):
            if (name, b) in lookup:
                axes[0].annotate(_fmt_ratio(lookup[(name, b)]["ratios"]["throughput"]),
                                 (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                                 ha="center", va="bottom", fontsize=7)
        axes[1].bar(x + offset, mem, width, label=name)
    base = report.baseline
    axes[0].set_title(f"throughput (labels: x {base['backend']} b{base['batch']})", fontsize=10)
    axes[0].set_ylabel("images / s")
    axes[1].set_title("peak memory above process baseline", fontsize=10)
    axes[1].set_ylabel("MiB")
    for ax in axes:
        ax.set_xticks(x, [f"batch {b}" for b in batches])
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    env = report.environment
    fig.suptitle(f"{report.title}: {env['gpu'] or env['cpu']}, {env['threads']} threads", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """Write JSON, Markdown and PNG (each atomically) into ``out_dir``; returns kind -> path."""
    from .io import write_bytes, write_json

    out_dir = Path(out_dir)
    stem = f"bench-{report.config['variant']}-{report.config['img_size']}"
    paths = {
        "json": write_json(out_dir / f"{stem}.json", report.to_dict()),
        "md": write_bytes(out_dir / f"{stem}.md", render_markdown(report).encode()),
        "png": write_bytes(out_dir / f"{stem}.png", render_plot(report)),
    }
    for kind, path in paths.items():
        _logger.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return paths


# ---------------------------------------------------------------------------------------------- CLI


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _engine_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected BACKEND=PATH (e.g. trt-fp16=engines/s-fp16-224/s.engine), got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_model_arguments

    add_model_arguments(parser, seed_help="seed of the random weights and inputs")
    parser.add_argument("--batches", type=_int_list, help=f"batch sizes (default {','.join(map(str, DEFAULT_BATCHES))}; "
                        f"--tiny: {','.join(map(str, TINY_BATCHES))})")
    parser.add_argument("--iters", type=int, help=f"timed calls per row (default {DEFAULT_ITERS}; --tiny: {TINY_ITERS})")
    parser.add_argument("--warmup", type=int, help=f"untimed calls first (default {DEFAULT_WARMUP}; --tiny: {TINY_WARMUP})")
    parser.add_argument("--backends", type=_name_list, default=(),
                        help=f"comma-separated subset of: {', '.join(BACKENDS)} (default: all; "
                             "those that cannot run here are listed as skipped)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"BACKEND:BATCH for the ratios (default {DEFAULT_BASELINE})")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and onnxruntime (default: all available)")
    parser.add_argument("--max-seconds", type=float, help="stop timing a row after this long (>= 3 calls are made)")
    parser.add_argument("--onnx", help="benchmark this exported ONNX instead of exporting in this run")
    parser.add_argument("--iam-onnx", help="benchmark this rewritten ONNX instead of rewriting in this run")
    parser.add_argument("--engine-dir", default="engines", help="where engines/<variant>-<precision>-<res>/ live")
    parser.add_argument("--engine", type=_engine_arg, action="append", default=[], metavar="BACKEND=PATH",
                        help="engine file for a TensorRT backend (repeatable)")
    parser.add_argument("--in-process", action="store_true", help="run backends in this process (memory figures then "
                        "include earlier backends' leftovers; for debugging)")
    parser.add_argument("--tiny", action="store_true", help="CI mode: small batches and few calls")
    parser.add_argument("-o", "--output-dir", required=True, help="directory for bench-<variant>-<res>.json/.md/.png")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    chosen = dict(
        variant=args.variant, img_size=args.img_size, checkpoint=args.checkpoint,
        trust_checkpoint=args.trust_checkpoint, seed=args.seed, backends=tuple(args.backends),
        baseline=args.baseline, threads=args.threads, max_seconds_per_row=args.max_seconds,
        onnx_path=args.onnx, iam_onnx_path=args.iam_onnx, engine_dir=args.engine_dir,
        engines=tuple(args.engine), isolate=not args.in_process, progress=sys.stderr.isatty(),
    )
    for key, value in (("batches", args.batches), ("iters", args.iters), ("warmup", args.warmup)):
        if value is not None:
            chosen[key] = value
    return BenchConfig.tiny(**chosen) if args.tiny else BenchConfig(**chosen)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    argv = sys.argv[1:]
    command = shlex.join(["sgformer-trt", *argv[argv.index("bench"):]]) if "bench" in argv else ""
    report = run_benchmarks(config, command=command)
    paths = write_report(report, args.output_dir)
    print(render_markdown(report))
    for kind, path in paths.items():
        print(f"wrote {path}")
    return 1 if report.failed else 0
