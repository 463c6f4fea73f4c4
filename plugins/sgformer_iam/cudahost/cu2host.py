#!/usr/bin/env python3
"""cudahost: translate CUDA sources for g++ and build the emulated SGFormerIAM libraries (no GPU, no nvcc).

Two constructs of CUDA C++ are not C++ and are rewritten mechanically, and one is rewritten so the
emulator can check it; everything else is compiled as written, with ``-include cudahost.h`` and the
stand-in headers of ``cudahost/include``:

  ``NAME<<<grid, block[, smem[, stream]]>>>(args)``
      -> ``::cudahost::launchKernel(::cudahost::LaunchConfig(grid, block, smem, stream), "NAME", NAME, args)``
  ``extern __shared__ [__align__(n)] TYPE NAME[];``
      -> ``auto const NAME = ::cudahost::dynamicSharedMemory<TYPE>();`` (a tracked pointer: bank conflicts,
         out-of-bounds accesses; kernels declare pointers derived from it with ``auto``)
  ``reinterpret_cast<TYPE>(EXPR)``
      -> ``::cudahost::pointerCast<TYPE>(EXPR, "EXPR", __func__)`` (in device code: alignment of the pointed-to
         type, a misaligned vector access traps as cudaErrorMisalignedAddress naming the kernel and EXPR)

Each rewrite stays on its line and the output starts with ``#line 1 "<original>"``, so compiler
messages point at the original file and line.

``--mutate drop-sync:K`` deletes the K-th ``__syncthreads();`` (1-based, in file order) of the
translated source: the negative control of tests/plugins/test_iam_kernel_emu.py (a broken kernel
must fail the bit-exact comparison). ``--mutate 'replace:OLD=>NEW'`` (Python API: the same string)
replaces the one occurrence of OLD in the kernel source by NEW before translation (several pairs joined
by REPLACE_SEPARATOR): the planted bugs of the tests (each must be caught).

Command line:
  cu2host.py translate IN.cu OUT.cpp [--mutate drop-sync:K]
  cu2host.py build OUT_DIR --trt-include DIR [--mutate drop-sync:K] [--jobs N]
      -> OUT_DIR/libsgformer_iam_emu.so (kernel launcher + GPU test harness + plugin enqueue harness)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = HERE.parent

_LAUNCH = re.compile(r"(?P<name>[A-Za-z_][\w:]*(?:\s*<[^<>;{}()]*>)?)\s*<<<(?P<cfg>.*?)>>>\s*\((?P<empty>\s*\))?",
                     re.S)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?(?P<type>[\w:]+(?:\s+[\w:]+)*?)"
                            r"\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?(?P<name>\w+)\s*\[\s*\]\s*;")
_SYNC = re.compile(r"__syncthreads\(\)\s*;")
_CAST = re.compile(r"\breinterpret_cast\s*<(?P<type>[^<>;{}()]*(?:<[^<>;{}()]*>[^<>;{}()]*)?)>\s*\(")

#: g++ flags: same rounding contract as nvcc --fmad=false (no contraction), no aliasing assumptions
#: (the kernels load vectors through reinterpret_cast, which is fine in CUDA).
CXXFLAGS = ["-std=c++17", "-O2", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing",
            "-Wall", "-Wno-unused-function"]


#: Between the OLD=>NEW pairs of one ``replace:`` mutation (several planted bugs in one build).
REPLACE_SEPARATOR = "\n&&&\n"


class TranslateError(ValueError):
    pass


def translate(source: str, filename: str, mutate: str | None = None) -> str:
    """The C++ text of one CUDA source (see the module docstring)."""

    def launch(m: re.Match) -> str:
        cfg = " ".join(m.group("cfg").split())
        name = m.group("name").strip()
        label = name.split("<")[0].strip()
        head = f"::cudahost::launchKernel(::cudahost::LaunchConfig({cfg}), \"{label}\", {name}"
        return head + ")" if m.group("empty") else head + ", "

    def shared(m: re.Match) -> str:
        t = " ".join(m.group("type").split())
        return f"auto const {m.group('name')} = ::cudahost::dynamicSharedMemory<{t}>();"

    if mutate and mutate.startswith("replace:"):
        for pair in mutate[len("replace:"):].split(REPLACE_SEPARATOR):
            old, sep, new = pair.partition("=>")
            if not sep or source.count(old) != 1:
                raise TranslateError(f"mutation {pair[:80]!r}: OLD must occur exactly once in {filename} "
                                     f"(found {source.count(old) if sep else 'no =>'})")
            source = source.replace(old, new)
        mutate = None
    out = _EXTERN_SHARED.sub(shared, source)
    out = _rewrite_casts(out, filename)
    out = _LAUNCH.sub(launch, out)
    if "<<<" in out or ">>>" in out:
        line = out[: out.find("<<<" if "<<<" in out else ">>>")].count("\n") + 1
        raise TranslateError(f"{filename}:{line}: a <<< >>> launch cu2host.py cannot parse")
    if mutate:
        kind, _, arg = mutate.partition(":")
        if kind != "drop-sync" or not arg.isdigit() or int(arg) < 1:
            raise TranslateError(f"unknown mutation {mutate!r}; expected drop-sync:K (K >= 1) or replace:OLD=>NEW")
        matches = list(_SYNC.finditer(out))
        k = int(arg)
        if k > len(matches):
            raise TranslateError(f"mutation {mutate}: {filename} has only {len(matches)} __syncthreads();")
        m = matches[k - 1]
        out = out[: m.start()] + "/* cu2host: dropped __syncthreads(); */" + out[m.end():]
    return f'#line 1 "{filename}"\n' + out


def _rewrite_casts(text: str, filename: str) -> str:
    """``reinterpret_cast<T>(e)`` -> ``::cudahost::pointerCast<T>(e, "e", __func__)`` (balanced parentheses)."""
    out, pos = [], 0
    for m in _CAST.finditer(text):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        if depth:
            line = text[: m.start()].count("\n") + 1
            raise TranslateError(f"{filename}:{line}: unbalanced reinterpret_cast")
        expr = text[m.end(): i - 1]
        if "\n" in expr:
            raise TranslateError(f"{filename}:{text[: m.start()].count(chr(10)) + 1}: keep a reinterpret_cast "
                                 "on one line (cu2host keeps line numbers)")
        label = " ".join(expr.split()).replace("\\", "\\\\").replace('"', '\\"')
        out.append(text[pos: m.start()])
        out.append(f"::cudahost::pointerCast<{m.group('type')}>({_rewrite_casts(expr, filename)}, \"{label}\", __func__)")
        pos = i
    out.append(text[pos:])
    return "".join(out)


def sync_count(source: str) -> int:
    return len(_SYNC.findall(source))


def _compile(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cudahost build failed: {' '.join(cmd)}\n{result.stdout[-6000:]}{result.stderr[-6000:]}")


def build(out_dir: Path, trt_include: Path, mutate: str | None = None, jobs: int = 2, cxx: str | None = None,
          reuse_from: Path | None = None) -> Path:
    """Compile the plugin's CUDA and TensorRT sources through cudahost into OUT_DIR/libsgformer_iam_emu.so.

    Objects are rebuilt only when their inputs changed (content of the translated text + flags); an
    up-to-date object of the same unit in ``reuse_from`` (an earlier build dir) is linked instead of
    recompiling it (mutants recompile only the kernel).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # Two processes building into one folder (two test workers, two make runs) take turns: the second finds the
    # objects up to date. flock is released by the kernel if a build dies.
    with open(out_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(out_dir, trt_include, mutate, jobs, cxx or os.environ.get("CXX") or shutil.which("g++") or "g++",
                      reuse_from)


def _build(out_dir: Path, trt_include: Path, mutate: str | None, jobs: int, cxx: str, reuse_from: Path | None) -> Path:
    common = [cxx, *CXXFLAGS, "-I", str(HERE / "include"), "-I", str(PLUGIN_DIR), "-include", str(HERE / "cudahost.h")]
    units = []
    for rel in ("sgformerIamKernel.cu", "test/sgformerIamKernelHarness.cu", "cudahost/test/cudahostSelfTest.cu"):
        src = PLUGIN_DIR / rel
        text = translate(src.read_text(), str(src), mutate if rel == "sgformerIamKernel.cu" else None)
        units.append((Path(rel).stem, text, []))
    for rel in ("sgformerIamPlugin.cpp", "sgformerIamRegistration.cpp", "test/sgformerIamPluginHarness.cpp"):
        src = PLUGIN_DIR / rel
        units.append((Path(rel).stem, f'#line 1 "{src}"\n' + src.read_text(), ["-isystem", str(trt_include)]))
    units.append(("cudahostCapi", (HERE / "cudahostCapi.cpp").read_text(), []))

    headers = "".join(p.read_text() for p in sorted(HERE.rglob("*.h")) + sorted(HERE.rglob("*.cuh")))
    headers += "".join(p.read_text() for p in sorted(PLUGIN_DIR.glob("*.h")))
    jobs_list = []
    objects = []
    for stem, text, extra in units:
        src = out_dir / f"{stem}.host.cpp"
        obj = out_dir / f"{stem}.o"
        stamp = out_dir / f"{stem}.stamp"
        # A mutant kernel is compiled once for one test: -O1 halves its compile time.
        opt = ["-O1"] if mutate and stem == "sgformerIamKernel" else []
        cmd = [*common, *opt, *extra, "-c", str(src), "-o", str(obj)]
        key = hashlib.sha256("\0".join([text, headers, *cmd[:-4]]).encode()).hexdigest()
        if reuse_from is not None:
            other = reuse_from / f"{stem}.o"
            other_stamp = reuse_from / f"{stem}.stamp"
            if other.is_file() and other_stamp.is_file() and other_stamp.read_text() == key:
                objects.append(other)
                continue
        objects.append(obj)
        if obj.is_file() and stamp.is_file() and stamp.read_text() == key and src.is_file() and src.read_text() == text:
            continue
        src.write_text(text)
        jobs_list.append((cmd, stamp, key))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [(pool.submit(_compile, cmd), stamp, key) for cmd, stamp, key in jobs_list]
        for future, stamp, key in futures:
            future.result()
            stamp.write_text(key)
    lib = out_dir / "libsgformer_iam_emu.so"
    tmp = out_dir / "libsgformer_iam_emu.so.tmp"
    # Export only the C entry points: two emulated libraries in one process (base + mutant) must not
    # bind each other's inline cudahost state.
    version_script = out_dir / "exports.map"
    version_script.write_text("{ global: sgformer_iam_*; cudahost_*; getCreators; setLoggerFinder; local: *; };\n")
    _compile([cxx, "-shared", "-pthread", f"-Wl,--version-script={version_script}", "-Wl,--no-undefined", "-o", str(tmp),
              *map(str, objects), "-ldl"])
    tmp.replace(lib)
    return lib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("translate")
    t.add_argument("input", type=Path)
    t.add_argument("output", type=Path)
    t.add_argument("--mutate")
    b = sub.add_parser("build")
    b.add_argument("out_dir", type=Path)
    b.add_argument("--trt-include", type=Path, required=True)
    b.add_argument("--mutate")
    b.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    try:
        if args.command == "translate":
            args.output.write_text(translate(args.input.read_text(), str(args.input), args.mutate))
        else:
            print(build(args.out_dir, args.trt_include, args.mutate, args.jobs))
    except (TranslateError, RuntimeError, OSError) as e:
        print(f"cu2host: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
