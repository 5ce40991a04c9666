// WalLogStorage: one Raft group's durable log, as raft::LogStorage reads it, kept in the node's
// write-ahead log (storage::Wal). The adapter between the two modules' types.
//
// A snapshot is stored as one record whose payload is the group's configuration followed by the
// state machine's data (the storage engine knows nothing of configurations); Raft sees the data
// alone. The Wal outlives the adapter; reads see what the Wal made durable, except for a group
// being founded (found()): until its first snapshot is durable, the adapter reads as if it were.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "raft/storage.h"
#include "storage/wal.h"

namespace hamq::replication {

class WalLogStorage final : public raft::LogStorage {
 public:
  WalLogStorage(storage::Wal& wal, raft::GroupId group, uint64_t incarnation)
      : wal_(wal), group_(group), incarnation_(incarnation) {}

  raft::InitialState initial_state() const override;
  raft::LogIndex first_index() const override;
  raft::LogIndex last_index() const override;
  Result<raft::Term, raft::StorageError> term(raft::LogIndex index) const override;
  Result<void, raft::StorageError> entries(raft::LogIndex lo, raft::LogIndex hi, uint64_t max_bytes,
                                           std::vector<raft::Entry>& out) const override;
  raft::SnapshotMeta snapshot_meta() const override;
  uint64_t snapshot_size_bytes() const override;
  Result<std::string, raft::StorageError> snapshot_chunk(const raft::SnapshotMeta& snapshot,
                                                         uint64_t offset,
                                                         uint64_t max_bytes) const override;

  storage::GroupId storage_group() const { return storage::GroupId{group_.value}; }

  // The group is new: its founding snapshot (`meta`, `payload` as the Wal keeps it) and hard
  // state are submitted to the Wal, not yet durable. Until they are, reads answer as if they
  // were: the group can run meanwhile, since nothing it writes later is durable before them (the
  // Wal writes in submission order).
  void found(const raft::SnapshotMeta& meta, std::string payload);

  // What a member that lags is sent instead of the state machine's data as stored: a snapshot may
  // refer to entries this node's log keeps (a large queue's messages), which the member does not
  // have; the expander makes it self-contained, or answers nothing when it cannot now (the send
  // is tried again later). Made when a send starts and dropped once its last chunk went.
  using Expander = std::function<std::optional<std::string>(std::string_view data)>;
  void set_expander(Expander expander) { expander_ = std::move(expander); }

 private:
  // The stored snapshot payload split into its configuration and the state machine's data.
  struct StoredSnapshot {
    raft::SnapshotMeta meta;
    std::string data;
  };
  std::optional<StoredSnapshot> stored_snapshot() const;
  // The founding snapshot while it is not yet durable (cleared once it is).
  bool founding() const;
  mutable std::optional<StoredSnapshot> founding_;
  // The current snapshot's place and configuration, and the size and (while a send is under way)
  // the bytes of what is sent of it: reading a stored snapshot reads its whole record, tens of
  // megabytes for a large queue.
  struct Current {
    storage::SnapshotMeta key;
    raft::SnapshotMeta meta;
    std::optional<uint64_t> size;
    std::optional<std::string> data;
  };
  // The current snapshot (nullptr when there is none); with `with_data`, its bytes to send too.
  const Current* current(bool with_data) const;
  mutable std::optional<Current> current_;
  Expander expander_;

  storage::Wal& wal_;
  raft::GroupId group_;
  uint64_t incarnation_;
};

// The snapshot payload the Wal keeps: configuration, then state-machine data.
std::string encode_snapshot_payload(const raft::ConfState& conf, std::string_view data);
bool decode_snapshot_payload(std::string_view payload, raft::ConfState& conf, std::string& data);

storage::HardState to_storage(const raft::HardState& state);
raft::HardState from_storage(const storage::HardState& state);

}  // namespace hamq::replication
