// Field tables and field arrays: AMQP's typed key/value maps, as RabbitMQ and its clients put them
// on the wire (shared/reference/rabbitmq-extensions.md §2, which corrects the 0-9-1 spec's type
// list: 's' is a signed 16-bit integer, 'l' a signed 64-bit integer, 'x' a byte array).
//
// A FieldTable keeps its entries in wire order and keeps duplicates, so that a table a client sent
// is re-emitted byte for byte. The only tag that does not round-trip is 'L', which RabbitMQ parses
// as a signed 64-bit integer and never emits: it decodes to int64 and is written back as 'l'.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "amqp/wire.h"

namespace hamq::amqp {

// Decoding refuses tables and arrays nested deeper than this; RabbitMQ's own headers
// (x-death: an array of tables of arrays) use three levels.
constexpr int field_nesting_depth_max = 32;

struct FieldValue;

struct Decimal {
  uint8_t scale = 0;
  uint32_t value = 0;
  bool operator==(const Decimal&) const = default;
};

// Tag 'T': seconds since the Unix epoch.
struct Timestamp {
  uint64_t seconds = 0;
  bool operator==(const Timestamp&) const = default;
};

// Tag 'x': binary data, distinct from the long string 'S' so that it round-trips.
struct ByteArray {
  std::string bytes;
  bool operator==(const ByteArray&) const = default;
};

// Tag 'V'.
struct Void {
  bool operator==(const Void&) const = default;
};

// FieldArray and FieldTable declare their special members here and default them below
// FieldTableEntry: the types are mutually recursive, and a compiler must not instantiate the
// vectors' members while FieldValue is still incomplete.
struct FieldArray {
  FieldArray();
  FieldArray(std::vector<FieldValue> array_values);  // NOLINT: implicit, like the vector
  FieldArray(const FieldArray&);
  FieldArray(FieldArray&&) noexcept;
  FieldArray& operator=(const FieldArray&);
  FieldArray& operator=(FieldArray&&) noexcept;
  ~FieldArray();

  std::vector<FieldValue> values;
  bool operator==(const FieldArray&) const;
};

struct FieldTableEntry;  // defined below FieldValue: a table holds values that hold tables

struct FieldTable {
  FieldTable();
  FieldTable(const FieldTable&);
  FieldTable(FieldTable&&) noexcept;
  FieldTable& operator=(const FieldTable&);
  FieldTable& operator=(FieldTable&&) noexcept;
  ~FieldTable();

  std::vector<FieldTableEntry> entries;

  // The value of the first entry named key, or nullptr.
  const FieldValue* find(std::string_view key) const;
  bool empty() const;
  bool operator==(const FieldTable&) const;
};

struct FieldValue {
  // Alternatives in the order of their tags: t b B s u I i l f d D S x A T F V.
  using Variant = std::variant<bool, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t,
                               float, double, Decimal, std::string, ByteArray, FieldArray,
                               Timestamp, FieldTable, Void>;
  Variant value;

  FieldValue() : value(Void{}) {}
  template <class T>
  requires(!std::is_same_v<std::decay_t<T>, FieldValue> && std::is_constructible_v<Variant, T>)
      FieldValue(T v)
      : value(std::move(v)) {}  // NOLINT: implicit on purpose, like the variant
  FieldValue(const char* s) : value(std::string(s)) {}  // NOLINT

  // The wire tag this value is written with.
  char tag() const;
  // The value as a signed 64-bit integer if it is of the integer family (b B s u I i l), the
  // family RabbitMQ accepts wherever it expects an integer argument.
  std::optional<int64_t> as_integer() const;
  bool operator==(const FieldValue& other) const { return value == other.value; }
};

struct FieldTableEntry {
  FieldTableEntry(std::string entry_name, FieldValue entry_value)
      : name(std::move(entry_name)), value(std::move(entry_value)) {}
  std::string name;
  FieldValue value;
  bool operator==(const FieldTableEntry&) const = default;
};

inline FieldArray::FieldArray() = default;
inline FieldArray::FieldArray(std::vector<FieldValue> array_values)
    : values(std::move(array_values)) {}
inline FieldArray::FieldArray(const FieldArray&) = default;
inline FieldArray::FieldArray(FieldArray&&) noexcept = default;
inline FieldArray& FieldArray::operator=(const FieldArray&) = default;
inline FieldArray& FieldArray::operator=(FieldArray&&) noexcept = default;
inline FieldArray::~FieldArray() = default;

inline FieldTable::FieldTable() = default;
inline FieldTable::FieldTable(const FieldTable&) = default;
inline FieldTable::FieldTable(FieldTable&&) noexcept = default;
inline FieldTable& FieldTable::operator=(const FieldTable&) = default;
inline FieldTable& FieldTable::operator=(FieldTable&&) noexcept = default;
inline FieldTable::~FieldTable() = default;

// Decoding. Both read a 32-bit byte length and then exactly that many bytes; on malformed input
// the reader is marked failed with the reason.
void decode_field_table(WireReader& reader, FieldTable& out, int depth = 0);
void decode_field_array(WireReader& reader, FieldArray& out, int depth = 0);
// The entries of a table without its length prefix, up to the end of the reader: the encoding of
// the AMQPLAIN SASL response.
void decode_field_table_entries(WireReader& reader, FieldTable& out, int depth = 0);

void encode_field_table(WireWriter& writer, const FieldTable& table);
void encode_field_array(WireWriter& writer, const FieldArray& array);

}  // namespace hamq::amqp
