"""Options of ``sgformer-trt run``."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", required=True, type=Path,
                        help="engine directory (with manifest.json), or the .engine file inside it")
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.add_argument("--cpu", action="store_true",
                        help="no GPU: run the engine's own ONNX (sha256-checked) in onnxruntime instead of the engine")
