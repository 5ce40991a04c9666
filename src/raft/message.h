// Message: what Raft nodes of one group say to each other. The core produces and consumes them;
// the runtime carries them (and may coalesce those of many groups between two nodes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "raft/types.h"

namespace hamq::raft {

enum class MessageType : uint8_t {
  pre_vote,           // "would you vote for me at term+1?" (thesis §9.6); changes no state
  pre_vote_response,  //
  vote,               // RequestVote (§5.2)
  vote_response,      //
  append,             // AppendEntries with entries (§5.3)
  append_response,    //
  heartbeat,          // AppendEntries without entries, carrying the commit index
  heartbeat_response,
  snapshot,           // one chunk of InstallSnapshot (§7)
  snapshot_response,  // a chunk was taken (or refused); the follower's append_response follows
  timeout_now,        // leadership transfer: campaign now (thesis §3.10)
};
std::string_view message_type_name(MessageType type);

struct Message {
  MessageType type = MessageType::heartbeat;
  GroupId group{};
  NodeId from{};
  NodeId to{};
  // The sender's disk incarnation: changes when a node restarts with an empty disk, so that what
  // the node had before is not counted again (see Progress::incarnation).
  uint64_t from_incarnation = 0;
  Term term{};

  // append: the entry before `entries` (index, log_term). vote/pre_vote: the candidate's last
  // entry. append_response: the follower's last matching index. snapshot: chunk offset.
  LogIndex index{};
  Term log_term{};
  std::vector<Entry> entries{};
  LogIndex commit{};

  bool reject = false;
  // A rejected append: the follower's hint of where the logs may match (its index and term
  // there), for backing off a whole term at a time (§5.3, last paragraphs).
  LogIndex reject_hint{};
  Term reject_hint_term{};

  // snapshot: the snapshot's place and configuration, this chunk at `chunk_offset`, and whether
  // it is the last one.
  SnapshotMeta snapshot{};
  uint64_t chunk_offset = 0;
  std::string chunk{};
  bool chunk_last = false;

  // vote/pre_vote sent because of timeout_now: voters ignore their leader lease for it.
  bool transfer = false;
};

}  // namespace hamq::raft
