"""Shared pieces of the fault-injection tests (tests/test_reliability_*.py).

The tests write engine folders with ``pipeline.stages.build.save_engine_dir`` around a stand-in engine (random bytes: the
integrity checks hash files, they do not execute them, and no GPU is needed) and the real tiny-test ONNX, whose
stand-in verify runs in onnxruntime. Faults are injected into child processes by small wrapper scripts
(:func:`wrapped_cli`) that patch one library function (a slow or failing write) and then run ``pipeline.cli``;
they only use functions that exist on main too, so each test also shows what main did (see README, Reliability).
Assertions read the folder with plain file hashing (:func:`folder_consistent`), not with the code under test.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.backends import tensorrt as trt_backend
from pipeline.core.errors import BuildError

ROOT = Path(__file__).resolve().parents[1]


def _rtx_available() -> bool:
    try:
        trt_backend.load_backend("tensorrt-rtx")
    except BuildError:
        return False
    return True


# SGFORMER_REQUIRE_RTX=1 (CI, `make test`): no skip, so a missing wheel fails these tests (tests/conftest.py policy).
needs_rtx = pytest.mark.skipif(not _rtx_available() and os.environ.get("SGFORMER_REQUIRE_RTX") != "1", reason="TensorRT-RTX wheels not installed (pip install .[trt-rtx])")


def mm_onnx(path: Path, seed: int) -> Path:
    """images [B, 8] -> MatMul -> logits [B, 4]; builds in a second. Not an SG-Former export, so its metadata carries
    no artifact record (variant "unknown"): build labels it from ``--variant mm --resolution 8`` (MM_LABELS)."""
    weight = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((8, 4)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["images", "W"], ["logits"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"variant": "unknown", "img_size": "8", "weights": f"random-init, seed {seed}"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


#: build's labels for the mm_onnx graph (it has no artifact record to read them from)
MM_LABELS = ["--variant", "mm", "--resolution", "8"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_info(onnx_path: Path, engine: bytes, resolution: int = 224, plugin: Optional[Path] = None):
    """A BuildInfo as the TensorRT-RTX builder would report it for the tiny-test export (batch 1..2)."""
    from pipeline.stages.build import BuildInfo
    from pipeline.store.manifest import BatchProfile, Target, TensorSpec

    return BuildInfo(
        backend_flavour="TensorRT-RTX", backend_version="1.7.1.116", cuda_version="12.9", strongly_typed=True,
        seconds=0.1, engine_bytes=len(engine), num_layers=1,
        inputs=(TensorSpec("images", (-1, 3, resolution, resolution), "float32"),),
        outputs=(TensorSpec("logits", (-1, 1000), "float32"),),
        batch=BatchProfile(1, 1, 2), target=Target(description="TensorRT-RTX engine for RTX GPUs",
                                                   compute_capabilities=("sm_89",)),
        onnx_sha256=sha256(onnx_path), plugin_library=plugin, timing_cache=None,
    )


def publish(out_root: Path, onnx_path: Path, *, precision: str = "fp32", engine: Optional[bytes] = None,
            name: str = "tiny", plugin: Optional[Path] = None, seed: int = 0) -> Path:
    """An engine folder ``out_root/name`` for ``onnx_path`` with a stand-in engine; returns the folder."""
    from pipeline.stages.build import BuildConfig, save_engine_dir

    if engine is None:
        engine = hashlib.sha256(f"engine {seed}".encode()).digest() * 2048  # 64 KiB, distinct per seed
    info = fake_info(onnx_path, engine, plugin=plugin)
    return save_engine_dir(out_root, engine, info, variant="tiny-test", precision=precision, img_size=224,
                           weights="random-init, seed 0", onnx_file=str(onnx_path), config=BuildConfig(),
                           dir_name=name)


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def edit_manifest(folder: Path, **changes) -> None:
    data = manifest(folder)
    for dotted, value in changes.items():
        obj = data
        *parents, key = dotted.split("__")
        for p in parents:
            obj = obj[p]
        obj[key] = value
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))


def folder_consistent(folder: Path) -> list[str]:
    """Problems of an engine folder found by hashing its files against manifest.json ([] = consistent)."""
    data = manifest(folder)
    problems = []
    for key in ("engine", "plugin", "onnx"):
        ref = data.get(key)
        if not ref:
            continue
        path = folder / ref["file"]
        if not path.is_file():
            problems.append(f"{key} {ref['file']} missing")
        elif sha256(path) != ref["sha256"]:
            problems.append(f"{key} {ref['file']} sha256 differs from the manifest")
        elif ref.get("bytes") is not None and path.stat().st_size != ref["bytes"]:
            problems.append(f"{key} {ref['file']} size differs")
    parity = data.get("parity") or {}
    if parity.get("passed") and parity.get("engine_sha256") not in (None, data["engine"]["sha256"]):
        problems.append("parity recorded for another engine")
    return problems


def residue(folder: Path) -> list[str]:
    """Temp files and staging folders left in ``folder`` (recursively)."""
    found = []
    for p in folder.rglob("*"):
        n = p.name
        if n.endswith(".tmp") or n.startswith(".staging") or n.startswith("ort.quant") or n.startswith("sgformer-"):
            found.append(str(p.relative_to(folder)))
    return sorted(found)


def wrapped_cli(prelude: str, argv: list[str]) -> list[str]:
    """argv of a child Python that runs ``prelude`` (fault injection) and then ``sgformer-trt argv``."""
    script = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import sys
        from pipeline.cli import main
        sys.exit(main({argv!r}))
    """)
    return [sys.executable, "-c", script]


def child_env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _default_sigint() -> None:
    # A shell without job control (`make test &` in a script, nohup) starts background jobs with SIGINT ignored,
    # and an ignored SIGINT is inherited: Python then installs no KeyboardInterrupt handler and the Ctrl-C cases
    # would time out. The child gets the disposition a terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(cmd: list[str], **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=child_env(**extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Wait until ``path`` exists (a marker the injected fault writes); fail if the child ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"child ended (rc {proc.returncode}) before {path.name}:\n{(out or '')[-2000:]}\n"
                                 f"{(err or '')[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def run_cli(argv: list[str], timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], cwd=ROOT, env=child_env(**extra_env),
                          capture_output=True, text=True, timeout=timeout)
