"""Issue 23 items 3 and 4 (and the NVCC / CUDA_ARCHS checks of item 5): the Makefile as a new user meets it.

Item 4: make variables reach recipes only as environment variables, quoted; a hostile value arrives at the CLI
byte for byte and runs nothing (main ran backticks, expanded `$HOME` and `$(shell ...)`, broke on a `"`).
Item 3: the venv creation and the plugin build take a lock. Fake `cmake` / `python3` that fail when two of them
overlap (as CMake does on a fresh build dir: "file failed to open for writing ... CMakeCXXCompilerId.cpp") show that
two makes at once both succeed and build once each; without the lock (main) one of them failed.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("shape", ["backticks", "dollar-paren", "make-shell", "dollar-var", "quotes", "newline"])
def test_hostile_ckpt_reaches_the_cli_as_text(tmp_path, shape):
    pwned = tmp_path / "PWNED"
    value = {
        "backticks": f"x`touch {pwned}`.pth",
        "dollar-paren": f"x$(touch {pwned}) y.pth",
        "make-shell": f"x$(shell touch {pwned}).pth",
        "dollar-var": "$HOME/$(HOME) w.pth",
        "quotes": "it's a \"quoted\" name.pth",
        "newline": "two\nlines.pth",
    }[shape]
    result = _make("engine", f"CKPT={value}")
    assert result.returncode != 0
    assert not pwned.exists(), "a make variable ran as shell/make code"
    first = value.splitlines()[0]
    assert f"checkpoint {first}" in result.stderr, result.stderr  # the exact text reached the CLI
    assert "unexpected EOF" not in result.stderr and "syntax error" not in result.stderr


def test_help_prints_hostile_values_without_running_them(tmp_path):
    pwned = tmp_path / "PWNED"
    result = _make("help", f"RES=`touch {pwned}`")
    assert result.returncode == 0 and not pwned.exists()
    assert f"[`touch {pwned}`]" in result.stdout


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# Fails when another instance is inside its critical section: what two CMake configures of one build dir do.
OVERLAP = """#!/usr/bin/env bash
if ! mkdir "{probe}" 2>/dev/null; then echo "CMake Error: file failed to open for writing (overlap)" >&2; exit 1; fi
echo run >> "{log}"; sleep 2; rmdir "{probe}"
"""


def test_two_plugin_builds_at_once_both_succeed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    build = tmp_path / "plugins"
    log = tmp_path / "cmake.log"
    _executable(bin_dir / "cmake", OVERLAP.format(probe=tmp_path / "probe", log=log) + f"""
if [ "$1" = "--build" ]; then touch "{build}/libsgformer_plugins.so"; fi
""")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    args = ("plugins", f"PLUGIN_BUILD={build}", f"PLUGIN_LIB={build}/libsgformer_plugins.so", "CUDA_ARCHS=86",
            f"LOCKS={tmp_path}/locks")
    runs = [subprocess.Popen(["make", "--no-print-directory", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e for _, e in results]
    assert (build / "libsgformer_plugins.so").is_file()
    assert log.read_text().count("run") == 2  # one configure + one build: the second make found it built


def test_two_venv_creations_at_once_both_succeed(tmp_path):
    venv = tmp_path / "venv"
    log = tmp_path / "venv.log"
    fake_python = OVERLAP.format(probe=tmp_path / "probe", log=log) + f"""
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "{venv}/bin"; printf '#!/bin/sh\\nexit 0\\n' > "{venv}/bin/python"; chmod +x "{venv}/bin/python"
fi
"""
    python = _executable(tmp_path / "python3", fake_python)
    args = ("venv", f"VENV={venv}", f"PYTHON={python}", "SYSTEM_TRT=no", "HAVE_GPU=no", "JETSON=",
            f"LOCKS={tmp_path}/locks")
    runs = [subprocess.Popen(["make", "--no-print-directory", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e for _, e in results]
    assert (venv / ".installed").is_file()
    assert log.read_text().count("run") == 1  # created once; the second make waited and found it made


@pytest.mark.parametrize("setting, message", [
    ("CUDA_ARCHS=bogus", "CUDA_ARCHS=bogus: 'bogus' is not a GPU architecture number"),
    ("NVCC=/nonexistent/nvcc", "NVCC=/nonexistent/nvcc is not an executable CUDA compiler"),
])
def test_plugin_settings_are_checked_before_cmake(tmp_path, setting, message):
    result = _make("plugins", setting, f"PLUGIN_BUILD={tmp_path}/plugins",
                   f"PLUGIN_LIB={tmp_path}/plugins/libsgformer_plugins.so", f"LOCKS={tmp_path}/locks")
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "cmake -S" not in result.stdout  # main: cmake ran (and silently used another nvcc)


def test_pytest_args_are_split_like_a_shell_line_and_never_run(tmp_path):
    """PYTEST_ARGS reaches pytest through PYTEST_ADDOPTS (pytest splits it with shlex): a quoted -k expression works,
    and `$(...)` / backticks in it are text. Planted: the same expression without its quotes is a usage error ("and"
    becomes a path), so the first run's selection really came from the quoted expression."""
    pwned = tmp_path / "PWNED"
    quoted = _make("test-quick", 'PYTEST_ARGS=-k "manifest and not nothing" --co -q', "TEST_WORKERS=0")
    assert quoted.returncode == 0, quoted.stdout[-2000:] + quoted.stderr[-2000:]
    counts = dict(line.rsplit(": ", 1) for line in quoted.stdout.splitlines() if line.startswith("tests/"))
    assert "tests/test_manifest.py" in counts and sum(map(int, counts.values())) < 100, quoted.stdout[-2000:]
    hostile = _make("test-quick", f"PYTEST_ARGS=--co -q -k manifest $(touch {pwned}) `touch {pwned}`")
    assert hostile.returncode != 0 and not pwned.exists(), "PYTEST_ARGS ran as shell code"
    unquoted = _make("test-quick", "PYTEST_ARGS=-k manifest and not nothing --co -q")
    assert unquoted.returncode != 0 and "file or directory not found: and" in unquoted.stderr, unquoted.stderr[-2000:]
