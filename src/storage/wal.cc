#include "storage/wal.h"

#include <algorithm>
#include <limits>

#include "storage/record.h"
#include "storage/wal_internal.h"

namespace hamq::storage {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::compacted:
      return "compacted";
    case Errc::unavailable:
      return "unavailable";
    case Errc::busy:
      return "busy";
    case Errc::no_space:
      return "no_space";
    case Errc::io:
      return "io";
    case Errc::corrupt:
      return "corrupt";
    case Errc::group_failed:
      return "group_failed";
    case Errc::log_failed:
      return "log_failed";
    case Errc::too_large:
      return "too_large";
    case Errc::invalid_format:
      return "invalid_format";
    case Errc::not_found:
      return "not_found";
  }
  return "unknown";
}

Wal::Wal(FileSystem& fs, std::string dir, WalOptions options)
    : fs_(fs),
      dir_(std::move(dir)),
      options_(options),
      pending_(new_pending_batch()),
      internal_(std::make_unique<Batch>()) {}

std::unique_ptr<Wal::Batch> Wal::new_pending_batch() const {
  return std::make_unique<Batch>();
}

// A batch's buffer grows by doubling up to the pending limit and no further (doubling past it
// would hold up to twice the limit); it is then reused batch after batch (spare_).
void Wal::reserve_locked(Batch& batch, uint64_t more_bytes) const {
  uint64_t needed = batch.bytes.size() + more_bytes;
  if (needed <= batch.bytes.capacity()) return;
  uint64_t cap = wf::batch_header_bytes + options_.pending_bytes_max + pending_slack_bytes;
  batch.bytes.reserve(std::max(needed, std::min<uint64_t>(2 * batch.bytes.capacity(), cap)));
}

Wal::~Wal() = default;

// ---------------------------------------------------------------------------------------------
// Submitting

Result<void, Error> Wal::check_submit_locked(GroupId group) const {
  if (failed()) return error(Errc::log_failed, failure_.detail);
  HAMQ_VERIFY(group.value != 0, "group 0 is reserved for the engine's own records");
  auto found = groups_.find(group.value);
  if (found != groups_.end() && found->second->failure) {
    return error(Errc::group_failed, *found->second->failure);
  }
  return Ok{};
}

void Wal::submit_locked(Batch& batch, GroupId group, wf::RecordType type,
                        std::string_view body_fixed, std::string_view payload,
                        PendingRecord record) {
  record.group = group;
  record.type = type;
  reserve_locked(batch, wf::record_header_bytes + body_fixed.size() + payload.size());
  record.offset = batch.bytes.size();
  append_record(batch.bytes, type, group, body_fixed, payload);
  record.size_bytes = static_cast<uint32_t>(batch.bytes.size() - record.offset);
  batch.records.push_back(record);
}

Result<void, Error> Wal::append(GroupId group, std::span<const EntryInput> entries) {
  if (entries.empty()) return Ok{};
  uint64_t bytes = 0;
  for (const EntryInput& entry : entries) {
    if (entry.payload.size() + wf::entry_body_fixed_bytes > wf::record_body_bytes_max) {
      return error(Errc::too_large, "entry payload past record_body_bytes_max");
    }
    bytes += wf::record_header_bytes + wf::entry_body_fixed_bytes + entry.payload.size();
  }
  std::lock_guard lock(mutex_);
  if (auto checked = check_submit_locked(group); !checked) return checked;
  if (pending_->body_bytes() + bytes > options_.pending_bytes_max && !pending_->empty()) {
    return error(Errc::busy, "pending bytes at their limit");
  }
  HAMQ_VERIFY(pending_->body_bytes() + bytes <= wf::batch_body_bytes_max, "batch past its limit");
  auto& slot = groups_[group.value];
  if (!slot) slot = std::make_unique<Group>();
  Group& state = *slot;
  HAMQ_VERIFY(entries.front().index <= state.submitted_last + 1,
              "appended entries leave a gap after the last index");
  HAMQ_VERIFY(entries.front().index > state.submitted_snapshot,
              "appended entries at or below the snapshot");
  for (size_t i = 1; i < entries.size(); ++i) {
    HAMQ_VERIFY(entries[i].index == entries[i - 1].index + 1, "appended entries not contiguous");
  }
  char fixed[wf::entry_body_fixed_bytes];
  for (const EntryInput& entry : entries) {
    PendingRecord record;
    record.index = entry.index;
    record.term = entry.term;
    encode_entry_fixed(fixed, entry.index, entry.term, entry.kind);
    submit_locked(*pending_, group, wf::RecordType::entry, std::string_view(fixed, sizeof fixed),
                  entry.payload, record);
  }
  state.submitted_last = entries.back().index;
  return Ok{};
}

Result<void, Error> Wal::save_hard_state(GroupId group, const HardState& state) {
  std::lock_guard lock(mutex_);
  if (auto checked = check_submit_locked(group); !checked) return checked;
  if (pending_->body_bytes() > options_.pending_bytes_max) {
    return error(Errc::busy, "pending bytes at their limit");
  }
  auto& slot = groups_[group.value];
  if (!slot) slot = std::make_unique<Group>();
  PendingRecord record;
  record.hard_state = state;
  submit_locked(*pending_, group, wf::RecordType::hard_state, encode_hard_state(state), {}, record);
  return Ok{};
}

Result<void, Error> Wal::save_snapshot(GroupId group, const SnapshotMeta& meta, SnapshotMode mode,
                                       std::string_view data, LogIndex retain_from) {
  if (mode == SnapshotMode::compact_retaining && retain_from > meta.index) {
    mode = SnapshotMode::compact_prefix;  // nothing to retain
  }
  HAMQ_VERIFY(mode != SnapshotMode::compact_retaining || retain_from.value > 0,
              "a retaining snapshot retains from index 0");
  if (data.size() + wf::snapshot_body_fixed_bytes + wf::snapshot_retain_from_bytes >
      wf::record_body_bytes_max) {
    return error(Errc::too_large, "snapshot past record_body_bytes_max");
  }
  std::lock_guard lock(mutex_);
  if (auto checked = check_submit_locked(group); !checked) return checked;
  if (pending_->body_bytes() + data.size() > options_.pending_bytes_max && !pending_->empty()) {
    return error(Errc::busy, "pending bytes at their limit");
  }
  auto& slot = groups_[group.value];
  if (!slot) slot = std::make_unique<Group>();
  Group& state = *slot;
  HAMQ_VERIFY(meta.index >= state.submitted_snapshot, "a snapshot older than the group's last");
  PendingRecord record;
  record.index = meta.index;
  record.term = meta.term;
  record.mode = mode;
  record.retain_from = mode == SnapshotMode::compact_retaining ? retain_from : LogIndex{};
  submit_locked(*pending_, group, wf::RecordType::snapshot,
                encode_snapshot_fixed(meta, mode, record.retain_from), data, record);
  state.submitted_snapshot = meta.index;
  if (mode == SnapshotMode::replace_log || state.submitted_last < meta.index) {
    state.submitted_last = meta.index;
  }
  return Ok{};
}

Result<void, Error> Wal::remove_group(GroupId group, std::optional<HardState> then) {
  std::lock_guard lock(mutex_);
  if (failed()) return error(Errc::log_failed, failure_.detail);
  HAMQ_VERIFY(group.value != 0, "group 0 is reserved for the engine's own records");
  auto& slot = groups_[group.value];
  if (!slot) slot = std::make_unique<Group>();
  submit_locked(*pending_, group, wf::RecordType::group_removed, {}, {}, PendingRecord{});
  slot->submitted_last = {};
  slot->submitted_snapshot = {};
  // Its damage goes with what it held: it may be written anew after the removal (a damaged
  // member rebuilt from its peers). (A read before the removal is durable may find it again.)
  slot->failure.reset();
  if (then) {
    // In the same batch, whatever the pending bytes: the group is never found missing.
    PendingRecord record;
    record.hard_state = *then;
    submit_locked(*pending_, group, wf::RecordType::hard_state, encode_hard_state(*then), {},
                  record);
  }
  return Ok{};
}

bool Wal::reclaim_due() const {
  std::lock_guard lock(mutex_);
  if (!reclaim_wanted_ || failed() || segments_.size() < 2) return false;
  return options_.reclaim_scan_interval_ms == 0 || segment_rolled_ ||
         std::chrono::steady_clock::now() >= next_reclaim_scan_;
}

bool Wal::has_pending() const {
  std::lock_guard lock(mutex_);
  return !pending_->empty() || !internal_->empty() || retry_ != nullptr;
}

uint64_t Wal::pending_bytes() const {
  std::lock_guard lock(mutex_);
  return pending_->body_bytes() + (retry_ ? retry_->body_bytes() : 0);
}

// ---------------------------------------------------------------------------------------------
// Writing

void Wal::fail_log(const Error& cause) {
  std::lock_guard lock(mutex_);
  if (failed()) return;
  failure_ = Error{Errc::log_failed, "the log stopped writing after: " + cause.detail};
  failed_.store(true, std::memory_order_release);
}

Result<void, Error> Wal::append_durably(File& file, std::string_view bytes, uint64_t size_before) {
  if (auto written = file.append(bytes); !written) {
    // Cut what part got in, so that the next write starts where this one did. No space is an
    // ordinary failure (the caller retries later); anything else stops the log.
    auto cut = file.truncate(size_before);
    if (written.error().code != Errc::no_space || !cut) {
      fail_log(cut ? written.error() : cut.error());
    }
    return written;
  }
  if (auto synced = file.sync(); !synced) {
    fail_log(synced.error());  // never retried: the kernel may have dropped the pages
    return synced;
  }
  return Ok{};
}

Result<void, Error> Wal::seal_active() {
  uint64_t index_offset = active_->size();
  uint64_t index_sequence = next_batch_sequence_;
  std::string bytes;
  {
    std::lock_guard lock(mutex_);
    if (wf::segment_index_fixed_bytes + active_rows_.size() * wf::segment_index_row_bytes >
        wf::record_body_bytes_max) {
      return Ok{};  // too many records to index: recovery will scan this segment
    }
    uint64_t first = active_first_batch_ != 0 ? active_first_batch_ : index_sequence;
    bytes =
        encode_single_record_batch(index_sequence, active_sequence_, wf::RecordType::segment_index,
                                   encode_segment_index(first, active_rows_));
  }
  bytes += encode_single_record_batch(index_sequence + 1, active_sequence_,
                                      wf::RecordType::segment_seal, encode_seal(index_offset));
  HAMQ_VERIFY(index_offset + bytes.size() < (1ull << 32), "segment past 32-bit offsets");
  if (auto written = append_durably(*active_, bytes, index_offset); !written) return written;
  next_batch_sequence_ += 2;
  std::lock_guard lock(mutex_);
  active_sealed_ = true;
  return Ok{};
}

Result<void, Error> Wal::roll_segment() {
  if (active_ && !active_sealed_) {
    if (auto sealed = seal_active(); !sealed) return sealed;
  }
  uint64_t sequence = active_sequence_ + 1;
  HAMQ_VERIFY(sequence < (1ull << 32), "segment sequence past 32 bits");
  std::string path = dir_ + "/" + segment_file_name(sequence);
  auto opened = fs_.open(path, OpenMode::create_new);
  if (!opened) {
    if (opened.error().code != Errc::no_space) fail_log(opened.error());
    return unexpected(opened.error());
  }
  std::shared_ptr<File> file = std::move(opened.value());
  if (auto written = file->append(encode_segment_header(sequence)); !written) {
    // A segment without its header is never used: remove it and try again later.
    file.reset();
    (void)fs_.remove(path);
    if (written.error().code != Errc::no_space) fail_log(written.error());
    return written;
  }
  if (auto synced = file->sync(); !synced) {
    fail_log(synced.error());
    return synced;
  }
  if (auto synced = fs_.sync_dir(dir_); !synced) {
    fail_log(synced.error());
    return synced;
  }
  std::lock_guard lock(mutex_);
  segments_.emplace_back(sequence, file);
  active_ = std::move(file);
  active_sequence_ = sequence;
  active_rows_.clear();
  active_first_batch_ = 0;
  active_sealed_ = false;
  reclaim_wanted_ = true;
  segment_rolled_ = true;
  return Ok{};
}

Result<void, Error> Wal::write_batch(Batch& batch, uint64_t& segment, uint64_t& offset) {
  if (!active_ || active_sealed_ || active_->size() >= options_.segment_size_bytes_target) {
    if (auto rolled = roll_segment(); !rolled) return rolled;
  }
  if (active_first_batch_ == 0) active_first_batch_ = next_batch_sequence_;
  encode_batch_header(batch.bytes.data(), next_batch_sequence_,
                      static_cast<uint32_t>(batch.body_bytes()),
                      static_cast<uint32_t>(batch.records.size()), active_sequence_);
  uint64_t size_before = active_->size();
  HAMQ_VERIFY(size_before + batch.bytes.size() < (1ull << 32), "segment past 32-bit offsets");
  if (auto written = append_durably(*active_, batch.bytes, size_before); !written) return written;
  segment = active_sequence_;
  offset = size_before;
  ++next_batch_sequence_;
  return Ok{};
}

Result<FlushResult, Error> Wal::flush() {
  std::lock_guard flushing(flush_mutex_);
  if (failed()) return error(Errc::log_failed, failure_.detail);
  std::unique_ptr<Batch> batch;
  bool retrying = false;
  {
    std::lock_guard lock(mutex_);
    if (retry_) {
      batch = std::move(retry_);
      retrying = true;
    } else if (!internal_->empty()) {
      // Copies carried forward go first: they hold durable values, which records submitted
      // since (already in pending_) must be able to override.
      batch = std::exchange(internal_, std::make_unique<Batch>());
      uint64_t shift = batch->body_bytes();
      batch->bytes.append(pending_->bytes, wf::batch_header_bytes);
      for (PendingRecord record : pending_->records) {
        record.offset += shift;
        batch->records.push_back(record);
      }
      pending_ = spare_ ? std::move(spare_) : new_pending_batch();
    } else {
      batch = std::exchange(pending_, spare_ ? std::move(spare_) : new_pending_batch());
    }
  }
  FlushResult result;
  if (batch->empty()) {
    reclaim();
    return result;
  }
  uint64_t segment = 0;
  uint64_t offset = 0;
  if (auto written = write_batch(*batch, segment, offset); !written) {
    if (written.error().code == Errc::no_space && !failed()) {
      std::lock_guard lock(mutex_);
      retry_ = std::move(batch);
    }
    return unexpected(written.error());
  }
  result.batch_sequence = next_batch_sequence_ - 1;
  result.bytes_written = batch->bytes.size();
  {
    std::lock_guard lock(mutex_);
    if (retrying && !internal_->empty()) {
      // Carried copies were made before the retried batch's records became durable and could
      // undo them: drop them, the next reclaim makes new ones.
      internal_ = std::make_unique<Batch>();
      for (auto& [id, group] : groups_) group->carry_in_flight = false;
      release_pending_ = 0;
      reclaim_wanted_ = true;
    }
    for (const PendingRecord& record : batch->records) {
      Location location{static_cast<uint32_t>(segment),
                        static_cast<uint32_t>(offset + record.offset), record.size_bytes};
      apply_locked(Applied{record, location}, &result);
    }
    // Removed groups are forgotten after the batch, so that each group has one progress entry.
    for (uint64_t id : removed_in_batch_) {
      auto found = groups_.find(id);
      if (found != groups_.end() && found->second->durable_blank() &&
          found->second->submitted_last.value == 0 &&
          found->second->submitted_snapshot.value == 0) {
        groups_.erase(found);
      }
    }
    removed_in_batch_.clear();
    // Keep the buffer for the next batch: a batch grown to its size need not grow again.
    if (batch->bytes.capacity() <=
        wf::batch_header_bytes + options_.pending_bytes_max + pending_slack_bytes) {
      batch->bytes.resize(wf::batch_header_bytes);
      batch->records.clear();
      spare_ = std::move(batch);
    }
  }
  reclaim();
  return result;
}

void Wal::apply_locked(const Applied& applied, FlushResult* result) {
  const PendingRecord& record = applied.record;
  if (applied.location.segment == active_sequence_) active_rows_.push_back(index_row(applied));
  if (record.type == wf::RecordType::release) {
    released_below_ = std::max(released_below_, record.release_first);
    if (release_pending_ <= record.release_first) release_pending_ = 0;
    reclaim_wanted_ = true;
    return;
  }
  auto& slot = groups_[record.group.value];
  if (!slot) slot = std::make_unique<Group>();
  Group& group = *slot;
  GroupProgress* report = nullptr;
  if (result != nullptr && !record.internal) {
    // The group's entry in this batch's progress, found by a stamp rather than a map lookup: a
    // batch of a thousand groups would otherwise cost a thousand map nodes.
    if (group.progress_batch != result->batch_sequence) {
      group.progress_batch = result->batch_sequence;
      group.progress_index = result->progress.size();
      GroupProgress fresh;
      fresh.group = record.group;
      result->progress.push_back(fresh);
    }
    report = &result->progress[group.progress_index];
  }
  if (record.type == wf::RecordType::group_removed) {
    group.reset_durable();
    if (report != nullptr) {
      report->removed = true;
      report->entries_durable_to.reset();
      report->hard_state_durable = false;
      report->snapshot_durable.reset();
    }
    if (result != nullptr) {
      removed_in_batch_.push_back(record.group.value);
    } else if (group.submitted_last.value == 0 && group.submitted_snapshot.value == 0) {
      groups_.erase(record.group.value);
    }
    reclaim_wanted_ = true;
    return;
  }
  // A failed group's later records are not served either; its hard states are still followed
  // (the term and vote it had, which a rebuild from its peers keeps: last_hard_state).
  if (group.failure && record.type != wf::RecordType::hard_state) return;
  switch (record.type) {
    case wf::RecordType::entry: {
      LogIndex index = record.index;
      if (index <= group.snapshot.index) break;  // replaying history a snapshot later covered
      EntrySlot entry{record.term.value, applied.location};
      LogIndex last = group.last_index();
      if (!group.entries.empty() && index >= group.first_entry && index <= last) {
        group.entries.resize(index.value - group.first_entry.value);  // a conflicting suffix
        group.entries.push_back(entry);
      } else if (index == last + 1) {
        if (group.entries.empty()) group.first_entry = index;
        group.entries.push_back(entry);
      } else {
        // Only in recovery: the entries before this one were in segments since deleted, and a
        // later snapshot covers them (checked when recovery ends).
        group.entries.clear();
        group.first_entry = index;
        group.entries.push_back(entry);
      }
      if (report != nullptr) report->entries_durable_to = group.last_index();
      break;
    }
    case wf::RecordType::hard_state:
      group.hard_state = record.hard_state;
      group.hard_state_at = applied.location;
      if (record.internal) {
        group.carry_in_flight = false;
        // A copy carried forward no longer keeps its old segment: it may be released now (an
        // idle node would otherwise wait for its next snapshot or segment to get there).
        reclaim_wanted_ = true;
      }
      if (report != nullptr) report->hard_state_durable = true;
      break;
    case wf::RecordType::snapshot: {
      SnapshotMeta meta{record.index, record.term};
      bool retaining = record.mode == SnapshotMode::compact_retaining;
      if (record.mode == SnapshotMode::replace_log) {
        group.entries.clear();
      } else {
        // Entries below what the snapshot keeps go. In recovery the entries may start above
        // that (those between were in deleted segments, and a later snapshot covers them):
        // they all stay.
        LogIndex keep_from = retaining ? record.retain_from : meta.index + 1;
        while (!group.entries.empty() && group.first_entry < keep_from) {
          group.entries.pop_front();
          group.first_entry = group.first_entry + 1;
        }
      }
      if (group.entries.empty()) group.first_entry = meta.index + 1;
      group.retain_from = retaining ? record.retain_from : LogIndex{};
      group.snapshot = meta;
      group.snapshot_at = applied.location;
      if (record.internal) group.carry_in_flight = false;
      if (report != nullptr) {
        report->snapshot_durable = meta;
        // Entries appended earlier in the batch are durable all the same; the log now ends here.
        if (report->entries_durable_to) report->entries_durable_to = group.last_index();
      }
      reclaim_wanted_ = true;
      break;
    }
    case wf::RecordType::group_removed:
    case wf::RecordType::release:
    case wf::RecordType::segment_index:
    case wf::RecordType::segment_seal:
      break;
  }
}

IndexRow Wal::index_row(const Applied& applied) {
  const PendingRecord& record = applied.record;
  IndexRow row;
  row.type = record.type;
  row.offset = applied.location.offset;
  row.size_bytes = applied.location.size_bytes;
  row.group = record.group;
  switch (record.type) {
    case wf::RecordType::entry:
      row.a = record.index.value;
      row.b = record.term.value;
      break;
    case wf::RecordType::hard_state:
      row.a = record.hard_state.term.value;
      row.b = record.hard_state.vote;
      row.c = record.hard_state.commit.value;
      break;
    case wf::RecordType::snapshot:
      row.mode = record.mode;
      row.a = record.index.value;
      row.b = record.term.value;
      row.c = record.retain_from.value;
      break;
    case wf::RecordType::release:
      row.a = record.release_first;
      break;
    default:
      break;
  }
  return row;
}

Wal::PendingRecord Wal::pending_record_of(const IndexRow& row) {
  PendingRecord record;
  record.group = row.group;
  record.type = row.type;
  record.size_bytes = row.size_bytes;
  switch (row.type) {
    case wf::RecordType::entry:
      record.index = LogIndex{row.a};
      record.term = Term{row.b};
      break;
    case wf::RecordType::hard_state:
      record.hard_state = HardState{Term{row.a}, row.b, LogIndex{row.c}};
      break;
    case wf::RecordType::snapshot:
      record.mode = row.mode;
      record.index = LogIndex{row.a};
      record.term = Term{row.b};
      record.retain_from = LogIndex{row.c};
      break;
    case wf::RecordType::release:
      record.release_first = row.a;
      break;
    default:
      break;
  }
  return record;
}

void Wal::fail_group_locked(GroupId group, std::string reason) const {
  auto found = groups_.find(group.value);
  if (found != groups_.end() && !found->second->failure) found->second->failure = std::move(reason);
}

// ---------------------------------------------------------------------------------------------
// Reclaiming space

uint64_t Wal::oldest_needed_segment_locked() const {
  uint64_t needed = active_sequence_;
  for (const auto& [id, group] : groups_) needed = std::min(needed, group->oldest_segment());
  return needed;
}

void Wal::reclaim() {
  // 1. Delete segments below the durable release point.
  std::vector<uint64_t> doomed;
  {
    std::lock_guard lock(mutex_);
    while (!segments_.empty() && segments_.front().first < released_below_ &&
           segments_.front().first < active_sequence_) {
      doomed.push_back(segments_.front().first);
      segments_.erase(segments_.begin());
    }
  }
  if (!doomed.empty()) {
    // Failures here cost space, not data: recovery deletes what is left below the release point.
    for (uint64_t sequence : doomed) (void)fs_.remove(dir_ + "/" + segment_file_name(sequence));
    (void)fs_.sync_dir(dir_);
    std::lock_guard lock(mutex_);
    segments_deleted_ += doomed.size();
  }

  std::lock_guard lock(mutex_);
  if (!reclaim_wanted_ || failed() || segments_.empty()) return;
  if (options_.reclaim_scan_interval_ms != 0) {
    auto now = std::chrono::steady_clock::now();
    if (!segment_rolled_ && now < next_reclaim_scan_) return;  // still wanted: a later flush
    next_reclaim_scan_ = now + std::chrono::milliseconds(options_.reclaim_scan_interval_ms);
  }
  segment_rolled_ = false;
  reclaim_wanted_ = false;
  // 2. Record how far segments are free; they go once that record is durable.
  uint64_t needed = oldest_needed_segment_locked();
  if (needed > released_below_ && needed > release_pending_) {
    PendingRecord record;
    record.internal = true;
    record.release_first = needed;
    submit_locked(*internal_, GroupId{0}, wf::RecordType::release, encode_release(needed), {},
                  record);
    release_pending_ = needed;
  }
  // 3. Copy forward the hard states and snapshots that alone keep the oldest segment.
  uint64_t oldest = segments_.front().first;
  if (needed != oldest || oldest >= active_sequence_) return;
  uint64_t carried = 0;
  for (auto& [id, slot] : groups_) {
    Group& group = *slot;
    if (group.oldest_segment() != oldest || group.carry_in_flight || group.failure) continue;
    if (!group.entries.empty() && group.entries.front().location.segment == oldest) continue;
    if (carried >= options_.carry_forward_bytes_max) {
      reclaim_wanted_ = true;  // more next time
      break;
    }
    GroupId group_id{id};
    if (group.hard_state_at && group.hard_state_at->segment == oldest) {
      PendingRecord record;
      record.internal = true;
      record.hard_state = group.hard_state;
      submit_locked(*internal_, group_id, wf::RecordType::hard_state,
                    encode_hard_state(group.hard_state), {}, record);
      carried += record.size_bytes;
      group.carry_in_flight = true;
    }
    if (group.snapshot_at && group.snapshot_at->segment == oldest) {
      auto body = read_record(group_id, *group.snapshot_at, wf::RecordType::snapshot);
      SnapshotBody snapshot;
      if (!body || !decode_snapshot_body(*body, snapshot)) continue;  // the group is failed now
      PendingRecord record;
      record.internal = true;
      record.index = group.snapshot.index;
      record.term = group.snapshot.term;
      // The copy keeps what the snapshot keeps: replayed after the entries it retains, it must
      // not drop them.
      record.mode = group.retain_from.value != 0 ? SnapshotMode::compact_retaining
                                                 : SnapshotMode::compact_prefix;
      record.retain_from = group.retain_from;
      submit_locked(*internal_, group_id, wf::RecordType::snapshot,
                    encode_snapshot_fixed(group.snapshot, record.mode, record.retain_from),
                    snapshot.data, record);
      carried += group.snapshot_at->size_bytes;
      group.carry_in_flight = true;
    }
  }
  carried_forward_bytes_ += carried;
}

SpaceStats Wal::space() const {
  std::lock_guard lock(mutex_);
  SpaceStats stats;
  stats.segment_count = segments_.size();
  stats.first_segment = segments_.empty() ? 0 : segments_.front().first;
  stats.active_segment = active_sequence_;
  for (const auto& [sequence, file] : segments_) stats.disk_bytes += file->size();
  stats.segments_deleted = segments_deleted_;
  stats.carried_forward_bytes = carried_forward_bytes_;
  return stats;
}

std::vector<GroupId> Wal::groups_pinning_oldest_segment(size_t count_max) const {
  std::lock_guard lock(mutex_);
  std::vector<GroupId> pinning;
  if (segments_.empty()) return pinning;
  uint64_t oldest = segments_.front().first;
  for (const auto& [id, group] : groups_) {
    if (pinning.size() >= count_max) break;
    if (!group->entries.empty() && group->entries.front().location.segment == oldest) {
      pinning.push_back(GroupId{id});
    }
  }
  return pinning;
}

// ---------------------------------------------------------------------------------------------
// Reading

std::shared_ptr<File> Wal::segment_file_locked(uint64_t segment) const {
  auto found =
      std::lower_bound(segments_.begin(), segments_.end(), segment,
                       [](const auto& item, uint64_t value) { return item.first < value; });
  if (found == segments_.end() || found->first != segment) return nullptr;
  return found->second;
}

// Reads one record and checks it (checksums, group, type). Called with mutex_ held or not: it
// takes no lock itself, except through fail_group_locked, which the caller must hold.
Result<std::string, Error> Wal::read_record(GroupId group, Location location,
                                            wf::RecordType type) const {
  std::shared_ptr<File> file = segment_file_locked(location.segment);
  std::string where =
      "segment " + std::to_string(location.segment) + " offset " + std::to_string(location.offset);
  if (!file) return error(Errc::corrupt, where + ": segment missing");
  std::string bytes;
  if (auto read = file->read(location.offset, location.size_bytes, bytes); !read) {
    return unexpected(read.error());
  }
  RecordHeader header;
  if (bytes.size() != location.size_bytes || !decode_record_header(bytes, header) ||
      header.group != group || header.type != type ||
      header.body_size_bytes + wf::record_header_bytes != location.size_bytes ||
      !body_checksum_matches(header, std::string_view(bytes).substr(wf::record_header_bytes))) {
    std::string reason = where + ": record fails its checksum";
    fail_group_locked(group, reason);
    return error(Errc::corrupt, reason);
  }
  bytes.erase(0, wf::record_header_bytes);
  return bytes;
}

bool Wal::holds(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  return found != groups_.end() && !found->second->durable_blank();
}

std::vector<GroupId> Wal::groups() const {
  std::lock_guard lock(mutex_);
  std::vector<GroupId> ids;
  for (const auto& [id, group] : groups_) {
    if (!group->durable_blank()) ids.push_back(GroupId{id});
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

LogIndex Wal::first_index(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  return found == groups_.end() ? LogIndex{1} : found->second->snapshot.index + 1;
}

LogIndex Wal::last_index(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  return found == groups_.end() ? LogIndex{0} : found->second->last_index();
}

Result<Term, Error> Wal::term(GroupId group, LogIndex index) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  if (found == groups_.end()) {
    if (index.value == 0) return Term{0};
    return error(Errc::unavailable, "no such entry");
  }
  const Group& state = *found->second;
  if (state.failure) return error(Errc::group_failed, *state.failure);
  if (index == state.snapshot.index) return state.snapshot.term;
  if (index < state.snapshot.index) return error(Errc::compacted, "below the snapshot");
  if (index > state.last_index()) return error(Errc::unavailable, "beyond the last entry");
  return Term{state.entries[index.value - state.first_entry.value].term};
}

Result<void, Error> Wal::entries(GroupId group, LogIndex lo, LogIndex hi, uint64_t bytes_max,
                                 std::vector<Entry>& out) const {
  if (hi <= lo) return Ok{};
  std::vector<EntrySlot> slots;
  // The files are taken with the slots, under one lock: a segment deleted meanwhile (its entries
  // compacted since) stays readable through its open handle.
  std::vector<std::pair<uint64_t, std::shared_ptr<File>>> files;
  {
    std::lock_guard lock(mutex_);
    auto found = groups_.find(group.value);
    if (found == groups_.end()) return error(Errc::unavailable, "no such entries");
    const Group& state = *found->second;
    if (state.failure) return error(Errc::group_failed, *state.failure);
    // Entries a retaining snapshot kept are readable too.
    bool stored = !state.entries.empty() && lo >= state.first_entry;
    if (lo <= state.snapshot.index && !stored) {
      return error(Errc::compacted, "below the snapshot");
    }
    if (hi > state.last_index() + 1) return error(Errc::unavailable, "beyond the last entry");
    // An entry record's size gives its payload's: the header and fixed body part are constant.
    uint64_t payload_bytes = 0;
    for (LogIndex index = lo; index < hi; index = index + 1) {
      const EntrySlot& slot = state.entries[index.value - state.first_entry.value];
      uint64_t payload = slot.location.size_bytes - entry_record_overhead_bytes;
      if (!slots.empty() && payload_bytes + payload > bytes_max) break;
      payload_bytes += payload;
      slots.push_back(slot);
      if (files.empty() || files.back().first != slot.location.segment) {
        files.emplace_back(slot.location.segment, segment_file_locked(slot.location.segment));
      }
    }
  }
  // Read runs of records that lie next to each other in one segment with one read each.
  constexpr uint64_t read_bytes_max = 1ull << 20;
  LogIndex index = lo;
  size_t first = 0;
  while (first < slots.size()) {
    size_t last = first;
    uint64_t run_bytes = slots[first].location.size_bytes;
    while (last + 1 < slots.size() &&
           slots[last + 1].location.segment == slots[first].location.segment &&
           slots[last + 1].location.offset ==
               slots[last].location.offset + slots[last].location.size_bytes &&
           run_bytes + slots[last + 1].location.size_bytes <= read_bytes_max) {
      ++last;
      run_bytes += slots[last].location.size_bytes;
    }
    std::shared_ptr<File> file;
    for (const auto& [segment, handle] : files) {
      if (segment == slots[first].location.segment) file = handle;
    }
    std::string bytes;
    if (file) {
      if (auto read = file->read(slots[first].location.offset, run_bytes, bytes); !read) {
        return unexpected(read.error());
      }
    }
    uint64_t position = 0;
    for (size_t i = first; i <= last; ++i, index = index + 1) {
      const Location& location = slots[i].location;
      std::string_view record = std::string_view(bytes).substr(
          std::min<uint64_t>(position, bytes.size()), location.size_bytes);
      position += location.size_bytes;
      RecordHeader header;
      EntryBody body;
      std::string_view body_bytes =
          record.size() >= wf::record_header_bytes ? record.substr(wf::record_header_bytes) : "";
      if (!file || record.size() != location.size_bytes || !decode_record_header(record, header) ||
          header.group != group || header.type != wf::RecordType::entry ||
          !body_checksum_matches(header, body_bytes) || !decode_entry_body(body_bytes, body) ||
          body.index != index || body.term.value != slots[i].term) {
        std::string reason = "segment " + std::to_string(location.segment) + " offset " +
                             std::to_string(location.offset) + ": entry " +
                             std::to_string(index.value) + " fails its checksum";
        std::lock_guard lock(mutex_);
        fail_group_locked(group, reason);
        return error(Errc::corrupt, reason);
      }
      out.push_back(Entry{body.term, body.index, body.kind, std::string(body.payload)});
    }
    first = last + 1;
  }
  return Ok{};
}

Result<HardState, Error> Wal::hard_state(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  if (found == groups_.end()) return HardState{};
  if (found->second->failure) return error(Errc::group_failed, *found->second->failure);
  return found->second->hard_state;
}

HardState Wal::last_hard_state(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  return found == groups_.end() ? HardState{} : found->second->hard_state;
}

Result<SnapshotMeta, Error> Wal::snapshot_meta(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  if (found == groups_.end()) return SnapshotMeta{};
  if (found->second->failure) return error(Errc::group_failed, *found->second->failure);
  return found->second->snapshot;
}

Result<std::string, Error> Wal::snapshot_data(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  if (found == groups_.end() || !found->second->snapshot_at) return std::string();
  const Group& state = *found->second;
  if (state.failure) return error(Errc::group_failed, *state.failure);
  auto body = read_record(group, *state.snapshot_at, wf::RecordType::snapshot);
  if (!body) return unexpected(body.error());
  SnapshotBody snapshot;
  if (!decode_snapshot_body(*body, snapshot) || snapshot.meta != state.snapshot) {
    fail_group_locked(group, "snapshot record does not match its index");
    return error(Errc::corrupt, "snapshot record does not match its index");
  }
  return std::string(snapshot.data);
}

std::optional<std::string> Wal::group_failure(GroupId group) const {
  std::lock_guard lock(mutex_);
  auto found = groups_.find(group.value);
  if (found == groups_.end()) return std::nullopt;
  return found->second->failure;
}

}  // namespace hamq::storage
