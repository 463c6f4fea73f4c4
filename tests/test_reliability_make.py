"""`make engine`: its up-to-date check looks inside the engine folder, and "engine ready" comes only after a verified,
consistent folder.

The real Makefile runs against a prepared folder whose files are all newer than their prerequisites, so make has
nothing to redo from timestamps alone. The build verb is replaced by a stand-in (``CLI=`` on make's command line:
a script that publishes a random-bytes engine with ``pipeline.build.save_engine_dir`` and passes every other verb to
``pipeline.cli``), so no plugin and no TensorRT build is needed; verify is the real one. On main a corrupted engine
with fresh timestamps was not rebuilt, verify's CPU stand-in passed it and make printed "engine ready".
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reliability_helpers import ROOT, folder_consistent, manifest, publish, sha256

FAKE_CLI = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    argv = sys.argv[1:]
    if argv and argv[0] == "build":
        print("FAKE BUILD", flush=True)
        if os.environ.get("FAKE_BUILD_FAIL"):
            print("sgformer-trt build: error: the builder failed", file=sys.stderr)
            sys.exit(2)
        sys.path.insert(0, {tests!r})
        from pathlib import Path
        from reliability_helpers import publish
        onnx = Path(argv[argv.index("--onnx") + 1])
        folder = publish(onnx.parent.parent, onnx, name=onnx.parent.name, seed=int(os.environ.get("FAKE_SEED", "7")))
        import time
        t = time.time() + 400  # newer than the prepared ONNX files, as a real build's engine would be
        os.utime(folder / "tiny-test-fp32.engine", (t, t))
        sys.exit(0)
    from pipeline.cli import main
    sys.exit(main(argv))
""")


@pytest.fixture
def make_setup(exported, tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make not found on PATH")
    folder = tmp_path / "tiny-test-fp32-224"
    folder.mkdir()
    shutil.copyfile(exported("tiny-test", 224).onnx, folder / "model.onnx")
    shutil.copyfile(folder / "model.onnx", folder / "model.iam.onnx")  # fp32 without the plugin op: same graph
    plugin = tmp_path / "libfake_plugins.so"
    plugin.write_bytes(b"not a library")
    publish(tmp_path, folder / "model.iam.onnx", name=folder.name, seed=1)
    (folder / ".settings").write_text("variant=tiny-test res=224 ckpt= calib= n=32 method=entropy\n")
    venv_stamp = tmp_path / "venv.stamp"
    venv_stamp.touch()
    future = time.time() + 300  # newer than every source file make compares them with
    for i, name in enumerate(("model.onnx", "model.iam.onnx", "tiny-test-fp32.engine")):
        os.utime(folder / name, (future + 10 * i, future + 10 * i))
    fake = tmp_path / "fake_cli.py"
    fake.write_text(FAKE_CLI.format(root=str(ROOT), tests=str(ROOT / "tests")))
    variables = [f"VARIANT=tiny-test", "PRECISION=fp32", "RES=224", f"DIR={folder}", f"PLUGIN_LIB={plugin}",
                 f"VENV_STAMP={venv_stamp}", f"CLI={sys.executable} {fake}", f"PY={sys.executable}"]
    return folder, variables


def _make(variables, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "engine", *variables], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT), **env))


def _flip(folder: Path) -> None:
    engine = folder / "tiny-test-fp32.engine"
    stat = engine.stat()
    data = bytearray(engine.read_bytes())
    data[100] ^= 0x01
    engine.write_bytes(bytes(data))
    os.utime(engine, (stat.st_atime, stat.st_mtime))  # timestamps alone say "up to date"


def test_make_engine_rebuilds_a_corrupted_engine(make_setup):
    folder, variables = make_setup
    _flip(folder)
    result = _make(variables)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAKE BUILD" in result.stdout and "rebuilding" in result.stderr  # the bad engine was rebuilt
    assert folder_consistent(folder) == []
    parity = manifest(folder)["parity"]
    assert parity["passed"] and parity["engine_sha256"] == sha256(folder / "tiny-test-fp32.engine")
    assert result.stdout.rstrip().splitlines()[-1].startswith("engine ready")


def test_make_engine_says_ready_only_for_a_verified_consistent_folder(make_setup):
    folder, variables = make_setup
    _flip(folder)
    result = _make(variables, FAKE_BUILD_FAIL="1")
    assert result.returncode != 0
    assert "engine ready" not in result.stdout
    intact = _make(variables)  # the next run rebuilds and verifies
    assert intact.returncode == 0 and "engine ready" in intact.stdout, intact.stderr[-3000:]
    again = _make(variables)  # nothing wrong now: no rebuild, verify, ready
    assert again.returncode == 0 and "FAKE BUILD" not in again.stdout and "engine ready" in again.stdout
