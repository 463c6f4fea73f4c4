"""Options of ``sgformer-trt info``."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
