"""The one policy for missing toolchains in the test suite.

Every tool the suite needs that pip does not install (g++, nvcc, nm; the TensorRT-RTX wheel where the platform has
none): in CI (`make test` and .ci/run set the SGFORMER_REQUIRE_* variables to 1) a missing tool fails the test that
needs it; elsewhere the test skips and names the missing tool. A pip package the project pins is never a reason to
skip: the venv has it, or the import fails.
"""
from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_NVCC = "SGFORMER_REQUIRE_NVCC"
REQUIRE_RTX = "SGFORMER_REQUIRE_RTX"
REQUIRE_CXX = "SGFORMER_REQUIRE_CXX"


def missing_tool(what: str, require_var: str) -> None:
    """Fail (``$require_var`` is 1, as in CI) or skip, naming the missing ``what``."""
    message = f"{what} not found"
    if os.environ.get(require_var) == "1":
        pytest.fail(f"{message} ({require_var}=1: CI requires it)")
    pytest.skip(f"{message} (set {require_var}=1 to make this a failure)")


def require_tool(name: str, require_var: str = REQUIRE_CXX) -> str:
    """The path of executable ``name`` (g++, nm, ...), or fail / skip by the policy above."""
    path = shutil.which(name)
    if path is None:
        missing_tool(f"{name} on PATH", require_var)
    return path


