"""The ``package`` verb: options and result printing over :mod:`pipeline.apps.package`."""
from __future__ import annotations

import argparse
from pipeline.apps.package import PackageError, package_deepstream, package_triton


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory made by `make engine` / `build`")
    parser.add_argument("--triton", metavar="REPO", help="write a Triton model into this model repository")
    parser.add_argument("--deepstream", metavar="DIR", help="write a DeepStream nvinfer package into this folder")
    parser.add_argument("--name", help="Triton model name (default: the engine directory's name)")
    parser.add_argument("--force", action="store_true", help="replace an existing package")


def run(args: argparse.Namespace) -> int:
    if not args.triton and not args.deepstream:
        raise PackageError("nothing to do: pass --triton REPO and/or --deepstream DIR")
    if args.triton:
        pkg = package_triton(args.triton, args.engine_dir, name=args.name, force=args.force)
        print(f"{pkg.model_dir}: Triton model ({pkg.config.name}, 1/{pkg.plan.name}); serve with the command in "
              f"{pkg.readme}")
    if args.deepstream:
        ds = package_deepstream(args.deepstream, args.engine_dir, force=args.force)
        print(f"{ds.out_dir}: DeepStream nvinfer package ({ds.config.name}); pipeline example in {ds.readme}")
    return 0
