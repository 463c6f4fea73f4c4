"""The random-weights caveat: one wording, where checkpoints come from, on the runners' results; open_engine's
CPU fallback warns once."""
from __future__ import annotations

import logging

from pipeline.backends import runners
from pipeline.backends.runners import BaseRunner
from pipeline.core.caveats import CHECKPOINT_SOURCE, RANDOM_WEIGHTS, random_weights_caveat


def test_the_caveat_names_the_checkpoint_source_and_the_make_command():
    assert "github.com/OliverRensu/SG-Former" in CHECKPOINT_SOURCE
    assert "make engine CKPT=" in RANDOM_WEIGHTS and RANDOM_WEIGHTS.startswith("RANDOM WEIGHTS")
    assert random_weights_caveat("random-init, seed 0") == RANDOM_WEIGHTS
    # Controls: a checkpoint (even one whose file name starts with "random") and unknown weights get no caveat.
    for weights in ("sgformer_s.pth sha256:" + "0" * 64, "random_finetune.pth sha256:" + "1" * 64, "unknown", None):
        assert random_weights_caveat(weights) is None


def test_a_runner_says_when_its_results_come_from_random_weights():
    runner = BaseRunner(batch=1)
    assert runner.caveat is None  # weights not known: no claim either way
    runner.weights = "random-init, seed 3"
    assert runner.caveat == RANDOM_WEIGHTS
    runner.weights = "sgformer_s.pth sha256:" + "a" * 64
    assert runner.caveat is None


def test_cpu_fallback_warns_once_per_process(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(runners, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="pipeline.backends.runners"):
        runners._warn_cpu_fallback_once(tmp_path / "a")
        runners._warn_cpu_fallback_once(tmp_path / "b")
    messages = [r.getMessage() for r in caplog.records if "CPU stand-in" in r.getMessage()]
    assert len(messages) == 1 and 'device="cpu"' in messages[0]
