#include "amqp/methods.gen.h"

#include <gtest/gtest.h>

#include <utility>

#include "amqp/frame.h"
#include "amqp/test_values.h"

namespace hamq::amqp {
namespace {

std::vector<uint8_t> encode(const Method& method) {
  std::vector<uint8_t> out;
  WireWriter writer(out);
  encode_method(writer, method);
  return out;
}

template <size_t... I>
void for_each_method_type(auto&& f, std::index_sequence<I...>) {
  (f(std::variant_alternative_t<I, Method>{}), ...);
}

void for_each_method_type(auto&& f) {
  for_each_method_type(f, std::make_index_sequence<std::variant_size_v<Method>>{});
}

TEST(Methods, EveryMethodRoundTripsWithDefaults) {
  int count = 0;
  for_each_method_type([&count](auto method) {
    auto bytes = encode(method);
    auto decoded = decode_method(bytes);
    ASSERT_TRUE(decoded.ok()) << method.name << ": " << decoded.error().text;
    EXPECT_EQ(decoded.value(), Method(method)) << method.name;
    ++count;
  });
  // Every class and method of 0-9-1 with RabbitMQ's extensions, access included.
  EXPECT_EQ(count, 66);
}

TEST(Methods, EveryMethodRoundTripsWithRandomArguments) {
  std::mt19937_64 rng(20261124);
  for (int round = 0; round < 50; ++round) {
    for_each_method_type([&rng](auto method) {
      testing::randomize(method, rng);
      auto bytes = encode(method);
      auto decoded = decode_method(bytes);
      ASSERT_TRUE(decoded.ok()) << method.name << ": " << decoded.error().text;
      EXPECT_EQ(decoded.value(), Method(method)) << method.name;
      EXPECT_EQ(encode(decoded.value()), bytes) << method.name;
    });
  }
}

TEST(Methods, BitsShareOctetsLeastSignificantFirst) {
  QueueDeclare declare;
  declare.queue = "q";
  declare.passive = false;
  declare.durable = true;
  declare.exclusive = false;
  declare.auto_delete = true;
  declare.nowait = true;
  std::vector<uint8_t> expected = {0, 50, 0, 10, 0, 0, 1, 'q', 0b11010, 0, 0, 0, 0};
  EXPECT_EQ(encode(declare), expected);
}

TEST(Methods, NamesAndIds) {
  Method m = BasicPublish{};
  EXPECT_EQ(method_name(m), "basic.publish");
  EXPECT_EQ(method_class_id(m), 60);
  EXPECT_EQ(method_method_id(m), 40);
  EXPECT_TRUE(method_has_content(m));
  EXPECT_EQ(ExchangeUnbindOk::amqp_method_id, 51);  // RabbitMQ's number, not the XML's 41
  EXPECT_FALSE(method_has_content(Method(BasicAck{})));
}

TEST(Methods, UnknownMethodIsCommandInvalid) {
  std::vector<uint8_t> bytes = {0, 60, 0, 99};
  auto decoded = decode_method(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::command_invalid);
  EXPECT_EQ(decoded.error().class_id, 60);
  EXPECT_EQ(decoded.error().method_id, 99);
}

TEST(Methods, UnknownClassIsCommandInvalid) {
  std::vector<uint8_t> bytes = {0, 77, 0, 10};
  auto decoded = decode_method(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::command_invalid);
}

TEST(Methods, TruncatedArgumentsAreSyntaxError) {
  BasicPublish publish;
  publish.exchange = "amq.direct";
  publish.routing_key = "key";
  auto bytes = encode(publish);
  for (size_t cut = 4; cut < bytes.size(); ++cut) {
    auto decoded = decode_method(std::span(bytes).first(cut));
    ASSERT_FALSE(decoded.ok()) << "cut at " << cut;
    EXPECT_EQ(decoded.error().code, ReplyCode::syntax_error);
    EXPECT_EQ(decoded.error().class_id, 60);
    EXPECT_EQ(decoded.error().method_id, 40);
  }
}

TEST(Methods, TrailingBytesAreSyntaxError) {
  auto bytes = encode(ChannelOpen{});
  bytes.push_back(0);
  auto decoded = decode_method(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::syntax_error);
  EXPECT_EQ(decoded.error().reply_text(),
            "SYNTAX_ERROR - channel.open: trailing bytes after the arguments");
}

TEST(Methods, ShortStringLongerThanItsFrameIsSyntaxError) {
  // queue.delete: ticket, then a queue name whose length byte says 200.
  std::vector<uint8_t> bytes = {0, 50, 0, 40, 0, 0, 200, 'a', 'b', 'c'};
  auto decoded = decode_method(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::syntax_error);
}

TEST(Methods, MethodFrameShorterThanIdsIsFrameError) {
  std::vector<uint8_t> bytes = {0, 60};
  auto decoded = decode_method(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::frame_error);
}

TEST(Methods, MalformedTableInArgumentsIsSyntaxError) {
  ConnectionStart start;
  auto bytes = encode(start);
  // server-properties starts after version bytes (4 + 2); give its table an unknown tag.
  std::vector<uint8_t> bad = {0, 10, 0, 10, 0, 9, 0, 0, 0, 4, 1, 'k', 'Z', 0};
  auto decoded = decode_method(bad);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::syntax_error);
  EXPECT_EQ(decoded.error().text, "connection.start: unknown field type");
}

BasicProperties all_properties() {
  BasicProperties p;
  p.content_type = "application/json";
  p.content_encoding = "gzip";
  p.headers = testing::every_type_table();
  p.delivery_mode = 2;
  p.priority = 9;
  p.correlation_id = "c-1";
  p.reply_to = "amq.rabbitmq.reply-to";
  p.expiration = "60000";
  p.message_id = "m-1";
  p.timestamp = 1700000000;
  p.type = "order";
  p.user_id = "guest";
  p.app_id = "app";
  p.cluster_id = "";
  return p;
}

std::vector<uint8_t> encode(const ContentHeader& header) {
  std::vector<uint8_t> out;
  WireWriter writer(out);
  encode_content_header(writer, header);
  return out;
}

TEST(ContentHeader, AllFourteenPropertiesRoundTrip) {
  ContentHeader header{class_basic, 123456789, all_properties()};
  auto bytes = encode(header);
  auto decoded = decode_content_header(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.error().text;
  EXPECT_EQ(decoded.value(), header);
  // Flags: all 14 bits from bit 15 down to bit 2.
  EXPECT_EQ(bytes[12], 0xff);
  EXPECT_EQ(bytes[13], 0xfc);
}

TEST(ContentHeader, EachPropertyAloneRoundTrips) {
  BasicProperties all = all_properties();
  // Rebuild the header once per property, keeping only that one.
  for (int keep = 0; keep < 14; ++keep) {
    BasicProperties one;
    int index = 0;
    auto pick = [&](auto& target, const auto& source) {
      if (index++ == keep) target = source;
    };
    pick(one.content_type, all.content_type);
    pick(one.content_encoding, all.content_encoding);
    pick(one.headers, all.headers);
    pick(one.delivery_mode, all.delivery_mode);
    pick(one.priority, all.priority);
    pick(one.correlation_id, all.correlation_id);
    pick(one.reply_to, all.reply_to);
    pick(one.expiration, all.expiration);
    pick(one.message_id, all.message_id);
    pick(one.timestamp, all.timestamp);
    pick(one.type, all.type);
    pick(one.user_id, all.user_id);
    pick(one.app_id, all.app_id);
    pick(one.cluster_id, all.cluster_id);
    ContentHeader header{class_basic, 5, one};
    auto bytes = encode(header);
    uint16_t flags = static_cast<uint16_t>(bytes[12] << 8 | bytes[13]);
    EXPECT_EQ(flags, 1u << (15 - keep));
    auto decoded = decode_content_header(bytes);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded.value(), header);
  }
}

TEST(ContentHeader, UnknownPropertyFlagIsSyntaxError) {
  ContentHeader header{class_basic, 0, {}};
  auto bytes = encode(header);
  bytes[13] = 0x02;  // bit 1: a 15th property basic does not have
  auto decoded = decode_content_header(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code, ReplyCode::syntax_error);
}

TEST(ContentHeader, ContinuationFlagWordsAreRead) {
  ContentHeader header{class_basic, 7, {}};
  header.properties.priority = 3;
  auto bytes = encode(header);
  // Set the continuation bit and insert an empty second flag word before the properties.
  bytes[13] |= 1;
  bytes.insert(bytes.begin() + 14, {0, 0});
  auto decoded = decode_content_header(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.error().text;
  EXPECT_EQ(decoded.value(), header);
}

TEST(ContentHeader, TruncatedAtEveryOffsetFails) {
  ContentHeader header{class_basic, 42, all_properties()};
  auto bytes = encode(header);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    auto decoded = decode_content_header(std::span(bytes).first(cut));
    ASSERT_FALSE(decoded.ok()) << "cut at " << cut;
    EXPECT_EQ(decoded.error().code, ReplyCode::syntax_error);
  }
}

}  // namespace
}  // namespace hamq::amqp
