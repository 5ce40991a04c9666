// SimDisk: one group's storage on one simulated node, with the failures of a real disk.
//
// Writes reach `current()` at once (what the member reads), and become durable only at sync().
// A crash keeps the durable state plus a random prefix of the unsynced writes, the last of them
// possibly torn (an append cut short), and drops the rest, as a power loss does.
#pragma once

#include <cstdint>
#include <variant>
#include <vector>

#include "raft/memory_storage.h"

namespace hamq::raft::sim {

class SimDisk {
 public:
  explicit SimDisk(MemoryStorage initial) : durable_(initial), current_(std::move(initial)) {}

  MemoryStorage& current() { return current_; }
  const MemoryStorage& durable() const { return durable_; }

  void append(const std::vector<Entry>& entries);
  void set_hard_state(const HardState& hard_state);
  void write_snapshot_chunk(const SnapshotChunk& chunk);
  void compact(LogIndex index, const ConfState& conf, std::string data);
  bool has_unsynced() const { return !unsynced_.empty(); }

  void sync();
  // Keeps `keep` of the unsynced writes (and `torn_entries` entries of the next one when it is
  // an append), then forgets the rest: the state a restart finds.
  void crash(size_t keep, size_t torn_entries);
  size_t unsynced_count() const { return unsynced_.size(); }

 private:
  struct Append {
    std::vector<Entry> entries;
  };
  struct Compact {
    LogIndex index;
    ConfState conf;
    std::string data;
  };
  using Write = std::variant<Append, HardState, SnapshotChunk, Compact>;
  static void apply(MemoryStorage& storage, const Write& write);

  MemoryStorage durable_;
  MemoryStorage current_;
  std::vector<Write> unsynced_;
};

}  // namespace hamq::raft::sim
