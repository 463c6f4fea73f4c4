"""The pipeline as a function: ``run_pipeline(PipelineConfig) -> EngineDir`` (export -> calibrate -> rewrite ->
build -> verify), reusing every artifact that is up to date. ``sgformer-trt engine`` and ``make engine`` call it,
so the order of the stages lives here and nowhere else.

One engine folder ``engines/<variant>-<precision>-<res>/`` (``pipeline.core.engine_dir_name``) holds every
artifact: ``model.onnx``, ``model.<precision>.onnx`` (fp16/int8), ``model.iam[.<precision>].onnx``, the engine, a
copy of the plugin library, ``manifest.json`` and ``calibration.json``. A stage is skipped when its record in
``.stages.json`` says it was made from the same inputs: the same settings, the same input artifact (sha256) and
the same stage code (sha256 of its source files), and its output still has the recorded sha256. Verify always
runs (it is the point of ``make engine``).

``PipelineConfig`` is validated before anything runs or any folder is made (variant, precision, size, checkpoint,
calibration images and their count, batch), and its messages name both the CLI option and the make variable.
Its fields are also the ``engine`` verb's options (``pipeline.cli.options.add_dataclass_arguments``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pipeline.core.artifact import Precision, Task, engine_file_name, stage_onnx_name
from pipeline.core.configs import STAGES, PipelineConfig
from pipeline.core.errors import CalibrationError, ConfigError, PipelineError
from pipeline.plan import STAGES_FILE, code_hash, export_key, find_reusable, reuse_output, staleness
from pipeline.core.hashing import sha256_file
from pipeline.core.variants import TEST_VARIANTS, TEST_VARIANTS_ENV, VARIANTS, check_img_size, check_variant
from pipeline.iam.spec import MAX_BATCH
from pipeline.store.io import load_onnx, save_onnx, write_json
from pipeline.store.integrity import check_engine_dir, is_verified
from pipeline.store.locking import pipeline_run_lock
from pipeline.store.manifest import Calibration, Manifest
from pipeline.store.ownership import FolderWeights, resolve_weights, write_owner
from pipeline.data.images import sample_images
from pipeline.model.sgformer import create_model
from pipeline.stages import build as build_stage
from pipeline.stages.build import BuildConfig, artifact_info_for_build, save_engine_dir
from pipeline.stages.export import export_onnx
from pipeline.stages.rewrite import rewrite_iam
from pipeline.stages.verify import verify_engine
from calibration.calibrate import calibrate_file
from pipeline.core.configs import CalibrateOptions
from calibration.data import SKIP_HINT, SMOKE_PHOTOS, SMOKE_VARIANTS, list_folder

__all__ = ["PipelineConfig", "EngineDir", "run_pipeline", "STAGES", "check_config"]

_logger = logging.getLogger("pipeline.flow")

_ROOT = Path(__file__).resolve().parents[1]


def _make(option_name: str) -> str:
    """' (make: X)' from an option's help, for error messages."""
    field = next(f for f in dataclasses.fields(PipelineConfig) if f.name == option_name)
    text = field.metadata.get("help", "")
    if "(make:" not in text:
        return ""
    name = text[text.index("(make:") + 6:].split(";")[0].split(")")[0].strip()
    return f"(make: {name})"


def check_config(config: PipelineConfig, *, plugin: bool = True) -> None:
    """Validate every setting before any work or folder is made; messages name the option and the make variable.

    ``plugin=False``: skip the plugin-library check (``make engine`` validates before it builds the library)."""
    _check_model(config)
    _check_numbers(config)
    if Precision.parse(config.precision) is Precision.INT8:
        _check_calibration(config)
    elif config.calib_images is not None:
        raise ConfigError(f"calibration images ({_make('calib_images')[1:-1]}) are only used for int8, not "
                          f"{config.precision}; drop CALIB / --images or pass PRECISION=int8")
    _check_output(config)
    if plugin and config.until in ("build", "verify"):
        lib = _plugin_library(config)
        if not lib.is_file():
            raise ConfigError(f"plugin library {lib} does not exist; build it with `make plugins` or pass --plugins")


def _check_model(config: PipelineConfig) -> None:
    if config.variant in TEST_VARIANTS and os.environ.get(TEST_VARIANTS_ENV) != "1":
        public = ", ".join(v for v in VARIANTS if v not in TEST_VARIANTS)
        raise ConfigError(f"variant {config.variant!r} is the test suite's network, not an SG-Former to deploy; pick "
                          f"one of {public} {_make('variant')}")
    for name, check, value in (("variant", check_variant, config.variant), ("img_size", check_img_size, config.img_size),
                               ("task", Task.parse, config.task)):
        try:
            check(value)
        except ConfigError as exc:
            raise ConfigError(f"{exc} {_make(name)}") from None
    if config.checkpoint is not None and not config.checkpoint.is_file():
        raise ConfigError(f"checkpoint {config.checkpoint} does not exist or is not a file {_make('checkpoint')}; "
                          f"check the path (quote paths with spaces: CKPT=\"my file.pth\")")
    if config.checkpoint is not None and config.seed is not None:
        raise ConfigError("--seed picks random weights; it cannot be combined with a checkpoint (CKPT / --checkpoint)")


def _check_numbers(config: PipelineConfig) -> None:
    if isinstance(config.max_batch, bool) or not isinstance(config.max_batch, int) or \
            not 1 <= config.max_batch <= MAX_BATCH:
        raise ConfigError(f"max batch must be an integer from 1 to {MAX_BATCH} (the IAM kernel's limit), got "
                          f"{config.max_batch!r} {_make('max_batch')}")
    if not isinstance(config.calib_num, int) or config.calib_num < 1:
        raise ConfigError(f"number of calibration images must be positive, got {config.calib_num!r} "
                          f"{_make('calib_num')}")
    if config.verify_images < 1:
        raise ConfigError(f"verify_images must be positive, got {config.verify_images}")


def _check_calibration(config: PipelineConfig) -> None:
    if config.calib_images is not None:
        if not config.calib_images.is_dir():
            raise ConfigError(f"calibration folder {config.calib_images} does not exist or is not a folder "
                              f"{_make('calib_images')}")
        found = len(list_folder(config.calib_images))
        if found < config.calib_num:
            raise ConfigError(
                f"calibration folder {config.calib_images} holds {found} images, fewer than the {config.calib_num} "
                f"asked for (--num-images, make: CALIB_N); add images or lower CALIB_N, e.g. CALIB_N={found}"
            )
        return
    smoke = len(SMOKE_PHOTOS) * len(SMOKE_VARIANTS)
    if config.calib_num > smoke:
        raise ConfigError(f"the built-in smoke-test set has {smoke} images, fewer than the {config.calib_num} "
                          f"asked for (--num-images, make: CALIB_N); pass CALIB=<folder> or lower CALIB_N")


def _check_output(config: PipelineConfig) -> None:
    """The engine folder (or the first existing folder above it) is writable: found now, not after the export."""
    path = config.engine_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the engine folder {config.engine_dir}: {path} is not a writable folder; "
                          f"fix its permissions or pass another --out-dir")


def _plugin_library(config: PipelineConfig) -> Path:
    return config.plugin_library or (_ROOT / "build" / "plugins" / "libsgformer_plugins.so")


@dataclasses.dataclass(frozen=True)
class EngineDir:
    """The result of :func:`run_pipeline`: the folder, what each stage did, and the parity report."""

    path: Path
    config: PipelineConfig
    stages: dict[str, str]  # stage -> "made" | "up to date" | "skipped"
    report: Any = None  # pipeline.stages.compare.ParityReport of the verify stage (None with until < verify)
    plan: Optional[list] = None  # dry run: [(stage, inputs, output, status)], status "up to date" / "will ...: why"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def passed(self) -> bool:
        if self.stages.get("verify") == "FAILED":
            return False
        return self.report is None or bool(self.report)


class _Stages:
    """``.stages.json``: per stage the key of its inputs and the sha256 of its output."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STAGES_FILE
        try:
            self.records: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            self.records = {}

    def up_to_date(self, stage: str, key: dict, output: Path) -> bool:
        rec = self.records.get(stage)
        return bool(rec and rec.get("key") == key and output.is_file() and sha256_file(output) == rec.get("output"))

    def record(self, stage: str, key: dict, output: Path) -> None:
        self.records[stage] = {"key": key, "output": sha256_file(output)}
        write_json(self.path, self.records)


def _step(name: str, run: "_Run", key_fn: Callable[[], dict], output: Path, make: Callable[[], None],
          also: tuple[Path, ...] = (), inputs: tuple = (), sound: Callable[[], bool] = lambda: True) -> None:
    if run.plan is not None:  # dry run: say what would run and why, touch nothing
        status = _dry_status(name, run.stages, key_fn, output, also, sound, run.plan)
        run.plan.append((name, tuple(str(i) for i in inputs), str(output), status))
        run.done[name] = status
        return
    key = {**key_fn(), "code": code_hash(name)}
    if run.stages.up_to_date(name, key, output) and all(p.is_file() for p in also) and sound():
        _logger.info("%s: %s is up to date", name, output)
        run.done[name] = "up to date"
        return
    start = time.perf_counter()
    source = reuse_output(name, key, output)  # the same export in a sibling folder (another precision): copy it
    if source is None:
        _logger.info("%s start -> %s", name, output)
        make()
    run.stages.record(name, key, output)
    run.done[name] = "made" if source is None else f"reused {source}"
    _logger.info("%s finish: %s in %.1f s", name, output, time.perf_counter() - start)


def _dry_status(name: str, stages: "_Stages", key_fn: Callable[[], dict], output: Path, also: tuple[Path, ...],
                sound: Callable[[], bool], plan: list) -> str:
    """"up to date", or "will rebuild: why" / "will copy: from where" (dry run; reads, writes nothing)."""
    earlier = [entry[0] for entry in plan if entry[3].startswith("will rebuild")]
    if earlier:
        return f"will rebuild: its input is remade first ({earlier[-1]})"
    try:
        key = {**key_fn(), "code": code_hash(name)}
    except OSError:
        return "will rebuild: its input does not exist yet"
    why = staleness(stages.records.get(name), key, output)
    if why is None:
        missing = [p.name for p in also if not p.is_file()]
        why = f"{', '.join(missing)} missing" if missing else (None if sound() else "the folder fails its integrity check")
    if why is None:
        return "up to date"
    source = find_reusable(name, key, output)
    return f"will copy: identical output in {source}" if source is not None else f"will rebuild: {why}"


@dataclasses.dataclass
class _Run:
    """One run's state: the settings, the weights it uses, what each stage did, the folder's checked manifest."""

    config: PipelineConfig
    weights: FolderWeights
    stages: "_Stages"
    plan: Optional[list]
    done: dict = dataclasses.field(default_factory=dict)
    checked: Optional[Manifest] = None  # the folder's manifest after this run's one integrity check

    @property
    def folder(self) -> Path:
        return self.config.engine_dir

    @property
    def precision(self) -> Precision:
        return Precision.parse(self.config.precision)

    def onnx(self, stage: str) -> Path:
        return self.folder / stage_onnx_name(stage, self.precision if stage != "export" else Precision.FP32)


def run_pipeline(config: PipelineConfig, *, verify_images: Optional[Any] = None, dry_run: bool = False) -> EngineDir:
    """Run every stage in order into ``config.engine_dir``, skipping those that are up to date.

    ``verify_images``: the images of the parity check (default: ``config.verify_images`` bundled sample photos).
    ``dry_run``: validate and return the plan (``EngineDir.plan``: stage, inputs, output) without running anything.
    The folder's weights are never replaced silently (``pipeline.store.ownership``): without a checkpoint or seed
    the run uses the folder's own; other weights than the folder's need ``replace``.
    """
    check_config(config, plugin=not dry_run)
    if dry_run:
        return _run_stages(config, verify_images, dry_run=True)
    with pipeline_run_lock(config.engine_dir):
        return _run_stages(config, verify_images, dry_run=False)


def _run_stages(config: PipelineConfig, verify_images: Optional[Any], *, dry_run: bool) -> EngineDir:
    folder = config.engine_dir
    weights = resolve_weights(folder, config.checkpoint, config.seed, replace=config.replace)
    if weights.checkpoint != config.checkpoint:
        _logger.info("%s: no checkpoint given; using the folder's weights '%s'", folder, weights.weights.to_text())
    if not dry_run:
        folder.mkdir(parents=True, exist_ok=True)
        write_owner(folder, weights)
    run = _Run(config, weights, _Stages(folder), [] if dry_run else None)
    for stage, step in (("export", _export), ("calibrate", _calibrate), ("rewrite", _rewrite), ("build", _build)):
        step(run)
        if config.until == stage:
            return EngineDir(folder, config, run.done, plan=run.plan)
    if run.plan is not None:
        run.plan.append(("verify", (str(folder),), str(folder / "manifest.json"), "will run (verify always runs)"))
        run.done["verify"] = "will run"
        return EngineDir(folder, config, run.done, plan=run.plan)
    report = _verify(run, verify_images)
    return EngineDir(folder, config, run.done, report)


def _export(run: _Run) -> None:
    """The standard-op graph, with the artifact record in its metadata."""
    config, weights, spec = run.config, run.weights, run.config.spec
    exported = run.onnx("export")

    def make() -> None:
        model = create_model(spec.variant, img_size=spec.img_size, checkpoint=weights.checkpoint, seed=weights.seed,
                             trust_pickle=config.trust_checkpoint, features_only=spec.task is Task.FEATURES,
                             out_indices=spec.out_indices)
        save_onnx(export_onnx(model, weights=weights.weights, variant=spec.variant,
                              input_format=config.input_format), exported)

    _step("export", run, lambda: export_key(spec.variant, spec.img_size, spec.task, weights.weights,
                                            config.input_format), exported, make,
          inputs=(weights.checkpoint or weights.weights.to_text(),))


def _calibrate(run: _Run) -> None:
    """fp16 casts or int8 Q/DQ on the standard-op graph (onnxruntime's quantizer cannot load the op)."""
    config, precision = run.config, run.precision
    if precision is Precision.FP32:
        run.done["calibrate"] = "skipped (fp32)"
        return
    exported, calibrated = run.onnx("export"), run.onnx("calibrate")

    def make() -> None:
        options = CalibrateOptions(images=None if config.calib_images is None else str(config.calib_images),
                                   num_images=config.calib_num, method=config.calib_method)
        try:
            calibrate_file(exported, calibrated, precision.value, options, report=run.folder / "calibration.json")
        except CalibrationError as exc:  # `engine` has no --skip-bad-images: name the fix it has
            if SKIP_HINT not in str(exc):
                raise
            raise CalibrationError(str(exc).replace(SKIP_HINT, "; remove or replace that file in the calibration "
                                                               "folder (make: CALIB)")) from None

    def key() -> dict:
        k = {"input": sha256_file(exported), "precision": precision.value}
        if precision is Precision.INT8:
            k.update(images=str(config.calib_images), n=config.calib_num, method=config.calib_method)
        return k

    inputs = (exported,) if precision is Precision.FP16 else (exported, config.calib_images or "smoke-test set")
    _step("calibrate", run, key, calibrated, make, inputs=inputs)


def _rewrite(run: _Run) -> None:
    """Each IAM region -> one SGFormerIAM node."""
    calibrated, rewritten = run.onnx("calibrate"), run.onnx("rewrite")

    def make() -> None:
        save_onnx(rewrite_iam(load_onnx(calibrated)).model, rewritten)

    _step("rewrite", run, lambda: {"input": sha256_file(calibrated)}, rewritten, make, inputs=(calibrated,))


def build_config(config: PipelineConfig) -> BuildConfig:
    """The builder settings of a pipeline run (the one place they are derived from ``PipelineConfig``)."""
    return BuildConfig(backend=config.backend, plugin_library=_plugin_library(config), max_batch=config.max_batch)


def _build(run: _Run) -> None:
    """Engine + plugin copy + manifest (the record is checked against the graph and copied into the manifest)."""
    config, precision, folder = run.config, run.precision, run.folder
    rewritten = run.onnx("rewrite")
    engine = folder / engine_file_name(config.variant, precision)
    settings = build_config(config)

    def make() -> None:
        labels = artifact_info_for_build(load_onnx(rewritten), rewritten, precision=precision.value)
        data, built = build_stage.build_engine(rewritten, settings)  # looked up at call time (tests stand in)
        calibration = None
        if labels.record is not None and labels.record.calibration:
            rec = labels.record.calibration
            calibration = Calibration(set_sha256=rec["data_hash"], method=rec["method"])
        save_engine_dir(config.out_dir, data, built, variant=labels.variant, precision=labels.precision,
                        img_size=labels.img_size, weights=labels.weights, onnx_file=str(rewritten),
                        config=settings, calibration=calibration, dir_name=folder.name,
                        input_format=labels.input_format, task=labels.task, output_specs=labels.output_specs)

    def sound() -> bool:
        """The folder passes its integrity check (engine, plugin, manifest and ONNX agree); else rebuild. The
        manifest it returns is kept: verify uses it instead of checking the folder again."""
        try:
            run.checked = check_engine_dir(folder)
        except PipelineError as exc:
            _logger.warning("build: %s fails its integrity check, rebuilding: %s", folder, exc)
            return False
        return True

    plugin = settings.plugin_library
    _step("build", run, lambda: {"input": sha256_file(rewritten), "plugin": sha256_file(plugin),
                                 "backend": config.backend, "max_batch": config.max_batch},
          engine, make, also=(folder / "manifest.json",), inputs=(rewritten, plugin), sound=sound)
    if run.done.get("build") == "made":
        run.checked = None  # a new engine: verify checks the folder once


def _verify(run: _Run, verify_images: Optional[Any]):
    """The engine on a GPU, else its CPU stand-in, against PyTorch; the result goes into the manifest. "passed" only
    for a folder whose manifest now records a pass of exactly this engine."""
    config = run.config
    images = verify_images if verify_images is not None else sample_images(config.verify_images, config.img_size)
    checkpoint = None if run.weights.checkpoint is None else str(run.weights.checkpoint)
    report = verify_engine(run.folder, images, checkpoint=checkpoint, trust_pickle=config.trust_checkpoint,
                           checked=run.checked)
    recorded = getattr(report, "recorded", None)
    run.done["verify"] = "passed" if report and recorded is not None and is_verified(recorded) else "FAILED"
    return report


# ---------------------------------------------------------------------------------------------- CLI
