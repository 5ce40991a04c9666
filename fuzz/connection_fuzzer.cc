// Fuzzes the connection state machine with whole sessions: a valid handshake prefix, then the
// fuzzer's bytes, fed in chunks with time moving on. The machine must never crash, and everything
// it sends must be well-formed frames.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "broker/connection.h"

using namespace hamq;

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

std::vector<uint8_t> handshake_prefix() {
  std::vector<uint8_t> out(amqp::protocol_header_0_9_1.begin(), amqp::protocol_header_0_9_1.end());
  amqp::ConnectionStartOk start_ok;
  start_ok.response = std::string("\0guest\0guest", 12);
  amqp::write_method_frame(out, 0, start_ok);
  amqp::write_method_frame(out, 0, amqp::ConnectionTuneOk{16, 131072, 5});
  amqp::write_method_frame(out, 0, amqp::ConnectionOpen{"/", "", false});
  return out;
}

// Every byte the server sends must parse as frames with decodable methods.
void check_output(std::vector<uint8_t>& output, amqp::FrameReader& reader, bool& header_seen) {
  std::span<const uint8_t> bytes(output);
  // The first thing sent is connection.start, or the protocol header for a client that spoke
  // another protocol.
  if (!header_seen && !bytes.empty()) {
    header_seen = true;
    if (bytes[0] == 'A') {
      check(bytes.size() >= amqp::protocol_header_bytes);
      bytes = bytes.subspan(amqp::protocol_header_bytes);
    }
  }
  reader.append(bytes);
  output.clear();
  for (;;) {
    auto next = reader.next();
    check(next.ok());
    if (!next.value()) break;
    if (next.value()->type == amqp::FrameType::method) {
      check(amqp::decode_method(next.value()->payload).ok());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const broker::ConnectionConfig config;
  static const std::vector<uint8_t> prefix = handshake_prefix();
  if (size < 2) return 0;
  // First byte: whether to send the valid handshake first; second: the chunk size.
  bool with_handshake = (data[0] & 1) != 0;
  size_t chunk = 1 + data[1] % 200;
  std::vector<uint8_t> input;
  if (with_handshake) input = prefix;
  input.insert(input.end(), data + 2, data + size);

  uint64_t now_ms = 1'000'000;
  broker::Broker broker({"/"}, 1);
  broker::Connection connection(config, broker, true, now_ms);
  amqp::FrameReader output_reader(1 << 24);
  bool header_seen = false;
  for (size_t offset = 0; offset < input.size() && !connection.finished(); offset += chunk) {
    size_t n = std::min(chunk, input.size() - offset);
    connection.receive({input.data() + offset, n}, now_ms);
    now_ms += 700;
    if (connection.next_timer_ms() <= now_ms) connection.on_timer(now_ms);
    check_output(connection.output(), output_reader, header_seen);
  }
  connection.shut_down(now_ms);
  check_output(connection.output(), output_reader, header_seen);
  return 0;
}
