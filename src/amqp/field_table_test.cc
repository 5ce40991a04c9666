#include "amqp/field_table.h"

#include <gtest/gtest.h>

#include "amqp/test_values.h"

namespace hamq::amqp {
namespace {

std::vector<uint8_t> encode(const FieldTable& table) {
  std::vector<uint8_t> out;
  WireWriter writer(out);
  encode_field_table(writer, table);
  return out;
}

TEST(FieldTable, EveryTypeRoundTrips) {
  FieldTable table = testing::every_type_table();
  std::vector<uint8_t> bytes = encode(table);
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  ASSERT_FALSE(reader.failed()) << reader.failure();
  EXPECT_EQ(reader.remaining(), 0u);
  EXPECT_EQ(decoded, table);
  EXPECT_EQ(encode(decoded), bytes);
}

TEST(FieldTable, TagsAreRabbitMqs) {
  FieldTable table = testing::every_type_table();
  std::string tags;
  for (const auto& [name, value] : table.entries) tags += value.tag();
  EXPECT_EQ(tags, "tbBsuIilfdDSxATFVt");
}

TEST(FieldTable, EncodesKnownBytes) {
  FieldTable table;
  table.entries.emplace_back("a", int16_t{-2});
  table.entries.emplace_back("b", std::string("xy"));
  std::vector<uint8_t> expected = {0, 0,   0,   14, 1, 'a', 's', 0xff, 0xfe,
                                   1, 'b', 'S', 0,  0, 0,   2,   'x',  'y'};
  EXPECT_EQ(encode(table), expected);
}

TEST(FieldTable, UpperCaseLDecodesAsSignedLongAndIsWrittenAsLowerCaseL) {
  std::vector<uint8_t> bytes = {0,    0,    0,    11,   1,    'n',  'L', 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  ASSERT_FALSE(reader.failed());
  ASSERT_EQ(decoded.entries.size(), 1u);
  EXPECT_EQ(decoded.entries[0].value, FieldValue(int64_t{-2}));
  EXPECT_EQ(decoded.entries[0].value.tag(), 'l');
}

TEST(FieldTable, UnknownFieldTypeFails) {
  std::vector<uint8_t> bytes = {0, 0, 0, 4, 1, 'a', 'U', 0};
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
  EXPECT_EQ(reader.failure(), "unknown field type");
}

TEST(FieldTable, LengthLongerThanDataFailsWithoutAllocating) {
  // Claims 4 GiB; the decoder must notice before reserving anything.
  std::vector<uint8_t> bytes = {0xff, 0xff, 0xff, 0xff, 1, 'a', 't', 1};
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
}

TEST(FieldTable, LongStringLongerThanTableFails) {
  // The string claims 100 bytes; the table holds 7 after the name.
  std::vector<uint8_t> bytes = {0, 0, 0, 10, 1, 'a', 'S', 0, 0, 0, 100, 'x', 'y', 'z'};
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
}

TEST(FieldTable, ShortStringNameLongerThanTableFails) {
  std::vector<uint8_t> bytes = {0, 0, 0, 3, 200, 'a', 'b'};
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
}

TEST(FieldTable, TruncatedValueFails) {
  std::vector<uint8_t> bytes = {0, 0, 0, 5, 1, 'a', 'I', 0, 0};
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
}

// Builds `depth` tables, each the only value of its parent.
FieldTable nested(int depth) {
  FieldTable table;
  table.entries.emplace_back("leaf", true);
  for (int i = 0; i < depth; ++i) {
    FieldTable parent;
    parent.entries.emplace_back("t", std::move(table));
    table = std::move(parent);
  }
  return table;
}

TEST(FieldTable, NestingUpToTheLimitDecodes) {
  std::vector<uint8_t> bytes = encode(nested(field_nesting_depth_max));
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_FALSE(reader.failed()) << reader.failure();
}

TEST(FieldTable, NestingBeyondTheLimitFails) {
  std::vector<uint8_t> bytes = encode(nested(field_nesting_depth_max + 1));
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
  EXPECT_EQ(reader.failure(), "field tables nested too deeply");
}

TEST(FieldTable, ArraysNestedBeyondTheLimitFail) {
  FieldValue value = FieldArray{};
  for (int i = 0; i < field_nesting_depth_max + 2; ++i) value = FieldArray{{value}};
  FieldTable table;
  table.entries.emplace_back("a", value);
  std::vector<uint8_t> bytes = encode(table);
  WireReader reader(bytes);
  FieldTable decoded;
  decode_field_table(reader, decoded);
  EXPECT_TRUE(reader.failed());
}

TEST(FieldValue, IntegerFamilyReadsAsInt64) {
  EXPECT_EQ(FieldValue(uint8_t{200}).as_integer(), 200);
  EXPECT_EQ(FieldValue(int16_t{-3}).as_integer(), -3);
  EXPECT_EQ(FieldValue(uint32_t{4000000000u}).as_integer(), 4000000000);
  EXPECT_EQ(FieldValue(std::string("5")).as_integer(), std::nullopt);
  EXPECT_EQ(FieldValue(true).as_integer(), std::nullopt);
  EXPECT_EQ(FieldValue(1.0).as_integer(), std::nullopt);
}

TEST(FieldTable, FindReturnsFirstEntry) {
  FieldTable table = testing::every_type_table();
  ASSERT_NE(table.find("bool"), nullptr);
  EXPECT_EQ(*table.find("bool"), FieldValue(true));
  EXPECT_EQ(table.find("missing"), nullptr);
}

}  // namespace
}  // namespace hamq::amqp
