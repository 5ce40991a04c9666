// Raft groups of several members on the production driver: three nodes, each a GroupHost over
// its own Wal, their messages carried in node-to-node batches (raft::Outbox, expand) as the
// runtime's link carries them. Rounds are deterministic: tick, process, flush, deliver.
//
// The last test is a seeded simulation on that driver: writes that wait for their flush,
// crashes that lose unsynced writes (torn at random) or stop a node in the middle of its writes,
// partitions, lost and delayed batches, while a client proposes; then the faults stop and every
// member must converge. It checks that members never apply different entries at the same place, and
// that nothing applied anywhere (committed) is missing in the end. HAMQ_GROUP_HOST_SIM_SEEDS sets
// how many seeds it runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "raft/coalescer.h"
#include "replication/group_host.h"
#include "storage/fault_file_system.h"
#include "storage/memory_file_system.h"

namespace hamq::replication {
namespace {

constexpr raft::GroupId group{5};
constexpr int rounds_max = 2000;

raft::ConfState three_voters() {
  return raft::ConfState{.voters = {raft::NodeId{1}, raft::NodeId{2}, raft::NodeId{3}},
                         .learners = {}};
}

struct Member {
  Member(raft::NodeId node, storage::FileSystem& disk) : id(node), fs(disk), outbox(node) {
    open();
  }

  // Starts the process on its disk; what it applies from then on is recorded anew (a restart
  // replays its log from the founding snapshot).
  void open() {
    auto opened = storage::Wal::open(fs, "wal");
    ASSERT_TRUE(opened.ok()) << opened.error().detail;
    wal = std::move(opened.value());
    applied.clear();
    host = std::make_unique<GroupHost>(
        *wal, id, 1, raft::Config{},
        GroupHostCallbacks{
            .send = [this](const raft::Message& message) { outbox.add(message); },
            .restore = [this](raft::GroupId to, const raft::SnapshotMeta&,
                              const std::string& data) { applied[to] = {"snapshot:" + data}; },
            .apply =
                [this](raft::GroupId to, const raft::Entry& entry) {
                  if (!entry.data.empty()) applied[to].push_back(entry.data);
                },
            // A snapshot "ref:X" refers to this member's log: sent, it is "whole:X" and 3 MB
            // of what the references stood for (several chunks); any other is sent as it is.
            .expand_snapshot = [this](raft::GroupId,
                                      std::string_view data) -> std::optional<std::string> {
              if (!data.starts_with("ref:")) return std::string(data);
              ++expansions;
              if (cannot_expand) return std::nullopt;
              return "whole:" + std::string(data.substr(4)) + std::string(3 << 20, '.');
            },
            .role_changed = {},
            // Rebuilt from the other members, as the server does with a group that has some.
            .damaged =
                [this](raft::GroupId of) {
                  damaged.push_back(of);
                  EXPECT_TRUE(host->rebuild_group(of).ok());
                }});
    up = true;
  }
  // The process stops; its disk keeps what it synced (or, for a memory file system, all).
  void stop() {
    host.reset();
    wal.reset();
    outbox.take();
    up = false;
  }
  raft::Raft* raft(raft::GroupId of = group) { return up ? host->find(of) : nullptr; }
  bool leads(raft::GroupId of) {
    return raft(of) != nullptr && raft(of)->role() == raft::Role::leader;
  }
  // One turn of its loop: tick, then Readies and their flush until nothing is pending. False if
  // the log failed (the process must restart).
  bool turn() {
    host->tick();
    for (int i = 0; i < 4; ++i) {
      host->process();
      if (!wal->has_pending()) break;
      if (!host->flush_now().ok()) return false;
    }
    return !host->failed();
  }

  raft::NodeId id;
  storage::FileSystem& fs;
  raft::Outbox outbox;
  std::unique_ptr<storage::Wal> wal;
  std::unique_ptr<GroupHost> host;
  std::map<raft::GroupId, std::vector<std::string>> applied;
  bool up = false;
  int expansions = 0;
  bool cannot_expand = false;          // the expander answers nothing (a body cannot be read now)
  std::vector<raft::GroupId> damaged;  // told by the damaged callback
};

// Changes a byte inside the first record of the log on `fs` whose payload holds `needle` (bit
// rot, or a bad sector read back): its checksum no longer matches.
bool damage_record(storage::FileSystem& fs, std::string_view needle) {
  auto names = fs.list("wal");
  if (!names.ok()) return false;
  for (const std::string& name : *names) {
    std::string path = "wal/" + name;
    auto file = fs.open(path, storage::OpenMode::open_existing);
    if (!file.ok()) continue;
    std::string bytes;
    if (!(*file)->read(0, (*file)->size(), bytes).ok()) continue;
    size_t at = bytes.find(needle);
    if (at == std::string::npos) continue;
    bytes[at + needle.size() - 1] ^= 0x20;
    return (*file)->truncate(0).ok() && (*file)->append(bytes).ok() && (*file)->sync().ok();
  }
  return false;
}

class ThreeMembers : public ::testing::Test {
 protected:
  ThreeMembers() {
    for (uint64_t id = 1; id <= 3; ++id) {
      disks.push_back(std::make_unique<storage::MemoryFileSystem>());
      members.push_back(std::make_unique<Member>(raft::NodeId{id}, *disks.back()));
    }
  }
  void SetUp() override {
    for (auto& member : members) {
      ASSERT_TRUE(member->host->create_group(group, three_voters(), "").ok());
    }
  }

  // One round: every live member takes a turn, then what they sent is delivered.
  void round() {
    for (auto& member : members) {
      if (member->up) {
        ASSERT_TRUE(member->turn());
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
      if (member->leads(group)) return member.get();
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
      if (member->up && member->applied[group].size() < count + 1) return false;
    }
    return true;
  }

  std::vector<std::unique_ptr<storage::MemoryFileSystem>> disks;
  std::vector<std::unique_ptr<Member>> members;
};

TEST_F(ThreeMembers, ElectALeaderAndApplyTheSameEntries) {
  propose(50, "a");
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  EXPECT_EQ(members[0]->applied[group], members[1]->applied[group]);
  EXPECT_EQ(members[1]->applied[group], members[2]->applied[group]);
  EXPECT_EQ(members[0]->applied[group][1], "a0");
}

TEST_F(ThreeMembers, MembersOfAGroupDrawTheirElectionTimeoutsApart) {
  // Members that drew the same timeout would campaign in the same tick, split the vote and do it
  // again: cut off from each other, each member of each group campaigns when its own timeout runs
  // out, and those ticks must differ between members.
  std::map<std::pair<uint64_t, uint64_t>, int> campaigned_at;  // (group, member) -> tick
  for (uint64_t id = 100; id < 120; ++id) {
    for (auto& member : members) {
      ASSERT_TRUE(member->host->create_group(raft::GroupId{id}, three_voters(), "").ok());
    }
  }
  for (int tick = 1; tick <= 100; ++tick) {
    for (auto& member : members) {
      ASSERT_TRUE(member->turn());
      member->outbox.take();  // nothing is delivered
      for (uint64_t id = 100; id < 120; ++id) {
        auto key = std::make_pair(id, member->id.value);
        if (member->raft(raft::GroupId{id})->role() != raft::Role::follower &&
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
  down.open();
  ASSERT_TRUE(down.host->open_group(group));
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  for (auto& member : members) EXPECT_EQ(member->applied[group], members[0]->applied[group]);
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
  down.open();
  ASSERT_TRUE(down.host->open_group(group));
  const auto& caught_up = down.applied[group];
  ASSERT_TRUE(run_until([&] { return caught_up.size() == 6 && caught_up.back() == "c4"; }));
  EXPECT_EQ(caught_up.front(), "snapshot:state-after-50");
}

// A member whose log was damaged while its node was down (a record's bytes changed: its
// checksum fails) is not started with it. Rebuilt, it drops what it held of the group and joins
// again, empty, and takes the others' log; it votes only once it has what was committed. A
// restart then opens it as any member.
TEST_F(ThreeMembers, AMemberWhoseLogWasDamagedIsRebuiltFromTheOthers) {
  propose(10, "entry-");
  ASSERT_TRUE(run_until([&] { return all_applied(10); }));
  propose(10, "more-");  // (later batches: entry-7's is not a torn tail, cut as unsynced)
  ASSERT_TRUE(run_until([&] { return all_applied(20); }));
  Member& damaged = leader() == members[2].get() ? *members[0] : *members[2];
  Member& other = leader() == members[1].get() ? *leader() : *members[1];
  raft::Term term_before = damaged.raft()->term();
  raft::NodeId vote_before = damaged.raft()->vote();
  damaged.stop();
  ASSERT_TRUE(damage_record(damaged.fs, "entry-7"));
  propose(10, "later-");
  ASSERT_TRUE(run_until([&] { return all_applied(30); }));
  damaged.open();
  EXPECT_FALSE(damaged.host->open_group(group));
  ASSERT_TRUE(damaged.wal->group_failure(storage::GroupId{group.value}).has_value());
  ASSERT_TRUE(damaged.host->rebuild_group(group).ok());
  // Its entries are gone, its term and vote kept (it never votes twice in a term).
  ASSERT_TRUE(damaged.host->flush_now().ok());
  ASSERT_NE(damaged.raft(), nullptr);
  EXPECT_TRUE(damaged.raft()->catching_up());
  EXPECT_EQ(damaged.raft()->log().last_index(), raft::LogIndex{0});
  EXPECT_EQ(damaged.raft()->term(), term_before);
  EXPECT_EQ(damaged.raft()->vote(), vote_before);
  // (No new entry comes meanwhile: its heartbeats' answers tell the leader it has nothing.)
  ASSERT_TRUE(run_until([&] {
    return damaged.raft() != nullptr && !damaged.raft()->catching_up() &&
           damaged.applied[group] == other.applied[group];
  }));
  EXPECT_EQ(damaged.host->rebuilding(), 0u);
  EXPECT_FALSE(damaged.wal->group_failure(storage::GroupId{group.value}).has_value());
  EXPECT_EQ(damaged.applied[group][8], "entry-7");
  propose(5, "after-");
  ASSERT_TRUE(run_until([&] { return all_applied(35); }));
  damaged.stop();
  damaged.open();
  ASSERT_TRUE(damaged.host->open_group(group));
  ASSERT_TRUE(run_until([&] { return damaged.applied[group] == other.applied[group]; }));
}

// A record found damaged while the member runs (the leader reads an entry back to send it to a
// member that was down) stops that member alone, silent: it neither leads nor votes with what it
// lost, and the log carries on without failing the node's other groups. Rebuilt from the others,
// it has every entry again.
TEST_F(ThreeMembers, ARecordFoundDamagedWhileRunningStopsThatMemberWhichIsRebuilt) {
  constexpr raft::GroupId second{6};
  for (auto& member : members) {
    ASSERT_TRUE(member->host->create_group(second, three_voters(), "").ok());
  }
  propose(10, "entry-");
  ASSERT_TRUE(run_until([&] { return all_applied(10); }));
  Member* first_leader = leader();
  Member& behind = first_leader == members[2].get() ? *members[0] : *members[2];
  behind.stop();
  propose(10, "missed-");
  ASSERT_TRUE(run_until([&] { return all_applied(20); }));
  ASSERT_TRUE(damage_record(first_leader->fs, "missed-3"));
  behind.open();
  ASSERT_TRUE(behind.host->open_group(group));
  ASSERT_TRUE(behind.host->open_group(second));
  ASSERT_TRUE(run_until([&] { return !first_leader->damaged.empty(); }));
  EXPECT_EQ(first_leader->damaged, std::vector<raft::GroupId>{group});
  ASSERT_TRUE(run_until([&] {
    return all_applied(20) && first_leader->raft() != nullptr &&
           !first_leader->raft()->catching_up() && leader() != nullptr;
  }));
  for (auto& member : members) EXPECT_EQ(member->applied[group], members[0]->applied[group]);
  EXPECT_FALSE(first_leader->host->failed());
  // The node's other group was never touched.
  ASSERT_NE(first_leader->raft(second), nullptr);
  EXPECT_FALSE(first_leader->raft(second)->failed());
}

TEST_F(ThreeMembers, ASnapshotThatRefersToTheLeadersLogIsSentSelfContained) {
  propose(10, "a");
  ASSERT_TRUE(run_until([&] { return all_applied(10); }));
  Member& down = leader() == members[2].get() ? *members[0] : *members[2];
  down.stop();
  propose(40, "b");
  ASSERT_TRUE(run_until([&] { return all_applied(50); }));
  for (auto& member : members) {
    if (member->up) {
      ASSERT_TRUE(member->host->compact(group, "ref:state-after-50").ok());
    }
  }
  ASSERT_TRUE(run_until([&] { return !leader()->wal->has_pending(); }));
  Member& sender = *leader();
  // The expander cannot make it yet: nothing that refers to the leader's log is sent meanwhile.
  sender.cannot_expand = true;
  down.open();
  ASSERT_TRUE(down.host->open_group(group));
  for (int i = 0; i < 200; ++i) round();
  EXPECT_GT(sender.expansions, 0);
  // What it had on its disk (its founding snapshot, then a0..a9), and nothing since.
  ASSERT_EQ(down.applied[group].size(), 11u);
  EXPECT_EQ(down.applied[group].front(), "snapshot:");
  sender.cannot_expand = false;
  int refused = sender.expansions;
  const auto& caught_up = down.applied[group];
  ASSERT_TRUE(run_until([&] { return caught_up.front() != "snapshot:"; }));
  ASSERT_TRUE(caught_up.front().starts_with("snapshot:whole:state-after-50"));
  EXPECT_EQ(caught_up.front().size(),
            std::string("snapshot:whole:state-after-50").size() + (3 << 20));
  propose(5, "c");
  ASSERT_TRUE(run_until([&] { return caught_up.size() == 6 && caught_up.back() == "c4"; }));
  // Made once for the whole send (3 MB: several chunks), and the leader keeps its own as it was.
  EXPECT_EQ(sender.expansions, refused + 1);
  EXPECT_EQ(*sender.wal->snapshot_data(storage::GroupId{group.value}),
            encode_snapshot_payload(three_voters(), "ref:state-after-50"));
}

// The seeded simulation ------------------------------------------------------------------------

constexpr raft::GroupId sim_groups[] = {raft::GroupId{1}, raft::GroupId{2}};
constexpr int fault_rounds = 1500;
constexpr int liveness_rounds_max = 3000;

struct InFlight {
  int due_round;
  raft::NodeBatch batch;
};

class FaultSimulation {
 public:
  explicit FaultSimulation(uint64_t seed) : seed_(seed), random_(seed) {
    for (uint64_t id = 1; id <= 3; ++id) {
      disks_.push_back(std::make_unique<storage::FaultFileSystem>(seed * 16 + id));
      members_.push_back(std::make_unique<Member>(raft::NodeId{id}, *disks_.back()));
      for (raft::GroupId of : sim_groups) {
        EXPECT_TRUE(members_.back()->host->create_group(of, three_voters(), "").ok());
      }
      down_until_.push_back(0);
      isolated_until_.push_back(0);
    }
  }

  // Returns the first checker failure, or empty.
  std::string run() {
    for (round_ = 0; round_ < fault_rounds && failure_.empty(); ++round_) {
      inject_faults();
      client();
      step(/*faults=*/true);
      if (round_ % 50 == 0) check_agreement();
    }
    // Faults stop: every member comes back and must converge, with a last command each group
    // commits everywhere.
    for (size_t i = 0; i < members_.size(); ++i) {
      down_until_[i] = 0;
      isolated_until_[i] = 0;
      if (!members_[i]->up) restart(i);
    }
    // A leader can lose its office before its last command commits: a new one is proposed now
    // and then until one of them is applied everywhere.
    std::map<raft::GroupId, std::vector<std::string>> last;
    bool done = false;
    for (int rounds = 0; rounds < liveness_rounds_max && failure_.empty() && !done;
         ++rounds, ++round_) {
      if (rounds % 100 == 0) {
        for (raft::GroupId of : sim_groups) {
          for (auto& member : members_) {
            std::string command = "last-" + std::to_string(of.value) + "-" + std::to_string(rounds);
            if (member->leads(of) && member->host->propose(of, command).ok()) {
              last[of].push_back(command);
            }
          }
        }
      }
      step(/*faults=*/false);
      done = converged(last);
    }
    check_agreement();
    if (failure_.empty() && !done) failure_ = "no convergence after the faults stopped";
    // Then, with no more proposals, every member gets whatever was committed after it.
    for (int rounds = 0; rounds < liveness_rounds_max && failure_.empty() && !has_all_committed();
         ++rounds, ++round_) {
      step(/*faults=*/false);
    }
    check_agreement();
    if (failure_.empty()) check_nothing_committed_lost();
    return failure_.empty() ? "" : "seed " + std::to_string(seed_) + ": " + failure_;
  }

  uint64_t crashes() const { return crashes_; }
  uint64_t committed() const { return committed_.size(); }

 private:
  bool chance(double probability) {
    return std::uniform_real_distribution<double>(0, 1)(random_) < probability;
  }
  size_t pick(size_t count) { return random_() % count; }

  void restart(size_t i) {
    Member& member = *members_[i];
    member.open();
    member.host->open_existing_groups();
  }

  void crash(size_t i, bool mid_write) {
    Member& member = *members_[i];
    if (!member.up) return;
    ++crashes_;
    if (mid_write) {
      // The machine dies within its next few writes and syncs.
      disks_[i]->stop_after(random_() % 6);
      (void)member.host->flush_now();
    }
    record_applied(i);
    member.stop();
    disks_[i]->crash({.tear_unsynced = true});
    down_until_[i] = round_ + 1 + static_cast<int>(random_() % 40);
  }

  void inject_faults() {
    for (size_t i = 0; i < members_.size(); ++i) {
      if (!members_[i]->up && round_ >= down_until_[i]) restart(i);
    }
    if (chance(0.01)) crash(pick(members_.size()), chance(0.5));
    if (chance(0.01)) isolated_until_[pick(members_.size())] = round_ + 5 + random_() % 60;
  }

  void client() {
    if (!chance(0.5)) return;
    raft::GroupId of = sim_groups[pick(std::size(sim_groups))];
    for (auto& member : members_) {
      if (member->leads(of)) {
        (void)member->host->propose(of, "c" + std::to_string(next_command_++));
        return;
      }
    }
  }

  bool isolated(size_t i) const { return round_ < isolated_until_[i]; }

  // The writer is slower than the loop: a member's writes wait a round or more for their flush,
  // and a crash in between loses them. What a Ready sends at once leaves meanwhile; what needs
  // its writes durable (votes, acknowledgements) leaves only after the flush.
  bool turn(Member& member) {
    member.host->tick();
    member.host->process();
    if (member.wal->has_pending() && chance(0.6)) {
      if (!member.host->flush_now().ok()) return false;
      member.host->process();
    }
    return !member.host->failed();
  }

  void step(bool faults) {
    for (size_t i = 0; i < members_.size(); ++i) {
      Member& member = *members_[i];
      if (!member.up) continue;
      if (!turn(member)) {
        crash(i, false);  // its log failed: the process restarts
        continue;
      }
      for (raft::NodeBatch& batch : member.outbox.take()) {
        if (faults && chance(0.03)) continue;  // lost
        int delay = faults && chance(0.2) ? 1 + static_cast<int>(random_() % 5) : 0;
        in_flight_.push_back({round_ + delay, std::move(batch)});
      }
      record_applied(i);
    }
    std::deque<InFlight> later;
    for (InFlight& message : in_flight_) {
      if (message.due_round > round_) {
        later.push_back(std::move(message));
        continue;
      }
      size_t from = message.batch.from.value - 1;
      size_t to = message.batch.to.value - 1;
      if (!members_[to]->up || isolated(from) || isolated(to)) continue;
      for (const raft::Message& m : raft::expand(message.batch)) members_[to]->host->step(m);
    }
    in_flight_ = std::move(later);
  }

  // Everything a member applied is committed: remember it, in its place.
  void record_applied(size_t i) {
    for (const auto& [of, commands] : members_[i]->applied) {
      auto& longest = longest_[of];
      for (size_t at = 0; at < commands.size(); ++at) {
        if (at < longest.size()) {
          if (longest[at] != commands[at]) {
            failure_ = "group " + std::to_string(of.value) + ": member " + std::to_string(i + 1) +
                       " applied '" + commands[at] + "' at " + std::to_string(at) +
                       " where another applied '" + longest[at] + "' (round " +
                       std::to_string(round_) + ")";
            return;
          }
        } else {
          longest.push_back(commands[at]);
        }
        committed_.insert(commands[at]);
      }
    }
  }

  void check_agreement() {
    for (size_t i = 0; i < members_.size() && failure_.empty(); ++i) {
      if (members_[i]->up) record_applied(i);
    }
  }

  // Every group has a last command that every member applied.
  bool converged(const std::map<raft::GroupId, std::vector<std::string>>& last) {
    for (raft::GroupId of : sim_groups) {
      auto proposed = last.find(of);
      if (proposed == last.end()) return false;
      bool applied_everywhere = std::any_of(
          proposed->second.begin(), proposed->second.end(), [&](const std::string& command) {
            return std::all_of(members_.begin(), members_.end(), [&](const auto& member) {
              const auto& commands = member->applied[of];
              return std::find(commands.begin(), commands.end(), command) != commands.end();
            });
          });
      if (!applied_everywhere) return false;
    }
    return true;
  }

  bool has_all_committed() {
    for (raft::GroupId of : sim_groups) {
      for (auto& member : members_) {
        if (member->applied[of].size() < longest_[of].size()) return false;
      }
    }
    return true;
  }

  void check_nothing_committed_lost() {
    std::set<std::string> everywhere;
    for (raft::GroupId of : sim_groups) {
      for (auto& member : members_) {
        std::set<std::string> here(member->applied[of].begin(), member->applied[of].end());
        for (const std::string& command : longest_[of]) {
          if (!here.contains(command)) {
            failure_ = "member " + std::to_string(member->id.value) + " lacks committed '" +
                       command + "' of group " + std::to_string(of.value);
            return;
          }
        }
      }
    }
  }

  uint64_t seed_;
  std::mt19937_64 random_;
  std::vector<std::unique_ptr<storage::FaultFileSystem>> disks_;
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<int> down_until_;
  std::vector<int> isolated_until_;
  std::deque<InFlight> in_flight_;
  std::map<raft::GroupId, std::vector<std::string>> longest_;  // the committed log, as seen
  std::set<std::string> committed_;
  uint64_t next_command_ = 0;
  uint64_t crashes_ = 0;
  int round_ = 0;
  std::string failure_;
};

TEST(GroupHostSimulation, MembersAgreeAndLoseNothingCommittedUnderFaults) {
  uint64_t seeds = 100;
  if (const char* configured = std::getenv("HAMQ_GROUP_HOST_SIM_SEEDS")) {
    seeds = std::strtoull(configured, nullptr, 10);
  }
  uint64_t crashes = 0;
  uint64_t committed = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    FaultSimulation simulation(seed);
    std::string failure = simulation.run();
    ASSERT_EQ(failure, "");
    crashes += simulation.crashes();
    committed += simulation.committed();
  }
  // The runs did what they are for: nodes crashed while commands were committed.
  EXPECT_GT(crashes, seeds * 5);
  EXPECT_GT(committed, seeds * 200);
  std::printf("%lu seeds: %lu crashes, %lu commands committed\n", static_cast<unsigned long>(seeds),
              static_cast<unsigned long>(crashes), static_cast<unsigned long>(committed));
}

}  // namespace
}  // namespace hamq::replication
