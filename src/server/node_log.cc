#include "server/node_log.h"

#include "server/peer_transport.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace hamq::server {

namespace {

// Settling gives up when the writer has reported nothing for this long.
constexpr auto settle_silence_max = std::chrono::seconds(30);
// Rounds with nothing to write and nothing done before settling gives up (a group that cannot
// lead, alone, never will).
constexpr int idle_rounds_max = 3;

}  // namespace

NodeLog::~NodeLog() {
  stop_posting();
  writer_.reset();  // writes what is pending
}

bool NodeLog::log_is_new(const std::filesystem::path& data_dir) {
  std::error_code ec;
  for (const auto& file : std::filesystem::directory_iterator(data_dir / "wal", ec)) {
    if (file.path().extension() == ".seg") return false;
  }
  return true;
}

Result<std::unique_ptr<NodeLog>, std::string> NodeLog::open(const std::filesystem::path& data_dir,
                                                            raft::NodeId self,
                                                            uint64_t incarnation) {
  std::unique_ptr<NodeLog> log(new NodeLog());
  log->self_ = self;
  log->fs_ = storage::make_posix_file_system();
  std::string dir = (data_dir / "wal").string();
  storage::WalOptions options;
  options.reclaim_scan_interval_ms = 500;
  auto wal = storage::Wal::open(*log->fs_, dir, options, &log->recovery_);
  if (!wal.ok()) {
    return unexpected("cannot open the write-ahead log in " + dir + ": " + wal.error().detail);
  }
  log->wal_ = std::move(wal.value());
  for (const auto& failed : log->recovery_.failed_groups) {
    spdlog::error(
        "group {} of the write-ahead log is damaged and was not started (it is rebuilt "
        "from its other members, if it has some): {}",
        failed.group.value, failed.reason);
  }
  NodeLog* self_log = log.get();
  log->host_ = std::make_unique<replication::GroupHost>(
      *log->wal_, self, incarnation,
      raft::Config{.election_ticks = raft_election_ticks, .heartbeat_ticks = raft_heartbeat_ticks},
      replication::GroupHostCallbacks{
          .send =
              [self_log](const raft::Message& message) {
                // Alone (no transport): a group of one has nobody to tell.
                if (self_log->outbox_) self_log->outbox_->add(message);
              },
          .restore =
              [self_log](raft::GroupId group, const raft::SnapshotMeta& meta,
                         const std::string& data) {
                if (group == metadata_group) {
                  if (self_log->metadata_handler_.restore) {
                    self_log->metadata_handler_.restore(data);
                  }
                  return;
                }
                // A queue group's founding snapshot is empty: a fresh queue.
                if (data.empty() || self_log->broker_ == nullptr) return;
                auto restored = self_log->broker_->restore_queue(
                    group.value, {meta.term.value, meta.index.value}, data);
                if (!restored.ok()) {
                  spdlog::error("the snapshot of group {} does not restore: {}", group.value,
                                restored.error());
                }
              },
          .apply =
              [self_log](raft::GroupId group, const raft::Entry& entry) {
                if (entry.type != raft::EntryType::normal) return;
                if (group == metadata_group) {
                  // (A new leader's first entry, empty, too: it answers changes lost with the
                  // leader before.)
                  if (self_log->metadata_handler_.apply) self_log->metadata_handler_.apply(entry);
                } else if (self_log->broker_ != nullptr) {
                  self_log->broker_->apply_queue_entry(
                      group.value, {entry.term.value, entry.index.value}, entry.data);
                }
              },
          .expand_snapshot = [self_log](raft::GroupId group,
                                        std::string_view data) -> std::optional<std::string> {
            if (group == metadata_group) return std::string(data);
            if (self_log->broker_ == nullptr) return std::nullopt;
            return self_log->broker_->self_contained_snapshot(group.value, data);
          },
          .role_changed =
              [](raft::GroupId group, raft::Role role, raft::Term term, raft::NodeId leader) {
                spdlog::debug("group {}: {} in term {}, leader {}", group.value,
                              raft::role_name(role), term.value, leader.value);
              },
          .damaged = [self_log](raft::GroupId group) { self_log->on_damaged(group); }});
  return log;
}

void NodeLog::on_damaged(raft::GroupId group) {
  auto reason = wal_->group_failure(storage::GroupId{group.value});
  spdlog::error(
      "group {}: a record of its log on this node is damaged ({}); its member here stopped",
      group.value, reason.value_or("unknown"));
  // Its members as it knew them: with others, it takes their log (it votes again only once it
  // has what they committed); alone, it stays stopped (nothing to rebuild it from).
  const raft::Raft* raft = host_->peek(group);
  bool others =
      raft != nullptr && std::any_of(raft->conf().voters.begin(), raft->conf().voters.end(),
                                     [this](raft::NodeId voter) { return voter != self_; });
  if (!others) return;
  if (group != metadata_group && broker_ != nullptr) broker_->replica_damaged(group.value);
  rebuild_group(group.value);
}

bool NodeLog::damaged(uint64_t group) const {
  return wal_->group_failure(storage::GroupId{group}).has_value();
}

void NodeLog::rebuild_group(uint64_t group) {
  auto rebuilt = host_->rebuild_group(raft::GroupId{group});
  if (rebuilt.ok()) {
    spdlog::warn(
        "group {}: its damaged log here is dropped; the member joins again and takes its "
        "state from the other members",
        group);
  } else {
    spdlog::error("group {}: cannot drop its damaged log: {}", group, rebuilt.error());
  }
  schedule_process();
}

bool NodeLog::open_queue_groups(const std::set<uint64_t>& keep) {
  open_queue_groups_async(keep);
  return settle([this] { return caught_up(metadata_group) && queue_groups_caught_up(); });
}

bool NodeLog::caught_up(raft::GroupId group) {
  const raft::Raft* raft = host_->peek(group);
  return raft != nullptr && raft->role() == raft::Role::leader &&
         raft->applied() == raft->committed() && raft->committed() == raft->log().last_index();
}

bool NodeLog::settle(const std::function<bool()>& done) {
  int idle_rounds = 0;
  auto last_progress = std::chrono::steady_clock::now();
  for (;;) {
    size_t taken = process_host();
    take_results();
    if (done()) return true;
    if (failed()) return false;
    if (writer_) {
      // The writer flushes; wait for what it reports.
      if (wal_->has_pending()) writer_->notify();
      std::unique_lock lock(results_mutex_);
      if (results_ready_.wait_for(lock, std::chrono::milliseconds(10),
                                  [this] { return !results_.empty(); })) {
        last_progress = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_progress > settle_silence_max) {
        return false;
      }
      continue;
    }
    if (!wal_->has_pending()) {
      // Readies without writes (applying a long log) complete at once: that is progress.
      if (taken == 0 && ++idle_rounds > idle_rounds_max) return false;
      if (taken > 0) idle_rounds = 0;
      continue;
    }
    idle_rounds = 0;
    auto flushed = host_->flush_now();
    if (!flushed.ok()) {
      if (flushed.error().code != storage::Errc::no_space) return false;
      spdlog::warn("the disk is full; waiting for space");
      std::this_thread::sleep_for(storage::GroupCommitWriter::retry_interval);
    }
  }
}

void NodeLog::start_writer(std::function<void(std::function<void()>)> post,
                           std::function<void()> on_no_space) {
  {
    std::lock_guard lock(results_mutex_);
    post_ = std::move(post);
  }
  on_no_space_ = std::move(on_no_space);
  writer_ = std::make_unique<storage::GroupCommitWriter>(
      *wal_,
      [this](const storage::FlushResult& result) {
        std::lock_guard lock(results_mutex_);
        results_.push_back(result);
        results_ready_.notify_all();
        if (post_ && !results_posted_) {
          results_posted_ = true;
          post_([this] {
            take_results();
            process();
          });
        }
      },
      [this](const storage::Error& error) {
        spdlog::critical("the write-ahead log failed and stops for good: {}", error.detail);
        std::lock_guard lock(results_mutex_);
        results_ready_.notify_all();
        if (post_) post_([this] { process(); });
      },
      [this] {
        std::lock_guard lock(results_mutex_);
        if (post_ && on_no_space_) post_(on_no_space_);
      });
}

void NodeLog::stop_posting() {
  std::lock_guard lock(results_mutex_);
  post_ = nullptr;
}

void NodeLog::take_results() {
  std::deque<storage::FlushResult> results;
  {
    std::lock_guard lock(results_mutex_);
    results.swap(results_);
    results_posted_ = false;
  }
  for (const storage::FlushResult& result : results) host_->on_flushed(result);
}

size_t NodeLog::process_host() {
  size_t taken = host_->process();
  if (broker_ != nullptr) broker_->flush_hand_overs();
  return taken;
}

void NodeLog::attach_transport(PeerTransport* transport,
                               std::map<uint64_t, std::string> peer_names) {
  transport_ = transport;
  peer_names_ = std::move(peer_names);
  outbox_ = std::make_unique<raft::Outbox>(self_);
}

void NodeLog::receive(const raft::NodeBatch& batch) {
  for (const raft::Message& message : raft::expand(batch)) host_->step(message);
  schedule_process();
}

void NodeLog::propose_anywhere(uint64_t group, std::string data, Placed placed) {
  // Behind proposals to the group that wait for a leader: in order.
  if (!parked_.empty()) propose_parked();
  if (parked_groups_.contains(group) || !try_propose(group, data, placed)) {
    // No leader known (an election is under way, or the group was just founded): it waits for
    // one, a while.
    ++parked_groups_[group];
    parked_.push_back(Parked{group, std::move(data), std::move(placed), ticks_});
  }
}

void NodeLog::propose_parked() {
  std::deque<Parked> still;
  std::map<uint64_t, size_t> still_groups;
  std::vector<Placed> given_up;
  auto waiting = std::move(parked_);
  parked_.clear();
  parked_groups_.clear();
  for (Parked& parked : waiting) {
    bool behind = still_groups.contains(parked.group);
    // (A placement told here only records where the entry went; it proposes nothing.)
    if (!behind && try_propose(parked.group, parked.data, parked.placed)) continue;
    if (parked.since_tick + forward_timeout_ticks < ticks_) {
      // Still no leader: not placed. (What follows it for the group may be, in its turn.)
      given_up.push_back(std::move(parked.placed));
      continue;
    }
    ++still_groups[parked.group];
    still.push_back(std::move(parked));
  }
  parked_ = std::move(still);
  parked_groups_ = std::move(still_groups);
  // Told once the waiting ones are in order again: what they propose goes behind those.
  for (Placed& placed : given_up) placed(std::nullopt);
}

bool NodeLog::try_propose(uint64_t group, std::string& data, Placed& placed) {
  raft::Raft* raft = host_->find(raft::GroupId{group});
  // Handing its leadership to another member: it waits for the new leader (or the transfer to
  // end) rather than be refused.
  if (raft != nullptr && raft->role() == raft::Role::leader &&
      raft->transfer_target() != raft::no_node) {
    return false;
  }
  if (raft == nullptr || raft->role() == raft::Role::leader || transport_ == nullptr) {
    placed(propose_here(group, std::move(data)));
    return true;
  }
  auto leader = peer_names_.find(raft->leader().value);
  if (raft->leader() == raft::no_node || leader == peer_names_.end()) return false;
  uint64_t request = next_request_++;
  if (!transport_->send_frame(leader->second, cluster::Propose{request, group, std::move(data)})) {
    placed(std::nullopt);
    return true;
  }
  forwarded_[request] = Forwarded{leader->second, group, std::move(placed), ticks_};
  return true;
}

void NodeLog::on_propose(const std::string& peer, const cluster::Propose& forwarded) {
  held_.push_back(Held{peer, forwarded, ticks_});
  answer_held();
}

void NodeLog::answer_held() {
  // Answered in the order they came; one for a group handing its leadership over waits (with
  // those behind it for that group) until the transfer ends: proposed here if this node still
  // leads, refused if it does not (only the leader that places an entry may answer for it, so
  // that the answer comes before the entry).
  std::deque<Held> waiting;
  std::set<uint64_t> blocked;
  auto held = std::move(held_);
  held_.clear();
  for (Held& one : held) {
    const cluster::Propose& forwarded = one.propose;
    raft::Raft* raft = host_->find(raft::GroupId{forwarded.group});
    bool leads = raft != nullptr && raft->role() == raft::Role::leader;
    if (leads && (blocked.contains(forwarded.group) || raft->transfer_target() != raft::no_node) &&
        one.since_tick + forward_timeout_ticks >= ticks_) {
      blocked.insert(forwarded.group);
      waiting.push_back(std::move(one));
      continue;
    }
    std::optional<broker::LogPosition> position;
    if (leads) {
      std::string data = forwarded.data;
      if (forwarded.group != metadata_group.value && broker_ != nullptr) {
        broker_->restamp_forwarded(data);
      }
      position = propose_here(forwarded.group, std::move(data));
    }
    if (transport_ != nullptr) {
      transport_->send_frame(one.peer,
                             cluster::Proposed{forwarded.request, position ? position->term : 0,
                                               position ? position->index : 0});
    }
  }
  for (Held& one : held_) waiting.push_back(std::move(one));  // (none: nothing above proposes)
  held_ = std::move(waiting);
}

void NodeLog::on_peer_up(const std::string& peer) {
  // Back before a leader of this node's takes a queue over and counts it gone.
  for (const auto& [id, name] : peer_names_) {
    if (name == peer) peer_back(id);
  }
}

void NodeLog::peer_back(uint64_t id) {
  down_since_.erase(id);
  if (gone_.erase(id) != 0 && broker_ != nullptr) broker_->node_back(id);
}

void NodeLog::on_proposed(const cluster::Proposed& proposed) {
  auto it = forwarded_.find(proposed.request);
  if (it == forwarded_.end()) return;
  Placed placed = std::move(it->second.placed);
  forwarded_.erase(it);
  if (proposed.index == 0) {
    placed(std::nullopt);
  } else {
    placed(broker::LogPosition{proposed.term, proposed.index});
  }
}

void NodeLog::on_peer_down(const std::string& peer) {
  // Its groups' leadership moves at once (the process is most likely dead): in each group it
  // led, the first of the other voters whose link is up (this one included) campaigns now, the
  // others stop counting on the old leader, so that failover takes an election, not a timeout.
  uint64_t lost_node = 0;
  for (const auto& [id, name] : peer_names_) {
    if (name == peer) lost_node = id;
  }
  if (lost_node != 0) {
    for (raft::GroupId group : host_->group_ids()) {
      raft::Raft* raft = host_->find(group);
      if (raft == nullptr || raft->leader().value != lost_node) continue;
      raft::NodeId first = raft::no_node;
      for (raft::NodeId voter : raft->conf().voters) {
        if (voter.value == lost_node) continue;
        auto name = peer_names_.find(voter.value);
        bool up = voter == self_ || (name != peer_names_.end() && transport_ != nullptr &&
                                     transport_->connected(name->second));
        if (up && (first == raft::no_node || voter < first)) first = voter;
      }
      raft->leader_lost(raft::NodeId{lost_node}, first == self_);
    }
    schedule_process();
  }
  std::vector<Placed> lost;
  for (auto it = forwarded_.begin(); it != forwarded_.end();) {
    if (it->second.peer == peer) {
      lost.push_back(std::move(it->second.placed));
      it = forwarded_.erase(it);
    } else {
      ++it;
    }
  }
  for (Placed& placed : lost) placed(std::nullopt);
}

void NodeLog::flush_outbox() {
  if (!outbox_ || outbox_->empty()) return;
  for (const raft::NodeBatch& batch : outbox_->take()) {
    auto name = peer_names_.find(batch.to.value);
    // Not connected, or its queue full: dropped; Raft sends again what was not acknowledged.
    if (name != peer_names_.end() && transport_ != nullptr) transport_->send(name->second, batch);
  }
}

void NodeLog::open_queue_groups_async(const std::set<uint64_t>& keep) {
  for (storage::GroupId stored : wal_->groups()) {
    if (stored.value == metadata_group.value) continue;
    if (keep.contains(stored.value)) {
      host_->open_group(raft::GroupId{stored.value});
      unswept_.insert(stored.value);
    } else {
      spdlog::info("removing the log of group {}: no durable queue has it", stored.value);
      (void)host_->remove_group(raft::GroupId{stored.value});
    }
  }
  schedule_process();
}

bool NodeLog::queue_groups_caught_up() {
  for (raft::GroupId group : host_->group_ids()) {
    if (group == metadata_group) continue;
    // A group with other voters catches up once its leader is heard from, which may take a
    // quorum that is not there: the node serves meanwhile (its effects are its leader's). So
    // does a member joined that has heard from none yet (it knows no voters).
    const raft::Raft* raft = host_->peek(group);
    if (raft != nullptr && raft->conf().voters.size() != 1) continue;
    if (!caught_up(group)) return false;
  }
  return true;
}

bool NodeLog::member_caught_up(raft::GroupId group) {
  const raft::Raft* raft = host_->peek(group);
  return raft != nullptr && raft->leader() != raft::no_node &&
         raft->applied() == raft->committed() && raft->committed() == raft->log().last_index();
}

void NodeLog::process() {
  process_host();
  // A leader may be known now, a transfer over.
  if (!parked_.empty()) propose_parked();
  if (!held_.empty()) answer_held();
  flush_outbox();
  if (writer_ && wal_->has_pending()) writer_->notify();
  if (failed() && !failure_reported_) {
    failure_reported_ = true;
    // Nothing more becomes durable: publishes waiting for it are nacked.
    if (broker_ != nullptr) broker_->fail_pending_commands();
  }
}

void NodeLog::tick() {
  host_->tick();
  if (!parked_.empty()) propose_parked();  // (those waiting too long give up)
  if (!held_.empty()) answer_held();
  if (!forwarded_.empty()) {
    // Unanswered for too long, or sent to a node that no longer leads the group (it hangs, or is
    // cut off, and another was elected): not placed, as far as this node knows. (The broker
    // sends its commands again; a copy that was placed after all is applied once.)
    std::vector<Placed> expired;
    for (auto it = forwarded_.begin(); it != forwarded_.end();) {
      const raft::Raft* raft = host_->peek(raft::GroupId{it->second.group});
      auto leader = raft == nullptr ? peer_names_.end() : peer_names_.find(raft->leader().value);
      // (Only queue groups: their commands are sent again and applied once; a definition
      // placed by a leader that hands its leadership over still commits, and is answered.)
      bool moved = it->second.group != metadata_group.value && leader != peer_names_.end() &&
                   leader->second != it->second.peer;
      if (moved || it->second.sent_at_tick + forward_timeout_ticks < ticks_) {
        expired.push_back(std::move(it->second.placed));
        it = forwarded_.erase(it);
      } else {
        ++it;
      }
    }
    for (Placed& placed : expired) placed(std::nullopt);
  }
  // Commands whose copies were lost and could not go again at once.
  if (broker_ != nullptr) broker_->resend_lost();
  // Every second, once the log has a few segments.
  constexpr uint64_t ticks_per_check = 1000 / raft_tick_ms;
  constexpr uint64_t segments_before_asking = 3;
  if (++ticks_ % ticks_per_check != 0) return;
  // A flush of nothing lets the log release segments it put off releasing (an idle log).
  if (writer_) writer_->notify();
  follow_peers();
  rebalance_leaders();
  reconcile_queue_members();
  // The holders this node's earlier lives left in its groups go once each replica has caught up
  // (those of single-member groups went at start, Broker::detach_previous_holders).
  // (A replica may look caught up before its leader's entries reached it: swept until some time
  // has passed as well.)
  for (auto it = unswept_.begin(); it != unswept_.end();) {
    bool swept = broker_ == nullptr || !host_->peek(raft::GroupId{*it}) ||
                 (member_caught_up(raft::GroupId{*it}) && broker_->sweep_previous_lives(*it) &&
                  ticks_ >= sweep_min_ticks);
    it = swept ? unswept_.erase(it) : std::next(it);
  }
  if (wal_->space().segment_count < segments_before_asking) return;
  for (storage::GroupId group : wal_->groups_pinning_oldest_segment(16)) {
    if (group.value == metadata_group.value) {
      if (metadata_handler_.compact) metadata_handler_.compact();
    } else if (broker_ != nullptr) {
      broker_->snapshot_queue(group.value);
    }
  }
}

void NodeLog::follow_peers() {
  if (transport_ == nullptr || broker_ == nullptr) return;
  for (const auto& [id, name] : peer_names_) {
    if (id == self_.value) continue;
    if (transport_->connected(name)) {
      peer_back(id);
      continue;
    }
    auto [since, first] = down_since_.emplace(id, ticks_);
    if (!gone_.contains(id) && since->second + node_gone_ticks <= ticks_) {
      spdlog::info(
          "node {} has been unreachable for {} s: its consumers' messages go back to "
          "their queues",
          name, node_gone_ticks * raft_tick_ms / 1000);
      gone_.insert(id);
      broker_->node_gone(id);
    }
  }
}

std::optional<uint64_t> NodeLog::down_for_ms(uint64_t id) const {
  auto since = down_since_.find(id);
  if (since == down_since_.end()) return std::nullopt;
  return (ticks_ - since->second) * raft_tick_ms;
}

void NodeLog::reconcile_queue_members() {
  if (broker_ == nullptr) return;
  auto up = [this](uint64_t id) {
    if (id == self_.value) return true;
    auto name = peer_names_.find(id);
    return transport_ != nullptr && name != peer_names_.end() &&
           transport_->connected(name->second);
  };
  size_t changes = 0;
  std::vector<uint64_t> dropped;
  std::set<uint64_t> orphans;
  for (raft::GroupId group : host_->group_ids()) {
    if (group == metadata_group) continue;
    auto wanted = broker_->queue_members(group.value);
    const raft::Raft* raft = host_->peek(group);
    if (!wanted || raft == nullptr) continue;
    auto is_wanted = [&wanted](raft::NodeId node) {
      return std::find(wanted->begin(), wanted->end(), node.value) != wanted->end();
    };
    const raft::ConfState& conf = raft->conf();
    auto in_conf = [&conf](raft::NodeId node) {
      return raft::is_voter(conf, node) || raft::is_learner(conf, node);
    };
    bool leads = raft->role() == raft::Role::leader;
    if (!is_wanted(self_)) {
      if (!in_conf(self_)) {
        dropped.push_back(group.value);  // it applied its removal
        continue;
      }
      if (!leads) {
        // It may have been removed while it was down, and never heard of it: once it has heard
        // from no leader for a while although every other voter it knows is linked to this node
        // (so they have a leader, which no longer counts this one), it lets go. Never while it
        // cannot tell: it may still be a voter that a majority needs.
        bool others_up = std::all_of(conf.voters.begin(), conf.voters.end(),
                                     [&](raft::NodeId voter) { return up(voter.value); });
        if (raft->leader() == raft::no_node && others_up && conf.voters.size() > 1) {
          orphans.insert(group.value);
          auto since = orphan_since_.try_emplace(group.value, ticks_).first->second;
          if (since + member_orphan_ticks <= ticks_) dropped.push_back(group.value);
        }
        continue;
      }
      if (raft->transfer_target() != raft::no_node) continue;
      // Left out while it leads: it hands its leadership to a member that stays, is up and holds
      // what is committed, which then removes it; with none yet, it adds and promotes them.
      bool handed = false;
      for (raft::NodeId voter : conf.voters) {
        const raft::Progress* progress = raft->progress(voter);
        if (voter != self_ && is_wanted(voter) && up(voter.value) && progress != nullptr &&
            progress->match >= raft->committed()) {
          handed = host_->find(group)->transfer_leadership(voter);
          break;
        }
      }
      if (handed) continue;
    }
    if (!leads || raft->transfer_target() != raft::no_node) continue;
    size_t in_both = 0;
    for (uint64_t id : *wanted) in_both += in_conf(raft::NodeId{id}) ? 1 : 0;
    bool settled = in_both == wanted->size() &&
                   conf.voters.size() + conf.learners.size() == wanted->size() &&
                   conf.learners.empty();
    if (settled) continue;
    // What the nodes that leave held is ready again here.
    broker_->detach_non_members(group.value);
    if (changes >= member_changes_per_second) continue;
    // New members first (as learners, then promoted once nearly caught up), and members left
    // out only once every wanted node votes: a group never has fewer voters holding its
    // messages than it is to have.
    std::optional<raft::ConfChange> change;
    for (uint64_t id : *wanted) {
      raft::NodeId node{id};
      if (!in_conf(node)) {
        change = raft::ConfChange{raft::ConfChangeType::add_learner, node};
        break;
      }
    }
    for (uint64_t id : *wanted) {
      if (change) break;
      raft::NodeId node{id};
      if (!raft::is_learner(conf, node)) continue;
      const raft::Progress* progress = raft->progress(node);
      if (progress != nullptr && progress->match.value > 0 &&
          progress->match.value + promote_lag_entries_max >= raft->committed().value) {
        change = raft::ConfChange{raft::ConfChangeType::add_voter, node};
      }
    }
    bool all_vote = std::all_of(wanted->begin(), wanted->end(), [&conf](uint64_t id) {
      return raft::is_voter(conf, raft::NodeId{id});
    });
    for (const auto& members : {conf.voters, conf.learners}) {
      for (raft::NodeId member : members) {
        if (!change && all_vote && member != self_ && !is_wanted(member)) {
          change = raft::ConfChange{raft::ConfChangeType::remove_node, member};
        }
      }
    }
    if (!change) continue;
    if (host_->find(group)->propose_conf_change(*change).ok()) {
      ++changes;
      auto name = peer_names_.find(change->node.value);
      spdlog::info("queue group {}: {} node {}", group.value,
                   change->type == raft::ConfChangeType::remove_node   ? "removing"
                   : change->type == raft::ConfChangeType::add_learner ? "adding (as a learner)"
                                                                       : "promoting to voter",
                   name != peer_names_.end() ? name->second : std::to_string(change->node.value));
    }
  }
  std::erase_if(orphan_since_,
                [&orphans](const auto& entry) { return !orphans.contains(entry.first); });
  for (uint64_t group : dropped) {
    spdlog::info("group {}: this node is no member of it any more: its replica goes", group);
    orphan_since_.erase(group);
    broker_->drop_replica(group);
  }
  if (changes > 0 || !dropped.empty()) schedule_process();
}

size_t NodeLog::rebalance_leaders(bool asked) {
  if (transport_ == nullptr) return 0;
  auto up = [this](uint64_t id) {
    if (id == self_.value) return true;
    auto name = peer_names_.find(id);
    return name != peer_names_.end() && transport_->connected(name->second);
  };
  // How many of the groups with other members each node leads, as this node sees them (a
  // leadership being handed over counts for its target).
  std::map<uint64_t, uint64_t> led;
  std::vector<raft::GroupId> mine;
  uint64_t total = 0;
  for (raft::GroupId group : host_->group_ids()) {
    if (group == metadata_group) continue;
    const raft::Raft* raft = host_->peek(group);
    if (raft == nullptr || raft->conf().voters.size() < 2 || raft->leader() == raft::no_node) {
      continue;
    }
    bool handing_over =
        raft->role() == raft::Role::leader && raft->transfer_target() != raft::no_node;
    auto seen = leader_seen_.try_emplace(group.value, LeaderSeen{raft->leader(), ticks_}).first;
    if (seen->second.leader != raft->leader()) seen->second = LeaderSeen{raft->leader(), ticks_};
    ++total;
    ++led[handing_over ? raft->transfer_target().value : raft->leader().value];
    // A group whose leader changed lately stays: no group goes back and forth (in a larger
    // cluster each node sees only the groups it holds).
    bool settled = asked || seen->second.since_tick + rebalance_settle_ticks <= ticks_;
    if (raft->role() == raft::Role::leader && !handing_over && settled) mine.push_back(group);
  }
  std::erase_if(leader_seen_, [this](const auto& entry) {
    return host_->peek(raft::GroupId{entry.first}) == nullptr;
  });
  // Each node hands over only leaderships of its own, each to the member of its group that leads
  // the fewest, while it leads at least two more than that member: every move narrows the
  // spread, and the counts end within one of each other.
  uint64_t& own = led[self_.value];
  size_t moved = 0;
  for (raft::GroupId group : mine) {
    if (moved >= rebalance_moves_per_second) break;
    raft::Raft* raft = host_->find(group);
    raft::NodeId target = raft::no_node;
    auto wanted = broker_ != nullptr ? broker_->queue_members(group.value) : std::nullopt;
    for (raft::NodeId voter : raft->conf().voters) {
      if (voter == self_ || !up(voter.value)) continue;
      // Not to a member that is leaving the group.
      if (wanted && std::find(wanted->begin(), wanted->end(), voter.value) == wanted->end()) {
        continue;
      }
      // Only to a member that holds what is committed: it can take over at once.
      const raft::Progress* progress = raft->progress(voter);
      if (progress == nullptr || progress->match < raft->committed()) continue;
      if (target == raft::no_node || led[voter.value] < led[target.value]) target = voter;
    }
    if (target == raft::no_node || own < led[target.value] + 2) continue;
    if (raft->transfer_leadership(target)) {
      --own;
      ++led[target.value];
      ++moved;
    }
  }
  if (moved != 0) {
    spdlog::info("handing the leadership of {} queue(s) to other nodes (leading {} of {})", moved,
                 own + moved, total);
    schedule_process();
  }
  return moved;
}

void NodeLog::schedule_process() {
  std::lock_guard lock(results_mutex_);
  if (!post_ || process_posted_) return;
  process_posted_ = true;
  post_([this] {
    {
      std::lock_guard posted(results_mutex_);
      process_posted_ = false;
    }
    process();
  });
}

bool NodeLog::create_group(uint64_t group, const std::vector<uint64_t>& members) {
  // Every member founds it alike when it applies the queue's declare: the same voters, the same
  // (empty) state.
  raft::ConfState conf;
  for (uint64_t member : members) conf.voters.push_back(raft::NodeId{member});
  auto created = host_->found_group(raft::GroupId{group}, conf, "");
  if (!created.ok()) {
    spdlog::error("cannot create the log of group {}: {}", group, created.error());
    return false;
  }
  // The first member (the declaring node, when it is one) stands at once rather than after an
  // election timeout; if the others have not founded it yet, the timeouts elect one.
  if (members.size() > 1 && members.front() == self_.value) {
    if (raft::Raft* raft = host_->find(raft::GroupId{group})) raft->campaign_now();
  }
  schedule_process();
  return true;
}

void NodeLog::join_group(uint64_t group) {
  host_->join_group(raft::GroupId{group});
  schedule_process();
}

bool NodeLog::has_group(uint64_t group) const {
  return wal_->holds(storage::GroupId{group});
}

void NodeLog::remove_group(uint64_t group) {
  auto removed = host_->remove_group(raft::GroupId{group});
  if (!removed.ok()) spdlog::warn("cannot remove the log of group {}: {}", group, removed.error());
  schedule_process();
}

std::optional<std::string> NodeLog::read(uint64_t group, uint64_t index) const {
  std::vector<storage::Entry> entries;
  auto read = wal_->entries(storage::GroupId{group}, storage::LogIndex{index},
                            storage::LogIndex{index + 1}, UINT64_MAX, entries);
  if (!read.ok() || entries.empty()) return std::nullopt;
  return std::move(entries.front().payload);
}

void NodeLog::compact(uint64_t group, uint64_t index, std::string snapshot, uint64_t retain_from) {
  auto compacted = host_->compact_at(raft::GroupId{group}, raft::LogIndex{index},
                                     std::move(snapshot), raft::LogIndex{retain_from});
  if (!compacted.ok()) {
    spdlog::warn("cannot snapshot the log of group {}: {}", group, compacted.error());
  }
  schedule_process();
}

void NodeLog::propose(uint64_t group, std::string command, Placed placed) {
  propose_anywhere(group, std::move(command), std::move(placed));
}

std::optional<broker::LogPosition> NodeLog::propose_here(uint64_t group, std::string command) {
  if (failed()) return std::nullopt;
  auto index = host_->propose(raft::GroupId{group}, std::move(command));
  if (!index.ok()) return std::nullopt;
  schedule_process();
  // The entry carries the term its leader had when it took the proposal: this member's, now.
  return broker::LogPosition{host_->find(raft::GroupId{group})->term().value, index->value};
}

uint64_t NodeLog::current_term(uint64_t group) const {
  const raft::Raft* raft = host_->peek(raft::GroupId{group});
  return raft == nullptr ? 0 : raft->term().value;
}

std::optional<uint64_t> NodeLog::leader_term(uint64_t group) const {
  const raft::Raft* raft = host_->peek(raft::GroupId{group});
  if (raft == nullptr || raft->role() != raft::Role::leader) return std::nullopt;
  return raft->term().value;
}

}  // namespace hamq::server
