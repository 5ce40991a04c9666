// NodeLog: the node's write-ahead log (DATA_DIR/wal) and the Raft groups it holds: the metadata
// group (server/metadata_store.h) and one group per durable queue, which it serves to the broker
// as its QueueStore.
//
// The event loop proposes, and calls process() (posted once per turn of the loop after a
// proposal) to hand every group's Ready to the log; the GroupCommitWriter thread flushes, one
// fdatasync for everything submitted meanwhile, and hands the results back to the loop, which
// completes the Readies: committed entries are applied to the broker's queues there, and the
// confirms they earn go out. settle() does the same synchronously, for start-up and for
// metadata changes, whose replies wait for their entry.
//
// Thread: the event loop's, except the writer thread, which only flushes and queues results.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "broker/broker.h"
#include "cluster/link_codec.h"
#include "common/result.h"
#include "raft/coalescer.h"
#include "replication/group_host.h"
#include "storage/file_system.h"
#include "storage/group_commit_writer.h"
#include "storage/wal.h"

namespace hamq::server {

class PeerTransport;

// The metadata group's id; queue groups take the ids after it.
inline constexpr raft::GroupId metadata_group{1};

// Raft's clock on a node (docs/raft.md, "Timing"): a tick every 50 ms; a leader heartbeats every
// tick; a follower that hears nothing for 4 to 8 ticks (200 to 400 ms) campaigns, so a hung or
// cut-off leader is replaced within about half a second; a link to a leader that closes (its
// process died) starts an election at once (NodeLog::on_peer_down).
inline constexpr uint64_t raft_tick_ms = 50;
inline constexpr uint32_t raft_heartbeat_ticks = 1;
inline constexpr uint32_t raft_election_ticks = 4;

class NodeLog final : public broker::QueueStore {
 public:
  // Opens (creating) the log, recovering what is there; no group is started yet. The groups'
  // members are this node (`self`) on a disk of `incarnation` (NodeIdentity).
  static Result<std::unique_ptr<NodeLog>, std::string> open(const std::filesystem::path& data_dir,
                                                            raft::NodeId self,
                                                            uint64_t incarnation);
  // The write-ahead log in `data_dir` has no segment yet: this start creates it.
  static bool log_is_new(const std::filesystem::path& data_dir);
  raft::NodeId self() const { return self_; }
  ~NodeLog() override;

  replication::GroupHost& host() { return *host_; }
  const storage::RecoveryReport& recovery() const { return recovery_; }

  // Where the metadata group's snapshots and entries go.
  struct Handler {
    std::function<void(const std::string& snapshot)> restore;
    std::function<void(const raft::Entry&)> apply;
    // Snapshot now: the group's entries keep the oldest segment of the log.
    std::function<void()> compact;
  };
  void set_metadata_handler(Handler handler) { metadata_handler_ = std::move(handler); }
  // Queue groups' entries go to the broker's queues.
  void set_broker(broker::Broker* broker) { broker_ = broker; }

  // Starts the queue groups the log holds that are in `keep` (replaying them) and removes the
  // others (queues deleted before a crash let their log go). Then settles.
  bool open_queue_groups(const std::set<uint64_t>& keep);

  // In a cluster: the groups' messages to other nodes leave through `transport`, one batch per
  // node after each round (raft::Outbox), to the peer of each node id in `peer_names`.
  void attach_transport(PeerTransport* transport, std::map<uint64_t, std::string> peer_names);
  // The names of the nodes by id changed (a node joined or was forgotten).
  void set_peer_names(std::map<uint64_t, std::string> peer_names) {
    peer_names_ = std::move(peer_names);
  }
  // A batch of Raft messages from another node.
  void receive(const raft::NodeBatch& batch);
  // Proposes to `group` here if this node leads it, else through its leader (a propose frame);
  // `placed` learns where the entry was appended, or nothing if it was not (the leader refused or
  // its link went down, or no leader was known for forward_timeout_ticks: until then it waits
  // for one, behind it the group's later proposals). Here, it is told before this returns.
  void propose_anywhere(uint64_t group, std::string data, Placed placed);
  // A proposal another node forwarded: proposed here and answered (once a transfer of the
  // group's leadership is over, if one is under way).
  void on_propose(const std::string& peer, const cluster::Propose& propose);
  // The link to a peer is up: a node counted gone is back.
  void on_peer_up(const std::string& peer);
  void on_proposed(const cluster::Proposed& proposed);
  // The link to a peer went down: what was forwarded through it was not placed.
  void on_peer_down(const std::string& peer);
  // Starts the queue groups in `keep` the log holds and removes the others, without waiting.
  void open_queue_groups_async(const std::set<uint64_t>& keep);
  // True once every group on this node has applied what it committed and leads (the queue
  // groups, one member each until issue 15).
  bool queue_groups_caught_up();
  // True once the group knows a leader and has applied everything in its log, committed: what
  // the cluster decided up to now is in the broker (a member, leader or not).
  bool member_caught_up(raft::GroupId group);

  // Flushes on this thread until `done` holds; false if the log failed first.
  bool settle(const std::function<bool()>& done);
  // True once the group leads and has applied everything in its log.
  bool caught_up(raft::GroupId group);

  // From here on flushes run on the writer thread; `post` runs a function on the event loop.
  // `on_no_space` runs on the loop when a write found the disk full.
  void start_writer(std::function<void(std::function<void()>)> post,
                    std::function<void()> on_no_space);
  // The event loop is going away: nothing more is posted to it (the writer keeps flushing).
  void stop_posting();
  // Hands every group's Ready to the log and wakes the writer (the loop calls it after
  // proposals, once per turn, and on each tick).
  void process();
  // Raft's tick; also asks the groups whose old entries keep the log's oldest segment alive
  // to snapshot, so that segments are deleted.
  void tick();
  bool failed() const { return host_->failed() || wal_->failed(); }

  // broker::QueueStore
  bool create_group(uint64_t group, const std::vector<uint64_t>& members) override;
  void join_group(uint64_t group) override;
  bool has_group(uint64_t group) const override;
  void remove_group(uint64_t group) override;
  void propose(uint64_t group, std::string command, Placed placed) override;
  std::optional<std::string> read(uint64_t group, uint64_t index) const override;
  void compact(uint64_t group, uint64_t index, std::string snapshot, uint64_t retain_from) override;
  std::optional<uint64_t> leader_term(uint64_t group) const override;
  uint64_t current_term(uint64_t group) const override;
  bool damaged(uint64_t group) const override;
  void rebuild_group(uint64_t group) override;

 private:
  NodeLog() = default;
  // A running member's records were found damaged (GroupHostCallbacks::damaged).
  void on_damaged(raft::GroupId group);
  // Proposes to a group this node leads: where the entry goes, or nothing if it does not lead
  // it (or the log refused it).
  std::optional<broker::LogPosition> propose_here(uint64_t group, std::string command);
  // Sends the messages the last round made, one batch per node.
  void flush_outbox();
  // Completes the Readies whose writes the writer made durable.
  void take_results();
  void schedule_process();
  // The groups' Readies, then the hand-overs those finished proposed (Broker::flush_hand_overs).
  size_t process_host();

  raft::NodeId self_;
  std::unique_ptr<storage::FileSystem> fs_;
  std::unique_ptr<storage::Wal> wal_;
  std::unique_ptr<replication::GroupHost> host_;
  storage::RecoveryReport recovery_;
  Handler metadata_handler_;
  broker::Broker* broker_ = nullptr;
  PeerTransport* transport_ = nullptr;
  std::map<uint64_t, std::string> peer_names_;
  std::unique_ptr<raft::Outbox> outbox_;
  // A forwarded proposal the leader has not answered within this long, or by the time another
  // member leads the group, is given up (a leader that hangs, or a link cut silently, closes
  // nothing).
  static constexpr uint64_t forward_timeout_ticks = 2000 / raft_tick_ms;
  struct Forwarded {
    std::string peer;
    uint64_t group = 0;
    Placed placed;
    uint64_t sent_at_tick = 0;
  };
  std::map<uint64_t, Forwarded> forwarded_;  // by request id
  // Proposals waiting for their group to know a leader, in the order they were made.
  struct Parked {
    uint64_t group = 0;
    std::string data;
    Placed placed;
    uint64_t since_tick = 0;
  };
  std::deque<Parked> parked_;
  // Groups opened at start in which this node's earlier lives may still hold messages (tick()).
  std::set<uint64_t> unswept_;
  // A peer whose link has been down this long is gone: the queues this node leads give back
  // what its consumers held (broker::Broker::node_gone). Long enough for a link to come back
  // after a blip, short enough that a dead node's messages are not held for long.
  static constexpr uint64_t node_gone_ticks = 5000 / raft_tick_ms;
  std::map<uint64_t, uint64_t> down_since_;  // by node id: the tick its link was first seen down
  std::set<uint64_t> gone_;                  // told to the broker as gone
  // Each second: which peers are gone, which came back.
  void follow_peers();
  void peer_back(uint64_t id);
  // Each second: a node that leads at least two more of the groups with other members than
  // another member of one of them that is up hands it that group (a node that came back, a node
  // the declares did not favour get theirs), at most rebalance_moves_per_second at a time.
  // Returns how many it handed over.
  size_t rebalance_leaders(bool asked = false);

 public:
  // hamqctl rebalance: the same at once, groups whose leader changed lately included (each node
  // does it each second anyway, for the groups it leads). How many it handed over.
  size_t rebalance_now() { return rebalance_leaders(true); }

 private:
  // Each second: brings each queue group this node leads to the members its queue is to have
  // (broker::SetQueueMembers), one Raft configuration change at a time: new members first, as
  // learners, promoted once nearly caught up; members left out removed once every wanted member
  // votes (a leader left out first hands its leadership to a member that stays). Meanwhile what
  // the leaving nodes' consumers held is made ready again. And lets go of this node's replicas
  // of groups it is no member of any more, once its group removed it (it applied its removal),
  // or, if it never heard of that (down at the time), once it has heard from no leader of the
  // group for member_orphan_ticks while linked to every other voter it knows.
  void reconcile_queue_members();

 public:
  // How long the link to node `id` has been down, as this node saw it (nothing: it is up, or
  // was not seen down yet).
  std::optional<uint64_t> down_for_ms(uint64_t id) const;

 private:
  static constexpr size_t member_changes_per_second = 64;
  // A learner this close to the leader's commit index is promoted (under steady load it is
  // always a few entries behind).
  static constexpr uint64_t promote_lag_entries_max = 256;
  static constexpr uint64_t member_orphan_ticks = 30'000 / raft_tick_ms;
  std::map<uint64_t, uint64_t> orphan_since_;  // by group: the tick it was first seen leaderless
  static constexpr size_t rebalance_moves_per_second = 16;
  // A group whose leader changed less than this long ago is not handed over.
  static constexpr uint64_t rebalance_settle_ticks = 3'000 / raft_tick_ms;
  struct LeaderSeen {
    raft::NodeId leader;
    uint64_t since_tick = 0;
  };
  std::map<uint64_t, LeaderSeen> leader_seen_;  // by group
  // Groups opened at start are swept for this long at least (a replica may look caught up
  // before its leader's entries reached it).
  static constexpr uint64_t sweep_min_ticks = 30'000 / raft_tick_ms;
  // Proposals forwarded to this node, waiting to be answered (answer_held).
  struct Held {
    std::string peer;
    cluster::Propose propose;
    uint64_t since_tick = 0;
  };
  std::deque<Held> held_;
  void answer_held();
  std::map<uint64_t, size_t> parked_groups_;  // how many of parked_ each group has
  // Proposes here, or forwards to the leader (true), or finds no leader known (false: `data`
  // and `placed` are left as they were).
  bool try_propose(uint64_t group, std::string& data, Placed& placed);
  // Proposes what waited, now that leaders may be known; gives up on what waited too long.
  void propose_parked();
  uint64_t next_request_ = 1;
  uint64_t ticks_ = 0;

  std::function<void(std::function<void()>)> post_;
  std::function<void()> on_no_space_;
  bool process_posted_ = false;
  bool results_posted_ = false;
  bool failure_reported_ = false;
  // Filled by the writer thread, emptied by the loop.
  std::mutex results_mutex_;
  std::condition_variable results_ready_;
  std::deque<storage::FlushResult> results_;
  std::unique_ptr<storage::GroupCommitWriter> writer_;  // last: stopped first
};

}  // namespace hamq::server
