/*
 * cudahost: C entry points of the emulated libraries (ctypes, tests/plugins/test_iam_kernel_emu.py).
 * Compiled with -include cudahost.h like the translated CUDA sources.
 */
#include <cstring>

extern "C"
{

//! Emulate a GPU of compute capability `cc` (e.g. 90, 86); sharedOptin <= 0 takes the architecture's
//! opt-in shared memory per block, multiProcessors <= 0 keeps the current count.
__attribute__((visibility("default"))) void cudahost_set_device(int cc, int sharedOptin, int multiProcessors)
{
    cudahost::setDevice(cc, sharedOptin, multiProcessors);
}

__attribute__((visibility("default"))) int cudahost_shared_optin(void)
{
    return cudahost::detail::device().sharedBytesPerBlockOptin;
}

//! Kernel launches (<<<>>>) since the library was loaded.
__attribute__((visibility("default"))) long long cudahost_launch_count(void)
{
    return cudahost::launchCount();
}

//! Calls of CUB stand-ins (each is several kernel launches in real CUB).
__attribute__((visibility("default"))) long long cudahost_library_call_count(void)
{
    return cudahost::libraryCallCount();
}

__attribute__((visibility("default"))) long long cudahost_block_count(void)
{
    return cudahost::blockCount();
}

//! Successful cudaFuncSetAttribute calls since the library was loaded.
__attribute__((visibility("default"))) long long cudahost_func_attribute_call_count(void)
{
    return cudahost::funcAttributeCallCount();
}

//! Message of the last launch-configuration error or kernel fault ("" if none).
__attribute__((visibility("default"))) char const* cudahost_last_message(void)
{
    return cudahost::lastMessage().c_str();
}

} // extern "C"
