// Unit tests of the Raft core, tagged with the section of the Raft paper (or Ongaro's thesis)
// they check. A TestCluster persists every Ready at once and carries messages when asked, so each
// test decides exactly what is delivered, dropped or delayed.
#include "raft/raft.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include "raft/memory_storage.h"

namespace hamq::raft {
namespace {

constexpr GroupId group{7};
NodeId n(uint64_t id) {
  return NodeId{id};
}

// Check-quorum's leader lease would make members ignore the elections the tests start by hand;
// the tests of check-quorum turn it on.
constexpr Config no_lease{.check_quorum = false};

struct TestCluster {
  explicit TestCluster(size_t size, Config base = no_lease) {
    for (uint64_t id = 1; id <= size; ++id) conf.voters.push_back(n(id));
    for (uint64_t id = 1; id <= size; ++id) start(n(id), base, true);
  }

  void start(NodeId id, Config base, bool founding) {
    auto storage = std::make_unique<MemoryStorage>(
        founding ? MemoryStorage::bootstrap(conf, ++incarnations) : MemoryStorage(++incarnations));
    Config config = base;
    config.id = id;
    config.group = group;
    config.random_seed = id.value * 31;
    storages[id] = std::move(storage);
    nodes[id] = std::make_unique<Raft>(config, *storages[id]);
    applied[id].clear();
  }

  // Restarts from what is stored (everything, since the harness persists at once).
  void restart(NodeId id, Config base = no_lease) {
    Config config = base;
    config.id = id;
    config.group = group;
    config.random_seed = id.value * 31 + 1;
    nodes[id] = std::make_unique<Raft>(config, *storages[id]);
    applied[id].clear();
  }

  Raft& operator[](NodeId id) { return *nodes.at(id); }

  void process(NodeId id) {
    Raft& raft = *nodes.at(id);
    while (raft.has_ready()) {
      Ready ready = raft.ready();
      // A Ready that commits a membership change carries the hard state, so that a runtime
      // that writes it only when asked records the change's commit before applying it.
      for (const Entry& entry : ready.committed_entries) {
        if (entry.type == EntryType::conf_change) {
          EXPECT_TRUE(ready.hard_state.has_value()) << "member " << id.value;
        }
      }
      for (Message& message : ready.messages) post(std::move(message));
      MemoryStorage& storage = *storages.at(id);
      for (const SnapshotChunk& chunk : ready.snapshot_chunks) storage.write_snapshot_chunk(chunk);
      storage.append(ready.entries);
      if (ready.hard_state) storage.set_hard_state(*ready.hard_state);
      persisted_readies[id]++;
      for (Message& message : ready.messages_after_persist) post(std::move(message));
      if (ready.snapshot_installed) {
        applied[id].clear();
        applied[id].push_back("snapshot@" + std::to_string(ready.snapshot_installed->index.value));
      }
      for (const Entry& entry : ready.committed_entries) {
        if (entry.type == EntryType::normal && !entry.data.empty())
          applied[id].push_back(entry.data);
      }
      raft.advance(ready);
    }
  }

  void post(Message message) {
    if (down.count(message.from) || down.count(message.to)) return;
    if (cut.count({message.from, message.to})) return;
    if (drop && drop(message)) return;
    sent_count[message.type]++;
    in_flight.push_back(std::move(message));
  }

  // Delivers until nothing more is said.
  void settle() {
    for (int round = 0; round < 10000; ++round) {
      for (auto& [id, node] : nodes) {
        if (!down.count(id)) process(id);
      }
      if (in_flight.empty()) return;
      Message message = std::move(in_flight.front());
      in_flight.pop_front();
      if (down.count(message.to) || cut.count({message.from, message.to})) continue;
      if (getenv("RAFT_TRACE")) {
        fprintf(stderr, "%s %lu->%lu t%lu i%lu lt%lu n%zu c%lu rej%d hint%lu\n",
                std::string(message_type_name(message.type)).c_str(), message.from.value,
                message.to.value, message.term.value, message.index.value, message.log_term.value,
                message.entries.size(), message.commit.value, message.reject,
                message.reject_hint.value);
      }
      nodes.at(message.to)->step(message);
    }
    FAIL() << "the cluster did not settle";
  }

  void tick_all(int count) {
    for (int i = 0; i < count; ++i) {
      for (auto& [id, node] : nodes) {
        if (!down.count(id)) node->tick();
      }
      settle();
    }
  }

  void isolate(NodeId id) {
    for (auto& [other, node] : nodes) {
      if (other == id) continue;
      cut.insert({id, other});
      cut.insert({other, id});
    }
  }
  void heal() { cut.clear(); }

  NodeId elect(NodeId id) {
    nodes.at(id)->campaign_now();
    settle();
    return nodes.at(id)->leader();
  }

  std::vector<NodeId> leaders() {
    std::vector<NodeId> out;
    for (auto& [id, node] : nodes) {
      if (!down.count(id) && node->role() == Role::leader) out.push_back(id);
    }
    return out;
  }

  ConfState conf;
  uint64_t incarnations = 0;
  std::map<NodeId, std::unique_ptr<MemoryStorage>> storages;
  std::map<NodeId, std::unique_ptr<Raft>> nodes;
  std::map<NodeId, std::vector<std::string>> applied;
  std::map<NodeId, int> persisted_readies;
  std::map<MessageType, int> sent_count;
  std::deque<Message> in_flight;
  std::set<std::pair<NodeId, NodeId>> cut;
  std::set<NodeId> down;
  std::function<bool(const Message&)> drop;  // loses the messages it returns true for
};

// --- §5.2 leader election ---

TEST(RaftElection, SingleMemberGroupElectsItselfAndCommits) {  // §5.2
  TestCluster cluster(1);
  cluster.tick_all(25);
  ASSERT_EQ(cluster[n(1)].role(), Role::leader);
  ASSERT_TRUE(cluster[n(1)].propose("a").ok());
  cluster.settle();
  EXPECT_EQ(cluster.applied[n(1)], std::vector<std::string>{"a"});
}

TEST(RaftElection, RandomizedTimeoutsElectExactlyOneLeader) {  // §5.2
  TestCluster cluster(5);
  cluster.tick_all(40);
  auto leaders = cluster.leaders();
  ASSERT_EQ(leaders.size(), 1u);
  for (auto& [id, node] : cluster.nodes) EXPECT_EQ(node->leader(), leaders[0]);
}

TEST(RaftElection, CandidateWinsWithMajorityAndRaisesTermOnce) {  // §5.2
  TestCluster cluster(3);
  Term before = cluster[n(1)].term();
  EXPECT_EQ(cluster.elect(n(1)), n(1));
  EXPECT_EQ(cluster[n(1)].term().value, before.value + 1);
  EXPECT_EQ(cluster[n(2)].leader(), n(1));
  EXPECT_EQ(cluster[n(3)].vote(), n(1));
}

TEST(RaftElection, CandidateWithoutMajorityDoesNotLead) {  // §5.2
  TestCluster cluster(3);
  cluster.isolate(n(1));
  cluster[n(1)].campaign_now();
  cluster.settle();
  EXPECT_NE(cluster[n(1)].role(), Role::leader);
}

TEST(RaftElection, OneVotePerTermFirstComeFirstServed) {  // §5.2
  TestCluster cluster(3, Config{.pre_vote = false, .check_quorum = false});
  // Members 1 and 2 campaign in the same term; 3 votes for whoever asks first.
  cluster[n(1)].campaign_now();
  cluster[n(2)].campaign_now();
  cluster.process(n(1));
  cluster.process(n(2));
  std::deque<Message> requests;
  requests.swap(cluster.in_flight);
  for (const Message& m : requests) {
    if (m.to == n(3)) cluster[n(3)].step(m);
  }
  cluster.process(n(3));
  int granted = 0;
  for (const Message& m : cluster.in_flight) {
    if (m.type == MessageType::vote_response && !m.reject) ++granted;
  }
  EXPECT_EQ(granted, 1);
}

TEST(RaftElection, StaleLogDoesNotGetTheVote) {  // §5.4.1
  TestCluster cluster(3);
  cluster.elect(n(1));
  cluster.isolate(n(3));
  ASSERT_TRUE(cluster[n(1)].propose("x").ok());
  cluster.settle();
  cluster.heal();
  cluster.isolate(n(1));
  // 3 lacks "x"; 2 has it and refuses to elect 3.
  cluster[n(3)].campaign_now();
  cluster.settle();
  EXPECT_NE(cluster[n(3)].role(), Role::leader);
  EXPECT_EQ(cluster.elect(n(2)), n(2));
}

// --- §5.3 log replication ---

TEST(RaftReplication, ProposalIsAppliedOnEveryMemberInOrder) {  // §5.3
  TestCluster cluster(3);
  cluster.elect(n(1));
  for (std::string command : {"a", "b", "c"}) ASSERT_TRUE(cluster[n(1)].propose(command).ok());
  cluster.settle();
  std::vector<std::string> expected{"a", "b", "c"};
  for (auto& [id, node] : cluster.nodes) EXPECT_EQ(cluster.applied[id], expected) << id.value;
}

TEST(RaftReplication, FollowerProposalIsRefusedWithLeaderHint) {  // §5.1
  TestCluster cluster(3);
  cluster.elect(n(1));
  auto result = cluster[n(2)].propose("a");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error(), ProposeError::not_leader);
  EXPECT_EQ(cluster[n(2)].leader(), n(1));
}

TEST(RaftReplication, ConflictingUncommittedSuffixIsReplaced) {  // §5.3
  TestCluster cluster(3);
  cluster.elect(n(1));
  cluster.isolate(n(1));
  // The old leader appends entries no one else gets.
  for (std::string command : {"lost1", "lost2", "lost3"})
    ASSERT_TRUE(cluster[n(1)].propose(command).ok());
  cluster.settle();
  cluster.heal();
  cluster.isolate(n(1));
  cluster.elect(n(2));
  ASSERT_TRUE(cluster[n(2)].propose("kept").ok());
  cluster.settle();
  cluster.heal();
  cluster.tick_all(3);  // heartbeats reach 1, which steps down and is repaired
  ASSERT_TRUE(cluster[n(2)].propose("after").ok());
  cluster.settle();
  std::vector<std::string> expected{"kept", "after"};
  for (auto& [id, node] : cluster.nodes) EXPECT_EQ(cluster.applied[id], expected) << id.value;
  EXPECT_EQ(cluster[n(1)].log().last_index(), cluster[n(2)].log().last_index());
}

TEST(RaftReplication, RejectionBacksOffATermPerRoundTrip) {  // §5.3 (fast back-off)
  TestCluster cluster(3);
  cluster.elect(n(1));
  cluster.isolate(n(1));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(cluster[n(1)].propose("stale").ok());
  cluster.settle();
  cluster.heal();
  cluster.isolate(n(1));
  cluster.elect(n(2));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(cluster[n(2)].propose("new").ok());
  cluster.settle();
  cluster.heal();
  cluster.sent_count.clear();
  cluster.tick_all(2);
  // 50 conflicting entries of one term: far fewer rejections than entries.
  EXPECT_LE(cluster.sent_count[MessageType::append_response], 12);
  EXPECT_EQ(cluster.applied[n(1)].size(), 50u);
}

TEST(RaftReplication, AppendsArePipelinedUpToTheWindow) {  // §5.3, thesis §10.2.2
  TestCluster cluster(2, Config{.append_bytes_max = 1, .inflight_appends_max = 4});
  cluster.elect(n(1));
  cluster.settle();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cluster[n(1)].propose("e").ok());
  cluster.process(n(1));
  int appends = 0;
  for (const Message& m : cluster.in_flight) appends += m.type == MessageType::append;
  EXPECT_EQ(appends, 4);  // one entry each, four unacknowledged at most
  cluster.settle();
  EXPECT_EQ(cluster.applied[n(2)].size(), 10u);
}

// --- §5.4 safety ---

TEST(RaftSafety, OlderTermEntryIsNotCommittedByCountingReplicas) {  // §5.4.2, Figure 8
  // One entry per append, so the old entry reaches the followers before the new term's no-op.
  Config config{.pre_vote = false, .check_quorum = false, .append_bytes_max = 1};
  TestCluster cluster(3, config);
  cluster.elect(n(1));
  cluster.isolate(n(1));
  ASSERT_TRUE(cluster[n(1)].propose("old").ok());  // term 2, on 1 only
  cluster.settle();
  LogIndex old_index = cluster[n(1)].log().last_index();
  cluster.heal();
  cluster.restart(n(1), config);  // back as a follower, with its log
  cluster[n(1)].campaign_now();   // term 3: its log is the longest, so it wins
  bool old_counted_alone = false;
  bool old_replicated = false;
  for (int round = 0; round < 1000; ++round) {
    for (auto& [id, node] : cluster.nodes) cluster.process(id);
    if (cluster.in_flight.empty()) break;
    Message message = cluster.in_flight.front();
    cluster.in_flight.pop_front();
    cluster[message.to].step(message);
    Raft& leader = cluster[n(1)];
    if (leader.role() != Role::leader) continue;
    size_t with_old = 1;
    size_t with_noop = 1;
    for (NodeId follower : {n(2), n(3)}) {
      with_old += leader.progress(follower)->match >= old_index;
      with_noop += leader.progress(follower)->match > old_index;
    }
    old_replicated |= with_old >= 2 && with_noop < 2;
    // A majority has the old entry but not yet one of the current term: not committed.
    if (with_noop < 2 && leader.committed() >= old_index) old_counted_alone = true;
  }
  EXPECT_TRUE(old_replicated);  // the scenario happened
  EXPECT_FALSE(old_counted_alone);
  EXPECT_EQ(cluster[n(1)].committed(), old_index + 1);
  EXPECT_EQ(cluster.applied[n(2)], std::vector<std::string>{"old"});
}

TEST(RaftSafety, LeaderCountsItselfOnlyOnceDurable) {  // §5.3 with the Ready contract
  TestCluster cluster(1);
  cluster.elect(n(1));
  ASSERT_TRUE(cluster[n(1)].propose("a").ok());
  Ready ready = cluster[n(1)].ready();
  ASSERT_EQ(ready.entries.size(), 1u);
  // Not yet written: not committed.
  EXPECT_LT(cluster[n(1)].committed(), ready.entries[0].index);
  cluster.storages[n(1)]->append(ready.entries);
  cluster[n(1)].advance(ready);
  EXPECT_EQ(cluster[n(1)].committed(), ready.entries[0].index);
}

TEST(RaftSafety, VotesWaitForTheirPersistence) {  // §5.2 with the Ready contract
  TestCluster cluster(3, Config{.pre_vote = false, .check_quorum = false});
  cluster[n(2)].campaign_now();
  cluster.process(n(2));
  std::deque<Message> requests;
  requests.swap(cluster.in_flight);
  for (const Message& m : requests) {
    if (m.to == n(3)) cluster[n(3)].step(m);
  }
  Ready ready = cluster[n(3)].ready();
  EXPECT_TRUE(ready.messages.empty());
  ASSERT_FALSE(ready.messages_after_persist.empty());
  cluster[n(3)].advance(ready);
}

TEST(RaftSafety, MemberRestartedWithEmptyDiskIsNotCountedForWhatItLost) {
  TestCluster cluster(3);
  cluster.elect(n(1));
  ASSERT_TRUE(cluster[n(1)].propose("a").ok());
  cluster.settle();
  ASSERT_EQ(cluster[n(1)].progress(n(3))->match, cluster[n(1)].log().last_index());
  // 3 loses its disk and comes back under the same id; 2 is cut off.
  cluster.start(n(3), no_lease, false);
  cluster.isolate(n(2));
  // The first thing the leader hears from the new incarnation (an answer to a heartbeat) resets
  // what it counts for 3.
  cluster[n(1)].tick();
  cluster.process(n(1));
  ASSERT_EQ(cluster.in_flight.size(), 1u);
  cluster[n(3)].step(cluster.in_flight.front());
  cluster.in_flight.clear();
  cluster.process(n(3));
  ASSERT_EQ(cluster.in_flight.size(), 1u);
  EXPECT_EQ(cluster.in_flight.front().type, MessageType::heartbeat_response);
  cluster[n(1)].step(cluster.in_flight.front());
  cluster.in_flight.clear();
  EXPECT_EQ(cluster[n(1)].progress(n(3))->match.value, 0u);
  // An answer still on its way from the old incarnation is not believed.
  Message stale{.type = MessageType::append_response,
                .group = group,
                .from = n(3),
                .to = n(1),
                .from_incarnation = cluster[n(3)].incarnation() - 1,
                .term = cluster[n(1)].term(),
                .index = cluster[n(1)].log().last_index()};
  cluster[n(1)].step(stale);
  EXPECT_EQ(cluster[n(1)].progress(n(3))->match.value, 0u);
  // "b" commits only once 3 really has it again (from a snapshot and the log).
  ASSERT_TRUE(cluster[n(1)].propose("b").ok());
  LogIndex b_index = cluster[n(1)].log().last_index();
  cluster.cut.insert({n(1), n(3)});
  cluster.settle();
  EXPECT_LT(cluster[n(1)].committed(), b_index);
  cluster.cut.erase({n(1), n(3)});
  cluster.tick_all(2);
  EXPECT_EQ(cluster[n(3)].log().last_index(), b_index);
  EXPECT_EQ(cluster[n(1)].committed(), b_index);
}

TEST(RaftSafety, MemberBackWithEmptyDiskDoesNotVoteUntilCaughtUp) {
  TestCluster cluster(3);
  cluster.elect(n(1));
  cluster.isolate(n(2));
  ASSERT_TRUE(cluster[n(1)].propose("e").ok());  // committed on 1 and 3 only
  cluster.settle();
  ASSERT_EQ(cluster.applied[n(3)], std::vector<std::string>{"e"});
  // 3 loses its disk, 1 goes down: 2 (without "e") must not be elected with 3's vote.
  cluster.start(n(3), no_lease, false);
  EXPECT_TRUE(cluster[n(3)].catching_up());
  cluster.down.insert(n(1));
  cluster.heal();
  cluster.tick_all(60);
  EXPECT_TRUE(cluster.leaders().empty());
  // 1 comes back; 3 catches up from it and votes again.
  cluster.down.erase(n(1));
  cluster.restart(n(1));
  cluster.tick_all(60);
  ASSERT_EQ(cluster.leaders().size(), 1u);
  EXPECT_FALSE(cluster[n(3)].catching_up());
  EXPECT_EQ(cluster.applied[n(2)], std::vector<std::string>{"e"});
}

TEST(RaftSafety, CatchingUpSurvivesARestart) {
  TestCluster cluster(3);
  cluster.elect(n(1));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster[n(1)].propose("x").ok());
  cluster.settle();
  cluster.start(n(3), no_lease, false);
  // 3 hears of the leader's commit index (an append it cannot take), then restarts before it
  // has caught up: it is still catching up after the restart.
  cluster.drop = [](const Message& m) { return m.type == MessageType::snapshot; };
  cluster.tick_all(3);
  ASSERT_TRUE(cluster[n(3)].catching_up());
  cluster.restart(n(3));
  EXPECT_TRUE(cluster[n(3)].catching_up());
  cluster.drop = nullptr;
  cluster.tick_all(15);  // the leader sends the snapshot again after an election timeout
  EXPECT_FALSE(cluster[n(3)].catching_up());
  EXPECT_EQ(cluster[n(3)].log().last_index(), cluster[n(1)].log().last_index());
}

// --- pre-vote and check-quorum (thesis §9.6, §6.2) ---

TEST(RaftPreVote, PartitionedMemberDoesNotRaiseItsTermNorDisruptOnReturn) {
  TestCluster cluster(3);
  cluster.elect(n(1));
  Term term = cluster[n(1)].term();
  cluster.isolate(n(3));
  cluster.tick_all(100);  // 3 keeps pre-campaigning and losing
  EXPECT_EQ(cluster[n(3)].term(), term);
  cluster.heal();
  cluster.tick_all(5);
  EXPECT_EQ(cluster[n(1)].role(), Role::leader);
  EXPECT_EQ(cluster[n(1)].term(), term);
}

TEST(RaftCheckQuorum, LeaderCutOffFromMajorityStepsDown) {
  TestCluster cluster(3, Config{});
  cluster.elect(n(1));
  cluster.isolate(n(1));
  cluster.tick_all(25);
  EXPECT_NE(cluster[n(1)].role(), Role::leader);
  auto leaders = cluster.leaders();
  ASSERT_EQ(leaders.size(), 1u);
  EXPECT_NE(leaders[0], n(1));
}

TEST(RaftCheckQuorum, MemberWithinLeaseIgnoresVoteRequests) {
  TestCluster cluster(3, Config{});
  cluster.elect(n(1));
  // 3 campaigns without pre-vote: 2 heard from the leader lately and ignores it.
  Config no_pre_vote{.pre_vote = false, .check_quorum = true};
  cluster.restart(n(3), no_pre_vote);
  cluster[n(3)].campaign_now();
  cluster.settle();
  EXPECT_EQ(cluster[n(2)].leader(), n(1));
  EXPECT_NE(cluster[n(3)].role(), Role::leader);
}

TEST(RaftCheckQuorum, ALeaderWhoseLinkClosedIsReplacedWithoutWaitingForTheLease) {
  TestCluster cluster(3, Config{});
  cluster.elect(n(1));
  ASSERT_TRUE(cluster[n(1)].propose("a").ok());
  cluster.settle();
  cluster.isolate(n(1));  // its process died: its links closed
  // Only 2 campaigns; 3 stops counting on the old leader, so it votes without a timeout.
  cluster[n(3)].leader_lost(n(1), false);
  cluster[n(2)].leader_lost(n(1), true);
  cluster.settle();
  EXPECT_EQ(cluster[n(2)].role(), Role::leader);
  EXPECT_EQ(cluster[n(3)].leader(), n(2));
}

TEST(RaftCheckQuorum, ALostLinkToAMemberThatDoesNotLeadChangesNothing) {
  TestCluster cluster(3, Config{});
  cluster.elect(n(1));
  cluster[n(2)].leader_lost(n(3), true);  // 3 is not its leader
  cluster.settle();
  EXPECT_EQ(cluster[n(2)].leader(), n(1));
  EXPECT_EQ(cluster[n(1)].role(), Role::leader);
}

// --- leadership transfer (thesis §3.10) ---

TEST(RaftTransfer, LeadershipMovesToACaughtUpTarget) {
  TestCluster cluster(3);
  cluster.elect(n(1));
  ASSERT_TRUE(cluster[n(1)].propose("a").ok());
  cluster.settle();
  ASSERT_TRUE(cluster[n(1)].transfer_leadership(n(3)));
  cluster.settle();
  EXPECT_EQ(cluster[n(3)].role(), Role::leader);
  EXPECT_EQ(cluster[n(1)].leader(), n(3));
}

TEST(RaftTransfer, ProposalsAreRefusedDuringATransferAndItIsAbandonedAfterATimeout) {
  TestCluster cluster(3, Config{});  // with the lease, 3 cannot win while cut off from 1
  cluster.elect(n(1));
  cluster.isolate(n(3));
  ASSERT_TRUE(cluster[n(1)].transfer_leadership(n(3)));
  EXPECT_EQ(cluster[n(1)].propose("a").error(), ProposeError::transferring);
  cluster.cut = {{n(1), n(3)}, {n(3), n(1)}};
  cluster.tick_all(12);
  EXPECT_EQ(cluster[n(1)].role(), Role::leader);
  EXPECT_TRUE(cluster[n(1)].propose("a").ok());
}

// --- §6 membership ---

TEST(RaftMembership, LearnerCatchesUpThenIsPromotedToVoter) {  // §6, thesis §4.2.1
  TestCluster cluster(3);
  cluster.elect(n(1));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(cluster[n(1)].propose("x").ok());
  cluster.settle();
  cluster.start(n(4), no_lease, false);
  ASSERT_TRUE(cluster[n(1)].propose_conf_change({ConfChangeType::add_learner, n(4)}).ok());
  cluster.settle();
  cluster.tick_all(2);
  EXPECT_TRUE(is_learner(cluster[n(1)].conf(), n(4)));
  EXPECT_EQ(cluster[n(4)].log().last_index(), cluster[n(1)].log().last_index());
  ASSERT_TRUE(cluster[n(1)].propose_conf_change({ConfChangeType::add_voter, n(4)}).ok());
  cluster.settle();
  EXPECT_TRUE(is_voter(cluster[n(1)].conf(), n(4)));
  EXPECT_TRUE(is_voter(cluster[n(4)].conf(), n(4)));
  EXPECT_EQ(cluster[n(1)].conf().voters.size(), 4u);
}

TEST(RaftMembership, AMemberRestartedAfterItsGroupGrewKeepsTheCommittedConfiguration) {
  // A group of one grows to two; its first member restarts. Its snapshot still says it is alone:
  // the committed changes in its log must count at once, or it elects itself alone.
  TestCluster cluster(1);
  cluster.elect(n(1));
  cluster.start(n(2), no_lease, false);
  ASSERT_TRUE(cluster[n(1)].propose_conf_change({ConfChangeType::add_learner, n(2)}).ok());
  cluster.settle();
  cluster.tick_all(2);
  ASSERT_TRUE(cluster[n(1)].propose_conf_change({ConfChangeType::add_voter, n(2)}).ok());
  cluster.settle();
  ASSERT_EQ(cluster[n(1)].conf().voters.size(), 2u);
  cluster.restart(n(1));
  EXPECT_EQ(cluster[n(1)].conf().voters, (std::vector<NodeId>{n(1), n(2)}));
  // A snapshot at an entry before the changes records the configuration of then.
  EXPECT_EQ(cluster[n(1)].conf_at(LogIndex{1}).voters, std::vector<NodeId>{n(1)});
  EXPECT_EQ(cluster[n(1)].conf_at(cluster[n(1)].committed()).voters,
            (std::vector<NodeId>{n(1), n(2)}));
  cluster.isolate(n(1));
  cluster[n(1)].campaign_now();
  cluster.settle();
  EXPECT_NE(cluster[n(1)].role(), Role::leader);
  // Healed, the two elect a leader and the change is not applied twice.
  cluster.heal();
  cluster.tick_all(20);
  EXPECT_EQ(cluster[n(1)].conf().voters, (std::vector<NodeId>{n(1), n(2)}));
  EXPECT_TRUE(cluster[n(1)].role() == Role::leader || cluster[n(2)].role() == Role::leader);
}

TEST(RaftMembership, OneChangeAtATime) {  // thesis §4.1
  TestCluster cluster(3);
  cluster.elect(n(1));
  cluster.settle();
  cluster.isolate(n(2));
  cluster.isolate(n(3));
  ASSERT_TRUE(cluster[n(1)].propose_conf_change({ConfChangeType::add_learner, n(4)}).ok());
  auto second = cluster[n(1)].propose_conf_change({ConfChangeType::add_learner, n(5)});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error(), ProposeError::conf_change_pending);
}

TEST(RaftMembership, RemovedLeaderStepsDownAndTheRestElectANewOne) {  // §6
  TestCluster cluster(3);
  cluster.elect(n(1));
  cluster.settle();
  ASSERT_TRUE(cluster[n(1)].propose_conf_change({ConfChangeType::remove_node, n(1)}).ok());
  cluster.settle();
  EXPECT_NE(cluster[n(1)].role(), Role::leader);
  EXPECT_FALSE(is_voter(cluster[n(2)].conf(), n(1)));
  cluster.down.insert(n(1));
  cluster.tick_all(40);
  auto leaders = cluster.leaders();
  ASSERT_EQ(leaders.size(), 1u);
  ASSERT_TRUE(cluster[leaders[0]].propose("after").ok());
  cluster.settle();
  EXPECT_EQ(cluster.applied[n(2)].back(), "after");
  EXPECT_EQ(cluster.applied[n(3)].back(), "after");
}

// --- §7 log compaction ---

TEST(RaftSnapshot, SlowFollowerIsSentTheSnapshotInChunks) {  // §7
  TestCluster cluster(3, Config{.snapshot_chunk_bytes = 100});
  cluster.elect(n(1));
  cluster.isolate(n(3));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(cluster[n(1)].propose("x" + std::to_string(i)).ok());
  cluster.settle();
  // 1 compacts everything applied into a 1,000-byte snapshot.
  LogIndex applied = cluster[n(1)].applied();
  cluster.storages[n(1)]->compact(applied, cluster[n(1)].conf(), std::string(1000, 's'));
  cluster.heal();
  cluster.sent_count.clear();
  cluster.tick_all(3);
  EXPECT_EQ(cluster.sent_count[MessageType::snapshot], 10);
  EXPECT_EQ(cluster.storages[n(3)]->snapshot().data, std::string(1000, 's'));
  EXPECT_EQ(cluster.applied[n(3)].front(), "snapshot@" + std::to_string(applied.value));
  ASSERT_TRUE(cluster[n(1)].propose("after").ok());
  cluster.settle();
  EXPECT_EQ(cluster.applied[n(3)].back(), "after");
}

TEST(RaftSnapshot, LostChunkIsResentAfterSilence) {  // §7
  TestCluster cluster(3, Config{.check_quorum = false, .snapshot_chunk_bytes = 100});
  cluster.elect(n(1));
  cluster.isolate(n(3));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(cluster[n(1)].propose("x").ok());
  cluster.settle();
  cluster.storages[n(1)]->compact(cluster[n(1)].applied(), cluster[n(1)].conf(),
                                  std::string(500, 's'));
  cluster.heal();
  int dropped = 0;
  cluster.drop = [&](const Message& m) {
    bool lose = m.type == MessageType::snapshot && m.chunk_offset == 200 && dropped == 0;
    dropped += lose;
    return lose;
  };
  cluster.tick_all(3);
  ASSERT_EQ(dropped, 1);
  EXPECT_NE(cluster.storages[n(3)]->snapshot().data, std::string(500, 's'));
  cluster.tick_all(25);
  EXPECT_EQ(cluster.storages[n(3)]->snapshot().data, std::string(500, 's'));
  EXPECT_EQ(cluster[n(3)].log().last_index(), cluster[n(1)].log().last_index());
}

// --- storage failure ---

class FailingStorage final : public LogStorage {
 public:
  explicit FailingStorage(MemoryStorage& inner) : inner_(inner) {}
  bool fail = false;
  InitialState initial_state() const override { return inner_.initial_state(); }
  LogIndex first_index() const override { return inner_.first_index(); }
  LogIndex last_index() const override { return inner_.last_index(); }
  Result<Term, StorageError> term(LogIndex index) const override {
    if (fail) return unexpected(StorageError::io);
    return inner_.term(index);
  }
  Result<void, StorageError> entries(LogIndex lo, LogIndex hi, uint64_t max_bytes,
                                     std::vector<Entry>& out) const override {
    if (fail) return unexpected(StorageError::io);
    return inner_.entries(lo, hi, max_bytes, out);
  }
  SnapshotMeta snapshot_meta() const override { return inner_.snapshot_meta(); }
  uint64_t snapshot_size_bytes() const override { return inner_.snapshot_size_bytes(); }
  Result<std::string, StorageError> snapshot_chunk(const SnapshotMeta& snapshot, uint64_t offset,
                                                   uint64_t max_bytes) const override {
    return inner_.snapshot_chunk(snapshot, offset, max_bytes);
  }

 private:
  MemoryStorage& inner_;
};

TEST(RaftStorage, ReadErrorStopsTheMemberForGood) {
  MemoryStorage inner = MemoryStorage::bootstrap({.voters = {n(1), n(2)}, .learners = {}}, 1);
  FailingStorage storage(inner);
  Raft raft(Config{.id = n(1), .group = group}, storage);
  raft.campaign_now();
  storage.fail = true;
  // The pre-vote was granted by 2: the vote request reads the last term (fails).
  raft.step(Message{.type = MessageType::pre_vote_response,
                    .group = group,
                    .from = n(2),
                    .to = n(1),
                    .term = Term{2}});
  EXPECT_TRUE(raft.failed());
  EXPECT_FALSE(raft.has_ready());
  EXPECT_EQ(raft.propose("x").error(), ProposeError::stopped);
}

}  // namespace
}  // namespace hamq::raft
