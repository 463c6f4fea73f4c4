"""Supply chain of the plugin's TensorRT headers: scripts/fetch_trt_headers.sh unpacks only a wheel with the pinned
sha256 (pip's --require-hashes, then its own check); a different wheel is refused and nothing is written."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fetch_trt_headers.sh"


def _wheel(path: Path) -> Path:
    """A synthetic wheel with the layout the script unpacks (two header files)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("kernel_lens/include/tensorrt/NvInfer.h", "// synthetic\n")
        zf.writestr("kernel_lens/include/tensorrt/NvInferVersion.h",
                    "#define TRT_MAJOR_ENTERPRISE 10\n#define TRT_MINOR_ENTERPRISE 14\n#define TRT_PATCH_ENTERPRISE 1\n")
    return path


def _run(dest: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(dest)], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_the_download_is_pinned_by_sha256_and_checked_by_pip():
    text = SCRIPT.read_text()
    pins = re.findall(r'PINNED_SHA256="([0-9a-f]{64})"', text)
    assert len(pins) == 1
    assert "--require-hashes" in text and "--hash=sha256:${expected_sha256}" in text
    assert 'WHEEL_VERSION="2.0.1"' in text and "pypi.org/project/kernel-lens/2.0.1" in text  # documented source


def test_a_wheel_with_another_sha256_is_refused_and_nothing_is_written(tmp_path):
    """Planted: a wheel that is not the pinned one (same layout, other bytes) must not be unpacked."""
    wheel = _wheel(tmp_path / "kernel_lens-2.0.1-py3-none-any.whl")
    proc = _run(tmp_path / "out", TRT_HEADERS_WHEEL=str(wheel))
    assert proc.returncode != 0 and "sha256 mismatch" in proc.stderr
    assert not (tmp_path / "out" / "include" / "NvInfer.h").exists()


def test_a_wheel_with_the_expected_sha256_is_unpacked(tmp_path):
    """Control for the refusal above: the same check passes when the hash matches (a vetted local wheel)."""
    wheel = _wheel(tmp_path / "kernel_lens-2.0.1-py3-none-any.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    proc = _run(tmp_path / "out", TRT_HEADERS_WHEEL=str(wheel), TRT_HEADERS_WHEEL_SHA256=digest)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "include" / "NvInfer.h").read_text() == "// synthetic\n"
    assert "10.14.1" in proc.stdout


def test_the_pin_can_only_be_replaced_for_a_local_wheel(tmp_path):
    proc = _run(tmp_path / "out", TRT_HEADERS_WHEEL_SHA256="0" * 64)
    assert proc.returncode != 0 and "needs TRT_HEADERS_WHEEL" in proc.stderr
