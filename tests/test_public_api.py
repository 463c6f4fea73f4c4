"""The public API works as README.md shows: its stage-by-stage block runs (variant s swapped for tiny-test to keep
the suite fast; the calls and their order are the README's), and every name the package face lists resolves."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"): text.index("## Images")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_every_public_name_resolves():
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None, name


def test_importing_the_package_face_loads_no_torch():
    code = "import sys, pipeline, pipeline.core; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_readme_stage_by_stage_block_runs(capsys):
    blocks = _readme_blocks()
    assert len(blocks) == 2, "README's Python API section has the run_pipeline block and the stage-by-stage block"
    code = blocks[1].replace('create_model("s"', 'create_model("tiny-test"')
    assert code != blocks[1]
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)  # noqa: S102  (our own README)
    assert scope["report"].passed, scope["report"].message
    assert scope["logits"].shape == (2, 1000) and np.isfinite(scope["logits"]).all()
    assert "SGFormerIAM" in {n.op_type for n in scope["iam_model"].graph.node}
    assert scope["session"].get_inputs()[0].name == "images"


def test_readme_engine_block_names_real_api():
    """The run_pipeline block (it builds an engine: minutes, run by test_flow/test_engine) names real callables."""
    block = _readme_blocks()[0]
    for name in re.findall(r"from pipeline import ([\w, ]+)", block)[0].split(", "):
        assert callable(getattr(pipeline, name.strip()))
    assert "engine_dir.path" in block and hasattr(pipeline.EngineDir, "__dataclass_fields__")
    assert "path" in pipeline.EngineDir.__dataclass_fields__
