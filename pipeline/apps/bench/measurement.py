"""Benchmark measurement: one backend in its own process, timed at every batch size, with its memory figures.

See the package docstring for what is measured and how. ``measure_backend(job)`` runs in a spawned worker
(``run_isolated``) or, for debugging, in this process (``run_inline``); either way it returns a plain dict (or
``{"error": ...}``) that the parent turns into report rows.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.apps.bench.backends import BACKENDS, BenchRunner
from pipeline.apps.bench.config import BenchConfig
from tqdm import tqdm

__all__ = ["Job", "PairJob", "measure_backend", "measure_pair", "time_pair", "run_isolated", "run_inline"]

_logger = logging.getLogger("pipeline.apps.bench")


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class _RssProbe:
    """Resident-memory figures of this process: current RSS, and a peak that can be reset per batch size."""

    def __init__(self) -> None:
        self.resettable = self._try_reset()
        self.kind = (
            "peak RSS minus the process baseline, peak reset per batch size (VmHWM, /proc/self/clear_refs)"
            if self.resettable else
            "peak RSS minus the process baseline, cumulative since the model was loaded (ru_maxrss)"
        )

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _proc_status_kib("VmHWM") is not None
        except OSError:
            return False

    def current(self) -> int:
        kib = _proc_status_kib("VmRSS")
        if kib is not None:
            return kib * 1024
        return self.peak()

    def reset_peak(self) -> None:
        if self.resettable:
            self._try_reset()

    def peak(self) -> int:
        kib = _proc_status_kib("VmHWM")
        if kib is not None:
            return kib * 1024
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@dataclass(frozen=True)
class Job:
    config: BenchConfig
    backend: str
    files: dict
    log_level: int


@dataclass(frozen=True)
class PairJob:
    """Two backends measured together with interleaved calls (``measure_pair``); ``files`` per backend."""

    config: BenchConfig
    candidate: str
    reference: str
    files: dict
    log_level: int

    @property
    def backend(self) -> str:
        return f"{self.candidate}+{self.reference}"


def _inputs(config: BenchConfig) -> np.ndarray:
    """Normalized-image-like inputs for the largest batch (seeded; smaller batches are prefixes)."""
    rng = np.random.default_rng(config.seed)
    return rng.standard_normal((max(config.batches), 3, *config.img_size), dtype=np.float32)


def _set_threads(config: BenchConfig) -> None:
    import torch

    torch.set_num_threads(config.cpu_threads)


def _preload(backend: str) -> None:
    for module in BACKENDS[backend].preload:
        try:
            importlib.import_module(module)
        except ImportError:  # optional helpers (e.g. the host-reference wrapper); the runner reports real problems
            _logger.debug("%s: preload of %s failed", backend, module)


def measure_backend(job: Job) -> dict:
    """Load one backend and time it at every batch size (runs inside the worker process)."""
    config = job.config
    spec = BACKENDS[job.backend]
    _set_threads(config)
    _preload(job.backend)
    images = _inputs(config)
    probe = _RssProbe()
    baseline_rss = probe.current()
    probe.reset_peak()
    start = time.perf_counter()
    runner = spec.create(config, job.files)
    load_s = time.perf_counter() - start
    load_peak = probe.peak() - baseline_rss
    _logger.info("%s: loaded in %.2f s on %s", job.backend, load_s, runner.device)
    reference = runner.infer(np.ascontiguousarray(images[:1]))[0]
    rows = []
    profiles: list[dict] = []
    try:
        for batch in sorted(config.batches):
            rows.append(_time_batch(config, job.backend, runner, images[:batch], probe, baseline_rss))
        if runner.profile is not None and config.profile_runs > 0:
            _logger.info("%s: onnxruntime op profile, %d call(s) per batch size", job.backend, config.profile_runs)
            profiles = runner.profile([np.ascontiguousarray(images[:b]) for b in sorted(config.batches)],
                                      config.profile_runs)
    finally:
        runner.close()
    return {
        "backend": job.backend,
        "device": runner.device,
        "details": runner.details,
        "load_s": load_s,
        "load_peak_bytes": load_peak,
        "memory_kind": runner.gpu_memory_kind or probe.kind,
        "rows": rows,
        "op_profile": profiles,
        "first_logits": np.asarray(reference, dtype=np.float64).tolist(),
    }


def _time_batch(config: BenchConfig, backend: str, runner: BenchRunner, images: np.ndarray, probe: _RssProbe,
                baseline_rss: int) -> dict:
    batch = images.shape[0]
    images = np.ascontiguousarray(images)
    probe.reset_peak()
    if runner.gpu_memory_reset:
        runner.gpu_memory_reset()
    for _ in range(config.warmup):
        runner.infer(images)
    times: list[float] = []
    bar = _progress(config, total=config.iters, desc=f"{backend} b{batch}")
    budget_start = time.perf_counter()
    out = None
    for i in range(config.iters):
        t0 = time.perf_counter()
        out = runner.infer(images)
        times.append(time.perf_counter() - t0)
        bar.update(1)
        if (config.max_seconds_per_row and i >= 2
                and time.perf_counter() - budget_start > config.max_seconds_per_row):
            _logger.info("%s batch %d: time budget reached after %d calls", backend, batch, len(times))
            break
    bar.close()
    if out is None or out.shape[0] != batch or not np.all(np.isfinite(out)):
        raise PipelineError(f"{backend} returned unusable logits at batch {batch}: shape "
                            f"{None if out is None else out.shape}, finite={out is not None and bool(np.isfinite(out).all())}")
    ms = np.asarray(times) * 1e3
    memory = runner.gpu_memory_peak() if runner.gpu_memory_peak else probe.peak() - baseline_rss
    median, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    row = {
        "batch": batch,
        "calls": len(times),
        "warmup": config.warmup,
        "latency_ms": {"median": median, "p90": p90, "p99": p99, "mean": float(ms.mean()), "min": float(ms.min())},
        "throughput_ips": batch * len(times) / float(np.sum(times)),
        "peak_memory_bytes": int(memory),
    }
    _logger.info("%s batch %d: median %.2f ms, %.1f img/s, %.1f MiB", backend, batch, median,
                 row["throughput_ips"], memory / 2**20)
    return row


def measure_pair(job: PairJob) -> dict:
    """Load both backends of a comparison in one worker and time them with interleaved calls at every batch size.

    The sequential rows measure one backend after the other, minutes apart, so anything that drifts in between
    (other processes, CPU clocks, the page cache) lands in their ratio. Here every round calls both, in
    alternating order, so drift hits both alike; ``time_pair`` has the arithmetic. No memory figures (two models
    share the process).
    """
    config = job.config
    _set_threads(config)
    images = _inputs(config)
    runners: dict[str, BenchRunner] = {}
    try:
        for name in (job.candidate, job.reference):
            _preload(name)
            runners[name] = BACKENDS[name].create(config, job.files[name])
        rows = []
        for batch in sorted(config.batches):
            row = time_pair(config, runners[job.candidate], runners[job.reference],
                            np.ascontiguousarray(images[:batch]))
            _logger.info("%s / %s batch %d, interleaved: throughput ratio %.3f over %d rounds (per round %.3f..%.3f)",
                         job.candidate, job.reference, batch, row["throughput_ratio"], row["rounds"],
                         row["round_ratio_min"], row["round_ratio_max"])
            rows.append(row)
    finally:
        for runner in runners.values():
            runner.close()
    return {"candidate": job.candidate, "reference": job.reference, "rows": rows}


def time_pair(config: BenchConfig, candidate: BenchRunner, reference: BenchRunner, images: np.ndarray,
              clock: Callable[[], float] = time.perf_counter) -> dict:
    """Interleaved timing of two runners on the same batch.

    ``warmup`` untimed calls of each, then up to ``iters`` rounds; round i calls the candidate first when i is
    even and the reference first when i is odd (so neither always runs in the other's wake). With
    ``max_seconds_per_row`` the rounds stop once twice that budget is spent (two backends), after at least 3.
    ``throughput_ratio`` = candidate images/s over reference images/s = sum(reference times) / sum(candidate
    times); ``round_ratio_*``: the same ratio per round (reference time / candidate time), whose spread shows how
    far the ratio can be trusted.
    """
    for _ in range(config.warmup):
        candidate.infer(images)
        reference.infer(images)
    cand: list[float] = []
    ref: list[float] = []
    start = clock()
    for i in range(config.iters):
        order = ((candidate, cand), (reference, ref)) if i % 2 == 0 else ((reference, ref), (candidate, cand))
        for runner, times in order:
            t0 = clock()
            runner.infer(images)
            times.append(clock() - t0)
        if config.max_seconds_per_row and i >= 2 and clock() - start > 2 * config.max_seconds_per_row:
            break
    per_round = [r / c for c, r in zip(cand, ref)]
    return {
        "batch": int(images.shape[0]),
        "rounds": len(cand),
        "warmup": config.warmup,
        "throughput_ratio": sum(ref) / sum(cand),
        "latency_ratio": statistics.median(cand) / statistics.median(ref),
        "round_ratio_median": statistics.median(per_round),
        "round_ratio_min": min(per_round),
        "round_ratio_max": max(per_round),
        "candidate_median_ms": 1e3 * statistics.median(cand),
        "reference_median_ms": 1e3 * statistics.median(ref),
    }


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(config: BenchConfig, total: int, desc: str):
    if not config.progress:
        return _NoBar()

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def _measure(job: Union[Job, PairJob]) -> dict:
    return measure_pair(job) if isinstance(job, PairJob) else measure_backend(job)


def _worker_main(conn, job: Union[Job, PairJob]) -> None:
    """Entry point of a spawned worker: measure, send the result (or the error) back, exit."""
    logging.basicConfig(level=job.log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        conn.send({"ok": _measure(job)})
    except BaseException as exc:  # everything goes back to the parent as text; the parent decides
        conn.send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


def run_isolated(job: Union[Job, PairJob]) -> dict:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_main, args=(sender, job), name=f"bench-{job.backend}")
    proc.start()
    sender.close()
    message = None
    try:
        while message is None:
            if receiver.poll(0.5):
                message = receiver.recv()
            elif not proc.is_alive():
                break
    except EOFError:
        pass
    proc.join()
    if message is None:
        return {"error": f"worker process died with exit code {proc.exitcode} (out of memory or a crash in native code)"}
    return message


def run_inline(job: Union[Job, PairJob]) -> dict:
    try:
        return {"ok": _measure(job)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
