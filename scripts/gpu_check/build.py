"""Build step (the torch op's CUDA library, the kernel harness, the host reference) and the GPU pytest step."""
from __future__ import annotations

import ctypes
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

from pipeline.iam.host import build_host_library
from scripts.gpu_check.common import run_command
from scripts.gpu_check.runner import Run


def int_array(values) -> ctypes.Array:
    return (ctypes.c_int * len(values))(*values)


def exported_symbols(path: Path) -> Optional[list[str]]:
    """The C functions a shared library exports (``nm -D``), or None without nm."""
    nm = shutil.which("nm")
    if nm is None:
        return None
    res = run_command([nm, "-D", "--defined-only", str(path)], 20)
    return sorted(p[-1] for p in (line.split() for line in res["output"].splitlines()) if len(p) == 3 and p[1] == "T"
                  and not p[-1].startswith("_"))


def step_build(run: Run, args, arch: str, timeout: float) -> dict:
    """nvcc (or CMake) builds for ``arch``; the shim's C ABI checked by loading it (no GPU needed: static cudart)."""
    from pipeline.iam.torch_op import _load_cuda, build_cuda_libraries

    build_dir = Path(args.build_dir) if args.build_dir else run.out / "build"
    t0 = time.monotonic()
    libs = build_cuda_libraries(build_dir / f"sm_{arch}", archs=[arch], harness=True, builder=args.builder,
                                timeout=timeout)
    cuda_s = time.monotonic() - t0
    ref = build_host_library(build_dir / "host-ref")
    run.env["SGFORMER_IAM_TORCH_LIB"] = str(libs["torch"])
    run.env["SGFORMER_KERNEL_HARNESS_LIB"] = str(libs["harness"])
    run.env["SGFORMER_IAM_REF_LIB"] = str(ref)
    run.env["SGFORMER_TEST_CUDA_ARCHS"] = arch
    os.environ.update({k: run.env[k] for k in ("SGFORMER_IAM_TORCH_LIB", "SGFORMER_IAM_REF_LIB")})
    lib = _load_cuda(str(libs["torch"]))
    out_tokens = lib.sgformer_iam_torch_out_tokens(56, 56, int_array((196, 56, 28)), int_array((784, 1568, 784)), 3)
    if out_tokens != 4 + 28 + 28:
        raise RuntimeError(f"libsgformer_iam_torch.so computes T={out_tokens} for s stage 1 at 224, expected 60")
    return {"passed": True, "arch": f"sm_{arch}", "builder": args.builder, "cuda_build_s": round(cuda_s, 1),
            "libraries": {k: str(v) for k, v in {**libs, "host_ref": ref}.items()},
            "torch_shim_symbols": exported_symbols(libs["torch"]),
            "device_count_seen_by_shim": lib.sgformer_iam_torch_device_count(),
            "summary": f"sm_{arch}: libsgformer_iam_torch.so, kernel harness, host reference ({cuda_s:.0f} s)"}


def _junit_counts(junit: Path) -> dict:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            counts = {k: int(suite.get(k, 0)) for k in counts}
    return counts


def step_pytest(run: Run, timeout: float) -> dict:
    """``pytest -m gpu`` on the kernel tests; none passing on a GPU machine counts as a failure."""
    junit = run.out / "pytest-gpu.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/plugins/test_iam_kernel_gpu.py", "-q",
               "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={junit}"]
    proc = run_command(command, timeout, run.env)
    counts = _junit_counts(junit)
    passed_n = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    # Some skips can be legitimate on a GPU (a forced path that does not fit this device); none passing is not.
    ok = proc["returncode"] == 0 and passed_n > 0
    summary = (f"{passed_n} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
               + (" (timed out)" if proc["timed_out"] else ""))
    if passed_n == 0 and proc["returncode"] == 0:
        summary += "; no GPU test ran on a GPU machine (all skipped?) counts as a failure"
    return {"passed": ok, "counts": counts, "command": " ".join(command), "summary": summary,
            "output_tail": proc["output"][-4000:]}
