// Raft: one member of one Raft group, as a pure state machine (the sans-IO design of etcd's
// raft library). It reads no clock (time is tick()), does no I/O (storage is read through
// LogStorage; everything to write, send and apply is handed out in a Ready) and starts no
// thread. Randomness (election timeouts) comes from a generator seeded by the caller.
//
// Driving it (one loop owns it; not thread-safe):
//
//   tick() every tick interval; step(message) for each message received; propose(...),
//   transfer_leadership(...) on request. Then, while has_ready():
//
//     Ready ready = raft.ready();
//     1. send ready.messages: they do not depend on anything in this Ready being durable
//        (a leader's appends and heartbeats: the leader counts itself only once durable);
//     2. write ready.snapshot_chunks, ready.entries (replacing any stored suffix from the first
//        one's index) and ready.hard_state to storage, and make them durable;
//     3. only then send ready.messages_after_persist (votes, vote requests, append responses:
//        they promise what was just written);
//     4. apply ready.committed_entries in order (and restore the state machine from the
//        installed snapshot first, if ready.snapshot_installed);
//     5. raft.advance(ready).
//
//   Steps 2 and 4 may run concurrently; ready() may not be called again before advance().
//
// Membership changes (Raft thesis §4.1) are single-server: one at a time, each taking effect
// when its entry is applied (in advance()), and only once the leader has committed an entry of
// its own term. A storage read failing with an I/O error stops the member for good: failed()
// turns true and it says nothing more.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "raft/message.h"
#include "raft/progress.h"
#include "raft/raft_log.h"
#include "raft/storage.h"
#include "raft/types.h"

namespace hamq::raft {

struct Config {
  NodeId id{};
  GroupId group{};
  // A follower that hears no leader for a randomized time in [election_ticks, 2*election_ticks)
  // campaigns. The leader sends heartbeats every heartbeat_ticks.
  uint32_t election_ticks = 10;
  uint32_t heartbeat_ticks = 1;
  uint64_t random_seed = 1;
  // Thesis §9.6: ask for votes without raising the term first, so a member that was cut off
  // cannot depose a working leader when it comes back.
  bool pre_vote = true;
  // Thesis §6.2: a leader that has not heard from a majority for an election timeout steps down;
  // members that heard from a leader within it ignore vote requests (the leader lease).
  bool check_quorum = true;
  // Limits: entries per append (bytes), appends in flight per follower, proposed but
  // uncommitted bytes (proposals past it are refused), committed bytes per Ready, snapshot chunk.
  uint64_t append_bytes_max = 1 << 20;
  uint32_t inflight_appends_max = 64;
  uint64_t uncommitted_bytes_max = 64 << 20;
  uint64_t committed_bytes_per_ready_max = 8 << 20;
  uint64_t snapshot_chunk_bytes = 1 << 20;
};

enum class Role : uint8_t { follower, pre_candidate, candidate, leader };
std::string_view role_name(Role role);

// A piece of a snapshot arriving from the leader, to be written at `offset` of the incoming
// snapshot (offset 0 starts a new one). The last piece, once written, makes the incoming
// snapshot the current one, replacing the whole log (`install`).
struct SnapshotChunk {
  SnapshotMeta meta{};
  uint64_t offset = 0;
  std::string data{};
  bool install = false;
};

struct Ready {
  std::vector<Message> messages{};
  std::vector<SnapshotChunk> snapshot_chunks{};
  std::vector<Entry> entries{};
  std::optional<HardState> hard_state{};
  std::vector<Message> messages_after_persist{};
  // Set when the last snapshot chunk was installed: the state machine restarts from it.
  std::optional<SnapshotMeta> snapshot_installed{};
  std::vector<Entry> committed_entries{};
  // The leader known after this Ready (changes are worth logging).
  NodeId leader = no_node;
  Role role = Role::follower;
};

enum class ProposeError : uint8_t {
  not_leader,           // see leader() for where to go
  transferring,         // a leadership transfer is under way
  too_much_pending,     // uncommitted_bytes_max reached: slow down
  conf_change_pending,  // a membership change is not yet applied
  bad_conf_change,      // the change does not apply to the current configuration
  stopped,              // storage failed
};
std::string_view propose_error_name(ProposeError error);

class Raft {
 public:
  // Loads hard state and the configuration from `storage`, which must outlive the Raft.
  Raft(Config config, const LogStorage& storage);

  void tick();
  void step(const Message& message);
  // Appends a command; returns its index. Committed once a majority has it durably, and applied
  // when it comes out in Ready::committed_entries (at that index, with this term: a later leader
  // may have replaced it, which the caller sees as a different entry at that index).
  Result<LogIndex, ProposeError> propose(std::string data);
  Result<LogIndex, ProposeError> propose_conf_change(const ConfChange& change);
  // Thesis §3.10: bring `target` up to date, then tell it to campaign at once.
  bool transfer_leadership(NodeId target);
  // Starts an election now (a member that was asked to, or in tests).
  void campaign_now();
  // The runtime saw the link to `node` close (its process died, or the connection broke). If it
  // is the leader this member follows, the member stops counting on it: it no longer refuses
  // votes for the leader's sake (its lease ends), and campaigns now if `campaign` (the runtime
  // picks one member to, so that the others do not split the vote). A leader that is in fact
  // alive keeps its place: its next heartbeat makes it the leader again, or it wins the vote.
  void leader_lost(NodeId node, bool campaign);

  bool has_ready() const;
  Ready ready();
  void advance(const Ready& ready);

  NodeId id() const { return config_.id; }
  GroupId group() const { return config_.group; }
  Role role() const { return role_; }
  NodeId leader() const { return leader_; }
  Term term() const { return term_; }
  NodeId vote() const { return vote_; }
  const ConfState& conf() const { return conf_; }
  // The configuration as of a committed entry (from the last snapshot's on): what a snapshot at
  // that entry must record, whatever was applied since or is being applied.
  ConfState conf_at(LogIndex index) const;
  const RaftLog& log() const { return log_; }
  LogIndex committed() const { return log_.committed(); }
  LogIndex applied() const { return log_.applied(); }
  uint64_t incarnation() const { return incarnation_; }
  bool failed() const { return failed_; }
  // Started with an empty disk and not yet caught up: does not campaign, and votes only for a
  // candidate holding what the first leader it heard from had committed.
  bool catching_up() const { return catching_up_; }
  // The leader's view of a member (for tests, metrics and leadership balance).
  const Progress* progress(NodeId node) const;
  NodeId transfer_target() const { return transfer_target_; }

 private:
  enum class CampaignKind { pre_vote, vote, transfer };

  void become_follower(Term term, NodeId leader);
  void become_pre_candidate();
  void become_candidate();
  void become_leader();
  void campaign(CampaignKind kind);
  void reset(Term term);
  void reset_progress();
  bool promotable() const;
  uint32_t random_election_timeout();

  void step_leader(const Message& message);
  void step_candidate(const Message& message);
  void step_follower(const Message& message);
  void handle_vote_request(const Message& message);
  void handle_append(const Message& message);
  void handle_append_entries(const Message& message);
  void handle_heartbeat(const Message& message);
  void handle_snapshot_chunk(const Message& message);
  void handle_append_response(const Message& message, Progress& progress);
  void handle_snapshot_response(const Message& message, Progress& progress);
  // Votes granted minus needed: > 0 won, < 0 lost, 0 undecided (as won/lost/pending).
  enum class VoteOutcome { won, lost, pending };
  VoteOutcome record_vote(NodeId from, bool granted);

  void send(Message message);
  bool send_append(NodeId to, Progress& progress, bool send_if_empty);
  void send_snapshot_chunk(NodeId to, Progress& progress);
  void send_heartbeat(NodeId to, const Progress& progress);
  void broadcast_append();
  void broadcast_heartbeat();
  bool maybe_commit();
  bool quorum_active();
  // Progress of a member that speaks: false when the message is from an older incarnation.
  bool accept_incarnation(const Message& message, Progress& progress);
  void apply_conf(const ConfChange& change);
  // At start: the configuration after the committed entries the log holds (their changes are
  // not applied again when the entries come out).
  void restore_committed_conf();
  LogIndex conf_restored_to_{};
  // The snapshot's configuration and the changes committed after it, in log order (those given
  // to be applied included): conf_at().
  ConfState snapshot_conf_{};
  std::vector<std::pair<LogIndex, ConfChange>> conf_changes_;
  void note_leader_commit(Term leader_term, LogIndex leader_commit);
  HardState hard_state() const;
  void stop_on_storage_failure();

  Config config_{};
  const LogStorage& storage_;
  RaftLog log_;
  uint64_t incarnation_ = 0;
  uint64_t random_state_;

  Role role_ = Role::follower;
  Term term_{};
  NodeId vote_ = no_node;
  NodeId leader_ = no_node;
  ConfState conf_{};
  std::map<NodeId, Progress> progress_{};
  std::map<NodeId, bool> votes_{};

  uint32_t election_elapsed_ = 0;
  uint32_t heartbeat_elapsed_ = 0;
  uint32_t election_timeout_ = 0;
  NodeId transfer_target_ = no_node;
  LogIndex pending_conf_index_{};
  uint64_t uncommitted_bytes_ = 0;

  // A member that started with an empty disk, until it holds what a leader had committed when
  // it first heard from one (see the constructor).
  bool catching_up_ = false;
  std::optional<LogIndex> catch_up_index_;
  Term catch_up_term_;
  // A snapshot being received: which one, and how many bytes have been taken.
  std::optional<SnapshotMeta> incoming_snapshot_{};
  uint64_t incoming_snapshot_bytes_ = 0;

  std::vector<Message> messages_{};
  std::vector<Message> messages_after_persist_{};
  std::vector<SnapshotChunk> snapshot_chunks_{};
  HardState previous_hard_state_{};
  bool ready_in_flight_ = false;
  bool append_pending_ = false;  // proposals to broadcast when the Ready is taken
  bool failed_ = false;
};

}  // namespace hamq::raft
