#!/usr/bin/env bash
# Fetch the TensorRT 10.14 C++ headers for compile-only builds (CI, machines without TensorRT).
#
# Source: NVIDIA's TensorRT 10.14 headers (Apache-2.0) as redistributed inside the third-party PyPI wheel
# kernel-lens==2.0.1 (https://pypi.org/project/kernel-lens/2.0.1/), under kernel_lens/include/tensorrt/.
# Only that wheel is downloaded (--no-deps, 235190 bytes) and it is verified by sha256 before anything is
# unpacked: pip's hash-checking mode (--require-hashes) and a second check of the file here. A wheel with any
# other content is refused and nothing is written. Only the headers are unpacked into
# third_party/tensorrt/include (gitignored). Running it again is a no-op once NvInfer.h is there.
# Point CMake at the result with -DTensorRT_ROOT=third_party/tensorrt.
#
# Usage: scripts/fetch_trt_headers.sh [DEST_ROOT]     (default: <repo>/third_party/tensorrt)
# Env:   PYTHON (default: python3) is the interpreter whose pip downloads the wheel.
#        TRT_HEADERS_WHEEL=path: use this local copy of the wheel instead of downloading (offline, mirrors);
#        it must have the pinned sha256. TRT_HEADERS_WHEEL_SHA256 replaces the pin only together with
#        TRT_HEADERS_WHEEL (a wheel you vetted yourself; the tests use it with a synthetic wheel).
set -euo pipefail

readonly WHEEL_NAME="kernel-lens"
readonly WHEEL_VERSION="2.0.1"
readonly MEMBER_PREFIX="kernel_lens/include/tensorrt/"
# sha256 of kernel_lens-2.0.1-py3-none-any.whl (downloaded and hashed 2026-12-07; pip checks it too).
readonly PINNED_SHA256="07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0"
expected_sha256="${PINNED_SHA256}"
if [[ -n "${TRT_HEADERS_WHEEL_SHA256:-}" ]]; then
    [[ -n "${TRT_HEADERS_WHEEL:-}" ]] || { echo "fetch_trt_headers: error: TRT_HEADERS_WHEEL_SHA256 needs TRT_HEADERS_WHEEL (a local wheel)" >&2; exit 1; }
    expected_sha256="${TRT_HEADERS_WHEEL_SHA256}"
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_root="${1:-${repo_root}/third_party/tensorrt}"
include_dir="${dest_root}/include"
python="${PYTHON:-python3}"

die() { echo "fetch_trt_headers: error: $*" >&2; exit 1; }

if [[ -f "${include_dir}/NvInfer.h" && -f "${include_dir}/NvInferVersion.h" ]]; then
    echo "fetch_trt_headers: TensorRT headers already present in ${include_dir}"
    exit 0
fi

command -v "${python}" >/dev/null 2>&1 || die "'${python}' not found; set PYTHON to an interpreter that has pip"
"${python}" -m pip --version >/dev/null 2>&1 || die "'${python} -m pip' does not work; install pip or set PYTHON"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

if [[ -n "${TRT_HEADERS_WHEEL:-}" ]]; then
    [[ -f "${TRT_HEADERS_WHEEL}" ]] || die "TRT_HEADERS_WHEEL=${TRT_HEADERS_WHEEL} is not a file"
    cp "${TRT_HEADERS_WHEEL}" "${tmp}/"
else
    echo "fetch_trt_headers: downloading ${WHEEL_NAME}==${WHEEL_VERSION} (sha256-verified; headers only are kept)"
    echo "${WHEEL_NAME}==${WHEEL_VERSION} --hash=sha256:${expected_sha256}" > "${tmp}/requirements.txt"
    if ! "${python}" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
            --dest "${tmp}" -r "${tmp}/requirements.txt"; then
        die "pip download of ${WHEEL_NAME}==${WHEEL_VERSION} failed or its sha256 is not ${expected_sha256} (needs network access to PyPI or a configured index)"
    fi
fi

shopt -s nullglob
wheels=("${tmp}"/*.whl)
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel in ${tmp}, found ${#wheels[@]}"
actual_sha256="$("${python}" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "${wheels[0]}")"
[[ "${actual_sha256}" == "${expected_sha256}" ]] || die "sha256 mismatch for $(basename "${wheels[0]}"): got ${actual_sha256}, expected ${expected_sha256}; refusing to unpack (the wheel is not the pinned one)"

# A wheel is a zip archive; use Python's zipfile so 'unzip' need not be installed.
mkdir -p "${include_dir}"
"${python}" - "${wheels[0]}" "${MEMBER_PREFIX}" "${include_dir}" <<'PY'
import os, sys, zipfile
wheel, prefix, dest = sys.argv[1:4]
count = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"fetch_trt_headers: error: refusing unsafe member path {name!r}")
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            dst.write(src.read())
        count += 1
if count == 0:
    sys.exit(f"fetch_trt_headers: error: no members under {prefix} in {os.path.basename(wheel)}")
print(f"fetch_trt_headers: unpacked {count} header files into {dest}")
PY

[[ -f "${include_dir}/NvInfer.h" ]] || die "NvInfer.h missing after unpacking into ${include_dir}"
version="$(sed -n 's/^#define TRT_\(MAJOR\|MINOR\|PATCH\)_ENTERPRISE \([0-9]*\).*/\2/p' "${include_dir}/NvInferVersion.h" | paste -sd. -)"
echo "fetch_trt_headers: TensorRT headers ${version:-(version unknown)} ready in ${include_dir}"
