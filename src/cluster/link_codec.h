// The link between two nodes: its frames and their codec (docs/formats/link.md).
//
// Each node keeps one TCP connection to each peer; both directions carry a stream of frames. A
// frame is a 20-byte header (magic, version, type, body length, body CRC-32C, header CRC-32C)
// and a body, all integers big-endian. The header is checked as soon as it is buffered, before its
// body arrives: a peer that sends a bad header, a body longer than the reader allows or a body that
// fails its checksum is a bad peer, and the transport drops it and logs the reason.
//
// Pure: no sockets. LinkReader takes bytes in any chunking and returns whole, decoded frames;
// encode_frame appends one frame to an output buffer. Every length read from a peer is checked
// against the bytes that arrived before anything is allocated for it, so memory follows what
// the peer actually sent, never what it claims.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/result.h"
#include "raft/coalescer.h"

namespace hamq::cluster {

inline constexpr char link_magic[4] = {'H', 'L', 'N', 'K'};
inline constexpr uint8_t link_version = 1;
inline constexpr size_t link_header_bytes = 20;
// Bodies before the peer proved it knows the cluster secret: a hello and its proof are small.
inline constexpr uint32_t link_handshake_body_bytes_max = 64 << 10;
// Bodies after: an append carries at least one whole entry, and an entry holds a whole message
// (up to 512 MiB of body, the write-ahead log's record bound of 576 MiB).
inline constexpr uint32_t link_body_bytes_max = 600u << 20;

enum class LinkFrameType : uint8_t {
  hello = 1,          // who the sender is; first frame each way
  hello_proof = 2,    // proof of the cluster secret, bound to the peer's nonce
  raft_batch = 3,     // the Raft messages of every group from the sender to the receiver
  propose = 4,        // a proposal for a group the receiver leads (the sender does not)
  proposed = 5,       // where the leader put a proposal, or that it did not
  join = 6,           // a blank node asks to join the receiver's cluster (its only frame)
  join_answer = 7,    // the cluster's answer to a join: the node's id and its peers, or why not
  relay_forward = 8,  // a command to a queue whose group the sender holds no member of
  relay_answer = 9,   // what such a command did, and deliveries to the sender's consumers
};

inline constexpr size_t link_nonce_bytes = 16;

struct Hello {
  std::string cluster_id;  // empty: a blank node that has not joined a cluster yet
  std::string node_name;   // --node-name
  uint64_t node_id = 0;    // in the cluster's metadata; 0 until it has one
  uint64_t incarnation = 0;
  std::string nonce;  // link_nonce_bytes of randomness, for the peer's proof
  bool operator==(const Hello&) const = default;
};

struct HelloProof {
  std::string proof;  // a MAC over the peer's nonce, keyed by the cluster secret
  bool operator==(const HelloProof&) const = default;
};

struct RaftBatch {
  raft::NodeBatch batch;
};

// A proposal forwarded to the group's leader; answered by Proposed with the same request id.
struct Propose {
  uint64_t request = 0;
  uint64_t group = 0;
  std::string data;
  bool operator==(const Propose&) const = default;
};

struct Proposed {
  uint64_t request = 0;
  uint64_t term = 0;   // of the entry the leader appended
  uint64_t index = 0;  // where; 0: not appended (not the leader any more, or the log refused)
  bool operator==(const Proposed&) const = default;
};

// A node that holds no member of a durable queue's group reaches the queue through one member's
// node (the broker's relay): it forwards its commands (data empty: it only says it still uses
// the queue), and that node answers with what they did and with deliveries to the sender's
// consumers. The data is the broker's (queue/command.h), opaque here.
struct RelayForward {
  uint64_t group = 0;
  std::string data;
  bool operator==(const RelayForward&) const = default;
};

struct RelayAnswer {
  uint64_t group = 0;
  std::string data;
  bool operator==(const RelayAnswer&) const = default;
};

// A member of the cluster as the metadata group records it.
struct LinkMember {
  std::string name;
  std::string host;
  uint16_t port = 0;  // its cluster port
  uint64_t id = 0;
  bool operator==(const LinkMember&) const = default;
};

struct Join {
  std::string host;  // where the joining node listens for peers
  uint16_t port = 0;
  bool operator==(const Join&) const = default;
};

struct JoinAnswer {
  std::string refused;  // empty: joined
  std::string cluster_id;
  uint64_t node_id = 0;
  std::vector<LinkMember> members;  // every member, the joined node too
  bool operator==(const JoinAnswer&) const = default;
};

using LinkFrame = std::variant<Hello, HelloProof, RaftBatch, Propose, Proposed, Join, JoinAnswer,
                               RelayForward, RelayAnswer>;

// Appends one frame. The body must not exceed link_body_bytes_max (a programmer error).
void encode_frame(std::vector<uint8_t>& out, const LinkFrame& frame);

class LinkReader {
 public:
  // Until the handshake is done the reader takes bodies of at most
  // link_handshake_body_bytes_max; the transport raises the bound once the peer proved itself.
  void set_body_bytes_max(uint32_t bytes) { body_bytes_max_ = bytes; }

  void append(std::span<const uint8_t> bytes);
  // The next whole frame, nothing while one is incomplete, or why the stream is bad (the
  // reader stays failed: the connection must be dropped).
  Result<std::optional<LinkFrame>, std::string> next();
  // Bytes held for a frame not yet complete.
  size_t buffered() const { return buffer_.size() - read_; }

 private:
  std::vector<uint8_t> buffer_;
  size_t read_ = 0;  // bytes of buffer_ already taken
  uint32_t body_bytes_max_ = link_handshake_body_bytes_max;
  std::string failure_;
};

// The body of one frame decoded, for tests and the fuzzer: the frame's type and its body bytes.
Result<LinkFrame, std::string> decode_body(LinkFrameType type, std::span<const uint8_t> body);

}  // namespace hamq::cluster
