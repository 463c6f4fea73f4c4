"""Benchmark configuration: what to measure (``BenchConfig``), defaults, and facts about this machine. Light (core
layer, no torch): the `bench` verb builds its options from it (``pipeline.apps.bench.config`` re-exports it)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from pipeline.core.errors import ConfigError
from pipeline.core.variants import VARIANTS, ImageSize, check_img_size

__all__ = ["BenchConfig", "available_cpus", "load_average", "parse_baseline", "DEFAULT_BATCHES", "TINY_BATCHES",
           "DEFAULT_ITERS", "DEFAULT_WARMUP", "TINY_ITERS", "TINY_WARMUP", "DEFAULT_BASELINE", "TRT_PRECISIONS",
           "DEFAULT_PROFILE_RUNS", "TINY_PROFILE_RUNS"]

DEFAULT_BATCHES = (1, 8, 32)
TINY_BATCHES = (1, 2)
DEFAULT_ITERS = 20
DEFAULT_WARMUP = 3
TINY_ITERS = 3
TINY_WARMUP = 1
DEFAULT_BASELINE = "pytorch-cpu:1"
#: TensorRT precisions benchmarked from ``engines/<variant>-<precision>-<res>/``; "fp32-topk" is the engine
#: built from the standard-op graph (native TopK, no plugin), which only builds at 224.
TRT_PRECISIONS = {"trt-fp32": "fp32", "trt-fp16": "fp16", "trt-int8": "int8", "trt-topk": "fp32-topk"}
#: onnxruntime rows: profiled runs per batch size after the timed calls (per-op time, IAM share); 0 = none.
DEFAULT_PROFILE_RUNS = 2
TINY_PROFILE_RUNS = 1


#: Row names in report order (the rows themselves: ``backends.BACKENDS``, which checks it holds exactly these).
#: Kept here as data so the config validates names without importing the backends (no import cycle).
BACKENDS: tuple[str, ...] = (
    "pytorch-cpu", "ort-cpu", "ort-cpu-iam", "pytorch-cuda", "pytorch-cpu-fused", "pytorch-cuda-fused",
    "trt-fp32", "trt-fp16", "trt-int8", "trt-topk",
)


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark. Validated on construction (``ConfigError``)."""

    variant: str = "s"
    img_size: ImageSize = ImageSize(224, 224)  # any valid H x W (an int or "HxW" is parsed)
    checkpoint: Optional[str] = None
    trust_checkpoint: bool = False
    seed: int = 0
    batches: tuple[int, ...] = DEFAULT_BATCHES
    iters: int = DEFAULT_ITERS
    warmup: int = DEFAULT_WARMUP
    #: Empty means every registered backend (those that cannot run here are listed as skipped).
    backends: tuple[str, ...] = ()
    baseline: str = DEFAULT_BASELINE
    #: CPU threads for PyTorch (intra-op) and onnxruntime (intra-op); None = all CPUs this process may use.
    threads: Optional[int] = None
    #: Stop timing a row after this many seconds (at least 3 timed calls are always made). None = no limit.
    max_seconds_per_row: Optional[float] = None
    #: Time budget of the whole run (``--max-seconds``): each row's limit is its share of what is left. Model
    #: loads and warm-up calls cannot be cut short, so a run may end somewhat later; the report says how long it took.
    max_seconds: Optional[float] = None
    #: Existing artifacts to benchmark instead of exporting/rewriting from the model in this run.
    onnx_path: Optional[str] = None
    iam_onnx_path: Optional[str] = None
    engine_dir: str = "engines"
    #: Explicit engine files: backend name -> path (overrides the ``engine_dir`` lookup).
    engines: tuple[tuple[str, str], ...] = ()
    #: Run each backend in a fresh process (honest per-backend memory). False runs in this process (debugging).
    isolate: bool = True
    progress: bool = False
    #: onnxruntime rows: profiled runs per batch size, after the timed calls (op profile in the report); 0 = none.
    profile_runs: int = DEFAULT_PROFILE_RUNS
    #: After the rows: each ``report.COMPARISONS`` pair whose two rows were measured again in one worker with
    #: interleaved calls (``measurement.time_pair``); the report's comparison ratios come from there.
    interleave: bool = True

    def __post_init__(self) -> None:

        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        object.__setattr__(self, "img_size", check_img_size(self.img_size))
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batches!r} (e.g. --batches 1,8,32)")
        if len(set(self.batches)) != len(self.batches):
            raise ConfigError(f"batch sizes repeat: {self.batches!r}")
        if self.iters < 1:
            raise ConfigError(f"--iters must be at least 1, got {self.iters}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more, got {self.warmup}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; expected some of {', '.join(BACKENDS)}")
        for name, _ in self.engines:
            if name not in TRT_PRECISIONS:
                raise ConfigError(f"--engine {name}=...: {name} is not a TensorRT backend ({', '.join(TRT_PRECISIONS)})")
        parse_baseline(self.baseline)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.profile_runs < 0:
            raise ConfigError(f"--profile-runs must be 0 or more, got {self.profile_runs}")
        if self.max_seconds_per_row is not None and self.max_seconds_per_row <= 0:
            raise ConfigError(f"max_seconds_per_row must be positive, got {self.max_seconds_per_row}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"--max-seconds must be positive, got {self.max_seconds}")

    @classmethod
    def tiny(cls, **overrides) -> "BenchConfig":
        """CI preset: small batches, few calls (still every backend)."""
        base = dict(batches=TINY_BATCHES, iters=TINY_ITERS, warmup=TINY_WARMUP, profile_runs=TINY_PROFILE_RUNS)
        base.update(overrides)
        return cls(**base)

    @property
    def selected_backends(self) -> tuple[str, ...]:
        return self.backends or BACKENDS

    @property
    def cpu_threads(self) -> int:
        return self.threads or available_cpus()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """1-minute load average (other processes competing for the CPUs skew CPU timings; the report records it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def parse_baseline(text: str) -> tuple[str, int]:
    """``"backend:batch"`` -> (backend, batch)."""
    name, _, batch = text.partition(":")
    if name not in BACKENDS or not batch.isdigit() or int(batch) < 1:
        raise ConfigError(
            f"baseline {text!r} is not BACKEND:BATCH with a known backend (e.g. {DEFAULT_BASELINE}); "
            f"backends: {', '.join(BACKENDS)}"
        )
    return name, int(batch)

