"""One place for every difference between TensorRT flavours and versions.

Two Python packages can build engines:

- ``tensorrt`` (full TensorRT 10.x / 11.x: the ``tensorrt-cu12`` / ``tensorrt-cu13`` wheels, NVIDIA's tar/deb
  packages, or JetPack's ``python3-libnvinfer`` on Jetson). Builds and runs on the GPU it is used on.
- ``tensorrt_rtx`` (TensorRT-RTX, the ``tensorrt-rtx-cu13-*`` wheels). Builds CPU-only; by default for compute
  capabilities 8.0, 8.6, 8.9, 12.0 and 12.1 (7.5 on request); runs only on those GPUs (not on Jetson, Hopper
  or datacenter Blackwell).

Nothing outside this module imports ``tensorrt`` or ``tensorrt_rtx`` or looks at which members they have.
What differs, and how it is handled here:

=============================  ==========================  ===============================================
member                         full TensorRT               TensorRT-RTX 1.x
=============================  ==========================  ===============================================
STRONGLY_TYPED network flag    9.x-10.x; may go in 11      present; always used when present
EXPLICIT_BATCH flag            deprecated no-op in 10      absent; never used
BuilderFlag.FP16 / INT8        10.x only                   absent; never used (precision is in the ONNX)
hardware_compatibility_level   8.6+ (SAME_CC: 10.x later)  "unsupported" (targets compute capabilities)
set_compute_capability         absent                      the way to choose target GPUs
VERSION_COMPATIBLE             8.6+                        needs libnvinfer_lean, not in the wheels
timing cache                   real                        deprecated no-op
progress_monitor               10.0+                       present
plugin registry                trt.get_plugin_registry()   builder.get_plugin_registry() (both present)
=============================  ==========================  ===============================================

TensorRT-RTX's ONNX parser needs a library name its wheel lacks: see :mod:`pipeline.backends.rtx_library`.
The GPU probe (no TensorRT needed) is :mod:`pipeline.backends.gpu`.
"""
from __future__ import annotations

import collections
import ctypes
import dataclasses
import importlib
import importlib.util
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

from pipeline.store import interrupts
from pipeline.core.flavours import (  # noqa: F401  (re-exported: callers use trt_backend.BACKEND_CHOICES etc.)
    _MODULES,
    BACKEND_CHOICES,
    FLAVOUR_RTX,
    FLAVOUR_TENSORRT,
    HARDWARE_COMPATIBILITY,
    INSTALL_HINT,
    MIN_TENSORRT,
    RTX_COMPUTE_CAPABILITIES,
    RTX_DEFAULT_CAPABILITIES,
    RTX_TARGET_DESCRIPTION,
)
from pipeline.core.errors import BuildError, PluginLibraryError

_logger = logging.getLogger("pipeline.trt")

# The flavour table (names, modules, version floor, target sets, install hint) is data in pipeline.core.flavours;
# this module only probes the environment and adapts the API.
# --------------------------------------------------------------------------------------------------- discovery


@dataclasses.dataclass(frozen=True)
class Backend:
    """An imported TensorRT flavour: the module plus what this module learned about it."""

    name: str  # "tensorrt" | "tensorrt-rtx"
    module: ModuleType
    version: str

    @property
    def flavour(self) -> str:
        return FLAVOUR_RTX if self.name == "tensorrt-rtx" else FLAVOUR_TENSORRT

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version)

    def describe(self) -> str:
        return f"{self.flavour} {self.version} ({self.module.__name__})"


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


_BACKENDS: dict[str, Backend] = {}


def _import_backend(name: str) -> tuple[Optional[Backend], list[str]]:
    """Import one flavour; return it, or None and why each module could not be used."""
    reasons = []
    for module_name in _MODULES[name]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # includes a wheel whose shared libraries fail to load
            reasons.append(f"import {module_name}: {exc}")
            continue
        version = str(getattr(module, "__version__", "0"))
        if name == "tensorrt" and parse_version(version)[:2] < MIN_TENSORRT:
            reasons.append(
                f"{module_name} {version} is older than TensorRT {'.'.join(map(str, MIN_TENSORRT))} "
                f"(IPluginV3 and strongly typed networks need 10.3+)"
            )
            continue
        return Backend(name=name, module=module, version=version), reasons
    return None, reasons


def load_backend(choice: str = "auto") -> Backend:
    """Import TensorRT. ``auto`` prefers full TensorRT and falls back to TensorRT-RTX.

    Raises :class:`BuildError` naming the packages to install when neither can be imported.
    """
    if choice not in BACKEND_CHOICES:
        raise BuildError(f"unknown TensorRT backend {choice!r}; expected one of {', '.join(BACKEND_CHOICES)}")
    if choice in _BACKENDS:
        return _BACKENDS[choice]
    names = ("tensorrt", "tensorrt-rtx") if choice == "auto" else (choice,)
    reasons: list[str] = []
    for name in names:
        backend, why = _import_backend(name)
        reasons.extend(why)
        if backend is not None:
            _logger.debug("using %s", backend.describe())
            _BACKENDS[choice] = backend
            return backend
    wanted = "TensorRT or TensorRT-RTX" if choice == "auto" else (FLAVOUR_RTX if choice == "tensorrt-rtx" else FLAVOUR_TENSORRT)
    raise BuildError(
        f"no usable {wanted} Python package ({'; '.join(reasons)}); {INSTALL_HINT}"
    )


# ------------------------------------------------------------------------------------------------------ logger


class _LogCollector:
    """Adapts TensorRT's ILogger to ``logging`` and keeps the last errors for exception messages."""

    def __init__(self) -> None:
        self.errors: collections.deque[str] = collections.deque(maxlen=20)

    def clear(self) -> None:
        self.errors.clear()


_TRT_LOGGERS: dict[str, Any] = {}


def get_logger(backend: Backend) -> Any:
    """One TensorRT logger per flavour and process (TensorRT warns when a second one appears)."""
    if backend.name in _TRT_LOGGERS:
        return _TRT_LOGGERS[backend.name]
    trt = backend.module
    severity = trt.ILogger.Severity
    levels = {
        int(severity.INTERNAL_ERROR): logging.ERROR,
        int(severity.ERROR): logging.ERROR,
        int(severity.WARNING): logging.WARNING,
        int(severity.INFO): logging.DEBUG,
        int(severity.VERBOSE): 5,
    }
    trt_log = logging.getLogger("pipeline.trt.builder")

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.collector = _LogCollector()

        def log(self, sev, msg):  # noqa: D401 - TensorRT callback
            level = levels.get(int(sev), logging.DEBUG)
            if level >= logging.ERROR:
                self.collector.errors.append(str(msg))
            if trt_log.isEnabledFor(level):
                trt_log.log(level, "%s", msg)

    logger = _Logger()
    _TRT_LOGGERS[backend.name] = logger
    return logger


def recent_errors(backend: Backend) -> list[str]:
    return list(get_logger(backend).collector.errors)


def clear_errors(backend: Backend) -> None:
    get_logger(backend).collector.clear()


# ------------------------------------------------------------------------------------------------------ plugins

_LOADED_PLUGINS: dict[tuple[str, str], Any] = {}


def plugin_registry(backend: Backend, builder: Any = None) -> Any:
    trt = backend.module
    if hasattr(trt, "get_plugin_registry"):
        return trt.get_plugin_registry()
    if builder is not None:
        return builder.get_plugin_registry()
    raise BuildError(f"{backend.describe()} exposes no plugin registry")


def load_plugin_library(backend: Backend, path: str | Path, builder: Any = None) -> None:
    """Register a plugin library's creators once per process (a second ``load_library`` of it fails)."""
    path = Path(path)
    if not path.is_file():
        raise PluginLibraryError(
            f"plugin library {path} does not exist; build it with `make plugins` "
            f"(plugins/sgformer_iam, CMake) and pass its path with --plugins"
        )
    key = (backend.name, str(path.resolve()))
    if key in _LOADED_PLUGINS:
        return
    get_logger(backend)  # the registry logs through the process logger
    registry = plugin_registry(backend, builder)
    handle = registry.load_library(str(path.resolve()))
    if handle is None:
        detail = "; ".join(recent_errors(backend)[-2:])
        raise PluginLibraryError(
            f"{backend.flavour} could not load plugin library {path} ({detail or 'no reason given'}); it must export "
            f"`getCreators` (IPluginV3) and be built for this TensorRT and CPU architecture. A different library that "
            f"registers the same plugin names may already be loaded in this process"
        )
    _LOADED_PLUGINS[key] = handle
    _logger.info("loaded plugin library %s", path)


def has_plugin_creator(backend: Backend, name: str, version: str = "1", namespace: str = "") -> bool:
    try:
        return plugin_registry(backend).get_creator(name, version, namespace) is not None
    except Exception:  # older registries raise for unknown names
        return False


# ------------------------------------------------------------------------------------------------ builder setup


def network_flags(backend: Backend) -> tuple[int, bool]:
    """Creation flags for a strongly typed network; returns (flags, strongly_typed)."""
    flags_enum = backend.module.NetworkDefinitionCreationFlag
    if hasattr(flags_enum, "STRONGLY_TYPED"):
        return 1 << int(flags_enum.STRONGLY_TYPED), True
    # TensorRT 11 may drop the flag because every network is strongly typed there.
    return 0, backend.version_tuple[:1] >= (11,)


def set_workspace(backend: Backend, config: Any, workspace_mb: Optional[int]) -> None:
    if workspace_mb is not None:
        config.set_memory_pool_limit(backend.module.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)


def set_optimization_level(backend: Backend, config: Any, level: int) -> None:
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(level)
    elif level != 3:
        _logger.warning("%s has no builder optimization level; ignoring --opt-level %d", backend.describe(), level)


def set_hardware_compatibility(backend: Backend, config: Any, level: str) -> None:
    if level == "none":
        return
    if backend.is_rtx:
        raise BuildError(
            f"hardware compatibility {level!r} is a full-TensorRT feature; TensorRT-RTX chooses target GPUs by compute "
            f"capability instead: pass --compute-capabilities (choices {', '.join(RTX_COMPUTE_CAPABILITIES)})"
        )
    enum = getattr(backend.module, "HardwareCompatibilityLevel", None)
    member = getattr(enum, level.upper(), None) if enum is not None else None
    if member is None or not hasattr(config, "hardware_compatibility_level"):
        raise BuildError(
            f"{backend.describe()} has no hardware-compatibility level {level!r}; use 'none' or a newer TensorRT"
        )
    config.hardware_compatibility_level = member


def set_compute_capabilities(backend: Backend, config: Any, capabilities: Sequence[str]) -> tuple[str, ...]:
    """TensorRT-RTX only: the target GPUs. An empty request leaves TensorRT-RTX's default. Returns the list set.

    Measured with 1.7.1.116 on a CPU-only machine: the default builds graphs that asking for every capability
    explicitly refuses ("Cannot compile ... for Turing (SM75): FP32 GEMM is not supported"), so the default is
    left alone rather than spelled out.
    """
    if not backend.is_rtx:
        if capabilities:
            raise BuildError(
                "--compute-capabilities is a TensorRT-RTX option; full TensorRT builds for the GPU it runs on "
                "(use --hardware-compatibility ampere_plus for portable engines)"
            )
        return ()
    enum = backend.module.ComputeCapability
    wanted = tuple(capabilities)
    if not wanted:
        return ()
    members = []
    for cc in wanted:
        member = getattr(enum, "SM" + cc[3:], None)
        if member is None:
            supported = [f"sm_{n[2:]}" for n in enum.__members__ if n.startswith("SM")]
            raise BuildError(
                f"TensorRT-RTX {backend.version} cannot target {cc}; it supports {', '.join(supported)} "
                f"(Jetson and Hopper/datacenter Blackwell need full TensorRT)"
            )
        members.append(member)
    config.num_compute_capabilities = len(members)
    for i, member in enumerate(members):
        config.set_compute_capability(member, i)
    return wanted


def set_version_compatible(backend: Backend, config: Any, plugin_library: Optional[Path]) -> None:
    if backend.is_rtx:
        raise BuildError(
            "version-compatible engines need TensorRT's lean runtime (libnvinfer_lean), which the TensorRT-RTX wheels "
            "do not ship; build without --version-compatible, or with full TensorRT"
        )
    config.set_flag(backend.module.BuilderFlag.VERSION_COMPATIBLE)
    if plugin_library is not None:
        # The lean runtime only runs plugin code serialized into the engine (and allowed by the runtime).
        config.plugins_to_serialize = [str(Path(plugin_library).resolve())]


def timing_cache_supported(backend: Backend) -> bool:
    return not backend.is_rtx  # TensorRT-RTX: "Timing cache operations are no-ops"


def load_timing_cache(backend: Backend, config: Any, path: Optional[Path]) -> bool:
    """Attach a timing cache (empty when the file does not exist yet); False when the backend has none."""
    if path is None:
        return False
    if not timing_cache_supported(backend):
        _logger.info("%s has no timing cache; ignoring %s", backend.flavour, path)
        return False
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        _logger.warning("timing cache %s does not match this TensorRT/GPU; starting an empty one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    _logger.info("timing cache %s (%s)", path, f"{len(data)} bytes" if data else "new")
    return True


def timing_cache_bytes(config: Any) -> Optional[bytes]:
    cache = config.get_timing_cache()
    return None if cache is None else bytes(memoryview(cache.serialize()))


class _ProgressLog:
    """Periodic INFO lines from the builder's phases (at most one per ``interval`` seconds)."""

    def __init__(self, log: Callable[[str], None], interval: float = 10.0) -> None:
        self.log = log
        self.interval = interval
        self.phases: dict[str, tuple[int, int]] = {}
        self.last = time.monotonic()

    def start(self, name: str, parent: Optional[str], steps: int) -> None:
        self.phases[name] = (0, int(steps))
        _logger.debug("builder phase %r started (%d steps, parent %r)", name, steps, parent)

    def step(self, name: str, step: int) -> None:
        done, total = self.phases.get(name, (0, 0))
        self.phases[name] = (int(step) + 1, total)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.log(", ".join(f"{k} {d}/{t}" for k, (d, t) in self.phases.items()))

    def finish(self, name: str) -> None:
        self.phases.pop(name, None)
        _logger.debug("builder phase %r finished", name)


def attach_progress_monitor(backend: Backend, config: Any, interval: float = 10.0) -> Optional[Any]:
    """Log builder progress if the backend has IProgressMonitor (TensorRT 10+, TensorRT-RTX). Keep the result alive."""
    trt = backend.module
    if not hasattr(trt, "IProgressMonitor") or not hasattr(config, "progress_monitor"):
        return None
    progress = _ProgressLog(lambda text: _logger.info("building: %s", text), interval)

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            progress.step(phase_name, step)
            return not interrupts.cancel_requested()  # False cancels the build (Ctrl-C / SIGTERM)

        def phase_finish(self, phase_name):
            progress.finish(phase_name)

    monitor = _Monitor()
    config.progress_monitor = monitor
    return monitor


def parser_errors(parser: Any) -> list[str]:
    """Readable parser errors: 'node N (name, op Op): description'."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            op = err.node_operator()
            where = f"node {err.node()} ({err.node_name() or 'unnamed'}, op {op})" if op else "model"
            out.append(f"{where}: {err.desc()}")
        except AttributeError:  # very old parsers: only str()
            out.append(str(err))
    return out


def parser_failed_ops(parser: Any) -> list[str]:
    ops = []
    for i in range(parser.num_errors):
        try:
            op = parser.get_error(i).node_operator()
        except AttributeError:
            continue
        if op and op not in ops:
            ops.append(op)
    return ops


def build_serialized(backend: Backend, builder: Any, network: Any, config: Any) -> Optional[bytes]:
    can_cancel = getattr(config, "progress_monitor", None) is not None
    host = interrupts.run_cancellable(lambda: builder.build_serialized_network(network, config),
                                      f"{backend.flavour} build", can_cancel)
    if host is None:
        return None
    return bytes(memoryview(host))


# ------------------------------------------------------------------------------------------------ environment


def cuda_version(backend: Backend) -> Optional[str]:
    """CUDA major (pip wheels: from the wheel name) or major.minor (system libcudart), or None."""
    from importlib import metadata

    stems = ("tensorrt-rtx-cu{}-libs",) if backend.is_rtx else ("tensorrt-cu{}-libs", "tensorrt-cu{}")
    for major in (13, 12, 11):
        for stem in stems:
            try:
                metadata.version(stem.format(major))
            except metadata.PackageNotFoundError:
                continue
            return str(major)
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        value = ctypes.c_int(0)
        if cudart.cudaRuntimeGetVersion(ctypes.byref(value)) == 0 and value.value:
            return f"{value.value // 1000}.{value.value % 1000 // 10}"
    return None
