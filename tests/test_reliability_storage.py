"""Disk full and other OS errors: one line naming the path and the fix, exit code 2, no partial artifact.

ENOSPC and EROFS are simulated by patching the one call that writes (a tmpfs cannot be mounted in CI); the file-size
limit case is a real kernel refusal (RLIMIT_FSIZE in a child process: writes past it fail with EFBIG). On main each
of these was a raw ``OSError`` traceback, and a build whose ONNX copy did not fit left an engine without a manifest.
"""
from __future__ import annotations

import errno
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from pipeline.cli import main
from reliability_helpers import MM_LABELS, ROOT, child_env, folder_consistent, manifest, mm_onnx, needs_rtx, publish, residue


@pytest.fixture(scope="module")
def tiny_onnx(exported) -> Path:
    return exported("tiny-test", 224).onnx


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _enospc_after_half(src, dst, *args, **kwargs):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


@needs_rtx
@pytest.mark.parametrize("previous", [False, True], ids=["new-folder", "over-a-previous-engine"])
def test_build_whose_onnx_copy_does_not_fit(tmp_path, monkeypatch, capsys, previous):
    onnx_path = mm_onnx(tmp_path / "mm.onnx", 0)
    out = tmp_path / "engines"
    folder = out / "mm"
    before = None
    if previous:
        (tmp_path / "old").mkdir()
        old = mm_onnx(tmp_path / "old" / "mm.onnx", 1)
        from reliability_helpers import fake_info
        from pipeline.stages.build import BuildConfig, save_engine_dir

        engine = b"previous engine" * 1000
        save_engine_dir(out, engine, fake_info(old, engine), variant="mm", precision="fp32", img_size=8,
                        weights="x", onnx_file=str(old), config=BuildConfig(), dir_name="mm")
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    argv = ["build", "--onnx", str(onnx_path), "--out-dir", str(out), "--name", "mm", *MM_LABELS, "--backend", "tensorrt-rtx",
            "--max-batch", "2"]
    with monkeypatch.context() as m:
        m.setattr(shutil, "copyfile", _enospc_after_half)
        assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "no space left" in line and "ENOSPC" in line and str(folder) in line and "free space" in line
    if previous:
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # old folder untouched
    else:
        assert not list(folder.glob("*.engine"))  # no engine without a manifest
        assert not (folder / "manifest.json").exists()
    assert residue(folder) == [] if folder.exists() else True
    assert main(argv) == 0  # space again: the rerun completes
    assert folder_consistent(folder) == [] and manifest(folder)["onnx"]["file"] == "mm.onnx"


def test_disk_full_while_writing_an_onnx(tiny_onnx, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out" / "model.fp16.onnx"
    argv = ["calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16", "-o", str(out)]

    def save_model(model, path, *args, **kwargs):
        Path(path).write_bytes(model.SerializeToString()[:4096])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(onnx, "save_model", save_model)
        assert main(argv) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and "ENOSPC" in line and "-o" in line
    assert sorted(p.name for p in out.parent.iterdir()) == []  # neither the artifact nor its temp
    assert main(argv) == 0 and out.is_file()


def test_read_only_file_system(tiny_onnx, tmp_path, monkeypatch, capsys):
    import os

    out = tmp_path / "out" / "model.fp16.onnx"
    argv = ["calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16", "-o", str(out)]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == out:
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "read-only file system" in line and str(out) in line
    assert list(out.parent.iterdir()) == []
    assert main(argv) == 0


def test_file_size_limit_is_a_real_os_refusal(tiny_onnx, tmp_path):
    """RLIMIT_FSIZE below the ONNX size: the kernel refuses the write (EFBIG), as a full disk refuses with ENOSPC."""
    out = tmp_path / "out" / "model.fp16.onnx"
    argv = [sys.executable, "-m", "pipeline.cli", "calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16",
            "-o", str(out)]
    limit = 256 * 1024  # the tiny fp16 ONNX is ~1 MB

    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_writes)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "EFBIG" in lines[0] and str(out) in lines[0]
    assert list(out.parent.iterdir()) == []  # no partial ONNX, no temp
    rerun = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and out.is_file(), rerun.stderr[-2000:]
