// Node-to-node batching of Raft messages for many groups.
//
// Every durable queue is its own Raft group, so two nodes may share thousands of groups. Their
// messages travel in one NodeBatch per destination and flush, and the heartbeats (and their
// answers) of all groups shrink to a few words each (a "beat": group, term, commit) instead of
// a full Message: 10,000 idle groups cost one batch per peer per heartbeat interval, not 10,000
// messages. This is CockroachDB's coalesced heartbeats and redpanda's heartbeat_manager.
//
// Pure: the runtime adds each Ready's messages to an Outbox, takes the batches to send them, and
// gives received batches to expand(), which returns the per-group messages to step.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "raft/message.h"

namespace hamq::raft {

// A heartbeat or heartbeat answer of one group, without the fields that are always empty.
struct Beat {
  GroupId group;
  Term term;
  // Heartbeats: the leader's commit. Responses: a member catching up says where its log ends,
  // as its last index + 1 (0: nothing said).
  LogIndex commit;
  uint64_t from_incarnation = 0;
  bool operator==(const Beat&) const = default;
};

struct NodeBatch {
  NodeId from;
  NodeId to;
  std::vector<Beat> heartbeats;
  std::vector<Beat> heartbeat_responses;
  std::vector<Message> messages;  // everything else, in the order it was added
  bool empty() const {
    return heartbeats.empty() && heartbeat_responses.empty() && messages.empty();
  }
  size_t count() const { return heartbeats.size() + heartbeat_responses.size() + messages.size(); }
};

class Outbox {
 public:
  explicit Outbox(NodeId self) : self_(self) {}
  void add(const Message& message);
  // One batch per destination with everything added since the last take, by destination.
  std::vector<NodeBatch> take();
  bool empty() const { return batches_.empty(); }

 private:
  NodeId self_;
  std::map<NodeId, NodeBatch> batches_;
};

// The messages a batch stands for, each addressed to its group on the receiving node.
std::vector<Message> expand(const NodeBatch& batch);

}  // namespace hamq::raft
