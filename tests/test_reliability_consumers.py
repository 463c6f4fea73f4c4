"""Issue 23 item 5 (consumers of an engine folder): failed parity, multi-target package, sealed manifest fields.

On main: `run` and `package --triton` used an engine whose recorded verification FAILED without a word;
`package --triton R --deepstream D` wrote Triton, then refused DeepStream (half done, exit 2); a hand-edited batch
profile or backend passed the integrity check and reached the Triton config (`max_batch_size: 64`); `run --top-k 0`
printed nothing, exit 0. Each test fails on main.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from reliability_helpers import edit_manifest, publish
from test_package import _fake_engine_dir


def _fail_parity(folder: Path) -> None:
    """Record a FAILED verify of exactly this engine, as verify writes it (through the sealed writer)."""
    from pipeline.store.manifest import read_manifest, with_parity, write_manifest

    manifest = read_manifest(folder)
    write_manifest(folder, with_parity(manifest, {"passed": False, "max_abs_diff": 3.2, "top1_agreement": 0.5,
                                                  "engine_sha256": manifest.engine.sha256,
                                                  "checked": "2026-01-01T00:00:00+00:00"}))


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err and "usage:" not in err, err
    return lines[0]


def test_package_refuses_an_engine_whose_parity_failed(tmp_path, capsys, caplog):
    folder = _fake_engine_dir(tmp_path / "e")
    _fail_parity(folder)
    assert main(["package", str(folder), "--triton", str(tmp_path / "repo")]) == 2
    line = _one_error(capsys)
    assert "verification FAILED" in line and "--force" in line
    assert not (tmp_path / "repo").exists()
    assert main(["package", str(folder), "--triton", str(tmp_path / "repo"), "--force"]) == 0
    assert "FAILED VERIFICATION" in caplog.text
    # planted control: the same folder with a passed verify packages without --force
    folder2 = _fake_engine_dir(tmp_path / "ok")
    assert main(["package", str(folder2), "--triton", str(tmp_path / "repo2")]) == 0


def test_run_warns_loudly_on_an_engine_whose_parity_failed(exported, tmp_path, capsys, caplog):
    photo = tmp_path / "p.png"
    from PIL import Image
    Image.new("RGB", (64, 64), (10, 200, 30)).save(photo)
    folder = publish(tmp_path, exported("tiny-test", 224).onnx)
    assert main(["run", "--engine", str(folder), "--cpu", str(photo)]) == 0
    assert "FAILED VERIFICATION" not in caplog.text  # planted control: no warning for a clean folder
    _fail_parity(folder)
    assert main(["run", "--engine", str(folder), "--cpu", str(photo)]) == 0
    err = caplog.text
    assert "ENGINE FAILED VERIFICATION" in err and "max |dlogit| 3.2" in err


def test_run_top_k_zero_is_refused(tmp_path, capsys):
    assert main(["run", "--engine", str(tmp_path / "none"), "--top-k", "0", "x.png"]) == 2
    assert "--top-k 0" in _one_error(capsys)


def test_package_validates_every_target_before_writing_any(tmp_path, capsys):
    # uint8 input: Triton can take it, DeepStream's nvinfer cannot express it -> nothing may be written
    folder = _fake_engine_dir(tmp_path / "e", input_format="rgb-uint8")
    repo, ds = tmp_path / "repo", tmp_path / "ds"
    assert main(["package", str(folder), "--triton", str(repo), "--deepstream", str(ds)]) == 2
    _one_error(capsys)
    assert not repo.exists() and not ds.exists()
    # planted control: Triton alone is accepted for the same folder
    assert main(["package", str(folder), "--triton", str(repo)]) == 0


@pytest.mark.parametrize("edit, key", [
    ({"batch__max": 64}, "batch"),
    ({"backend__flavour": "TensorRT-RTX"}, "backend"),
    ({"target__compute_capabilities": ["sm_90"]}, "target"),
    ({"input_format": "rgb-uint8"}, "input_format"),
    ({"outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float32"}]}, "outputs"),
])
def test_hand_edited_manifest_field_is_refused(tmp_path, capsys, edit, key):
    folder = _fake_engine_dir(tmp_path / "e")
    edit_manifest(folder, **edit)
    assert main(["package", str(folder), "--triton", str(tmp_path / "repo")]) == 2
    line = _one_error(capsys)
    assert "edited after the build" in line and key in line, line
    assert not (tmp_path / "repo").exists()  # never reaches a Triton config (main: max_batch_size: 64)


def test_unedited_sealed_manifest_passes_planted(tmp_path, capsys):
    """Planted control of the seal: rewriting the manifest without a change (reformatted JSON) is not an edit."""
    folder = _fake_engine_dir(tmp_path / "e")
    data = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(data, indent=None, sort_keys=True))
    assert main(["package", str(folder), "--triton", str(tmp_path / "repo")]) == 0
    assert "max_batch_size: 8" in (tmp_path / "repo" / "e" / "config.pbtxt").read_text()
