"""scripts/gpu_check (``make gpu-check``) without a GPU: the dry run builds the CUDA libraries for sm_90 with nvcc
alone (the path of a GPU machine without cmake) and runs every worker and every issue-25 case on the CPU, so the
package cannot rot; the report rendering, the sanitizer verdicts, the cases' gates (each with a planted bug) and the
driver-API code path's error handling (a fake driver) are checked on synthetic data."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toolchains import require_tool

from scripts.gpu_check import cases, common, memory, report, runner, sanitizer, shapes, workers

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "scripts" / "gpu_check"


def test_without_a_gpu_it_falls_back_to_the_dry_run_and_builds_for_sm90(tmp_path):
    from pipeline.iam.torch_op import _find_nvcc

    if _find_nvcc() is None:
        if os.environ.get("SGFORMER_REQUIRE_NVCC") == "1":
            pytest.fail("nvcc not found")
        pytest.skip("nvcc not found")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: `make gpu-check` runs the full check there")
    out = tmp_path / "report"
    # No --dry-run: a machine without a GPU must notice it by itself (nvidia-smi / torch.cuda).
    proc = subprocess.run([sys.executable, str(PACKAGE), "--out", str(out), "--arch", "90", "--builder", "nvcc",
                           "--build-dir", str(REPO_ROOT / "build" / "pytest-gpu-check")],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["mode"] == "dry-run" and report["passed"], report["verdict"]
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["build"]["status"] == "pass", steps["build"]["summary"]
    assert steps["build"]["details"]["arch"] == "sm_90"
    libs = steps["build"]["details"]["libraries"]
    assert all(Path(p).is_file() for p in libs.values()), libs
    symbols = steps["build"]["details"]["torch_shim_symbols"]
    if symbols is None:  # no nm: the check would be vacuous (binutils comes with g++, so CI has it)
        require_tool("nm")  # fails in CI (SGFORMER_REQUIRE_CXX=1), skips with the tool named elsewhere
        pytest.fail("nm is on PATH but the build step listed no symbols of the shim")
    else:
        assert "sgformer_iam_torch_launch" in symbols, symbols
    for name in ("pytest-gpu", "memcheck", "racecheck"):
        assert steps[name]["status"] == "skip" and "not run" in steps[name]["summary"]
    for name in ("op-parity", "model-parity", "op-timing", "model-timing"):
        assert steps[name]["status"] == "pass", (name, steps[name]["summary"], steps[name]["details"].get("error"))
        assert steps[name]["details"]["rows"], name
    # the dry run's op parity is against the reference path (the CPU op against itself would prove nothing)
    op_rows = steps["op-parity"]["details"]["rows"]
    assert all(r["bit_mismatches"] is None and r["vs_reference_error_over_bound"] <= 1.0 for r in op_rows), op_rows
    assert {r["dtype"] for r in op_rows} == {"float32", "float16"}
    # The issue-25 cases ran their CPU part, passed it, and say they did not run on a GPU (never "pass").
    for name in common.CONTEXT_CASES:
        step = steps[name]
        assert step["status"] == "dry-run", (name, step["summary"], step["details"].get("error"))
        assert step["summary"].startswith("dry run: not executed on a GPU"), step["summary"]
        rows = step["details"]["rows"]
        assert rows and all(r["passed"] and r["bit_mismatches"] == 0 for r in rows), rows
        assert all(r["executed_on"].startswith("cpu (dry run") for r in rows), rows
    assert {r["case"] for r in steps["second-context"]["details"]["rows"]} >= {
        "second context (cuCtxCreate)", "second context, recreated", "after a primary-context reset"}
    # The offset views narrow the launcher's vector width (asked through the harness built for sm_90).
    for r in steps["offset-view"]["details"]["rows"]:
        assert r["vector_width_aligned"] > r["vector_width_offset"] >= 1, r
    assert report["iam_share"] and 0 < report["iam_share"][0]["share_fused"] < 1
    text = (out / "gpu-check.md").read_text()
    assert "dry run" in text and "## Model logits" in text and "Not proven" in text
    assert "## CUDA-graph capture of sgformer::iam" in text and "| second-context | dry-run |" in text
    assert "gpu-check dry-run: PASS" in proc.stdout
    assert any(line.split()[:2] == ["graph-capture", "dry-run"] for line in proc.stdout.splitlines()), proc.stdout


def test_iam_share_and_the_full_report_render():
    found = shapes.iam_shapes(("s", "m", "b"), (224, 448))
    assert len(found) == 12  # s and m share channels, so 6 shapes each for s/m and b
    assert sum(s["blocks"]["s"] for s in found if "s" in s["variants"] and s["res"] == 224) == 11
    op_rows = [{"variants": ["s", "m"], "res": 224, "batch": 1, "blocks": {"s": 8, "m": 14}, "fused_ms": 0.1,
                "reference_ms": 0.5}]
    model_rows = [{"variant": "s", "img_size": 224, "batch": 1, "fused_ms": 10.0, "reference_ms": 14.0}]
    share = report.iam_share(op_rows, model_rows)
    assert share == [{"variant": "s", "img_size": 224, "batch": 1, "iam_ops": 8, "iam_fused_ms": pytest.approx(0.8),
                      "iam_reference_ms": pytest.approx(4.0), "share_fused": pytest.approx(0.08),
                      "share_reference": pytest.approx(4.0 / 14.0)}]
    case = {"case": "second context (cuCtxCreate)", "shape": "s stage1 448 C64 N12544", "dtype": "float32",
            "executed_on": "cuda", "bit_mismatches": 0, "detail": "driver-API buffers", "passed": True}
    rep = {"mode": "full", "verdict": "FAIL: model-parity", "started": "now", "seconds": 100.0, "budget_s": 360.0,
           "command": "python3 scripts/gpu_check", "iam_share": share, "not_proven": report.NOT_PROVEN,
           "environment": {"gpus": [{"name": "NVIDIA H200", "driver": "580.1", "compute_cap": "9.0"}],
                           "packages": {"torch": "2.11.0+cu130"}, "tools": {"ncu": None}, "python": "3.12",
                           "python_executable": "/usr/bin/python3", "nvcc": "13.0"},
           "steps": [{"name": "model-parity", "status": "fail", "seconds": 3.0, "summary": "1/2 within tolerance",
                      "details": {"rows": [{"variant": "b", "res": 224, "batch": 2, "comparison": "cuda fused vs "
                                            "cpu reference", "max_abs": 3e-3, "atol": 1e-4, "passed": False}],
                                  "output_tail": "boom"}},
                     {"name": "second-context", "status": "pass", "seconds": 2.0, "summary": "6/6",
                      "details": {"rows": [case]}},
                     {"name": "offset-view", "status": "dry-run", "seconds": 2.0, "summary": "dry run: ...",
                      "details": {"rows": [{**case, "case": "offset view", "vector_width_aligned": 4,
                                            "vector_width_offset": 1}]}}]}
    text = report.render_markdown(rep)
    for needle in ("NVIDIA H200", "| driver | 580.1 |", "cuda fused vs cpu reference", "0.003", "IAM share",
                   "## model-parity output (tail)", "boom", "TensorRT", "## sgformer::iam in a second CUDA context",
                   "| second context (cuCtxCreate) | s stage1 448 C64 N12544 | float32 | cuda | 0 |",
                   "| offset view | s stage1 448 C64 N12544 | float32 | cuda | 0 | driver-API buffers | True | 4 | 1 |",
                   "Status `dry-run`: the case's CPU part ran and passed; it was not executed on a GPU."):
        assert needle in text, needle


@pytest.mark.parametrize("output,code,status", [
    ("========= Error: Device not supported by this version of compute-sanitizer\n", 255, "skip"),
    ("========= Invalid __global__ read of size 4\n========= ERROR SUMMARY: 3 errors\n", 86, "fail"),
])
def test_sanitizer_verdicts(tmp_path, monkeypatch, output, code, status):
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {code}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    run = runner.Run(tmp_path / "out", 60.0)
    run.env["SGFORMER_KERNEL_HARNESS_LIB"] = "/nonexistent/harness.so"
    record = run.step("memcheck", lambda t: sanitizer.step_sanitizer(run, "memcheck", t))
    assert record["status"] == status, record


def test_a_step_that_does_not_fit_the_budget_is_skipped_and_an_exception_fails_it(tmp_path):
    run = runner.Run(tmp_path, 30.0)
    boom = run.step("op-parity", lambda t: 1 / 0)
    assert boom["status"] == "fail" and "ZeroDivisionError" in boom["summary"]
    ok = run.step("op-timing", lambda t: {"passed": True, "summary": f"got {t:.0f} s", "rows": []})
    assert ok["status"] == "pass" and ok["summary"] == "got 25 s"  # 30 s total minus the report reserve
    run.deadline = run.start + 10  # 5 s left after the reserve: below op-timing's minimum of 15 s
    late = run.step("model-timing", lambda t: {"passed": True})
    assert late["status"] == "skip" and "budget" in late["summary"]


_FAKE_HARNESS = r"""
#include <stdint.h>
#include "sgformerIamRef.h"
static int run(int type, const void* t, const float* i, const float* w, const float* b, int B, int H, int W, int C,
               const int* g, const int* n, int k, void* r, void* c)
{
    SgformerIamCall call = {type, B, H, W, C, k, g, n, t, i, w, b, r, c};
    int status = sgformer_iam_ref_run(&call);
#ifdef PLANTED
    ((unsigned char*)r)[0] ^= 1u;  /* a kernel that gets one bit of one output wrong */
#endif
    return status;
}
int sgformer_iam_cuda_fp32(const float* t, const float* i, const float* w, const float* b, int B, int H, int W, int C,
                           const int* g, const int* n, int k, float* r, float* c)
{ return run(SGFORMER_IAM_FLOAT32, t, i, w, b, B, H, W, C, g, n, k, r, c); }
int sgformer_iam_cuda_fp16(const uint16_t* t, const float* i, const float* w, const float* b, int B, int H, int W,
                           int C, const int* g, const int* n, int k, uint16_t* r, uint16_t* c)
{ return run(SGFORMER_IAM_FLOAT16, t, i, w, b, B, H, W, C, g, n, k, r, c); }
const char* sgformer_iam_cuda_last_error(void) { return ""; }
"""


@pytest.mark.parametrize("planted", [False, True], ids=["host-reference", "planted-one-bit"])
def test_sanitizer_worker_runs_every_case_through_a_harness(tmp_path, planted):
    """The worker compute-sanitizer wraps, against a stand-in harness (the host reference under the harness's C
    names), so its case loop and comparison run in CI; under the real sanitizer it gets the CUDA harness. The
    stand-in equals the reference by construction, so a planted harness that flips one bit of one output shows the
    worker's bit-for-bit comparison failing every case."""
    import shutil

    from pipeline.iam.host import build_host_library

    cc = shutil.which("gcc") or shutil.which("cc") or require_tool("gcc")
    ref = build_host_library(REPO_ROOT / "build" / "pytest-plugins-ref")
    source = tmp_path / "fake_harness.c"
    source.write_text(_FAKE_HARNESS)
    harness = tmp_path / "libfake_harness.so"
    subprocess.run([cc, "-shared", "-fPIC", *(["-DPLANTED"] if planted else []), "-I",
                    str(REPO_ROOT / "plugins" / "sgformer_iam"), str(source), "-o",
                    str(harness), f"-L{ref.parent}", "-lsgformer_iam_ref",
                    f"-Wl,-rpath,{ref.parent}"], check=True)
    result = tmp_path / "result.json"
    env = dict(os.environ, SGFORMER_IAM_REF_LIB=str(ref))
    proc = subprocess.run([sys.executable, str(PACKAGE), "--worker", "sanitize-case", "--result", str(result),
                           "--harness", str(harness), "--cases", json.dumps(sanitizer.sanitizer_cases())],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    out = json.loads(result.read_text())
    assert len(out["rows"]) == 2 * len(sanitizer.SANITIZER_CASES)  # fp32 and fp16, one path ("auto")
    assert {r["sr"] for r in out["rows"]} == {8, 4, 2}
    if planted:
        assert not out["passed"] and not any(r["passed"] for r in out["rows"]), out
    else:
        assert proc.returncode == 0 and out["passed"], (out, proc.stderr[-2000:])


@pytest.mark.parametrize("venv", ["usable", "missing"])
def test_make_gpu_check_with_a_bare_python3_says_so_in_one_line(tmp_path, venv):
    """``make gpu-check`` on a machine with no GPU whose python3 has no torch (issue 20): one line that says so and
    what it checked instead, exit 0. With the project's venv it hands the dry run over to it (here a stand-in venv
    interpreter that records its arguments, so the test does not rebuild the CUDA libraries); without one it says
    what it skipped. Planted control: a python3 *with* torch does not take this path (no such line)."""
    import shutil as _shutil

    bare = "/usr/bin/python3"
    if subprocess.run([bare, "-c", "import torch"], capture_output=True, check=False).returncode == 0:
        pytest.skip("/usr/bin/python3 has torch here: no bare interpreter to test with")
    if _shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        pytest.skip("this machine has a GPU")
    record = tmp_path / "venv-args.txt"
    stand_in = tmp_path / "venv-python"
    if venv == "usable":  # imports succeed for the probe; the hand-over writes its argv and exits 0
        stand_in.write_text(f"#!/bin/sh\n[ \"$1\" = -c ] && exit 0\necho \"$@\" > {record}\nexit 0\n")
        stand_in.chmod(0o755)
    out = tmp_path / "report"
    env = dict(os.environ, GPU_CHECK_VENV_PYTHON=str(stand_in))
    proc = subprocess.run(["make", "-s", "gpu-check", f"GPU_CHECK_PYTHON={bare}", f"GPU_CHECK_OUT={out}"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no GPU here and"), proc.stdout
    assert "Traceback" not in proc.stderr
    if venv == "usable":
        assert "dry run with" in lines[0] and str(out) in record.read_text()
    else:
        assert "checked nothing that needs torch" in lines[0] and not out.exists()
    # An interpreter with torch (the venv's) keeps the run itself; a 1 s budget skips every step at once.
    planted = subprocess.run([sys.executable, str(PACKAGE), "--out", str(tmp_path / "p"), "--dry-run", "--budget", "1"],
                             capture_output=True, text=True, env=env, timeout=300, check=False)
    assert "no GPU here and" not in planted.stdout
    assert planted.returncode == 0 and "Traceback" not in planted.stderr, planted.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- the package itself


def test_every_worker_name_the_cli_accepts_has_a_worker():
    assert set(workers.WORKERS) == set(common.WORKER_NAMES)


@pytest.mark.parametrize("how", ["directory", "module", "bare-python3"])
def test_both_entry_points_start_and_the_cli_needs_only_the_standard_library(tmp_path, how):
    """``python3 scripts/gpu_check`` from anywhere, ``python3 -m scripts.gpu_check`` from the root; the command line
    itself imports no numpy/torch (a GPU machine's bare python3 must reach its one-line message)."""
    if how == "bare-python3":
        bare = "/usr/bin/python3"
        if not Path(bare).is_file():
            pytest.skip("no /usr/bin/python3")
        command, cwd = [bare, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import scripts.gpu_check.cli; "
                        "print(sorted(m for m in ('numpy', 'torch', 'pipeline') if m in sys.modules))",
                        str(REPO_ROOT)], tmp_path
    else:
        command = [sys.executable, str(PACKAGE), "--help"] if how == "directory" else \
            [sys.executable, "-m", "scripts.gpu_check", "--help"]
        cwd = tmp_path if how == "directory" else REPO_ROOT
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if how == "bare-python3":
        assert proc.stdout.strip() == "[]", proc.stdout
    else:
        assert "usage: python3 scripts/gpu_check" in proc.stdout and "--dry-run" in proc.stdout


# Issue 20 item 5 for the GPU check (modules <= 500 lines, functions <= 80): tests/test_imports.py checks
# pipeline/, calibration/ and scripts/ (this package included), with its planted control.


# ---------------------------------------------------------------------------------------------- the issue-25 cases


def test_a_case_on_the_cpu_is_a_dry_run_never_a_pass():
    """The report's rule for the GPU cases: passing CPU rows give status "dry-run" with the note; on CUDA the same
    rows pass. Planted: a failing CPU row fails the step (a dry run is not a free pass)."""
    ok = {"case": "x", "passed": True}
    dry = cases.finish({"rows": [ok], "summary": "1/1"}, "cpu")
    assert dry["status"] == "dry-run" and dry["summary"].startswith("dry run: not executed on a GPU")
    assert "status" not in cases.finish({"rows": [ok], "summary": "1/1"}, "cuda")  # -> "pass" in Run.step
    planted = cases.finish({"rows": [ok, {"case": "y", "passed": False}], "summary": "1/2"}, "cpu")
    assert planted["status"] == "fail" and not planted["passed"]


def test_dry_run_op_parity_is_against_the_reference_path_and_a_planted_op_fails_it(host_library, monkeypatch):
    """Without a GPU the op parity compares the CPU op (fp32 and fp16) with the independent reference path within
    the derived bound. Planted: an op that is off by 1e-3 of a value (fp32) or by 2 fp16 steps (fp16) fails."""
    import types

    import torch

    import pipeline.iam.torch_op as torch_op

    args = types.SimpleNamespace(device="cpu", variants=("s",), resolutions=(224,))
    honest = workers.worker_op_parity(args)
    assert honest["passed"], honest["rows"]
    assert all(r["bit_mismatches"] is None for r in honest["rows"]) and "CPU stand-in" in honest["summary"]
    real = torch_op.iam_fused

    def planted(*a, **k):
        outs = [t.clone() for t in real(*a, **k)]
        step = 1e-3 if outs[0].dtype == torch.float32 else 2.0 ** -9  # two fp16 steps near 1
        outs[0].view(-1)[7] += step * (1.0 + outs[0].view(-1)[7].abs())
        return tuple(outs)

    monkeypatch.setattr(torch_op, "iam_fused", planted)
    caught = workers.worker_op_parity(args)
    assert not caught["passed"]
    assert all(not r["passed"] and r["vs_reference_error_over_bound"] > 1.0 for r in caught["rows"]), caught["rows"]


def test_graph_capture_rows_and_a_planted_replay_that_ignores_new_inputs(host_library, monkeypatch):
    """The CPU part of the graph-capture case (same code, the CPU op, no graph) passes; planted: a "graph" whose
    replay returns the outputs of the capture whatever the inputs (a capture that baked its inputs in) fails the
    new-inputs row."""
    import torch

    shape = shapes.single_shape(4, 14, 32, "small")
    rows = cases._capture_rows(shape, torch.float32, "cpu", seed=1)
    assert [r["passed"] for r in rows] == [True, True], rows

    def stale_capture(fn, device):
        frozen = [t.clone() for t in fn()]
        return lambda: frozen

    monkeypatch.setattr(cases, "capture", stale_capture)
    planted = cases._capture_rows(shape, torch.float32, "cpu", seed=1)
    assert planted[0]["passed"] and not planted[1]["passed"] and planted[1]["bit_mismatches"] > 0


def test_offset_view_rows_and_planted_base_pointer_and_vacuous_offset(host_library, monkeypatch):
    """The CPU part of the offset-view case passes. Planted: (1) the CUDA path's launch struct built from the
    storage's base pointer (offset dropped) fails the struct row; (2) an offset that leaves the vector width as it is
    (a case that provokes nothing) fails as vacuous."""
    import pipeline.iam.torch_op as torch_op

    spec = (2, 14, 64, 2, "small", "float32", 1)
    rows = cases._offset_rows(spec, "cpu", None, seed=2)
    assert len(rows) == 2 and all(r["passed"] for r in rows), rows
    honest = torch_op._device_call

    def base_pointer_call(tokens, *args):
        call = honest(tokens, *args)
        call.tokens = tokens.untyped_storage().data_ptr()
        return call

    monkeypatch.setattr(torch_op, "_device_call", base_pointer_call)
    planted = cases._offset_rows(spec, "cpu", None, seed=2)
    assert planted[0]["passed"] and not planted[1]["passed"] and planted[1]["bit_mismatches"] > 0
    monkeypatch.setattr(torch_op, "_device_call", honest)
    monkeypatch.setattr(cases, "vector_widths", lambda *a: (4, 4))
    vacuous = cases._offset_rows(spec, "cpu", None, seed=2)
    assert not any(r["passed"] for r in vacuous) and "vacuous" in vacuous[0]["detail"]


class _ShiftedTokens(memory.HostMemory):
    """Planted: the token buffer's address handed over one element late (a launcher given the wrong pointer)."""

    def upload(self, array):
        if array.ndim != 3:
            return super().upload(array)
        ptr = self.alloc(array.nbytes + array.itemsize)
        ctypes.memmove(ptr, np.ascontiguousarray(array).ctypes.data, array.nbytes)
        return ptr + array.itemsize


def test_context_case_call_struct_through_host_memory_and_a_planted_wrong_pointer(host_library):
    """run_op builds the one IamCall from buffer addresses (what the second-context case hands the shim on a GPU) and
    equals the host reference; planted: a shifted token pointer is caught by the case's comparison."""
    from pipeline.iam.host import iam_host

    shape = shapes.single_shape(8, 28, 16, "small")
    layout = shape["layout"]
    for dtype in (np.float32, np.float16):
        inputs = cases.numpy_inputs(shape, 2, dtype, seed=3)
        want = iam_host(inputs["tokens"], inputs["importance"], inputs["weight"], inputs["bias"], 28, 28,
                        layout.group_sizes, layout.tier_sizes)
        assert cases.np_mismatches(memory.run_op(memory.HostMemory(), inputs, layout), want) == 0
        assert cases.np_mismatches(memory.run_op(_ShiftedTokens(), inputs, layout), want) > 0


class _FakeDriver:
    """The driver-API calls of DeviceMemory and the reset row, recorded; allocations get distinct fake addresses."""

    def __init__(self):
        self.calls = []

    def call(self, name, *args):
        self.calls.append(name)
        if name == "cuMemAlloc_v2":
            args[0]._obj.value = 4096 * len(self.calls)

    def device(self, ordinal):
        return ctypes.c_int(ordinal)

    def reset_primary_context(self, dev):
        self.calls.append("reset")

    def primary_context(self, dev):
        self.calls.append("primary")


class _FakeShim:
    def __init__(self, error: str):
        self.error = error

    def sgformer_iam_torch_workspace_size(self, batch, num_tokens):
        return 256

    def sgformer_iam_torch_launch(self, call, workspace, nbytes, stream, device):
        return 3

    def sgformer_iam_torch_last_error(self):
        return self.error.encode()


@pytest.mark.parametrize("error,expected", [
    ("SGFormerIAM (torch): launchSgformerIam: cudaErrorInvalidValue (invalid argument)", "fail"),
    ("SGFormerIAM (torch): selecting the device: cudaErrorContextIsDestroyed (context is destroyed)", "inconclusive"),
])
def test_reset_row_on_the_device_path_with_a_fake_driver(monkeypatch, error, expected):
    """The GPU code path of the reset row without a GPU: reset, primary context again, then the shim; the shim's
    failure is a failed row when the kernel's own error (the missing attribute gives cudaErrorInvalidValue), and
    "inconclusive" when the context went away under the shim's runtime (not the kernel's fault; the step still
    passes and says so)."""
    monkeypatch.setattr(cases, "_cuda_shim", lambda: _FakeShim(error))
    driver = _FakeDriver()
    shape = shapes.single_shape(8, 28, 16, "small")
    row = cases._after_reset(driver, shape, cases.numpy_inputs(shape, 1, np.float32, seed=4), None)
    assert driver.calls[:3] == ["reset", "primary", "cuMemAlloc_v2"] and "cuMemFree_v2" in driver.calls
    assert not row["passed"] and row["executed_on"] == "cuda" and "cudaError" in row["detail"]
    assert row.get("status", "fail") == expected
    result = cases.finish({"rows": [row], "summary": "x"}, "cuda")
    assert result["passed"] == (expected == "inconclusive") and "status" not in result
