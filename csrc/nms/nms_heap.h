// Max-heap of (score, position) entries for the CPU soft-NMS, ordered as
// score_before (higher score first, equal scores: lower position first).
// Entries are packed into one unsigned integer, the score's order-preserving
// key above the complemented position, so that one integer comparison
// orders two entries.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "nms_sort.h"

namespace stovtal {

template <typename T>
class ScoreHeap {
 public:
  // float: 32-bit score key and 32-bit position; double: 64 and 64 bits.
  using Key = std::conditional_t<sizeof(T) <= 4, uint64_t, unsigned __int128>;
  static constexpr int kPosBits = sizeof(T) <= 4 ? 32 : 64;
  // The position field; positions must be below this.
  static constexpr uint64_t kPosMask = sizeof(T) <= 4 ? (uint64_t(1) << 32) - 1 : ~uint64_t(0);

  static Key pack(T score, int64_t pos) {
    return (static_cast<Key>(ascending_key(score)) << kPosBits) |
           static_cast<Key>(kPosMask - static_cast<uint64_t>(pos));
  }
  static int64_t pos_of(Key k) {
    return static_cast<int64_t>(kPosMask - static_cast<uint64_t>(k & static_cast<Key>(kPosMask)));
  }
  // The order-preserving key of the entry's score (ascending_key(score)).
  static radix_key_t<T> score_key(Key k) { return static_cast<radix_key_t<T>>(k >> kPosBits); }

  // Builds the heap of `keys` in O(n).
  explicit ScoreHeap(std::vector<Key> keys) : h_(std::move(keys)) {
    for (int64_t i = static_cast<int64_t>(h_.size()) / 2 - 1; i >= 0; --i) sift_down(i, h_[i]);
  }

  bool empty() const { return h_.empty(); }
  Key top() const { return h_[0]; }

  void push(Key k) {
    int64_t i = static_cast<int64_t>(h_.size());
    h_.push_back(k);
    while (i > 0) {
      const int64_t parent = (i - 1) / 2;
      if (!(h_[parent] < k)) break;
      h_[i] = h_[parent];
      i = parent;
    }
    h_[i] = k;
  }

  void pop() {
    const Key last = h_.back();
    h_.pop_back();
    if (!h_.empty()) sift_down(0, last);
  }

  // Replaces the top entry by k (k <= top(): a popped entry pushed again
  // with a lower score), one sift-down instead of a pop and a push.
  void replace_top(Key k) { sift_down(0, k); }

 private:
  // Places k at hole i or below.
  void sift_down(int64_t i, Key k) {
    const int64_t n = static_cast<int64_t>(h_.size());
    while (true) {
      int64_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && h_[child] < h_[child + 1]) ++child;
      if (!(k < h_[child])) break;
      h_[i] = h_[child];
      i = child;
    }
    h_[i] = k;
  }

  std::vector<Key> h_;
};

}  // namespace stovtal
