"""Constants and small helpers shared by every part of the GPU check (stdlib only: the machine's own python3)."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]

logger = logging.getLogger("gpu_check")

SCHEMA = "sgformer-trt.gpu-check/2"
TOTAL_BUDGET_S = 360.0
#: A dry run (CI, a shared CPU machine) gets this factor more time per step and in total: it only has to finish.
DRY_RUN_SLACK = 3.0
REPORT_RESERVE_S = 5.0
#: Per-step time limits (seconds); the sum is above the total on purpose: most steps take far less.
STEP_BUDGET_S = {
    "environment": 20, "build": 180, "pytest-gpu": 120, "memcheck": 60, "racecheck": 60,
    "op-parity": 90, "graph-capture": 45, "second-context": 45, "offset-view": 45,
    "model-parity": 120, "op-timing": 90, "model-timing": 100,
}
#: A step is only started with at least this much of the total budget left.
STEP_MIN_S = {"build": 30, "pytest-gpu": 20, "memcheck": 10, "racecheck": 10, "op-parity": 15, "graph-capture": 10,
              "second-context": 10, "offset-view": 10, "model-parity": 20, "op-timing": 15, "model-timing": 20}
OPTIONAL_PACKAGES = ("numpy", "torch", "pytest", "onnx", "onnxruntime", "cupy")
#: Steps that need the GPU itself (listed as not run in a dry run; the CPU stand-ins of the others still run).
GPU_ONLY_STEPS = ("pytest-gpu", "memcheck", "racecheck")
#: The issue-25 cases: on a GPU they run the op for real; a dry run runs their CPU part and says so.
CONTEXT_CASES = ("graph-capture", "second-context", "offset-view")
#: Step status of a case whose CPU part passed in a dry run: never "pass", which means "passed on a GPU".
DRY_STATUS = "dry-run"
DRY_NOTE = "dry run: not executed on a GPU"
#: The workers a child process can run (``--worker NAME``; workers.WORKERS maps them to functions).
WORKER_NAMES = ("op-parity", "model-parity", "op-timing", "model-timing", "sanitize-case", *CONTEXT_CASES,
                "context-reset")
#: How the parent starts its children (workers, the venv's dry run): this package's folder as a script, which
#: needs no particular working directory (``python3 -m scripts.gpu_check`` would need the repository root).
PACKAGE_DIR = Path(__file__).resolve().parent
ENTRY = [sys.executable, str(PACKAGE_DIR)]


def run_command(command: list[str], timeout: float, env: Optional[dict] = None, cwd: Path = REPO_ROOT) -> dict:
    """``command``'s exit status and output; a timeout or a missing program is a result, never an exception."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
        return {"returncode": proc.returncode, "output": proc.stdout + proc.stderr, "timed_out": False}
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return {"returncode": None, "output": out.decode(errors="replace") if isinstance(out, bytes) else str(out),
                "timed_out": True}
    except OSError as exc:
        return {"returncode": None, "output": f"cannot run {command[0]}: {exc}", "timed_out": False}


def find_tool(name: str) -> Optional[str]:
    """``name`` on PATH or in the CUDA toolkit's bin/ ($CUDA_HOME, $CUDA_PATH, /usr/local/cuda)."""
    found = shutil.which(name)
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / name).is_file():
            return str(Path(home) / "bin" / name)
    return None


def device_of(args) -> str:
    """A worker's device from its ``--device`` flag: "cuda" or (anything else) "cpu"."""
    return "cuda" if args.device == "cuda" else "cpu"
