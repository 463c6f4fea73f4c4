"""``python -m pipeline.cli.trt_env [--backend B] [--print-env]``: which TensorRT backend this machine has, and the
``LD_LIBRARY_PATH`` line TensorRT-RTX's ONNX parser needs (``scripts/trt_env.sh`` evals it)."""
from __future__ import annotations

import argparse
import platform
import sys
from typing import Optional, Sequence

from pipeline.backends.gpu import describe_gpu, probe_gpu
from pipeline.backends.rtx_library import ensure_rtx_parser_library, reexec_with_rtx_library_path
from pipeline.backends.tensorrt import BACKEND_CHOICES, Backend, cuda_version, load_backend
from pipeline.core.errors import BuildError
from pipeline.plan import rtx_fallback_notice


def prepare_rtx_build(backend: Backend, choice: str) -> None:
    """Before a build verb builds with TensorRT-RTX: restart with the parser's library folder on LD_LIBRARY_PATH
    when needed, then (``--backend auto`` only) say that the engine will run on RTX GPUs only. After any restart,
    so the note is printed once."""
    if not backend.is_rtx:
        return
    reexec_with_rtx_library_path(getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:])
    if choice == "auto":
        print(rtx_fallback_notice(), file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipeline.cli.trt_env [--backend B] [--print-env]``: report the backend, fix the RTX symlink."""

    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.trt_env", description=main.__doc__)
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument("--print-env", action="store_true",
                        help="print only an `export LD_LIBRARY_PATH=...` line if one is needed (for `eval`)")
    args = parser.parse_args(argv)
    try:
        state = ensure_rtx_parser_library()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_env:
        if state.needs_library_path is not None:
            print(f"export LD_LIBRARY_PATH={state.needs_library_path}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}")
        return 0
    try:
        backend = load_backend(args.backend)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = probe_gpu()
    print(f"backend: {backend.describe()}")
    print(f"CUDA: {cuda_version(backend) or 'unknown'}")
    print(f"GPU: {describe_gpu(gpu.compute_capability, gpu.name) if gpu else 'none'}")
    print(f"host: {platform.machine()} {platform.system()}")
    if backend.is_rtx:
        print(f"libtensorrt_rtx.so: {state.link or 'not needed'}"
              + (f" (needs LD_LIBRARY_PATH={state.needs_library_path})" if state.needs_library_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
