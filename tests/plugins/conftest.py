"""Session fixtures for the SGFormerIAM plugin tests: host-reference library and spec (the TensorRT headers and
the plugin build are in ``tests/conftest.py``, shared with the engine tests).

Build outputs go to ``build/pytest-plugins*`` under the repository root (gitignored), so a second run only
recompiles what changed. Environment knobs:
  SGFORMER_IAM_REF_LIB       use this prebuilt host reference instead of building one
  SGFORMER_TEST_CUDA_ARCHS   architectures for the compile-only build (default "87;90")
  SGFORMER_REQUIRE_NVCC=1    fail instead of skip when nvcc is missing (set in CI)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.iam.host import LIBRARY_ENV_VAR, build_host_library

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO_ROOT / "plugins" / "sgformer_iam"
BUILD_ROOT = REPO_ROOT / "build"


def load_iam_spec() -> dict:
    """plugins/sgformer_iam/spec.yaml (JSON subset of YAML with full-line comments)."""
    lines = (PLUGIN_DIR / "spec.yaml").read_text().splitlines()
    return json.loads("\n".join(line for line in lines if not line.lstrip().startswith("#")))


@pytest.fixture(scope="session")
def iam_spec() -> dict:
    return load_iam_spec()


@pytest.fixture(scope="session")
def host_ref_library() -> Path:
    """Path of libsgformer_iam_ref.so, built from the current sources (CPU only, a few seconds)."""
    prebuilt = os.environ.get(LIBRARY_ENV_VAR)
    if prebuilt:
        return Path(prebuilt)
    return build_host_library(BUILD_ROOT / "pytest-plugins-ref")
