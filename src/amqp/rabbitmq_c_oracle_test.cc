// rabbitmq-c (librabbitmq) as an independent oracle: what hamq encodes, it decodes and re-encodes
// to the same bytes; what it encodes, hamq decodes to the values it was given.
#include <amqp.h>
#include <amqp_framing.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "amqp/methods.gen.h"
#include "amqp/test_values.h"

namespace hamq::amqp {
namespace {

struct Pool {
  amqp_pool_t pool;
  Pool() { init_amqp_pool(&pool, 4096); }
  ~Pool() { empty_amqp_pool(&pool); }
};

amqp_bytes_t c_bytes(std::span<const uint8_t> s) {
  return {s.size(), const_cast<uint8_t*>(s.data())};
}

amqp_bytes_t c_bytes(const char* s) {
  return amqp_cstring_bytes(s);
}

std::string to_string(amqp_bytes_t b) {
  return {static_cast<const char*>(b.bytes), b.len};
}

// Encodes with hamq, decodes with rabbitmq-c, re-encodes with rabbitmq-c: the bytes must match.
template <class M>
void expect_rabbitmq_c_agrees(const M& method) {
  std::vector<uint8_t> ours;
  WireWriter writer(ours);
  encode_method(writer, method);
  auto arguments = std::span<const uint8_t>(ours).subspan(4);
  Pool pool;
  void* decoded = nullptr;
  amqp_method_number_t number = uint32_t{M::amqp_class_id} << 16 | M::amqp_method_id;
  int status = amqp_decode_method(number, &pool.pool, c_bytes(arguments), &decoded);
  ASSERT_EQ(status, AMQP_STATUS_OK) << M::name;
  std::vector<uint8_t> theirs(arguments.size() + 64);
  int length = amqp_encode_method(number, decoded, c_bytes(theirs));
  ASSERT_GE(length, 0) << M::name;
  theirs.resize(length);
  EXPECT_EQ(theirs, std::vector<uint8_t>(arguments.begin(), arguments.end())) << M::name;
}

template <class M>
void check_random(std::mt19937_64& rng) {
  // The rabbitmq-c of Debian 12 (0.11) predates connection.update-secret; methods_test.cc covers
  // those two with hamq's own round trip.
  if constexpr (std::is_same_v<M, ConnectionUpdateSecret> ||
                std::is_same_v<M, ConnectionUpdateSecretOk>) {
    return;
  }
  M method;
  testing::randomize(method, rng);
  expect_rabbitmq_c_agrees(method);
}

template <size_t... I>
void check_all(std::mt19937_64& rng, std::index_sequence<I...>) {
  (check_random<std::variant_alternative_t<I, Method>>(rng), ...);
}

TEST(RabbitMqCOracle, DecodesAndReencodesEveryMethodHamqEncodes) {
  std::mt19937_64 rng(99);
  for (int round = 0; round < 20; ++round) {
    check_all(rng, std::make_index_sequence<std::variant_size_v<Method>>{});
  }
}

TEST(RabbitMqCOracle, PropertiesHamqEncodesReencodeIdentically) {
  ContentHeader header;
  header.body_size = 11;
  BasicProperties& p = header.properties;
  p.content_type = "text/plain";
  p.headers = testing::every_type_table();
  p.delivery_mode = 2;
  p.priority = 4;
  p.correlation_id = "corr";
  p.reply_to = "amq.rabbitmq.reply-to";
  p.expiration = "1000";
  p.timestamp = 1234567890;
  p.app_id = "app";
  std::vector<uint8_t> ours;
  WireWriter writer(ours);
  encode_content_header(writer, header);
  auto properties = std::span<const uint8_t>(ours).subspan(12);  // after class, weight, size
  Pool pool;
  void* decoded = nullptr;
  ASSERT_EQ(amqp_decode_properties(AMQP_BASIC_CLASS, &pool.pool, c_bytes(properties), &decoded),
            AMQP_STATUS_OK);
  auto* theirs_decoded = static_cast<amqp_basic_properties_t*>(decoded);
  EXPECT_EQ(to_string(theirs_decoded->reply_to), "amq.rabbitmq.reply-to");
  EXPECT_EQ(theirs_decoded->timestamp, 1234567890u);
  std::vector<uint8_t> theirs(properties.size() + 64);
  int length = amqp_encode_properties(AMQP_BASIC_CLASS, decoded, c_bytes(theirs));
  ASSERT_GE(length, 0);
  theirs.resize(length);
  EXPECT_EQ(theirs, std::vector<uint8_t>(properties.begin(), properties.end()));
}

// Encodes a rabbitmq-c method struct and decodes it with hamq.
template <class M>
M decode_theirs(amqp_method_number_t number, void* method) {
  std::vector<uint8_t> buffer(4096);
  int length = amqp_encode_method(number, method, c_bytes(std::span(buffer).subspan(4)));
  EXPECT_GE(length, 0);
  buffer[0] = static_cast<uint8_t>(number >> 24);
  buffer[1] = static_cast<uint8_t>(number >> 16);
  buffer[2] = static_cast<uint8_t>(number >> 8);
  buffer[3] = static_cast<uint8_t>(number);
  buffer.resize(4 + std::max(length, 0));
  auto decoded = decode_method(buffer);
  EXPECT_TRUE(decoded.ok()) << (decoded.ok() ? "" : decoded.error().text);
  EXPECT_TRUE(std::holds_alternative<M>(decoded.value()));
  return std::get<M>(decoded.value());
}

TEST(RabbitMqCOracle, HamqDecodesBasicPublish) {
  amqp_basic_publish_t publish{};
  publish.exchange = c_bytes("amq.topic");
  publish.routing_key = c_bytes("a.b.c");
  publish.mandatory = 1;
  publish.immediate = 0;
  auto m = decode_theirs<BasicPublish>(AMQP_BASIC_PUBLISH_METHOD, &publish);
  EXPECT_EQ(m.exchange, "amq.topic");
  EXPECT_EQ(m.routing_key, "a.b.c");
  EXPECT_TRUE(m.mandatory);
  EXPECT_FALSE(m.immediate);
}

TEST(RabbitMqCOracle, HamqDecodesQueueDeclareWithArguments) {
  amqp_table_entry_t entries[3];
  entries[0].key = c_bytes("x-message-ttl");
  entries[0].value.kind = AMQP_FIELD_KIND_I32;
  entries[0].value.value.i32 = 60000;
  entries[1].key = c_bytes("x-dead-letter-exchange");
  entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[1].value.value.bytes = c_bytes("dlx");
  entries[2].key = c_bytes("x-max-length");
  entries[2].value.kind = AMQP_FIELD_KIND_I64;
  entries[2].value.value.i64 = 1000;
  amqp_queue_declare_t declare{};
  declare.queue = c_bytes("orders");
  declare.durable = 1;
  declare.auto_delete = 1;
  declare.arguments = {3, entries};
  auto m = decode_theirs<QueueDeclare>(AMQP_QUEUE_DECLARE_METHOD, &declare);
  EXPECT_EQ(m.queue, "orders");
  EXPECT_TRUE(m.durable);
  EXPECT_FALSE(m.exclusive);
  EXPECT_TRUE(m.auto_delete);
  EXPECT_FALSE(m.nowait);
  ASSERT_EQ(m.arguments.entries.size(), 3u);
  EXPECT_EQ(*m.arguments.find("x-message-ttl"), FieldValue(int32_t{60000}));
  EXPECT_EQ(*m.arguments.find("x-dead-letter-exchange"), FieldValue("dlx"));
  EXPECT_EQ(*m.arguments.find("x-max-length"), FieldValue(int64_t{1000}));
}

TEST(RabbitMqCOracle, HamqDecodesEveryTableTypeRabbitMqCWrites) {
  amqp_table_entry_t nested_entry;
  nested_entry.key = c_bytes("inner");
  nested_entry.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  nested_entry.value.value.boolean = 1;
  amqp_field_value_t array_values[2];
  array_values[0].kind = AMQP_FIELD_KIND_UTF8;
  array_values[0].value.bytes = c_bytes("one");
  array_values[1].kind = AMQP_FIELD_KIND_I16;
  array_values[1].value.i16 = -2;
  std::vector<amqp_table_entry_t> e(15);
  auto set = [&e](int i, const char* key, uint8_t kind) {
    e[i].key = c_bytes(key);
    e[i].value.kind = kind;
    return &e[i].value.value;
  };
  set(0, "t", AMQP_FIELD_KIND_BOOLEAN)->boolean = 1;
  set(1, "b", AMQP_FIELD_KIND_I8)->i8 = -8;
  set(2, "B", AMQP_FIELD_KIND_U8)->u8 = 200;
  set(3, "s", AMQP_FIELD_KIND_I16)->i16 = -16;
  set(4, "u", AMQP_FIELD_KIND_U16)->u16 = 65000;
  set(5, "I", AMQP_FIELD_KIND_I32)->i32 = -32;
  set(6, "i", AMQP_FIELD_KIND_U32)->u32 = 4000000000u;
  set(7, "l", AMQP_FIELD_KIND_I64)->i64 = -64;
  set(8, "f", AMQP_FIELD_KIND_F32)->f32 = 0.5f;
  set(9, "d", AMQP_FIELD_KIND_F64)->f64 = 0.25;
  set(10, "D", AMQP_FIELD_KIND_DECIMAL)->decimal = {3, 12345};
  set(11, "S", AMQP_FIELD_KIND_UTF8)->bytes = c_bytes("text");
  set(12, "A", AMQP_FIELD_KIND_ARRAY)->array = {2, array_values};
  set(13, "T", AMQP_FIELD_KIND_TIMESTAMP)->u64 = 1700000000;
  set(14, "F", AMQP_FIELD_KIND_TABLE)->table = {1, &nested_entry};
  amqp_table_t table{static_cast<int>(e.size()), e.data()};
  std::vector<uint8_t> buffer(4096);
  size_t offset = 0;
  ASSERT_EQ(amqp_encode_table(c_bytes(buffer), &table, &offset), AMQP_STATUS_OK);
  buffer.resize(offset);

  WireReader reader(buffer);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  ASSERT_FALSE(reader.failed()) << reader.failure();
  FieldTable nested;
  nested.entries.emplace_back("inner", true);
  FieldTable expected;
  expected.entries = {{"t", true},
                      {"b", int8_t{-8}},
                      {"B", uint8_t{200}},
                      {"s", int16_t{-16}},
                      {"u", uint16_t{65000}},
                      {"I", int32_t{-32}},
                      {"i", uint32_t{4000000000u}},
                      {"l", int64_t{-64}},
                      {"f", 0.5f},
                      {"d", 0.25},
                      {"D", Decimal{3, 12345}},
                      {"S", "text"},
                      {"A", FieldArray{{FieldValue("one"), FieldValue(int16_t{-2})}}},
                      {"T", Timestamp{1700000000}},
                      {"F", nested}};
  EXPECT_EQ(decoded, expected);

  // And hamq writes the same bytes back.
  std::vector<uint8_t> ours;
  WireWriter writer(ours);
  encode_field_table(writer, decoded);
  EXPECT_EQ(ours, buffer);
}

TEST(RabbitMqCOracle, HamqDecodesConnectionCloseAndNack) {
  amqp_connection_close_t close{};
  close.reply_code = 406;
  close.reply_text = c_bytes("PRECONDITION_FAILED - inequivalent arg 'durable'");
  close.class_id = 50;
  close.method_id = 10;
  auto c = decode_theirs<ConnectionClose>(AMQP_CONNECTION_CLOSE_METHOD, &close);
  EXPECT_EQ(c.reply_code, 406);
  EXPECT_EQ(c.reply_text, "PRECONDITION_FAILED - inequivalent arg 'durable'");
  EXPECT_EQ(c.class_id, 50);
  EXPECT_EQ(c.method_id, 10);

  amqp_basic_nack_t nack{};
  nack.delivery_tag = 0x0123456789abcdefull;
  nack.multiple = 1;
  nack.requeue = 0;
  auto n = decode_theirs<BasicNack>(AMQP_BASIC_NACK_METHOD, &nack);
  EXPECT_EQ(n.delivery_tag, 0x0123456789abcdefull);
  EXPECT_TRUE(n.multiple);
  EXPECT_FALSE(n.requeue);
}

}  // namespace
}  // namespace hamq::amqp
