// Bounded top-k selection for the CPU kernels (tracklet_similarity's topk_mean, sliding_range_link's
// mutual-k thresholds): the k largest of a stream of values in O(1) amortised per value.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace cion {

// Two regimes, the same values out:
//  * k <= kSmallK (the usual topk_mean k and mutual_k): the k largest so far, kept sorted
//    ascending; a value not above the smallest of them (most values, once k are held) costs one
//    compare, a larger one an insertion into at most k entries.
//  * larger k: holds at most max(2k, 4096) values; when full, nth_element keeps the k largest.
// size() counts the values held: min(k, pushed) in the first regime, which is all its callers ask
// (whether at least k were pushed).
template <class T>
class TopK {
 public:
  static constexpr int64_t kSmallK = 32;

  void reset(int64_t k) {
    k_ = k;
    capacity_ = std::max<int64_t>(2 * k, 4096);
    values_.clear();
  }
  void push(T v) {
    if (k_ <= kSmallK) {
      push_small(v);
      return;
    }
    if (static_cast<int64_t>(values_.size()) == capacity_) shrink();
    values_.push_back(v);
  }
  // A bound below which no value of a block can be among the k largest, given the maxima of
  // `groups` disjoint groups that cover the block: the k-th largest held, or the k-th largest group
  // maximum when larger (k groups reach it, so k values are at least it). -inf when neither exists
  // or in the second regime. Values at least the bound are the ones to push().
  T block_bound(const T* group_max, int64_t groups) const {
    T bound = k_ <= kSmallK && size() == k_ ? values_.front() : -std::numeric_limits<T>::infinity();
    if (k_ > kSmallK || groups < k_) return bound;
    // The k largest group maxima, kept as push() keeps values: most fail the one compare with the
    // k-th held (a heap, std::partial_sort_copy, took 4 % of topk_mean's time).
    T maxima[kSmallK];
    int64_t held = 0;
    for (int64_t g = 0; g < groups; ++g) keep_largest(maxima, held, k_, group_max[g]);
    return std::max(bound, maxima[0]);
  }

  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  // The k-th largest value pushed (call only when at least k values were pushed).
  T kth_largest() {
    if (k_ <= kSmallK) return values_.front();
    shrink();
    return *std::min_element(values_.begin(), values_.end());
  }
  // Mean of the min(k, count) largest values, summed in float64 in descending order.
  double mean() {
    if (k_ > kSmallK) {
      if (size() > k_) shrink();
      std::sort(values_.begin(), values_.end());
    }
    double sum = 0.0;
    for (auto v = values_.rbegin(); v != values_.rend(); ++v) sum += static_cast<double>(*v);
    return sum / static_cast<double>(values_.size());
  }

 private:
  // held[0, count) ascending: the k largest values offered so far (count grows to k). Below k
  // values v goes in after its equals; then v > held[0] drops the smallest and slides the ones
  // below v down, anything else costs one compare.
  static void keep_largest(T* held, int64_t& count, int64_t k, T v) {
    if (count < k) {
      int64_t i = count++;
      for (; i > 0 && v < held[i - 1]; --i) held[i] = held[i - 1];
      held[i] = v;
      return;
    }
    if (!(v > held[0])) return;
    int64_t i = 0;
    for (; i + 1 < k && held[i + 1] < v; ++i) held[i] = held[i + 1];
    held[i] = v;
  }

  void push_small(T v) {
    int64_t count = size();
    if (count < k_) values_.push_back(v);  // the slot keep_largest fills
    keep_largest(values_.data(), count, k_, v);
  }

  void shrink() {
    std::nth_element(values_.begin(), values_.begin() + (k_ - 1), values_.end(), std::greater<T>());
    values_.resize(k_);
  }
  int64_t k_ = 1;
  int64_t capacity_ = 4096;
  std::vector<T> values_;
};

}  // namespace cion
