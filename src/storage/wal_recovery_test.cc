// Recovery from each kind of damage (docs/formats/wal.md, "Recovery").
#include <gtest/gtest.h>

#include "storage/fault_file_system.h"
#include "storage/record.h"
#include "storage/wal.h"
#include "storage/wal_test_util.h"

namespace hamq::storage {
namespace {

using testing_util::append_range;
using testing_util::flush_or_die;
using testing_util::open_or_die;
using testing_util::payload_of;
using testing_util::read_all;

constexpr GroupId group_a{1};
constexpr GroupId group_b{2};

std::string segment_path(uint64_t sequence) {
  return "wal/" + segment_file_name(sequence);
}

class WalRecoveryTest : public testing::Test {
 protected:
  // Three batches: a 1-3 and b 1-2; a 4-5 and a hard state; b 3.
  void write_three_batches() {
    auto wal = open_or_die(fs_, "wal");
    append_range(*wal, group_a, 1, 3, 1);
    append_range(*wal, group_b, 1, 2, 1);
    flush_or_die(*wal);
    size_after_batch_.push_back(fs_.contents(segment_path(1))->size());
    append_range(*wal, group_a, 4, 5, 1);
    ASSERT_TRUE(wal->save_hard_state(group_a, HardState{Term{1}, 1, LogIndex{5}}));
    flush_or_die(*wal);
    size_after_batch_.push_back(fs_.contents(segment_path(1))->size());
    append_range(*wal, group_b, 3, 3, 1);
    flush_or_die(*wal);
    size_after_batch_.push_back(fs_.contents(segment_path(1))->size());
  }
  std::string segment() { return *fs_.contents(segment_path(1)); }

  FaultFileSystem fs_{11};
  std::vector<size_t> size_after_batch_;
};

TEST_F(WalRecoveryTest, TruncatedAtEveryByteOfTheLastBatchKeepsTheBatchesBefore) {
  write_three_batches();
  std::string whole = segment();
  for (size_t size = size_after_batch_[1]; size <= whole.size(); ++size) {
    fs_.set_contents(segment_path(1), whole.substr(0, size));
    RecoveryReport report;
    auto wal = open_or_die(fs_, "wal", {}, &report);
    bool complete = size == whole.size();
    EXPECT_EQ(wal->last_index(group_b), LogIndex{complete ? 3u : 2u}) << size;
    EXPECT_EQ(wal->last_index(group_a), LogIndex{5}) << size;
    EXPECT_EQ(report.torn_bytes_cut, complete ? 0 : size - size_after_batch_[1]) << size;
    EXPECT_TRUE(report.failed_groups.empty()) << size;
    EXPECT_EQ(read_all(*wal, group_b).size(), complete ? 3u : 2u);
    // The cut is durable and the log continues after it.
    append_range(*wal, group_b, complete ? 4 : 3, complete ? 4 : 3, 2);
    flush_or_die(*wal);
    wal.reset();
    wal = open_or_die(fs_, "wal");
    EXPECT_EQ(*wal->term(group_b, wal->last_index(group_b)), Term{2}) << size;
  }
}

TEST_F(WalRecoveryTest, AFlippedBitInTheTailIsCutAsATornWrite) {
  write_three_batches();
  std::string whole = segment();
  for (size_t at = size_after_batch_[1]; at < whole.size(); at += 7) {
    std::string damaged = whole;
    damaged[at] ^= 0x04;
    fs_.set_contents(segment_path(1), damaged);
    RecoveryReport report;
    auto wal = open_or_die(fs_, "wal", {}, &report);
    EXPECT_EQ(wal->last_index(group_b), LogIndex{2}) << at;
    EXPECT_EQ(report.torn_bytes_cut, whole.size() - size_after_batch_[1]) << at;
    EXPECT_TRUE(report.failed_groups.empty());
  }
}

TEST_F(WalRecoveryTest, AFlippedBitInAPayloadInTheMiddleFailsOnlyThatGroup) {
  write_three_batches();
  std::string damaged = segment();
  size_t at = damaged.find(payload_of(group_a, LogIndex{4}, Term{1}));
  ASSERT_LT(at, size_after_batch_[1]);
  damaged[at + 1] ^= 0x01;
  fs_.set_contents(segment_path(1), damaged);
  RecoveryReport report;
  auto wal = open_or_die(fs_, "wal", {}, &report);
  ASSERT_EQ(report.failed_groups.size(), 1u);
  EXPECT_EQ(report.failed_groups[0].group, group_a);
  EXPECT_NE(report.failed_groups[0].reason.find("checksum"), std::string::npos);
  EXPECT_EQ(wal->term(group_a, LogIndex{1}).error().code, Errc::group_failed);
  EntryInput entry{Term{1}, LogIndex{6}, 0, "x"};
  EXPECT_EQ(wal->append(group_a, std::span(&entry, 1)).error().code, Errc::group_failed);
  EXPECT_EQ(read_all(*wal, group_b).size(), 3u);  // served
  // The operator (or Raft, from peers) rebuilds the group: removing it clears the failure.
  ASSERT_TRUE(wal->remove_group(group_a));
  flush_or_die(*wal);
  EXPECT_FALSE(wal->group_failure(group_a));
}

TEST_F(WalRecoveryTest, AFlippedBitInARecordHeaderInTheMiddleRefusesToOpen) {
  write_three_batches();
  std::string damaged = segment();
  // The first record header of the second batch.
  damaged[size_after_batch_[0] + 32 + 9] ^= 0x01;
  fs_.set_contents(segment_path(1), damaged);
  auto wal = Wal::open(fs_, "wal");
  ASSERT_FALSE(wal);
  EXPECT_EQ(wal.error().code, Errc::corrupt);
  EXPECT_NE(wal.error().detail.find("synced"), std::string::npos);
}

TEST_F(WalRecoveryTest, AMissingSegmentRefusesToOpen) {
  WalOptions options;
  options.segment_size_bytes_target = 1024;
  {
    auto wal = open_or_die(fs_, "wal", options);
    for (uint64_t round = 0; round < 10; ++round) {
      append_range(*wal, group_a, round * 10 + 1, round * 10 + 10, 1);
      flush_or_die(*wal);
    }
    ASSERT_GE(wal->space().segment_count, 5u);
  }
  ASSERT_TRUE(fs_.remove(segment_path(3)));
  auto wal = Wal::open(fs_, "wal", options);
  ASSERT_FALSE(wal);
  EXPECT_EQ(wal.error().code, Errc::corrupt);
  EXPECT_NE(wal.error().detail.find("missing"), std::string::npos);
}

TEST_F(WalRecoveryTest, AMissingOldestSegmentRefusesToOpen) {
  WalOptions options;
  options.segment_size_bytes_target = 1024;
  {
    auto wal = open_or_die(fs_, "wal", options);
    for (uint64_t round = 0; round < 10; ++round) {
      append_range(*wal, group_a, round * 10 + 1, round * 10 + 10, 1);
      flush_or_die(*wal);
    }
  }
  ASSERT_TRUE(fs_.remove(segment_path(1)));
  auto wal = Wal::open(fs_, "wal", options);
  ASSERT_FALSE(wal);
  EXPECT_EQ(wal.error().code, Errc::corrupt);
}

TEST_F(WalRecoveryTest, ACrashBetweenTheReleaseRecordAndTheDeletionsKeepsEverything) {
  WalOptions options;
  options.segment_size_bytes_target = 2048;
  auto wal = open_or_die(fs_, "wal", options);
  for (uint64_t round = 0; round < 10; ++round) {
    append_range(*wal, group_a, round * 10 + 1, round * 10 + 10, 1);
    flush_or_die(*wal);
  }
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{100}, Term{1}},
                                 SnapshotMode::compact_prefix, "snap"));
  flush_or_die(*wal);  // the snapshot; reclaim queues the release record
  // The release record's batch goes through its fsync, then the machine dies before the
  // segments are removed (or the removal reaches the directory).
  fs_.stop_after(2);
  auto flushed = wal->flush();
  wal.reset();
  fs_.crash({.tear_unsynced = true});
  RecoveryReport report;
  wal = open_or_die(fs_, "wal", options, &report);
  EXPECT_GT(report.segments_deleted, 0u);  // recovery finishes the deletion
  EXPECT_EQ(wal->first_index(group_a), LogIndex{101});
  EXPECT_EQ(*wal->snapshot_data(group_a), "snap");
}

TEST_F(WalRecoveryTest, ACrashAfterTheDataBeforeTheCheckpointKeepsTheOldCopy) {
  // The data is in an old segment; the carried-forward copy (the checkpoint of the group's hard
  // state and snapshot) is written, and the machine dies at each step after it.
  WalOptions options;
  options.segment_size_bytes_target = 1024;
  for (uint64_t stop = 0; stop < 8; ++stop) {
    FaultFileSystem fs(stop);
    {
      auto wal = open_or_die(fs, "wal", options);
      ASSERT_TRUE(wal->save_hard_state(group_a, HardState{Term{9}, 2, LogIndex{0}}));
      ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{5}, Term{9}},
                                     SnapshotMode::replace_log, "old"));
      flush_or_die(*wal);
      for (uint64_t round = 0; round < 6; ++round) {
        append_range(*wal, group_b, round * 10 + 1, round * 10 + 10, 1);
        ASSERT_TRUE(wal->save_snapshot(group_b, SnapshotMeta{LogIndex{round * 10 + 10}, Term{1}},
                                       SnapshotMode::compact_prefix, "b"));
        flush_or_die(*wal);
      }
      fs.stop_after(stop);
      for (int i = 0; i < 4; ++i) (void)wal->flush();
    }
    fs.crash({.tear_unsynced = true});
    auto wal = open_or_die(fs, "wal", options);
    EXPECT_EQ(*wal->hard_state(group_a), (HardState{Term{9}, 2, LogIndex{0}})) << stop;
    EXPECT_EQ(*wal->snapshot_meta(group_a), (SnapshotMeta{LogIndex{5}, Term{9}})) << stop;
    EXPECT_EQ(*wal->snapshot_data(group_a), "old") << stop;
    EXPECT_EQ(wal->last_index(group_b), LogIndex{60}) << stop;
  }
}

TEST_F(WalRecoveryTest, ANewestSegmentWithATornHeaderIsRemoved) {
  WalOptions options;
  options.segment_size_bytes_target = 512;
  {
    auto wal = open_or_die(fs_, "wal", options);
    append_range(*wal, group_a, 1, 40, 1);
    flush_or_die(*wal);
  }
  // The next segment's creation reached the directory but not its header.
  auto file = fs_.open(segment_path(2), OpenMode::create_new);
  ASSERT_TRUE(file);
  ASSERT_TRUE((*file)->append(encode_segment_header(2).substr(0, 10)));
  ASSERT_TRUE((*file)->sync());
  ASSERT_TRUE(fs_.sync_dir("wal"));
  auto wal = open_or_die(fs_, "wal", options);
  EXPECT_EQ(wal->last_index(group_a), LogIndex{40});
  append_range(*wal, group_a, 41, 41, 1);
  flush_or_die(*wal);
  EXPECT_EQ(wal->space().active_segment, 2u);
}

TEST_F(WalRecoveryTest, RestartReadsSealedSegmentsThroughTheirIndexAndScansOnlyTheLast) {
  WalOptions options;
  options.segment_size_bytes_target = 32 * 1024;
  uint64_t disk_bytes = 0;
  std::string big(1000, 'x');  // entries of a typical 1 KB message
  {
    auto wal = open_or_die(fs_, "wal", options);
    for (uint64_t round = 0; round < 40; ++round) {
      std::vector<EntryInput> entries;
      for (uint64_t index = round * 20 + 1; index <= round * 20 + 20; ++index) {
        entries.push_back(EntryInput{Term{1}, LogIndex{index}, 0, big});
      }
      ASSERT_TRUE(wal->append(group_a, entries));
      ASSERT_TRUE(wal->save_hard_state(group_b, HardState{Term{round}, 0, LogIndex{0}}));
      flush_or_die(*wal);
    }
    disk_bytes = wal->space().disk_bytes;
    ASSERT_GT(wal->space().segment_count, 5u);
  }
  RecoveryReport report;
  auto wal = open_or_die(fs_, "wal", options, &report);
  EXPECT_EQ(report.sealed_segments, report.segments - 1);
  EXPECT_LT(report.bytes_read, disk_bytes / 5);
  EXPECT_EQ(wal->last_index(group_a), LogIndex{800});
  EXPECT_EQ(*wal->hard_state(group_b), (HardState{Term{39}, 0, LogIndex{0}}));
  std::vector<Entry> entries = read_all(*wal, group_a);
  ASSERT_EQ(entries.size(), 800u);
  EXPECT_EQ(entries[433].payload, big);
  EXPECT_EQ(entries[433].index, LogIndex{434});
  // And it goes on writing in a new segment after the sealed ones.
  append_range(*wal, group_a, 801, 801, 2);
  flush_or_die(*wal);
  wal.reset();
  wal = open_or_die(fs_, "wal", options);
  EXPECT_EQ(*wal->term(group_a, LogIndex{801}), Term{2});
}

TEST_F(WalRecoveryTest, ASegmentSealedAfterRestartsIsStillReadThroughItsIndex) {
  WalOptions options;
  options.segment_size_bytes_target = 4096;
  // Each session writes a little and stops: segments are begun in one session and sealed in a
  // later one.
  for (uint64_t session = 0; session < 12; ++session) {
    auto wal = open_or_die(fs_, "wal", options);
    append_range(*wal, group_a, session * 30 + 1, session * 30 + 30, 1);
    flush_or_die(*wal);
  }
  RecoveryReport report;
  auto wal = open_or_die(fs_, "wal", options, &report);
  ASSERT_GT(report.segments, 2u);
  EXPECT_EQ(report.sealed_segments, report.segments - 1);
  EXPECT_EQ(read_all(*wal, group_a).size(), 360u);
}

TEST_F(WalRecoveryTest, ADamagedSegmentIndexFallsBackToScanningTheSegment) {
  WalOptions options;
  options.segment_size_bytes_target = 2048;
  {
    auto wal = open_or_die(fs_, "wal", options);
    for (uint64_t round = 0; round < 10; ++round) {
      append_range(*wal, group_a, round * 20 + 1, round * 20 + 20, 1);
      flush_or_die(*wal);
    }
  }
  std::string segment = *fs_.contents(segment_path(1));
  segment[segment.size() - 100] ^= 0x01;  // inside the index
  fs_.set_contents(segment_path(1), segment);
  RecoveryReport report;
  auto wal = open_or_die(fs_, "wal", options, &report);
  EXPECT_EQ(report.sealed_segments, report.segments - 2);
  EXPECT_EQ(wal->last_index(group_a), LogIndex{200});
  EXPECT_EQ(read_all(*wal, group_a).size(), 200u);
}

TEST_F(WalRecoveryTest, APayloadDamagedInASealedSegmentFailsItsGroupWhenRead) {
  WalOptions options;
  options.segment_size_bytes_target = 2048;
  {
    auto wal = open_or_die(fs_, "wal", options);
    for (uint64_t round = 0; round < 10; ++round) {
      append_range(*wal, group_a, round * 20 + 1, round * 20 + 20, 1);
      append_range(*wal, group_b, round * 20 + 1, round * 20 + 20, 1);
      flush_or_die(*wal);
    }
  }
  std::string segment = *fs_.contents(segment_path(1));
  size_t at = segment.find(payload_of(group_a, LogIndex{3}, Term{1}));
  ASSERT_NE(at, std::string::npos);
  segment[at + 2] ^= 0x01;
  fs_.set_contents(segment_path(1), segment);
  RecoveryReport report;
  auto wal = open_or_die(fs_, "wal", options, &report);
  EXPECT_TRUE(report.failed_groups.empty());  // not read at open: found on the first read
  std::vector<Entry> out;
  auto read = wal->entries(group_a, LogIndex{1}, LogIndex{10}, UINT64_MAX, out);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, Errc::corrupt);
  EXPECT_EQ(wal->term(group_a, LogIndex{5}).error().code, Errc::group_failed);
  EXPECT_EQ(read_all(*wal, group_b).size(), 200u);
}

TEST_F(WalRecoveryTest, UnsyncedBatchesAreLostAndSyncedOnesKept) {
  auto wal = open_or_die(fs_, "wal");
  append_range(*wal, group_a, 1, 3, 1);
  flush_or_die(*wal);
  append_range(*wal, group_a, 4, 6, 1);
  fs_.stop_after(1);  // the append gets in, the fsync does not happen
  ASSERT_FALSE(wal->flush());
  wal.reset();
  fs_.crash({.tear_unsynced = false});
  wal = open_or_die(fs_, "wal");
  EXPECT_EQ(wal->last_index(group_a), LogIndex{3});
}

}  // namespace
}  // namespace hamq::storage
