// GroupHost: the Raft groups hosted on one node, kept in the node's one write-ahead log.
//
// It turns each group's Ready into Wal submissions and completes the Ready once a flush reports
// its writes durable: only then are the messages that promise them sent (the contract of
// raft.h). Committed entries are applied as soon as the Ready is taken: Raft hands out only
// entries that are committed and already durable here, so waiting for the Ready's own writes
// would only add an fsync to every command's latency (a Ready that installs a snapshot applies
// after it). Many groups' writes share each flush, so a thousand groups cost the fsyncs of one.
//
// Thread: one event loop drives it (tick, step, propose, process, on_flushed). The flush itself
// may run on another thread (storage::GroupCommitWriter), whose results the loop hands to
// on_flushed; flush_now() flushes on the calling thread (tests, simple runtimes).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "raft/raft.h"
#include "replication/wal_log_storage.h"
#include "storage/wal.h"

namespace hamq::replication {

struct GroupHostCallbacks {
  // A message for a member on another node.
  std::function<void(const raft::Message&)> send;
  // The state machine starts again from a snapshot (after a restart, or one from the leader).
  std::function<void(raft::GroupId, const raft::SnapshotMeta&, const std::string& data)> restore;
  // A committed entry, in log order, exactly once per life of the process (a restart replays the
  // entries after the snapshot).
  std::function<void(raft::GroupId, const raft::Entry&)> apply;
  // Optional: what a lagging member is sent of a snapshot whose data refers to this node's log
  // (WalLogStorage::Expander); nothing when the data is self-contained.
  std::function<std::optional<std::string>(raft::GroupId, std::string_view data)> expand_snapshot;
  // Optional: this member's role or the leader it knows changed (worth logging).
  std::function<void(raft::GroupId, raft::Role, raft::Term, raft::NodeId leader)> role_changed;
  // Optional: a record of this running member failed its checksum (read back, or refused on
  // write as its group's data was found damaged). The member has stopped: it sends nothing, so
  // it neither votes nor leads with what it lost. Its owner may rebuild it (rebuild_group).
  std::function<void(raft::GroupId)> damaged;
};

class GroupHost {
 public:
  // `defaults` gives the timing and limits of every group (id and group are filled in).
  GroupHost(storage::Wal& wal, raft::NodeId self, uint64_t incarnation, raft::Config defaults,
            GroupHostCallbacks callbacks);

  // Founds a group with these members and the state machine's initial data; a group whose only
  // voter is this node elects itself at once. It runs at once; its founding state becomes
  // durable with the next flush, before anything the group writes after it.
  Result<void, std::string> found_group(raft::GroupId group, const raft::ConfState& conf,
                                        std::string data);
  // The same, flushing on this thread until the founding state is durable.
  Result<void, std::string> create_group(raft::GroupId group, const raft::ConfState& conf,
                                         std::string data);
  // Starts every group the Wal holds (after a restart): each restores its snapshot and replays
  // its committed entries as they come out of Raft.
  void open_existing_groups();
  // Starts a member of a group that exists on other nodes and not here yet (this node was added
  // to it): empty, it neither votes nor campaigns until the leader's snapshot or entries reach it.
  void join_group(raft::GroupId group);
  // Starts one group the Wal holds; false if it holds none of that id (or it failed).
  bool open_group(raft::GroupId group);
  // Stops a group and drops what the Wal holds of it (its queue was deleted).
  Result<void, std::string> remove_group(raft::GroupId group);
  // A group whose data here was found damaged (at open: Wal::group_failure; or since: the
  // damaged callback) takes its state from its other members: what the Wal holds of it is
  // dropped, and once that is durable the member joins again, empty (join_group: it neither
  // votes nor campaigns until it has what its leader had committed). Only for a group with
  // other members: alone, it would start over empty.
  Result<void, std::string> rebuild_group(raft::GroupId group);
  // The groups being rebuilt that have not joined again yet.
  size_t rebuilding() const { return rebuilding_.size(); }
  std::vector<raft::GroupId> group_ids() const;
  raft::Raft* find(raft::GroupId group);
  // The same to look at only: the group is not put on the next round (find() does, since its
  // caller may change it).
  const raft::Raft* peek(raft::GroupId group) const;
  size_t group_count() const { return groups_.size(); }

  Result<raft::LogIndex, raft::ProposeError> propose(raft::GroupId group, std::string data);
  // The state machine's snapshot (`data`) at everything applied so far (what the state machine
  // was given, also entries whose Ready is still being written): the log prefix it covers is
  // dropped once the snapshot is durable (a restart restores it and replays what follows).
  Result<void, std::string> compact(raft::GroupId group, std::string data);
  // The same at `index`, a committed entry whose state `data` is (an apply callback compacts at
  // the entry it is applying, before Raft counts it applied). A `retain_from` (not 0) keeps the
  // entries from there to `index` readable in the Wal, outside the Raft log: the state refers to
  // them. Such a snapshot is this member's own: one sent to another member must not refer.
  Result<void, std::string> compact_at(raft::GroupId group, raft::LogIndex index, std::string data,
                                       raft::LogIndex retain_from = {});
  void step(const raft::Message& message);
  void tick();
  // Takes the Ready of every group that has one and submits its writes; returns how many it
  // took.
  size_t process();
  void on_flushed(const storage::FlushResult& result);
  Result<void, storage::Error> flush_now();
  // The Wal refused writes for good (a failed fsync): nothing more is made durable.
  bool failed() const { return failed_; }

 private:
  struct Group {
    std::unique_ptr<WalLogStorage> storage;
    std::unique_ptr<raft::Raft> raft;
    std::optional<raft::Ready> in_flight;
    bool applied_early = false;  // its committed entries were applied when it was taken
    bool removed = false;        // by remove_group; erased by sweep()
    bool damaged = false;        // stopped: its records here failed their checksums
    bool in_callbacks = false;   // its entries are being applied (process() leaves it alone)
    bool submitted = false;      // its writes are in the Wal (false: refused as busy, retried)
    bool active = false;         // in active_: process() looks at it next round
    bool ticking = false;        // in ticking_: tick() ticks it
    std::optional<raft::LogIndex> entries_needed;
    bool hard_state_needed = false;
    bool snapshot_needed = false;
    std::string incoming_snapshot;  // chunks received from the leader so far
    // The last hard state submitted: one that differs only in its commit is not written (the
    // commit index need not be durable; a restart learns it again from the log's leader).
    raft::HardState written_hard_state;
    // The leader and role last seen in a Ready (changes are logged at debug level).
    raft::NodeId seen_leader = raft::no_node;
    raft::Role seen_role = raft::Role::follower;
  };

  // founding_payload: the group is being founded with this snapshot (found_group).
  Group& start(raft::GroupId group, const std::string* founding_payload = nullptr);
  bool process(raft::GroupId id, Group& group);
  // Submits the in-flight Ready's writes; false if the Wal is busy (try after the next flush).
  bool submit(raft::GroupId id, Group& group);
  void complete(raft::GroupId id, Group& group);
  void sweep();
  // A write the Wal refused: busy (tried again), the group's data damaged (it stops), else the
  // log failed for good.
  void refused(raft::GroupId id, Group& group, const storage::Error& error);
  // Stops a member whose records failed their checksums, and tells the owner.
  void stop_damaged(raft::GroupId id, Group& group);
  // Those of rebuilding_ whose removal the flush made durable join again.
  void rejoin(const storage::FlushResult& result);

  storage::Wal& wal_;
  raft::NodeId self_;
  uint64_t incarnation_;
  raft::Config defaults_;
  GroupHostCallbacks callbacks_;
  std::map<raft::GroupId, Group> groups_;
  // The groups process() looks at next: those proposed to, stepped, ticked, found, completed.
  std::vector<raft::GroupId> active_;
  // The groups whose clock matters: all but those alone and leading (nobody to heartbeat,
  // nothing to elect), so that thousands of single-member groups cost nothing per tick.
  std::vector<raft::GroupId> ticking_;
  void tick_if_needed(raft::GroupId id, Group& group);
  int processing_depth_ = 0;  // process() runs inside a callback of process(): sweep after
  void mark(raft::GroupId id, Group& group);
  bool failed_ = false;
  bool removed_any_ = false;
  // Dropped for their damage, to join again once that is durable (true: it is).
  std::map<raft::GroupId, bool> rebuilding_;
};

}  // namespace hamq::replication
