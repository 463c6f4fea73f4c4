"""The GPU this process sees, through the CUDA driver (ctypes; no TensorRT, no CUDA toolkit needed)."""
from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path
from typing import Optional

from pipeline.core.flavours import JETSON_NAMES

__all__ = ["GpuInfo", "probe_gpu", "describe_gpu"]


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "sm_87"
    driver_version: Optional[str] = None

    @property
    def is_jetson(self) -> bool:
        return self.compute_capability in JETSON_NAMES or Path("/etc/nv_tegra_release").exists()


def probe_gpu(index: int = 0) -> Optional[GpuInfo]:
    """Name and compute capability of GPU ``index`` through the CUDA driver (ctypes), or None without one."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    if cuda.cuInit(0) != 0:
        return None
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        return None
    dev = ctypes.c_int(0)
    if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return None
    major, minor, driver = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDriverGetVersion(ctypes.byref(driver))
    return GpuInfo(
        name=name.value.decode(errors="replace"),
        compute_capability=f"sm_{major.value}{minor.value}",
        driver_version=f"{driver.value // 1000}.{driver.value % 1000 // 10}" if driver.value else None,
    )


def describe_gpu(cc: Optional[str], name: Optional[str] = None) -> str:
    if not cc:
        return "no GPU"
    jetson = JETSON_NAMES.get(cc)
    label = jetson or name
    return f"{cc} ({label})" if label else cc
