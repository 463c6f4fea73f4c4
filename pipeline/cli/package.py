"""The ``package`` verb: options and result printing over :mod:`pipeline.apps.package`."""
from __future__ import annotations

from pipeline.cli.args.package import add_arguments  # noqa: F401  (the options: a light module)

import argparse
from pipeline.apps.package import PackageError, package_deepstream, package_triton


def run(args: argparse.Namespace) -> int:
    if not args.triton and not args.deepstream:
        raise PackageError("nothing to do: pass --triton REPO and/or --deepstream DIR")
    if args.triton:
        pkg = package_triton(args.triton, args.engine_dir, name=args.model_name, force=args.force)
        print(f"{pkg.model_dir}: Triton model ({pkg.config.name}, 1/{pkg.plan.name}); serve with the command in "
              f"{pkg.readme}")
    if args.deepstream:
        ds = package_deepstream(args.deepstream, args.engine_dir, force=args.force)
        print(f"{ds.out_dir}: DeepStream nvinfer package ({ds.config.name}); pipeline example in {ds.readme}")
    return 0
