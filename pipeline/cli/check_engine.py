"""``python -m pipeline.cli.check_engine DIR [--verified] [--stamp S]``: the integrity check of an engine folder
(``pipeline.store.integrity.check_engine_dir``) from the shell, and make's up-to-date stamp."""
from __future__ import annotations

import argparse
import os
import time
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline.core.errors import PipelineError
from pipeline.store.integrity import check_engine_dir, is_verified
from pipeline.store.manifest import MANIFEST_NAME


def _stamp(stamp: Path, stale: bool) -> None:
    """Make's up-to-date signal: a fresh mtime forces the engine to be rebuilt, an old one leaves it."""
    stamp.parent.mkdir(parents=True, exist_ok=True)
    if stale:  # newer than every file of the folder, even one with a clock-skewed future mtime
        newest = max((p.stat().st_mtime for p in stamp.parent.iterdir() if p.is_file()), default=0.0)
        t = max(time.time(), newest + 1.0)
        stamp.touch()
        os.utime(stamp, (t, t))
    elif not stamp.exists():
        stamp.touch()
        os.utime(stamp, (0, 0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.check_engine", description=__doc__.splitlines()[0])
    parser.add_argument("engine_dir", type=Path)
    parser.add_argument("--verified", action="store_true",
                        help="also require a passed verify of exactly this engine in the manifest")
    parser.add_argument("--stamp", type=Path,
                        help="make's up-to-date check: touch STAMP when the folder is missing or fails the check "
                             "(so make rebuilds the engine), leave it alone when the folder is intact")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifest = check_engine_dir(args.engine_dir)
    except PipelineError as exc:
        if args.stamp is not None:
            if (args.engine_dir / MANIFEST_NAME).exists():
                print(f"{exc}\n-> rebuilding the engine", file=sys.stderr)
            _stamp(args.stamp, stale=True)
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.stamp is not None:
        _stamp(args.stamp, stale=False)
        return 0
    if args.verified and not is_verified(manifest):
        print(f"error: {args.engine_dir}: the manifest records no passed verify of this engine; run "
              f"`sgformer-trt verify --engine {args.engine_dir}`", file=sys.stderr)
        return 2
    print(f"{args.engine_dir}: intact (engine and plugin sha256 and size, ONNX metadata match {MANIFEST_NAME})"
          + ("; verified" if args.verified else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
