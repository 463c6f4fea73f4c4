"""scripts/gpu_check.py (``make gpu-check``) without a GPU: the dry run builds the CUDA libraries for sm_90 with
nvcc alone (the path of a GPU machine without cmake) and runs every worker on the CPU, so the script cannot rot;
the report rendering and the sanitizer verdicts are checked on synthetic data."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toolchains import require_tool

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--arch", "90", "--builder", "nvcc",
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
    assert "sgformer_iam_torch_launch" in (steps["build"]["details"]["torch_shim_symbols"] or ["(no nm)",
                                                                                            "sgformer_iam_torch_launch"])
    for name in ("pytest-gpu", "memcheck", "racecheck"):
        assert steps[name]["status"] == "skip" and "not run" in steps[name]["summary"]
    for name in ("op-parity", "model-parity", "op-timing", "model-timing"):
        assert steps[name]["status"] == "pass", (name, steps[name]["summary"], steps[name]["details"].get("error"))
        assert steps[name]["details"]["rows"], name
    assert all(r["bit_mismatches"] == 0 for r in steps["op-parity"]["details"]["rows"])
    assert report["iam_share"] and 0 < report["iam_share"][0]["share_fused"] < 1
    text = (out / "gpu-check.md").read_text()
    assert "dry run" in text and "## Model logits" in text and "Not proven" in text
    assert "gpu-check dry-run: PASS" in proc.stdout


def test_iam_share_and_the_full_report_render():
    gpu_check = _load_script()
    shapes = gpu_check.iam_shapes(("s", "m", "b"), (224, 448))
    assert len(shapes) == 12  # s and m share channels, so 6 shapes each for s/m and b
    assert sum(s["blocks"]["s"] for s in shapes if "s" in s["variants"] and s["res"] == 224) == 11
    op_rows = [{"variants": ["s", "m"], "res": 224, "batch": 1, "blocks": {"s": 8, "m": 14}, "fused_ms": 0.1,
                "reference_ms": 0.5}]
    model_rows = [{"variant": "s", "img_size": 224, "batch": 1, "fused_ms": 10.0, "reference_ms": 14.0}]
    share = gpu_check.iam_share(op_rows, model_rows)
    assert share == [{"variant": "s", "img_size": 224, "batch": 1, "iam_ops": 8, "iam_fused_ms": pytest.approx(0.8),
                      "iam_reference_ms": pytest.approx(4.0), "share_fused": pytest.approx(0.08),
                      "share_reference": pytest.approx(4.0 / 14.0)}]
    report = {"mode": "full", "verdict": "FAIL: model-parity", "started": "now", "seconds": 100.0, "budget_s": 360.0,
              "command": "python3 scripts/gpu_check.py", "iam_share": share, "not_proven": gpu_check.NOT_PROVEN,
              "environment": {"gpus": [{"name": "NVIDIA H200", "driver": "580.1", "compute_cap": "9.0"}],
                              "packages": {"torch": "2.11.0+cu130"}, "tools": {"ncu": None}, "python": "3.12",
                              "python_executable": "/usr/bin/python3", "nvcc": "13.0"},
              "steps": [{"name": "model-parity", "status": "fail", "seconds": 3.0, "summary": "1/2 within tolerance",
                         "details": {"rows": [{"variant": "b", "res": 224, "batch": 2, "comparison": "cuda fused vs "
                                               "cpu reference", "max_abs": 3e-3, "atol": 1e-4, "passed": False}],
                                     "output_tail": "boom"}}]}
    text = gpu_check.render_markdown(report)
    for needle in ("NVIDIA H200", "| driver | 580.1 |", "cuda fused vs cpu reference", "0.003", "IAM share",
                   "## model-parity output (tail)", "boom", "TensorRT"):
        assert needle in text, needle


@pytest.mark.parametrize("output,code,status", [
    ("========= Error: Device not supported by this version of compute-sanitizer\n", 255, "skip"),
    ("========= Invalid __global__ read of size 4\n========= ERROR SUMMARY: 3 errors\n", 86, "fail"),
])
def test_sanitizer_verdicts(tmp_path, monkeypatch, output, code, status):
    gpu_check = _load_script()
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {code}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    run = gpu_check.Run(tmp_path / "out", 60.0)
    run.env["SGFORMER_KERNEL_HARNESS_LIB"] = "/nonexistent/harness.so"
    record = run.step("memcheck", lambda t: gpu_check.step_sanitizer(run, "memcheck", t))
    assert record["status"] == status, record


def test_a_step_that_does_not_fit_the_budget_is_skipped_and_an_exception_fails_it(tmp_path):
    gpu_check = _load_script()
    run = gpu_check.Run(tmp_path, 30.0)
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
    return sgformer_iam_ref_run(&call);
}
int sgformer_iam_cuda_fp32(const float* t, const float* i, const float* w, const float* b, int B, int H, int W, int C,
                           const int* g, const int* n, int k, float* r, float* c)
{ return run(SGFORMER_IAM_FLOAT32, t, i, w, b, B, H, W, C, g, n, k, r, c); }
int sgformer_iam_cuda_fp16(const uint16_t* t, const float* i, const float* w, const float* b, int B, int H, int W,
                           int C, const int* g, const int* n, int k, uint16_t* r, uint16_t* c)
{ return run(SGFORMER_IAM_FLOAT16, t, i, w, b, B, H, W, C, g, n, k, r, c); }
const char* sgformer_iam_cuda_last_error(void) { return ""; }
"""


def test_sanitizer_worker_runs_every_case_through_a_harness(tmp_path):
    """The worker compute-sanitizer wraps, against a stand-in harness (the host reference under the harness's C
    names), so its case loop and comparison run in CI; under the real sanitizer it gets the CUDA harness."""
    import shutil

    from pipeline.iam.host import build_host_library

    cc = shutil.which("gcc") or shutil.which("cc") or require_tool("gcc")
    ref = build_host_library(REPO_ROOT / "build" / "pytest-plugins-ref")
    source = tmp_path / "fake_harness.c"
    source.write_text(_FAKE_HARNESS)
    harness = tmp_path / "libfake_harness.so"
    subprocess.run([cc, "-shared", "-fPIC", "-I", str(REPO_ROOT / "plugins" / "sgformer_iam"), str(source), "-o",
                    str(harness), f"-L{ref.parent}", "-lsgformer_iam_ref",
                    f"-Wl,-rpath,{ref.parent}"], check=True)
    gpu_check = _load_script()
    result = tmp_path / "result.json"
    env = dict(os.environ, SGFORMER_IAM_REF_LIB=str(ref))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--worker", "sanitize-case", "--result", str(result),
                           "--harness", str(harness), "--cases", json.dumps(gpu_check.sanitizer_cases())],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    out = json.loads(result.read_text())
    assert proc.returncode == 0 and out["passed"], (out, proc.stderr[-2000:])
    assert len(out["rows"]) == 2 * len(gpu_check.SANITIZER_CASES)  # fp32 and fp16, one path ("auto")
    assert {r["sr"] for r in out["rows"]} == {8, 4, 2}


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
    planted = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "p"), "--dry-run", "--budget", "1"],
                             capture_output=True, text=True, env=env, timeout=300, check=False)
    assert "no GPU here and" not in planted.stdout
