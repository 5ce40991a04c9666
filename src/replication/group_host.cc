#include "replication/group_host.h"

#include <algorithm>
#include <set>

#include "common/verify.h"

namespace hamq::replication {

GroupHost::GroupHost(storage::Wal& wal, raft::NodeId self, uint64_t incarnation,
                     raft::Config defaults, GroupHostCallbacks callbacks)
    : wal_(wal),
      self_(self),
      incarnation_(incarnation),
      defaults_(defaults),
      callbacks_(std::move(callbacks)) {}

void GroupHost::mark(raft::GroupId id, Group& group) {
  if (group.active) return;
  group.active = true;
  active_.push_back(id);
}

namespace {

bool alone_leading(const raft::Raft& raft) {
  return raft.role() == raft::Role::leader && raft.conf().voters.size() == 1 &&
         raft.conf().learners.empty();
}

}  // namespace

void GroupHost::tick_if_needed(raft::GroupId id, Group& group) {
  if (group.ticking || group.removed || alone_leading(*group.raft)) return;
  group.ticking = true;
  ticking_.push_back(id);
}

GroupHost::Group& GroupHost::start(raft::GroupId id, const std::string* founding_payload) {
  Group& group = groups_[id];
  mark(id, group);
  group.storage = std::make_unique<WalLogStorage>(wal_, id, incarnation_);
  if (callbacks_.expand_snapshot) {
    group.storage->set_expander([expand = callbacks_.expand_snapshot, id](std::string_view data) {
      return expand(id, data);
    });
  }
  if (founding_payload != nullptr) {
    group.storage->found(raft::SnapshotMeta{.index = raft::LogIndex{1}, .term = raft::Term{1}},
                         *founding_payload);
  }
  raft::Config config = defaults_;
  config.id = self_;
  config.group = id;
  config.random_seed = defaults_.random_seed ^ (id.value * 0x9e3779b97f4a7c15ULL);
  group.raft = std::make_unique<raft::Raft>(config, *group.storage);
  group.written_hard_state = group.storage->initial_state().hard_state;
  raft::SnapshotMeta snapshot = group.storage->snapshot_meta();
  if (snapshot.index.value > 0 && callbacks_.restore) {
    auto payload = founding_payload != nullptr
                       ? Result<std::string, storage::Error>(*founding_payload)
                       : wal_.snapshot_data(group.storage->storage_group());
    raft::ConfState conf;
    std::string data;
    if (payload.ok() && decode_snapshot_payload(*payload, conf, data)) {
      callbacks_.restore(id, snapshot, data);
    }
  }
  // Alone in its group: no one to wait for.
  const auto& voters = group.raft->conf().voters;
  if (voters.size() == 1 && voters[0] == self_) group.raft->campaign_now();
  tick_if_needed(id, group);
  return group;
}

Result<void, std::string> GroupHost::found_group(raft::GroupId id, const raft::ConfState& conf,
                                                 std::string data) {
  if (groups_.contains(id)) return unexpected(std::string("the group exists"));
  storage::GroupId stored{id.value};
  // As MemoryStorage::bootstrap: the first configuration as a snapshot at index 1, term 1.
  std::string payload = encode_snapshot_payload(conf, data);
  auto saved = wal_.save_snapshot(stored, storage::SnapshotMeta{{1}, {1}},
                                  storage::SnapshotMode::replace_log, payload);
  if (saved.ok()) {
    saved = wal_.save_hard_state(stored, storage::HardState{{1}, 0, {1}});
  }
  if (!saved.ok()) return unexpected(saved.error().detail);
  // It runs at once, its storage reading the founding state until the Wal has it.
  start(id, &payload);
  process();
  return Ok{};
}

Result<void, std::string> GroupHost::create_group(raft::GroupId id, const raft::ConfState& conf,
                                                  std::string data) {
  auto founded = found_group(id, conf, std::move(data));
  if (!founded.ok()) return founded;
  storage::GroupId stored{id.value};
  for (;;) {
    auto meta = wal_.snapshot_meta(stored);
    if (meta.ok() && meta->index.value == 1) break;
    auto flushed = flush_now();
    if (!flushed.ok()) return unexpected(flushed.error().detail);
  }
  return Ok{};
}

void GroupHost::open_existing_groups() {
  for (storage::GroupId stored : wal_.groups()) open_group(raft::GroupId{stored.value});
}

void GroupHost::join_group(raft::GroupId id) {
  if (groups_.contains(id)) return;
  // Recorded (a hard state of nothing), so that a restart before the leader's snapshot or
  // entries arrive opens the member again, still without a snapshot and so still catching up,
  // rather than finding the group missing and founding it.
  storage::GroupId stored{id.value};
  if (!wal_.holds(stored)) (void)wal_.save_hard_state(stored, storage::HardState{});
  process(id, start(id));
}

bool GroupHost::open_group(raft::GroupId id) {
  if (groups_.contains(id)) return true;
  storage::GroupId stored{id.value};
  if (!wal_.holds(stored) || wal_.group_failure(stored)) {
    return false;
  }
  process(id, start(id));
  return true;
}

Result<void, std::string> GroupHost::remove_group(raft::GroupId id) {
  rebuilding_.erase(id);  // (its queue was deleted meanwhile)
  auto it = groups_.find(id);
  if (it != groups_.end()) {
    // Erased by sweep(): a callback may be removing it while the groups are being walked.
    it->second.removed = true;
    removed_any_ = true;
  }
  auto removed = wal_.remove_group(storage::GroupId{id.value});
  if (!removed.ok()) return unexpected(removed.error().detail);
  return Ok{};
}

Result<void, std::string> GroupHost::rebuild_group(raft::GroupId id) {
  storage::GroupId stored{id.value};
  // Its entries and snapshot go; its term and vote stay (a member never votes twice in a term),
  // as the running member has them, else as last written.
  storage::HardState kept = wal_.last_hard_state(stored);
  auto it = groups_.find(id);
  if (it != groups_.end() && !it->second.removed) {
    const raft::Raft& raft = *it->second.raft;
    if (raft.term().value >= kept.term.value) {
      kept.term = storage::Term{raft.term().value};
      kept.vote = raft.vote().value;
    }
    it->second.removed = true;
    removed_any_ = true;
  }
  kept.commit = {};
  // The hard state goes in the same batch as the removal: a restart after it opens a member
  // that catches up, never finds the group missing and founds it again, voting with nothing.
  auto removed = wal_.remove_group(stored, kept);
  if (!removed.ok()) return unexpected(removed.error().detail);
  rebuilding_[id] = false;
  return Ok{};
}

void GroupHost::stop_damaged(raft::GroupId id, Group& group) {
  if (group.damaged) return;
  group.damaged = true;
  if (callbacks_.damaged) callbacks_.damaged(id);
}

void GroupHost::rejoin(const storage::FlushResult& result) {
  if (rebuilding_.empty()) return;
  for (const storage::GroupProgress& progress : result.progress) {
    auto it = rebuilding_.find(raft::GroupId{progress.group.value});
    if (progress.removed && it != rebuilding_.end()) it->second = true;
  }
  if (processing_depth_ != 0) return;  // (after the round that runs now)
  sweep();                             // the damaged member, if it was running
  for (auto it = rebuilding_.begin(); it != rebuilding_.end();) {
    if (!it->second) {
      ++it;
      continue;
    }
    raft::GroupId id = it->first;
    it = rebuilding_.erase(it);
    join_group(id);
  }
}

std::vector<raft::GroupId> GroupHost::group_ids() const {
  std::vector<raft::GroupId> ids;
  ids.reserve(groups_.size());
  for (const auto& [id, group] : groups_) {
    if (!group.removed) ids.push_back(id);
  }
  return ids;
}

void GroupHost::sweep() {
  if (!removed_any_) return;
  removed_any_ = false;
  std::set<raft::GroupId> erased;
  std::erase_if(groups_, [&erased](const auto& entry) {
    if (entry.second.removed) erased.insert(entry.first);
    return entry.second.removed;
  });
  // (A group of the same id started again, rebuilt, is listed anew.)
  std::erase_if(ticking_, [&erased](raft::GroupId id) { return erased.contains(id); });
  std::erase_if(active_, [&erased](raft::GroupId id) { return erased.contains(id); });
}

const raft::Raft* GroupHost::peek(raft::GroupId id) const {
  // (A damaged member too: its members and state as it last had them, to look at.)
  auto it = groups_.find(id);
  return it == groups_.end() || it->second.removed ? nullptr : it->second.raft.get();
}

raft::Raft* GroupHost::find(raft::GroupId id) {
  auto it = groups_.find(id);
  // (A damaged member takes nothing: no proposal, no message, no tick.)
  if (it == groups_.end() || it->second.removed || it->second.damaged) return nullptr;
  // The caller may change it (propose, step, campaign): processed on the next round.
  mark(id, it->second);
  return it->second.raft.get();
}

Result<raft::LogIndex, raft::ProposeError> GroupHost::propose(raft::GroupId id, std::string data) {
  raft::Raft* raft = find(id);
  if (raft == nullptr) return unexpected(raft::ProposeError::not_leader);
  return raft->propose(std::move(data));
}

Result<void, std::string> GroupHost::compact(raft::GroupId id, std::string data) {
  auto found = groups_.find(id);
  if (found == groups_.end() || found->second.removed) {
    return unexpected(std::string("no such group"));
  }
  const Group& group = found->second;
  raft::LogIndex applied = group.raft->applied();
  // Entries given to the state machine when their Ready was taken are in `data` already,
  // though Raft counts them applied only once the Ready's writes are durable.
  if (group.in_flight && group.applied_early && !group.in_flight->committed_entries.empty()) {
    applied = group.in_flight->committed_entries.back().index;
  }
  return compact_at(id, applied, std::move(data));
}

Result<void, std::string> GroupHost::compact_at(raft::GroupId id, raft::LogIndex applied,
                                                std::string data, raft::LogIndex retain_from) {
  raft::Raft* raft = find(id);
  if (raft == nullptr) return unexpected(std::string("no such group"));
  if (applied > raft->committed()) return unexpected(std::string("not committed"));
  if (applied <= raft->log().first_index() - 1) return Ok{};  // nothing new to cover
  auto term = raft->log().term(applied);
  if (!term.ok()) return unexpected(std::string("the applied entry is not in the log"));
  bool retaining = retain_from.value != 0 && retain_from <= applied;
  auto saved = wal_.save_snapshot(
      storage::GroupId{id.value}, storage::SnapshotMeta{{applied.value}, {term->value}},
      retaining ? storage::SnapshotMode::compact_retaining : storage::SnapshotMode::compact_prefix,
      encode_snapshot_payload(raft->conf_at(applied), data), storage::LogIndex{retain_from.value});
  if (!saved.ok()) return unexpected(saved.error().detail);
  return Ok{};
}

void GroupHost::step(const raft::Message& message) {
  if (raft::Raft* raft = find(message.group)) raft->step(message);
}

void GroupHost::tick() {
  for (size_t i = 0; i < ticking_.size();) {
    auto it = groups_.find(ticking_[i]);
    if (it == groups_.end() || it->second.removed || it->second.damaged ||
        alone_leading(*it->second.raft)) {
      if (it != groups_.end()) it->second.ticking = false;
      ticking_[i] = ticking_.back();
      ticking_.pop_back();
      continue;
    }
    it->second.raft->tick();
    mark(it->first, it->second);
    ++i;
  }
}

size_t GroupHost::process() {
  // Only the groups something happened to since the last round: with thousands of idle groups
  // a round costs what the busy ones do.
  ++processing_depth_;
  size_t taken = 0;
  std::vector<raft::GroupId> round = std::move(active_);
  active_.clear();
  for (raft::GroupId id : round) {
    auto it = groups_.find(id);
    if (it == groups_.end()) continue;
    Group& group = it->second;
    group.active = false;
    taken += process(id, group) ? 1 : 0;
    // Still something to do: a Ready held back by a busy Wal, or one that could not be taken
    // while its own callbacks ran further up.
    bool pending =
        !group.damaged && ((group.in_flight && !group.submitted) ||
                           (!group.in_flight && !group.removed && group.raft->has_ready()));
    if (pending && !failed_) mark(id, group);
  }
  if (--processing_depth_ == 0) sweep();
  return taken;
}

bool GroupHost::process(raft::GroupId id, Group& group) {
  // Called again from its own callbacks (what an entry did needed the log): its Ready is being
  // handled further up.
  if (failed_ || group.removed || group.in_callbacks || group.damaged) return false;
  // A read of its log found a record damaged: it stopped (Raft::failed), and stays silent.
  if (group.raft->failed() && wal_.group_failure(storage::GroupId{id.value})) {
    stop_damaged(id, group);
    return false;
  }
  if (group.in_flight) {
    if (!group.submitted) submit(id, group);
    return false;
  }
  if (!group.raft->has_ready()) return false;
  group.in_flight = group.raft->ready();
  raft::Ready& ready = *group.in_flight;
  if (ready.leader != group.seen_leader || ready.role != group.seen_role) {
    if (callbacks_.role_changed) {
      callbacks_.role_changed(id, ready.role, group.raft->term(), ready.leader);
    }
    group.seen_leader = ready.leader;
    group.seen_role = ready.role;
  }
  for (const raft::Message& message : ready.messages) callbacks_.send(message);
  ready.messages.clear();
  group.applied_early = ready.snapshot_chunks.empty() && !ready.snapshot_installed;
  if (group.applied_early) {
    group.in_callbacks = true;
    for (const raft::Entry& entry : ready.committed_entries) callbacks_.apply(id, entry);
    group.in_callbacks = false;
  }
  if (group.removed) return true;  // by what it applied (its queue was deleted)
  submit(id, group);
  return true;
}

void GroupHost::refused(raft::GroupId id, Group& group, const storage::Error& error) {
  if (error.code == storage::Errc::busy) return;  // submitted again after the next flush
  // This group's data was found damaged (a read since it started): it alone stops.
  if (error.code == storage::Errc::group_failed) {
    stop_damaged(id, group);
    return;
  }
  failed_ = true;
}

bool GroupHost::submit(raft::GroupId id, Group& group) {
  raft::Ready& ready = *group.in_flight;
  storage::GroupId stored{id.value};
  // All or nothing per part: a part refused as busy is submitted again after the next flush.
  for (const raft::SnapshotChunk& chunk : ready.snapshot_chunks) {
    if (chunk.offset == 0) group.incoming_snapshot.clear();
    group.incoming_snapshot.append(chunk.data);
    if (!chunk.install) continue;
    auto saved = wal_.save_snapshot(
        stored, storage::SnapshotMeta{{chunk.meta.index.value}, {chunk.meta.term.value}},
        storage::SnapshotMode::replace_log,
        encode_snapshot_payload(chunk.meta.conf, group.incoming_snapshot));
    if (!saved.ok()) {
      refused(id, group, saved.error());
      return false;
    }
    group.snapshot_needed = true;
    group.incoming_snapshot.clear();
  }
  ready.snapshot_chunks.clear();
  if (!ready.entries.empty() && !group.entries_needed) {
    std::vector<storage::EntryInput> inputs;
    inputs.reserve(ready.entries.size());
    for (const raft::Entry& entry : ready.entries) {
      inputs.push_back(storage::EntryInput{.term = {entry.term.value},
                                           .index = {entry.index.value},
                                           .kind = static_cast<uint8_t>(entry.type),
                                           .payload = entry.data});
    }
    auto appended = wal_.append(stored, inputs);
    if (!appended.ok()) {
      refused(id, group, appended.error());
      return false;
    }
    group.entries_needed = ready.entries.back().index;
  }
  bool skip_hard_state = false;
  if (ready.hard_state && !group.hard_state_needed) {
    raft::HardState commit_only = group.written_hard_state;
    commit_only.commit = ready.hard_state->commit;
    // Nothing worth an fsync, unless it commits a membership change: a restart must know that
    // it was committed (Raft::restore_committed_conf).
    bool commits_conf_change = std::any_of(
        ready.committed_entries.begin(), ready.committed_entries.end(),
        [](const raft::Entry& entry) { return entry.type == raft::EntryType::conf_change; });
    skip_hard_state = commit_only == *ready.hard_state && !commits_conf_change;
  }
  if (ready.hard_state && !group.hard_state_needed && !skip_hard_state) {
    auto saved = wal_.save_hard_state(stored, to_storage(*ready.hard_state));
    if (!saved.ok()) {
      refused(id, group, saved.error());
      return false;
    }
    group.hard_state_needed = true;
    group.written_hard_state = *ready.hard_state;
  }
  group.submitted = true;
  if (!group.entries_needed && !group.hard_state_needed && !group.snapshot_needed) {
    complete(id, group);  // nothing to wait for
  }
  return true;
}

void GroupHost::on_flushed(const storage::FlushResult& result) {
  for (const storage::GroupProgress& progress : result.progress) {
    auto it = groups_.find(raft::GroupId{progress.group.value});
    if (it == groups_.end() || it->second.removed || it->second.damaged || !it->second.in_flight) {
      continue;
    }
    Group& group = it->second;
    if (group.entries_needed && progress.entries_durable_to &&
        progress.entries_durable_to->value >= group.entries_needed->value) {
      group.entries_needed.reset();
    }
    if (progress.hard_state_durable) group.hard_state_needed = false;
    if (progress.snapshot_durable) group.snapshot_needed = false;
    if (group.submitted && !group.entries_needed && !group.hard_state_needed &&
        !group.snapshot_needed) {
      complete(it->first, group);
    }
  }
  process();  // Readies held back by a busy Wal, and the next ones
  rejoin(result);
}

void GroupHost::complete(raft::GroupId id, Group& group) {
  raft::Ready ready = std::move(*group.in_flight);
  group.in_flight.reset();
  group.submitted = false;
  group.in_callbacks = true;
  for (const raft::Message& message : ready.messages_after_persist) callbacks_.send(message);
  if (ready.snapshot_installed && callbacks_.restore) {
    auto payload = wal_.snapshot_data(storage::GroupId{id.value});
    raft::ConfState conf;
    std::string data;
    if (payload.ok() && decode_snapshot_payload(*payload, conf, data)) {
      callbacks_.restore(id, *ready.snapshot_installed, data);
    }
  }
  if (!group.applied_early) {
    for (const raft::Entry& entry : ready.committed_entries) callbacks_.apply(id, entry);
  }
  group.in_callbacks = false;
  if (group.removed) return;  // by what it applied
  group.raft->advance(ready);
  mark(id, group);            // the next Ready may be waiting
  tick_if_needed(id, group);  // (its role or members may have changed)
}

Result<void, storage::Error> GroupHost::flush_now() {
  auto flushed = wal_.flush();
  if (!flushed.ok()) {
    if (flushed.error().code != storage::Errc::no_space) failed_ = true;
    return unexpected(flushed.error());
  }
  on_flushed(*flushed);
  return Ok{};
}

}  // namespace hamq::replication
