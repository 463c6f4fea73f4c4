"""SIGTERM / Ctrl-C / SIGKILL at each stage: a prompt stop, no temp files left (or removed by the next run), the
previous artifacts intact, and a rerun that succeeds.

The child processes are stopped at a known point by a patched, slow step (an ONNX write that stalls, a calibration
batch that stalls, the TensorRT build itself), then signalled. On main SIGTERM killed the process without running
``finally`` (temp files and ~175 MB of onnxruntime quantizer folders left behind), nothing removed them later,
and Ctrl-C during a TensorRT build was lost inside a TensorRT callback while the build ran on.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from reliability_helpers import (folder_consistent, manifest, needs_rtx, publish, residue, run_cli, sha256, spawn,
                                 wait_for, wrapped_cli)


@pytest.fixture(scope="module")
def tiny_onnx(exported) -> Path:
    return exported("tiny-test", 224).onnx


def _stop(proc, sig: int, timeout: float = 180.0) -> tuple[int, str, float]:  # generous: a loaded CI machine
    start = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, time.monotonic() - start


_STALLED_ONNX_WRITE = """
    import time
    import onnx
    def save_model(model, path, *args, **kwargs):  # half an ONNX on disk, then the process is stopped
        with open(path, "wb") as f:
            f.write(model.SerializeToString()[:1000])
        open({mark!r}, "w").close()
        time.sleep(300)
    onnx.save_model = save_model
"""


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_writing_an_onnx(tiny_onnx, tmp_path, sig):
    out = tmp_path / "out" / "model.fp16.onnx"
    mark = tmp_path / "writing"
    argv = ["calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16", "-o", str(out)]
    proc = spawn(wrapped_cli(_STALLED_ONNX_WRITE.format(mark=str(mark)), argv))
    wait_for(mark, proc)
    assert _temps(out.parent)  # the hidden temp exists while writing
    code, err, _ = _stop(proc, sig)
    assert code == (143 if sig == signal.SIGTERM else 130), err[-2000:]
    assert ("terminated" if sig == signal.SIGTERM else "interrupted") in err.splitlines()[-1]
    assert _temps(out.parent) == [] and not out.exists()
    rerun = run_cli(argv)
    assert rerun.returncode == 0 and out.is_file() and _temps(out.parent) == [], rerun.stderr[-2000:]


def test_sigkill_while_writing_an_onnx_is_cleaned_by_the_next_run(tiny_onnx, tmp_path):
    out = tmp_path / "out" / "model.fp16.onnx"
    mark = tmp_path / "writing"
    argv = ["calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16", "-o", str(out)]
    proc = spawn(wrapped_cli(_STALLED_ONNX_WRITE.format(mark=str(mark)), argv))
    wait_for(mark, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert len(_temps(out.parent)) == 1  # SIGKILL: nothing can clean up ...
    rerun = run_cli(argv)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _temps(out.parent) == [] and out.is_file()  # ... the next run does


_STALLED_CALIBRATION = """
    import time
    import calibration.int8 as int8
    _orig = int8._Reader.get_next
    def get_next(self):  # onnxruntime's quantizer has made its temp folders and is collecting ranges
        open({mark!r}, "w").close()
        time.sleep(300)
    int8._Reader.get_next = get_next
"""


def _int8_argv(onnx_path: Path, out: Path) -> list[str]:
    return ["calibrate", "--onnx", str(onnx_path), "--precision", "int8", "--num-images", "2", "--no-cache",
            "-o", str(out)]


def _system_temp_residue(tmp: Path) -> list[str]:
    """What the pipeline and onnxruntime's quantizer put into the temp folder (other libraries keep small files
    there, e.g. a 51-byte session-id file, which are not ours to remove)."""
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("sgformer-", "ort.quant", "tmp")))


def test_sigterm_during_int8_calibration_leaves_no_temp_folders(tiny_onnx, tmp_path):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    out = tmp_path / "out" / "model.int8.onnx"
    mark = tmp_path / "calibrating"
    proc = spawn(wrapped_cli(_STALLED_CALIBRATION.format(mark=str(mark)), _int8_argv(tiny_onnx, out)),
                 TMPDIR=str(systmp))
    wait_for(mark, proc, timeout=300)
    inside = [p.name for p in systmp.rglob("*") if p.is_dir()]
    assert any(n.startswith("ort.quant") for n in inside), inside  # the quantizer's folder exists now
    code, err, _ = _stop(proc, signal.SIGTERM)
    assert code == 143, err[-2000:]
    assert _system_temp_residue(systmp) == [] and not out.exists()
    rerun = run_cli(_int8_argv(tiny_onnx, out), TMPDIR=str(systmp))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert out.is_file() and _system_temp_residue(systmp) == []


def test_sigkill_during_int8_calibration_is_cleaned_by_the_next_run(tiny_onnx, tmp_path):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    out = tmp_path / "out" / "model.int8.onnx"
    mark = tmp_path / "calibrating"
    proc = spawn(wrapped_cli(_STALLED_CALIBRATION.format(mark=str(mark)), _int8_argv(tiny_onnx, out)),
                 TMPDIR=str(systmp))
    wait_for(mark, proc, timeout=300)
    proc.kill()
    proc.communicate(timeout=60)
    assert _system_temp_residue(systmp)  # left behind by the killed run
    fp16 = tmp_path / "out" / "model.fp16.onnx"  # any next command cleans up
    rerun = run_cli(["calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16", "-o", str(fp16)], TMPDIR=str(systmp))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _system_temp_residue(systmp) == []


_MARK_BUILD_START = """
    import pipeline.backends.tensorrt as trt_backend
    _orig = trt_backend.build_serialized
    def build_serialized(*args, **kwargs):  # the TensorRT builder starts now
        open({mark!r}, "w").close()
        return _orig(*args, **kwargs)
    trt_backend.build_serialized = build_serialized
"""


@needs_rtx
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_tensorrt_build_and_keeps_the_previous_engine(tiny_onnx, tmp_path, sig):
    out = tmp_path / "engines"
    folder = publish(out, tiny_onnx, name="tiny")  # the previous engine
    before = {p.name: sha256(p) for p in folder.iterdir() if p.is_file()}
    mark = tmp_path / "building"
    argv = ["build", "--onnx", str(tiny_onnx), "--out-dir", str(out), "--name", "tiny", "--backend", "tensorrt-rtx",
            "--max-batch", "2"]
    proc = spawn(wrapped_cli(_MARK_BUILD_START.format(mark=str(mark)), argv))
    wait_for(mark, proc, timeout=300)
    time.sleep(2.0)  # well inside the builder (the tiny model's build takes several seconds more)
    code, err, stop_s = _stop(proc, sig)
    assert code == (130 if sig == signal.SIGINT else 143), err[-3000:]
    assert "stopping the TensorRT-RTX build" in err
    assert {p.name: sha256(p) for p in folder.iterdir() if p.is_file()} == before  # previous engine intact
    assert residue(folder) == [] and folder_consistent(folder) == []
    if sig == signal.SIGTERM:
        return
    rerun = run_cli(argv)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert folder_consistent(folder) == [] and residue(folder) == []
    build_s = manifest(folder)["build"]["seconds"]
    # promptly: the interrupted build stopped in well under the time a whole build of this model takes (one run)
    assert stop_s < 0.5 * build_s, (stop_s, build_s)
    assert json.loads((folder / "manifest.json").read_text())["engine"]["sha256"] != before["tiny-test-fp32.engine"]
