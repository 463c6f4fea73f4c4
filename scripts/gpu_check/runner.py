"""The steps of one run: each with its own time budget, exceptions recorded, workers in child processes."""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from scripts.gpu_check.common import ENTRY, REPORT_RESERVE_S, STEP_BUDGET_S, STEP_MIN_S, logger, run_command


class Run:
    """The steps of one run, their time budget, and the report they fill."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.start = time.monotonic()
        self.budget_s = budget_s
        self.deadline = self.start + budget_s
        self.slack = 1.0
        self.steps: list[dict] = []
        self.env: dict[str, str] = dict(os.environ)

    def remaining(self) -> float:
        return self.deadline - time.monotonic() - REPORT_RESERVE_S

    def relax(self, factor: float) -> None:
        """More time per step and in total (dry runs)."""
        self.slack = factor
        self.budget_s *= factor
        self.deadline = self.start + self.budget_s

    def note(self, name: str, status: str, summary: str) -> dict:
        """A step decided without running anything (skipped, or failed by a precondition)."""
        record = {"name": name, "status": status, "seconds": 0.0, "summary": summary, "details": {}}
        self.steps.append(record)
        return record

    def step(self, name: str, fn: Callable[[float], dict]) -> dict:
        """Run ``fn(timeout)`` as step ``name``; exceptions become a failed step, a short budget a skipped one."""
        budget = min(STEP_BUDGET_S.get(name, 60) * self.slack, self.remaining())
        if budget < STEP_MIN_S.get(name, 1):
            record = self.note(name, "skip", f"skipped: only {max(budget, 0):.0f} s of the {self.budget_s:.0f} s "
                                             f"budget left")
            logger.warning("%s: %s", name, record["summary"])
            return record
        record = {"name": name, "status": "skip", "seconds": 0.0, "summary": "", "details": {}}
        t0 = time.monotonic()
        try:
            result = fn(budget)
            record.update(status=result.pop("status", "pass" if result.get("passed", True) else "fail"),
                          summary=result.pop("summary", ""), details=result)
        except Exception as exc:  # noqa: BLE001 - every failure goes into the report
            record.update(status="fail", summary=f"{type(exc).__name__}: {exc}"[:2000],
                          details={"traceback": traceback.format_exc()[-4000:]})
        record["seconds"] = round(time.monotonic() - t0, 2)
        self.steps.append(record)
        log = logger.error if record["status"] == "fail" else logger.info
        log("%-14s %-7s %6.1f s  %s", name, record["status"], record["seconds"], record["summary"])
        return record

    def worker(self, name: str, timeout: float, extra: list[str], prefix: Optional[list[str]] = None) -> dict:
        """Run ``--worker name`` in a child process; its JSON result, or a failure with the output tail."""
        result_path = self.out / "steps" / f"{name}.json"
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.unlink(missing_ok=True)
        command = [*(prefix or []), *ENTRY, "--worker", name.split(":")[0], "--result", str(result_path), *extra]
        proc = run_command(command, timeout, self.env)
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            result = {"passed": False, "error": "the worker wrote no result"}
        result["returncode"] = proc["returncode"]
        if proc["timed_out"]:
            result.update(passed=False, status="fail", error=f"timed out after {timeout:.0f} s")
        if not result.get("passed"):
            result["output_tail"] = proc["output"][-3000:]
            if "summary" not in result or proc["timed_out"]:
                result["summary"] = result.get("error", f"exit {proc['returncode']}")
        return result


def worker_args(device: str, variants, resolutions, batches, iters: int, warmup: int = 2) -> list[str]:
    """The command-line flags of a worker child."""
    return ["--device", device, "--variants", ",".join(variants), "--resolutions", ",".join(map(str, resolutions)),
            "--batches", ",".join(map(str, batches)), "--iters", str(iters), "--warmup", str(warmup)]
