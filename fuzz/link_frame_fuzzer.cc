// Fuzzes the link's frame reader and body decoders (src/cluster/link_codec.h). The first input
// byte picks a chunk size and whether the handshake's small body bound applies, so the reader sees
// the bytes in many chunkings. Every frame that decodes must encode to exactly the bytes it was
// read from: the encoding is canonical (flags and reserved bytes are checked), so a frame that
// decodes but re-encodes differently is a decoder that accepted something it should not have.
// The checksums keep random bytes out of the body decoders, so the same input is also decoded
// as a bare body of each frame type, with the same round-trip check.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cluster/link_codec.h"

using namespace hamq::cluster;

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t chunk = (data[0] & 0x3F) + 1;
  bool handshake = data[0] & 0x40;
  const uint8_t* input = data + 1;
  size_t input_size = size - 1;

  LinkReader reader;
  if (!handshake) reader.set_body_bytes_max(link_body_bytes_max);
  size_t consumed = 0;  // bytes of input taken by whole frames so far
  bool failed = false;
  for (size_t at = 0; at < input_size && !failed; at += chunk) {
    reader.append({input + at, std::min(chunk, input_size - at)});
    for (;;) {
      auto next = reader.next();
      if (!next.ok()) {
        check(!next.error().empty());
        check(!reader.next().ok());  // stays failed
        failed = true;
        break;
      }
      if (!next.value()) break;
      std::vector<uint8_t> again;
      encode_frame(again, *next.value());
      check(consumed + again.size() <= input_size);
      check(std::memcmp(again.data(), input + consumed, again.size()) == 0);
      consumed += again.size();
    }
  }
  for (uint8_t type = 0; type <= 9; ++type) {
    auto frame = decode_body(static_cast<LinkFrameType>(type), {input, input_size});
    if (!frame.ok()) {
      check(!frame.error().empty());
      continue;
    }
    std::vector<uint8_t> again;
    encode_frame(again, frame.value());
    check(again.size() == link_header_bytes + input_size);
    check(std::memcmp(again.data() + link_header_bytes, input, input_size) == 0);
  }
  return 0;
}
