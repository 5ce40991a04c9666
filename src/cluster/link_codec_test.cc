#include "cluster/link_codec.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/crc32c.h"

namespace hamq::cluster {
namespace {

Hello hello() {
  return Hello{.cluster_id = "c-42",
               .node_name = "n1",
               .node_id = 1,
               .incarnation = 7,
               .nonce = std::string(link_nonce_bytes, 'x')};
}

raft::NodeBatch empty_batch() {
  raft::NodeBatch batch;
  batch.from = raft::NodeId{1};
  batch.to = raft::NodeId{2};
  return batch;
}

raft::NodeBatch full_batch() {
  raft::NodeBatch batch = empty_batch();
  batch.heartbeats.push_back({raft::GroupId{9}, raft::Term{3}, raft::LogIndex{40}, 7});
  batch.heartbeat_responses.push_back({raft::GroupId{10}, raft::Term{4}, raft::LogIndex{}, 7});
  raft::Message append;
  append.type = raft::MessageType::append;
  append.group = raft::GroupId{9};
  append.from = raft::NodeId{1};
  append.to = raft::NodeId{2};
  append.from_incarnation = 7;
  append.term = raft::Term{3};
  append.index = raft::LogIndex{41};
  append.log_term = raft::Term{3};
  append.commit = raft::LogIndex{40};
  append.entries = {{raft::Term{3}, raft::LogIndex{42}, raft::EntryType::normal, "enqueue"},
                    {raft::Term{3}, raft::LogIndex{43}, raft::EntryType::conf_change, "c"}};
  batch.messages.push_back(append);
  raft::Message chunk;
  chunk.type = raft::MessageType::snapshot;
  chunk.group = raft::GroupId{11};
  chunk.reject = true;
  chunk.chunk_last = true;
  chunk.transfer = true;
  chunk.reject_hint = raft::LogIndex{5};
  chunk.reject_hint_term = raft::Term{2};
  chunk.snapshot = {raft::LogIndex{100}, raft::Term{2},
                    raft::ConfState{{raft::NodeId{1}, raft::NodeId{2}}, {raft::NodeId{3}}}};
  chunk.chunk_offset = 4096;
  chunk.chunk = std::string(1000, '\0');
  batch.messages.push_back(chunk);
  return batch;
}

void expect_same_batch(const raft::NodeBatch& a, const raft::NodeBatch& b) {
  EXPECT_EQ(a.from, b.from);
  EXPECT_EQ(a.to, b.to);
  EXPECT_EQ(a.heartbeats, b.heartbeats);
  EXPECT_EQ(a.heartbeat_responses, b.heartbeat_responses);
  ASSERT_EQ(a.messages.size(), b.messages.size());
  for (size_t i = 0; i < a.messages.size(); ++i) {
    const raft::Message& x = a.messages[i];
    const raft::Message& y = b.messages[i];
    EXPECT_EQ(x.type, y.type);
    EXPECT_EQ(x.group, y.group);
    EXPECT_EQ(x.from, y.from);
    EXPECT_EQ(x.to, y.to);
    EXPECT_EQ(x.from_incarnation, y.from_incarnation);
    EXPECT_EQ(x.term, y.term);
    EXPECT_EQ(x.index, y.index);
    EXPECT_EQ(x.log_term, y.log_term);
    EXPECT_EQ(x.entries, y.entries);
    EXPECT_EQ(x.commit, y.commit);
    EXPECT_EQ(x.reject, y.reject);
    EXPECT_EQ(x.reject_hint, y.reject_hint);
    EXPECT_EQ(x.reject_hint_term, y.reject_hint_term);
    EXPECT_EQ(x.snapshot, y.snapshot);
    EXPECT_EQ(x.chunk_offset, y.chunk_offset);
    EXPECT_EQ(x.chunk, y.chunk);
    EXPECT_EQ(x.chunk_last, y.chunk_last);
    EXPECT_EQ(x.transfer, y.transfer);
  }
}

std::vector<LinkFrame> read_all(LinkReader& reader) {
  std::vector<LinkFrame> frames;
  for (;;) {
    auto next = reader.next();
    EXPECT_TRUE(next.ok()) << (next.ok() ? "" : next.error());
    if (!next.ok() || !next.value()) return frames;
    frames.push_back(std::move(*next.value()));
  }
}

Join join() {
  return Join{"127.0.0.14", 25672};
}

JoinAnswer join_answer() {
  return JoinAnswer{"",
                    "0123456789abcdef0123456789abcdef",
                    4,
                    {{"n1", "127.0.0.11", 25672, 1}, {"n4", "127.0.0.14", 25672, 4}}};
}

TEST(LinkCodec, EveryFrameTypeRoundTripsWhateverTheChunking) {
  std::vector<uint8_t> bytes;
  encode_frame(bytes, hello());
  encode_frame(bytes, HelloProof{std::string(32, 'p')});
  encode_frame(bytes, RaftBatch{full_batch()});
  encode_frame(bytes, Propose{7, 1, std::string("declare\0queue", 13)});
  encode_frame(bytes, Proposed{7, 3, 42});
  encode_frame(bytes, join());
  encode_frame(bytes, join_answer());
  encode_frame(bytes, RelayForward{12, "command"});
  encode_frame(bytes, RelayAnswer{12, std::string("effects\0", 8)});
  for (size_t chunk : {bytes.size(), size_t{1}, size_t{7}, size_t{4096}}) {
    LinkReader reader;
    reader.set_body_bytes_max(link_body_bytes_max);
    std::vector<LinkFrame> frames;
    for (size_t at = 0; at < bytes.size(); at += chunk) {
      size_t n = std::min(chunk, bytes.size() - at);
      reader.append(std::span<const uint8_t>(bytes).subspan(at, n));
      auto more = read_all(reader);
      for (auto& frame : more) frames.push_back(std::move(frame));
    }
    ASSERT_EQ(frames.size(), 9u) << "chunk " << chunk;
    EXPECT_EQ(std::get<Hello>(frames[0]), hello());
    EXPECT_EQ(std::get<HelloProof>(frames[1]).proof, std::string(32, 'p'));
    expect_same_batch(std::get<RaftBatch>(frames[2]).batch, full_batch());
    EXPECT_EQ(std::get<Propose>(frames[3]), (Propose{7, 1, std::string("declare\0queue", 13)}));
    EXPECT_EQ(std::get<Proposed>(frames[4]), (Proposed{7, 3, 42}));
    EXPECT_EQ(std::get<Join>(frames[5]), join());
    EXPECT_EQ(std::get<JoinAnswer>(frames[6]), join_answer());
    EXPECT_EQ(std::get<RelayForward>(frames[7]), (RelayForward{12, "command"}));
    EXPECT_EQ(std::get<RelayAnswer>(frames[8]), (RelayAnswer{12, std::string("effects\0", 8)}));
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

TEST(LinkCodec, ARefusedJoinSaysWhyAndJoinFramesAreFuzzSeeds) {
  std::vector<std::pair<std::string, LinkFrame>> seeds = {
      {"join-00", join()},
      {"join-answer-00", join_answer()},
      {"relay-forward-00", RelayForward{12, std::string("\x02command", 8)}},
      {"relay-answer-00", RelayAnswer{12, "effects"}}};
  // A refusal carries its reason and nothing else.
  std::vector<uint8_t> refused;
  encode_frame(refused, JoinAnswer{"node 'n4' is a member already", "", 0, {}});
  LinkReader reader;
  reader.append(refused);
  auto next = reader.next();
  ASSERT_TRUE(next.ok() && next.value());
  EXPECT_EQ(std::get<JoinAnswer>(*next.value()).refused, "node 'n4' is a member already");
  const char* dir = std::getenv("HAMQ_WRITE_LINK_FRAME_CORPUS");
  if (dir == nullptr) return;
  std::filesystem::create_directories(dir);
  for (const auto& [name, frame] : seeds) {
    std::vector<uint8_t> bytes;
    encode_frame(bytes, frame);
    std::ofstream(std::string(dir) + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  }
}

// The stream is bad from `bytes` on: next() fails, and keeps failing.
std::string failure_of(std::span<const uint8_t> bytes, uint32_t body_bytes_max) {
  LinkReader reader;
  reader.set_body_bytes_max(body_bytes_max);
  reader.append(bytes);
  auto next = reader.next();
  EXPECT_FALSE(next.ok());
  if (next.ok()) return "";
  EXPECT_FALSE(reader.next().ok());
  return next.error();
}

void reseal_header(std::vector<uint8_t>& bytes) {
  uint32_t crc = crc32c(bytes.data(), 16);
  for (int i = 0; i < 4; ++i) bytes[16 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
}

void reseal_body(std::vector<uint8_t>& bytes) {
  uint32_t crc = crc32c(bytes.data() + link_header_bytes, bytes.size() - link_header_bytes);
  for (int i = 0; i < 4; ++i) bytes[12 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  reseal_header(bytes);
}

TEST(LinkCodec, DamageAnywhereInAFrameFailsTheStream) {
  std::vector<uint8_t> good;
  encode_frame(good, RaftBatch{full_batch()});
  for (size_t at = 0; at < good.size(); at += 13) {
    std::vector<uint8_t> bad = good;
    bad[at] ^= 0x20;
    std::string failure = failure_of(bad, link_body_bytes_max);
    EXPECT_FALSE(failure.empty()) << "byte " << at;
  }
}

TEST(LinkCodec, AnOversizedBodyIsRefusedFromItsHeaderAlone) {
  std::vector<uint8_t> frame;
  encode_frame(frame, RaftBatch{full_batch()});
  // Before the handshake only small bodies are taken: the header is enough to refuse it.
  std::span<const uint8_t> header(frame.data(), link_header_bytes);
  EXPECT_NE(failure_of(header, 100).find("past the bound of 100"), std::string::npos);
}

TEST(LinkCodec, AnotherVersionOrAnUnknownTypeIsRefused) {
  std::vector<uint8_t> frame;
  encode_frame(frame, HelloProof{"p"});
  std::vector<uint8_t> other_version = frame;
  other_version[4] = 2;
  reseal_header(other_version);
  EXPECT_EQ(failure_of(other_version, link_body_bytes_max), "unsupported link version 2");
  std::vector<uint8_t> unknown_type = frame;
  unknown_type[5] = 99;
  reseal_header(unknown_type);
  EXPECT_EQ(failure_of(unknown_type, link_body_bytes_max), "unknown frame type 99");
}

TEST(LinkCodec, CountsPastTheBodyAndTrailingBytesAreRefused) {
  std::vector<uint8_t> frame;
  encode_frame(frame, RaftBatch{empty_batch()});
  // from, to, then the heartbeat count: claim four billion heartbeats in an empty body.
  std::vector<uint8_t> huge_count = frame;
  for (int i = 0; i < 4; ++i) huge_count[link_header_bytes + 16 + i] = 0xFF;
  reseal_body(huge_count);
  EXPECT_EQ(failure_of(huge_count, link_body_bytes_max), "count past the frame's end");
  std::vector<uint8_t> trailing = frame;
  trailing.push_back(0);
  uint32_t body = static_cast<uint32_t>(trailing.size() - link_header_bytes);
  for (int i = 0; i < 4; ++i) trailing[8 + i] = static_cast<uint8_t>(body >> (24 - 8 * i));
  reseal_body(trailing);
  EXPECT_EQ(failure_of(trailing, link_body_bytes_max), "bytes after the frame's body");
}

TEST(LinkCodec, AHelloNeedsANameAndANonceOfItsSize) {
  Hello nameless = hello();
  nameless.node_name.clear();
  std::vector<uint8_t> frame;
  encode_frame(frame, nameless);
  EXPECT_EQ(failure_of(frame, link_handshake_body_bytes_max), "hello without a node name");
  Hello short_nonce = hello();
  short_nonce.nonce = "abc";
  frame.clear();
  encode_frame(frame, short_nonce);
  EXPECT_EQ(failure_of(frame, link_handshake_body_bytes_max), "nonce of a wrong size");
}

TEST(LinkCodec, AnIncompleteFrameWaitsWithoutFailing) {
  std::vector<uint8_t> frame;
  encode_frame(frame, hello());
  LinkReader reader;
  reader.append(std::span<const uint8_t>(frame).first(frame.size() - 1));
  auto next = reader.next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next.value().has_value());
  EXPECT_EQ(reader.buffered(), frame.size() - 1);
}

}  // namespace
}  // namespace hamq::cluster
