#include "raft/progress.h"

#include <algorithm>

#include "common/verify.h"

namespace hamq::raft {

void Inflights::add(LogIndex last) {
  HAMQ_VERIFY(!full(), "inflight window overflow");
  HAMQ_VERIFY(indexes_.empty() || indexes_.back() <= last, "inflights out of order");
  indexes_.push_back(last);
}

void Inflights::free_to(LogIndex index) {
  while (!indexes_.empty() && indexes_.front() <= index) indexes_.pop_front();
}

void Progress::become_probe() {
  // After a snapshot, continue from its index; otherwise from what is known to match.
  if (state == ProgressState::snapshot) {
    next = std::max(match, snapshot.index) + 1;
  } else {
    next = match + 1;
  }
  state = ProgressState::probe;
  probe_sent = false;
  inflights.reset();
  snapshot_offset_acked = 0;
}

void Progress::become_replicate() {
  state = ProgressState::replicate;
  next = match + 1;
  probe_sent = false;
  inflights.reset();
}

void Progress::become_snapshot(const SnapshotMeta& meta) {
  state = ProgressState::snapshot;
  snapshot = meta;
  snapshot_offset_acked = 0;
  snapshot_idle_ticks = 0;
  probe_sent = false;
  inflights.reset();
}

bool Progress::maybe_update(LogIndex index) {
  bool updated = false;
  if (match < index) {
    match = index;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, index + 1);
  return updated;
}

bool Progress::maybe_decrease_to(LogIndex rejected, LogIndex match_hint) {
  if (state == ProgressState::replicate) {
    // Stale if it rejects what is already known to match.
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // probe (or snapshot): only the rejection of the one append outstanding counts.
  if (next - 1 != rejected) return false;
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  probe_sent = false;
  return true;
}

bool Progress::paused() const {
  switch (state) {
    case ProgressState::probe:
      return probe_sent;
    case ProgressState::replicate:
      return inflights.full();
    case ProgressState::snapshot:
      return true;
  }
  return true;
}

void Progress::sent_append(LogIndex last, size_t entry_count) {
  if (state == ProgressState::replicate) {
    if (entry_count > 0) {
      next = last + 1;
      inflights.add(last);
    }
  } else if (state == ProgressState::probe) {
    probe_sent = true;
  }
}

}  // namespace hamq::raft
