"""The ``evaluate`` verb: options and result printing over :mod:`pipeline.apps.evaluate`."""
from __future__ import annotations

import argparse
import onnx
from pipeline.core.errors import ConfigError
from calibration.data import load_calibration_set
from pipeline.apps.evaluate import check_graph_precisions, graphs_spec, read_labels_csv, evaluate, format_sensitivity, format_table, sensitivity
from pipeline.cli.options import add_model_arguments
from pipeline.store.io import load_onnx, write_json
from calibration.int8 import QuantPolicy


def add_arguments(parser: argparse.ArgumentParser) -> None:

    add_model_arguments(parser, from_metadata=True)
    parser.add_argument("--onnx-fp32", help="fp32 graph (exported or rewritten)")
    parser.add_argument("--onnx-fp16", help="fp16 graph")
    parser.add_argument("--onnx-int8", help="int8 Q/DQ graph")
    parser.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH", help="any further graph")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", help="image folder (recursive); labels come from WordNet-id class folders (n01440764/), official ILSVRC2012 val file names, or --labels")
    src.add_argument("--list", dest="list_file", help="file with one image path per line")
    parser.add_argument("--labels", help="CSV of file,label_index for top-1/top-5 accuracy")
    parser.add_argument("--num-images", type=int, help="evaluate a deterministic sample of N images")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--sensitivity", action="store_true",
                        help="int8 per-layer-group sensitivity of --onnx-fp32 (the exported standard-op graph): "
                             "quantize one group at a time, most sensitive first; calibrates on the same images")
    parser.add_argument("--method", choices=("entropy", "percentile", "max"), default="entropy",
                        help="calibration method for --sensitivity")


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
        print(format_sensitivity(rows))
        if args.json:
            write_json(args.json, [dict(group=g, layers=n, cosine_mean=c, top1_agreement=t) for g, n, c, t in rows])
        return 0
    report = evaluate(graphs, data, variant, checkpoint=args.checkpoint, seed=args.seed,
                      labels_csv=args.labels, batch=args.batch, trust_pickle=args.trust_checkpoint)
    print(format_table(report))
    if args.json:
        write_json(args.json, report.to_dict())
    return 0
