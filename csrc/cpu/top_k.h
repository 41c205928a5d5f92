// Bounded top-k selection for the CPU kernels (tracklet_similarity's topk_mean, sliding_range_link's
// mutual-k thresholds): the k largest of a stream of values in O(1) amortised per value.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace cion {

// Holds at most max(2k, 4096) values: when full, nth_element keeps the k largest and drops the rest.
template <class T>
class TopK {
 public:
  void reset(int64_t k) {
    k_ = k;
    capacity_ = std::max<int64_t>(2 * k, 4096);
    values_.clear();
  }
  void push(T v) {
    if (static_cast<int64_t>(values_.size()) == capacity_) shrink();
    values_.push_back(v);
  }
  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  // The k-th largest value pushed (call only when at least k values were pushed).
  T kth_largest() {
    shrink();
    return *std::min_element(values_.begin(), values_.end());
  }
  // Mean of the min(k, count) largest values, summed in float64 in descending order.
  double mean() {
    if (size() > k_) shrink();
    std::sort(values_.begin(), values_.end(), std::greater<T>());
    double sum = 0.0;
    for (const T v : values_) sum += static_cast<double>(v);
    return sum / static_cast<double>(values_.size());
  }

 private:
  void shrink() {
    std::nth_element(values_.begin(), values_.begin() + (k_ - 1), values_.end(), std::greater<T>());
    values_.resize(k_);
  }
  int64_t k_ = 1;
  int64_t capacity_ = 4096;
  std::vector<T> values_;
};

}  // namespace cion
