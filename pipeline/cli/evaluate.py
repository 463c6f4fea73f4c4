"""The ``evaluate`` verb: options and result printing over :mod:`pipeline.apps.evaluate`."""
from __future__ import annotations

from pipeline.cli.args.evaluate import add_arguments  # noqa: F401  (the options: a light module)

import argparse
import onnx
from pipeline.core.errors import ConfigError
from calibration.data import load_calibration_set
from pipeline.apps.evaluate import (check_graph_precisions, evaluate, format_sensitivity, format_table, graphs_spec,
                                     read_labels_csv, sensitivity)
from pipeline.store.io import load_onnx, write_json
from calibration.int8 import QuantPolicy


def run(args: argparse.Namespace) -> int:

    graphs: dict[str, onnx.ModelProto] = {}
    for name, path in (("fp32", args.onnx_fp32), ("fp16", args.onnx_fp16), ("int8", args.onnx_int8)):
        if path:
            graphs[name] = load_onnx(path)
    for item in args.onnx:
        if "=" not in item:
            raise ConfigError(f"--onnx expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        graphs[name] = load_onnx(path)
    check_graph_precisions(graphs)  # before any image is read
    if args.labels:
        read_labels_csv(args.labels)
    # without graphs there is no record to read the size from: the PyTorch reference alone runs at --img-size or 224
    given = args.img_size if args.img_size is not None or graphs else 224
    variant, img_size = graphs_spec(graphs, args.variant, given)
    data = load_calibration_set(
        img_size, images=args.images, list_file=args.list_file, num_images=args.num_images,
        skip_bad=args.skip_bad_images,
    )
    if args.sensitivity:

        if "fp32" not in graphs:
            raise ConfigError("--sensitivity needs --onnx-fp32: the exported standard-op graph (model.onnx)")
        rows = sensitivity(graphs["fp32"], data, data, QuantPolicy(method=args.method))
        print(format_sensitivity(rows, images=len(data)))
        if args.report:
            write_json(args.report, [dict(group=g, layers=n, cosine_mean=c, top1_agreement=t) for g, n, c, t in rows])
        return 0
    report = evaluate(graphs, data, variant, checkpoint=args.checkpoint, seed=args.seed,
                      labels_csv=args.labels, batch=args.batch, trust_pickle=args.trust_checkpoint)
    print(format_table(report))
    if args.report:
        write_json(args.report, report.to_dict())
    return 0
