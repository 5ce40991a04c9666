#include "perf/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace hamq::perf {

int LatencyHistogram::bucket_of(uint64_t value) {
  if (value < sub_buckets) return static_cast<int>(value);
  int magnitude = std::bit_width(value) - 1;  // >= 4
  int shift = magnitude - 4;
  int sub = static_cast<int>((value >> shift) & (sub_buckets - 1));
  return (magnitude - 3) * sub_buckets + sub;
}

uint64_t LatencyHistogram::value_of(int bucket) {
  if (bucket < sub_buckets) return static_cast<uint64_t>(bucket);
  int magnitude = bucket / sub_buckets + 3;
  int sub = bucket % sub_buckets;
  int shift = magnitude - 4;
  // The middle of the bucket.
  uint64_t low = (uint64_t{1} << magnitude) | (static_cast<uint64_t>(sub) << shift);
  return low + ((uint64_t{1} << shift) >> 1);
}

void LatencyHistogram::record(uint64_t value_ns) {
  ++buckets_[std::min(bucket_of(value_ns), bucket_count - 1)];
  ++count_;
  min_ = std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (int i = 0; i < bucket_count; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::clear() {
  *this = LatencyHistogram();
}

uint64_t LatencyHistogram::quantile(double q) const {
  if (count_ == 0) return 0;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (int i = 0; i < bucket_count; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(value_of(i), min(), max_);
  }
  return max_;
}

}  // namespace hamq::perf
