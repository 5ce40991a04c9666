#include "cluster/link_codec.h"

#include <cstring>

#include "amqp/wire.h"
#include "common/crc32c.h"
#include "common/verify.h"

namespace hamq::cluster {
namespace {

using amqp::WireReader;
using amqp::WireWriter;

constexpr uint8_t message_type_max = static_cast<uint8_t>(raft::MessageType::timeout_now);
constexpr uint8_t entry_type_max = static_cast<uint8_t>(raft::EntryType::conf_change);
constexpr uint8_t flag_reject = 1;
constexpr uint8_t flag_chunk_last = 2;
constexpr uint8_t flag_transfer = 4;
// The fewest bytes each repeated item takes on the wire: a count larger than the bytes left can
// hold is refused before anything is reserved for it.
constexpr size_t beat_bytes = 32;
constexpr size_t node_id_bytes = 8;
constexpr size_t entry_bytes_min = 21;
constexpr size_t message_bytes_min = 122;
constexpr size_t member_bytes_min = 12;

uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

void store_u32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// A count of items of at least `item_bytes` each: refused when the bytes left cannot hold it.
uint32_t count(WireReader& in, size_t item_bytes) {
  uint32_t n = in.u32();
  if (!in.failed() && n > in.remaining() / item_bytes) in.fail("count past the frame's end");
  return in.failed() ? 0 : n;
}

void encode_beats(WireWriter& out, const std::vector<raft::Beat>& beats) {
  out.u32(static_cast<uint32_t>(beats.size()));
  for (const raft::Beat& beat : beats) {
    out.u64(beat.group.value);
    out.u64(beat.term.value);
    out.u64(beat.commit.value);
    out.u64(beat.from_incarnation);
  }
}

std::vector<raft::Beat> decode_beats(WireReader& in) {
  std::vector<raft::Beat> beats(count(in, beat_bytes));
  for (raft::Beat& beat : beats) {
    beat.group.value = in.u64();
    beat.term.value = in.u64();
    beat.commit.value = in.u64();
    beat.from_incarnation = in.u64();
  }
  return beats;
}

void encode_nodes(WireWriter& out, const std::vector<raft::NodeId>& nodes) {
  out.u32(static_cast<uint32_t>(nodes.size()));
  for (raft::NodeId node : nodes) out.u64(node.value);
}

std::vector<raft::NodeId> decode_nodes(WireReader& in) {
  std::vector<raft::NodeId> nodes(count(in, node_id_bytes));
  for (raft::NodeId& node : nodes) node.value = in.u64();
  return nodes;
}

void encode_message(WireWriter& out, const raft::Message& m) {
  out.u8(static_cast<uint8_t>(m.type));
  out.u64(m.group.value);
  out.u64(m.from.value);
  out.u64(m.to.value);
  out.u64(m.from_incarnation);
  out.u64(m.term.value);
  out.u64(m.index.value);
  out.u64(m.log_term.value);
  out.u64(m.commit.value);
  out.u8(static_cast<uint8_t>((m.reject ? flag_reject : 0) | (m.chunk_last ? flag_chunk_last : 0) |
                              (m.transfer ? flag_transfer : 0)));
  out.u64(m.reject_hint.value);
  out.u64(m.reject_hint_term.value);
  out.u32(static_cast<uint32_t>(m.entries.size()));
  for (const raft::Entry& entry : m.entries) {
    out.u64(entry.term.value);
    out.u64(entry.index.value);
    out.u8(static_cast<uint8_t>(entry.type));
    out.long_string(entry.data);
  }
  out.u64(m.snapshot.index.value);
  out.u64(m.snapshot.term.value);
  encode_nodes(out, m.snapshot.conf.voters);
  encode_nodes(out, m.snapshot.conf.learners);
  out.u64(m.chunk_offset);
  out.long_string(m.chunk);
}

raft::Message decode_message(WireReader& in) {
  raft::Message m;
  uint8_t type = in.u8();
  if (type > message_type_max) in.fail("unknown Raft message type");
  m.type = static_cast<raft::MessageType>(type);
  m.group.value = in.u64();
  m.from.value = in.u64();
  m.to.value = in.u64();
  m.from_incarnation = in.u64();
  m.term.value = in.u64();
  m.index.value = in.u64();
  m.log_term.value = in.u64();
  m.commit.value = in.u64();
  uint8_t flags = in.u8();
  if (flags & ~(flag_reject | flag_chunk_last | flag_transfer)) in.fail("unknown message flags");
  m.reject = flags & flag_reject;
  m.chunk_last = flags & flag_chunk_last;
  m.transfer = flags & flag_transfer;
  m.reject_hint.value = in.u64();
  m.reject_hint_term.value = in.u64();
  m.entries.resize(count(in, entry_bytes_min));
  for (raft::Entry& entry : m.entries) {
    entry.term.value = in.u64();
    entry.index.value = in.u64();
    uint8_t entry_type = in.u8();
    if (entry_type > entry_type_max) in.fail("unknown entry type");
    entry.type = static_cast<raft::EntryType>(entry_type);
    in.long_string(entry.data);
  }
  m.snapshot.index.value = in.u64();
  m.snapshot.term.value = in.u64();
  m.snapshot.conf.voters = decode_nodes(in);
  m.snapshot.conf.learners = decode_nodes(in);
  m.chunk_offset = in.u64();
  in.long_string(m.chunk);
  return m;
}

void encode_body(std::vector<uint8_t>& out, const LinkFrame& frame) {
  WireWriter writer(out);
  std::visit(
      [&writer](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, Hello>) {
          writer.short_string(body.cluster_id);
          writer.short_string(body.node_name);
          writer.u64(body.node_id);
          writer.u64(body.incarnation);
          writer.short_string(body.nonce);
        } else if constexpr (std::is_same_v<T, HelloProof>) {
          writer.short_string(body.proof);
        } else if constexpr (std::is_same_v<T, Propose>) {
          writer.u64(body.request);
          writer.u64(body.group);
          writer.long_string(body.data);
        } else if constexpr (std::is_same_v<T, Proposed>) {
          writer.u64(body.request);
          writer.u64(body.term);
          writer.u64(body.index);
        } else if constexpr (std::is_same_v<T, RelayForward> || std::is_same_v<T, RelayAnswer>) {
          writer.u64(body.group);
          writer.long_string(body.data);
        } else if constexpr (std::is_same_v<T, Join>) {
          writer.short_string(body.host);
          writer.u16(body.port);
        } else if constexpr (std::is_same_v<T, JoinAnswer>) {
          writer.long_string(body.refused);
          writer.short_string(body.cluster_id);
          writer.u64(body.node_id);
          writer.u32(static_cast<uint32_t>(body.members.size()));
          for (const LinkMember& member : body.members) {
            writer.short_string(member.name);
            writer.short_string(member.host);
            writer.u16(member.port);
            writer.u64(member.id);
          }
        } else {
          const raft::NodeBatch& batch = body.batch;
          writer.u64(batch.from.value);
          writer.u64(batch.to.value);
          encode_beats(writer, batch.heartbeats);
          encode_beats(writer, batch.heartbeat_responses);
          writer.u32(static_cast<uint32_t>(batch.messages.size()));
          for (const raft::Message& message : batch.messages) encode_message(writer, message);
        }
      },
      frame);
}

LinkFrameType type_of(const LinkFrame& frame) {
  if (std::holds_alternative<Hello>(frame)) return LinkFrameType::hello;
  if (std::holds_alternative<HelloProof>(frame)) return LinkFrameType::hello_proof;
  if (std::holds_alternative<Propose>(frame)) return LinkFrameType::propose;
  if (std::holds_alternative<Proposed>(frame)) return LinkFrameType::proposed;
  if (std::holds_alternative<Join>(frame)) return LinkFrameType::join;
  if (std::holds_alternative<JoinAnswer>(frame)) return LinkFrameType::join_answer;
  if (std::holds_alternative<RelayForward>(frame)) return LinkFrameType::relay_forward;
  if (std::holds_alternative<RelayAnswer>(frame)) return LinkFrameType::relay_answer;
  return LinkFrameType::raft_batch;
}

}  // namespace

void encode_frame(std::vector<uint8_t>& out, const LinkFrame& frame) {
  size_t start = out.size();
  out.resize(start + link_header_bytes);
  encode_body(out, frame);
  size_t body_bytes = out.size() - start - link_header_bytes;
  HAMQ_VERIFY(body_bytes <= link_body_bytes_max, "link frame body past its bound");
  uint8_t* header = out.data() + start;
  std::memcpy(header, link_magic, 4);
  header[4] = link_version;
  header[5] = static_cast<uint8_t>(type_of(frame));
  header[6] = header[7] = 0;
  store_u32(header + 8, static_cast<uint32_t>(body_bytes));
  store_u32(header + 12, crc32c(header + link_header_bytes, body_bytes));
  store_u32(header + 16, crc32c(header, 16));
}

Result<LinkFrame, std::string> decode_body(LinkFrameType type, std::span<const uint8_t> body) {
  WireReader in(body);
  LinkFrame frame;
  switch (type) {
    case LinkFrameType::hello: {
      Hello hello;
      in.short_string(hello.cluster_id);
      in.short_string(hello.node_name);
      hello.node_id = in.u64();
      hello.incarnation = in.u64();
      in.short_string(hello.nonce);
      if (!in.failed() && hello.nonce.size() != link_nonce_bytes) in.fail("nonce of a wrong size");
      if (!in.failed() && hello.node_name.empty()) in.fail("hello without a node name");
      frame = std::move(hello);
      break;
    }
    case LinkFrameType::hello_proof: {
      HelloProof proof;
      in.short_string(proof.proof);
      frame = std::move(proof);
      break;
    }
    case LinkFrameType::raft_batch: {
      RaftBatch raft;
      raft.batch.from.value = in.u64();
      raft.batch.to.value = in.u64();
      raft.batch.heartbeats = decode_beats(in);
      raft.batch.heartbeat_responses = decode_beats(in);
      raft.batch.messages.resize(count(in, message_bytes_min));
      for (raft::Message& message : raft.batch.messages) message = decode_message(in);
      frame = std::move(raft);
      break;
    }
    case LinkFrameType::propose: {
      Propose propose;
      propose.request = in.u64();
      propose.group = in.u64();
      in.long_string(propose.data);
      frame = std::move(propose);
      break;
    }
    case LinkFrameType::proposed: {
      Proposed proposed;
      proposed.request = in.u64();
      proposed.term = in.u64();
      proposed.index = in.u64();
      frame = proposed;
      break;
    }
    case LinkFrameType::relay_forward: {
      RelayForward forward;
      forward.group = in.u64();
      in.long_string(forward.data);
      frame = std::move(forward);
      break;
    }
    case LinkFrameType::relay_answer: {
      RelayAnswer answer;
      answer.group = in.u64();
      in.long_string(answer.data);
      frame = std::move(answer);
      break;
    }
    case LinkFrameType::join: {
      Join join;
      in.short_string(join.host);
      join.port = in.u16();
      frame = std::move(join);
      break;
    }
    case LinkFrameType::join_answer: {
      JoinAnswer answer;
      in.long_string(answer.refused);
      in.short_string(answer.cluster_id);
      answer.node_id = in.u64();
      answer.members.resize(count(in, member_bytes_min));
      for (LinkMember& member : answer.members) {
        in.short_string(member.name);
        in.short_string(member.host);
        member.port = in.u16();
        member.id = in.u64();
      }
      frame = std::move(answer);
      break;
    }
    default:
      return unexpected("unknown frame type " + std::to_string(static_cast<int>(type)));
  }
  if (!in.failed() && in.remaining() != 0) in.fail("bytes after the frame's body");
  if (in.failed()) return unexpected(std::string(in.failure()));
  return frame;
}

void LinkReader::append(std::span<const uint8_t> bytes) {
  if (read_ > 0 && read_ == buffer_.size()) {
    buffer_.clear();
    read_ = 0;
  } else if (read_ > (64u << 10) && read_ * 2 > buffer_.size()) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(read_));
    read_ = 0;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

Result<std::optional<LinkFrame>, std::string> LinkReader::next() {
  if (!failure_.empty()) return unexpected(failure_);
  if (buffered() < link_header_bytes) return std::optional<LinkFrame>{};
  const uint8_t* header = buffer_.data() + read_;
  auto fail = [this](std::string reason) -> Result<std::optional<LinkFrame>, std::string> {
    failure_ = std::move(reason);
    return unexpected(failure_);
  };
  if (std::memcmp(header, link_magic, 4) != 0) return fail("not a hamq link frame (bad magic)");
  if (load_u32(header + 16) != crc32c(header, 16)) return fail("frame header checksum mismatch");
  if (header[4] != link_version) {
    return fail("unsupported link version " + std::to_string(header[4]));
  }
  if (header[6] != 0 || header[7] != 0) return fail("reserved header bytes are not zero");
  uint32_t body_bytes = load_u32(header + 8);
  if (body_bytes > body_bytes_max_) {
    return fail("frame body of " + std::to_string(body_bytes) + " bytes past the bound of " +
                std::to_string(body_bytes_max_));
  }
  if (buffered() < link_header_bytes + body_bytes) return std::optional<LinkFrame>{};
  std::span<const uint8_t> body(header + link_header_bytes, body_bytes);
  if (load_u32(header + 12) != crc32c(body.data(), body.size())) {
    return fail("frame body checksum mismatch");
  }
  auto frame = decode_body(static_cast<LinkFrameType>(header[5]), body);
  if (!frame.ok()) return fail(frame.error());
  read_ += link_header_bytes + body_bytes;
  return std::optional<LinkFrame>(std::move(frame.value()));
}

}  // namespace hamq::cluster
