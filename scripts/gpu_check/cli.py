"""Command line of the GPU check: the parent run (steps, report) and the child mode (``--worker NAME``).

Imports only the standard library and this package's stdlib-only modules at the top: ``make gpu-check`` on a
machine whose python3 has neither torch nor numpy must still get as far as saying so in one line."""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from scripts.gpu_check.common import (DRY_RUN_SLACK, ENTRY, REPO_ROOT, SCHEMA, TOTAL_BUDGET_S, WORKER_NAMES, logger,
                                      run_command)
from scripts.gpu_check.environment import has_gpu_driver, local_arch, probe_environment, torch_usable
from scripts.gpu_check.report import NOT_PROVEN, iam_share, write_report
from scripts.gpu_check.runner import Run

#: The project's virtual environment, the dry run's interpreter when the machine's python3 has no torch.
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
DESCRIPTION = ("One-shot GPU acceptance run of sgformer-trt (make gpu-check): everything a CUDA machine without "
               "TensorRT can prove, in at most 6 minutes, into gpu-check.json and gpu-check.md. See docs/gpu-check.md.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 scripts/gpu_check", description=DESCRIPTION)
    parser.add_argument("--out", default="build/gpu-check", help="directory for gpu-check.json / gpu-check.md")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: build for --arch, run the CPU stand-ins")
    parser.add_argument("--arch", default=None, help="CUDA architecture (e.g. 90); default: the local GPU's, else 90")
    parser.add_argument("--builder", default="auto", choices=("auto", "cmake", "nvcc"))
    parser.add_argument("--build-dir", default=None, help="where to build (default OUT/build)")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="total seconds (default 360)")
    parser.add_argument("--variants", default=None, help="model variants (default s,b for models, s,m,b for ops)")
    parser.add_argument("--resolutions", default="224,448")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed model calls first (default 2)")
    # Child-process mode (used by the parent; not for people).
    parser.add_argument("--worker", choices=sorted(WORKER_NAMES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--harness", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    return parser


def without_torch(args, argv: Optional[list[str]]) -> Optional[int]:
    """No GPU and no torch in this interpreter (``make gpu-check`` on a CPU machine whose python3 is bare): say so in
    one line and run the dry run with the project's venv, or skip what needs torch. None: carry on here."""
    if importlib.util.find_spec("torch") is not None or (has_gpu_driver() and not args.dry_run):
        return None  # with a GPU, a python3 without torch is a real failure: the full run reports it
    venv = Path(os.environ.get("GPU_CHECK_VENV_PYTHON", VENV_PYTHON))
    usable = venv.is_file() and run_command([str(venv), "-c", "import torch, numpy"], 120)["returncode"] == 0
    if usable:
        print(f"gpu-check: no GPU here and {sys.executable} has no torch: checked the build and the CPU stand-ins "
              f"instead (dry run with {venv})", flush=True)
        command = [str(venv), *ENTRY[1:], *(argv if argv is not None else sys.argv[1:])]
        return subprocess.run(command, check=False).returncode
    print(f"gpu-check: no GPU here and neither {sys.executable} nor {venv} has torch: checked nothing that needs "
          f"torch (skipped: build, op and model checks; `make venv` then `make gpu-check` runs the dry run)")
    return 0


def _verdict(run: Run, mode: str, arch: str) -> tuple[str, list[str]]:
    failed = [s["name"] for s in run.steps if s["status"] == "fail"]
    verdict = "FAIL: " + ", ".join(failed) if failed else "PASS"
    if mode == "dry-run":
        verdict += (f" (dry run, no GPU: built for sm_{arch}, GPU steps not run, CPU stand-ins only; the GPU cases "
                    f"are not executed on a GPU)")
    return verdict, failed


def finish(run: Run, out: Path, env: dict, mode: str, arch: str, started: str) -> int:
    """Write the report, print its summary (one line per step), exit status 1 on any failed step."""
    by_name = {s["name"]: s for s in run.steps}
    shares = []
    if "op-timing" in by_name and "model-timing" in by_name:
        shares = iam_share(by_name["op-timing"]["details"].get("rows", []),
                           by_name["model-timing"]["details"].get("rows", []))
    verdict, failed = _verdict(run, mode, arch)
    report = {"schema": SCHEMA, "mode": mode, "verdict": verdict, "passed": not failed, "started": started,
              "seconds": round(time.monotonic() - run.start, 1), "budget_s": run.budget_s,
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "arch": f"sm_{arch}",
              "environment": env, "steps": run.steps, "iam_share": shares, "not_proven": NOT_PROVEN}
    write_report(out, report)
    print(f"gpu-check {mode}: {verdict}")
    for s in run.steps:
        print(f"  {s['name']:<14} {s['status']:<7} {s['seconds']:6.1f} s  {s['summary'][:150]}")
    print(f"report: {out / 'gpu-check.md'} and gpu-check.json")
    return 1 if failed else 0


def check(args) -> int:
    """The parent run: environment, build, then the full or the dry-run plan."""
    # After the torch check: these import numpy and the project (a bare python3 never gets here).
    from scripts.gpu_check import plan
    from scripts.gpu_check.build import step_build

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, args.budget)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    env = run.step("environment", lambda _t: {"summary": "probed", **probe_environment()})["details"]
    if "packages" not in env:  # skipped for lack of budget: the report still needs to know the machine
        env = probe_environment()
    has_gpu = bool(env.get("torch_cuda_available")) or bool(env.get("gpus"))
    mode = "dry-run" if args.dry_run or not has_gpu else "full"
    if mode == "dry-run":
        if not args.dry_run:
            logger.warning("no GPU here (nvidia-smi and torch.cuda see none): running the dry run instead")
        run.relax(DRY_RUN_SLACK)
    arch = args.arch or local_arch(env) or "90"
    built = run.step("build", lambda t: step_build(run, args, arch, t))["status"] == "pass"
    if mode == "full":
        plan.run_full(run, env, args, built)
    else:
        plan.run_dry(run, args, built, torch_usable(env))
    return finish(run, out, env, mode, arch, started)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.resolutions = [int(r) for r in args.resolutions.split(",") if r]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    logging.basicConfig(level=logging.INFO, format="gpu-check: %(message)s")
    if args.worker:
        from scripts.gpu_check.workers import run_worker  # the child: numpy/torch are there (the parent checked)

        args.variants = [v for v in (args.variants or "s,m,b").split(",") if v]
        return run_worker(args)
    handed_over = without_torch(args, argv)
    if handed_over is not None:
        return handed_over
    return check(args)
