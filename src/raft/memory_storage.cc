#include "raft/memory_storage.h"

#include "common/verify.h"

namespace hamq::raft {

MemoryStorage::MemoryStorage(uint64_t incarnation) : incarnation_(incarnation) {}

MemoryStorage MemoryStorage::bootstrap(const ConfState& conf, uint64_t incarnation,
                                       std::string data) {
  MemoryStorage storage(incarnation);
  storage.snapshot_.meta = SnapshotMeta{.index = LogIndex{1}, .term = Term{1}, .conf = conf};
  storage.snapshot_.data = std::move(data);
  storage.hard_state_ = HardState{.term = Term{1}, .vote = no_node, .commit = LogIndex{1}};
  return storage;
}

void MemoryStorage::append(const std::vector<Entry>& entries) {
  if (entries.empty()) return;
  LogIndex first = entries.front().index;
  HAMQ_VERIFY(first > snapshot_.meta.index, "appending below the snapshot");
  HAMQ_VERIFY(first <= last_index() + 1, "a gap in the log");
  entries_.resize(first.value - snapshot_.meta.index.value - 1);
  for (const Entry& entry : entries) {
    HAMQ_VERIFY(entry.index == last_index() + 1, "entries out of order");
    entries_.push_back(entry);
  }
}

void MemoryStorage::write_snapshot_chunk(const SnapshotChunk& chunk) {
  if (chunk.offset == 0) incoming_ = Snapshot{.meta = chunk.meta, .data = {}};
  HAMQ_VERIFY(incoming_.meta == chunk.meta && incoming_.data.size() == chunk.offset,
              "snapshot chunks out of order");
  incoming_.data += chunk.data;
  if (!chunk.install) return;
  snapshot_ = std::move(incoming_);
  incoming_ = Snapshot{};
  entries_.clear();
}

void MemoryStorage::compact(LogIndex index, const ConfState& conf, std::string data) {
  if (index <= snapshot_.meta.index) return;
  HAMQ_VERIFY(index <= last_index(), "compacting past the end of the log");
  Term term_at = entries_[index.value - snapshot_.meta.index.value - 1].term;
  size_t drop = index.value - snapshot_.meta.index.value;
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<ptrdiff_t>(drop));
  snapshot_ = Snapshot{.meta = SnapshotMeta{.index = index, .term = term_at, .conf = conf},
                       .data = std::move(data)};
}

InitialState MemoryStorage::initial_state() const {
  return InitialState{
      .hard_state = hard_state_, .snapshot = snapshot_.meta, .incarnation = incarnation_};
}

Result<Term, StorageError> MemoryStorage::term(LogIndex index) const {
  if (index == snapshot_.meta.index) return snapshot_.meta.term;
  if (index < snapshot_.meta.index) return unexpected(StorageError::compacted);
  if (index > last_index()) return unexpected(StorageError::unavailable);
  return entries_[index.value - snapshot_.meta.index.value - 1].term;
}

Result<void, StorageError> MemoryStorage::entries(LogIndex lo, LogIndex hi, uint64_t max_bytes,
                                                  std::vector<Entry>& out) const {
  if (lo <= snapshot_.meta.index) return unexpected(StorageError::compacted);
  if (hi > last_index() + 1) return unexpected(StorageError::unavailable);
  uint64_t bytes = 0;
  for (LogIndex index = lo; index < hi; ++index) {
    const Entry& entry = entries_[index.value - snapshot_.meta.index.value - 1];
    if (bytes > 0 && bytes + entry_size_bytes(entry) > max_bytes) break;
    bytes += entry_size_bytes(entry);
    out.push_back(entry);
  }
  return Ok{};
}

Result<std::string, StorageError> MemoryStorage::snapshot_chunk(const SnapshotMeta& snapshot,
                                                                uint64_t offset,
                                                                uint64_t max_bytes) const {
  if (!(snapshot == snapshot_.meta)) return unexpected(StorageError::compacted);
  if (offset > snapshot_.data.size()) return unexpected(StorageError::unavailable);
  return snapshot_.data.substr(offset, max_bytes);
}

}  // namespace hamq::raft
