#include "raft/sim/sim_disk.h"

namespace hamq::raft::sim {

void SimDisk::apply(MemoryStorage& storage, const Write& write) {
  if (const auto* append = std::get_if<Append>(&write)) {
    storage.append(append->entries);
  } else if (const auto* hard_state = std::get_if<HardState>(&write)) {
    storage.set_hard_state(*hard_state);
  } else if (const auto* chunk = std::get_if<SnapshotChunk>(&write)) {
    storage.write_snapshot_chunk(*chunk);
  } else if (const auto* compact = std::get_if<Compact>(&write)) {
    storage.compact(compact->index, compact->conf, compact->data);
  }
}

void SimDisk::append(const std::vector<Entry>& entries) {
  if (entries.empty()) return;
  current_.append(entries);
  unsynced_.push_back(Append{entries});
}

void SimDisk::set_hard_state(const HardState& hard_state) {
  current_.set_hard_state(hard_state);
  unsynced_.push_back(hard_state);
}

void SimDisk::write_snapshot_chunk(const SnapshotChunk& chunk) {
  current_.write_snapshot_chunk(chunk);
  unsynced_.push_back(chunk);
}

void SimDisk::compact(LogIndex index, const ConfState& conf, std::string data) {
  current_.compact(index, conf, data);
  unsynced_.push_back(Compact{index, conf, std::move(data)});
}

void SimDisk::sync() {
  for (const Write& write : unsynced_) apply(durable_, write);
  unsynced_.clear();
}

void SimDisk::crash(size_t keep, size_t torn_entries) {
  for (size_t i = 0; i < keep && i < unsynced_.size(); ++i) apply(durable_, unsynced_[i]);
  if (keep < unsynced_.size()) {
    if (const auto* append = std::get_if<Append>(&unsynced_[keep])) {
      size_t count = std::min(torn_entries, append->entries.size());
      durable_.append(std::vector<Entry>(append->entries.begin(),
                                         append->entries.begin() + static_cast<ptrdiff_t>(count)));
    }
  }
  unsynced_.clear();
  current_ = durable_;
}

}  // namespace hamq::raft::sim
