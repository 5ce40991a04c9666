// The values the storage engine deals in: group ids, log indexes, terms, entries, hard state,
// snapshots, and the one error type of the module. Plain data.
//
// These are the storage engine's own types, independent of src/raft: an adapter maps between the
// two. A group is one replicated log (one queue, or the metadata group) hosted on this node.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace hamq::storage {

// One replicated log hosted on this node. 0 is reserved for the engine's own records.
struct GroupId {
  uint64_t value = 0;
  auto operator<=>(const GroupId&) const = default;
};

// A position in a group's log, from 1. Index 0 is the empty log's last index.
struct LogIndex {
  uint64_t value = 0;
  auto operator<=>(const LogIndex&) const = default;
  LogIndex operator+(uint64_t count) const { return LogIndex{value + count}; }
  LogIndex operator-(uint64_t count) const { return LogIndex{value - count}; }
};

struct Term {
  uint64_t value = 0;
  auto operator<=>(const Term&) const = default;
};

// What Raft must find after a restart: current term, the vote cast in it (0: none), and how far
// the log is known committed.
struct HardState {
  Term term;
  uint64_t vote = 0;
  LogIndex commit;
  bool operator==(const HardState&) const = default;
};

// An entry to append. `kind` is opaque to storage (the Raft adapter keeps its entry type there);
// `payload` must stay valid until the submit call returns (it is copied).
struct EntryInput {
  Term term;
  LogIndex index;
  uint8_t kind = 0;
  std::string_view payload;
};

// An entry read back.
struct Entry {
  Term term;
  LogIndex index;
  uint8_t kind = 0;
  std::string payload;
  bool operator==(const Entry&) const = default;
};

// Where a snapshot stands: the state machine's state includes every entry up to `index`.
struct SnapshotMeta {
  LogIndex index;
  Term term;
  bool operator==(const SnapshotMeta&) const = default;
};

// How saving a snapshot changes the log.
enum class SnapshotMode : uint8_t {
  // A snapshot received from the leader: every stored entry is dropped, the log restarts after it.
  replace_log = 0,
  // A snapshot the group took of its own state: entries up to its index are dropped, later ones
  // stay.
  compact_prefix = 1,
  // As compact_prefix, but the entries from `retain_from` up to its index stay readable (the
  // state refers to them: a queue's snapshot names the entries holding its messages' bodies).
  // They are no longer part of the Raft log (first_index is still the snapshot's index + 1).
  compact_retaining = 2,
};

enum class Errc : uint8_t {
  // Reads: ordinary answers.
  compacted,    // the index lies at or below the snapshot
  unavailable,  // the index lies beyond the last stored entry, or the group is unknown
  // Submitting: back-pressure, retry after the next flush.
  busy,  // pending bytes are at their limit
  // Operating errors.
  no_space,  // ENOSPC: the batch was not written; it stays pending and nothing durable is harmed
  io,        // an I/O error other than a full disk
  corrupt,   // a checksum or structure check failed on data that was synced
  group_failed,    // the group's data was found corrupt; it is not served until repaired
  log_failed,      // an fsync or write failed earlier: this log writes nothing more (restart)
  too_large,       // a record past record_body_bytes_max
  invalid_format,  // a data directory this version cannot read
  not_found,       // a file that does not exist
};
std::string_view errc_name(Errc code);

struct Error {
  Errc code = Errc::io;
  std::string detail;  // where and why, for logs and hamq-dump
};

}  // namespace hamq::storage
