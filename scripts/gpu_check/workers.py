"""The parity and timing workers (child processes: ``--worker NAME``) and the dispatcher of every worker."""
from __future__ import annotations

import json
import os
import statistics
import time
import traceback
from pathlib import Path
from typing import Callable

from scripts.gpu_check import cases, sanitizer
from scripts.gpu_check.common import device_of
from scripts.gpu_check.shapes import bit_mismatches, iam_shapes, merge_inputs, shape_id

#: Logit tolerances (fp32): the project's ONNX-vs-PyTorch table (pipeline/core/tolerances.py; 448: README).
LOGIT_ATOL = {224: 1e-4, 448: 5e-4}


def _run_op_on(which: str, iam_fused, inputs, layout):
    """The op on the current stream, or on a side stream that waits for the current one (and is waited for)."""
    import torch

    if which != "side":
        return iam_fused(*inputs, layout)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = iam_fused(*inputs, layout)
    torch.cuda.current_stream().wait_stream(side)
    return got


def _vs_reference(got, inputs, layout, device: str) -> float:
    """Largest |op - reference path| over its derived bound (<= 1 passes). The reference path (torch sort + gather +
    linear, ``pipeline.iam.reference``) runs in fp32 on the inputs upcast; an fp16 op rounds its fp32 sum once, so
    its bound adds half an fp16 spacing of the value (2^-11 relative, 2^-25 absolute below the normal range)."""
    import torch

    from pipeline.iam.reference import iam_aggregate
    from pipeline.iam.torch_op import fused_vs_reference_bound

    tokens, importance, weights, biases = inputs
    tokens, weights, biases = tokens.float(), [w.float() for w in weights], [b.float() for b in biases]
    ref = iam_aggregate(tokens, importance, weights, biases, layout)
    mags = iam_aggregate(tokens.abs(), importance, [w.abs() for w in weights], [b.abs() for b in biases], layout)
    bound = fused_vs_reference_bound(max(layout.group_sizes)) * 1.01
    half = got[0].dtype == torch.float16
    worst = 0.0
    for g, r, m in zip(got, ref, mags):
        tol = bound * m
        if half:
            tol = tol * (1 + 2.0 ** -11) + 2.0 ** -11 * r.abs() + 2.0 ** -25
        worst = max(worst, float(((g.to(device).float() - r).abs() / tol.clamp_min(1e-30)).max()))
    return worst


def worker_op_parity(args) -> dict:
    """sgformer::iam on the device vs on the CPU (host reference): bit-exact, and vs the reference path within its
    derived bound. In a dry run (no GPU) the op runs on the CPU only: comparing it with itself would prove nothing,
    so those rows carry no bit count and pass on the reference-path comparison alone."""
    import torch

    from pipeline.iam.torch_op import iam_fused

    device = device_of(args)
    rows = []
    for i, shape in enumerate(iam_shapes(args.variants, args.resolutions)):
        layout = shape["layout"]
        for dtype in (torch.float32, torch.float16):
            cpu = merge_inputs(shape, 2, dtype, "cpu", seed=i)
            dev = (cpu[0].to(device), cpu[1].to(device), [w.to(device) for w in cpu[2]], [b.to(device) for b in cpu[3]])
            want = iam_fused(*cpu, layout) if device == "cuda" else None
            for which in ["current"] + (["side"] if device == "cuda" else []):
                got = [g.cpu() for g in _run_op_on(which, iam_fused, dev, layout)]
                mismatches = bit_mismatches(got, want) if want is not None else None
                row = {"shape": shape_id(shape), "dtype": str(dtype).replace("torch.", ""), "batch": 2,
                       "stream": which, "device": device, "bit_mismatches": mismatches,
                       "passed": mismatches in (0, None)}
                if which == "current":
                    row["vs_reference_error_over_bound"] = _vs_reference(got, dev, layout, device)
                    row["passed"] = row["passed"] and row["vs_reference_error_over_bound"] <= 1.0
                rows.append(row)
    failures = sum(not r["passed"] for r in rows)
    what = ("bit-exact vs the host reference and within the bound of the reference path" if device == "cuda" else
            "within the derived bound of the reference path (CPU stand-in: no device to compare bit for bit)")
    return {"passed": failures == 0, "rows": rows, "summary": f"{len(rows) - failures}/{len(rows)} op runs {what}"}


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


def _model_rows(variant: str, res: int, device: str) -> list[dict]:
    import torch

    from pipeline.model.sgformer import create_model

    images, source = _images(2, res, seed=0)
    atol = LOGIT_ATOL.get(res, 5e-4)
    models = {impl: create_model(variant, img_size=res, iam=impl) for impl in ("reference", "fused")}
    with torch.inference_mode():
        cpu_ref = models["reference"](images)
        results = [_compare("cpu fused vs cpu reference", models["fused"](images), cpu_ref, atol)]
        if device == "cuda":
            x = images.to(device)
            dev = {impl: m.to(device)(x) for impl, m in models.items()}
            results += [_compare("cuda fused vs cuda reference", dev["fused"], dev["reference"], atol),
                        _compare("cuda fused vs cpu reference", dev["fused"], cpu_ref, atol),
                        _compare("cuda reference vs cpu reference", dev["reference"], cpu_ref, atol)]
    return [{**r, "variant": variant, "res": res, "batch": 2, "images": source} for r in results]


def worker_model_parity(args) -> dict:
    """Whole-model logits: device fused vs device reference vs CPU reference (and CPU fused vs CPU reference)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = device_of(args)
    cases = [(v, args.resolutions[0]) for v in args.variants]
    if device == "cuda" and "s" in args.variants and 448 in args.resolutions:
        cases.append(("s", 448))
    rows = [row for variant, res in cases for row in _model_rows(variant, res, device)]
    failures = sum(not r["passed"] for r in rows)
    return {"passed": failures == 0, "rows": rows,
            "summary": f"{len(rows) - failures}/{len(rows)} logit comparisons within tolerance",
            "settings": {"tf32": False}}


def time_calls(fn, device: str, iters: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean time of ``iters`` back-to-back calls (seconds)."""
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

    device = device_of(args)
    rows = []
    with torch.inference_mode():
        for i, shape in enumerate(iam_shapes(args.variants, args.resolutions)):
            for batch in args.batches:
                inputs = merge_inputs(shape, batch, torch.float32, device, seed=i)
                layout = shape["layout"]
                fused = time_calls(lambda: iam_fused(*inputs, layout), device, args.iters)
                ref = time_calls(lambda: iam_aggregate(*inputs, layout), device, args.iters)
                rows.append({"shape": shape_id(shape), "variants": shape["variants"], "stage": shape["stage"],
                             "res": shape["res"], "channels": shape["channels"], "tokens": shape["side"] ** 2,
                             "blocks": shape["blocks"], "batch": batch, "device": device,
                             "fused_ms": fused * 1e3, "reference_ms": ref * 1e3, "speedup": ref / fused})
                del inputs
    return {"passed": True, "rows": rows, "summary": f"{len(rows)} op shapes timed ({device}, "
                                                     f"{'CUDA events' if device == 'cuda' else 'perf_counter'})"}


def worker_model_timing(args) -> dict:
    import torch

    from pipeline.apps.iam_timing import compare_model_latency

    device = device_of(args)
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


#: ``--worker NAME`` -> the function that runs in the child process.
WORKERS: dict[str, Callable] = {
    "op-parity": worker_op_parity, "model-parity": worker_model_parity, "op-timing": worker_op_timing,
    "model-timing": worker_model_timing, "sanitize-case": sanitizer.worker_sanitize_case,
    "graph-capture": cases.worker_graph_capture, "second-context": cases.worker_second_context,
    "offset-view": cases.worker_offset_view, "context-reset": cases.worker_context_reset,
}


def run_worker(args) -> int:
    """Run worker ``args.worker``; its result (or the exception) goes to ``args.result`` as JSON."""
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
