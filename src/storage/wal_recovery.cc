// Wal::open: recovery of the log from its segment files.
//
// Segments are replayed oldest first, each batch whole or not at all. What is found decides:
// - The last segment ends in damage (a batch cut short, a failed checksum) and no well-formed
//   batch follows it: a torn tail, the unsynced last write of a crash. It is cut at the last
//   whole batch. Nothing cut was ever reported durable (a batch is reported after its fsync, and
//   a batch starts only after the previous one's fsync returned).
// - Damage followed by later batches, or in any segment but the last (which were all synced
//   before the next was created): synced data is damaged. A record whose header is intact but
//   whose body fails its checksum fails its group; anything else (a damaged header, a missing
//   segment) cannot be attributed and the log refuses to open, naming the place.
#include <algorithm>

#include "storage/record.h"
#include "storage/wal_internal.h"

namespace hamq::storage {

namespace {

std::string place(uint64_t segment, uint64_t offset) {
  return "segment " + segment_file_name(segment) + " offset " + std::to_string(offset);
}

struct SealedIndex {
  uint64_t first_batch = 0;
  uint64_t seal_batch = 0;
  std::vector<IndexRow> rows;
};

// Reads a sealed segment's seal and index (the last batches of the file). False when the segment
// is not sealed, or its seal or index fails a check: then the caller scans it whole, which finds
// whatever damage there is.
bool read_sealed_index(const File& file, uint64_t sequence, SealedIndex& sealed,
                       uint64_t& bytes_read) {
  uint64_t size = file.size();
  if (size < wf::segment_header_bytes + 2 * wf::seal_batch_bytes) return false;
  std::string header;
  std::string tail;
  uint64_t found_sequence = 0;
  if (!file.read(0, wf::segment_header_bytes, header) ||
      !decode_segment_header(header, found_sequence) || found_sequence != sequence) {
    return false;
  }
  if (!file.read(size - wf::seal_batch_bytes, wf::seal_batch_bytes, tail)) return false;
  bytes_read += header.size() + tail.size();
  BatchHeader seal_batch;
  RecordHeader seal_record;
  uint64_t index_offset = 0;
  if (tail.size() != wf::seal_batch_bytes || !decode_batch_header(tail, seal_batch) ||
      seal_batch.segment_sequence != sequence || seal_batch.record_count != 1 ||
      seal_batch.body_size_bytes != wf::record_header_bytes + wf::seal_body_bytes ||
      !decode_record_header(std::string_view(tail).substr(wf::batch_header_bytes), seal_record) ||
      seal_record.type != RecordType::segment_seal) {
    return false;
  }
  std::string_view seal_body =
      std::string_view(tail).substr(wf::batch_header_bytes + wf::record_header_bytes);
  if (!body_checksum_matches(seal_record, seal_body) || !decode_seal(seal_body, index_offset) ||
      index_offset < wf::segment_header_bytes ||
      index_offset + wf::batch_header_bytes > size - wf::seal_batch_bytes) {
    return false;
  }
  std::string index_bytes;
  if (!file.read(index_offset, size - wf::seal_batch_bytes - index_offset, index_bytes)) {
    return false;
  }
  bytes_read += index_bytes.size();
  BatchHeader index_batch;
  RecordHeader index_record;
  if (!decode_batch_header(index_bytes, index_batch) || index_batch.segment_sequence != sequence ||
      index_batch.record_count != 1 ||
      wf::batch_header_bytes + index_batch.body_size_bytes != index_bytes.size() ||
      index_batch.batch_sequence + 1 != seal_batch.batch_sequence ||
      !decode_record_header(std::string_view(index_bytes).substr(wf::batch_header_bytes),
                            index_record) ||
      index_record.type != RecordType::segment_index) {
    return false;
  }
  std::string_view index_body =
      std::string_view(index_bytes).substr(wf::batch_header_bytes + wf::record_header_bytes);
  if (!body_checksum_matches(index_record, index_body) ||
      !decode_segment_index(index_body, sealed.first_batch, sealed.rows)) {
    return false;
  }
  uint64_t previous_end = wf::segment_header_bytes;
  for (const IndexRow& row : sealed.rows) {
    if (row.offset < previous_end || uint64_t{row.offset} + row.size_bytes > index_offset ||
        row.size_bytes < wf::record_header_bytes ||
        (row.group.value == 0) != (row.type == RecordType::release)) {
      return false;
    }
    previous_end = uint64_t{row.offset} + row.size_bytes;
  }
  if (sealed.first_batch > index_batch.batch_sequence) return false;
  sealed.seal_batch = seal_batch.batch_sequence;
  return true;
}

}  // namespace

Result<std::unique_ptr<Wal>, Error> Wal::open(FileSystem& fs, std::string dir, WalOptions options,
                                              RecoveryReport* report) {
  HAMQ_VERIFY(options.segment_size_bytes_target <= segment_size_bytes_limit,
              "segment_size_bytes_target past 1 GiB");
  HAMQ_VERIFY(options.pending_bytes_max <= wf::batch_body_bytes_max,
              "pending_bytes_max past the batch limit");
  RecoveryReport ignored;
  if (report == nullptr) report = &ignored;
  *report = {};
  if (auto made = fs.make_dir(dir); !made) return unexpected(made.error());
  auto names = fs.list(dir);
  if (!names) return unexpected(names.error());
  std::vector<uint64_t> sequences;
  for (const std::string& name : *names) {
    uint64_t sequence = 0;
    if (parse_segment_file_name(name, sequence)) sequences.push_back(sequence);
  }
  std::sort(sequences.begin(), sequences.end());
  for (size_t i = 1; i < sequences.size(); ++i) {
    if (sequences[i] != sequences[i - 1] + 1) {
      return error(Errc::corrupt, "segment " + segment_file_name(sequences[i - 1] + 1) +
                                      " is missing: the log has a hole");
    }
  }
  if (!sequences.empty() && sequences.back() >= (1ull << 32)) {
    return error(Errc::invalid_format, "segment sequence past 32 bits");
  }

  std::unique_ptr<Wal> wal(new Wal(fs, std::move(dir), options));
  uint64_t last_batch = 0;  // 0: none seen yet
  std::string bytes;
  for (size_t i = 0; i < sequences.size(); ++i) {
    uint64_t sequence = sequences[i];
    bool last_segment = i + 1 == sequences.size();
    std::string path = wal->dir_ + "/" + segment_file_name(sequence);
    auto opened = fs.open(path, OpenMode::open_existing);
    if (!opened) return unexpected(opened.error());
    std::shared_ptr<File> file = std::move(opened.value());
    if (file->size() > segment_size_bytes_limit + wf::batch_body_bytes_max) {
      return error(Errc::corrupt, path + " is larger than any segment the engine writes");
    }
    ++report->segments;

    // A sealed segment: its index instead of its records.
    SealedIndex sealed;
    if (read_sealed_index(*file, sequence, sealed, report->bytes_read) &&
        (last_batch == 0 || sealed.first_batch == last_batch + 1)) {
      std::lock_guard lock(wal->mutex_);
      wal->active_sequence_ = sequence;  // apply_locked lists its records in active_rows_
      wal->active_rows_.clear();
      wal->active_first_batch_ = sealed.first_batch;
      for (const IndexRow& row : sealed.rows) {
        PendingRecord record = pending_record_of(row);
        wal->apply_locked(
            Applied{record, Location{static_cast<uint32_t>(sequence), row.offset, row.size_bytes}},
            nullptr);
      }
      report->records += sealed.rows.size();
      ++report->sealed_segments;
      last_batch = sealed.seal_batch;
      wal->active_sealed_ = true;
      wal->segments_.emplace_back(sequence, file);
      continue;
    }
    if (auto read = file->read(0, file->size(), bytes); !read) return unexpected(read.error());
    report->bytes_read += bytes.size();

    SegmentScanner scanner(bytes, sequence);
    if (!scanner.header_ok()) {
      // A segment's header is synced before any batch goes in it, so only the newest segment
      // can lack one, and then holds nothing.
      if (last_segment && !scanner.valid_batch_after(0, 0)) {
        file.reset();
        if (auto removed = fs.remove(path); !removed) return unexpected(removed.error());
        if (auto synced = fs.sync_dir(wal->dir_); !synced) return unexpected(synced.error());
        report->torn_bytes_cut += bytes.size();
        continue;
      }
      return error(Errc::corrupt, place(sequence, 0) + ": bad segment header");
    }

    std::vector<ScannedBatch> batches;
    bool damaged = false;
    uint64_t damage_offset = 0;
    ScannedBatch batch;
    while (scanner.next(batch)) {
      if (last_batch != 0 && batch.header.batch_sequence != last_batch + 1) {
        damaged = true;
        damage_offset = batch.offset;
        break;
      }
      last_batch = batch.header.batch_sequence;
      batches.push_back(batch);
    }
    if (!damaged && scanner.stopped_at_damage()) {
      damaged = true;
      damage_offset = scanner.stop_offset();
    }
    uint64_t cut_at = bytes.size();
    if (damaged) {
      if (!last_segment || scanner.valid_batch_after(damage_offset, last_batch)) {
        return error(Errc::corrupt, place(sequence, damage_offset) +
                                        ": damaged batch in synced data (later batches follow)");
      }
      cut_at = damage_offset;
    }
    // The final batch of the log with a record failing its checksum is a torn write too (the
    // file grew but not all its pages reached the disk).
    if (last_segment && !damaged && !batches.empty()) {
      const auto& records = batches.back().records;
      if (std::any_of(records.begin(), records.end(),
                      [](const ScannedRecord& record) { return !record.body_ok; })) {
        cut_at = batches.back().offset;
        batches.pop_back();
        last_batch = batches.empty() ? (last_batch > 0 ? last_batch - 1 : 0)
                                     : batches.back().header.batch_sequence;
      }
    }
    if (cut_at < bytes.size()) {
      if (auto cut = file->truncate(cut_at); !cut) return unexpected(cut.error());
      if (auto synced = file->sync(); !synced) return unexpected(synced.error());
      report->torn_bytes_cut += bytes.size() - cut_at;
    }

    std::lock_guard lock(wal->mutex_);
    wal->active_sequence_ = sequence;  // apply_locked lists its records in active_rows_
    wal->active_rows_.clear();
    wal->active_sealed_ = false;
    wal->active_first_batch_ = batches.empty() ? 0 : batches.front().header.batch_sequence;
    for (const ScannedBatch& scanned : batches) {
      ++report->batches;
      for (const ScannedRecord& scanned_record : scanned.records) {
        ++report->records;
        GroupId group = scanned_record.header.group;
        if (scanned_record.header.type == wf::RecordType::segment_index ||
            scanned_record.header.type == wf::RecordType::segment_seal) {
          wal->active_sealed_ = scanned_record.header.type == wf::RecordType::segment_seal;
          continue;
        }
        if (!scanned_record.body_ok) {
          if (group.value == 0) {
            return error(Errc::corrupt, place(sequence, scanned_record.offset) +
                                            ": engine record fails its checksum");
          }
          auto& slot = wal->groups_[group.value];
          if (!slot) slot = std::make_unique<Group>();
          std::string reason =
              place(sequence, scanned_record.offset) + ": record fails its checksum in synced data";
          wal->fail_group_locked(group, reason);
          continue;
        }
        if ((group.value == 0) != (scanned_record.header.type == wf::RecordType::release)) {
          return error(Errc::corrupt, place(sequence, scanned_record.offset) +
                                          ": group 0 is for the engine's records, and only them");
        }
        PendingRecord record;
        record.group = group;
        record.type = scanned_record.header.type;
        record.size_bytes =
            static_cast<uint32_t>(wf::record_header_bytes + scanned_record.body.size());
        switch (record.type) {
          case wf::RecordType::entry: {
            EntryBody body;
            (void)decode_entry_body(scanned_record.body, body);
            record.index = body.index;
            record.term = body.term;
            break;
          }
          case wf::RecordType::hard_state:
            (void)decode_hard_state_body(scanned_record.body, record.hard_state);
            break;
          case wf::RecordType::snapshot: {
            SnapshotBody body;
            (void)decode_snapshot_body(scanned_record.body, body);
            record.index = body.meta.index;
            record.term = body.meta.term;
            record.mode = body.mode;
            record.retain_from = body.retain_from;
            break;
          }
          case wf::RecordType::release:
            (void)decode_release_body(scanned_record.body, record.release_first);
            break;
          case wf::RecordType::group_removed:
          case wf::RecordType::segment_index:
          case wf::RecordType::segment_seal:
            break;
        }
        Location location{static_cast<uint32_t>(sequence),
                          static_cast<uint32_t>(scanned_record.offset), record.size_bytes};
        wal->apply_locked(Applied{record, location}, nullptr);
      }
    }
    wal->segments_.emplace_back(sequence, file);
  }

  std::unique_lock lock(wal->mutex_);
  if (!wal->segments_.empty() && wal->segments_.front().first > wal->released_below_) {
    return error(Errc::corrupt, "segment " + segment_file_name(wal->released_below_) +
                                    " is missing: the oldest live segment is gone");
  }
  for (auto& [id, group] : wal->groups_) {
    // The entries start right after the snapshot, or where it retains them from.
    LogIndex first = group->retain_from.value != 0 ? group->retain_from : group->snapshot.index + 1;
    if (!group->failure && !group->entries.empty() && group->first_entry != first) {
      group->failure = "entries " + std::to_string(first.value) + " to " +
                       std::to_string(group->first_entry.value - 1) + " are missing";
    }
    group->submitted_last = group->last_index();
    group->submitted_snapshot = group->snapshot.index;
  }
  for (const auto& [id, group] : wal->groups_) {
    if (group->failure) report->failed_groups.push_back({GroupId{id}, *group->failure});
  }
  std::sort(report->failed_groups.begin(), report->failed_groups.end(),
            [](const auto& a, const auto& b) { return a.group < b.group; });
  if (!wal->segments_.empty()) {
    wal->active_ = wal->segments_.back().second;
    wal->active_sequence_ = wal->segments_.back().first;
  } else if (!sequences.empty()) {
    wal->active_sequence_ = sequences.back() - 1;  // the next segment takes the removed one's name
  }
  wal->next_batch_sequence_ = last_batch + 1;
  if (wal->segments_.empty()) {
    // A new log: its first segment now, so that a disk that cannot take it fails open().
    lock.unlock();
    auto rolled = wal->roll_segment();
    lock.lock();
    if (!rolled) return unexpected(rolled.error());
  }
  wal->reclaim_wanted_ = true;
  // Segments below the release point whose deletion a crash interrupted.
  uint64_t deleted_before = 0;
  while (wal->segments_.size() > 1 && wal->segments_.front().first < wal->released_below_) {
    (void)fs.remove(wal->dir_ + "/" + segment_file_name(wal->segments_.front().first));
    wal->segments_.erase(wal->segments_.begin());
    ++deleted_before;
  }
  if (deleted_before > 0) (void)fs.sync_dir(wal->dir_);
  report->segments_deleted = deleted_before;
  return wal;
}

}  // namespace hamq::storage
