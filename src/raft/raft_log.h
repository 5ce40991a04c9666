// RaftLog: the log as the core sees it: what storage holds, plus the "unstable" suffix (entries,
// or a snapshot received from the leader) that the core has accepted but the runtime has not yet
// made durable. Entries reach storage through Ready and become stable on advance.
//
// The storage may still hold entries past `unstable_offset` that an accepted conflicting suffix
// has replaced; they are never read, and are overwritten when the unstable entries are written.
//
// A storage read that fails with `io` marks the log failed; the owner stops the group.
#pragma once

#include <deque>
#include <optional>
#include <vector>

#include "raft/storage.h"
#include "raft/types.h"

namespace hamq::raft {

class RaftLog {
 public:
  explicit RaftLog(const LogStorage& storage);

  LogIndex first_index() const;
  LogIndex last_index() const;
  Term last_term() const;
  // The last index whose entry is durable and current: entries up to it may be applied.
  LogIndex last_stable_index() const;
  // The term at `index`, or an error (compacted, unavailable; io marks the log failed).
  Result<Term, StorageError> term(LogIndex index) const;
  // The term at `index`, or Term{0} when it is unknown.
  Term term_or_zero(LogIndex index) const;
  bool matches(LogIndex index, Term term) const;
  // Raft §5.4.1: a candidate's log is at least as up to date as ours.
  bool is_up_to_date(LogIndex last, Term term) const;

  // Entries [lo, hi) within `max_bytes` (at least one).
  Result<std::vector<Entry>, StorageError> entries(LogIndex lo, LogIndex hi,
                                                   uint64_t max_bytes) const;

  // AppendEntries on a follower (§5.3): the entries after `prev` if the logs match there. Returns
  // the index of the last new entry, or nothing when the logs do not match.
  std::optional<LogIndex> maybe_append(LogIndex prev_index, Term prev_term, LogIndex leader_commit,
                                       const std::vector<Entry>& entries);
  // The leader appends its own entries at the end.
  void append(std::vector<Entry> entries);
  // The largest index <= `index` whose term is <= `term`: where a rejected append may match.
  LogIndex find_conflict_by_term(LogIndex index, Term term) const;

  LogIndex committed() const { return committed_; }
  void commit_to(LogIndex index);
  LogIndex applied() const { return applied_; }
  void applied_to(LogIndex index);

  // A snapshot from the leader replaces the whole log.
  void restore(const SnapshotMeta& snapshot);
  const std::optional<SnapshotMeta>& unstable_snapshot() const { return unstable_snapshot_; }
  const std::deque<Entry>& unstable_entries() const { return unstable_; }
  // The runtime has made these durable.
  void stable_to(LogIndex index, Term term);
  void stable_snapshot_to(const SnapshotMeta& snapshot);

  bool failed() const { return failed_; }

 private:
  void truncate_and_append(std::vector<Entry> entries);

  const LogStorage& storage_;
  std::optional<SnapshotMeta> unstable_snapshot_;
  std::deque<Entry> unstable_;
  LogIndex unstable_offset_;  // the index of unstable_.front()
  LogIndex committed_;
  LogIndex applied_;
  mutable bool failed_ = false;
};

}  // namespace hamq::raft
