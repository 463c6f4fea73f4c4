"""Run prepared IAM cases through one cudahost library and print, per case, whether it matched (JSON list).

Used by test_iam_kernel_emu.py for the negative control in a subprocess: a kernel with a barrier deleted
may also write shared memory out of bounds, which on the CPU corrupts the process instead of raising a
CUDA error, so it must not run inside the pytest process. Imports only numpy (the parent computed the
host-reference outputs and saved them with the inputs) and pipeline.iam.layout (standard library only).

  python iam_emu_mutant_check.py EMU_LIB CASES.npz [PATH [CUB_RADIX_BITS]]

PATH: -1 automatic (default), 0 fused, 1 CUB; CUB_RADIX_BITS: bits per pass of the CUB stand-in (default 6).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # the repository root: pipeline.iam.layout

from iam_kernel_api import Layout, bits, load_kernel_harness, run_op  # noqa: E402


def main(argv: list[str]) -> int:
    lib = load_kernel_harness(Path(argv[0]))
    lib.cudahost_set_device(90, 0, 132)
    if len(argv) > 2:
        lib.sgformer_iam_cuda_set_path(int(argv[2]))
    if len(argv) > 3:
        lib.cudahost_set_cub_radix_bits(int(argv[3]))
    data = np.load(argv[1])
    results = []
    for i in range(int(data["count"])):
        p = lambda name: data[f"{i}_{name}"]  # noqa: E731
        height, width = (int(v) for v in p("hw"))
        layout = Layout(height, width, tuple(int(v) for v in p("groups")), tuple(int(v) for v in p("tiers")))
        try:
            got = run_op(lib, p("tokens"), p("importance"), p("weight"), p("bias"), layout)
            same = np.array_equal(bits(got[0]), bits(p("row"))) and np.array_equal(bits(got[1]), bits(p("col")))
            results.append("match" if same else "mismatch")
        except AssertionError as e:  # the emulator reported a kernel fault (deadlock, bad launch)
            results.append(f"fault: {str(e)[:300]}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
