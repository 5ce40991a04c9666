// Framing (spec §2.3.5 and §4.2.3): type (1 byte), channel (2), payload size (4), payload,
// frame-end 0xCE.
//
// FrameReader is the incremental decoder. Bytes arrive in any chunking (append, or prepare+commit
// to read from a socket straight into its buffer); next() returns whole frames. It checks a frame's
// type and size as soon as its 7-byte header is buffered, before the payload arrives, so a peer
// can make it hold at most frame_max + 8 bytes plus one read: a frame larger than the negotiated
// frame_max is refused from its header. A Frame's payload points into the reader's buffer and is
// valid until the next call of append, prepare or next.
//
// The frame writers append whole frames to an output buffer, encoding each field in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "amqp/errors.h"
#include "amqp/methods.gen.h"
#include "common/result.h"

namespace hamq::amqp {

constexpr size_t frame_header_bytes = 7;
constexpr size_t frame_overhead_bytes = frame_header_bytes + 1;  // header and frame-end octet
constexpr size_t protocol_header_bytes = 8;
// The maximum body size RabbitMQ accepts in a content header (larger is a frame error).
constexpr uint64_t body_size_bytes_max = 512ull << 20;

enum class FrameType : uint8_t {
  method = frame_method,
  header = frame_header,
  body = frame_body,
  heartbeat = frame_heartbeat,
};

struct Frame {
  FrameType type = FrameType::heartbeat;
  uint16_t channel = 0;
  std::span<const uint8_t> payload;
};

class FrameReader {
 public:
  // frame_max_bytes bounds a whole frame. RabbitMQ lets a payload be as large as frame_max itself
  // (clients are often off by the 8 bytes of overhead), and so does hamq.
  explicit FrameReader(uint32_t frame_max_bytes = frame_min_size_bytes)
      : frame_max_bytes_(frame_max_bytes) {}

  void set_frame_max(uint32_t frame_max_bytes) { frame_max_bytes_ = frame_max_bytes; }
  uint32_t frame_max() const { return frame_max_bytes_; }

  // Writable space for at least `bytes` more input; commit says how many were written.
  std::span<uint8_t> prepare(size_t bytes);
  void commit(size_t bytes);
  void append(std::span<const uint8_t> bytes);

  // The next whole frame, nullopt while more bytes are needed, or the FRAME_ERROR (501) that the
  // buffered bytes already prove. After an error the reader stays failed.
  Result<std::optional<Frame>, ProtocolError> next();

  // The unparsed bytes; the connection reads the protocol header through these.
  std::span<const uint8_t> buffered() const { return {buffer_.data() + read_, write_ - read_}; }
  void consume(size_t bytes);

 private:
  void compact();

  std::vector<uint8_t> buffer_;
  size_t read_ = 0;   // first unparsed byte
  size_t write_ = 0;  // end of valid bytes
  uint32_t frame_max_bytes_;
  bool failed_ = false;
};

// Appends a method frame.
void write_method_frame(std::vector<uint8_t>& out, uint16_t channel, const Method& method);
// Appends a content header frame and as many body frames as the body needs, each at most
// frame_max bytes in all.
void write_content_frames(std::vector<uint8_t>& out, uint16_t channel,
                          const BasicProperties& properties, std::span<const uint8_t> body,
                          uint32_t frame_max_bytes);
void write_heartbeat_frame(std::vector<uint8_t>& out);

// The 8 bytes a 0-9-1 client sends first, and the server answers to a header it does not speak.
constexpr std::string_view protocol_header_0_9_1{"AMQP\x00\x00\x09\x01", 8};
// The 0-9 header, which RabbitMQ accepts as 0-9-1.
constexpr std::string_view protocol_header_0_9{"AMQP\x01\x01\x00\x09", 8};

}  // namespace hamq::amqp
