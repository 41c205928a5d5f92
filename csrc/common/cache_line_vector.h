// std::vector whose data starts on a 64-byte cache line. malloc gives 16 bytes, and a block over
// its mmap threshold starts 16 bytes past a page, so every 64-byte vector load or store of a kernel
// walking such a buffer would straddle two lines (two accesses for one). Kernels keep their hot
// scratch in these.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace cion {

constexpr std::size_t kCacheLine = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  // std::vector checks n against max_size() before it asks, so n * sizeof(T) cannot overflow.
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kCacheLine)));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(kCacheLine)); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

template <class T>
using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace cion
