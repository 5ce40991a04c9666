// The values Raft is made of: ids, terms, log indexes, entries, hard state, configurations and
// snapshots. Plain data, no behaviour beyond comparison and index arithmetic.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace hamq::raft {

// A 64-bit number that cannot be mixed with another kind: a term is not a log index.
template <class Tag>
struct StrongId {
  uint64_t value = 0;
  auto operator<=>(const StrongId&) const = default;
};

struct NodeIdTag {};
struct GroupIdTag {};
struct TermTag {};

// A member of a group. 0 is "nobody" (no leader known, no vote cast).
using NodeId = StrongId<NodeIdTag>;
inline constexpr NodeId no_node{0};
using GroupId = StrongId<GroupIdTag>;
using Term = StrongId<TermTag>;

// A position in the log, from 1. Index 0 is the empty log's "last index".
struct LogIndex {
  uint64_t value = 0;
  auto operator<=>(const LogIndex&) const = default;
  LogIndex operator+(uint64_t count) const { return LogIndex{value + count}; }
  LogIndex operator-(uint64_t count) const { return LogIndex{value - count}; }
  LogIndex& operator++() {
    ++value;
    return *this;
  }
};
// How many entries lie in [from, to): 0 when to <= from.
inline uint64_t distance(LogIndex from, LogIndex to) {
  return to.value > from.value ? to.value - from.value : 0;
}

enum class EntryType : uint8_t {
  normal = 0,       // a command for the state machine (empty: the leader's no-op of its term)
  conf_change = 1,  // a membership change, data is an encoded ConfChange
};

struct Entry {
  Term term{};
  LogIndex index{};
  EntryType type = EntryType::normal;
  std::string data{};
  bool operator==(const Entry&) const = default;
};

// Bytes an entry is counted as when batching and limiting (its payload and a fixed overhead).
inline uint64_t entry_size_bytes(const Entry& entry) {
  return entry.data.size() + 24;
}

// What must be on disk before any message that depends on it leaves the node (Raft §5.1: current
// term and vote; commit so that a restart does not re-apply from the beginning).
struct HardState {
  Term term{};
  NodeId vote = no_node;
  LogIndex commit{};
  // Set while a member that came back with an empty disk catches up: the leader's commit index
  // it must reach before it may vote (see Raft::catching_up). 0 otherwise.
  LogIndex catch_up{};
  Term catch_up_term{};  // the term of the leader that said catch_up was committed
  bool operator==(const HardState&) const = default;
};

// The members of a group: voters decide elections and commits; learners receive the log but do
// not vote until promoted (Raft thesis §4.2.1).
struct ConfState {
  std::vector<NodeId> voters{};
  std::vector<NodeId> learners{};
  bool operator==(const ConfState&) const = default;
};

enum class ConfChangeType : uint8_t {
  add_voter = 0,    // also promotes a learner
  add_learner = 1,  // also demotes a voter
  remove_node = 2,
};

// One single-server membership change (Raft thesis §4.1): one at a time, effective when applied.
struct ConfChange {
  ConfChangeType type = ConfChangeType::add_voter;
  NodeId node{};
  bool operator==(const ConfChange&) const = default;
};
std::string encode_conf_change(const ConfChange& change);
// Returns false when `bytes` is not an encoded ConfChange.
bool decode_conf_change(const std::string& bytes, ConfChange& change);
// The configuration after a change. Returns false if the change does not apply (removing an
// absent node, adding a voter that already votes).
bool apply_conf_change(const ConfChange& change, ConfState& conf);
bool is_voter(const ConfState& conf, NodeId node);
bool is_learner(const ConfState& conf, NodeId node);

// Where a snapshot stands in the log, and the configuration as of that point.
struct SnapshotMeta {
  LogIndex index{};
  Term term{};
  ConfState conf{};
  bool operator==(const SnapshotMeta&) const = default;
};

struct Snapshot {
  SnapshotMeta meta{};
  std::string data{};  // the state machine's state at meta.index
};

}  // namespace hamq::raft
