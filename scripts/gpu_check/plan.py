"""Which steps run, in which order, with which worker flags: a full run on a GPU, or the dry run without one."""
from __future__ import annotations

from scripts.gpu_check.build import step_pytest
from scripts.gpu_check.common import CONTEXT_CASES, DRY_NOTE, DRY_STATUS, GPU_ONLY_STEPS
from scripts.gpu_check.runner import Run, worker_args
from scripts.gpu_check.sanitizer import step_sanitizer


def step_second_context(run: Run, timeout: float, extra: list[str]) -> dict:
    """Two workers: the second-context one (torch in the primary context, the shim in new contexts) and the
    reset one (no torch on the device: it resets the primary context under nobody else)."""
    first = run.worker("second-context", timeout / 2, extra)
    second = run.worker("context-reset", timeout / 2, extra)
    plain = [r.get("summary", "").replace(f"{DRY_NOTE}; its CPU part: ", "") for r in (first, second)]
    merged = {"rows": first.get("rows", []) + second.get("rows", []),
              "passed": bool(first.get("passed")) and bool(second.get("passed")),
              "summary": f"second context: {plain[0]}; reset: {plain[1]}"}
    for key in ("output_tail", "error", "traceback"):
        parts = [r[key] for r in (first, second) if r.get(key)]
        if parts:
            merged[key] = "\n".join(map(str, parts))
    statuses = {first.get("status"), second.get("status")}
    if merged["passed"] and statuses == {DRY_STATUS}:
        merged.update(status=DRY_STATUS, summary=f"{DRY_NOTE}; its CPU part: {merged['summary']}")
    elif not merged["passed"]:
        merged["status"] = "fail"
    return merged


def _cases(run: Run, extra: list[str]) -> None:
    """The issue-25 cases (graph capture, second context and reset, offset views)."""
    for name in CONTEXT_CASES:
        if name == "second-context":
            run.step(name, lambda t: step_second_context(run, t, extra))
        else:
            run.step(name, lambda t, name=name: run.worker(name, t, extra))


def run_full(run: Run, env: dict, args, built: bool) -> None:
    """Every step on the GPU (build first; a failed build leaves only what needs no library)."""
    model_variants = [v for v in (args.variants or "s,b").split(",") if v]
    op_variants = [v for v in (args.variants or "s,m,b").split(",") if v]
    if not env.get("torch_cuda_available"):
        run.note("torch-cuda", "fail", "nvidia-smi sees a GPU but torch.cuda.is_available() is False (CPU-only torch, "
                                       "or a driver/CUDA mismatch)")
    if built:
        if env["packages"].get("pytest") and env["packages"].get("onnx"):
            run.step("pytest-gpu", lambda t: step_pytest(run, t))
        else:
            run.note("pytest-gpu", "skip", "pytest or onnx (imported by tests/conftest.py) is missing")
        for tool in ("memcheck", "racecheck"):
            run.step(tool, lambda t, tool=tool: step_sanitizer(run, tool, t))
    if not (built and env.get("torch_cuda_available")):
        return
    op_args = worker_args("cuda", op_variants, args.resolutions, args.batches, args.iters)
    model_args = worker_args("cuda", model_variants, args.resolutions, args.batches, args.iters, args.warmup)
    harness = ["--harness", run.env["SGFORMER_KERNEL_HARNESS_LIB"]]
    run.step("op-parity", lambda t: run.worker("op-parity", t, op_args))
    _cases(run, worker_args("cuda", op_variants, args.resolutions, [2], 1) + harness)
    run.step("model-parity", lambda t: run.worker("model-parity", t, model_args))
    run.step("op-timing", lambda t: run.worker("op-timing", t, op_args))
    # Whole-model timings at the first resolution (224 by default) only.
    timing_args = worker_args("cuda", model_variants, args.resolutions[:1], args.batches, args.iters, args.warmup)
    run.step("model-timing", lambda t: run.worker("model-timing", t, timing_args))


def run_dry(run: Run, args, built: bool, has_torch: bool) -> None:
    """No GPU: the GPU-only steps listed as not run; the workers and the cases on the CPU, smallest network."""
    reason = "dry run" if args.dry_run else "no GPU on this machine"
    for name in GPU_ONLY_STEPS:
        run.note(name, "skip", f"not run: {reason}")
    if not (built and has_torch):
        return
    # The same workers on the CPU with the smallest network and one shape, so the code cannot rot.
    tiny = worker_args("cpu", ["tiny-test"], [224], [1], iters=1, warmup=0)
    run.step("op-parity", lambda t: run.worker("op-parity", t, tiny))
    _cases(run, tiny + ["--harness", run.env["SGFORMER_KERNEL_HARNESS_LIB"]])
    for name in ("model-parity", "op-timing", "model-timing"):
        run.step(name, lambda t, name=name: run.worker(name, t, tiny))
