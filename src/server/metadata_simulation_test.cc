// The cluster's metadata at node level, seeded: three nodes, each a Broker applying the metadata
// group's entries (Broker::apply_definition, as MetadataStore does) through a GroupHost over its
// own Wal on a fault-injecting disk. A client proposes random definition changes (declares that
// conflict, deletes of what may be absent, binds, nodes joining and forgotten) to whichever node
// leads, while nodes crash (their unsynced writes torn), are cut off, and lose or delay batches;
// nodes snapshot their model now and then, so that a restart or a lagging member restores one.
// Checks: every node that applies an entry applies the same command with the same verdict, and
// once the faults stop every node holds the same definitions and the same cluster nodes.
// HAMQ_METADATA_SIM_SEEDS sets how many seeds run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "broker/definitions.h"
#include "raft/coalescer.h"
#include "replication/group_host.h"
#include "storage/fault_file_system.h"
#include "storage/wal.h"

namespace hamq::server {
namespace {

constexpr raft::GroupId metadata{1};
constexpr int fault_rounds = 1200;
constexpr int settle_rounds_max = 3000;

std::string verdict_of(const broker::Broker::DefinitionResult& result) {
  return result.ok() ? "ok " + std::to_string(*result) : "refused " + result.error().text;
}

struct Node {
  Node(uint64_t node, storage::FileSystem& disk)
      : id(raft::NodeId{node}), fs(disk), outbox(this->id) {}

  // The process starts on its disk: a new Broker, replaying the group from its snapshot.
  void open(bool found) {
    auto opened = storage::Wal::open(fs, "wal");
    ASSERT_TRUE(opened.ok()) << opened.error().detail;
    wal = std::move(opened.value());
    broker = std::make_unique<broker::Broker>(std::vector<std::string>{"/"}, id.value);
    broker->set_node_id(id.value);
    host = std::make_unique<replication::GroupHost>(
        *wal, id, 1, raft::Config{},
        replication::GroupHostCallbacks{
            .send = [this](const raft::Message& message) { outbox.add(message); },
            .restore =
                [this](raft::GroupId, const raft::SnapshotMeta& meta, const std::string& data) {
                  auto restored = broker->restore_definitions(data);
                  if (!restored.ok()) failure = "snapshot does not restore: " + restored.error();
                  applied_to = meta.index.value;
                },
            .apply = [this](raft::GroupId, const raft::Entry& entry) { apply(entry); },
            .expand_snapshot = {},
            .role_changed = {},
            .damaged = {}});
    if (found) {
      broker::Definitions founding;
      raft::ConfState conf;
      for (uint64_t seed = 1; seed <= 3; ++seed) {
        founding.apply(broker::AddNode{
            {seed, "n" + std::to_string(seed), "127.0.0.1" + std::to_string(seed), 25672, false}});
        conf.voters.push_back(raft::NodeId{seed});
      }
      ASSERT_TRUE(host->create_group(metadata, conf, founding.snapshot()).ok());
    } else {
      host->open_existing_groups();
    }
    up = true;
  }

  void stop() {
    host.reset();
    wal.reset();
    broker.reset();
    outbox.take();
    up = false;
  }

  void apply(const raft::Entry& entry) {
    applied_to = entry.index.value;
    if (entry.type != raft::EntryType::normal || entry.data.empty()) return;
    auto command = broker::decode_metadata_command(entry.data);
    if (!command.ok()) {
      failure = "entry " + std::to_string(entry.index.value) + " does not decode";
      return;
    }
    auto result = broker->apply_definition(*command, {entry.term.value, entry.index.value});
    applied.push_back({entry.index.value, entry.data, verdict_of(result)});
  }

  bool leads() const {
    const raft::Raft* raft = up ? host->peek(metadata) : nullptr;
    return raft != nullptr && raft->role() == raft::Role::leader;
  }

  struct Applied {
    uint64_t index;
    std::string command;
    std::string verdict;
  };
  raft::NodeId id;
  storage::FileSystem& fs;
  raft::Outbox outbox;
  std::unique_ptr<storage::Wal> wal;
  std::unique_ptr<broker::Broker> broker;
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

class MetadataSimulation {
 public:
  explicit MetadataSimulation(uint64_t seed) : seed_(seed), random_(seed) {
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
    // A barrier that every node applies says each has applied everything committed before it.
    bool settled = false;
    for (int rounds = 0; rounds < settle_rounds_max && failure_.empty() && !settled;
         ++rounds, ++round_) {
      if (rounds % 100 == 0) propose(broker::Barrier{});
      step(/*faults=*/false);
      settled = all_applied_the_same_index();
    }
    if (failure_.empty() && !settled) failure_ = "no convergence after the faults stopped";
    if (failure_.empty()) check_same_model();
    return failure_.empty() ? "" : "seed " + std::to_string(seed_) + ": " + failure_;
  }

  uint64_t crashes() const { return crashes_; }
  uint64_t entries() const { return verdicts_.size(); }
  uint64_t refusals() const { return refusals_; }

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
    // Now and then a node replaces its log with its model.
    if (chance(0.02)) {
      Node& node = *nodes_[pick(nodes_.size())];
      if (node.up) {
        (void)node.host->compact(metadata, node.broker->current_definitions().snapshot());
      }
    }
  }

  std::string name(const char* prefix, size_t count) {
    return prefix + std::to_string(pick(count));
  }

  // Changes that often conflict: few names, two shapes of each.
  broker::MetadataCommand random_command() {
    amqp::FieldTable arguments;
    if (chance(0.5)) arguments.entries.emplace_back("x-max-length", amqp::FieldValue(int32_t{5}));
    switch (pick(9)) {
      case 0:
      case 1:
        return broker::DeclareQueue{
            broker::QueueDefinition{"/", name("q", 6), 0, false, arguments, true, 0, 0, {}}, 0};
      case 2:
        return broker::DeleteQueue{"/", name("q", 6)};
      case 3:
        return broker::DeclareExchange{broker::ExchangeDefinition{
            "/", name("e", 4), chance(0.5) ? "topic" : "direct", false, false, {}, 0, true, 0}};
      case 4:
        return broker::DeleteExchange{"/", name("e", 4), chance(0.5)};
      case 5:
      case 6: {
        broker::BindingDefinition binding{"/", name("e", 4),
                                          broker::Binding{name("q", 6), true, name("k", 3), {}}};
        if (pick(2) == 0) return broker::Bind{binding, 0};
        return broker::Unbind{binding, 0};
      }
      case 7:
        return broker::AddNode{{0, name("n", 6), "127.0.0.20", 25672, false}};
      default:
        return broker::ForgetNode{name("n", 6)};
    }
  }

  void propose(const broker::MetadataCommand& command) {
    for (auto& node : nodes_) {
      if (node->leads()) {
        (void)node->host->propose(metadata, broker::encode_metadata_command(command));
        return;
      }
    }
  }

  void client() {
    if (chance(0.5)) propose(random_command());
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
  // verdict.
  void take_applied(Node& node) {
    if (!node.failure.empty() && failure_.empty()) {
      failure_ = "node " + std::to_string(node.id.value) + ": " + node.failure;
    }
    for (const Node::Applied& entry : node.applied) {
      auto [it, first] = verdicts_.try_emplace(entry.index, entry.command, entry.verdict);
      if (first) {
        if (entry.verdict.starts_with("refused")) ++refusals_;
        continue;
      }
      if (it->second.first != entry.command || it->second.second != entry.verdict) {
        if (failure_.empty()) {
          failure_ = "node " + std::to_string(node.id.value) + " applied entry " +
                     std::to_string(entry.index) + " as '" + entry.verdict +
                     "' where another applied '" + it->second.second + "' (round " +
                     std::to_string(round_) + ")";
        }
      }
    }
    node.applied.clear();
  }

  bool all_applied_the_same_index() {
    uint64_t index = nodes_[0]->applied_to;
    for (auto& node : nodes_) {
      const raft::Raft* raft = node->host->peek(metadata);
      if (raft == nullptr || node->applied_to != index || raft->committed().value != index) {
        return false;
      }
    }
    return index > 0;
  }

  void check_same_model() {
    const broker::Definitions model = nodes_[0]->broker->current_definitions();
    for (auto& node : nodes_) {
      if (node->broker->current_definitions() != model) {
        failure_ = "node " + std::to_string(node->id.value) + " holds other definitions";
        return;
      }
      if (node->broker->cluster_nodes() != nodes_[0]->broker->cluster_nodes()) {
        failure_ = "node " + std::to_string(node->id.value) + " knows other cluster nodes";
        return;
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
  std::map<uint64_t, std::pair<std::string, std::string>> verdicts_;  // by index
  uint64_t crashes_ = 0;
  uint64_t refusals_ = 0;
  int round_ = 0;
  std::string failure_;
};

TEST(MetadataSimulation, EveryNodeAppliesTheSameDefinitionsUnderFaults) {
  uint64_t seeds = 200;
  if (const char* configured = std::getenv("HAMQ_METADATA_SIM_SEEDS")) {
    seeds = std::strtoull(configured, nullptr, 10);
  }
  uint64_t crashes = 0;
  uint64_t entries = 0;
  uint64_t refusals = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    MetadataSimulation simulation(seed);
    ASSERT_EQ(simulation.run(), "");
    crashes += simulation.crashes();
    entries += simulation.entries();
    refusals += simulation.refusals();
  }
  // The runs did what they are for: nodes crashed while changes, some refused, were applied.
  EXPECT_GT(crashes, seeds * 3);
  EXPECT_GT(entries, seeds * 100);
  EXPECT_GT(refusals, seeds * 10);
  std::printf("%lu seeds: %lu crashes, %lu entries, %lu refused\n",
              static_cast<unsigned long>(seeds), static_cast<unsigned long>(crashes),
              static_cast<unsigned long>(entries), static_cast<unsigned long>(refusals));
}

}  // namespace
}  // namespace hamq::server
