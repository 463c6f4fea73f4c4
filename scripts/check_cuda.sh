#!/usr/bin/env bash
# Checks of the plugin build before cmake runs (make plugins): NVCC names an existing compiler, and every entry of
# CUDA_ARCHS is an architecture number that this nvcc can compile. One line naming the make variable and the fix.
# Inputs (environment, set by the Makefile): SGF_NVCC, SGF_CUDA_ARCHS, SGF_NVCC_FROM (make's origin of NVCC).
set -u
nvcc=${SGF_NVCC:-}
archs=${SGF_CUDA_ARCHS:-}
if [[ ${SGF_NVCC_FROM:-} == "command line" || ${SGF_NVCC_FROM:-} == environment* ]]; then
  if [[ ! -x $nvcc || -d $nvcc ]]; then
    echo "make: NVCC=$nvcc is not an executable CUDA compiler; pass the path of nvcc (e.g. NVCC=/usr/local/cuda/bin/nvcc) or leave NVCC unset to use the one on PATH" >&2
    exit 2
  fi
fi
if [[ -z $archs ]]; then
  echo "make: CUDA_ARCHS is empty: this nvcc ($nvcc) compiles none of the plugin's architectures; pass CUDA_ARCHS, e.g. CUDA_ARCHS=86 (see make print-config)" >&2
  exit 2
fi
supported=""
if [[ -x $nvcc ]]; then
  supported=$("$nvcc" --list-gpu-arch 2>/dev/null | sed -n 's/^compute_\([0-9]*\)[a-z]*$/\1/p' | sort -u | tr '\n' ' ')
fi
IFS=';' read -r -a list <<< "$archs"
for arch in "${list[@]}"; do
  base=${arch%%-*}
  base=${base%[af]}
  if [[ ! $base =~ ^[0-9]{2,3}$ ]]; then
    echo "make: CUDA_ARCHS=$archs: '$arch' is not a GPU architecture number; use numbers separated by ';', e.g. CUDA_ARCHS=\"86;89\"" >&2
    exit 2
  fi
  if [[ -n $supported && " $supported " != *" $base "* ]]; then
    echo "make: CUDA_ARCHS=$archs: $nvcc cannot compile architecture $base (it supports: ${supported% }); drop it or use a newer CUDA (NVCC=...)" >&2
    exit 2
  fi
done
