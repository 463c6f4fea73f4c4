"""Options of ``sgformer-trt engine`` (every option is a field of ``pipeline.core.configs.PipelineConfig``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.options import add_dataclass_arguments, add_renamed
from pipeline.core.configs import PipelineConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, PipelineConfig)
    add_renamed(parser, "--out-dir", "out_dir", type=Path)
    add_renamed(parser, "--verify-images", "verify_images", type=int)
    parser.add_argument("--check", action="store_true",
                        help="only validate the settings (what make engine does before building the plugin)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print each stage: up to date, or will rebuild and why (runs nothing)")
