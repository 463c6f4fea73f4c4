"""Benchmark report: the record of one run (``BenchReport``), ratios, comparisons, and JSON / Markdown / PNG output."""
from __future__ import annotations

import io
import logging
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.variants import ImageSize
from pipeline.apps.bench.config import BenchConfig, available_cpus, load_average, parse_baseline
from pipeline.apps.bench.backends import gpu_name
from pipeline.apps.bench.backends import BACKENDS
from pipeline.store.io import write_bytes, write_json

__all__ = ["BenchReport", "SCHEMA", "COMPARISONS", "render_markdown", "render_plot", "write_report"]

_logger = logging.getLogger("pipeline.apps.bench")

SCHEMA = "sgformer-trt.bench/3"

#: Pairs of rows compared directly in the report, at every batch size both measured:
#: (candidate, reference, what the ratio says). Extra rows add their pair here.
COMPARISONS = (
    ("ort-cpu-iam", "ort-cpu", "rewritten graph (SGFormerIAM op) vs exported graph, onnxruntime CPU"),
    ("pytorch-cpu-fused", "pytorch-cpu", 'PyTorch eager, iam="fused" (sgformer::iam op) vs "reference", CPU'),
    ("pytorch-cuda-fused", "pytorch-cuda", 'PyTorch eager, iam="fused" (plugin kernel) vs "reference", CUDA'),
    ("trt-fp32", "trt-topk", "plugin engine vs native-TopK engine, fp32"),
)


@dataclass
class BenchReport:
    """Everything one run measured. ``to_dict()`` is the JSON document."""

    config: dict
    environment: dict
    baseline: dict
    rows: list[dict]
    backends: list[dict]
    skipped: list[dict]
    failed: list[dict]
    created: str
    memory_note: str = ""
    command: str = ""
    #: onnxruntime per-op profiles: one entry per (backend, batch), see ``op_profile.summarize_events``.
    op_profiles: list[dict] = field(default_factory=list)
    #: ``COMPARISONS`` evaluated on this run's rows.
    comparisons: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}

    @property
    def title(self) -> str:
        return f"SG-Former-{self.config['variant']} @ {ImageSize.parse(self.config['img_size'])}"


def environment(config: BenchConfig) -> dict:
    """Machine, library versions and the load average now (the report is stamped with it at start and end)."""
    import onnxruntime
    import torch


    cpu = platform.processor() or platform.machine()
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    env = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus_available": available_cpus(),
        "threads": config.cpu_threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "gpu": gpu_name(),
        "loadavg_1min_at_start": load_average(),
    }
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except Exception:
        env["tensorrt"] = None
    return env


def attach_ratios(rows: list[dict], baseline: dict) -> None:
    for row in rows:
        row["ratios"] = {
            "throughput": row["throughput_ips"] / baseline["throughput_ips"],
            "latency": row["latency_ms"]["median"] / baseline["latency_ms"]["median"],
            "memory": (row["peak_memory_bytes"] / baseline["peak_memory_bytes"]
                       if baseline["peak_memory_bytes"] > 0 else None),
        }


def pick_baseline(config: BenchConfig, rows: list[dict]) -> dict:

    name, batch = parse_baseline(config.baseline)
    for row in rows:
        if row["backend"] == name and row["batch"] == batch:
            return {"backend": name, "batch": batch, "requested": config.baseline, "fallback": False, "row": row}
    # The requested baseline did not run (not selected, skipped or failed): use the first CPU row at the smallest batch.
    fallback = min(rows, key=lambda r: (r["device"] != "cpu", r["batch"], list(BACKENDS).index(r["backend"])))
    _logger.warning("baseline %s was not measured; using %s batch %d instead", config.baseline,
                    fallback["backend"], fallback["batch"])
    return {"backend": fallback["backend"], "batch": fallback["batch"], "requested": config.baseline,
            "fallback": True, "row": fallback}


# ---------------------------------------------------------------------------------------------- outputs


def compare_rows(rows: list[dict], interleaved: Optional[list[dict]] = None) -> list[dict]:
    """``COMPARISONS`` per batch size: candidate / reference throughput and median latency.

    ``sequential_*`` divide the two rows of the main table (measured one after the other). ``interleaved`` (from
    ``measurement.time_pair``, when the run made it) measured both in one worker, calls alternating, and is the
    figure to read: ``throughput_ratio`` / ``latency_ratio`` are the interleaved ones when present, else the
    sequential ones (``method`` says which).
    """
    lookup = {(r["backend"], r["batch"]): r for r in rows}
    paired = {(p["candidate"], p["reference"], p["batch"]): p for p in interleaved or ()}
    out = []
    for candidate, reference, what in COMPARISONS:
        for batch in sorted({r["batch"] for r in rows}):
            a, b = lookup.get((candidate, batch)), lookup.get((reference, batch))
            if a is None or b is None:
                continue
            entry = {
                "candidate": candidate, "reference": reference, "batch": batch, "what": what,
                "sequential_throughput_ratio": a["throughput_ips"] / b["throughput_ips"],
                "sequential_latency_ratio": a["latency_ms"]["median"] / b["latency_ms"]["median"],
                "interleaved": None,
            }
            pair = paired.get((candidate, reference, batch))
            if pair is not None:
                entry["interleaved"] = {k: v for k, v in pair.items() if k not in ("candidate", "reference", "batch")}
                entry.update(method="interleaved", throughput_ratio=pair["throughput_ratio"],
                             latency_ratio=pair["latency_ratio"])
            else:
                entry.update(method="sequential", throughput_ratio=entry["sequential_throughput_ratio"],
                             latency_ratio=entry["sequential_latency_ratio"])
            out.append(entry)
    return out


LOAD_WARNING = "other processes competed for the CPUs: CPU timings are pessimistic"


def overloaded(env: dict) -> bool:
    """The 1-minute load average exceeded the CPUs available (+0.5) at the start or the end of the run."""
    return max(env.get("loadavg_1min_at_start") or 0, env.get("loadavg_1min_at_end") or 0) > 0.5 + env["cpus_available"]


def _fmt_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render_markdown(report: BenchReport) -> str:
    """The report as Markdown: a header that states machine and baseline, one table, skipped/failed lists."""
    env, cfg, base = report.environment, report.config, report.baseline
    weights = cfg["checkpoint"] or f"random-init (seed {cfg['seed']})"
    lines = [
        f"# Benchmark: {report.title}",
        "",
        f"- created {report.created} on `{env['host']}`: {env['cpu']}, {env['threads']} threads "
        f"({env['cpus_available']} CPUs available), GPU: {env['gpu'] or 'none'}; 1-min load average "
        f"{env['loadavg_1min_at_start']} at start, {env['loadavg_1min_at_end']} at end"
        + (f" (**{LOAD_WARNING}**)" if overloaded(env) else ""),
        f"- torch {env['torch']}, onnxruntime {env['onnxruntime']}, TensorRT {env['tensorrt'] or 'not installed'}, "
        f"Python {env['python']}",
        f"- weights: {weights}; "
        f"{cfg['warmup']} warmup + {cfg['iters']} timed calls per row; inputs random, seeded",
        f"- **baseline: {base['backend']} batch {base['batch']}** (median {base['median_ms']:.2f} ms, "
        f"{base['throughput_ips']:.2f} img/s, {base['peak_memory_bytes'] / 2**20:.1f} MiB)"
        + (f"; the requested baseline {base['requested']} was not measured" if base["fallback"] else ""),
    ]
    if report.command:
        lines.append(f"- command: `{report.command}`")
    lines += [
        "",
        "| backend | device | batch | median ms | p90 ms | p99 ms | img/s | throughput vs base | latency vs base "
        "| peak mem MiB | mem vs base |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.rows:
        lat, ratios = row["latency_ms"], row["ratios"]
        lines.append(
            f"| {row['backend']} | {row['device']} | {row['batch']} | {lat['median']:.2f} | {lat['p90']:.2f} "
            f"| {lat['p99']:.2f} | {row['throughput_ips']:.2f} | {_fmt_ratio(ratios['throughput'])} "
            f"| {_fmt_ratio(ratios['latency'])} | {row['peak_memory_bytes'] / 2**20:.1f} | {_fmt_ratio(ratios['memory'])} |"
        )
    if report.comparisons:
        lines += ["", "Same-run comparisons (candidate / reference; throughput > 1 and latency < 1 favour the candidate). "
                  "Interleaved: both loaded in one worker, calls alternating, after the rows above; sequential: the "
                  "two rows of the table above (measured minutes apart, so drift between them is in the ratio):",
                  "", "| candidate | reference | batch | throughput ratio | median latency ratio | method | rounds "
                  "| per-round ratio min..max | sequential throughput ratio |",
                  "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: |"]
        for c in report.comparisons:
            pair = c.get("interleaved")
            rounds = "" if pair is None else str(pair["rounds"])
            spread = "" if pair is None else f"{pair['round_ratio_min']:.2f}..{pair['round_ratio_max']:.2f}"
            lines.append(f"| {c['candidate']} | {c['reference']} | {c['batch']} | {c['throughput_ratio']:.2f}x "
                         f"| {c['latency_ratio']:.2f}x | {c.get('method', 'sequential')} | {rounds} | {spread} "
                         f"| {c.get('sequential_throughput_ratio', c['throughput_ratio']):.2f}x |")
    if report.op_profiles:
        lines += ["", "onnxruntime op profile (profiled calls after the timed ones; node time = sum of kernel times; "
                  "IAM = the SGFormerIAM nodes, bridge included):", "",
                  "| backend | batch | calls | run ms | node ms | IAM nodes | ms per IAM node | IAM share | top ops |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for p in report.op_profiles:
            top = ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in p["ops"][:4])
            per_node = "n/a" if p["ms_per_iam_node"] is None else f"{p['ms_per_iam_node']:.2f}"
            lines.append(f"| {p['backend']} | {p['batch']} | {p['runs']} | {p['run_ms']:.2f} | {p['node_ms']:.2f} "
                         f"| {p['iam_nodes']:.0f} | {per_node} | {100 * p['iam_share']:.1f}% | {top} |")
    lines += ["", "Backends measured:", ""]
    for b in report.backends:
        diff = b["max_abs_logit_diff_vs_pytorch"]
        lines.append(
            f"- `{b['backend']}`: {b['description']}; load {b['load_s']:.2f} s; "
            f"max abs logit diff vs PyTorch {'n/a' if diff is None else f'{diff:.2e}'}; memory: {b['memory_kind']}"
        )
    if report.skipped:
        lines += ["", "Skipped (no numbers invented):", ""]
        lines += [f"- `{s['backend']}` ({s['description']}): {s['reason']}" for s in report.skipped]
    if report.failed:
        lines += ["", "Failed:", ""]
        lines += [f"- `{f['backend']}` ({f['stage']}): {f['error']}" for f in report.failed]
    lines += [
        "",
        "Latency: one call with host input and host output, after warmup; p99 is interpolated when there are fewer "
        "than 100 calls. Throughput: batch x calls / total time of the timed calls. Memory: see each backend above.",
        "",
    ]
    return "\n".join(lines)


def render_plot(report: BenchReport) -> bytes:
    """PNG: throughput (img/s) and peak memory per backend, grouped by batch size. Uses Agg, no pyplot state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PipelineError(f"matplotlib is needed for the benchmark plot ({exc}); pip install matplotlib") from None

    backends = list(dict.fromkeys(r["backend"] for r in report.rows))
    batches = sorted({r["batch"] for r in report.rows})
    lookup = {(r["backend"], r["batch"]): r for r in report.rows}
    fig = Figure(figsize=(16, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, width_ratios=(1, 1, 0.9))
    width = 0.8 / max(len(backends), 1)
    x = np.arange(len(batches))
    for i, name in enumerate(backends):
        thr = [lookup[(name, b)]["throughput_ips"] if (name, b) in lookup else 0.0 for b in batches]
        mem = [lookup[(name, b)]["peak_memory_bytes"] / 2**20 if (name, b) in lookup else 0.0 for b in batches]
        offset = (i - (len(backends) - 1) / 2) * width
        bars = axes[0].bar(x + offset, thr, width, label=name)
        for rect, b in zip(bars, batches):
            if (name, b) in lookup:
                axes[0].annotate(_fmt_ratio(lookup[(name, b)]["ratios"]["throughput"]),
                                 (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                                 ha="center", va="bottom", fontsize=7)
        axes[1].bar(x + offset, mem, width, label=name)
    base = report.baseline
    axes[0].set_title(f"throughput (labels: x {base['backend']} b{base['batch']}, sequential rows)", fontsize=10)
    axes[0].set_ylabel("images / s")
    axes[1].set_title("peak memory above process baseline", fontsize=10)
    axes[1].set_ylabel("MiB")
    for ax in axes[:2]:
        ax.set_xticks(x, [f"batch {b}" for b in batches])
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    _plot_comparisons(axes[2], report.comparisons)
    env = report.environment
    fig.suptitle(f"{report.title}: {env['gpu'] or env['cpu']}, {env['threads']} threads; 1-min load "
                 f"{env.get('loadavg_1min_at_start')} -> {env.get('loadavg_1min_at_end')}", fontsize=11)
    if overloaded(env):
        fig.text(0.5, 0.005, f"WARNING: {LOAD_WARNING}", ha="center", va="bottom", color="red", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_comparisons(ax, comparisons: list[dict]) -> None:
    """The paired ratios (the figures to read): candidate / reference throughput per batch, interleaved when
    measured (solid), else from the sequential rows (hatched)."""
    ax.set_title("same-run throughput ratios (candidate / reference)", fontsize=10)
    if not comparisons:
        ax.text(0.5, 0.5, "no compared pair measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels = [f"{c['candidate']} / {c['reference']} b{c['batch']}" for c in comparisons]
    values = [c["throughput_ratio"] for c in comparisons]
    y = np.arange(len(values))
    bars = ax.barh(y, values, color=["tab:blue" if c.get("method") == "interleaved" else "tab:gray"
                                     for c in comparisons])
    for rect, c in zip(bars, comparisons):
        if c.get("method") != "interleaved":
            rect.set_hatch("//")
        ax.annotate(f"{c['throughput_ratio']:.2f}x ({c.get('method', 'sequential')})",
                    (rect.get_width(), rect.get_y() + rect.get_height() / 2), va="center", fontsize=7,
                    xytext=(3, 0), textcoords="offset points")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [1.0]) * 1.45)
    ax.set_xlabel("x reference (> 1: candidate faster)")
    ax.grid(axis="x", alpha=0.3)


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """Write JSON, Markdown and PNG (each atomically) into ``out_dir``; returns kind -> path."""

    out_dir = Path(out_dir)
    stem = f"bench-{report.config['variant']}-{ImageSize.parse(report.config['img_size'])}"
    paths = {
        "json": write_json(out_dir / f"{stem}.json", report.to_dict()),
        "md": write_bytes(out_dir / f"{stem}.md", render_markdown(report).encode()),
        "png": write_bytes(out_dir / f"{stem}.png", render_plot(report)),
    }
    for kind, path in paths.items():
        _logger.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return paths
