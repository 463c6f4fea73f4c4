"""The report: ``gpu-check.json`` (everything) and ``gpu-check.md`` (tables for people), written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from scripts.gpu_check.common import DRY_STATUS

NOT_PROVEN = [
    "TensorRT: no engine is built or run (the machine has no TensorRT); the plugin's IPluginV3 glue, enqueue, "
    "serialization and the engine's parity are untested here",
    "fp16 and int8 engines, calibration on the GPU, the pycuda runtime and the C++ example app",
    "other GPU architectures than the local one (Jetson Orin sm_87, Ada, Blackwell)",
]
#: Per-case row columns of the issue-25 cases (graph capture, second context, offset view).
CASE_COLUMNS = ["case", "shape", "dtype", "executed_on", "bit_mismatches", "detail", "passed"]
#: (step, title, columns) of the detail tables, in report order.
SECTIONS = [
    ("op-parity", "sgformer::iam vs host reference (bit mismatches) and vs reference path (error / bound)",
     ["shape", "dtype", "stream", "device", "bit_mismatches", "vs_reference_error_over_bound", "passed"]),
    ("graph-capture", "CUDA-graph capture of sgformer::iam (replay vs eager)", CASE_COLUMNS),
    ("second-context", "sgformer::iam in a second CUDA context and after a context reset", CASE_COLUMNS),
    ("offset-view", "sgformer::iam on offset views (misaligned for the vector width) vs contiguous",
     CASE_COLUMNS + ["vector_width_aligned", "vector_width_offset"]),
    ("model-parity", "Model logits", ["variant", "res", "batch", "comparison", "max_abs", "atol", "top1_agreement",
                                      "cosine_min", "passed"]),
    ("op-timing", "IAM op timings (ms per call)", ["shape", "batch", "device", "fused_ms", "reference_ms", "speedup"]),
    ("model-timing", "Whole model, PyTorch eager (ms per call)", ["variant", "img_size", "batch", "device", "fused_ms",
                                                                 "reference_ms", "ratio"]),
]


def iam_share(op_rows: list[dict], model_rows: list[dict]) -> list[dict]:
    """Share of the model's time spent in IAM ops: sum over significance blocks of the op time / model time."""
    shares = []
    for m in model_rows:
        per = {"fused": 0.0, "reference": 0.0}
        count = 0
        for op in op_rows:
            if m["variant"] in op["variants"] and op["res"] == m["img_size"] and op["batch"] == m["batch"]:
                n = op["blocks"][m["variant"]]
                count += n
                per["fused"] += n * op["fused_ms"]
                per["reference"] += n * op["reference_ms"]
        if count:
            shares.append({"variant": m["variant"], "img_size": m["img_size"], "batch": m["batch"], "iam_ops": count,
                           "iam_fused_ms": per["fused"], "iam_reference_ms": per["reference"],
                           "share_fused": per["fused"] / m["fused_ms"],
                           "share_reference": per["reference"] / m["reference_ms"]})
    return shares


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return "/".join(map(str, v))
    return str(v).replace("|", "/")


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines + [""]


def _header(report: dict) -> list[str]:
    env = report["environment"]
    gpu = env.get("gpus", [{}])[0] if env.get("gpus") else {}
    return [f"# gpu-check ({report['mode']})", "",
            f"{report['verdict']} -- {report['started']}, {report['seconds']:.0f} s of a {report['budget_s']:.0f} s "
            f"budget, command `{report['command']}`", "",
            "| what | value |", "| --- | --- |",
            f"| GPU | {gpu.get('name', env.get('torch_device', 'none'))} |",
            f"| compute capability | {gpu.get('compute_cap', env.get('torch_capability', '-'))} |",
            f"| driver | {gpu.get('driver', '-')} |",
            f"| nvcc | {env.get('nvcc', '-')} |",
            f"| torch (CUDA) | {env['packages'].get('torch')} ({env.get('torch_cuda')}) |",
            f"| python | {env['python']} ({env['python_executable']}) |",
            "| packages | " + ", ".join(f"{k} {v or 'missing'}" for k, v in env["packages"].items()) + " |",
            "| tools | " + ", ".join(f"{k} {'yes' if v else 'missing'}" for k, v in env["tools"].items()) + " |", ""]


def render_markdown(report: dict) -> str:
    lines = _header(report) + ["## Steps", ""]
    lines += _table(report["steps"], ["name", "status", "seconds", "summary"])
    if any(s["status"] == DRY_STATUS for s in report["steps"]):
        lines += [f"Status `{DRY_STATUS}`: the case's CPU part ran and passed; it was not executed on a GPU.", ""]
    by_name = {s["name"]: s for s in report["steps"]}
    for name, title, columns in SECTIONS:
        step = by_name.get(name)
        if step and step["details"].get("rows"):
            lines += [f"## {title}", ""] + _table(step["details"]["rows"], columns)
    if report.get("iam_share"):
        lines += ["## IAM share of model time (sum of op timings over the significance blocks / model time)", ""]
        lines += _table(report["iam_share"], ["variant", "img_size", "batch", "iam_ops", "iam_fused_ms",
                                              "iam_reference_ms", "share_fused", "share_reference"])
    for step in (s for s in report["steps"] if s["status"] == "fail"):
        tail = step["details"].get("output_tail") or step["details"].get("traceback") or step["details"].get("error")
        if tail:
            lines += [f"## {step['name']} output (tail)", "", "```", str(tail)[-3000:], "```", ""]
    if report.get("not_proven"):
        lines += ["## Not proven by this run", ""] + [f"- {x}" for x in report["not_proven"]] + [""]
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu-check.json", json.dumps(report, indent=1, default=str)),
                       ("gpu-check.md", render_markdown(report))):
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out / name)
