"""The Makefile's platform decisions (Jetson, system TensorRT, venv, plugin architectures) on fake machines.

Nothing is built: ``make print-config`` prints the decisions and ``make -n -B`` the commands. The machine is faked
through the detection inputs the Makefile exposes: ``JETSON_RELEASE_FILE`` and ``DEVICE_TREE_COMPATIBLE`` (files
written here), ``NVIDIA_SMI`` and ``NVCC`` (small scripts printing what the real tools print), and ``PYTHON`` (a
wrapper that puts a stand-in ``tensorrt`` module on the path, as JetPack's python3-libnvinfer does, or hides
every installed package). ``VENV`` points into the test's folder, so even a mistake cannot touch the real venv.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What `nvcc --list-gpu-arch` prints (CUDA 12.6 knows nothing above compute_90; CUDA 13.0 drops Maxwell..Volta).
CUDA12_ARCHS = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90]
CUDA13_ARCHS = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121]


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def machine(tmp_path):
    """``machine(**fake)`` -> make variables for a fake machine; ``fake`` keys: release, compat, smi_cc, cuda,
    cuda_list (False: nvcc without --list-gpu-arch), system_trt."""

    def make_vars(*, release=None, compat=None, smi_cc=None, cuda="13.0", cuda_list=True, system_trt=False):
        d = tmp_path / f"fake{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        release_file = d / "nv_tegra_release"
        if release is not None:
            release_file.write_text(release)
        compat_file = d / "compatible"
        if compat is not None:
            compat_file.write_bytes(b"\0".join(c.encode() for c in compat) + b"\0")
        smi = _script(d / "nvidia-smi", f'echo "{smi_cc}"\n' if smi_cc else "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
        major = cuda.split(".")[0]
        archs = CUDA12_ARCHS if major == "12" else CUDA13_ARCHS
        listing = " ".join(f"compute_{a}" for a in archs)
        list_cmd = f"printf '%s\\n' {listing}" if cuda_list else "echo 'nvcc fatal : Unknown option' >&2; exit 1"
        nvcc = _script(d / "nvcc", f"""case "$1" in
  --version) echo "nvcc: NVIDIA (R) Cuda compiler driver"; echo "Cuda compilation tools, release {cuda}, V{cuda}.68";;
  --list-gpu-arch) {list_cmd};;
esac
""")
        if system_trt:
            stub = d / "dist-packages" / "tensorrt"
            stub.mkdir(parents=True)
            (stub / "__init__.py").write_text('__version__ = "10.3.0"  # stand-in for JetPack\'s python3-libnvinfer\n')
            python = _script(d / "python3", f'PYTHONPATH="{stub.parent}" exec "{sys.executable}" "$@"\n')
        else:
            python = _script(d / "python3", f'exec "{sys.executable}" -I -S "$@"\n')  # no site-packages at all
        return [f"JETSON_RELEASE_FILE={release_file}", f"DEVICE_TREE_COMPATIBLE={compat_file}",
                f"NVIDIA_SMI={smi}", f"NVCC={nvcc}", f"PYTHON={python}", f"VENV={d / 'venv'}"]

    return make_vars


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_ARCHS", "JETSON", "EXTRAS",
                                                             "SYSTEM_TRT", "HAVE_GPU", "TORCH_INDEX", "MAKEFLAGS")}
    return env


def config(variables: list[str]) -> dict[str, str]:
    out = subprocess.run(["make", "-s", "print-config", *variables], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def dry_run(target: str, variables: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["make", "-n", "-B", target, *variables], cwd=ROOT, env=_env(), capture_output=True,
                            text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


JETPACK6_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan 8\n"
ORIN_COMPAT = ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"]


# ------------------------------------------------------------------------------------------------- Jetson


def test_jetpack6_orin_venv_sees_system_tensorrt_without_rtx_and_plugin_is_sm87_only(machine):
    fake = machine(release=JETPACK6_RELEASE, compat=ORIN_COMPAT, cuda="12.6", system_trt=True)
    cfg = config(fake)
    assert cfg["JETSON"] == "orin"
    assert cfg["SYSTEM_TRT"] == "yes"
    assert cfg["VENV_FLAGS"] == "--system-site-packages"
    assert cfg["EXTRAS"] == "dev,gpu"  # no trt-rtx; pycuda for running the engine on the device
    assert cfg["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert cfg["NVCC_MAJOR"] == "12"
    assert cfg["CUDA_ARCHS"] == "87"

    venv = dry_run("venv", fake).stdout
    assert re.search(r"-m venv --system-site-packages \S+/venv", venv), venv
    assert "-e '.[dev,gpu]'" in venv and "trt-rtx" not in venv
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in venv
    assert "import tensorrt; print('venv uses the system TensorRT'" in venv

    plugin = dry_run("plugins", fake).stdout.replace("\\\n", " ")
    cmake = next(line for line in plugin.splitlines() if line.startswith("cmake -S"))
    # make hands the architectures to the recipe as SGF_CUDA_ARCHS (`make settings` prints what it receives)
    assert '-DCMAKE_CUDA_ARCHITECTURES="$SGF_CUDA_ARCHS"' in cmake
    assert f"-DCMAKE_CUDA_COMPILER={dict(v.split('=', 1) for v in fake)['NVCC']}" in cmake
    received = subprocess.run(["make", "-s", "--no-print-directory", "settings", *fake], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, check=True).stdout
    assert "SGF_CUDA_ARCHS=87" in received.splitlines(), received


def test_orin_is_recognised_from_the_release_file_alone(machine):
    cfg = config(machine(release=JETPACK6_RELEASE, cuda="12.6", system_trt=True))
    assert cfg["JETSON"] == "orin" and cfg["CUDA_ARCHS"] == "87"


def test_orin_is_recognised_from_the_device_tree_alone(machine):
    cfg = config(machine(compat=ORIN_COMPAT, cuda="12.6", system_trt=True))
    assert cfg["JETSON"] == "orin" and cfg["CUDA_ARCHS"] == "87"


def test_thor_uses_nvidia_smi_then_the_cuda_version(machine):
    thor = ["nvidia,p3971-0080+p3834-0008", "nvidia,tegra264"]
    release = "# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64, DATE: Mon Aug 25\n"
    assert config(machine(compat=thor, smi_cc="11.0", cuda="13.0", system_trt=True))["CUDA_ARCHS"] == "110"
    assert config(machine(release=release, cuda="13.0", system_trt=True))["CUDA_ARCHS"] == "110"
    assert config(machine(release=release, cuda="12.8", system_trt=True))["CUDA_ARCHS"] == "101"  # CUDA 12 name


def test_jetpack5_is_refused_with_a_clear_message(machine):
    fake = machine(release="# R35 (release), REVISION: 5.0, GCID: 1, BOARD: t186ref, EABI: aarch64\n")
    assert config(fake)["JETSON"] == "unsupported:R35"
    for target in ("venv", "plugins"):
        result = dry_run(target, fake, check=False)
        assert result.returncode != 0
        assert "JetPack 5 or older" in result.stderr and "TensorRT 10" in result.stderr and "R35" in result.stderr


def test_explicit_settings_win_over_detection(machine):
    fake = machine(release=JETPACK6_RELEASE, cuda="12.6", system_trt=True)
    cfg = config([*fake, "CUDA_ARCHS=86;87", "EXTRAS=dev", "TORCH_INDEX="])
    assert cfg["CUDA_ARCHS"] == "86;87" and cfg["EXTRAS"] == "dev" and cfg["TORCH_INDEX"] == ""
    assert config([*machine(cuda="13.0"), "JETSON=orin"])["CUDA_ARCHS"] == "87"


# ------------------------------------------------------------------------------------------ other hosts


def test_ci_host_without_gpu_or_tensorrt_keeps_the_portable_list_and_tensorrt_rtx(machine):
    cfg = config(machine(cuda="13.0"))
    assert cfg["JETSON"] == "" and cfg["SYSTEM_TRT"] == "no" and cfg["HAVE_GPU"] == "no"
    assert cfg["VENV_FLAGS"] == "" and cfg["EXTRAS"] == "dev,trt-rtx" and cfg["TORCH_INDEX"] == ""
    assert cfg["CUDA_ARCHS"] == "80;86;87;89;90;100;110;120"


@pytest.mark.parametrize("cuda_list", [True, False], ids=["list-gpu-arch", "version-only"])
def test_cuda12_never_gets_architectures_it_cannot_compile(machine, cuda_list):
    cfg = config(machine(cuda="12.6", cuda_list=cuda_list))
    assert cfg["CUDA_ARCHS"] == "80;86;87;89;90"


def test_x86_gpu_host_with_system_tensorrt(machine):
    cfg = config(machine(smi_cc="8.9", cuda="12.6", system_trt=True))
    assert cfg["JETSON"] == "" and cfg["HAVE_GPU"] == "yes" and cfg["SYSTEM_TRT"] == "yes"
    assert cfg["VENV_FLAGS"] == "--system-site-packages" and cfg["EXTRAS"] == "dev,gpu"
    assert cfg["CUDA_ARCHS"] == "80;86;87;89;90"  # a dGPU host keeps the portable list (what its nvcc knows)


# --------------------------------------------------------------------------------------- documentation


def _user_variables() -> list[str]:
    """Every variable the Makefile lets the user set (``NAME ?= ...``), plus TensorRT_ROOT (read with ifneq)."""
    text = (ROOT / "Makefile").read_text()
    return sorted(set(re.findall(r"^([A-Za-z_]+) \?=", text, re.M)) | {"TensorRT_ROOT"})


def test_every_make_variable_is_in_make_help_and_the_readme():
    names = _user_variables()
    assert {"VARIANT", "PRECISION", "RES", "CKPT", "CALIB", "CALIB_N", "CALIB_METHOD", "BACKEND", "MAX_BATCH",
            "CUDA_ARCHS", "PYTHON", "VENV", "PYTEST_ARGS", "SYSTEM_TRT", "EXTRAS", "JETSON"} <= set(names)
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                               check=True).stdout
    readme = (ROOT / "README.md").read_text()
    missing_help = [n for n in names if not re.search(rf"\b{n}\b", help_text)]
    missing_readme = [n for n in names if f"`{n}`" not in readme]
    assert not missing_help, f"make help does not document {missing_help}"
    assert not missing_readme, f"README.md does not document {missing_readme}"
