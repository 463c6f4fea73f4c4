"""One-shot GPU acceptance run of sgformer-trt (``make gpu-check``): everything a CUDA machine without TensorRT
can prove, in one command of at most 6 minutes, into ``gpu-check.json`` and ``gpu-check.md``.

Usage::

    python3 scripts/gpu_check --out DIR                       # full run on a CUDA machine (= make gpu-check)
    python3 scripts/gpu_check --out DIR --dry-run --arch 90   # no GPU needed: build for sm_90, CPU stand-ins
    python3 -m scripts.gpu_check ...                          # the same, from the repository root

Runs with the machine's own ``python3`` and packages (numpy, torch, the standard library; no venv, no pip, no
network). Steps, each with its own time budget (a step that would not fit the remaining budget is skipped and
says so):

 1. environment    GPU name, driver, compute capability, CUDA, nvcc, torch, optional packages and tools
 2. build          libsgformer_iam_torch.so + the kernel test harness for the local GPU's architecture (nvcc, no
                   TensorRT) and the C++ host reference
 3. pytest-gpu     ``pytest -m gpu tests/plugins/test_iam_kernel_gpu.py``: kernel vs host reference, bit-exact
 4. memcheck / racecheck   compute-sanitizer on a small case of every layout (sr 8/4/2, fp32 and fp16)
 5. op-parity      sgformer::iam on CUDA (default and a side stream) vs the op on CPU, bit-exact, every IAM shape
 6. graph-capture  the op captured into a CUDA graph and replayed (same and new inputs): equal to eager
 7. second-context the op in a second CUDA context, a recreated one, and after a primary-context reset
 8. offset-view    tokens misaligned for the vector width (storage offset) through the CUDA path: equal to contiguous
 9. model-parity   SG-Former s and b: CUDA fused vs CUDA reference vs CPU reference logits (stated tolerances)
10. op-timing      CUDA events, every IAM shape at batch 1 and 32: fused kernel vs reference path
11. model-timing   PyTorch CUDA eager, whole model, fused vs reference at batch 1 and 32; IAM share of the time

Exit status: 1 if any step failed, else 0. Without a GPU it says so and runs the dry run: the build for ``--arch``
and every worker on the CPU; steps 6-8 then report ``dry-run`` ("dry run: not executed on a GPU"), never ``pass``.
Steps 5-11 and the sanitizer case run in child processes (``--worker NAME``), so a crash or a hung kernel in one
step is recorded and the others still run.

Modules: cli (arguments, the parent run, the report's verdict), plan (which steps run), runner (budgets, child
processes), environment, build (and the GPU pytest step), sanitizer, workers (parity, timing), cases (the issue-25
cases), memory (driver-API buffers / host stand-in), shapes, report, common.
"""
