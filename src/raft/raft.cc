#include "raft/raft.h"

#include <algorithm>

#include "common/verify.h"

namespace hamq::raft {

std::string_view role_name(Role role) {
  switch (role) {
    case Role::follower:
      return "follower";
    case Role::pre_candidate:
      return "pre_candidate";
    case Role::candidate:
      return "candidate";
    case Role::leader:
      return "leader";
  }
  return "unknown";
}

std::string_view propose_error_name(ProposeError error) {
  switch (error) {
    case ProposeError::not_leader:
      return "not_leader";
    case ProposeError::transferring:
      return "transferring";
    case ProposeError::too_much_pending:
      return "too_much_pending";
    case ProposeError::conf_change_pending:
      return "conf_change_pending";
    case ProposeError::bad_conf_change:
      return "bad_conf_change";
    case ProposeError::stopped:
      return "stopped";
  }
  return "unknown";
}

Raft::Raft(Config config, const LogStorage& storage)
    : config_(config), storage_(storage), log_(storage) {
  HAMQ_VERIFY(config_.id != no_node, "a member needs an id");
  HAMQ_VERIFY(config_.election_ticks > config_.heartbeat_ticks && config_.heartbeat_ticks > 0,
              "election timeout must exceed the heartbeat interval");
  HAMQ_VERIFY(config_.inflight_appends_max > 0, "at least one append in flight");
  random_state_ = config_.random_seed ^ (config_.id.value * 0x9e3779b97f4a7c15ULL);
  InitialState initial = storage_.initial_state();
  incarnation_ = initial.incarnation;
  conf_ = initial.snapshot.conf;
  snapshot_conf_ = conf_;
  term_ = initial.hard_state.term;
  vote_ = initial.hard_state.vote;
  // A commit index past the stored log can only come from a damaged disk; the log is what counts.
  log_.commit_to(std::min(initial.hard_state.commit, log_.last_index()));
  restore_committed_conf();
  previous_hard_state_ = initial.hard_state;
  // A member with nothing on disk (new, or back after losing its disk) may have voted and
  // acknowledged entries in an earlier life: until it holds what a leader had committed when it
  // first heard from it, it neither votes nor campaigns, so a leader cannot be elected with its
  // help without entries it once counted for.
  // (An empty disk has no snapshot: founding members are bootstrapped with one at index 1.)
  catching_up_ = initial.snapshot.index.value == 0 || initial.hard_state.catch_up.value > 0;
  if (initial.hard_state.catch_up.value > 0) {
    catch_up_index_ = initial.hard_state.catch_up;
    catch_up_term_ = initial.hard_state.catch_up_term;
  }
  become_follower(term_, no_node);  // the same term: the stored vote stays
}

// --- roles ---

void Raft::reset(Term term) {
  if (term != term_) {
    term_ = term;
    vote_ = no_node;
  }
  leader_ = no_node;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  election_timeout_ = random_election_timeout();
  transfer_target_ = no_node;
  votes_.clear();
  progress_.clear();
}

void Raft::become_follower(Term term, NodeId leader) {
  reset(term);
  role_ = Role::follower;
  leader_ = leader;
}

void Raft::become_pre_candidate() {
  HAMQ_VERIFY(role_ != Role::leader, "a leader does not pre-campaign");
  // Thesis §9.6: neither the term nor the vote changes.
  role_ = Role::pre_candidate;
  votes_.clear();
  leader_ = no_node;
}

void Raft::become_candidate() {
  HAMQ_VERIFY(role_ != Role::leader, "a leader does not campaign");
  reset(Term{term_.value + 1});
  vote_ = config_.id;
  role_ = Role::candidate;
}

void Raft::become_leader() {
  HAMQ_VERIFY(role_ == Role::candidate, "only a candidate becomes leader");
  reset(term_);
  role_ = Role::leader;
  leader_ = config_.id;
  reset_progress();
  uncommitted_bytes_ = 0;
  // Thesis §6.4: a no-op of the new term, so that entries of earlier terms commit with it
  // (§5.4.2: only entries of the current term are committed by counting replicas). Membership
  // changes wait until it is applied (the single-server change bug of 2015).
  LogIndex noop_index = log_.last_index() + 1;
  log_.append({Entry{.term = term_, .index = noop_index, .type = EntryType::normal, .data = {}}});
  pending_conf_index_ = noop_index;
}

void Raft::reset_progress() {
  progress_.clear();
  auto add = [&](NodeId node, bool learner) {
    Progress progress(config_.inflight_appends_max);
    progress.next = log_.last_index() + 1;
    progress.learner = learner;
    if (node == config_.id) {
      progress.match = log_.last_stable_index();
      progress.recent_active = true;
      progress.incarnation = incarnation_;
    }
    progress_.emplace(node, std::move(progress));
  };
  for (NodeId node : conf_.voters) add(node, false);
  for (NodeId node : conf_.learners) add(node, true);
}

bool Raft::promotable() const {
  return !failed_ && !catching_up_ && is_voter(conf_, config_.id) && !log_.unstable_snapshot();
}

void Raft::note_leader_commit(Term leader_term, LogIndex leader_commit) {
  if (!catching_up_) return;
  if (!catch_up_index_) {
    catch_up_index_ = leader_commit;
    catch_up_term_ = leader_term;
  }
  if (log_.last_index() >= *catch_up_index_ && !log_.unstable_snapshot()) {
    catching_up_ = false;  // it now has everything that was committed when it came back
  }
}

uint32_t Raft::random_election_timeout() {
  // splitmix64: deterministic from the configured seed.
  uint64_t z = (random_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return config_.election_ticks + static_cast<uint32_t>(z % config_.election_ticks);
}

void Raft::campaign(CampaignKind kind) {
  if (!promotable()) return;
  MessageType request = MessageType::vote;
  Term request_term;
  if (kind == CampaignKind::pre_vote) {
    become_pre_candidate();
    request = MessageType::pre_vote;
    request_term = Term{term_.value + 1};
  } else {
    become_candidate();
    request_term = term_;
  }
  if (record_vote(config_.id, true) == VoteOutcome::won) {
    // A group of one.
    if (kind == CampaignKind::pre_vote) {
      campaign(CampaignKind::vote);
    } else {
      become_leader();
      broadcast_append();
    }
    return;
  }
  for (NodeId voter : conf_.voters) {
    if (voter == config_.id) continue;
    send(Message{.type = request,
                 .to = voter,
                 .term = request_term,
                 .index = log_.last_index(),
                 .log_term = log_.last_term(),
                 .transfer = kind == CampaignKind::transfer});
  }
}

void Raft::campaign_now() {
  if (role_ == Role::leader) return;
  campaign(config_.pre_vote ? CampaignKind::pre_vote : CampaignKind::vote);
}

void Raft::leader_lost(NodeId node, bool campaign_at_once) {
  if (failed_ || role_ == Role::leader || leader_ != node || node == no_node) return;
  leader_ = no_node;
  if (campaign_at_once && promotable()) {
    election_elapsed_ = 0;
    campaign(config_.pre_vote ? CampaignKind::pre_vote : CampaignKind::vote);
  }
}

Raft::VoteOutcome Raft::record_vote(NodeId from, bool granted) {
  if (!is_voter(conf_, from)) return VoteOutcome::pending;
  votes_.emplace(from, granted);
  size_t yes = 0;
  size_t no = 0;
  for (const auto& [voter, answer] : votes_) (answer ? yes : no) += 1;
  size_t quorum = conf_.voters.size() / 2 + 1;
  if (yes >= quorum) return VoteOutcome::won;
  if (no > conf_.voters.size() - quorum) return VoteOutcome::lost;
  return VoteOutcome::pending;
}

// --- time ---

void Raft::tick() {
  if (failed_) return;
  if (role_ != Role::leader) {
    ++election_elapsed_;
    if (promotable() && election_elapsed_ >= election_timeout_) {
      election_elapsed_ = 0;
      campaign(config_.pre_vote ? CampaignKind::pre_vote : CampaignKind::vote);
    }
    return;
  }
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= config_.election_ticks) {
    election_elapsed_ = 0;
    if (config_.check_quorum && !quorum_active()) {
      // Thesis §6.2: cut off from a majority; a leader elsewhere may already serve clients.
      become_follower(term_, no_node);
      return;
    }
    transfer_target_ = no_node;  // a transfer not done within an election timeout is abandoned
  }
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    broadcast_heartbeat();
  }
  for (auto& [node, progress] : progress_) {
    if (node == config_.id || progress.state != ProgressState::snapshot) continue;
    if (++progress.snapshot_idle_ticks >= config_.election_ticks) {
      progress.snapshot_idle_ticks = 0;
      send_snapshot_chunk(node, progress);  // the last chunk or its answer was lost
    }
  }
}

bool Raft::quorum_active() {
  size_t active = 0;
  for (auto& [node, progress] : progress_) {
    if (!progress.learner && (node == config_.id || progress.recent_active)) ++active;
    if (node != config_.id) progress.recent_active = false;
  }
  return active >= conf_.voters.size() / 2 + 1;
}

// --- messages in ---

void Raft::step(const Message& message) {
  if (failed_) return;
  HAMQ_VERIFY(message.group == config_.group && message.to == config_.id,
              "a message routed to the wrong member");
  const MessageType type = message.type;
  if (message.term > term_) {
    if (type == MessageType::vote || type == MessageType::pre_vote) {
      // Thesis §4.2.3: a member that heard from a leader within the minimum election timeout
      // does not help depose it (unless the leader itself asked, by a transfer).
      bool in_lease =
          config_.check_quorum && leader_ != no_node && election_elapsed_ < config_.election_ticks;
      if (in_lease && !message.transfer) return;
    }
    if (type == MessageType::pre_vote) {
      // A pre-vote changes nothing here.
    } else if (type == MessageType::pre_vote_response && !message.reject) {
      // Granted pre-votes carry the term the pre-candidate would campaign at.
    } else {
      bool from_leader = type == MessageType::append || type == MessageType::heartbeat ||
                         type == MessageType::snapshot;
      become_follower(message.term, from_leader ? message.from : no_node);
    }
  } else if (message.term < term_) {
    if ((config_.check_quorum || config_.pre_vote) &&
        (type == MessageType::heartbeat || type == MessageType::append)) {
      // A leader of an older term that cannot hear that it was replaced (a one-way partition):
      // answering with our term makes it step down.
      send(Message{.type = MessageType::append_response, .to = message.from, .term = term_});
    } else if (type == MessageType::pre_vote) {
      send(Message{.type = MessageType::pre_vote_response,
                   .to = message.from,
                   .term = term_,
                   .reject = true});
    }
    return;
  }

  if (type == MessageType::vote || type == MessageType::pre_vote) {
    handle_vote_request(message);
  } else if (role_ == Role::leader) {
    step_leader(message);
  } else if (role_ == Role::follower) {
    step_follower(message);
  } else {
    step_candidate(message);
  }
  stop_on_storage_failure();
}

void Raft::handle_vote_request(const Message& message) {
  bool pre = message.type == MessageType::pre_vote;
  // §5.2: one vote per term, first come first served; a pre-vote for a future term is free.
  bool can_vote = vote_ == message.from || (vote_ == no_node && leader_ == no_node) ||
                  (pre && message.term > term_);
  MessageType answer = pre ? MessageType::pre_vote_response : MessageType::vote_response;
  // A member catching up after losing its disk votes only for a candidate that holds everything
  // the leader it heard from had committed: one whose last entry is of a later term (by leader
  // completeness, it has all that leader committed) or of that leader's term and at least as far.
  bool covers_catch_up =
      !catching_up_ || (catch_up_index_ &&
                        (message.log_term > catch_up_term_ || (message.log_term == catch_up_term_ &&
                                                               message.index >= *catch_up_index_)));
  // §5.4.1: only for a candidate whose log is at least as up to date as ours.
  if (can_vote && covers_catch_up && log_.is_up_to_date(message.index, message.log_term)) {
    send(Message{.type = answer, .to = message.from, .term = message.term});
    if (!pre) {
      election_elapsed_ = 0;
      vote_ = message.from;
    }
  } else {
    send(Message{.type = answer, .to = message.from, .term = term_, .reject = true});
  }
}

void Raft::step_follower(const Message& message) {
  switch (message.type) {
    case MessageType::append:
      election_elapsed_ = 0;
      leader_ = message.from;
      handle_append(message);
      return;
    case MessageType::heartbeat:
      election_elapsed_ = 0;
      leader_ = message.from;
      handle_heartbeat(message);
      return;
    case MessageType::snapshot:
      election_elapsed_ = 0;
      leader_ = message.from;
      handle_snapshot_chunk(message);
      return;
    case MessageType::timeout_now:
      // Thesis §3.10: the leader handed over; campaign at once, skipping the pre-vote.
      if (promotable()) campaign(CampaignKind::transfer);
      return;
    default:
      return;
  }
}

void Raft::step_candidate(const Message& message) {
  switch (message.type) {
    case MessageType::append:
      become_follower(message.term, message.from);
      handle_append(message);
      return;
    case MessageType::heartbeat:
      become_follower(message.term, message.from);
      handle_heartbeat(message);
      return;
    case MessageType::snapshot:
      become_follower(message.term, message.from);
      handle_snapshot_chunk(message);
      return;
    default:
      break;
  }
  MessageType expected =
      role_ == Role::pre_candidate ? MessageType::pre_vote_response : MessageType::vote_response;
  if (message.type != expected) return;
  switch (record_vote(message.from, !message.reject)) {
    case VoteOutcome::won:
      if (role_ == Role::pre_candidate) {
        campaign(CampaignKind::vote);
      } else {
        become_leader();
        broadcast_append();
      }
      return;
    case VoteOutcome::lost:
      become_follower(term_, no_node);
      return;
    case VoteOutcome::pending:
      return;
  }
}

void Raft::step_leader(const Message& message) {
  auto found = progress_.find(message.from);
  if (found == progress_.end() || message.from == config_.id) return;
  Progress& progress = found->second;
  switch (message.type) {
    case MessageType::append_response:
      if (!accept_incarnation(message, progress)) return;
      progress.recent_active = true;
      handle_append_response(message, progress);
      return;
    case MessageType::heartbeat_response:
      if (!accept_incarnation(message, progress)) return;
      progress.recent_active = true;
      progress.probe_sent = false;
      if (message.reject && message.index < progress.match) {
        // It no longer has entries counted for it (its log was dropped for damage and it
        // rejoined, the same incarnation): probe from where its log ends.
        progress.match = LogIndex{0};
        progress.become_probe();
        progress.next = message.index + 1;
      }
      // Appends may have been lost with the window full: the follower answers heartbeats, so
      // make room for one more, which it will take or reject (and so restart the probe).
      if (progress.state == ProgressState::replicate && progress.inflights.full()) {
        progress.inflights.free_first();
      }
      if (progress.match < log_.last_index()) send_append(message.from, progress, true);
      return;
    case MessageType::snapshot_response:
      if (!accept_incarnation(message, progress)) return;
      progress.recent_active = true;
      handle_snapshot_response(message, progress);
      return;
    default:
      return;
  }
}

bool Raft::accept_incarnation(const Message& message, Progress& progress) {
  if (message.from_incarnation < progress.incarnation) return false;  // from before a disk loss
  if (message.from_incarnation > progress.incarnation) {
    if (progress.incarnation != 0) {
      // The member restarted with an empty disk: it has none of the entries counted for it.
      progress.match = LogIndex{0};
      progress.become_probe();
      progress.next = log_.last_index() + 1;
    }
    progress.incarnation = message.from_incarnation;
  }
  return true;
}

void Raft::handle_append_response(const Message& message, Progress& progress) {
  const NodeId from = message.from;
  if (message.reject) {
    LogIndex next_probe = message.reject_hint;
    if (message.reject_hint_term.value > 0) {
      next_probe = log_.find_conflict_by_term(message.reject_hint, message.reject_hint_term);
    }
    if (progress.maybe_decrease_to(message.index, next_probe)) {
      if (progress.state == ProgressState::replicate) progress.become_probe();
      send_append(from, progress, false);
    }
    return;
  }
  bool was_paused = progress.paused();
  if (!progress.maybe_update(message.index) &&
      !(progress.match == message.index && progress.state == ProgressState::probe)) {
    return;
  }
  switch (progress.state) {
    case ProgressState::probe:
      progress.become_replicate();
      break;
    case ProgressState::snapshot:
      if (progress.match >= progress.snapshot.index || progress.match + 1 >= log_.first_index()) {
        progress.become_probe();
        progress.become_replicate();
      }
      break;
    case ProgressState::replicate:
      progress.inflights.free_to(message.index);
      break;
  }
  if (maybe_commit()) {
    broadcast_append();
  } else if (was_paused) {
    send_append(from, progress, false);
  }
  while (send_append(from, progress, false)) {
  }
  if (from == transfer_target_ && progress.match == log_.last_index()) {
    send(Message{.type = MessageType::timeout_now, .to = from, .term = term_});
  }
}

void Raft::handle_snapshot_response(const Message& message, Progress& progress) {
  if (progress.state != ProgressState::snapshot ||
      message.snapshot.index != progress.snapshot.index ||
      message.snapshot.term != progress.snapshot.term) {
    return;
  }
  progress.snapshot_idle_ticks = 0;
  progress.snapshot_offset_acked = message.chunk_offset;
  if (message.reject || message.chunk_offset < storage_.snapshot_size_bytes()) {
    send_snapshot_chunk(message.from, progress);
  }
}

void Raft::handle_append(const Message& message) {
  handle_append_entries(message);
  note_leader_commit(message.term, message.commit);
}

void Raft::handle_append_entries(const Message& message) {
  if (message.index < log_.committed()) {
    send(Message{.type = MessageType::append_response,
                 .to = message.from,
                 .term = term_,
                 .index = log_.committed()});
    return;
  }
  auto last_new =
      log_.maybe_append(message.index, message.log_term, message.commit, message.entries);
  if (last_new) {
    send(Message{.type = MessageType::append_response,
                 .to = message.from,
                 .term = term_,
                 .index = *last_new});
    return;
  }
  // §5.3 optimisation: hint the largest index whose term is not above the leader's term at the
  // rejected index, so the leader skips a whole term per round trip.
  LogIndex hint =
      log_.find_conflict_by_term(std::min(message.index, log_.last_index()), message.log_term);
  send(Message{.type = MessageType::append_response,
               .to = message.from,
               .term = term_,
               .index = message.index,
               .reject = true,
               .reject_hint = hint,
               .reject_hint_term = log_.term_or_zero(hint)});
}

void Raft::handle_heartbeat(const Message& message) {
  // The leader sends min(commit, what it knows we have); a member that lost its disk may have
  // less than the leader believes, so never past our own end.
  log_.commit_to(std::min(message.commit, log_.last_index()));
  Message answer{.type = MessageType::heartbeat_response, .to = message.from, .term = term_};
  // A member catching up (its log here was lost, or dropped for damage) says where its log
  // ends: the leader may count more for it from before, and send it nothing until it learns.
  if (catching_up_) {
    answer.reject = true;
    answer.index = log_.last_index();
  }
  send(answer);
}

void Raft::handle_snapshot_chunk(const Message& message) {
  const SnapshotMeta& meta = message.snapshot;
  auto respond_done = [&] {
    incoming_snapshot_.reset();
    send(Message{.type = MessageType::append_response,
                 .to = message.from,
                 .term = term_,
                 .index = log_.committed()});
  };
  if (meta.index <= log_.committed()) {
    respond_done();  // everything in it is here already
    return;
  }
  if (message.chunk_offset == 0 && log_.matches(meta.index, meta.term)) {
    // §7: the log already holds the snapshot's last entry; keep what follows it.
    log_.commit_to(meta.index);
    respond_done();
    return;
  }
  if (message.chunk_offset == 0) {
    incoming_snapshot_ = meta;
    incoming_snapshot_bytes_ = 0;
  }
  if (!incoming_snapshot_ || !(*incoming_snapshot_ == meta) ||
      message.chunk_offset != incoming_snapshot_bytes_) {
    // Out of order (a chunk was lost): say where to continue from.
    bool same = incoming_snapshot_ && *incoming_snapshot_ == meta;
    send(Message{.type = MessageType::snapshot_response,
                 .to = message.from,
                 .term = term_,
                 .reject = true,
                 .snapshot = meta,
                 .chunk_offset = same ? incoming_snapshot_bytes_ : 0});
    return;
  }
  incoming_snapshot_bytes_ += message.chunk.size();
  snapshot_chunks_.push_back(SnapshotChunk{.meta = meta,
                                           .offset = message.chunk_offset,
                                           .data = message.chunk,
                                           .install = message.chunk_last});
  if (!message.chunk_last) {
    send(Message{.type = MessageType::snapshot_response,
                 .to = message.from,
                 .term = term_,
                 .snapshot = meta,
                 .chunk_offset = incoming_snapshot_bytes_});
    return;
  }
  // The whole snapshot is here: it replaces the log and the configuration.
  log_.restore(meta);
  conf_ = meta.conf;
  snapshot_conf_ = meta.conf;
  std::erase_if(conf_changes_, [&meta](const auto& change) { return change.first <= meta.index; });
  incoming_snapshot_.reset();
  note_leader_commit(message.term, meta.index);
  send(Message{.type = MessageType::append_response,
               .to = message.from,
               .term = term_,
               .index = meta.index});
}

// --- messages out ---

void Raft::send(Message message) {
  message.group = config_.group;
  message.from = config_.id;
  message.from_incarnation = incarnation_;
  switch (message.type) {
    case MessageType::append:
    case MessageType::heartbeat:
    case MessageType::snapshot:
    case MessageType::timeout_now:
    case MessageType::pre_vote:
    case MessageType::pre_vote_response:
    case MessageType::heartbeat_response:  // "alive in your term": nothing written to promise
      messages_.push_back(std::move(message));
      return;
    default:
      // Votes and acknowledgements promise what this member has written: they wait for it.
      messages_after_persist_.push_back(std::move(message));
      return;
  }
}

bool Raft::send_append(NodeId to, Progress& progress, bool send_if_empty) {
  if (progress.paused()) return false;
  auto previous_term = log_.term(progress.next - 1);
  auto entries = log_.entries(progress.next, log_.last_index() + 1, config_.append_bytes_max);
  if (!previous_term.ok() || !entries.ok()) {
    if (log_.failed()) return false;
    // The follower needs what was compacted into the snapshot (§7).
    progress.become_snapshot(storage_.snapshot_meta());
    send_snapshot_chunk(to, progress);
    return false;
  }
  if (entries->empty() && !send_if_empty) return false;
  LogIndex last = entries->empty() ? progress.next - 1 : entries->back().index;
  size_t count = entries->size();
  send(Message{.type = MessageType::append,
               .to = to,
               .term = term_,
               .index = progress.next - 1,
               .log_term = *previous_term,
               .entries = std::move(*entries),
               .commit = log_.committed()});
  progress.sent_append(last, count);
  return true;
}

void Raft::send_snapshot_chunk(NodeId to, Progress& progress) {
  auto chunk = storage_.snapshot_chunk(progress.snapshot, progress.snapshot_offset_acked,
                                       config_.snapshot_chunk_bytes);
  if (!chunk.ok() && chunk.error() == StorageError::compacted) {
    // A newer snapshot replaced the one being sent: start over with it.
    progress.become_snapshot(storage_.snapshot_meta());
    chunk = storage_.snapshot_chunk(progress.snapshot, 0, config_.snapshot_chunk_bytes);
  }
  if (!chunk.ok()) {
    if (chunk.error() == StorageError::io) failed_ = true;
    return;
  }
  uint64_t size = storage_.snapshot_size_bytes();
  bool last = progress.snapshot_offset_acked + chunk->size() >= size;
  send(Message{.type = MessageType::snapshot,
               .to = to,
               .term = term_,
               .snapshot = progress.snapshot,
               .chunk_offset = progress.snapshot_offset_acked,
               .chunk = std::move(*chunk),
               .chunk_last = last});
}

void Raft::send_heartbeat(NodeId to, const Progress& progress) {
  // Never a commit index past what the follower is known to have (it could not check it).
  send(Message{.type = MessageType::heartbeat,
               .to = to,
               .term = term_,
               .commit = std::min(progress.match, log_.committed())});
}

void Raft::broadcast_append() {
  for (auto& [node, progress] : progress_) {
    if (node == config_.id) continue;
    // Pipelined: as many appends as the follower's window takes.
    if (!send_append(node, progress, true)) continue;
    while (send_append(node, progress, false)) {
    }
  }
}

void Raft::broadcast_heartbeat() {
  for (auto& [node, progress] : progress_) {
    if (node != config_.id) send_heartbeat(node, progress);
  }
}

bool Raft::maybe_commit() {
  std::vector<LogIndex> matches;
  for (const auto& [node, progress] : progress_) {
    if (!progress.learner) matches.push_back(progress.match);
  }
  if (matches.empty()) return false;
  std::sort(matches.begin(), matches.end(), std::greater<>());
  LogIndex quorum_index = matches[conf_.voters.size() / 2];
  // §5.4.2: only an entry of the current term commits by counting replicas.
  if (quorum_index > log_.committed() && log_.term_or_zero(quorum_index) == term_) {
    log_.commit_to(quorum_index);
    return true;
  }
  return false;
}

// --- requests ---

Result<LogIndex, ProposeError> Raft::propose(std::string data) {
  if (failed_) return unexpected(ProposeError::stopped);
  if (role_ != Role::leader) return unexpected(ProposeError::not_leader);
  if (transfer_target_ != no_node) return unexpected(ProposeError::transferring);
  Entry entry{.term = term_,
              .index = log_.last_index() + 1,
              .type = EntryType::normal,
              .data = std::move(data)};
  uint64_t size = entry_size_bytes(entry);
  if (uncommitted_bytes_ > 0 && uncommitted_bytes_ + size > config_.uncommitted_bytes_max) {
    return unexpected(ProposeError::too_much_pending);
  }
  uncommitted_bytes_ += size;
  LogIndex index = entry.index;
  log_.append({std::move(entry)});
  append_pending_ = true;
  return index;
}

Result<LogIndex, ProposeError> Raft::propose_conf_change(const ConfChange& change) {
  if (failed_) return unexpected(ProposeError::stopped);
  if (role_ != Role::leader) return unexpected(ProposeError::not_leader);
  if (transfer_target_ != no_node) return unexpected(ProposeError::transferring);
  if (pending_conf_index_ > log_.applied()) return unexpected(ProposeError::conf_change_pending);
  ConfState next = conf_;
  if (!apply_conf_change(change, next) || next.voters.empty()) {
    return unexpected(ProposeError::bad_conf_change);
  }
  LogIndex index = log_.last_index() + 1;
  log_.append({Entry{.term = term_,
                     .index = index,
                     .type = EntryType::conf_change,
                     .data = encode_conf_change(change)}});
  pending_conf_index_ = index;
  append_pending_ = true;
  return index;
}

bool Raft::transfer_leadership(NodeId target) {
  if (role_ != Role::leader || target == config_.id || !is_voter(conf_, target)) return false;
  auto found = progress_.find(target);
  if (found == progress_.end()) return false;
  transfer_target_ = target;
  election_elapsed_ = 0;  // the transfer has one election timeout to complete
  if (found->second.match == log_.last_index()) {
    send(Message{.type = MessageType::timeout_now, .to = target, .term = term_});
  } else {
    send_append(target, found->second, true);
  }
  return true;
}

ConfState Raft::conf_at(LogIndex index) const {
  ConfState conf = snapshot_conf_;
  for (const auto& [at, change] : conf_changes_) {
    if (at > index) break;
    apply_conf_change(change, conf);
  }
  return conf;
}

void Raft::restore_committed_conf() {
  // The membership changes committed after the snapshot count from the start, not from when
  // their entries come out again to be applied: a member must not campaign in, or count votes
  // for, its snapshot's configuration (a group that grew from one member would elect that member
  // alone). Each change that was applied had its commit recorded with it (the runtime writes the
  // hard state of a Ready that commits one), so the stored commit covers them.
  LogIndex at{log_.first_index()};
  while (at <= log_.committed()) {
    auto batch = log_.entries(at, LogIndex{log_.committed().value + 1}, 4u << 20);
    if (!batch.ok()) {
      if (batch.error() == StorageError::io) failed_ = true;
      return;
    }
    if (batch->empty()) return;
    for (const Entry& entry : *batch) {
      ConfChange change;
      if (entry.type == EntryType::conf_change && decode_conf_change(entry.data, change)) {
        apply_conf_change(change, conf_);
        conf_restored_to_ = entry.index;
        conf_changes_.emplace_back(entry.index, change);
      }
    }
    at = LogIndex{batch->back().index.value + 1};
  }
}

void Raft::apply_conf(const ConfChange& change) {
  if (!apply_conf_change(change, conf_)) return;
  if (role_ != Role::leader) return;
  if (!is_voter(conf_, config_.id)) {
    // Removed itself (or made itself a learner): stop leading; the voters elect a leader of the
    // new configuration.
    become_follower(term_, no_node);
    return;
  }
  if (change.type == ConfChangeType::remove_node) {
    // A last word to the member removed, which hears nothing more from this group: the commit
    // index, so that it applies its removal if it holds it (and its node lets its replica go).
    if (auto removed = progress_.find(change.node); removed != progress_.end()) {
      send_heartbeat(change.node, removed->second);
    }
    progress_.erase(change.node);
    if (transfer_target_ == change.node) transfer_target_ = no_node;
  } else {
    auto [it, added] = progress_.try_emplace(change.node, config_.inflight_appends_max);
    if (added) it->second.next = log_.last_index() + 1;
    it->second.learner = change.type == ConfChangeType::add_learner;
  }
  if (maybe_commit()) broadcast_append();
}

// --- Ready ---

bool Raft::has_ready() const {
  if (failed_ || ready_in_flight_) return false;
  if (append_pending_ || !messages_.empty() || !messages_after_persist_.empty() ||
      !snapshot_chunks_.empty() || !log_.unstable_entries().empty() || log_.unstable_snapshot()) {
    return true;
  }
  if (hard_state() != previous_hard_state_) return true;
  return std::min(log_.committed(), log_.last_stable_index()) > log_.applied();
}

Ready Raft::ready() {
  HAMQ_VERIFY(!ready_in_flight_, "ready() again before advance()");
  Ready ready;
  if (failed_) return ready;
  if (append_pending_) {
    append_pending_ = false;
    if (role_ == Role::leader) broadcast_append();
  }
  ready.entries.assign(log_.unstable_entries().begin(), log_.unstable_entries().end());
  HardState current = hard_state();
  bool vote_changed = false;
  if (current != previous_hard_state_) {
    vote_changed =
        current.term != previous_hard_state_.term || current.vote != previous_hard_state_.vote;
    ready.hard_state = current;
  }
  ready.snapshot_chunks = std::move(snapshot_chunks_);
  snapshot_chunks_.clear();
  for (const SnapshotChunk& chunk : ready.snapshot_chunks) {
    if (chunk.install) ready.snapshot_installed = chunk.meta;
  }
  LogIndex apply_to = std::min(log_.committed(), log_.last_stable_index());
  if (apply_to > log_.applied()) {
    auto committed =
        log_.entries(log_.applied() + 1, apply_to + 1, config_.committed_bytes_per_ready_max);
    if (committed.ok()) ready.committed_entries = std::move(*committed);
  }
  for (const Entry& entry : ready.committed_entries) {
    if (entry.type != EntryType::conf_change) continue;
    // Its commit is made durable before the change is applied: a restart takes the change from
    // the log up to the stored commit (restore_committed_conf).
    ready.hard_state = current;
    ConfChange change;
    bool recorded = !conf_changes_.empty() && conf_changes_.back().first >= entry.index;
    if (!recorded && decode_conf_change(entry.data, change)) {
      conf_changes_.emplace_back(entry.index, change);
    }
  }
  if (vote_changed) {
    // A new term or vote must be durable before anything this member says in it.
    ready.messages_after_persist = std::move(messages_);
    for (Message& message : messages_after_persist_) {
      ready.messages_after_persist.push_back(std::move(message));
    }
  } else {
    ready.messages = std::move(messages_);
    ready.messages_after_persist = std::move(messages_after_persist_);
  }
  messages_.clear();
  messages_after_persist_.clear();
  ready.leader = leader_;
  ready.role = role_;
  ready_in_flight_ = true;
  stop_on_storage_failure();
  return ready;
}

void Raft::advance(const Ready& ready) {
  HAMQ_VERIFY(ready_in_flight_, "advance() without ready()");
  ready_in_flight_ = false;
  if (failed_) return;
  if (ready.hard_state) previous_hard_state_ = *ready.hard_state;
  if (ready.snapshot_installed) log_.stable_snapshot_to(*ready.snapshot_installed);
  if (!ready.entries.empty()) {
    log_.stable_to(ready.entries.back().index, ready.entries.back().term);
  }
  if (!ready.committed_entries.empty()) {
    uint64_t applied_bytes = 0;
    for (const Entry& entry : ready.committed_entries) {
      applied_bytes += entry_size_bytes(entry);
      if (entry.type != EntryType::conf_change || entry.index <= conf_restored_to_) continue;
      ConfChange change;
      if (decode_conf_change(entry.data, change)) apply_conf(change);
    }
    uncommitted_bytes_ -= std::min(uncommitted_bytes_, applied_bytes);
    log_.applied_to(ready.committed_entries.back().index);
  }
  if (catching_up_ && catch_up_index_) note_leader_commit(catch_up_term_, *catch_up_index_);
  if (role_ == Role::leader) {
    // The leader counts itself only for what it has made durable.
    auto self = progress_.find(config_.id);
    if (self != progress_.end() && self->second.maybe_update(log_.last_stable_index()) &&
        maybe_commit()) {
      broadcast_append();
    }
  }
  stop_on_storage_failure();
}

void Raft::stop_on_storage_failure() {
  if (!log_.failed() && !failed_) return;
  failed_ = true;
  messages_.clear();
  messages_after_persist_.clear();
  snapshot_chunks_.clear();
}

HardState Raft::hard_state() const {
  return HardState{.term = term_,
                   .vote = vote_,
                   .commit = log_.committed(),
                   .catch_up = catching_up_ && catch_up_index_ ? *catch_up_index_ : LogIndex{0},
                   .catch_up_term = catching_up_ && catch_up_index_ ? catch_up_term_ : Term{0}};
}

const Progress* Raft::progress(NodeId node) const {
  auto found = progress_.find(node);
  return found == progress_.end() ? nullptr : &found->second;
}

}  // namespace hamq::raft
