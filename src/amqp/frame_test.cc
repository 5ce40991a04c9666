#include "amqp/frame.h"

#include <gtest/gtest.h>

#include <random>

namespace hamq::amqp {
namespace {

struct OwnedFrame {
  FrameType type;
  uint16_t channel;
  std::vector<uint8_t> payload;
};

// Feeds `bytes` in the given chunk sizes (cycled) and collects every frame.
std::vector<OwnedFrame> read_all(FrameReader& reader, const std::vector<uint8_t>& bytes,
                                 const std::vector<size_t>& chunks) {
  std::vector<OwnedFrame> frames;
  size_t offset = 0;
  for (size_t i = 0; offset < bytes.size(); ++i) {
    size_t n = std::min(chunks[i % chunks.size()], bytes.size() - offset);
    reader.append(std::span(bytes).subspan(offset, n));
    offset += n;
    for (;;) {
      auto next = reader.next();
      EXPECT_TRUE(next.ok());
      if (!next.ok() || !next.value()) break;
      const Frame& f = *next.value();
      frames.push_back({f.type, f.channel, {f.payload.begin(), f.payload.end()}});
    }
  }
  return frames;
}

std::vector<uint8_t> sample_stream() {
  std::vector<uint8_t> out;
  BasicPublish publish;
  publish.exchange = "ex";
  publish.routing_key = "rk";
  write_method_frame(out, 1, publish);
  BasicProperties properties;
  properties.delivery_mode = 2;
  std::vector<uint8_t> body(10000, 'x');
  write_content_frames(out, 1, properties, body, 4096);
  write_heartbeat_frame(out);
  return out;
}

TEST(FrameReader, AcceptsAnyChunking) {
  auto bytes = sample_stream();
  FrameReader whole(frame_min_size_bytes);
  auto expected = read_all(whole, bytes, {bytes.size()});
  // method, header, 3 bodies (10000 bytes in chunks of 4088), heartbeat
  ASSERT_EQ(expected.size(), 6u);
  EXPECT_EQ(expected[0].type, FrameType::method);
  EXPECT_EQ(expected[1].type, FrameType::header);
  EXPECT_EQ(expected[2].payload.size(), 4088u);
  EXPECT_EQ(expected[4].payload.size(), 10000u - 2 * 4088u);
  EXPECT_EQ(expected[5].type, FrameType::heartbeat);
  EXPECT_EQ(expected[5].channel, 0);

  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<size_t> chunks;
    for (int i = 0; i < 16; ++i) chunks.push_back(1 + rng() % (trial % 3 == 0 ? 3 : 600));
    FrameReader reader(frame_min_size_bytes);
    auto frames = read_all(reader, bytes, chunks);
    ASSERT_EQ(frames.size(), expected.size());
    for (size_t i = 0; i < frames.size(); ++i) {
      EXPECT_EQ(frames[i].type, expected[i].type);
      EXPECT_EQ(frames[i].channel, expected[i].channel);
      EXPECT_EQ(frames[i].payload, expected[i].payload);
    }
  }
}

TEST(FrameReader, TruncatedFrameWaitsForMore) {
  auto bytes = sample_stream();
  FrameReader reader;
  reader.append(std::span(bytes).first(10));
  auto next = reader.next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next.value().has_value());
}

TEST(FrameReader, WrongFrameEndIsFrameError) {
  std::vector<uint8_t> out;
  write_heartbeat_frame(out);
  out.back() = 0xCD;
  FrameReader reader;
  reader.append(out);
  auto next = reader.next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ReplyCode::frame_error);
  EXPECT_EQ(next.error().reply_text(), "FRAME_ERROR - frame does not end with 0xCE");
}

TEST(FrameReader, FrameLargerThanFrameMaxIsRefusedFromItsHeader) {
  // Only the 7-byte header is there: the size alone condemns it, before any payload is buffered.
  std::vector<uint8_t> header = {frame_body, 0, 1, 0, 0, 0x20, 0x01};  // 8193 bytes
  FrameReader reader(frame_min_size_bytes);
  reader.append(header);
  auto next = reader.next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ReplyCode::frame_error);
}

TEST(FrameReader, PayloadAsLargeAsFrameMaxIsTolerated) {
  std::vector<uint8_t> out = {frame_body, 0, 1, 0, 0, 0x20, 0x00};  // 8192 bytes
  out.resize(out.size() + 8192, 'b');
  out.push_back(frame_end);
  FrameReader reader(frame_min_size_bytes);
  reader.append(out);
  auto next = reader.next();
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next.value().has_value());
  EXPECT_EQ(next.value()->payload.size(), 8192u);
}

TEST(FrameReader, UnknownFrameTypeIsFrameError) {
  std::vector<uint8_t> out = {4, 0, 0, 0, 0, 0, 0, frame_end};
  FrameReader reader;
  reader.append(out);
  auto next = reader.next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ReplyCode::frame_error);
}

TEST(FrameReader, StaysFailedAfterAnError) {
  std::vector<uint8_t> out = {9, 0, 0, 0, 0, 0, 0, frame_end};
  FrameReader reader;
  reader.append(out);
  EXPECT_FALSE(reader.next().ok());
  std::vector<uint8_t> good;
  write_heartbeat_frame(good);
  reader.append(good);
  EXPECT_FALSE(reader.next().ok());
}

TEST(FrameReader, RaisedFrameMaxAppliesToLaterFrames) {
  std::vector<uint8_t> out = {frame_body, 0, 1, 0, 0, 0x40, 0x00};  // 16384 bytes
  out.resize(out.size() + 16384, 'b');
  out.push_back(frame_end);
  FrameReader reader(frame_min_size_bytes);
  reader.set_frame_max(131072);
  reader.append(out);
  auto next = reader.next();
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next.value().has_value());
}

TEST(FrameReader, BufferDoesNotGrowWithTheStream) {
  // Many frames through a reader: its buffer is reused, not extended for each.
  FrameReader reader(frame_min_size_bytes);
  std::vector<uint8_t> frame;
  write_heartbeat_frame(frame);
  for (int i = 0; i < 100000; ++i) {
    reader.append(frame);
    auto next = reader.next();
    ASSERT_TRUE(next.ok());
    ASSERT_TRUE(next.value().has_value());
  }
  EXPECT_TRUE(reader.buffered().empty());
}

TEST(FrameWriter, BodyFramesRespectFrameMax) {
  std::vector<uint8_t> out;
  std::vector<uint8_t> body(5000, 'z');
  write_content_frames(out, 3, {}, body, frame_min_size_bytes);
  FrameReader reader(frame_min_size_bytes);
  auto frames = read_all(reader, out, {out.size()});
  ASSERT_EQ(frames.size(), 2u);
  auto header = decode_content_header(frames[0].payload);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->body_size, 5000u);
  EXPECT_EQ(frames[1].payload, body);
}

TEST(FrameWriter, EmptyBodyHasNoBodyFrame) {
  std::vector<uint8_t> out;
  write_content_frames(out, 3, {}, {}, frame_min_size_bytes);
  FrameReader reader(frame_min_size_bytes);
  auto frames = read_all(reader, out, {out.size()});
  EXPECT_EQ(frames.size(), 1u);
}

}  // namespace
}  // namespace hamq::amqp
