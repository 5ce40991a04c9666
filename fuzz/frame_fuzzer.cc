// Fuzzes the frame reader and the method and content-header decoders. The first input byte picks
// a chunk size, so the reader sees the bytes in many chunkings. Every method and header that
// decodes must encode and decode back to itself. Encodings are compared rather than values: a NaN
// in a field table is equal to no value, itself included.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "amqp/frame.h"

using namespace hamq::amqp;

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

void round_trip(const Frame& frame) {
  if (frame.type == FrameType::method) {
    auto method = decode_method(frame.payload);
    if (!method.ok()) {
      check(!method.error().text.empty());
      return;
    }
    std::vector<uint8_t> bytes;
    WireWriter writer(bytes);
    encode_method(writer, method.value());
    auto again = decode_method(bytes);
    check(again.ok());
    std::vector<uint8_t> bytes_again;
    WireWriter writer_again(bytes_again);
    encode_method(writer_again, again.value());
    check(bytes_again == bytes);
  } else if (frame.type == FrameType::header) {
    auto header = decode_content_header(frame.payload);
    if (!header.ok()) return;
    std::vector<uint8_t> bytes;
    WireWriter writer(bytes);
    encode_content_header(writer, header.value());
    auto again = decode_content_header(bytes);
    check(again.ok());
    std::vector<uint8_t> bytes_again;
    WireWriter writer_again(bytes_again);
    encode_content_header(writer_again, again.value());
    check(bytes_again == bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t chunk = 1 + data[0] % 64;
  std::span<const uint8_t> input(data + 1, size - 1);
  FrameReader reader(frame_min_size_bytes);
  for (size_t offset = 0; offset < input.size(); offset += chunk) {
    reader.append(input.subspan(offset, std::min(chunk, input.size() - offset)));
    for (;;) {
      auto next = reader.next();
      if (!next.ok()) {
        check(next.error().code == ReplyCode::frame_error);
        return 0;
      }
      if (!next.value()) break;
      check(next.value()->payload.size() <= frame_min_size_bytes);
      round_trip(*next.value());
    }
  }
  return 0;
}
