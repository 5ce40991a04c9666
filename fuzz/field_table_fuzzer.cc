// Fuzzes the field-table decoder: whatever decodes must encode and decode back to itself, and a
// failed decode must say why.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "amqp/field_table.h"

using namespace hamq::amqp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  WireReader reader({data, size});
  FieldTable table;
  decode_field_table(reader, table);
  if (reader.failed()) {
    if (reader.failure().empty()) std::abort();
    return 0;
  }
  std::vector<uint8_t> bytes;
  WireWriter writer(bytes);
  encode_field_table(writer, table);
  WireReader again_reader(bytes);
  FieldTable again;
  decode_field_table(again_reader, again);
  // NaN payloads compare unequal to themselves; compare the encodings instead of the values.
  std::vector<uint8_t> bytes_again;
  WireWriter writer_again(bytes_again);
  encode_field_table(writer_again, again);
  if (again_reader.failed() || again_reader.remaining() != 0 || bytes_again != bytes) std::abort();
  return 0;
}
