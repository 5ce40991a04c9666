#include "raft/raft_log.h"

#include <algorithm>

#include "common/verify.h"

namespace hamq::raft {

RaftLog::RaftLog(const LogStorage& storage) : storage_(storage) {
  unstable_offset_ = storage_.last_index() + 1;
  SnapshotMeta snapshot = storage_.snapshot_meta();
  committed_ = snapshot.index;
  applied_ = snapshot.index;
}

LogIndex RaftLog::first_index() const {
  if (unstable_snapshot_) return unstable_snapshot_->index + 1;
  return storage_.first_index();
}

LogIndex RaftLog::last_index() const {
  if (!unstable_.empty()) return unstable_offset_ + (unstable_.size() - 1);
  if (unstable_snapshot_) return unstable_snapshot_->index;
  return unstable_offset_ - 1;
}

Term RaftLog::last_term() const {
  return term_or_zero(last_index());
}

LogIndex RaftLog::last_stable_index() const {
  if (unstable_snapshot_) return LogIndex{0};
  return unstable_offset_ - 1;
}

Result<Term, StorageError> RaftLog::term(LogIndex index) const {
  if (unstable_snapshot_ && index == unstable_snapshot_->index) return unstable_snapshot_->term;
  if (index + 1 < first_index()) return unexpected(StorageError::compacted);
  if (index > last_index()) return unexpected(StorageError::unavailable);
  if (!unstable_.empty() && index >= unstable_offset_) {
    return unstable_[index.value - unstable_offset_.value].term;
  }
  HAMQ_VERIFY(!unstable_snapshot_, "an index below an unstable snapshot is compacted");
  auto stored = storage_.term(index);
  if (!stored.ok() && stored.error() == StorageError::io) failed_ = true;
  return stored;
}

Term RaftLog::term_or_zero(LogIndex index) const {
  auto found = term(index);
  return found.ok() ? *found : Term{0};
}

bool RaftLog::matches(LogIndex index, Term term_expected) const {
  auto found = term(index);
  return found.ok() && *found == term_expected;
}

bool RaftLog::is_up_to_date(LogIndex last, Term term_of_last) const {
  Term mine = last_term();
  return term_of_last > mine || (term_of_last == mine && last >= last_index());
}

Result<std::vector<Entry>, StorageError> RaftLog::entries(LogIndex lo, LogIndex hi,
                                                          uint64_t max_bytes) const {
  std::vector<Entry> out;
  if (lo >= hi) return out;
  if (lo < first_index()) return unexpected(StorageError::compacted);
  HAMQ_VERIFY(hi <= last_index() + 1, "entries past the end of the log");
  uint64_t bytes = 0;
  LogIndex stored_end = std::min(hi, unstable_offset_);
  if (lo < stored_end) {
    HAMQ_VERIFY(!unstable_snapshot_, "stored entries below an unstable snapshot");
    auto stored = storage_.entries(lo, stored_end, max_bytes, out);
    if (!stored.ok()) {
      if (stored.error() == StorageError::io) failed_ = true;
      return unexpected(stored.error());
    }
    for (const Entry& entry : out) bytes += entry_size_bytes(entry);
    if (out.size() < distance(lo, stored_end)) return out;  // the byte limit was reached
  }
  for (LogIndex index = std::max(lo, unstable_offset_); index < hi; ++index) {
    const Entry& entry = unstable_[index.value - unstable_offset_.value];
    if (!out.empty() && bytes + entry_size_bytes(entry) > max_bytes) break;
    bytes += entry_size_bytes(entry);
    out.push_back(entry);
  }
  return out;
}

std::optional<LogIndex> RaftLog::maybe_append(LogIndex prev_index, Term prev_term,
                                              LogIndex leader_commit,
                                              const std::vector<Entry>& entries) {
  if (!matches(prev_index, prev_term)) return std::nullopt;
  LogIndex last_new = prev_index + entries.size();
  // The first entry that is new or differs; everything before it is already here (§5.3: "if an
  // existing entry conflicts with a new one, delete the existing entry and all that follow").
  size_t first_new = entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!matches(entries[i].index, entries[i].term)) {
      first_new = i;
      break;
    }
  }
  if (first_new < entries.size()) {
    HAMQ_VERIFY(entries[first_new].index > committed_, "a committed entry would be overwritten");
    truncate_and_append(
        std::vector<Entry>(entries.begin() + static_cast<ptrdiff_t>(first_new), entries.end()));
  }
  commit_to(std::min(leader_commit, last_new));
  return last_new;
}

void RaftLog::append(std::vector<Entry> entries) {
  if (entries.empty()) return;
  HAMQ_VERIFY(entries.front().index == last_index() + 1, "the leader appends at the end");
  truncate_and_append(std::move(entries));
}

void RaftLog::truncate_and_append(std::vector<Entry> entries) {
  LogIndex first = entries.front().index;
  HAMQ_VERIFY(first > committed_, "truncating committed entries");
  if (first == unstable_offset_ + unstable_.size()) {
    // Directly after the unstable entries (or the stored log when there are none).
  } else if (first <= unstable_offset_) {
    // Replaces all unstable entries and a stored suffix.
    unstable_offset_ = first;
    unstable_.clear();
  } else {
    unstable_.resize(first.value - unstable_offset_.value);
  }
  for (Entry& entry : entries) unstable_.push_back(std::move(entry));
}

LogIndex RaftLog::find_conflict_by_term(LogIndex index, Term term_at_most) const {
  index = std::min(index, last_index());
  while (index.value > 0) {
    auto found = term(index);
    if (!found.ok() || *found <= term_at_most) break;
    index = index - 1;
  }
  return index;
}

void RaftLog::commit_to(LogIndex index) {
  if (index <= committed_) return;
  HAMQ_VERIFY(index <= last_index(), "commit past the end of the log");
  committed_ = index;
}

void RaftLog::applied_to(LogIndex index) {
  HAMQ_VERIFY(index <= committed_ && index >= applied_, "applied out of range");
  applied_ = index;
}

void RaftLog::restore(const SnapshotMeta& snapshot) {
  unstable_snapshot_ = snapshot;
  unstable_.clear();
  unstable_offset_ = snapshot.index + 1;
  committed_ = snapshot.index;
}

void RaftLog::stable_to(LogIndex index, Term term_written) {
  if (unstable_snapshot_ || unstable_.empty()) return;
  if (index < unstable_offset_ || index >= unstable_offset_ + unstable_.size()) return;
  // Only if the entry written is still the one we have: a conflicting suffix may have replaced it
  // since the Ready was handed out, and then it must be written again.
  if (unstable_[index.value - unstable_offset_.value].term != term_written) return;
  size_t count = index.value - unstable_offset_.value + 1;
  unstable_.erase(unstable_.begin(), unstable_.begin() + static_cast<ptrdiff_t>(count));
  unstable_offset_ = index + 1;
}

void RaftLog::stable_snapshot_to(const SnapshotMeta& snapshot) {
  if (unstable_snapshot_ && unstable_snapshot_->index == snapshot.index &&
      unstable_snapshot_->term == snapshot.term) {
    unstable_snapshot_.reset();
    if (applied_ < snapshot.index) applied_ = snapshot.index;
  }
}

}  // namespace hamq::raft
