#include "raft/sim/simulator.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "raft/coalescer.h"
#include "raft/raft.h"
#include "raft/sim/sim_disk.h"

namespace hamq::raft::sim {
namespace {

constexpr uint64_t tick_us = 10'000;            // 10 ms per tick, before drift
constexpr uint64_t client_interval_us = 4'000;  // a proposal attempt every 4 ms
constexpr uint64_t fault_interval_us_max = 800'000;
constexpr uint64_t compact_after_entries = 24;  // a member snapshots once this many are applied
constexpr size_t snapshot_padding_bytes = 300;  // so snapshots travel in several chunks
constexpr uint64_t log_check_interval_events = 5'000;
constexpr double wipe_chance = 0.05;  // of a crash, that the disk is lost too

// xoshiro256**, seeded by splitmix64: small, fast, and the same on every platform.
class Random {
 public:
  explicit Random(uint64_t seed) {
    for (uint64_t& word : state_) {
      seed += 0x9e3779b97f4a7c15ULL;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      word = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    uint64_t result = rotl(state_[1] * 5, 7) * 9;
    uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  uint64_t below(uint64_t bound) { return bound == 0 ? 0 : next() % bound; }
  uint64_t between(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }
  bool chance(double probability) {
    return static_cast<double>(next() >> 11) * 0x1.0p-53 < probability;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

uint64_t mix_hash(uint64_t hash, const Entry& entry) {
  // FNV-1a over the entry's term, type and data.
  auto feed = [&](uint8_t byte) {
    hash ^= byte;
    hash *= 0x100000001b3ULL;
  };
  for (int i = 0; i < 8; ++i) feed(static_cast<uint8_t>(entry.term.value >> (8 * i)));
  feed(static_cast<uint8_t>(entry.type));
  for (char c : entry.data) feed(static_cast<uint8_t>(c));
  return hash;
}

// The replicated state machine: a running hash of everything applied.
struct StateMachine {
  LogIndex applied;
  uint64_t hash = 0xcbf29ce484222325ULL;

  std::string encode() const {
    char text[64];
    std::snprintf(text, sizeof text, "%" PRIu64 ":%" PRIu64 ":", applied.value, hash);
    return std::string(text) + std::string(snapshot_padding_bytes, 'p');
  }
  static std::optional<StateMachine> decode(const std::string& data) {
    StateMachine machine;
    if (std::sscanf(data.c_str(), "%" SCNu64 ":%" SCNu64 ":", &machine.applied.value,
                    &machine.hash) != 2) {
      return std::nullopt;
    }
    return machine;
  }
};

struct Replica {
  std::unique_ptr<SimDisk> disk;
  std::unique_ptr<Raft> raft;
  StateMachine machine;
  std::optional<Ready> in_flight;  // handed out, waiting for its fsync
  Role last_role = Role::follower;
  Term last_term;
};

struct Node {
  bool up = true;
  uint64_t generation = 0;  // raised at each crash: events of an earlier life are void
  uint64_t tick_interval_us = tick_us;
  bool catching_up = false;  // lost its disk and not yet caught up in every group
  // Group commit: the groups the running fsync covers, and those waiting for the next one.
  bool fsync_running = false;
  std::vector<uint32_t> syncing;
  std::vector<uint32_t> sync_waiting;
  std::vector<Replica> replicas;  // one per group
};

enum class EventKind { deliver, tick, fsync_done, client, fault, restart };

struct Event {
  uint64_t time_us = 0;
  uint64_t sequence = 0;
  EventKind kind = EventKind::tick;
  uint32_t node = 0;
  uint32_t group = 0;
  uint64_t generation = 0;
  std::shared_ptr<const NodeBatch> batch{};
  bool operator>(const Event& other) const {
    return time_us != other.time_us ? time_us > other.time_us : sequence > other.sequence;
  }
};

struct CommittedEntry {
  Term term;
  uint64_t hash_after = 0;  // the state machine's hash once this entry is applied
  std::string data;
};

struct Proposal {
  uint32_t group = 0;
  uint32_t node = 0;
  LogIndex index;
  Term term;
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& options) : options_(options), random_(options.seed) {}

  SimReport run();

 private:
  NodeId node_id(uint32_t node) const { return NodeId{node + 1ULL}; }
  Config raft_config(uint32_t node, uint32_t group) {
    return Config{.id = node_id(node),
                  .group = GroupId{group + 1ULL},
                  .random_seed = random_.next(),
                  .append_bytes_max = random_.chance(0.5) ? 200u : 1u << 20,
                  .inflight_appends_max = static_cast<uint32_t>(random_.between(1, 8)),
                  .snapshot_chunk_bytes = 128};
  }
  void schedule(Event event) {
    event.sequence = ++sequence_;
    events_.push(std::move(event));
  }
  void fail(const std::string& what);
  void trace(const char* format, ...) __attribute__((format(printf, 2, 3)));

  void start_node(uint32_t node, bool first_start);
  void crash_node(uint32_t node);
  void process(uint32_t node, uint32_t group);
  void start_fsync(uint32_t node);
  void fsync_done(uint32_t node);
  void complete(uint32_t node, uint32_t group);
  void apply(uint32_t node, uint32_t group, const Ready& ready);
  void send(uint32_t from, const Message& message);
  void flush(uint32_t from);
  void deliver(const Event& event);
  void client_step();
  void fault_step();
  void heal_all();
  void check_leader(uint32_t node, uint32_t group, const Ready& ready);
  void check_logs(uint32_t group);
  void check_final();
  std::optional<uint32_t> leader_of(uint32_t group);
  bool group_settled(uint32_t group, LogIndex& final_index);

  SimOptions options_;
  Random random_;
  SimReport report_;
  uint64_t now_us_ = 0;
  uint64_t sequence_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  std::vector<Node> nodes_;
  std::vector<Outbox> outboxes_;  // per node: what it said during the current event
  uint64_t incarnations_ = 0;

  // Network: blocked[from][to], and the current loss and duplication rates.
  std::vector<std::vector<bool>> blocked_;
  double loss_ = 0;
  double duplication_ = 0;
  bool faults_on_ = true;

  // Checkers' knowledge.
  std::map<std::pair<uint32_t, Term>, uint32_t> leader_of_term_;  // (group, term) -> node
  std::vector<std::map<uint64_t, CommittedEntry>> committed_;     // per group, by index
  std::map<std::tuple<uint32_t, uint32_t, Term>, LogIndex> written_as_leader_;
  std::map<std::string, Proposal> proposals_;
  std::vector<ConfState> committed_conf_;  // per group, as of the highest index applied anywhere
  std::set<std::string> acknowledged_;
  uint64_t command_counter_ = 0;

  // Membership: a voter taken out of a group, on its way back.
  struct MembershipChange {
    uint32_t node = 0;
    bool removed = false;  // the leader's configuration showed it out
  };
  std::vector<std::optional<MembershipChange>> membership_;
};

void Simulation::fail(const std::string& what) {
  if (!report_.ok) return;
  report_.ok = false;
  char prefix[96];
  std::snprintf(prefix, sizeof prefix, "seed %" PRIu64 " at %.3f s: ", options_.seed,
                static_cast<double>(now_us_) / 1e6);
  report_.failure = prefix + what;
}

void Simulation::trace(const char* format, ...) {
  if (!options_.trace) return;
  std::fprintf(stderr, "%10.6f ", static_cast<double>(now_us_) / 1e6);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
}

void Simulation::start_node(uint32_t node, bool first_start) {
  Node& state = nodes_[node];
  state.up = true;
  for (uint32_t group = 0; group < options_.groups; ++group) {
    Replica& replica = state.replicas[group];
    if (first_start) {
      ConfState conf;
      for (uint32_t voter = 0; voter < options_.nodes; ++voter) {
        conf.voters.push_back(node_id(voter));
      }
      StateMachine initial;
      initial.applied = LogIndex{1};
      replica.disk = std::make_unique<SimDisk>(
          MemoryStorage::bootstrap(conf, ++incarnations_, initial.encode()));
    }
    replica.raft = std::make_unique<Raft>(raft_config(node, group), replica.disk->current());
    replica.in_flight.reset();
    replica.last_role = Role::follower;
    // The state machine starts again from the snapshot, and the log replays onto it.
    const Snapshot& snapshot = replica.disk->current().snapshot();
    replica.machine = StateMachine{};
    replica.machine.applied = snapshot.meta.index;
    if (snapshot.meta.index.value > 0) {
      auto restored = StateMachine::decode(snapshot.data);
      if (!restored || restored->applied != snapshot.meta.index) {
        fail("a snapshot on disk does not decode");
        return;
      }
      replica.machine = *restored;
    }
  }
  schedule(Event{.time_us = now_us_ + random_.below(state.tick_interval_us),
                 .kind = EventKind::tick,
                 .node = node,
                 .generation = state.generation});
}

void Simulation::crash_node(uint32_t node) {
  Node& state = nodes_[node];
  if (!state.up) return;
  trace("crash node %u", node + 1);
  (void)outboxes_[node].take();  // what was not yet handed to the network dies with the process
  state.up = false;
  ++state.generation;
  ++report_.crashes;
  // Now and then the disk is lost too: the node comes back empty, under the same id.
  // Only one disk at a time: losing a second before the first has caught up can lose a majority's
  // copies of committed entries, which no consensus protocol survives.
  bool any_catching_up = false;
  for (const Node& other : nodes_) any_catching_up |= other.catching_up;
  // Nor while a group is short of a voter: with two voters, one lost disk is half of them.
  for (const auto& change : membership_) any_catching_up |= change.has_value();
  bool wipe = !any_catching_up && random_.chance(wipe_chance);
  state.catching_up = state.catching_up || wipe;
  if (wipe) {
    ++report_.disks_lost;
    trace("node %u loses its disk", node + 1);
  }
  state.fsync_running = false;
  state.syncing.clear();
  state.sync_waiting.clear();
  for (Replica& replica : state.replicas) {
    replica.raft.reset();
    replica.in_flight.reset();
    if (wipe) {
      replica.disk = std::make_unique<SimDisk>(MemoryStorage(++incarnations_));
      continue;
    }
    // A power loss: some of the unsynced writes made it, the last maybe torn.
    size_t keep = random_.below(replica.disk->unsynced_count() + 1);
    replica.disk->crash(keep, random_.below(4));
  }
  schedule(Event{.time_us = now_us_ + random_.between(50'000, 2'000'000),
                 .kind = EventKind::restart,
                 .node = node,
                 .generation = state.generation});
}

void Simulation::send(uint32_t from, const Message& message) {
  if (message.to.value == 0 || message.to.value > nodes_.size()) return;
  ++report_.messages;
  outboxes_[from].add(message);
}

void Simulation::flush(uint32_t from) {
  for (NodeBatch& batch : outboxes_[from].take()) {
    uint32_t to = static_cast<uint32_t>(batch.to.value - 1);
    ++report_.batches;
    report_.heartbeats += batch.heartbeats.size();
    if (blocked_[from][to] || random_.chance(loss_)) continue;
    auto shared = std::make_shared<const NodeBatch>(std::move(batch));
    int copies = random_.chance(duplication_) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      // Mostly fast, sometimes slow: slow batches are overtaken by later ones (reordering).
      uint64_t delay =
          random_.chance(0.05) ? random_.between(5'000, 60'000) : random_.between(100, 3'000);
      schedule(Event{
          .time_us = now_us_ + delay, .kind = EventKind::deliver, .node = to, .batch = shared});
    }
  }
}

void Simulation::deliver(const Event& event) {
  Node& state = nodes_[event.node];
  if (!state.up) return;
  std::vector<bool> touched(options_.groups, false);
  for (const Message& message : expand(*event.batch)) {
    uint32_t group = static_cast<uint32_t>(message.group.value - 1);
    if (options_.trace_messages) {
      trace("group %u %" PRIu64 "->%" PRIu64 " %s term %" PRIu64 " index %" PRIu64
            " log_term %" PRIu64 " entries %zu commit %" PRIu64 "%s",
            group + 1, message.from.value, message.to.value,
            std::string(message_type_name(message.type)).c_str(), message.term.value,
            message.index.value, message.log_term.value, message.entries.size(),
            message.commit.value, message.reject ? " reject" : "");
    }
    state.replicas[group].raft->step(message);
    touched[group] = true;
  }
  for (uint32_t group = 0; group < options_.groups && state.up; ++group) {
    if (touched[group]) process(event.node, group);
  }
}

void Simulation::check_leader(uint32_t node, uint32_t group, const Ready& ready) {
  Replica& replica = nodes_[node].replicas[group];
  Term term = replica.raft->term();
  if (ready.role == Role::leader &&
      (replica.last_role != Role::leader || replica.last_term != term)) {
    ++report_.leaders_elected;
    trace("group %u: node %u leads term %" PRIu64, group + 1, node + 1, term.value);
    // Election safety (§5.2): at most one leader per term.
    auto [it, fresh] = leader_of_term_.emplace(std::make_pair(group, term), node);
    if (!fresh && it->second != node) {
      fail("election safety: two leaders in group " + std::to_string(group + 1) + " term " +
           std::to_string(term.value));
    }
    // Leader completeness (§5.4): every entry known committed is in the new leader's log.
    const RaftLog& log = replica.raft->log();
    for (const auto& [index, entry] : committed_[group]) {
      if (LogIndex{index} < log.first_index()) continue;
      if (log.term_or_zero(LogIndex{index}) != entry.term) {
        fail("leader completeness: node " + std::to_string(node + 1) + " leads group " +
             std::to_string(group + 1) + " without committed entry " + std::to_string(index));
        break;
      }
    }
  }
  replica.last_role = ready.role;
  replica.last_term = term;
  // Leader append-only (§5.3): a leader never rewrites its own log within its term.
  if (ready.role == Role::leader && !ready.entries.empty()) {
    auto key = std::make_tuple(group, node, term);
    auto found = written_as_leader_.find(key);
    if (found != written_as_leader_.end() && ready.entries.front().index <= found->second) {
      fail("leader append-only: node " + std::to_string(node + 1) + " rewrote index " +
           std::to_string(ready.entries.front().index.value));
    }
    written_as_leader_[key] = ready.entries.back().index;
  }
}

void Simulation::process(uint32_t node, uint32_t group) {
  Node& state = nodes_[node];
  Replica& replica = state.replicas[group];
  if (!state.up || replica.in_flight || !replica.raft->has_ready()) return;
  Ready ready = replica.raft->ready();
  check_leader(node, group, ready);
  for (const Message& message : ready.messages) send(node, message);
  if (options_.break_ready_contract) {
    for (const Message& message : ready.messages_after_persist) send(node, message);
    ready.messages_after_persist.clear();
  }
  bool writes = !ready.snapshot_chunks.empty() || !ready.entries.empty() || ready.hard_state;
  if (!writes) {
    // Nothing to make durable: carry on at once.
    replica.in_flight = std::move(ready);
    complete(node, group);
    return;
  }
  // A write can fail (no space, I/O error): the member stops, as the node would.
  if (faults_on_ && random_.chance(0.0005)) {
    trace("node %u: write failed", node + 1);
    crash_node(node);
    return;
  }
  for (const SnapshotChunk& chunk : ready.snapshot_chunks) {
    replica.disk->write_snapshot_chunk(chunk);
  }
  replica.disk->append(ready.entries);
  if (ready.hard_state) replica.disk->set_hard_state(*ready.hard_state);
  replica.in_flight = std::move(ready);
  // Group commit: one fsync covers every group that wrote before it started; what is written
  // while it runs waits for the next one.
  state.sync_waiting.push_back(group);
  if (!state.fsync_running) start_fsync(node);
}

void Simulation::start_fsync(uint32_t node) {
  Node& state = nodes_[node];
  state.syncing = std::move(state.sync_waiting);
  state.sync_waiting.clear();
  state.fsync_running = true;
  ++report_.fsyncs;
  schedule(Event{.time_us = now_us_ + random_.between(200, 4'000),
                 .kind = EventKind::fsync_done,
                 .node = node,
                 .generation = state.generation});
}

void Simulation::fsync_done(uint32_t node) {
  Node& state = nodes_[node];
  // A failed fsync: what was written is in an unknown state; the node stops for good and
  // comes back from whatever the disk kept.
  if (faults_on_ && random_.chance(0.0005)) {
    trace("node %u: fsync failed", node + 1);
    crash_node(node);
    return;
  }
  std::vector<uint32_t> synced = std::move(state.syncing);
  state.syncing.clear();
  for (uint32_t group : synced) state.replicas[group].disk->sync();
  // What the completed groups write next waits for the next fsync (still "running" until all
  // of them are done, so none starts in between).
  for (uint32_t group : synced) {
    if (!state.up || !report_.ok) return;
    complete(node, group);
  }
  state.fsync_running = false;
  if (!state.sync_waiting.empty()) start_fsync(node);
}

void Simulation::complete(uint32_t node, uint32_t group) {
  Replica& replica = nodes_[node].replicas[group];
  Ready ready = std::move(*replica.in_flight);
  replica.in_flight.reset();
  for (const Message& message : ready.messages_after_persist) send(node, message);
  apply(node, group, ready);
  if (!report_.ok) return;
  replica.raft->advance(ready);
  // Now and then the member snapshots what it has applied and drops that log prefix.
  LogIndex applied = replica.raft->applied();
  // (Not while a snapshot from the leader waits to be written: the configuration is its.)
  if (applied.value >=
          replica.disk->current().snapshot().meta.index.value + compact_after_entries &&
      !replica.raft->log().unstable_snapshot() && random_.chance(0.3)) {
    replica.disk->compact(applied, replica.raft->conf(), replica.machine.encode());
  }
  process(node, group);
}

void Simulation::apply(uint32_t node, uint32_t group, const Ready& ready) {
  Replica& replica = nodes_[node].replicas[group];
  if (ready.snapshot_installed) {
    ++report_.snapshots_installed;
    const Snapshot& snapshot = replica.disk->current().snapshot();
    auto restored = StateMachine::decode(snapshot.data);
    if (!restored || restored->applied != ready.snapshot_installed->index) {
      fail("an installed snapshot does not decode");
      return;
    }
    replica.machine = *restored;
    auto known = committed_[group].find(restored->applied.value);
    if (known != committed_[group].end() && known->second.hash_after != restored->hash) {
      fail("state machine safety: snapshot at " + std::to_string(restored->applied.value) +
           " differs");
      return;
    }
  }
  for (const Entry& entry : ready.committed_entries) {
    if (entry.index != replica.machine.applied + 1) {
      fail("node " + std::to_string(node + 1) + " applies index " +
           std::to_string(entry.index.value) + " after " +
           std::to_string(replica.machine.applied.value));
      return;
    }
    replica.machine.applied = entry.index;
    replica.machine.hash = mix_hash(replica.machine.hash, entry);
    // State machine safety (§5.4.3): the same entry at each index, everywhere.
    auto [it, fresh] = committed_[group].emplace(
        entry.index.value, CommittedEntry{entry.term, replica.machine.hash, entry.data});
    if (!fresh && (it->second.term != entry.term || it->second.data != entry.data ||
                   it->second.hash_after != replica.machine.hash)) {
      fail("state machine safety: group " + std::to_string(group + 1) + " index " +
           std::to_string(entry.index.value) + " differs on node " + std::to_string(node + 1));
      return;
    }
    auto proposal = proposals_.find(entry.data);
    if (proposal != proposals_.end() && proposal->second.node == node &&
        proposal->second.index == entry.index && proposal->second.term == entry.term) {
      acknowledged_.insert(entry.data);  // the client hears "done" from the member it asked
    }
    if (entry.type == EntryType::conf_change) {
      ++report_.membership_changes;
      ConfChange change;
      if (decode_conf_change(entry.data, change) && fresh) {
        apply_conf_change(change, committed_conf_[group]);
        trace("group %u node %u applies at %" PRIu64 ": %s node %" PRIu64, group + 1, node + 1,
              entry.index.value,
              change.type == ConfChangeType::add_voter     ? "add voter"
              : change.type == ConfChangeType::add_learner ? "add learner"
                                                           : "remove",
              change.node.value);
      }
    }
  }
}

std::optional<uint32_t> Simulation::leader_of(uint32_t group) {
  std::optional<uint32_t> found;
  Term best;
  for (uint32_t node = 0; node < nodes_.size(); ++node) {
    if (!nodes_[node].up) continue;
    const Raft& raft = *nodes_[node].replicas[group].raft;
    if (raft.role() == Role::leader && (!found || raft.term() > best)) {
      found = node;
      best = raft.term();
    }
  }
  return found;
}

void Simulation::client_step() {
  uint32_t group = static_cast<uint32_t>(random_.below(options_.groups));
  uint32_t node = static_cast<uint32_t>(random_.below(nodes_.size()));
  if (!nodes_[node].up) return;
  Raft& raft = *nodes_[node].replicas[group].raft;
  if (raft.role() != Role::leader) return;
  if (faults_on_ && random_.chance(0.01)) {
    // A leadership transfer to a random voter.
    const auto& voters = raft.conf().voters;
    NodeId target = voters[random_.below(voters.size())];
    if (raft.transfer_leadership(target)) {
      ++report_.transfers;
      trace("group %u: transfer from %u to %" PRIu64, group + 1, node + 1, target.value);
    }
  } else if (membership_[group] || (faults_on_ && random_.chance(0.005))) {
    // Take a voter out, then bring it back as a learner, then as a voter again.
    if (!membership_[group]) {
      const auto& voters = raft.conf().voters;
      NodeId victim = voters[random_.below(voters.size())];
      if (victim == raft.id() || voters.size() < 3) return;
      // Not while a node rebuilds a lost disk: with two voters, it would be half of them.
      for (const Node& other : nodes_) {
        if (other.catching_up) return;
      }
      if (raft.propose_conf_change({ConfChangeType::remove_node, victim}).ok()) {
        trace("group %u: remove node %" PRIu64, group + 1, victim.value);
        membership_[group] = MembershipChange{static_cast<uint32_t>(victim.value - 1), false};
      }
      return;
    }
    // The next step follows from the committed configuration (as the checker knows it: a
    // leader's own view may be stale), so a change lost with a leader is simply proposed again.
    const ConfState& conf = committed_conf_[group];
    MembershipChange& change = *membership_[group];
    NodeId member = node_id(change.node);
    if (!change.removed) {
      change.removed = !is_voter(conf, member) && !is_learner(conf, member);
      if (!change.removed && raft.propose_conf_change({ConfChangeType::remove_node, member}).ok()) {
        trace("group %u: remove node %" PRIu64 " again", group + 1, member.value);
      }
    } else if (is_voter(conf, member)) {
      trace("group %u: node %" PRIu64 " is a voter again (leader %u term %" PRIu64
            " voters %zu learners %zu)",
            group + 1, member.value, node + 1, raft.term().value, raft.conf().voters.size(),
            raft.conf().learners.size());
      membership_[group].reset();
    } else if (!is_learner(conf, member)) {
      (void)raft.propose_conf_change({ConfChangeType::add_learner, member});
    } else {
      const Progress* progress = raft.progress(member);
      if (progress && progress->match + 8 >= raft.log().last_index()) {
        (void)raft.propose_conf_change({ConfChangeType::add_voter, member});
      }
    }
  } else {
    std::string command =
        "g" + std::to_string(group + 1) + "c" + std::to_string(++command_counter_);
    auto index = raft.propose(command);
    if (index.ok()) {
      ++report_.proposals;
      proposals_[command] = Proposal{group, node, *index, raft.term()};
    }
  }
  process(node, group);
}

void Simulation::heal_all() {
  for (auto& row : blocked_) std::fill(row.begin(), row.end(), false);
}

void Simulation::fault_step() {
  uint32_t count = static_cast<uint32_t>(nodes_.size());
  uint32_t victim = static_cast<uint32_t>(random_.below(count));
  switch (random_.below(9)) {
    case 0:
      heal_all();
      trace("heal");
      break;
    case 1:  // isolate one node
      heal_all();
      for (uint32_t other = 0; other < count; ++other) {
        if (other != victim) blocked_[victim][other] = blocked_[other][victim] = true;
      }
      trace("isolate node %u", victim + 1);
      break;
    case 2: {  // isolate the leader of some group
      heal_all();
      auto leader = leader_of(static_cast<uint32_t>(random_.below(options_.groups)));
      if (!leader) break;
      for (uint32_t other = 0; other < count; ++other) {
        if (other != *leader) blocked_[*leader][other] = blocked_[other][*leader] = true;
      }
      trace("isolate leader node %u", *leader + 1);
      break;
    }
    case 3: {  // a majority and a minority
      heal_all();
      std::vector<uint32_t> order(count);
      for (uint32_t i = 0; i < count; ++i) order[i] = i;
      for (uint32_t i = count - 1; i > 0; --i) std::swap(order[i], order[random_.below(i + 1)]);
      std::vector<bool> minority(count, false);
      for (uint32_t i = 0; i < count / 2; ++i) minority[order[i]] = true;
      for (uint32_t a = 0; a < count; ++a) {
        for (uint32_t b = 0; b < count; ++b) blocked_[a][b] = minority[a] != minority[b];
      }
      trace("split majority/minority");
      break;
    }
    case 4:  // a ring: each node hears only its neighbours (overlapping majorities)
      heal_all();
      for (uint32_t a = 0; a < count; ++a) {
        for (uint32_t b = 0; b < count; ++b) {
          uint32_t gap = (a + count - b) % count;
          blocked_[a][b] = !(gap == 0 || gap == 1 || gap == count - 1);
        }
      }
      trace("ring");
      break;
    case 5: {  // one-way loss
      uint32_t other = static_cast<uint32_t>(random_.below(count));
      if (other != victim) blocked_[victim][other] = true;
      trace("one-way %u -> %u lost", victim + 1, other + 1);
      break;
    }
    case 6:
      // Half the time, a node in the middle of an fsync: the crash that loses or tears writes.
      if (random_.chance(0.5)) {
        for (uint32_t node = 0; node < count; ++node) {
          uint32_t candidate = (victim + node) % count;
          if (nodes_[candidate].up && nodes_[candidate].fsync_running) {
            victim = candidate;
            break;
          }
        }
      }
      crash_node(victim);
      break;
    case 7:
      loss_ = random_.chance(0.5) ? 0.0 : 0.01 * static_cast<double>(random_.between(1, 20));
      duplication_ = random_.chance(0.5) ? 0.0 : 0.05;
      trace("loss %.2f duplication %.2f", loss_, duplication_);
      break;
    default:
      heal_all();
      loss_ = 0;
      break;
  }
}

bool Simulation::group_settled(uint32_t group, LogIndex& final_index) {
  auto leader = leader_of(group);
  if (!leader) return false;
  Raft& raft = *nodes_[*leader].replicas[group].raft;
  if (membership_[group]) return false;
  if (raft.conf().voters.size() != nodes_.size()) return false;
  final_index = raft.committed();
  for (uint32_t node = 0; node < nodes_.size(); ++node) {
    const Replica& replica = nodes_[node].replicas[group];
    if (!nodes_[node].up || replica.machine.applied < final_index) return false;
  }
  return true;
}

void Simulation::check_logs(uint32_t group) {
  // Log matching (§5.3): where two logs have an entry with the same index and term, they are
  // identical up to it.
  for (uint32_t a = 0; a < nodes_.size(); ++a) {
    for (uint32_t b = a + 1; b < nodes_.size(); ++b) {
      if (!nodes_[a].up || !nodes_[b].up) continue;
      const RaftLog& log_a = nodes_[a].replicas[group].raft->log();
      const RaftLog& log_b = nodes_[b].replicas[group].raft->log();
      LogIndex lo = std::max(log_a.first_index(), log_b.first_index());
      LogIndex hi = std::min(log_a.last_index(), log_b.last_index());
      bool matched = false;
      for (LogIndex index = hi; index >= lo && index.value > 0; index = index - 1) {
        auto ea = log_a.entries(index, index + 1, 1 << 20);
        auto eb = log_b.entries(index, index + 1, 1 << 20);
        if (!ea.ok() || !eb.ok() || ea->empty() || eb->empty()) break;
        if (!matched && ea->front().term == eb->front().term) matched = true;
        if (matched && !(ea->front() == eb->front())) {
          fail("log matching: group " + std::to_string(group + 1) + " nodes " +
               std::to_string(a + 1) + " and " + std::to_string(b + 1) + " differ at " +
               std::to_string(index.value));
          return;
        }
      }
    }
  }
}

void Simulation::check_final() {
  for (uint32_t group = 0; group < options_.groups; ++group) check_logs(group);
  // No acknowledged command lost: each is committed at the index it was acknowledged at.
  for (const std::string& command : acknowledged_) {
    const Proposal& proposal = proposals_.at(command);
    const auto& committed = committed_[proposal.group];
    auto found = committed.find(proposal.index.value);
    if (found == committed.end() || found->second.data != command) {
      fail("acknowledged command " + command + " lost");
      return;
    }
  }
  report_.acknowledged = acknowledged_.size();
}

SimReport Simulation::run() {
  uint32_t count = options_.nodes;
  nodes_.resize(count);
  for (uint32_t node = 0; node < count; ++node) outboxes_.emplace_back(node_id(node));
  blocked_.assign(count, std::vector<bool>(count, false));
  committed_.resize(options_.groups);
  membership_.resize(options_.groups);
  committed_conf_.resize(options_.groups);
  for (ConfState& conf : committed_conf_) {
    for (uint32_t voter = 0; voter < count; ++voter) conf.voters.push_back(node_id(voter));
  }
  for (uint32_t node = 0; node < count; ++node) {
    // Clock drift: each node's tick runs up to 10% fast or slow.
    nodes_[node].tick_interval_us = tick_us * random_.between(90, 110) / 100;
    nodes_[node].replicas.resize(options_.groups);
    start_node(node, true);
  }
  schedule(Event{.time_us = client_interval_us, .kind = EventKind::client});
  schedule(Event{.time_us = random_.below(fault_interval_us_max), .kind = EventKind::fault});

  const uint64_t fault_end_us = options_.fault_phase_us;
  const uint64_t deadline_us = fault_end_us + options_.liveness_bound_us;
  bool healed = false;
  std::optional<uint64_t> idle_since_us;
  uint64_t idle_batches = 0;
  uint64_t idle_heartbeats = 0;
  std::vector<bool> settled(options_.groups, false);
  std::vector<std::string> final_commands(options_.groups);
  size_t settled_count = 0;

  while (!events_.empty() && report_.ok) {
    Event event = events_.top();
    events_.pop();
    now_us_ = event.time_us;
    ++report_.events;
    if (!healed && now_us_ >= fault_end_us) {
      // The faults stop: the network heals and every node comes back.
      healed = true;
      faults_on_ = false;
      heal_all();
      loss_ = 0;
      duplication_ = 0;
      for (uint32_t node = 0; node < count; ++node) {
        if (!nodes_[node].up) {
          ++nodes_[node].generation;
          start_node(node, false);
        }
      }
      trace("faults stop");
    }
    if (now_us_ > deadline_us) {
      std::string stuck;
      for (uint32_t group = 0; group < options_.groups; ++group) {
        if (!settled[group]) stuck += " " + std::to_string(group + 1);
      }
      fail("liveness: groups" + stuck + " did not recover within the bound");
      for (uint32_t group = 0; group < options_.groups; ++group) {
        for (uint32_t n = 0; n < count; ++n) {
          if (!nodes_[n].up) continue;
          const Raft& raft = *nodes_[n].replicas[group].raft;
          trace("group %u node %u: %s term %" PRIu64 " leader %" PRIu64
                " voters %zu learners %zu "
                "last %" PRIu64 " commit %" PRIu64 " applied %" PRIu64 " machine %" PRIu64,
                group + 1, n + 1, std::string(role_name(raft.role())).c_str(), raft.term().value,
                raft.leader().value, raft.conf().voters.size(), raft.conf().learners.size(),
                raft.log().last_index().value, raft.committed().value, raft.applied().value,
                nodes_[n].replicas[group].machine.applied.value);
          trace("  in flight %d has_ready %d fsync_running %d syncing %zu waiting %zu",
                nodes_[n].replicas[group].in_flight.has_value(), raft.has_ready(),
                nodes_[n].fsync_running, nodes_[n].syncing.size(), nodes_[n].sync_waiting.size());
        }
      }
      break;
    }
    Node* node = event.kind == EventKind::client || event.kind == EventKind::fault
                     ? nullptr
                     : &nodes_[event.node];
    switch (event.kind) {
      case EventKind::deliver:
        deliver(event);
        break;
      case EventKind::tick:
        if (!node->up || event.generation != node->generation) break;
        for (uint32_t group = 0; group < options_.groups && node->up; ++group) {
          node->replicas[group].raft->tick();
          process(event.node, group);
        }
        if (!node->up) break;  // a write failed while ticking
        if (node->catching_up) {
          node->catching_up = false;
          for (const Replica& replica : node->replicas) {
            node->catching_up |= replica.raft->catching_up();
          }
        }
        schedule(Event{.time_us = now_us_ + node->tick_interval_us,
                       .kind = EventKind::tick,
                       .node = event.node,
                       .generation = node->generation});
        break;
      case EventKind::fsync_done:
        if (node->up && event.generation == node->generation) fsync_done(event.node);
        break;
      case EventKind::restart:
        if (!node->up && event.generation == node->generation && faults_on_) {
          trace("restart node %u", event.node + 1);
          start_node(event.node, false);
        }
        break;
      case EventKind::client:
        if (idle_since_us) break;
        client_step();
        schedule(Event{.time_us = now_us_ + client_interval_us, .kind = EventKind::client});
        break;
      case EventKind::fault:
        if (faults_on_) {
          fault_step();
          schedule(Event{.time_us = now_us_ + random_.between(50'000, fault_interval_us_max),
                         .kind = EventKind::fault});
        }
        break;
    }
    for (uint32_t from = 0; from < count; ++from) {
      if (!outboxes_[from].empty()) flush(from);
    }
    if (report_.events % log_check_interval_events == 0) {
      for (uint32_t group = 0; group < options_.groups; ++group) check_logs(group);
    }
    if (healed) {
      // Liveness: each group commits a command proposed after the faults, on every node.
      for (uint32_t group = 0; group < options_.groups; ++group) {
        if (settled[group]) continue;
        LogIndex final_index;
        if (final_commands[group].empty()) {
          auto leader = leader_of(group);
          if (!leader || membership_[group]) continue;
          Raft& raft = *nodes_[*leader].replicas[group].raft;
          std::string command =
              "final" + std::to_string(group + 1) + "-" + std::to_string(++command_counter_);
          auto index = raft.propose(command);
          if (!index.ok()) continue;
          proposals_[command] = Proposal{group, *leader, *index, raft.term()};
          final_commands[group] = command;
          process(*leader, group);
        } else if (acknowledged_.count(final_commands[group]) &&
                   group_settled(group, final_index)) {
          settled[group] = true;
          ++settled_count;
        } else if (!leader_of(group)) {
          final_commands[group].clear();  // its leader lost office: propose again
        } else {
          const Proposal& proposal = proposals_[final_commands[group]];
          auto leader = leader_of(group);
          if (leader && (*leader != proposal.node ||
                         nodes_[*leader].replicas[group].raft->term() != proposal.term)) {
            final_commands[group].clear();
          }
        }
      }
      if (settled_count == options_.groups && !idle_since_us) {
        report_.liveness_us = now_us_ - fault_end_us;
        if (options_.idle_after_us == 0) break;
        // Stay on with no client, to count what idle groups cost.
        idle_since_us = now_us_;
        idle_batches = report_.batches;
        idle_heartbeats = report_.heartbeats;
      }
      if (idle_since_us && now_us_ >= *idle_since_us + options_.idle_after_us) {
        report_.idle_batches = report_.batches - idle_batches;
        report_.idle_heartbeats = report_.heartbeats - idle_heartbeats;
        break;
      }
    }
  }
  if (report_.ok) check_final();
  return report_;
}

}  // namespace

SimReport run_simulation(const SimOptions& options) {
  Simulation simulation(options);
  return simulation.run();
}

}  // namespace hamq::raft::sim
