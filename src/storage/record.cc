#include "storage/record.h"

#include <bit>
#include <charconv>
#include <cstring>

#include "common/crc32c.h"
#include "common/verify.h"

namespace hamq::storage {

static_assert(std::endian::native == std::endian::little,
              "the formats are little-endian and written with memcpy");

namespace wf = wal_format;

namespace {

void put_u32(char* out, uint32_t value) {
  std::memcpy(out, &value, 4);
}
void put_u64(char* out, uint64_t value) {
  std::memcpy(out, &value, 8);
}
uint32_t get_u32(const char* in) {
  uint32_t value;
  std::memcpy(&value, in, 4);
  return value;
}
uint64_t get_u64(const char* in) {
  uint64_t value;
  std::memcpy(&value, in, 8);
  return value;
}

}  // namespace

std::string segment_file_name(uint64_t segment_sequence) {
  char digits[17];
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    digits[i] = hex[segment_sequence & 0xF];
    segment_sequence >>= 4;
  }
  digits[16] = '\0';
  return std::string(wf::segment_prefix) + digits + wf::segment_suffix;
}

bool parse_segment_file_name(std::string_view name, uint64_t& segment_sequence) {
  std::string_view prefix = wf::segment_prefix;
  std::string_view suffix = wf::segment_suffix;
  if (name.size() != prefix.size() + 16 + suffix.size()) return false;
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return false;
  std::string_view digits = name.substr(prefix.size(), 16);
  for (char c : digits) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  auto [end, error] = std::from_chars(digits.data(), digits.data() + 16, segment_sequence, 16);
  return error == std::errc() && end == digits.data() + 16;
}

std::string encode_segment_header(uint64_t segment_sequence) {
  std::string out(wf::segment_header_bytes, '\0');
  put_u64(out.data(), wf::segment_magic);
  put_u32(out.data() + 8, wf::format_version);
  put_u64(out.data() + 16, segment_sequence);
  put_u32(out.data() + 24, crc32c(out.data(), 24));
  return out;
}

bool decode_segment_header(std::string_view bytes, uint64_t& segment_sequence) {
  if (bytes.size() < wf::segment_header_bytes) return false;
  const char* p = bytes.data();
  if (get_u32(p + 24) != crc32c(p, 24)) return false;
  if (get_u64(p) != wf::segment_magic || get_u32(p + 8) != wf::format_version) return false;
  if (get_u32(p + 12) != 0 || get_u32(p + 28) != 0) return false;
  segment_sequence = get_u64(p + 16);
  return true;
}

void encode_batch_header(char* out, uint64_t batch_sequence, uint32_t body_size_bytes,
                         uint32_t record_count, uint64_t segment_sequence) {
  put_u32(out, wf::batch_magic);
  put_u64(out + 8, batch_sequence);
  put_u32(out + 16, body_size_bytes);
  put_u32(out + 20, record_count);
  put_u64(out + 24, segment_sequence);
  put_u32(out + 4, crc32c(out + 8, 24));
}

bool decode_batch_header(std::string_view bytes, BatchHeader& header) {
  if (bytes.size() < wf::batch_header_bytes) return false;
  const char* p = bytes.data();
  if (get_u32(p) != wf::batch_magic || get_u32(p + 4) != crc32c(p + 8, 24)) return false;
  header.batch_sequence = get_u64(p + 8);
  header.body_size_bytes = get_u32(p + 16);
  header.record_count = get_u32(p + 20);
  header.segment_sequence = get_u64(p + 24);
  return header.body_size_bytes <= wf::batch_body_bytes_max;
}

void append_record(std::string& out, RecordType type, GroupId group, std::string_view body_fixed,
                   std::string_view payload) {
  uint64_t body_size = body_fixed.size() + payload.size();
  HAMQ_VERIFY(body_size <= wf::record_body_bytes_max, "record body past its limit");
  size_t start = out.size();
  out.resize(start + wf::record_header_bytes);
  out.append(body_fixed);
  out.append(payload);
  char* header = out.data() + start;
  uint32_t body_crc = crc32c_extend(crc32c(body_fixed), payload.data(), payload.size());
  put_u32(header + 4, body_crc);
  put_u32(header + 8, static_cast<uint32_t>(body_size));
  header[12] = static_cast<char>(type);
  header[13] = header[14] = header[15] = 0;
  put_u64(header + 16, group.value);
  put_u32(header, crc32c(header + 4, 20));
}

bool decode_record_header(std::string_view bytes, RecordHeader& header) {
  if (bytes.size() < wf::record_header_bytes) return false;
  const char* p = bytes.data();
  if (get_u32(p) != crc32c(p + 4, 20)) return false;
  auto type = static_cast<uint8_t>(p[12]);
  if (type == 0 || type > wf::record_type_max) return false;
  if (p[13] != 0 || p[14] != 0 || p[15] != 0) return false;
  header.body_crc = get_u32(p + 4);
  header.body_size_bytes = get_u32(p + 8);
  header.type = static_cast<RecordType>(type);
  header.group = GroupId{get_u64(p + 16)};
  return header.body_size_bytes <= wf::record_body_bytes_max;
}

bool body_checksum_matches(const RecordHeader& header, std::string_view body) {
  return body.size() == header.body_size_bytes && crc32c(body) == header.body_crc;
}

void encode_entry_fixed(char* out, LogIndex index, Term term, uint8_t kind) {
  put_u64(out, index.value);
  put_u64(out + 8, term.value);
  out[16] = static_cast<char>(kind);
}

std::string encode_entry_fixed(LogIndex index, Term term, uint8_t kind) {
  std::string out(wf::entry_body_fixed_bytes, '\0');
  encode_entry_fixed(out.data(), index, term, kind);
  return out;
}

std::string encode_hard_state(const HardState& state) {
  std::string out(wf::hard_state_body_bytes, '\0');
  put_u64(out.data(), state.term.value);
  put_u64(out.data() + 8, state.vote);
  put_u64(out.data() + 16, state.commit.value);
  return out;
}

std::string encode_snapshot_fixed(const SnapshotMeta& meta, SnapshotMode mode,
                                  LogIndex retain_from) {
  bool retaining = mode == SnapshotMode::compact_retaining;
  std::string out(wf::snapshot_body_fixed_bytes + (retaining ? wf::snapshot_retain_from_bytes : 0),
                  '\0');
  put_u64(out.data(), meta.index.value);
  put_u64(out.data() + 8, meta.term.value);
  out[16] = static_cast<char>(mode);
  if (retaining) put_u64(out.data() + wf::snapshot_body_fixed_bytes, retain_from.value);
  return out;
}

std::string encode_release(uint64_t first_live_segment) {
  std::string out(wf::release_body_bytes, '\0');
  put_u64(out.data(), first_live_segment);
  return out;
}

std::string encode_segment_index(uint64_t first_batch_sequence, const std::vector<IndexRow>& rows) {
  std::string out(wf::segment_index_fixed_bytes + rows.size() * wf::segment_index_row_bytes, '\0');
  put_u64(out.data(), first_batch_sequence);
  put_u32(out.data() + 8, static_cast<uint32_t>(rows.size()));
  char* row = out.data() + wf::segment_index_fixed_bytes;
  for (const IndexRow& item : rows) {
    row[0] = static_cast<char>(item.type);
    row[1] = static_cast<char>(item.mode);
    put_u32(row + 4, item.offset);
    put_u32(row + 8, item.size_bytes);
    put_u64(row + 16, item.group.value);
    put_u64(row + 24, item.a);
    put_u64(row + 32, item.b);
    put_u64(row + 40, item.c);
    row += wf::segment_index_row_bytes;
  }
  return out;
}

bool decode_segment_index(std::string_view body, uint64_t& first_batch_sequence,
                          std::vector<IndexRow>& rows) {
  if (body.size() < wf::segment_index_fixed_bytes) return false;
  first_batch_sequence = get_u64(body.data());
  uint64_t count = get_u32(body.data() + 8);
  if (get_u32(body.data() + 12) != 0) return false;
  if (body.size() != wf::segment_index_fixed_bytes + count * wf::segment_index_row_bytes) {
    return false;
  }
  rows.clear();
  rows.reserve(count);
  const char* row = body.data() + wf::segment_index_fixed_bytes;
  for (uint64_t i = 0; i < count; ++i, row += wf::segment_index_row_bytes) {
    auto type = static_cast<uint8_t>(row[0]);
    auto mode = static_cast<uint8_t>(row[1]);
    if (type == 0 || type > static_cast<uint8_t>(RecordType::release)) return false;
    if (mode > static_cast<uint8_t>(SnapshotMode::compact_retaining)) return false;
    if (row[2] != 0 || row[3] != 0 || get_u32(row + 12) != 0) return false;
    IndexRow item;
    item.type = static_cast<RecordType>(type);
    item.mode = static_cast<SnapshotMode>(mode);
    item.offset = get_u32(row + 4);
    item.size_bytes = get_u32(row + 8);
    item.group = GroupId{get_u64(row + 16)};
    item.a = get_u64(row + 24);
    item.b = get_u64(row + 32);
    item.c = get_u64(row + 40);
    rows.push_back(item);
  }
  return true;
}

std::string encode_seal(uint64_t index_batch_offset) {
  std::string out(wf::seal_body_bytes, '\0');
  put_u64(out.data(), index_batch_offset);
  return out;
}

bool decode_seal(std::string_view body, uint64_t& index_batch_offset) {
  if (body.size() != wf::seal_body_bytes) return false;
  index_batch_offset = get_u64(body.data());
  return true;
}

std::string encode_single_record_batch(uint64_t batch_sequence, uint64_t segment_sequence,
                                       RecordType type, std::string_view body) {
  std::string batch(wf::batch_header_bytes, '\0');
  append_record(batch, type, GroupId{0}, body, {});
  encode_batch_header(batch.data(), batch_sequence,
                      static_cast<uint32_t>(batch.size() - wf::batch_header_bytes), 1,
                      segment_sequence);
  return batch;
}

bool decode_entry_body(std::string_view body, EntryBody& entry) {
  if (body.size() < wf::entry_body_fixed_bytes) return false;
  entry.index = LogIndex{get_u64(body.data())};
  entry.term = Term{get_u64(body.data() + 8)};
  entry.kind = static_cast<uint8_t>(body[16]);
  entry.payload = body.substr(wf::entry_body_fixed_bytes);
  return entry.index.value != 0;
}

bool decode_hard_state_body(std::string_view body, HardState& state) {
  if (body.size() != wf::hard_state_body_bytes) return false;
  state.term = Term{get_u64(body.data())};
  state.vote = get_u64(body.data() + 8);
  state.commit = LogIndex{get_u64(body.data() + 16)};
  return true;
}

bool decode_snapshot_body(std::string_view body, SnapshotBody& snapshot) {
  if (body.size() < wf::snapshot_body_fixed_bytes) return false;
  snapshot.meta.index = LogIndex{get_u64(body.data())};
  snapshot.meta.term = Term{get_u64(body.data() + 8)};
  auto mode = static_cast<uint8_t>(body[16]);
  if (mode > static_cast<uint8_t>(SnapshotMode::compact_retaining)) return false;
  snapshot.mode = static_cast<SnapshotMode>(mode);
  snapshot.retain_from = {};
  uint64_t fixed = wf::snapshot_body_fixed_bytes;
  if (snapshot.mode == SnapshotMode::compact_retaining) {
    fixed += wf::snapshot_retain_from_bytes;
    if (body.size() < fixed) return false;
    snapshot.retain_from = LogIndex{get_u64(body.data() + wf::snapshot_body_fixed_bytes)};
  }
  snapshot.data = body.substr(fixed);
  return true;
}

bool decode_release_body(std::string_view body, uint64_t& first_live_segment) {
  if (body.size() != wf::release_body_bytes) return false;
  first_live_segment = get_u64(body.data());
  return true;
}

bool body_well_formed(RecordType type, std::string_view body) {
  switch (type) {
    case RecordType::entry: {
      EntryBody entry;
      return decode_entry_body(body, entry);
    }
    case RecordType::hard_state: {
      HardState state;
      return decode_hard_state_body(body, state);
    }
    case RecordType::snapshot: {
      SnapshotBody snapshot;
      return decode_snapshot_body(body, snapshot);
    }
    case RecordType::group_removed:
      return body.empty();
    case RecordType::release: {
      uint64_t first = 0;
      return decode_release_body(body, first);
    }
    case RecordType::segment_index: {
      uint64_t first = 0;
      std::vector<IndexRow> rows;
      return decode_segment_index(body, first, rows);
    }
    case RecordType::segment_seal: {
      uint64_t offset = 0;
      return decode_seal(body, offset);
    }
  }
  return false;
}

std::string_view record_type_name(RecordType type) {
  switch (type) {
    case RecordType::entry:
      return "entry";
    case RecordType::hard_state:
      return "hard_state";
    case RecordType::snapshot:
      return "snapshot";
    case RecordType::group_removed:
      return "group_removed";
    case RecordType::release:
      return "release";
    case RecordType::segment_index:
      return "segment_index";
    case RecordType::segment_seal:
      return "segment_seal";
  }
  return "unknown";
}

SegmentScanner::SegmentScanner(std::string_view bytes, uint64_t expected_sequence)
    : bytes_(bytes), segment_sequence_(expected_sequence) {
  uint64_t found = 0;
  header_ok_ = decode_segment_header(bytes, found) && found == expected_sequence;
  offset_ = header_ok_ ? wf::segment_header_bytes : 0;
  damaged_ = !header_ok_;
}

bool SegmentScanner::next(ScannedBatch& batch) {
  if (damaged_ || offset_ == bytes_.size()) return false;
  batch.records.clear();
  batch.offset = offset_;
  std::string_view rest = bytes_.substr(offset_);
  if (!decode_batch_header(rest, batch.header) ||
      batch.header.segment_sequence != segment_sequence_ ||
      rest.size() - wf::batch_header_bytes < batch.header.body_size_bytes) {
    damaged_ = true;
    return false;
  }
  std::string_view body = rest.substr(wf::batch_header_bytes, batch.header.body_size_bytes);
  uint64_t position = 0;
  while (position < body.size()) {
    ScannedRecord record;
    record.offset = offset_ + wf::batch_header_bytes + position;
    std::string_view remaining = body.substr(position);
    if (!decode_record_header(remaining, record.header) ||
        remaining.size() - wf::record_header_bytes < record.header.body_size_bytes) {
      damaged_ = true;
      return false;
    }
    record.body = remaining.substr(wf::record_header_bytes, record.header.body_size_bytes);
    record.body_ok = body_checksum_matches(record.header, record.body) &&
                     body_well_formed(record.header.type, record.body);
    position += wf::record_header_bytes + record.header.body_size_bytes;
    batch.records.push_back(record);
  }
  if (batch.records.size() != batch.header.record_count) {
    damaged_ = true;
    return false;
  }
  offset_ = batch.end_offset();
  return true;
}

std::optional<uint64_t> SegmentScanner::next_valid_batch(uint64_t from,
                                                         uint64_t after_sequence) const {
  for (uint64_t at = from + 1; at + wf::batch_header_bytes <= bytes_.size(); ++at) {
    if (get_u32(bytes_.data() + at) != wf::batch_magic) continue;
    BatchHeader header;
    if (decode_batch_header(bytes_.substr(at), header) &&
        header.segment_sequence == segment_sequence_ && header.batch_sequence > after_sequence) {
      return at;
    }
  }
  return std::nullopt;
}

}  // namespace hamq::storage
