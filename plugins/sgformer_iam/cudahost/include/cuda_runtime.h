/* cudahost stand-in for <cuda_runtime.h>. */
#ifndef CUDAHOST_CUDA_RUNTIME_H
#define CUDAHOST_CUDA_RUNTIME_H
#include "../cudahost.h"
#endif
