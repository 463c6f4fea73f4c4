"""The issue-25 cases the first GPU must check for real, each with a CPU part that a dry run executes.

- graph-capture: ``sgformer::iam`` warmed up outside capture, captured into a CUDA graph, replayed on the inputs of
  the capture and on new inputs copied into them; equal to eager bit for bit. (Dry run: the same code with the CPU
  op and no graph.)
- second-context / context-reset: the op in a second CUDA context of the device (driver API, as pycuda's
  make_context), in a recreated one, and after a reset of the primary context (cudaDeviceReset's effect), at a shape
  whose sort needs more than 48 KB of shared memory (the attribute is per context). (Dry run: the same buffers and
  call struct fed to the host reference.)
- offset-view: tokens and importance with a storage offset that misaligns them for the aggregation's vector width,
  through the op's CUDA path, equal to the contiguous result. (Dry run: the CPU op, and the CUDA path's call struct
  handed to the host reference.)

A dry run reports each case as ``dry-run`` ("dry run: not executed on a GPU"), never as passed.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np

from pipeline.iam.host import iam_host
from scripts.gpu_check.common import DRY_NOTE, DRY_STATUS, device_of
from scripts.gpu_check.memory import CONTEXT_LIFETIME_ERRORS, DeviceMemory, Driver, HostMemory, run_op
from scripts.gpu_check.shapes import bit_mismatches, merge_inputs, shape_id, single_shape

#: Graph capture: a small layout (sr 4, s stage 2 at 224) and stage 1 at 448 (N = 12544: sort above 48 KB).
CAPTURE_SHAPES = ((4, 28, 128, "s stage2 224"), (8, 112, 64, "s stage1 448"))
#: Contexts: s stage 1 at 448. N = 12544 needs far more than the 48 KB a kernel gets without the attribute.
CONTEXT_SHAPE = (8, 112, 64, "s stage1 448")
#: Offset views (sr, side, channels, batch, label, dtype, offset in elements) of s stage 3 at 448 (C 256, N 784,
#: T 588), where the launcher picks 16-byte vectors when aligned: 4 floats, 8 halves (kernel harness, sm_90 build:
#: vector width 4 -> 1 and 2 for fp32 offsets 1 and 2; 8 -> 1 and 4 for fp16 offsets 1 and 4).
OFFSET_CASES = tuple((2, 28, 256, 2, "s stage3 448", dtype, offset)
                     for dtype, offset in (("float32", 1), ("float32", 2), ("float16", 1), ("float16", 4)))


def finish(result: dict, device: str) -> dict:
    """A case's result as the report takes it: on the CPU (a dry run) never "pass", always the dry-run note."""
    failures = [r for r in result["rows"] if not r["passed"] and r.get("status") != "inconclusive"]
    result["passed"] = not failures
    if device != "cuda":
        result["status"] = DRY_STATUS if result["passed"] else "fail"
        result["summary"] = f"{DRY_NOTE}; its CPU part: {result['summary']}"
    return result


def dtype_name(dtype) -> str:
    """float32 / float16 of a torch or numpy dtype."""
    text = str(dtype)
    return text[len("torch."):] if text.startswith("torch.") else np.dtype(dtype).name


def case_row(case: str, shape: dict, dtype, device: str, mismatches: int, detail: str = "") -> dict:
    return {"case": case, "shape": shape_id(shape), "dtype": dtype_name(dtype),
            "executed_on": "cuda" if device == "cuda" else f"cpu ({DRY_NOTE})", "bit_mismatches": mismatches,
            "detail": detail, "passed": mismatches == 0}


def _summary(rows: list[dict], what: str) -> str:
    ok = sum(r["passed"] for r in rows)
    inconclusive = sum(r.get("status") == "inconclusive" for r in rows)
    return f"{ok}/{len(rows)} {what}" + (f", {inconclusive} inconclusive" if inconclusive else "")


# ---------------------------------------------------------------------------------------------- graph capture


def capture(fn, device: str):
    """``fn() -> outputs`` as a replay function. CUDA: warm-up on a side stream (outside capture), then captured
    into a CUDA graph; replay() launches the graph and returns its static outputs. CPU: replay() calls fn()."""
    if device != "cuda":
        return fn
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn()

    def replay():
        graph.replay()
        return static_out

    return replay


def _capture_rows(shape: dict, dtype, device: str, seed: int) -> list[dict]:
    import torch

    from pipeline.iam.torch_op import iam_fused

    layout = shape["layout"]
    tokens, importance, weights, biases = merge_inputs(shape, 2, dtype, device, seed=seed)  # the captured tensors
    fresh = merge_inputs(shape, 2, dtype, device, seed=seed + 1)
    fn = lambda: iam_fused(tokens, importance, weights, biases, layout)  # noqa: E731
    eager = [t.clone() for t in fn()]  # the warm-up outside capture, and the eager result
    replay = capture(fn, device)
    first = [t.clone() for t in replay()]
    for dst, src in zip([tokens, importance, *weights, *biases], [fresh[0], fresh[1], *fresh[2], *fresh[3]]):
        dst.copy_(src)
    second = [t.clone() for t in replay()]
    eager_fresh = iam_fused(*fresh, layout)
    if device == "cuda":
        torch.cuda.synchronize()
    changed = bit_mismatches(eager_fresh, eager) > 0
    rows = [case_row("replay, inputs of the capture", shape, dtype, device, bit_mismatches(first, eager),
                     "vs eager" + (" (CUDA graph)" if device == "cuda" else " (no graph: CPU op called again)")),
            case_row("replay, new inputs copied in", shape, dtype, device, bit_mismatches(second, eager_fresh),
                     "vs eager on the new inputs" + ("" if changed else "; the new inputs give the old result: vacuous"))]
    rows[1]["passed"] = rows[1]["passed"] and changed
    return rows


def worker_graph_capture(args) -> dict:
    import torch

    device = device_of(args)
    rows = []
    with torch.no_grad():
        for i, (sr, side, channels, label) in enumerate(CAPTURE_SHAPES):
            shape = single_shape(sr, side, channels, label)
            for dtype in (torch.float32, torch.float16):
                rows += _capture_rows(shape, dtype, device, seed=40 + 2 * i)
    return finish({"rows": rows, "summary": _summary(rows, "replays equal to eager")}, device)


# ---------------------------------------------------------------------------------------------- contexts


def numpy_inputs(shape: dict, batch: int, dtype, seed: int) -> dict:
    layout = shape["layout"]
    rng = np.random.default_rng(seed)
    return {"tokens": rng.standard_normal((batch, layout.num_tokens, shape["channels"])).astype(dtype),
            "importance": (rng.integers(0, 6, (batch, layout.num_tokens)) / 8.0).astype(np.float32),
            "weight": rng.uniform(-0.2, 0.2, sum(layout.group_sizes)).astype(np.float32),
            "bias": rng.uniform(-0.2, 0.2, len(layout.group_sizes)).astype(np.float32)}


def np_mismatches(got, want) -> int:
    bits = {2: np.uint16, 4: np.uint32}
    return sum(int(np.count_nonzero(g.view(bits[g.itemsize]) != w.view(bits[w.itemsize]))) for g, w in zip(got, want))


def _torch_op(inputs: dict, layout, device: str):
    """The torch op (primary context on CUDA) on numpy inputs; numpy outputs."""
    import torch

    import pipeline.iam.torch_op  # noqa: F401 - registers torch.ops.sgformer.iam

    t = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
    out = torch.ops.sgformer.iam(t["tokens"], t["importance"], t["weight"], t["bias"], layout.height, layout.width,
                                 list(layout.group_sizes), list(layout.tier_sizes))
    return [o.cpu().numpy() for o in out]


def _cuda_shim() -> ctypes.CDLL:
    from pipeline.iam.torch_op import _load_cuda, find_cuda_library

    return _load_cuda(str(find_cuda_library()))


def _second_context_rows(shape: dict, inputs: dict, want, device: str) -> list[dict]:
    """The op in a new context of the device, twice (created, destroyed, created again)."""
    layout, dtype = shape["layout"], inputs["tokens"].dtype.type
    rows = []
    driver = Driver() if device == "cuda" else None
    for label in ("second context (cuCtxCreate)", "second context, recreated"):
        if driver is None:
            got = run_op(HostMemory(), inputs, layout)
            detail = "host buffers + host reference, same call struct (no context in a dry run)"
        else:
            ctx = driver.create_context(driver.device(0))
            try:
                got = run_op(DeviceMemory(driver, _cuda_shim(), 0), inputs, layout)
            finally:
                driver.destroy_context(ctx)
            detail = "driver-API buffers, shim launch on the context's default stream"
        rows.append(case_row(label, shape, dtype, device, np_mismatches(got, want), detail))
    return rows


def worker_second_context(args) -> dict:
    """Primary context (torch op), then a second context twice (shim via the driver API), then primary again."""
    device = device_of(args)
    sr, side, channels, label = CONTEXT_SHAPE
    shape = single_shape(sr, side, channels, label)
    layout, rows = shape["layout"], []
    for i, dtype in enumerate((np.float32, np.float16)):
        inputs = numpy_inputs(shape, 2, dtype, seed=60 + i)
        want = iam_host(inputs["tokens"], inputs["importance"], inputs["weight"], inputs["bias"], layout.height,
                        layout.width, layout.group_sizes, layout.tier_sizes)
        rows.append(case_row("primary context (torch op)", shape, dtype, device,
                             np_mismatches(_torch_op(inputs, layout, device), want), "vs host reference"))
        rows += _second_context_rows(shape, inputs, want, device)
        rows.append(case_row("primary context again (torch op)", shape, dtype, device,
                             np_mismatches(_torch_op(inputs, layout, device), want), "vs host reference"))
    return finish({"rows": rows, "summary": _summary(rows, "runs equal to the host reference")}, device)


def _after_reset(driver: Optional[Driver], shape: dict, inputs: dict, want) -> dict:
    layout, dtype = shape["layout"], inputs["tokens"].dtype.type
    device = "cuda" if driver else "cpu"
    if driver is None:
        got = run_op(HostMemory(), inputs, layout)
        return case_row("after a primary-context reset", shape, dtype, device, np_mismatches(got, want),
                        "no reset in a dry run: host reference again")
    dev = driver.device(0)
    driver.reset_primary_context(dev)
    driver.primary_context(dev)
    try:
        got = run_op(DeviceMemory(driver, _cuda_shim(), 0), inputs, layout)
    except Exception as exc:  # noqa: BLE001 - classified below
        row = case_row("after a primary-context reset", shape, dtype, device, -1, f"{type(exc).__name__}: {exc}")
        row["passed"] = False
        if any(name in str(exc) for name in CONTEXT_LIFETIME_ERRORS):
            row["status"] = "inconclusive"  # the shim's runtime did not take up the reset: not the kernel's fault
        return row
    return case_row("after a primary-context reset", shape, dtype, device, np_mismatches(got, want),
                    "cuDevicePrimaryCtxReset_v2 (what cudaDeviceReset does), then the shim again")


def worker_context_reset(args) -> dict:
    """The shim in the primary context, the primary context reset, the shim again. No torch CUDA use: nothing else
    holds the context, so the reset frees only what this worker made."""
    device = device_of(args)
    sr, side, channels, label = CONTEXT_SHAPE
    shape = single_shape(sr, side, channels, label)
    layout = shape["layout"]
    inputs = numpy_inputs(shape, 2, np.float32, seed=70)
    want = iam_host(inputs["tokens"], inputs["importance"], inputs["weight"], inputs["bias"], layout.height,
                    layout.width, layout.group_sizes, layout.tier_sizes)
    driver = Driver() if device == "cuda" else None
    if driver is not None:
        driver.primary_context(driver.device(0))
        memory = DeviceMemory(driver, _cuda_shim(), 0)
    else:
        memory = HostMemory()
    rows = [case_row("primary context before the reset", shape, np.float32, device,
                     np_mismatches(run_op(memory, inputs, layout), want), "vs host reference"),
            _after_reset(driver, shape, inputs, want)]
    return finish({"rows": rows, "summary": _summary(rows, "runs equal to the host reference")}, device)


# ---------------------------------------------------------------------------------------------- offset views


def offset_view(t, offset: int):
    """``t``'s values in a contiguous view ``offset`` elements into a NaN-filled buffer on t's device: ``.contiguous()``
    keeps it, ``data_ptr()`` is only element-aligned, and a read off by the offset meets NaN."""
    import torch

    buffer = torch.full((t.numel() + offset,), float("nan"), dtype=t.dtype, device=t.device)
    view = buffer[offset:].view(t.shape)
    view.copy_(t)
    return view


def vector_widths(harness: Optional[str], batch: int, out_tokens: int, channels: int, element_bytes: int,
                  offset: int) -> tuple[Optional[int], Optional[int]]:
    """The aggregation's vector width for aligned tokens and for tokens ``offset`` elements off (the launcher's own
    choice, asked through the kernel harness; host code, no GPU needed), or (None, None) without a harness."""
    if not harness:
        return None, None
    fn = ctypes.CDLL(harness).sgformer_iam_cuda_vector_width
    fn.argtypes, fn.restype = [ctypes.c_int] * 6, ctypes.c_int
    return fn(batch, out_tokens, channels, element_bytes, 0, 0), fn(batch, out_tokens, channels, element_bytes, offset, 0)


def _struct_through_host_reference(view, importance, weights, biases, layout, like):
    """The CUDA path's launch struct (torch_op._device_call) built from CPU offset views, run by the host reference
    (same struct): what the launcher would be handed, checked without a GPU."""
    import torch

    from pipeline.iam.torch_op import _device_call

    weight, bias = torch.cat(weights), torch.cat(biases)
    groups = (ctypes.c_int32 * len(layout.group_sizes))(*layout.group_sizes)
    tiers = (ctypes.c_int32 * len(layout.tier_sizes))(*layout.tier_sizes)
    row, col = torch.zeros_like(like[0]), torch.zeros_like(like[1])
    call = _device_call(view, importance, weight, bias, layout.height, layout.width, groups, tiers, row, col)
    memory = HostMemory()
    memory.launch(call, view.shape[0], view.shape[1])
    return row, col


def _offset_rows(spec: tuple, device: str, harness: Optional[str], seed: int) -> list[dict]:
    import torch

    from pipeline.iam.torch_op import iam_fused

    sr, side, channels, batch, label, dtype_text, offset = spec
    dtype = getattr(torch, dtype_text)
    shape = single_shape(sr, side, channels, label)
    layout = shape["layout"]
    tokens, importance, weights, biases = merge_inputs(shape, batch, dtype, device, seed=seed)
    contiguous = iam_fused(tokens.clone(), importance.clone(), weights, biases, layout)
    view, imp_view = offset_view(tokens, offset), offset_view(importance, 1)
    runs = [("offset view through the op's " + ("CUDA path" if device == "cuda" else "CPU path"),
             iam_fused(view, imp_view, weights, biases, layout))]
    if device != "cuda":
        runs.append(("offset view: the CUDA path's launch struct -> host reference",
                     _struct_through_host_reference(view, imp_view, weights, biases, layout, contiguous)))
    aligned, narrowed = vector_widths(harness, batch, layout.out_tokens, channels, tokens.element_size(), offset)
    provokes = aligned is None or aligned > narrowed
    rows = []
    for case, got in runs:
        row = case_row(case, shape, dtype, device, bit_mismatches(got, contiguous),
                       f"storage offset {offset} ({offset * tokens.element_size()} B) vs contiguous"
                       + ("" if provokes else "; the offset does not narrow the vector width: vacuous")
                       + ("" if aligned is not None else "; vector widths unknown (no kernel harness)"))
        row.update(vector_width_aligned=aligned, vector_width_offset=narrowed, passed=row["passed"] and provokes)
        rows.append(row)
    return rows


def worker_offset_view(args) -> dict:
    import torch

    device = device_of(args)
    rows = []
    with torch.no_grad():
        for i, spec in enumerate(OFFSET_CASES):
            rows += _offset_rows(spec, device, args.harness, seed=80 + i)
    if device == "cuda":
        torch.cuda.synchronize()  # a misaligned access is sticky: it would surface here at the latest
    return finish({"rows": rows, "summary": _summary(rows, "offset-view runs equal to contiguous")}, device)
