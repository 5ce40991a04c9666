// MemoryStorage: a group's log, hard state and snapshot held in memory. The runtime of tests and
// of the simulator writes what each Ready asks for here; the core reads it through LogStorage.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "raft/raft.h"
#include "raft/storage.h"

namespace hamq::raft {

class MemoryStorage final : public LogStorage {
 public:
  // A blank member (it joins an existing group and receives a snapshot).
  explicit MemoryStorage(uint64_t incarnation);
  // A founding member of a new group: the first configuration as a snapshot at index 1, term 1,
  // identical on every founding member.
  // `data` is the state machine's initial state.
  static MemoryStorage bootstrap(const ConfState& conf, uint64_t incarnation,
                                 std::string data = {});

  // --- writes (the runtime's) ---
  // Appends, first replacing every entry from entries.front().index on.
  void append(const std::vector<Entry>& entries);
  void set_hard_state(const HardState& hard_state) { hard_state_ = hard_state; }
  // A piece of an incoming snapshot; the one marked `install` makes it current, dropping the log.
  void write_snapshot_chunk(const SnapshotChunk& chunk);
  // The state machine's own snapshot at `index` (<= the last entry): drops the entries up to it.
  void compact(LogIndex index, const ConfState& conf, std::string data);

  // --- LogStorage ---
  InitialState initial_state() const override;
  LogIndex first_index() const override { return snapshot_.meta.index + 1; }
  LogIndex last_index() const override { return snapshot_.meta.index + entries_.size(); }
  Result<Term, StorageError> term(LogIndex index) const override;
  Result<void, StorageError> entries(LogIndex lo, LogIndex hi, uint64_t max_bytes,
                                     std::vector<Entry>& out) const override;
  SnapshotMeta snapshot_meta() const override { return snapshot_.meta; }
  uint64_t snapshot_size_bytes() const override { return snapshot_.data.size(); }
  Result<std::string, StorageError> snapshot_chunk(const SnapshotMeta& snapshot, uint64_t offset,
                                                   uint64_t max_bytes) const override;

  const Snapshot& snapshot() const { return snapshot_; }
  const HardState& hard_state() const { return hard_state_; }

 private:
  uint64_t incarnation_;
  HardState hard_state_;
  Snapshot snapshot_;
  std::deque<Entry> entries_;  // entries_[0] is at snapshot_.meta.index + 1
  Snapshot incoming_;
};

}  // namespace hamq::raft
