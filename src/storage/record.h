// Encoding and decoding of the write-ahead log's structures (wal_format.h, docs/formats/wal.md):
// segment headers, batch headers, records and their typed bodies, and SegmentScanner, the one
// reader of segment bytes that recovery, hamq-dump and the fuzzer share.
//
// Decoding never trusts its input: every length is checked against the bytes present and the
// format's limits before use, and every checksum before a field is believed. Pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/types.h"
#include "storage/wal_format.h"

namespace hamq::storage {

using wal_format::RecordType;

std::string segment_file_name(uint64_t segment_sequence);
// True, with the sequence, for a name segment_file_name() makes.
bool parse_segment_file_name(std::string_view name, uint64_t& segment_sequence);

std::string encode_segment_header(uint64_t segment_sequence);
// False unless `bytes` starts with a valid segment header.
bool decode_segment_header(std::string_view bytes, uint64_t& segment_sequence);

// Writes a batch header over the first batch_header_bytes of `out`.
void encode_batch_header(char* out, uint64_t batch_sequence, uint32_t body_size_bytes,
                         uint32_t record_count, uint64_t segment_sequence);
struct BatchHeader {
  uint64_t batch_sequence = 0;
  uint32_t body_size_bytes = 0;
  uint32_t record_count = 0;
  uint64_t segment_sequence = 0;
};
bool decode_batch_header(std::string_view bytes, BatchHeader& header);

// Appends one record: header, then `body_fixed` followed by `payload` as the body.
void append_record(std::string& out, RecordType type, GroupId group, std::string_view body_fixed,
                   std::string_view payload);

struct RecordHeader {
  uint32_t body_crc = 0;
  uint32_t body_size_bytes = 0;
  RecordType type = RecordType::entry;
  GroupId group;
};
// Checks the header's own checksum, type and limits.
bool decode_record_header(std::string_view bytes, RecordHeader& header);
bool body_checksum_matches(const RecordHeader& header, std::string_view body);

// Typed bodies. The encoders return the fixed part (the payload follows it in the record).
std::string encode_entry_fixed(LogIndex index, Term term, uint8_t kind);
// The same into `out` (entry_body_fixed_bytes), for the write path: no allocation.
void encode_entry_fixed(char* out, LogIndex index, Term term, uint8_t kind);
std::string encode_hard_state(const HardState& state);
// A snapshot record's body before its data: index, term, mode, and `retain_from` in mode 2.
std::string encode_snapshot_fixed(const SnapshotMeta& meta, SnapshotMode mode,
                                  LogIndex retain_from = {});
std::string encode_release(uint64_t first_live_segment);

// One record of a sealed segment, as its index lists it (wal_format.h, segment_index).
struct IndexRow {
  RecordType type = RecordType::entry;
  SnapshotMode mode = SnapshotMode::replace_log;
  uint32_t offset = 0;
  uint32_t size_bytes = 0;  // header + body
  GroupId group;
  uint64_t a = 0;
  uint64_t b = 0;
  uint64_t c = 0;
};
std::string encode_segment_index(uint64_t first_batch_sequence, const std::vector<IndexRow>& rows);
bool decode_segment_index(std::string_view body, uint64_t& first_batch_sequence,
                          std::vector<IndexRow>& rows);
std::string encode_seal(uint64_t index_batch_offset);
bool decode_seal(std::string_view body, uint64_t& index_batch_offset);
// A whole batch of one record, ready to append (the seal and the index go in batches of their
// own).
std::string encode_single_record_batch(uint64_t batch_sequence, uint64_t segment_sequence,
                                       RecordType type, std::string_view body);

struct EntryBody {
  LogIndex index;
  Term term;
  uint8_t kind = 0;
  std::string_view payload;
};
struct SnapshotBody {
  SnapshotMeta meta;
  SnapshotMode mode = SnapshotMode::replace_log;
  LogIndex retain_from;  // compact_retaining only
  std::string_view data;
};
bool decode_entry_body(std::string_view body, EntryBody& entry);
bool decode_hard_state_body(std::string_view body, HardState& state);
bool decode_snapshot_body(std::string_view body, SnapshotBody& snapshot);
bool decode_release_body(std::string_view body, uint64_t& first_live_segment);
// The body's structure for its type (sizes, enum values), after its checksum matched.
bool body_well_formed(RecordType type, std::string_view body);

std::string_view record_type_name(RecordType type);

// One record of a scanned batch. `body` points into the scanned bytes.
struct ScannedRecord {
  RecordHeader header;
  uint64_t offset = 0;  // of the record header, in the segment
  std::string_view body;
  bool body_ok = false;  // checksum matches and the body is well formed for its type
};

struct ScannedBatch {
  uint64_t offset = 0;  // of the batch header, in the segment
  BatchHeader header;
  std::vector<ScannedRecord> records;
  uint64_t end_offset() const {
    return offset + wal_format::batch_header_bytes + header.body_size_bytes;
  }
};

// Reads the batches of one segment's bytes in order. Stops at the end of the bytes or at the
// first batch that is not whole and well-formed (a bad header, a record header that fails its
// checksum, records that do not tile the body, or a body past the end of the bytes). A record
// whose body alone fails its checksum leaves its batch well-formed and is flagged (body_ok).
class SegmentScanner {
 public:
  // `bytes`: the whole segment file; must outlive the scanner and what it returns.
  // `expected_sequence`: the sequence its file name gives.
  SegmentScanner(std::string_view bytes, uint64_t expected_sequence);

  // False when the segment header is missing or bad.
  bool header_ok() const { return header_ok_; }
  uint64_t segment_sequence() const { return segment_sequence_; }

  // The next batch, or false at the end or at damage.
  bool next(ScannedBatch& batch);
  // After next() returned false: the offset of the damage, or of the end when there was none.
  uint64_t stop_offset() const { return offset_; }
  bool stopped_at_damage() const { return damaged_; }

  // Whether a well-formed batch header of this segment, with a sequence above `after_sequence`,
  // starts anywhere after `from` (a byte-by-byte search). Tells a torn tail (nothing valid
  // follows the damage) from damage to synced data (later batches follow it).
  bool valid_batch_after(uint64_t from, uint64_t after_sequence) const {
    return next_valid_batch(from, after_sequence).has_value();
  }
  // Where that batch starts.
  std::optional<uint64_t> next_valid_batch(uint64_t from, uint64_t after_sequence) const;
  // Carries on scanning from `offset` (one next_valid_batch returned), for tools that show what
  // lies past damage. Recovery never does: what follows damage is not trusted.
  void resume_at(uint64_t offset) {
    offset_ = offset;
    damaged_ = false;
  }

 private:
  std::string_view bytes_;
  bool header_ok_ = false;
  bool damaged_ = false;
  uint64_t segment_sequence_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace hamq::storage
