#include "perf/client.h"

#include <gtest/gtest.h>

namespace hamq::perf {
namespace {

TEST(ParseUri, FullUri) {
  auto e = parse_uri("amqp://alice:secret@broker.example:5673/prod");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->user, "alice");
  EXPECT_EQ(e->password, "secret");
  EXPECT_EQ(e->host, "broker.example");
  EXPECT_EQ(e->port, 5673);
  EXPECT_EQ(e->virtual_host, "prod");
}

TEST(ParseUri, DefaultsAndEncodedSlash) {
  auto e = parse_uri("amqp://localhost/%2F");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->user, "guest");
  EXPECT_EQ(e->port, 5672);
  EXPECT_EQ(e->virtual_host, "/");
  EXPECT_EQ(parse_uri("amqp://")->host, "127.0.0.1");
}

TEST(ParseUri, BadInputIsRefused) {
  EXPECT_FALSE(parse_uri("http://localhost").ok());
  EXPECT_FALSE(parse_uri("amqp://localhost:99999").ok());
  EXPECT_FALSE(parse_uri("amqp://localhost:abc").ok());
}

}  // namespace
}  // namespace hamq::perf
