"""The ``verify`` verb: options and result printing over :mod:`pipeline.stages.verify`."""
from __future__ import annotations

from pipeline.cli.args.verify import add_arguments  # noqa: F401  (the options: a light module)

import logging

import argparse
import dataclasses
import time
import numpy as np
from pipeline.core.artifact import ArtifactInfo, ImageSize, Task
from pipeline.core.errors import ConfigError
from pipeline.core.tolerances import ParityRule, feature_rule, parity_rule
from pipeline.stages.graph_parity import compare_graphs
from pipeline.stages.verify import onnx_record, reference_for_record, verify_engine, verify_onnx
from pipeline.data.images import load_folder, sample_images
from pipeline.store.io import write_json
from pipeline.store.integrity import check_engine_dir
from pipeline.backends.runners import resolve_engine_dir
from pipeline.model.sgformer import create_model

_logger = logging.getLogger("pipeline.cli.verify")


def _images(args: argparse.Namespace, img_size: int) -> list[tuple[str, np.ndarray]]:

    if args.images:
        return load_folder(args.images, img_size, limit=args.num_images)
    return sample_images(args.num_images, img_size)


def _run_engine(args: argparse.Namespace) -> int:

    engine_dir = resolve_engine_dir(args.engine)
    manifest = check_engine_dir(engine_dir)
    _check_engine_options(args, manifest)
    report = verify_engine(engine_dir, _images(args, manifest.img_size), checkpoint=args.checkpoint,
                           trust_pickle=args.trust_checkpoint, batch=args.batch, device="cpu" if args.cpu else "auto")
    if args.report:
        write_json(args.report, report.to_dict())
    print(report.message)
    print(f"recorded in {engine_dir / 'manifest.json'}")
    return 0 if report else 1


def _check_engine_options(args: argparse.Namespace, manifest) -> None:
    """--engine: the network and the pass rule are the engine's record; options that would change them are refused
    (an agreeing --variant / --img-size is fine)."""
    recorded = {"--variant": manifest.variant, "--img-size": ImageSize.parse(manifest.img_size)}
    for option, given in (("--variant", args.variant), ("--img-size", args.img_size)):
        if given is not None and given != recorded[option]:
            raise ConfigError(f"{option} {given} disagrees with the engine {args.engine}, built for {option} "
                              f"{recorded[option]}; drop {option} (verify checks the engine as built)")
    for option, given in (("--atol", args.atol is not None), ("--no-top5", args.no_top5)):
        if given:
            raise ConfigError(f"{option} applies to --onnx; an engine is verified by the rule recorded for its "
                              f"precision and size (pipeline.core.tolerances); drop {option}")


def run(args: argparse.Namespace) -> int:

    if args.engine:
        return _run_engine(args)
    if args.against:
        return _run_against(args)
    start = time.perf_counter()
    info = onnx_record(args.onnx, args.variant, args.img_size)
    rule = parity_rule(info.precision, "onnxruntime", variant=info.variant, img_size=info.img_size)
    if info.task is Task.FEATURES:  # every output map by the feature rule of the table (--atol is for logits)
        rule = feature_rule(info.precision, "onnxruntime")
    elif args.atol is not None:
        rule = ParityRule(atol=args.atol, require_top5=not args.no_top5)
    elif args.no_top5:
        rule = dataclasses.replace(rule, require_top5=False)
    _logger.info("verify start: %s (onnxruntime, %s, %s, rule %s)", args.onnx, info.spec, info.precision.value,
                 rule.to_dict())
    model = reference_for_record(info, args.checkpoint, args.trust_checkpoint) if not (
        args.checkpoint is None and info.weights.kind != "random") else _unrecorded_reference(info, args)
    images = _images(args, info.img_size)
    report = verify_onnx(args.onnx, model, images, batch=args.batch, rule=rule)
    if args.report:
        write_json(args.report, report.to_dict())
    _logger.info("verify finish in %.1f s", time.perf_counter() - start)
    print(report.message)
    return 0 if report else 1


def _run_against(args: argparse.Namespace) -> int:
    images = None
    if args.images:
        images = np.stack([img for _, img in load_folder(args.images, args.img_size or 224, limit=args.num_images)])
    report = compare_graphs(args.onnx, args.against, batch=args.batch, images=images)
    if args.report:
        write_json(args.report, report.to_dict())
    print(report.message)
    return 0 if report else 1


def _unrecorded_reference(info: ArtifactInfo, args: argparse.Namespace):
    """No --checkpoint for a graph whose weights are not seeded random: unknown weights fall back to --seed
    (as before); a recorded checkpoint must be passed."""

    if info.weights.kind == "checkpoint":
        info.weights.check_checkpoint(None)  # raises, naming the checkpoint to pass
    _logger.warning("%s does not record its weights; using random weights with seed %d", args.onnx, args.seed)
    features = {"features_only": True, "out_indices": info.spec.out_indices} if info.task is Task.FEATURES else {}
    return create_model(info.variant, img_size=info.img_size, seed=args.seed, **features)
