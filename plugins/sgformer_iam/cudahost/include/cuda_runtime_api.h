/* cudahost stand-in for <cuda_runtime_api.h>: everything is in cudahost.h (see cudahost/README.md). */
#ifndef CUDAHOST_CUDA_RUNTIME_API_H
#define CUDAHOST_CUDA_RUNTIME_API_H
#include "../cudahost.h"
#endif
