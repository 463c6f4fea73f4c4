"""Options of ``sgformer-trt package``."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory made by make engine / build")
    parser.add_argument("--triton", metavar="REPO", help="write a Triton model into this model repository")
    parser.add_argument("--deepstream", metavar="DIR", help="write a DeepStream nvinfer package into this folder")
    parser.add_argument("--model-name", help="Triton model name (default: the engine directory's name)")
    add_renamed(parser, "--name", "model_name")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing package; package an engine whose recorded verification failed")
