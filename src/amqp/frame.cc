#include "amqp/frame.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/verify.h"

namespace hamq::amqp {
namespace {

// Reads below this are not worth moving the buffered bytes to the front for.
constexpr size_t compact_threshold_bytes = 4096;

bool known_frame_type(uint8_t type) {
  return type == frame_method || type == frame_header || type == frame_body ||
         type == frame_heartbeat;
}

// Writes a frame header with a zero size and returns where the size goes.
size_t begin_frame(std::vector<uint8_t>& out, uint8_t type, uint16_t channel) {
  WireWriter writer(out);
  writer.u8(type);
  writer.u16(channel);
  return writer.reserve_u32();
}

void end_frame(std::vector<uint8_t>& out, size_t size_at) {
  WireWriter writer(out);
  size_t payload_bytes = out.size() - (size_at + 4);
  HAMQ_VERIFY(payload_bytes <= UINT32_MAX, "frame payload larger than 4 GiB");
  writer.patch_u32(size_at, static_cast<uint32_t>(payload_bytes));
  writer.u8(frame_end);
}

}  // namespace

std::span<uint8_t> FrameReader::prepare(size_t bytes) {
  if (read_ == write_) {
    read_ = write_ = 0;
  } else if (read_ >= compact_threshold_bytes) {
    compact();
  }
  if (buffer_.size() - write_ < bytes) buffer_.resize(write_ + bytes);
  return {buffer_.data() + write_, buffer_.size() - write_};
}

void FrameReader::commit(size_t bytes) {
  HAMQ_VERIFY(write_ + bytes <= buffer_.size(), "commit beyond prepared space");
  write_ += bytes;
}

void FrameReader::append(std::span<const uint8_t> bytes) {
  auto space = prepare(bytes.size());
  if (!bytes.empty()) std::memcpy(space.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

void FrameReader::consume(size_t bytes) {
  HAMQ_VERIFY(read_ + bytes <= write_, "consume beyond buffered bytes");
  read_ += bytes;
}

void FrameReader::compact() {
  std::memmove(buffer_.data(), buffer_.data() + read_, write_ - read_);
  write_ -= read_;
  read_ = 0;
}

Result<std::optional<Frame>, ProtocolError> FrameReader::next() {
  if (failed_)
    return unexpected(ProtocolError{ReplyCode::frame_error, "connection already failed"});
  size_t available = write_ - read_;
  if (available < frame_header_bytes) return std::optional<Frame>();
  const uint8_t* p = buffer_.data() + read_;
  WireReader header({p, frame_header_bytes});
  uint8_t type = header.u8();
  uint16_t channel = header.u16();
  uint32_t size = header.u32();
  if (!known_frame_type(type)) {
    failed_ = true;
    return unexpected(
        ProtocolError{ReplyCode::frame_error, "unknown frame type " + std::to_string(type)});
  }
  if (size > frame_max_bytes_) {
    failed_ = true;
    return unexpected(ProtocolError{ReplyCode::frame_error, "frame size " + std::to_string(size) +
                                                                " exceeds frame_max " +
                                                                std::to_string(frame_max_bytes_)});
  }
  if (available < frame_overhead_bytes + size) return std::optional<Frame>();
  if (p[frame_header_bytes + size] != frame_end) {
    failed_ = true;
    return unexpected(ProtocolError{ReplyCode::frame_error, "frame does not end with 0xCE"});
  }
  Frame frame{static_cast<FrameType>(type), channel, {p + frame_header_bytes, size}};
  read_ += frame_overhead_bytes + size;
  return std::optional<Frame>(frame);
}

void write_method_frame(std::vector<uint8_t>& out, uint16_t channel, const Method& method) {
  size_t size_at = begin_frame(out, frame_method, channel);
  WireWriter writer(out);
  encode_method(writer, method);
  end_frame(out, size_at);
}

void write_content_frames(std::vector<uint8_t>& out, uint16_t channel,
                          const BasicProperties& properties, std::span<const uint8_t> body,
                          uint32_t frame_max_bytes) {
  HAMQ_VERIFY(frame_max_bytes > frame_overhead_bytes, "frame_max too small for a body frame");
  size_t size_at = begin_frame(out, frame_header, channel);
  WireWriter writer(out);
  encode_content_header(writer, ContentHeader{class_basic, body.size(), properties});
  end_frame(out, size_at);
  size_t chunk_bytes_max = frame_max_bytes - frame_overhead_bytes;
  for (size_t offset = 0; offset < body.size(); offset += chunk_bytes_max) {
    size_t chunk = std::min(chunk_bytes_max, body.size() - offset);
    size_at = begin_frame(out, frame_body, channel);
    writer.bytes(body.subspan(offset, chunk));
    end_frame(out, size_at);
  }
}

void write_heartbeat_frame(std::vector<uint8_t>& out) {
  size_t size_at = begin_frame(out, frame_heartbeat, 0);
  end_frame(out, size_at);
}

}  // namespace hamq::amqp
