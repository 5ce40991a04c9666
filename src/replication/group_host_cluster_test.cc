// Raft groups of several members on the production driver: three nodes, each a GroupHost over
// its own Wal, their messages carried in node-to-node batches (raft::Outbox, expand) as the
// runtime's link carries them. Rounds are deterministic: tick, process, flush, deliver.
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "raft/coalescer.h"
#include "replication/group_host.h"
#include "storage/memory_file_system.h"

namespace hamq::replication {
namespace {

constexpr raft::GroupId group{5};
constexpr int rounds_max = 2000;

struct Member {
  Member(raft::NodeId node, storage::FileSystem& disk) : id(node), fs(disk), outbox(node) {
    open();
  }

  void open() {
    auto opened = storage::Wal::open(fs, "wal");
    ASSERT_TRUE(opened.ok()) << opened.error().detail;
    wal = std::move(opened.value());
    host = std::make_unique<GroupHost>(
        *wal, id, 1, raft::Config{},
        GroupHostCallbacks{
            .send = [this](const raft::Message& message) { outbox.add(message); },
            .restore = [this](raft::GroupId, const raft::SnapshotMeta&,
                              const std::string& data) { applied = {"snapshot:" + data}; },
            .apply =
                [this](raft::GroupId, const raft::Entry& entry) {
                  if (!entry.data.empty()) applied.push_back(entry.data);
                }});
    up = true;
  }
  // The process stops; its disk stays (a memory file system keeps everything written).
  void stop() {
    host.reset();
    wal.reset();
    outbox.take();
    up = false;
  }
  raft::Raft* raft() { return up ? host->find(group) : nullptr; }

  raft::NodeId id;
  storage::FileSystem& fs;
  raft::Outbox outbox;
  std::unique_ptr<storage::Wal> wal;
  std::unique_ptr<GroupHost> host;
  std::vector<std::string> applied;
  bool up = false;
};

class ThreeMembers : public ::testing::Test {
 protected:
  ThreeMembers() {
    for (uint64_t id = 1; id <= 3; ++id) {
      disks.push_back(std::make_unique<storage::MemoryFileSystem>());
      members.push_back(std::make_unique<Member>(raft::NodeId{id}, *disks.back()));
    }
  }
  void SetUp() override {
    raft::ConfState conf{.voters = {raft::NodeId{1}, raft::NodeId{2}, raft::NodeId{3}},
                         .learners = {}};
    for (auto& member : members) ASSERT_TRUE(member->host->create_group(group, conf, "").ok());
  }

  // One round: every live member ticks, takes its Readies and flushes them, then what they sent
  // is delivered to the live members.
  void round() {
    for (auto& member : members) {
      if (!member->up) continue;
      member->host->tick();
      for (int i = 0; i < 4; ++i) {
        member->host->process();
        if (!member->wal->has_pending()) break;
        ASSERT_TRUE(member->host->flush_now().ok());
      }
    }
    for (auto& member : members) {
      if (!member->up) continue;
      for (const raft::NodeBatch& batch : member->outbox.take()) {
        Member& to = *members[batch.to.value - 1];
        if (!to.up) continue;
        for (const raft::Message& message : raft::expand(batch)) to.host->step(message);
      }
    }
  }
  bool run_until(const std::function<bool()>& condition) {
    for (int i = 0; i < rounds_max; ++i) {
      if (condition()) return true;
      round();
    }
    return condition();
  }
  Member* leader() {
    for (auto& member : members) {
      if (member->raft() && member->raft()->role() == raft::Role::leader) return member.get();
    }
    return nullptr;
  }
  void propose(int count, const std::string& prefix) {
    ASSERT_TRUE(run_until([&] { return leader() != nullptr; }));
    for (int i = 0; i < count; ++i) {
      auto proposed = leader()->host->propose(group, prefix + std::to_string(i));
      ASSERT_TRUE(proposed.ok());
    }
  }
  bool all_applied(size_t count) {
    for (auto& member : members) {
      // After the founding snapshot's restore ("snapshot:").
      if (member->up && member->applied.size() < count + 1) return false;
    }
    return true;
  }

  std::vector<std::unique_ptr<storage::MemoryFileSystem>> disks;
  std::vector<std::unique_ptr<Member>> members;
};

TEST_F(ThreeMembers, ElectALeaderAndApplyTheSameEntries) {
  propose(50, "a");
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  EXPECT_EQ(members[0]->applied, members[1]->applied);
  EXPECT_EQ(members[1]->applied, members[2]->applied);
  EXPECT_EQ(members[0]->applied[1], "a0");
}

TEST_F(ThreeMembers, MembersOfAGroupDrawTheirElectionTimeoutsApart) {
  // Members that drew the same timeout would campaign in the same tick, split the vote and do it
  // again: cut off from each other, each member of each group campaigns when its own timeout runs
  // out, and those ticks must differ between members.
  raft::ConfState conf{.voters = {raft::NodeId{1}, raft::NodeId{2}, raft::NodeId{3}},
                       .learners = {}};
  std::map<std::pair<uint64_t, uint64_t>, int> campaigned_at;  // (group, member) -> tick
  for (uint64_t id = 100; id < 120; ++id) {
    for (auto& member : members) {
      ASSERT_TRUE(member->host->create_group(raft::GroupId{id}, conf, "").ok());
    }
  }
  for (int tick = 1; tick <= 100; ++tick) {
    for (auto& member : members) {
      member->host->tick();
      member->host->process();
      ASSERT_TRUE(member->host->flush_now().ok());
      member->outbox.take();  // nothing is delivered
      for (uint64_t id = 100; id < 120; ++id) {
        auto key = std::make_pair(id, member->id.value);
        if (member->host->find(raft::GroupId{id})->role() != raft::Role::follower &&
            !campaigned_at.contains(key)) {
          campaigned_at[key] = tick;
        }
      }
    }
  }
  ASSERT_EQ(campaigned_at.size(), 60u);
  int groups_drawn_apart = 0;
  for (uint64_t id = 100; id < 120; ++id) {
    int a = campaigned_at[{id, 1}], b = campaigned_at[{id, 2}], c = campaigned_at[{id, 3}];
    if (a != b || b != c) ++groups_drawn_apart;
  }
  EXPECT_GE(groups_drawn_apart, 15);
}

TEST_F(ThreeMembers, AMemberThatWasDownCatchesUpFromItsDiskAndTheLog) {
  propose(20, "a");
  ASSERT_TRUE(run_until([&] { return all_applied(20); }));
  Member& down = leader() == members[2].get() ? *members[0] : *members[2];
  down.stop();
  propose(30, "b");  // two of three commit
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  down.applied.clear();
  down.open();
  ASSERT_TRUE(down.host->open_group(group));
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  for (auto& member : members) EXPECT_EQ(member->applied, members[0]->applied);
}

TEST_F(ThreeMembers, AMemberTooFarBehindGetsTheLeadersSnapshot) {
  propose(10, "a");
  ASSERT_TRUE(run_until([&] { return all_applied(10); }));
  Member& down = leader() == members[2].get() ? *members[0] : *members[2];
  down.stop();
  propose(40, "b");
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  // The live members compact: their logs no longer hold what the one that was down lacks.
  for (auto& member : members) {
    if (member->up) {
      ASSERT_TRUE(member->host->compact(group, "state-after-50").ok());
    }
  }
  ASSERT_TRUE(run_until([&] { return !leader()->wal->has_pending(); }));
  propose(5, "c");
  down.applied.clear();
  down.open();
  ASSERT_TRUE(down.host->open_group(group));
  ASSERT_TRUE(run_until([&] { return down.applied.size() == 6 && down.applied.back() == "c4"; }));
  EXPECT_EQ(down.applied.front(), "snapshot:state-after-50");
}

}  // namespace
}  // namespace hamq::replication
