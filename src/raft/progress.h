// Progress: what a leader knows of each follower's log, and how it sends to it (etcd's tracker).
//
//   probe      the leader does not know where the logs match: one append at a time, waiting for
//              the answer (or the next heartbeat) before the next, backing off on rejection.
//   replicate  the logs match up to `match`: appends are pipelined, at most
//              `inflight_appends_max` unacknowledged at once.
//   snapshot   the follower needs entries the leader has compacted: snapshot chunks are sent,
//              one at a time, until the follower reports the snapshot's index.
#pragma once

#include <cstdint>
#include <deque>

#include "raft/types.h"

namespace hamq::raft {

enum class ProgressState : uint8_t { probe, replicate, snapshot };

// The last index of each append sent and not yet acknowledged, oldest first, up to a limit.
class Inflights {
 public:
  explicit Inflights(size_t count_max) : count_max_(count_max) {}
  bool full() const { return indexes_.size() >= count_max_; }
  size_t size() const { return indexes_.size(); }
  void add(LogIndex last);
  // Forgets every append up to and including `index`.
  void free_to(LogIndex index);
  // Forgets the oldest: it may have been lost (a heartbeat answer shows the follower alive).
  void free_first() {
    if (!indexes_.empty()) indexes_.pop_front();
  }
  void reset() { indexes_.clear(); }

 private:
  size_t count_max_{};
  std::deque<LogIndex> indexes_{};
};

struct Progress {
  explicit Progress(size_t inflight_appends_max) : inflights(inflight_appends_max) {}

  LogIndex match;   // the follower has the leader's entries up to here (durably)
  LogIndex next{};  // the next entry to send
  ProgressState state = ProgressState::probe;
  // probe: an append is out and unanswered.
  bool probe_sent = false;
  Inflights inflights;
  // Heard from since the last check-quorum round.
  bool recent_active = false;
  bool learner = false;
  // The follower's disk incarnation last heard. Messages from an older one are stale; a newer one
  // means the follower restarted with an empty disk and has none of what `match` said.
  uint64_t incarnation = 0;

  // snapshot: which snapshot is being sent, how far the follower has taken it, and ticks since it
  // last answered (to resend a lost chunk).
  SnapshotMeta snapshot{};
  uint64_t snapshot_offset_acked = 0;
  uint32_t snapshot_idle_ticks = 0;

  void become_probe();
  void become_replicate();
  void become_snapshot(const SnapshotMeta& meta);
  // A successful append response up to `index`. Returns false if it tells nothing new.
  bool maybe_update(LogIndex index);
  // A rejected append of `rejected` (its previous index), the follower hinting that the logs may
  // match at `match_hint`. Returns false for a stale rejection.
  bool maybe_decrease_to(LogIndex rejected, LogIndex match_hint);
  // Appends must wait (probe outstanding, window full, or a snapshot on its way).
  bool paused() const;
  // After sending an append whose last entry is `last` (or none).
  void sent_append(LogIndex last, size_t entry_count);
};

}  // namespace hamq::raft
