"""Issue 23 item 1: an engine folder belongs to its weights; no run replaces them silently.

On main, `make engine CKPT=model.pth` followed by `make engine` (or `make verify`) without CKPT re-exported with
`random-init, seed 0` and overwrote the checkpoint's engine in the same folder, "engine ready", exit 0. Here a run
without weights uses the folder's own (its recorded checkpoint while that file still has the recorded sha256), and a
run with other weights stops with one line naming the folder's weights and how to replace them on purpose.
Stages stop after export (the ownership decision is made before any stage), so no TensorRT is needed.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pipeline.cli import main
from pipeline.core.errors import ConfigError
from pipeline.flow import PipelineConfig, run_pipeline
from pipeline.model.sgformer import create_model


def _config(tmp_path, **changes) -> PipelineConfig:
    base = PipelineConfig(variant="tiny-test", precision="fp32", out_dir=tmp_path / "engines", until="export")
    return dataclasses.replace(base, **changes)


def _exported_weights(folder) -> str:
    return json.loads((folder / ".stages.json").read_text())["export"]["key"]["weights"]


def test_run_without_weights_keeps_the_folders_random_seed(tmp_path):
    first = run_pipeline(_config(tmp_path, seed=1))
    assert first.stages["export"] == "made"
    again = run_pipeline(_config(tmp_path))  # no seed, no checkpoint: the folder's weights (main: seed 0, re-export)
    assert again.stages["export"] == "up to date"
    assert _exported_weights(first.path) == "random-init, seed 1"
    with pytest.raises(ConfigError) as err:
        run_pipeline(_config(tmp_path, seed=2))
    message = str(err.value)
    assert "'random-init, seed 1'" in message and "REPLACE=1" in message and "\n" not in message
    assert _exported_weights(first.path) == "random-init, seed 1"  # untouched


def test_checkpoint_folder_is_reused_without_ckpt_and_never_replaced_silently(tmp_path, capsys):
    ckpt = tmp_path / "my model.pth"
    torch.save(create_model("tiny-test", 224, seed=3).state_dict(), ckpt)
    made = run_pipeline(_config(tmp_path, checkpoint=ckpt))
    assert made.stages["export"] == "made"
    recorded = _exported_weights(made.path)
    assert recorded.startswith("my model.pth sha256:")
    # make verify / make engine without CKPT: the recorded checkpoint, nothing rebuilt
    assert run_pipeline(_config(tmp_path)).stages["export"] == "up to date"
    # other weights: refused, one line, the folder is unchanged
    with pytest.raises(ConfigError, match="REPLACE=1"):
        run_pipeline(_config(tmp_path, seed=0))
    # the checkpoint moved away: no silent fallback to random weights
    ckpt.rename(tmp_path / "moved.pth")
    with pytest.raises(ConfigError) as err:
        run_pipeline(_config(tmp_path))
    assert "my model.pth" in str(err.value) and "CKPT" in str(err.value) and "gone" in str(err.value)
    assert _exported_weights(made.path) == recorded
    # the same message from the CLI: one line, exit 2
    code = main(["engine", "--variant", "tiny-test", "--precision", "fp32", "--until", "export",
                 "--out-dir", str(tmp_path / "engines")])
    err_text = capsys.readouterr().err.strip()
    assert code == 2 and len(err_text.splitlines()) == 1 and "REPLACE=1" in err_text, err_text
    # on purpose: --replace (make REPLACE=1) rebuilds with the requested weights
    replaced = run_pipeline(_config(tmp_path, seed=4, replace=True))
    assert replaced.stages["export"] == "made" and _exported_weights(replaced.path) == "random-init, seed 4"
