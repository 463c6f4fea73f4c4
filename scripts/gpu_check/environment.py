"""What this machine has: GPU (nvidia-smi), toolchain, Python packages, torch's view of CUDA."""
from __future__ import annotations

import importlib.util
import platform
import re
import sys
from typing import Optional

from scripts.gpu_check.common import OPTIONAL_PACKAGES, find_tool, run_command


def _packages() -> dict:
    found: dict = {}
    for name in OPTIONAL_PACKAGES:
        found[name] = None
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - a broken package is reported, not fatal
            found[name] = f"import failed: {type(exc).__name__}: {exc}"[:200]
    return found


def _gpus(env: dict) -> None:
    env["gpus"] = []
    smi = env["tools"]["nvidia-smi"]
    if not smi:
        return
    res = run_command([smi, "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"], 20)
    if res["returncode"] != 0:
        env["nvidia_smi_error"] = res["output"].strip()[-500:]
        return
    for line in res["output"].strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            env["gpus"].append({"name": parts[0], "driver": parts[1], "compute_cap": parts[2], "memory": parts[3]})


def torch_usable(env: dict) -> bool:
    version = env["packages"].get("torch")
    return bool(version) and not str(version).startswith("import failed")


def probe_environment() -> dict:
    """GPU, driver, toolchain, packages. Never raises."""
    env: dict = {"python": sys.version.split()[0], "python_executable": sys.executable, "platform": platform.platform(),
                 "packages": _packages(), "tools": {}}
    for tool in ("nvidia-smi", "nvcc", "cmake", "compute-sanitizer", "ncu", "g++"):
        env["tools"][tool] = find_tool(tool)
    _gpus(env)
    nvcc = env["tools"]["nvcc"]
    if nvcc:
        res = run_command([nvcc, "--version"], 20)
        match = re.search(r"release ([\d.]+), V([\d.]+)", res["output"])
        env["nvcc"] = match.group(2) if match else res["output"].strip()[-200:]
    if torch_usable(env):
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["torch_cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            env["torch_device"] = torch.cuda.get_device_name(0)
            env["torch_capability"] = f"{major}{minor}"
    return env


def local_arch(env: dict) -> Optional[str]:
    """The local GPU's architecture as nvcc wants it (e.g. "90"), or None without a GPU."""
    if env.get("torch_capability"):
        return env["torch_capability"]
    if env.get("gpus"):
        return env["gpus"][0]["compute_cap"].replace(".", "")
    return None


def has_gpu_driver() -> bool:
    smi = find_tool("nvidia-smi")
    return smi is not None and run_command([smi, "-L"], 20)["returncode"] == 0
