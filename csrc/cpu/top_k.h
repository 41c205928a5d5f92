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
    // The k largest group maxima, descending, by insertion: most maxima fail the one compare with
    // the k-th held (a heap, std::partial_sort_copy, took 4 % of topk_mean's time).
    T maxima[kSmallK];
    int64_t held = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const T v = group_max[g];
      if (held == k_ && !(v > maxima[k_ - 1])) continue;
      int64_t i = held < k_ ? held++ : k_ - 1;
      for (; i > 0 && maxima[i - 1] < v; --i) maxima[i] = maxima[i - 1];
      maxima[i] = v;
    }
    return std::max(bound, maxima[k_ - 1]);
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
  void push_small(T v) {
    const int64_t n = size();
    if (n < k_) {
      values_.insert(std::upper_bound(values_.begin(), values_.end(), v), v);
      return;
    }
    if (!(v > values_.front())) return;
    int64_t i = 0;  // drop the smallest, slide the ones below v down, put v in its place
    while (i + 1 < n && values_[i + 1] < v) {
      values_[i] = values_[i + 1];
      ++i;
    }
    values_[i] = v;
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
