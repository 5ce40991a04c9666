#include "storage/wal.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "storage/fault_file_system.h"
#include "storage/memory_file_system.h"
#include "storage/record.h"
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

class WalTest : public testing::Test {
 protected:
  std::unique_ptr<Wal> open(WalOptions options = {}) { return open_or_die(fs_, "wal", options); }
  // Changes a byte of an entry's payload in the first segment (its record's checksum fails).
  bool damage_payload(GroupId group, LogIndex index, Term term) {
    std::string path = "wal/" + segment_file_name(1);
    std::string bytes = *fs_.contents(path);
    size_t at = bytes.find(payload_of(group, index, term));
    if (at == std::string::npos) return false;
    bytes[at] ^= 0x01;
    fs_.set_contents(path, bytes);
    return true;
  }
  FaultFileSystem fs_{3};
};

TEST_F(WalTest, AppendedEntriesAreReadableOnlyAfterTheFlush) {
  auto wal = open();
  append_range(*wal, group_a, 1, 3, 1);
  EXPECT_EQ(wal->last_index(group_a), LogIndex{0});
  EXPECT_TRUE(wal->has_pending());
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_EQ(flushed.batch_sequence, 1u);
  EXPECT_EQ(wal->first_index(group_a), LogIndex{1});
  EXPECT_EQ(wal->last_index(group_a), LogIndex{3});
  std::vector<Entry> entries = read_all(*wal, group_a);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[2].payload, payload_of(group_a, LogIndex{3}, Term{1}));
  EXPECT_EQ(*wal->term(group_a, LogIndex{2}), Term{1});
}

TEST_F(WalTest, OneFlushReportsEachGroupsProgressAfterOneWriteAndOneSync) {
  auto wal = open();
  for (uint64_t group = 1; group <= 100; ++group) {
    append_range(*wal, GroupId{group}, 1, 2, 1);
    ASSERT_TRUE(wal->save_hard_state(GroupId{group}, HardState{Term{1}, group, LogIndex{0}}));
  }
  uint64_t operations_before = fs_.operation_count();
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_EQ(fs_.operation_count() - operations_before, 2u);  // one append, one fdatasync
  ASSERT_EQ(flushed.progress.size(), 100u);
  for (const GroupProgress& progress : flushed.progress) {
    EXPECT_EQ(progress.entries_durable_to, LogIndex{2});
    EXPECT_TRUE(progress.hard_state_durable);
  }
}

TEST_F(WalTest, AnAppendBelowTheLastIndexReplacesTheConflictingSuffix) {
  auto wal = open();
  append_range(*wal, group_a, 1, 5, 1);
  flush_or_die(*wal);
  append_range(*wal, group_a, 3, 4, 2);
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_EQ(flushed.progress[0].entries_durable_to, LogIndex{4});
  EXPECT_EQ(wal->last_index(group_a), LogIndex{4});
  EXPECT_EQ(*wal->term(group_a, LogIndex{2}), Term{1});
  EXPECT_EQ(*wal->term(group_a, LogIndex{3}), Term{2});
  EXPECT_EQ(read_all(*wal, group_a)[3].payload, payload_of(group_a, LogIndex{4}, Term{2}));
  auto beyond = wal->term(group_a, LogIndex{5});
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error().code, Errc::unavailable);
}

TEST_F(WalTest, EverythingSurvivesReopening) {
  {
    auto wal = open();
    append_range(*wal, group_a, 1, 5, 1);
    append_range(*wal, group_b, 1, 2, 1);
    ASSERT_TRUE(wal->save_hard_state(group_a, HardState{Term{3}, 2, LogIndex{4}}));
    flush_or_die(*wal);
    append_range(*wal, group_a, 4, 6, 3);
    ASSERT_TRUE(wal->save_snapshot(group_b, SnapshotMeta{LogIndex{1}, Term{1}},
                                   SnapshotMode::compact_prefix, "state-b"));
    flush_or_die(*wal);
  }
  auto wal = open();
  EXPECT_EQ(wal->groups(), (std::vector<GroupId>{group_a, group_b}));
  EXPECT_EQ(*wal->hard_state(group_a), (HardState{Term{3}, 2, LogIndex{4}}));
  EXPECT_EQ(wal->last_index(group_a), LogIndex{6});
  EXPECT_EQ(*wal->term(group_a, LogIndex{4}), Term{3});
  EXPECT_EQ(read_all(*wal, group_a)[2].payload, payload_of(group_a, LogIndex{3}, Term{1}));
  EXPECT_EQ(wal->first_index(group_b), LogIndex{2});
  EXPECT_EQ(wal->last_index(group_b), LogIndex{2});
  EXPECT_EQ(*wal->snapshot_data(group_b), "state-b");
  // And the log goes on where it stopped.
  append_range(*wal, group_a, 7, 7, 3);
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_EQ(flushed.batch_sequence, 3u);
  EXPECT_EQ(wal->last_index(group_a), LogIndex{7});
}

TEST_F(WalTest, ACompactingSnapshotDropsThePrefixAndKeepsTheSuffix) {
  auto wal = open();
  append_range(*wal, group_a, 1, 10, 1);
  flush_or_die(*wal);
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{6}, Term{1}},
                                 SnapshotMode::compact_prefix, "six"));
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_EQ(flushed.progress[0].snapshot_durable, (SnapshotMeta{LogIndex{6}, Term{1}}));
  EXPECT_EQ(wal->first_index(group_a), LogIndex{7});
  EXPECT_EQ(wal->last_index(group_a), LogIndex{10});
  EXPECT_EQ(*wal->term(group_a, LogIndex{6}), Term{1});  // the snapshot's own term
  auto compacted = wal->term(group_a, LogIndex{5});
  ASSERT_FALSE(compacted);
  EXPECT_EQ(compacted.error().code, Errc::compacted);
  std::vector<Entry> out;
  auto read = wal->entries(group_a, LogIndex{3}, LogIndex{8}, UINT64_MAX, out);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, Errc::compacted);
  EXPECT_EQ(read_all(*wal, group_a).front().index, LogIndex{7});
}

// A queue's snapshot refers to the entries that hold its messages' bodies: they stay readable,
// outside the Raft log, until a later snapshot retains less; they keep their segments meanwhile,
// and all of it survives reopening, also from sealed segments' indexes.
TEST_F(WalTest, ARetainingSnapshotKeepsItsEntriesReadableOutsideTheLog) {
  WalOptions options;
  options.segment_size_bytes_target = 4096;
  auto wal = open(options);
  append_range(*wal, group_a, 1, 100, 1);
  flush_or_die(*wal);
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{60}, Term{1}},
                                 SnapshotMode::compact_retaining, "refers", LogIndex{4}));
  for (uint64_t from = 101; from < 300; from += 20) {  // seals the segment holding the snapshot
    append_range(*wal, group_a, from, from + 19, 1);
    flush_or_die(*wal);
  }
  for (int reopened = 0; reopened < 2; ++reopened) {
    EXPECT_EQ(wal->first_index(group_a), LogIndex{61});
    EXPECT_EQ(wal->last_index(group_a), LogIndex{300});
    EXPECT_EQ(wal->term(group_a, LogIndex{30}).error().code, Errc::compacted);
    std::vector<Entry> out;
    ASSERT_TRUE(wal->entries(group_a, LogIndex{4}, LogIndex{6}, UINT64_MAX, out));
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].index, LogIndex{4});
    EXPECT_EQ(out[1].payload, payload_of(group_a, LogIndex{5}, Term{1}));
    auto below = wal->entries(group_a, LogIndex{3}, LogIndex{5}, UINT64_MAX, out);
    ASSERT_FALSE(below);
    EXPECT_EQ(below.error().code, Errc::compacted);
    wal.reset();
    RecoveryReport report;
    wal = open_or_die(fs_, "wal", options, &report);
    EXPECT_TRUE(report.failed_groups.empty());
    EXPECT_GT(report.sealed_segments, 0u);
  }
  // The retained entries keep the first segment; a snapshot that retains from later lets it go.
  EXPECT_EQ(wal->groups_pinning_oldest_segment(10), std::vector<GroupId>{group_a});
  uint64_t segments = wal->space().segment_count;
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{280}, Term{1}},
                                 SnapshotMode::compact_retaining, "later", LogIndex{250}));
  for (int i = 0; i < 4; ++i) flush_or_die(*wal);
  EXPECT_LT(wal->space().segment_count, segments);
  std::vector<Entry> out;
  EXPECT_FALSE(wal->entries(group_a, LogIndex{200}, LogIndex{201}, UINT64_MAX, out));
  ASSERT_TRUE(wal->entries(group_a, LogIndex{250}, LogIndex{251}, UINT64_MAX, out));
  wal.reset();
  wal = open(options);
  EXPECT_EQ(*wal->snapshot_data(group_a), "later");
  ASSERT_TRUE(wal->entries(group_a, LogIndex{250}, LogIndex{301}, UINT64_MAX, out));
  EXPECT_EQ(out.back().index, LogIndex{300});
  // A compacting snapshot retains nothing.
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{290}, Term{1}},
                                 SnapshotMode::compact_prefix, "all"));
  flush_or_die(*wal);
  EXPECT_FALSE(wal->entries(group_a, LogIndex{250}, LogIndex{251}, UINT64_MAX, out));
}

TEST_F(WalTest, AReplacingSnapshotDropsTheWholeLog) {
  auto wal = open();
  append_range(*wal, group_a, 1, 10, 1);
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{8}, Term{4}},
                                 SnapshotMode::replace_log, "from the leader"));
  append_range(*wal, group_a, 9, 9, 4);
  flush_or_die(*wal);
  EXPECT_EQ(wal->first_index(group_a), LogIndex{9});
  EXPECT_EQ(wal->last_index(group_a), LogIndex{9});
  EXPECT_EQ(*wal->term(group_a, LogIndex{9}), Term{4});
  EXPECT_EQ(*wal->snapshot_meta(group_a), (SnapshotMeta{LogIndex{8}, Term{4}}));
  EXPECT_EQ(*wal->snapshot_data(group_a), "from the leader");
}

TEST_F(WalTest, EntriesStopAtTheByteLimitButAlwaysReturnOne) {
  auto wal = open();
  append_range(*wal, group_a, 1, 20, 1);  // payloads of 8 bytes ("g1-i1-t1") up to index 9
  flush_or_die(*wal);
  std::vector<Entry> out;
  ASSERT_TRUE(wal->entries(group_a, LogIndex{1}, LogIndex{21}, 1, out));
  EXPECT_EQ(out.size(), 1u);
  out.clear();
  ASSERT_TRUE(wal->entries(group_a, LogIndex{1}, LogIndex{21}, 30, out));
  EXPECT_EQ(out.size(), 3u);  // 8 * 3 <= 30 < 8 * 4
  out.clear();
  ASSERT_TRUE(wal->entries(group_a, LogIndex{5}, LogIndex{21}, UINT64_MAX, out));
  ASSERT_EQ(out.size(), 16u);
  EXPECT_EQ(out.back().index, LogIndex{20});
}

TEST_F(WalTest, ARemovedGroupIsGoneAndCanStartAgain) {
  auto wal = open();
  append_range(*wal, group_a, 1, 3, 1);
  flush_or_die(*wal);
  ASSERT_TRUE(wal->remove_group(group_a));
  append_range(*wal, group_a, 1, 1, 7);
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_TRUE(flushed.progress[0].removed);
  EXPECT_EQ(wal->last_index(group_a), LogIndex{1});
  EXPECT_EQ(*wal->term(group_a, LogIndex{1}), Term{7});
  ASSERT_TRUE(wal->remove_group(group_a));
  flush_or_die(*wal);
  EXPECT_TRUE(wal->groups().empty());
  wal.reset();
  wal = open();
  EXPECT_TRUE(wal->groups().empty());
}

TEST_F(WalTest, SubmitsPastThePendingLimitAreBusyUntilTheFlush) {
  WalOptions options;
  options.pending_bytes_max = 4096;
  auto wal = open(options);
  std::string payload(1000, 'x');
  uint64_t index = 1;
  while (true) {
    EntryInput entry{Term{1}, LogIndex{index}, 0, payload};
    auto appended = wal->append(group_a, std::span(&entry, 1));
    if (!appended) {
      EXPECT_EQ(appended.error().code, Errc::busy);
      break;
    }
    ++index;
  }
  EXPECT_EQ(index, 4u);  // three fit, the fourth does not
  flush_or_die(*wal);
  EntryInput entry{Term{1}, LogIndex{index}, 0, payload};
  EXPECT_TRUE(wal->append(group_a, std::span(&entry, 1)));
}

TEST_F(WalTest, SegmentsCoveredBySnapshotsAreDeleted) {
  WalOptions options;
  options.segment_size_bytes_target = 4096;
  auto wal = open(options);
  for (uint64_t round = 0; round < 40; ++round) {
    append_range(*wal, group_a, round * 10 + 1, round * 10 + 10, 1);
    append_range(*wal, group_b, round * 10 + 1, round * 10 + 10, 1);
    flush_or_die(*wal);
    // Group a snapshots as it goes; group b keeps everything.
    ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{round * 10 + 10}, Term{1}},
                                   SnapshotMode::compact_prefix, "a"));
  }
  flush_or_die(*wal);
  SpaceStats kept = wal->space();
  EXPECT_EQ(kept.segments_deleted, 0u);  // group b pins the first segment
  EXPECT_EQ(wal->groups_pinning_oldest_segment(10), std::vector<GroupId>{group_b});
  ASSERT_TRUE(wal->save_snapshot(group_b, SnapshotMeta{LogIndex{400}, Term{1}},
                                 SnapshotMode::compact_prefix, "b"));
  for (int i = 0; i < 4; ++i) flush_or_die(*wal);  // snapshot, release record, delete
  SpaceStats after = wal->space();
  EXPECT_GE(after.segments_deleted, 8u);
  EXPECT_LE(after.segment_count, 3u);
  wal.reset();
  wal = open(options);
  EXPECT_EQ(wal->first_index(group_a), LogIndex{401});
  EXPECT_EQ(wal->first_index(group_b), LogIndex{401});
  EXPECT_EQ(*wal->snapshot_data(group_b), "b");
}

TEST_F(WalTest, HardStatesAndSnapshotsAloneAreCarriedForwardSoOldSegmentsGo) {
  WalOptions options;
  options.segment_size_bytes_target = 4096;
  auto wal = open(options);
  // An idle group whose only records are in the first segment.
  ASSERT_TRUE(wal->save_hard_state(group_a, HardState{Term{5}, 1, LogIndex{3}}));
  ASSERT_TRUE(wal->save_snapshot(group_a, SnapshotMeta{LogIndex{3}, Term{5}},
                                 SnapshotMode::replace_log, "idle"));
  flush_or_die(*wal);
  // A busy group that snapshots all the time.
  for (uint64_t round = 0; round < 40; ++round) {
    append_range(*wal, group_b, round * 10 + 1, round * 10 + 10, 1);
    ASSERT_TRUE(wal->save_snapshot(group_b, SnapshotMeta{LogIndex{round * 10 + 10}, Term{1}},
                                   SnapshotMode::compact_prefix, std::string(100, 's')));
    flush_or_die(*wal);
  }
  for (int i = 0; i < 4; ++i) flush_or_die(*wal);
  SpaceStats space = wal->space();
  EXPECT_GT(space.segments_deleted, 5u);
  EXPECT_GT(space.carried_forward_bytes, 0u);
  EXPECT_LE(space.segment_count, 3u);
  wal.reset();
  wal = open(options);
  EXPECT_EQ(*wal->hard_state(group_a), (HardState{Term{5}, 1, LogIndex{3}}));
  EXPECT_EQ(*wal->snapshot_meta(group_a), (SnapshotMeta{LogIndex{3}, Term{5}}));
  EXPECT_EQ(*wal->snapshot_data(group_a), "idle");
  EXPECT_EQ(wal->last_index(group_b), LogIndex{400});
}

TEST_F(WalTest, NoSpaceKeepsTheBatchPendingAndHarmsNothingDurable) {
  auto wal = open();
  append_range(*wal, group_a, 1, 3, 1);
  flush_or_die(*wal);
  append_range(*wal, group_a, 4, 6, 1);
  fs_.fail_next_write(Errc::no_space);
  auto refused = wal->flush();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::no_space);
  EXPECT_FALSE(wal->failed());
  EXPECT_EQ(wal->last_index(group_a), LogIndex{3});
  EXPECT_TRUE(wal->has_pending());
  // The disk has room again: the same batch goes in.
  FlushResult flushed = flush_or_die(*wal);
  EXPECT_EQ(flushed.progress[0].entries_durable_to, LogIndex{6});
  wal.reset();
  fs_.crash({.tear_unsynced = true});
  wal = open();
  EXPECT_EQ(wal->last_index(group_a), LogIndex{6});
  EXPECT_EQ(read_all(*wal, group_a).size(), 6u);
}

TEST_F(WalTest, AFailedFsyncStopsTheLogForGood) {
  auto wal = open();
  append_range(*wal, group_a, 1, 3, 1);
  flush_or_die(*wal);
  append_range(*wal, group_a, 4, 4, 1);
  fs_.fail_next_sync();
  auto flushed = wal->flush();
  ASSERT_FALSE(flushed);
  EXPECT_EQ(flushed.error().code, Errc::io);
  EXPECT_TRUE(wal->failed());
  EXPECT_EQ(wal->last_index(group_a), LogIndex{3});  // not reported, not served
  EntryInput entry{Term{1}, LogIndex{5}, 0, "x"};
  EXPECT_EQ(wal->append(group_a, std::span(&entry, 1)).error().code, Errc::log_failed);
  EXPECT_EQ(wal->flush().error().code, Errc::log_failed);
  // What was durable before stays readable.
  EXPECT_EQ(read_all(*wal, group_a).size(), 3u);
}

TEST_F(WalTest, AnIoErrorOnWriteStopsTheLog) {
  auto wal = open();
  append_range(*wal, group_a, 1, 1, 1);
  fs_.fail_next_write(Errc::io);
  ASSERT_FALSE(wal->flush());
  EXPECT_TRUE(wal->failed());
}

TEST_F(WalTest, APayloadDamagedOnDiskFailsItsGroupWhenRead) {
  auto wal = open();
  append_range(*wal, group_a, 1, 3, 1);
  append_range(*wal, group_b, 1, 3, 1);
  flush_or_die(*wal);
  ASSERT_TRUE(damage_payload(group_a, LogIndex{2}, Term{1}));
  std::vector<Entry> out;
  auto read = wal->entries(group_a, LogIndex{1}, LogIndex{4}, UINT64_MAX, out);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, Errc::corrupt);
  EXPECT_EQ(wal->term(group_a, LogIndex{1}).error().code, Errc::group_failed);
  EXPECT_TRUE(wal->group_failure(group_a));
  EXPECT_EQ(read_all(*wal, group_b).size(), 3u);  // other groups carry on
}

// A group damaged on disk is rebuilt from its peers: its records go, its term and vote (the
// latest hard state, followed past the damage) start it anew in the same batch as the removal,
// so that a reopened log holds it, empty, with them.
TEST_F(WalTest, ADamagedGroupStartsAnewWithItsTermAndVoteInTheBatchOfItsRemoval) {
  auto wal = open();
  append_range(*wal, group_a, 1, 3, 1);
  append_range(*wal, group_b, 1, 3, 1);
  flush_or_die(*wal);
  ASSERT_TRUE(wal->save_hard_state(group_a, HardState{Term{4}, 2, LogIndex{3}}));
  append_range(*wal, group_b, 4, 4, 1);  // (a later batch: the damaged one is not the tail)
  flush_or_die(*wal);
  wal.reset();
  ASSERT_TRUE(damage_payload(group_a, LogIndex{2}, Term{1}));
  wal = open();
  ASSERT_TRUE(wal->group_failure(group_a));
  HardState kept = wal->last_hard_state(group_a);
  EXPECT_EQ(kept.term, Term{4});
  EXPECT_EQ(kept.vote, 2u);
  kept.commit = {};
  ASSERT_TRUE(wal->remove_group(group_a, kept));
  FlushResult flushed = flush_or_die(*wal);
  ASSERT_EQ(flushed.progress.size(), 1u);
  EXPECT_TRUE(flushed.progress[0].removed);
  EXPECT_TRUE(flushed.progress[0].hard_state_durable);
  for (int reopened = 0; reopened < 2; ++reopened) {
    EXPECT_FALSE(wal->group_failure(group_a));
    EXPECT_TRUE(wal->holds(group_a));
    EXPECT_EQ(wal->last_index(group_a), LogIndex{0});
    EXPECT_EQ(*wal->hard_state(group_a), kept);
    EXPECT_EQ(read_all(*wal, group_b).size(), 4u);
    wal.reset();
    wal = open();
  }
}

TEST(WalOnPosix, RealFilesSurviveReopeningAndGrowAsWritten) {
  std::string pattern = (std::filesystem::temp_directory_path() / "hamq-wal-XXXXXX").string();
  ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
  auto fs = make_posix_file_system();
  std::string dir = pattern + "/wal";
  {
    auto wal = open_or_die(*fs, dir);
    for (uint64_t group = 1; group <= 10; ++group) append_range(*wal, GroupId{group}, 1, 100, 1);
    flush_or_die(*wal);
    ASSERT_TRUE(wal->save_hard_state(GroupId{3}, HardState{Term{2}, 1, LogIndex{50}}));
    flush_or_die(*wal);
  }
  {
    RecoveryReport report;
    auto wal = open_or_die(*fs, dir, {}, &report);
    EXPECT_EQ(report.batches, 2u);
    EXPECT_EQ(report.records, 1001u);
    EXPECT_EQ(report.torn_bytes_cut, 0u);
    EXPECT_EQ(read_all(*wal, GroupId{7}).size(), 100u);
    EXPECT_EQ(*wal->hard_state(GroupId{3}), (HardState{Term{2}, 1, LogIndex{50}}));
  }
  std::filesystem::remove_all(pattern);
}

}  // namespace
}  // namespace hamq::storage
