// LogStorage: the durable log of one group as the Raft core reads it.
//
// The core never writes: it hands entries, hard state and snapshots to the runtime in a Ready,
// and the runtime makes them durable in its storage (which then answers these reads) before
// calling RawNode::advance. Reads see only what the runtime has written.
//
// Errors: `compacted` and `unavailable` are ordinary answers (the index lies below the snapshot or
// beyond the end). `io` means the storage cannot be trusted: the core stops the group for good
// rather than continue on state it does not know.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "raft/types.h"

namespace hamq::raft {

enum class StorageError { compacted, unavailable, io };

struct InitialState {
  HardState hard_state{};
  // The latest snapshot's place and configuration. A new group is bootstrapped with a snapshot
  // at index 1 that holds the first configuration; a node that joins later starts blank (index 0,
  // no members) and receives the leader's snapshot.
  SnapshotMeta snapshot{};
  // Chosen when the disk is first initialised; a node that lost its disk gets a larger one.
  uint64_t incarnation = 0;
};

class LogStorage {
 public:
  virtual ~LogStorage() = default;

  virtual InitialState initial_state() const = 0;
  // snapshot index + 1.
  virtual LogIndex first_index() const = 0;
  // The last entry's index, or the snapshot's index when there is no entry after it.
  virtual LogIndex last_index() const = 0;
  // The term of the entry at `index`; the snapshot's term at its own index.
  virtual Result<Term, StorageError> term(LogIndex index) const = 0;
  // Appends entries [lo, hi) to `out`, stopping before the total passes `max_bytes` (but always
  // at least one entry).
  virtual Result<void, StorageError> entries(LogIndex lo, LogIndex hi, uint64_t max_bytes,
                                             std::vector<Entry>& out) const = 0;
  virtual SnapshotMeta snapshot_meta() const = 0;
  virtual uint64_t snapshot_size_bytes() const = 0;
  // Up to `max_bytes` of the data of the snapshot at `snapshot` from `offset`; `compacted` when
  // that snapshot has been replaced by a newer one (the sender starts over with the newer one).
  virtual Result<std::string, StorageError> snapshot_chunk(const SnapshotMeta& snapshot,
                                                           uint64_t offset,
                                                           uint64_t max_bytes) const = 0;
};

}  // namespace hamq::raft
