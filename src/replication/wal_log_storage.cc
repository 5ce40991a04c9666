#include "replication/wal_log_storage.h"

#include <cstring>

namespace hamq::replication {

namespace {

void put_u64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}

bool get_u64(std::string_view& in, uint64_t& value) {
  if (in.size() < 8) return false;
  value = 0;
  for (int i = 0; i < 8; ++i) value |= uint64_t{static_cast<uint8_t>(in[i])} << (8 * i);
  in.remove_prefix(8);
  return true;
}

raft::StorageError to_raft(const storage::Error& error) {
  switch (error.code) {
    case storage::Errc::compacted:
      return raft::StorageError::compacted;
    case storage::Errc::unavailable:
      return raft::StorageError::unavailable;
    default:
      return raft::StorageError::io;
  }
}

}  // namespace

std::string encode_snapshot_payload(const raft::ConfState& conf, std::string_view data) {
  std::string out;
  put_u64(out, conf.voters.size());
  for (raft::NodeId voter : conf.voters) put_u64(out, voter.value);
  put_u64(out, conf.learners.size());
  for (raft::NodeId learner : conf.learners) put_u64(out, learner.value);
  out.append(data);
  return out;
}

bool decode_snapshot_payload(std::string_view payload, raft::ConfState& conf, std::string& data) {
  conf = {};
  for (auto* members : {&conf.voters, &conf.learners}) {
    uint64_t count = 0;
    if (!get_u64(payload, count) || count > payload.size() / 8) return false;
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t id = 0;
      get_u64(payload, id);
      members->push_back(raft::NodeId{id});
    }
  }
  data.assign(payload);
  return true;
}

storage::HardState to_storage(const raft::HardState& state) {
  return storage::HardState{.term = storage::Term{state.term.value},
                            .vote = state.vote.value,
                            .commit = storage::LogIndex{state.commit.value}};
}

raft::HardState from_storage(const storage::HardState& state) {
  return raft::HardState{.term = raft::Term{state.term.value},
                         .vote = raft::NodeId{state.vote},
                         .commit = raft::LogIndex{state.commit.value}};
}

void WalLogStorage::found(const raft::SnapshotMeta& meta, std::string payload) {
  StoredSnapshot snapshot;
  snapshot.meta = meta;
  if (!decode_snapshot_payload(payload, snapshot.meta.conf, snapshot.data)) return;
  founding_ = std::move(snapshot);
}

bool WalLogStorage::founding() const {
  if (!founding_) return false;
  auto meta = wal_.snapshot_meta(storage_group());
  if (meta.ok() && meta->index.value != 0) {
    founding_.reset();  // durable now: the Wal answers
    return false;
  }
  return true;
}

std::optional<WalLogStorage::StoredSnapshot> WalLogStorage::stored_snapshot() const {
  if (founding()) return founding_;
  auto meta = wal_.snapshot_meta(storage_group());
  if (!meta.ok() || meta->index.value == 0) return std::nullopt;
  auto payload = wal_.snapshot_data(storage_group());
  if (!payload.ok()) return std::nullopt;
  StoredSnapshot snapshot;
  snapshot.meta.index = raft::LogIndex{meta->index.value};
  snapshot.meta.term = raft::Term{meta->term.value};
  if (!decode_snapshot_payload(*payload, snapshot.meta.conf, snapshot.data)) return std::nullopt;
  return snapshot;
}

raft::InitialState WalLogStorage::initial_state() const {
  raft::InitialState initial;
  if (founding()) {
    initial.hard_state = raft::HardState{
        .term = founding_->meta.term, .vote = raft::no_node, .commit = founding_->meta.index};
  } else if (auto state = wal_.hard_state(storage_group()); state.ok()) {
    initial.hard_state = from_storage(*state);
  }
  initial.snapshot = snapshot_meta();
  initial.incarnation = incarnation_;
  return initial;
}

raft::LogIndex WalLogStorage::first_index() const {
  if (founding()) return raft::LogIndex{founding_->meta.index.value + 1};
  return raft::LogIndex{wal_.first_index(storage_group()).value};
}

raft::LogIndex WalLogStorage::last_index() const {
  if (founding()) return founding_->meta.index;
  return raft::LogIndex{wal_.last_index(storage_group()).value};
}

Result<raft::Term, raft::StorageError> WalLogStorage::term(raft::LogIndex index) const {
  if (founding()) {
    if (index == founding_->meta.index) return founding_->meta.term;
    return unexpected(index < founding_->meta.index ? raft::StorageError::compacted
                                                    : raft::StorageError::unavailable);
  }
  auto found = wal_.term(storage_group(), storage::LogIndex{index.value});
  if (!found.ok()) return unexpected(to_raft(found.error()));
  return raft::Term{found->value};
}

Result<void, raft::StorageError> WalLogStorage::entries(raft::LogIndex lo, raft::LogIndex hi,
                                                        uint64_t max_bytes,
                                                        std::vector<raft::Entry>& out) const {
  // Entries a retaining snapshot keeps in the Wal are not the Raft log's.
  if (lo < first_index()) return unexpected(raft::StorageError::compacted);
  std::vector<storage::Entry> stored;
  auto read = wal_.entries(storage_group(), storage::LogIndex{lo.value},
                           storage::LogIndex{hi.value}, max_bytes, stored);
  if (!read.ok()) return unexpected(to_raft(read.error()));
  for (storage::Entry& entry : stored) {
    out.push_back(raft::Entry{.term = raft::Term{entry.term.value},
                              .index = raft::LogIndex{entry.index.value},
                              .type = static_cast<raft::EntryType>(entry.kind),
                              .data = std::move(entry.payload)});
  }
  return Ok{};
}

const WalLogStorage::Current* WalLogStorage::current(bool with_data) const {
  auto key = wal_.snapshot_meta(storage_group());
  if (!key.ok() || key->index.value == 0) return nullptr;
  if (current_ && current_->key == *key && (!with_data || current_->data)) return &*current_;
  auto stored = stored_snapshot();
  if (!stored) return nullptr;
  Current fresh{.key = *key, .meta = stored->meta, .size = std::nullopt, .data = std::nullopt};
  if (!expander_) {
    fresh.size = stored->data.size();
    if (with_data) fresh.data = std::move(stored->data);
  } else if (with_data) {
    // Not made now (a body could not be read): the chunk is asked for again later.
    if (auto expanded = expander_(stored->data)) {
      fresh.data = std::move(*expanded);
      fresh.size = fresh.data->size();
    }
  }
  current_ = std::move(fresh);
  return &*current_;
}

raft::SnapshotMeta WalLogStorage::snapshot_meta() const {
  if (founding()) return founding_->meta;
  const Current* snapshot = current(false);
  return snapshot ? snapshot->meta : raft::SnapshotMeta{};
}

uint64_t WalLogStorage::snapshot_size_bytes() const {
  if (founding()) return founding_->data.size();
  const Current* snapshot = current(false);
  if (snapshot != nullptr && !snapshot->size) snapshot = current(true);
  return snapshot != nullptr && snapshot->size ? *snapshot->size : 0;
}

Result<std::string, raft::StorageError> WalLogStorage::snapshot_chunk(
    const raft::SnapshotMeta& snapshot, uint64_t offset, uint64_t max_bytes) const {
  if (founding()) {
    if (!(founding_->meta == snapshot)) return unexpected(raft::StorageError::compacted);
    if (offset > founding_->data.size()) return unexpected(raft::StorageError::unavailable);
    return founding_->data.substr(offset, max_bytes);
  }
  const Current* stored = current(true);
  if (stored == nullptr || !(stored->meta == snapshot)) {
    return unexpected(raft::StorageError::compacted);
  }
  if (!stored->data || offset > stored->data->size()) {
    return unexpected(raft::StorageError::unavailable);
  }
  std::string chunk = stored->data->substr(offset, max_bytes);
  // The last chunk went: the bytes are made again if the member asks again.
  if (offset + chunk.size() >= stored->data->size()) current_->data.reset();
  return chunk;
}

}  // namespace hamq::replication
