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
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pipeline.core.artifact import Precision, WeightsRef, stage_onnx_name
from pipeline.core.errors import ConfigError
from pipeline.store.io import write_json
from pipeline.core.hashing import sha256_file
from pipeline.core.configs import STAGES, PipelineConfig
from pipeline.plan import STAGES_FILE, code_hash, find_reusable, reuse_output, staleness
from pipeline.core.variants import check_img_size, check_variant
from calibration.data import list_folder
from calibration.data import SMOKE_PHOTOS, SMOKE_VARIANTS
from pipeline.store.locking import pipeline_run_lock
from pipeline.core.artifact import engine_file_name
from pipeline.data.images import sample_images
from pipeline.stages.verify import verify_engine
from pipeline.stages.export import export_onnx
from pipeline.store.io import save_onnx
from pipeline.model.sgformer import create_model
from pipeline.store.io import load_onnx, save_onnx
from pipeline.stages.rewrite import rewrite_iam
from pipeline.stages import build as build_stage
from pipeline.stages.build import BuildConfig, artifact_info_for_build, save_engine_dir
from pipeline.store.io import load_onnx
from pipeline.core.errors import PipelineError
from pipeline.store.integrity import check_engine_dir
from pipeline.store.integrity import check_engine_dir, is_verified
from calibration.calibrate import CalibrateOptions, calibrate_file
from pipeline.store.manifest import Calibration

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

    for name, check, value in (("variant", check_variant, config.variant), ("img_size", check_img_size, config.img_size)):
        try:
            check(value)
        except ConfigError as exc:
            raise ConfigError(f"{exc} {_make(name)}") from None
    if config.checkpoint is not None and not config.checkpoint.is_file():
        raise ConfigError(f"checkpoint {config.checkpoint} does not exist or is not a file {_make('checkpoint')}; "
                          f"check the path (quote paths with spaces: CKPT=\"my file.pth\")")
    if not isinstance(config.max_batch, int) or config.max_batch < 1:
        raise ConfigError(f"max batch must be a positive integer, got {config.max_batch!r} {_make('max_batch')}")
    if not isinstance(config.calib_num, int) or config.calib_num < 1:
        raise ConfigError(f"number of calibration images must be positive, got {config.calib_num!r} "
                          f"{_make('calib_num')}")
    if config.verify_images < 1:
        raise ConfigError(f"verify_images must be positive, got {config.verify_images}")
    if config.precision is Precision.INT8:
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
        else:

            smoke = len(SMOKE_PHOTOS) * len(SMOKE_VARIANTS)
            if config.calib_num > smoke:
                raise ConfigError(f"the built-in smoke-test set has {smoke} images, fewer than the {config.calib_num} "
                                  f"asked for (--num-images, make: CALIB_N); pass CALIB=<folder> or lower CALIB_N")
    if plugin and config.until in ("build", "verify"):
        lib = _plugin_library(config)
        if not lib.is_file():
            raise ConfigError(f"plugin library {lib} does not exist; build it with `make plugins` or pass --plugins")


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


def _step(name: str, stages: _Stages, key_fn: Callable[[], dict], output: Path, make: Callable[[], None],
          done: dict, also: tuple[Path, ...] = (), plan: Optional[list] = None, inputs: tuple = (),
          sound: Callable[[], bool] = lambda: True) -> None:
    if plan is not None:  # dry run: say what would run and why, touch nothing
        status = _dry_status(name, stages, key_fn, output, also, sound, plan)
        plan.append((name, tuple(str(i) for i in inputs), str(output), status))
        done[name] = status
        return
    key = {**key_fn(), "code": code_hash(name)}
    if stages.up_to_date(name, key, output) and all(p.is_file() for p in also) and sound():
        _logger.info("%s: %s is up to date", name, output)
        done[name] = "up to date"
        return
    start = time.perf_counter()
    source = reuse_output(name, key, output)  # the same export in a sibling folder (another precision): copy it
    if source is None:
        _logger.info("%s start -> %s", name, output)
        make()
    stages.record(name, key, output)
    done[name] = "made" if source is None else f"reused {source}"
    _logger.info("%s finish: %s in %.1f s", name, output, time.perf_counter() - start)


def _dry_status(name: str, stages: _Stages, key_fn: Callable[[], dict], output: Path, also: tuple[Path, ...],
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


def run_pipeline(config: PipelineConfig, *, verify_images: Optional[Any] = None, dry_run: bool = False) -> EngineDir:
    """Run every stage in order into ``config.engine_dir``, skipping those that are up to date.

    ``verify_images``: the images of the parity check (default: ``config.verify_images`` bundled sample photos).
    ``dry_run``: validate and return the plan (``EngineDir.plan``: stage, inputs, output) without running anything.
    """
    check_config(config, plugin=not dry_run)
    if dry_run:
        return _run_stages(config, verify_images, dry_run=True)

    with pipeline_run_lock(config.engine_dir):
        return _run_stages(config, verify_images, dry_run=False)


def _run_stages(config: PipelineConfig, verify_images: Optional[Any], *, dry_run: bool) -> EngineDir:
    precision = config.precision
    spec = config.spec
    folder = config.engine_dir
    plan: Optional[list] = [] if dry_run else None
    if not dry_run:
        folder.mkdir(parents=True, exist_ok=True)
    stages = _Stages(folder)
    done: dict[str, str] = {}
    weights = WeightsRef.from_checkpoint(config.checkpoint) if config.checkpoint else WeightsRef.random(config.seed)

    # export: the standard-op graph, with the artifact record in its metadata
    exported = folder / stage_onnx_name("export")

    def export() -> None:

        model = create_model(spec.variant, img_size=spec.img_size, checkpoint=config.checkpoint, seed=config.seed,
                             trust_pickle=config.trust_checkpoint)
        save_onnx(export_onnx(model, weights=weights, variant=spec.variant, input_format=config.input_format), exported)

    _step("export", stages, lambda: {"spec": [spec.variant, spec.img_size], "weights": weights.to_text(),
                                     "input_format": config.input_format.value}, exported, export, done, plan=plan,
          inputs=(config.checkpoint or weights.to_text(),))
    if config.until == "export":
        return EngineDir(folder, config, done, plan=plan)

    # calibrate: fp16 casts or int8 Q/DQ on the standard-op graph (onnxruntime's quantizer cannot load the op)
    calibrated = folder / stage_onnx_name("calibrate", precision)
    if precision is not Precision.FP32:
        def calibrate() -> None:

            options = CalibrateOptions(images=None if config.calib_images is None else str(config.calib_images),
                                       num_images=config.calib_num, method=config.calib_method)
            calibrate_file(exported, calibrated, precision, options, report=folder / "calibration.json")

        def key() -> dict:
            k = {"input": sha256_file(exported), "precision": precision.value}
            if precision is Precision.INT8:
                k.update(images=str(config.calib_images), n=config.calib_num, method=config.calib_method)
            return k

        calib_inputs = (exported,) if precision is Precision.FP16 else (exported, config.calib_images or "smoke-test set")
        _step("calibrate", stages, key, calibrated, calibrate, done, plan=plan, inputs=calib_inputs)
    else:
        done["calibrate"] = "skipped (fp32)"
    if config.until == "calibrate":
        return EngineDir(folder, config, done, plan=plan)

    # rewrite: each IAM region -> one SGFormerIAM node
    rewritten = folder / stage_onnx_name("rewrite", precision)

    def rewrite() -> None:

        save_onnx(rewrite_iam(load_onnx(calibrated)).model, rewritten)

    _step("rewrite", stages, lambda: {"input": sha256_file(calibrated)}, rewritten, rewrite, done, plan=plan,
          inputs=(calibrated,))
    if config.until == "rewrite":
        return EngineDir(folder, config, done, plan=plan)

    # build: engine + plugin copy + manifest (the record is checked against the graph and copied into the manifest)

    engine = folder / engine_file_name(spec.variant, precision)
    plugin = _plugin_library(config)

    def build() -> None:

        labels = artifact_info_for_build(load_onnx(rewritten), rewritten, precision=precision)
        build_config = BuildConfig(backend=config.backend, plugin_library=plugin, max_batch=config.max_batch)
        data, built = build_stage.build_engine(rewritten, build_config)  # looked up at call time (tests stand in)
        calibration = None
        if labels.record is not None and labels.record.calibration:

            rec = labels.record.calibration
            calibration = Calibration(set_sha256=rec["data_hash"], method=rec["method"])
        save_engine_dir(config.out_dir, data, built, variant=labels.variant, precision=labels.precision,
                        resolution=labels.resolution, weights=labels.weights, onnx_file=str(rewritten),
                        config=build_config, calibration=calibration, dir_name=folder.name,
                        input_format=labels.input_format)

    def folder_sound() -> bool:
        """The folder passes pipeline.store.integrity's check (engine, plugin, manifest and ONNX agree); else rebuild."""

        try:
            check_engine_dir(folder)
        except PipelineError as exc:
            _logger.warning("build: %s fails its integrity check, rebuilding: %s", folder, exc)
            return False
        return True

    _step("build", stages, lambda: {"input": sha256_file(rewritten), "plugin": sha256_file(plugin),
                                    "backend": config.backend, "max_batch": config.max_batch},
          engine, build, done, also=(folder / "manifest.json",), plan=plan, inputs=(rewritten, plugin),
          sound=folder_sound)
    if config.until == "build":
        return EngineDir(folder, config, done, plan=plan)
    if plan is not None:
        plan.append(("verify", (str(folder),), str(folder / "manifest.json"), "will run (verify always runs)"))
        done["verify"] = "will run"
        return EngineDir(folder, config, done, plan=plan)

    # verify: the engine on a GPU, else its CPU stand-in, against PyTorch; the result goes into the manifest

    images = verify_images if verify_images is not None else sample_images(config.verify_images, spec.img_size)
    report = verify_engine(folder, images, checkpoint=None if config.checkpoint is None else str(config.checkpoint),
                           trust_pickle=config.trust_checkpoint)
    if report:  # "engine ready" only for a consistent folder whose manifest records a pass of exactly this engine

        report_ok = is_verified(check_engine_dir(folder))
    else:
        report_ok = False
    done["verify"] = "passed" if report_ok else "FAILED"
    return EngineDir(folder, config, done, report)


# ---------------------------------------------------------------------------------------------- CLI
