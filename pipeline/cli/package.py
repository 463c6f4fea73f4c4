"""The ``package`` verb: options and result printing over :mod:`pipeline.apps.package`."""
from __future__ import annotations

from pipeline.cli.args.package import add_arguments  # noqa: F401  (the options: a light module)

import argparse
from pipeline.apps.package import DeepStreamPackage, PackageError, TritonPackage, package


def run(args: argparse.Namespace) -> int:
    if not args.triton and not args.deepstream:
        raise PackageError("nothing to do: pass --triton REPO and/or --deepstream DIR")
    # every requested target is checked before any is written (issue 23)
    for pkg in package(args.engine_dir, triton=args.triton, deepstream=args.deepstream, name=args.model_name,
                       force=args.force):
        if isinstance(pkg, TritonPackage):
            print(f"{pkg.model_dir}: Triton model ({pkg.config.name}, 1/{pkg.plan.name}); serve with the command in "
                  f"{pkg.readme}")
        elif isinstance(pkg, DeepStreamPackage):
            print(f"{pkg.out_dir}: DeepStream nvinfer package ({pkg.config.name}); pipeline example in {pkg.readme}")
    return 0
