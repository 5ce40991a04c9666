#include "amqp/field_table.h"

#include <bit>
#include <cstring>

namespace hamq::amqp {

bool FieldArray::operator==(const FieldArray& other) const {
  return values == other.values;
}

bool FieldTable::operator==(const FieldTable& other) const {
  return entries == other.entries;
}

bool FieldTable::empty() const {
  return entries.empty();
}

const FieldValue* FieldTable::find(std::string_view key) const {
  for (const auto& [name, value] : entries) {
    if (name == key) return &value;
  }
  return nullptr;
}

char FieldValue::tag() const {
  static constexpr char tags[] = "tbBsuIilfdDSxATFV";
  static_assert(sizeof(tags) - 1 == std::variant_size_v<Variant>);
  return tags[value.index()];
}

std::optional<int64_t> FieldValue::as_integer() const {
  return std::visit(
      [](const auto& v) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<int64_t>(v);
        } else {
          return std::nullopt;
        }
      },
      value);
}

namespace {

void decode_value(WireReader& reader, FieldValue& out, int depth);

// Reads a 32-bit length and returns a reader over exactly that many following bytes.
WireReader sub_reader(WireReader& reader) {
  uint32_t length = reader.u32();
  if (reader.failed()) return WireReader({});
  if (length > reader.remaining()) {
    reader.fail("field table or array length exceeds the data");
    return WireReader({});
  }
  return WireReader(reader.bytes(length));
}

void propagate(WireReader& outer, const WireReader& inner) {
  if (inner.failed()) outer.fail(inner.failure());
}

void decode_value(WireReader& reader, FieldValue& out, int depth) {
  uint8_t tag = reader.u8();
  if (reader.failed()) return;
  switch (tag) {
    case 't':
      out.value = reader.u8() != 0;
      break;
    case 'b':
      out.value = static_cast<int8_t>(reader.u8());
      break;
    case 'B':
      out.value = reader.u8();
      break;
    case 's':
      out.value = static_cast<int16_t>(reader.u16());
      break;
    case 'u':
      out.value = reader.u16();
      break;
    case 'I':
      out.value = static_cast<int32_t>(reader.u32());
      break;
    case 'i':
      out.value = reader.u32();
      break;
    case 'l':
    case 'L':
      out.value = static_cast<int64_t>(reader.u64());
      break;
    case 'f':
      out.value = std::bit_cast<float>(reader.u32());
      break;
    case 'd':
      out.value = std::bit_cast<double>(reader.u64());
      break;
    case 'D': {
      Decimal d;
      d.scale = reader.u8();
      d.value = reader.u32();
      out.value = d;
      break;
    }
    case 'S': {
      std::string s;
      reader.long_string(s);
      out.value = std::move(s);
      break;
    }
    case 'x': {
      ByteArray b;
      reader.long_string(b.bytes);
      out.value = std::move(b);
      break;
    }
    case 'A': {
      FieldArray a;
      decode_field_array(reader, a, depth + 1);
      out.value = std::move(a);
      break;
    }
    case 'T':
      out.value = Timestamp{reader.u64()};
      break;
    case 'F': {
      FieldTable t;
      decode_field_table(reader, t, depth + 1);
      out.value = std::move(t);
      break;
    }
    case 'V':
      out.value = Void{};
      break;
    default:
      reader.fail("unknown field type");
      break;
  }
}

void encode_value(WireWriter& writer, const FieldValue& value) {
  writer.u8(static_cast<uint8_t>(value.tag()));
  std::visit(
      [&writer](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          writer.u8(v ? 1 : 0);
        } else if constexpr (std::is_same_v<T, int8_t> || std::is_same_v<T, uint8_t>) {
          writer.u8(static_cast<uint8_t>(v));
        } else if constexpr (std::is_same_v<T, int16_t> || std::is_same_v<T, uint16_t>) {
          writer.u16(static_cast<uint16_t>(v));
        } else if constexpr (std::is_same_v<T, int32_t> || std::is_same_v<T, uint32_t>) {
          writer.u32(static_cast<uint32_t>(v));
        } else if constexpr (std::is_same_v<T, int64_t>) {
          writer.u64(static_cast<uint64_t>(v));
        } else if constexpr (std::is_same_v<T, float>) {
          writer.u32(std::bit_cast<uint32_t>(v));
        } else if constexpr (std::is_same_v<T, double>) {
          writer.u64(std::bit_cast<uint64_t>(v));
        } else if constexpr (std::is_same_v<T, Decimal>) {
          writer.u8(v.scale);
          writer.u32(v.value);
        } else if constexpr (std::is_same_v<T, std::string>) {
          writer.long_string(v);
        } else if constexpr (std::is_same_v<T, ByteArray>) {
          writer.long_string(v.bytes);
        } else if constexpr (std::is_same_v<T, FieldArray>) {
          encode_field_array(writer, v);
        } else if constexpr (std::is_same_v<T, Timestamp>) {
          writer.u64(v.seconds);
        } else if constexpr (std::is_same_v<T, FieldTable>) {
          encode_field_table(writer, v);
        } else {
          static_assert(std::is_same_v<T, Void>);
        }
      },
      value.value);
}

}  // namespace

void decode_field_table_entries(WireReader& reader, FieldTable& out, int depth) {
  out.entries.clear();
  if (depth > field_nesting_depth_max) {
    reader.fail("field tables nested too deeply");
    return;
  }
  while (!reader.failed() && reader.remaining() > 0) {
    std::string name;
    reader.short_string(name);
    FieldValue value;
    decode_value(reader, value, depth);
    if (reader.failed()) return;
    out.entries.emplace_back(std::move(name), std::move(value));
  }
}

void decode_field_table(WireReader& reader, FieldTable& out, int depth) {
  WireReader inner = sub_reader(reader);
  if (reader.failed()) return;
  decode_field_table_entries(inner, out, depth);
  propagate(reader, inner);
}

void decode_field_array(WireReader& reader, FieldArray& out, int depth) {
  out.values.clear();
  WireReader inner = sub_reader(reader);
  if (reader.failed()) return;
  if (depth > field_nesting_depth_max) {
    reader.fail("field arrays nested too deeply");
    return;
  }
  while (!inner.failed() && inner.remaining() > 0) {
    FieldValue value;
    decode_value(inner, value, depth);
    if (inner.failed()) break;
    out.values.push_back(std::move(value));
  }
  propagate(reader, inner);
}

void encode_field_table(WireWriter& writer, const FieldTable& table) {
  size_t at = writer.reserve_u32();
  size_t start = writer.size();
  for (const auto& [name, value] : table.entries) {
    writer.short_string(name);
    encode_value(writer, value);
  }
  writer.patch_u32(at, static_cast<uint32_t>(writer.size() - start));
}

void encode_field_array(WireWriter& writer, const FieldArray& array) {
  size_t at = writer.reserve_u32();
  size_t start = writer.size();
  for (const auto& value : array.values) encode_value(writer, value);
  writer.patch_u32(at, static_cast<uint32_t>(writer.size() - start));
}

}  // namespace hamq::amqp
