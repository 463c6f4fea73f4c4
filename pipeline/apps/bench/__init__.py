"""Benchmarks: latency, throughput and peak memory of every backend, as ratios against one baseline.

Contract: ``run_benchmarks(config) -> BenchReport`` measures each requested backend at each batch size and
returns the numbers; ``write_report(report, out_dir)`` writes ``bench-<variant>-<res>.json`` / ``.md`` /
``.png`` atomically. The CLI (``sgformer-trt bench``) does both and prints the Markdown table.

What is measured, and how:

- **Latency**: wall time of one call ``runner(batch) -> logits`` (input already in host memory, logits back
  in host memory, so GPU rows include the host<->device copies; CUDA work is synchronized before the clock
  stops). ``warmup`` untimed calls first, then ``iters`` timed calls; the report gives median, p90 and p99
  (``numpy.percentile``, linear interpolation: with fewer than 100 calls p99 lies between the two slowest).
- **Throughput**: images per second over the timed calls, ``batch * calls / sum(call times)``.
- **Peak memory (CPU)**: each backend runs in its own fresh process (``multiprocessing`` spawn), so one
  backend's allocator caches cannot hide another's. The process records its resident set size after the
  imports and the input arrays exist (the *process baseline*), then loads the model; before each batch size
  it resets the kernel's peak-RSS counter (Linux ``/proc/self/clear_refs`` = 5) and afterwards reads
  ``VmHWM``. The figure is ``VmHWM - baseline``: weights, activations, workspace and whatever the
  allocators keep, at the worst moment of that batch size. Where the counter cannot be reset (non-Linux)
  the figure is the cumulative peak since the model was loaded (``ru_maxrss``) and the report says so.
- **Peak memory (GPU)**: PyTorch CUDA reports ``torch.cuda.max_memory_allocated`` (tensors only, not the
  caching allocator's reserve or the CUDA context); TensorRT reports the device memory in use
  (``cudaMemGetInfo``) after the batch minus before loading the engine, which includes the engine, its
  activation memory and the context that loading created.
- **Ratios**: every row's throughput, median latency and memory are divided by the baseline row measured in
  the same run (default PyTorch eager fp32 CPU at batch 1; stated in every output). Each backend's logits
  for the first image are compared with PyTorch's (max abs difference), so a fast but wrong backend shows.

Backends are a small registry (``BACKENDS``): a name, what it runs, whether it needs a GPU, a cheap check that
returns why it cannot run here, and a factory that builds a runner (``batch ndarray -> logits ndarray``)
inside the worker process. GPU and TensorRT rows are produced only by a real run on a GPU and name it;
elsewhere they are listed as skipped with the reason.

- **Op profile (onnxruntime rows)**: after the timed calls, ``profile_runs`` calls per batch size on a session
  with onnxruntime's profiler on: node time per op type and the share of the ``SGFormerIAM`` nodes
  (``op_profile``). **Comparisons**: pairs of rows (``report.COMPARISONS``, e.g. ``ort-cpu-iam`` / ``ort-cpu``)
  as throughput and latency ratios; after the rows each pair is measured again in one worker with interleaved
  calls (``measurement.time_pair``), so drift between two rows measured minutes apart does not enter the ratio
  and a claim like "the rewritten graph is at least as fast" reads off one run.

Modules: ``config`` (what to measure), ``backends`` (the registry and ``BenchRunner``, a wrapper of the runner protocol), ``measurement``
(worker processes, timing, memory), ``op_profile`` (onnxruntime's per-op profiler), ``report`` (record, ratios,
comparisons, JSON / Markdown / PNG), ``suite`` (``run_benchmarks``); the ``bench`` verb is ``pipeline.cli.bench``.
"""
from __future__ import annotations

from pipeline.apps.bench.backends import BACKENDS, Artifacts, BackendSpec, BenchRunner, gpu_name
from pipeline.apps.bench.backends import _ort_iam_unavailable, _ort_unavailable  # noqa: F401  (tests ask whether a row can run here)
from pipeline.apps.bench.config import (DEFAULT_BASELINE, DEFAULT_BATCHES, DEFAULT_ITERS, DEFAULT_PROFILE_RUNS, DEFAULT_WARMUP,
                     TINY_BATCHES, TINY_ITERS, TINY_PROFILE_RUNS, TINY_WARMUP, TRT_PRECISIONS, BenchConfig,
                     available_cpus, load_average, parse_baseline)
from pipeline.apps.bench.report import COMPARISONS, SCHEMA, BenchReport, render_markdown, render_plot, write_report
from pipeline.apps.bench.suite import run_benchmarks

__all__ = [
    "BACKENDS",
    "BackendSpec",
    "BenchConfig",
    "BenchReport",
    "BenchRunner",
    "COMPARISONS",
    "SCHEMA",
    "run_benchmarks",
    "write_report",
    "render_markdown",
    "render_plot",
    "Artifacts",
    "gpu_name",
    "available_cpus",
    "load_average",
    "parse_baseline",
    "TRT_PRECISIONS",
    "DEFAULT_BASELINE",
    "DEFAULT_BATCHES",
    "DEFAULT_ITERS",
    "DEFAULT_WARMUP",
    "DEFAULT_PROFILE_RUNS",
    "TINY_BATCHES",
    "TINY_ITERS",
    "TINY_WARMUP",
    "TINY_PROFILE_RUNS",
]
