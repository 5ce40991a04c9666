// LatencyHistogram: latencies in nanoseconds in logarithmic buckets, 16 per power of two (at most
// about 4% error), in fixed memory whatever the number of samples. Not thread-safe: each thread
// keeps its own and they are merged.
#pragma once

#include <array>
#include <cstdint>

namespace hamq::perf {

class LatencyHistogram {
 public:
  void record(uint64_t value_ns);
  void merge(const LatencyHistogram& other);
  void clear();

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  // The value at quantile q (0..1), within the bucket's error.
  uint64_t quantile(double q) const;

 private:
  static constexpr int sub_buckets = 16;
  static constexpr int bucket_count = 64 * sub_buckets;
  static int bucket_of(uint64_t value);
  static uint64_t value_of(int bucket);

  std::array<uint64_t, bucket_count> buckets_{};
  uint64_t count_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace hamq::perf
