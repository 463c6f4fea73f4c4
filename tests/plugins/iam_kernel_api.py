"""ctypes API of the SGFormerIAM kernel and plugin harnesses, shared by the GPU tests and the CPU (cudahost) tests.

Libraries:
  * ``libsgformer_iam_kernel_harness.so`` (CMake target ``sgformer_iam_kernel_harness``, real CUDA) and
  * ``libsgformer_iam_emu.so`` (``plugins/sgformer_iam/cudahost/cu2host.py build``: the same harness source plus
    the plugin and its enqueue harness, compiled by g++ through cudahost; runs on the CPU)
export the kernel harness (plugins/sgformer_iam/test/sgformerIamKernelHarness.cu):

  int sgformer_iam_cuda_fp32(float* tokens, float* importance, float* w, float* b, int batch, int height, int width,
                             int channels, int* group_sizes, int* tier_sizes, int n_tiers, float* seq_row, float* seq_col)
  int sgformer_iam_cuda_fp16(uint16* tokens, ... same ..., uint16* seq_row, uint16* seq_col)
      host buffers in, host buffers out (the harness copies to and from the device); 0 = ok, else
      sgformer_iam_cuda_last_error() says why
  int sgformer_iam_cuda_set_path(int path)        -1 automatic (default), 0 fused, 1 CUB
  int sgformer_iam_cuda_set_offsets(int tokens, int outputs)   offset views (elements past the allocation)
  int sgformer_iam_cuda_vector_width(batch, out_tokens, channels, element_bytes, token_offset, output_offset)
  int sgformer_iam_cuda_auto_path(int num_tokens) the automatic choice on the current device
  int sgformer_iam_cuda_fused_max_tokens(size_t shared_optin)
  size_t sgformer_iam_cuda_workspace_size(int batch, int num_tokens)
  int sgformer_iam_cuda_device_count(void)

``libsgformer_iam_emu.so`` and ``libsgformer_iam_plugin_harness.so`` (CMake target ``sgformer_iam_plugin_harness``,
real CUDA) export the plugin harness (plugins/sgformer_iam/test/sgformerIamPluginHarness.cpp):

  int sgformer_iam_plugin_fp32(... as sgformer_iam_cuda_fp32 ..., int max_batch)   (and _fp16)
      createPlugin(kBUILD) -> configurePlugin(profile [1, max_batch]) -> getWorkspaceSize -> getFieldsToSerialize
      -> createPlugin(kRUNTIME) -> attachToContext -> onShapeChange -> enqueue
  int sgformer_iam_plugin_configure(height, width, channels, group_sizes, tier_sizes, n_tiers, long long min_batch,
                                    long long max_batch, unsigned long long* workspace_bytes)
  char* sgformer_iam_plugin_last_error(void)        the plugin's logged errors

and the emulator's controls (plugins/sgformer_iam/cudahost/cudahostCapi.cpp):

  void cudahost_set_device(int cc, int shared_optin, int multiprocessors)   e.g. (86, 0, 0): an RTX 30 GPU
  int cudahost_shared_optin(void); long long cudahost_launch_count(void); long long cudahost_library_call_count(void)
  long long cudahost_func_attribute_call_count(void); long long cudahost_func_attribute_query_count(void)
  char* cudahost_last_message(void)
  int cudahost_create_context(void); int cudahost_set_context(int); int cudahost_current_context(void)
  int cudahost_device_reset(void)                 cudaDeviceReset: new context, sticky errors cleared
  void cudahost_set_last_error(int); int cudahost_peek_last_error(void); int cudahost_get_last_error(void)
  int cudahost_set_cub_radix_bits(int bits)       passes of the CUB stand-in = ceil(32 / bits)
  int cudahost_bank_stats(char* kernel, long long* requests, long long* wavefronts, int* max_ways)
  void cudahost_reset_bank_stats(void)
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from pipeline.iam.layout import IamLayout

_F32P = ctypes.POINTER(ctypes.c_float)
_U16P = ctypes.POINTER(ctypes.c_uint16)
_I32P = ctypes.POINTER(ctypes.c_int)

PATH_AUTO, PATH_FUSED, PATH_CUB = -1, 0, 1


#: The one IAM layout class (pipeline/iam/layout.py imports only the standard library and pipeline.core.errors).
Layout = IamLayout


def load_kernel_harness(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    common = [ctypes.c_int] * 4 + [_I32P, _I32P, ctypes.c_int]
    if not hasattr(lib, "sgformer_iam_cuda_fp32"):  # the GPU plugin harness alone
        _declare_plugin_harness(lib, common)
        return lib
    lib.sgformer_iam_cuda_fp32.argtypes = [_F32P, _F32P, _F32P, _F32P, *common, _F32P, _F32P]
    lib.sgformer_iam_cuda_fp16.argtypes = [_U16P, _F32P, _F32P, _F32P, *common, _U16P, _U16P]
    lib.sgformer_iam_cuda_last_error.restype = ctypes.c_char_p
    lib.sgformer_iam_cuda_device_count.restype = ctypes.c_int
    lib.sgformer_iam_cuda_set_path.argtypes = [ctypes.c_int]
    lib.sgformer_iam_cuda_auto_path.argtypes = [ctypes.c_int]
    lib.sgformer_iam_cuda_fused_max_tokens.argtypes = [ctypes.c_size_t]
    lib.sgformer_iam_cuda_workspace_size.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.sgformer_iam_cuda_workspace_size.restype = ctypes.c_size_t
    lib.sgformer_iam_cuda_set_offsets.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.sgformer_iam_cuda_vector_width.argtypes = [ctypes.c_int] * 6
    if hasattr(lib, "sgformer_iam_plugin_fp32"):
        _declare_plugin_harness(lib, common)
    if hasattr(lib, "cudahost_set_device"):
        lib.cudahost_set_device.argtypes = [ctypes.c_int] * 3
        lib.cudahost_launch_count.restype = ctypes.c_longlong
        lib.cudahost_library_call_count.restype = ctypes.c_longlong
        lib.cudahost_func_attribute_call_count.restype = ctypes.c_longlong
        lib.cudahost_last_message.restype = ctypes.c_char_p
        lib.cudahost_func_attribute_query_count.restype = ctypes.c_longlong
        lib.cudahost_set_context.argtypes = [ctypes.c_int]
        lib.cudahost_set_last_error.argtypes = [ctypes.c_int]
        lib.cudahost_set_cub_radix_bits.argtypes = [ctypes.c_int]
        lib.cudahost_bank_stats.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_longlong),
                                            ctypes.POINTER(ctypes.c_longlong), ctypes.POINTER(ctypes.c_int)]
    return lib


def bank_stats(lib: ctypes.CDLL, kernel: str) -> tuple[int, int, int]:
    """(warp requests to dynamic shared memory, wavefronts they took, worst request) of `kernel` (cudahost)."""
    requests, wavefronts, ways = ctypes.c_longlong(0), ctypes.c_longlong(0), ctypes.c_int(0)
    lib.cudahost_bank_stats(kernel.encode(), ctypes.byref(requests), ctypes.byref(wavefronts), ctypes.byref(ways))
    return requests.value, wavefronts.value, ways.value


def _declare_plugin_harness(lib: ctypes.CDLL, common: list) -> None:
    lib.sgformer_iam_plugin_fp32.argtypes = [_F32P, _F32P, _F32P, _F32P, *common, _F32P, _F32P, ctypes.c_int]
    lib.sgformer_iam_plugin_fp16.argtypes = [_U16P, _F32P, _F32P, _F32P, *common, _U16P, _U16P, ctypes.c_int]
    lib.sgformer_iam_plugin_configure.argtypes = [ctypes.c_int] * 3 + [_I32P, _I32P, ctypes.c_int, ctypes.c_longlong,
                                                  ctypes.c_longlong, ctypes.POINTER(ctypes.c_ulonglong)]
    lib.sgformer_iam_plugin_last_error.restype = ctypes.c_char_p


def run_op(lib: ctypes.CDLL, tokens: np.ndarray, importance: np.ndarray, weight: np.ndarray, bias: np.ndarray,
           layout, *, via_plugin: bool = False, max_batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the kernel harness (or the plugin harness) on host arrays; returns (seq_row, seq_col)."""
    groups = np.ascontiguousarray(layout.group_sizes, np.int32)
    tiers = np.ascontiguousarray(layout.tier_sizes, np.int32)
    tokens = np.ascontiguousarray(tokens)
    importance = np.ascontiguousarray(importance, np.float32)
    weight = np.ascontiguousarray(weight, np.float32)
    bias = np.ascontiguousarray(bias, np.float32)
    b, _, c = tokens.shape
    row = np.empty((b, layout.out_tokens, c), tokens.dtype)
    col = np.empty_like(row)
    fp32 = tokens.dtype == np.float32
    ptr = _F32P if fp32 else _U16P
    args = [tokens.ctypes.data_as(ptr), importance.ctypes.data_as(_F32P), weight.ctypes.data_as(_F32P),
            bias.ctypes.data_as(_F32P), b, layout.height, layout.width, c, groups.ctypes.data_as(_I32P),
            tiers.ctypes.data_as(_I32P), len(groups), row.ctypes.data_as(ptr), col.ctypes.data_as(ptr)]
    if via_plugin:
        fn = lib.sgformer_iam_plugin_fp32 if fp32 else lib.sgformer_iam_plugin_fp16
        status = fn(*args, max_batch if max_batch is not None else b)
        assert status == 0, lib.sgformer_iam_plugin_last_error().decode()
    else:
        fn = lib.sgformer_iam_cuda_fp32 if fp32 else lib.sgformer_iam_cuda_fp16
        status = fn(*args)
        detail = lib.cudahost_last_message().decode() if hasattr(lib, "cudahost_last_message") else ""
        assert status == 0, f"{lib.sgformer_iam_cuda_last_error().decode()} {detail}"
    return row, col


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of an fp32/fp16 array (bit-exact comparison; NaN payloads and -0 count)."""
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def same_bits_nan_as_nan(got: np.ndarray, want: np.ndarray) -> bool:
    """Bit for bit, except that a NaN matches any NaN: a GPU returns its canonical NaN (0x7fffffff / 0x7fff)
    where x86 keeps the payload and sign of an input NaN, so NaN bits are not part of the contract."""
    got_nan, want_nan = np.isnan(got), np.isnan(want)
    if not np.array_equal(got_nan, want_nan):
        return False
    return bool(np.array_equal(bits(got)[~got_nan], bits(want)[~want_nan]))
