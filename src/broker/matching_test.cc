#include "broker/matching.h"

#include <gtest/gtest.h>

namespace hamq::broker {
namespace {

TEST(TopicMatching, ReferenceEdgeCases) {
  struct Case {
    const char* binding;
    const char* key;
    bool matches;
  };
  const Case cases[] = {
      {"#", "", true},
      {"#", "a.b.c", true},
      {"a.#", "a", true},
      {"a.#", "a.b.c", true},
      {"a.#", "b.a", false},
      {"#.a", "a", true},
      {"#.a", "x.y.a", true},
      {"#.a", "a.x", false},
      {"a.#.b", "a.b", true},
      {"a.#.b", "a.x.y.b", true},
      {"*", "", false},
      {"*", "a.b", false},
      {"*", "a", true},
      {"*.*", ".", true},
      {"", "", true},
      {"", "a", false},
      {"a", "", false},
      {"#.#", "a.b", true},
      {"#.#", "", true},
      {"a*", "ab", false},
      {"a*", "a*", true},
      {"*", "", false},
      {"a..b", "a..b", true},
      {"a.*.b", "a..b", true},
      {"a.", "a.", true},
      {"a.*", "a.", true},
      {"a.b", "a.b", true},
      {"a.b", "a.B", false},
      {"*.b.#", "x.b", true},
      {"#.*.#", "", false},
      {"#.*.#", "q", true},
      {"#.b.#.d.#", "a.b.c.d.e", true},
      {"#.b.#.d.#", "a.d.c.b.e", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(topic_matches(c.binding, c.key), c.matches)
        << "binding '" << c.binding << "' key '" << c.key << "'";
  }
}

TEST(TopicMatching, ManyHashesStayFast) {
  // Backtracking matchers take exponential time here.
  std::string binding;
  for (int i = 0; i < 60; ++i) binding += "#.a.";
  binding += "b";
  std::string key;
  for (int i = 0; i < 200; ++i) key += "a.";
  key += "c";
  EXPECT_FALSE(topic_matches(binding, key));
}

amqp::FieldTable table(std::initializer_list<amqp::FieldTableEntry> entries) {
  amqp::FieldTable t;
  t.entries = entries;
  return t;
}

TEST(HeadersMatching, AllNeedsEveryArgument) {
  auto binding = table({{"x-match", "all"}, {"format", "pdf"}, {"type", "report"}});
  auto both = table({{"format", "pdf"}, {"type", "report"}, {"extra", 1}});
  auto one = table({{"format", "pdf"}});
  EXPECT_TRUE(headers_match(binding, &both));
  EXPECT_FALSE(headers_match(binding, &one));
  EXPECT_FALSE(headers_match(binding, nullptr));
}

TEST(HeadersMatching, AnyNeedsOneArgument) {
  auto binding = table({{"x-match", "any"}, {"format", "pdf"}, {"type", "report"}});
  auto one = table({{"type", "report"}});
  auto none = table({{"type", "log"}});
  EXPECT_TRUE(headers_match(binding, &one));
  EXPECT_FALSE(headers_match(binding, &none));
}

TEST(HeadersMatching, AllIsTheDefault) {
  auto binding = table({{"a", 1}});
  auto headers = table({{"a", 1}});
  EXPECT_TRUE(headers_match(binding, &headers));
}

TEST(HeadersMatching, OnlyXMatchMatchesEverythingWithAllAndNothingWithAny) {
  EXPECT_TRUE(headers_match(table({{"x-match", "all"}}), nullptr));
  auto headers = table({{"a", 1}});
  EXPECT_FALSE(headers_match(table({{"x-match", "any"}}), &headers));
}

TEST(HeadersMatching, XArgumentsAreSkippedUnlessWithX) {
  auto headers = table({{"x-tenant", "t1"}});
  EXPECT_TRUE(headers_match(table({{"x-match", "all"}, {"x-tenant", "t2"}}), &headers));
  EXPECT_FALSE(headers_match(table({{"x-match", "all-with-x"}, {"x-tenant", "t2"}}), &headers));
  EXPECT_TRUE(headers_match(table({{"x-match", "any-with-x"}, {"x-tenant", "t1"}}), &headers));
  EXPECT_FALSE(headers_match(table({{"x-match", "any"}, {"x-tenant", "t1"}}), &headers));
}

TEST(HeadersMatching, VoidTestsForPresence) {
  auto binding = table({{"flag", amqp::Void{}}});
  auto present = table({{"flag", "anything"}});
  auto absent = table({{"other", 1}});
  EXPECT_TRUE(headers_match(binding, &present));
  EXPECT_FALSE(headers_match(binding, &absent));
}

TEST(HeadersMatching, IntegersCompareAcrossWidthsButNotWithStringsOrBooleans) {
  auto binding = table({{"n", int64_t{1}}});
  auto byte = table({{"n", uint8_t{1}}});
  auto text = table({{"n", "1"}});
  auto boolean = table({{"n", true}});
  auto real = table({{"n", 1.0}});
  EXPECT_TRUE(headers_match(binding, &byte));
  EXPECT_FALSE(headers_match(binding, &text));
  EXPECT_FALSE(headers_match(binding, &boolean));
  EXPECT_FALSE(headers_match(binding, &real));
}

TEST(HeadersMatching, MatchModeValidation) {
  EXPECT_EQ(headers_match_mode(table({})), HeadersMatch::all);
  EXPECT_EQ(headers_match_mode(table({{"x-match", "any-with-x"}})), HeadersMatch::any_with_x);
  EXPECT_EQ(headers_match_mode(table({{"x-match", "some"}})), std::nullopt);
  EXPECT_EQ(headers_match_mode(table({{"x-match", 1}})), std::nullopt);
}

}  // namespace
}  // namespace hamq::broker
