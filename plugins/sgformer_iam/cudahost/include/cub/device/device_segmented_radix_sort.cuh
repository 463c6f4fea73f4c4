/*
 * cudahost functional stand-in for cub::DeviceSegmentedRadixSort (SortPairs with DoubleBuffer) and
 * cub::DoubleBuffer: same results as CUB (ascending, stable, keys compared on bits
 * [begin_bit, end_bit)), not the same speed. Counted by cudahost::libraryCallCount().
 */
#ifndef CUDAHOST_CUB_DEVICE_SEGMENTED_RADIX_SORT_CUH
#define CUDAHOST_CUB_DEVICE_SEGMENTED_RADIX_SORT_CUH
#include "../../../cudahost.h"

#include <numeric>

namespace cub
{

template <typename T>
struct DoubleBuffer
{
    T* d_buffers[2];
    int selector;
    DoubleBuffer()
        : d_buffers{nullptr, nullptr}
        , selector(0)
    {
    }
    DoubleBuffer(T* current, T* alternate)
        : d_buffers{current, alternate}
        , selector(0)
    {
    }
    T* Current()
    {
        return d_buffers[selector];
    }
    T* Alternate()
    {
        return d_buffers[selector ^ 1];
    }
};

struct DeviceSegmentedRadixSort
{
    //! Bytes the stand-in asks for (CUB with DoubleBuffer asks for a little alignment padding only).
    static constexpr size_t kTEMP_BYTES = 16;

    template <typename KeyT, typename ValueT, typename BeginOffsetIteratorT, typename EndOffsetIteratorT>
    static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, DoubleBuffer<KeyT>& d_keys,
        DoubleBuffer<ValueT>& d_values, int num_items, int num_segments, BeginOffsetIteratorT d_begin_offsets,
        EndOffsetIteratorT d_end_offsets, int begin_bit = 0, int end_bit = sizeof(KeyT) * 8, cudaStream_t = nullptr)
    {
        if (d_temp_storage == nullptr)
        {
            temp_storage_bytes = kTEMP_BYTES;
            return cudaSuccess;
        }
        if (temp_storage_bytes < kTEMP_BYTES || num_items < 0 || num_segments < 0 || begin_bit < 0
            || end_bit > static_cast<int>(sizeof(KeyT) * 8) || begin_bit >= end_bit)
        {
            return cudaErrorInvalidValue;
        }
        ++cudahost::detail::state().libraryCalls;
        KeyT const* keysIn = d_keys.Current();
        ValueT const* valuesIn = d_values.Current();
        KeyT* keysOut = d_keys.Alternate();
        ValueT* valuesOut = d_values.Alternate();
        int const bits = end_bit - begin_bit;
        auto digit = [&](KeyT k) {
            using U = typename std::make_unsigned<KeyT>::type;
            U const u = static_cast<U>(k) >> begin_bit;
            return bits >= static_cast<int>(sizeof(U) * 8) ? u : static_cast<U>(u & ((U{1} << bits) - 1));
        };
        std::vector<int> order;
        for (int s = 0; s < num_segments; ++s)
        {
            int const begin = d_begin_offsets[s];
            int const end = d_end_offsets[s];
            if (end <= begin)
            {
                continue;
            }
            order.resize(static_cast<size_t>(end - begin));
            std::iota(order.begin(), order.end(), begin);
            std::stable_sort(order.begin(), order.end(),
                [&](int a, int b) { return digit(keysIn[a]) < digit(keysIn[b]); });
            for (int i = begin; i < end; ++i)
            {
                keysOut[i] = keysIn[order[static_cast<size_t>(i - begin)]];
                valuesOut[i] = valuesIn[order[static_cast<size_t>(i - begin)]];
            }
        }
        d_keys.selector ^= 1;
        d_values.selector ^= 1;
        return cudaSuccess;
    }
};

} // namespace cub

#endif
