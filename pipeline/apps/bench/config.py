"""Re-export of :mod:`pipeline.core.bench_config` (the benchmark settings live in the core so that the ``bench``
verb's options import no torch)."""
from __future__ import annotations

from pipeline.core.bench_config import (  # noqa: F401
    BACKENDS,
    DEFAULT_BASELINE,
    DEFAULT_BATCHES,
    DEFAULT_ITERS,
    DEFAULT_PROFILE_RUNS,
    DEFAULT_WARMUP,
    TINY_BATCHES,
    TINY_ITERS,
    TINY_PROFILE_RUNS,
    TINY_WARMUP,
    TRT_PRECISIONS,
    BenchConfig,
    available_cpus,
    load_average,
    parse_baseline,
)
from pipeline.core.bench_config import __all__  # noqa: F401
