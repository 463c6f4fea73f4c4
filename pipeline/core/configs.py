"""The settings of the pipeline's steps as typed dataclasses, and the choices of their options: light on purpose.

Each field declared with :func:`pipeline.core.options.option` is also a command-line option (the CLI generates
argparse from these fields, ``pipeline.cli.options``), so every option is written once, here. This module
imports nothing heavy (no torch, onnx, TensorRT): ``sgformer-trt VERB --help`` builds its parser from it.

Typed values are parsed once, at construction (the edge): ``PipelineConfig.precision`` is a ``Precision`` and
``.input_format`` an ``InputFormat`` whatever string the CLI, make or a caller passed.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from pipeline.core.artifact import ImageSize, InputFormat, ModelSpec, Precision, Task, engine_dir_name
from pipeline.core.errors import CalibrationError, ConfigError
from pipeline.core.flavours import BACKEND_CHOICES, HARDWARE_COMPATIBILITY
from pipeline.core.options import option

__all__ = ["PipelineConfig", "BuildConfig", "CalibrateOptions", "STAGES", "CALIBRATION_METHODS",
           "DEFAULT_CACHE_DIR", "DEFAULT_KEEP_FP32", "DEFAULT_OPSET", "EXPLAIN_REDUCTIONS", "EXPLAIN_STAGES"]

#: The stage order of ``make engine`` (``--until`` stops after one of them).
STAGES = ("export", "calibrate", "rewrite", "build", "verify")
#: int8 range calibration methods (onnxruntime's names: ``calibration.int8.METHODS``).
CALIBRATION_METHODS = ("entropy", "percentile", "max")
DEFAULT_CACHE_DIR = Path("engines/.calib-cache")
#: fp16: op types kept in fp32 by default (the normalizations; see ``calibration.fp16``).
DEFAULT_KEEP_FP32: tuple[str, ...] = ("LayerNormalization", "InstanceNormalization")
DEFAULT_OPSET = 17
#: explain: how a stage's blocks are reduced to one map, and which panels are drawn.
EXPLAIN_REDUCTIONS = ("mean", "last")
EXPLAIN_STAGES = ("all", "1", "2", "3")


def _parse_enum(enum_cls, value, flag: str, make: Optional[str] = None):
    """The member for ``value``; else one line naming the option (and the make variable)."""
    try:
        return enum_cls.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({flag}{f', make: {make}' if make else ''})") from None


def _paths(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not isinstance(value, Path):
            object.__setattr__(obj, name, Path(value))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One ``make engine``. Field metadata: the help of the ``engine`` verb's option (and its make variable)."""

    variant: str = option("s", help="SG-Former variant: s, m or b (make: VARIANT)", metavar="VARIANT")
    precision: Precision = option(Precision.FP16, help="engine precision (make: PRECISION)")
    img_size: ImageSize = option(ImageSize(224, 224), metavar="RES",
                                 help="input size: S for a square or HxW (e.g. 448x672), each side a multiple of 224 "
                                      "(make: RES)")
    task: str = option(Task.CLASSIFY.value, choices=Task.values(),
                       help="classify: ImageNet logits; features: a backbone engine with the NCHW map of every stage "
                            "(strides 4, 8, 16, 32) (make: TASK)")
    checkpoint: Optional[Path] = option(None, help="official checkpoint .pth (make: CKPT; default: seeded random "
                                                   "weights)", metavar="CKPT")
    trust_checkpoint: bool = option(False, help="allow arbitrary pickled objects in the checkpoint (trusted files)")
    seed: Optional[int] = option(None, help="seed of the random weights without a checkpoint (default: the engine "
                                            "folder's own weights, else 0)")
    replace: bool = option(False, help="rebuild the engine folder even though it holds other weights (make: "
                                       "REPLACE=1)")
    input_format: InputFormat = option(InputFormat.NORMALIZED,
                                       help="what the engine's images input holds; a non-default format gets its own "
                                            "folder, e.g. s-fp16-224-rgb-float01 (make: INPUT_FORMAT)")
    calib_images: Optional[Path] = option(None, flag="--images", metavar="CALIB",
                                          help="int8 calibration image folder (make: CALIB; default: the built-in "
                                               "smoke-test set)")
    calib_num: int = option(32, flag="--num-images", metavar="CALIB_N",
                            help="int8 calibration images to use (make: CALIB_N)")
    calib_method: str = option("entropy", flag="--method", choices=CALIBRATION_METHODS,
                               help="int8 range calibration (make: CALIB_METHOD)")
    plugin_library: Optional[Path] = option(None, flag="--plugins", metavar="LIB",
                                            help="libsgformer_plugins.so (default build/plugins/libsgformer_plugins.so)")
    backend: str = option("auto", choices=BACKEND_CHOICES, help="TensorRT flavour (make: BACKEND)")
    max_batch: int = option(8, help="largest batch of the engine's profile (make: MAX_BATCH)")
    out_dir: Path = option(Path("engines"), flag="--output", short="-o", metavar="DIR",
                           help="root of the engine folders (the engine goes to DIR/<variant>-<precision>-<res>/)")
    verify_images: int = option(4, flag="--verify-num-images", metavar="N", help="images of the parity check")
    until: str = option("verify", choices=STAGES, help="stop after this stage (make onnx: rewrite)")

    def __post_init__(self) -> None:
        _paths(self, "checkpoint", "calib_images", "plugin_library", "out_dir")
        object.__setattr__(self, "precision", _parse_enum(Precision, self.precision, "--precision", "PRECISION"))
        object.__setattr__(self, "input_format",
                           _parse_enum(InputFormat, self.input_format, "--input-format", "INPUT_FORMAT"))
        try:
            object.__setattr__(self, "img_size", ImageSize.parse(self.img_size))
        except ConfigError as exc:
            raise ConfigError(f"{exc} (--img-size, make: RES)") from None

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.variant, self.img_size, self.task)

    @property
    def engine_dir(self) -> Path:
        return self.out_dir / engine_dir_name(self.variant, self.precision, self.img_size, self.task,
                                              self.input_format)


def _split_commas(values) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    return tuple(v.strip() for item in values for v in str(item).split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Builder settings (the ``build`` verb's options). Validated on construction (:class:`ConfigError`)."""

    backend: str = option("auto", choices=BACKEND_CHOICES,
                          help="TensorRT flavour: auto prefers full TensorRT, then TensorRT-RTX (CPU-only builds for "
                               "RTX GPUs)")
    plugin_library: Optional[Path] = option(None, flag="--plugins", metavar="LIB",
                                            help="plugin library (libsgformer_plugins.so)")
    min_batch: int = option(1, help="smallest batch of the engine's optimization profile")
    opt_batch: int = option(1, help="batch the builder tunes the kernels for")
    max_batch: int = option(8, help="largest batch of the engine's optimization profile")
    workspace_mb: Optional[int] = option(None, help="builder workspace limit in MiB (default: the device memory)")
    opt_level: int = option(3, help="builder optimization level 0..5")
    timing_cache: Optional[Path] = option(None, help="timing cache file (read, then updated; full TensorRT only)")
    version_compatible: bool = option(False, help="engine runs on later TensorRT of the same major (full TensorRT "
                                                  "only)")
    hardware_compatibility: str = option("none", choices=HARDWARE_COMPATIBILITY,
                                         help="full TensorRT: build for more GPU generations than this one")
    compute_capabilities: tuple[str, ...] = option((), metavar="SM",
                                                   help="TensorRT-RTX targets, e.g. sm_86 sm_89 (default: all RTX "
                                                        "targets)")
    progress_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"backend {self.backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
        for name in ("min_batch", "opt_batch", "max_batch", "opt_level"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an int, found {value!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"batch profile must satisfy 1 <= min <= opt <= max, found min={self.min_batch} opt={self.opt_batch} "
                f"max={self.max_batch}"
            )
        if self.workspace_mb is not None and (not isinstance(self.workspace_mb, int) or self.workspace_mb <= 0):
            raise ConfigError(f"workspace_mb must be a positive int (MiB) or None, found {self.workspace_mb!r}")
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(f"opt_level (builder optimization level) must be 0..5, found {self.opt_level}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise ConfigError(f"hardware_compatibility {self.hardware_compatibility!r}: expected one of "
                              f"{', '.join(HARDWARE_COMPATIBILITY)}")
        if isinstance(self.compute_capabilities, tuple):  # from the command line: sm_86 sm_89 or sm_86,sm_89
            object.__setattr__(self, "compute_capabilities", _split_commas(self.compute_capabilities))
        if not isinstance(self.compute_capabilities, tuple):
            raise ConfigError(f"compute_capabilities must be a tuple like ('sm_89',), found {self.compute_capabilities!r}")
        for cc in self.compute_capabilities:
            if not (isinstance(cc, str) and cc.startswith("sm_") and cc[3:].isdigit()):
                raise ConfigError(f"compute capability {cc!r}: expected the form 'sm_89'")
        if self.hardware_compatibility != "none" and self.compute_capabilities:
            raise ConfigError("choose either hardware_compatibility (full TensorRT) or compute_capabilities (TensorRT-RTX)")
        _paths(self, "plugin_library", "timing_cache")
        if self.progress_interval_s <= 0:
            raise ConfigError(f"progress_interval_s must be > 0, found {self.progress_interval_s}")


@dataclasses.dataclass(frozen=True)
class CalibrateOptions:
    """Everything ``calibrate`` can be told besides input, output and precision. The fields are the single source
    of the command-line options and of ``run_pipeline``'s settings."""

    img_size: Optional[str] = option(None, help="input size, S or HxW (default: from the graph's input shape)")
    images: Optional[str] = option(None, help="calibration image folder (recursive; suffixes: docs/images.md)")
    list_file: Optional[str] = option(None, flag="--list", help="file with one image path per line")
    num_images: Optional[int] = option(None, help="deterministic sample of N images (default: all)")
    seed: int = option(0, help="sampling seed")
    skip_bad_images: bool = option(False, help="skip unreadable images with a warning")
    method: str = option("entropy", choices=CALIBRATION_METHODS, help="int8 range calibration")
    percentile: float = option(99.999, help="for --method percentile")
    batch: int = option(1, help="calibration batch size")
    op_types: tuple[str, ...] = option(("Conv", "MatMul", "Gemm"), metavar="OP", help="int8: op types to quantize")
    quantize_attention: bool = option(False, help="int8: also quantize q@k^T and probs@v")
    exclude: tuple[str, ...] = option((), metavar="NAME", help="int8: node names/globs kept float")
    exclude_op_types: tuple[str, ...] = option((), metavar="OP", help="int8: op types kept float")
    include: tuple[str, ...] = option((), metavar="NAME", help="int8: force-quantize names/globs")
    cache_dir: str = option(str(DEFAULT_CACHE_DIR), help="calibration statistics cache")
    no_cache: bool = option(False, help="do not read or write the statistics cache")
    keep_fp32_ops: tuple[str, ...] = option(DEFAULT_KEEP_FP32, metavar="OP", nargs="*",
                                            help="fp16: op types kept in fp32")
    keep_fp32: tuple[str, ...] = option((), metavar="NAME", help="fp16: node names/globs kept fp32")

    def __post_init__(self) -> None:
        if self.images is not None and self.list_file is not None:
            raise CalibrationError("pass either --images DIR or --list FILE, not both")
        for name in ("op_types", "exclude", "exclude_op_types", "include", "keep_fp32_ops", "keep_fp32"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
