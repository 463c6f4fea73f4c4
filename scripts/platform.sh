#!/usr/bin/env bash
# Platform facts for the Makefile: one question per call, the answer on stdout (empty when unknown).
#
#   platform.sh system-trt   yes | no   the system Python ($PYTHON) imports `tensorrt` (JetPack, python3-libnvinfer)
#   platform.sh jetson       orin | thor | unsupported:<what> | (empty: not a Jetson)
#   platform.sh has-gpu      yes | no   a Jetson, or nvidia-smi lists a GPU
#   platform.sh nvcc-major   13         CUDA major version of $NVCC
#   platform.sh cuda-archs   87         the plugin's GPU architectures (semicolon list), see below
#
# Inputs, each overridable (the Makefile passes them; tests point them at stand-ins):
#   JETSON                  if set (even empty), the answer of `jetson` (the Makefile passes its JETSON)
#   PYTHON                  system interpreter (default python3)
#   JETSON_RELEASE_FILE     /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ...": R36 = JetPack 6 (Orin),
#                           R38 = JetPack 7 (Thor))
#   DEVICE_TREE_COMPATIBLE  /proc/device-tree/compatible (NUL-separated; tegra234 = Orin, tegra264 = Thor)
#   NVIDIA_SMI              nvidia-smi (`--query-gpu=compute_cap` gives "8.7"; JetPack 6 has none, Thor has one)
#   NVCC                    nvcc (`--version` gives the CUDA release, `--list-gpu-arch` the architectures it knows)
#   DEFAULT_CUDA_ARCHS      the portable list for non-Jetson machines (default 80;86;87;89;90;100;110;120)
#
# cuda-archs: on a Jetson only the device's own architecture: nvidia-smi's compute capability if it answers,
# else Orin 87, Thor 110 (CUDA 13; 101 with CUDA 12, which named Thor sm_101). Elsewhere DEFAULT_CUDA_ARCHS minus
# what this nvcc cannot compile (its --list-gpu-arch; if that is unavailable, CUDA 12 drops 100/110/120).
set -u
PYTHON=${PYTHON:-python3}
JETSON_RELEASE_FILE=${JETSON_RELEASE_FILE:-/etc/nv_tegra_release}
DEVICE_TREE_COMPATIBLE=${DEVICE_TREE_COMPATIBLE:-/proc/device-tree/compatible}
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
NVCC=${NVCC:-nvcc}
DEFAULT_CUDA_ARCHS=${DEFAULT_CUDA_ARCHS:-80;86;87;89;90;100;110;120}

system_trt() {
    if "$PYTHON" -c "import tensorrt" >/dev/null 2>&1; then echo yes; else echo no; fi
}

jetson() {
    local compat="" rel
    if [ -n "${JETSON+set}" ]; then  # decided by the caller (make JETSON=...; empty: not a Jetson)
        echo "$JETSON"; return
    fi
    if [ -f "$DEVICE_TREE_COMPATIBLE" ] && [ -r "$DEVICE_TREE_COMPATIBLE" ]; then
        compat=$(tr '\0' '\n' <"$DEVICE_TREE_COMPATIBLE")
    fi
    case $compat in
        *tegra264*) echo thor; return ;;
        *tegra234*) echo orin; return ;;
        *tegra194* | *tegra186* | *tegra210*)
            echo "unsupported:$(printf '%s\n' "$compat" | grep -o 'tegra[0-9]*' | head -n1)"; return ;;
    esac
    if [ -f "$JETSON_RELEASE_FILE" ] && [ -r "$JETSON_RELEASE_FILE" ]; then
        rel=$(sed -n 's/^# R\([0-9][0-9]*\).*/\1/p' "$JETSON_RELEASE_FILE" | head -n1)
        case $rel in
            36) echo orin ;;
            38 | 39) echo thor ;;
            "") echo "unsupported:unreadable-release-file" ;;
            *) echo "unsupported:R$rel" ;;
        esac
    fi
}

gpu_cc() {  # "8.7" -> 87; empty without a working nvidia-smi
    "$NVIDIA_SMI" --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .\r' |
        grep -E '^[0-9]+$' || true
}

has_gpu() {
    if [ -n "$(jetson)" ] || [ -n "$(gpu_cc)" ]; then echo yes; else echo no; fi
}

nvcc_major() {
    "$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p' | head -n1
}

cuda_archs() {
    local module cc major known out arch
    module=$(jetson)
    major=$(nvcc_major)
    case $module in
        orin | thor)
            cc=$(gpu_cc)
            if [ -n "$cc" ]; then echo "$cc"
            elif [ "$module" = orin ]; then echo 87
            elif [ -n "$major" ] && [ "$major" -lt 13 ]; then echo 101
            else echo 110
            fi
            return ;;
    esac
    known=$("$NVCC" --list-gpu-arch 2>/dev/null | sed -n 's/^compute_\([0-9][0-9]*\)$/\1/p' | tr '\n' ' ')
    out=""
    for arch in ${DEFAULT_CUDA_ARCHS//;/ }; do
        if [ -n "$known" ]; then
            case " $known " in *" $arch "*) ;; *) continue ;; esac
        elif [ -n "$major" ] && [ "$major" -lt 13 ]; then
            case $arch in 100 | 110 | 120) continue ;; esac
        fi
        out=${out:+$out;}$arch
    done
    echo "$out"
}

case ${1:-} in
    system-trt) system_trt ;;
    jetson) jetson ;;
    has-gpu) has_gpu ;;
    nvcc-major) nvcc_major ;;
    cuda-archs) cuda_archs ;;
    *) echo "usage: $0 system-trt|jetson|has-gpu|nvcc-major|cuda-archs" >&2; exit 2 ;;
esac
