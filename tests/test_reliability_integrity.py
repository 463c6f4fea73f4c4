"""Integrity faults of an engine folder: verify, run and the runtime refuse before doing anything else.

Each case: the consumer exits 2 with one line naming the mismatch, writes nothing (the manifest keeps its bytes, no
"passed"), and once the folder is rebuilt the same command succeeds. On main (before pipeline.cli.check_engine) the flipped
engine, the edited sha256, the missing engine and the fp16 -> int8 edit all gave PASS and "passed": true, and the
224 -> 448 edit an onnxruntime traceback.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from reliability_helpers import edit_manifest, folder_consistent, manifest, publish, residue


@pytest.fixture(scope="module")
def tiny_onnx(exported, tmp_path_factory) -> Path:
    return exported("tiny-test", 224).onnx


@pytest.fixture(scope="module")
def tiny_fp16_onnx(tiny_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    assert main(["calibrate", "--onnx", str(tiny_onnx), "--precision", "fp16", "-o", str(out)]) == 0
    return out


@pytest.fixture
def photo(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (256, 256), (30, 140, 200)).save(path)
    return path


def _verify(folder: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", "--engine", str(folder), "--num-images", "2"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _refused(folder: Path, capsys, *fragments: str) -> str:
    before = (folder / "manifest.json").read_bytes()
    code, text = _verify(folder, capsys)
    assert code == 2, text
    err = [line for line in text.splitlines() if "error:" in line]
    assert len(err) == 1 and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert (folder / "manifest.json").read_bytes() == before  # nothing recorded, certainly not "passed"
    assert residue(folder) == []
    return err[0]


def _recovers(folder: Path, onnx_path: Path, capsys, precision: str = "fp32") -> None:
    publish(folder.parent, onnx_path, precision=precision, name=folder.name)
    code, text = _verify(folder, capsys)
    assert code == 0, text
    assert manifest(folder)["parity"]["passed"] and folder_consistent(folder) == []


def test_flipped_engine_bytes(tiny_onnx, tmp_path, capsys, photo):
    folder = publish(tmp_path, tiny_onnx)
    engine = folder / manifest(folder)["engine"]["file"]
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    line = _refused(folder, capsys, "tiny-test-fp32.engine", "sha256")
    assert "rebuild" in line
    capsys.readouterr()
    assert main(["run", "--engine", str(folder), "--cpu", str(photo)]) == 2  # run checks too
    assert "sha256" in capsys.readouterr().err
    _recovers(folder, tiny_onnx, capsys)


def test_manifest_with_edited_engine_sha256(tiny_onnx, tmp_path, capsys):
    folder = publish(tmp_path, tiny_onnx)
    edit_manifest(folder, engine__sha256="0" * 64)
    _refused(folder, capsys, "sha256", "manifest")
    _recovers(folder, tiny_onnx, capsys)


def test_truncated_engine_named_by_size(tiny_onnx, tmp_path, capsys):
    folder = publish(tmp_path, tiny_onnx)
    engine = folder / manifest(folder)["engine"]["file"]
    engine.write_bytes(engine.read_bytes()[:1000])
    _refused(folder, capsys, "1000 bytes")


def test_folder_without_engine(tiny_onnx, tmp_path, capsys, photo):
    folder = publish(tmp_path, tiny_onnx)
    (folder / manifest(folder)["engine"]["file"]).unlink()
    _refused(folder, capsys, "tiny-test-fp32.engine", "missing")
    capsys.readouterr()
    assert main(["run", "--engine", str(folder), "--cpu", str(photo)]) == 2
    assert "missing" in capsys.readouterr().err
    _recovers(folder, tiny_onnx, capsys)


def test_precision_edited_fp16_to_int8(tiny_fp16_onnx, tmp_path, capsys):
    """int8's looser rule (cosine 0.99, top-1 97%) must not make an fp16 engine pass as int8."""
    folder = publish(tmp_path, tiny_fp16_onnx, precision="fp16")
    edit_manifest(folder, precision="int8")
    _refused(folder, capsys, "precision 'int8'", "'fp16'")
    _recovers(folder, tiny_fp16_onnx, capsys, precision="fp16")


def test_img_size_edited_224_to_448(tiny_onnx, tmp_path, capsys):
    folder = publish(tmp_path, tiny_onnx)
    edit_manifest(folder, img_size=[448, 448])
    _refused(folder, capsys, "img_size '448'", "224")
    _recovers(folder, tiny_onnx, capsys)


def test_changed_plugin_copy(tiny_onnx, tmp_path, capsys):
    plugin = tmp_path / "libfake_plugins.so"
    plugin.write_bytes(b"\x7fELF not really" * 100)
    folder = publish(tmp_path / "engines", tiny_onnx, plugin=plugin)
    copy = folder / "libfake_plugins.so"
    copy.write_bytes(copy.read_bytes()[::-1])
    _refused(folder, capsys, "plugin library", "libfake_plugins.so")
    assert manifest(folder)["plugin"]["bytes"] == copy.stat().st_size  # the size is recorded too


def test_runtime_checks_before_looking_for_a_gpu(tiny_onnx, tmp_path):
    """The Python runtime (used by run and bench) refuses a corrupted folder with the integrity error itself."""
    from pipeline.core.errors import IntegrityError
    from pipeline.backends.engine import EngineRunner

    folder = publish(tmp_path, tiny_onnx)
    edit_manifest(folder, engine__sha256="f" * 64)
    with pytest.raises(IntegrityError, match="sha256"):
        EngineRunner(folder)


def test_stand_in_says_it_checked_integrity_not_behaviour(tiny_onnx, tmp_path, capsys):
    folder = publish(tmp_path, tiny_onnx)
    code, text = _verify(folder, capsys)
    assert code == 0, text
    parity = manifest(folder)["parity"]
    assert "integrity was checked, its behaviour was not" in text
    assert parity["engine_check"] == "integrity only (sha256, size)"
    assert parity["engine_sha256"] == manifest(folder)["engine"]["sha256"]


def test_integrity_command_for_make(tiny_onnx, tmp_path):
    """`python -m pipeline.cli.check_engine DIR --stamp S`: S gets a fresh mtime (make rebuilds) only for a bad folder."""
    import os

    from pipeline.cli.check_engine import main as integrity_main

    folder = publish(tmp_path, tiny_onnx)
    stamp = folder / ".engine-check"
    assert integrity_main([str(folder), "--stamp", str(stamp)]) == 0
    assert stamp.stat().st_mtime == 0  # intact: older than any engine
    assert integrity_main([str(folder), "--verified"]) == 2  # not verified yet
    edit_manifest(folder, precision="int8")
    assert integrity_main([str(folder), "--stamp", str(stamp)]) == 0
    assert stamp.stat().st_mtime > os.path.getmtime(folder / "tiny-test-fp32.engine") - 1
    assert integrity_main([str(folder)]) == 2
    assert integrity_main([str(tmp_path / "nothing"), "--stamp", str(tmp_path / "nothing" / ".engine-check")]) == 0
    assert json.loads((folder / "manifest.json").read_text())["precision"] == "int8"  # the check writes nothing
