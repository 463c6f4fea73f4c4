"""TensorRT flavours as data: names, Python modules, the oldest supported version, targets, install hints.

Kept apart from ``pipeline.backends.tensorrt`` (which imports TensorRT, probes the GPU and adapts the API), so the
manifest, the build config and the CLI can validate flavour names and targets without importing TensorRT.
"""
from __future__ import annotations

__all__ = ["BACKEND_CHOICES", "FLAVOUR_TENSORRT", "FLAVOUR_RTX", "FLAVOURS", "MIN_TENSORRT", "HARDWARE_COMPATIBILITY",
           "RTX_COMPUTE_CAPABILITIES", "RTX_DEFAULT_CAPABILITIES", "RTX_TARGET_DESCRIPTION", "INSTALL_HINT",
           "JETSON_NAMES"]

BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx")
FLAVOUR_TENSORRT = "TensorRT"
FLAVOUR_RTX = "TensorRT-RTX"
FLAVOURS = (FLAVOUR_TENSORRT, FLAVOUR_RTX)

#: Python modules per backend, in the order they are tried.
_MODULES = {
    "tensorrt": ("tensorrt",),
    # ``tensorrt_rtx`` comes from the small ``tensorrt-rtx-cu13`` sdist; the bindings wheel alone is enough.
    "tensorrt-rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings"),
}

#: The oldest full TensorRT we support: JetPack 6 ships 10.3.
MIN_TENSORRT = (10, 3)

HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")

#: Compute capabilities TensorRT-RTX 1.x can target (its ``ComputeCapability`` enum, less NONE/CURRENT).
RTX_COMPUTE_CAPABILITIES = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_120", "sm_121")
#: What TensorRT-RTX 1.7 targets when no capability is set (CPU-only build): an fp32 GEMM that an explicit sm_75
#: target refuses builds by default, and the engine matches an explicit sm_80..sm_121 build byte for byte in size.
RTX_DEFAULT_CAPABILITIES = ("sm_80", "sm_86", "sm_89", "sm_120", "sm_121")
RTX_TARGET_DESCRIPTION = (
    "TensorRT-RTX engine for RTX GPUs of compute capability 8.0, 8.6, 8.9, 12.0, 12.1 (builder default; 7.5 only "
    "on request; not Jetson/Hopper/Blackwell datacenter)"
)


INSTALL_HINT = (
    "install one of: x86_64 with an NVIDIA GPU: `pip install tensorrt-cu12` (or NVIDIA's TensorRT tar/deb "
    "packages); Jetson: JetPack's `sudo apt install python3-libnvinfer` (TensorRT 10.3 on JetPack 6); "
    "CPU-only CI (builds engines for RTX GPUs, cannot run them): "
    "`pip install tensorrt-rtx-cu13-libs==1.7.1.116 tensorrt-rtx-cu13-bindings==1.7.1.116`"
)

#: Jetson modules by compute capability (Thor: sm_101 with CUDA 12.x, sm_110 with CUDA 13).
JETSON_NAMES = {"sm_53": "Nano", "sm_62": "TX2", "sm_72": "Xavier", "sm_87": "Orin", "sm_101": "Thor", "sm_110": "Thor"}
