// Big-endian primitives of the AMQP 0-9-1 wire format (spec §4.2.2 and §4.2.5).
//
// WireReader reads from a byte span it does not own; the span must outlive the reader. A read past
// the end, or any other malformed input, marks the reader failed ("sticky"): every later read
// returns a zero value, so decoders read a whole structure and check failed() once at the end.
// Lengths read from the peer are compared with the bytes remaining before anything is allocated.
//
// WireWriter appends to a std::vector<uint8_t> it does not own. It writes each field straight into
// that buffer; callers that need a length prefix reserve it and patch it afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/verify.h"

namespace hamq::amqp {

constexpr size_t short_string_bytes_max = 255;

class WireReader {
 public:
  explicit WireReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  bool failed() const { return failed_; }
  // Why the read failed, for the reply text; empty while nothing failed.
  std::string_view failure() const { return failure_; }
  size_t remaining() const { return bytes_.size() - position_; }
  size_t position() const { return position_; }

  // Marks the reader failed with a reason; the first reason is kept.
  void fail(std::string_view reason) {
    if (!failed_) {
      failed_ = true;
      failure_ = reason;
    }
    position_ = bytes_.size();
  }

  uint8_t u8() {
    if (!need(1)) return 0;
    return bytes_[position_++];
  }
  uint16_t u16() {
    if (!need(2)) return 0;
    uint16_t v = static_cast<uint16_t>(bytes_[position_] << 8 | bytes_[position_ + 1]);
    position_ += 2;
    return v;
  }
  uint32_t u32() {
    if (!need(4)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = v << 8 | bytes_[position_ + i];
    position_ += 4;
    return v;
  }
  uint64_t u64() {
    if (!need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | bytes_[position_ + i];
    position_ += 8;
    return v;
  }

  // A view of the next n bytes; valid as long as the underlying span.
  std::span<const uint8_t> bytes(size_t n) {
    if (!need(n)) return {};
    auto view = bytes_.subspan(position_, n);
    position_ += n;
    return view;
  }

  void short_string(std::string& out) {
    size_t length = u8();
    assign(out, length);
  }
  void long_string(std::string& out) {
    size_t length = u32();
    assign(out, length);
  }

 private:
  bool need(size_t n) {
    if (failed_) return false;
    if (remaining() < n) {
      fail("truncated");
      return false;
    }
    return true;
  }
  void assign(std::string& out, size_t length) {
    auto view = bytes(length);
    if (failed_) {
      out.clear();
      return;
    }
    out.assign(reinterpret_cast<const char*>(view.data()), view.size());
  }

  std::span<const uint8_t> bytes_;
  size_t position_ = 0;
  bool failed_ = false;
  std::string_view failure_;
};

class WireWriter {
 public:
  explicit WireWriter(std::vector<uint8_t>& out) : out_(out) {}

  size_t size() const { return out_.size(); }

  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) {
    uint8_t b[2] = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
    append(b, 2);
  }
  void u32(uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
    append(b, 4);
  }
  void u64(uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
    append(b, 8);
  }
  void bytes(std::span<const uint8_t> data) { append(data.data(), data.size()); }
  void bytes(std::string_view data) {
    append(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  }

  // A short string longer than 255 bytes cannot be represented; the caller must have truncated or
  // rejected it (see truncate_short_string).
  void short_string(std::string_view s) {
    HAMQ_VERIFY(s.size() <= short_string_bytes_max, "short string longer than 255 bytes");
    u8(static_cast<uint8_t>(s.size()));
    bytes(s);
  }
  void long_string(std::string_view s) {
    HAMQ_VERIFY(s.size() <= UINT32_MAX, "long string longer than 4 GiB");
    u32(static_cast<uint32_t>(s.size()));
    bytes(s);
  }

  // Reserves a 32-bit length at the current end; patch_u32 fills it in later.
  size_t reserve_u32() {
    size_t at = out_.size();
    out_.resize(at + 4);
    return at;
  }
  void patch_u32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out_[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  }

 private:
  void append(const uint8_t* data, size_t n) {
    size_t at = out_.size();
    out_.resize(at + n);
    if (n != 0) std::memcpy(out_.data() + at, data, n);
  }

  std::vector<uint8_t>& out_;
};

// Cuts s to at most 255 bytes without splitting a UTF-8 sequence, for reply texts.
inline std::string truncate_short_string(std::string_view s) {
  if (s.size() <= short_string_bytes_max) return std::string(s);
  size_t end = short_string_bytes_max;
  while (end > 0 && (static_cast<uint8_t>(s[end]) & 0xC0) == 0x80) --end;
  return std::string(s.substr(0, end));
}

}  // namespace hamq::amqp
