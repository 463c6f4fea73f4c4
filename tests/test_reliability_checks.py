"""Issue 23 item 5: settings that failed late (or were silently ignored) on main are refused up front, in one line
naming the make variable or option and the fix."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.flow import PipelineConfig, check_config
from pipeline.iam.spec import MAX_BATCH
from pipeline.stages.verify import verify_engine
from reliability_helpers import manifest, publish

ROOT = Path(__file__).resolve().parents[1]


def test_max_batch_is_the_kernels_limit():
    header = (ROOT / "plugins/sgformer_iam/sgformerIamKernel.h").read_text()
    assert int(re.search(r"kMAX_BATCH\s*=\s*(\d+)", header).group(1)) == MAX_BATCH


def test_max_batch_beyond_the_kernel_is_refused_up_front():
    # main: passed --check, then the builder failed with "Internal Error" as its last line
    with pytest.raises(ConfigError, match=r"from 1 to 65535 .*\(make: MAX_BATCH\)"):
        check_config(PipelineConfig(max_batch=100000), plugin=False)
    check_config(PipelineConfig(max_batch=MAX_BATCH), plugin=False)


def test_calibration_images_for_fp16_are_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError, match="only used for int8.*CALIB"):
        check_config(PipelineConfig(precision="fp16", calib_images=tmp_path), plugin=False)


def test_unwritable_output_is_found_before_the_export(tmp_path):
    blocker = tmp_path / "engines"
    blocker.write_text("a file where the engines folder should be")
    with pytest.raises(ConfigError, match="not a writable folder.*--out-dir"):
        check_config(PipelineConfig(out_dir=blocker), plugin=False)


def test_seed_and_checkpoint_together_are_refused(tmp_path):
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"x")
    with pytest.raises(ConfigError, match="--seed"):
        check_config(PipelineConfig(checkpoint=ckpt, seed=3), plugin=False)


@pytest.fixture(scope="module")
def tiny_onnx(exported):
    return exported("tiny-test", 224).onnx


def test_verify_refuses_a_batch_beyond_the_engines_profile(tiny_onnx, tmp_path):
    folder = publish(tmp_path, tiny_onnx)  # profile batch 1..2
    images = np.zeros((4, 3, 224, 224), np.float32)
    with pytest.raises(ConfigError, match=r"batch 16 is beyond the engine's profile \(batch 1 to 2\)"):
        verify_engine(folder, images, batch=16)
    assert not manifest(folder).get("parity")  # main: recorded a PASS at batch 16
