#!/usr/bin/env python3
"""One-shot GPU acceptance run of sgformer-trt (``make gpu-check``): everything a CUDA machine without TensorRT
can prove, in one command of at most 6 minutes, into ``gpu-check.json`` and ``gpu-check.md``.

Usage::

    python3 scripts/gpu_check.py --out DIR                  # full run on a CUDA machine
    python3 scripts/gpu_check.py --out DIR --dry-run --arch 90   # no GPU needed: build for sm_90, CPU stand-ins

Runs with the machine's own ``python3`` and packages (no venv, no pip, no network). Steps, each in try/except
with its own time budget (a step that would not fit the remaining budget is skipped and says so):

 1. environment   GPU name, driver, compute capability, CUDA, nvcc, torch, optional packages and tools
 2. build         libsgformer_iam_torch.so + the kernel test harness for the local GPU's architecture
                  (nvcc, no TensorRT) and the C++ host reference
 3. pytest-gpu    ``pytest -m gpu tests/plugins/test_iam_kernel_gpu.py``: kernel vs host reference, bit-exact
 4. memcheck / racecheck   compute-sanitizer on a small case of every layout (sr 8/4/2, fp32 and fp16)
 5. op-parity     sgformer::iam on CUDA (default and a side stream) vs the op on CPU (host reference), bit-exact,
                  every IAM shape of s/m/b at 224 and 448, fp32 and fp16; fp32 also vs the reference path
                  within the derived rounding bound
 6. model-parity  SG-Former s and b: CUDA fused vs CUDA reference vs CPU reference logits (stated tolerances)
 7. op-timing     CUDA events, every IAM shape at batch 1 and 32: fused kernel vs reference path
 8. model-timing  PyTorch CUDA eager, whole model, fused vs reference at batch 1 and 32; IAM share of the time

Exit status: 1 if any step failed (a parity failure, a failed build or test), else 0. Without a GPU the script
says so and runs the dry run (exit 0 when the build for ``--arch`` and the CPU stand-ins pass).
Steps 5-8 and the sanitizer case run in child processes (``--worker NAME``), so a crash or a hung kernel in one
step is recorded and the others still run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

_logger = logging.getLogger("gpu_check")

SCHEMA = "sgformer-trt.gpu-check/1"
TOTAL_BUDGET_S = 360.0
#: A dry run (CI, a shared CPU machine) gets this factor more time per step and in total: it only has to finish.
DRY_RUN_SLACK = 3.0
REPORT_RESERVE_S = 5.0
#: Per-step time limits (seconds); the sum is above the total on purpose: most steps take far less.
STEP_BUDGET_S = {
    "environment": 20, "build": 180, "pytest-gpu": 120, "memcheck": 60, "racecheck": 60,
    "op-parity": 90, "model-parity": 120, "op-timing": 90, "model-timing": 100,
}
#: A step is only started with at least this much of the total budget left.
STEP_MIN_S = {"build": 30, "pytest-gpu": 20, "memcheck": 10, "racecheck": 10, "op-parity": 15, "model-parity": 20,
              "op-timing": 15, "model-timing": 20}
OPTIONAL_PACKAGES = ("numpy", "torch", "pytest", "onnx", "onnxruntime", "cupy")
#: Logit tolerances (fp32): the project's ONNX-vs-PyTorch table (pipeline/verify.py DEFAULT_ATOL; 448: README).
LOGIT_ATOL = {224: 1e-4, 448: 5e-4}
SANITIZER_EXIT = 86
#: Steps that need the GPU itself (listed as not run in a dry run; the CPU stand-ins of the others still run).
GPU_ONLY_STEPS = ("pytest-gpu", "memcheck", "racecheck")


# ---------------------------------------------------------------------------------------------- shapes


def iam_shapes(variants=("s", "m", "b"), resolutions=(224, 448)) -> list[dict]:
    """Every IAM op shape of the model (stage 1-3 significance blocks), merged where variants share it."""
    from pipeline.iam.reference import iam_layout
    from pipeline.model.sgformer import VARIANTS

    shapes: dict[tuple, dict] = {}
    for variant in variants:
        args = VARIANTS[variant]
        for stage, sr in enumerate(args.get("sr_ratios", (8, 4, 2, 1))[:3], start=1):
            for res in resolutions:
                side = res // 4 // 2 ** (stage - 1)
                channels = int(args["embed_dims"][stage - 1])
                key = (channels, side, sr)
                entry = shapes.setdefault(key, {"variants": [], "stage": stage, "res": res, "channels": channels,
                                                "side": side, "sr": sr, "layout": iam_layout(sr, side, side),
                                                "blocks": {}})
                entry["variants"].append(variant)
                entry["blocks"][variant] = int(args["depths"][stage - 1]) // 2
    return list(shapes.values())


def _shape_id(shape: dict) -> str:
    return f"{'/'.join(shape['variants'])} stage{shape['stage']} {shape['res']} C{shape['channels']} N{shape['side'] ** 2}"


# ---------------------------------------------------------------------------------------------- workers (children)


def _device(args) -> str:
    return "cuda" if args.device == "cuda" else "cpu"


def _merge_inputs(shape: dict, batch: int, dtype, device: str, seed: int):
    import torch

    layout = shape["layout"]
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, layout.num_tokens, shape["channels"], generator=gen).to(dtype)
    # Few distinct values: many ties, so the tie order is exercised.
    importance = (torch.randint(0, 6, (batch, layout.num_tokens), generator=gen) / 8.0).to(torch.float32)
    weights = [(torch.rand(k, generator=gen) - 0.5) / k ** 0.5 for k in layout.group_sizes]
    biases = [torch.randn(1, generator=gen) * 0.1 for _ in layout.group_sizes]
    move = lambda t: t.to(device)  # noqa: E731
    return move(tokens), move(importance), [move(w) for w in weights], [move(b) for b in biases]


def worker_op_parity(args) -> dict:
    """sgformer::iam on the device vs on the CPU (host reference): bit-exact; fp32 also vs the reference path."""
    import torch

    from pipeline.iam.reference import iam_aggregate
    from pipeline.iam.torch_op import fused_vs_reference_bound, iam_fused

    device = _device(args)
    rows, failures = [], 0
    shapes = iam_shapes(args.variants, args.resolutions)
    for i, shape in enumerate(shapes):
        layout = shape["layout"]
        for dtype in (torch.float32, torch.float16):
            tokens, importance, weights, biases = _merge_inputs(shape, 2, dtype, "cpu", seed=i)
            want = iam_fused(tokens, importance, weights, biases, layout)
            dev = [t.to(device) for t in (tokens, importance)]
            dw, db = [w.to(device) for w in weights], [b.to(device) for b in biases]
            streams = ["current"] + (["side"] if device == "cuda" else [])
            for which in streams:
                if which == "side":
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        got = iam_fused(dev[0], dev[1], dw, db, layout)
                    torch.cuda.current_stream().wait_stream(side)
                else:
                    got = iam_fused(dev[0], dev[1], dw, db, layout)
                got = [g.cpu() for g in got]
                bits = torch.int16 if dtype == torch.float16 else torch.int32
                mismatches = sum(int((g.view(bits) != w.view(bits)).sum()) for g, w in zip(got, want))
                row = {"shape": _shape_id(shape), "dtype": str(dtype).replace("torch.", ""), "batch": 2,
                       "stream": which, "device": device, "bit_mismatches": mismatches, "passed": mismatches == 0}
                if dtype == torch.float32 and which == "current":
                    ref = iam_aggregate(dev[0], dev[1], dw, db, layout)
                    mags = iam_aggregate(dev[0].abs(), dev[1], [w.abs() for w in dw], [b.abs() for b in db], layout)
                    bound = fused_vs_reference_bound(max(layout.group_sizes)) * 1.01
                    ratio = max(float(((g.to(device) - r).abs() / (bound * m).clamp_min(1e-30)).max())
                                for g, r, m in zip(got, ref, mags))
                    row["vs_reference_error_over_bound"] = ratio
                    row["passed"] = row["passed"] and ratio <= 1.0
                failures += not row["passed"]
                rows.append(row)
    return {"passed": failures == 0, "rows": rows,
            "summary": f"{len(rows) - failures}/{len(rows)} op runs bit-exact vs the host reference"
                       + ("" if device == "cuda" else " (CPU stand-in: op vs op on CPU)")}


def _images(batch: int, img_size: int, seed: int):
    import numpy as np
    import torch

    try:
        from pipeline.data.images import sample_images

        pairs = sample_images(batch, img_size)
        return torch.from_numpy(np.stack([p[1] for p in pairs])), "bundled sample photos"
    except Exception as exc:  # noqa: BLE001 - optional package (scikit-image) or data missing: fall back
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, img_size, img_size, generator=gen), f"seeded normal noise ({type(exc).__name__})"


def _compare(name: str, got, want, atol: float) -> dict:
    import torch

    got, want = got.double().cpu(), want.double().cpu()
    diff = (got - want).abs()
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=1).min().item()
    top1 = (got.argmax(1) == want.argmax(1)).double().mean().item()
    passed = bool(torch.isfinite(got).all()) and diff.max().item() <= atol and top1 == 1.0
    return {"comparison": name, "max_abs": diff.max().item(), "mean_abs": diff.mean().item(), "atol": atol,
            "top1_agreement": top1, "cosine_min": cosine, "passed": passed}


def worker_model_parity(args) -> dict:
    """Whole-model logits: device fused vs device reference vs CPU reference (and CPU fused vs CPU reference)."""
    import torch

    from pipeline.model.sgformer import create_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = _device(args)
    rows, failures = [], 0
    cases = [(v, args.resolutions[0]) for v in args.variants]
    if device == "cuda" and "s" in args.variants and 448 in args.resolutions:
        cases.append(("s", 448))
    for variant, res in cases:
        images, source = _images(2, res, seed=0)
        atol = LOGIT_ATOL.get(res, 5e-4)
        models = {impl: create_model(variant, img_size=res, iam=impl) for impl in ("reference", "fused")}
        with torch.inference_mode():
            cpu_ref = models["reference"](images)
            cpu_fused = models["fused"](images)
            results = [_compare("cpu fused vs cpu reference", cpu_fused, cpu_ref, atol)]
            if device == "cuda":
                x = images.to(device)
                dev = {impl: m.to(device)(x) for impl, m in models.items()}
                results += [_compare("cuda fused vs cuda reference", dev["fused"], dev["reference"], atol),
                            _compare("cuda fused vs cpu reference", dev["fused"], cpu_ref, atol),
                            _compare("cuda reference vs cpu reference", dev["reference"], cpu_ref, atol)]
        for r in results:
            r.update(variant=variant, res=res, batch=2, images=source)
            failures += not r["passed"]
            rows.append(r)
    return {"passed": failures == 0, "rows": rows,
            "summary": f"{len(rows) - failures}/{len(rows)} logit comparisons within tolerance",
            "settings": {"tf32": False}}


def _time(fn, device: str, iters: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean time of ``iters`` back-to-back calls (seconds)."""
    import statistics

    import torch

    fn()
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1000.0 / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples)


def worker_op_timing(args) -> dict:
    import torch

    from pipeline.iam.reference import iam_aggregate
    from pipeline.iam.torch_op import iam_fused

    device = _device(args)
    rows = []
    with torch.inference_mode():
        for i, shape in enumerate(iam_shapes(args.variants, args.resolutions)):
            for batch in args.batches:
                tokens, importance, weights, biases = _merge_inputs(shape, batch, torch.float32, device, seed=i)
                layout = shape["layout"]
                fused = _time(lambda: iam_fused(tokens, importance, weights, biases, layout), device, args.iters)
                ref = _time(lambda: iam_aggregate(tokens, importance, weights, biases, layout), device, args.iters)
                rows.append({"shape": _shape_id(shape), "variants": shape["variants"], "stage": shape["stage"],
                             "res": shape["res"], "channels": shape["channels"], "tokens": shape["side"] ** 2,
                             "blocks": shape["blocks"], "batch": batch, "device": device,
                             "fused_ms": fused * 1e3, "reference_ms": ref * 1e3, "speedup": ref / fused})
                del tokens, importance
    return {"passed": True, "rows": rows, "summary": f"{len(rows)} op shapes timed ({device}, "
                                                     f"{'CUDA events' if device == 'cuda' else 'perf_counter'})"}


def worker_model_timing(args) -> dict:
    import torch

    from pipeline.apps.iam_timing import compare_model_latency

    device = _device(args)
    rows = []
    for variant in args.variants:
        for r in compare_model_latency(variant, args.resolutions[0], args.batches, device=device, iters=args.iters,
                                       warmup=args.warmup):
            rows.append({**r, "fused_ms": r.pop("fused_s") * 1e3, "reference_ms": r.pop("reference_s") * 1e3})
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"passed": True, "rows": rows, "summary": f"{len(rows)} model timings ({device})",
            "settings": {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                         "tf32_cudnn": torch.backends.cudnn.allow_tf32}}


#: Sanitizer cases (sr, side, channels, batch): sr 8 at 28x28 (3 tiers, k up to 196) and 56x56 (s stage 1 at 224),
#: sr 4 and sr 2 at 14x14; C > 128 once (two channel slices).
SANITIZER_CASES = ((8, 28, 160, 2), (8, 56, 64, 1), (4, 14, 64, 2), (2, 14, 64, 2))


def sanitizer_cases() -> list[dict]:
    """The cases with their layouts, computed in the parent (the worker under the sanitizer never imports torch)."""
    from pipeline.iam.reference import iam_layout

    cases = []
    for sr, side, channels, batch in SANITIZER_CASES:
        layout = iam_layout(sr, side, side)
        cases.append({"sr": sr, "side": side, "channels": channels, "batch": batch,
                      "group_sizes": list(layout.group_sizes), "tier_sizes": list(layout.tier_sizes)})
    return cases


def worker_sanitize_case(args) -> dict:
    """Small cases of every layout through the kernel harness. numpy + ctypes only (no torch: its CUDA libraries
    would be loaded under the sanitizer), compared with the host reference."""
    import ctypes

    import numpy as np

    from pipeline.iam.host import iam_host

    lib = ctypes.CDLL(args.harness)
    f32, u16, i32 = (ctypes.POINTER(t) for t in (ctypes.c_float, ctypes.c_uint16, ctypes.c_int))
    common = [ctypes.c_int] * 4 + [i32, i32, ctypes.c_int]
    lib.sgformer_iam_cuda_fp32.argtypes = [f32, f32, f32, f32, *common, f32, f32]
    lib.sgformer_iam_cuda_fp16.argtypes = [u16, f32, f32, f32, *common, u16, u16]
    lib.sgformer_iam_cuda_last_error.restype = ctypes.c_char_p
    # Harnesses with a path switch (fused block sort / CUB multi-launch): run every case on each path.
    set_path = getattr(lib, "sgformer_iam_cuda_set_path", None)
    paths = {"fused": 0, "cub": 1} if set_path is not None else {"auto": None}
    rng = np.random.default_rng(0)
    rows, failures = [], 0
    for spec, dtype, path in ((c, d, p) for c in json.loads(args.cases) for d in (np.float32, np.float16)
                              for p in paths):
        sr, side, channels, batch = spec["sr"], spec["side"], spec["channels"], spec["batch"]
        n = side * side
        group_sizes, tier_sizes = spec["group_sizes"], spec["tier_sizes"]
        out_tokens = sum(t // g for g, t in zip(group_sizes, tier_sizes))
        if set_path is not None:
            set_path(paths[path])
        tokens = rng.standard_normal((batch, n, channels)).astype(dtype)
        importance = (rng.integers(0, 6, (batch, n)) / 8.0).astype(np.float32)
        weight = rng.uniform(-0.2, 0.2, sum(group_sizes)).astype(np.float32)
        bias = rng.uniform(-0.2, 0.2, len(group_sizes)).astype(np.float32)
        row = np.empty((batch, out_tokens, channels), dtype)
        col = np.empty_like(row)
        groups = np.asarray(group_sizes, np.int32)
        tiers = np.asarray(tier_sizes, np.int32)
        ptr = f32 if dtype == np.float32 else u16
        fn = lib.sgformer_iam_cuda_fp32 if dtype == np.float32 else lib.sgformer_iam_cuda_fp16
        status = fn(tokens.ctypes.data_as(ptr), importance.ctypes.data_as(f32), weight.ctypes.data_as(f32),
                    bias.ctypes.data_as(f32), batch, side, side, channels, groups.ctypes.data_as(i32),
                    tiers.ctypes.data_as(i32), len(groups), row.ctypes.data_as(ptr), col.ctypes.data_as(ptr))
        case = {"sr": sr, "side": side, "channels": channels, "batch": batch, "dtype": np.dtype(dtype).name,
                "path": path, "status": int(status)}
        if status != 0:
            case["error"] = lib.sgformer_iam_cuda_last_error().decode()
            case["passed"] = False
        else:
            want = iam_host(tokens, importance, weight, bias, side, side, group_sizes, tier_sizes)
            case["passed"] = bool(np.array_equal(row, want[0]) and np.array_equal(col, want[1]))
        failures += not case["passed"]
        rows.append(case)
    if set_path is not None:
        set_path(-1)
    return {"passed": failures == 0, "rows": rows, "summary": f"{len(rows) - failures}/{len(rows)} cases ok "
                                                              f"(paths: {', '.join(paths)})"}


WORKERS: dict[str, Callable] = {
    "op-parity": worker_op_parity, "model-parity": worker_model_parity, "op-timing": worker_op_timing,
    "model-timing": worker_model_timing, "sanitize-case": worker_sanitize_case,
}


def run_worker(args) -> int:
    result: dict
    try:
        result = WORKERS[args.worker](args)
    except Exception as exc:  # noqa: BLE001 - the parent records whatever went wrong
        result = {"passed": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out = Path(args.result)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, out)
    return 0 if result.get("passed") else 1


# ---------------------------------------------------------------------------------------------- parent


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

    def step(self, name: str, fn: Callable[[float], dict]) -> dict:
        """Run ``fn(timeout)`` as step ``name``; exceptions become a failed step, a short budget a skipped one."""
        budget = min(STEP_BUDGET_S.get(name, 60) * self.slack, self.remaining())
        record = {"name": name, "status": "skip", "seconds": 0.0, "summary": "", "details": {}}
        if budget < STEP_MIN_S.get(name, 1):
            record["summary"] = f"skipped: only {max(budget, 0):.0f} s of the {self.budget_s:.0f} s budget left"
            self.steps.append(record)
            _logger.warning("%s: %s", name, record["summary"])
            return record
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
        log = _logger.error if record["status"] == "fail" else _logger.info
        log("%-13s %-4s %6.1f s  %s", name, record["status"], record["seconds"], record["summary"])
        return record

    def worker(self, name: str, timeout: float, extra: list[str], prefix: Optional[list[str]] = None) -> dict:
        """Run ``--worker name`` in a child process; its JSON result, or a failure with the output tail."""
        result_path = self.out / "steps" / f"{name}.json"
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.unlink(missing_ok=True)
        command = [*(prefix or []), sys.executable, str(Path(__file__).resolve()), "--worker", name.split(":")[0],
                   "--result", str(result_path), *extra]
        proc = _run(command, timeout, self.env)
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            result = {"passed": False, "error": "the worker wrote no result"}
        result["returncode"] = proc["returncode"]
        if proc["timed_out"]:
            result.update(passed=False, error=f"timed out after {timeout:.0f} s")
        if not result.get("passed"):
            result["output_tail"] = proc["output"][-3000:]
            if "summary" not in result:
                result["summary"] = result.get("error", f"exit {proc['returncode']}")
        return result


def _run(command: list[str], timeout: float, env: Optional[dict] = None, cwd: Path = REPO_ROOT) -> dict:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
        return {"returncode": proc.returncode, "output": proc.stdout + proc.stderr, "timed_out": False}
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return {"returncode": None, "output": out.decode(errors="replace") if isinstance(out, bytes) else str(out),
                "timed_out": True}
    except OSError as exc:
        return {"returncode": None, "output": f"cannot run {command[0]}: {exc}", "timed_out": False}


def _tool(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / name).is_file():
            return str(Path(home) / "bin" / name)
    return None


def probe_environment() -> dict:
    """What this machine has: GPU (nvidia-smi), toolchain, Python packages. Never raises."""
    import importlib.util

    env: dict = {"python": sys.version.split()[0], "python_executable": sys.executable, "platform": platform.platform(),
                 "packages": {}, "tools": {}}
    for name in OPTIONAL_PACKAGES:
        env["packages"][name] = None
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = __import__(name)
            env["packages"][name] = getattr(module, "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - a broken package is reported, not fatal
            env["packages"][name] = f"import failed: {type(exc).__name__}: {exc}"[:200]
    for tool in ("nvidia-smi", "nvcc", "cmake", "compute-sanitizer", "ncu", "g++"):
        env["tools"][tool] = _tool(tool)
    env["gpus"] = []
    smi = env["tools"]["nvidia-smi"]
    if smi:
        res = _run([smi, "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"], 20)
        if res["returncode"] == 0:
            for line in res["output"].strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 4:
                    env["gpus"].append({"name": parts[0], "driver": parts[1], "compute_cap": parts[2],
                                        "memory": parts[3]})
        else:
            env["nvidia_smi_error"] = res["output"].strip()[-500:]
    nvcc = env["tools"]["nvcc"]
    if nvcc:
        res = _run([nvcc, "--version"], 20)
        match = re.search(r"release ([\d.]+), V([\d.]+)", res["output"])
        env["nvcc"] = match.group(2) if match else res["output"].strip()[-200:]
    if env["packages"].get("torch") and not str(env["packages"]["torch"]).startswith("import failed"):
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["torch_cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            env["torch_device"] = torch.cuda.get_device_name(0)
            env["torch_capability"] = f"{major}{minor}"
    return env


def local_arch(env: dict) -> Optional[str]:
    if env.get("torch_capability"):
        return env["torch_capability"]
    if env.get("gpus"):
        return env["gpus"][0]["compute_cap"].replace(".", "")
    return None


# ---------------------------------------------------------------------------------------------- steps (parent)


def step_build(run: Run, args, arch: str, timeout: float) -> dict:
    from pipeline.iam.host import build_host_library
    from pipeline.iam.torch_op import _load_cuda, build_cuda_libraries

    build_dir = Path(args.build_dir) if args.build_dir else run.out / "build"
    t0 = time.monotonic()
    libs = build_cuda_libraries(build_dir / f"sm_{arch}", archs=[arch], harness=True, builder=args.builder,
                                timeout=timeout)
    cuda_s = time.monotonic() - t0
    ref = build_host_library(build_dir / "host-ref")
    run.env["SGFORMER_IAM_TORCH_LIB"] = str(libs["torch"])
    run.env["SGFORMER_KERNEL_HARNESS_LIB"] = str(libs["harness"])
    run.env["SGFORMER_IAM_REF_LIB"] = str(ref)
    run.env["SGFORMER_TEST_CUDA_ARCHS"] = arch
    os.environ.update({k: run.env[k] for k in ("SGFORMER_IAM_TORCH_LIB", "SGFORMER_IAM_REF_LIB")})
    # The ctypes ABI of the shim as pipeline/iam_op.py declares it (loads without a GPU: cudart is static).
    lib = _load_cuda(str(libs["torch"]))
    groups, tiers = (ctypes_array(v) for v in ((196, 56, 28), (784, 1568, 784)))
    out_tokens = lib.sgformer_iam_torch_out_tokens(56, 56, groups, tiers, 3)
    if out_tokens != 4 + 28 + 28:
        raise RuntimeError(f"libsgformer_iam_torch.so computes T={out_tokens} for s stage 1 at 224, expected 60")
    symbols = _exported_symbols(libs["torch"])
    return {"passed": True, "arch": f"sm_{arch}", "builder": args.builder, "cuda_build_s": round(cuda_s, 1),
            "libraries": {k: str(v) for k, v in {**libs, "host_ref": ref}.items()},
            "torch_shim_symbols": symbols, "device_count_seen_by_shim": lib.sgformer_iam_torch_device_count(),
            "summary": f"sm_{arch}: libsgformer_iam_torch.so, kernel harness, host reference ({cuda_s:.0f} s)"}


def ctypes_array(values):
    import ctypes

    return (ctypes.c_int * len(values))(*values)


def _exported_symbols(path: Path) -> Optional[list[str]]:
    nm = shutil.which("nm")
    if nm is None:
        return None
    res = _run([nm, "-D", "--defined-only", str(path)], 20)
    return sorted(p[-1] for p in (l.split() for l in res["output"].splitlines()) if len(p) == 3 and p[1] == "T"
                  and not p[-1].startswith("_"))


def step_pytest(run: Run, timeout: float) -> dict:
    junit = run.out / "pytest-gpu.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/plugins/test_iam_kernel_gpu.py", "-q",
               "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={junit}"]
    proc = _run(command, timeout, run.env)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            counts = {k: int(suite.get(k, 0)) for k in counts}
    passed_n = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    # Some skips can be legitimate on a GPU (a forced path that does not fit this device); none passing is not.
    ok = proc["returncode"] == 0 and passed_n > 0
    summary = (f"{passed_n} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
               + (" (timed out)" if proc["timed_out"] else ""))
    if passed_n == 0 and proc["returncode"] == 0:
        summary += "; no GPU test ran on a GPU machine (all skipped?) counts as a failure"
    return {"passed": ok, "counts": counts, "command": " ".join(command), "summary": summary,
            "output_tail": proc["output"][-4000:]}


def step_sanitizer(run: Run, tool: str, timeout: float) -> dict:
    sanitizer = _tool("compute-sanitizer")
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
    # The worker's output is only kept on failure; rerun-free parse of the sanitizer's verdict from it.
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
    return result


def _worker_args(device: str, variants, resolutions, batches, iters: int, warmup: int = 2) -> list[str]:
    return ["--device", device, "--variants", ",".join(variants), "--resolutions", ",".join(map(str, resolutions)),
            "--batches", ",".join(map(str, batches)), "--iters", str(iters), "--warmup", str(warmup)]


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


# ---------------------------------------------------------------------------------------------- report


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return "/".join(map(str, v))
    return str(v)


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines + [""]


def render_markdown(report: dict) -> str:
    env = report["environment"]
    gpu = env.get("gpus", [{}])[0] if env.get("gpus") else {}
    lines = [f"# gpu-check ({report['mode']})", "",
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
             "| tools | " + ", ".join(f"{k} {'yes' if v else 'missing'}" for k, v in env["tools"].items()) + " |", "",
             "## Steps", ""]
    lines += _table(report["steps"], ["name", "status", "seconds", "summary"])
    by_name = {s["name"]: s for s in report["steps"]}
    sections = [
        ("op-parity", "sgformer::iam vs host reference (bit mismatches) and vs reference path (error / bound)",
         ["shape", "dtype", "stream", "device", "bit_mismatches", "vs_reference_error_over_bound", "passed"]),
        ("model-parity", "Model logits", ["variant", "res", "batch", "comparison", "max_abs", "atol", "top1_agreement",
                                          "cosine_min", "passed"]),
        ("op-timing", "IAM op timings (ms per call)", ["shape", "batch", "device", "fused_ms", "reference_ms",
                                                        "speedup"]),
        ("model-timing", "Whole model, PyTorch eager (ms per call)", ["variant", "img_size", "batch", "device",
                                                                     "fused_ms", "reference_ms", "ratio"]),
    ]
    for name, title, columns in sections:
        step = by_name.get(name)
        if step and step["details"].get("rows"):
            lines += [f"## {title}", ""] + _table(step["details"]["rows"], columns)
    if report.get("iam_share"):
        lines += ["## IAM share of model time (sum of op timings over the significance blocks / model time)", ""]
        lines += _table(report["iam_share"], ["variant", "img_size", "batch", "iam_ops", "iam_fused_ms",
                                              "iam_reference_ms", "share_fused", "share_reference"])
    failed = [s for s in report["steps"] if s["status"] == "fail"]
    for step in failed:
        tail = step["details"].get("output_tail") or step["details"].get("traceback") or step["details"].get("error")
        if tail:
            lines += [f"## {step['name']} output (tail)", "", "```", str(tail)[-3000:], "```", ""]
    if report.get("not_proven"):
        lines += ["## Not proven by this run", ""] + [f"- {x}" for x in report["not_proven"]] + [""]
    return "\n".join(lines)


NOT_PROVEN = [
    "TensorRT: no engine is built or run (the machine has no TensorRT); the plugin's IPluginV3 glue, enqueue, "
    "serialization and the engine's parity are untested here",
    "fp16 and int8 engines, calibration on the GPU, the pycuda runtime and the C++ example app",
    "other GPU architectures than the local one (Jetson Orin sm_87, Ada, Blackwell)",
]


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu-check.json", json.dumps(report, indent=1, default=str)),
                       ("gpu-check.md", render_markdown(report))):
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out / name)


# ---------------------------------------------------------------------------------------------- main


#: The project's virtual environment, the dry run's interpreter when the machine's python3 has no torch.
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def _has_gpu_driver() -> bool:
    smi = _tool("nvidia-smi")
    return smi is not None and _run([smi, "-L"], 20)["returncode"] == 0


def _without_torch(args, argv: Optional[list[str]]) -> Optional[int]:
    """No GPU and no torch in this interpreter (``make gpu-check`` on a CPU machine whose python3 is bare): say so in
    one line and run the dry run with the project's venv, or skip what needs torch. None: carry on here."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None or (_has_gpu_driver() and not args.dry_run):
        return None  # with a GPU, a python3 without torch is a real failure: the full run reports it
    venv = Path(os.environ.get("GPU_CHECK_VENV_PYTHON", VENV_PYTHON))
    usable = venv.is_file() and _run([str(venv), "-c", "import torch, numpy"], 120)["returncode"] == 0
    if usable:
        print(f"gpu-check: no GPU here and {sys.executable} has no torch: checked the build and the CPU stand-ins "
              f"instead (dry run with {venv})", flush=True)
        return subprocess.run([str(venv), str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])],
                              check=False).returncode
    print(f"gpu-check: no GPU here and neither {sys.executable} nor {venv} has torch: checked nothing that needs "
          f"torch (skipped: build, op and model checks; `make venv` then `make gpu-check` runs the dry run)")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/gpu-check", help="directory for gpu-check.json / gpu-check.md")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: build for --arch, run the CPU stand-ins")
    parser.add_argument("--arch", default=None, help="CUDA architecture (e.g. 90); default: the local GPU's, else 90")
    parser.add_argument("--builder", default="auto", choices=("auto", "cmake", "nvcc"))
    parser.add_argument("--build-dir", default=None, help="where to build (default OUT/build)")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="total seconds (default 360)")
    parser.add_argument("--variants", default=None, help="model variants (default s,b for models, s,m,b for ops)")
    parser.add_argument("--resolutions", default="224,448")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed model calls first (default 2)")
    # Child-process mode (used by the parent; not for people).
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--harness", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.resolutions = [int(r) for r in args.resolutions.split(",") if r]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    logging.basicConfig(level=logging.INFO, format="gpu-check: %(message)s")

    if args.worker:
        args.variants = [v for v in (args.variants or "s,m,b").split(",") if v]
        return run_worker(args)

    handed_over = _without_torch(args, argv)
    if handed_over is not None:
        return handed_over
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, args.budget)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    env_record = run.step("environment", lambda _t: {"summary": "probed", **probe_environment()})
    env = env_record["details"]
    has_gpu = bool(env.get("torch_cuda_available")) or bool(env.get("gpus"))
    mode = "full"
    if args.dry_run or not has_gpu:
        if not args.dry_run:
            _logger.warning("no GPU here (nvidia-smi and torch.cuda see none): running the dry run instead")
        mode = "dry-run"
        run.relax(DRY_RUN_SLACK)
    arch = args.arch or local_arch(env) or "90"
    missing_torch = not env["packages"].get("torch") or str(env["packages"]["torch"]).startswith("import failed")
    build = run.step("build", lambda t: step_build(run, args, arch, t))
    built = build["status"] == "pass"

    if mode == "full" and not env.get("torch_cuda_available"):
        run.steps.append({"name": "torch-cuda", "status": "fail", "seconds": 0.0, "details": {},
                          "summary": "nvidia-smi sees a GPU but torch.cuda.is_available() is False (CPU-only torch, "
                                     "or a driver/CUDA mismatch)"})
    model_variants = [v for v in (args.variants or "s,b").split(",") if v]
    op_variants = [v for v in (args.variants or "s,m,b").split(",") if v]
    if mode == "full":
        if built:
            if env["packages"].get("pytest") and env["packages"].get("onnx"):
                run.step("pytest-gpu", lambda t: step_pytest(run, t))
            else:
                run.steps.append({"name": "pytest-gpu", "status": "skip", "seconds": 0.0, "details": {},
                                  "summary": "pytest or onnx (imported by tests/conftest.py) is missing"})
            for tool in ("memcheck", "racecheck"):
                run.step(tool, lambda t, tool=tool: step_sanitizer(run, tool, t))
        if built and env.get("torch_cuda_available"):
            op_args = _worker_args("cuda", op_variants, args.resolutions, args.batches, args.iters)
            model_args = _worker_args("cuda", model_variants, args.resolutions, args.batches, args.iters, args.warmup)
            run.step("op-parity", lambda t: run.worker("op-parity", t, op_args))
            run.step("model-parity", lambda t: run.worker("model-parity", t, model_args))
            run.step("op-timing", lambda t: run.worker("op-timing", t, op_args))
            # Whole-model timings at the first resolution (224 by default) only.
            timing_args = _worker_args("cuda", model_variants, args.resolutions[:1], args.batches, args.iters,
                                       args.warmup)
            run.step("model-timing", lambda t: run.worker("model-timing", t, timing_args))
    else:
        reason = "dry run" if args.dry_run else "no GPU on this machine"
        for name in GPU_ONLY_STEPS:
            run.steps.append({"name": name, "status": "skip", "seconds": 0.0, "details": {},
                              "summary": f"not run: {reason}"})
        if built and not missing_torch:
            # The same workers on the CPU with the smallest network and one shape, so the code cannot rot.
            tiny = _worker_args("cpu", ["tiny-test"], [224], [1], iters=1, warmup=0)
            for name in ("op-parity", "model-parity", "op-timing", "model-timing"):
                run.step(name, lambda t, name=name: run.worker(name, t, tiny))

    by_name = {s["name"]: s for s in run.steps}
    shares = []
    if "op-timing" in by_name and "model-timing" in by_name:
        shares = iam_share(by_name["op-timing"]["details"].get("rows", []),
                           by_name["model-timing"]["details"].get("rows", []))
    failed = [s["name"] for s in run.steps if s["status"] == "fail"]
    verdict = "FAIL: " + ", ".join(failed) if failed else "PASS"
    if mode == "dry-run":
        verdict += f" (dry run, no GPU: built for sm_{arch}, GPU steps not run, CPU stand-ins only)"
    report = {"schema": SCHEMA, "mode": mode, "verdict": verdict, "passed": not failed, "started": started,
              "seconds": round(time.monotonic() - run.start, 1), "budget_s": run.budget_s,
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "arch": f"sm_{arch}",
              "environment": env, "steps": run.steps, "iam_share": shares, "not_proven": NOT_PROVEN}
    write_report(out, report)
    print(f"gpu-check {mode}: {verdict}")
    for s in run.steps:
        print(f"  {s['name']:<13} {s['status']:<4} {s['seconds']:6.1f} s  {s['summary'][:150]}")
    print(f"report: {out / 'gpu-check.md'} and gpu-check.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
