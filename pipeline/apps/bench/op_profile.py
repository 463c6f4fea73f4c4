"""Per-op profile of an onnxruntime session (its built-in profiler), summarized per op type.

``profile_session(make_session, batches, runs)`` builds one session with profiling on, and for every input batch
makes one untimed warm-up call and ``runs`` profiled calls. onnxruntime writes one ``model_run`` event per call
and one ``<node>_kernel_time`` event per node execution (``dur`` in microseconds, ``args.op_name`` the op type);
the node events of each profiled call are those inside that call's ``model_run`` interval. The summary per batch:

- ``node_ms``: sum of all node kernel times per call (what the ops cost, without the session's own overhead);
- ``run_ms``: mean ``model_run`` duration (the whole call inside onnxruntime);
- ``iam_ms``, ``iam_share`` = iam_ms / node_ms, ``iam_nodes``, ``ms_per_iam_node``: the ``SGFormerIAM`` nodes
  (custom op: input conversion, the Python body, the host reference, output copy, all inside the node event);
- ``ops``: the op types by time (``ms`` per call, ``share`` of node_ms, ``nodes`` per call), largest first.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.iam import spec

__all__ = ["profile_session", "summarize_events", "TOP_OPS"]

#: Op types listed per profile (the rest is summed into "other").
TOP_OPS = 8


def summarize_events(events: list[dict], runs_per_batch: Sequence[int], batches: Sequence[int]) -> list[dict]:
    """Split onnxruntime profile events into calls and summarize the profiled ones (see module docstring).

    ``runs_per_batch[i]`` profiled calls of batch ``batches[i]`` follow one warm-up call each, in order.
    """
    calls = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                   key=lambda e: e["ts"])
    nodes = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    expected = sum(1 + r for r in runs_per_batch)
    if len(calls) != expected:
        raise ValueError(f"onnxruntime profile has {len(calls)} model_run events, expected {expected}")
    summaries = []
    index = 0
    starts = np.array([e["ts"] for e in nodes], dtype=np.int64)
    for batch, runs in zip(batches, runs_per_batch):
        index += 1  # warm-up call
        per_op: dict[str, float] = {}
        count: dict[str, int] = {}
        run_us = 0.0
        for call in calls[index:index + runs]:
            run_us += float(call["dur"])
            lo = int(np.searchsorted(starts, call["ts"], side="left"))
            hi = int(np.searchsorted(starts, call["ts"] + call["dur"], side="right"))
            for e in nodes[lo:hi]:
                op = str(e.get("args", {}).get("op_name", "?"))
                per_op[op] = per_op.get(op, 0.0) + float(e["dur"])
                count[op] = count.get(op, 0) + 1
        index += runs
        node_us = sum(per_op.values())
        iam_us = per_op.get(spec.PLUGIN_NAME, 0.0)
        iam_nodes = count.get(spec.PLUGIN_NAME, 0) / runs
        ranked = sorted(per_op.items(), key=lambda kv: -kv[1])
        ops = [{"op": op, "ms": us / runs / 1e3, "share": us / node_us if node_us else 0.0, "nodes": count[op] / runs}
               for op, us in ranked[:TOP_OPS]]
        rest = sum(us for _, us in ranked[TOP_OPS:])
        if rest:
            ops.append({"op": "other", "ms": rest / runs / 1e3, "share": rest / node_us,
                        "nodes": sum(count[op] for op, _ in ranked[TOP_OPS:]) / runs})
        summaries.append({
            "batch": int(batch),
            "runs": int(runs),
            "run_ms": run_us / runs / 1e3,
            "node_ms": node_us / runs / 1e3,
            "iam_ms": iam_us / runs / 1e3,
            "iam_share": iam_us / node_us if node_us else 0.0,
            "iam_nodes": iam_nodes,
            "ms_per_iam_node": (iam_us / runs / 1e3 / iam_nodes) if iam_nodes else None,
            "ops": ops,
        })
    return summaries


def profile_session(make_session: Callable[[object], object], batches: Sequence[np.ndarray], runs: int) -> list[dict]:
    """Profile ``runs`` calls per input batch on a session from ``make_session(options)`` (profiling enabled)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="sgformer-ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = make_session(options)
        input_name = session.get_inputs()[0].name
        output_name = session.get_outputs()[0].name
        for images in batches:
            for _ in range(1 + runs):
                session.run([output_name], {input_name: images})
        path = Path(session.end_profiling())
        events = json.loads(path.read_text())
    del session
    return summarize_events(events, [runs] * len(batches), [int(b.shape[0]) for b in batches])
