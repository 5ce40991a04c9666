#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace hamq {
namespace {

TEST(Crc32c, MatchesTheRfc3720TestVectors) {
  std::string zeros(32, '\0');
  std::string ones(32, '\xFF');
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(std::string("123456789")), 0xE3069283u);
}

TEST(Crc32c, HardwareAndTablePathsAgreeOnEveryLengthAndAlignment) {
  std::mt19937 random(7);
  std::string data(300, '\0');
  for (char& c : data) c = static_cast<char>(random());
  for (size_t start = 0; start < 9; ++start) {
    for (size_t size = 0; start + size <= data.size(); ++size) {
      ASSERT_EQ(crc32c(data.data() + start, size),
                crc32c_extend_portable(0, data.data() + start, size))
          << start << " " << size;
    }
  }
}

TEST(Crc32c, ExtendingEqualsChecksummingTheWhole) {
  std::string data = "the quick brown fox jumps over the lazy dog";
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t first = crc32c(data.data(), split);
    EXPECT_EQ(crc32c_extend(first, data.data() + split, data.size() - split), crc32c(data));
  }
}

}  // namespace
}  // namespace hamq
