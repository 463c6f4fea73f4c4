"""``run_benchmarks(config) -> BenchReport``: every selected backend, each in its own worker, into one report."""
from __future__ import annotations

import datetime as _dt
import logging
import tempfile
import time
import dataclasses
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.progress import eta_text
from pipeline.apps.bench import report as report_mod
from pipeline.apps.bench.backends import BACKENDS, Artifacts
from pipeline.apps.bench.config import BenchConfig, load_average
from pipeline.apps.bench.measurement import Job, PairJob, run_inline, run_isolated
from pipeline.apps.bench.report import BenchReport

__all__ = ["run_benchmarks"]

_logger = logging.getLogger("pipeline.apps.bench")


@dataclasses.dataclass
class _Collected:
    """What the backends of one run produced, in the report's shapes."""

    rows: list = dataclasses.field(default_factory=list)
    backends: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    memory_kinds: dict = dataclasses.field(default_factory=dict)
    op_profiles: list = dataclasses.field(default_factory=list)
    prepared: dict = dataclasses.field(default_factory=dict)
    reference: Optional[np.ndarray] = None

    def add(self, name: str, spec, files: dict, measured: dict) -> None:
        """One measured backend: its rows, its logits against PyTorch's, its memory kind and op profile."""
        self.prepared[name] = files
        logits = np.asarray(measured.pop("first_logits"))
        if name == "pytorch-cpu" or self.reference is None and name == "pytorch-cuda":
            self.reference = logits
        diff = None if self.reference is None else float(np.abs(logits - self.reference).max())
        self.memory_kinds[name] = measured["memory_kind"]
        self.backends.append({
            "backend": name,
            "description": spec.description,
            "device": measured["device"],
            "details": measured["details"],
            "load_s": measured["load_s"],
            "load_peak_bytes": measured["load_peak_bytes"],
            "memory_kind": measured["memory_kind"],
            "max_abs_logit_diff_vs_pytorch": diff,
        })
        self.rows += [{"backend": name, "device": measured["device"], **row} for row in measured["rows"]]
        self.op_profiles += [{"backend": name, **p} for p in measured.get("op_profile", [])]


def _measure_one(config: BenchConfig, artifacts: Artifacts, index: int, start: float, got: _Collected) -> None:
    """Prepare and measure the ``index``-th selected backend (skipped / failed entries say why it did not run)."""
    selected = config.selected_backends
    name = selected[index]
    if index:
        _logger.info("bench progress: %d of %d backends, %.0f s so far; %s", index, len(selected),
                     time.perf_counter() - start, eta_text(time.perf_counter() - start, index, len(selected)))
    spec = BACKENDS[name]
    reason = spec.unavailable(config)
    if reason:
        _logger.info("%s: skipped (%s)", name, reason)
        got.skipped.append({"backend": name, "description": spec.description, "reason": reason})
        return
    try:
        files = spec.prepare(config, artifacts) if spec.prepare else {}
    except PipelineError as exc:
        got.failed.append({"backend": name, "stage": "prepare", "error": str(exc)})
        _logger.error("%s: could not prepare its input (%s)", name, exc)
        return
    rows_left = (len(selected) - index) * len(config.batches) + _pair_rows(config)
    job = Job(budgeted(config, start, rows_left), name, files, _logger.getEffectiveLevel())
    _logger.info("%s: measuring (%s)", name, "own process" if config.isolate else "this process")
    result = run_isolated(job) if config.isolate else run_inline(job)
    if "error" in result:
        got.failed.append({"backend": name, "stage": "measure", "error": result["error"]})
        _logger.error("%s: failed: %s", name, result["error"])
        _logger.debug("%s", result.get("traceback", ""))
        return
    got.add(name, spec, files, result["ok"])


def run_benchmarks(config: BenchConfig, command: str = "") -> BenchReport:
    """Measure every selected backend (see module docstring). Raises ``PipelineError`` if nothing ran."""
    start = time.perf_counter()
    environment = report_mod.environment(config)
    _logger.info("bench start: %s @ %s, batches %s, %d warmup + %d calls, backends %s", config.variant,
                 config.img_size, list(config.batches), config.warmup, config.iters, ", ".join(config.selected_backends))
    got = _Collected()
    interleaved: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sgformer-bench-") as tmp:
        artifacts = Artifacts(config, Path(tmp))
        for index in range(len(config.selected_backends)):
            _measure_one(config, artifacts, index, start, got)
        if config.interleave:
            interleaved = _interleaved_pairs(config, got.prepared, got.failed, start)
    if not got.rows:
        raise PipelineError(
            "no backend could be measured: "
            + "; ".join(f"{s['backend']}: {s['reason']}" for s in got.skipped)
            + "".join(f"; {f['backend']}: {f['error']}" for f in got.failed)
        )
    report = _report(config, command, environment, got, interleaved)
    _logger.info("bench finish: %d rows, %d skipped, %d failed in %.1f s", len(got.rows), len(got.skipped),
                 len(got.failed), time.perf_counter() - start)
    return report


def _report(config: BenchConfig, command: str, environment: dict, got: _Collected, interleaved: list) -> BenchReport:
    chosen = report_mod.pick_baseline(config, got.rows)
    base_row = chosen.pop("row")
    chosen.update({"median_ms": base_row["latency_ms"]["median"], "throughput_ips": base_row["throughput_ips"],
                   "peak_memory_bytes": base_row["peak_memory_bytes"]})
    report_mod.attach_ratios(got.rows, base_row)
    config_dict = asdict(config)
    config_dict["engines"] = dict(config.engines)
    config_dict["img_size"] = list(config.img_size)  # [H, W], as a manifest records it
    return BenchReport(
        config=config_dict,
        environment={**environment, "loadavg_1min_at_end": load_average()},
        baseline=chosen,
        rows=got.rows,
        backends=got.backends,
        skipped=got.skipped,
        failed=got.failed,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        memory_note="; ".join(f"{k}: {v}" for k, v in got.memory_kinds.items()),
        command=command,
        op_profiles=got.op_profiles,
        comparisons=report_mod.compare_rows(got.rows, interleaved),
    )


def _pair_rows(config: BenchConfig) -> int:
    """Rows the interleaved pairs will time, each counted as two (both backends run), for the budget's shares."""
    if not config.interleave:
        return 0
    chosen = set(config.selected_backends)
    pairs = sum(1 for c, r, _ in report_mod.COMPARISONS if c in chosen and r in chosen)
    return 2 * pairs * len(config.batches)


def budgeted(config: BenchConfig, start: float, rows_left: int, clock=time.perf_counter) -> BenchConfig:
    """``config`` with each row's time limit set to its share of the total budget that is left (``max_seconds``).
    At least 3 calls per row are always made, so an exhausted budget gives short rows, not skipped ones."""
    if config.max_seconds is None:
        return config
    left = config.max_seconds - (clock() - start)
    share = max(left, 0.0) / max(rows_left, 1)
    per_row = share if config.max_seconds_per_row is None else min(share, config.max_seconds_per_row)
    return replace(config, max_seconds_per_row=max(per_row, 1e-3))


def _interleaved_pairs(config: BenchConfig, prepared: dict[str, dict], failed: list[dict],
                       start: Optional[float] = None) -> list[dict]:
    """Each ``COMPARISONS`` pair whose two backends were measured: both in one worker, calls interleaved."""
    out: list[dict] = []
    pairs = [(c, r) for c, r, _ in report_mod.COMPARISONS if c in prepared and r in prepared]
    for k, (candidate, reference) in enumerate(pairs):
        pair_config = config if start is None else budgeted(config, start, 2 * (len(pairs) - k) * len(config.batches))
        job = PairJob(pair_config, candidate, reference, {candidate: prepared[candidate], reference: prepared[reference]},
                      _logger.getEffectiveLevel())
        _logger.info("%s vs %s: interleaved calls in one %s", candidate, reference,
                     "process" if config.isolate else "process (this one)")
        result = run_isolated(job) if config.isolate else run_inline(job)
        if "error" in result:
            failed.append({"backend": f"{candidate} vs {reference}", "stage": "interleaved", "error": result["error"]})
            _logger.error("%s vs %s: interleaved measurement failed: %s", candidate, reference, result["error"])
            continue
        out += [{"candidate": candidate, "reference": reference, **row} for row in result["ok"]["rows"]]
    return out
