#include "perf/histogram.h"

#include <gtest/gtest.h>

namespace hamq::perf {
namespace {

TEST(LatencyHistogram, QuantilesOfAUniformRangeAreWithinFourPercent) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.record(v * 1000);
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_EQ(h.min(), 1000u);
  EXPECT_EQ(h.max(), 100000000u);
  for (double q : {0.5, 0.75, 0.95, 0.99}) {
    double expected = q * 100000 * 1000;
    EXPECT_NEAR(static_cast<double>(h.quantile(q)), expected, expected * 0.04) << q;
  }
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v : {3, 3, 3, 7}) h.record(v);
  EXPECT_EQ(h.quantile(0.5), 3u);
  EXPECT_EQ(h.quantile(1.0), 7u);
}

TEST(LatencyHistogram, MergeAddsCounts) {
  LatencyHistogram a;
  LatencyHistogram b;
  a.record(10);
  b.record(1'000'000);
  a.merge(b);
  EXPECT_EQ(a.count(), 2u);
  EXPECT_EQ(a.min(), 10u);
  EXPECT_EQ(a.max(), 1'000'000u);
}

TEST(LatencyHistogram, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.quantile(0.5), 0u);
  EXPECT_EQ(h.min(), 0u);
}

}  // namespace
}  // namespace hamq::perf
