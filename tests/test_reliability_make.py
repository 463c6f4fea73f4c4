"""`make engine` (= ``sgformer-trt engine`` = ``pipeline.flow.run_pipeline``): its up-to-date check looks inside the
engine folder, and "engine ready" comes only after a verified, consistent folder.

The stage order and the reuse decisions live in ``run_pipeline`` (the Makefile only passes settings on), so these tests
drive it directly. The TensorRT build is replaced by a stand-in (``pipeline.stages.build.build_engine`` patched to return
random bytes with the BuildInfo the TensorRT-RTX builder reports), so no plugin and no TensorRT build is needed;
export, rewrite, the integrity checks and verify's CPU stand-in are the real ones. On main a corrupted engine with
fresh timestamps was not rebuilt, verify's CPU stand-in passed it and make printed "engine ready".
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.stages import build as build_module
from pipeline.cli.engine import run
from pipeline.flow import PipelineConfig
from reliability_helpers import edit_manifest, fake_info, folder_consistent, manifest, sha256

ENGINE = "tiny-test-fp32.engine"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    plugin = tmp_path / "libfake_plugins.so"
    plugin.write_bytes(b"not a library: the stand-in build never loads it")
    calls = []

    def fake_build(onnx_path, config):
        if os.environ.get("FAKE_BUILD_FAIL"):
            raise build_module.BuildError("the builder failed (stand-in)")
        calls.append(Path(onnx_path))
        engine = hashlib.sha256(f"engine {len(calls)}".encode()).digest() * 2048
        return engine, fake_info(Path(onnx_path), engine, plugin=Path(config.plugin_library))

    monkeypatch.setattr(build_module, "build_engine", fake_build)
    config = PipelineConfig(variant="tiny-test", precision="fp32", img_size=224, plugin_library=plugin,
                            backend="tensorrt-rtx", max_batch=2, out_dir=tmp_path / "engines", verify_images=2)
    return config, calls


def _engine(config: PipelineConfig, capsys) -> tuple[int, str]:
    from pipeline.cli.engine import add_arguments
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--variant", config.variant, "--precision", config.precision, "--img-size", "224",
                              "--plugins", str(config.plugin_library), "--backend", "tensorrt", "--max-batch", "2",
                              "--output", str(config.out_dir), "--verify-num-images", "2"])
    try:
        code = run(args)
    except build_module.BuildError as exc:
        print(f"error: {exc}")
        code = 2
    return code, capsys.readouterr().out


def _flip(folder: Path) -> None:
    engine = folder / ENGINE
    stat = engine.stat()
    data = bytearray(engine.read_bytes())
    data[100] ^= 0x01
    engine.write_bytes(bytes(data))
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # timestamps alone say "up to date"


def test_engine_rebuilds_a_corrupted_engine(setup, capsys, caplog):
    config, calls = setup
    code, out = _engine(config, capsys)
    assert code == 0 and out.rstrip().splitlines()[-1].startswith("engine ready"), out
    # The last line names where the engine runs and where not; the line before it, that the weights are random.
    *_, note, last = out.rstrip().splitlines()
    assert "runs on: RTX GPUs" in last and "not on:" in last, last
    assert note.startswith("note: RANDOM WEIGHTS") and "CKPT=" in note, note
    folder = config.engine_dir
    _flip(folder)
    code, out = _engine(config, capsys)
    assert code == 0, out
    assert len(calls) == 2  # the bad engine was rebuilt (its sha256 no longer matches the build stage's record)
    assert folder_consistent(folder) == []
    parity = manifest(folder)["parity"]
    assert parity["passed"] and parity["engine_sha256"] == sha256(folder / ENGINE)
    assert out.rstrip().splitlines()[-1].startswith("engine ready")


def test_engine_says_ready_only_for_a_verified_consistent_folder(setup, capsys, monkeypatch):
    config, calls = setup
    assert _engine(config, capsys)[0] == 0
    _flip(config.engine_dir)
    monkeypatch.setenv("FAKE_BUILD_FAIL", "1")
    code, out = _engine(config, capsys)
    assert code != 0 and "engine ready" not in out
    monkeypatch.delenv("FAKE_BUILD_FAIL")
    code, out = _engine(config, capsys)  # the next run rebuilds and verifies
    assert code == 0 and "engine ready" in out, out
    built = len(calls)
    code, out = _engine(config, capsys)  # nothing wrong now: no rebuild, verify, ready
    assert code == 0 and len(calls) == built and "engine ready" in out


def test_engine_rebuilds_a_folder_whose_manifest_was_edited(setup, capsys, caplog):
    """The engine file is untouched (the build stage's own record says up to date), the manifest is not: the
    integrity check of the folder makes the build run again."""
    config, calls = setup
    assert _engine(config, capsys)[0] == 0
    edit_manifest(config.engine_dir, engine__sha256="0" * 64)
    code, out = _engine(config, capsys)
    assert code == 0 and len(calls) == 2 and "fails its integrity check, rebuilding" in caplog.text, out
    assert folder_consistent(config.engine_dir) == []
    assert out.rstrip().splitlines()[-1].startswith("engine ready")


def test_one_integrity_check_per_engine_folder_per_run(setup, capsys, monkeypatch):
    """Issue 20 item 3: main checked the same folder about five times in one `make engine` (the build stage's
    soundness, verify, the runner, the final "ready" check). Now once: the verify stage reuses the build stage's
    check, the runner takes the checked manifest, and the final decision reads the manifest verify wrote."""
    from pipeline.store import integrity

    checks = []
    original = integrity._check_file

    def counting(folder, ref, role, problems):
        if role == "engine":
            checks.append(folder)
        return original(folder, ref, role, problems)

    monkeypatch.setattr(integrity, "_check_file", counting)
    config, calls = setup
    assert _engine(config, capsys)[0] == 0  # builds: verify checks the new folder once
    assert len(checks) == 1, checks
    checks.clear()
    code, out = _engine(config, capsys)  # reuses: the build stage's soundness check is the only one
    assert code == 0 and "engine ready" in out and len(calls) == 1
    assert len(checks) == 1, checks
