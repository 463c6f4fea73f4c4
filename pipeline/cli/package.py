"""The ``package`` verb: options and result printing over :mod:`pipeline.apps.package`."""
from __future__ import annotations

import argparse
from pipeline.apps.package import DeepStreamPackage, PackageError, TritonPackage, package


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory made by `make engine` / `build`")
    parser.add_argument("--triton", metavar="REPO", help="write a Triton model into this model repository")
    parser.add_argument("--deepstream", metavar="DIR", help="write a DeepStream nvinfer package into this folder")
    parser.add_argument("--name", help="Triton model name (default: the engine directory's name)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing package; package an engine whose recorded verification failed")


def run(args: argparse.Namespace) -> int:
    if not args.triton and not args.deepstream:
        raise PackageError("nothing to do: pass --triton REPO and/or --deepstream DIR")
    # every requested target is checked before any is written (issue 23)
    for pkg in package(args.engine_dir, triton=args.triton, deepstream=args.deepstream, name=args.name,
                       force=args.force):
        if isinstance(pkg, TritonPackage):
            print(f"{pkg.model_dir}: Triton model ({pkg.config.name}, 1/{pkg.plan.name}); serve with the command in "
                  f"{pkg.readme}")
        elif isinstance(pkg, DeepStreamPackage):
            print(f"{pkg.out_dir}: DeepStream nvinfer package ({pkg.config.name}); pipeline example in {pkg.readme}")
    return 0
