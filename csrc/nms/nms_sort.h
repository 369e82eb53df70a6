// Stable sorts of candidate positions by numeric keys, for the CPU NMS
// kernels: least-significant-digit radix sorts on order-preserving unsigned
// keys, O(n) per byte of key that varies, instead of comparison sorts.
//
// A stable sort by key B after a stable sort by key A orders by (B, A, the
// initial order), so (label, descending score, index) is two calls on the
// positions 0..n-1. Every ordering these sorts produce is a total order
// (the initial order breaks the remaining ties), so it equals the one a
// comparison sort with the same comparator gives.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace stovtal {

// The unsigned integer of a key's width.
template <typename T>
using radix_key_t = std::conditional_t<sizeof(T) <= 4, uint32_t, uint64_t>;

// Unsigned key whose ascending order is the ascending order of the float or
// double `x` (not NaN); -0 and +0 get the same key, as they compare equal.
template <typename T>
inline radix_key_t<T> ascending_key(T x) {
  static_assert(std::is_floating_point_v<T>, "ascending_key: floating-point values only");
  using U = radix_key_t<T>;
  static_assert(sizeof(U) == sizeof(T), "ascending_key: float or double");
  if (x == T(0)) x = T(0);
  U bits;
  std::memcpy(&bits, &x, sizeof(bits));
  constexpr U sign = U(1) << (8 * sizeof(U) - 1);
  return (bits & sign) ? ~bits : (bits | sign);
}

// Unsigned key whose ascending order is the ascending order of the signed
// integer `x`.
inline uint64_t ascending_key(int64_t x) {
  return static_cast<uint64_t>(x) ^ (uint64_t(1) << 63);
}

// Reorders `items` stably by ascending `keys[i]` (keys[i] belongs to
// items[i]); both vectors are permuted, `scratch_*` are work space. Bytes
// of the key that are equal in every key are skipped.
template <typename K, typename V>
void radix_sort_pairs(std::vector<K>& keys, std::vector<V>& items, std::vector<K>& scratch_keys,
                      std::vector<V>& scratch_items) {
  static_assert(std::is_unsigned_v<K>, "radix_sort_pairs: unsigned keys");
  const size_t n = keys.size();
  if (n < 2) return;
  if (n <= 32) {  // insertion sort: stable, cheaper than the histograms
    for (size_t i = 1; i < n; ++i) {
      const K k = keys[i];
      const V v = items[i];
      size_t j = i;
      for (; j > 0 && keys[j - 1] > k; --j) {
        keys[j] = keys[j - 1];
        items[j] = items[j - 1];
      }
      keys[j] = k;
      items[j] = v;
    }
    return;
  }
  constexpr int kBytes = static_cast<int>(sizeof(K));
  std::array<std::array<uint32_t, 256>, kBytes> count{};
  for (size_t i = 0; i < n; ++i) {
    const K k = keys[i];
    for (int b = 0; b < kBytes; ++b) ++count[b][(k >> (8 * b)) & 0xff];
  }
  scratch_keys.resize(n);
  scratch_items.resize(n);
  for (int b = 0; b < kBytes; ++b) {
    auto& c = count[b];
    if (c[(keys[0] >> (8 * b)) & 0xff] == n) continue;  // this byte is the same everywhere
    uint32_t offset[256];
    uint32_t sum = 0;
    for (int d = 0; d < 256; ++d) {
      offset[d] = sum;
      sum += c[d];
    }
    const K* kin = keys.data();
    const V* vin = items.data();
    K* kout = scratch_keys.data();
    V* vout = scratch_items.data();
    for (size_t i = 0; i < n; ++i) {
      const uint32_t o = offset[(kin[i] >> (8 * b)) & 0xff]++;
      kout[o] = kin[i];
      vout[o] = vin[i];
    }
    keys.swap(scratch_keys);
    items.swap(scratch_items);
  }
}

// Reorders `items` stably by ascending key_of(item), key_of returning an
// unsigned key (e.g. ascending_key of a value).
template <typename V, typename KeyOf>
void stable_radix_sort(std::vector<V>& items, const KeyOf& key_of) {
  using K = std::decay_t<decltype(key_of(items[0]))>;
  std::vector<K> keys(items.size()), scratch_keys;
  std::vector<V> scratch_items;
  for (size_t i = 0; i < items.size(); ++i) keys[i] = key_of(items[i]);
  radix_sort_pairs(keys, items, scratch_keys, scratch_items);
}

}  // namespace stovtal
