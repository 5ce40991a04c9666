// A replicated queue at node level, seeded (issue 15): three nodes, each a QueueMachine applying
// the queue group's entries (queue::apply_command, as a node's broker does) through a GroupHost
// over its own Wal on a fault-injecting disk. A client publishes numbered messages through
// whichever node leads and sends again what was not confirmed (the machine admits each number
// once, as after a leader change), takes messages with basic.get and acknowledges them, and now
// and then detaches its holder (a channel closed: what it held comes back, redelivered), while
// nodes crash (their unsynced writes torn), are cut off, and lose or delay batches; nodes replace
// their log with a snapshot of their queue now and then, so a restart or a lagging member
// restores one. Checks, as the crash test's: every node that applies an entry applies it with the
// same effects; once the faults stop every node holds the same queue; and no confirmed message is
// lost, none arrives that was not published, none arrives twice without being redelivered, and
// none is in the queue twice. HAMQ_QUEUE_SIM_SEEDS sets how many seeds run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "queue/command.h"
#include "queue/queue_machine.h"
#include "raft/coalescer.h"
#include "replication/group_host.h"
#include "storage/fault_file_system.h"
#include "storage/wal.h"

namespace hamq::server {
namespace {

constexpr raft::GroupId queue_group{2};
constexpr int fault_rounds = 1200;
constexpr int settle_rounds_max = 3000;
constexpr uint64_t client_node = 9;
const queue::HolderId holder{queue::holder_id_of(client_node, 1, 1)};
const uint64_t proposer = queue::proposer_id_of(client_node, 1);

// What applying an entry did, written out, to compare between nodes.
std::string effects_of(const queue::CommandEffects& effects) {
  std::string out = effects.duplicate ? "duplicate" : "ran";
  if (effects.enqueued) out += effects.enqueued == queue::EnqueueResult::accepted ? " +" : " -";
  if (effects.got) {
    out += " got " + std::to_string(effects.got->id.value) + " " + effects.got->message->body +
           " " + std::to_string(effects.got->delivery_count);
  }
  out += " count " + std::to_string(effects.count);
  for (const queue::Delivery& delivery : effects.deliveries) {
    out += " to " + std::to_string(delivery.holder.value) + ":" + std::to_string(delivery.id.value);
  }
  return out;
}

std::string state_of(queue::QueueMachine& machine) {
  auto snapshot = machine.snapshot([](uint64_t) { return queue::MessagePtr{}; });
  return snapshot.ok() ? *snapshot : "cannot snapshot: " + snapshot.error();
}

struct Node {
  Node(uint64_t node, storage::FileSystem& disk)
      : id(raft::NodeId{node}), fs(disk), outbox(this->id) {}

  // The process starts on its disk: a new machine, from the group's snapshot and log.
  void open(bool found) {
    auto opened = storage::Wal::open(fs, "wal");
    ASSERT_TRUE(opened.ok()) << opened.error().detail;
    wal = std::move(opened.value());
    machine = std::make_unique<queue::QueueMachine>();
    host = std::make_unique<replication::GroupHost>(
        *wal, id, 1, raft::Config{},
        replication::GroupHostCallbacks{
            .send = [this](const raft::Message& message) { outbox.add(message); },
            .restore =
                [this](raft::GroupId, const raft::SnapshotMeta& meta, const std::string& data) {
                  auto restored = machine->restore(data);
                  if (!restored.ok()) failure = "snapshot does not restore: " + restored.error();
                  applied_to = meta.index.value;
                },
            .apply = [this](raft::GroupId, const raft::Entry& entry) { apply(entry); },
            .expand_snapshot = {},
            .role_changed = {},
            .damaged = {}});
    if (found) {
      raft::ConfState conf;
      for (uint64_t member = 1; member <= 3; ++member) conf.voters.push_back(raft::NodeId{member});
      ASSERT_TRUE(host->create_group(queue_group, conf, state_of(*machine)).ok());
    } else {
      host->open_existing_groups();
    }
    up = true;
  }

  void stop() {
    host.reset();
    wal.reset();
    machine.reset();
    outbox.take();
    up = false;
  }

  void apply(const raft::Entry& entry) {
    applied_to = entry.index.value;
    if (entry.type != raft::EntryType::normal || entry.data.empty()) return;
    auto command = queue::decode_command(entry.data);
    if (!command.ok()) {
      failure = "entry " + std::to_string(entry.index.value) + " does not decode";
      return;
    }
    queue::CommandEffects effects = queue::apply_command(*machine, *command, entry.index.value);
    applied.push_back({entry.index.value, entry.data, effects_of(effects), *command, effects});
  }

  bool leads() const {
    const raft::Raft* raft = up ? host->peek(queue_group) : nullptr;
    return raft != nullptr && raft->role() == raft::Role::leader;
  }

  struct Applied {
    uint64_t index;
    std::string data;
    std::string effects;
    queue::QueueCommand command;
    queue::CommandEffects what;
  };
  raft::NodeId id;
  storage::FileSystem& fs;
  raft::Outbox outbox;
  std::unique_ptr<storage::Wal> wal;
  std::unique_ptr<queue::QueueMachine> machine;
  std::unique_ptr<replication::GroupHost> host;
  std::vector<Applied> applied;  // since the last check took them
  uint64_t applied_to = 0;
  bool up = false;
  std::string failure;
};

struct InFlight {
  int due_round;
  raft::NodeBatch batch;
};

class QueueSimulation {
 public:
  explicit QueueSimulation(uint64_t seed) : seed_(seed), random_(seed) {
    for (uint64_t id = 1; id <= 3; ++id) {
      disks_.push_back(std::make_unique<storage::FaultFileSystem>(seed * 16 + id));
      nodes_.push_back(std::make_unique<Node>(id, *disks_.back()));
      nodes_.back()->open(/*found=*/true);
      down_until_.push_back(0);
      isolated_until_.push_back(0);
    }
  }

  std::string run() {
    for (round_ = 0; round_ < fault_rounds && failure_.empty(); ++round_) {
      inject_faults();
      client();
      step(/*faults=*/true);
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      down_until_[i] = 0;
      isolated_until_[i] = 0;
      if (!nodes_[i]->up) nodes_[i]->open(false);
    }
    // What was not confirmed goes again until it is; then every node must hold the same queue.
    bool settled = false;
    for (int rounds = 0; rounds < settle_rounds_max && failure_.empty() && !settled;
         ++rounds, ++round_) {
      if (rounds % 50 == 0) resend();
      step(/*faults=*/false);
      settled = unconfirmed_.empty() && all_applied_the_same_index();
    }
    if (failure_.empty() && !settled) failure_ = "no convergence after the faults stopped";
    if (failure_.empty()) check_same_queue();
    if (failure_.empty()) check_messages();
    return failure_.empty() ? "" : "seed " + std::to_string(seed_) + ": " + failure_;
  }

  uint64_t crashes() const { return crashes_; }
  uint64_t confirmed() const { return confirmed_.size(); }
  uint64_t redelivered() const { return redelivered_; }
  uint64_t duplicates() const { return duplicate_entries_; }
  uint64_t early() const { return early_entries_; }

 private:
  bool chance(double probability) {
    return std::uniform_real_distribution<double>(0, 1)(random_) < probability;
  }
  size_t pick(size_t count) { return random_() % count; }

  void crash(size_t i) {
    Node& node = *nodes_[i];
    if (!node.up) return;
    ++crashes_;
    if (chance(0.5)) {
      disks_[i]->stop_after(random_() % 6);  // it dies within its next few writes
      (void)node.host->flush_now();
    }
    take_applied(node);
    node.stop();
    disks_[i]->crash({.tear_unsynced = true});
    down_until_[i] = round_ + 1 + static_cast<int>(random_() % 40);
  }

  void inject_faults() {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i]->up && round_ >= down_until_[i]) nodes_[i]->open(false);
    }
    if (chance(0.01)) crash(pick(nodes_.size()));
    if (chance(0.01)) isolated_until_[pick(nodes_.size())] = round_ + 5 + random_() % 60;
    // Now and then a node replaces its log with its queue (every message with its body).
    if (chance(0.02)) {
      Node& node = *nodes_[pick(nodes_.size())];
      if (node.up) (void)node.host->compact(queue_group, state_of(*node.machine));
    }
  }

  // A command numbered by the client, proposed through the node that leads (none: lost).
  void propose(queue::QueueCommand command) {
    command.time_ms = static_cast<uint64_t>(round_) * 10;
    for (auto& node : nodes_) {
      if (node->leads()) {
        (void)node->host->propose(queue_group, queue::encode_command(command));
        return;
      }
    }
  }

  uint64_t floor() const {
    uint64_t lowest = next_seq_;
    if (!unapplied_.empty()) lowest = std::min(lowest, unapplied_.begin()->first);
    return lowest;
  }

  void send(uint64_t seq, queue::QueueCommand::Body body) {
    unapplied_.emplace(seq, body);
    propose(queue::QueueCommand{0, std::move(body), {proposer, seq, floor()}});
  }

  void client() {
    if (chance(0.4) && unconfirmed_.size() < 40) {
      uint64_t seq = next_seq_++;
      auto message = std::make_shared<queue::Message>();
      message->routing_key = "work";
      message->body = "m" + std::to_string(seq);
      published_.insert(message->body);
      unconfirmed_.emplace(seq, message);
      send(seq, queue::EnqueueCommand{message});
    }
    if (chance(0.3)) send(next_seq_++, queue::GetCommand{holder, false});
    if (!to_settle_.empty() && chance(0.5)) {
      std::vector<queue::MessageId> ids(to_settle_.begin(), to_settle_.end());
      to_settle_.clear();
      send(next_seq_++, queue::SettleCommand{queue::SettleKind::settle, holder, ids});
    }
    // A channel closes now and then: what its holder has goes back, redelivered.
    if (chance(0.005)) send(next_seq_++, queue::DetachCommand{holder});
    if (round_ % 50 == 0) resend();
  }

  // Commands not applied go again, in order, with the numbers they had (as the broker sends
  // them: a copy that lands before one numbered before it is refused).
  void resend() {
    auto sending = unapplied_;
    for (const auto& [seq, body] : sending) send(seq, body);
  }

  bool isolated(size_t i) const { return round_ < isolated_until_[i]; }

  void step(bool faults) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      Node& node = *nodes_[i];
      if (!node.up) continue;
      node.host->tick();
      node.host->process();
      if (node.wal->has_pending() && chance(0.6)) {
        if (!node.host->flush_now().ok()) {
          crash(i);
          continue;
        }
        node.host->process();
      }
      if (node.host->failed()) {
        crash(i);
        continue;
      }
      take_applied(node);
      for (raft::NodeBatch& batch : node.outbox.take()) {
        if (faults && chance(0.03)) continue;
        int delay = faults && chance(0.2) ? 1 + static_cast<int>(random_() % 5) : 0;
        in_flight_.push_back({round_ + delay, std::move(batch)});
      }
    }
    std::deque<InFlight> later;
    for (InFlight& message : in_flight_) {
      if (message.due_round > round_) {
        later.push_back(std::move(message));
        continue;
      }
      size_t from = message.batch.from.value - 1;
      size_t to = message.batch.to.value - 1;
      if (!nodes_[to]->up || isolated(from) || isolated(to)) continue;
      for (const raft::Message& m : raft::expand(message.batch)) nodes_[to]->host->step(m);
    }
    in_flight_ = std::move(later);
  }

  // What a node applied must be what every other node applied at that index, with the same
  // effects. The first node to apply an entry tells the client what it did (a publish is
  // confirmed once committed; basic.get's message reaches the consumer).
  void take_applied(Node& node) {
    if (!node.failure.empty() && failure_.empty()) {
      failure_ = "node " + std::to_string(node.id.value) + ": " + node.failure;
    }
    for (const Node::Applied& entry : node.applied) {
      auto [it, first] = effects_.try_emplace(entry.index, entry.data, entry.effects);
      if (!first) {
        if ((it->second.first != entry.data || it->second.second != entry.effects) &&
            failure_.empty()) {
          failure_ = "node " + std::to_string(node.id.value) + " applied entry " +
                     std::to_string(entry.index) + " as '" + entry.effects +
                     "' where another applied '" + it->second.second + "' (round " +
                     std::to_string(round_) + ")";
        }
        continue;
      }
      observe(entry);
    }
    node.applied.clear();
  }

  void observe(const Node::Applied& entry) {
    if (entry.what.duplicate) ++duplicate_entries_;
    // Refused as early (a number before it missing): not taken; the client sends it again.
    if (entry.what.early) ++early_entries_;
    if (!entry.what.early && entry.command.origin.proposer == proposer) {
      unapplied_.erase(entry.command.origin.seq);
    }
    if (!entry.what.early && std::holds_alternative<queue::EnqueueCommand>(entry.command.body)) {
      auto it = unconfirmed_.find(entry.command.origin.seq);
      if (it != unconfirmed_.end()) {
        confirmed_.insert(it->second->body);
        unconfirmed_.erase(it);
      }
    }
    if (const auto& got = entry.what.got) {
      const std::string& body = got->message->body;
      if (received_.contains(body) && got->delivery_count == 0 && failure_.empty()) {
        failure_ = "'" + body + "' received twice, the second time not redelivered (entry " +
                   std::to_string(entry.index) + ")";
      }
      if (got->delivery_count > 0) ++redelivered_;
      // Taken for the first time, messages come in the order they were published (numbered).
      if (got->delivery_count == 0) {
        uint64_t number = std::stoull(body.substr(1));
        if (number < last_fresh_ && failure_.empty()) {
          failure_ = "'" + body + "' came after 'm" + std::to_string(last_fresh_) +
                     "', published after it (entry " + std::to_string(entry.index) + ")";
        }
        last_fresh_ = number;
      }
      received_.insert(body);
      to_settle_.insert(got->id);
    }
    if (std::holds_alternative<queue::DetachCommand>(entry.command.body)) to_settle_.clear();
  }

  bool all_applied_the_same_index() {
    uint64_t index = nodes_[0]->applied_to;
    for (auto& node : nodes_) {
      const raft::Raft* raft = node->host->peek(queue_group);
      if (raft == nullptr || node->applied_to != index || raft->committed().value != index) {
        return false;
      }
    }
    return index > 0;
  }

  void check_same_queue() {
    std::string state = state_of(*nodes_[0]->machine);
    for (auto& node : nodes_) {
      if (state_of(*node->machine) != state) {
        failure_ = "node " + std::to_string(node->id.value) + " holds another queue";
        return;
      }
    }
  }

  // Lost, unexpected, duplicated: what the queue still holds (its holder detached first) and
  // what the consumer received against what was published and confirmed.
  void check_messages() {
    queue::QueueMachine& machine = *nodes_[0]->machine;
    std::vector<queue::Delivery> ignored;
    uint64_t now = static_cast<uint64_t>(round_) * 10;
    machine.detach(holder, now, ignored);
    std::multiset<std::string> left;
    while (auto delivery = machine.get(queue::HolderId{1}, true, now)) {
      left.insert(delivery->message->body);
    }
    for (const std::string& body : left) {
      if (left.count(body) > 1) failure_ = "'" + body + "' is in the queue twice";
      if (!published_.contains(body)) failure_ = "'" + body + "' was never published";
    }
    for (const std::string& body : received_) {
      if (!published_.contains(body)) failure_ = "'" + body + "' received, never published";
    }
    for (const std::string& body : confirmed_) {
      if (!received_.contains(body) && !left.contains(body)) {
        failure_ = "'" + body + "' was confirmed and is lost";
      }
    }
  }

  uint64_t seed_;
  std::mt19937_64 random_;
  std::vector<std::unique_ptr<storage::FaultFileSystem>> disks_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<int> down_until_;
  std::vector<int> isolated_until_;
  std::deque<InFlight> in_flight_;
  std::map<uint64_t, std::pair<std::string, std::string>> effects_;  // by index
  uint64_t next_seq_ = 1;
  std::map<uint64_t, queue::MessagePtr> unconfirmed_;        // publishes, by number
  std::map<uint64_t, queue::QueueCommand::Body> unapplied_;  // every command, by number
  std::set<std::string> published_;
  std::set<std::string> confirmed_;
  std::set<std::string> received_;
  std::set<queue::MessageId> to_settle_;
  uint64_t crashes_ = 0;
  uint64_t redelivered_ = 0;
  uint64_t duplicate_entries_ = 0;
  uint64_t early_entries_ = 0;
  uint64_t last_fresh_ = 0;  // the number of the last message taken the first time
  int round_ = 0;
  std::string failure_;
};

TEST(QueueSimulation, NothingConfirmedIsLostOrDuplicatedUnderFaults) {
  uint64_t seeds = 300;
  if (const char* configured = std::getenv("HAMQ_QUEUE_SIM_SEEDS")) {
    seeds = std::strtoull(configured, nullptr, 10);
  }
  uint64_t crashes = 0;
  uint64_t confirmed = 0;
  uint64_t redelivered = 0;
  uint64_t duplicates = 0;
  uint64_t early = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    QueueSimulation simulation(seed);
    ASSERT_EQ(simulation.run(), "");
    crashes += simulation.crashes();
    confirmed += simulation.confirmed();
    redelivered += simulation.redelivered();
    duplicates += simulation.duplicates();
    early += simulation.early();
  }
  // The runs did what they are for: nodes crashed while messages were confirmed, came back
  // redelivered, copies sent again were applied once, and copies that came early were refused.
  EXPECT_GT(crashes, seeds * 3);
  EXPECT_GT(confirmed, seeds * 100);
  EXPECT_GT(redelivered, seeds);
  EXPECT_GT(duplicates, seeds);
  EXPECT_GT(early, 0u);
  std::printf(
      "%lu seeds: %lu crashes, %lu confirmed, %lu redelivered, %lu copies applied once, %lu "
      "refused as early\n",
      static_cast<unsigned long>(seeds), static_cast<unsigned long>(crashes),
      static_cast<unsigned long>(confirmed), static_cast<unsigned long>(redelivered),
      static_cast<unsigned long>(duplicates), static_cast<unsigned long>(early));
}

}  // namespace
}  // namespace hamq::server
