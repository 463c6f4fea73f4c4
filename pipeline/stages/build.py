"""Build stage: ONNX (+ the IAM plugin library) -> serialized TensorRT engine, then an engine directory.

``build_engine(onnx, BuildConfig) -> (engine bytes, BuildInfo)`` does the TensorRT work and touches no files
except the optional timing cache. ``save_engine_dir`` writes ``engines/<variant>-<precision>-<res>/`` with the
engine, a copy of the plugin library and ``manifest.json``. Precision is not a builder setting: networks are
strongly typed, so fp16 casts and int8 Q/DQ pairs come from the ONNX (the calibrate stage) and the same ONNX builds
on TensorRT 10.3 (JetPack 6), 10.x, 11.x and TensorRT-RTX. Backend differences live in ``pipeline.backends.tensorrt``.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import onnx

from pipeline.backends import gpu as gpu_probe
from pipeline.backends import rtx_library
from pipeline.backends import tensorrt as trt_backend
from pipeline.core.artifact import (
    META_VARIANT,
    ArtifactInfo,
    ImageSize,
    InputFormat,
    OutputSpec,
    Precision,
    WeightsRef,
    engine_dir_name as _engine_dir_name,
    engine_file_name,
)
from pipeline.graph import custom_ops, detect_precision, image_input, metadata as onnx_metadata
from pipeline.core.artifact import graph_evidence
from pipeline.core.variants import FOREIGN
from pipeline.core.errors import BuildError, ConfigError, PluginLibraryError
from pipeline.store.io import atomic_path, write_bytes
from pipeline.core.hashing import sha256_bytes, sha256_file
from pipeline.store.manifest import (
    BatchProfile,
    BuildRecord,
    Calibration,
    FileRef,
    Manifest,
    Target,
    TensorSpec,
    write_manifest,
)
from pipeline.iam.spec import PLUGIN_NAME
from pipeline.core.configs import BuildConfig
from pipeline.store.publish import staged_engine_dir
import numpy as np

__all__ = ["BuildConfig", "BuildInfo", "build_engine", "save_engine_dir"]

_logger = logging.getLogger("pipeline.stages.build")

_STANDARD_DOMAINS = ("", "ai.onnx")
_TOPK_LIMIT_TEXT = "K exceeds the maximum"


@dataclasses.dataclass(frozen=True)
class BuildInfo:
    """What the builder did: backend, target GPUs, I/O tensors, time. Feeds the manifest."""

    backend_flavour: str
    backend_version: str
    cuda_version: Optional[str]
    strongly_typed: bool
    seconds: float
    engine_bytes: int
    num_layers: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchProfile
    target: Target
    onnx_sha256: str
    plugin_library: Optional[Path]
    timing_cache: Optional[Path]


OnnxSource = Union[onnx.ModelProto, str, Path]


# ------------------------------------------------------------------------------------------------ ONNX facts


def _load_header(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise BuildError(f"ONNX file {path} does not exist; run the export/rewrite/calibrate stages first")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage input
        raise BuildError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); re-export it") from None


# ------------------------------------------------------------------------------------------------------ build


def _plugin_hint(ops: Sequence[str]) -> str:
    if PLUGIN_NAME in ops:
        return (f"op {PLUGIN_NAME} has no plugin: pass --plugins libsgformer_plugins.so "
                f"(build it with `make plugins`)")
    return f"op(s) {', '.join(ops)} have no plugin: pass --plugins with the library that implements them"


def _dtype_name(trt, dtype) -> str:
    try:

        return np.dtype(trt.nptype(dtype)).name
    except (TypeError, ValueError, AttributeError):
        return str(dtype).rsplit(".", 1)[-1].lower()


def _profile_shapes(name: str, shape: Sequence[int], config: BuildConfig) -> tuple[tuple[int, ...], ...]:
    dims = list(shape)
    if any(d < 0 for d in dims[1:]):
        raise BuildError(
            f"input {name!r} has dynamic non-batch dims {dims}; export with a fixed image size (only batch is dynamic)"
        )
    if dims and dims[0] >= 0:
        if not config.min_batch == config.opt_batch == config.max_batch == dims[0]:
            raise BuildError(
                f"input {name!r} has a fixed batch of {dims[0]} but the profile asks for {config.min_batch}/"
                f"{config.opt_batch}/{config.max_batch}; re-export with a dynamic batch, or pass "
                f"--min-batch {dims[0]} --opt-batch {dims[0]} --max-batch {dims[0]}"
            )
    return tuple(tuple([b, *dims[1:]]) for b in (config.min_batch, config.opt_batch, config.max_batch))


def _target(backend: trt_backend.Backend, config: BuildConfig, rtx_ccs: tuple[str, ...]) -> Target:
    if backend.is_rtx:
        requested = tuple(config.compute_capabilities)
        description = (
            trt_backend.RTX_TARGET_DESCRIPTION if not requested
            else f"TensorRT-RTX engine for {', '.join(rtx_ccs)} (RTX GPUs only)"
        )
        return Target(description=description, compute_capabilities=rtx_ccs or trt_backend.RTX_DEFAULT_CAPABILITIES)
    gpu = gpu_probe.probe_gpu()
    cc = gpu.compute_capability if gpu else None
    name = gpu.name if gpu else None
    if config.hardware_compatibility == "ampere_plus":
        return Target(description="TensorRT engine for Ampere and newer dGPUs (sm_80+, hardware-compatible)",
                      compute_capabilities=(), gpu_name=name, hardware_compatibility="ampere_plus",
                      version_compatible=config.version_compatible)
    label = gpu_probe.describe_gpu(cc, name)
    return Target(description=f"TensorRT engine for {label}", compute_capabilities=(cc,) if cc else (),
                  gpu_name=name, hardware_compatibility=config.hardware_compatibility,
                  version_compatible=config.version_compatible)


def _source(onnx_model_or_path: OnnxSource) -> tuple[onnx.ModelProto, Optional[Path], Optional[bytes], str]:
    """(header, path or None, serialized model or None, sha256) of the build's ONNX."""
    if isinstance(onnx_model_or_path, onnx.ModelProto):
        payload = onnx_model_or_path.SerializeToString()
        return onnx_model_or_path, None, payload, sha256_bytes(payload)
    path = Path(onnx_model_or_path)
    return _load_header(path), path, None, sha256_file(path)


def _check_plugin(ops: Sequence[str], config: BuildConfig) -> None:
    if ops and config.plugin_library is None:
        raise BuildError(f"the ONNX holds custom op(s) {', '.join(ops)}; {_plugin_hint(ops)}")
    if config.plugin_library is not None and not config.plugin_library.is_file():
        raise PluginLibraryError(
            f"plugin library {config.plugin_library} does not exist; build it with `make plugins` and pass its path"
        )


def _parse(backend: trt_backend.Backend, builder, source, path: Optional[Path], payload: Optional[bytes],
           ops: Sequence[str], config: BuildConfig):
    """The parsed network, or a BuildError naming the ops without a plugin."""
    trt = backend.module
    flags, strongly_typed = trt_backend.network_flags(backend)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_backend.get_logger(backend))
    _logger.info("parsing %s with %s", source, backend.describe())
    ok = parser.parse_from_file(str(path)) if path is not None else parser.parse(payload)
    if not ok:
        errors = trt_backend.parser_errors(parser)
        failed = trt_backend.parser_failed_ops(parser)
        plugin_ops = [op for op in failed if op in ops]
        hint = _plugin_hint(plugin_ops) if plugin_ops else "check the op list with Netron or `polygraphy inspect model`"
        if plugin_ops and config.plugin_library is not None:
            hint = (f"{config.plugin_library} does not register {', '.join(plugin_ops)} (name, version \"1\", "
                    f"empty namespace); rebuild it with `make plugins`")
        raise BuildError(f"{backend.flavour} could not parse {source}:\n  " + "\n  ".join(errors) + f"\n{hint}")
    return network, parser, strongly_typed


def _configure(backend: trt_backend.Backend, builder, config: BuildConfig):
    """(builder config, TensorRT-RTX targets, timing cache used?, progress monitor) for ``config``."""
    builder_config = builder.create_builder_config()
    trt_backend.set_workspace(backend, builder_config, config.workspace_mb)
    trt_backend.set_optimization_level(backend, builder_config, config.opt_level)
    trt_backend.set_hardware_compatibility(backend, builder_config, config.hardware_compatibility)
    rtx_ccs = trt_backend.set_compute_capabilities(backend, builder_config, config.compute_capabilities)
    if config.version_compatible:
        trt_backend.set_version_compatible(backend, builder_config, config.plugin_library)
    use_cache = trt_backend.load_timing_cache(backend, builder_config, config.timing_cache)
    monitor = trt_backend.attach_progress_monitor(backend, builder_config, config.progress_interval_s)
    return builder_config, rtx_ccs, use_cache, monitor


def _io_and_profile(trt, builder, network, builder_config, config: BuildConfig):
    """The network's input / output specs; the batch profile added to ``builder_config``."""
    inputs, outputs = [], []
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = _profile_shapes(tensor.name, tuple(tensor.shape), config)
        profile.set_shape(tensor.name, *shapes)
        inputs.append(TensorSpec(tensor.name, tuple(tensor.shape), _dtype_name(trt, tensor.dtype)))
    for i in range(network.num_outputs):
        tensor = network.get_output(i)
        outputs.append(TensorSpec(tensor.name, tuple(tensor.shape), _dtype_name(trt, tensor.dtype)))
    builder_config.add_optimization_profile(profile)
    return tuple(inputs), tuple(outputs)


def _build_failed(backend: trt_backend.Backend, source, seconds: float) -> BuildError:
    errors = trt_backend.recent_errors(backend)
    hint = ""
    if any(_TOPK_LIMIT_TEXT in e for e in errors):
        hint = ("\nTensorRT's TopK is limited to K <= 3840, so the standard-op graph cannot build beyond 224: "
                "rewrite it with `sgformer-trt rewrite` (IAM plugin) and build that graph")
    return BuildError(
        f"{backend.flavour} failed to build an engine from {source} after {seconds:.1f} s:\n  "
        + "\n  ".join(errors[-8:] or ["(no error logged; rerun with -vv)"]) + hint
    )


def build_engine(onnx_model_or_path: OnnxSource, config: BuildConfig) -> tuple[bytes, BuildInfo]:
    """Parse the ONNX with the plugin library registered and build a serialized engine.

    Raises :class:`BuildError` (no TensorRT, parser errors with hints, builder failure) or
    :class:`PluginLibraryError` (plugin library missing or not loadable).
    """
    model, path, payload, onnx_sha = _source(onnx_model_or_path)
    ops = custom_ops(model)
    _check_plugin(ops, config)
    backend = trt_backend.load_backend(config.backend)
    if backend.is_rtx:
        rtx_library.require_rtx_parser_library()
    trt_backend.clear_errors(backend)
    builder = backend.module.Builder(trt_backend.get_logger(backend))
    if config.plugin_library is not None:
        trt_backend.load_plugin_library(backend, config.plugin_library, builder)
    source = path if path is not None else "<in-memory model>"
    network, _parser, strongly_typed = _parse(backend, builder, source, path, payload, ops, config)
    builder_config, rtx_ccs, use_cache, monitor = _configure(backend, builder, config)
    inputs, outputs = _io_and_profile(backend.module, builder, network, builder_config, config)
    _logger.info(
        "building %s engine: %d layers, batch %d/%d/%d, opt level %d, workspace %s, strongly typed %s%s",
        backend.describe(), network.num_layers, config.min_batch, config.opt_batch, config.max_batch,
        config.opt_level, f"{config.workspace_mb} MiB" if config.workspace_mb else "default", strongly_typed,
        f", targets {', '.join(rtx_ccs)}" if rtx_ccs else "",
    )
    start = time.perf_counter()
    engine = trt_backend.build_serialized(backend, builder, network, builder_config)
    seconds = time.perf_counter() - start
    del monitor
    if engine is None:
        raise _build_failed(backend, source, seconds)
    if use_cache and config.timing_cache is not None:
        data = trt_backend.timing_cache_bytes(builder_config)
        if data:
            write_bytes(config.timing_cache, data)
            _logger.info("saved timing cache %s (%d bytes)", config.timing_cache, len(data))
    _logger.info("built %s engine in %.1f s (%.1f MB)", backend.flavour, seconds, len(engine) / 1e6)
    info = BuildInfo(
        backend_flavour=backend.flavour, backend_version=backend.version, cuda_version=trt_backend.cuda_version(backend),
        strongly_typed=strongly_typed, seconds=round(seconds, 3), engine_bytes=len(engine),
        num_layers=network.num_layers, inputs=inputs, outputs=outputs,
        batch=BatchProfile(config.min_batch, config.opt_batch, config.max_batch),
        target=_target(backend, config, rtx_ccs), onnx_sha256=onnx_sha, plugin_library=config.plugin_library,
        timing_cache=config.timing_cache if use_cache else None,
    )
    return engine, info


# ------------------------------------------------------------------------------------------------ artifacts


def engine_dir_name(variant: str, precision: Precision | str, img_size: object, task: str = "classify",
                    input_format: InputFormat | str = InputFormat.NORMALIZED) -> str:
    """``<variant>-<precision>-<img_size>[-features][-<input format>]`` (the one rule,
    ``pipeline.core.artifact.engine_dir_name``)."""
    return _engine_dir_name(variant, precision, img_size, task, input_format)


def save_engine_dir(
    out_root: str | Path,
    engine: bytes,
    info: BuildInfo,
    *,
    variant: str,
    precision: str,
    img_size: object,
    weights: str,
    onnx_file: str,
    config: BuildConfig,
    calibration: Optional[Calibration] = None,
    dir_name: Optional[str] = None,
    input_format: str = InputFormat.NORMALIZED.value,
    task: str = "classify",
    output_specs: Sequence[OutputSpec] = (),
) -> Path:
    """Write ``<out_root>/<variant>-<precision>-<img_size>/`` (or ``dir_name``): engine, plugin library and ONNX
    copies, manifest.json. ``output_specs`` (a backbone's stage maps) add stride and channels to the outputs."""
    img_size = ImageSize.parse(img_size)
    engine_dir = Path(out_root) / (dir_name or engine_dir_name(variant, precision, img_size, task, input_format))
    by_name = {o.name: o for o in output_specs}
    outputs = tuple(dataclasses.replace(t, stride=by_name[t.name].stride, channels=by_name[t.name].channels)
                    if t.name in by_name else t for t in info.outputs)
    engine_name = engine_file_name(variant, precision)
    with staged_engine_dir(engine_dir) as stage:  # all or nothing, under the folder's lock (pipeline.store.publish)
        write_bytes(stage / engine_name, engine)
        onnx_src = Path(onnx_file)
        onnx_copy = engine_dir / onnx_src.name
        if onnx_src.is_file() and onnx_src.resolve().parent != engine_dir.resolve():
            # One build's artifacts live together: verify's CPU stand-in runs this exact ONNX (sha256 in the manifest).
            onnx_copy = stage / onnx_src.name
            with atomic_path(onnx_copy) as tmp:
                shutil.copyfile(onnx_src, tmp)
        if onnx_copy.is_file() and sha256_file(onnx_copy) != info.onnx_sha256:
            raise BuildError(f"{onnx_src} changed while the engine was being built (another run rewrote it?); build again")
        plugin_ref = None
        if info.plugin_library is not None:
            copy = engine_dir / info.plugin_library.name
            if info.plugin_library.resolve() != copy.resolve():
                copy = stage / info.plugin_library.name
                with atomic_path(copy) as tmp:
                    shutil.copyfile(info.plugin_library, tmp)
                    tmp.chmod(0o755)
            plugin_ref = FileRef(file=copy.name, sha256=sha256_file(copy), bytes=copy.stat().st_size)
        manifest = Manifest(
            variant=variant,
            img_size=tuple(img_size),
            task=task,
            precision=precision,
            weights=weights,
            engine=FileRef(file=engine_name, sha256=sha256_bytes(engine), bytes=len(engine)),
            onnx=FileRef(file=Path(onnx_file).name, sha256=info.onnx_sha256),
            plugin=plugin_ref,
            backend_flavour=info.backend_flavour,
            backend_version=info.backend_version,
            cuda_version=info.cuda_version,
            target=info.target,
            inputs=info.inputs,
            outputs=outputs,
            batch=info.batch,
            build=BuildRecord(
                seconds=info.seconds,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                host=f"{platform.node()} {platform.machine()} {platform.system()}",
                workspace_mb=config.workspace_mb,
                opt_level=config.opt_level,
            ),
            calibration=calibration,
            input_format=InputFormat.parse(input_format).value,
        )
        write_manifest(stage, manifest)
        for name in (engine_name, "manifest.json"):
            (stage / name).chmod(0o644)  # temp files are created 0600; artifacts are meant to be shared
    _logger.info("wrote %s (%s, %.1f MB engine)", engine_dir, info.backend_flavour, len(engine) / 1e6)
    return engine_dir


@dataclasses.dataclass(frozen=True)
class EngineLabels:
    """What the manifest records about the network: from the ONNX record, or from labels for foreign graphs."""

    variant: str
    img_size: ImageSize
    precision: Precision
    weights: str
    input_format: InputFormat = InputFormat.NORMALIZED
    record: Optional[ArtifactInfo] = None  # None: the ONNX has no artifact record (not made by `export`)

    @property
    def task(self) -> str:
        return self.record.task.value if self.record is not None else "classify"

    @property
    def output_specs(self) -> tuple[OutputSpec, ...]:
        return self.record.spec.outputs if self.record is not None else ()


def artifact_info_for_build(header: onnx.ModelProto, source: Path | str, *, variant: Optional[str] = None,
                            img_size: Optional[object] = None, precision: Optional[Precision] = None,
                            weights: Optional[str] = None) -> EngineLabels:
    """The record the engine inherits, checked against the graph and against explicit options.

    The graph decides the precision (Q/DQ -> int8, float16 casts -> fp16): an explicit ``precision`` or a metadata
    ``precision`` that disagrees is an error, never a relabel. For graphs made by ``export`` (metadata present)
    variant and img_size come from the record and explicit values must agree; for other graphs they are labels
    (the size then comes from ``img_size`` or the graph's static input, ``pipeline.graph.image_input``).
    """
    graph_precision = detect_precision(header)
    precision = None if precision is None else Precision.parse(precision)  # a str from Python callers
    if precision is not None and precision is not graph_precision:
        raise ConfigError(
            f"--precision {precision} does not match {source}: the graph is {graph_precision.value} "
            f"({graph_evidence(graph_precision)}); "
            f"precision comes from the calibrate stage: build model.iam.{precision}.onnx, or drop --precision"
        )
    meta = onnx_metadata(header)
    record: Optional[ArtifactInfo] = None
    if meta.get(META_VARIANT) and meta.get(META_VARIANT) != "unknown":
        record = ArtifactInfo.from_metadata(meta, source=str(source), graph_precision=graph_precision)
        size = None if img_size is None else ImageSize.parse(img_size, "--img-size")
        for option, given, recorded in (("--variant", variant, record.variant),
                                        ("--img-size", size, record.img_size)):
            if given is not None and given != recorded:
                raise ConfigError(f"{option} {given} does not match {source}, which was exported as {record.spec}; "
                                  f"drop {option} or build the matching ONNX")
        if weights is not None:
            record = record.replace(weights=WeightsRef.parse(weights))
        return EngineLabels(record.variant, record.img_size, record.precision, record.weights.to_text(),
                            record.input_format, record)
    if not variant:
        variant = FOREIGN
        _logger.info("%s records no %s (not made by `sgformer-trt export`): recording the engine as a %s graph "
                     "(verify it with `sgformer-trt verify --onnx REWRITTEN --against ORIGINAL`)", source, META_VARIANT,
                     FOREIGN)
    if img_size is None:
        image = image_input(header)
        img_size = image.image_hw if image is not None else None
    if img_size is None:
        raise ConfigError(f"cannot tell the input size of {source}; pass --img-size")
    return EngineLabels(variant, ImageSize.parse(img_size, "--img-size"), graph_precision,
                        WeightsRef.parse(weights).to_text() if weights else "unknown")
