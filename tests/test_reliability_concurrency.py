"""Two processes on one engine folder: the folder ends consistent (engine, copies and manifest of one build) or one
of them waits; verify records a result only for the engine it checked.

The interleavings are forced, not hoped for: the child processes hold at a marked point (a patched write) until the
other side has done its part, so on main (no lock, engine and manifest written separately) each test ends with an
engine and a manifest of different builds every time, not in "2 of ~14 tries".
"""
from __future__ import annotations

import time
from pathlib import Path

from reliability_helpers import (MM_LABELS, folder_consistent, manifest, mm_onnx, needs_rtx, publish, residue, run_cli, spawn,
                                 wait_for, wrapped_cli)

_HOLD_MANIFEST = """
    import os, time
    import pipeline.stages.build as build
    _orig = build.write_manifest
    def write_manifest(folder, manifest):  # build 1: engine written, manifest not yet
        open({mark_in!r}, "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists({started!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 4  # build 2 is publishing now (or waiting for the lock)
        while not os.path.exists({mark_out!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _orig(folder, manifest)
    build.write_manifest = write_manifest
"""

_SIGNAL_AROUND_PUBLISH = """
    import pipeline.stages.build as build
    _orig, _orig_save = build.write_manifest, build.save_engine_dir
    def save_engine_dir(*args, **kwargs):  # build 2: built, publishing starts
        open({started!r}, "w").close()
        return _orig_save(*args, **kwargs)
    def write_manifest(folder, manifest):  # build 2: say when its manifest is written
        out = _orig(folder, manifest)
        open({mark!r}, "w").close()
        return out
    build.write_manifest, build.save_engine_dir = write_manifest, save_engine_dir
"""


@needs_rtx
def test_two_concurrent_builds_end_consistent(tmp_path):
    first, second = mm_onnx(tmp_path / "a.onnx", 0), mm_onnx(tmp_path / "b.onnx", 1)
    out = tmp_path / "engines"
    m1, m2, started = tmp_path / "m1", tmp_path / "m2", tmp_path / "started"
    argv = ["build", "--out-dir", str(out), "--backend", "tensorrt-rtx", "--max-batch", "2", "--name", "mm", *MM_LABELS]
    p1 = spawn(wrapped_cli(_HOLD_MANIFEST.format(mark_in=str(m1), mark_out=str(m2), started=str(started)),
                           [*argv, "--onnx", str(first)]))
    wait_for(m1, p1)  # build 1 has written its engine and is about to write the manifest
    p2 = spawn(wrapped_cli(_SIGNAL_AROUND_PUBLISH.format(mark=str(m2), started=str(started)),
                           [*argv, "--onnx", str(second)]))
    out1, err1 = p1.communicate(timeout=300)
    out2, err2 = p2.communicate(timeout=300)
    assert p1.returncode == 0, err1[-3000:]
    assert p2.returncode == 0, err2[-3000:]
    folder = out / "mm"
    assert folder_consistent(folder) == [], (err1[-2000:], err2[-2000:])
    assert manifest(folder)["onnx"]["file"] == "b.onnx"  # the second build waited and published last
    assert "waiting for" in err2  # and said so
    assert residue(folder) == []
    assert run_cli([*argv, "--onnx", str(first)]).returncode == 0  # a rerun recovers / replaces cleanly
    assert folder_consistent(folder) == [] and manifest(folder)["onnx"]["file"] == "a.onnx"


_HOLD_STAND_IN = """
    import os, time
    import pipeline.backends.runners as runners
    _orig = runners.OrtRunner.infer_outputs
    def infer_outputs(self, *args, **kwargs):  # verify: engine checked, result not recorded yet (the CPU stand-in runs)
        open({mark_in!r}, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists({mark_out!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _orig(self, *args, **kwargs)
    runners.OrtRunner.infer_outputs = infer_outputs
"""


def test_build_during_verify_is_not_marked_verified(exported, tmp_path):
    onnx_path = exported("tiny-test", 224).onnx
    folder = publish(tmp_path, onnx_path, seed=1)
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    proc = spawn(wrapped_cli(_HOLD_STAND_IN.format(mark_in=str(m1), mark_out=str(m2)),
                             ["verify", "--engine", str(folder), "--num-images", "2"]))
    wait_for(m1, proc)
    publish(tmp_path, onnx_path, seed=2)  # another build publishes a new engine meanwhile
    new_sha = manifest(folder)["engine"]["sha256"]
    m2.touch()
    out, err = proc.communicate(timeout=300)
    assert folder_consistent(folder) == [], err[-3000:]
    assert manifest(folder)["engine"]["sha256"] == new_sha
    assert not (manifest(folder).get("parity") or {}).get("passed")  # the old engine's PASS is not on the new one
    assert proc.returncode == 2 and "replaced while it was being verified" in err, err[-3000:]
    assert residue(folder) == []
    rerun = run_cli(["verify", "--engine", str(folder), "--num-images", "2"])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    parity = manifest(folder)["parity"]
    assert parity["passed"] and parity["engine_sha256"] == new_sha and folder_consistent(folder) == []


def test_lock_makes_a_second_writer_wait(tmp_path):
    """A second process writing into a locked engine folder waits until the first lets go."""
    import subprocess
    import sys

    from pipeline.store.locking import engine_dir_lock
    from reliability_helpers import ROOT, child_env

    folder, ready = tmp_path / "engine", tmp_path / "ready"
    # the child writes an artifact into the folder (any stage's write goes through pipeline.store.io.atomic_path)
    code = ("from pipeline.store.io import write_json\n"
            f"open({str(ready)!r}, 'w').close()\nwrite_json({str(folder / 'x.json')!r}, 1)")
    with engine_dir_lock(folder):
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=child_env())
        wait_for(ready, child)
        time.sleep(1.0)
        assert child.poll() is None and not (folder / "x.json").exists()  # still waiting for the lock
    assert child.wait(timeout=60) == 0
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "x.json"]
