"""compute-sanitizer (memcheck, racecheck) over small cases of every layout, through the kernel harness.

The worker under the sanitizer uses numpy and ctypes only (torch's CUDA libraries would be loaded under the tool);
the parent computes the cases' layouts and reads the tool's verdict from the worker's exit status and output."""
from __future__ import annotations

import ctypes
import json
import re

import numpy as np

from pipeline.iam.host import iam_host
from pipeline.iam.layout import iam_layout
from scripts.gpu_check.common import find_tool
from scripts.gpu_check.runner import Run

SANITIZER_EXIT = 86
#: Sanitizer cases (sr, side, channels, batch): sr 8 at 28x28 (3 tiers, k up to 196) and 56x56 (s stage 1 at 224),
#: sr 4 and sr 2 at 14x14; C > 128 once (two channel slices).
SANITIZER_CASES = ((8, 28, 160, 2), (8, 56, 64, 1), (4, 14, 64, 2), (2, 14, 64, 2))


def sanitizer_cases() -> list[dict]:
    """The cases with their layouts, computed in the parent (the worker under the sanitizer never imports torch)."""
    cases = []
    for sr, side, channels, batch in SANITIZER_CASES:
        layout = iam_layout(sr, side, side)
        cases.append({"sr": sr, "side": side, "channels": channels, "batch": batch,
                      "group_sizes": list(layout.group_sizes), "tier_sizes": list(layout.tier_sizes)})
    return cases


def _bind(lib: ctypes.CDLL) -> None:
    f32, u16, i32 = (ctypes.POINTER(t) for t in (ctypes.c_float, ctypes.c_uint16, ctypes.c_int))
    common = [ctypes.c_int] * 4 + [i32, i32, ctypes.c_int]
    lib.sgformer_iam_cuda_fp32.argtypes = [f32, f32, f32, f32, *common, f32, f32]
    lib.sgformer_iam_cuda_fp16.argtypes = [u16, f32, f32, f32, *common, u16, u16]
    lib.sgformer_iam_cuda_last_error.restype = ctypes.c_char_p


def _run_case(lib: ctypes.CDLL, spec: dict, dtype, rng) -> dict:
    """One case through the harness, compared bit for bit with the host reference."""
    sr, side, channels, batch = spec["sr"], spec["side"], spec["channels"], spec["batch"]
    group_sizes, tier_sizes = spec["group_sizes"], spec["tier_sizes"]
    out_tokens = sum(t // g for g, t in zip(group_sizes, tier_sizes))
    tokens = rng.standard_normal((batch, side * side, channels)).astype(dtype)
    importance = (rng.integers(0, 6, (batch, side * side)) / 8.0).astype(np.float32)
    weight = rng.uniform(-0.2, 0.2, sum(group_sizes)).astype(np.float32)
    bias = rng.uniform(-0.2, 0.2, len(group_sizes)).astype(np.float32)
    row = np.empty((batch, out_tokens, channels), dtype)
    col = np.empty_like(row)
    groups, tiers = np.asarray(group_sizes, np.int32), np.asarray(tier_sizes, np.int32)
    f32, i32 = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)
    ptr = f32 if dtype == np.float32 else ctypes.POINTER(ctypes.c_uint16)
    fn = lib.sgformer_iam_cuda_fp32 if dtype == np.float32 else lib.sgformer_iam_cuda_fp16
    status = fn(tokens.ctypes.data_as(ptr), importance.ctypes.data_as(f32), weight.ctypes.data_as(f32),
                bias.ctypes.data_as(f32), batch, side, side, channels, groups.ctypes.data_as(i32),
                tiers.ctypes.data_as(i32), len(groups), row.ctypes.data_as(ptr), col.ctypes.data_as(ptr))
    case = {"sr": sr, "side": side, "channels": channels, "batch": batch, "dtype": np.dtype(dtype).name,
            "status": int(status)}
    if status != 0:
        case.update(error=lib.sgformer_iam_cuda_last_error().decode(), passed=False)
    else:
        want = iam_host(tokens, importance, weight, bias, side, side, group_sizes, tier_sizes)
        case["passed"] = bool(np.array_equal(row, want[0]) and np.array_equal(col, want[1]))
    return case


def worker_sanitize_case(args) -> dict:
    """Small cases of every layout through the kernel harness, each dtype, each sort path the harness offers."""
    lib = ctypes.CDLL(args.harness)
    _bind(lib)
    # Harnesses with a path switch (fused block sort / CUB multi-launch): run every case on each path.
    set_path = getattr(lib, "sgformer_iam_cuda_set_path", None)
    paths = {"fused": 0, "cub": 1} if set_path is not None else {"auto": None}
    rng = np.random.default_rng(0)
    rows = []
    for spec in json.loads(args.cases):
        for dtype in (np.float32, np.float16):
            for path, code in paths.items():
                if set_path is not None:
                    set_path(code)
                rows.append({**_run_case(lib, spec, dtype, rng), "path": path})
    if set_path is not None:
        set_path(-1)
    failures = sum(not r["passed"] for r in rows)
    return {"passed": failures == 0, "rows": rows, "summary": f"{len(rows) - failures}/{len(rows)} cases ok "
                                                              f"(paths: {', '.join(paths)})"}


def step_sanitizer(run: Run, tool: str, timeout: float) -> dict:
    """The sanitize-case worker under ``compute-sanitizer --tool TOOL``; skip where the tool or harness is missing
    or the tool refuses the device, fail on any reported error."""
    sanitizer = find_tool("compute-sanitizer")
    if sanitizer is None:
        return {"status": "skip", "summary": "compute-sanitizer not found (CUDA toolkit bin/ not on PATH)"}
    harness = run.env.get("SGFORMER_KERNEL_HARNESS_LIB")
    if not harness:
        return {"status": "skip", "summary": "the kernel harness was not built (see step build)"}
    prefix = [sanitizer, "--tool", tool, "--error-exitcode", str(SANITIZER_EXIT)]
    if tool == "memcheck":
        prefix += ["--leak-check", "full"]
    result = run.worker(f"sanitize-case:{tool}", timeout,
                        ["--harness", harness, "--cases", json.dumps(sanitizer_cases())], prefix=prefix)
    output = result.pop("output_tail", "")
    # The worker's output is only kept on failure; the sanitizer's verdict is parsed from it.
    errors = re.search(r"ERROR SUMMARY: (\d+) error", output)
    if result.get("passed") and result["returncode"] == 0:
        result["summary"] = f"{tool}: 0 errors; {result.get('summary', '')}"
        return result
    refused = re.search(r"(not supported|unsupported|Unable to|Could not|permission|refused)[^\n]*", output, re.I)
    if result["returncode"] not in (0, 1, SANITIZER_EXIT) and refused and not errors:
        return {"status": "skip", "summary": f"compute-sanitizer {tool} refused this device: {refused.group(0)[:300]}",
                "output_tail": output}
    result["output_tail"] = output
    result["summary"] = (f"{tool}: {errors.group(1) if errors else '?'} errors reported (exit {result['returncode']}); "
                         f"{result.get('summary', result.get('error', ''))}")
    result["passed"] = False
    result.pop("status", None)
    return result
