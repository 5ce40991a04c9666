#include "storage/record.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/verify.h"

namespace hamq::storage {
namespace {

namespace wf = wal_format;

// A segment of `batches` batches, each with one entry record of group 7.
std::string segment_with_entries(uint64_t sequence, int batches) {
  std::string segment = encode_segment_header(sequence);
  for (int i = 1; i <= batches; ++i) {
    std::string batch(wf::batch_header_bytes, '\0');
    append_record(batch, RecordType::entry, GroupId{7},
                  encode_entry_fixed(LogIndex{static_cast<uint64_t>(i)}, Term{2}, 0),
                  "payload-" + std::to_string(i));
    encode_batch_header(batch.data(), static_cast<uint64_t>(i),
                        static_cast<uint32_t>(batch.size() - wf::batch_header_bytes), 1, sequence);
    segment += batch;
  }
  return segment;
}

ScannedRecord only_record(std::string_view bytes) {
  SegmentScanner scanner(bytes, 1);
  ScannedBatch batch;
  HAMQ_VERIFY(scanner.next(batch), "no batch");
  HAMQ_VERIFY(batch.records.size() == 1, "not one record");
  return batch.records[0];
}

std::string one_record_segment(RecordType type, GroupId group, std::string_view fixed,
                               std::string_view payload) {
  std::string batch(wf::batch_header_bytes, '\0');
  append_record(batch, type, group, fixed, payload);
  encode_batch_header(batch.data(), 1, static_cast<uint32_t>(batch.size() - 32), 1, 1);
  return encode_segment_header(1) + batch;
}

TEST(Record, SegmentFileNamesRoundTripAndRejectOtherNames) {
  EXPECT_EQ(segment_file_name(0x2a), "wal-000000000000002a.seg");
  uint64_t sequence = 0;
  ASSERT_TRUE(parse_segment_file_name("wal-000000000000002a.seg", sequence));
  EXPECT_EQ(sequence, 0x2au);
  EXPECT_FALSE(parse_segment_file_name("wal-000000000000002A.seg", sequence));
  EXPECT_FALSE(parse_segment_file_name("wal-2a.seg", sequence));
  EXPECT_FALSE(parse_segment_file_name("wal-000000000000002a.seg.tmp", sequence));
}

TEST(Record, SegmentHeaderRoundTripsAndAnyFlippedBitIsRejected) {
  std::string header = encode_segment_header(99);
  uint64_t sequence = 0;
  ASSERT_TRUE(decode_segment_header(header, sequence));
  EXPECT_EQ(sequence, 99u);
  for (size_t bit = 0; bit < header.size() * 8; ++bit) {
    std::string damaged = header;
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_FALSE(decode_segment_header(damaged, sequence)) << bit;
  }
}

TEST(Record, BatchHeaderRoundTripsAndAnyFlippedBitIsRejected) {
  char header[wf::batch_header_bytes];
  encode_batch_header(header, 12, 345, 6, 7);
  BatchHeader decoded;
  ASSERT_TRUE(decode_batch_header(std::string_view(header, sizeof header), decoded));
  EXPECT_EQ(decoded.batch_sequence, 12u);
  EXPECT_EQ(decoded.body_size_bytes, 345u);
  EXPECT_EQ(decoded.record_count, 6u);
  EXPECT_EQ(decoded.segment_sequence, 7u);
  for (size_t bit = 0; bit < sizeof header * 8; ++bit) {
    std::string damaged(header, sizeof header);
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_FALSE(decode_batch_header(damaged, decoded)) << bit;
  }
}

TEST(Record, EntryRecordRoundTrips) {
  std::string segment = one_record_segment(RecordType::entry, GroupId{5},
                                           encode_entry_fixed(LogIndex{10}, Term{3}, 1), "body");
  ScannedRecord record = only_record(segment);
  ASSERT_TRUE(record.body_ok);
  EXPECT_EQ(record.header.type, RecordType::entry);
  EXPECT_EQ(record.header.group, GroupId{5});
  EntryBody entry;
  ASSERT_TRUE(decode_entry_body(record.body, entry));
  EXPECT_EQ(entry.index, LogIndex{10});
  EXPECT_EQ(entry.term, Term{3});
  EXPECT_EQ(entry.kind, 1);
  EXPECT_EQ(entry.payload, "body");
}

TEST(Record, HardStateRecordRoundTrips) {
  HardState state{Term{4}, 2, LogIndex{17}};
  std::string segment =
      one_record_segment(RecordType::hard_state, GroupId{5}, encode_hard_state(state), {});
  ScannedRecord record = only_record(segment);
  ASSERT_TRUE(record.body_ok);
  HardState decoded;
  ASSERT_TRUE(decode_hard_state_body(record.body, decoded));
  EXPECT_EQ(decoded, state);
}

TEST(Record, SnapshotRecordRoundTrips) {
  SnapshotMeta meta{LogIndex{40}, Term{6}};
  std::string segment =
      one_record_segment(RecordType::snapshot, GroupId{5},
                         encode_snapshot_fixed(meta, SnapshotMode::compact_prefix), "state");
  ScannedRecord record = only_record(segment);
  ASSERT_TRUE(record.body_ok);
  SnapshotBody snapshot;
  ASSERT_TRUE(decode_snapshot_body(record.body, snapshot));
  EXPECT_EQ(snapshot.meta, meta);
  EXPECT_EQ(snapshot.mode, SnapshotMode::compact_prefix);
  EXPECT_EQ(snapshot.data, "state");
}

TEST(Record, GroupRemovedAndReleaseRecordsRoundTrip) {
  std::string removed_segment = one_record_segment(RecordType::group_removed, GroupId{5}, {}, {});
  ScannedRecord removed = only_record(removed_segment);
  EXPECT_TRUE(removed.body_ok);
  EXPECT_EQ(removed.header.type, RecordType::group_removed);
  std::string release_segment =
      one_record_segment(RecordType::release, GroupId{0}, encode_release(9), {});
  ScannedRecord release = only_record(release_segment);
  ASSERT_TRUE(release.body_ok);
  uint64_t first = 0;
  ASSERT_TRUE(decode_release_body(release.body, first));
  EXPECT_EQ(first, 9u);
}

TEST(Record, MalformedBodiesAreFlaggedEvenWithAMatchingChecksum) {
  // A snapshot mode that does not exist, and an entry at index 0.
  std::string bad_mode =
      encode_snapshot_fixed(SnapshotMeta{LogIndex{1}, Term{1}}, SnapshotMode::replace_log);
  bad_mode[16] = 9;
  EXPECT_FALSE(
      only_record(one_record_segment(RecordType::snapshot, GroupId{5}, bad_mode, {})).body_ok);
  EXPECT_FALSE(only_record(one_record_segment(RecordType::entry, GroupId{5},
                                              encode_entry_fixed(LogIndex{0}, Term{1}, 0), {}))
                   .body_ok);
  EXPECT_FALSE(
      only_record(one_record_segment(RecordType::hard_state, GroupId{5}, "short", {})).body_ok);
}

TEST(Record, AFlippedBitInABodyFlagsTheRecordButKeepsTheBatch) {
  std::string segment = one_record_segment(RecordType::entry, GroupId{5},
                                           encode_entry_fixed(LogIndex{1}, Term{1}, 0), "payload");
  segment[segment.size() - 2] ^= 0x10;
  ScannedRecord record = only_record(segment);
  EXPECT_FALSE(record.body_ok);
  EXPECT_EQ(record.header.group, GroupId{5});  // attributable: the header is intact
}

TEST(Record, AFlippedBitInARecordHeaderStopsTheScanAtItsBatch) {
  std::string segment = segment_with_entries(1, 3);
  size_t second_batch = segment.size() / 3 * 1;  // not exact: find it by scanning
  SegmentScanner scanner(segment, 1);
  ScannedBatch batch;
  ASSERT_TRUE(scanner.next(batch));
  second_batch = batch.end_offset();
  std::string damaged = segment;
  damaged[second_batch + wf::batch_header_bytes + 17] ^= 0x01;  // in the record's group field
  SegmentScanner damaged_scanner(damaged, 1);
  ASSERT_TRUE(damaged_scanner.next(batch));
  EXPECT_FALSE(damaged_scanner.next(batch));
  EXPECT_TRUE(damaged_scanner.stopped_at_damage());
  EXPECT_EQ(damaged_scanner.stop_offset(), second_batch);
  EXPECT_TRUE(damaged_scanner.valid_batch_after(second_batch, 1));  // batch 3 follows
}

TEST(Record, TruncatedAtEveryOffsetTheScannerReturnsTheWholeBatchesBefore) {
  std::string segment = segment_with_entries(1, 3);
  std::vector<uint64_t> ends;
  {
    SegmentScanner scanner(segment, 1);
    ScannedBatch batch;
    while (scanner.next(batch)) ends.push_back(batch.end_offset());
  }
  ASSERT_EQ(ends.size(), 3u);
  for (size_t size = wf::segment_header_bytes; size <= segment.size(); ++size) {
    SegmentScanner scanner(std::string_view(segment).substr(0, size), 1);
    ScannedBatch batch;
    size_t whole = 0;
    while (scanner.next(batch)) ++whole;
    size_t expected =
        static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), size) - ends.begin());
    EXPECT_EQ(whole, expected) << size;
    bool at_boundary =
        size == wf::segment_header_bytes || std::find(ends.begin(), ends.end(), size) != ends.end();
    EXPECT_EQ(scanner.stopped_at_damage(), !at_boundary) << size;
    EXPECT_FALSE(scanner.valid_batch_after(scanner.stop_offset(), expected)) << size;
  }
}

TEST(Record, ABatchOfAnotherSegmentIsDamage) {
  std::string segment = segment_with_entries(3, 1);
  SegmentScanner wrong_name(segment, 4);
  EXPECT_FALSE(wrong_name.header_ok());
  std::string moved = encode_segment_header(4) + segment.substr(wf::segment_header_bytes);
  SegmentScanner scanner(moved, 4);
  ScannedBatch batch;
  EXPECT_FALSE(scanner.next(batch));
  EXPECT_TRUE(scanner.stopped_at_damage());
}

}  // namespace
}  // namespace hamq::storage
