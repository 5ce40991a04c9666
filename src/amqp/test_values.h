// Values for codec tests: a field table holding every type, and random method arguments.
#pragma once

#include <random>
#include <string>

#include "amqp/methods.gen.h"

namespace hamq::amqp::testing {

// A table with one entry of every field type RabbitMQ uses, nested tables and arrays included.
inline FieldTable every_type_table() {
  FieldTable inner;
  inner.entries.emplace_back("count", int64_t{3});
  inner.entries.emplace_back("reason", std::string("expired"));
  FieldArray array;
  array.values = {FieldValue(std::string("a")), FieldValue(int32_t{-7}), FieldValue(inner),
                  FieldValue(FieldArray{{FieldValue(true)}})};
  FieldTable table;
  table.entries = {
      {"bool", true},
      {"int8", int8_t{-5}},
      {"uint8", uint8_t{250}},
      {"int16", int16_t{-30000}},
      {"uint16", uint16_t{60000}},
      {"int32", int32_t{-2000000000}},
      {"uint32", uint32_t{4000000000u}},
      {"int64", int64_t{-9000000000000000000}},
      {"float", 1.5f},
      {"double", -2.25},
      {"decimal", Decimal{2, 31415}},
      {"string", std::string("hello\0world", 11)},
      {"bytes", ByteArray{std::string("\x00\xff\x10", 3)}},
      {"array", array},
      {"timestamp", Timestamp{1700000000}},
      {"table", inner},
      {"void", Void{}},
      {"bool", false},  // duplicate names are kept in order
  };
  return table;
}

inline std::string random_bytes(std::mt19937_64& rng, size_t length_max) {
  std::string s(rng() % (length_max + 1), '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Fills every argument of a method with random values of its wire type.
template <class M>
void randomize(M& method, std::mt19937_64& rng) {
  method.for_each_field([&rng](FieldKind kind, std::string_view, auto& field) {
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_same_v<T, bool>) {
      field = (rng() & 1) != 0;
    } else if constexpr (std::is_integral_v<T>) {
      field = static_cast<T>(rng());
    } else if constexpr (std::is_same_v<T, std::string>) {
      field = random_bytes(rng, kind == FieldKind::short_string ? 255 : 1000);
    } else {
      static_assert(std::is_same_v<T, FieldTable>);
      field = every_type_table();
      field.entries.emplace_back("random", random_bytes(rng, 50));
    }
  });
}

}  // namespace hamq::amqp::testing
