// Durable queues in the broker, with a store that keeps proposals until the test applies them:
// what waits for the log (confirms, replies that read the queue) waits, in order, and what the
// log refuses is nacked; bodies wait on disk and are read back when delivered.
#include <gtest/gtest.h>

#include <set>

#include <map>

#include "broker/test_client.h"

namespace hamq::broker {
namespace {

using testing::Client;

// A log per group, applied only when the test says (as a real one applies once durable).
class ManualStore final : public QueueStore {
 public:
  bool create_group(uint64_t group, const std::vector<uint64_t>& members) override {
    members_[group] = members;
    return groups_.insert(group).second;
  }
  const std::vector<uint64_t>& members(uint64_t group) const { return members_.at(group); }
  bool has_group(uint64_t group) const override { return groups_.contains(group); }
  void remove_group(uint64_t group) override {
    groups_.erase(group);
    logs_.erase(group);
  }
  void join_group(uint64_t group) override {
    joined.insert(group);
    groups_.insert(group);
  }
  std::set<uint64_t> joined;
  void propose(uint64_t group, std::string command, Placed placed) override {
    if (following.contains(group)) ++refused_by_leader[group];
    if (refuse || following.contains(group)) return placed(std::nullopt);
    // Forwarded to a leader with a clock of its own, which stamps it.
    if (leader_clock) queue::restamp_command(command, *leader_clock);
    auto& log = logs_[group];
    log.push_back({term, std::move(command)});
    unapplied_.emplace_back(group, log.size());
    // The leader placed it, and its answer was lost (its link went down).
    if (lose_answers) return placed(std::nullopt);
    placed(LogPosition{term, log.size()});
  }
  void compact(uint64_t group, uint64_t index, std::string snapshot,
               uint64_t retain_from) override {
    snapshots[group] = {index, std::move(snapshot)};
    retained_from[group] = retain_from;
  }
  std::optional<uint64_t> leader_term(uint64_t group) const override {
    if (!has_group(group) || following.contains(group)) return std::nullopt;
    return term;
  }
  uint64_t current_term(uint64_t group) const override { return has_group(group) ? term : 0; }
  bool damaged(uint64_t) const override { return false; }
  void rebuild_group(uint64_t) override {}
  std::optional<std::string> read(uint64_t group, uint64_t index) const override {
    ++reads;
    auto it = logs_.find(group);
    if (it == logs_.end() || index == 0 || index > it->second.size()) return std::nullopt;
    return it->second[index - 1].second;
  }

  // Applies everything proposed so far, in order (and what that proposes in turn).
  void apply_all(Broker& broker) {
    while (!unapplied_.empty()) apply_next(broker);
  }
  size_t unapplied() const { return unapplied_.size(); }
  // The index of the last entry of `group` proposed and not applied yet.
  uint64_t unapplied_index(uint64_t group) const {
    for (auto it = unapplied_.rbegin(); it != unapplied_.rend(); ++it) {
      if (it->first == group) return it->second;
    }
    return 0;
  }
  // Applies the oldest entry proposed and not applied yet.
  void apply_next(Broker& broker) {
    auto [group, index] = unapplied_.front();
    unapplied_.erase(unapplied_.begin());
    auto it = logs_.find(group);
    if (it != logs_.end()) apply(broker, group, index);
    broker.flush_hand_overs();
  }
  // SIGKILL: what was proposed and not applied (not yet durable) is gone.
  void crash() {
    for (auto it = unapplied_.rbegin(); it != unapplied_.rend(); ++it) {
      logs_.at(it->first).resize(it->second - 1);
    }
    unapplied_.clear();
  }
  // A new leader of a later term took over the group before its unapplied entries committed:
  // its own entry `command` takes the place of the first of them, the others are gone.
  void lose_unapplied_to_another_leader(uint64_t group, std::string command) {
    ++term;
    auto first = std::find_if(unapplied_.begin(), unapplied_.end(),
                              [group](const auto& entry) { return entry.first == group; });
    ASSERT_NE(first, unapplied_.end());
    auto& log = logs_.at(group);
    log.resize(first->second - 1);
    log.push_back({term, std::move(command)});
    std::erase_if(unapplied_, [group, index = log.size()](const auto& entry) {
      return entry.first == group && entry.second > index;
    });
  }
  // Another node leads the group from `new_term` on: this one follows (its proposals to the
  // group are refused).
  void follow(uint64_t group, uint64_t new_term) {
    term = new_term;
    following.insert(group);
  }
  // The leader's entry reaches this follower, to be applied.
  void append_from_leader(uint64_t group, std::string command) {
    auto& log = logs_.at(group);
    log.push_back({term, std::move(command)});
    unapplied_.emplace_back(group, log.size());
  }
  // This node is elected in `new_term`: its first entry (empty) goes into the group's log.
  void lead(uint64_t group, uint64_t new_term) {
    term = new_term;
    following.erase(group);
    append_from_leader(group, "");
  }
  // A restart: every group's log applied again from its start, as the node's log replays it.
  void replay(Broker& broker) {
    for (const auto& [group, log] : logs_) {
      for (size_t i = 0; i < log.size(); ++i) apply(broker, group, i + 1);
    }
  }
  // The kinds of the commands in a group's log, in order (a leader's empty first entries left
  // out).
  std::vector<size_t> kinds(uint64_t group) const {
    std::vector<size_t> out;
    for (const auto& entry : logs_.at(group)) {
      if (!entry.second.empty()) out.push_back(queue::decode_command(entry.second)->body.index());
    }
    return out;
  }

  bool refuse = false;
  bool lose_answers = false;
  uint64_t term = 1;             // of the leader that takes proposals
  std::set<uint64_t> following;  // groups another node leads (this one leads the others)
  std::map<uint64_t, size_t> refused_by_leader;  // proposals to groups this node follows
  std::optional<uint64_t> leader_clock;          // the time the leader stamps proposals with
  mutable size_t reads = 0;
  std::map<uint64_t, std::pair<uint64_t, std::string>> snapshots;  // by group: (index, state)
  std::map<uint64_t, uint64_t> retained_from;                      // by group

 private:
  void apply(Broker& broker, uint64_t group, uint64_t index) {
    const auto& [entry_term, data] = logs_.at(group)[index - 1];
    broker.apply_queue_entry(group, {entry_term, index}, data);
  }

  std::set<uint64_t> groups_;
  std::map<uint64_t, std::vector<uint64_t>> members_;
  std::map<uint64_t, std::vector<std::pair<uint64_t, std::string>>> logs_;  // (term, command)
  std::vector<std::pair<uint64_t, uint64_t>> unapplied_;
};

class DurableQueue : public ::testing::Test {
 protected:
  void SetUp() override {
    client.broker.set_queue_store(&store);
    client.open();
    client.open_channel(1);
    client.send(1, amqp::QueueDeclare{0, "jobs", false, true, false, false, false, {}});
    client.expect<amqp::QueueDeclareOk>(1);
  }
  void TearDown() override { client.connection.release(); }

  // The log makes everything durable, and the runtime runs what that finished.
  void apply() {
    store.apply_all(client.broker);
    client.connection.run_deferred(client.now_ms);
  }

  // Nodes 1 (this one) to `count` form the cluster.
  void add_nodes(uint64_t count) {
    for (uint64_t id = 1; id <= count; ++id) {
      client.broker.change_definitions(AddNode{ClusterNode{
          id, "n" + std::to_string(id), "127.0.0.1" + std::to_string(id), 25672, false}});
    }
  }

  ManualStore store;
  Client client;
};

TEST_F(DurableQueue, ConfirmLeavesOnlyOnceTheEntryIsApplied) {
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  client.publish(1, "", "jobs", "one");
  client.publish(1, "", "jobs", "two");
  EXPECT_TRUE(client.receive().empty());  // not durable yet: no confirm
  apply();
  auto ack = client.expect<amqp::BasicAck>(1);
  EXPECT_EQ(ack.delivery_tag, 2u);
  EXPECT_TRUE(ack.multiple);
}

// A proposal whose entry another leader's replaced (before it committed) is sent again, to the
// new leader: it is confirmed once that copy commits, and never taken for the other entry.
TEST_F(DurableQueue, AnEntryReplacedByAnotherLeaderIsSentAgainNotTakenForTheProposal) {
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  client.publish(1, "", "jobs", "mine");
  // Before it commits, another leader's entry (a later term) takes its index in the log.
  auto theirs = std::make_shared<queue::Message>();
  theirs->routing_key = "jobs";
  theirs->body = "theirs";
  uint64_t group = client.broker.find_virtual_host("/")->find_queue("jobs")->group;
  store.lose_unapplied_to_another_leader(
      group, queue::encode_command(client.broker.command(queue::EnqueueCommand{theirs})));
  apply();
  auto ack = client.expect<amqp::BasicAck>(1);
  EXPECT_EQ(ack.delivery_tag, 1u);
  EXPECT_EQ(client.broker.find_virtual_host("/")->find_queue("jobs")->machine.ready_count(), 2u);
  for (const char* expected : {"theirs", "mine"}) {
    client.send(1, amqp::BasicGet{0, "jobs", true});
    apply();
    auto frames = client.receive();
    ASSERT_EQ(frames.size(), 3u);  // get-ok, header, body
    ASSERT_TRUE(frames[0].method && std::holds_alternative<amqp::BasicGetOk>(*frames[0].method));
    EXPECT_EQ(frames[2].body, expected);
  }
}

// The leader placed a publish and a basic.get and then its answers were lost (its link went
// down): both are sent again, and both copies of each commit. Each runs once: the message is in
// the queue once, and the get takes one message, not two.
TEST_F(DurableQueue, ACommandCommittedTwiceRunsOnce) {
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  client.publish(1, "", "jobs", "first");
  client.publish(1, "", "jobs", "second");
  apply();
  client.expect<amqp::BasicAck>(1);
  store.lose_answers = true;
  client.publish(1, "", "jobs", "once");
  client.send(1, amqp::BasicGet{0, "jobs", true});
  store.lose_answers = false;
  client.broker.resend_lost();  // the log's next tick
  QueuePtr jobs = client.broker.find_virtual_host("/")->find_queue("jobs");
  auto copies = [&](const queue::QueueCommand::Body& body) {
    auto kinds = store.kinds(jobs->group);
    return std::count(kinds.begin(), kinds.end(), body.index());
  };
  EXPECT_GE(copies(queue::EnqueueCommand{}), 2 + 2);  // first, second, and "once" twice or more
  EXPECT_GE(copies(queue::GetCommand{}), 2);
  apply();
  std::vector<std::string> got;
  bool acked = false;
  for (const auto& frame : client.receive()) {
    if (frame.method && std::holds_alternative<amqp::BasicAck>(*frame.method)) acked = true;
    if (!frame.method && !frame.body.empty()) got.push_back(frame.body);
  }
  EXPECT_TRUE(acked);
  EXPECT_EQ(got, (std::vector<std::string>{"first"}));
  EXPECT_EQ(jobs->machine.ready_count(), 2u);  // second, once
  EXPECT_EQ(client.broker.pending_command_count(), 0u);
}

TEST_F(DurableQueue, ARestartDetachesOnlyThisNodesHoldersOfItsPreviousLife) {
  client.send(1, amqp::BasicConsume{0, "jobs", "mine", false, false, false, false, {}});
  client.expect<amqp::BasicConsumeOk>(1);
  // The log also carries a consumer of node 2 (as a replicated queue's would).
  QueuePtr jobs = client.broker.find_virtual_host("/")->find_queue("jobs");
  queue::HolderId theirs{uint64_t{2} << queue::holder_node_shift | 7};
  client.broker.execute(jobs, client.broker.command(queue::AttachCommand{.consumer = theirs}));
  apply();
  ASSERT_EQ(jobs->machine.consumer_count(), 2u);
  EXPECT_EQ(jobs->machine.consumer_ids().front().node(), 1u);  // this node's

  Definitions definitions = client.broker.current_definitions();
  Broker restarted({"/"}, 2);  // node 1, as before, in its second life
  restarted.set_life(2);
  restarted.set_queue_store(&store);
  restarted.begin_definition_replay();
  ASSERT_TRUE(restarted.restore_definitions(definitions.snapshot()).ok());
  restarted.end_definition_replay();
  restarted.begin_replay();
  store.replay(restarted);
  restarted.end_replay();
  // A consumer of this life is there before the sweep (as in a group that catches up after the
  // start): its id has the same counter as the previous life's, not the same life.
  QueuePtr replayed = restarted.find_virtual_host("/")->find_queue("jobs");
  auto counter = [](queue::HolderId id) { return id.value & queue::holder_counter_mask; };
  uint64_t previous = counter(jobs->machine.consumer_ids().front());
  queue::HolderId mine_now = restarted.new_holder();
  while (counter(mine_now) < previous) mine_now = restarted.new_holder();
  EXPECT_EQ(counter(mine_now), previous);
  restarted.execute(replayed, restarted.command(queue::AttachCommand{.consumer = mine_now}));
  store.apply_all(restarted);
  restarted.detach_previous_holders();
  store.apply_all(restarted);
  auto consumers = replayed->machine.consumer_ids();
  std::sort(consumers.begin(), consumers.end());
  ASSERT_EQ(consumers.size(), 2u);
  EXPECT_EQ(consumers, (std::vector<queue::HolderId>{mine_now, theirs}));
  // Swept again (the sweep of a caught-up group, each second): nothing more to detach.
  EXPECT_TRUE(restarted.sweep_previous_lives(replayed->group));
}

// A proposal the log refuses is tried again on each tick; it is nacked only once it could not be
// placed for command_give_up_ms.
TEST_F(DurableQueue, RefusedByTheLogIsTriedAgainThenNacked) {
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  store.refuse = true;
  client.publish(1, "", "jobs", "later");
  client.broker.resend_lost();
  apply();
  EXPECT_TRUE(client.receive().empty());
  store.refuse = false;
  client.broker.resend_lost();
  apply();
  EXPECT_EQ(client.expect<amqp::BasicAck>(1).delivery_tag, 1u);

  store.refuse = true;
  client.publish(1, "", "jobs", "lost");
  client.broker.set_clock(client.broker.monotonic_ms() + command_give_up_ms - 1,
                          client.broker.wall_clock_ms());
  client.broker.resend_lost();
  apply();
  EXPECT_TRUE(client.receive().empty());
  client.broker.set_clock(client.broker.monotonic_ms() + 1, client.broker.wall_clock_ms());
  client.broker.resend_lost();
  apply();
  auto nack = client.expect<amqp::BasicNack>(1);
  EXPECT_EQ(nack.delivery_tag, 2u);
  EXPECT_EQ(client.broker.pending_command_count(), 0u);
}

TEST_F(DurableQueue, ConfirmsKeepPublishOrderAcrossDurableAndMemoryQueues) {
  client.send(1, amqp::QueueDeclare{0, "scratch", false, false, false, false, false, {}});
  client.expect<amqp::QueueDeclareOk>(1);
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  client.publish(1, "", "jobs", "durable");    // 1: waits for the log
  client.publish(1, "", "scratch", "memory");  // 2: taken at once, confirmed after 1
  EXPECT_TRUE(client.receive().empty());
  apply();
  auto ack = client.expect<amqp::BasicAck>(1);
  EXPECT_EQ(ack.delivery_tag, 2u);
  EXPECT_TRUE(ack.multiple);
}

TEST_F(DurableQueue, GetWaitsForItsEntryAndHoldsTheFramesAfterIt) {
  client.publish(1, "", "jobs", "first");
  apply();
  client.send(1, amqp::BasicGet{0, "jobs", true});
  client.send(1, amqp::QueueDeclare{0, "jobs", true, false, false, false, false, {}});
  EXPECT_TRUE(client.receive().empty());
  EXPECT_EQ(store.unapplied(), 1u);  // the get; the declare is not handled yet
  apply();
  auto frames = client.receive();
  ASSERT_GE(frames.size(), 1u);
  ASSERT_TRUE(frames[0].method && std::holds_alternative<amqp::BasicGetOk>(*frames[0].method));
  // Then the held declare is handled: it answers at once (nothing else is in flight).
  ASSERT_TRUE(frames.back().method &&
              std::holds_alternative<amqp::QueueDeclareOk>(*frames.back().method));
  EXPECT_EQ(std::get<amqp::QueueDeclareOk>(*frames.back().method).message_count, 0u);
}

TEST_F(DurableQueue, ADeclareCountsWhatWasPublishedBeforeIt) {
  client.publish(1, "", "jobs", "a");
  client.publish(1, "", "jobs", "b");
  client.send(1, amqp::QueueDeclare{0, "jobs", true, false, false, false, false, {}});
  EXPECT_TRUE(client.receive().empty());
  apply();
  EXPECT_EQ(client.expect<amqp::QueueDeclareOk>(1).message_count, 2u);
}

TEST_F(DurableQueue, BodiesWaitOnDiskAndAreReadBackWhenDelivered) {
  const std::string body(1000, 'x');
  const size_t count = durable_queue_cached_bodies + 200;
  for (size_t i = 0; i < count; ++i) client.publish(1, "", "jobs", body + std::to_string(i));
  apply();
  // Only the next ones to go keep their bodies in memory.
  uint64_t held = client.broker.memory_used();
  EXPECT_LT(held, count * queue::message_overhead_bytes + (durable_queue_cached_bodies + 1) * 1010);
  EXPECT_GT(held, durable_queue_cached_bodies * 1000);
  client.send(1, amqp::BasicConsume{0, "jobs", "c", false, true, false, false, {}});
  client.expect<amqp::BasicConsumeOk>(1);
  apply();
  auto frames = client.receive();
  size_t bodies = 0;
  std::string last;
  for (const auto& frame : frames) {
    if (frame.type == amqp::FrameType::body) ++bodies;
  }
  EXPECT_EQ(bodies, count);
  EXPECT_GE(store.reads, count - durable_queue_cached_bodies);
}

TEST_F(DurableQueue, ASnapshotCarriesTheLiveMessagesForwardToReplaceTheLog) {
  client.broker.set_queue_snapshot_log_bytes(4096);
  for (int i = 0; i < 10; ++i) client.publish(1, "", "jobs", std::string(1000, 'a' + i));
  apply();
  ASSERT_EQ(store.snapshots.size(), 1u);
  auto [index, state] = store.snapshots.begin()->second;
  EXPECT_GE(index, 4u);  // once 4 KB of log were applied
  queue::QueueMachine restored;
  ASSERT_TRUE(restored.restore(state).ok());
  EXPECT_EQ(restored.ready_count(), index);  // every message enqueued up to there, with its body
  std::vector<queue::Delivery> out;
  restored.attach(HolderId{99}, {}, 0, out);
  ASSERT_EQ(out.size(), index);
  EXPECT_EQ(out.front().message->body, std::string(1000, 'a'));
}

// A queue holding more than a snapshot carries: the snapshot carries the oldest messages with
// their bodies and refers to the log from the first one it does not carry, which the log keeps.
TEST_F(DurableQueue, ASnapshotOfALargeQueueRefersToTheLogPastWhatItCarries) {
  client.broker.set_queue_snapshot_log_bytes(4096);
  client.broker.set_queue_snapshot_carried_bytes(100 * 1024);
  for (int i = 0; i < 400; ++i) client.publish(1, "", "jobs", std::string(1000, 'a' + i % 26));
  apply();
  ASSERT_EQ(store.snapshots.size(), 1u);
  uint64_t group = store.snapshots.begin()->first;
  auto [index, state] = store.snapshots.begin()->second;
  uint64_t retain_from = store.retained_from.at(group);
  // About 100 KB of messages of 1,256 bytes each are carried: the 80 oldest.
  EXPECT_GT(retain_from, 75u);
  EXPECT_LT(retain_from, 85u);
  EXPECT_LT(state.size(), 100 * 1024 + (index - retain_from) * 64);
  queue::QueueMachine restored;
  ASSERT_TRUE(restored.restore(state).ok());
  std::vector<queue::Delivery> out;
  restored.attach(HolderId{99}, {}, 0, out);
  ASSERT_EQ(out.size(), index);
  EXPECT_NE(out.front().message, nullptr);
  EXPECT_EQ(out.back().message, nullptr);
  EXPECT_EQ(out.back().stored_at, index);
}

TEST_F(DurableQueue, AReplicatedQueuesSnapshotRefersToTheLogAndIsSentWithEveryBody) {
  // A group of three members: its snapshots refer to the log as a group of one's do (a large
  // replicated queue is not written whole at each snapshot); a member that lags is sent it made
  // self-contained.
  add_nodes(3);
  client.broker.change_definitions(DeclareQueue{{"/", "big", 0, false, {}, true, 0, 1, {}}, 0});
  QueuePtr big = client.broker.find_virtual_host("/")->find_queue("big");
  ASSERT_EQ(big->members.size(), 3u);
  client.broker.set_queue_snapshot_log_bytes(4096);
  client.broker.set_queue_snapshot_carried_bytes(100 * 1024);
  for (int i = 0; i < 400; ++i) client.publish(1, "", "big", std::string(1000, 'a' + i % 26));
  apply();
  ASSERT_TRUE(store.snapshots.contains(big->group));
  auto [index, state] = store.snapshots.at(big->group);
  EXPECT_GT(store.retained_from.at(big->group), 75u);

  // As stored: the newest messages are references (no body).
  std::vector<queue::Delivery> referring;
  queue::QueueMachine as_stored;
  ASSERT_TRUE(as_stored.restore(state).ok());
  as_stored.attach(HolderId{99}, {}, 0, referring);
  ASSERT_GT(referring.size(), 100u);
  EXPECT_EQ(referring.back().message, nullptr);

  // A group's founding snapshot is empty (a new queue): sent as it is.
  EXPECT_EQ(client.broker.self_contained_snapshot(big->group, ""), std::string());
  auto whole = client.broker.self_contained_snapshot(big->group, state);
  ASSERT_TRUE(whole.has_value());
  EXPECT_GT(whole->size(), referring.size() * 1000);
  queue::QueueMachine restored;
  ASSERT_TRUE(restored.restore(*whole).ok());
  std::vector<queue::Delivery> out;
  restored.attach(HolderId{99}, {}, 0, out);
  ASSERT_EQ(out.size(), referring.size());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_NE(out[i].message, nullptr) << i;
    EXPECT_EQ(out[i].stored_at, 0u);
    EXPECT_EQ(out[i].message->body, std::string(1000, 'a' + i % 26));
  }
  // A body the log no longer has: not made (the send is tried again later), never sent with
  // references the member cannot follow.
  store.remove_group(big->group);
  EXPECT_FALSE(client.broker.self_contained_snapshot(big->group, state).has_value());
}

// Found under load: a connection that publishes large messages and consumes from the same queue
// was never paused while the log fell behind, until the log refused proposals (64 MiB not yet
// committed) and the messages were dropped. Waiting for the log never needs the connection's own
// acks, so it pauses too, and reads again once the log caught up.
TEST_F(DurableQueue, APublisherThatAlsoConsumesWaitsForALogThatFellBehind) {
  client.send(1, amqp::BasicConsume{0, "jobs", "c", true, false, false, false, {}});
  client.expect<amqp::BasicConsumeOk>(1);
  const std::string body(64 * 1024, 'b');
  int published = 0;
  while (!client.connection.reading_paused() && published < 1000) {
    client.publish(1, "", "jobs", body);
    ++published;
  }
  EXPECT_TRUE(client.connection.reading_paused());
  EXPECT_LE(published * body.size(), (queue_flow_pending_bytes_high + 2 * body.size()));
  apply();
  EXPECT_FALSE(client.connection.reading_paused());
}

// Dead-lettering from a durable queue is a hand-over through two logs: the message leaves its
// queue (HandedOverCommand) only after the dead-letter queue's log has it. A crash in between
// offers it again after the restart; a restart after the hand-over does not offer it twice.
TEST_F(DurableQueue, ADeadLetterSurvivesACrashBetweenItsQueueAndItsTarget) {
  client.send(1, amqp::QueueDeclare{0, "dlq", false, true, false, false, false, {}});
  client.expect<amqp::QueueDeclareOk>(1);
  amqp::FieldTable arguments;
  arguments.entries.emplace_back("x-dead-letter-exchange", "");
  arguments.entries.emplace_back("x-dead-letter-routing-key", "dlq");
  client.send(1, amqp::QueueDeclare{0, "work", false, true, false, false, false, arguments});
  client.expect<amqp::QueueDeclareOk>(1);
  client.publish(1, "", "work", "poison");
  client.send(1, amqp::BasicConsume{0, "work", "c", false, false, false, false, {}});
  client.expect<amqp::BasicConsumeOk>(1);
  apply();
  auto delivered = client.receive();
  ASSERT_FALSE(delivered.empty());
  ASSERT_TRUE(std::holds_alternative<amqp::BasicDeliver>(*delivered[0].method));
  client.send(
      1, amqp::BasicReject{std::get<amqp::BasicDeliver>(*delivered[0].method).delivery_tag, false});
  // The reject is applied: the dead letter is proposed to dlq, and then the node dies.
  ASSERT_EQ(store.unapplied(), 1u);
  store.apply_next(client.broker);
  ASSERT_EQ(store.unapplied(), 1u);
  Definitions definitions = client.broker.current_definitions();
  uint64_t work_group = client.broker.find_virtual_host("/")->find_queue("work")->group;
  store.crash();

  auto restart = [&](Broker& broker) {
    broker.set_queue_store(&store);
    broker.begin_definition_replay();
    EXPECT_TRUE(broker.restore_definitions(definitions.snapshot()).ok());
    broker.end_definition_replay();
    broker.begin_replay();
    store.replay(broker);
    broker.end_replay();
    broker.detach_previous_holders();
    store.apply_all(broker);
  };
  auto ready = [](Broker& broker, const std::string& name) {
    return broker.find_virtual_host("/")->find_queue(name)->machine.ready_count();
  };
  Broker second({"/"}, 2);
  second.set_life(2);
  restart(second);
  EXPECT_EQ(ready(second, "dlq"), 1u);
  EXPECT_EQ(ready(second, "work"), 0u);
  EXPECT_EQ(second.find_virtual_host("/")->find_queue("work")->machine.leaving_count(), 0u);
  // The queue's log ends with the hand-over.
  const queue::QueueCommand handed_over{0, queue::HandedOverCommand{}};
  EXPECT_EQ(store.kinds(work_group).back(), handed_over.body.index());

  Broker third({"/"}, 3);
  third.set_life(3);
  restart(third);
  EXPECT_EQ(ready(third, "dlq"), 1u);  // once: the replayed reject is not dead-lettered again
  EXPECT_EQ(ready(third, "work"), 0u);
}

// A replicated queue's effects are its leader's: a follower applies the entry that dead-letters a
// message (it leaves the queue in every replica) but hands nothing over; the node that leads next
// offers it, once its first entry is applied.
TEST_F(DurableQueue, OnlyTheLeaderHandsDeadLettersOverAndANewLeaderOffersThemAgain) {
  client.send(1, amqp::QueueDeclare{0, "dlq", false, true, false, false, false, {}});
  client.expect<amqp::QueueDeclareOk>(1);
  amqp::FieldTable arguments;
  arguments.entries.emplace_back("x-dead-letter-exchange", "");
  arguments.entries.emplace_back("x-dead-letter-routing-key", "dlq");
  arguments.entries.emplace_back("x-message-ttl", int32_t{1000});
  client.send(1, amqp::QueueDeclare{0, "work", false, true, false, false, false, arguments});
  client.expect<amqp::QueueDeclareOk>(1);
  client.publish(1, "", "work", "stale");
  apply();
  auto find = [&](const std::string& name) {
    return client.broker.find_virtual_host("/")->find_queue(name);
  };
  ASSERT_EQ(find("work")->machine.ready_count(), 1u);

  // Another node leads the queue now (this one still leads dlq's group); its entry (a time past
  // the message's TTL) expires the message here too.
  store.follow(find("work")->group, 2);
  store.append_from_leader(find("work")->group,
                           queue::encode_command(queue::QueueCommand{
                               client.broker.wall_clock_ms() + 60'000, queue::ExpireCommand{}}));
  apply();
  EXPECT_EQ(find("work")->machine.ready_count(), 0u);
  EXPECT_EQ(find("work")->machine.leaving_count(), 1u);  // left, not yet handed over
  EXPECT_EQ(find("dlq")->machine.ready_count(), 0u);     // the follower offered nothing
  EXPECT_EQ(store.unapplied(), 0u);                      // nor proposed anything
  // Nor do its timers (armed while it led) act for the queue.
  client.broker.set_clock(client.broker.monotonic_ms() + 120'000,
                          client.broker.wall_clock_ms() + 120'000);
  client.broker.on_timer();
  EXPECT_EQ(store.unapplied(), 0u);
  EXPECT_EQ(store.refused_by_leader[find("work")->group], 0u);

  // Its leader died before handing the message over; this node is elected.
  store.lead(find("work")->group, 3);
  apply();
  EXPECT_EQ(find("dlq")->machine.ready_count(), 1u);
  EXPECT_EQ(find("work")->machine.leaving_count(), 0u);
  const queue::QueueCommand handed_over{0, queue::HandedOverCommand{}};
  EXPECT_EQ(store.kinds(find("work")->group).back(), handed_over.body.index());
}

// Two of this node's proposals were placed by a leader that died before they committed; the next
// leader's first entry took the first one's place. A third, published after the change, waits
// for the two to be sent again: all three are confirmed, and stay in publish order.
TEST_F(DurableQueue, ProposalsLostToALeaderChangeAreSentAgainInOrder) {
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  client.publish(1, "", "jobs", "a1");
  client.publish(1, "", "jobs", "a2");
  uint64_t group = client.broker.find_virtual_host("/")->find_queue("jobs")->group;
  store.lose_unapplied_to_another_leader(group, "");  // its first entry, at a1's index
  client.publish(1, "", "jobs", "b");
  EXPECT_EQ(store.unapplied(), 1u);  // the new leader's entry: b waits behind a1 and a2
  apply();
  auto ack = client.expect<amqp::BasicAck>(1);
  EXPECT_EQ(ack.delivery_tag, 3u);
  EXPECT_TRUE(ack.multiple);
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    client.send(1, amqp::BasicGet{0, "jobs", true});
    apply();
    auto frames = client.receive();
    ASSERT_EQ(frames.size(), 3u);
    got.push_back(frames[2].body);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"a1", "a2", "b"}));
}

// Two publishes of one channel were placed by a leader that died before they committed; the
// next leader's log got a copy of the second (its forward arrived late) before any of the first.
// The queue refuses that copy as early, and the node sends both again, in order: the queue holds
// them in publish order, each once. (It used to admit a number after a gap: the second landed
// before the first. Found by the fault harness.)
TEST_F(DurableQueue, ACopyThatLandsBeforeOneNumberedBeforeItIsSentAgainAfterIt) {
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  client.publish(1, "", "jobs", "a1");
  client.publish(1, "", "jobs", "a2");
  uint64_t group = client.broker.find_virtual_host("/")->find_queue("jobs")->group;
  uint64_t second_index = store.unapplied_index(group);
  std::string second = *store.read(group, second_index);
  store.lose_unapplied_to_another_leader(group, "");  // its first entry, at a1's index
  store.append_from_leader(group, second);            // then a2's late copy
  apply();
  auto ack = client.expect<amqp::BasicAck>(1);
  EXPECT_EQ(ack.delivery_tag, 2u);
  EXPECT_TRUE(ack.multiple);
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    client.send(1, amqp::BasicGet{0, "jobs", true});
    apply();
    auto frames = client.receive();
    if (frames.size() == 3) got.push_back(frames[2].body);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"a1", "a2"}));
}

// What a member's node sends a node without a member (nothing, here: the test reads the log).
class NoRelay final : public QueueRelay {
 public:
  uint64_t link_epoch(uint64_t) const override { return 1; }
  void forward(uint64_t, uint64_t, std::string) override {}
  void answer(uint64_t, uint64_t, std::string) override {}
};

// Another node (7, which holds no member) relays its publishes through this member. The first
// one's proposal is lost (its leader changed); the second, relayed after, must not land before
// it: the member sends the first again, then the second, as it does its own commands. (It used
// to propose each once and forget it: the first came only when node 7 sent it again, seconds
// later and after the second, out of publish order. Found by the fault harness.)
TEST_F(DurableQueue, CommandsRelayedThroughAMemberKeepTheirOrderWhenACopyIsLost) {
  NoRelay relay;
  client.broker.set_queue_relay(&relay);
  uint64_t group = client.broker.find_virtual_host("/")->find_queue("jobs")->group;
  auto relayed = [&](uint64_t seq, std::string body) {
    auto message = std::make_shared<queue::Message>();
    message->routing_key = "jobs";
    message->body = std::move(body);
    queue::QueueCommand command{client.broker.wall_clock_ms(), queue::EnqueueCommand{message},
                                queue::CommandOrigin{queue::proposer_id_of(7, 1), seq, 1}};
    return std::string(1, '\x02') + queue::encode_command(command);  // RelayKind::command
  };
  store.refuse = true;
  client.broker.relay_forwarded(7, group, relayed(1, "first"));
  store.refuse = false;
  client.broker.relay_forwarded(7, group, relayed(2, "second"));
  client.broker.relay_forwarded(7, group, relayed(2, "second"));  // node 7 sent it again
  apply();
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    client.send(1, amqp::BasicGet{0, "jobs", true});
    apply();
    auto frames = client.receive();
    if (frames.size() == 3) got.push_back(frames[2].body);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"first", "second"}));
}

// What a node without a member sends the members' nodes, kept for the test to answer as they
// would.
class RecordingRelay final : public QueueRelay {
 public:
  uint64_t link_epoch(uint64_t) const override { return epoch; }
  void forward(uint64_t node, uint64_t, std::string data) override {
    if (!data.empty() && data[0] == '\x02') {  // RelayKind::command
      commands.emplace_back(node, queue::decode_command(std::string_view(data).substr(1)).value());
    }
    if (!data.empty() && data[0] == '\x03') ++resyncs;  // RelayKind::resync
  }
  void answer(uint64_t, uint64_t, std::string) override {}
  uint64_t epoch = 1;
  std::vector<std::pair<uint64_t, queue::QueueCommand>> commands;  // (to, command)
  size_t resyncs = 0;
};

// A node without a member of a queue (this one: "far" lives on nodes 3 and 2) hands its
// consumer what the member it goes through lists. Picked anew (its link broke), that member
// lists what the consumer holds as its replica has it, which may be before the consumer's reject
// or ack: what the consumer gave back or settled is not handed to it again (it came again
// without the redelivered flag: found by the fault harness on 5 nodes), while a message handed
// back to it after the reject is, flagged. A member that lags does not hand out again what
// another member's answer said was acknowledged.
TEST_F(DurableQueue, ALaggingRelayMembersListDoesNotHandOutAgainWhatAConsumerGaveBack) {
  RecordingRelay relay;
  client.broker.set_queue_relay(&relay);
  add_nodes(3);
  amqp::FieldTable two;
  two.entries.emplace_back("x-quorum-initial-group-size", int32_t{2});
  client.broker.change_definitions(DeclareQueue{{"/", "far", 0, false, two, true, 0, 3, {}}, 0});
  QueuePtr far = client.broker.find_virtual_host("/")->find_queue("far");
  ASSERT_EQ(far->members, (std::vector<uint64_t>{3, 2}));

  std::map<uint64_t, uint64_t> numbers;  // each member's answers to this node
  auto answer = [&](uint64_t from, uint64_t seq, uint64_t applied,
                    std::vector<queue::Delivery> deliveries) {
    queue::RelayedEffects relayed;
    relayed.number = ++numbers[from];
    relayed.seq = seq;
    relayed.applied = applied;
    relayed.effects.attached = queue::AttachResult::attached;
    relayed.effects.deliveries = std::move(deliveries);
    client.broker.relay_answered(from, far->group, queue::encode_relayed(relayed));
    client.connection.run_deferred(client.now_ms);
  };
  auto delivers = [&] {
    std::vector<amqp::BasicDeliver> out;
    for (const auto& frame : client.receive()) {
      if (frame.method && std::holds_alternative<amqp::BasicDeliver>(*frame.method)) {
        out.push_back(std::get<amqp::BasicDeliver>(*frame.method));
      }
    }
    return out;
  };
  auto message = std::make_shared<queue::Message>();
  message->routing_key = "far";
  message->body = "m";

  client.send(1, amqp::BasicConsume{0, "far", "c", false, false, false, false, {}});
  ASSERT_EQ(relay.commands.size(), 1u);
  uint64_t via = relay.commands[0].first;
  uint64_t other = via == 2 ? 3 : 2;
  const auto& attach = std::get<queue::AttachCommand>(relay.commands[0].second.body);
  queue::HolderId holder = attach.consumer;
  // The member applies the attach (entry 10): the message goes to the consumer, then the answer.
  answer(via, 0, 10, {queue::Delivery{holder, queue::MessageId{1}, message, false, 0, 0}});
  answer(via, relay.commands[0].second.origin.seq, 10, {});
  auto first = delivers();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_FALSE(first[0].redelivered);

  // Given back (requeued); the link to the member breaks and comes back before the answer: this
  // node asks it for what its consumer holds, and its replica has not applied the reject yet.
  client.send(1, amqp::BasicReject{first[0].delivery_tag, true});
  ASSERT_EQ(relay.commands.size(), 2u);
  uint64_t reject_seq = relay.commands[1].second.origin.seq;
  relay.epoch = 2;
  client.broker.resend_lost();
  ASSERT_EQ(relay.resyncs, 2u);  // (the first when the member was first picked)
  answer(via, 0, 10, {queue::Delivery{holder, queue::MessageId{1}, message, false, 0, 0}});
  EXPECT_TRUE(delivers().empty());
  // The reject runs (entry 11) and hands the message back to the same consumer, flagged.
  answer(via, 0, 11, {queue::Delivery{holder, queue::MessageId{1}, message, true, 1, 0}});
  answer(via, reject_seq, 11, {});
  auto again = delivers();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].redelivered);

  // Acknowledged; the other member answers first (entry 12), then the one this node goes
  // through, late, still lists it: not handed out again, and forgotten once it applied the ack.
  client.send(1, amqp::BasicAck{again[0].delivery_tag, false});
  ASSERT_EQ(relay.commands.size(), 4u);  // (the reject's copy sent again with the resync)
  answer(other, relay.commands[3].second.origin.seq, 12, {});
  answer(via, 0, 11, {queue::Delivery{holder, queue::MessageId{1}, message, true, 1, 0}});
  EXPECT_TRUE(delivers().empty());
  EXPECT_EQ(far->relay_holders.at(holder).delivered.size(), 1u);
  answer(via, 0, 12, {});
  EXPECT_TRUE(far->relay_holders.at(holder).delivered.empty());
  client.connection.release();  // (while the relay is there)
}

// A command forwarded to the group's leader carries the leader's time in the log: the proposing
// node runs it at that time too, as every replica does, not at its own.
TEST_F(DurableQueue, AProposalRunsAtTheTimeItsLeaderStamped) {
  amqp::FieldTable arguments;
  arguments.entries.emplace_back("x-message-ttl", int32_t{1000});
  client.send(1, amqp::QueueDeclare{0, "short", false, true, false, false, false, arguments});
  client.expect<amqp::QueueDeclareOk>(1);
  uint64_t here = client.broker.wall_clock_ms();
  store.leader_clock = here + 5'000;  // the leader's clock is 5 s ahead of this node's
  client.publish(1, "", "short", "lives until the leader's time + 1 s");
  apply();
  QueuePtr queue = client.broker.find_virtual_host("/")->find_queue("short");
  ASSERT_EQ(queue->machine.ready_count(), 1u);
  // The leader expires what is due at its time + 0.5 s: not this message, on any replica.
  store.follow(queue->group, 2);
  store.append_from_leader(queue->group, queue::encode_command(queue::QueueCommand{
                                             here + 5'500, queue::ExpireCommand{}}));
  apply();
  EXPECT_EQ(queue->machine.ready_count(), 1u);
}

// The broker's waits are on the monotonic clock: the system clock stepped a day ahead gives up no
// command at once, nor does one stepped back hold back a give-up or a timer; a message's expiry,
// a wall-clock time, is looked at again within wall_clock_recheck_ms, so a clock set right is
// seen.
TEST_F(DurableQueue, AStepOfTheWallClockMovesNoWait) {
  constexpr uint64_t day_ms = 86'400'000;
  const uint64_t start = 1'000;
  const uint64_t wall = 10 * day_ms;
  client.broker.set_clock(start, wall);
  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  store.refuse = true;
  client.publish(1, "", "jobs", "refused");
  client.broker.set_clock(start + 1, wall + day_ms);
  client.broker.resend_lost();
  apply();
  EXPECT_TRUE(client.receive().empty());
  client.broker.set_clock(start + command_give_up_ms, wall - day_ms);
  client.broker.resend_lost();
  apply();
  EXPECT_EQ(client.expect<amqp::BasicNack>(1).delivery_tag, 1u);
  store.refuse = false;

  amqp::FieldTable arguments;
  arguments.entries.emplace_back("x-message-ttl", int32_t{1000});
  client.send(1, amqp::QueueDeclare{0, "short", false, true, false, false, false, arguments});
  client.expect<amqp::QueueDeclareOk>(1);
  const uint64_t now = start + command_give_up_ms;
  client.broker.set_clock(now, wall);
  client.publish(1, "", "short", "expires a second on");
  apply();
  QueuePtr queue = client.broker.find_virtual_host("/")->find_queue("short");
  ASSERT_EQ(queue->machine.ready_count(), 1u);
  EXPECT_EQ(client.broker.next_timer_ms(), now + 1'000);
  // Stepped back a day when the timer fires: not due by the wall clock, looked at again soon.
  client.broker.set_clock(now + 1'000, wall - day_ms);
  client.broker.on_timer();
  EXPECT_EQ(store.unapplied(), 0u);  // nothing due: no command to the log
  apply();
  EXPECT_EQ(queue->machine.ready_count(), 1u);
  EXPECT_EQ(client.broker.next_timer_ms(), now + 1'000 + wall_clock_recheck_ms);
  // Set right: the next look expires it.
  client.broker.set_clock(now + 1'000 + wall_clock_recheck_ms, wall + wall_clock_recheck_ms);
  client.broker.on_timer();
  apply();
  EXPECT_EQ(queue->machine.ready_count(), 0u);
}

// Placement is decided in the apply, from the model alone: min(size, nodes) distinct nodes, the
// declaring one first, then those holding the fewest groups.
TEST_F(DurableQueue, NewMembersJoinTheGroupAndAForgottenNodesMembersAreReplaced) {
  add_nodes(4);
  amqp::FieldTable two;
  two.entries.emplace_back("x-quorum-initial-group-size", int32_t{2});
  // Declared through node 3: this node (1, holding the fixture's queue) holds no member.
  client.broker.change_definitions(DeclareQueue{{"/", "far", 0, false, two, true, 0, 3, {}}, 0});
  QueuePtr far = client.broker.find_virtual_host("/")->find_queue("far");
  ASSERT_EQ(far->members, (std::vector<uint64_t>{3, 2}));
  EXPECT_FALSE(store.has_group(far->group));
  EXPECT_FALSE(client.broker.queue_members(far->group).has_value());

  // Made a member: this node joins the group (empty, to catch up), and serves the queue.
  Broker::DefinitionResult result = uint64_t{0};
  client.broker.change_definitions(SetQueueMembers{"/", "far", {3, 2, 1}, {3, 2}},
                                   [&](const Broker::DefinitionResult& r) { result = r; });
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(store.joined.contains(far->group));
  EXPECT_EQ(client.broker.queue_members(far->group), (std::vector<uint64_t>{3, 2, 1}));
  EXPECT_EQ(client.broker.current_definitions().queues().at({"/", "far"}).members,
            (std::vector<uint64_t>{3, 2, 1}));

  // Refused: a node not in the cluster, a queue that is not replicated or not there.
  client.broker.change_definitions(SetQueueMembers{"/", "far", {3, 9}, {3, 2, 1}},
                                   [&](const Broker::DefinitionResult& r) { result = r; });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, amqp::ReplyCode::precondition_failed);
  client.broker.change_definitions(SetQueueMembers{"/", "nowhere", {1}, {}},
                                   [&](const Broker::DefinitionResult& r) { result = r; });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, amqp::ReplyCode::not_found);
  client.broker.change_definitions(
      DeclareQueue{{"/", "scratch", 0, false, {}, false, 0, 1, {}}, 0});
  client.broker.change_definitions(SetQueueMembers{"/", "scratch", {1, 2}, {}},
                                   [&](const Broker::DefinitionResult& r) { result = r; });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, amqp::ReplyCode::precondition_failed);

  // Node 2 away for long (the server decides how long): its members go to the least loaded
  // other node that is not away; with none left, it keeps them (it may come back).
  EXPECT_TRUE(client.broker.queue_repairs().empty());
  auto repairs = client.broker.queue_repairs({2});
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0].members, (std::vector<uint64_t>{3, 4, 1}));
  EXPECT_TRUE(client.broker.queue_repairs({2, 4}).empty());
  // Node 2 is forgotten: each queue with a member there gets the least loaded other node.
  client.broker.change_definitions(ForgetNode{"n2"});
  repairs = client.broker.queue_repairs();
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0].name, "far");
  EXPECT_EQ(repairs[0].members, (std::vector<uint64_t>{3, 4, 1}));
  client.broker.change_definitions(repairs[0]);
  EXPECT_TRUE(client.broker.queue_repairs().empty());

  // Left out: the replica stays until its group removed it (the log decides, NodeLog), then
  // goes with what it held; the queue is still known here, its state is not.
  client.publish(1, "", "far", "before");
  store.apply_all(client.broker);
  // Made from members that changed meanwhile (the repair above): refused, nothing changes.
  client.broker.change_definitions(SetQueueMembers{"/", "far", {3, 4}, {3, 2, 1}},
                                   [&](const Broker::DefinitionResult& r) { result = r; });
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().text.find("changed meanwhile"), std::string::npos);
  EXPECT_EQ(client.broker.queue_members(far->group), (std::vector<uint64_t>{3, 4, 1}));
  client.broker.change_definitions(SetQueueMembers{"/", "far", {3, 4}, {3, 4, 1}});
  EXPECT_TRUE(store.has_group(far->group));
  EXPECT_EQ(client.broker.queue_members(far->group), (std::vector<uint64_t>{3, 4}));
  // No longer a member: what this node's clients ask of the queue is refused at once.
  bool refused = false;
  client.broker.execute(
      far, client.broker.command(queue::PurgeCommand{}),
      [&](const QueuePtr&, const queue::CommandEffects* effects) { refused = effects == nullptr; });
  EXPECT_TRUE(refused);
  client.broker.drop_replica(far->group);
  EXPECT_FALSE(store.has_group(far->group));
  EXPECT_EQ(far->machine.ready_count(), 0u);
  EXPECT_NE(client.broker.find_virtual_host("/")->find_queue("far"), nullptr);
}

TEST_F(DurableQueue, ADurableQueuesGroupIsPlacedOnDistinctNodesTheDeclaringOneAmongThem) {
  add_nodes(4);
  auto declare = [&](const std::string& name, std::optional<int32_t> size, uint64_t home) {
    amqp::FieldTable arguments;
    if (size) arguments.entries.emplace_back("x-quorum-initial-group-size", *size);
    client.broker.change_definitions(
        DeclareQueue{{"/", name, 0, false, arguments, true, 0, home, {}}, 0});
    return client.broker.find_virtual_host("/")->find_queue(name);
  };
  // "jobs" (the fixture's, declared when no node was known) is on node 1.
  EXPECT_EQ(declare("a", std::nullopt, 1)->members, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(declare("b", std::nullopt, 1)->members, (std::vector<uint64_t>{1, 4, 2}));
  // Declared through node 3: node 3, then the least loaded (4 holds one group, 2 and 1 more).
  EXPECT_EQ(declare("c", std::nullopt, 3)->members, (std::vector<uint64_t>{3, 4, 2}));
  EXPECT_EQ(declare("d", 1, 2)->members, (std::vector<uint64_t>{2}));
  EXPECT_EQ(declare("e", 7, 1)->members, (std::vector<uint64_t>{1, 3, 4, 2}));
  // This node founds its member of the groups it is in, with every member as a voter; of the
  // others it has the queue, not the group.
  QueuePtr a = client.broker.find_virtual_host("/")->find_queue("a");
  EXPECT_EQ(store.members(a->group), (std::vector<uint64_t>{1, 2, 3}));
  QueuePtr d = client.broker.find_virtual_host("/")->find_queue("d");
  EXPECT_NE(d->group, 0u);
  EXPECT_FALSE(store.has_group(d->group));
  // The members are part of the model every node shares.
  auto definitions = client.broker.current_definitions();
  EXPECT_EQ(definitions.queues().at({"/", "e"}).members, (std::vector<uint64_t>{1, 3, 4, 2}));
}

// A durable delayed exchange's delayed messages are in a replicated group of their own, placed
// as a durable queue's is: a node that holds no member (this one, for "later") publishes into
// it through a member, and the model every node shares records its members.
TEST_F(DurableQueue, ADurableDelayedExchangesGroupIsReplicatedAndReachedFromAnyNode) {
  RecordingRelay relay;
  client.broker.set_queue_relay(&relay);
  add_nodes(3);
  auto declare = [&](const std::string& name, std::optional<int32_t> size, uint64_t home) {
    amqp::FieldTable arguments;
    arguments.entries.emplace_back("x-delayed-type", std::string("direct"));
    if (size) arguments.entries.emplace_back("x-quorum-initial-group-size", *size);
    client.broker.change_definitions(DeclareExchange{
        {"/", name, std::string(delayed_exchange_type), false, false, arguments, 0, true, home}});
    return client.broker.find_virtual_host("/")->find_exchange(name)->delay_queue;
  };
  QueuePtr here = declare("soon", std::nullopt, 1);
  EXPECT_EQ(here->members, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(store.members(here->group), (std::vector<uint64_t>{1, 2, 3}));
  // Declared through node 3, two members: node 3 and the least loaded (2; 1 holds "jobs" too).
  QueuePtr far = declare("later", 2, 3);
  EXPECT_EQ(far->members, (std::vector<uint64_t>{3, 2}));
  EXPECT_NE(far->group, 0u);
  EXPECT_FALSE(store.has_group(far->group));
  EXPECT_EQ(client.broker.current_definitions().exchanges().at({"/", "later"}).members,
            (std::vector<uint64_t>{3, 2}));

  client.send(1, amqp::ConfirmSelect{false});
  client.expect<amqp::ConfirmSelectOk>(1);
  amqp::BasicProperties properties;
  properties.headers = amqp::FieldTable{};
  properties.headers->entries.emplace_back("x-delay", int32_t{5'000});
  client.publish(1, "later", "jobs", "in five seconds", properties);
  ASSERT_EQ(relay.commands.size(), 1u);
  EXPECT_TRUE(relay.commands[0].first == 3 || relay.commands[0].first == 2);
  const auto* enqueue = std::get_if<queue::EnqueueCommand>(&relay.commands[0].second.body);
  ASSERT_NE(enqueue, nullptr);
  EXPECT_EQ(enqueue->ttl_ms, std::optional<uint64_t>(5'000));
  EXPECT_TRUE(client.receive().empty());  // confirmed once the member applied it, not before
  EXPECT_EQ(far->machine.ready_count(), 0u);
}

// A snapshot from before version 4, by a node that did not hold a delayed exchange's group, does
// not name the group: the exchange keeps its delayed messages in memory there, as then (a group
// named anew would not be the one its home node holds).
TEST_F(DurableQueue, ADelayedExchangeFromAnOldSnapshotThatDoesNotNameItsGroupStaysInMemory) {
  add_nodes(2);
  Definitions old = client.broker.current_definitions();
  amqp::FieldTable arguments;
  arguments.entries.emplace_back("x-delayed-type", std::string("direct"));
  old.apply(DeclareExchange{{"/",
                             "later",
                             std::string(delayed_exchange_type),
                             false,
                             false,
                             arguments,
                             0,
                             true,
                             2,
                             {2}}});
  ASSERT_TRUE(client.broker.restore_definitions(old.snapshot()).ok());
  const Exchange* exchange = client.broker.find_virtual_host("/")->find_exchange("later");
  ASSERT_NE(exchange, nullptr);
  EXPECT_EQ(exchange->delay_queue->group, 0u);
  EXPECT_EQ(client.broker.find_virtual_host("/")->find_queue("jobs")->group,
            old.queues().at({"/", "jobs"}).group);
}

}  // namespace
}  // namespace hamq::broker
