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

//! cudaFuncGetAttributes calls since the library was loaded.
__attribute__((visibility("default"))) long long cudahost_func_attribute_query_count(void)
{
    return cudahost::detail::state().funcAttributeQueries;
}

//! A new context on the emulated device, made current (pycuda's make_context); returns its id.
__attribute__((visibility("default"))) int cudahost_create_context(void)
{
    return cudahost::createContext();
}

//! Make context `id` current again; 0 on success, 1 for an unknown id.
__attribute__((visibility("default"))) int cudahost_set_context(int id)
{
    return cudahost::setContext(id) ? 0 : 1;
}

__attribute__((visibility("default"))) int cudahost_current_context(void)
{
    return cudahost::currentContext();
}

//! cudaDeviceReset(): a new context; sticky errors and function attributes are forgotten.
__attribute__((visibility("default"))) int cudahost_device_reset(void)
{
    return static_cast<int>(cudaDeviceReset());
}

//! Leave `code` pending as the thread's last error, as an earlier failed call of another library would.
__attribute__((visibility("default"))) void cudahost_set_last_error(int code)
{
    cudahost::detail::state().lastError = static_cast<cudaError_t>(code);
}

__attribute__((visibility("default"))) int cudahost_peek_last_error(void)
{
    return static_cast<int>(cudaPeekAtLastError());
}

__attribute__((visibility("default"))) int cudahost_get_last_error(void)
{
    return static_cast<int>(cudaGetLastError());
}

//! Radix bits per pass of the CUB stand-in (6 like CUB's segmented policy for 32-bit keys: 6 passes, the
//! result in the original buffer; 5: 7 passes, the other buffer). Returns 1 for a value outside 1..8.
__attribute__((visibility("default"))) int cudahost_set_cub_radix_bits(int bits)
{
    if (bits < 1 || bits > 8)
    {
        return 1;
    }
    cudahost::detail::state().cubRadixBits = bits;
    return 0;
}

//! Bank-conflict figures of `kernel` since the last reset: warp requests to dynamic shared memory, the
//! wavefronts (cycles) they took, and the worst request. Returns 1 if the kernel made no request.
__attribute__((visibility("default"))) int cudahost_bank_stats(
    char const* kernel, long long* requests, long long* wavefronts, int* max_ways)
{
    cudahost::detail::BankStats const st = cudahost::bankStats(kernel);
    *requests = st.requests;
    *wavefronts = st.wavefronts;
    *max_ways = st.maxWays;
    return st.requests > 0 ? 0 : 1;
}

__attribute__((visibility("default"))) void cudahost_reset_bank_stats(void)
{
    cudahost::resetBankStats();
}

//! Message of the last launch-configuration error or kernel fault ("" if none).
__attribute__((visibility("default"))) char const* cudahost_last_message(void)
{
    return cudahost::lastMessage().c_str();
}

} // extern "C"
