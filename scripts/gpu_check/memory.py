"""Where the second-context and reset cases put their buffers and run the op without torch: device memory of
the current CUDA context (driver API through ctypes, libcuda.so.1) with the torch op's CUDA library, or -- in a
dry run -- host memory with the C++ host reference, which takes the same call struct (``SgformerIamCall``)."""
from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np

from pipeline.iam.host import HOST_LIBRARY, find_host_library
from pipeline.iam.native import iam_call, load_library

#: Driver API results a case reports as "the context went away under the runtime", not as a kernel bug.
CONTEXT_LIFETIME_ERRORS = ("CUDA_ERROR_CONTEXT_IS_DESTROYED", "CUDA_ERROR_INVALID_CONTEXT",
                           "cudaErrorContextIsDestroyed", "cudaErrorInvalidContext", "cudaErrorDeviceUninitialized",
                           "cudaErrorInvalidResourceHandle")


class DriverError(RuntimeError):
    """A CUDA driver API call failed; ``name`` is the CUresult's name (e.g. CUDA_ERROR_INVALID_VALUE)."""

    def __init__(self, call: str, name: str) -> None:
        super().__init__(f"{call}: {name}")
        self.name = name


class Driver:
    """The few CUDA driver API calls the cases need (``cuCtxCreate``, ``cuMemAlloc``, a primary-context reset)."""

    def __init__(self, path: str = "libcuda.so.1") -> None:
        self.lib = ctypes.CDLL(path)
        self.call("cuInit", ctypes.c_uint(0))

    def call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorName(status, ctypes.byref(text))
            raise DriverError(name, text.value.decode() if text.value else f"CUresult {status}")

    def device(self, ordinal: int) -> ctypes.c_int:
        dev = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(dev), ctypes.c_int(ordinal))
        return dev

    def create_context(self, dev: ctypes.c_int) -> ctypes.c_void_p:
        """A new (non-primary) context on ``dev``, made current (pushed) -- what pycuda's make_context does."""
        ctx = ctypes.c_void_p()
        if hasattr(self.lib, "cuCtxCreate_v2"):
            self.call("cuCtxCreate_v2", ctypes.byref(ctx), ctypes.c_uint(0), dev)
        else:  # CUDA 13 drivers keep _v2; _v4 takes an optional parameter struct (NULL: none)
            self.call("cuCtxCreate_v4", ctypes.byref(ctx), None, ctypes.c_uint(0), dev)
        return ctx

    def destroy_context(self, ctx: ctypes.c_void_p) -> None:
        popped = ctypes.c_void_p()
        self.call("cuCtxPopCurrent_v2", ctypes.byref(popped))
        self.call("cuCtxDestroy_v2", ctx)

    def primary_context(self, dev: ctypes.c_int) -> ctypes.c_void_p:
        """The device's primary context (the runtime's and PyTorch's), retained and made current."""
        ctx = ctypes.c_void_p()
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        self.call("cuCtxSetCurrent", ctx)
        return ctx

    def reset_primary_context(self, dev: ctypes.c_int) -> None:
        """What cudaDeviceReset does to the primary context: every allocation and every kernel attribute is gone."""
        self.call("cuDevicePrimaryCtxReset_v2", dev)


class DeviceMemory:
    """Buffers in the current CUDA context; the op runs through the torch op's CUDA library on the legacy default
    stream of that context (the shim keeps the current context when it is on the right device)."""

    where = "cuda"

    def __init__(self, driver: Driver, shim: ctypes.CDLL, device: int) -> None:
        self.driver, self.shim, self.device = driver, shim, device
        self.pointers: list[int] = []

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self.driver.call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1)))
        self.pointers.append(ptr.value)
        return ptr.value

    def upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        ptr = self.alloc(array.nbytes)
        self.driver.call("cuMemcpyHtoD_v2", ctypes.c_uint64(ptr), array.ctypes.data_as(ctypes.c_void_p),
                         ctypes.c_size_t(array.nbytes))
        return ptr

    def download(self, ptr: int, like: np.ndarray) -> np.ndarray:
        out = np.empty_like(like)
        self.driver.call("cuMemcpyDtoH_v2", out.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(ptr),
                         ctypes.c_size_t(out.nbytes))
        return out

    def launch(self, call, batch: int, num_tokens: int) -> None:
        nbytes = int(self.shim.sgformer_iam_torch_workspace_size(batch, num_tokens))
        workspace = self.alloc(nbytes)
        status = self.shim.sgformer_iam_torch_launch(ctypes.byref(call), workspace, nbytes, None, self.device)
        if status != 0:
            raise RuntimeError(self.shim.sgformer_iam_torch_last_error().decode())
        self.driver.call("cuCtxSynchronize")

    def free(self) -> None:
        """Best effort: after a failed launch the context may be unusable, and that error is the one to report."""
        for ptr in self.pointers:
            try:
                self.driver.call("cuMemFree_v2", ctypes.c_uint64(ptr))
            except DriverError:
                pass
        self.pointers.clear()


class HostMemory:
    """The dry run's stand-in: host buffers and the host reference, fed the same call struct."""

    where = "cpu"

    def __init__(self, library: Optional[ctypes.CDLL] = None) -> None:
        self.lib = library or load_library(HOST_LIBRARY, str(find_host_library()))
        self.buffers: dict[int, np.ndarray] = {}

    def alloc(self, nbytes: int) -> int:
        buf = np.zeros(max(nbytes, 1), np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return buf.ctypes.data

    def upload(self, array: np.ndarray) -> int:
        ptr = self.alloc(array.nbytes)
        ctypes.memmove(ptr, np.ascontiguousarray(array).ctypes.data, array.nbytes)
        return ptr

    def download(self, ptr: int, like: np.ndarray) -> np.ndarray:
        out = np.empty_like(like)
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    def launch(self, call, batch: int, num_tokens: int) -> None:
        if self.lib.sgformer_iam_ref_run(ctypes.byref(call)) != 0:
            raise RuntimeError(self.lib.sgformer_iam_ref_last_error().decode())

    def free(self) -> None:
        self.buffers.clear()


def run_op(memory, inputs: dict, layout) -> tuple[np.ndarray, np.ndarray]:
    """The op on ``inputs`` (numpy: tokens [B, N, C], importance, weight, bias) through ``memory``: buffers
    allocated and filled there, one :class:`~pipeline.iam.native.IamCall` built from their addresses, run, read back."""
    tokens = inputs["tokens"]
    batch, num_tokens, channels = tokens.shape
    out_tokens = sum(t // g for g, t in zip(layout.group_sizes, layout.tier_sizes))
    like = np.empty((batch, out_tokens, channels), tokens.dtype)
    pointers = [memory.upload(inputs[k]) for k in ("tokens", "importance", "weight", "bias")]
    pointers += [memory.alloc(like.nbytes), memory.alloc(like.nbytes)]
    groups = np.asarray(layout.group_sizes, np.int32)
    tiers = np.asarray(layout.tier_sizes, np.int32)
    call = iam_call(tokens.dtype.name, pointers, (batch, layout.height, layout.width, channels), groups, tiers)
    try:
        memory.launch(call, batch, num_tokens)
        return memory.download(pointers[4], like), memory.download(pointers[5], like)
    finally:
        memory.free()
