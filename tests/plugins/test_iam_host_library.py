"""A damaged host-reference library is refused with a message, not a crash.

On main a library cut short (an interrupted build or copy: its ELF headers still valid) killed the process with
SIGBUS inside ``dlopen``. Each load runs in a child process, so a regression shows as a signal exit code here instead
of killing the test run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.iam.elf import elf_problem

ROOT = Path(__file__).resolve().parents[2]
LOAD = "import sys; from pipeline.iam import host as iam_host; iam_host._load(sys.argv[1]); print('loaded')"


def _load(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOAD, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def good(host_ref_library) -> Path:
    return Path(host_ref_library)


def test_complete_library_loads(good):
    assert elf_problem(good) is None
    result = _load(good)
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr


@pytest.mark.parametrize("keep", [0.2, 0.6, 0.95])
def test_truncated_library_is_refused_with_a_message(good, tmp_path, keep):
    cut = tmp_path / "libsgformer_iam_ref.so"
    data = good.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    assert "truncated" in (elf_problem(cut) or "")
    result = _load(cut)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # an exception, not SIGBUS (-7)
    assert "PluginLibraryError" in result.stderr and "truncated" in result.stderr and "make plugins-ref" in result.stderr


def test_garbage_and_unreadable_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.so"
    garbage.write_bytes(b"\x00" * 4096)
    assert elf_problem(garbage) == "not an ELF file"
    assert "unreadable" in elf_problem(tmp_path / "missing.so")
    result = _load(garbage)
    assert result.returncode == 1 and "not an ELF file" in result.stderr
