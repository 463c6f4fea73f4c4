"""``sgformer::iam``: the SGFormerIAM op as a PyTorch custom op (CPU and CUDA), for ``create_model(iam="fused")``.

Contract: the one of :func:`pipeline.iam.reference.iam_aggregate` (the definition), with the merge weights of all tiers
concatenated::

    torch.ops.sgformer.iam(tokens [B, N, C] float32|float16, importance [B, N] float32,
                           weight [sum(group_sizes)] float32, bias [n_tiers] float32,
                           height, width, group_sizes, tier_sizes) -> (seq_row, seq_col), each [B, T, C]

Implementations (no second copy of the algorithm anywhere):

- **CPU**: the C++ host reference ``libsgformer_iam_ref.so`` through :func:`pipeline.iam.host.iam_host`.
- **CUDA**: ``launchSgformerIam`` -- the launcher the TensorRT plugin's enqueue calls -- built without TensorRT
  into ``libsgformer_iam_torch.so`` (``plugins/sgformer_iam/sgformerIamTorchShim.cpp``, CMake target
  ``sgformer_iam_torch``, or :func:`build_cuda_libraries`), loaded by path with ctypes. It runs on PyTorch's
  current stream of the tokens' device; its workspace comes from PyTorch's caching allocator.
- **Fake (meta)**: output shapes only, so ``torch.compile(fullgraph=True)`` and ``torch.export`` see through it.
- **Autograd**: the gradient of the reference path (recomputed with :func:`pipeline.iam.reference.iam_aggregate`); the sort
  order is not differentiable, as in the reference (importance gets no gradient).

Numerics: fp32 results are bit-identical between CPU and CUDA (both evaluate ``sgformerIamMath.h``: the same
stable order, the same ``fmaf`` chain over j = 0..k-1, one bias add). Against the reference path the token
order is identical and only the group sum is rounded differently (F.linear's reduction order): see
:data:`FUSED_VS_REFERENCE_OP_BOUND` and ``docs/gpu-check.md``.

Finding the CUDA library: ``$SGFORMER_IAM_TORCH_LIB`` if set, else ``build/iam-torch/libsgformer_iam_torch.so``
under the repository root (:func:`build_cuda_libraries` and ``make gpu-check`` build it there).
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import torch

from pipeline.core.errors import ConfigError, PluginLibraryError
from pipeline.iam.layout import IamLayout, check_layout
from pipeline.iam.reference import iam_aggregate
from pipeline.iam.host import PLUGIN_SOURCE_DIR, REPO_ROOT, iam_host
from pipeline.iam.native import (TORCH_SIGNATURES, IamCall, NativeLibrary, find_library, iam_call, load_library,
                                  raise_status)
from pipeline.iam.host import build_host_library, find_host_library

__all__ = [
    "IAM_IMPLS",
    "CUDA_LIBRARY_ENV_VAR",
    "FUSED_VS_REFERENCE_OP_BOUND",
    "iam_fused",
    "find_cuda_library",
    "build_cuda_libraries",
    "fused_unavailable",
    "fused_vs_reference_bound",
]

_logger = logging.getLogger("pipeline.iam.torch_op")

#: Values of ``create_model(iam=...)``: the PyTorch reference (the definition) or this op.
IAM_IMPLS = ("reference", "fused")

CUDA_LIBRARY_ENV_VAR = "SGFORMER_IAM_TORCH_LIB"
CUDA_LIBRARY_NAME = "libsgformer_iam_torch.so"
HARNESS_LIBRARY_NAME = "libsgformer_iam_kernel_harness.so"
DEFAULT_CUDA_BUILD_DIR = REPO_ROOT / "build" / "iam-torch"

_CUDA_API_VERSION = 2
_TOKEN_TYPES = (torch.float32, torch.float16)
_BUILD_HINT = (
    f"build it with pipeline.iam.torch_op.build_cuda_libraries() (or `make gpu-check`, or the CMake target "
    f"sgformer_iam_torch of plugins/sgformer_iam with -DSGFORMER_WITH_TRT_PLUGIN=OFF), or point "
    f"${CUDA_LIBRARY_ENV_VAR} at a built {CUDA_LIBRARY_NAME}"
)

#: fp32 unit roundoff.
_U32 = 2.0 ** -24


def fused_vs_reference_bound(k: int) -> float:
    """Relative bound of |fused - reference| for one merged value of a group of k tokens, fp32.

    Both paths sum the same k products w_j * x_j (same tokens, same order of tokens: the sort is shared) plus
    one bias, i.e. k + 1 terms, each in its own order: the fused op as a chain of fmaf (k roundings, then the
    bias add), F.linear as a blocked/vectorized reduction. Any order of an n-term float sum has error at most
    gamma_(n-1) * sum|terms| with gamma_m = m*u / (1 - m*u) (Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., eq. 4.4), and rounding the k products (F.linear) adds at most u * sum|w_j x_j| more.
    So |fused - reference| <= 2 * gamma_(k+1) * (sum_j |w_j x_j| + |b|): this returns 2 * gamma_(k+1).
    """
    m = k + 1
    return 2.0 * m * _U32 / (1.0 - m * _U32)


#: The largest group (k = 196, sr 8) sets the op-level bound: about 2.35e-5 times sum_j |w_j x_j| + |b|.
FUSED_VS_REFERENCE_OP_BOUND = fused_vs_reference_bound(196)


# ---------------------------------------------------------------------------------------------- checks


def _check(tokens: torch.Tensor, importance: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int,
           width: int, group_sizes: Sequence[int], tier_sizes: Sequence[int]) -> int:
    """Validate dtypes, devices and the static dims (the batch dim may be symbolic); returns T."""
    out_tokens = check_layout(height, width, group_sizes, tier_sizes, who="sgformer::iam").out_tokens
    if tokens.dtype not in _TOKEN_TYPES:
        raise TypeError(f"sgformer::iam: tokens must be float32 or float16, got {tokens.dtype}")
    for name, t in (("importance", importance), ("weight", weight), ("bias", bias)):
        if t.dtype != torch.float32:
            raise TypeError(f"sgformer::iam: {name} must be float32 (the op's contract), got {t.dtype}")
        if t.device != tokens.device:
            raise ValueError(f"sgformer::iam: {name} is on {t.device} but tokens are on {tokens.device}")
    if tokens.dim() != 3 or importance.dim() != 2:
        raise ValueError(f"sgformer::iam: expected tokens [B, N, C] and importance [B, N], got "
                         f"{list(tokens.shape)} and {list(importance.shape)}")
    if tokens.shape[1] != height * width or importance.shape[1] != height * width:
        raise ValueError(f"sgformer::iam: tokens {list(tokens.shape)} / importance {list(importance.shape)} do not "
                         f"have N = height*width = {height}*{width} = {height * width} tokens")
    if weight.numel() != sum(group_sizes) or bias.numel() != len(group_sizes):
        raise ValueError(f"sgformer::iam: weight has {weight.numel()} elements and bias {bias.numel()}; expected "
                         f"sum(group_sizes) = {sum(group_sizes)} and {len(group_sizes)} (one per tier)")
    return out_tokens


# ---------------------------------------------------------------------------------------------- the op


@torch.library.custom_op("sgformer::iam", mutates_args=(), device_types="cpu")
def _iam(tokens: torch.Tensor, importance: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int,
         width: int, group_sizes: list[int], tier_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU: the C++ host reference (zero-copy numpy views in and out)."""
    _check(tokens, importance, weight, bias, height, width, group_sizes, tier_sizes)
    row, col = iam_host(
        tokens.detach().contiguous().numpy(), importance.detach().contiguous().numpy(),
        weight.detach().contiguous().numpy(), bias.detach().contiguous().numpy(),
        height, width, group_sizes, tier_sizes,
    )
    return torch.from_numpy(row), torch.from_numpy(col)


def _device_call(tokens: torch.Tensor, importance: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 height: int, width: int, groups: ctypes.Array, tiers: ctypes.Array, seq_row: torch.Tensor,
                 seq_col: torch.Tensor) -> IamCall:
    """The launch's argument struct over contiguous tensors: ``data_ptr()`` includes a view's storage offset, so a
    tensor sliced off a larger buffer passes its own first element (only element-aligned; the launcher narrows
    its vector width to the pointers). Device-agnostic: the CPU tests hand the same struct to the host reference."""
    batch, _, channels = tokens.shape
    pointers = (tokens.data_ptr(), importance.data_ptr(), weight.data_ptr(), bias.data_ptr(), seq_row.data_ptr(),
                seq_col.data_ptr())
    return iam_call(str(tokens.dtype).replace("torch.", ""), pointers, (batch, height, width, channels), groups, tiers)


@_iam.register_kernel("cuda")
def _iam_cuda(tokens: torch.Tensor, importance: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int,
              width: int, group_sizes: list[int], tier_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """CUDA: launchSgformerIam on PyTorch's current stream, workspace from the caching allocator."""
    out_tokens = _check(tokens, importance, weight, bias, height, width, group_sizes, tier_sizes)
    lib = _cuda_library()
    tokens, importance, weight, bias = (t.contiguous() for t in (tokens, importance, weight, bias))
    batch, n, channels = tokens.shape
    if importance.shape[0] != batch:
        raise ValueError(f"sgformer::iam: importance has batch {importance.shape[0]}, tokens {batch}")
    device = tokens.device
    seq_row = tokens.new_empty((batch, out_tokens, channels))
    seq_col = tokens.new_empty((batch, out_tokens, channels))
    groups = (ctypes.c_int32 * len(group_sizes))(*group_sizes)
    tiers = (ctypes.c_int32 * len(tier_sizes))(*tier_sizes)
    call = _device_call(tokens, importance, weight, bias, height, width, groups, tiers, seq_row, seq_col)
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device)
        workspace_bytes = int(lib.sgformer_iam_torch_workspace_size(batch, n))
        # Freed on return; the caching allocator only reuses it for work queued after this launch on this stream.
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        status = lib.sgformer_iam_torch_launch(ctypes.byref(call), workspace.data_ptr(), workspace_bytes,
                                               stream.cuda_stream, index)
    if status != 0:
        raise_status(status, lib.sgformer_iam_torch_last_error().decode(), RuntimeError)
    return seq_row, seq_col


@_iam.register_fake
def _iam_fake(tokens: torch.Tensor, importance: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int,
              width: int, group_sizes: list[int], tier_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    out_tokens = _check(tokens, importance, weight, bias, height, width, group_sizes, tier_sizes)
    shape = (tokens.shape[0], out_tokens, tokens.shape[2])
    return tokens.new_empty(shape), tokens.new_empty(shape)


def _setup_context(ctx, inputs, output) -> None:
    tokens, importance, weight, bias, height, width, group_sizes, tier_sizes = inputs
    ctx.save_for_backward(tokens, importance, weight, bias)
    ctx.layout = IamLayout(height=height, width=width, group_sizes=tuple(group_sizes), tier_sizes=tuple(tier_sizes))


def _backward(ctx, grad_row: torch.Tensor, grad_col: torch.Tensor):
    tokens, importance, weight, bias = ctx.saved_tensors
    layout: IamLayout = ctx.layout
    wanted = ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(need) for t, need in zip((tokens, weight, bias), wanted)]
        row, col = iam_aggregate(leaves[0], importance.detach(), torch.split(leaves[1], list(layout.group_sizes)),
                                 torch.split(leaves[2], 1), layout)
        inputs = [t for t in leaves if t.requires_grad]
        grads = iter(torch.autograd.grad((row, col), inputs, (grad_row, grad_col), allow_unused=True))
    out = [next(grads) if need else None for need in wanted]
    return out[0], None, out[1], out[2], None, None, None, None


_iam.register_autograd(_backward, setup_context=_setup_context)


def iam_fused(
    tokens: torch.Tensor,
    importance: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    layout: IamLayout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pipeline.iam.reference.iam_aggregate` through ``sgformer::iam`` (same arguments, same outputs)."""
    weight = torch.cat([w.reshape(-1) for w in weights]).to(torch.float32)
    bias = torch.cat([b.reshape(-1) for b in biases]).to(torch.float32)
    return torch.ops.sgformer.iam(tokens, importance.to(torch.float32), weight, bias, layout.height, layout.width,
                                  list(layout.group_sizes), list(layout.tier_sizes))


# ---------------------------------------------------------------------------------------------- CUDA library


#: The torch op's CUDA library as the loader sees it (signatures: pipeline.iam.native.TORCH_SIGNATURES).
CUDA_LIBRARY = NativeLibrary(
    what="the sgformer::iam CUDA library",
    env_var=CUDA_LIBRARY_ENV_VAR,
    default_path=DEFAULT_CUDA_BUILD_DIR / CUDA_LIBRARY_NAME,
    hint=_BUILD_HINT,
    version_symbol="sgformer_iam_torch_api_version",
    version=_CUDA_API_VERSION,
    signatures=TORCH_SIGNATURES,
)


def find_cuda_library() -> Path:
    """Path of libsgformer_iam_torch.so: ``$SGFORMER_IAM_TORCH_LIB``, else the default build location."""
    return find_library(CUDA_LIBRARY)


def _load_cuda(path: str) -> ctypes.CDLL:
    """The CUDA library at ``path``, checked and bound (``pipeline.iam.native.load_library``; cached)."""
    return load_library(CUDA_LIBRARY, path)


def _cuda_library() -> ctypes.CDLL:
    return _load_cuda(str(find_cuda_library()))


def _find_nvcc() -> Optional[str]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
            if home and (Path(home) / "bin" / "nvcc").is_file():
                return str(Path(home) / "bin" / "nvcc")
    return nvcc


def _run(command: list[str], what: str, timeout: Optional[float]) -> None:
    _logger.debug("%s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PluginLibraryError(f"{what} took longer than {timeout:.0f} s: {' '.join(command)}") from exc
    if result.returncode != 0:
        raise PluginLibraryError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
                                 f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


def build_cuda_libraries(
    build_dir: Path = DEFAULT_CUDA_BUILD_DIR,
    archs: Sequence[str] = ("90",),
    harness: bool = False,
    builder: str = "auto",
    timeout: Optional[float] = None,
) -> dict[str, Path]:
    """Build libsgformer_iam_torch.so (and with ``harness`` the kernel test harness) for ``archs``, no TensorRT.

    ``builder``: "cmake" (the plugin's CMakeLists.txt, ``-DSGFORMER_WITH_TRT_PLUGIN=OFF``), "nvcc" (nvcc called
    directly: every ``plugins/sgformer_iam/*.cu`` is a kernel source, compiled once with the CMake target's
    flags, then linked into each library; for machines without cmake), or "auto" (cmake if on PATH).
    Returns {"torch": path, "harness": path?}. PluginLibraryError names the failing command.
    """
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    archs = [str(a).strip() for a in archs if str(a).strip()]
    if not archs or not all(a.isdigit() for a in archs):
        raise ConfigError(f"CUDA architectures must be numbers like 90 or 87, got {list(archs)}")
    nvcc = _find_nvcc()
    if nvcc is None:
        raise PluginLibraryError("nvcc not found (put it on PATH or set CUDA_HOME); the CUDA library of sgformer::iam "
                                 "needs the CUDA toolkit")
    if builder == "auto":
        builder = "cmake" if shutil.which("cmake") else "nvcc"
    targets = {"torch": build_dir / CUDA_LIBRARY_NAME}
    if harness:
        targets["harness"] = build_dir / HARNESS_LIBRARY_NAME
    if builder == "cmake":
        cmake = shutil.which("cmake")
        if cmake is None:
            raise PluginLibraryError("builder 'cmake' requested but cmake is not on PATH (use builder='nvcc')")
        _run([cmake, "-S", str(PLUGIN_SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
              "-DSGFORMER_WITH_TRT_PLUGIN=OFF", f"-DSGFORMER_BUILD_TESTS={'ON' if harness else 'OFF'}",
              f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}"],
             "CMake configure of the sgformer::iam CUDA library", timeout)
        names = ["sgformer_iam_torch"] + (["sgformer_iam_kernel_harness"] if harness else [])
        _run([cmake, "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2), "--target", *names],
             "building the sgformer::iam CUDA library", timeout)
    elif builder == "nvcc":
        _build_with_nvcc(nvcc, build_dir, archs, targets, timeout)
    else:
        raise ConfigError(f"unknown builder {builder!r}; expected auto, cmake or nvcc")
    for path in targets.values():
        if not path.is_file():
            raise PluginLibraryError(f"the build finished but {path} is missing")
    return targets


def _build_with_nvcc(nvcc: str, build_dir: Path, archs: list[str], targets: dict[str, Path],
                     timeout: Optional[float]) -> None:
    gencode = [f"--generate-code=arch=compute_{a},code=[compute_{a},sm_{a}]" for a in archs]
    common = [nvcc, "-std=c++17", "-O3", "-lineinfo", "-I", str(PLUGIN_SOURCE_DIR), *gencode,
              "-Xcompiler=-fPIC,-fvisibility=hidden"]
    kernels = sorted(PLUGIN_SOURCE_DIR.glob("*.cu"))
    if not kernels:
        raise PluginLibraryError(f"no kernel sources (*.cu) in {PLUGIN_SOURCE_DIR}")
    # The kernels' rounding contract: explicit fmaf/adds only, --fmad=false (as in the CMake target).
    jobs = [(src, build_dir / f"{src.stem}.o", ["--fmad=false"]) for src in kernels]
    jobs.append((PLUGIN_SOURCE_DIR / "sgformerIamTorchShim.cpp", build_dir / "sgformerIamTorchShim.o", []))
    if "harness" in targets:
        # The harness's C API is what ctypes calls: default visibility, as the CMake target builds it.
        src = PLUGIN_SOURCE_DIR / "test" / "sgformerIamKernelHarness.cu"
        jobs.append((src, build_dir / "sgformerIamKernelHarness.o", ["-Xcompiler=-fvisibility=default"]))

    # Rebuild an object only when it is older than a source or header of the plugin directory (or the flags changed).
    deps = [*PLUGIN_SOURCE_DIR.glob("*.h"), *PLUGIN_SOURCE_DIR.glob("*.cu"), *PLUGIN_SOURCE_DIR.glob("*.cpp"),
            *PLUGIN_SOURCE_DIR.glob("test/*.cu")]
    newest = max(d.stat().st_mtime for d in deps)
    stamp = build_dir / "nvcc-flags.txt"
    flags = " ".join(common[1:] + [f"{job[1].name}:{' '.join(job[2])}" for job in jobs])
    fresh = stamp.is_file() and stamp.read_text() == flags

    def compile_one(job) -> None:
        src, obj, extra = job
        if fresh and obj.is_file() and obj.stat().st_mtime >= newest:
            return
        _run([*common, *extra, "-c", str(src), "-o", str(obj)], f"nvcc {src.name}", timeout)

    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 2))) as pool:
        list(pool.map(compile_one, jobs))
    stamp.write_text(flags)
    kernel_objs = [str(build_dir / f"{src.stem}.o") for src in kernels]
    links = {"torch": build_dir / "sgformerIamTorchShim.o", "harness": build_dir / "sgformerIamKernelHarness.o"}
    for name, out in targets.items():
        tmp = out.with_suffix(".so.tmp")
        _run([nvcc, "-shared", "-cudart", "static", *gencode, str(links[name]), *kernel_objs, "-o", str(tmp)],
             f"linking {out.name}", timeout)
        os.replace(tmp, out)


def fused_unavailable(device: str = "cpu") -> Optional[str]:
    """Why ``iam="fused"`` cannot run on ``device`` here (None if it can). Builds the CPU host reference if missing."""
    if device == "cpu":

        try:
            find_host_library()
        except PluginLibraryError:
            try:
                build_host_library()
            except PluginLibraryError as exc:
                return f"the C++ host reference is missing and could not be built: {exc}"
        return None
    if not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch"
    try:
        _cuda_library()
    except PluginLibraryError as exc:
        return str(exc)
    return None
