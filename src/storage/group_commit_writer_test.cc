#include "storage/group_commit_writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "storage/fault_file_system.h"
#include "storage/wal_test_util.h"

namespace hamq::storage {
namespace {

using testing_util::append_range;
using testing_util::open_or_die;
using testing_util::read_all;

// Collects what the writer reports durable, and lets a test wait for it.
class DurableLog {
 public:
  void record(const FlushResult& result) {
    std::lock_guard lock(mutex_);
    for (const GroupProgress& progress : result.progress) {
      if (progress.entries_durable_to)
        durable_[progress.group.value] = *progress.entries_durable_to;
    }
    changed_.notify_all();
  }
  bool wait_for(GroupId group, LogIndex index) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(30),
                             [&] { return durable_[group.value] >= index; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<uint64_t, LogIndex> durable_;
};

TEST(GroupCommitWriter, EntriesFromManyThreadsAllBecomeDurableInFewerBatches) {
  FaultFileSystem fs(5);
  auto wal = open_or_die(fs, "wal");
  DurableLog durable;
  GroupCommitWriter writer(*wal, [&](const FlushResult& result) { durable.record(result); });
  constexpr uint64_t threads = 4;
  constexpr uint64_t groups_per_thread = 25;
  constexpr uint64_t entries_per_group = 40;
  std::vector<std::thread> producers;
  for (uint64_t thread = 0; thread < threads; ++thread) {
    producers.emplace_back([&, thread] {
      for (uint64_t index = 1; index <= entries_per_group; ++index) {
        for (uint64_t g = 0; g < groups_per_thread; ++g) {
          append_range(*wal, GroupId{thread * groups_per_thread + g + 1}, index, index, 1);
        }
        writer.notify();
      }
    });
  }
  for (auto& producer : producers) producer.join();
  for (uint64_t group = 1; group <= threads * groups_per_thread; ++group) {
    ASSERT_TRUE(durable.wait_for(GroupId{group}, LogIndex{entries_per_group})) << group;
    EXPECT_EQ(read_all(*wal, GroupId{group}).size(), entries_per_group);
  }
  // Group commit: far fewer fsyncs than submits.
  EXPECT_LT(writer.batches_written(), threads * entries_per_group * groups_per_thread);
}

TEST(GroupCommitWriter, ReadersSeeIntactEntriesWhileTheWriterFlushesAndDeletesSegments) {
  FaultFileSystem fs(8);
  WalOptions options;
  options.segment_size_bytes_target = 4096;
  auto wal = open_or_die(fs, "wal", options);
  DurableLog durable;
  GroupCommitWriter writer(*wal, [&](const FlushResult& result) { durable.record(result); });
  constexpr uint64_t entries_total = 3000;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> reads{0};
  std::thread reader([&] {
    while (!done) {
      LogIndex first = wal->first_index(GroupId{1});
      LogIndex last = wal->last_index(GroupId{1});
      std::vector<Entry> out;
      auto read = wal->entries(GroupId{1}, first, last + 1, 64 * 1024, out);
      if (!read) {
        // Compacted between the two calls is an ordinary answer; anything else is a bug.
        ASSERT_EQ(read.error().code, Errc::compacted) << read.error().detail;
        continue;
      }
      for (const Entry& entry : out) {
        ASSERT_EQ(entry.payload, testing_util::payload_of(GroupId{1}, entry.index, Term{1}));
      }
      ++reads;
    }
  });
  for (uint64_t index = 1; index <= entries_total; ++index) {
    append_range(*wal, GroupId{1}, index, index, 1);
    writer.notify();
    if (index % 100 == 0) {
      ASSERT_TRUE(wal->save_snapshot(GroupId{1}, SnapshotMeta{LogIndex{index - 50}, Term{1}},
                                     SnapshotMode::compact_prefix, "s"));
      // Many batches, so that segments fill and roll (one batch never spans two).
      ASSERT_TRUE(durable.wait_for(GroupId{1}, LogIndex{index}));
    }
  }
  ASSERT_TRUE(durable.wait_for(GroupId{1}, LogIndex{entries_total}));
  // The writer goes on by itself with the release record and the deletions; let the reader have
  // its turns too (a bound, not a timing assertion).
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((wal->space().segments_deleted == 0 || reads < 10) &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  done = true;
  reader.join();
  EXPECT_GE(reads.load(), 10u);
  EXPECT_GT(wal->space().segments_deleted, 0u);
  EXPECT_FALSE(wal->group_failure(GroupId{1}));
}

TEST(GroupCommitWriter, NoSpaceIsRetriedUntilTheBatchGoesIn) {
  FaultFileSystem fs(6);
  auto wal = open_or_die(fs, "wal");
  DurableLog durable;
  GroupCommitWriter writer(*wal, [&](const FlushResult& result) { durable.record(result); });
  fs.fail_next_write(Errc::no_space);
  append_range(*wal, GroupId{1}, 1, 5, 1);
  writer.notify();
  ASSERT_TRUE(durable.wait_for(GroupId{1}, LogIndex{5}));
  EXPECT_FALSE(wal->failed());
}

TEST(GroupCommitWriter, AFailedFsyncIsReportedOnceAndTheWriterStops) {
  FaultFileSystem fs(7);
  auto wal = open_or_die(fs, "wal");
  std::mutex mutex;
  std::condition_variable failed;
  std::vector<Errc> failures;
  size_t flushes = 0;
  GroupCommitWriter writer(
      *wal,
      [&](const FlushResult&) {
        std::lock_guard lock(mutex);
        ++flushes;
        failed.notify_all();
      },
      [&](const Error& error) {
        std::lock_guard lock(mutex);
        failures.push_back(error.code);
        failed.notify_all();
      });
  append_range(*wal, GroupId{1}, 1, 1, 1);
  writer.notify();
  {
    // The first batch is synced before the next sync is made to fail (taken is not enough: its
    // own sync could be the one that fails).
    std::unique_lock lock(mutex);
    ASSERT_TRUE(failed.wait_for(lock, std::chrono::seconds(30), [&] { return flushes > 0; }));
  }
  fs.fail_next_sync();
  append_range(*wal, GroupId{1}, 2, 2, 1);
  writer.notify();
  std::unique_lock lock(mutex);
  ASSERT_TRUE(failed.wait_for(lock, std::chrono::seconds(30), [&] { return !failures.empty(); }));
  EXPECT_EQ(failures, std::vector<Errc>{Errc::io});
  EXPECT_TRUE(wal->failed());
}

}  // namespace
}  // namespace hamq::storage
