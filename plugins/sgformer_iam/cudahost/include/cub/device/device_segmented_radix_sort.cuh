/*
 * cudahost functional stand-in for cub::DeviceSegmentedRadixSort (SortPairs with DoubleBuffer) and
 * cub::DoubleBuffer: same results as CUB (ascending, stable, keys compared on bits
 * [begin_bit, end_bit)), not the same speed. Counted by cudahost::libraryCallCount().
 * The result ends in the buffer real CUB leaves it in: CUB runs ceil((end_bit - begin_bit) / R) passes of
 * R radix bits (R = 6 for 32-bit keys in CUB's segmented policies; set with cudahost_set_cub_radix_bits),
 * each flipping the DoubleBuffer selectors, so an even pass count ends in the original buffer. The other
 * buffer is poisoned (0xCD bytes) over the sorted segments, so reading it instead of Current() fails.
 */
#ifndef CUDAHOST_CUB_DEVICE_SEGMENTED_RADIX_SORT_CUH
#define CUDAHOST_CUB_DEVICE_SEGMENTED_RADIX_SORT_CUH
#include "../../../cudahost.h"

#include <cstring>
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
        int const bits = end_bit - begin_bit;
        int const radixBits = cudahost::detail::state().cubRadixBits;
        int const passes = (bits + radixBits - 1) / radixBits;
        int const finalSelector = d_keys.selector ^ (passes & 1);
        KeyT* keysIn = d_keys.Current();
        ValueT* valuesIn = d_values.Current();
        KeyT* keysOut = d_keys.d_buffers[finalSelector];
        int const finalValueSelector = d_values.selector ^ (passes & 1);
        ValueT* valuesOut = d_values.d_buffers[finalValueSelector];
        KeyT* keysOther = d_keys.d_buffers[finalSelector ^ 1];
        ValueT* valuesOther = d_values.d_buffers[finalValueSelector ^ 1];
        std::vector<KeyT> keyTmp;
        std::vector<ValueT> valueTmp;
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
            keyTmp.resize(order.size());
            valueTmp.resize(order.size());
            for (size_t i = 0; i < order.size(); ++i)
            {
                keyTmp[i] = keysIn[order[i]];
                valueTmp[i] = valuesIn[order[i]];
            }
            std::copy(keyTmp.begin(), keyTmp.end(), keysOut + begin);
            std::copy(valueTmp.begin(), valueTmp.end(), valuesOut + begin);
            if (keysOther != keysOut)
            {
                std::memset(static_cast<void*>(keysOther + begin), 0xCD, order.size() * sizeof(KeyT));
                std::memset(static_cast<void*>(valuesOther + begin), 0xCD, order.size() * sizeof(ValueT));
            }
        }
        d_keys.selector = finalSelector;
        d_values.selector = finalValueSelector;
        return cudaSuccess;
    }
};

} // namespace cub

#endif
