// Raft groups on the node's write-ahead log: what is applied survives a restart (real files and
// fsync) and a crash at a random point (the fault-injecting file system); many groups share one
// fsync per batch.
#include "replication/group_host.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <vector>

#include "storage/fault_file_system.h"
#include "storage/file_system.h"

namespace hamq::replication {
namespace {

constexpr raft::NodeId self{1};

// A node: its Wal and GroupHost, and what its groups applied.
struct Node {
  explicit Node(storage::FileSystem& fs, std::string dir = "wal") {
    auto opened = storage::Wal::open(fs, dir);
    EXPECT_TRUE(opened.ok()) << (opened.ok() ? "" : opened.error().detail);
    wal = std::move(opened.value());
    host = std::make_unique<GroupHost>(
        *wal, self, 1, raft::Config{},
        GroupHostCallbacks{
            .send = [](const raft::Message&) {},
            .restore = [this](raft::GroupId group, const raft::SnapshotMeta&,
                              const std::string& data) { applied[group] = {"snapshot:" + data}; },
            .apply =
                [this](raft::GroupId group, const raft::Entry& entry) {
                  if (!entry.data.empty()) applied[group].push_back(entry.data);
                },
            .expand_snapshot = {},
            .role_changed = {},
            .damaged = {}});
  }

  // Flushes until nothing is in flight (the group commit of a runtime, made synchronous).
  void settle() {
    for (int i = 0; i < 100; ++i) {
      host->process();
      if (!wal->has_pending()) return;
      auto flushed = host->flush_now();
      if (!flushed.ok()) return;
    }
  }

  std::unique_ptr<storage::Wal> wal;
  std::unique_ptr<GroupHost> host;
  std::map<raft::GroupId, std::vector<std::string>> applied;
};

raft::ConfState alone() {
  return raft::ConfState{.voters = {self}, .learners = {}};
}

TEST(GroupHost, SingleMemberGroupCommitsAndSurvivesARestartOnRealFiles) {
  auto dir =
      std::filesystem::temp_directory_path() / ("hamq-group-host-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto fs = storage::make_posix_file_system();
  std::vector<std::string> expected{"snapshot:initial"};
  {
    Node node(*fs, dir.string());
    ASSERT_TRUE(node.host->create_group(raft::GroupId{7}, alone(), "initial").ok());
    node.settle();
    ASSERT_EQ(node.host->find(raft::GroupId{7})->role(), raft::Role::leader);
    for (int i = 0; i < 100; ++i) {
      std::string command = "c" + std::to_string(i);
      ASSERT_TRUE(node.host->propose(raft::GroupId{7}, command).ok());
      expected.push_back(command);
      if (i % 10 == 9) node.settle();
    }
    node.settle();
    EXPECT_EQ(node.applied[raft::GroupId{7}], expected);
  }
  Node restarted(*fs, dir.string());
  restarted.host->open_existing_groups();
  restarted.settle();
  // The snapshot is restored and every committed command replayed, in order.
  EXPECT_EQ(restarted.applied[raft::GroupId{7}], expected);
  ASSERT_TRUE(restarted.host->propose(raft::GroupId{7}, "after").ok());
  restarted.settle();
  EXPECT_EQ(restarted.applied[raft::GroupId{7}].back(), "after");
  std::filesystem::remove_all(dir);
}

TEST(GroupHost, ACompactedGroupRestartsFromItsSnapshotAndTheEntriesAfterIt) {
  storage::FaultFileSystem fs(3);
  {
    Node node(fs);
    ASSERT_TRUE(node.host->create_group(raft::GroupId{5}, alone(), "").ok());
    node.settle();
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(node.host->propose(raft::GroupId{5}, "a").ok());
    node.settle();
    ASSERT_TRUE(node.host->compact(raft::GroupId{5}, "fifty").ok());
    node.settle();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(node.host->propose(raft::GroupId{5}, "b").ok());
    node.settle();
    EXPECT_GT(node.wal->first_index(storage::GroupId{5}).value, 50u);
  }
  Node restarted(fs);
  restarted.host->open_existing_groups();
  restarted.settle();
  EXPECT_EQ(restarted.applied[raft::GroupId{5}],
            (std::vector<std::string>{"snapshot:fifty", "b", "b", "b"}));
}

TEST(GroupHost, AThousandGroupsShareEachFsync) {
  storage::FaultFileSystem fs(1);
  Node node(fs);
  for (uint64_t g = 1; g <= 1000; ++g) {
    ASSERT_TRUE(node.host->create_group(raft::GroupId{g}, alone(), "").ok());
  }
  node.settle();
  uint64_t syncs_before = fs.operation_count();
  for (uint64_t g = 1; g <= 1000; ++g) {
    ASSERT_TRUE(node.host->propose(raft::GroupId{g}, "x").ok());
  }
  int flushes = 0;
  for (; flushes < 10; ++flushes) {
    node.host->process();
    if (!node.wal->has_pending()) break;
    ASSERT_TRUE(node.host->flush_now().ok());
  }
  for (uint64_t g = 1; g <= 1000; ++g) {
    EXPECT_EQ(node.applied[raft::GroupId{g}].back(), "x") << g;
  }
  // The proposals of all groups went out in one batch, then their commit indexes in one more.
  EXPECT_LE(flushes, 2);
  EXPECT_LT(fs.operation_count() - syncs_before, 20u);
}

TEST(GroupHost, WhatWasAppliedSurvivesACrashAtAnyPoint) {
  std::mt19937_64 random(42);
  int crash_points = 0;
  uint64_t applied_total = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    storage::FaultFileSystem fs(seed);
    std::map<raft::GroupId, std::vector<std::string>> applied_before_crash;
    {
      Node node(fs);
      for (uint64_t g = 1; g <= 3; ++g) {
        ASSERT_TRUE(node.host->create_group(raft::GroupId{g}, alone(), "").ok());
      }
      node.settle();
      fs.stop_after(random() % 200);  // the machine dies at a random write, sync or create
      for (int i = 0; i < 60 && !fs.stopped(); ++i) {
        raft::GroupId group{1 + random() % 3};
        (void)node.host->propose(group, "s" + std::to_string(seed) + "-" + std::to_string(i));
        node.host->process();
        if (random() % 3 == 0) (void)node.host->flush_now();
      }
      applied_before_crash = node.applied;
      for (const auto& [group, commands] : node.applied) applied_total += commands.size();
    }
    fs.crash({});
    ++crash_points;
    Node restarted(fs);
    restarted.host->open_existing_groups();
    restarted.settle();
    for (const auto& [group, commands] : applied_before_crash) {
      const auto& now = restarted.applied[group];
      // Everything applied before the crash was durable: it comes back, in the same order (and
      // possibly more that was durable but not yet applied).
      ASSERT_GE(now.size(), commands.size()) << "seed " << seed;
      EXPECT_TRUE(std::equal(commands.begin(), commands.end(), now.begin())) << "seed " << seed;
    }
  }
  EXPECT_EQ(crash_points, 200);
  EXPECT_GT(applied_total, 2000u);  // the crashes hit a busy node, not an idle one
}

}  // namespace
}  // namespace hamq::replication
