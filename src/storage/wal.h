// Wal: the node-wide write-ahead log that stores the Raft logs of every group hosted on the node
// (DESIGN.md §2, docs/formats/wal.md).
//
// All groups share one sequence of segment files. Callers submit entries, hard states, snapshots
// and group removals for any group without blocking on I/O; flush() writes everything pending as
// one batch with one append and one fdatasync, then reports per group what became durable. A
// thousand busy groups therefore cost the fsyncs of one. The records stay where they were
// written: no second copy into per-group files. Memory holds a small index per entry (term and
// file position, 24 bytes), never payloads: reads go to the files and check checksums. A full
// segment is sealed with an index of its records, so that a restart reads the indexes of sealed
// segments and scans only the last one.
//
// Durability contract: a record is durable when the flush() that wrote it returned it in its
// FlushResult; never before. Reads (term, entries, hard_state, snapshot) see durable state only.
// Records of one group become durable in the order they were submitted.
//
// Failure contract:
// - ENOSPC while writing: flush() returns no_space, the file is cut back to where the batch began,
//   and the batch stays pending for the next flush(). Nothing durable is touched.
// - Any other write error, or a failed fdatasync: the log stops for good (log_failed from every
//   later submit and flush). It never retries an fsync, since the kernel may have dropped the
//   dirty pages it failed to write. Durable state stays readable; restart recovers.
// - A record that fails its checksum on read, or was found damaged in synced data at recovery,
//   fails its group (group_failed) rather than serve wrong data; other groups carry on.
//
// Space: segments are deleted oldest first once nothing live is in them. Entries covered by a
// snapshot, superseded by a truncation or belonging to a removed group are dead; the latest hard
// state and snapshot of each group are live, and are copied forward to the head of the log when
// they alone keep an old segment (so one group that never writes does not pin the disk). A group
// whose live entries keep the oldest segment is named by groups_pinning_oldest_segment(): the
// runtime asks it to snapshot.
//
// Threads: submit and read from any thread. flush() from one thread at a time (it serialises
// itself); the write and fdatasync of a flush run without holding the lock submitters and readers
// take (reading a snapshot to copy it forward, bounded by carry_forward_bytes_max, holds it).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "storage/file_system.h"
#include "storage/types.h"
#include "storage/wal_format.h"

namespace hamq::storage {

struct IndexRow;

struct WalOptions {
  // A new segment starts once the active one has reached this size. At most 1 GiB (file offsets
  // in the entry index are 32-bit).
  uint64_t segment_size_bytes_target = 64ull << 20;
  // Submits fail with busy while this many bytes wait for a flush (a batch's size bound).
  uint64_t pending_bytes_max = 8ull << 20;
  // At most this many bytes of hard states and snapshots are copied forward per flush.
  uint64_t carry_forward_bytes_max = 8ull << 20;
  // Finding which segments may go walks every group: with tens of thousands of groups it is done
  // at most this often (0: after every flush that may have freed one), and whenever a segment
  // rolls. A flush of nothing (GroupCommitWriter::notify) lets an idle log catch up.
  uint64_t reclaim_scan_interval_ms = 0;
};

// What one flush made durable for one group.
struct GroupProgress {
  GroupId group;
  // Set when entries were appended: the group's last index, now durable up to here.
  std::optional<LogIndex> entries_durable_to;
  bool hard_state_durable = false;
  std::optional<SnapshotMeta> snapshot_durable;
  bool removed = false;
};

struct FlushResult {
  uint64_t batch_sequence = 0;  // 0: nothing was pending
  uint64_t bytes_written = 0;
  std::vector<GroupProgress> progress;  // one per group with records in the batch
};

// What open() found and did.
struct RecoveryReport {
  uint64_t segments = 0;
  uint64_t batches = 0;
  uint64_t records = 0;
  uint64_t bytes_read = 0;
  uint64_t sealed_segments = 0;  // read through their index, without reading their records
  uint64_t torn_bytes_cut = 0;   // the unsynced tail cut at the last whole batch
  uint64_t segments_deleted = 0;
  struct FailedGroup {
    GroupId group;
    std::string reason;
  };
  std::vector<FailedGroup> failed_groups;
};

struct SpaceStats {
  uint64_t segment_count = 0;
  uint64_t first_segment = 0;
  uint64_t active_segment = 0;
  uint64_t disk_bytes = 0;
  uint64_t segments_deleted = 0;       // since open
  uint64_t carried_forward_bytes = 0;  // since open
};

class Wal {
 public:
  // Opens (creating when empty) the log in `dir`, recovering what is there: cuts a torn tail,
  // fails groups whose synced records are damaged, and refuses to open (corrupt) when damage
  // cannot be attributed to groups (a missing segment, a damaged record header in synced data).
  // `fs` must outlive the Wal.
  static Result<std::unique_ptr<Wal>, Error> open(FileSystem& fs, std::string dir,
                                                  WalOptions options = {},
                                                  RecoveryReport* report = nullptr);
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // --- Submitting (any thread). Each is a programmer error if it breaks the log's shape: entries
  // must be contiguous, start at most one past the group's last submitted index (a lower start
  // replaces the suffix from there: a conflicting suffix), and lie above its snapshot.
  Result<void, Error> append(GroupId group, std::span<const EntryInput> entries);
  Result<void, Error> save_hard_state(GroupId group, const HardState& state);
  // compact_retaining keeps the entries from `retain_from` (at least 1) up to the snapshot's
  // index readable through entries(); a retain_from past the index retains nothing.
  Result<void, Error> save_snapshot(GroupId group, const SnapshotMeta& meta, SnapshotMode mode,
                                    std::string_view data, LogIndex retain_from = {});
  // Drops the group and everything it stored (its queue was deleted, or its data was damaged and
  // is to be rebuilt from peers). Records submitted after it start the group anew, in the same
  // batch or later: a damaged group takes them again. `then`: a hard state the group starts
  // anew with, in the same batch (never refused as busy).
  Result<void, Error> remove_group(GroupId group, std::optional<HardState> then = std::nullopt);

  // --- Writing (one thread at a time).
  // Writes everything pending as one batch, one append and one fdatasync.
  Result<FlushResult, Error> flush();
  bool has_pending() const;
  // A flush, even of nothing, would now look for segments to release (see
  // WalOptions::reclaim_scan_interval_ms).
  bool reclaim_due() const;
  uint64_t pending_bytes() const;
  bool failed() const { return failed_.load(std::memory_order_acquire); }

  // --- Reading durable state (any thread). A group never written reads as empty.
  std::vector<GroupId> groups() const;
  // The group is among groups() (without listing them all).
  bool holds(GroupId group) const;
  LogIndex first_index(GroupId group) const;  // snapshot index + 1 (the Raft log's first)
  LogIndex last_index(GroupId group) const;   // snapshot index when no entry follows it
  Result<Term, Error> term(GroupId group, LogIndex index) const;
  // Appends entries [lo, hi) to `out`, stopping before their payloads pass `bytes_max` (but
  // always at least one entry). Entries a retaining snapshot kept can be read too.
  Result<void, Error> entries(GroupId group, LogIndex lo, LogIndex hi, uint64_t bytes_max,
                              std::vector<Entry>& out) const;
  Result<HardState, Error> hard_state(GroupId group) const;
  // The latest durable hard state, of a failed group too (the term and vote its damaged member
  // had: a rebuild keeps them).
  HardState last_hard_state(GroupId group) const;
  Result<SnapshotMeta, Error> snapshot_meta(GroupId group) const;
  Result<std::string, Error> snapshot_data(GroupId group) const;
  // Empty unless the group's data was found damaged.
  std::optional<std::string> group_failure(GroupId group) const;

  // --- Space.
  SpaceStats space() const;
  std::vector<GroupId> groups_pinning_oldest_segment(size_t count_max) const;

 private:
  struct Location {
    uint32_t segment = 0;  // sequence (segment sequences stay below 2^32: verified)
    uint32_t offset = 0;
    uint32_t size_bytes = 0;  // header + body
  };
  struct EntrySlot {
    uint64_t term = 0;
    Location location;
  };
  struct Group;
  struct PendingRecord;
  struct Batch;
  struct Applied;
  class Recovery;

  Wal(FileSystem& fs, std::string dir, WalOptions options);
  std::unique_ptr<Batch> new_pending_batch() const;
  void reserve_locked(Batch& batch, uint64_t more_bytes) const;

  Result<void, Error> check_submit_locked(GroupId group) const;
  void submit_locked(Batch& batch, GroupId group, wal_format::RecordType type,
                     std::string_view body_fixed, std::string_view payload, PendingRecord record);
  Result<void, Error> write_batch(Batch& batch, uint64_t& segment, uint64_t& offset);
  Result<void, Error> roll_segment();
  // Appends `bytes` to `file` (at `size_before`) and fdatasyncs it, with the failure rules.
  Result<void, Error> append_durably(File& file, std::string_view bytes, uint64_t size_before);
  Result<void, Error> seal_active();
  // A record as its segment's index lists it, and back.
  static IndexRow index_row(const Applied& applied);
  static PendingRecord pending_record_of(const IndexRow& row);
  // Applies a durable record to the in-memory state; reports it in `result` (null in recovery).
  void apply_locked(const Applied& record, FlushResult* result);
  void fail_group_locked(GroupId group, std::string reason) const;
  void fail_log(const Error& error);
  void reclaim();
  Result<std::string, Error> read_record(GroupId group, Location location,
                                         wal_format::RecordType type) const;
  std::shared_ptr<File> segment_file_locked(uint64_t segment) const;
  uint64_t oldest_needed_segment_locked() const;

  FileSystem& fs_;
  const std::string dir_;
  const WalOptions options_;

  std::mutex flush_mutex_;    // one flush at a time
  mutable std::mutex mutex_;  // everything below
  std::atomic<bool> failed_{false};
  Error failure_;

  std::unordered_map<uint64_t, std::unique_ptr<Group>> groups_;
  std::unique_ptr<Batch> pending_;
  std::unique_ptr<Batch> internal_;  // copies carried forward and release records
  std::unique_ptr<Batch> retry_;     // a batch refused with ENOSPC, written before anything else
  std::unique_ptr<Batch> spare_;     // the last batch written, emptied, for its buffer

  std::vector<std::pair<uint64_t, std::shared_ptr<File>>> segments_;  // ascending sequence
  std::shared_ptr<File> active_;  // the last segment; written by the flushing thread only
  uint64_t active_sequence_ = 0;
  // The active segment's records, for its index when it is sealed; its first batch (0: none yet);
  // whether it is sealed (then the next batch goes to a new segment).
  std::vector<IndexRow> active_rows_;
  uint64_t active_first_batch_ = 0;
  bool active_sealed_ = false;
  uint64_t next_batch_sequence_ = 1;
  uint64_t released_below_ = 1;   // durable: segments below are free
  uint64_t release_pending_ = 0;  // a release record is waiting to be written
  bool reclaim_wanted_ = false;
  bool segment_rolled_ = false;  // since the last scan of the groups in reclaim()
  std::chrono::steady_clock::time_point next_reclaim_scan_{};
  std::vector<uint64_t> removed_in_batch_;
  uint64_t segments_deleted_ = 0;
  uint64_t carried_forward_bytes_ = 0;
};

}  // namespace hamq::storage
