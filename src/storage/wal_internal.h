// Wal's private parts shared by wal.cc (writing, reading, reclaiming) and wal_recovery.cc
// (open). Not for use outside the Wal.
#pragma once

#include <algorithm>
#include <limits>
#include <string>

#include "storage/record.h"
#include "storage/wal.h"

namespace hamq::storage {

namespace wf = wal_format;

struct Wal::Group {
  // Durable state.
  HardState hard_state;
  std::optional<Location> hard_state_at;
  SnapshotMeta snapshot;
  std::optional<Location> snapshot_at;
  // Set by a compact_retaining snapshot: entries from here up to the snapshot's index stay
  // (readable, not in the Raft log); 0: none.
  LogIndex retain_from;
  LogIndex first_entry;  // the index of entries.front(): retained entries come first
  std::deque<EntrySlot> entries;
  std::optional<std::string> failure;
  // What the submitted records will make of the log: checks the next submit.
  LogIndex submitted_last;
  LogIndex submitted_snapshot;
  bool carry_in_flight = false;
  // Where this group's GroupProgress is in the result of the batch being applied.
  uint64_t progress_batch = 0;
  size_t progress_index = 0;

  LogIndex last_index() const {
    return entries.empty() ? snapshot.index
                           : std::max(snapshot.index, first_entry + (entries.size() - 1));
  }
  uint64_t oldest_segment() const {
    uint64_t oldest = std::numeric_limits<uint64_t>::max();
    if (!entries.empty()) oldest = std::min<uint64_t>(oldest, entries.front().location.segment);
    if (hard_state_at) oldest = std::min<uint64_t>(oldest, hard_state_at->segment);
    if (snapshot_at) oldest = std::min<uint64_t>(oldest, snapshot_at->segment);
    return oldest;
  }
  bool durable_blank() const {
    return entries.empty() && !hard_state_at && !snapshot_at && !failure;
  }
  void reset_durable() {
    hard_state = {};
    hard_state_at.reset();
    snapshot = {};
    snapshot_at.reset();
    retain_from = {};
    first_entry = {};
    entries.clear();
    failure.reset();
    carry_in_flight = false;
  }
};

// A record in a batch, with what applying it needs (so that apply never decodes bytes again).
struct Wal::PendingRecord {
  GroupId group;
  wf::RecordType type = wf::RecordType::entry;
  uint64_t offset = 0;  // of its header, from the start of the batch (header included)
  uint32_t size_bytes = 0;
  LogIndex index;
  Term term;
  HardState hard_state;
  SnapshotMode mode = SnapshotMode::replace_log;
  LogIndex retain_from;  // compact_retaining snapshots
  uint64_t release_first = 0;
  bool internal = false;  // written by the engine itself (carried forward, release): not reported
};

struct Wal::Batch {
  std::string bytes = std::string(wf::batch_header_bytes, '\0');
  std::vector<PendingRecord> records;
  bool empty() const { return records.empty(); }
  uint64_t body_bytes() const { return bytes.size() - wf::batch_header_bytes; }
};

struct Wal::Applied {
  const PendingRecord& record;
  Location location;
};

inline Unexpected<Error> error(Errc code, std::string detail) {
  return unexpected(Error{code, std::move(detail)});
}

inline constexpr uint64_t segment_size_bytes_limit = 1ull << 30;
// Room past pending_bytes_max in a pending batch's buffer: the last submit may overshoot it.
inline constexpr uint64_t pending_slack_bytes = 1ull << 20;
inline constexpr uint64_t entry_record_overhead_bytes =
    wf::record_header_bytes + wf::entry_body_fixed_bytes;

}  // namespace hamq::storage
