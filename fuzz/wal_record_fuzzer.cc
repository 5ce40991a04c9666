// The storage engine's record reader: arbitrary bytes as a write-ahead log segment (named by the
// sequence in its header when it has a valid one).
// - SegmentScanner must never read outside the input, and every record it accepts must re-encode
//   to exactly the bytes it came from.
// - Wal::open (recovery) over the bytes as the only segment must either refuse with an error or
//   open a log whose every group reads back without crashing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/verify.h"
#include "storage/memory_file_system.h"
#include "storage/record.h"
#include "storage/wal.h"

namespace hamq::storage {
namespace {

// The segment sequence the input claims, if it is one the engine could write; else 1.
uint64_t sequence_of(std::string_view bytes) {
  uint64_t sequence = 0;
  if (decode_segment_header(bytes, sequence) && sequence > 0 && sequence < (1ull << 32)) {
    return sequence;
  }
  return 1;
}

void check_scanner(std::string_view bytes) {
  SegmentScanner scanner(bytes, sequence_of(bytes));
  ScannedBatch batch;
  uint64_t last = 0;
  while (scanner.next(batch)) {
    HAMQ_VERIFY(batch.end_offset() <= bytes.size(), "batch past the input");
    last = batch.header.batch_sequence;
    for (const ScannedRecord& record : batch.records) {
      uint64_t end = record.offset + wal_format::record_header_bytes + record.body.size();
      HAMQ_VERIFY(end <= batch.end_offset(), "record past its batch");
      if (!record.body_ok) continue;
      std::string again;
      append_record(again, record.header.type, record.header.group, record.body, {});
      HAMQ_VERIFY(again == bytes.substr(record.offset, again.size()),
                  "an accepted record does not re-encode to itself");
    }
  }
  if (scanner.stopped_at_damage()) (void)scanner.valid_batch_after(scanner.stop_offset(), last);
}

void check_recovery(std::string_view bytes) {
  MemoryFileSystem fs;
  (void)fs.make_dir("wal");
  auto file = fs.open("wal/" + segment_file_name(sequence_of(bytes)), OpenMode::create_new);
  HAMQ_VERIFY(file.ok(), "create");
  (void)(*file)->append(bytes);
  WalOptions options;
  options.segment_size_bytes_target = 1 << 16;
  auto wal = Wal::open(fs, "wal", options);
  if (!wal) return;
  for (GroupId group : (*wal)->groups()) {
    std::vector<Entry> entries;
    LogIndex first = (*wal)->first_index(group);
    LogIndex last = (*wal)->last_index(group);
    if (last.value - first.value < 100000) {
      (void)(*wal)->entries(group, first, last + 1, 1 << 20, entries);
    }
    (void)(*wal)->term(group, last);
    (void)(*wal)->hard_state(group);
    (void)(*wal)->snapshot_data(group);
  }
  // And the log takes a write after what it recovered.
  (void)(*wal)->save_hard_state(GroupId{1}, HardState{Term{1}, 0, LogIndex{0}});
  (void)(*wal)->flush();
}

}  // namespace
}  // namespace hamq::storage

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  hamq::storage::check_scanner(bytes);
  hamq::storage::check_recovery(bytes);
  return 0;
}
