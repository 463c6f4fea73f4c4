"""Options of ``sgformer-trt bench`` (defaults and row names: ``pipeline.core.bench_config``)."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_model_arguments, add_renamed
from pipeline.core.bench_config import (BACKENDS, DEFAULT_BASELINE, DEFAULT_BATCHES, DEFAULT_ITERS,
                                        DEFAULT_PROFILE_RUNS, DEFAULT_WARMUP, TINY_BATCHES, TINY_ITERS,
                                        TINY_PROFILE_RUNS, TINY_WARMUP)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _engine_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected BACKEND=PATH (e.g. trt-fp16=engines/s-fp16-224/s.engine), "
                                         f"got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, seed_help="seed of the random weights and inputs")
    parser.add_argument("--batches", type=_int_list, help=f"batch sizes (default {','.join(map(str, DEFAULT_BATCHES))}; "
                        f"--tiny: {','.join(map(str, TINY_BATCHES))})")
    parser.add_argument("--iters", type=int, help=f"timed calls per row (default {DEFAULT_ITERS}; --tiny: {TINY_ITERS})")
    parser.add_argument("--warmup", type=int, help=f"untimed calls first (default {DEFAULT_WARMUP}; --tiny: {TINY_WARMUP})")
    parser.add_argument("--backends", type=_name_list, default=(),
                        help=f"comma-separated subset of: {', '.join(BACKENDS)} (default: all; "
                             "those that cannot run here are listed as skipped)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"BACKEND:BATCH for the ratios (default {DEFAULT_BASELINE})")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and onnxruntime (default: all available)")
    parser.add_argument("--max-seconds", type=float,
                        help="time budget of the whole run in seconds (warm-ups, rows, pairs and exports included): "
                             "each row gets a share of what is left (>= 3 calls per row are always made); progress "
                             "shows the ETA")
    parser.add_argument("--onnx", help="benchmark this exported ONNX instead of exporting in this run (default: "
                                       "reuse engines/<variant>-*-<res>/model.onnx when it matches)")
    parser.add_argument("--iam-onnx", help="benchmark this rewritten ONNX instead of rewriting in this run")
    parser.add_argument("--engines-root", dest="engine_dir", default="engines", metavar="DIR",
                        help="where the engine folders <variant>-<precision>-<res>/ live (default engines)")
    add_renamed(parser, "--engine-dir", "engine_dir")
    parser.add_argument("--engine", type=_engine_arg, action="append", default=[], metavar="BACKEND=PATH",
                        help="engine file for a TensorRT backend (repeatable)")
    parser.add_argument("--in-process", action="store_true", help="run backends in this process (memory figures then "
                        "include earlier backends' leftovers; for debugging)")
    parser.add_argument("--profile-runs", type=int, help=f"onnxruntime rows: profiled calls per batch size after the "
                        f"timed ones, for the per-op profile (default {DEFAULT_PROFILE_RUNS}; --tiny: "
                        f"{TINY_PROFILE_RUNS}; 0 = no profile)")
    parser.add_argument("--no-interleave", action="store_true",
                        help="skip the interleaved measurement of the compared pairs (e.g. ort-cpu-iam vs ort-cpu); "
                             "the comparisons then come from the sequential rows")
    parser.add_argument("--tiny", action="store_true", help="CI mode: small batches and few calls")
    parser.add_argument("-o", "--output", dest="output_dir", required=True, metavar="DIR",
                        help="directory for bench-<variant>-<res>.json/.md/.png")
    add_renamed(parser, "--output-dir", "output_dir")
